"""Training steps per second of the paper's MNIST configurations (full-size networks).

For PermutedMNIST and SplitMNIST's best configurations, at the first task and
the last one (task 10 and task 5), with the output regulariser computed in one
batched hypernetwork call (the default) and with a Python loop over earlier
tasks. Each measurement runs in its own process so that its peak memory is its
own. Inputs are random: a step's cost does not depend on the pixels.

    python bench/train_step.py [--device=cuda] [--steps=5]

`--benchmark=DATASET:PART` and `--tasks=1,50,100` (task numbers from 1) measure
other cases instead, with the batched regulariser, e.g. the 100-task Permuted MNIST:

    python bench/train_step.py --benchmark=PermutedMNIST:1 --tasks=1,50,100
"""

import argparse
import multiprocessing
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def example_batch(dataset: str, config, device: str):
    """A random training batch as the benchmark's transform delivers it, and its classes.

    Returns:
        (a function giving a fresh network-input batch, labels, input shape, classes).
    """
    import torch

    import datasets

    if dataset in ("PermutedMNIST", "SplitMNIST"):
        shape, classes = {"PermutedMNIST": ((1024,), 10), "SplitMNIST": ((784,), 2)}[dataset]
        x = torch.rand(config.batch_size, *shape, device=device)
        return (lambda: x), shape, classes
    shape, classes, mean, std, augment = {
        "CIFAR100": ((32, 32, 3), 10, datasets.IMAGENET_MEAN, datasets.IMAGENET_STD, "crop_flip"),
        # FeCAM's per-image augmentation runs ahead, in DataLoader workers: not timed here
        "CIFAR100_FeCAM_setup": ((32, 32, 3), 20, datasets.FECAM_MEAN, datasets.FECAM_STD, None),
        "TinyImageNet": ((64, 64, 3), 5, datasets.IMAGENET_MEAN, datasets.IMAGENET_STD, None),
    }[dataset]
    images = torch.randint(0, 256, (config.batch_size, *shape), dtype=torch.uint8, device=device)
    transform = datasets.image_transform(mean, std, augment)
    return (lambda: transform(images, True)), shape, classes


def step_setup(dataset: str, part: int, task_id: int, device: str, captured: bool = False):
    """What a run holds at task `task_id` of a best configuration, set up as a run does
    (device settings, freed memory kept, seeded networks): a random batch instead of data.

    Returns:
        a namespace: config, model, optimizer, start, inputs (a function giving a fresh
        network-input batch), y (labels), classes.
    """
    import types

    import torch

    import datasets
    import hypermask
    import runs

    config = datasets.get_benchmark(dataset, part).best
    runs.use_device(torch.device(device), config.tf32)  # its GPU current, cuDNN deterministic
    runs.keep_freed_memory()
    torch.manual_seed(0)
    inputs, shape, classes = example_batch(dataset, config, device)
    model = hypermask.build_model(config, shape, classes).to(device)
    return types.SimpleNamespace(
        config=config, model=model, inputs=inputs, classes=classes,
        optimizer=hypermask.make_optimizer(model, config, capturable=captured),
        start=hypermask.task_start(model, task_id),
        y=torch.randint(0, classes, (config.batch_size,), device=device))


def loop_loss(model, x, y, *, task_id: int, num_classes: int, sparsity: float, start,
              config):
    """hypermask.training_loss with the output regulariser over a Python loop: one
    hypernetwork call per earlier task (what the one batched call replaced)."""
    import torch
    import torch.nn.functional as F

    mask = model.mask(model.hnet_outputs([task_id])[0], sparsity)
    params = model.flat_params()
    logits = model.target(x, weights=model.masked_weights(mask, params))
    loss = F.cross_entropy(logits[:, :num_classes], y)
    if task_id > 0:
        previous = torch.cat([model.hnet_outputs([j]) for j in range(task_id)])
        hnet_reg = F.mse_loss(previous, start.hnet_targets, reduction="sum") / task_id
        drift = params - start.start_params
        if config.norm_regularizer_masking:
            drift = drift * mask
        loss = loss + config.beta * hnet_reg / task_id + config.lam * drift.abs().sum()
    return loss


def measure(dataset: str, part: int, task_id: int, batched: bool, device: str,
            steps: int, captured: bool = False) -> tuple:
    """Training steps per second (transform of the batch included) and peak memory (MiB).

    The step is a run's (hypermask.eager_step; with `captured`, replayed from a
    CUDA graph by capture.graphed_step); with batched=False, the output
    regulariser loops over earlier tasks instead.
    """
    import torch

    import capture
    import hypermask

    measured = torch.device(device)
    run = step_setup(dataset, part, task_id, device, captured)
    config, model, optimizer, start, inputs, y, classes = (
        run.config, run.model, run.optimizer, run.start, run.inputs, run.y, run.classes)
    run_step = (capture.graphed_step if captured else hypermask.eager_step)(
        model, optimizer, start, task_id=task_id, num_classes=classes, config=config)

    def step():
        if batched:
            return run_step(inputs(), y, config.sparsity)
        loss = loop_loss(model, inputs(), y, task_id=task_id, num_classes=classes,
                         sparsity=config.sparsity, start=start, config=config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(2 + (capture.WARMUP_STEPS + 1 if captured else 0)):
        step()
    if measured.type == "cuda":  # on the measured GPU, which need not be the current one
        torch.cuda.synchronize(measured)
        torch.cuda.reset_peak_memory_stats(measured)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if measured.type == "cuda":
        torch.cuda.synchronize(measured)
        peak = torch.cuda.max_memory_allocated(measured) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return steps / (time.perf_counter() - started), peak


def copy_bandwidth(device: str, gib: float = 1.0, repeats: int = 5) -> float:
    """Memory bandwidth of a large copy on `device`, in bytes read + written per second."""
    import torch

    source = torch.ones(int(gib * 2**28), device=device)  # float32
    target = torch.empty_like(source)
    best = float("inf")
    for _ in range(repeats + 1):  # the first copy faults the target's pages in
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        target.copy_(source)
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - started)
    return 2 * source.nbytes / best


def step_bytes(dataset: str, part: int) -> int:
    """The memory traffic a training step cannot avoid: 10 x 4 bytes per parameter.

    The forward pass reads every weight, the backward pass reads them again and
    writes their gradient, Adam reads parameter, gradient and both moments and
    writes parameter and moments: 10 float32 accesses per parameter, whatever
    the task (activations and the [t, n_outputs] regulariser terms are extra).
    """
    import datasets
    import hypermask

    config = datasets.get_benchmark(dataset, part).best
    model = hypermask.build_model(config, (1024,) if dataset == "PermutedMNIST" else (784,), 10)
    return 10 * 4 * sum(p.numel() for p in model.parameters())


def print_bound(results: dict, dataset: str, part: int, device: str) -> None:
    """The measured steps of one benchmark next to the bound its memory traffic sets."""
    spawn = multiprocessing.get_context("spawn")
    with spawn.Pool(1) as pool:
        bandwidth = pool.apply(copy_bandwidth, (device,))
    traffic = step_bytes(dataset, part)
    bound = traffic / bandwidth
    print(f"memory-traffic bound of {dataset} {part}: a step moves at least {traffic / 1e9:.2f} GB "
          f"(10 x 4 B per parameter); copy bandwidth now {bandwidth / 1e9:.1f} GB/s (bytes read "
          f"+ written by a 1 GiB copy); bound {bound * 1e3:.2f} ms per step")
    print(f"{'task':>5}  {'step':<10}{'ms/step':>9}{'bound ms':>10}{'ratio':>7}")
    for (name, number, task_id, kind), rate in results.items():
        if (name, number) == (dataset, part) and kind:
            step = "captured" if kind == "captured" else "eager"
            print(f"{task_id + 1:>5}  {step:<10}{1e3 / rate:>9.2f}{bound * 1e3:>10.2f}"
                  f"{1 / rate / bound:>7.2f}")


def run_cases(cases: list, device: str, steps: int) -> dict:
    """Measure each (dataset, part, task_id, batched) in its own process; print a table.

    On a GPU, a second table sets each batched case's eager step against the
    same step replayed from a CUDA graph (what runs use by default there).
    """
    import torch

    name = (torch.cuda.get_device_name(device) if device.startswith("cuda")
            else f"CPU, {torch.get_num_threads()} threads")
    print(f"device: {device} ({name}); torch {torch.__version__}; {steps} timed steps")
    memory = "peak GPU MiB" if device.startswith("cuda") else "peak RSS MiB"
    print(f"{'benchmark':<24}{'task':>5}  {'regulariser':<12}{'steps/s':>9}{memory:>15}")
    results = {}
    for dataset, part, task_id, batched in cases:
        rate, peak = in_own_process(dataset, part, task_id, batched, device, steps)
        results[dataset, part, task_id, batched] = rate
        label = f"{dataset} {part}"
        kind = "batched" if batched else "loop"
        print(f"{label:<24}{task_id + 1:>5}  {kind:<12}{rate:>9.2f}{peak:>15.0f}", flush=True)
    if device.startswith("cuda"):
        print(f"CUDA graphs: {'benchmark':<24}{'task':>5}{'eager/s':>10}{'captured/s':>12}"
              f"{'speedup':>9}{memory:>15}")
        for (dataset, part, task_id, batched), eager in list(results.items()):
            if batched:
                rate, peak = in_own_process(dataset, part, task_id, True, device, steps, True)
                results[dataset, part, task_id, "captured"] = rate
                print(f"{'':<13}{dataset + ' ' + str(part):<24}{task_id + 1:>5}{eager:>10.2f}"
                      f"{rate:>12.2f}{rate / eager:>9.2f}{peak:>15.0f}", flush=True)
    return results


def in_own_process(*arguments) -> tuple:
    """measure(*arguments) with a peak memory of its own: on a CPU in a fresh process
    (peak RSS); on a GPU in this one (its peak-memory counter is reset per case), which
    saves the seconds a process takes to start CUDA."""
    device = arguments[4]
    if device.startswith("cuda"):
        import gc

        import torch

        gc.collect()
        torch.cuda.empty_cache()
        return measure(*arguments)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure, arguments)


def chosen_cases(parser: argparse.ArgumentParser, benchmark: str | None,
                 tasks: str | None) -> list | None:
    """(dataset, part, task_id, batched) for --benchmark and --tasks (None: neither given)."""
    import datasets
    import errors

    if benchmark is None and tasks is None:
        return None
    dataset, _, part = (benchmark or "PermutedMNIST:0").partition(":")
    try:
        number_of_tasks = datasets.get_benchmark(dataset, int(part or 0)).best.number_of_tasks
        numbers = ([int(t) for t in tasks.split(",")] if tasks else [1, number_of_tasks])
    except (ValueError, AttributeError, errors.UserError) as error:
        parser.error(f"--benchmark=DATASET:PART with a best configuration and --tasks=1,2,... "
                     f"({error})")
    if not all(1 <= t <= number_of_tasks for t in numbers):
        parser.error(f"--tasks: {dataset} part {part or 0} has tasks 1..{number_of_tasks}")
    return [(dataset, int(part or 0), t - 1, True) for t in numbers]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--benchmark", help="DATASET:PART, e.g. PermutedMNIST:1")
    parser.add_argument("--tasks", help="task numbers from 1, e.g. 1,50,100")
    args = parser.parse_args()
    cases = chosen_cases(parser, args.benchmark, args.tasks)
    if cases is not None:
        run_cases(cases, args.device, args.steps)
        return
    cases = [("PermutedMNIST", 0, 0, True), ("PermutedMNIST", 0, 9, True),
             ("PermutedMNIST", 0, 9, False), ("SplitMNIST", 0, 0, True),
             ("SplitMNIST", 0, 4, True), ("SplitMNIST", 0, 4, False)]
    results = run_cases(cases, args.device, args.steps)
    speedup = results["PermutedMNIST", 0, 9, True] / results["PermutedMNIST", 0, 9, False]
    print(f"speedup batched/loop at task 10: {speedup:.2f}")
    print_bound(results, "PermutedMNIST", 0, args.device)


if __name__ == "__main__":
    main()
