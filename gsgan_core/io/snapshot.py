"""Reads official GSGAN network snapshots (`network-snapshot-*.pkl`) as data, running none of the code they carry.

A snapshot pickles dict(training_set_kwargs=..., G=..., D=..., G_ema=..., augment_pipe=...); each network pickles as
    torch_utils.persistence._reconstruct_persistent_obj(dict(type='class', version=6, module_src=<python source>,
                                                             class_name=..., state=<the module's __dict__>))
which a plain unpickle would answer by exec'ing module_src. Here each global goes through an allow-list (tensors,
storages via torch.load(weights_only=True), OrderedDict, set, numpy scalars, EasyDict -> dict, persistent objects ->
inert records); any other global becomes a `Stub` that only records its arguments, and a stub found where data is
needed (a tensor, an init argument, a submodule, a top-level value) is an error naming that global.
"""

from __future__ import annotations

import _compat_pickle
import hashlib
import io
import os
import pickle
import struct
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gsgan_core.errors import CheckpointError

PERSISTENCE_VERSION = 6  # torch_utils.persistence._version of StyleGAN2-ADA, StyleGAN3, EG3D and GSGAN
_TORCH_SAVE_MAGIC = 0x1950A86A20F9469CFC6C  # the pickled int a legacy torch.save file begins with


class SnapshotError(CheckpointError):
    """A network snapshot cannot be read, or asks for something a network snapshot never needs."""


class _Refused(Exception):
    """Raised while reading; read_snapshot turns it into a SnapshotError that names the file."""


@dataclass
class NetworkRecord:
    """One network of a snapshot (G, G_ema, D, ...), as data: its class is never built."""

    class_name: str
    module_sha256: str  # sha256 hex of module_source (utf-8)
    module_source: str  # the full python source of the module that defined the class, never executed
    init_args: tuple
    init_kwargs: dict  # plain JSON-able python (EasyDict -> dict, numpy scalars -> float/int/bool, tuples -> lists)
    state_dict: dict[str, torch.Tensor]  # named exactly as nn.Module.state_dict() names it
    modules: dict[str, str]  # submodule path ("" for the root) -> class name


@dataclass
class Snapshot:
    path: str
    networks: dict[str, NetworkRecord] = field(default_factory=dict)
    training_set_kwargs: dict[str, Any] = field(default_factory=dict)


# ---- inert stand-ins for what the pickle builds ---------------------------------------------------------------

class Stub(type):
    """Stand-in for a global the pickle names but we never import, e.g. `Stub("os", "system")`. It is a class, so
    REDUCE (a call), NEWOBJ (its __new__) and BUILD (__setstate__) all work; each just makes a recording StubObject."""

    def __new__(mcls, module: str, name: str):
        return super().__new__(mcls, name, (StubObject,), {"stub_global": f"{module}.{name}"})

    def __init__(cls, module: str, name: str):
        super().__init__(name, (StubObject,), {})


class StubObject:
    """What calling or instantiating a stub gives: args, kwargs, BUILD state and appended items, kept as data."""

    stub_global = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.args, obj.kwargs, obj.state, obj.items = args, kwargs, None, []
        return obj

    def __call__(self, *args, **kwargs):  # so getattr(x, "system")("...") chains stay stubs
        return type(self)(*args, **kwargs)

    def __setstate__(self, state):
        self.state = state

    def append(self, item):  # APPEND(S) and SETITEMS on a stub instance
        self.items.append(item)

    def __setitem__(self, key, value):
        self.items.append((key, value))


@dataclass
class PersistentRecord:
    """What torch_utils.persistence._reconstruct_persistent_obj(meta) gives here: meta as data."""

    class_name: str
    module_source: str
    module_sha256: str
    state: dict  # the object's __dict__: _parameters, _buffers, _modules, _init_args, _init_kwargs, ...

    def __setstate__(self, state):
        raise _Refused("BUILDs onto a persistent object, which a network snapshot never does")


def _persistent_record(meta):
    kind, version = (meta.get("type"), meta.get("version")) if isinstance(meta, dict) else (None, None)
    if kind != "class" or version != PERSISTENCE_VERSION:
        raise _Refused(f"holds a persistent object of type {kind!r}, version {version!r}; "
                       f"only type 'class', version {PERSISTENCE_VERSION} is known")
    source, class_name, state = meta.get("module_src"), meta.get("class_name"), meta.get("state")
    if not (isinstance(source, str) and isinstance(class_name, str) and isinstance(state, dict)):
        raise _Refused("holds a persistent object without text module_src, class_name and a state dict")
    sha = hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()
    return PersistentRecord(class_name, source, sha, state)


def _load_storage(data):
    """torch.storage._load_from_bytes: the bytes are a legacy torch.save of one storage, often saved on a GPU."""
    if not isinstance(data, bytes):
        raise _unexpected(data, "a storage's bytes")
    try:
        storage = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as e:
        raise _Refused(f"holds storage bytes that torch.load(weights_only=True) refuses ({_first_line(e)})") from None
    if not isinstance(storage, torch.storage.TypedStorage):
        raise _Refused(f"holds storage bytes that give a {type(storage).__name__}, not a storage")
    return storage


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    """torch._utils._rebuild_tensor_v2: a view (offset, size, stride) of a storage; requires_grad and hooks dropped."""
    if not isinstance(storage, torch.storage.TypedStorage):
        raise _unexpected(storage, "a tensor's storage")
    numbers = (offset, *size, *stride) if isinstance(size, tuple) and isinstance(stride, tuple) else (None,)
    if not all(type(n) is int and n >= 0 for n in numbers) or len(size) != len(stride):
        raise _Refused(f"holds a tensor with a bad layout (offset {offset!r}, size {size!r}, stride {stride!r})")
    item_size = torch.empty(0, dtype=storage.dtype).element_size()
    last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else -1
    if last >= storage._untyped_storage.nbytes() // item_size:  # set_ would silently grow the storage
        raise _Refused(f"holds a tensor of size {list(size)} that reaches past the end of its storage")
    tensor = torch.empty(0, dtype=storage.dtype).set_(storage._untyped_storage, offset, size, stride)
    if metadata:  # conj / neg bits, which torch.save never sets on weights
        raise _Refused(f"holds a tensor with metadata {metadata!r}, which a network snapshot never has")
    return tensor


def _rebuild_parameter(data, requires_grad=False, hooks=None, state=None):
    """torch._utils._rebuild_parameter(_with_state): kept as the plain tensor state_dict() would give."""
    if not isinstance(data, torch.Tensor):
        raise _unexpected(data, "a parameter's data")
    return data


class _NumpyDType:
    """numpy.dtype('f8', False, True) + BUILD (3, '<', ...): only the type code and byte order are kept."""

    def __init__(self, code, align=False, copy=True):
        self.code, self.order = code, "<"

    def __setstate__(self, state):
        self.order = state[1] if isinstance(state, tuple) and len(state) > 1 else None


_SCALAR_FORMATS = {"f2": "e", "f4": "f", "f8": "d", "i1": "b", "i2": "h", "i4": "i", "i8": "q",
                   "u1": "B", "u2": "H", "u4": "I", "u8": "Q", "b1": "?"}


def _numpy_scalar(dtype, data=None):
    """numpy's multiarray.scalar(dtype, bytes), e.g. np.log(...) -> float64, decoded with struct to a Python number."""
    code = getattr(dtype, "code", None) if isinstance(dtype, _NumpyDType) else None
    fmt = _SCALAR_FORMATS.get(code) if isinstance(code, str) else None
    if fmt is None or not isinstance(data, bytes) or len(data) != struct.calcsize(fmt):
        raise _Refused(f"holds a numpy scalar of type {code!r}, which a network snapshot never needs")
    return struct.unpack((">" if dtype.order == ">" else "<") + fmt, data)[0]


def _reconstructor(cls, base, state):
    """copyreg._reconstructor(cls, object, None), protocols 0 and 1's way to make an instance: cls is never called."""
    if cls is dict:  # an EasyDict
        return dict(state or {})
    if isinstance(cls, Stub):
        return cls.__new__(cls)
    raise _Refused(f"rebuilds a {cls!r} through copyreg, which a network snapshot never does")


def _latin1(text, encoding):
    """_codecs.encode(text, 'latin1'): how protocols 0-2 write bytes."""
    if not (isinstance(text, str) and encoding == "latin1"):
        raise _Refused(f"calls _codecs.encode with {encoding!r}, which a network snapshot never needs")
    return text.encode("latin1")


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("_codecs", "encode"): _latin1,
    ("numpy", "dtype"): _NumpyDType,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,  # numpy 1.x
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,  # numpy 2.x
    ("dnnlib.util", "EasyDict"): dict,
    ("dnnlib", "EasyDict"): dict,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent_record,
}


class _SnapshotUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))  # protocol 0-2 names
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)  # __builtin__ -> builtins, copy_reg -> copyreg
        return _ALLOWED[module, name] if (module, name) in _ALLOWED else Stub(module, name)

    def persistent_load(self, pid):
        raise _Refused("uses pickle persistent ids (as torch.save files do), which a plain network snapshot never has")


# ---- from the unpickled objects to plain records ---------------------------------------------------------------

def _first_line(error: BaseException) -> str:  # torch.load's weights_only refusals open with a long preamble
    lines = [line for line in str(error).splitlines() if line.strip() and not line.startswith("Weights only load")]
    return f"{type(error).__name__}: {lines[0][:200]}" if lines else type(error).__name__


def _unexpected(value, where: str) -> _Refused:
    if isinstance(value, (Stub, StubObject)):
        return _Refused(f"references {value.stub_global} (at {where}), which a network snapshot never needs")
    return _Refused(f"holds an unexpected {type(value).__name__} at {where}")


def _plain(value, where: str):
    """Init arguments and training_set_kwargs as JSON-able python: dict, list, str, int, float, bool, None."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {key: _plain(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise _unexpected(value, where)


def _walk(module, path: str, where: str, modules: dict, tensors: dict, ancestors: tuple = ()) -> None:
    """Flattens like nn.Module.state_dict(): own parameters, persistent buffers, then each submodule, recursively."""
    here = f"{where}.{path}" if path else where
    if isinstance(module, PersistentRecord):
        class_name, state = module.class_name, module.state
    elif isinstance(module, StubObject) and isinstance(module.state, dict) and "_modules" in module.state:
        class_name, state = type(module).__name__, module.state  # e.g. torch.nn Sequential, Linear, ModuleDict
    else:
        raise _unexpected(module, here)
    if id(module) in ancestors:
        raise _Refused(f"has a module that contains itself (at {here})")
    modules[path] = class_name
    prefix = f"{path}." if path else ""
    skip = state.get("_non_persistent_buffers_set", set())
    parameters, buffers, children = (state.get(key, {}) for key in ("_parameters", "_buffers", "_modules"))
    for value, what in ((skip, "_non_persistent_buffers_set"), (parameters, "_parameters"),
                        (buffers, "_buffers"), (children, "_modules")):
        if not isinstance(value, (set, dict)):
            raise _unexpected(value, f"{here}.{what}")
    for name, tensor in [*parameters.items(), *((n, b) for n, b in buffers.items() if n not in skip)]:
        if tensor is not None:
            if not isinstance(tensor, torch.Tensor):
                raise _unexpected(tensor, f"{where}.{prefix}{name}")
            tensors[prefix + name] = tensor
    for name, child in children.items():
        if child is not None:
            _walk(child, prefix + name, where, modules, tensors, ancestors + (id(module),))


def _network(key: str, record: PersistentRecord) -> NetworkRecord:
    modules, tensors = {}, {}
    _walk(record, "", key, modules, tensors)
    args, kwargs = record.state.get("_init_args", ()), record.state.get("_init_kwargs", {})
    if not isinstance(args, (tuple, list)) or not isinstance(kwargs, dict):
        raise _unexpected(args if not isinstance(args, (tuple, list)) else kwargs, f"{key}'s init arguments")
    return NetworkRecord(record.class_name, record.module_sha256, record.module_source,
                         tuple(_plain(list(args), f"{key}.init_args")), _plain(kwargs, f"{key}.init_kwargs"),
                         tensors, modules)


def _snapshot(path: Path, top) -> Snapshot:
    if type(top) is int and top == _TORCH_SAVE_MAGIC:
        raise _Refused("is a legacy torch.save file, not a network snapshot")
    if not isinstance(top, dict):
        raise _unexpected(top, "the top level, where a network snapshot has a dict")
    snapshot = Snapshot(str(path))
    for key, value in top.items():
        if isinstance(value, PersistentRecord):
            snapshot.networks[str(key)] = _network(str(key), value)
        elif key == "training_set_kwargs":
            if not isinstance(value, dict):
                raise _unexpected(value, key)
            snapshot.training_set_kwargs = _plain(value, key)
        elif isinstance(value, (Stub, StubObject)):
            raise _unexpected(value, str(key))
    if not snapshot.networks:
        raise _Refused("holds no network (no G, G_ema or D made by torch_utils.persistence)")
    return snapshot


def _refuse_other_formats(head: bytes) -> None:
    """Names what the first bytes plainly show is not a pickle."""
    if not head:
        raise _Refused("is empty")
    if head.startswith(b"PK\x03\x04"):
        raise _Refused("is a zip archive (a torch.save file or a dataset?), not a network snapshot pickle")
    if len(head) > 8 and head[8:9] == b"{" and 2 <= struct.unpack("<Q", head[:8])[0] < 100 * 2**20:
        raise _Refused("is a safetensors file (a gsgan checkpoint? use load_checkpoint), not a pickle")


def read_snapshot(path: str | os.PathLike) -> Snapshot:
    """Reads an official GSGAN `network-snapshot-*.pkl` as data; nothing in the file is imported or executed."""
    path, head = Path(path), b""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
            _refuse_other_formats(head)
            f.seek(0)
            top = _SnapshotUnpickler(f).load()
    except _Refused as e:
        raise SnapshotError(path, str(e)) from None
    except FileNotFoundError:
        raise SnapshotError(path, "no such file") from None
    except IsADirectoryError:
        raise SnapshotError(path, "is a folder, not a network snapshot file") from None
    except OSError as e:
        raise SnapshotError(path, f"cannot be read ({_first_line(e)})") from None
    except Exception as e:  # what a damaged file raises: UnpicklingError, EOFError, ValueError, TypeError, ...
        what = "is a truncated or corrupt pickle" if head.startswith(b"\x80") else "is not a pickle, or a damaged one"
        raise SnapshotError(path, f"{what} ({_first_line(e)})") from None
    try:
        return _snapshot(path, top)
    except _Refused as e:
        raise SnapshotError(path, str(e)) from None
