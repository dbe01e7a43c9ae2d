"""Metrics over hand-made accuracy matrices, and the summary tables."""

import json
import re

import numpy as np
import pandas as pd
import pytest

import evaluation
import folders
import plots

NAN = np.nan
MATRIX = np.array([[90.0, NAN, NAN],
                   [80.0, 95.0, NAN],
                   [70.0, 85.0, 99.0]])


def test_average_accuracy_is_mean_of_last_row():
    assert evaluation.average_accuracy(MATRIX) == pytest.approx((70 + 85 + 99) / 3)


def test_backward_transfer():
    # ((70 - 90) + (85 - 95)) / 2
    assert evaluation.backward_transfer(MATRIX) == pytest.approx(-15.0)
    assert evaluation.backward_transfer(np.array([[50.0, NAN], [60.0, 70.0]])) == 10.0
    assert np.isnan(evaluation.backward_transfer(np.array([[50.0]])))


def test_forgetting():
    # task 0: best before the end 90, final 70 -> 20; task 1: best 95, final 85 -> 10
    assert evaluation.forgetting(MATRIX) == pytest.approx(15.0)
    improving = np.array([[50.0, NAN], [60.0, 70.0]])
    assert evaluation.forgetting(improving) == pytest.approx(-10.0)


def test_forward_transfer():
    before = np.array([NAN, 30.0, 50.0])  # A[j-1, j]
    baseline = np.array([10.0, 10.0, 20.0])  # b_j
    assert evaluation.forward_transfer(before, baseline) == pytest.approx((20 + 30) / 2)
    assert np.isnan(evaluation.forward_transfer(before[:1], baseline[:1]))


def test_accuracy_matrix_from_tidy_rows():
    rows = pd.DataFrame([(t, j, MATRIX[t, j]) for t in range(3) for j in range(t + 1)],
                        columns=["trained_task", "evaluated_task", "accuracy"])
    assert np.array_equal(evaluation.accuracy_matrix(rows), MATRIX, equal_nan=True)


def write_run(folder, seed, last_row, beta=0.1):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(
        {"dataset": "X", "part": 0, "seed": seed, "data": "X", "number_of_tasks": 2,
         "beta": beta}))
    rows = [(0, 0, 90.0), (1, 0, last_row[0]), (1, 1, last_row[1])]
    pd.DataFrame([("X", 0, seed, *r, 10) for r in rows],
                 columns=evaluation.ACCURACY_COLUMNS).to_csv(folder / "accuracies.csv",
                                                             index=False)
    pd.DataFrame({"task": [0, 1], "random_init_accuracy": [10.0, 20.0],
                  "previous_network_accuracy": [NAN, 50.0]}).to_csv(folder / "transfer.csv")
    pd.DataFrame({"task": [0, 1], "task_identification_accuracy": [100.0, 80.0],
                  "accuracy": [90.0, 70.0]}).to_csv(folder / "task_agnostic.csv")
    (folder / "final_weights.pt").write_bytes(b"")


def test_summary_ranks_configurations_and_averages_seeds(tmp_path):
    write_run(tmp_path / "point_000_seed_1", 1, (80.0, 90.0), beta=0.1)
    write_run(tmp_path / "point_000_seed_2", 2, (84.0, 90.0), beta=0.1)
    write_run(tmp_path / "point_001_seed_1", 1, (90.0, 100.0), beta=1.0)
    text = evaluation.summarize_experiment(tmp_path)
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert len(summary) == 3
    assert summary.loc[0, "mean_accuracy"] == pytest.approx(85.0)
    assert summary.loc[0, "std_accuracy"] == pytest.approx(5.0)  # population std of 80, 90
    assert summary.loc[0, "BWT"] == pytest.approx(-10.0)
    assert summary.loc[0, "FWT"] == pytest.approx(30.0)
    assert summary.loc[0, "forgetting"] == pytest.approx(10.0)
    assert summary.loc[0, "task_agnostic_accuracy"] == pytest.approx(80.0)
    assert summary.loc[0, "task_identification_accuracy"] == pytest.approx(90.0)
    lines = [line for line in text.splitlines() if line.startswith("|")][2:]
    # beta 1.0 ranks first (95.00), named by its grid point: the folders to look in
    assert [cell.strip() for cell in lines[0].split("|")[1:3]] == ["point_001", "1"]
    assert "| 95.00 " in lines[0] and "95.00 ±" not in lines[0]  # one seed: no spread
    assert "86.00 ± 1.00" in lines[1]  # mean of 85 and 87, population std
    assert (tmp_path / "summary.md").read_text() == text
    assert "task_identification_accuracy: how often that inferred task was right" in text
    assert "fecam_accuracy" not in text  # no run evaluated FeCAM: no column, no note
    assert "Configurations ranked by their mean final accuracy on the test sets" in text
    for plot in ("mean_heatmap.png", "per_task_accuracy.png", "grid.png"):
        assert (tmp_path / plot).stat().st_size > 1000


def test_unfinished_runs_are_listed_but_not_averaged(tmp_path):
    write_run(tmp_path / "seed_1", 1, (80.0, 90.0))
    write_run(tmp_path / "seed_2", 2, (10.0, 10.0))
    (tmp_path / "seed_2" / "final_weights.pt").unlink()
    text = evaluation.summarize_experiment(tmp_path)
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert summary["finished"].tolist() == [True, False]
    assert re.search(r"\|\s*1\s*\|\s*85.00\s*\|", text)  # one seed, the finished one: no spread
    assert "Unfinished runs (not in the table): seed_2" in text


def test_planned_runs_that_never_started_are_named(tmp_path):
    """A grid cut short: its ranking is over the points that ran, and says which did not."""
    write_run(tmp_path / "point_000_seed_1", 1, (80.0, 90.0))
    (tmp_path / "point_000_seed_2").mkdir()  # created, never begun: not started
    names = [f"point_{k:03d}_seed_{seed}" for k in range(7) for seed in (1, 2)]
    (tmp_path / folders.PLANNED).write_text("\n".join(names) + "\n")
    text = evaluation.summarize_experiment(tmp_path)
    assert ("Not started (not in the table): 13 of the 14 runs the last launch planned: "
            + ", ".join(names[1:11]) + " and 3 more; `python main.py --status` with its "
            "options tells queued SLURM jobs from a launch cut short") in text
    (tmp_path / folders.PLANNED).write_text("point_000_seed_1\n")
    assert "Not started" not in evaluation.summarize_experiment(tmp_path)


def test_heatmap_is_written(tmp_path):
    plots.plot_heatmap(MATRIX, tmp_path / "heatmap.png", "test")
    assert (tmp_path / "heatmap.png").stat().st_size > 1000


def test_plots_of_runs_that_no_longer_count_are_removed(tmp_path):
    write_run(tmp_path / "seed_1", 1, (80.0, 90.0))
    evaluation.summarize_experiment(tmp_path)
    plots = [tmp_path / name for name in ("mean_heatmap.png", "per_task_accuracy.png")]
    assert all(plot.exists() for plot in plots)
    (tmp_path / "seed_1" / "final_weights.pt").unlink()  # say, shared without the weights
    assert "No finished runs yet" in evaluation.summarize_experiment(tmp_path)
    assert not any(plot.exists() for plot in plots)
