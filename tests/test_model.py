import math

import numpy as np
import pytest
import torch

from schedlab.model.denoiser import Denoiser, parameter_count, sinusoidal_embedding


def test_default_parameter_count_is_the_reference():
    assert parameter_count(Denoiser()) == 296_450


@pytest.mark.parametrize(("emb", "hidden", "layers"), [(16, 32, 1), (64, 128, 0), (32, 64, 5)])
def test_sizes_are_configurable(emb, hidden, layers):
    expected = (3 * emb + 1) * hidden + layers * (hidden + 1) * hidden + (hidden + 1) * 2
    assert parameter_count(Denoiser(emb, hidden, layers)) == expected


def test_embedding_against_direct_formula():
    v = torch.tensor([0.0, 0.3, -1.7, 42.0], dtype=torch.float64)
    got = sinusoidal_embedding(v, 128, 25.0).numpy()
    f = np.exp(-math.log(10000) * np.arange(64) / 63)
    angles = 25.0 * v.numpy()[:, None] * f[None, :]
    np.testing.assert_allclose(
        got, np.concatenate([np.sin(angles), np.cos(angles)], 1), rtol=1e-12, atol=1e-12
    )


def test_forward_shape_and_residual_structure():
    torch.manual_seed(0)
    model = Denoiser(8, 16, 2).double()
    x = torch.randn(5, 2, dtype=torch.float64)
    t = torch.tensor([0, 1, 50, 98, 99])
    # Independent forward: embed, linear, h + W relu(h) per block, relu, linear.
    emb = torch.cat(
        [
            sinusoidal_embedding(x[:, 0], 8, 25.0),
            sinusoidal_embedding(x[:, 1], 8, 25.0),
            sinusoidal_embedding(t.double(), 8, 1.0),
        ],
        dim=1,
    )
    h = emb @ model.input.weight.T + model.input.bias
    for block in model.blocks:
        h = h + torch.relu(h) @ block.linear.weight.T + block.linear.bias
    expected = torch.relu(h) @ model.output.weight.T + model.output.bias
    torch.testing.assert_close(model(x, t), expected)
    assert model(x, t).shape == (5, 2)


def test_odd_embedding_rejected():
    with pytest.raises(ValueError, match="emb_size must be an even number"):
        Denoiser(emb_size=7)
