"""Training throughput on one GPU: the official GSGAN train.py against gsgan-train, FFHQ256 settings.

    python benchmarks/bench_train_official.py --official .official/repo --out DIR [--seconds 90]

1. Renders a procedural heads dataset (128 images, 256 px, seed 0; RGBA + EG3D labels) and an RGB
   copy composited over black for the official code, whose loader keeps every PNG channel.
2. Runs the official train.py with the flags of its _scripts/train_ffhq256.sh (--cfg=ffhq, batch 32,
   gamma 1, gen_pose_cond, res_end 128, 256 initial rendering resolution, blur_fade_kimg 200,
   gpc_reg_prob 0.5, center_dists 1, prob_uniform 0.5, 256 points), but --gpus=1, --metrics=none and
   --tick=1 (a status line every kimg), for about --seconds of training. It runs unmodified, from a
   child process of this script that first adapts it in memory to one GPU and this software:
   - its StyleGAN CUDA plugins (bias_act, upfirdn2d, filtered_lrelu) use their reference ops (the
     plugins do not build under CUDA 13);
   - training.loss.GatherLayer works without torch.distributed (one process: the identity);
   - torch_utils.misc.InfiniteSampler's `super().__init__(dataset)` reaches a base that drops the
     argument (torch's Sampler takes none);
   - torch.optim.Adam takes the betas [0, 0.99] (an int) as floats;
   - stand-ins for modules it imports but does not use here when they are missing: distutils'
     strtobool (Python 3.12), cv2, psutil, scipy, plyfile, requests;
   - its rasterizer (ashawkey's diff-gaussian-rasterization) built from --dgr as bench_official.py
     does (in a cache folder, once per source, torch and Python version).
   Throughput: a timestamp per generator optimiser step (one per 32 images) written to a side file,
   images/s over the steps after --warmup-s; its own status lines (sec/kimg) as a cross-check.
3. Runs gsgan's trainer (`python -m gsgan_core.train`, i.e. gsgan-train) on the RGBA dataset with
   --preset ffhq256 --batch 32 --background black --workers 4 for as long, and reads images/s from
   its log.jsonl (one line every --log-steps steps; its loop synchronises every step).
Each side runs with a start-up timeout and a hard limit (and inside --budget-s when given); full
stdout/stderr of each go to --out (official_train.log, gsgan_train.log), with this script's own log
and JSON, and a table is printed last even if a side fails.

CPU smoke test of everything but the training itself (`--dry-run`): the official train.py parses
the flags and checks the dataset under the same in-memory adaptations (and tests them), and gsgan's
trainer runs a few CPU steps of the tiny preset:

    python benchmarks/bench_train_official.py --official .official/repo --out /tmp/bto --dry-run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

from common import Tee, device_name

ROOT = Path(__file__).resolve().parents[1]
CHILD_ENV = "GSGAN_BENCH_OFFICIAL_CHILD"  # set in the official child: its spawned workers re-import this file
FORCE_STUBS_ENV = "GSGAN_BENCH_FORCE_STUBS"  # --dry-run: the stand-ins even where the real modules exist

# train.py flags of the official _scripts/train_ffhq256.sh (hyper-parameters section), as given there
FFHQ256_FLAGS = [
    "--cfg=ffhq", "--batch=32", "--gamma=1", "--gen_pose_cond=True", "--neural_rendering_resolution_initial=256",
    "--blur_fade_kimg=200", "--kimg=15000", "--gaussian_num_pts=256", "--start_pe=True", "--gpc_reg_prob=0.5",
    "--center_dists=1.0", "--prob_uniform=0.5", "--res_end=128",
]
# ...and what this benchmark changes: one GPU, no metrics, a status line every kimg
BENCH_FLAGS = ["--gpus=1", "--metrics=none", "--tick=1"]


# ---------------------------------------------------------------------------------------------
# the official child: stand-ins and in-memory adaptations (none of the official files is edited)


def install_child_stubs() -> None:
    """Stand-ins for modules the official training imports but does not use here, when missing."""

    def missing(name: str) -> bool:
        if os.environ.get(FORCE_STUBS_ENV):
            return True
        try:
            __import__(name)
            return False
        except ImportError:
            return True

    def module(name: str, **attrs) -> types.ModuleType:
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        m.__stub__ = True
        sys.modules[name] = m
        return m

    def unavailable(what: str):
        def fail(*args, **kwargs):
            raise RuntimeError(f"{what} is a stand-in (not installed); the benchmark should not need it")
        return fail

    def attributes(prefix: str):  # a module __getattr__: any public name is a function that fails when called
        def getattr_(name: str):
            if name.startswith("__"):
                raise AttributeError(name)
            return unavailable(f"{prefix}.{name}")
        return getattr_

    def no_strtobool() -> bool:
        if missing("distutils.util"):
            return True
        return not hasattr(sys.modules["distutils.util"], "strtobool")

    if no_strtobool():  # Python >= 3.12 has no distutils (setuptools may bring one); dnnlib.util imports strtobool
        def strtobool(value: str) -> int:
            value = value.lower()
            if value in ("y", "yes", "t", "true", "on", "1"):
                return 1
            if value in ("n", "no", "f", "false", "off", "0"):
                return 0
            raise ValueError(f"invalid truth value {value!r}")
        util = module("distutils.util", strtobool=strtobool)
        module("distutils", util=util)
    if missing("cv2"):  # imported by training/loss.py and metrics, unused with --metrics=none
        module("cv2", __getattr__=attributes("cv2"))
    if missing("psutil"):  # the status line's cpumem field
        class _Process:
            def __init__(self, pid=None):
                self.pid = pid

            def memory_info(self):
                with open("/proc/self/statm") as f:
                    rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
                return types.SimpleNamespace(rss=rss)
        module("psutil", Process=_Process)
    if missing("scipy"):  # metrics (FID's sqrtm), augment and StyleGAN3 filters: unused here
        scipy = module("scipy")
        for sub in ("linalg", "signal", "optimize", "spatial", "spatial.transform"):
            m = module(f"scipy.{sub}", __getattr__=attributes(f"scipy.{sub}"))
            setattr(sys.modules["scipy.spatial"] if sub == "spatial.transform" else scipy, sub.split(".")[-1], m)
    if missing("plyfile"):
        module("plyfile", PlyData=type("PlyData", (), {"read": staticmethod(unavailable("plyfile"))}),
               PlyElement=type("PlyElement", (), {"describe": staticmethod(unavailable("plyfile"))}))
    if missing("requests"):
        import urllib.parse
        module("requests", compat=types.SimpleNamespace(urlparse=urllib.parse.urlparse, urljoin=urllib.parse.urljoin),
               Session=unavailable("requests.Session"))


if os.environ.get(CHILD_ENV):  # the official child and its DataLoader workers (spawned: they import this file)
    install_child_stubs()


_COUNTED: dict = {}  # the optimiser whose steps are counted, and its step count


def install_rasterizer_stub() -> None:
    """A no-op stand-in for diff_gaussian_rasterization (--dry-run on CPU only: nothing is rendered)."""
    import collections

    import torch

    class GaussianRasterizer(torch.nn.Module):
        def __init__(self, raster_settings):
            super().__init__()
            self.raster_settings = raster_settings

        def forward(self, means3D, means2D, opacities, shs=None, colors_precomp=None, scales=None, rotations=None,
                    cov3D_precomp=None):
            s = self.raster_settings
            h, w = int(s.image_height), int(s.image_width)
            zeros = means3D.new_zeros
            return zeros(3, h, w), zeros(means3D.shape[0], dtype=torch.int32), zeros(1, h, w), zeros(1, h, w)

    m = types.ModuleType("diff_gaussian_rasterization")
    m.GaussianRasterizationSettings = collections.namedtuple(
        "GaussianRasterizationSettings", ["image_height", "image_width", "tanfovx", "tanfovy", "bg", "scale_modifier",
                                          "viewmatrix", "projmatrix", "sh_degree", "campos", "prefiltered", "debug"],
        defaults=[False, False])
    m.GaussianRasterizer = GaussianRasterizer
    m.__stub__ = True
    sys.modules["diff_gaussian_rasterization"] = m


def adapt_official(official: Path, dgr_path: Path | None, progress_file: Path | None,
                   stub_rasterizer: bool = False) -> dict:
    """Make the official code importable and runnable on one GPU of this machine; returns what was done."""
    import torch

    done = {}
    if dgr_path is not None:
        sys.path.insert(0, str(dgr_path))
    sys.path.insert(0, str(official))
    try:
        import diff_gaussian_rasterization as dgr

        done["rasterizer"] = str(Path(dgr.__file__).parent)
    except ImportError as err:
        if not stub_rasterizer:
            raise RuntimeError(f"the official rasterizer does not import ({err}); build it from --dgr") from err
        install_rasterizer_stub()
        done["rasterizer"] = f"no-op stand-in ({err})"

    from torch_utils.ops import bias_act, filtered_lrelu, upfirdn2d  # official

    for mod in (bias_act, upfirdn2d, filtered_lrelu):
        mod._init = lambda: False
    done["plugins"] = "reference ops"

    import torch.distributed as dist
    import training.loss as official_loss  # official

    gather = official_loss.GatherLayer
    forward, backward = gather.forward, gather.backward

    def single_forward(ctx, input):
        if dist.is_available() and dist.is_initialized():
            ctx.single = False
            return forward(ctx, input)
        ctx.single = True
        return (input.clone(),)  # the gather of one process: itself

    def single_backward(ctx, *grads):
        if ctx.single:
            return grads[0]
        return backward(ctx, *grads)

    gather.forward, gather.backward = staticmethod(single_forward), staticmethod(single_backward)
    done["GatherLayer"] = "identity without torch.distributed"

    from torch_utils import misc  # official

    class SamplerBase(torch.utils.data.Sampler):
        """What InfiniteSampler's `super().__init__(dataset)` reaches: drops the argument."""

        def __init__(self, *args, **kwargs):
            super().__init__()

    if misc.InfiniteSampler.__bases__ == (torch.utils.data.Sampler,):
        misc.InfiniteSampler.__bases__ = (SamplerBase,)
    done["InfiniteSampler"] = "base takes the dataset argument"

    progress = open(progress_file, "a", buffering=1) if progress_file is not None else None
    counted = _COUNTED

    class Adam(torch.optim.Adam):
        """torch.optim.Adam with the betas as floats; counts the first optimiser's steps (G's: the
        official loop builds G's optimiser first, and G takes one step per batch)."""

        def __init__(self, params, *args, betas=(0.9, 0.999), **kwargs):
            super().__init__(params, *args, betas=tuple(float(b) for b in betas), **kwargs)
            if "opt" not in counted:
                counted["opt"] = self
                counted["steps"] = 0
                n = sum(p.numel() for group in self.param_groups for p in group["params"])
                print(f"[bench] counting the steps of the first Adam ({n / 1e6:.2f} M parameters)", flush=True)
                if progress is not None:
                    self.register_step_post_hook(Adam._count)

        @staticmethod
        def _count(optimizer, args, kwargs):
            counted["steps"] += 1
            progress.write(f"{time.time():.6f} {counted['steps']}\n")

    Adam.__name__ = Adam.__qualname__ = "Adam"
    torch.optim.Adam = Adam
    done["Adam"] = "betas as floats"
    return done


def self_test_adaptations(data: str) -> None:
    """The adaptations do what they should (on CPU): run in --dry-run."""
    import torch
    import training.loss as official_loss  # official
    from torch_utils import misc  # official

    _COUNTED["opt"] = "self-test"  # the test's optimiser is not the one to count
    x = torch.randn(3, 4, requires_grad=True)
    out = torch.cat(official_loss.GatherLayer.apply(x), dim=0)
    assert out.shape == (3, 4) and torch.equal(out, x)
    (out * 2).sum().backward()
    assert torch.equal(x.grad, torch.full_like(x, 2.0)), x.grad
    sampler = misc.InfiniteSampler(dataset=list(range(5)), seed=0)
    order = [int(i) for _, i in zip(range(7), iter(sampler))]
    assert all(0 <= i < 5 for i in order), order
    p = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.Adam([p], lr=0.1, betas=[0, 0.99], eps=1e-8)
    p.grad = torch.ones(2)
    opt.step()
    assert opt.param_groups[0]["betas"] == (0.0, 0.99)
    import dnnlib  # official

    assert dnnlib.util.get_obj_by_name("torch.optim.Adam") is torch.optim.Adam
    _COUNTED.clear()  # the test's optimiser was the first: the next one (G's) is the one to count
    # the training loop's data path: its dataset, InfiniteSampler and spawned workers (which import this
    # file again and need the stand-ins: dnnlib imports distutils' strtobool)
    dataset = dnnlib.util.construct_class_by_name(class_name="training.dataset.ImageFolderDataset", path=data,
                                                  use_labels=True, max_size=None, xflip=False)
    loader = torch.utils.data.DataLoader(dataset, sampler=misc.InfiniteSampler(dataset=dataset, seed=0), batch_size=2,
                                         num_workers=2, multiprocessing_context="spawn")
    images, labels = next(iter(loader))
    assert images.shape[1] == 3 and labels.shape == (2, 25), (images.shape, labels.shape)
    stubbed = sorted(n for n, m in list(sys.modules.items()) if isinstance(getattr(m, "__dict__", None), dict)
                     and m.__dict__.get("__stub__"))
    print(f"[bench] self-test of the adaptations passed (sampler order {order}; spawned loader: images "
          f"{list(images.shape)} {images.dtype}, labels {list(labels.shape)}; stand-ins: {', '.join(stubbed)})", flush=True)


def child_official(argv: list[str]) -> int:
    """`--child-official OFFICIAL DGR_PATH PROGRESS_FILE [--selftest] [--stub-rasterizer] -- train.py flags`:
    adapts the official code, then runs train.py's main with those flags."""
    import importlib.util

    split = argv.index("--")
    own, train_args = argv[:split], argv[split + 1:]
    official, dgr_path, progress = Path(own[0]).resolve(), own[1], own[2]
    done = adapt_official(official, Path(dgr_path) if dgr_path else None, Path(progress) if progress else None,
                          stub_rasterizer="--stub-rasterizer" in own)
    print("[bench] official code adapted in memory: " + json.dumps(done), flush=True)
    if "--selftest" in own:
        data = [a.split("=", 1)[1] for a in train_args if a.startswith("--data=")]
        self_test_adaptations(data[0])
    os.chdir(official)  # train.py copies "training" relative to the working directory
    spec = importlib.util.spec_from_file_location("official_train", official / "train.py")
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    train.main(args=train_args, prog_name="train.py", standalone_mode=False)
    print("[bench] train.py returned", flush=True)
    return 0


# ---------------------------------------------------------------------------------------------
# the launcher


def make_datasets(rgba: Path, count: int, resolution: int) -> tuple[Path, dict]:
    """The heads dataset (RGBA) and an RGB copy over black (for the official loader)."""
    import io
    import zipfile

    import numpy as np
    from PIL import Image

    from gsgan_core.data.heads import make_heads_dataset

    def shape(path: Path) -> tuple[int, tuple]:
        try:
            with zipfile.ZipFile(path) as z:
                labels = json.loads(z.read("dataset.json"))["labels"]
                return len(labels), np.asarray(Image.open(io.BytesIO(z.read(labels[0][0])))).shape
        except Exception:
            return 0, ()

    info = {}
    start = time.time()
    if rgba.is_file() and shape(rgba) == (count, (resolution, resolution, 4)):
        info["rgba"] = f"reused {rgba}"
    else:
        rgba.parent.mkdir(parents=True, exist_ok=True)
        make_heads_dataset(rgba, count, resolution, seed=0, progress=False)
        info["rgba"] = f"rendered {count} x {resolution} px in {time.time() - start:.1f} s"
    rgb = rgba.with_name(rgba.stem + "-rgb-black.zip")
    if not rgb.is_file() or rgb.stat().st_mtime < rgba.stat().st_mtime:
        tmp = rgb.with_suffix(".tmp")
        with zipfile.ZipFile(rgba) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as dst:
            for name in src.namelist():
                data = src.read(name)
                if name.lower().endswith(".png"):
                    image = np.asarray(Image.open(io.BytesIO(data)))
                    if image.ndim == 3 and image.shape[2] == 4:  # RGBA over black, like --background black
                        alpha = image[..., 3:].astype(np.float32) / 255
                        image = np.rint(image[..., :3].astype(np.float32) * alpha).astype(np.uint8)
                    buf = io.BytesIO()
                    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
                    data = buf.getvalue()
                dst.writestr(name, data)
        tmp.replace(rgb)
    n, first = shape(rgb)
    info["rgb"] = f"{rgb}: {n} images {list(first)}"
    info["seconds"] = time.time() - start
    return rgb, info


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []


def official_samples(progress: Path, batch: int) -> list[tuple[float, float]]:
    """(wall time, images) after each generator step."""
    out = []
    for line in _read_lines(progress):
        parts = line.split()
        if len(parts) == 2:
            try:
                out.append((float(parts[0]), int(parts[1]) * batch))
            except ValueError:
                pass
    return out


def gsgan_samples(log_jsonl: Path) -> list[tuple[float, float]]:
    """(seconds into the run, images) of each log.jsonl progress line."""
    out = []
    for line in _read_lines(log_jsonl):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "time_s" in record and "kimg" in record and "images_per_s" in record:
            out.append((float(record["time_s"]), float(record["kimg"]) * 1000))
    return out


TICK = re.compile(r"^tick\s+(\d+)\s+kimg\s+([\d.]+)\s+time\s+.*?sec/tick\s+([\d.]+)\s+sec/kimg\s+([\d.]+)"
                  r"(?:.*?gpumem\s+([\d.]+))?")


def official_ticks(log: Path) -> list[dict]:
    ticks = []
    for line in _read_lines(log):
        m = TICK.search(line.strip())
        if m:
            ticks.append({"tick": int(m[1]), "kimg": float(m[2]), "sec_per_tick": float(m[3]),
                          "sec_per_kimg": float(m[4]), "gpumem_gb": float(m[5]) if m[5] else None})
    return ticks


def throughput(samples: list[tuple[float, float]], warmup_s: float) -> dict:
    """Images/s over the samples at least warmup_s after the first one and after the longest pause
    of the first half (the official loop's tick-0 snapshot), or over the second half if too few;
    with the longest gap between samples in that window relative to the median one."""
    if len(samples) < 2:
        return {"img_s": None, "samples": len(samples)}
    t0 = samples[0][0]
    start = t0 + warmup_s
    early = [i for i in range(len(samples) - 1) if samples[i][0] < t0 + (samples[-1][0] - t0) / 2]
    if early:
        longest = max(early, key=lambda i: (samples[i + 1][0] - samples[i][0]) / max(samples[i + 1][1] - samples[i][1], 1e-9))
        start = max(start, samples[longest + 1][0])
    window = [s for s in samples if s[0] >= start]
    note = ""
    if len(window) < 2:
        window = samples[len(samples) // 2 - 1:] if len(samples) >= 3 else samples
        note = "too short for the warm-up: the second half"
    (ta, na), (tb, nb) = window[0], window[-1]
    rate = (nb - na) / (tb - ta) if tb > ta else None
    gaps = [(b[0] - a[0]) / max(b[1] - a[1], 1e-9) for a, b in zip(window, window[1:])]
    med = statistics.median(gaps) if gaps else None
    return {"img_s": rate, "window_s": tb - ta, "images": nb - na, "samples": len(window),
            "warmup_s": ta - t0, "largest_gap_vs_median": (max(gaps) / med) if med else None, "note": note}


def stop(process: subprocess.Popen, group: bool, grace: float) -> str:
    """SIGTERM (the process group, or the process alone), then SIGKILL of the group after `grace` s."""
    if process.poll() is not None:
        how = f"exited by itself (rc {process.returncode})"
    else:
        try:
            if group:
                os.killpg(process.pid, signal.SIGTERM)
            else:
                process.send_signal(signal.SIGTERM)
            process.wait(timeout=grace)
            how = f"stopped with SIGTERM (rc {process.returncode})"
        except subprocess.TimeoutExpired:
            how = "SIGKILL after SIGTERM was not enough"
        except ProcessLookupError:
            how = "already gone"
    try:  # whatever is left of its group (DataLoader workers)
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    return how


def run_side(name: str, cmd: list[str], cwd: Path, env: dict, log_path: Path, samples_fn, seconds: float,
             startup_timeout: float, dry_run: bool, group_stop: bool, stop_grace: float, deadline: float) -> dict:
    """Start a trainer, wait for its first step, let it train `seconds`, stop it (at the latest at the
    wall-clock time `deadline`); what happened."""
    print(f"[{name}] $ {' '.join(cmd)}\n[{name}] (cwd {cwd}; output {log_path})", flush=True)
    result = {"cmd": cmd, "log": str(log_path)}
    launched = time.time()
    with open(log_path, "w") as log:
        process = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        first_seen = None
        status = None
        while True:
            time.sleep(0.5 if dry_run else 1.0)
            samples = samples_fn()
            now = time.time()
            if samples and first_seen is None:
                first_seen = now
                result["startup_s"] = now - launched
                print(f"[{name}] first step after {result['startup_s']:.0f} s", flush=True)
            if process.poll() is not None:
                status = f"exited (rc {process.returncode})"
                break
            if first_seen is not None and samples[-1][0] - samples[0][0] >= seconds:
                status = "ran for the time asked"
                break
            if first_seen is None and now - launched > startup_timeout:
                status = f"no training step within {startup_timeout:.0f} s"
                break
            if first_seen is not None and now - first_seen > seconds * 1.5 + 60:
                status = "hard time limit"
                break
            if now > deadline:
                status = "stopped at the end of the time budget" + ("" if samples else " before its first step")
                break
        result["stop"] = stop(process, group_stop, stop_grace)
        result["returncode"] = process.returncode
    result["status"] = status
    result["wall_s"] = time.time() - launched
    tail = _read_lines(log_path)[-15:]
    result["log_tail"] = tail
    print(f"[{name}] {status}; {result['stop']}; {result['wall_s']:.0f} s in all", flush=True)
    if process.returncode not in (0, None, -signal.SIGTERM, -signal.SIGKILL) or (not samples_fn() and not dry_run):
        print(f"[{name}] last lines of {log_path}:\n  " + "\n  ".join(tail), flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, required=True, help="checkout of hse1032/GSGAN")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dgr", type=Path, default=None,
                        help="ashawkey/diff-gaussian-rasterization checkout (default: .official/dgr next to --official)")
    parser.add_argument("--seconds", type=float, default=90, help="training time of each side, warm-up included")
    parser.add_argument("--warmup-s", type=float, default=20, help="left out of the images/s")
    parser.add_argument("--data", type=Path, default=Path("/tmp/heads256.zip"), help="RGBA heads dataset (made if missing)")
    parser.add_argument("--count", type=int, default=128)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=4, help="gsgan-train's data workers (the official default: 3)")
    parser.add_argument("--sides", default="official,gsgan", help="which trainers to run")
    parser.add_argument("--startup-timeout", type=float, default=300, help="seconds to the first training step")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="seconds for the whole run: a side that no longer fits is shortened or skipped, and a "
                             "side still running at the end is stopped (default: no limit, each side trains --seconds)")
    parser.add_argument("--rundir", type=Path, default=Path("/tmp/gsgan-bench-train"), help="the trainers' output folders")
    parser.add_argument("--dry-run", action="store_true",
                        help="CPU smoke test: official train.py --dry-run with the adaptations self-tested; "
                             "gsgan-train a few CPU steps of the tiny preset")
    if len(sys.argv) > 1 and sys.argv[1] == "--child-official":
        return child_official(sys.argv[2:])
    args = parser.parse_args()
    sides = [s for s in args.sides.split(",") if s]
    if not sides or set(sides) - {"official", "gsgan"}:
        parser.error("--sides: official and/or gsgan")
    if not (args.official / "train.py").is_file():
        parser.error(f"--official {args.official}: not a GSGAN checkout (train.py missing)")
    if args.budget_s is not None and args.budget_s <= 0:
        parser.error("--budget-s: a positive number of seconds")
    if args.dgr is None and (args.official.parent / "dgr").is_dir():
        args.dgr = args.official.parent / "dgr"
    if args.dry_run:
        args.count, args.resolution, args.batch = 8, 64, 4
        args.startup_timeout = max(args.startup_timeout, 600)
        # a slow CPU: no budget cuts, but a bound for a side that hangs (its steps have no time limit here)
        args.budget_s = max(args.budget_s or 0, 1800)
        args.data = args.rundir / "heads64-dry.zip"

    import torch

    args.out.mkdir(parents=True, exist_ok=True)
    log = open(args.out / "bench_train_official.log", "w")
    sys.stdout, sys.stderr = Tee(sys.__stdout__, log), Tee(sys.__stderr__, log)
    start = time.time()
    cuda = torch.cuda.is_available() and not args.dry_run
    report = {"device": device_name("cuda" if cuda else "cpu") + (" (dry run)" if args.dry_run else ""),
              "torch": torch.__version__, "python": sys.version.split()[0], "args": vars(args), "sides": {},
              "errors": []}
    json_path = args.out / "bench_train_official.json"

    def save():
        report["elapsed_s"] = time.time() - start
        json_path.write_text(json.dumps(report, indent=1, default=str))

    budget_s = math.inf if args.budget_s is None else args.budget_s

    def remaining() -> float:
        return budget_s - (time.time() - start)

    try:
        if not cuda and not args.dry_run:
            raise RuntimeError("no CUDA device: only --dry-run runs without one")
        import bench_official

        dgr = bench_official.DgrBuild(args.dgr if "official" in sides else None, args.out / "dgr_build.log")
        dgr.start()  # in the background
        rgb, report["dataset"] = make_datasets(args.data, args.count, args.resolution)  # forks: before CUDA starts
        print(f"dataset: {json.dumps(report['dataset'])}", flush=True)
        if cuda:
            t = time.time()
            try:
                bench_official._warm_gsplat(torch.device("cuda"))  # gsplat's JIT compile, before either trainer
                report["gsplat_warmup_s"] = time.time() - t
                print(f"gsplat ready after {report['gsplat_warmup_s']:.0f} s", flush=True)
            except Exception as err:  # gsgan-train will say more; the official side does not need gsplat
                report["errors"].append(f"gsplat warm-up: {type(err).__name__}: {err}")
                print(f"gsplat warm-up failed: {type(err).__name__}: {err}", flush=True)
        dgr_path = (dgr.finish(timeout=min(bench_official.DGR_BUILD_TIMEOUT_S, remaining() - 150))
                    if "official" in sides else None)
        report["dgr_build"] = dgr.status
        print(f"[dgr] {dgr.status}", flush=True)
        save()

        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        for side in sides:
            left = remaining() - (30 if args.dry_run else 90)  # start-up and stop of this side
            if side == "official" and "gsgan" in sides:
                left -= (args.seconds + 90) if not args.dry_run else 0  # keep gsgan's share
            seconds = min(args.seconds, left) if not args.dry_run else 1e9  # dry run: each side stops by itself
            if seconds < 30 and not args.dry_run:
                report["sides"][side] = {"status": f"skipped: {remaining():.0f} s of budget left"}
                continue
            if side == "official" and dgr_path is None and not args.dry_run:
                report["sides"][side] = {"status": f"skipped: no official rasterizer ({dgr.status})"}
                continue
            rundir = args.rundir / side
            shutil.rmtree(rundir, ignore_errors=True)
            rundir.mkdir(parents=True)
            if side == "official":
                progress = rundir / "steps.txt"
                flags = ["--outdir=" + str(rundir / "runs"), "--data=" + str(rgb)] + FFHQ256_FLAGS + BENCH_FLAGS
                flags = [f for f in flags if not f.startswith("--batch=")] + [f"--batch={args.batch}"]
                if args.dry_run:
                    flags += ["--dry-run"]
                cmd = [sys.executable, str(Path(__file__).resolve()), "--child-official", str(args.official.resolve()),
                       str(dgr_path or ""), str(progress)]
                cmd += (["--selftest", "--stub-rasterizer"] if args.dry_run else []) + ["--"] + flags
                child_env = dict(env, **{CHILD_ENV: "1"})
                if args.dry_run:
                    child_env[FORCE_STUBS_ENV] = "1"
                result = run_side("official", cmd, args.official.resolve(), child_env, args.out / "official_train.log",
                                  lambda: official_samples(progress, args.batch), seconds,
                                  args.startup_timeout, args.dry_run, group_stop=True, stop_grace=15,
                                  deadline=start + budget_s - 15)
                result["throughput"] = throughput(official_samples(progress, args.batch), args.warmup_s)
                result["ticks"] = official_ticks(args.out / "official_train.log")
                later = [t for t in result["ticks"] if t["tick"] >= 1]
                if later:
                    result["img_s_from_their_log"] = 1000 / later[-1]["sec_per_kimg"]
                if args.dry_run:
                    text = "\n".join(_read_lines(args.out / "official_train.log"))
                    ok = "Dry run; exiting." in text and "self-test of the adaptations passed" in text
                    result["status"] = "dry run passed" if ok else "dry run FAILED"
                result["rasterizer"] = dgr_path and str(dgr_path)
            else:
                log_jsonl = rundir / "log.jsonl"
                cmd = [sys.executable, "-m", "gsgan_core.train", "--data", str(args.data), "--outdir", str(rundir),
                       "--batch", str(args.batch), "--background", "black", "--log-steps", "5",
                       "--snap-kimg", "100000", "--level-images", "0", "--seed", "0"]
                if args.dry_run:  # a few CPU steps; it stops by itself
                    cmd += ["--preset", "gsgan-tiny", "--device", "cpu", "--workers", "0", "--max-steps", "3",
                            "--log-steps", "1"]
                else:
                    cmd += ["--preset", "ffhq256", "--workers", str(args.workers),
                            "--max-minutes", f"{(seconds + args.startup_timeout) / 60:.2f}"]
                result = run_side("gsgan", cmd, ROOT, env, args.out / "gsgan_train.log", lambda: gsgan_samples(log_jsonl),
                                  seconds, args.startup_timeout, args.dry_run, group_stop=False, stop_grace=45,
                                  deadline=start + budget_s - 45)
                result["throughput"] = throughput(gsgan_samples(log_jsonl), args.warmup_s if not args.dry_run else 0)
                records = [json.loads(line) for line in _read_lines(log_jsonl) if line.startswith("{")]
                progress_lines = [r for r in records if "images_per_s" in r]
                if progress_lines:
                    result["last_log_line"] = progress_lines[-1]
                    result["gpu_mem_gb"] = progress_lines[-1].get("gpu_mem_gb")
                if args.dry_run:
                    ok = len(progress_lines) >= 2 and result["throughput"]["img_s"]
                    result["status"] = "dry run passed" if ok else "dry run FAILED"
            report["sides"][side] = result
            save()
    except Exception as err:
        import traceback

        traceback.print_exc()
        report["errors"].append(f"{type(err).__name__}: {err}")
    finally:
        save()
        print_table(report)
    failed = report["errors"] or any("FAILED" in str(s.get("status")) for s in report["sides"].values())
    return 1 if failed else 0


def print_table(report: dict) -> None:
    def f(x, digits=1):
        return "-" if x is None else f"{x:.{digits}f}"

    print()
    print(f"## bench_train_official: {report['device']}, torch {report['torch']}, "
          f"batch {report['args']['batch']}, {report['args']['resolution']} px heads x {report['args']['count']}")
    print(f"official rasterizer: {report.get('dgr_build')}")
    print()
    print("| trainer | status | img/s (after warm-up) | timed s | img/s from its own log | start-up s | peak GPU GB | log |")
    print("|---|---|---|---|---|---|---|---|")
    rates = {}
    for side, label in (("official", "official train.py"), ("gsgan", "gsgan-train")):
        r = report["sides"].get(side)
        if r is None:
            continue
        tp = r.get("throughput") or {}
        rates[side] = tp.get("img_s")
        own = r.get("img_s_from_their_log")
        if side == "gsgan" and r.get("last_log_line"):
            own = r["last_log_line"].get("images_per_s")  # since the loop started, its first steps included
        mem = r.get("gpu_mem_gb")
        if side == "official" and r.get("ticks"):
            mems = [t["gpumem_gb"] for t in r["ticks"] if t.get("gpumem_gb") is not None]
            mem = max(mems) if mems else None
        print(f"| {label} | {r.get('status')} | {f(tp.get('img_s'))} | {f(tp.get('window_s'), 0)} | {f(own)} | "
              f"{f(r.get('startup_s'), 0)} | {f(mem)} | {Path(r['log']).name if r.get('log') else '-'} |")
    print()
    if rates.get("official") and rates.get("gsgan"):
        print(f"gsgan / official: {rates['gsgan'] / rates['official']:.2f}x "
              f"({rates['gsgan']:.1f} vs {rates['official']:.1f} img/s)")
    print("notes: official = train.py with _scripts/train_ffhq256.sh's flags but --gpus=1 (all 32 images on one GPU), "
          "--metrics=none, --tick=1, on the heads composited over black; its StyleGAN plugins as reference ops. "
          "gsgan-train: --preset ffhq256 --batch 32 --background black. img/s from the step times after the warm-up; "
          "'from its own log': the official status line's sec/kimg (last tick >= 1), gsgan's log.jsonl images_per_s "
          "since its loop started.")
    for side, r in report["sides"].items():
        if r.get("status") not in ("ran for the time asked", "dry run passed"):
            print(f"{side}: {r.get('status')}; last lines of its log:")
            for line in (r.get("log_tail") or [])[-8:]:
                print("    " + line)
    for err in report["errors"]:
        print(f"ERROR: {err}")


if __name__ == "__main__":
    sys.exit(main())
