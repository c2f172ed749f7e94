import pytest
import torch
from conftest import random_generator

from gsgan_core.models.generator import z_from_seeds
from gsgan_core.models.graphed import GraphedSynthesis


def test_graphed_synthesis_refuses_cpu(tiny_generator):
    with pytest.raises(ValueError, match="CUDA"):
        GraphedSynthesis(tiny_generator)


@pytest.mark.gpu
def test_graph_replay_equals_eager_synthesis():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA: CUDA graphs exist only on NVIDIA GPUs")
    generator = random_generator("tiny").cuda()
    graphed = GraphedSynthesis(generator, batch_size=2)
    for seeds in ([0, 1], [5, 9]):
        with torch.no_grad():
            ws = generator.mapping(z_from_seeds(seeds, generator.config.z_dim, "cuda"))
            eager = generator.synthesize(ws)
        replayed = graphed(ws)
        torch.testing.assert_close(replayed.means, eager.means)
        torch.testing.assert_close(replayed.sh_dc, eager.sh_dc)
    assert not torch.equal(graphed(ws).means, graphed(torch.zeros_like(ws)).means)
