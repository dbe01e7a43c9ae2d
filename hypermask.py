"""HyperMask: a hypernetwork turns a task embedding into a semi-binary mask over
the weights of one shared target network (Książek & Spurek, arXiv 2310.00113).

For task t, the hypernetwork's output h = hnet(e_t) is one tensor per target
tensor; the mask keeps |tanh(h)| where it reaches the tensor's p-th percentile
(docs/method.md#the-semi-binary-mask); the prediction uses the weights θ ⊙ m.
Training a task minimises

    loss = CE(f(x; θ ⊙ m_t), y) + β · R_hnet / max(1, t) + λ · R_target

with R_hnet the output regulariser of von Oswald et al. 2020 over all earlier
tasks and R_target the L1 drift of θ since the task started
(docs/method.md#the-loss-and-its-optimisation).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from hypnettorch.hnets import HMLP, ChunkedHMLP
from hypnettorch.mnets import MLP, ResNet, ZenkeNet
from hypnettorch.mnets.mnet_interface import MainNetInterface
from hypnettorch.utils.batchnorm_layer import BatchNormLayer
from hypnettorch.utils.torch_utils import init_params
from torch import nn

import output_layer
from batches import Task, TrainingBatches
from errors import UserError

if TYPE_CHECKING:
    from datasets import HyperParameters

BATCH_NORM_PARAMETERS = ("bn_scale", "bn_shift")
VALIDATION_EVERY = 100  # iterations
# Devices where each semi-binary threshold comes from torch.quantile per tensor: a selection
# that costs a CPU less than one sort of every tensor's scores. Elsewhere (GPUs) one sort
# gives them all in a few kernels. The same bits either way.
QUANTILE_PER_TENSOR_ON = {"cpu"}


class HyperMask(nn.Module):
    """A target network θ and a hypernetwork that masks it, one embedding per task.

    The masked tensors (all but batch norm's) are handled as one flat vector, in
    hypernetwork output order: the mask, θ ⊙ m and the drift term are a few
    operations over [n_outputs], not a loop over tensors; the target network gets
    views of the flat θ ⊙ m.
    """

    def __init__(self, target: nn.Module, hnet: nn.Module):
        super().__init__()
        self.target = target
        self.hnet = hnet
        # Every tensor but batch norm's is masked (and produced by the hnet).
        self.maskable = maskable_indices(target)
        self.shapes = [torch.Size(target.param_shapes[i]) for i in self.maskable]
        self.numels = [shape.numel() for shape in self.shapes]
        if len(self.shapes[-1]) != 1:  # masked_weights passes the last tensor unmasked
            raise ValueError(f"the target network's last tensor is {tuple(self.shapes[-1])}, "
                             "not the output bias, which HyperMask leaves unmasked")
        # Where each pruned tensor (every masked one but the last) lies in the flat
        # output, on the model's device: a captured step cannot copy it there. Not saved.
        for name, value in pruned_segments(self.numels[:-1])._asdict().items():
            if isinstance(value, torch.Tensor):
                self.register_buffer(f"pruned_{name}", value, persistent=False)

    @property
    def maskable_params(self) -> list[torch.Tensor]:
        """θ_l for every masked tensor, in hypernetwork output order."""
        return [self.target.internal_params[i] for i in self.maskable]

    def flat_params(self) -> torch.Tensor:
        """θ of the masked tensors as one vector, in hypernetwork output order: [n_outputs]."""
        return torch.cat([p.flatten() for p in self.maskable_params])

    def unflatten(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Views of a flat [n_outputs] vector shaped like the masked tensors."""
        return [piece.view(shape) for piece, shape in zip(flat.split(self.numels), self.shapes)]

    def hnet_outputs(self, task_ids: list[int]) -> torch.Tensor:
        """Raw hypernetwork outputs, one row per task: [len(task_ids), n_outputs].

        On a CPU a large output layer is computed with its rows shared among the cores
        (output_layer.py); elsewhere as hypnettorch computes it."""
        if output_layer.applies(self.hnet):
            return output_layer.hmlp_outputs(self.hnet, task_ids)
        return self.hnet(cond_id=task_ids, ret_format="flattened")

    def mask(self, hnet_output: torch.Tensor, sparsity: float | torch.Tensor) -> torch.Tensor:
        """The semi-binary mask from one task's flat hypernetwork output: [n_outputs]."""
        segments = Segments(tuple(self.numels[:-1]), self.pruned_ids, self.pruned_starts,
                            self.pruned_sizes)
        return semi_binary_mask(hnet_output, sparsity, segments)

    def masks(self, hnet_output: torch.Tensor, sparsity: float) -> list[torch.Tensor]:
        """The semi-binary mask as one tensor per masked tensor (views of the flat mask)."""
        return self.unflatten(self.mask(hnet_output, sparsity))

    def masked_weights(self, mask: torch.Tensor,
                       params: torch.Tensor | None = None) -> list[torch.Tensor]:
        """θ ⊙ m for every masked tensor; the output bias and batch norm pass unmasked.

        Args:
            mask: m, flat [n_outputs].
            params: θ as flat_params() gives it, for a caller that uses it too (one
                flat θ, so that its gradients add up in one operation).
        Returns:
            the target network's weights, one tensor per parameter tensor.
        """
        params = self.flat_params() if params is None else params
        weights = list(self.target.internal_params)
        for i, weight in zip(self.maskable[:-1], self.unflatten(params * mask)[:-1]):
            weights[i] = weight
        return weights

    def task_weights(self, task_id: int, sparsity: float) -> list[torch.Tensor]:
        """The target network's weights for task `task_id`: θ ⊙ m_t."""
        return self.masked_weights(self.mask(self.hnet_outputs([task_id])[0], sparsity))

    def forward(self, x: torch.Tensor, task_id: int, sparsity: float) -> torch.Tensor:
        """Logits of task `task_id`'s masked network for a batch x."""
        return self.target(x, weights=self.task_weights(task_id, sparsity))


class Segments(NamedTuple):
    """The tensors of a flat vector that are pruned: their sizes, and the same as tensors
    on the vector's device (a captured step cannot copy them there)."""

    lengths: tuple[int, ...]  # each tensor's number of entries
    ids: torch.Tensor  # [n_pruned] int64: the tensor each entry belongs to
    starts: torch.Tensor  # [L] int64: where each tensor starts
    sizes: torch.Tensor  # [L] int64: its number of entries


def pruned_segments(sizes: list[int], device: torch.device | None = None) -> Segments:
    """Segments for consecutive tensors of `sizes` entries at the start of a flat vector."""
    sizes_tensor = torch.tensor(sizes, dtype=torch.int64, device=device)
    ids = torch.repeat_interleave(torch.arange(len(sizes), device=device), sizes_tensor)
    return Segments(tuple(sizes), ids, sizes_tensor.cumsum(0) - sizes_tensor, sizes_tensor)


def semi_binary_mask(hnet_output: torch.Tensor, sparsity: float | torch.Tensor,
                     pruned: Segments) -> torch.Tensor:
    """The semi-binary mask (docs/method.md) over a flat vector of hypernetwork outputs.

    m_l = r_l where r_l >= the p-th percentile of r_l, else 0, with
    r_l = |tanh(h_l)|; the last tensor is never pruned. Gradients flow
    through tanh and abs into the kept entries. Every threshold is
    torch.quantile's (linear interpolation) for its tensor: on a CPU that very
    call; elsewhere segment_quantiles, within a few float32 ulps of it.

    Args:
        hnet_output: raw hypernetwork outputs h, flat: [n_outputs], float32.
        sparsity: p, the percentage of each tensor's entries removed (0..100); a
            0-dim float64 tensor for a captured step (no branch on its value, no
            host sync), which gives the very same mask as the Python number.
        pruned: where the pruned tensors (all but the last) lie in the vector.
    Returns:
        m: [n_outputs].
    """
    r = torch.tanh(hnet_output).abs()
    if not pruned.lengths or not isinstance(sparsity, torch.Tensor) and sparsity <= 0:
        return r
    q = sparsity / 100  # rounded to r's precision once, as quantile does a number
    q = q.to(r.dtype) if isinstance(q, torch.Tensor) else q
    head, last = r.split([len(pruned.ids), len(r) - len(pruned.ids)])
    if r.device.type in QUANTILE_PER_TENSOR_ON:
        threshold = torch.stack([torch.quantile(v, q) for v in head.split(pruned.lengths)])
    else:
        threshold = segment_quantiles(head, q, pruned)  # [L]
    return torch.cat([torch.where(head >= threshold.index_select(0, pruned.ids), head, 0), last])


def segment_quantiles(values: torch.Tensor, q: float | torch.Tensor,
                      segments: Segments) -> torch.Tensor:
    """torch.quantile(values of each segment, q) for every segment, from one sort.

    Quantile's linear interpolation: position q·(n − 1) in the sorted segment
    (computed in the values' precision), the two entries around it mixed by
    torch.lerp; a segment holding a NaN gets NaN. torch.quantile on a CPU
    rounds that mix its own way: a threshold may differ from it by a few float32
    ulps (tests/test_masks.py), which moves no mask entry unless the two sorted
    scores around the threshold lie that close.

    Args:
        values: [n], float32 and >= 0 (|tanh| scores), segments back to back.
        q: the quantile in [0, 1]: a number or a 0-dim tensor of the values' dtype.
    Returns:
        [L], one threshold per segment.
    """
    if values.dtype != torch.float32:
        raise TypeError(f"semi-binary masks are computed in float32, not {values.dtype}")
    # A float >= 0 orders like its bits as an integer (NaN after +inf, as sort puts it):
    # keys (segment, bits) sort every segment at once, each in its own range.
    keys = values.view(torch.int32).to(torch.int64) + (segments.ids << 32)
    ordered = keys.sort(stable=True).values  # stable: on a CPU, a radix sort (far faster)
    ranks = (segments.sizes - 1).to(values.dtype) * q  # [L]
    below = ranks.to(torch.int64)  # floor: ranks >= 0
    above = ranks.ceil().to(torch.int64)
    positions = segments.starts + torch.stack([below, above, segments.sizes - 1])  # [3, L]
    low, high, largest = (ordered[positions] & 0xFFFFFFFF).to(torch.int32).view(values.dtype)
    threshold = low.lerp(high, ranks - below)
    return torch.where(largest.isnan(), largest, threshold)


def current_sparsity(config: HyperParameters, task_id: int, iteration: int,
                     num_iterations: int) -> float:
    """p for this training iteration: ramped linearly over the first task only."""
    if config.adaptive_sparsity and task_id == 0:
        return config.sparsity * (iteration + 1) / num_iterations
    return config.sparsity


def build_model(config: HyperParameters, input_shape: tuple[int, ...],
                num_outputs: int) -> HyperMask:
    """The target network and its hypernetwork, freshly initialised (docs/method.md#networks).

    Args:
        input_shape: (features,) for the MLP, (H, W, C) for the conv nets.
        num_outputs: the size of the (shared) output layer.
    """
    check_network_input(config.target_network, input_shape)
    target = build_target_network(config.target_network, input_shape, num_outputs,
                                  config.target_hidden_layers)
    shapes = [target.param_shapes[i] for i in maskable_indices(target)]
    weights = sum(math.prod(shape) for shape in shapes)
    if config.chunk_size is not None and config.chunk_size > weights:
        raise UserError(f"chunk_size {config.chunk_size} exceeds the {weights:,} weights the "
                        "hypernetwork produces for this target network: set it to at most "
                        "that, or to None (no chunks)")
    common = dict(uncond_in_size=0, cond_in_size=config.embedding_size,
                  layers=config.hnet_hidden_layers, activation_fn=nn.ELU(),
                  num_cond_embs=config.number_of_tasks, verbose=False)
    if config.chunk_size is None:
        hnet = HMLP(shapes, **common)
    else:
        hnet = ChunkedHMLP(shapes, chunk_size=config.chunk_size,
                           chunk_emb_size=config.chunk_embedding_size, **common)
    return HyperMask(target, hnet)


# The images each convolutional target network takes, (H, W, C); None: colour images of any size.
NETWORK_INPUTS = {"ResNet-20": None, "ZenkeNet": (32, 32, 3), "ZenkeNet-tiny": (64, 64, 3)}


def check_network_input(name: str, input_shape: tuple[int, ...]) -> None:
    """A one-line error where the target network cannot take the dataset's inputs."""
    def fits(network: str) -> bool:
        need = NETWORK_INPUTS.get(network)
        return network == "MLP" or (len(input_shape) == 3 and input_shape[2] == 3
                                    and need in (None, tuple(input_shape)))

    if not fits(name):
        usable = [network for network in ("MLP", *NETWORK_INPUTS) if fits(network)]
        raise UserError(f"target_network {name} cannot take this dataset's inputs of shape "
                        f"{list(input_shape)}: use {' or '.join(usable)}")


def build_target_network(name: str, input_shape: tuple[int, ...], num_outputs: int,
                         hidden_layers: tuple[int, ...] = ()) -> nn.Module:
    """A hypnettorch target network with its own weights (docs/method.md#networks,
    docs/hypnettorch.md)."""
    if name == "MLP":
        return MLP(n_in=math.prod(input_shape), n_out=num_outputs, hidden_layers=hidden_layers,
                   activation_fn=nn.ReLU(), use_bias=True, verbose=False)
    if name == "ResNet-20":
        # Batch norm always normalises with the batch's own statistics.
        net = ResNet(in_shape=input_shape, num_classes=num_outputs, n=3, k=2,
                     use_batch_norm=True, bn_track_stats=False, use_bias=True, verbose=False)
        for layer in net.batchnorm_layers:
            layer.__class__ = BatchStatisticsNorm
        return net
    if name == "ZenkeNet":
        net = ZenkeNet(in_shape=input_shape, num_classes=num_outputs, arch="cifar",
                       dropout_rate=0.25, verbose=False)
        # ZenkeNet edits a class-level shape list in place: give this instance its own.
        net._param_shapes = copy.deepcopy(net._param_shapes)
        return net
    if name == "ZenkeNet-tiny":
        return TinyZenkeNet(num_classes=num_outputs)
    raise ValueError(f"unknown target network {name!r}")


class BatchStatisticsNorm(BatchNormLayer):
    """hypnettorch's batch-norm layer for layers that never store statistics.

    hypnettorch keeps the number of stored statistics in a tensor buffer and
    tests `num_stats > 1` in every forward: on a GPU, a host synchronisation
    per layer (19 per ResNet-20 forward). Our layers store none
    (bn_track_stats=False), so the count is the plain number 0 here; the
    buffer stays, so state_dict keys and outputs are unchanged.
    """

    num_stats = 0  # shadows the base class's property, which returns the buffer


def maskable_indices(target: nn.Module) -> list[int]:
    """Indices of the target's parameter tensors that are masked: all but batch norm's."""
    try:
        meta = target.param_shapes_meta
    except NotImplementedError:  # hypnettorch's ZenkeNet has no metadata and no batch norm
        return list(range(len(target.param_shapes)))
    return [i for i, m in enumerate(meta) if m["name"] not in BATCH_NORM_PARAMETERS]


class TinyZenkeNet(nn.Module, MainNetInterface):
    """ZenkeNet for 64x64 RGB input (Tiny ImageNet), docs/method.md#networks.

    Four 3x3 convolutions with 64 channels (SAME, VALID, max-pool 2, SAME,
    VALID, max-pool 2; ReLU after each, Dropout2d(0.25) after each pooling),
    then one fully connected layer 14*14*64 = 12544 -> num_classes. Input is
    NHWC, flat or not, like hypnettorch's ZenkeNet.
    """

    def __init__(self, num_classes: int = 5, dropout_rate: float = 0.25):
        nn.Module.__init__(self)
        MainNetInterface.__init__(self)
        shapes = [[64, 3, 3, 3], [64], [64, 64, 3, 3], [64], [64, 64, 3, 3], [64],
                  [64, 64, 3, 3], [64], [num_classes, 12544], [num_classes]]
        self._param_shapes = shapes
        self._param_shapes_meta = [{"name": "weight" if i % 2 == 0 else "bias", "index": i,
                                    "layer": i // 2} for i in range(len(shapes))]
        self._internal_params = nn.ParameterList(
            [nn.Parameter(torch.empty(*shape)) for shape in shapes])
        self._layer_weight_tensors = nn.ParameterList(self._internal_params[0::2])
        self._layer_bias_vectors = nn.ParameterList(self._internal_params[1::2])
        for weight, bias in zip(self._layer_weight_tensors, self._layer_bias_vectors):
            init_params(weight, bias)  # hypnettorch's default, as in its ZenkeNet
        self._has_bias = self._has_fc_out = self._mask_fc_out = self._has_linear_out = True
        self._dropout = nn.Dropout2d(p=dropout_rate)
        self._is_properly_setup()

    def forward(self, x, weights=None, distilled_params=None, condition=None):
        """Logits [B, num_classes] for images x ([B, 64*64*3] or [B, 64, 64, 3], NHWC)."""
        w = self.internal_params if weights is None else weights
        h = x.view(-1, 64, 64, 3).permute(0, 3, 1, 2)
        for first in (0, 4):  # two blocks: 64 -> 64 -> 62 -> 31, 31 -> 31 -> 29 -> 14
            h = F.relu(F.conv2d(h, w[first], w[first + 1], padding=1))
            h = F.relu(F.conv2d(h, w[first + 2], w[first + 3]))
            h = self._dropout(F.max_pool2d(h, 2))
        return F.linear(h.flatten(1), w[8], w[9])

    def distillation_targets(self):
        return None


# ------------------------------------------------------------------- training


@dataclass
class TaskStart:
    """What the regularisers compare against, fixed when task t starts."""

    hnet_targets: torch.Tensor  # h*_j for j < t, detached: [t, n_outputs]
    start_params: torch.Tensor  # θ^start, flat over the masked tensors: [n_outputs]


def task_start(model: HyperMask, task_id: int) -> TaskStart:
    """Snapshot the earlier tasks' hypernetwork outputs and θ before task `task_id`."""
    with torch.no_grad():
        targets = model.hnet_outputs(list(range(task_id))) if task_id > 0 else None
        return TaskStart(targets, model.flat_params())


def training_loss(model: HyperMask, x: torch.Tensor, y: torch.Tensor, *, task_id: int,
                  num_classes: int, sparsity: float | torch.Tensor, start: TaskStart,
                  config: HyperParameters) -> dict[str, torch.Tensor]:
    """The HyperMask loss on one batch (docs/method.md#the-loss-and-its-optimisation).

    Args:
        x, y: network input [B, ...] and labels [B].
        task_id: t, counted from 0.
        num_classes: the task's outputs (the first `num_classes` logits).
        sparsity: p for this iteration.
        start: the regularisers' reference points for this task.
    Returns:
        loss, task_loss, hnet_term (β·R_hnet/t, zero at t = 0), target_term
        (λ·R_target).
    """
    # The current task's and every earlier task's outputs in one call: [t + 1, n_outputs].
    # One split (its backward is one concatenation), not two views whose
    # backward passes each fill a zero tensor of the full [t + 1, n_outputs].
    previous, current = model.hnet_outputs(list(range(task_id + 1))).split([task_id, 1])
    mask = model.mask(current[0], sparsity)  # m_t, flat over θ's masked tensors
    params = model.flat_params()  # θ, flat like the mask
    logits = model.target(x, weights=model.masked_weights(mask, params))
    task_loss = F.cross_entropy(logits[:, :num_classes], y)
    hnet_term = target_term = torch.zeros((), device=x.device)
    if task_id > 0:
        # R_hnet = (1/t)·Σ_j ‖hnet(e_j) − h*_j‖², the squares and their gradient each in
        # one pass.
        hnet_reg = F.mse_loss(previous, start.hnet_targets, reduction="sum") / task_id
        drift = params - start.start_params  # θ − θ^start
        if config.norm_regularizer_masking:
            drift = drift * mask
        target_reg = drift.abs().sum()
        hnet_term = config.beta * hnet_reg / task_id  # the reference divides twice: β/t²
        target_term = config.lam * target_reg
    loss = task_loss + hnet_term + target_term
    return dict(loss=loss, task_loss=task_loss, hnet_term=hnet_term, target_term=target_term)


def make_optimizer(model: HyperMask, config: HyperParameters, *,
                   capturable: bool = False) -> torch.optim.Optimizer:
    """A fresh optimiser over hypernetwork and target parameters (one per task).

    Args:
        capturable: its step may be captured in a CUDA graph (CUDA only).
    """
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(model.parameters(), lr=config.learning_rate,
                                   capturable=capturable)
    # The fused kernel is the same algorithm, several times faster on CPU and GPU.
    return torch.optim.Adam(model.parameters(), lr=config.learning_rate, fused=True,
                            capturable=capturable)


def eager_step(model: HyperMask, optimizer: torch.optim.Optimizer, start: TaskStart, *,
               task_id: int, num_classes: int,
               config: HyperParameters) -> Callable[..., dict[str, torch.Tensor]]:
    """One training step of task `task_id`: step(x, y, sparsity) -> training_loss's terms.

    The loss on the batch, its gradients, and the optimiser's update. A step
    maker with this signature (capture.graphed_step) may replay the same work
    from a CUDA graph.
    """
    def step(x: torch.Tensor, y: torch.Tensor,
             sparsity: float | torch.Tensor) -> dict[str, torch.Tensor]:
        terms = training_loss(model, x, y, task_id=task_id, num_classes=num_classes,
                              sparsity=sparsity, start=start, config=config)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()
        # values only: a loss kept with its autograd graph would keep the step's graph
        # (and its AccumulateGrad nodes, tied to the stream that made them) alive
        return {name: value.detach() for name, value in terms.items()}

    return step


class Diverged(Exception):
    """A task's loss became NaN or infinite: the run's weights are no longer numbers."""


@dataclass
class TrainingState:
    """A task's training in progress: everything needed to continue it exactly.

    `state_dict()` holds tensors and plain containers only (a weights_only
    checkpoint); `train_task(..., resume=state_dict)` continues from it, and
    with the networks and random generators restored as they were, repeats the
    uninterrupted run bit for bit (on a CPU).
    """

    iteration: int  # iterations done
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau | None
    start: TaskStart
    batches: TrainingBatches
    log: list[dict]  # a row per validation so far
    best_accuracy: float = -1.0  # model_selection "best_val": the best validation so far
    best_state: dict | None = None  # ... and the networks that reached it
    seconds: float = 0.0  # training time of this task in earlier processes
    # state_dict's keys, all of which training_state reads back (a checkpoint's check)
    SAVED = ("iteration", "optimizer", "scheduler", "hnet_targets", "start_params", "batches",
             "log", "best_accuracy", "best_state", "seconds")

    def state_dict(self) -> dict:
        return {"iteration": self.iteration, "optimizer": self.optimizer.state_dict(),
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                "hnet_targets": self.start.hnet_targets, "start_params": self.start.start_params,
                "batches": self.batches.state_dict(), "log": self.log,
                "best_accuracy": self.best_accuracy, "best_state": self.best_state,
                "seconds": self.seconds}


def training_state(model: HyperMask, task: Task, task_id: int, config: HyperParameters,
                   resume: dict | None = None, *, capturable: bool = False) -> TrainingState:
    """A task's training state: fresh at the task's start, or `resume` (a state_dict)."""
    optimizer = make_optimizer(model, config, capturable=capturable)
    scheduler = (torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=math.sqrt(0.1), patience=5, min_lr=5e-7)
        if config.lr_scheduler else None)
    if resume is None:
        return TrainingState(0, optimizer, scheduler, task_start(model, task_id),
                             TrainingBatches(task, config.batch_size), [])
    device = task.train_y.device
    # the saved groups carry `capturable` too: this step's kind decides it (a run stopped
    # with eager steps may resume captured on a GPU, and the other way round)
    saved = resume["optimizer"]
    optimizer.load_state_dict({**saved, "param_groups": [
        {**group, "capturable": capturable} for group in saved["param_groups"]]})
    if scheduler is not None:
        scheduler.load_state_dict(resume["scheduler"])
    targets, params = resume["hnet_targets"], resume["start_params"]
    if isinstance(params, list):  # saved before θ^start was flat: one tensor per masked tensor
        params = torch.cat([p.flatten() for p in params])
    start = TaskStart(None if targets is None else targets.to(device), params.to(device))
    return TrainingState(resume["iteration"], optimizer, scheduler, start,
                         TrainingBatches(task, config.batch_size, resume["batches"]),
                         resume["log"], resume["best_accuracy"], resume["best_state"],
                         resume["seconds"])


def task_iterations(task: Task, config: HyperParameters) -> int:
    """The training iterations of one task: number_of_iterations, or its epochs' batches."""
    if not config.number_of_epochs:
        return config.number_of_iterations
    return config.number_of_epochs * math.ceil(len(task.train_y) / config.batch_size)


def train_task(model: HyperMask, task: Task, task_id: int, config: HyperParameters, *,
               resume: dict | None = None,
               after_step: Callable[[TrainingState], None] | None = None,
               make_step: Callable = eager_step) -> list[dict]:
    """Train task `task_id`; return the training log (a row per validation).

    Validation runs after iterations 0, VALIDATION_EVERY, 2 * VALIDATION_EVERY,
    ..., after the last one and (epoch-based runs) at each epoch end, with
    the target sparsity p (as the reference, whose iteration counter
    starts at 0). With model_selection "best_val" the networks with the highest
    validation accuracy are kept. A loss that is not finite at a validation
    raises Diverged, before the networks are used for anything else.
    `config.published_regime` keeps two of the reference's defects (defects 3 and 5
    in docs/differences.md): validation uses this iteration's (ramped) sparsity, and leaves the
    networks in eval mode, so dropout is off for the rest of the task.

    Args:
        resume: a TrainingState.state_dict() of this task, to continue from.
        after_step: called after every iteration with the training state (the
            caller shows progress and may save state.state_dict() there).
        make_step: eager_step, or a maker of the same step replayed from a CUDA
            graph (capture.graphed_step), which says so by its attribute
            `capturable = True`: the optimiser is made for capture.
    """
    per_epoch = math.ceil(len(task.train_y) / config.batch_size)
    num_iterations = task_iterations(task, config)
    state = training_state(model, task, task_id, config, resume,
                           capturable=getattr(make_step, "capturable", False))
    step = make_step(model, state.optimizer, state.start, task_id=task_id,
                     num_classes=task.num_classes, config=config)
    started = time.perf_counter() - state.seconds
    # the published regime: eval mode from the task's first validation on
    model.train(not (config.published_regime and state.log))
    for iteration in range(state.iteration, num_iterations):
        x, y = next(state.batches)
        sparsity = current_sparsity(config, task_id, iteration, num_iterations)
        terms = step(x, y, sparsity)

        state.iteration = iteration + 1
        state.seconds = time.perf_counter() - started
        epoch_end = config.number_of_epochs and (iteration + 1) % per_epoch == 0
        if iteration % VALIDATION_EVERY == 0 or iteration == num_iterations - 1 or epoch_end:
            validate(model, task, task_id, config, state, terms, sparsity=sparsity,
                     epoch_end=bool(epoch_end))
        if after_step is not None:
            after_step(state)
    if state.best_state is not None:
        model.load_state_dict(state.best_state)
    return state.log


def validate(model: HyperMask, task: Task, task_id: int, config: HyperParameters,
             state: TrainingState, terms: dict[str, torch.Tensor], *, sparsity: float,
             epoch_end: bool) -> None:
    """A validation during training: a log row, the best networks, the plateau scheduler."""
    row = {"task": task_id, "iteration": state.iteration,
           **{name: value.item() for name, value in terms.items()}}
    if not all(math.isfinite(row[name]) for name in terms):
        last = (f" (last finite loss {state.log[-1]['loss']:.4g} at iteration "
                f"{state.log[-1]['iteration']})" if state.log else "")
        raise Diverged(f"task {task_id + 1}, iteration {state.iteration}: the loss is "
                       f"{row['loss']}{last}")
    # the fixed regime validates at p, the published one at the ramped p of this step
    validation_sparsity = sparsity if config.published_regime else config.sparsity
    accuracy = evaluate(model, task, task_id, sparsity=validation_sparsity, split="val",
                        batch_size=config.evaluation_batch_size)
    if config.published_regime:
        model.eval()
    state.log.append(row | {"sparsity": sparsity, "validation_sparsity": validation_sparsity,
                            "learning_rate": state.optimizer.param_groups[0]["lr"],
                            "validation_accuracy": accuracy,
                            "seconds": round(state.seconds, 3)})
    if config.model_selection == "best_val" and accuracy > state.best_accuracy:
        state.best_accuracy, state.best_state = accuracy, copy.deepcopy(model.state_dict())
    if state.scheduler is not None and epoch_end:
        state.scheduler.step(accuracy)


@torch.no_grad()
def evaluate(model: HyperMask, task: Task, task_id: int, *, sparsity: float,
             split: str = "test", batch_size: int | None = None) -> float:
    """Accuracy in percent on one split of `task`'s data of task `task_id`'s masked network
    (its embedding and mask): the data's own task but for forward transfer, which
    evaluates the next task's data under the current task's network.

    The whole split goes through as one batch unless `batch_size` is given
    (batch-statistics networks then give slightly different numbers).
    """
    x_all, y_all = getattr(task, f"{split}_x"), getattr(task, f"{split}_y")
    correct = 0
    with evaluation_mode(model):
        scores = model.hnet_outputs([task_id])[0]
        # A NaN score falls below every threshold, so its mask entry is 0: a NaN
        # hypernetwork still gives finite weights and a plausible accuracy.
        scores_finite = torch.isfinite(scores).all()
        weights = model.masked_weights(model.mask(scores, sparsity))
        finite = scores_finite
        for x, y in evaluation_batches(x_all, y_all, batch_size):
            logits = model.target(task.transform(x, False), weights=weights)
            finite = finite & torch.isfinite(logits).all()  # on the device: one sync below
            correct += (logits[:, :task.num_classes].argmax(1) == y).sum()
    if not finite:  # finite weights can still overflow: argmax over NaN is no accuracy
        if not scores_finite:
            raise Diverged(f"task {task_id + 1}'s hypernetwork gives NaN or infinite outputs")
        raise Diverged(f"task {task_id + 1}'s network gives NaN or infinite outputs on the "
                       f"{split} images it was evaluated on")
    return 100.0 * correct.item() / len(y_all)


def evaluation_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int | None):
    """(images, labels) of a stored split: all in one batch (None), else in chunks of
    batch_size, in stored order."""
    size = batch_size or len(y)
    return zip(x.split(size), y.split(size))


@contextlib.contextmanager
def evaluation_mode(model: nn.Module):
    """Eval mode inside the block, the previous mode restored after: training goes on with
    dropout, which the reference leaves off after its first validation
    (docs/differences.md, defect 3)."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)

