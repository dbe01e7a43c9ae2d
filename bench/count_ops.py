"""The kernel operations of one training step, per best configuration, at its first and last task.

On a GPU a captured step replays one kernel per operation; at a few microseconds
per small kernel their number, not their arithmetic, sets the pace of the
image benchmarks' steps. This counts them on the CPU: a TorchDispatchMode sees
every ATen operation of one step (hypermask.eager_step: the loss, its backward
pass, the fused Adam update), as a CUDA graph would record them, and as a GPU
runs it: the semi-binary thresholds from one sort (see
hypermask.QUANTILE_PER_TENSOR_ON) and the hypernetwork's output layer unshared
(output_layer.SHARED_ON). Views (split,
view, transpose, detach, ...) only relabel memory and allocations (empty, ...)
only reserve it: they launch nothing and are counted apart. The batch transform
runs before the step, outside the count (a captured step copies the finished
batch in).

The networks have their real sizes, the data is random (the operations do not
depend on the pixels). One warm-up step first: Adam creates its state there.

    python bench/count_ops.py [--only=CIFAR100:0,...] [--top=15] [--small]

--small shrinks every hidden layer of the hypernetwork and the MLP target to 8
units and the batch to 4 images, so that the paper-scale Permuted MNIST (a
206M-parameter hypernetwork, 100 tasks in part 1) counts in seconds; the
operations are the same, since none of them exists or not by a layer's width
or the batch size.
"""

import argparse
import collections
import contextlib
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# bench/ is on sys.path when run
from train_step import chosen_benchmarks, example_batch  # noqa: E402


# Operations that allocate memory and launch no kernel.
ALLOCATIONS = {"aten.empty", "aten.empty_like", "aten.empty_strided", "aten.new_empty",
               "aten.new_empty_strided"}


def counting_mode():
    """A TorchDispatchMode counting the ATen operations that run inside it, those that
    launch no kernel (views, allocations) apart."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class KernelOps(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.kernels = collections.Counter()
            self.others = collections.Counter()  # views and allocations

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = str(func.overloadpacket)
            if func.namespace != "profiler":  # record_function marks: no kernel
                launches = not func.is_view and name not in ALLOCATIONS
                (self.kernels if launches else self.others)[name] += 1
            return func(*args, **(kwargs or {}))

    return KernelOps()


@contextlib.contextmanager
def as_on_a_gpu():
    """hypermask computes the semi-binary thresholds from one sort, and the
    hypernetwork's output layer in one GEMM, as on a GPU (a CPU takes torch.quantile
    per tensor and shares a large output layer among its cores, in threads that a
    dispatch mode would not see)."""
    import hypermask
    import output_layer

    switches = [hypermask.QUANTILE_PER_TENSOR_ON, output_layer.SHARED_ON]
    on = ["cpu" in devices for devices in switches]
    for devices in switches:
        devices.discard("cpu")
    try:
        yield
    finally:
        for devices, was_on in zip(switches, on):
            if was_on:
                devices.add("cpu")


def count_step(dataset: str, part: int, task_id: int, small: bool = False):
    """The operations of one eager step of task `task_id` (counted from 0).

    Returns:
        (kernels, others): collections.Counter of operation name -> calls, for the
        operations that launch a kernel and for the others (views, allocations).
    """
    import torch

    import datasets
    import hypermask

    config = datasets.get_benchmark(dataset, part).best
    if small:
        config = dataclasses.replace(
            config, hnet_hidden_layers=tuple(8 for _ in config.hnet_hidden_layers),
            target_hidden_layers=tuple(8 for _ in config.target_hidden_layers), batch_size=4)
    torch.manual_seed(0)
    inputs, shape, classes = example_batch(dataset, config, "cpu")
    model = hypermask.build_model(config, shape, classes)
    optimizer = hypermask.make_optimizer(model, config)
    start = hypermask.task_start(model, task_id)
    step = hypermask.eager_step(model, optimizer, start, task_id=task_id, num_classes=classes,
                                config=config)
    x, y = inputs(), torch.randint(0, classes, (config.batch_size,))
    with as_on_a_gpu():
        step(x, y, config.sparsity)  # Adam's state is created in the first step
        with counting_mode() as mode:
            step(x, y, config.sparsity)
    return mode.kernels, mode.others


def main() -> None:
    import datasets

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="DATASET:PART,... instead of every best configuration "
                                       "(DATASET alone: all its parts)")
    parser.add_argument("--top", type=int, default=0,
                        help="also list each step's most frequent kernel operations")
    parser.add_argument("--small", action="store_true",
                        help="8-unit hidden layers, batches of 4 (the same operations, faster)")
    args = parser.parse_args()
    benchmarks = chosen_benchmarks(parser, args.only, [
        (d, p) for (d, p), b in datasets.BENCHMARKS.items() if b.best is not None])
    print(f"{'benchmark':<26}{'target':<15}{'task':>5}{'kernel ops':>12}{'views etc.':>12}")
    for dataset, part in benchmarks:
        config = datasets.get_benchmark(dataset, part).best
        for task_id in sorted({0, config.number_of_tasks - 1}):
            kernels, others = count_step(dataset, part, task_id, args.small)
            print(f"{dataset + ' ' + str(part):<26}{config.target_network:<15}{task_id + 1:>5}"
                  f"{sum(kernels.values()):>12}{sum(others.values()):>12}", flush=True)
            for name, calls in kernels.most_common(args.top):
                print(f"{'':<8}{calls:>5}  {name}")


if __name__ == "__main__":
    main()
