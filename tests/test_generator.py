import math

import pytest
import torch
from conftest import random_generator

from gsgan_core.errors import ConfigError
from gsgan_core.models.config import PRESETS, GeneratorConfig, preset
from gsgan_core.models.generator import (
    Generator,
    decode_children,
    generate,
    interpolate_ws,
    mix_levels,
    modulate_state_dict,
    quat_to_rotmat,
    z_from_seeds,
)


# ---------------------------------------------------------------- sizes of the presets
@pytest.mark.parametrize(
    "name, foreground, per_level",
    [
        ("lite256", 87_296, [256, 1024, 4096, 16384, 65536]),
        ("lite512", 349_440, [256, 1024, 4096, 16384, 65536, 262144]),
        ("tiny", 5_440, [64, 256, 1024, 4096]),
    ],
)
def test_preset_gaussian_counts(name, foreground, per_level):
    config = preset(name)
    assert config.num_foreground_gaussians == foreground
    assert [config.gaussians_at_level(level) for level in range(config.num_levels)] == per_level
    # The generator's own hierarchy bookkeeping agrees with the config (no forward pass needed).
    level, parent = Generator(config).hierarchy(torch.device("cpu"))
    counts = torch.bincount(level[level >= 0]).tolist()
    assert counts == per_level
    assert int((level == -1).sum()) == config.num_background_gaussians


def test_reference_sizes_match_the_paper():
    for name, levels in (("lite256", 5), ("lite512", 6)):
        config = PRESETS[name]
        assert config.num_levels == levels
        assert config.num_points == 256 and config.up_ratio == 4
        assert config.channels == (512, 512, 512, 256, 128, 128)[:levels]
        assert config.attention == ("global", "knn", "knn", "local", "local", "local")[:levels]
        assert config.modulated == (True, True, True, False, False, False)[:levels]
        assert config.level0_layers == 6 and config.num_heads == 8 and config.knn_k == 16
        assert config.z_dim == config.w_dim == 512 and config.mapping_layers == 2
        assert config.num_ws == 17  # 12 + 2 + 2 + 1 (background), as in the reference code
        assert config.num_background_gaussians == 8000
    generator = Generator(PRESETS["lite256"])
    level0 = generator.levels[0]
    assert len(level0.blocks) == 6
    assert level0.blocks[0].attn.qkv.in_features == 512


def test_lite256_forward_outputs_the_reference_count():
    torch.manual_seed(0)
    generator = Generator(preset("lite256")).eval()
    with torch.no_grad():
        gaussians = generator(z_from_seeds([0], 512))
    assert gaussians.means.shape == (1, 87_296 + 8_000, 3)
    assert gaussians.count_per_level() == {-1: 8000, 0: 256, 1: 1024, 2: 4096, 3: 16384, 4: 65536}
    assert torch.isfinite(gaussians.means).all()


def test_tiny_keeps_every_mechanism():
    config = preset("tiny")
    assert set(config.attention) == {"global", "knn", "local"}
    assert True in config.modulated and False in config.modulated
    assert config.background and config.view_dependent_color
    assert 3 <= config.num_levels <= 4


def test_config_validation_and_round_trip():
    config = preset("tiny", soft_clamp=True)
    assert GeneratorConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("huge")
    with pytest.raises(ConfigError, match="one entry per level"):
        preset("tiny", channels=(64, 64))
    with pytest.raises(ConfigError, match="attention kind"):
        preset("tiny", attention=("global", "knn", "local", "cubic"))
    with pytest.raises(ConfigError, match="unknown generator config keys"):
        GeneratorConfig.from_dict({"nope": 1})


# ---------------------------------------------------------------- the residual rules on random weights
def _loud_generator(**overrides) -> Generator:
    """Random weights with heads scaled up, so tanh saturates and softplus spans its range."""
    generator = random_generator("tiny", seed=1, **overrides)
    with torch.no_grad():
        for level in generator.levels:
            for head in (level.anchor_head, level.render_head):
                if head is not None:
                    head.geometry.weight.normal_(0, 2)  # outputs ~2x the tokens' RMS
                    head.geometry.bias.normal_(0, 2)
    return generator


def _children_and_parents(generator, seeds=(0, 1, 2)):
    """For every level >= 1: (children render, children anchor or None, parent anchor repeated)."""
    z = z_from_seeds(seeds, generator.config.z_dim)
    with torch.no_grad():
        gaussians, anchors = generator.synthesize(generator.mapping(z), return_anchors=True)
    out = []
    ratio = generator.config.up_ratio
    for level in range(1, generator.config.num_levels):
        mask = gaussians.level == level
        render = (gaussians.means[:, mask], gaussians.log_scales[:, mask])
        parent = anchors[level - 1]
        parent_rep = [t.repeat_interleave(ratio, dim=1) for t in (parent.mean, parent.log_scale, parent.quat)]
        child_anchor = (anchors[level].mean, anchors[level].log_scale) if level < len(anchors) else None
        out.append((level, render, child_anchor, parent_rep))
    return out


def test_children_stay_inside_their_parents_box():
    generator = _loud_generator(position_clamp=100.0)  # clamp far away: the bound alone is tested
    checked = 0
    for level, render, child_anchor, (p_mean, p_log_scale, p_quat) in _children_and_parents(generator):
        for means, _ in [render] + ([child_anchor] if child_anchor else []):
            local = (quat_to_rotmat(p_quat).transpose(-1, -2) @ (means - p_mean).unsqueeze(-1)).squeeze(-1)
            ratio = local.abs() / p_log_scale.exp()
            assert ratio.max() <= 1 + 1e-4, f"level {level}: child outside its parent's box ({ratio.max():.4f})"
            assert ratio.max() > 0.9  # the loud heads really reach the edge: the test can fail
            checked += means.numel()
    assert checked > 0


def test_positions_clamped():
    generator = _loud_generator(position_clamp=0.3)
    z = z_from_seeds([0, 1], generator.config.z_dim)
    with torch.no_grad():
        g = generator(z).foreground()
    assert g.means.abs().max() <= 0.3 + 1e-6
    assert (g.means.abs() > 0.299).any()


def test_children_smaller_than_parents_by_split_ratio():
    # A coarse image resolution so that some parents are already below a pixel (the rule's else branch).
    generator = _loud_generator(image_resolution=20)
    rho = math.log(generator.config.split_ratio)
    threshold = -math.log(generator.config.image_resolution)
    applied = exempt = 0
    for level, render, child_anchor, (_, p_log_scale, _) in _children_and_parents(generator):
        for _, log_scales in [render] + ([child_anchor] if child_anchor else []):
            assert log_scales.min() >= -8 and log_scales.max() <= 0
            not_clamped = log_scales > -8 + 1e-6
            big_parent = (p_log_scale.amax(-1, keepdim=True) > threshold).expand_as(log_scales)
            rule = big_parent & not_clamped
            assert (log_scales[rule] < p_log_scale[rule] - rho).all(), f"level {level}: split rule broken"
            assert (log_scales[~big_parent & not_clamped] < p_log_scale[~big_parent & not_clamped]).all()
            applied += int(rule.sum())
            exempt += int((~big_parent).sum())
    assert applied > 0 and exempt > 0  # both branches were exercised


def test_decode_children_matches_the_equations_by_hand():
    config = preset("tiny", position_clamp=100.0)
    from gsgan_core.models.generator import Params

    parent = Params(
        mean=torch.tensor([[[0.1, 0.2, 0.3]]]),
        log_scale=torch.tensor([[[-1.0, -2.0, -3.0]]]),
        quat=torch.tensor([[[math.cos(0.25), 0.0, 0.0, math.sin(0.25)]]]),  # 0.5 rad about z
        color=torch.tensor([[[0.5, -0.5, 0.0]]]),
        opacity=torch.tensor([[[0.3]]]),
    )
    d = Params(*(torch.randn(1, 4, n) for n in (3, 3, 4, 3, 1)))
    child = decode_children(parent, d, config)
    c, s = math.cos(0.5), math.sin(0.5)
    R = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    expected_mean = parent.mean[0, 0] + (R @ (torch.exp(parent.log_scale[0, 0]) * torch.tanh(d.mean[0])).T).T
    torch.testing.assert_close(child.mean[0], expected_mean)
    # max exp(-1) > 1/64: the parent is larger than a pixel, so log(rho) is subtracted.
    expected_s = (parent.log_scale[0, 0] - math.log(2) - torch.nn.functional.softplus(-d.log_scale[0])).clamp(-8, 0)
    torch.testing.assert_close(child.log_scale[0], expected_s)
    torch.testing.assert_close(child.quat[0], parent.quat[0, 0] + d.quat[0])
    torch.testing.assert_close(child.color[0], parent.color[0, 0] + d.color[0])
    torch.testing.assert_close(child.opacity[0], parent.opacity[0, 0] + d.opacity[0])


def test_soft_clamp_bounds_head_outputs():
    generator = _loud_generator(soft_clamp=True)
    with torch.no_grad():
        for level in generator.levels:
            level.render_head.color.weight.mul_(1e4)
        g = generator(z_from_seeds([0], generator.config.z_dim))
    level0 = g.at_level(0)
    assert level0.sh_dc.abs().max() <= 20 + 1e-4  # level-0 colour is the head output itself
    assert level0.sh_dc.abs().max() > 10  # ... and it was pushed hard


# ---------------------------------------------------------------- latents, truncation, determinism
def test_truncation_psi_zero_gives_w_avg(tiny_generator):
    generator = tiny_generator
    torch.manual_seed(3)
    generator.mapping.w_avg.copy_(torch.randn(generator.config.w_dim))
    z = z_from_seeds([0, 1, 2], generator.config.z_dim)
    ws = generator.mapping(z, psi=0.0)
    torch.testing.assert_close(ws, generator.mapping.w_avg.expand_as(ws))
    cut = generator.mapping(z, psi=0.0, cutoff=2)
    free = generator.mapping(z)
    torch.testing.assert_close(cut[:, :2], generator.mapping.w_avg.expand(3, 2, -1))
    torch.testing.assert_close(cut[:, 2:], free[:, 2:])
    half = generator.mapping(z, psi=0.5)
    torch.testing.assert_close(half, (free + generator.mapping.w_avg) / 2)
    generator.mapping.w_avg.zero_()


def test_w_avg_is_tracked_in_training():
    torch.manual_seed(0)
    generator = Generator(preset("tiny"))
    z = torch.randn(8, generator.config.z_dim)
    before = generator.mapping.w_avg.clone()
    w = generator.mapping(z, update_w_avg=True)[:, 0]
    torch.testing.assert_close(generator.mapping.w_avg, w.mean(0).lerp(before, 0.998))


def test_same_seed_same_gaussians_and_different_seed_differs(tiny_generator):
    z = z_from_seeds([7, 7, 8], tiny_generator.config.z_dim)
    with torch.no_grad():
        g = generate(tiny_generator, z)
        once = generate(tiny_generator, z_from_seeds([7], tiny_generator.config.z_dim))
        again = generate(tiny_generator, z_from_seeds([7], tiny_generator.config.z_dim))
    assert torch.equal(once.means, again.means) and torch.equal(once.sh_dc, again.sh_dc)
    assert torch.equal(g.means[0], g.means[1])
    # Batched matmuls may round differently from unbatched ones: close, not bit-equal.
    torch.testing.assert_close(g.means[0], once.means[0], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(g.means[0], g.means[2])
    assert torch.equal(z_from_seeds([7], 64), z_from_seeds([7], 64))


def test_mapping_and_synthesis_compose_to_forward(tiny_generator):
    z = z_from_seeds([0, 1], tiny_generator.config.z_dim)
    with torch.no_grad():
        direct = tiny_generator(z, psi=0.7)
        ws = tiny_generator.mapping(z, psi=0.7)
        split = tiny_generator.synthesize(ws)
    assert torch.equal(direct.means, split.means) and torch.equal(direct.sh_dc, split.sh_dc)


def test_interpolation_and_level_mixing(tiny_generator):
    config = tiny_generator.config
    with torch.no_grad():
        ws_a = tiny_generator.mapping(z_from_seeds([0], config.z_dim))
        ws_b = tiny_generator.mapping(z_from_seeds([1], config.z_dim))
        assert torch.equal(interpolate_ws(ws_a, ws_b, 0.0), ws_a)
        assert torch.equal(interpolate_ws(ws_a, ws_b, 1.0), ws_b)
        mixed = mix_levels(ws_a, ws_b, [False, True], config)  # level 1 from B
        slices = config.w_slices()
        assert torch.equal(mixed[:, slices[0]], ws_a[:, slices[0]])
        assert torch.equal(mixed[:, slices[1]], ws_b[:, slices[1]])
        g_a, g_mixed = tiny_generator.synthesize(ws_a), tiny_generator.synthesize(mixed)
    # Level 0 only sees level 0's ws: unchanged. Level 1 and below see the mixed ws: changed.
    assert torch.equal(g_a.at_level(0).means, g_mixed.at_level(0).means)
    assert not torch.allclose(g_a.at_level(1).means, g_mixed.at_level(1).means)
    with pytest.raises(ValueError):
        mix_levels(ws_a, ws_b, [True] * 10, config)


def test_view_dependent_colour_changes_only_colour(tiny_generator):
    z = z_from_seeds([0], tiny_generator.config.z_dim)
    with torch.no_grad():
        front = tiny_generator(z, view_dirs=torch.tensor([[0.0, 0.0, -1.0]]))
        side = tiny_generator(z, view_dirs=torch.tensor([[1.0, 0.0, 0.0]]))
    assert torch.equal(front.means, side.means) and torch.equal(front.log_scales, side.log_scales)
    assert not torch.allclose(front.sh_dc, side.sh_dc)


def test_gradients_reach_every_level():
    torch.manual_seed(0)
    generator = Generator(preset("tiny"))
    g = generator(torch.randn(2, generator.config.z_dim))
    (g.means.square().sum() + g.sh_dc.sum() + g.opacity_logits.sum() + g.log_scales.sum()).backward()
    for i, level in enumerate(generator.levels):
        grad = level.render_head.geometry.weight.grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, f"level {i}"
    assert generator.mapping.layers[0].weight.grad is not None


# ---------------------------------------------------------------- the output structure's hierarchy
def test_level_selection_and_descendants(tiny_generator):
    config = tiny_generator.config
    with torch.no_grad():
        g = tiny_generator(z_from_seeds([0], config.z_dim)).scene(0)
    assert g.levels == [0, 1, 2, 3]
    assert len(g.at_level(2)) == config.gaussians_at_level(2)
    assert len(g.up_to_level(1)) == config.gaussians_at_level(0) + config.gaussians_at_level(1)
    assert len(g.up_to_level(1, background=True)) == len(g.up_to_level(1)) + config.num_background_gaussians
    # Subtree of the 5th level-0 Gaussian: 4**l descendants at level l, all of them its own.
    subtree = g.descendant_mask(5)
    for level in range(config.num_levels):
        assert int((subtree & (g.level == level)).sum()) == 4**level
    for index in subtree.nonzero().squeeze(-1).tolist():
        assert g.ancestor(index, level=0) == 5
    outside = (~subtree & (g.level >= 0)).nonzero().squeeze(-1)
    assert all(g.ancestor(int(i), 0) != 5 for i in outside[::97])
    sub = g.descendants_of(5)
    assert len(sub) == int(subtree.sum())
    assert (sub.parent[sub.level > 0] >= 0).all()  # parents remapped inside the selection
    assert (sub.level[sub.parent[sub.level > 0]] == sub.level[sub.level > 0] - 1).all()
    # A selection that drops the parents marks them as missing.
    assert (g.at_level(2).parent == -1).all()


# ---------------------------------------------------------------- anchor floor (dead subtrees)
def _collapsed_anchors(anchor_floor_pixels: float):
    """A tiny generator whose anchor heads all ask for a log-scale far below the -8 clamp."""
    torch.manual_seed(0)
    generator = random_generator("tiny", background=False, anchor_floor_pixels=anchor_floor_pixels)
    with torch.no_grad():
        for level in generator.levels:
            if level.anchor_head is not None:
                level.anchor_head.geometry.bias[3:6] = -60.0  # d_log_scale: softplus(60) = 60 below the parent
    return generator


def test_anchor_floor_keeps_subtrees_above_a_pixel_and_passes_gradient():
    z = z_from_seeds([0, 1], 64)
    dead = _collapsed_anchors(0.0)
    _, anchors = dead.synthesize(dead.mapping(z), return_anchors=True)
    assert all(bool((a.log_scale == -8).all()) for a in anchors[1:])  # GSGAN: at the clamp, a whole subtree
    dead_scale = dead.synthesize(dead.mapping(z)).at_level(3).log_scales
    assert bool((dead_scale == -8).all())
    from gsgan_core.metrics.levels import anchor_log_scales

    assert anchor_log_scales(dead, z)[1:] == [-8.0, -8.0]  # what training logs as metrics/anchor_log_scale

    alive = _collapsed_anchors(0.5)
    floor = math.log(0.5 / alive.config.image_resolution)
    gaussians, anchors = alive.synthesize(alive.mapping(z), return_anchors=True)
    for a in anchors:
        assert bool((a.log_scale >= floor).all())
    level3 = gaussians.at_level(3).log_scales  # children of floored anchors: up to the anchor's size
    assert bool((level3 > -8).all()) and bool((level3 <= floor + math.log(2) + 1e-5).all())

    # the clamp passes no gradient to a collapsed anchor head; the floor does
    for generator, expect_gradient in ((dead, False), (alive, True)):
        generator.zero_grad()
        generator.synthesize(generator.mapping(z)).at_level(3).log_scales.sum().backward()
        grad = generator.levels[2].anchor_head.geometry.bias.grad[3:6]
        assert bool((grad.abs() > 0).any()) == expect_gradient


def test_anchor_floor_off_by_default_and_validated():
    assert GeneratorConfig().anchor_floor_pixels == 0.0
    for name, config in PRESETS.items():
        if config.architecture == "lite":
            assert config.anchor_floor_pixels == 0.0  # the presets follow GSGAN
    with pytest.raises(ConfigError, match="anchor_floor_pixels"):
        preset("tiny", anchor_floor_pixels=-1.0)


def test_modulating_more_levels_keeps_the_trained_generator_exactly():
    import dataclasses

    plain = random_generator("tiny", seed=3)  # levels 2 and 3 plain
    with torch.no_grad():  # trained-looking plain norms, not their initial (1, 0)
        for name, value in plain.named_parameters():
            if name.endswith((".gamma", ".beta")):
                value.add_(0.2 * torch.randn_like(value))
    wider_config = dataclasses.replace(plain.config, modulated=(True, True, True, True))
    wider = Generator(wider_config).eval()
    wider.load_state_dict(modulate_state_dict(plain.state_dict(), plain.config, wider_config))  # strict
    assert wider_config.num_ws == plain.config.num_ws + 4
    z = z_from_seeds([0, 1], plain.config.z_dim)
    with torch.no_grad():
        before, after = plain(z), wider(z)
    for name in ("means", "log_scales", "quats", "opacity_logits", "sh_dc"):
        torch.testing.assert_close(getattr(after, name), getattr(before, name), rtol=0, atol=1e-5)

    with torch.no_grad():  # ... and the new weights make w matter at level 3
        wider.levels[3].blocks[0].norm1.affine.weight.normal_()
        moved = wider(z)
    assert not torch.allclose(moved.means, after.means)

    with pytest.raises(ConfigError, match="cannot become plain"):
        modulate_state_dict(wider.state_dict(), wider_config, plain.config)
    with pytest.raises(ConfigError, match="only in `modulated`"):
        modulate_state_dict(plain.state_dict(), plain.config, dataclasses.replace(wider_config, knn_k=4))
