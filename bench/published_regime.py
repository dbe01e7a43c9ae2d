"""What `published_regime` changes for ZenkeNet: dropout on (default) vs off (published).

The reference's validation leaves the networks in eval mode, so its ZenkeNet
trains without dropout after the first validation of every task (docs/differences.md,
defect 3); `published_regime=True` does the same, the default keeps dropout on.
Both train ZenkeNet with the Split CIFAR-100 part 1 configuration on two tasks
of real digits at 32x32x3 (datasets.digit_image_tasks: task 0 digits 0-4, task
1 digits 5-9, chance 20%), with a small hypernetwork and a few hundred steps so
that it runs in minutes on a CPU, for three seeds. The table gives the test
accuracy of each task after the second one, mean ± std (population) over seeds.

    python bench/published_regime.py [--iterations=100] [--seeds=1,2,3] [--device=cpu]
"""

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def final_accuracies(published: bool, seed: int, iterations: int, device) -> list[float]:
    """Accuracy (percent) of tasks 0 and 1 after training both, in one regime."""
    import datasets
    import hypermask
    import machine

    config = dataclasses.replace(
        datasets.get_benchmark("CIFAR100", 1).best, number_of_tasks=2,
        number_of_iterations=iterations, number_of_epochs=None, lr_scheduler=False,
        hnet_hidden_layers=(8,), embedding_size=8, learning_rate=5e-3, validation_size=100,
        published_regime=published)
    machine.set_seed(seed)
    tasks = datasets.digit_image_tasks(config, 32, device)
    model = hypermask.build_model(config, tasks[0].input_shape, 5).to(device)
    for task_id, task in enumerate(tasks):
        hypermask.train_task(model, task, task_id, config)
    return [hypermask.evaluate(model, task, j, sparsity=config.sparsity)
            for j, task in enumerate(tasks)]


def main() -> None:
    import numpy as np
    import pandas as pd
    import torch

    import machine
    import timing

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=timing.at_least(1), default=100, help="per task")
    parser.add_argument("--seeds", type=timing.whole_numbers(0), default="1,2,3")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.device != "auto":  # machine.select_device picks one for auto
        timing.usable_device(args.device)
    device = machine.select_device(args.device)
    seeds = args.seeds
    print(f"device: {device} ({torch.get_num_threads()} threads); torch {torch.__version__}; "
          f"{args.iterations} iterations per task; seeds {seeds}")
    started, rows = time.perf_counter(), []
    for published in (False, True):
        results = np.array([final_accuracies(published, seed, args.iterations, device)
                            for seed in seeds])  # [seeds, tasks]
        cell = lambda values: f"{values.mean():.2f} ± {values.std():.2f}"  # noqa: E731
        rows.append({"regime": "published" if published else "fixed (default)",
                     "dropout while training": "off after the first validation" if published
                     else "on", "task 0": cell(results[:, 0]), "task 1": cell(results[:, 1]),
                     "mean": cell(results.mean(1))})
    print(pd.DataFrame(rows).to_markdown(index=False))
    print(f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
