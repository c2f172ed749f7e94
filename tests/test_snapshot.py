"""read_snapshot: official GSGAN network pickles read as data, and hostile pickles that must run nothing.

The snapshots are made here with a fake `torch_utils.persistence` (our own minimal version of StyleGAN's reduce
protocol) and a fake `dnnlib.util.EasyDict`, put in sys.modules only while pickling.
"""

import contextlib
import copy
import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import types
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from gsgan_core.errors import CheckpointError
from gsgan_core.io.snapshot import SnapshotError, Stub, StubObject, read_snapshot

# ---- a fake StyleGAN toolkit: torch_utils.persistence and dnnlib.util ------------------------------------------


def _reconstruct_persistent_obj(meta):  # what a plain unpickle would call (and then exec meta["module_src"])
    raise AssertionError("the snapshot reader called _reconstruct_persistent_obj")


_reconstruct_persistent_obj.__module__ = "torch_utils.persistence"


class EasyDict(dict):
    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value


EasyDict.__module__ = "dnnlib.util"


def persistent_class(source: str):
    """Our own minimal take on the persistence protocol: the object pickles as
    REDUCE(_reconstruct_persistent_obj, (dict(type='class', version=6, module_src=..., class_name=..., state=...),))."""

    def decorate(orig):
        class Decorator(orig):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                self._init_args, self._init_kwargs = copy.deepcopy(args), copy.deepcopy(kwargs)

            def __reduce__(self):
                state = super().__reduce__()[2]  # object.__reduce__: (copyreg._reconstructor, args, __dict__)
                meta = dict(type="class", version=6, module_src=source, class_name=orig.__name__, state=state)
                return (_reconstruct_persistent_obj, (meta,))

        Decorator.__name__ = orig.__name__
        return Decorator

    return decorate


@contextlib.contextmanager
def stylegan_modules():
    """torch_utils.persistence and dnnlib(.util) exist only inside this block, so pickle can name them."""
    persistence = types.ModuleType("torch_utils.persistence")
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    util = types.ModuleType("dnnlib.util")
    util.EasyDict = EasyDict
    fakes = {"torch_utils": types.ModuleType("torch_utils"), "torch_utils.persistence": persistence,
             "dnnlib": types.ModuleType("dnnlib"), "dnnlib.util": util}
    assert not set(fakes) & set(sys.modules)
    sys.modules.update(fakes)
    try:
        yield
    finally:
        for name in fakes:
            del sys.modules[name]


SOURCE = '''"""training/networks.py of a GSGAN-like run: kept as text by the reader, never executed."""
import torch
class MappingNetwork(torch.nn.Module): ...
class Generator(torch.nn.Module): ...
class Discriminator(torch.nn.Module): ...
'''


@persistent_class(SOURCE)
class MappingNetwork(nn.Module):
    def __init__(self, z_dim, w_dim, num_layers=2, lr_multiplier=0.01):
        super().__init__()
        layers = [nn.Linear(z_dim if i == 0 else w_dim, w_dim) for i in range(num_layers)]
        self.net = nn.Sequential(*layers, nn.GELU())
        self.register_buffer("w_avg", torch.zeros(w_dim))


@persistent_class(SOURCE)
class Generator(nn.Module):
    def __init__(self, z_dim, w_dim, mapping_kwargs=None, rendering_kwargs=None):
        super().__init__()
        self.mapping = MappingNetwork(z_dim, w_dim, **mapping_kwargs)  # a nested persistent module
        self.heads = nn.ModuleDict(dict(xyz=nn.Linear(w_dim, 3), rgb=nn.Linear(w_dim, 3, bias=False)))
        self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(w_dim, w_dim), nn.Identity()), nn.GELU()])
        self.scales = nn.ParameterDict(dict(level0=nn.Parameter(torch.randn(3))))
        self.const = nn.Parameter(torch.randn(4, w_dim).half())
        self.register_parameter("unused", None)
        self.register_module("background", None)
        self.register_buffer("steps", torch.tensor(7, dtype=torch.int64))
        self.register_buffer("view", torch.arange(12.0).reshape(3, 4)[:, 1:3])  # offset 1, stride (4, 1)
        self.register_buffer("grid", torch.ones(2, 2), persistent=False)
        self.rendering_kwargs = rendering_kwargs  # a plain attribute


@persistent_class(SOURCE)
class Discriminator(nn.Module):
    def __init__(self, img_channels, channels=4):
        super().__init__()
        self.b0 = nn.Sequential(nn.Conv2d(img_channels, channels, 3), nn.LeakyReLU(0.2))
        self.out = nn.Linear(channels, 1)


def make_generator(seed=0):
    torch.manual_seed(seed)
    custom = EasyDict(scale_init=np.log(1 / np.sqrt(1000)), num_pts=np.int64(256), use_dir_cond=np.bool_(True),
                      up_ratio=4, avg_camera_pivot=[0, 0, 0.2])
    return Generator(4, 8, mapping_kwargs=EasyDict(num_layers=2, lr_multiplier=np.float32(0.5)),
                     rendering_kwargs=EasyDict(image_resolution=64, custom_options=custom, c_scale=(1.0, 2.0)))


def make_snapshot(**networks):
    top = dict(training_set_kwargs=EasyDict(path="ffhq.zip", resolution=64, use_labels=True, max_size=None))
    return {**top, **networks}


def bits(tensor):
    return tensor.contiguous().flatten().view(torch.uint8)


def write_pickle(path, obj, protocol=None):
    with stylegan_modules(), open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return path


# ---- the realistic snapshot ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [None, 0, 1, 2, 3, 4, 5])
def test_reads_a_realistic_snapshot(tmp_path, protocol):
    G, G_ema, D = make_generator(0), make_generator(1), Discriminator(3)
    path = write_pickle(tmp_path / "network-snapshot-000040.pkl",
                        make_snapshot(G=G, D=D, G_ema=G_ema, augment_pipe=None), protocol)

    snapshot = read_snapshot(path)

    assert "torch_utils" not in sys.modules and "dnnlib" not in sys.modules  # nothing was imported
    assert snapshot.path == str(path)
    assert set(snapshot.networks) == {"G", "D", "G_ema"}
    assert snapshot.training_set_kwargs == dict(path="ffhq.zip", resolution=64, use_labels=True, max_size=None)
    assert type(snapshot.training_set_kwargs) is dict
    for key, module in (("G", G), ("G_ema", G_ema), ("D", D)):
        record, expected = snapshot.networks[key], module.state_dict()
        assert list(record.state_dict) == list(expected)  # same names, same order
        for name, tensor in expected.items():
            got = record.state_dict[name]
            assert got.dtype == tensor.dtype and got.shape == tensor.shape and got.stride() == tensor.stride()
            assert torch.equal(bits(got), bits(tensor)) and not got.requires_grad
        assert record.modules == {name: type(m).__name__ for name, m in module.named_modules()}
        assert record.module_source == SOURCE
        assert record.module_sha256 == hashlib.sha256(SOURCE.encode()).hexdigest()

    G_record = snapshot.networks["G"]
    assert "grid" not in G_record.state_dict and "unused" not in G_record.state_dict
    assert G_record.state_dict["const"].dtype == torch.float16
    assert G_record.class_name == "Generator" and snapshot.networks["D"].class_name == "Discriminator"
    assert G_record.modules["mapping"] == "MappingNetwork" and G_record.modules["heads.rgb"] == "Linear"
    assert G_record.init_args == (4, 8) and snapshot.networks["D"].init_args == (3,)
    kwargs = G_record.init_kwargs
    assert kwargs["mapping_kwargs"] == {"num_layers": 2, "lr_multiplier": 0.5}
    custom = kwargs["rendering_kwargs"]["custom_options"]
    assert custom == {"scale_init": float(np.log(1 / np.sqrt(1000))), "num_pts": 256, "use_dir_cond": True,
                      "up_ratio": 4, "avg_camera_pivot": [0, 0, 0.2]}
    assert [type(custom[k]) for k in ("scale_init", "num_pts", "use_dir_cond")] == [float, int, bool]
    assert kwargs["rendering_kwargs"]["c_scale"] == [1.0, 2.0]
    assert json.loads(json.dumps(kwargs)) == kwargs


def test_reads_storages_saved_on_a_gpu(tmp_path):
    """GSGAN pickles its networks without moving them to the CPU: storages say 'cuda:0'."""

    class CudaTensor:
        def __init__(self, tensor):
            self.tensor = tensor

        def __reduce__(self):
            rebuild, args = self.tensor.__reduce_ex__(4)
            storage_bytes = args[0].__reduce__()[1][0].replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
            storage = Call(Global("torch.storage", "_load_from_bytes"), storage_bytes)
            return (rebuild, (storage, *args[1:]))

    D = Discriminator(3)
    expected = D.out.weight.detach().clone()
    D.out._parameters["weight"] = CudaTensor(expected)
    path = tmp_path / "gpu.pkl"
    dump_hostile(make_snapshot(D=D), path)
    assert b"cuda:0" in path.read_bytes()
    assert torch.equal(read_snapshot(path).networks["D"].state_dict["out.weight"], expected)


# ---- hostile pickles -------------------------------------------------------------------------------------------


class Global:
    """A reference to module.name that the test writes into a pickle by name, never importing it."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *args):
        raise AssertionError("never called")


class Call:
    """Pickles as REDUCE(func, args): what a hostile object's __reduce__ returns."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)

    def __call__(self, *args):  # pickle wants callables; a call on a call is a getattr(...)(...) chain
        raise AssertionError("never called")


class HostilePickler(pickle._Pickler):
    dispatch = dict(pickle._Pickler.dispatch)

    def _save_global_reference(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())

    dispatch[Global] = _save_global_reference


def dump_hostile(obj, path, protocol=4):
    with stylegan_modules(), open(path, "wb") as f:
        HostilePickler(f, protocol=protocol).dump(obj)
    return path


def hostile_torch_save(obj) -> bytes:
    """A legacy torch.save of obj, as torch.storage._load_from_bytes expects, with obj's globals by name."""
    module = types.ModuleType("hostile_pickle")
    module.dump, module.Pickler = pickle.dump, HostilePickler
    buffer = io.BytesIO()
    torch.save(obj, buffer, pickle_module=module, pickle_protocol=2, _use_new_zipfile_serialization=False)
    return buffer.getvalue()


@pytest.fixture
def calls(monkeypatch):
    """os.system and subprocess.Popen replaced by recorders: a reader that ran them would leave a trace here."""
    recorded = []
    for owner, name in ((os, "system"), (subprocess, "Popen"), (sys.modules["posix"], "system")):
        monkeypatch.setattr(owner, name, lambda *a, _n=name, **k: recorded.append((_n, a)))
    return recorded


def payloads(sentinel):
    touch = f"open({str(sentinel)!r}, 'w').close()"
    return {
        "os.system": Call(Global("os", "system"), f"touch {sentinel}"),
        "posix.system": Call(Global("posix", "system"), f"touch {sentinel}"),
        "subprocess.Popen": Call(Global("subprocess", "Popen"), ["touch", str(sentinel)]),
        "builtins.eval": Call(Global("builtins", "eval"), touch),
        "builtins.exec": Call(Global("builtins", "exec"), touch),
        "builtins.getattr": Call(Call(Global("builtins", "getattr"),
                                      Call(Global("builtins", "__import__"), "os"), "system"), f"touch {sentinel}"),
        "torch.load": Call(Global("torch", "load"), str(sentinel) + ".pt"),
        "pickle.loads": Call(Global("pickle", "loads"), b"cos\nsystem\n(S'true'\ntR."),
        "numpy.testing._private.utils.runstring": Call(Global("numpy.testing._private.utils", "runstring"), touch, {}),
        "numpy.load": Call(Global("numpy", "load"), str(sentinel) + ".npy", None, True),
    }


def place(where, payload):
    """A small snapshot with payload put `where`; returns (top-level object, whether the payload is needed)."""
    G = make_generator()
    if where == "top level":
        return make_snapshot(G=G, evil=payload), True
    if where == "init kwargs":
        G._init_kwargs["mapping_kwargs"]["evil"] = payload
    elif where == "parameter":
        G.mapping._parameters["evil"] = payload
    elif where == "submodule":
        G.heads._modules["evil"] = payload
    elif where == "hook":  # module state the reader never needs: the payload stays an inert stub
        G._forward_hooks[0] = payload
    return make_snapshot(G=G), where != "hook"


@pytest.mark.parametrize("where", ["top level", "init kwargs", "parameter", "submodule", "hook"])
@pytest.mark.parametrize("name", list(payloads("x")))
def test_hostile_globals_run_nothing(tmp_path, calls, where, name):
    sentinel = tmp_path / "pwned"
    top, needed = place(where, payloads(sentinel)[name])
    path = dump_hostile(top, tmp_path / "evil.pkl")
    if needed:
        with pytest.raises(SnapshotError) as error:
            read_snapshot(path)
        assert str(path) in str(error.value)
        assert f"references {name} " in error.value.problem and "never needs" in error.value.problem
    else:
        hook = read_snapshot(path)  # reading works; the hook is a stub that recorded its arguments
        assert hook.networks["G"].state_dict.keys() == make_generator().state_dict().keys()
    assert not sentinel.exists() and calls == []


def test_a_hostile_stub_is_inert(tmp_path, calls):
    stub = Stub("os", "system")
    obj = stub("touch x")
    obj.__setstate__({"a": 1})
    assert isinstance(stub, type) and isinstance(obj, StubObject) and obj.stub_global == "os.system"
    assert obj.args == ("touch x",) and obj.state == {"a": 1} and isinstance(obj("again"), StubObject)
    assert calls == []


def test_module_source_is_never_executed(tmp_path, calls):
    sentinel = tmp_path / "pwned"
    source = f"import os\nopen({str(sentinel)!r}, 'w').write('ran')\nos.system('touch {sentinel}')\n"

    @persistent_class(source)
    class Trap(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(2))

    path = write_pickle(tmp_path / "trap.pkl", make_snapshot(G=Trap()))
    record = read_snapshot(path).networks["G"]
    assert record.module_source == source and record.class_name == "Trap"
    assert torch.equal(record.state_dict["w"], torch.ones(2))
    assert not sentinel.exists() and calls == []


@pytest.mark.parametrize("protocol", [0, 2])
def test_old_protocols_are_guarded_too(tmp_path, calls, protocol):
    top, _ = place("init kwargs", Call(Global("os", "system"), "touch x"))
    with pytest.raises(SnapshotError, match="references os.system "):
        read_snapshot(dump_hostile(top, tmp_path / "evil.pkl", protocol))
    assert calls == []


def test_storage_bytes_go_through_weights_only_torch_load(tmp_path, calls):
    sentinel = tmp_path / "pwned"
    evil = hostile_torch_save(Call(Global("os", "system"), f"touch {sentinel}"))
    tensor = Call(Global("torch._utils", "_rebuild_tensor_v2"), Call(Global("torch.storage", "_load_from_bytes"), evil),
                  0, (1,), (1,), False, OrderedDict())
    top, _ = place("hook", tensor)
    path = dump_hostile(top, tmp_path / "evil.pkl")
    with pytest.raises(SnapshotError, match=r"torch.load\(weights_only=True\) refuses .*(os|posix).system"):
        read_snapshot(path)
    assert not sentinel.exists() and calls == []


def test_tensor_reaching_past_its_storage_is_refused(tmp_path):
    storage_bytes = torch.zeros(2).__reduce_ex__(4)[1][0].__reduce__()[1][0]  # a real 2-element storage
    storage = Call(Global("torch.storage", "_load_from_bytes"), storage_bytes)
    tensor = Call(Global("torch._utils", "_rebuild_tensor_v2"), storage, 0, (1000,), (1,), False, OrderedDict())
    top, _ = place("hook", tensor)
    with pytest.raises(SnapshotError, match="past the end of its storage"):
        read_snapshot(dump_hostile(top, tmp_path / "evil.pkl"))


def test_numpy_scalars_of_other_types_are_refused(tmp_path):
    scalar = Call(Global("numpy._core.multiarray", "scalar"), Call(Global("numpy", "dtype"), "O8", False, True), b"x")
    top, _ = place("init kwargs", scalar)
    with pytest.raises(SnapshotError, match="numpy scalar of type 'O8'"):
        read_snapshot(dump_hostile(top, tmp_path / "evil.pkl"))


def test_persistent_ids_are_refused(tmp_path):
    path = tmp_path / "persid.pkl"
    path.write_bytes(b"\x80\x02}q\x00X\x01\x00\x00\x00Gq\x01X\x03\x00\x00\x00abcq\x02Qs.")  # {'G': persid('abc')}
    with pytest.raises(SnapshotError, match="persistent ids"):
        read_snapshot(path)


# ---- files that are not snapshots ---------------------------------------------------------------------------------


def _problem(path) -> str:
    with pytest.raises(SnapshotError) as error:
        read_snapshot(path)
    assert isinstance(error.value, CheckpointError) and error.value.path == str(path)
    assert str(error.value).startswith(f"{path}: ") and "\n" not in str(error.value)
    return error.value.problem


def test_missing_file_and_folder(tmp_path):
    assert "no such file" in _problem(tmp_path / "nope.pkl")
    assert "is a folder" in _problem(tmp_path)


def test_other_formats_are_named(tmp_path):
    save_file({"w": torch.zeros(2)}, tmp_path / "g.safetensors")
    assert "safetensors" in _problem(tmp_path / "g.safetensors")
    torch.save({"w": torch.zeros(2)}, tmp_path / "new.pt")
    assert "zip archive" in _problem(tmp_path / "new.pt")
    with zipfile.ZipFile(tmp_path / "data.zip", "w") as z:
        z.writestr("dataset.json", "{}")
    assert "zip archive" in _problem(tmp_path / "data.zip")
    torch.save({"w": torch.zeros(2)}, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    assert "legacy torch.save" in _problem(tmp_path / "old.pt")
    (tmp_path / "empty.pkl").write_bytes(b"")
    assert "is empty" in _problem(tmp_path / "empty.pkl")
    (tmp_path / "text.pkl").write_text("hello, this is not a pickle\n")
    assert "is not a pickle" in _problem(tmp_path / "text.pkl")


def test_truncated_and_corrupt_pickles(tmp_path):
    data = write_pickle(tmp_path / "full.pkl", make_snapshot(G=make_generator())).read_bytes()
    (tmp_path / "cut.pkl").write_bytes(data[: len(data) // 2])
    assert "truncated or corrupt" in _problem(tmp_path / "cut.pkl")
    (tmp_path / "bad.pkl").write_bytes(data[:40] + b"\xff" * 64 + data[104:])
    assert "truncated or corrupt" in _problem(tmp_path / "bad.pkl")


def test_top_level_must_be_a_dict_with_networks(tmp_path):
    assert "unexpected list at the top level" in _problem(write_pickle(tmp_path / "list.pkl", [1, 2]))
    assert "holds no network" in _problem(write_pickle(tmp_path / "plain.pkl", {"G": 1, "kimg": 40}))
    top = dump_hostile(Call(Global("os", "system"), "true"), tmp_path / "call.pkl")
    assert "references os.system (at the top level" in _problem(top)


@pytest.mark.parametrize("kind, version", [("class", 5), ("class", 7), ("function", 6)])
def test_unknown_persistence_type_or_version(tmp_path, kind, version):
    meta = dict(type=kind, version=version, module_src="x = 1\n", class_name="Generator", state={})
    path = dump_hostile({"G": Call(Global("torch_utils.persistence", "_reconstruct_persistent_obj"), meta)},
                        tmp_path / "meta.pkl")
    problem = _problem(path)
    assert f"type {kind!r}, version {version}" in problem and "only type 'class', version 6" in problem
