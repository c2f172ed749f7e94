"""What a run writes, all of it from rank 0: `RunLogger`.

    training_options.json     every setting of the run (a resumed run's, with this command's changes)
    log.jsonl                 averaged scalars every --log-steps steps (and at steps 1, 2, 4, 8, ... before,
                              also on the console), metrics at each snapshot
    fakes-KIMG.png            a grid of fixed seeds from fixed yaws
    network-snapshot-KIMG.safetensors, network-latest.safetensors    G_ema, for gsgan-explorer
    training-state.safetensors                                       everything --resume needs
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from gsgan_core.cameras import OrbitPose, cameras_to_labels, orbit_camera
from gsgan_core.io.atomic import atomic_write_bytes
from gsgan_core.io.checkpoint import save_checkpoint
from gsgan_core.data.dataset import real_images
from gsgan_core.models.sampling import fake_images, generate_images, random_labels, z_from_seeds
from gsgan_core.train.data import dataset_identity
from gsgan_core.train.run import Run
from gsgan_core.train.state import STATE_FILE, save_training_state


def write_png(path: Path, image: np.ndarray) -> None:  # uint8 [H, W, 3], written atomically
    import imageio.v3 as iio

    atomic_write_bytes(path, iio.imwrite("<bytes>", image, extension=".png"))


def snapshot_grid(run: Run, pose: OrbitPose) -> np.ndarray:
    """Fixed seeds (rows) from fixed yaws (columns) around the data's orbit pose: uint8 [rows*R, cols*R, 3]."""
    config, R, G = run.config, run.resolution, run.G_ema
    yaws = [float(y) for y in config.grid_yaws.split(",")]
    seeds = list(range(config.grid_seeds))
    cam2world, K_norm = orbit_camera(torch.tensor(yaws), pose.pitch, pose.radius, pose.pivot, pose.fov_deg)
    labels = cameras_to_labels(cam2world, K_norm.expand(len(yaws), 3, 3)).float().to(run.device)  # [V, 25]
    z = z_from_seeds(seeds, G.config.z_dim, run.device)
    mapping_labels = labels[len(yaws) // 2].expand(len(seeds), 25) if G.config.c_dim else None
    background = torch.ones(len(seeds), len(yaws), 3, device=run.device)
    with torch.no_grad():
        images, _ = generate_images(G, z, mapping_labels=mapping_labels,
                                    render_labels=labels.expand(len(seeds), -1, -1), backgrounds=background,
                                    resolution=R, backend=config.render_backend, supersample=config.render_supersample)
    images = ((images + 1) * 127.5).clamp(0, 255).to(torch.uint8).cpu()  # [S*V, 3, R, R]
    grid = images.view(len(seeds), len(yaws), 3, R, R).permute(0, 3, 1, 4, 2)
    return grid.reshape(len(seeds) * R, len(yaws) * R, 3).numpy()


def swd_record(run: Run) -> dict:
    """SWD between --swd-images fakes of G_ema and as many reals (the same ones at every snapshot)."""
    from gsgan_core.metrics.swd import sliced_wasserstein

    config = run.config
    n = min(config.swd_images, len(run.dataset))
    rng = torch.Generator().manual_seed(config.seed + 1)
    reals = real_images(run.dataset, torch.randperm(len(run.dataset), generator=rng)[:n], run.resolution)
    fakes = fake_images(run.G_ema, random_labels(run.labels, n, rng), run.resolution, seed=config.seed,
                        device=run.device, supersample=config.render_supersample, backend=config.render_backend)
    swd = sliced_wasserstein(reals, fakes, seed=config.seed, device=run.device)
    return {"metrics/swd": swd["mean"], "metrics/swd_levels": swd["levels"]}


def levels_record(run: Run) -> dict:
    """Each level's share of --level-images images (metrics/levels, coarse to fine; near 0 = a dead
    level) and the median anchor log-scale per anchor level (metrics/anchor_log_scale; -8, the
    clamp, has killed every level below it)."""
    from gsgan_core.metrics.levels import anchor_log_scales, generator_level_contributions

    rng = torch.Generator().manual_seed(run.config.seed + 2)  # the same latents and cameras every snapshot
    n, G = run.config.level_images, run.G_ema
    z = torch.randn(n, G.config.z_dim, generator=rng).to(run.device)
    labels = random_labels(run.labels, n, rng).to(run.device)
    share = generator_level_contributions(G, z, labels, run.resolution, run.config.render_backend)
    return {"metrics/levels": [share[k] for k in sorted(share) if k >= 0],
            "metrics/anchor_log_scale": anchor_log_scales(G, z, labels)}


class RunLogger:
    """The run's outputs; on ranks other than 0 it only keeps count (snapshot times, averages)."""

    def __init__(self, run: Run):
        self.run, self.main = run, run.world.is_main
        config, nimg = run.config, run.progress.nimg
        self.start_time, self.start_nimg = time.time(), nimg
        self.total_nimg = int(config.kimg * 1000)
        self.snap_nimg = int(config.snap_kimg * 1000)
        self.next_snapshot = (nimg // self.snap_nimg + 1) * self.snap_nimg
        self.sums: dict[str, float] = {}
        self.count = 0
        self.last: dict = {}  # the last line written
        self.checkpoint_meta = dict(dataset={"name": run.dataset.name, "resolution": run.resolution},
                                    camera=OrbitPose.from_labels(run.dataset.labels))  # the viewer's default
        self.file = self.bar = None
        if self.main:
            from tqdm import tqdm

            run.outdir.mkdir(parents=True, exist_ok=True)
            options = json.dumps(config.to_dict(), indent=2).encode()
            atomic_write_bytes(run.outdir / "training_options.json", options)
            self.file = open(run.outdir / "log.jsonl", "a")
            self.bar = tqdm(total=self.total_nimg, initial=nimg, unit="img", unit_scale=True, desc="training",
                            dynamic_ncols=True, smoothing=0.1)

    # ------------------------------------------------------------------ scalars
    def step(self, scalars: dict[str, float], schedule: dict[str, float]) -> None:
        """One step's scalars (averaged over processes) and schedule values (blur_sigma, ema_beta)."""
        run, step, nimg = self.run, self.run.progress.step, self.run.progress.nimg
        for name, value in scalars.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.count += 1
        elapsed = time.time() - self.start_time
        s_per_kimg = elapsed / max((nimg - self.start_nimg) / 1000, 1e-9)
        if self.main:
            memory = f"mem {torch.cuda.max_memory_allocated(run.device) / 2**30:.1f}G" if run.device.type == "cuda" else ""
            self.bar.update(run.config.batch)
            self.bar.set_postfix_str(f"kimg {nimg / 1000:.2f} s/kimg {s_per_kimg:.1f} G {scalars['loss/G']:.3f} "
                                     f"D {scalars['loss/D']:.3f} {memory}", refresh=False)
        early = step & (step - 1) == 0 and step <= run.config.log_steps  # steps 1, 2, 4, ...: a run shows it started
        if not (early or step % run.config.log_steps == 0 or nimg >= self.total_nimg):
            return
        self.last = {name: total / self.count for name, total in self.sums.items()}
        self.last.update({"step": step, "kimg": nimg / 1000, "time_s": elapsed, **schedule,
                          "images_per_s": (nimg - self.start_nimg) / max(elapsed, 1e-9), "s_per_kimg": s_per_kimg})
        if run.device.type == "cuda":
            self.last["gpu_mem_gb"] = torch.cuda.max_memory_allocated(run.device) / 2**30
        self.sums, self.count = {}, 0
        self.write(self.last)
        if early and self.main:
            self.bar.write(f"step {step} (kimg {nimg / 1000:.3f}): G {self.last['loss/G']:.4f} D "
                           f"{self.last['loss/D']:.4f}, {elapsed:.1f} s so far")

    def write(self, record: dict) -> None:
        if self.main:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def note(self, text: str) -> None:
        if self.main:
            self.bar.write(text)

    # ------------------------------------------------------------------ snapshots
    def snapshot_due(self) -> bool:
        return self.run.progress.nimg >= self.next_snapshot

    def snapshot(self, final: bool = False) -> None:
        """Checkpoints of G_ema, the grid and the training state; then, unless final, the metrics."""
        run, step, nimg = self.run, self.run.progress.step, self.run.progress.nimg
        tag = "final" if final else f"{nimg / 1000:010.3f}"  # kimg, zero-padded so names sort
        name = f"network-snapshot-{tag}.safetensors"
        if not final:
            self.next_snapshot += self.snap_nimg
        if self.main:
            training = {"kimg": nimg / 1000, "step": step, "render_supersample": run.config.render_supersample}
            for path in (run.outdir / name, run.outdir / "network-latest.safetensors"):
                save_checkpoint(path, run.G_ema, training=training, **self.checkpoint_meta)
            write_png(run.outdir / f"fakes-{tag}.png", snapshot_grid(run, self.checkpoint_meta["camera"]))
            save_training_state(run.outdir / STATE_FILE, run.modules, run.optimizers, run.config.to_dict(),
                                run.progress.to_dict(), averages_dtype=getattr(torch, run.config.state_precision),
                                models=run.models_record(), dataset=dataset_identity(run.dataset))
        run.kept = f"the last good snapshot (step {step}, {name}) and its training state are kept in {run.outdir}"
        if final or not self.main:
            return
        for wanted, record in ((run.config.swd_images, swd_record), (run.config.level_images, levels_record)):
            if wanted > 0:
                self.write({"step": step, "kimg": nimg / 1000, **record(run)})

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.file is not None:
            self.file.close()
