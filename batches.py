"""Training batches: one task's data on its device, served endlessly in random order.

A `Task` holds a task's stored samples and the transform that turns a stored
batch into network input. `TrainingBatches` draws a new random order every
epoch and yields (input, labels); per-image augmentations that cannot run on a
whole batch run ahead of training in DataLoader worker processes. Its state (the
position in the epoch) goes into mid-task checkpoints, so a resumed task gets
exactly the batches it would have got.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

import augmentation


@dataclass
class Task:
    """One task's data on the training device.

    `*_x` hold stored samples (uint8 pixels; images as [N, H, W, C]), `*_y`
    labels in 0..num_classes-1. `transform(x, training)` maps a stored batch to
    the network's input, flat [B, prod(input_shape)], augmenting when
    `training` is true; `input_shape` is (features,) or (H, W, C).
    `image_augment`, when set, augments training images one by one on the CPU
    ([C, H, W] uint8 in and out) in DataLoader workers, before `transform`:
    for augmentations that cannot run on a whole batch at once.
    `augment_in_batches` applies it to each whole batch instead, every image
    with its own random draws (augmentation.in_batches: the same distribution,
    other draws, less CPU time).
    `shuffle_seed`, when set, draws the batch order from a generator of its
    own seeded with it (the same for every run seed), not from torch's.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    transform: Callable[[torch.Tensor, bool], torch.Tensor]
    input_shape: tuple[int, ...]
    image_augment: Callable[[torch.Tensor], torch.Tensor] | None = None
    augment_in_batches: bool = False
    shuffle_seed: int | None = None


def augmentation_workers(device: torch.device | None = None) -> int:
    """DataLoader processes for per-image augmentation, at most 8: on a GPU all the run's CPU
    threads but one (the training loop, which mostly waits for the GPU), on a CPU half of
    them (the training loop computes with the others).

    The run's thread budget is torch's thread count (set by runs.run_one from
    the CPUs this run may use), not the machine's core count.
    """
    threads = torch.get_num_threads()
    gpu = device is not None and device.type == "cuda"
    return max(1, min(8, threads - 1 if gpu else threads // 2))


class AugmentedImages(torch.utils.data.Dataset):
    """Training images augmented one by one, a batch per item, in DataLoader workers.

    An item is a key (seed, indices): the images at `indices`, each augmented
    ([C, H, W] uint8 in and out) with torch's generator seeded with `seed`, and
    their labels. A batch therefore comes out the same whichever worker makes it
    and however many there are, and a task resumed in the middle of an epoch
    gets the batches it would have got. A module-level class, so that workers
    started with spawn or forkserver (macOS, Python 3.14's default) unpickle it.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor,
                 augment: Callable[[torch.Tensor], torch.Tensor], in_batches: bool = False):
        self.images, self.labels, self.augment = images, labels, augment  # [N, H, W, C] uint8
        # the whole batch at once (augmentation.in_batches), made here: an unsupported
        # transform fails when the task starts, not in a worker
        self.augment_batch = augmentation.in_batches(augment) if in_batches else None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: tuple[int, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """images [B, H, W, C] uint8 and labels [B] of one batch."""
        seed, index = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if self.augment_batch is not None:
                images = self.augment_batch(self.images[index].permute(0, 3, 1, 2))
                images = images.permute(0, 2, 3, 1).contiguous()
            else:
                images = torch.stack([self.augment(self.images[i].permute(2, 0, 1))
                                      .permute(1, 2, 0) for i in index.tolist()])
        return images, self.labels[index]


class _EpochKeys(torch.utils.data.Sampler):
    """The AugmentedImages keys of the rest of the current epoch (set by TrainingBatches)."""

    def __init__(self):
        self.keys: list[tuple[int, torch.Tensor]] = []

    def __iter__(self):
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


class TrainingBatches:
    """Endless training batches (network input, labels), a new random order every epoch.

    Each epoch's order is a torch.randperm on the task's device, from torch's
    global generator; batch-wise transforms (crop, flip) run on the device. A
    task with an `image_augment` gets its images augmented one by one in
    DataLoader worker processes on the CPU, ahead of the training loop, so the
    loop (and a GPU) does not wait for per-image Python work; those batches are
    seeded from one number drawn when the epoch starts (see AugmentedImages).

    A task with a `shuffle_seed` draws its orders (and augmentation seeds) on
    the CPU from a generator of its own seeded with it instead.

    What crosses from the CPU to a GPU (the workers' batches, an order drawn on
    the CPU) comes from pinned memory without blocking (to_device): the host
    goes on while the copy runs. `workers` sets the number of augmentation
    workers (default: augmentation_workers).

    `state_dict()` is the position in the current epoch; a TrainingBatches
    given it continues there, and with torch's generators restored as they were
    it yields exactly the batches the original would have.
    """

    def __init__(self, task: Task, batch_size: int, state: dict | None = None, *,
                 workers: int | None = None):
        self.task, self.batch_size = task, batch_size
        self.device = task.train_y.device
        if len(task.train_y) == 0:  # load_tasks refuses such a task; this guards every caller
            raise RuntimeError("TrainingBatches: the task has no training samples, so every "
                               "batch would be empty")
        self.order, self.position, self.epoch_seed = None, 0, 0  # position: batches done
        self.generator = None if task.shuffle_seed is None else \
            torch.Generator().manual_seed(task.shuffle_seed)
        if state is not None:
            self.order = None if state["order"] is None else to_device(state["order"],
                                                                       self.device)
            self.position, self.epoch_seed = state["position"], state["epoch_seed"]
            if self.generator is not None:
                self.generator.set_state(state["generator"])
        self.loader = None
        if task.image_augment is not None:
            self.keys = _EpochKeys()
            self.loader = torch.utils.data.DataLoader(
                AugmentedImages(task.train_x.cpu(), task.train_y.cpu(), task.image_augment,
                                task.augment_in_batches),
                sampler=self.keys, batch_size=None,
                num_workers=workers or augmentation_workers(self.device),
                persistent_workers=True, pin_memory=self.device.type == "cuda",
                # its own generator: starting the workers must not draw from torch's
                generator=torch.Generator())
            self.loaded = None

    def state_dict(self) -> dict:
        """Where the current epoch stands: its order, the batches done, its augmentation seed."""
        return {"order": None if self.order is None else self.order.cpu(),
                "position": self.position, "epoch_seed": self.epoch_seed,
                "generator": None if self.generator is None else self.generator.get_state()}

    def __iter__(self):
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        size = len(self.task.train_y)
        if self.order is None or self.position * self.batch_size >= size:
            self.order, self.position = (
                torch.randperm(size, device=self.device) if self.generator is None
                else to_device(torch.randperm(size, generator=self.generator), self.device)), 0
            if self.loader is not None:
                self.epoch_seed = int(torch.randint(0, 2**62, (), generator=self.generator))
                self.loaded = None
        index = self.order[self.position * self.batch_size:(self.position + 1) * self.batch_size]
        self.position += 1
        if self.loader is None:
            return checked_batch(self.task.transform(self.task.train_x[index], True),
                                 self.task.train_y[index])
        if self.loaded is None:  # the workers start on the rest of this epoch
            order = self.order.cpu()  # one copy (and one wait for a GPU), not one per batch
            starts = range((self.position - 1) * self.batch_size, size, self.batch_size)
            self.keys.keys = [(self.epoch_seed + start // self.batch_size,
                               order[start:start + self.batch_size]) for start in starts]
            self.loaded = iter(self.loader)
        images, labels = next(self.loaded)  # pinned by the loader on a GPU
        return checked_batch(self.task.transform(to_device(images, self.device), True),
                             to_device(labels, self.device))


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor on `device`; to a GPU through pinned memory without blocking, so that
    the host goes on while the copy runs (the pinned buffer is kept until it is done)."""
    if device.type != "cuda":
        return tensor.to(device)
    return (tensor if tensor.is_pinned() else tensor.pin_memory()).to(device, non_blocking=True)


def checked_batch(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y), or an error if the network input x holds NaN or infinite values.

    The check does not wait for the device (torch._assert_async): on a GPU a
    failure stops the process at its next CUDA call.
    """
    torch._assert_async(torch.isfinite(x).all(), "a training batch holds NaN or infinite "
                        "values: check the task's transform")
    return x, y
