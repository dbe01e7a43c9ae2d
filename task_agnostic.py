"""Task-agnostic inference: classifying without being told the task
(docs/method.md#task-agnostic-evaluations).

HyperMask is trained task-incrementally; these evaluations drop the task label:
- entropy: run a sample under every task's mask, trust the most confident task
  (lowest softmax entropy);
- FeCAM (Goswami et al. 2023): class prototypes and shrunk, correlation-
  normalised covariances of penultimate features; a sample goes to the class at
  the smallest Mahalanobis distance, over every class seen so far.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from batches import Task
from hypermask import HyperMask, evaluation_batches, evaluation_mode

# ----------------------------------------------------------------------- entropy


def entropy_and_class(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One mask's softmax entropy [N] and predicted class [N] from its logits [N, C]."""
    log_p = logits.log_softmax(1)  # finite where softmax underflows to 0
    return -(log_p.exp() * log_p).sum(1), log_p.argmax(1)


def lowest_entropy(per_mask) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Each sample's task with the lowest entropy so far and that task's class, after each
    mask joins in task order.

    Args:
        per_mask: (entropy [N], class [N]) of the same N samples under the masks of
            tasks 0, 1, ... (entropy_and_class), one mask at a time.
    Yields:
        after mask j: chosen task [N] among tasks 0..j (ties go to the earlier task),
        predicted class [N].
    """
    for j, (entropy, classes) in enumerate(per_mask):
        if j == 0:
            lowest, chosen, predicted = entropy, torch.zeros_like(classes), classes
        else:
            lower = entropy < lowest  # strictly: a tie keeps the earlier task
            lowest = torch.where(lower, entropy, lowest)
            chosen = torch.where(lower, j, chosen)
            predicted = torch.where(lower, classes, predicted)
        yield chosen, predicted


def step_counts(per_mask, labels: torch.Tensor, task_id: int) -> torch.Tensor:
    """[T, 2]: per step j, how many of task task_id's test samples (true classes labels
    [N]) get their task right, and how many their task and class both, when the masks of
    tasks 0..j compete (lowest_entropy)."""
    counts = []
    for chosen, predicted in lowest_entropy(per_mask):
        right_task = chosen == task_id
        counts.append(torch.stack([right_task.sum(), (right_task & (predicted == labels)).sum()]))
    return torch.stack(counts)


@torch.no_grad()
def entropy_counts(model: HyperMask, tasks: list[Task], sparsity: float,
                   batch_size: int | None = None) -> list[list[list[int]]]:
    """step_counts of every task's test set under the masks of all tasks, one mask at a
    time: for test set s, [T][2] counts.

    Each test set goes through as one batch per mask unless `batch_size` is given
    (batch-statistics networks then give slightly different numbers).
    """
    found = []
    with evaluation_mode(model):
        weights = [model.task_weights(j, sparsity) for j in range(len(tasks))]
        for s, task in enumerate(tasks):
            counts = 0
            for images, labels in evaluation_batches(task.test_x, task.test_y, batch_size):
                x = task.transform(images, False)
                per_mask = (entropy_and_class(model.target(x, weights=w)[:, :tasks[j].num_classes])
                            for j, w in enumerate(weights))
                counts = counts + step_counts(per_mask, labels, s)
            found.append(counts.tolist())
    return found


def entropy_rows(found: list, tasks: list[Task]) -> list[dict]:
    """Per task, every task's mask competing (entropy_counts' `found`): task,
    task_identification_accuracy and accuracy (percent; a sample is right only if its task
    and class both are)."""
    return [{"task": s, "task_identification_accuracy": 100 * counts[-1][0] / len(task.test_y),
             "accuracy": 100 * counts[-1][1] / len(task.test_y)}
            for s, (counts, task) in enumerate(zip(found, tasks))]


def entropy_step_rows(found: list, tasks: list[Task]) -> list[dict]:
    """Per incremental step i, the masks of tasks 0..i competing on the union of their test
    sets, as the authors evaluate the FeCAM setup: tasks_seen (i + 1),
    task_identification_accuracy and accuracy (percent)."""
    rows = []
    for i in range(len(tasks)):
        right_task, right = (sum(found[s][i][k] for s in range(i + 1)) for k in (0, 1))
        total = sum(len(task.test_y) for task in tasks[:i + 1])
        rows.append({"tasks_seen": i + 1, "task_identification_accuracy": 100 * right_task / total,
                     "accuracy": 100 * right / total})
    return rows


def entropy_evaluation(model: HyperMask, tasks: list[Task], sparsity: float,
                       batch_size: int | None = None) -> list[dict]:
    """Entropy-based task inference on each task's test set under every task's mask
    (entropy_rows of entropy_counts)."""
    return entropy_rows(entropy_counts(model, tasks, sparsity, batch_size), tasks)


# ------------------------------------------------------------------------- FeCAM


def shrink(cov: torch.Tensor) -> torch.Tensor:
    """FeCAM's shrinkage: cov + mean(diag) I + mean(non-zero off-diagonal) (1 - I)."""
    eye = torch.eye(len(cov), dtype=cov.dtype, device=cov.device)
    off_diagonal = cov[(1 - eye).bool()]
    off_mean = off_diagonal[off_diagonal != 0].mean() if (off_diagonal != 0).any() else 0.0
    return cov + cov.diagonal().mean() * eye + off_mean * (1 - eye)


class DegenerateClass(ValueError):
    """A class whose FeCAM statistics do not exist: one sample, or features that never vary
    (its covariance is zero, its correlation 0/0)."""


def class_statistics(features: torch.Tensor, labels: torch.Tensor,
                     num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prototypes and precision matrices of FeCAM, one per class.

    The prototype is the mean feature; the covariance is shrunk twice,
    normalised to a correlation matrix and pseudo-inverted.

    Args:
        features: [N, D] penultimate features; labels: [N] in 0..num_classes-1.
    Returns:
        prototypes [C, D], precisions [C, D, D].
    Raises:
        DegenerateClass: a class with one sample or with constant features.
    """
    prototypes, precisions = [], []
    for c in range(num_classes):
        f = features[labels == c].double()
        if len(f) < 2:  # no covariance
            raise DegenerateClass(f"its class {c} has {len(f)} image(s)")
        cov = shrink(shrink(torch.cov(f.T).reshape(f.shape[1], f.shape[1])))  # D = 1: 0-d
        std = cov.diagonal().sqrt()
        correlation = cov / (std[:, None] * std[None, :])
        if not torch.isfinite(correlation).all():  # else pinv fails deep inside, or NaN
            raise DegenerateClass(f"its class {c} ({len(f)} images) has the same penultimate "
                                  "features for every image")
        prototypes.append(f.mean(0))
        precisions.append(torch.linalg.pinv(correlation + 1e-8))
    return torch.stack(prototypes), torch.stack(precisions)


def fecam_bytes(model: HyperMask, classes: int) -> int:
    """The bytes of class_statistics' precision matrices for `classes` classes: one float64
    D x D matrix each, D the output layer's input (ZenkeNet at 64x64: 12,544)."""
    features = model.target.param_shapes[-2][1]  # the output layer's weight: [classes, D]
    return classes * features ** 2 * 8


def mahalanobis(features: torch.Tensor, prototypes: torch.Tensor,
                precisions: torch.Tensor) -> torch.Tensor:
    """Squared Mahalanobis distances of L2-normalised features to L2-normalised prototypes.

    Args:
        features [N, D], prototypes [C, D], precisions [C, D, D].
    Returns:
        [N, C] distances.
    """
    d = F.normalize(features.double(), dim=-1)[:, None] - F.normalize(prototypes, dim=-1)[None]
    return torch.einsum("ncd,cde,nce->nc", d, precisions, d)


class _LastLinearInput(TorchFunctionMode):
    """Records the input of the last F.linear call: the penultimate features."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.linear:
            self.features = args[0]
        return func(*args, **(kwargs or {}))


def penultimate_features(model: HyperMask, x: torch.Tensor, weights: list) -> torch.Tensor:
    """The input of the target network's output layer, [N, D], under the given weights."""
    with _LastLinearInput() as recorder:
        model.target(x, weights=weights)
    return recorder.features


def task_features(model: HyperMask, task: Task, images: torch.Tensor, weights: list,
                  batch_size: int | None) -> torch.Tensor:
    """Penultimate features of stored images, in one batch or in chunks of batch_size."""
    chunks = torch.split(images, batch_size or len(images))
    return torch.cat([penultimate_features(model, task.transform(chunk, False), weights)
                      for chunk in chunks])


@torch.no_grad()
def fecam_evaluation(model: HyperMask, tasks: list[Task], sparsity: float,
                     batch_size: int | None = None, with_validation: bool = False) -> list[dict]:
    """FeCAM class-incremental accuracy after the last task, over tasks 0..i for every i.

    Each task's classes get statistics from its training split (not augmented),
    as the authors' extract_training_set_from_all_tasks, under its own mask. A
    test sample is compared, under every task t's mask, with task t's classes;
    the nearest class over all tasks so far is the prediction.

    Args:
        batch_size: None: each set of images through the network as one batch
            (as the reference's test sets); else in chunks.
        with_validation: the statistics also use the validation samples (the
            authors' FeCAM setup: HyperParameters.fecam_with_validation).
    Returns:
        one row per i: tasks_seen (i + 1) and accuracy (percent) on the union
        of the test sets of tasks 0..i.
    """
    with evaluation_mode(model):
        weights = [model.task_weights(j, sparsity) for j in range(len(tasks))]
        statistics = []
        for t, task in enumerate(tasks):
            x, labels = task.train_x, task.train_y
            if with_validation:
                x, labels = torch.cat([x, task.val_x]), torch.cat([labels, task.val_y])
            features = task_features(model, task, x, weights[t], batch_size)
            # the task's own classes (the published regime widens num_classes:
            # docs/differences.md#2-output-width-per-task)
            try:
                statistics.append(class_statistics(features, labels, int(labels.max()) + 1))
            except DegenerateClass as error:
                raise DegenerateClass(f"task {t + 1}: {error}") from None
        # distance[s][t]: [N_s, C_t], test samples of task s under task t's mask
        distance = [[mahalanobis(task_features(model, s, s.test_x, w, batch_size), *statistics[t])
                     for t, w in enumerate(weights)] for s in tasks]
    return fecam_rows(distance, [task.test_y for task in tasks])


def fecam_rows(distance: list[list[torch.Tensor]], labels: list[torch.Tensor]) -> list[dict]:
    """FeCAM's accuracy over tasks 0..i for every i, from the distances.

    A test image of task s is right when its nearest class, over the classes of
    tasks 0..i, is its own: in task s, with its label.

    Args:
        distance: distance[s][t], [N_s, C_t]: task s's test images to task t's classes.
        labels: labels[s], [N_s]: their labels within task s.
    Returns:
        one row per i: tasks_seen (i + 1) and accuracy (percent) on the union of the
        test sets of tasks 0..i.
    """
    rows = []
    for i in range(len(labels)):
        correct = total = 0
        for s, truth in enumerate(labels[:i + 1]):
            nearest = torch.stack([distance[s][t].min(1).values for t in range(i + 1)])
            chosen = nearest.argmin(0)  # [N]: the task of the nearest class
            predicted = torch.stack([distance[s][t].argmin(1) for t in range(i + 1)])
            predicted = predicted.gather(0, chosen[None])[0]
            correct += ((chosen == s) & (predicted == truth)).sum().item()
            total += len(truth)
        rows.append({"tasks_seen": i + 1, "accuracy": 100 * correct / total})
    return rows
