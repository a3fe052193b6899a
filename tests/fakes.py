"""Synthetic stand-ins for MNIST shared by the tests: learnable in a few steps, no download needed."""

import torch

from softmaxlab.mnist.data import Data, Split


def fake_data(n: int = 256, n_eval: int = 128, seed: int = 0) -> Data:
    """Class c lights up pixel block c (70 pixels) over uniform noise; uint8 images as the trainer takes."""
    g = torch.Generator().manual_seed(seed)

    def split(m):
        y = torch.randint(0, 10, (m,), generator=g)
        x = torch.randint(0, 60, (m, 784), generator=g)
        for c in range(10):
            x[y == c, c * 70:(c + 1) * 70] += 180
        return Split(x.clamp(0, 255).to(torch.uint8), y)

    return Data(split(n), split(n_eval), split(n_eval))
