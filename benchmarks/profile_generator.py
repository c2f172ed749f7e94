"""Where the generator's GPU time goes: torch.profiler over synthesis, grouped by stage and kernel.

    python benchmarks/profile_generator.py [--preset lite256] [--batch 1]
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from gsgan_core.models.config import preset
from gsgan_core.models.generator import Generator, randomize_layer_scales, z_from_seeds


def label_stages(generator: Generator) -> None:
    """Wraps each stage's forward in a profiler range, so the table groups kernels by stage."""
    stages = {"encoder": generator.encoder}
    for i, level in enumerate(generator.levels):
        for j, block in enumerate(level.blocks):
            stages[f"L{i}.block{j}.attn"] = block.attn
            stages[f"L{i}.block{j}.mlp"] = block.mlp
        if level.upsample is not None:
            stages[f"L{i}.upsample"] = level.upsample
        stages[f"L{i}.render_head"] = level.render_head
        if level.anchor_head is not None:
            stages[f"L{i}.anchor_head"] = level.anchor_head
    if generator.background is not None:
        stages["background"] = generator.background
    for name, module in stages.items():
        original = module.forward

        def wrapped(*args, _original=original, _name=name, **kwargs):
            with record_function(_name):
                return _original(*args, **kwargs)

        module.forward = wrapped


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="lite256", help="a lite-architecture preset (its stages are labelled)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--compiled-bf16", action="store_true", help="profile torch.compile + bf16 autocast")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.manual_seed(0)
    generator = randomize_layer_scales(Generator(preset(args.preset))).cuda().eval().requires_grad_(False)
    if args.compiled_bf16:
        compiled = torch.compile(generator.synthesize, dynamic=False)  # no CUDA graphs: kernels stay visible

        def synthesize(ws):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return compiled(ws)
    else:
        synthesize = generator.synthesize
        label_stages(generator)
    ws = generator.mapping(z_from_seeds(range(args.batch), generator.config.z_dim, "cuda"))
    with torch.no_grad():
        for _ in range(5):
            synthesize(ws)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
            for _ in range(10):
                synthesize(ws)
            torch.cuda.synchronize()
    table = prof.key_averages()
    print(f"== {args.preset} batch {args.batch}: stages by GPU time (10 runs)")
    print(table.table(sort_by="device_time_total", row_limit=45, max_name_column_width=60))


if __name__ == "__main__":
    main()
