"""Where a paper-scale training step spends its time: phases and the costliest operations.

Profiles the step of a benchmark's best configuration (default: Permuted MNIST,
206M-parameter hypernetwork) at the given tasks (default: its first and its
last) with torch.profiler, each task in its own process. Prints per task the
wall time of the step's phases (loss: hypernetwork forward, masks, target
network and regularisers; backward; optimizer), the page faults per step (fresh
memory being touched), and the operations with the most self time with their
input shapes.

    python bench/profile_step.py [--benchmark=PermutedMNIST:0] [--tasks=1,10] [--device=cuda]
"""

import argparse
import multiprocessing
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # the profiler's own start/stop lines: off

import timing  # noqa: E402  (bench/ is on sys.path when run)
from train_step import chosen_cases, step_setup  # noqa: E402

PHASES = ("loss", "backward", "optimizer")


def profile(dataset: str, part: int, task_id: int, device: str, steps: int, top: int) -> str:
    """The report of one task's step (run in a fresh process)."""
    import torch
    from torch.profiler import ProfilerActivity, record_function

    import hypermask

    run = step_setup(dataset, part, task_id, device)
    config, model, optimizer, start, inputs, y, classes = (
        run.config, run.model, run.optimizer, run.start, run.inputs, run.y, run.classes)
    seconds = dict.fromkeys(PHASES, 0.0)

    def timed(phase: str, work) -> None:
        timing.synchronize(device)
        started = time.perf_counter()
        with record_function(phase):
            work()
            timing.synchronize(device)
        seconds[phase] += time.perf_counter() - started

    def step() -> None:
        terms = {}
        timed("loss", lambda: terms.update(hypermask.training_loss(
            model, inputs(), y, task_id=task_id, num_classes=classes, sparsity=config.sparsity,
            start=start, config=config)))
        optimizer.zero_grad(set_to_none=True)
        timed("backward", lambda: terms["loss"].backward())
        timed("optimizer", optimizer.step)

    for _ in range(2):
        step()
    seconds = dict.fromkeys(PHASES, 0.0)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda")
                                           else [])
    with torch.profiler.profile(activities=activities, record_shapes=True) as profiler:
        for _ in range(steps):
            step()
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps
    total = sum(seconds.values()) / steps
    lines = [f"{dataset} {part}, task {task_id + 1}: {total:.3f} s per step (profiled), "
             f"{faults:,.0f} page faults per step ({faults * 4 / 1024:,.0f} MiB touched fresh)"]
    per_step = {phase: seconds[phase] / steps for phase in PHASES}
    lines += [f"  {phase:<10}{per_step[phase]:>8.3f} s  {per_step[phase] / total:>5.0%}"
              for phase in PHASES]
    key = "self_device_time_total" if device.startswith("cuda") else "self_cpu_time_total"
    events = sorted(profiler.key_averages(group_by_input_shape=True),
                    key=lambda e: getattr(e, key), reverse=True)
    events = [e for e in events if e.key not in PHASES][:top]
    lines.append(f"  {'operation':<28}{'ms/step':>9}  input shapes")
    lines += [f"  {e.key:<28}{getattr(e, key) / 1000 / steps:>9.1f}  {shapes(e.input_shapes)}"
              for e in events]
    return "\n".join(lines)


def shapes(inputs: list) -> str:
    """The tensor shapes among an operation's inputs, e.g. '[5, 25] [25, 475202]'."""
    return " ".join(str(shape) for shape in inputs if shape)[:70]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", default="PermutedMNIST:0", help="DATASET:PART")
    parser.add_argument("--tasks", help="task numbers from 1 (default: the first and the last)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=timing.at_least(1), default=3)
    parser.add_argument("--top", type=timing.at_least(0), default=8,
                        help="operations listed per task")
    args = parser.parse_args()
    args.device = timing.usable_device(args.device)
    cases = chosen_cases(parser, args.benchmark, args.tasks)  # checked: a one-line error
    import torch

    print(f"device: {args.device}; torch {torch.__version__}; {torch.get_num_threads()} "
          f"threads; {args.steps} profiled steps after 2 warm-up steps")
    spawn = multiprocessing.get_context("spawn")
    for dataset, part, task_id, _ in cases:
        with spawn.Pool(1) as pool:
            print(pool.apply(profile, (dataset, part, task_id, args.device, args.steps,
                                       args.top)), flush=True)


if __name__ == "__main__":
    main()
