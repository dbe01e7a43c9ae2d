"""Training steps per second of the paper's MNIST configurations (full-size networks).

For PermutedMNIST and SplitMNIST's best configurations, at the first task and
the last one (task 10 and task 5), with the output regulariser computed in one
batched hypernetwork call (the default) and with a Python loop over earlier
tasks. Each measurement runs in its own process so that its peak memory is its
own. Inputs are random: a step's cost does not depend on the pixels.

    python bench/train_step.py [--device=cuda] [--steps=5]
"""

import argparse
import multiprocessing
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def measure(dataset: str, task_id: int, batched: bool, device: str, steps: int) -> tuple:
    """Steps per second and peak memory (MiB) of training steps at task `task_id`."""
    import torch

    import datasets
    import hypermask

    config = datasets.get_benchmark(dataset, 0).best
    input_size, classes = {"PermutedMNIST": (1024, 10), "SplitMNIST": (784, 2)}[dataset]
    torch.manual_seed(0)
    model = hypermask.build_model(config, (input_size,), classes).to(device)
    optimizer = hypermask.make_optimizer(model, config)
    start = hypermask.task_start(model, task_id)
    x = torch.rand(config.batch_size, input_size, device=device)
    y = torch.randint(0, classes, (config.batch_size,), device=device)

    def step():
        terms = hypermask.training_loss(model, x, y, task_id=task_id, num_classes=classes,
                                        sparsity=config.sparsity, start=start, config=config,
                                        batched=batched)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()

    for _ in range(2):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return steps / (time.perf_counter() - started), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    import torch

    name = (torch.cuda.get_device_name(args.device) if args.device.startswith("cuda")
            else f"CPU, {torch.get_num_threads()} threads")
    print(f"device: {args.device} ({name}); torch {torch.__version__}; {args.steps} timed steps")
    memory = "peak GPU MiB" if args.device.startswith("cuda") else "peak RSS MiB"
    print(f"{'benchmark':<15}{'task':>5}  {'regulariser':<12}{'steps/s':>9}{memory:>15}")
    spawn = multiprocessing.get_context("spawn")
    results = {}
    for dataset, last in (("PermutedMNIST", 9), ("SplitMNIST", 4)):
        for task_id in (0, last):
            for batched in ((True,) if task_id == 0 else (True, False)):
                with spawn.Pool(1) as pool:
                    rate, peak = pool.apply(measure, (dataset, task_id, batched, args.device,
                                                      args.steps))
                results[dataset, task_id, batched] = rate
                kind = "batched" if batched else "loop"
                print(f"{dataset:<15}{task_id + 1:>5}  {kind:<12}{rate:>9.2f}{peak:>15.0f}",
                      flush=True)
    speedup = results["PermutedMNIST", 9, True] / results["PermutedMNIST", 9, False]
    print(f"speedup batched/loop at task 10: {speedup:.2f}")


if __name__ == "__main__":
    main()
