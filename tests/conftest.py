"""Shared fixtures: small MNIST files in torchvision's on-disk layout."""

import struct
from pathlib import Path

import numpy as np
import pytest


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write an uint8 array in the IDX format MNIST ships in (big-endian header)."""
    magic = 0x0800 + array.ndim  # type 0x08 = unsigned byte
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", n) for n in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def make_mnist(root: Path, n_train: int = 400, n_test: int = 100, seed: int = 0) -> Path:
    """Random 28x28 digits with class-dependent brightness, so the classes are learnable."""
    rng = np.random.RandomState(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = rng.randint(0, 60, size=(n, 28, 28))
        for digit in range(10):  # a bright stripe whose row depends on the digit
            images[labels == digit, 2 + 2 * digit: 4 + 2 * digit, :] = 250
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory) -> Path:
    return make_mnist(tmp_path_factory.mktemp("data"))
