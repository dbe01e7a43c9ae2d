"""The results folder's layout: experiment folders, run folders and the files in them.

main.py's results_dir holds one folder per experiment (experiment_name), and each of those
one folder per run (run_name). This module names them, tells a run's state from its files,
and reads the files back, a damaged one as a one-line UserError that says what to do. It
writes nothing: runs.py writes a run's files, evaluation.py summarizes them.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import pandas as pd

from errors import UserError

# ------------------------------------------------------------------ a run's files

# The files that tell a run folder's state. run_state is the one place that reads them:
# the launchers' progress, --status and the summaries all ask it.
CONFIG, ACCURACIES = "config.json", "accuracies.csv"  # written when a run starts / after a task
FAILED = "failed.txt"  # the error of a run that raised (runs.write_failed)
FINAL_WEIGHTS = "final_weights.pt"  # written last: the run is finished
RUN_FILES = (CONFIG, ACCURACIES, FAILED)  # any of them makes a run folder
# A rerun resumes from the checkpoint and rewrites the run's CSV files, so a damaged one
# needs no new run.
CHECKPOINT = "checkpoint.pt"
# What else a run writes that the summaries read: after each task, and at its end.
TRANSFER, TASK_AGNOSTIC, FECAM = "transfer.csv", "task_agnostic.csv", "fecam.csv"
TASK_AGNOSTIC_STEPS = "task_agnostic_steps.csv"  # with FECAM: entropy per incremental step
VALIDATION = "validation.csv"  # every task's validation accuracy after the last task
RUN_LOG = "run.log"  # a run's output under the local pool and SLURM
RUNNING = "running.txt"  # which process trains the run, while one does (runs.one_writer)
LOCK = "run.lock"  # the OS file lock of the process that trains the run (runs.take_lock)
# In an experiment folder: its run folders' names as the last launch planned them, one a
# line (main.run_experiment), so that a summary names the runs that never started.
PLANNED = "planned_runs.txt"
# config.json keys (runs.job_record) that say how a run was executed, not what it is:
# summaries do not tell configurations apart by them.
MACHINE_COLUMNS = ("threads", "cuda_graphs", "device", "device_name", "torch_version",
                   "hypnettorch_version", "code_version")
# Settings a resumed run may change without becoming another run (runs.RECORD_ONLY).
# Summaries tell configurations apart by those that change numbers
# (evaluation.NEUTRAL_SETTINGS lists the others).
EVALUATION_SETTINGS = ("evaluation_batch_size", "fecam_evaluation", "fecam_with_validation")
# The columns that number tasks: they index the accuracy matrix, so every row needs them.
TASK_COLUMNS = ("trained_task", "evaluated_task")


def run_state(run_dir: Path) -> str:
    """"finished", "failed", "unfinished" (begun: running or interrupted) or "not started"."""
    if (run_dir / FINAL_WEIGHTS).exists():
        return "finished"
    if (run_dir / FAILED).exists():
        return "failed"
    if any((run_dir / name).exists() for name in (CONFIG, ACCURACIES)):
        return "unfinished"
    return "not started"


@contextlib.contextmanager
def readable(path: Path):
    """A file that cannot be opened (no permission, a folder of that name) is a UserError
    naming it."""
    try:
        yield
    except OSError as error:
        raise UserError(f"cannot read {path} ({error.strerror or error}); make it a file this "
                        "user may read") from None


def read_config(path: Path) -> dict:
    """A run's config.json; a UserError naming it when it is not a readable JSON object."""
    try:
        with readable(path):
            config = json.loads(path.read_text())
        problem = config_problem(config)
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError: a damaged file
        problem = f"not readable JSON: {one_line(error)}"
    if problem:  # rerunning cannot mend it: the run's record of what it is is gone
        raise UserError(f"{path} is corrupt or incomplete ({problem}); delete the run folder "
                        f"{path.parent} to run it again")
    return config


SIZE_KEYS = ("training_samples", "validation_samples", "test_samples")  # of task_sizes


def config_problem(config) -> str | None:
    """What makes a config.json unusable for the summaries (None: nothing): the run keys
    and data sizes they read, of the wrong type."""
    if not isinstance(config, dict):
        return "not a JSON object"
    for key, kind, meaning in (("seed", int, "a whole number"), ("part", int, "a whole number"),
                               ("dataset", str, "a text"), ("data", str, "a text")):
        if key not in config:  # runs.job_record has written them since the first launch
            return f"no {key}"
        if type(config[key]) is not kind:
            return f"{key} {config[key]!r} is not {meaning}"
    sizes = config.get("task_sizes", [])
    if not isinstance(sizes, list) or not all(
            isinstance(size, dict) and all(type(size.get(key)) is int and size[key] >= 0
                                           for key in SIZE_KEYS) for size in sizes):
        return f"task_sizes is not a list of {', '.join(SIZE_KEYS)} counts per task"
    if sizes and len(sizes) != config.get("number_of_tasks"):
        return (f"task_sizes has {len(sizes)} tasks, number_of_tasks "
                f"{config.get('number_of_tasks')!r}")
    return None


def read_run_csv(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """One of a run's CSV files, with rows and these numeric columns; else a UserError
    naming it and saying what to do."""
    try:
        with readable(path):
            table = pd.read_csv(path)
        problem = csv_problem(table, columns)
    except ValueError as error:  # pandas' ParserError and EmptyDataError, UnicodeDecodeError
        problem = f"not readable CSV: {one_line(error)}"
    if problem:
        advice = ("rerun the same command: the run resumes from its checkpoint and rewrites it"
                  if (path.parent / CHECKPOINT).exists()
                  else f"delete the run folder {path.parent} to run it again")
        raise UserError(f"{path} is corrupt or incomplete ({problem}); {advice}")
    return table


def csv_problem(table: pd.DataFrame, columns: tuple[str, ...]) -> str | None:
    """What makes a run's table unusable for these columns (None: nothing)."""
    missing = [c for c in columns if c not in table]
    if missing:
        return f"no column {', '.join(missing)}"
    if table.empty:
        return "no rows"
    text = [c for c in columns if not pd.api.types.is_numeric_dtype(table[c])]
    if text:
        return f"values that are not numbers in {', '.join(text)}"
    if "classes" in table:  # what a task's accuracy is held against (chance): k >= 2 classes
        classes = pd.to_numeric(table["classes"], errors="coerce")
        if not (table["classes"].isna() | ((classes >= 2) & (classes % 1 == 0))).all():
            return "class counts that are not whole numbers of at least 2 in classes"
    tasks = [c for c in columns if c in TASK_COLUMNS]
    gaps = [c for c in tasks if not (table[c].notna() & (table[c] >= 0)
                                     & (table[c] % 1 == 0)).all()]
    if gaps:
        return f"missing or invalid task numbers in {', '.join(gaps)}"
    percents = [c for c in columns if c.endswith("accuracy")]  # NaN: not defined (A[-1, 0])
    if out := [c for c in percents if not table[c].dropna().between(0, 100).all()
               or (c == "accuracy" and table[c].isna().any())]:
        return f"missing accuracies or accuracies outside 0-100 in {', '.join(out)}"
    if len(tasks) == 2:  # the accuracy matrix: row t holds tasks 0..t, every row up to the last
        cells = list(zip(table["trained_task"].astype(int), table["evaluated_task"].astype(int)))
        last = max(t for t, _ in cells)
        if sorted(cells) != [(t, j) for t in range(last + 1) for j in range(t + 1)]:
            return "cells missing from, repeated in or beyond the accuracy matrix"
    return None


def one_line(error: Exception) -> str:
    """An exception as one line (pandas' parser messages end in a newline)."""
    return " ".join(f"{type(error).__name__}: {error}".split())


def failure(run_dir: Path) -> dict:
    """{"failed": the error in failed.txt} for a run that raised, else {}."""
    failed = run_dir / FAILED
    return {"failed": failed.read_text().strip()} if failed.exists() else {}


# ------------------------------------------------------------------- folder names

# Experiment folders: <dataset>_part<part>_<best|grid>, demo_ in front for the demo and
# _published behind for the published regime.
PUBLISHED = "_published"
EXPERIMENT_FOLDER = re.compile(r"(?P<demo>demo_)?(?P<dataset>.+)_part(?P<part>\d+)"
                               rf"_(?P<kind>best|grid)(?P<published>{PUBLISHED})?")


def experiment_name(dataset: str, part: int, *, grid: bool, demo: bool,
                    published: bool) -> str:
    """An experiment's folder name: "SplitMNIST_part0_best", "demo_PermutedMNIST_part0_best",
    "CIFAR100_part1_grid_published"."""
    name = f"{'demo_' if demo else ''}{dataset}_part{part}_{'grid' if grid else 'best'}"
    return name + (PUBLISHED if published else "")


RUN_NAME = re.compile(r"(point_\d+_)?seed_\d+")  # run_name's names


def run_name(seed: int, point: int | None = None) -> str:
    """A run's folder name: "seed_1" in a best-configuration experiment, "point_003_seed_1"
    for a grid's point 3."""
    return f"seed_{seed}" if point is None else f"point_{point:03d}_seed_{seed}"


def not_started(experiment_dir: Path) -> tuple[list[str], int]:
    """The runs the experiment's last launch planned (PLANNED) that have not started, and
    how many it planned; ([], 0) where no launch recorded its plan."""
    path = Path(experiment_dir) / PLANNED
    if not path.is_file():
        return [], 0
    with readable(path):
        planned = [name for name in path.read_text(errors="replace").split()
                   if RUN_NAME.fullmatch(name)]
    return ([name for name in planned if run_state(path.parent / name) == "not started"],
            len(planned))


def configuration_name(run: str) -> str:
    """A run folder's configuration (run_name without its seed): "point_003" for
    point_003_seed_1, "" for seed_1."""
    return re.sub(r"_?seed_\d+$", "", run)


def experiment_folders(root: Path) -> list[Path]:
    """Every experiment folder at or below root: the parents of run folders (folders named
    as runs, RUN_NAME, holding RUN_FILES); a run file lying in root itself names no
    experiment below it."""
    return sorted({p.parent.parent for name in RUN_FILES for p in Path(root).rglob(name)
                   if len(p.relative_to(root).parts) >= 2 and RUN_NAME.fullmatch(p.parent.name)})


def experiments_by_name(root: Path) -> dict[str, Path]:
    """experiment_folders by folder name, for the table and comparisons, whose rows are
    named so; a UserError where two share a name (one would stand for both)."""
    found = {}
    for folder in experiment_folders(root):
        if folder.name in found:
            raise UserError(f"two experiment folders named {folder.name} below {root} "
                            f"({found[folder.name]}, {folder}): give a folder that holds "
                            "only one of them")
        found[folder.name] = folder
    return found
