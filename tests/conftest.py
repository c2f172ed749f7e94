import pytest
import torch

from gsgan_core.models.config import preset
from gsgan_core.models.generator import Generator
from gsgan_core.models.layers import LayerScale


def random_generator(name: str = "tiny", seed: int = 0, **overrides) -> Generator:
    """A generator with random weights *including* the layerscales.

    The reference initialises every layerscale to zero, so an untrained generator ignores w
    entirely; tests of latent behaviour need the blocks switched on, as training would.
    """
    torch.manual_seed(seed)
    generator = Generator(preset(name, **overrides))
    with torch.no_grad():
        for module in generator.modules():
            if isinstance(module, LayerScale):
                for p in module.parameters():
                    p.normal_(0, 0.3)
    return generator.eval()


@pytest.fixture(scope="session")
def tiny_generator() -> Generator:
    return random_generator("tiny")
