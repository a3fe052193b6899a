"""Synthetic stand-ins for MNIST shared by the tests (learnable in a few steps, no download needed), and a
probe of the largest tensor an operation creates."""

import torch
from torch.utils._python_dispatch import TorchDispatchMode

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


class LargestTensor(TorchDispatchMode):
    """Inside `with LargestTensor() as probe:`, probe.largest is the most elements any op output held."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                n = t._values().numel() if t.is_sparse else t.numel()  # a sparse tensor stores only its values
                self.largest = max(self.largest, n)
        return out
