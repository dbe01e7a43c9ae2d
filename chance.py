"""Tasks at chance: a task whose test accuracy stayed within a small margin of 1/classes.

Some seeds never leave chance on some tasks. Such a run is reported, never dropped:
its log warns after each task (runs.chance_warning), and summary.md, the results
table and the grid plot (evaluation.py) name the runs that ended with tasks at
chance, while their numbers stay in the means.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from datasets import FECAM_PARTS, FECAM_SPLITS

CHANCE_ERRORS, CHANCE_SLACK = 3, 1.0  # see chance_margin
CHANCE_MARGIN_UNSIZED = 3.0  # points: for runs that did not record their test-set sizes
CHANCE_RULE = "within 3 binomial standard errors + 1 point of 100/classes"
# Below a summary's or the results table's "at chance" column.
CHANCE_NOTE = (f"At chance: runs that ended with tasks whose accuracy after the last task is "
               f"{CHANCE_RULE} (tasks numbered from 1; each run's log warns after every task). "
               "Their numbers are in the means above.")


def chance_margin(classes: int, test_samples: int | None) -> float:
    """How many percentage points from 100 / classes a test accuracy still counts as chance.

    A network that ignores its input scores 100/k on average over n test
    images of k equally frequent classes, with standard error
    100 sqrt(p (1 - p) / n), p = 1/k: three of them keep noise from hiding such
    a network. The extra point covers test sets whose classes are not equally
    frequent, where a constant prediction scores its class's share: MNIST's
    digits make that 8.9-11.4 % on Permuted MNIST (3 errors: 0.9 points) and
    up to 3.7 points from 50 % on a Split MNIST task (3 errors: 3.3 points).

    Args:
        classes: the task's number of classes k.
        test_samples: its number of test images n; None (not recorded):
            CHANCE_MARGIN_UNSIZED.
    """
    if not test_samples:
        return CHANCE_MARGIN_UNSIZED
    p = 1 / classes
    return CHANCE_ERRORS * 100 * math.sqrt(p * (1 - p) / test_samples) + CHANCE_SLACK


def at_chance(accuracy: float, classes: int, test_samples: int | None) -> bool:
    """True if a test accuracy (percent) is within chance_margin of 100 / classes."""
    return abs(accuracy - 100 / classes) <= chance_margin(classes, test_samples)


def tasks_at_chance(accuracies: np.ndarray, classes: list, test_samples: list) -> list[int]:
    """The tasks, numbered from 1, whose accuracy is at chance (a task of unknown class
    count never is).

    Args:
        accuracies: [T] one row of the accuracy matrix (NaN: not evaluated).
        classes, test_samples: per task; None where not known.
    """
    return [j + 1 for j, accuracy in enumerate(accuracies)
            if not np.isnan(accuracy) and classes[j]
            and at_chance(accuracy, classes[j], test_samples[j])]


# Classes per task of each benchmark (datasets.py builds the tasks), for runs that did
# not record them; the FeCAM setup's come from its split.
CLASSES_PER_TASK = {"PermutedMNIST": 10, "SplitMNIST": 2, "CIFAR100": 10, "TinyImageNet": 5}


def class_counts(accuracies: pd.DataFrame, config: dict) -> list[int | None]:
    """Each task's number of classes: accuracies.csv's `classes`, else (a run recorded
    before that column, or resumed from before it) the benchmark's split, from
    config.json's dataset and part; None for a dataset not known here."""
    t = int(accuracies["trained_task"].max()) + 1
    if config.get("dataset") == "CIFAR100_FeCAM_setup" and config.get("part") in FECAM_PARTS:
        split = FECAM_SPLITS[FECAM_PARTS[config["part"]][1]]
    else:
        split = [CLASSES_PER_TASK.get(config.get("dataset"))] * t
    classes = (list(split) + [None] * t)[:t]
    if "classes" in accuracies:
        recorded = accuracies.dropna(subset=["classes"]).groupby("evaluated_task")["classes"]
        for task, count in recorded.first().items():
            classes[int(task)] = int(count)
    return classes


def task_ranges(tasks: list[int]) -> str:
    """'1–3, 5, 7–10' for [1, 2, 3, 5, 7, 8, 9, 10]."""
    spans = []
    for task in tasks:
        if spans and task == spans[-1][1] + 1:
            spans[-1][1] = task
        else:
            spans.append([task, task])
    return ", ".join(str(a) if a == b else f"{a}–{b}" for a, b in spans)


def chance_runs(runs: pd.DataFrame) -> list[str]:
    """'seed 3 (tasks 1–10)' for each run whose final accuracies have tasks at chance."""
    if "tasks_at_chance" not in runs:
        return []
    return [f"seed {int(seed)} (task{'s' if len(tasks) > 1 else ''} {task_ranges(tasks)})"
            for seed, tasks in zip(runs["seed"], runs["tasks_at_chance"])
            if isinstance(tasks, list) and tasks]


def chance_cell(runs: pd.DataFrame) -> str:
    """How many of the runs ended with tasks at chance, which seeds, which tasks."""
    marked = chance_runs(runs)
    return f"{len(marked)} of {len(runs)}: {'; '.join(marked)}" if marked else "none"
