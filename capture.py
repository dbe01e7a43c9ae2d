"""The training step replayed from a CUDA graph: the same work, without Python per kernel.

On a GPU most of this project's steps are bound by kernel launches, not by
arithmetic (a ResNet-20 step on 32 images is a few GFLOP in a few hundred
kernels). `graphed_step` makes the same step as hypermask.eager_step (loss,
backward, optimiser update), records it once into a CUDA graph and then
replays it: one launch per step instead of hundreds, and no host
synchronisation inside.

What the graph cannot hold runs as before: building the batch (its indices are
drawn on the device), validation, the scheduler. What changes between steps
goes in through fixed tensors: the batch, and the sparsity while it ramps over
the first task. The learning rate is a number inside the graph, so the graph is
recorded again when the plateau scheduler lowers it (a few times per task); the
last, smaller batch of an epoch runs eagerly.

    python main.py --device=cuda                 # captured steps (cuda_graphs=True)
    python main.py --device=cuda --cuda_graphs=False   # eager steps
"""

from __future__ import annotations

from typing import Callable

import torch

import hypermask

WARMUP_STEPS = 3  # eager steps on a side stream before recording (lazy state, cuBLAS handles)


class GraphedStep:
    """step(x, y, sparsity) of hypermask.eager_step, replayed from a CUDA graph.

    The first WARMUP_STEPS calls of a task run eagerly on a side stream (they
    are real training steps); the next full batch records the graph and replays
    it. The graph is recorded again when the learning rate changed; a smaller
    batch (an epoch's last) runs eagerly.
    """

    def __init__(self, model, optimizer, start, *, task_id: int, num_classes: int, config):
        self.optimizer = optimizer
        self.eager = hypermask.eager_step(model, optimizer, start, task_id=task_id,
                                          num_classes=num_classes, config=config)
        self.prunes = config.sparsity > 0  # else masks never look at the sparsity
        self.batch_size = config.batch_size  # the graph's; never recorded on a smaller batch
        self.stream = None  # the warm-up's side stream
        self.graph = self.x = self.y = self.terms = self.lr = None
        self.sparsity = None
        self.done = 0

    def __call__(self, x: torch.Tensor, y: torch.Tensor, sparsity: float) -> dict:
        if self.done < WARMUP_STEPS:
            self.done += 1
            return self.side_stream(lambda: self.eager(x, y, sparsity))
        if len(x) != self.batch_size:
            return self.eager(x, y, sparsity)  # an epoch's last, smaller batch
        if self.graph is None or self.optimizer.param_groups[0]["lr"] != self.lr:
            self.record(x, y)
        self.x.copy_(x)
        self.y.copy_(y)
        if self.prunes:
            self.sparsity.fill_(sparsity)
        self.graph.replay()
        return self.terms

    def record(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Record one step into a fresh graph, on fixed input tensors (nothing runs)."""
        if self.x is None:
            self.x, self.y = x.clone(), y.clone()
            self.sparsity = torch.zeros((), dtype=torch.float64, device=x.device)
        self.graph = torch.cuda.CUDAGraph()
        self.lr = self.optimizer.param_groups[0]["lr"]
        with torch.cuda.graph(self.graph):
            self.terms = self.eager(self.x, self.y, self.sparsity if self.prunes else 0.0)

    def side_stream(self, work: Callable):
        self.stream = self.stream or torch.cuda.Stream()
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            result = work()
        torch.cuda.current_stream().wait_stream(self.stream)
        return result


def graphed_step(model, optimizer, start, *, task_id: int, num_classes: int,
                 config) -> Callable[..., dict]:
    """hypermask.eager_step's step, replayed from a CUDA graph (a step maker for train_task)."""
    return GraphedStep(model, optimizer, start, task_id=task_id, num_classes=num_classes,
                       config=config)


graphed_step.capturable = True  # its optimiser's step is captured too (hypermask.train_task)
