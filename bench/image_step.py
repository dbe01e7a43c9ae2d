"""Training steps per second of the image benchmarks' best configurations.

ResNet-20 and ZenkeNet on CIFAR-shaped batches of 32 (Split CIFAR-100 and the
FeCAM setup), the tiny ZenkeNet and ResNet-20 on 64x64 batches of 16 (Tiny
ImageNet); at the first task and the last one, with the batched output
regulariser. The batch transform on the device (crop and flip included) is part
of each step; FeCAM's per-image AutoAugment runs ahead in DataLoader workers and
is not. The stored images are small stand-in files in the datasets' formats
(bench/sample_data.py): a step's cost does not depend on the pixels.

    python bench/image_step.py [--device=cuda] [--steps=5] [--benchmark=CIFAR100:0 --tasks=1,10]
"""

import argparse

from train_step import chosen_cases, run_cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--benchmark", help="DATASET:PART only, e.g. CIFAR100:0")
    parser.add_argument("--tasks", help="task numbers from 1, e.g. 1,10")
    args = parser.parse_args()
    cases = chosen_cases(parser, args.benchmark, args.tasks) or [
        (dataset, part, task_id, True)
        for dataset, part, last in (("CIFAR100", 0, 9), ("CIFAR100", 1, 9),
                                    ("CIFAR100_FeCAM_setup", 6, 4),
                                    ("TinyImageNet", 0, 39), ("TinyImageNet", 1, 39))
        for task_id in (0, last)]
    run_cases(cases, args.device, args.steps)


if __name__ == "__main__":
    main()
