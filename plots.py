"""The figures: an accuracy matrix as a heatmap, per-task accuracy over seeds, a grid search.

Pure drawing: each function takes arrays or a table and writes one PNG through
files.save_figure (whole or not at all). What to plot for an experiment is
evaluation.plot_experiment's choice.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from files import save_figure  # noqa: E402  (every write goes there)


ANNOTATED_TASKS = 20  # up to this many tasks, heatmaps print every cell's value


def task_ticks(ax, num_tasks: int, axes: str = "xy") -> None:
    """Tasks numbered from 1: every task up to ANNOTATED_TASKS, else about ten round ticks."""
    if num_tasks <= ANNOTATED_TASKS:
        positions = list(range(num_tasks))
    else:
        step = next((s for s in (2, 5, 10, 20, 50, 100, 200, 500) if num_tasks / s <= 12),
                    -(-num_tasks // 10))
        positions = [0] + list(range(step - 1, num_tasks, step))
    labels = [str(p + 1) for p in positions]
    if "x" in axes:
        ax.set_xticks(positions, labels)
    if "y" in axes:
        ax.set_yticks(positions, labels)


def fitted(title: str, fig) -> str:
    """A 9-point title broken into lines as wide as the figure, so that none is cut off."""
    return textwrap.fill(title, int(fig.get_figwidth() * 13))


def plot_heatmap(matrix: np.ndarray, path: Path, title: str) -> None:
    """The accuracy matrix as a heatmap (rows: task trained, columns: task evaluated).

    Up to ANNOTATED_TASKS tasks every cell shows its value and the figure grows
    with the matrix; beyond, the figure has a fixed size and the colour bar
    alone gives the values.
    """
    t = len(matrix)
    low = np.nanmin(matrix)
    annotated = t <= ANNOTATED_TASKS
    size = (max(5.5, 1.2 + 0.6 * t), max(3.5, 1.0 + 0.5 * t)) if annotated else (8.0, 6.5)
    fig, ax = plt.subplots(figsize=size)
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap="viridis", vmin=low, vmax=100,
                      interpolation="nearest")
    if annotated:
        for (i, j), value in np.ndenumerate(matrix):
            if not np.isnan(value):  # dark text on the bright (high) end of viridis
                bright = (value - low) / max(100 - low, 1e-9) > 0.6
                ax.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=7,
                        color="black" if bright else "white")
    task_ticks(ax, t)
    ax.set_xlabel("evaluated task")
    ax.set_ylabel("after training task")
    ax.set_title(fitted(title, fig), fontsize=9)
    fig.colorbar(image, ax=ax, label="accuracy (%)")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def plot_per_task(matrices: np.ndarray, path: Path, name: str) -> None:
    """Accuracy per task just after training it vs after all tasks, mean ± std over seeds.

    Up to ANNOTATED_TASKS tasks: a dot with an error bar per task; beyond, a
    line per curve with the spread over seeds as a band, in a fixed-size figure.

    Args:
        matrices: [seeds, T, T] accuracy matrices.
    """
    t = matrices.shape[1]
    just_after = np.stack([np.diagonal(m) for m in matrices])  # [seeds, T]
    after_all = matrices[:, -1, :]
    x = np.arange(t)
    few = t <= ANNOTATED_TASKS
    fig, ax = plt.subplots(figsize=(max(5, 0.5 * t + 2), 3.5) if few else (10, 4))
    for values, label, offset in ((just_after, "just after training the task", -0.15),
                                  (after_all, "after all tasks", 0.15)):
        mean, std = values.mean(0), values.std(0)
        if few:
            ax.errorbar(x + offset, mean, yerr=std, fmt="o", capsize=3, label=label)
        else:
            line, = ax.plot(x, mean, linewidth=1.2, label=label)
            ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.25,
                            linewidth=0)
    task_ticks(ax, t, axes="x")
    ax.set_xlabel("task")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(fitted(f"{name}: per-task accuracy, mean "
                        + ("(bar: ± std over seeds)" if few else "(band: ± std over seeds)"),
                        fig), fontsize=9)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2,
              frameon=False)  # under the axes: never over a bar
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


GRID_COLUMNS = 4  # panels per row of grid.png, one panel per varied hyperparameter


def plot_grid(runs: pd.DataFrame, hyperparameters: list[str], path: Path, title: str) -> None:
    """Final mean accuracy of every run against each varied hyperparameter's values."""
    n = max(1, len(hyperparameters))
    rows, columns = -(-n // GRID_COLUMNS), min(n, GRID_COLUMNS)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.2 * rows), squeeze=False,
                             sharey=True)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    at_chance = runs.get("tasks_at_chance", pd.Series(index=runs.index, dtype=object)).map(
        lambda tasks: isinstance(tasks, list) and bool(tasks))
    for ax, name in zip(axes.flat, hyperparameters):
        values = runs[name].map(str)
        levels = sorted(values.unique())
        for i, level in enumerate(levels):
            accuracy = runs.loc[values == level, "mean_accuracy"]
            marked = at_chance[values == level]
            ax.scatter(np.full(int((~marked).sum()), i), accuracy[~marked], alpha=0.5, s=12)
            if marked.any():  # in the mean too: the mark tells, it does not drop
                ax.scatter(np.full(int(marked.sum()), i), accuracy[marked], marker="x", s=24,
                           color="red")
            ax.plot([i - 0.2, i + 0.2], [accuracy.mean()] * 2, color="black")
        ax.set_xticks(range(len(levels)), levels, rotation=30, fontsize=7)
        ax.set_xlabel(name)
    for row in axes:
        row[0].set_ylabel("final mean accuracy (%)")
    fig.suptitle(fitted(f"{title}: each dot a run"
                        + (" (red x: tasks at chance)" if at_chance.any() else "")
                        + ", bar the mean", fig), fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)
