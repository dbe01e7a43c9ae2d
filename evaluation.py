"""Metrics, tables and plots from saved results.

Metrics are pure functions over the accuracy matrix A (SPEC §4): A[t, j] is the
accuracy (percent) on task j after training task t, NaN for j > t.

    python evaluation.py RESULTS_DIR   # rebuild summaries of every experiment below it
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

ACCURACY_COLUMNS = ["dataset", "part", "seed", "trained_task", "evaluated_task", "accuracy"]


# -------------------------------------------------------------------- metrics


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


# ----------------------------------------------------------------------- files


def write_atomically(path: Path, write) -> None:
    """Call write(temporary path), then rename: a crash leaves the old file or the new one."""
    temporary = path.with_name(path.name + ".tmp")
    write(temporary)
    os.replace(temporary, path)


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    write_atomically(path, lambda temporary: frame.to_csv(temporary, index=False))


def write_text(text: str, path: Path) -> None:
    write_atomically(path, lambda temporary: temporary.write_text(text))


def plot_heatmap(matrix: np.ndarray, path: Path, title: str) -> None:
    """The accuracy matrix as an annotated heatmap (rows: task trained, columns: task evaluated)."""
    t = len(matrix)
    low = np.nanmin(matrix)
    fig, ax = plt.subplots(figsize=(max(5.5, 1.2 + 0.6 * t), max(3.5, 1.0 + 0.5 * t)))
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap="viridis", vmin=low, vmax=100)
    for (i, j), value in np.ndenumerate(matrix):
        if not np.isnan(value):  # dark text on the bright (high) end of viridis
            bright = (value - low) / max(100 - low, 1e-9) > 0.6
            ax.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=7,
                    color="black" if bright else "white")
    ax.set_xticks(range(t), [str(j + 1) for j in range(t)])
    ax.set_yticks(range(t), [str(i + 1) for i in range(t)])
    ax.set_xlabel("evaluated task")
    ax.set_ylabel("after training task")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label="accuracy (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------- tables

METRICS = ["mean_accuracy", "std_accuracy", "ACC", "BWT", "FWT", "forgetting",
           "task_agnostic_accuracy", "task_identification_accuracy", "fecam_accuracy"]


def run_summary(run_dir: Path) -> dict | None:
    """One summary row for a run folder: its configuration and metrics (None: no results)."""
    config_path, accuracy_path = run_dir / "config.json", run_dir / "accuracies.csv"
    if not (config_path.exists() and accuracy_path.exists()):
        return None
    config = json.loads(config_path.read_text())
    matrix = accuracy_matrix(pd.read_csv(accuracy_path))
    t = len(matrix)
    row = {"run": run_dir.name, **config, "finished": (run_dir / "final_weights.pt").exists(),
           "trained_tasks": t, "mean_accuracy": float(np.mean(matrix[-1])),
           "std_accuracy": float(np.std(matrix[-1])), "ACC": average_accuracy(matrix),
           "BWT": backward_transfer(matrix), "forgetting": forgetting(matrix)}
    if (run_dir / "transfer.csv").exists():
        transfer = pd.read_csv(run_dir / "transfer.csv").iloc[:t]
        row["FWT"] = forward_transfer(transfer["previous_network_accuracy"].to_numpy(),
                                      transfer["random_init_accuracy"].to_numpy())
    if (run_dir / "task_agnostic.csv").exists():
        agnostic = pd.read_csv(run_dir / "task_agnostic.csv")
        row["task_agnostic_accuracy"] = agnostic["accuracy"].mean()
        row["task_identification_accuracy"] = agnostic["task_identification_accuracy"].mean()
    if (run_dir / "fecam.csv").exists():  # over the test sets of all tasks
        row["fecam_accuracy"] = pd.read_csv(run_dir / "fecam.csv")["accuracy"].iloc[-1]
    return row


def summarize_experiment(experiment_dir: Path) -> str:
    """Rebuild summary.csv, summary.md and the experiment's plots from its run folders.

    Returns:
        summary.md's text: configurations ranked by mean final accuracy.
    """
    experiment_dir = Path(experiment_dir)
    runs = [row for d in sorted(experiment_dir.iterdir()) if d.is_dir()
            if (row := run_summary(d)) is not None]
    if not runs:
        raise FileNotFoundError(f"no runs in {experiment_dir}")
    table = pd.DataFrame(runs)
    write_csv(table, experiment_dir / "summary.csv")
    groups = configuration_groups(table)
    text = seeds_table(groups, title=experiment_dir.name)
    unfinished = table.loc[~table["finished"], "run"].tolist()
    if unfinished:
        text += f"\nUnfinished runs (not in the table): {', '.join(unfinished)}\n"
    write_text(text, experiment_dir / "summary.md")
    plot_experiment(groups, experiment_dir, table)
    return text


def configuration_groups(table: pd.DataFrame) -> list[tuple[dict, pd.DataFrame]]:
    """Finished runs grouped by configuration, best mean final accuracy first.

    Returns:
        (the hyperparameters that vary across the experiment, the runs) pairs.
    """
    finished = table[table["finished"]]
    settings = [c for c in table.columns
                if c not in METRICS + ["run", "seed", "finished", "trained_tasks"]]
    varying = [c for c in settings if table[c].map(str).nunique() > 1]
    if finished.empty:
        return []
    key = finished[settings].map(str).agg("|".join, axis=1)
    groups = [({c: runs[c].iloc[0] for c in varying}, runs)
              for _, runs in finished.groupby(key, sort=False)]
    return sorted(groups, key=lambda group: -group[1]["mean_accuracy"].mean())


def seeds_table(groups: list, title: str) -> str:
    """Markdown in the paper's format: mean ± std over seeds (population std)."""
    if not groups:
        return f"# {title}\n\nNo finished runs yet.\n"
    rows = []
    for varying, runs in groups:
        row = {**varying, "seeds": len(runs)}
        for metric in METRICS[2:]:
            if metric in runs and runs[metric].notna().any():
                row[metric] = f"{runs[metric].mean():.2f} ± {runs[metric].std(ddof=0):.2f}"
        rows.append(row)
    data = groups[0][1]["data"].iloc[0]
    # runs recorded before the setting existed have no such column: the fixed regime
    published = str(groups[0][1].get("published_regime", pd.Series([False])).iloc[0]) == "True"
    regime = ("published: the reference's defects that change numbers are kept "
              "(published_regime=True)" if published else
              "fixed: the reference's defects are fixed (published_regime=False)")
    return "\n".join([
        f"# {title}", "",
        f"Regime: {regime}; see the README, Differences.", "",
        f"Data: {data}. Accuracy in percent after the last task, mean ± std over seeds. "
        "ACC: mean accuracy over tasks; BWT/FWT: backward/forward transfer; forgetting: "
        "Chaudhry et al. 2018; task_agnostic_accuracy: task inferred by lowest entropy; "
        "fecam_accuracy: FeCAM class-incremental accuracy over all tasks.",
        "", pd.DataFrame(rows).rename(columns={"ACC": "accuracy (ACC)"}).to_markdown(index=False),
        ""])


# ----------------------------------------------------------------------- plots


def plot_experiment(groups: list, experiment_dir: Path, table: pd.DataFrame) -> None:
    """mean_heatmap.png and per_task_accuracy.png (best configuration); grid.png for grids."""
    if not groups:
        return
    varying, runs = groups[0]
    matrices = np.stack([accuracy_matrix(pd.read_csv(experiment_dir / r / "accuracies.csv"))
                         for r in runs["run"]])
    sample = " (demo sample)" if runs["data"].iloc[0] != runs["dataset"].iloc[0] else ""
    name = f"{runs['dataset'].iloc[0]}{sample} part {runs['part'].iloc[0]}, {len(runs)} seed(s)"
    if len(groups) > 1:
        name += ", best configuration"
    plot_heatmap(matrices.mean(0), experiment_dir / "mean_heatmap.png",
                 f"{name}: mean accuracy (%)")
    plot_per_task(matrices, experiment_dir / "per_task_accuracy.png", name)
    if len(groups) > 1 or varying:
        plot_grid(table[table["finished"]], list(varying), experiment_dir / "grid.png",
                  f"{runs['dataset'].iloc[0]} part {runs['part'].iloc[0]} grid search")


def plot_per_task(matrices: np.ndarray, path: Path, name: str) -> None:
    """Accuracy per task just after training it vs after all tasks, mean ± std over seeds.

    Args:
        matrices: [seeds, T, T] accuracy matrices.
    """
    t = matrices.shape[1]
    just_after = np.stack([np.diagonal(m) for m in matrices])  # [seeds, T]
    after_all = matrices[:, -1, :]
    x = np.arange(1, t + 1)
    fig, ax = plt.subplots(figsize=(max(5, 0.5 * t + 2), 3.5))
    for values, label, offset in ((just_after, "just after training the task", -0.15),
                                  (after_all, "after all tasks", 0.15)):
        ax.errorbar(x + offset, values.mean(0), yerr=values.std(0), fmt="o", capsize=3,
                    label=label)
    ax.set_xticks(x)
    ax.set_xlabel("task")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{name}: per-task accuracy", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_grid(runs: pd.DataFrame, hyperparameters: list[str], path: Path, title: str) -> None:
    """Final mean accuracy of every run against each varied hyperparameter's values."""
    n = max(1, len(hyperparameters))
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.2), squeeze=False, sharey=True)
    for ax, name in zip(axes[0], hyperparameters):
        values = runs[name].map(str)
        levels = sorted(values.unique())
        for i, level in enumerate(levels):
            accuracy = runs.loc[values == level, "mean_accuracy"]
            ax.scatter(np.full(len(accuracy), i), accuracy, alpha=0.5, s=12)
            ax.plot([i - 0.2, i + 0.2], [accuracy.mean()] * 2, color="black")
        ax.set_xticks(range(len(levels)), levels, rotation=30, fontsize=7)
        ax.set_xlabel(name)
    axes[0][0].set_ylabel("final mean accuracy (%)")
    fig.suptitle(f"{title}: each dot a run, bar the mean", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def experiment_folders(root: Path) -> list[Path]:
    """Every experiment folder at or below root (folders whose runs hold accuracies.csv)."""
    return sorted({p.parent.parent for p in Path(root).rglob("accuracies.csv")})


def main(argv: list[str]) -> int:
    """`python evaluation.py RESULTS_DIR`: rebuild every summary and plot below it."""
    if len(argv) != 1:
        print("usage: python evaluation.py RESULTS_DIR", file=sys.stderr)
        return 2
    root = Path(argv[0])
    experiments = experiment_folders(root) if root.is_dir() else []
    if not experiments:
        print(f"error: no results (run folders with accuracies.csv) under {root}",
              file=sys.stderr)
        return 2
    for experiment in experiments:
        print(summarize_experiment(experiment))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
