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
RUN_COLUMNS = ["run", "seed", "finished", "mean_accuracy", "std_accuracy", "ACC", "BWT"]


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


def accuracy_matrix(rows: pd.DataFrame) -> np.ndarray:
    """The T x T matrix A from tidy accuracy rows (NaN where j > t)."""
    t = int(rows["trained_task"].max()) + 1
    matrix = np.full((t, t), np.nan)
    matrix[rows["trained_task"].to_numpy(), rows["evaluated_task"].to_numpy()] = rows["accuracy"]
    return matrix


# ----------------------------------------------------------------------- files


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """Write a CSV atomically: a crash leaves the old file or the new one, never half."""
    temporary = path.with_name(path.name + ".tmp")
    frame.to_csv(temporary, index=False)
    os.replace(temporary, path)


def write_text(text: str, path: Path) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def plot_heatmap(matrix: np.ndarray, path: Path, title: str) -> None:
    """The accuracy matrix as an annotated heatmap (rows: task trained, columns: task evaluated)."""
    t = len(matrix)
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * t, 1.0 + 0.5 * t))
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap="viridis", vmin=np.nanmin(matrix),
                      vmax=100)
    for (i, j), value in np.ndenumerate(matrix):
        if not np.isnan(value):
            ax.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=7, color="white")
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


def run_summary(run_dir: Path) -> dict | None:
    """One summary row for a run folder: its hyperparameters and final metrics."""
    config_path, accuracy_path = run_dir / "config.json", run_dir / "accuracies.csv"
    if not (config_path.exists() and accuracy_path.exists()):
        return None
    config = json.loads(config_path.read_text())
    rows = pd.read_csv(accuracy_path)
    matrix = accuracy_matrix(rows)
    final = matrix[-1]
    return {"run": run_dir.name, **config,
            "finished": len(matrix) == config["number_of_tasks"],
            "trained_tasks": len(matrix),
            "mean_accuracy": float(np.mean(final)), "std_accuracy": float(np.std(final)),
            "ACC": average_accuracy(matrix), "BWT": backward_transfer(matrix)}


def summarize_experiment(experiment_dir: Path) -> str:
    """Rebuild summary.csv (a row per run) and summary.md (mean ± std over seeds).

    Returns:
        The markdown table, configurations ranked by mean final accuracy.
    """
    experiment_dir = Path(experiment_dir)
    runs = [r for d in sorted(experiment_dir.iterdir()) if d.is_dir()
            if (r := run_summary(d)) is not None]
    if not runs:
        raise FileNotFoundError(f"no runs in {experiment_dir}")
    table = pd.DataFrame(runs)
    write_csv(table, experiment_dir / "summary.csv")
    text = seeds_table(table, title=experiment_dir.name)
    write_text(text, experiment_dir / "summary.md")
    return text


def seeds_table(table: pd.DataFrame, title: str) -> str:
    """Markdown: mean ± std over seeds of the final mean accuracy, per configuration."""
    finished = table[table["finished"]]
    varying = [c for c in table.columns if c not in RUN_COLUMNS + ["trained_tasks"]
               and table[c].astype(str).nunique() > 1]
    key = finished[varying].astype(str).agg(" ".join, axis=1) if varying else \
        pd.Series("", index=finished.index)
    groups = finished.groupby(key, sort=False)
    rows = []
    for _, group in groups:
        accuracy = group["mean_accuracy"]
        rows.append({**{c: group[c].iloc[0] for c in varying},
                     "seeds": len(group),
                     "accuracy": f"{accuracy.mean():.2f} ± {accuracy.std(ddof=0):.2f}",
                     "BWT": f"{group['BWT'].mean():.2f} ± {group['BWT'].std(ddof=0):.2f}",
                     "_rank": accuracy.mean()})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return f"# {title}\n\nNo finished runs yet.\n"
    frame = frame.sort_values("_rank", ascending=False).drop(columns="_rank")
    data = table["data"].iloc[0] if "data" in table else ""
    lines = [f"# {title}", "",
             f"Final mean accuracy over tasks (%), mean ± std over seeds; data: {data}.", "",
             frame.to_markdown(index=False), ""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python evaluation.py RESULTS_DIR", file=sys.stderr)
        return 2
    root = Path(argv[0])
    if not root.is_dir():
        print(f"error: {root} is not a folder", file=sys.stderr)
        return 2
    experiments = sorted({p.parent.parent for p in root.rglob("accuracies.csv")})
    if not experiments:
        print(f"error: no results (accuracies.csv) under {root}", file=sys.stderr)
        return 2
    for experiment in experiments:
        print(summarize_experiment(experiment))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
