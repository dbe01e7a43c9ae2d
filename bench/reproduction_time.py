"""How long the paper's table takes on this device, beside the floor its memory traffic sets.

For every (dataset, part) with a best configuration, a few training steps are
timed at its first and its last task (the benchmark's own batches of stored
images, bench/sample_data.py; the step a run uses: on a GPU replayed from a CUDA
graph), and the mean of the two is taken for every step of a seed (a step's
cost grows linearly with the task, through the output regulariser). Steps per
seed are hypermask.task_iterations summed over the tasks datasets.load_tasks
builds at the real datasets' sizes. Training steps only: validation (every 100
steps and each epoch) and the end-of-run evaluations come on top.

Beside every time, its floor: a step must move train_step.BYTES_PER_PARAMETER
(40) bytes per trained parameter (read every weight in the forward pass and
again in the backward pass, write its gradient; fused Adam reads parameter,
gradient and both moments and writes parameter and moments), whatever the
task; activations, masks, the batch and the regulariser's [t, outputs] terms
are not counted. At the copy bandwidth measured in the same run (a 1 GiB copy,
bytes read + written) that gives the floor in hours for all seeds; the table
gives the measured hours over it, and its last line the whole table's ratio.

--pipeline also measures FeCAM's per-image augmentation: the images per second
that 1, 2, 4, ... DataLoader workers deliver through batches.TrainingBatches
(CIFAR-format uint8 images, image by image and in batches), against the images
per second the FeCAM configurations' steps consume, with one run and with five
runs per GPU at the targeted 3x the throughput of one (each run gets the local
pool's share of this machine's CPUs, augmentation_workers of them for workers).
The workers are measured on otherwise idle cores.

    python bench/reproduction_time.py [--device=cuda] [--steps=3] [--only=SplitMNIST:0,...]
                                      [--pipeline] [--workers=1,2,4,8]
"""

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sample_data  # noqa: E402  (bench/ is on sys.path when run)
import timing  # noqa: E402
from train_step import (BYTES_PER_PARAMETER, bandwidth_now, chosen_benchmarks,  # noqa: E402
                        in_own_process, step_bytes)

RUNS_PER_GPU_TARGET = 3.0  # five runs on one GPU: 3x the runs per hour of one (issue 23)


def steps_per_seed(dataset: str, part: int) -> int:
    """Training steps of one seed of the best configuration of (dataset, part)."""
    import datasets
    import hypermask

    config = datasets.get_benchmark(dataset, part).best
    return sum(hypermask.task_iterations(task, config)
               for task in sample_data.full_size_tasks(dataset, part))


def measure_table(benchmarks: list, device: str, steps: int) -> list[dict]:
    """Per benchmark: its steps, seconds per step at the first and last task, seeds, bytes."""
    import datasets

    rows = []
    for dataset, part in benchmarks:
        benchmark = datasets.get_benchmark(dataset, part)
        last = benchmark.best.number_of_tasks - 1
        seconds = [1 / in_own_process(dataset, part, task_id, True, device, steps,
                                      device.startswith("cuda"))[0] for task_id in (0, last)]
        rows.append({"benchmark": f"{dataset} {part}", "dataset": dataset, "part": part,
                     "steps": steps_per_seed(dataset, part), "seconds": seconds,
                     "seeds": len(benchmark.seeds), "bytes": step_bytes(dataset, part),
                     "batch": benchmark.best.batch_size})
        print_row(rows[-1], None)
    return rows


def hours(row: dict) -> float:
    """Hours of training steps for all seeds of a row: the mean of its two step times."""
    return row["steps"] * sum(row["seconds"]) / 2 * row["seeds"] / 3600


def floor_hours(row: dict, bandwidth: float) -> float:
    """Hours all seeds of a row take at the memory floor: its bytes at `bandwidth`."""
    return row["steps"] * row["bytes"] / bandwidth * row["seeds"] / 3600


HEADER = (f"{'benchmark':<24}{'steps/seed':>11}{'ms first':>10}{'ms last':>9}{'seeds':>6}"
          f"{'GB/step':>9}{'floor h':>9}{'hours':>8}{'ratio':>7}")


def print_row(row: dict, bandwidth: float | None) -> None:
    """One table line; without a bandwidth yet, the floor columns are left empty."""
    first, last = (1e3 * s for s in row["seconds"])
    floor = (f"{floor_hours(row, bandwidth):>9.2f}{hours(row):>8.2f}"
             f"{hours(row) / floor_hours(row, bandwidth):>7.2f}" if bandwidth
             else f"{'':>9}{hours(row):>8.2f}{'':>7}")
    print(f"{row['benchmark']:<24}{row['steps']:>11,}{first:>10.2f}{last:>9.2f}"
          f"{row['seeds']:>6}{row['bytes'] / 1e9:>9.2f}{floor}", flush=True)


def print_floors(rows: list[dict], bandwidth: float, device: str, only: bool,
                 seconds: float) -> None:
    """The table again with its floors, and the total line."""
    print(f"memory floor: {BYTES_PER_PARAMETER} B per trained parameter a step; copy bandwidth "
          f"now {bandwidth / 1e9:.1f} GB/s (bytes read + written by a 1 GiB copy)")
    print(HEADER)
    for row in rows:
        print_row(row, bandwidth)
    total = sum(hours(row) for row in rows)
    floor = sum(floor_hours(row, bandwidth) for row in rows)
    print(f"total for {'these' if only else 'every'} best configuration(s), all their seeds: "
          f"{total:.1f} hours of training steps on {device}, floor {floor:.1f} hours: "
          f"{total / floor:.2f}x the floor (measured in {seconds:.0f} s)")


def augmentation_rate(device: str, in_batches: bool, workers: int, batches: int) -> float:
    """Images per second `workers` DataLoader workers deliver to `device` through
    TrainingBatches: FeCAM part 6's first task (its transform and augmentation) on
    2,048 stored uint8 CIFAR-format images (64 batches of 32: the timed batches stay in
    one epoch); the median of 3 timings after the workers have filled their queues."""
    import torch

    import batches as pipeline
    import datasets

    config = dataclasses.replace(datasets.get_benchmark("CIFAR100_FeCAM_setup", 6).best,
                                 batched_augmentation=in_batches)
    task = sample_data.example_tasks("CIFAR100_FeCAM_setup", 6, config, device)[0]
    copies = -(-2048 // len(task.train_y))
    task = dataclasses.replace(task, train_x=task.train_x.repeat(copies, 1, 1, 1)[:2048],
                               train_y=task.train_y.repeat(copies)[:2048])
    torch.manual_seed(0)
    served = pipeline.TrainingBatches(task, config.batch_size, workers=workers)
    warmup = 2 * workers + 2  # the workers start, each fills its queue of 2 batches
    timed = max(3, min(batches, 64 - warmup) // 3)
    seconds = timing.median_seconds(lambda: next(served), device=device, warmup=warmup,
                                    repeats=3, number=timed)
    return config.batch_size / seconds


def pipeline_table(device: str, workers: list[int], batches: int) -> dict:
    """{(in_batches, workers): images per second}, printed as a table."""
    print(f"FeCAM augmentation: images/s the workers deliver (batches of 32 through "
          f"TrainingBatches, to {device})")
    print(f"{'workers':>8}{'per image':>11}{'in batches':>12}")
    rates = {}
    for count in workers:
        for in_batches in (False, True):
            rates[in_batches, count] = augmentation_rate(device, in_batches, count, batches)
        print(f"{count:>8}{rates[False, count]:>11,.0f}{rates[True, count]:>12,.0f}",
              flush=True)
    return rates


def print_pipeline_verdict(rates: dict, rows: list[dict], device: str) -> None:
    """For each FeCAM configuration timed: does the CPU keep up with one and with five runs?"""
    import torch

    import batches as pipeline

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    measured = sorted({count for _, count in rates})
    for row in (r for r in rows if r["dataset"] == "CIFAR100_FeCAM_setup"):
        consumed = row["batch"] / (sum(row["seconds"]) / 2)  # images/s of one run alone
        for runs in (1, 5):
            threads = max(1, cpus // runs)
            saved = torch.get_num_threads()
            torch.set_num_threads(threads)
            workers = pipeline.augmentation_workers(torch.device(device))
            torch.set_num_threads(saved)
            count = max([c for c in measured if c <= workers] or measured[:1])
            needed = consumed * (1 if runs == 1 else RUNS_PER_GPU_TARGET / runs)
            verdicts = [f"{label} {rates[flag, count]:,.0f}: "
                        f"{'keeps up' if rates[flag, count] >= needed else 'LIMITS'}"
                        for flag, label in ((False, "per image"), (True, "in batches"))]
            print(f"{row['benchmark']}, {runs} run(s) per GPU on {cpus} CPUs ({threads} threads, "
                  f"{workers} workers each; rates of {count} measured): a run consumes "
                  f"{needed:,.0f} images/s; {'; '.join(verdicts)}")


def main() -> None:
    import datasets

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=timing.at_least(1), default=3)
    parser.add_argument("--only", help="DATASET:PART,... instead of every best configuration "
                                       "(DATASET alone: all its parts)")
    parser.add_argument("--pipeline", action="store_true",
                        help="also measure FeCAM's augmentation workers against the steps")
    parser.add_argument("--workers", help="worker counts for --pipeline (default 1, 2, 4, 8 "
                                          "up to this machine's CPUs)")
    parser.add_argument("--batches", type=int, default=45, help="timed batches per worker count")
    args = parser.parse_args()
    args.device = timing.usable_device(args.device)
    benchmarks = chosen_benchmarks(parser, args.only, [
        (d, p) for (d, p), b in datasets.BENCHMARKS.items() if b.best is not None])
    workers = ([int(w) for w in args.workers.split(",")] if args.workers else
               [w for w in (1, 2, 4, 8) if w <= (os.cpu_count() or 1)])
    captured = args.device.startswith("cuda")
    print(f"device: {args.device}; {'captured (CUDA graph)' if captured else 'eager'} steps; "
          f"{args.steps} timed steps at the first and the last task of each")
    print(HEADER)
    started = time.perf_counter()
    rows = measure_table(benchmarks, args.device, args.steps)
    print_floors(rows, bandwidth_now(args.device), args.device, bool(args.only),
                 time.perf_counter() - started)
    if args.pipeline:
        rates = pipeline_table(args.device, workers, args.batches)
        print_pipeline_verdict(rates, rows, args.device)


if __name__ == "__main__":
    main()
