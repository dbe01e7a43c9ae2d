"""The benchmark scripts' own arithmetic (their timings are measured, never tested)."""

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load(name):
    import sys

    sys.path.insert(0, str(BENCH))  # the scripts import each other
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("dataset, part, steps", [
    ("PermutedMNIST", 0, 50_000),  # 5,000 iterations x 10 tasks
    ("PermutedMNIST", 1, 500_000),
    ("SplitMNIST", 0, 10_000),
    ("CIFAR100", 0, 282_000),  # 200 epochs x ceil(4,500 / 32) = 141 x 10 tasks
    ("TinyImageNet", 0, 56_400),  # 10 epochs x ceil(2,250 / 16) = 141 x 40 tasks
    ("CIFAR100_FeCAM_setup", 6, 282_000),  # 200 x ceil(20 x 450 / 32) = 282 x 5 tasks
    ("CIFAR100_FeCAM_setup", 0, 200 * (704 + 5 * 141)),  # 50 classes, then 5 x 10
])
def test_steps_per_seed(dataset, part, steps):
    assert load("reproduction_time").steps_per_seed(dataset, part) == steps


def test_step_bytes_of_the_paper_scale_permuted_mnist():
    """10 float32 accesses per parameter: 206M hypernetwork + 2M target parameters."""
    traffic = load("train_step").step_bytes("PermutedMNIST", 0)
    assert 8.2e9 < traffic < 8.4e9 and traffic % 40 == 0
