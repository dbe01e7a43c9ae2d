"""HyperMask: a hypernetwork turns a task embedding into a semi-binary mask over
the weights of one shared target network (Książek & Spurek, arXiv 2310.00113).

For task t, the hypernetwork's output h = hnet(e_t) is one tensor per target
tensor; the mask keeps |tanh(h)| where it reaches the tensor's p-th percentile
(SPEC §2); the prediction uses the weights θ ⊙ m. Training a task minimises

    loss = CE(f(x; θ ⊙ m_t), y) + β · R_hnet / max(1, t) + λ · R_target

with R_hnet the output regulariser of von Oswald et al. 2020 over all earlier
tasks and R_target the L1 drift of θ since the task started (SPEC §3).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from hypnettorch.hnets import ChunkedHMLP, HMLP
from hypnettorch.mnets import MLP
from torch import nn

from datasets import HyperParameters, Task

BATCH_NORM_PARAMETERS = ("bn_scale", "bn_shift")
VALIDATION_EVERY = 100  # iterations


class HyperMask(nn.Module):
    """A target network θ and a hypernetwork that masks it, one embedding per task."""

    def __init__(self, target: nn.Module, hnet: nn.Module):
        super().__init__()
        self.target = target
        self.hnet = hnet
        # Every tensor but batch norm's is masked (and produced by the hnet).
        self.maskable = [i for i, meta in enumerate(target.param_shapes_meta)
                         if meta["name"] not in BATCH_NORM_PARAMETERS]
        self.numels = [math.prod(target.param_shapes[i]) for i in self.maskable]

    @property
    def maskable_params(self) -> list[torch.Tensor]:
        """θ_l for every masked tensor, in hypernetwork output order."""
        return [self.target.internal_params[i] for i in self.maskable]

    def hnet_outputs(self, task_ids: list[int]) -> torch.Tensor:
        """Raw hypernetwork outputs, one row per task: [len(task_ids), n_outputs]."""
        return self.hnet(cond_id=task_ids, ret_format="flattened")

    def masks(self, hnet_output: torch.Tensor, sparsity: float) -> list[torch.Tensor]:
        """Semi-binary masks from one task's flat hypernetwork output [n_outputs]."""
        shapes = [self.target.param_shapes[i] for i in self.maskable]
        pieces = torch.split(hnet_output, self.numels)
        return semi_binary_masks([h.view(s) for h, s in zip(pieces, shapes)], sparsity)

    def masked_weights(self, masks: list[torch.Tensor]) -> list[torch.Tensor]:
        """θ ⊙ m for every masked tensor; the output bias and batch norm pass unmasked."""
        weights = list(self.target.internal_params)
        for i, m in zip(self.maskable[:-1], masks[:-1]):
            weights[i] = weights[i] * m
        return weights

    def task_weights(self, task_id: int, sparsity: float) -> list[torch.Tensor]:
        """The target network's weights for task `task_id`: θ ⊙ m_t."""
        return self.masked_weights(self.masks(self.hnet_outputs([task_id])[0], sparsity))

    def forward(self, x: torch.Tensor, task_id: int, sparsity: float) -> torch.Tensor:
        """Logits of task `task_id`'s masked network for a batch x."""
        return self.target(x, weights=self.task_weights(task_id, sparsity))


def semi_binary_masks(hnet_output: list[torch.Tensor], sparsity: float) -> list[torch.Tensor]:
    """The semi-binary mask of SPEC §2, one tensor per target tensor.

    m_l = r_l where r_l >= the p-th percentile of r_l, else 0, with
    r_l = |tanh(h_l)|; the last tensor is never pruned. Gradients flow
    through tanh and abs into the kept entries.

    Args:
        hnet_output: raw hypernetwork outputs h_l, shaped like the target tensors.
        sparsity: p, the percentage of each tensor's entries removed (0..100).
    """
    masks = []
    for l, h in enumerate(hnet_output):
        r = torch.tanh(h).abs()
        if sparsity > 0 and l < len(hnet_output) - 1:
            threshold = torch.quantile(r.flatten(), sparsity / 100)  # linear interpolation
            r = torch.where(r >= threshold, r, torch.zeros_like(r))
        masks.append(r)
    return masks


def current_sparsity(config: HyperParameters, task_id: int, iteration: int,
                     num_iterations: int) -> float:
    """p for this training iteration: ramped linearly over the first task only."""
    if config.adaptive_sparsity and task_id == 0:
        return config.sparsity * (iteration + 1) / num_iterations
    return config.sparsity


def build_model(config: HyperParameters, input_size: int, num_outputs: int) -> HyperMask:
    """The target network and its hypernetwork, freshly initialised (SPEC §1)."""
    if config.target_network != "MLP":
        raise ValueError(f"target network {config.target_network!r} is not available yet")
    target = MLP(n_in=input_size, n_out=num_outputs, hidden_layers=config.target_hidden_layers,
                 activation_fn=nn.ReLU(), use_bias=True, verbose=False)
    shapes = [s for s, meta in zip(target.param_shapes, target.param_shapes_meta)
              if meta["name"] not in BATCH_NORM_PARAMETERS]
    common = dict(uncond_in_size=0, cond_in_size=config.embedding_size,
                  layers=config.hnet_hidden_layers, activation_fn=nn.ELU(),
                  num_cond_embs=config.number_of_tasks, verbose=False)
    if config.chunk_size is None:
        hnet = HMLP(shapes, **common)
    else:
        hnet = ChunkedHMLP(shapes, chunk_size=config.chunk_size,
                           chunk_emb_size=config.chunk_embedding_size, **common)
    return HyperMask(target, hnet)


# ------------------------------------------------------------------- training


@dataclass
class TaskStart:
    """What the regularisers compare against, fixed when task t starts."""

    hnet_targets: torch.Tensor  # h*_j for j < t, detached: [t, n_outputs]
    start_params: list[torch.Tensor]  # θ^start for every masked tensor


def task_start(model: HyperMask, task_id: int) -> TaskStart:
    """Snapshot the earlier tasks' hypernetwork outputs and θ before task `task_id`."""
    with torch.no_grad():
        targets = model.hnet_outputs(list(range(task_id))) if task_id > 0 else None
    return TaskStart(targets, [p.detach().clone() for p in model.maskable_params])


def training_loss(model: HyperMask, x: torch.Tensor, y: torch.Tensor, *, task_id: int,
                  num_classes: int, sparsity: float, start: TaskStart,
                  config: HyperParameters, batched: bool = True) -> dict[str, torch.Tensor]:
    """The HyperMask loss on one batch (SPEC §3).

    Args:
        x, y: network input [B, ...] and labels [B].
        task_id: t, counted from 0.
        num_classes: the task's outputs (the first `num_classes` logits).
        sparsity: p for this iteration.
        start: the regularisers' reference points for this task.
        batched: compute the current task's and every earlier task's
            hypernetwork output in one call (the default); False loops over
            earlier tasks one call each (kept for the benchmark).
    Returns:
        loss, task_loss, hnet_term (β·R_hnet/max(1,t)), target_term (λ·R_target).
    """
    outputs = model.hnet_outputs(list(range(task_id + 1)) if batched else [task_id])
    masks = model.masks(outputs[-1], sparsity)
    logits = model.target(x, weights=model.masked_weights(masks))
    task_loss = F.cross_entropy(logits[:, :num_classes], y)
    hnet_term = target_term = torch.zeros((), device=x.device)
    if task_id > 0:
        previous = outputs[:-1] if batched else torch.cat(
            [model.hnet_outputs([j]) for j in range(task_id)])
        hnet_reg = (previous - start.hnet_targets).pow(2).sum() / task_id
        drifts = [p - p0 for p, p0 in zip(model.maskable_params, start.start_params)]
        if config.norm_regularizer_masking:
            drifts = [d * m for d, m in zip(drifts, masks)]
        target_reg = sum(d.abs().sum() for d in drifts)
        hnet_term = config.beta * hnet_reg / max(1, task_id)
        target_term = config.lam * target_reg
    loss = task_loss + hnet_term + target_term
    return dict(loss=loss, task_loss=task_loss, hnet_term=hnet_term, target_term=target_term)


def make_optimizer(model: HyperMask, config: HyperParameters) -> torch.optim.Optimizer:
    """A fresh optimiser over hypernetwork and target parameters (one per task)."""
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(model.parameters(), lr=config.learning_rate)
    # The fused kernel is the same algorithm, several times faster on CPU and GPU.
    return torch.optim.Adam(model.parameters(), lr=config.learning_rate, fused=True)


def train_task(model: HyperMask, task: Task, task_id: int, config: HyperParameters, *,
               progress: Callable[[int, dict], None] | None = None) -> list[dict]:
    """Train task `task_id`; return the training log (a row per validation).

    Validation runs after iterations 0, VALIDATION_EVERY, 2 * VALIDATION_EVERY,
    ..., after the last one and (epoch-based runs) at each epoch end, always
    with the target sparsity p (as the reference, whose iteration counter
    starts at 0). With model_selection "best_val" the networks with the highest
    validation accuracy are kept.

    Args:
        progress: called after every iteration with (iteration, last log row).
    """
    per_epoch = math.ceil(len(task.train_y) / config.batch_size)
    num_iterations = (config.number_of_epochs * per_epoch if config.number_of_epochs
                      else config.number_of_iterations)
    optimizer = make_optimizer(model, config)
    scheduler = (torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=math.sqrt(0.1), patience=5, min_lr=5e-7)
        if config.lr_scheduler else None)
    start = task_start(model, task_id)
    batches = batch_indices(len(task.train_y), config.batch_size, task.train_y.device)
    best_accuracy, best_state, log, row = -1.0, None, [], {}
    started = time.perf_counter()
    model.train()
    for iteration in range(num_iterations):
        index = next(batches)
        x, y = task.transform(task.train_x[index], True), task.train_y[index]
        sparsity = current_sparsity(config, task_id, iteration, num_iterations)
        terms = training_loss(model, x, y, task_id=task_id, num_classes=task.num_classes,
                              sparsity=sparsity, start=start, config=config)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()

        epoch_end = config.number_of_epochs and (iteration + 1) % per_epoch == 0
        if iteration % VALIDATION_EVERY == 0 or iteration == num_iterations - 1 or epoch_end:
            accuracy = evaluate(model, task, task_id, config.sparsity, split="val")
            row = {"task": task_id, "iteration": iteration + 1,
                   **{name: value.item() for name, value in terms.items()},
                   "sparsity": sparsity, "learning_rate": optimizer.param_groups[0]["lr"],
                   "validation_accuracy": accuracy,
                   "seconds": round(time.perf_counter() - started, 3)}
            log.append(row)
            if config.model_selection == "best_val" and accuracy > best_accuracy:
                best_accuracy, best_state = accuracy, copy.deepcopy(model.state_dict())
            if scheduler is not None and epoch_end:
                scheduler.step(accuracy)
        if progress is not None:
            progress(iteration, row)
    if best_state is not None:
        model.load_state_dict(best_state)
    return log


def batch_indices(n: int, batch_size: int, device: torch.device):
    """Endless mini-batch indices: a fresh random order every epoch."""
    while True:
        order = torch.randperm(n, device=device)
        yield from torch.split(order, batch_size)


@torch.no_grad()
def evaluate(model: HyperMask, task: Task, task_id: int, sparsity: float, *,
             split: str = "test", batch_size: int | None = None) -> float:
    """Accuracy in percent of task `task_id`'s masked network on one split.

    The whole split goes through as one batch unless `batch_size` is given
    (batch-statistics networks then give slightly different numbers).
    """
    x_all, y_all = getattr(task, f"{split}_x"), getattr(task, f"{split}_y")
    correct = 0
    with evaluation_mode(model):
        weights = model.task_weights(task_id, sparsity)
        for index in torch.split(torch.arange(len(y_all), device=y_all.device),
                                 batch_size or len(y_all)):
            logits = model.target(task.transform(x_all[index], False), weights=weights)
            correct += (logits[:, :task.num_classes].argmax(1) == y_all[index]).sum()
    return 100.0 * correct.item() / len(y_all)


@contextlib.contextmanager
def evaluation_mode(model: nn.Module):
    """Eval mode inside the block, the previous mode restored after (dropout stays on in
    training: the reference's defect 3)."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)

