"""Generators (two architectures, see config.py), the discriminator and their building blocks."""

from __future__ import annotations

from torch import nn

from gsgan_core.models.config import AnyConfig, GeneratorConfig
from gsgan_core.models.generator import Generator
from gsgan_core.models.gsgan import GSGANConfig, GSGANGenerator


def build_generator(config: AnyConfig) -> nn.Module:
    """The generator a config describes: GSGANGenerator for a GSGANConfig, the lite Generator otherwise."""
    if isinstance(config, GSGANConfig):
        return GSGANGenerator(config)
    if isinstance(config, GeneratorConfig):
        return Generator(config)
    raise TypeError(f"not a generator config: {type(config).__name__}")
