"""The hypernetwork's output layer on a CPU, its rows shared among the cores.

A step computes the hypernetwork's last layer, y = h·Wᵀ + b, for every task so
far at once: W is [n_outputs, hidden] (2.04M × 100 for Permuted MNIST's best
configuration), h is [rows, hidden] with one row per task. MKL runs GEMMs of
this shape on one core (one row), or on every core at a fraction of their speed
(a few rows), so on a CPU the layer's forward pass and both products of its
backward pass took about 70 % of a paper-scale step's time at task 10
(docs/performance.md#the-output-layer-across-the-cores).

Here each core takes a contiguous share of W's rows and walks it in blocks of
BLOCK_ROWS rows with one-threaded GEMMs: y's columns and ∂W's rows come from the
same products as before, added by another kernel, and ∂h is a sum over blocks of
partial products, so the last digits may differ from one GEMM's
(tests/test_output_layer.py holds them to float32 rounding).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F
from hypnettorch.hnets import HMLP
from torch.autograd.function import once_differentiable

# Rows of W per one-threaded GEMM: a block of ∂y's columns stays in cache while ∂W's
# block is written. Forward and backward of the Permuted MNIST layer with blocks of
# 1024, 4096 and 16384 rows: 190, 131, 121 ms at 1 row; 278, 242, 236 ms at 10 rows;
# 610, 584, 684 ms at 50 rows (bench/output_layer.py --block_rows=N, 2-core AMD EPYC).
BLOCK_ROWS = 4096
# Layers with fewer weights keep torch's own GEMM: handing out the shares does not pay
# there. Shared, Split MNIST's best (475,202 × 25 = 11.9M weights) took 20 % longer per
# step, Tiny ImageNet's ZenkeNet (17.5M) as long, CIFAR-100's ResNet-20 (106.8M) 15-20 %
# less at task 10 (bench/train_step.py, bench/image_step.py on the 2-core AMD EPYC).
# The demo's layers (1.4M and 2.2M) stay unshared too.
MIN_WEIGHTS = 1 << 24
# Device types whose large output layers are shared among the cores: CPUs (a GPU's
# GEMM fills the GPU by itself).
SHARED_ON = {"cpu"}

_workers: dict[tuple[int, int], ThreadPoolExecutor] = {}


def applies(hnet: torch.nn.Module) -> bool:
    """Whether this hypernetwork's output layer is computed across the CPU's cores:
    a plain HMLP (as build_model makes it) with a large output layer, on a CPU,
    with more than one thread."""
    if not (type(hnet) is HMLP and hnet.has_bias and not hnet._use_batch_norm
            and hnet._dropout_rate == -1 and hnet._uncond_in_size == 0):
        return False
    weight = hnet.layer_weight_tensors[-1]
    return (weight.device.type in SHARED_ON and weight.numel() >= MIN_WEIGHTS
            and torch.get_num_threads() > 1)


def hmlp_outputs(hnet: HMLP, task_ids: list[int]) -> torch.Tensor:
    """hnet(cond_id=task_ids, ret_format="flattened"), the output layer across the cores.

    HMLP's forward for a hypernetwork as build_model makes it: the task
    embeddings through the hidden layers (F.linear, then the activation), then
    the output layer. Returns [len(task_ids), n_outputs].
    """
    h = torch.stack([hnet.conditional_params[i] for i in task_ids])
    *hidden, (weight, bias) = zip(hnet.layer_weight_tensors, hnet.layer_bias_vectors)
    for hidden_weight, hidden_bias in hidden:
        h = hnet._act_fn(F.linear(h, hidden_weight, hidden_bias))
    return SharedLinear.apply(h, weight, bias)


class SharedLinear(torch.autograd.Function):
    """F.linear(h, weight, bias) with W's rows shared among the CPU's cores."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        y = h.new_empty(h.shape[0], weight.shape[0])

        def share(first: int, last: int) -> None:
            for start, end in blocks(first, last):
                torch.addmm(bias[start:end], h, weight[start:end].T, out=y[:, start:end])

        across_cores(weight.shape[0], share)
        ctx.save_for_backward(h, weight)
        return y

    @staticmethod
    @once_differentiable  # its products run without autograd: a second derivative raises
    def backward(ctx, grad_y: torch.Tensor):
        h, weight = ctx.saved_tensors
        grad_y = grad_y.contiguous()
        need_h, need_weight, need_bias = ctx.needs_input_grad
        grad_weight = torch.empty_like(weight) if need_weight else None

        def share(first: int, last: int) -> torch.Tensor | None:
            """∂W's rows of this share, and its part of ∂h (one pass over its blocks)."""
            grad_h = h.new_zeros(h.shape) if need_h else None
            for start, end in blocks(first, last):
                if need_h:
                    grad_h.addmm_(grad_y[:, start:end], weight[start:end])
                if need_weight:
                    torch.mm(grad_y[:, start:end].T, h, out=grad_weight[start:end])
            return grad_h

        parts = across_cores(weight.shape[0], share)
        grad_h = torch.stack(parts).sum(0) if need_h else None  # added in the shares' order
        grad_bias = grad_y.sum(0) if need_bias else None
        return grad_h, grad_weight, grad_bias


def blocks(first: int, last: int):
    """(start, end) of each block of BLOCK_ROWS rows in [first, last), in order."""
    return ((start, min(start + BLOCK_ROWS, last)) for start in range(first, last, BLOCK_ROWS))


def across_cores(rows: int, share) -> list:
    """share(first, last) for one contiguous share of [0, rows) per thread torch uses,
    each run one-threaded and without autograd (in inference mode if the caller is:
    autograd modes belong to a thread); their results in the shares' order."""
    threads = torch.get_num_threads()
    bounds = [rows * i // threads for i in range(threads + 1)]
    no_autograd = torch.inference_mode if torch.is_inference_mode_enabled() else torch.no_grad

    def run(i: int):
        with no_autograd():
            return share(bounds[i], bounds[i + 1])

    return list(workers(threads).map(run, range(threads)))


def workers(threads: int) -> ThreadPoolExecutor:
    """This process's pool of `threads` threads, each running torch one-threaded.

    torch.set_num_threads in a thread of its own sets that thread's OpenMP and MKL
    thread counts only; the calling thread keeps its own. A forked process makes
    its own pool (a parent's threads do not survive a fork).
    """
    key = (os.getpid(), threads)
    if key not in _workers:
        _workers[key] = ThreadPoolExecutor(threads, thread_name_prefix="output-layer",
                                           initializer=torch.set_num_threads, initargs=(1,))
    return _workers[key]
