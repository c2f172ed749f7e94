"""The generator's output: a batch of 3D Gaussians that know their place in the hierarchy.

Attributes are stored *unactivated*, as the generator predicts them and as the standard 3DGS
PLY layout stores them (log-scales, opacity logits, degree-0 SH colour). The activated values
a rasterizer needs are properties (`scales`, `opacities`, `rgbs`, `unit_quats`).

Hierarchy: every Gaussian has a `level` (0 = coarsest; -1 = background) and the index of its
`parent` in the same set (-1 for level 0, the background, and parents that a selection left
out). The generator orders Gaussians level by level and children right after each other
(child j of parent p at level l sits at offset(l) + 4 * p_local + j), but nothing here
relies on that order: selection works from `level` and `parent` alone.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

SH_C0 = 0.28209479177387814  # degree-0 real spherical harmonic: RGB = SH_C0 * sh_dc + 0.5
BACKGROUND_LEVEL = -1


def quat_to_rotmat(q: Tensor) -> Tensor:  # [..., 4] (w, x, y, z) -> [..., 3, 3]
    """Rotation matrix of a quaternion (normalised here, so any non-zero scale is fine)."""
    w, x, y, z = torch.nn.functional.normalize(q, dim=-1).unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).unflatten(-1, (3, 3))


@dataclass
class Gaussians:
    """A batch of scenes of N Gaussians each; `...` are batch dimensions (often [B])."""

    means: Tensor  # [..., N, 3] world positions
    log_scales: Tensor  # [..., N, 3] natural log of the per-axis standard deviations
    quats: Tensor  # [..., N, 4] rotation quaternion (w, x, y, z), not necessarily normalised
    opacity_logits: Tensor  # [..., N] opacity before the sigmoid
    sh_dc: Tensor  # [..., N, 3] degree-0 SH colour coefficient; RGB = SH_C0 * sh_dc + 0.5
    level: Tensor  # [N] int64, hierarchy level; -1 for background Gaussians
    parent: Tensor  # [N] int64, index of the parent Gaussian in this set; -1 if none

    # ----------------------------------------------------------------- shape and activation
    @property
    def batch_shape(self) -> torch.Size:
        return self.means.shape[:-2]

    @property
    def num_gaussians(self) -> int:
        return self.means.shape[-2]

    def __len__(self) -> int:
        return self.num_gaussians

    @property
    def device(self) -> torch.device:
        return self.means.device

    @property
    def scales(self) -> Tensor:  # [..., N, 3]
        return self.log_scales.exp()

    @property
    def opacities(self) -> Tensor:  # [..., N]
        return torch.sigmoid(self.opacity_logits)

    @property
    def unit_quats(self) -> Tensor:  # [..., N, 4]
        return torch.nn.functional.normalize(self.quats, dim=-1)

    @property
    def rgbs(self) -> Tensor:  # [..., N, 3], >= 0 like gsplat's SH evaluation (no upper clamp)
        return (SH_C0 * self.sh_dc + 0.5).clamp_min(0.0)

    def to(self, *args, **kwargs) -> "Gaussians":
        """Moves/casts the float attributes; level and parent keep their integer dtype."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("level", "parent"):
                device = torch.empty(0).to(*args, **kwargs).device
                out[f.name] = value.to(device)
            else:
                out[f.name] = value.to(*args, **kwargs)
        return Gaussians(**out)

    def detach(self) -> "Gaussians":
        return replace(self, **{f.name: getattr(self, f.name).detach() for f in fields(self)})

    def scene(self, index: int) -> "Gaussians":
        """One scene of a batch with a single batch dimension: [B, N, ...] -> [N, ...]."""
        if len(self.batch_shape) != 1:
            raise ValueError(f"scene() needs exactly one batch dimension, got {tuple(self.batch_shape)}")
        return replace(
            self,
            means=self.means[index],
            log_scales=self.log_scales[index],
            quats=self.quats[index],
            opacity_logits=self.opacity_logits[index],
            sh_dc=self.sh_dc[index],
        )

    # ----------------------------------------------------------------- hierarchy
    @property
    def levels(self) -> list[int]:
        """The foreground levels present, coarse to fine (background excluded)."""
        return sorted(int(v) for v in torch.unique(self.level) if int(v) != BACKGROUND_LEVEL)

    def count_per_level(self) -> dict[int, int]:
        """{level: number of Gaussians}; the background, if present, is under key -1."""
        values, counts = torch.unique(self.level, return_counts=True)
        return {int(v): int(c) for v, c in zip(values, counts)}

    def select(self, index: Tensor) -> "Gaussians":
        """The Gaussians at `index` ([M] int64 or [N] bool), in that order.

        Parent indices are remapped into the selection; a parent left out becomes -1.
        """
        index = torch.as_tensor(index, device=self.level.device)
        if index.dtype == torch.bool:
            index = index.nonzero().squeeze(-1)
        index = index.long()
        new_position = torch.full((self.num_gaussians,), -1, dtype=torch.long, device=index.device)
        new_position[index] = torch.arange(index.numel(), device=index.device)
        old_parent = self.parent[index]
        new_parent = torch.where(old_parent >= 0, new_position[old_parent.clamp_min(0)], old_parent)
        gather = index.to(self.means.device)
        return Gaussians(
            means=self.means.index_select(-2, gather),
            log_scales=self.log_scales.index_select(-2, gather),
            quats=self.quats.index_select(-2, gather),
            opacity_logits=self.opacity_logits.index_select(-1, gather),
            sh_dc=self.sh_dc.index_select(-2, gather),
            level=self.level[index],
            parent=new_parent,
        )

    def at_level(self, level: int, background: bool = False) -> "Gaussians":
        """Only the Gaussians of one level (plus the background if asked)."""
        mask = self.level == level
        if background:
            mask |= self.level == BACKGROUND_LEVEL
        return self.select(mask)

    def up_to_level(self, level: int, background: bool = False) -> "Gaussians":
        """Levels 0..level (plus the background if asked)."""
        mask = (self.level >= 0) & (self.level <= level)
        if background:
            mask |= self.level == BACKGROUND_LEVEL
        return self.select(mask)

    def foreground(self) -> "Gaussians":
        return self.select(self.level != BACKGROUND_LEVEL)

    def ancestor(self, index: int, level: int = 0) -> int:
        """Index of the ancestor of Gaussian `index` at `level` (itself if already there).

        Raises ValueError if the chain of parents is cut before reaching `level`.
        """
        current = int(index)
        while int(self.level[current]) > level:
            parent = int(self.parent[current])
            if parent < 0:
                raise ValueError(f"Gaussian {index} has no ancestor at level {level} in this set")
            current = parent
        if int(self.level[current]) != level:
            raise ValueError(f"Gaussian {index} is at level {int(self.level[index])}, above level {level}")
        return current

    def descendant_mask(self, index: int, include_self: bool = True) -> Tensor:
        """[N] bool: the subtree under Gaussian `index` (every level below it)."""
        mask = torch.zeros(self.num_gaussians, dtype=torch.bool, device=self.level.device)
        mask[index] = True
        has_parent = self.parent >= 0
        # A child is in the subtree iff its parent is; walking levels coarse to fine settles it.
        for lvl in range(int(self.level[index]) + 1, int(self.level.max()) + 1):
            at = (self.level == lvl) & has_parent
            mask[at] = mask[self.parent[at]]
        if not include_self:
            mask[index] = False
        return mask

    def descendants_of(self, index: int, include_self: bool = True) -> "Gaussians":
        """The subtree under Gaussian `index`, as its own set."""
        return self.select(self.descendant_mask(index, include_self))
