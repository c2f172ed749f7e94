import pytest
import torch

from gsgan_core.models.config import preset
from gsgan_core.models.generator import Generator, randomize_layer_scales


def random_generator(name: str = "tiny", seed: int = 0, **overrides) -> Generator:
    """A generator with random weights *including* the layerscales (see randomize_layer_scales)."""
    torch.manual_seed(seed)
    return randomize_layer_scales(Generator(preset(name, **overrides))).eval()


@pytest.fixture(scope="session")
def tiny_generator() -> Generator:
    return random_generator("tiny")
