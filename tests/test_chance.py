"""Tasks at chance: the margin, the warning after each task, and the marks in summary.md and
the results table, on a run that cannot leave chance and on one that learns."""

import math

import numpy as np
import pandas as pd
import pytest
from conftest import write_idx

import chance
import evaluation
import main


def test_the_margin_is_three_standard_errors_of_a_guess_plus_one_point():
    # 10 classes, 1,000 test images: 3 * 100 * sqrt(0.1 * 0.9 / 1000) + 1 = 3.846
    assert chance.chance_margin(10, 1000) == pytest.approx(3 * 0.9486833 + 1)
    assert chance.chance_margin(2, 2115) == pytest.approx(3 * 100 * math.sqrt(0.25 / 2115)
                                                              + 1)
    assert chance.chance_margin(10, None) == chance.CHANCE_MARGIN_UNSIZED == 3.0
    assert chance.at_chance(13.8, 10, 1000) and chance.at_chance(6.2, 10, 1000)
    assert not chance.at_chance(13.9, 10, 1000) and not chance.at_chance(6.1, 10, 1000)
    # Split MNIST's first task: always answering "1" scores 1,135 / 2,115 = 53.7 %
    assert chance.at_chance(100 * 1135 / 2115, 2, 2115)
    assert not chance.at_chance(20.1, 10, 100) and chance.at_chance(19.9, 10, 100)


def test_tasks_at_chance_are_numbered_from_1_and_need_a_class_count():
    row = np.array([10.0, 50.0, 11.0, np.nan])
    assert chance.tasks_at_chance(row, [10, 10, None, 10], [1000] * 4) == [1]
    assert chance.tasks_at_chance(row, [10, 2, 10, 10], [1000] * 4) == [1, 2, 3]
    assert chance.task_ranges([1, 2, 3, 5, 7, 8, 9, 10]) == "1–3, 5, 7–10"


def test_class_counts_come_from_accuracies_csv_else_from_the_benchmark():
    rows = pd.DataFrame({"trained_task": [0, 1, 1], "evaluated_task": [0, 0, 1],
                         "accuracy": [50.0, 50.0, 50.0]})
    fecam = {"dataset": "CIFAR100_FeCAM_setup", "part": 0}  # 50 classes, then 10 a task
    assert chance.class_counts(rows, fecam) == [50, 10]
    assert chance.class_counts(rows, {"dataset": "TinyImageNet"}) == [5, 5]
    assert chance.class_counts(rows, {"dataset": "unknown"}) == [None, None]
    # a run resumed from before the column: its first rows have none
    resumed = rows.assign(classes=[np.nan, 7.0, 3.0])
    assert chance.class_counts(resumed, fecam) == [7, 3]


def make_blank_mnist(root):
    """MNIST files whose images are all black: nothing tells the classes apart, so every
    test image gets the same answer, right for exactly 10 % of the balanced test set."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 400), ("t10k", 100)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", np.zeros((n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    return root


def run_tiny(root, results, capsys) -> str:
    """A 2-task Permuted MNIST run (50 iterations a task); its printed output."""
    assert main.main([f"--path_to_datasets={root}", f"--results_dir={results}",
                      "--dataset=PermutedMNIST", "--seeds=[1]", "--number_of_tasks=2",
                      "--number_of_iterations=50", "--target_hidden_layers=[16]",
                      "--hnet_hidden_layers=[4]", "--embedding_size=4",
                      "--validation_size=20", "--batch_size=32", "--device=cpu"]) == 0
    return capsys.readouterr().out


def test_a_run_stuck_at_chance_is_named_in_its_log_summary_and_table(tmp_path, capsys):
    out = run_tiny(make_blank_mnist(tmp_path / "blank"), tmp_path / "results", capsys)
    experiment = tmp_path / "results" / "PermutedMNIST_part0_best"
    accuracies = pd.read_csv(experiment / "seed_1" / "accuracies.csv")
    assert (accuracies["accuracy"] == 10.0).all() and (accuracies["classes"] == 10).all()
    warnings = [line for line in out.splitlines() if "warning:" in line]
    assert warnings == [
        f"  warning: after task 1, 1 task(s) at chance, {chance.CHANCE_RULE}: "
        "task 1 10.00% (10 classes)",
        f"  warning: after task 2, 2 task(s) at chance, {chance.CHANCE_RULE}: "
        "task 1 10.00% (10 classes), task 2 10.00% (10 classes)"]
    summary = (experiment / "summary.md").read_text()
    assert "| at chance" in summary and "1 of 1: seed 1 (tasks 1–2)" in summary
    assert chance.CHANCE_NOTE in summary
    assert "| 10.00 " in summary  # reported, not dropped
    assert evaluation.main([str(tmp_path / "results"), "--table"]) == 0
    table = capsys.readouterr().out
    assert "| at chance" in table and "1 of 1: seed 1 (tasks 1–2)" in table
    assert chance.CHANCE_NOTE in table


def test_a_learning_run_is_not_marked(mnist_root, tmp_path, capsys):
    out = run_tiny(mnist_root, tmp_path, capsys)
    accuracies = pd.read_csv(tmp_path / "PermutedMNIST_part0_best" / "seed_1" / "accuracies.csv")
    assert (accuracies["accuracy"] > 20.1).all()  # 100 test images: chance is 10 ± 10 points
    assert "warning" not in out and "at chance" not in out
    assert "at chance" not in (tmp_path / "PermutedMNIST_part0_best" / "summary.md").read_text()
    assert evaluation.main([str(tmp_path), "--table"]) == 0
    assert "at chance" not in capsys.readouterr().out
