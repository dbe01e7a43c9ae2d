"""The image networks' input layout: today's NHWC batch against an NCHW one, timed and compared.

hypnettorch's ResNet and ZenkeNet (and this project's TinyZenkeNet) take a flat
batch in NHWC order, view it as [B, H, W, C] and permute it to [B, C, H, W]:
the tensor the first convolution gets is channels-last in memory, so the
convolutions run in NHWC and the weights (NCHW-contiguous, masked anew every
step) are converted to that layout and their gradients back. A batch stored
NCHW and handed over as a [B, H, W, C] view (`nchw` below: the same values,
the networks' code unchanged) makes that permute a contiguous NCHW tensor, and
every convolution runs in NCHW.

For each image benchmark's best configuration this times the training step
with a fixed batch in either layout (on a GPU replayed from a CUDA graph; the
batch transform is not part of it: it ends with one copy of the batch in either
layout) and compares one step's loss and gradients from the same weights and
batch: they agree up to rounding (other convolution algorithms), the relative
differences are printed. Nothing here changes how runs feed their networks.

    python bench/input_layout.py [--device=cuda] [--steps=20] [--only=CIFAR100:0,...] [--task=1]

--small gives the hypernetwork one hidden layer of 8 units (the target network,
whose layout is compared, keeps its size): a CPU then steps in seconds.
"""

import argparse
import dataclasses
import math
import multiprocessing
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import timing  # noqa: E402  (bench/ is on sys.path when run)
from train_step import TIMINGS, chosen_benchmarks, step_setup  # noqa: E402

BENCHMARKS = [("CIFAR100", 0), ("CIFAR100", 1), ("TinyImageNet", 0), ("TinyImageNet", 1)]


def nchw(x, shape: tuple[int, int, int]):
    """A flat NHWC batch [B, H*W*C] as [B, H, W, C] values stored in NCHW order."""
    h, w, c = shape
    return x.view(-1, h, w, c).permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1)


def benchmark_config(dataset: str, part: int, small: bool):
    """The best configuration, with a small hypernetwork if `small`."""
    import datasets

    config = datasets.get_benchmark(dataset, part).best
    return dataclasses.replace(config, hnet_hidden_layers=(8,)) if small else config


def step_seconds(dataset: str, part: int, task_id: int, layout: str, device: str,
                 steps: int, small: bool = False) -> float:
    """Seconds per training step with the batch in `layout` ("NHWC" or "NCHW")."""
    import capture
    import hypermask

    captured = device.startswith("cuda")
    run = step_setup(dataset, part, task_id, device, captured,
                     benchmark_config(dataset, part, small))
    x = run.inputs()
    if layout == "NCHW":
        x = nchw(x, run.shape)
    step = (capture.graphed_step if captured else hypermask.eager_step)(
        run.model, run.optimizer, run.start, task_id=task_id, num_classes=run.classes,
        config=run.config)
    repeats = min(TIMINGS, steps)
    return timing.median_seconds(
        lambda: step(x, run.y, run.config.sparsity), device=device,
        warmup=2 + (capture.WARMUP_STEPS + 1 if captured else 0), repeats=repeats,
        number=math.ceil(steps / repeats))


def differences(dataset: str, part: int, task_id: int, device: str,
                small: bool = False) -> tuple[float, float]:
    """One step's loss and gradients from the same weights and batch in both layouts:
    (relative difference of the loss, ‖g_NCHW − g_NHWC‖ / ‖g_NHWC‖ over all gradients)."""
    import torch

    import hypermask

    results = []
    for layout in ("NHWC", "NCHW"):
        run = step_setup(dataset, part, task_id, device,  # seeded: the same weights
                         config=benchmark_config(dataset, part, small))
        x = run.inputs()
        if layout == "NCHW":
            x = nchw(x, run.shape)
        terms = hypermask.training_loss(run.model, x, run.y, task_id=task_id,
                                        num_classes=run.classes, sparsity=run.config.sparsity,
                                        start=run.start, config=run.config)
        terms["loss"].backward()
        gradients = torch.cat([p.grad.flatten() for p in run.model.parameters()
                               if p.grad is not None])
        results.append((terms["loss"].detach().double(), gradients.double()))
    (loss, grad), (other_loss, other_grad) = results
    return (float((other_loss - loss).abs() / loss.abs()),
            float((other_grad - grad).norm() / grad.norm()))


def measure_case(dataset: str, part: int, task_id: int, device: str, steps: int,
                 small: bool) -> tuple:
    """(NHWC s/step, NCHW s/step, loss difference, gradient difference)."""
    return (step_seconds(dataset, part, task_id, "NHWC", device, steps, small),
            step_seconds(dataset, part, task_id, "NCHW", device, steps, small),
            *differences(dataset, part, task_id, device, small))


def in_own_process(*arguments) -> tuple:
    """measure_case(*arguments): on a GPU in this process, on a CPU in a fresh one."""
    if arguments[3].startswith("cuda"):
        return measure_case(*arguments)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure_case, arguments)


def main() -> None:
    import datasets

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=timing.at_least(1), default=20)
    parser.add_argument("--only", help="DATASET:PART,... among the image benchmarks "
                                       "(DATASET alone: all its parts)")
    parser.add_argument("--task", type=timing.at_least(1),
                        help="task number from 1 (default: the last)")
    parser.add_argument("--small", action="store_true", help="an 8-unit hypernetwork")
    args = parser.parse_args()
    args.device = timing.usable_device(args.device)
    cases = chosen_benchmarks(parser, args.only, BENCHMARKS)
    fewest = min(datasets.get_benchmark(d, p).best.number_of_tasks for d, p in cases)
    if (args.task or 1) > fewest:
        parser.error(f"--task={args.task}: a benchmark chosen has only {fewest} tasks")
    print(f"device: {args.device}; {'captured' if args.device.startswith('cuda') else 'eager'} "
          f"steps on a fixed batch, the median of {min(TIMINGS, args.steps)} timed groups "
          f"({args.steps} steps or a few more)")
    print(f"{'benchmark':<18}{'task':>5}{'NHWC ms':>9}{'NCHW ms':>9}{'NCHW/NHWC':>11}"
          f"{'loss diff':>11}{'grad diff':>11}")
    for dataset, part in cases:
        tasks = datasets.get_benchmark(dataset, part).best.number_of_tasks
        task_id = (args.task or tasks) - 1
        nhwc, nchw_, loss, gradient = in_own_process(dataset, part, task_id, args.device,
                                                     args.steps, args.small)
        print(f"{dataset + ' ' + str(part):<18}{task_id + 1:>5}{nhwc * 1e3:>9.2f}"
              f"{nchw_ * 1e3:>9.2f}{nchw_ / nhwc:>11.3f}{loss:>11.1e}{gradient:>11.1e}",
              flush=True)


if __name__ == "__main__":
    main()
