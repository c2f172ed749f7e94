"""Two questions about a demo run that need its training state, not only the shipped file (CPU).

    python experiments/heads128/state_probe.py memorising STATE NETWORK TRAIN.zip HELDOUT.zip [--num 256]
    python experiments/heads128/state_probe.py averaging STATE HELDOUT.zip NETWORK [NETWORK...] [--num 300]

STATE is a training state (`training-state.safetensors`, or the run folder that holds it) and
NETWORK a generator checkpoint saved with it (its G_ema, e.g. the run's `network-latest.safetensors`). TRAIN.zip
holds the first images of the training set (`gsgan-dataset heads --count 300 --resolution 128
--seed 0 --cameras orbit`: image i depends only on the seed and i); HELDOUT.zip held-out ones
(`... --count 1000 --seed 1 ...`).

memorising: is the discriminator learning its 30,000 training images by heart (so that more data
would help)? Prints the state's D's logit (mean, spread, share above 0) on num training images,
num held-out ones and num of NETWORK's, all on random background colours as in training. Memorising
shows as training logits above held-out ones. About 6 minutes at num 256.

averaging: does averaging the generator's weights over time help? Prints SWD x1e3 per band against
num held-out images, with the original's definition and the joint variant, for the held-out floor,
each NETWORK, the state's raw G (G_ema without the average) and, given several NETWORKs, the mean of
their weights. About 7 minutes a row at num 300.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

from gsgan_core.data.dataset import ImageDataset, composite, real_images
from gsgan_core.errors import GsganError
from gsgan_core.io.checkpoint import load_checkpoint
from gsgan_core.metrics.swd import sliced_wasserstein
from gsgan_core.models.discriminator import Discriminator
from gsgan_core.models.sampling import fake_images, generate_images
from gsgan_core.train.state import read_training_state


def load_from_state(module: torch.nn.Module, tensors: dict[str, torch.Tensor], prefix: str) -> torch.nn.Module:
    module.load_state_dict({k[len(prefix):]: v.float() for k, v in tensors.items() if k.startswith(prefix)})
    return module.eval()


def memorising(args) -> None:
    tensors, info = read_training_state(args.state)
    G = load_checkpoint(args.network)[0].eval()
    train, heldout = ImageDataset(args.train), ImageDataset(args.heldout)
    config, R, num = info["config"], heldout.resolution, args.num or 256
    D = Discriminator(R, config["d_pose"], config["d_channel_base"], config["d_channel_max"], config["d_mbstd_group"])
    D = load_from_state(D, tensors, "D.")
    rng = torch.Generator().manual_seed(0)

    def logits(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # batches of 32, so that minibatch-std groups look as in training
            return torch.cat([D(images[i : i + 32], labels[i : i + 32]).logits for i in range(0, num, 32)])

    rows = {}
    for name, dataset in (("training", train), ("held-out", heldout)):
        images, labels = zip(*(dataset[i] for i in range(num)))
        rows[name] = logits(composite(torch.stack(images), torch.rand(num, 3, generator=rng)), torch.stack(labels))
    labels, z = heldout.labels[:num], torch.randn(num, G.config.z_dim, generator=rng)
    background = torch.rand(num, 1, 3, generator=rng)
    with torch.no_grad():
        fakes = torch.cat([generate_images(G, z[i : i + 32], mapping_labels=None,
                                           render_labels=labels[i : i + 32, None],
                                           backgrounds=background[i : i + 32], resolution=R)[0]
                           for i in range(0, num, 32)])
    rows["generated"] = logits(fakes, labels)
    print(f"D's logits at {info['progress']['nimg'] / 1000:.1f} kimg, {num} images each")
    for name, v in rows.items():
        print(f"{name:10s} mean {v.mean():+.3f}  spread {v.std():.3f}  above 0 {(v > 0).float().mean():.3f}")


def averaging(args) -> None:
    tensors, _ = read_training_state(args.state)
    heldout, num = ImageDataset(args.heldout), args.num or 300
    R, labels = heldout.resolution, heldout.labels[:num]
    reals = real_images(heldout, range(num), R)

    def row(name: str, images: torch.Tensor) -> None:
        # Both definitions: the original's (per-set), which scales a uniformly weaker band back up,
        # and the joint variant, which also counts the missing contrast (gsgan_core/metrics/swd.py).
        cells = []
        for normalise in ("per-set", "joint"):
            levels = sliced_wasserstein(reals, images.clamp(-1, 1), device="cpu", normalise=normalise)["levels"]
            cells.append(f"{sum(levels) / len(levels):6.2f} : " + " / ".join(f"{v:5.1f}" for v in levels))
        print(f"{name[-44:]:44s} | " + " | ".join(cells), flush=True)

    print(f"SWD x1e3, mean : per band (finest first), {num} images against {num} held-out ones")
    print(f"{'':44s} | {'original (per-set normalisation)':41s} | joint normalisation")
    row("held-out", real_images(heldout, range(num, 2 * num), R))
    generators = [load_checkpoint(path)[0].eval() for path in args.networks]
    for path, G in zip(args.networks, generators):
        row(str(path), fake_images(G, labels, R, 0, "cpu"))
    raw = load_from_state(copy.deepcopy(generators[0]), tensors, "G.")  # the same architecture, not read again
    row("the state's raw G", fake_images(raw, labels, R, 0, "cpu"))
    if len(generators) > 1:
        mean = {k: sum(G.state_dict()[k] for G in generators) / len(generators) if v.is_floating_point() else v
                for k, v in generators[0].state_dict().items()}
        generators[0].load_state_dict(mean)
        row(f"mean of the {len(generators)} networks' weights", fake_images(generators[0], labels, R, 0, "cpu"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="question", required=True)
    p = sub.add_parser("memorising", help="D's logits on training, held-out and generated images")
    p.add_argument("state", type=Path)
    p.add_argument("network", type=Path)
    p.add_argument("train", type=Path)
    p.add_argument("heldout", type=Path)
    p.add_argument("--num", type=int, help="images of each kind (default 256)")
    p = sub.add_parser("averaging", help="SWD of networks, the raw G, and the networks' mean weights")
    p.add_argument("state", type=Path)
    p.add_argument("heldout", type=Path)
    p.add_argument("networks", type=Path, nargs="+")
    p.add_argument("--num", type=int, help="images (default 300; HELDOUT.zip needs twice as many)")
    args = parser.parse_args()
    try:
        memorising(args) if args.question == "memorising" else averaging(args)
    except (GsganError, OSError) as err:
        sys.exit(f"state_probe: {err}")


if __name__ == "__main__":
    main()
