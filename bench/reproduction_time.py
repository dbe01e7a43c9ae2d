"""How long the paper's table takes: every best configuration, five seeds, on this device.

For every (dataset, part) with a best configuration, a few training steps are
timed at its first and its last task (random data of the right shape, the
step a run uses: on a GPU replayed from a CUDA graph), and the mean of the two
is taken for every step of a seed (a step's cost grows linearly with the task,
through the output regulariser). Steps per seed follow from the benchmark:
iterations x tasks, or epochs x ceil(training images / batch) x tasks with
the datasets' own sizes. Training steps only: validation (every 100 steps and
each epoch) and the end-of-run evaluations come on top.

    python bench/reproduction_time.py [--device=cuda] [--steps=3] [--only=SplitMNIST:0,...]
"""

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train_step import in_own_process  # noqa: E402

# Training images per class before validation: CIFAR-100 and Tiny ImageNet.
IMAGES_PER_CLASS = {"CIFAR100": 500, "CIFAR100_FeCAM_setup": 500, "TinyImageNet": 500}


def steps_per_seed(dataset: str, part: int) -> int:
    """Training steps of one seed of the best configuration of (dataset, part)."""
    import datasets

    config = datasets.get_benchmark(dataset, part).best
    if config.number_of_iterations:
        return config.number_of_iterations * config.number_of_tasks
    if dataset == "CIFAR100":  # validation: the first validation_size samples of a task
        classes = [10] * config.number_of_tasks
        per_task = [IMAGES_PER_CLASS[dataset] * c - config.validation_size for c in classes]
    else:  # validation_size per class
        classes = (datasets.FECAM_SPLITS[datasets.FECAM_PARTS[part][1]]
                   if dataset == "CIFAR100_FeCAM_setup" else [5] * config.number_of_tasks)
        per_task = [(IMAGES_PER_CLASS[dataset] - config.validation_size) * c for c in classes]
    return sum(config.number_of_epochs * math.ceil(n / config.batch_size) for n in per_task)


def main() -> None:
    import datasets

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--only", help="DATASET:PART,... instead of every best configuration")
    args = parser.parse_args()
    captured = args.device.startswith("cuda")
    benchmarks = [(d, p) for (d, p), b in datasets.BENCHMARKS.items() if b.best is not None]
    if args.only:
        chosen = [(d, int(p)) for d, _, p in (item.partition(":") for item in
                                              args.only.split(","))]
        if not set(chosen) <= set(benchmarks):
            parser.error(f"--only: choose among {', '.join(f'{d}:{p}' for d, p in benchmarks)}")
        benchmarks = chosen
    print(f"device: {args.device}; {'captured (CUDA graph)' if captured else 'eager'} steps; "
          f"{args.steps} timed steps at the first and the last task of each")
    print(f"{'benchmark':<24}{'steps/seed':>11}{'s/step first':>14}{'s/step last':>13}"
          f"{'seeds':>6}{'hours':>9}")
    started, total = time.perf_counter(), 0.0
    for dataset, part in benchmarks:
        benchmark = datasets.get_benchmark(dataset, part)
        last = benchmark.best.number_of_tasks - 1
        seconds = [1 / in_own_process(dataset, part, task_id, True, args.device, args.steps,
                                      captured)[0] for task_id in (0, last)]
        steps = steps_per_seed(dataset, part)
        hours = steps * sum(seconds) / 2 * len(benchmark.seeds) / 3600
        total += hours
        print(f"{dataset + ' ' + str(part):<24}{steps:>11,}{seconds[0]:>14.4f}{seconds[1]:>13.4f}"
              f"{len(benchmark.seeds):>6}{hours:>9.1f}", flush=True)
    print(f"total for {'these' if args.only else 'every'} best configuration(s), all their "
          f"seeds: {total:.1f} "
          f"hours of training steps on {args.device} (measured in "
          f"{time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
