"""Training steps per second of the image benchmarks' best configurations.

ResNet-20 and ZenkeNet on CIFAR-shaped batches of 32 (Split CIFAR-100 and the
FeCAM setup), the tiny ZenkeNet and ResNet-20 on 64x64 batches of 16 (Tiny
ImageNet); at the first task and the last one, with the batched output
regulariser. The batch transform on the device (crop and flip included) is part
of each step; FeCAM's per-image AutoAugment runs ahead in DataLoader workers and
is not. The stored images are small stand-in files in the datasets' formats
(bench/sample_data.py): a step's cost does not depend on the pixels.

    python bench/image_step.py [--device=cuda] [--steps=5] [--benchmark=CIFAR100:0 --tasks=1,10]

--tasks alone times those tasks of Split CIFAR-100's ResNet-20 and ZenkeNet (parts 0
and 1); the MNIST benchmarks' steps are bench/train_step.py's.
"""

import argparse

import timing
from train_step import chosen_cases, run_cases

DEFAULT = [("CIFAR100", 0, 9), ("CIFAR100", 1, 9), ("CIFAR100_FeCAM_setup", 6, 4),
           ("TinyImageNet", 0, 39), ("TinyImageNet", 1, 39)]  # (dataset, part, last task)


def chosen_image_cases(parser: argparse.ArgumentParser, benchmark: str | None,
                       tasks: str | None) -> list:
    """(dataset, part, task_id, batched) for --benchmark and --tasks, image benchmarks only."""
    import datasets

    if benchmark is None and tasks is not None:  # ResNet-20 and ZenkeNet, Split CIFAR-100
        cases = chosen_cases(parser, "CIFAR100:0", tasks) + chosen_cases(parser, "CIFAR100:1",
                                                                         tasks)
    else:
        cases = chosen_cases(parser, benchmark, tasks) or [
            (dataset, part, task_id, True) for dataset, part, last in DEFAULT
            for task_id in (0, last)]
    if any(datasets.get_benchmark(d, p).best.target_network == "MLP" for d, p, _, _ in cases):
        parser.error(f"--benchmark={benchmark}: this script times the image benchmarks; "
                     f"bench/train_step.py times the MNIST ones")
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=timing.at_least(1), default=5)
    parser.add_argument("--benchmark", help="DATASET:PART only, e.g. CIFAR100:0")
    parser.add_argument("--tasks", help="task numbers from 1, e.g. 1,10 (alone: of CIFAR100:0 "
                                        "and CIFAR100:1)")
    args = parser.parse_args()
    args.device = timing.usable_device(args.device)
    run_cases(chosen_image_cases(parser, args.benchmark, args.tasks), args.device, args.steps)


if __name__ == "__main__":
    main()
