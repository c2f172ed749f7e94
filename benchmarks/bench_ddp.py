"""DDP scaling of `gsgan-train`: the same per-GPU batch on 1 and on N GPUs, through torchrun.

    python benchmarks/bench_ddp.py --data heads.zip --out DIR [--gpus 2] [--per-gpu-batch 32] [--steps 40]

Runs the real command (`torchrun --nproc_per_node K -m gsgan_core.train ...`) for K = 1 and K = N
with the total batch K * per-gpu-batch, reads the per-step wall times from each run's log.jsonl
(the first --warmup steps left out), and reports images/s and the scaling efficiency
(images/s on N GPUs) / (N * images/s on 1). Lazy R1 steps are included as they come (1 in 16).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path


def run(nproc: int, args: argparse.Namespace) -> dict:
    outdir = args.out / f"ddp{nproc}"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
        "-m", "gsgan_core.train",
        "--data", str(args.data), "--outdir", str(outdir), "--preset", args.preset,
        "--batch", str(nproc * args.per_gpu_batch), "--max-steps", str(args.steps),
        "--kimg", "1000", "--snap-kimg", "1000", "--log-steps", "1", "--workers", "4",
    ]
    if args.device:
        command += ["--device", args.device]
    print("$", " ".join(command), flush=True)
    with open(args.out / f"ddp{nproc}.log", "w") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
    records = [json.loads(line) for line in open(outdir / "log.jsonl") if line.strip()]
    times = {r["step"]: r["time_s"] for r in records if "step" in r and "time_s" in r}
    steps = sorted(times)
    per_step = [times[b] - times[a] for a, b in zip(steps, steps[1:]) if a >= args.warmup and b == a + 1]
    step_s = statistics.median(per_step)
    mean_s = statistics.fmean(per_step)
    batch = nproc * args.per_gpu_batch
    return {"gpus": nproc, "batch": batch, "median_step_s": step_s, "mean_step_s": mean_s,
            "images_per_s": batch / mean_s, "steps_timed": len(per_step)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("out"))
    parser.add_argument("--gpus", type=int, default=2)
    parser.add_argument("--per-gpu-batch", type=int, default=32)
    parser.add_argument("--preset", default="ffhq256")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--device", default="", help="e.g. cpu for a smoke test (gloo)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [run(1, args), run(args.gpus, args)]
    efficiency = rows[1]["images_per_s"] / (args.gpus * rows[0]["images_per_s"])
    (args.out / "bench_ddp.json").write_text(json.dumps({"rows": rows, "efficiency": efficiency}, indent=1))
    print("| GPUs | total batch | median step s | mean step s (R1 incl.) | images/s | steps timed |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['gpus']} | {r['batch']} | {r['median_step_s']:.3f} | {r['mean_step_s']:.3f} | "
              f"{r['images_per_s']:.1f} | {r['steps_timed']} |")
    print(f"scaling efficiency on {args.gpus} GPUs: {efficiency:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
