"""The official GSGAN generator against gsgan's re-implementation, same weights, one CUDA GPU, one process.

    python benchmarks/bench_official.py --official .official/repo --out DIR [--iters 50] \\
        [--configs ffhq256[,ffhq512]] [--batches 1,8] [--dgr .official/dgr] [--budget-s SECONDS]

For each configuration the official `GSGenerator` is built the way its train.py builds it (through
tests/fixtures/official/regenerate.py: same kwargs, same seed, layerscales and w_avg randomised), and
its G_ema weights are loaded into gsgan's `GSGANGenerator` with `generator_from_official`. Then:

1. parity: one latent and one camera through both generators (TF32 off); the largest differences of
   the Gaussians (means, colours, scales, opacities, rotations) and of ws; with the official
   rasterizer built, the PSNR between its image and gsgan's gsplat render of the same camera;
2. the official code, eager, batch 1 and 8: `G_ema(z, c)` with its own rasterizer
   (ashawkey's diff-gaussian-rasterization, built from --dgr into a cache folder: `setup.py
   build_ext --inplace`, in the background while gsplat compiles) and with the rasterizer replaced
   by a no-op (the generator part); when the rasterizer does not build, the generator part only;
   its StyleGAN CUDA plugins run as their reference ops (they do not build under CUDA 13);
3. gsgan, batch 1 and 8, mapping + synthesize in several modes (eager fp32 / TF32, CUDA graph
   `GraphedSynthesis`, torch.compile reduce-overhead), gsplat rendering at the training resolution
   (one camera per scene, camera model "gsgan"), and generate + render end to end in one timed call.

Medians after warm-up, synchronised. A markdown table is printed last (also when a stage fails or
the time budget given with --budget-s runs out); the JSON (written after every stage), the full log
and the rasterizer's build log go to --out.

CPU smoke test (no rasterizer, no graphs; the tiny configurations shrink the official code):

    python benchmarks/bench_official.py --official .official/repo --out /tmp/bo \\
        --configs tiny256 --device cpu --batches 1,2 --iters 2
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import importlib.util
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import torch

from gsgan_core.cameras import camera_forward, cameras_to_labels, labels_to_cameras, orbit_camera, to_rasterizer
from gsgan_core.io.official import generator_from_official
from gsgan_core.models.generator import z_from_seeds
from gsgan_core.render import backend_report, render

from common import Tee, device_name, median_ms, set_tf32, sync

ROOT = Path(__file__).resolve().parents[1]
# The test fixtures' generator (ours): it builds the official generator of each configuration with its
# train.py's kwargs and seeds; the benchmark builds the same ones, so parity here is parity there.
REGENERATE = ROOT / "tests" / "fixtures" / "official" / "regenerate.py"
FULL_CONFIGS = ("ffhq256", "ffhq512", "afhq256", "afhq512")
TINY_CONFIGS = ("tiny256", "tiny512")
TARGET_MS_PER_IMAGE = {256: 1.5}  # the goal at 256 px: generator + rasterizer per image
PSI = 0.7
DGR_CACHE = Path(os.environ.get("GSGAN_BENCH_CACHE", "/tmp/gsgan-bench"))
DGR_BUILD_TIMEOUT_S = 600  # a rasterizer build that takes longer is taken as hung


# ---------------------------------------------------------------------------------------------
# small utilities


class Deadline(Exception):
    """The time budget ran out (SIGALRM)."""


class Budget:
    """Whole-run time budget: `remaining()`, and `limit(seconds)` to bound one stage (SIGALRM).
    `seconds` None: no budget (`remaining()` is infinite; `limit(seconds)` still bounds a stage)."""

    def __init__(self, seconds: float | None):
        self.start = time.time()
        self.seconds = math.inf if seconds is None else seconds
        self.can_alarm = hasattr(signal, "SIGALRM")
        if self.can_alarm:
            signal.signal(signal.SIGALRM, self._fire)

    def _fire(self, signum, frame):
        raise Deadline("time budget reached")

    def elapsed(self) -> float:
        return time.time() - self.start

    def remaining(self) -> float:
        return self.seconds - self.elapsed()

    @contextlib.contextmanager
    def limit(self, seconds: float | None = None):
        """Raise Deadline in the main thread after min(seconds, remaining budget)."""
        if not self.can_alarm:
            yield
            return
        allowed = self.remaining() if seconds is None else min(seconds, self.remaining())
        previous = signal.alarm(0)  # an outer limit's seconds left (0: none)
        if previous:
            allowed = min(allowed, previous)
        start = time.time()
        if math.isfinite(allowed):  # else: no budget and no stage limit, nothing to arm
            signal.alarm(max(1, int(math.ceil(allowed))))
        try:
            yield
        finally:
            signal.alarm(0)
            if previous:  # re-arm what is left of the outer limit
                signal.alarm(max(1, int(math.ceil(previous - (time.time() - start)))))


def load_regenerate():
    """tests/fixtures/official/regenerate.py (ours) as a module: the official configs and helpers.
    Loaded by path: tests/ is not a package that is installed."""
    spec = importlib.util.spec_from_file_location("gsgan_official_regenerate", REGENERATE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_json(path: Path, data) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    tmp.replace(path)


# ---------------------------------------------------------------------------------------------
# the official rasterizer (ashawkey/diff-gaussian-rasterization)


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_dir() or rel.startswith(("build/", "dist/")) or "__pycache__" in rel or path.suffix == ".so":
            continue
        h.update(rel.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


GLM_DEVICE_FIX = "glm-functors-hd-1"  # part of the cache key: builds made before the patch are not reused


def patch_glm(root: Path) -> int:
    """Makes glm's TMin/TMax/TAbs/... functors __host__ __device__ in the copy at `root` (what glm 1.0.2
    does; older glm, such as the one gsplat's wheel carries, leaves them host-only). Without it
    `glm::max(vec3, float)` in the rasterizer's SH-to-colour clamp is a host call in device code, nvcc
    only warns (#20011-D) and drops the colour stores, and the rasterizer blends whatever memory held.
    Returns the number of functors patched (0: this glm is fine)."""
    path = root / "third_party" / "glm" / "glm" / "detail" / "func_common.inl"
    if not path.is_file():
        return 0
    text = path.read_text()
    patched, n = re.subn(r"(struct T\w+\s*\{\s*)T operator\(\)", r"\1GLM_FUNC_QUALIFIER T operator()", text)
    if n:
        path.write_text(patched)
    return n


def host_calls_in_device_code(log: str) -> list[str]:
    """Lines of a build log where nvcc says device code calls a host function of glm (#20011-D)."""
    return [line.strip() for line in log.splitlines() if "20011" in line and "glm::" in line]


class DgrBuild:
    """Builds the rasterizer's extension in a cache folder (sources copied there), in the background.

    The cache folder is keyed by the sources, torch and Python, so each combination is built once;
    the checkout itself stays free of build outputs."""

    def __init__(self, source: Path | None, log_path: Path):
        self.source = source
        self.log_path = log_path
        self.process = None
        self.status = "not requested"
        self.path: Path | None = None
        self.seconds = 0.0
        self._start = 0.0

    @staticmethod
    def built(folder: Path) -> bool:
        return any((folder / "diff_gaussian_rasterization").glob("_C*.so"))

    def start(self) -> None:
        if self.source is None:
            self.status = "no --dgr given"
            return
        if not torch.cuda.is_available():
            self.status = "no CUDA: not built"
            return
        if not (self.source / "setup.py").is_file():
            self.status = f"{self.source}/setup.py missing"
            return
        if not any((self.source / "third_party" / "glm").glob("glm/glm.hpp")):
            self.status = f"{self.source}/third_party/glm/glm/glm.hpp missing (copy glm from gsplat's wheel)"
            return
        key = hashlib.sha256(
            f"{_tree_digest(self.source)} {torch.__version__} {sys.version_info[:2]} {GLM_DEVICE_FIX}".encode()
        ).hexdigest()[:16]
        self.path = DGR_CACHE / f"dgr-{key}"
        if self.built(self.path):
            self.status = f"cached build {self.path}"
            return
        work = DGR_CACHE / f"dgr-{key}.building-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        work.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(self.source, work, ignore=shutil.ignore_patterns("build", "dist", "*.so", "__pycache__", "*.egg-info"))
        patched = patch_glm(work)
        if patched:
            print(f"[dgr] glm: {patched} functors made __host__ __device__ (glm < 1.0.2)", flush=True)
        self._work = work
        env = dict(os.environ)
        env.setdefault("MAX_JOBS", str(os.cpu_count() or 8))
        self._log = open(self.log_path, "w")
        self._start = time.time()
        print(f"[dgr] building {self.source} in {work} (log {self.log_path})", flush=True)
        self.process = subprocess.Popen([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=work, env=env,
                                        stdout=self._log, stderr=subprocess.STDOUT)
        self.status = "building"

    def finish(self, timeout: float) -> Path | None:
        """Wait for the build; the folder to put on sys.path, or None (self.status says why)."""
        if self.process is not None:
            try:
                rc = self.process.wait(timeout=max(timeout, 1))
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                rc = "timeout"
            self.seconds = time.time() - self._start
            self._log.close()
            self.process = None
            host_calls = host_calls_in_device_code(self.log_path.read_text(errors="replace"))
            if rc == 0 and host_calls:  # it built, but some device code would do nothing defined
                shutil.rmtree(self._work, ignore_errors=True)
                self.status = f"build unusable: device code calls host functions: {host_calls[0][:200]}"
                self.path = None
                return None
            if rc == 0 and self.built(self._work):
                if self.built(self.path):  # another run finished first
                    shutil.rmtree(self._work, ignore_errors=True)
                else:
                    shutil.rmtree(self.path, ignore_errors=True)
                    self._work.rename(self.path)
                self.status = f"built in {self.seconds:.0f} s"
            else:
                tail = self.log_path.read_text(errors="replace").strip().splitlines()[-5:]
                self.status = f"build failed (rc {rc}, {self.seconds:.0f} s): " + " | ".join(tail)
                self.path = None
        if self.path is not None and self.built(self.path):
            return self.path
        return None


# ---------------------------------------------------------------------------------------------
# the official code


class Official:
    """The official checkout made importable: stubs for what is missing, the real rasterizer if built."""

    def __init__(self, regen, checkout: Path, tiny: bool, dgr_path: Path | None):
        self.regen = regen
        self.tmp = None
        self.code_dir = checkout.resolve()
        if tiny:  # a patched copy with the widths / depths shrunk (regenerate.py's TINY_PATCHES)
            self.tmp = tempfile.mkdtemp(prefix="gsgan-official-tiny-")
            self.code_dir = Path(self.tmp) / "repo"
            regen.patch_tree(str(checkout), str(self.code_dir), regen.TINY_PATCHES)
        regen.install_stubs()  # plyfile / scipy / requests / distutils where missing, and a rasterizer stub
        self.rasterizer = "stub (no-op: the generator part only)"
        if dgr_path is not None:
            del sys.modules["diff_gaussian_rasterization"]
            sys.path.insert(0, str(dgr_path))
            try:
                import diff_gaussian_rasterization as dgr  # noqa: F401

                assert not getattr(dgr, "__stub__", False)
                self.rasterizer = f"diff-gaussian-rasterization ({Path(dgr.__file__).parent})"
            except Exception as err:  # the stub again: the generator part can still be timed
                print(f"[official] the built rasterizer does not import: {type(err).__name__}: {err}", flush=True)
                sys.modules.pop("diff_gaussian_rasterization", None)
                regen.install_stubs()
                self.rasterizer = f"stub (the built rasterizer failed to import: {type(err).__name__}: {err})"
        sys.path.insert(0, str(self.code_dir))
        import dnnlib  # noqa: F401  (official)
        from torch_utils.ops import bias_act, filtered_lrelu, upfirdn2d  # official

        for mod in (bias_act, upfirdn2d, filtered_lrelu):  # their reference ops: the plugins need CUDA < 13
            mod._init = lambda: False
        import training.gaussian3d_splatting.renderer as renderer  # official
        import training.gs_generator as gsg  # official

        assert Path(gsg.__file__).resolve().is_relative_to(self.code_dir), gsg.__file__
        self.renderer_module = renderer
        self.real_rasterizer = renderer.GaussianRasterizer
        self.has_real_rasterizer = not self.rasterizer.startswith("stub")

    @contextlib.contextmanager
    def rasterizer_stubbed(self):
        """The official renderer with a no-op rasterizer: G(z, c) times only its generator part."""
        self.renderer_module.GaussianRasterizer = self.regen._StubRasterizer
        try:
            yield
        finally:
            self.renderer_module.GaussianRasterizer = self.real_rasterizer

    def build(self, name: str):
        """(G_ema, init_kwargs, state_dict, pivot) as regenerate.py builds them for `name`."""
        import dnnlib  # official

        regen = self.regen
        cfg = regen.CONFIGS[name]
        G_kwargs, _, common_kwargs, _ = regen.build_kwargs(cfg)
        pivot = (regen.FFHQ_RENDERING if cfg["cfg"] == "ffhq" else regen.AFHQ_RENDERING)["avg_camera_pivot"]
        torch.manual_seed(cfg["seed"])
        G = dnnlib.util.construct_class_by_name(**G_kwargs, **common_kwargs).train().requires_grad_(False)
        regen.randomise(G, cfg["seed"] + 1)
        G.register_buffer("dataset_label_std", regen.label_std(pivot))
        G_ema = copy.deepcopy(G).eval()
        del G
        init_kwargs = regen._jsonable(dict(G_ema.init_kwargs))
        state_dict = {k: v.detach().clone() for k, v in G_ema.state_dict().items()}
        return G_ema, init_kwargs, state_dict, pivot

    def close(self):
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# measurements


def parity(official: Official, G_off, G, pivot, resolution: int, device: torch.device, backend: str) -> dict:
    """One latent, one camera (the official label sampler's frontal view), TF32 off."""
    regen = official.regen
    set_tf32(False)
    z_dim = G.config.z_dim
    z = z_from_seeds([1], z_dim, device)
    labels = regen.camera_labels(pivot)[:1].to(device)  # [1, 25], official LookAtPoseSampler
    cam2world, K_norm = labels_to_cameras(labels)
    result = {}
    with torch.no_grad():
        ws_off = G_off.mapping(z, labels, truncation_psi=PSI, truncation_cutoff=None)
        out = G_off(z, labels, c_mapping=labels, truncation_psi=PSI, truncation_cutoff=None)
        dec = out["dec_out"]
        ws = G.mapping(z, labels, psi=PSI)
        ours = G.synthesize(ws, camera_forward(cam2world))
        sign = torch.where((ours.quats[0] * dec["rotation"][0]).sum(-1, keepdim=True) < 0, -1.0, 1.0)
        pairs = {
            "ws": (ws, ws_off),
            "means": (ours.means[0], dec["sample_coordinates"][0]),
            "colors": (ours.sh_dc[0], dec["color"][0]),
            "log_scales": (ours.log_scales[0], dec["scale"][0]),
            "opacity_logits": (ours.opacity_logits[0], dec["opacity"][0].squeeze(-1)),
            "quats": (ours.quats[0] * sign, dec["rotation"][0]),
        }
        for key, (a, b) in pairs.items():
            if a.shape != b.shape:
                result[key] = f"shape {list(a.shape)} vs {list(b.shape)}"
                continue
            diff = (a.float() - b.float()).abs()
            result[key] = float(diff.max())
            result[key + "_range"] = float(b.float().abs().max())
        result["gaussians"] = int(ours.means.shape[1])
        if official.has_real_rasterizer:
            viewmats, Ks = to_rasterizer(cam2world, K_norm, resolution, resolution, camera_model=G.config.camera_model)
            ours_img = render(ours, viewmats[:, None], Ks[:, None], resolution, resolution, backend=backend).rgb[0, 0]
            theirs_img = ((out["image"][0].float() + 1) / 2).permute(1, 2, 0)  # [-1, 1] CHW -> [0, 1] HWC
            if tuple(theirs_img.shape) == tuple(ours_img.shape):
                mse = float((ours_img.float() - theirs_img).square().mean())
                result["image_psnr_db"] = math.inf if mse == 0 else 10 * math.log10(1.0 / mse)
                result["image_max_abs"] = float((ours_img.float() - theirs_img).abs().max())
            else:
                result["image_psnr_db"] = f"shape {list(ours_img.shape)} vs {list(theirs_img.shape)}"
    return result


def cameras(batch: int, resolution: int, G, device):
    cam2world, K_norm = orbit_camera(yaw=torch.linspace(-0.4, 0.4, batch), pitch=0.1, device=device)
    labels = cameras_to_labels(cam2world, K_norm)  # EG3D labels: what both mappings and the official render take
    viewmats, Ks = to_rasterizer(cam2world, K_norm, resolution, resolution, camera_model=G.config.camera_model)
    return labels, camera_forward(cam2world), viewmats[:, None], Ks[:, None]  # one camera per scene


def time_official(official: Official, G_off, G, batch: int, resolution: int, device, iters: int, note) -> list[dict]:
    labels, _, _, _ = cameras(batch, resolution, G, device)
    z = z_from_seeds(range(batch), G.config.z_dim, device)
    rows = []

    def call():
        return G_off(z, labels, truncation_psi=PSI)

    with torch.no_grad():
        for tf32 in (False, True):
            if tf32 and device.type != "cuda":
                continue
            set_tf32(tf32)
            precision = "TF32" if tf32 else "fp32"
            with official.rasterizer_stubbed():
                gen_ms = median_ms(call, device, iters, warmup=3)
            if official.has_real_rasterizer:
                full_ms = median_ms(call, device, iters, warmup=3)
                rows.append(dict(impl="official", batch=batch, mode=f"eager {precision}, own rasterizer",
                                 generator_ms=gen_ms, render_ms=full_ms - gen_ms, total_ms=full_ms,
                                 note="render = full - generator part (rasterizer no-op)"))
            else:
                rows.append(dict(impl="official", batch=batch, mode=f"eager {precision}, generator only",
                                 generator_ms=gen_ms, render_ms=None, total_ms=None,
                                 note="rasterizer unavailable: " + official.rasterizer))
            note(rows[-1])
    return rows


def time_gsgan(G, batch: int, resolution: int, device, iters: int, backend: str, note) -> tuple[list[dict], dict]:
    """mapping + synthesize eager (fp32, TF32) and as a CUDA graph; gsplat; both in one timed call."""
    from gsgan_core.models.graphed import GraphedSynthesis

    labels, view_dirs, viewmats, Ks = cameras(batch, resolution, G, device)
    z = z_from_seeds(range(batch), G.config.z_dim, device)
    cuda = device.type == "cuda"
    gen_ms: dict[str, float] = {}
    errors: dict[str, float | str] = {}
    graphs = {}
    graphed = None

    def gen_eager():
        return G.synthesize(G.mapping(z, labels, psi=PSI), view_dirs)

    with torch.no_grad():
        set_tf32(False)
        reference = gen_eager()
        gen_ms["eager fp32"] = median_ms(gen_eager, device, iters)
        if cuda:
            set_tf32(True)
            gen_ms["eager TF32"] = median_ms(gen_eager, device, iters)
            for precision, tf32 in (("fp32", False), ("TF32", True)):
                label = f"CUDA graph {precision}"
                try:
                    set_tf32(tf32)
                    graphed = GraphedSynthesis(G, batch)
                    out = graphed(G.mapping(z, labels, psi=PSI), view_dirs)
                    errors[label] = float((out.means - reference.means).abs().max())
                    gen_ms[label] = median_ms(lambda: graphed(G.mapping(z, labels, psi=PSI), view_dirs, clone=False),
                                              device, iters)
                    graphs[precision] = graphed
                except Exception as err:
                    errors[label] = f"failed: {type(err).__name__}: {str(err)[:300]}"
                    print(f"[gsgan] {label} failed at batch {batch}: {type(err).__name__}: {err}", flush=True)
            set_tf32(True)
        render_ms = median_ms(lambda: render(reference, viewmats, Ks, resolution, resolution, backend=backend),
                              device, iters)
        image = render(reference, viewmats, Ks, resolution, resolution, backend=backend).rgb
        assert image.shape == (batch, 1, resolution, resolution, 3), image.shape

        # end to end in one timed call: the fastest way to Gaussians measured so far, then the rasterizer
        if "TF32" in graphs:
            graphed = graphs["TF32"]
            label = "CUDA graph TF32 + gsplat"

            def e2e():
                return render(graphed(G.mapping(z, labels, psi=PSI), view_dirs, clone=False), viewmats, Ks,
                              resolution, resolution, backend=backend)
        else:
            label = f"eager {'TF32' if cuda else 'fp32'} + {backend}"

            def e2e():
                return render(gen_eager(), viewmats, Ks, resolution, resolution, backend=backend)
        e2e_ms = {label: median_ms(e2e, device, iters)}

        peak_mib = None
        if cuda:
            graphs.clear()
            graphed = e2e = None  # free the graphs' memory pools before measuring the peak
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            render(gen_eager(), viewmats, Ks, resolution, resolution, backend=backend)
            sync(device)
            peak_mib = (torch.cuda.max_memory_allocated(device) - base) / 2**20

    rows = []
    for mode, ms in gen_ms.items():
        rows.append(dict(impl="gsgan", batch=batch, mode=mode, generator_ms=ms, render_ms=render_ms,
                         total_ms=ms + render_ms, note="total = generator + render, timed apart"))
        note(rows[-1])
    for mode, ms in e2e_ms.items():
        rows.append(dict(impl="gsgan", batch=batch, mode="end to end: " + mode, generator_ms=None, render_ms=None,
                         total_ms=ms, note="one timed call"))
        note(rows[-1])
    info = {"max_abs_diff_of_means_vs_eager_fp32": errors, "peak_mib_eager_generate_render": peak_mib,
            "render_ms": render_ms, "image_mean": float(image.mean()), "gaussians": int(reference.means.shape[1])}
    return rows, info


def time_gsgan_compiled(G, batch: int, resolution: int, device, iters: int, backend: str, budget: Budget,
                        compile_timeout: float, render_ms: float | None, note) -> tuple[list[dict], dict]:
    """torch.compile (reduce-overhead: inductor kernels replayed as a CUDA graph) of mapping + synthesize."""
    labels, view_dirs, viewmats, Ks = cameras(batch, resolution, G, device)
    z = z_from_seeds(range(batch), G.config.z_dim, device)
    info: dict = {}
    rows = []
    with torch.no_grad():
        set_tf32(False)
        reference = G.synthesize(G.mapping(z, labels, psi=PSI), view_dirs)
        set_tf32(True)

        def gen_fn(z, labels, view_dirs):
            return G.synthesize(G.mapping(z, labels, psi=PSI), view_dirs)

        compiled = torch.compile(gen_fn, mode="reduce-overhead", dynamic=False)
        start = time.perf_counter()
        with budget.limit(min(compile_timeout, budget.remaining() - 15)):
            for _ in range(3):  # compile, then record the CUDA graph
                out = compiled(z, labels, view_dirs)
            sync(device)
            info["compile_s"] = time.perf_counter() - start
            info["max_abs_diff_of_means_vs_eager_fp32"] = float((out.means.float() - reference.means).abs().max())
            info["max_abs_diff_of_colors_vs_eager_fp32"] = float((out.sh_dc.float() - reference.sh_dc).abs().max())
            del out
            gen_ms = median_ms(lambda: compiled(z, labels, view_dirs), device, iters)
            rows.append(dict(impl="gsgan", batch=batch, mode="compiled TF32 (reduce-overhead)", generator_ms=gen_ms,
                             render_ms=render_ms, total_ms=gen_ms + render_ms if render_ms is not None else None,
                             note="total = generator + render, timed apart"))
            note(rows[-1])
            e2e_ms = median_ms(lambda: render(compiled(z, labels, view_dirs), viewmats, Ks, resolution, resolution,
                                              backend=backend), device, iters)
            rows.append(dict(impl="gsgan", batch=batch, mode=f"end to end: compiled TF32 + {backend}",
                             generator_ms=None, render_ms=None, total_ms=e2e_ms, note="one timed call"))
            note(rows[-1])
    return rows, info


# ---------------------------------------------------------------------------------------------
# report


def fmt(x, digits=2):
    if x is None:
        return "-"
    if isinstance(x, float):
        if math.isinf(x):
            return "inf"
        return f"{x:.{digits}f}" if abs(x) >= 10 ** -digits or x == 0 else f"{x:.2e}"
    return str(x)


def print_report(report: dict) -> None:
    print()
    print(f"## bench_official: {report.get('device')}, torch {report.get('torch')}")
    print(f"official rasterizer: {report.get('official_rasterizer')}; dgr build: {report.get('dgr_build')}; "
          f"gsgan render: {report.get('render_backend')}")
    print()
    print("| config | impl | batch | mode | generator ms | render ms | total ms | ms / image |")
    print("|---|---|---|---|---|---|---|---|")
    order = list(dict.fromkeys(r["config"] for r in report["rows"]))
    rows = sorted(report["rows"], key=lambda r: (order.index(r["config"]), r["batch"], r["impl"] != "official"))
    for r in rows:
        per_image = r["total_ms"] / r["batch"] if r.get("total_ms") is not None else (
            r["generator_ms"] / r["batch"] if r.get("generator_ms") is not None else None)
        star = "" if r.get("total_ms") is not None else " (G only)"
        print(f"| {r['config']} | {r['impl']} | {r['batch']} | {r['mode']} | {fmt(r.get('generator_ms'))} | "
              f"{fmt(r.get('render_ms'))} | {fmt(r.get('total_ms'))} | {fmt(per_image, 3)}{star} |")
    print()
    for name, p in report.get("parity", {}).items():
        keys = ("ws", "means", "colors", "log_scales", "opacity_logits", "quats")
        parts = [f"{k} {fmt(p[k], 3) if isinstance(p.get(k), float) else p.get(k)}" for k in keys if k in p]
        if "image_psnr_db" in p:
            parts.append(f"image PSNR {fmt(p['image_psnr_db'], 1)} dB (official rasterizer vs gsplat)")
        print(f"parity {name} (max |gsgan - official|, one latent, TF32 off): " + ", ".join(parts))
    for name, s in report.get("summary", {}).items():
        for batch, line in s.items():
            print(f"summary {name} batch {batch}: {line}")
    for err in report.get("errors", []):
        print(f"ERROR: {err}")
    for n in report.get("notes", []):
        print(f"note: {n}")


def summarise(report: dict, name: str, resolution: int) -> None:
    rows = [r for r in report["rows"] if r["config"] == name]
    summary = {}
    for batch in sorted({r["batch"] for r in rows}):
        ours = [r for r in rows if r["impl"] == "gsgan" and r["batch"] == batch and r.get("total_ms") is not None]
        theirs = [r for r in rows if r["impl"] == "official" and r["batch"] == batch]
        parts = []
        if ours:
            best = min(ours, key=lambda r: r["total_ms"])
            per = best["total_ms"] / batch
            parts.append(f"gsgan best {per:.3f} ms/image ({best['mode']})")
            target = TARGET_MS_PER_IMAGE.get(resolution)
            if target is not None:
                parts.append(f"goal <= {target} ms/image: {'met' if per <= target else 'NOT met'}")
            full = [r for r in theirs if r.get("total_ms") is not None]
            if full:
                off = min(full, key=lambda r: r["total_ms"])
                parts.append(f"official {off['total_ms'] / batch:.3f} ms/image ({off['mode']}): "
                             f"gsgan {off['total_ms'] / best['total_ms']:.1f}x faster")
            elif theirs:
                off = min(theirs, key=lambda r: r["generator_ms"])
                gen_best = min((r for r in ours if r.get("generator_ms") is not None), key=lambda r: r["generator_ms"],
                               default=None)
                if gen_best is not None:
                    parts.append(f"generator only: official {off['generator_ms'] / batch:.3f} ms/image, gsgan "
                                 f"{gen_best['generator_ms'] / batch:.3f} ({off['generator_ms'] / gen_best['generator_ms']:.1f}x)")
        summary[batch] = "; ".join(parts)
    report.setdefault("summary", {})[name] = summary


# ---------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, required=True, help="checkout of hse1032/GSGAN")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dgr", type=Path, default=None,
                        help="checkout of ashawkey/diff-gaussian-rasterization with third_party/glm "
                             "(default: .official/dgr next to --official, if there)")
    parser.add_argument("--configs", default="ffhq256", help=f"comma-separated: {', '.join(FULL_CONFIGS + TINY_CONFIGS)}")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--iters", type=int, default=50, help="timed calls per measurement (gsgan)")
    parser.add_argument("--official-iters", type=int, default=20, help="timed calls per measurement (official)")
    parser.add_argument("--compile-batches", default="1,8", help="batches to torch.compile (empty: none)")
    parser.add_argument("--compile-timeout", type=float, default=240, help="seconds for one compile + capture")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="seconds for the whole run: no new measurement starts after them and the one "
                             "running then stops; the table of what was measured still prints (default: no limit)")
    parser.add_argument("--device", default="auto", help="auto | cuda | cpu (cpu: smoke test of the code paths)")
    parser.add_argument("--compile-cpu", action="store_true", help="on CPU too (tests the code path; slow)")
    args = parser.parse_args()

    configs = [c for c in args.configs.split(",") if c]
    unknown = sorted(set(configs) - set(FULL_CONFIGS + TINY_CONFIGS))
    if unknown or not configs:
        parser.error(f"--configs: unknown {', '.join(unknown) or '(none)'}")
    tiny = {c in TINY_CONFIGS for c in configs}
    if len(tiny) > 1:
        parser.error("--configs: tiny and full-size configurations cannot share one process (one official import)")
    tiny = tiny.pop()
    try:
        batches = [int(b) for b in args.batches.split(",") if b]
        compile_batches = {int(b) for b in args.compile_batches.split(",") if b}
    except ValueError:
        parser.error("--batches / --compile-batches: comma-separated integers")
    if not batches or min(batches) < 1:
        parser.error("--batches: positive integers")
    if not (args.official / "training" / "gs_generator.py").is_file():
        parser.error(f"--official {args.official}: not a GSGAN checkout (training/gs_generator.py missing)")
    if args.budget_s is not None and args.budget_s <= 0:
        parser.error("--budget-s: a positive number of seconds")
    if args.dgr is None and (args.official.parent / "dgr").is_dir():
        args.dgr = args.official.parent / "dgr"
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device")

    warnings.filterwarnings("ignore", module=r"training(\.|$)")  # the official code's deprecation chatter
    args.out.mkdir(parents=True, exist_ok=True)
    log = open(args.out / "bench_official.log", "w")
    sys.stdout, sys.stderr = Tee(sys.__stdout__, log), Tee(sys.__stderr__, log)
    budget = Budget(args.budget_s)
    backend = "gsplat" if device.type == "cuda" else "reference"
    report = {
        "device": device_name(device),
        "torch": torch.__version__, "python": sys.version.split()[0], "args": vars(args),
        "render_backend": backend, "rows": [], "parity": {}, "configs": {}, "errors": [], "notes": [],
    }
    json_path = args.out / "bench_official.json"

    def note(row):
        print("[row] " + json.dumps(row), flush=True)

    dgr = DgrBuild(args.dgr, args.out / "dgr_build.log")
    official = None
    try:
        dgr.start()  # in the background while gsplat compiles
        if device.type == "cuda":
            torch._dynamo.config.cache_size_limit = 32
            start = time.time()
            print(f"render: {backend_report(device)}", flush=True)
            with budget.limit(400):  # compile gsplat's CUDA code (JIT, first use) now, not inside a measurement
                _warm_gsplat(device)
            report["gsplat_warmup_s"] = time.time() - start
            print(f"gsplat ready after {report['gsplat_warmup_s']:.0f} s", flush=True)
        dgr_path = dgr.finish(timeout=min(DGR_BUILD_TIMEOUT_S, budget.remaining() - 120))
        report["dgr_build"] = dgr.status
        print(f"[dgr] {dgr.status}", flush=True)
        regen = load_regenerate()
        official = Official(regen, args.official, tiny, dgr_path)
        report["official_rasterizer"] = official.rasterizer
        report["notes"].append("official StyleGAN plugins (bias_act, upfirdn2d, filtered_lrelu) run as their "
                               "reference ops (their CUDA plugins do not build under CUDA 13)")
        if not official.has_real_rasterizer:
            report["notes"].append("official timings are the generator part only: " + official.rasterizer)
        write_json(json_path, report)

        generators = {}  # phase 1: every configuration without compiling; phase 2: torch.compile
        for name in configs:
            if budget.remaining() < 60:
                report["errors"].append(f"{name}: skipped, {budget.remaining():.0f} s of budget left")
                continue
            t0 = time.time()
            with budget.limit():
                G_off, init_kwargs, state_dict, pivot = official.build(name)
                G, _ = generator_from_official(init_kwargs, state_dict)
            del state_dict
            resolution = int(init_kwargs["img_resolution"])
            G_off = G_off.to(device).requires_grad_(False)
            G = G.to(device).eval().requires_grad_(False)
            generators[name] = (G, resolution)
            report["configs"][name] = {"resolution": resolution, "gaussians": G.config.num_gaussians,
                                       "build_s": time.time() - t0}
            print(f"[{name}] built both generators in {time.time() - t0:.1f} s: {G.config.num_gaussians} Gaussians, "
                  f"{resolution} px", flush=True)
            try:
                with budget.limit():
                    report["parity"][name] = parity(official, G_off, G, pivot, resolution, device, backend)
                print(f"[{name}] parity: {json.dumps(report['parity'][name])}", flush=True)
            except Deadline:
                report["errors"].append(f"{name} parity: time budget reached")
            except Exception as err:
                report["errors"].append(f"{name} parity: {type(err).__name__}: {err}")
                traceback.print_exc()
            write_json(json_path, report)
            for batch in batches:
                for stage in ("official", "gsgan"):
                    if budget.remaining() < 20:
                        report["errors"].append(f"{name} batch {batch} {stage}: skipped, budget spent")
                        continue
                    try:
                        with budget.limit():
                            if stage == "official":
                                rows = time_official(official, G_off, G, batch, resolution, device,
                                                     args.official_iters, note)
                            else:
                                rows, info = time_gsgan(G, batch, resolution, device, args.iters, backend, note)
                                report["configs"][name][f"gsgan_batch{batch}"] = info
                                print(f"[{name}] gsgan batch {batch}: {json.dumps(info)}", flush=True)
                        for r in rows:
                            r["config"] = name
                        report["rows"].extend(rows)
                    except Deadline:
                        report["errors"].append(f"{name} batch {batch} {stage}: time budget reached")
                    except Exception as err:
                        report["errors"].append(f"{name} batch {batch} {stage}: {type(err).__name__}: {err}")
                        traceback.print_exc()
                    write_json(json_path, report)
            summarise(report, name, resolution)
            del G_off
            if device.type == "cuda":
                torch.cuda.empty_cache()

        for name, (G, resolution) in generators.items():  # phase 2
            for batch in batches:
                if batch not in compile_batches or device.type != "cuda" and not args.compile_cpu:
                    continue
                key = f"{name} batch {batch} torch.compile"
                if budget.remaining() < 90:
                    report["errors"].append(f"{key}: skipped, {budget.remaining():.0f} s of budget left")
                    continue
                render_ms = report["configs"][name].get(f"gsgan_batch{batch}", {}).get("render_ms")
                try:
                    with budget.limit():
                        rows, info = time_gsgan_compiled(G, batch, resolution, device, args.iters, backend, budget,
                                                         args.compile_timeout, render_ms, note)
                    for r in rows:
                        r["config"] = name
                    report["rows"].extend(rows)
                    report["configs"][name][f"gsgan_batch{batch}_compiled"] = info
                    print(f"[{name}] compiled batch {batch}: {json.dumps(info)}", flush=True)
                except Deadline:
                    report["errors"].append(f"{key}: stopped by --compile-timeout ({args.compile_timeout:.0f} s) "
                                            "or the budget")
                except Exception as err:
                    report["errors"].append(f"{key}: {type(err).__name__}: {(str(err).splitlines() or [''])[0][:300]}")
                    traceback.print_exc()
                write_json(json_path, report)
            summarise(report, name, resolution)
    except Deadline:
        report["errors"].append(f"time budget ({args.budget_s:.0f} s) reached" if args.budget_s is not None
                                else "time limit of a stage reached")
    except Exception as err:
        report["errors"].append(f"{type(err).__name__}: {err}")
        traceback.print_exc()
    finally:
        report["dgr_build"] = dgr.status
        report["elapsed_s"] = budget.elapsed()
        write_json(json_path, report)
        print_report(report)
        if official is not None:
            official.close()
    return 0 if not report["errors"] else 1


def _warm_gsplat(device: torch.device) -> None:
    """One tiny gsplat render: gsplat compiles its CUDA code on first use (JIT), here rather than
    inside a measurement."""
    from gsgan_core.gaussians import Gaussians

    n = 64
    g = Gaussians(means=torch.randn(1, n, 3, device=device) * 0.2, log_scales=torch.full((1, n, 3), -3.0, device=device),
                  quats=torch.nn.functional.normalize(torch.randn(1, n, 4, device=device), dim=-1),
                  opacity_logits=torch.zeros(1, n, device=device), sh_dc=torch.zeros(1, n, 3, device=device),
                  level=torch.zeros(n, dtype=torch.long, device=device), parent=torch.full((n,), -1, device=device))
    cam2world, K = orbit_camera(device=device)
    viewmats, Ks = to_rasterizer(cam2world[None], K[None], 32, 32)
    render(g, viewmats[:, None], Ks[:, None], 32, 32, backend="gsplat")
    sync(device)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
