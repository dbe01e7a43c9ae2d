"""The paper's table across experiments and the comparison of two result sets, on hand-made
run folders whose metrics are computed by hand.

Every run has two tasks: A = [[90, -], [a0, a1]], b = (10, 20), A[0, 1] = p, so
ACC = (a0 + a1) / 2, BWT = a0 - 90, FWT = p - 20, forgetting = 90 - a0.
"""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import chance
import datasets
import evaluation
import folders
import plots
from errors import UserError

REPO = Path(__file__).resolve().parents[1]


def make_run(folder, *, last_row=(80.0, 90.0), previous=50.0, finished=True, beta=0.1,
             classes=10, **config):
    """A run folder: config.json (plus `config`), accuracies.csv (`classes` per task; None:
    no such column, as runs from before it), transfer.csv, task_agnostic.csv (and
    final_weights.pt). A config of more than the two tasks repeats task 1's numbers."""
    folder.mkdir(parents=True)
    experiment = folder.parent.name.removeprefix("demo_")
    dataset, _, rest = experiment.partition("_part")
    seed = int(folder.name.rsplit("_", 1)[1])
    tasks = config.get("number_of_tasks", 2)
    tasks = tasks if type(tasks) is int else 2  # a hand-edited one: the files of two
    (folder / "config.json").write_text(json.dumps(
        {"dataset": dataset, "part": int(rest.split("_")[0]), "seed": seed, "data": dataset,
         "number_of_tasks": 2, "target_network": "MLP", "target_hidden_layers": [40, 30],
         "beta": beta, **config}))
    rows = [(0, 0, 90.0)] + [(t, j, last_row[j == t]) for t in range(1, tasks)
                             for j in range(t + 1)]
    accuracies = pd.DataFrame([(dataset, 0, seed, *r, classes) for r in rows],
                              columns=evaluation.ACCURACY_COLUMNS)
    if classes is None:
        accuracies = accuracies.drop(columns="classes")
    accuracies.to_csv(folder / "accuracies.csv", index=False)
    pd.DataFrame({"task": range(tasks), "random_init_accuracy": [10.0] + [20.0] * (tasks - 1),
                  "previous_network_accuracy": [np.nan] + [previous] * (tasks - 1)}).to_csv(
        folder / "transfer.csv", index=False)
    pd.DataFrame({"task": range(tasks), "task_identification_accuracy": [100.0] + [80.0] * (
        tasks - 1), "accuracy": [90.0] + [70.0] * (tasks - 1)}).to_csv(
        folder / "task_agnostic.csv", index=False)
    if finished:
        (folder / "final_weights.pt").write_bytes(b"")


@pytest.fixture
def results(tmp_path):
    """Experiments written out of the paper's order, with an unfinished and a failed run."""
    root = tmp_path / "Results"
    make_run(root / "demo_PermutedMNIST_part0_best" / "seed_1", last_row=(70.0, 80.0))
    for name in ("CIFAR100_FeCAM_setup_part6_best", "TinyImageNet_part0_best",
                 "CIFAR100_part1_best", "CIFAR100_part0_best", "SplitMNIST_part0_best"):
        make_run(root / name / "seed_1")
    make_run(root / "SplitMNIST_part1_grid" / "point_000_seed_1")
    permuted = root / "PermutedMNIST_part0_best"
    make_run(permuted / "seed_1", last_row=(80.0, 90.0), previous=50.0)  # 85, -10, 30, 10
    make_run(permuted / "seed_2", last_row=(84.0, 90.0), previous=60.0)  # 87, -6, 40, 6
    make_run(permuted / "seed_3", last_row=(0.0, 0.0), finished=False)
    (permuted / "seed_4").mkdir()
    (permuted / "seed_4" / "failed.txt").write_text("MNIST is not in Data\n")
    return root


def test_results_table_has_a_row_per_best_experiment_in_the_papers_order(results):
    table, left_out = evaluation.results_table(results)
    assert table["experiment"].tolist() == [
        "PermutedMNIST_part0_best", "SplitMNIST_part0_best", "CIFAR100_part0_best",
        "CIFAR100_part1_best", "TinyImageNet_part0_best", "CIFAR100_FeCAM_setup_part6_best",
        "demo_PermutedMNIST_part0_best"]
    assert left_out == ["SplitMNIST_part1_grid"]
    permuted = table.iloc[0]
    expected = {"ACC": (86.0, 1.0), "BWT": (-8.0, 2.0), "FWT": (35.0, 5.0),
                "forgetting": (8.0, 2.0)}
    for metric, (mean, std) in expected.items():
        assert permuted[f"{metric}_mean"] == pytest.approx(mean), metric
        assert permuted[f"{metric}_std"] == pytest.approx(std), metric  # population std
    assert (permuted["seeds"], permuted["unfinished"], permuted["failed"]) == (2, 1, 1)
    assert permuted["benchmark"] == "Permuted MNIST" and permuted["tasks"] == 2
    assert permuted["target_network"] == "MLP 40-30"
    assert table.iloc[-1]["benchmark"] == "Permuted MNIST (demo sample)"
    assert table.iloc[-1]["ACC_mean"] == pytest.approx(75.0)
    assert table.iloc[1][["seeds", "unfinished", "failed"]].tolist() == [1, 0, 0]


def test_table_command_writes_markdown_csv_and_booktabs_latex(results, capsys):
    assert evaluation.main([str(results), "--table"]) == 0
    markdown = (results / "results_table.md").read_text()
    assert markdown in capsys.readouterr().out
    lines = [line for line in markdown.splitlines() if line.startswith("| Permuted MNIST  ")]
    assert len(lines) == 1
    cells = [cell.strip() for cell in lines[0].strip("|").split("|")]
    # these runs are not the benchmark's best configuration, and the row says so
    assert cells == ["Permuted MNIST", "0", "2", "MLP 40-30", "86.00 ± 1.00", "-8.00 ± 2.00",
                     "35.00 ± 5.00", "8.00 ± 2.00", "number_of_tasks=2, target_hidden_layers="
                     "[40, 30], beta=0.1", "2",
                     "1 unfinished, 1 failed"]
    assert "its numbers are not the paper's setting" in markdown
    assert "| Permuted MNIST (demo sample) |" in markdown
    assert "not named like experiments): SplitMNIST_part1_grid" in markdown
    assert "Data per row:" not in markdown  # these runs recorded no data
    csv = pd.read_csv(results / "results_table.csv")
    assert csv.loc[0, "ACC_mean"] == pytest.approx(86.0) and len(csv) == 7
    latex = (results / "results_table.tex").read_text()
    assert all(rule in latex for rule in (r"\toprule", r"\midrule", r"\bottomrule"))
    assert r"Permuted MNIST & 0 & 2 & MLP 40-30 & 86.00 $\pm$ 1.00 & -8.00 $\pm$ 2.00 &" in latex
    assert "±" not in latex and "FeCAM class-incremental" not in markdown  # no FeCAM result
    assert latex.count(r"\\") == 8  # the header and seven rows
    assert not (results / "PermutedMNIST_part0_best" / "summary.md").exists()


def test_table_gives_the_fecam_setups_class_incremental_accuracy_where_evaluated(results):
    fecam = results / "CIFAR100_FeCAM_setup_part6_best"
    make_run(fecam / "seed_2")
    for seed, accuracies in ((1, [61.0, 40.0]), (2, [63.0, 44.0])):  # after tasks 1 and 2
        pd.DataFrame({"task": [0, 1], "accuracy": accuracies}).to_csv(
            fecam / f"seed_{seed}" / "fecam.csv", index=False)
        pd.DataFrame({"tasks_seen": [1, 2], "accuracy": [a + 10 for a in accuracies]}).to_csv(
            fecam / f"seed_{seed}" / "task_agnostic_steps.csv", index=False)
    assert evaluation.main([str(results), "--table"]) == 0
    table = pd.read_csv(results / "results_table.csv").set_index("experiment")
    assert table.loc[fecam.name, ["fecam_accuracy_mean", "fecam_accuracy_std"]].tolist() == [
        42.0, 2.0]  # the last row: all tasks' test sets
    assert table["fecam_accuracy_mean"].isna().sum() == len(table) - 1
    markdown = (results / "results_table.md").read_text()
    header, row = ([cell.strip() for cell in line.strip("|").split("|")]
                   for line in markdown.splitlines()
                   if line.startswith(("| benchmark", "| CIFAR-100 FeCAM")))
    assert row[header.index("FeCAM class-incremental")] == "42.00 ± 2.00"
    assert "FeCAM class-incremental: the accuracy over the test sets of all tasks" in markdown
    # the authors' number: the mean over steps (50.5 and 53.5)
    assert row[header.index("FeCAM average incremental")] == "52.00 ± 1.50"
    assert "FeCAM average incremental: its mean over the incremental steps" in markdown
    # the entropy's counterpart, the authors' other reported number
    assert row[header.index("entropy average incremental")] == "62.00 ± 1.50"
    assert "entropy average incremental: the mean over the incremental steps" in markdown
    summary = evaluation.summarize_experiment(fecam)
    assert "| 42.00 ± 2.00 " in summary and "fecam_accuracy: FeCAM class-incremental" in summary


def test_runs_of_two_configurations_in_one_folder_are_two_rows_never_one_mean(results):
    """A setting overridden between two launches into one best folder: a row each."""
    permuted = results / "PermutedMNIST_part0_best"
    make_run(permuted / "seed_5", last_row=(20.0, 30.0), beta=0.5)  # ACC 25
    table, _ = evaluation.results_table(results)
    rows = table[table["experiment"] == permuted.name]
    assert rows["benchmark"].tolist() == ["Permuted MNIST [beta=0.1]",
                                          "Permuted MNIST [beta=0.5]"]
    assert rows["ACC_mean"].tolist() == pytest.approx([86.0, 25.0])
    assert rows["seeds"].tolist() == [2, 1]
    # the unfinished run recorded beta=0.1; the failed one recorded nothing: the first row
    assert rows[["unfinished", "failed"]].values.tolist() == [[1, 1], [0, 0]]
    assert "each has its own row" in evaluation.write_results_table(results)
    b = results.parent / "B" / permuted.name
    for seed, beta in ((1, 0.1), (5, 0.5)):
        make_run(b / f"seed_{seed}", last_row=(30.0, 30.0), beta=beta)
    text = evaluation.compare(results, b.parent)
    acc = [[cell.strip() for cell in line.strip("|").split("|")[:4]]
           for line in text.splitlines() if "| ACC " in line]
    assert acc == [["PermutedMNIST_part0_best [beta=0.1]", "ACC", "2/1", "86.00 ± 1.00"],
                   ["PermutedMNIST_part0_best [beta=0.5]", "ACC", "1/1", "25.00"]]


def write_pair(tmp_path):
    """Two result sets: Permuted MNIST in both (B higher by 3 points), one experiment each alone."""
    a, b = tmp_path / "A", tmp_path / "B"
    make_run(a / "PermutedMNIST_part0_best" / "seed_1", last_row=(80.0, 90.0))  # ACC 85
    make_run(a / "PermutedMNIST_part0_best" / "seed_2", last_row=(84.0, 90.0))  # ACC 87
    make_run(b / "PermutedMNIST_part0_best" / "seed_1", last_row=(80.0, 96.0))  # ACC 88
    make_run(b / "PermutedMNIST_part0_best" / "seed_2", last_row=(84.0, 96.0))  # ACC 90
    make_run(a / "SplitMNIST_part0_best" / "seed_1")
    make_run(b / "CIFAR100_part0_best" / "seed_1")
    return a, b


def comparison_cells(text: str, metric: str) -> list[str]:
    [line] = [line for line in text.splitlines() if line.startswith("|")
              and f"| {metric} " in line]
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_compare_puts_metrics_side_by_side_with_the_difference_and_the_spread(
        tmp_path, capsys, monkeypatch):
    a, b = write_pair(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert evaluation.main(["--compare", str(a), str(b)]) == 0
    text = (tmp_path / "comparison.md").read_text()  # the default: in the current folder
    assert text in capsys.readouterr().out
    # ACC: 86 ± 1 vs 89 ± 1, difference +3 > spread max(1, 1)
    assert comparison_cells(text, "ACC") == ["PermutedMNIST_part0_best", "ACC", "2/2",
                                             "86.00 ± 1.00", "89.00 ± 1.00", "+3.00", "1.00",
                                             "yes"]
    # BWT depends only on a0 and A[0, 0]: equal in both
    assert comparison_cells(text, "BWT")[3:] == ["-8.00 ± 2.00", "-8.00 ± 2.00", "+0.00",
                                                 "2.00", "no"]
    assert "Only in A: SplitMNIST_part0_best" in text
    assert "Only in B: CIFAR100_part0_best" in text
    assert "Configurations differ" not in text and "Seeds differ" not in text
    make_run(b / "PermutedMNIST_part0_best" / "seed_3")
    assert ("Seeds differ in PermutedMNIST_part0_best: A 1, 2; B 1, 2, 3"
            in evaluation.compare(a, b))


def test_compare_rows_with_one_run_each_have_no_spread_and_name_changed_settings(tmp_path):
    make_run(tmp_path / "A" / "SplitMNIST_part0_best" / "seed_1", beta=0.1)
    make_run(tmp_path / "B" / "SplitMNIST_part0_best" / "seed_1", last_row=(60.0, 90.0),
             beta=0.5)
    text = evaluation.compare(tmp_path / "A", tmp_path / "B")
    assert comparison_cells(text, "ACC")[2:] == ["1/1", "85.00", "75.00", "-10.00",
                                                 "n/a", "n/a"]  # one run each: no spread
    assert "Configurations differ in SplitMNIST_part0_best: beta (A 0.1, B 0.5)" in text


def test_compare_names_the_runs_not_in_its_numbers_and_tasks_at_chance(tmp_path):
    """A change that makes a seed diverge must not pass for a comparison over fewer seeds."""
    for side in "AB":
        for seed in (1, 2, 3):
            make_run(tmp_path / side / "SplitMNIST_part0_best" / f"seed_{seed}")
    b = tmp_path / "B" / "SplitMNIST_part0_best"
    (b / "seed_2" / "final_weights.pt").unlink()
    (b / "seed_2" / "failed.txt").write_text("diverged: loss is NaN\n")
    (b / "seed_3" / "final_weights.pt").unlink()
    shutil.rmtree(b / "seed_1")
    make_run(b / "seed_1", last_row=(50.0, 90.0), classes=2)  # task 0 at chance
    text = evaluation.compare(tmp_path / "A", tmp_path / "B")
    assert ("B's failed run(s) of SplitMNIST_part0_best, not in its numbers: seed_2"
            in text)
    assert "B's unfinished run(s) of SplitMNIST_part0_best, not in its numbers: seed_3" in text
    assert "B's runs of SplitMNIST_part0_best with tasks at chance: seed 1 (task 1)" in text
    assert "A's" not in text


def test_a_difference_equal_to_the_spread_is_not_beyond_it(tmp_path):
    """B is A's first seed alone: |B - A| equals A's std up to float rounding."""
    for seed, accuracy in ((1, 60.4), (2, 61.7)):  # ACC: |B - A| - std is 7e-15 here
        make_run(tmp_path / "A" / "SplitMNIST_part0_best" / f"seed_{seed}",
                 last_row=(accuracy, 90.0))
    make_run(tmp_path / "B" / "SplitMNIST_part0_best" / "seed_1", last_row=(60.4, 90.0))
    cells = comparison_cells(evaluation.compare(tmp_path / "A", tmp_path / "B"), "ACC")
    assert cells[3:] == ["75.53 ± 0.32", "75.20", "-0.33", "0.32", "no"]  # both 0.325


def test_compare_matches_grid_searches_point_by_point(tmp_path):
    for side, accuracy in (("A", 80.0), ("B", 90.0)):
        grid = tmp_path / side / "SplitMNIST_part1_grid"
        make_run(grid / "point_000_seed_1", last_row=(accuracy, accuracy))
        make_run(grid / "point_001_seed_1", last_row=(50.0, 50.0))
    text = evaluation.compare(tmp_path / "A", tmp_path / "B")
    acc = [line for line in text.splitlines() if "| ACC " in line]
    assert len(acc) == 2
    assert "SplitMNIST_part1_grid point_000" in acc[0] and "+10.00" in acc[0]
    assert "SplitMNIST_part1_grid point_001" in acc[1] and "+0.00" in acc[1]


@pytest.mark.parametrize("argv, message", [
    ([], "give either RESULTS_DIR or --compare DIR_A DIR_B"),
    (["a", "b"], "unrecognized arguments: b"),
    (["--compare", "a"], "expected 2 arguments"),
    (["x", "--compare", "a", "b"], "give either RESULTS_DIR or --compare"),
    (["--compare", "a", "b", "--table"], "--table goes with RESULTS_DIR"),
    (["a", "--output=c.md"], "--output goes with --compare"),
])
def test_bad_command_lines_are_one_line_errors(argv, message, capsys):
    assert evaluation.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "usage:" in err
    assert err.count("\n") == 1


def test_compare_and_table_refuse_folders_without_results(tmp_path, capsys):
    make_run(tmp_path / "A" / "SplitMNIST_part0_best" / "seed_1")
    (tmp_path / "empty").mkdir()
    assert evaluation.main(["--compare", str(tmp_path / "A"), str(tmp_path / "empty")]) == 2
    assert evaluation.main([str(tmp_path / "missing"), "--table"]) == 2
    (tmp_path / "notes.txt").write_text("")
    assert evaluation.main([str(tmp_path / "notes.txt")]) == 2
    run = tmp_path / "A" / "SplitMNIST_part0_best" / "seed_1"
    assert evaluation.main([str(run)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4 and err[0].startswith("error: no results")
    assert err[3] == (f"error: {run} is a run folder; give its experiment folder {run.parent} "
                      "or the folder above that")
    assert err[1] == (f"error: {tmp_path / 'missing'} does not exist; give the folder that "
                      "holds the results (main.py's results_dir)")
    assert err[2].startswith(f"error: {tmp_path / 'notes.txt'} is not a folder;")
    make_run(tmp_path / "grids" / "SplitMNIST_part1_grid" / "point_000_seed_1")
    assert evaluation.main([str(tmp_path / "grids"), "--table"]) == 2
    assert "no best-configuration experiment" in capsys.readouterr().err
    assert not (tmp_path / "grids" / "results_table.md").exists()
    assert evaluation.main(["--compare", str(tmp_path / "A"), str(tmp_path / "A"),
                            f"--output={tmp_path / 'no' / 'such' / 'c.md'}"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_benchmark_names_follow_the_datasets_of_the_repository():
    import datasets

    assert list(evaluation.BENCHMARK_NAMES) == list(datasets.DATASETS)


def test_seeds_recorded_before_a_new_setting_or_with_record_only_changes_are_one_configuration(
        tmp_path):
    """A run from before published_regime existed is the same run (runs.finished); where it
    ran and whether FeCAM ran change no number. The evaluation batch does (batch
    statistics): a seed evaluated in batches of 1000 is another configuration."""
    experiment = tmp_path / "A" / "SplitMNIST_part0_best"
    make_run(experiment / "seed_1")  # no published_regime in its config.json
    make_run(experiment / "seed_2", last_row=(84.0, 90.0), published_regime=False,
             fecam_evaluation=False, threads=4, data_source="/moved/here")
    text = evaluation.summarize_experiment(experiment)
    rows = [line for line in text.splitlines() if line.startswith("|")][2:]
    assert len(rows) == 1 and "86.00 ± 1.00" in rows[0]  # both seeds, in one row
    assert not (experiment / "grid.png").exists()
    make_run(experiment / "seed_3", last_row=(60.0, 70.0), evaluation_batch_size=1000)
    text = evaluation.summarize_experiment(experiment)
    rows = [line for line in text.splitlines() if line.startswith("|")][2:]
    assert len(rows) == 2 and "86.00 ± 1.00" in rows[0] and "65.00" in rows[1]
    assert (experiment / "grid.png").exists()  # two configurations of a best folder
    shutil.rmtree(experiment / "seed_3")
    evaluation.summarize_experiment(experiment)
    assert not (experiment / "grid.png").exists()  # it showed a run that no longer counts


def test_fecam_with_validation_tells_configurations_apart_only_where_fecam_ran(tmp_path):
    """A run from before fecam_with_validation existed reads True (its default), an MNIST
    run records False: without FeCAM the setting changes no number, and they are one."""
    experiment = tmp_path / "SplitMNIST_part0_best"
    make_run(experiment / "seed_1")  # no fecam_with_validation: True
    make_run(experiment / "seed_2", fecam_with_validation=False, fecam_evaluation=False)
    text = evaluation.summarize_experiment(experiment)
    assert len([line for line in text.splitlines() if line.startswith("|")][2:]) == 1
    assert "fecam_with_validation" not in text
    fecam = tmp_path / "CIFAR100_FeCAM_setup_part6_best"
    for seed, with_validation in ((1, True), (2, False)):
        make_run(fecam / f"seed_{seed}", fecam_evaluation=True,
                 fecam_with_validation=with_validation)
        pd.DataFrame({"tasks_seen": [1, 2], "accuracy": [60.0, 40.0]}).to_csv(
            fecam / f"seed_{seed}" / "fecam.csv", index=False)
    text = evaluation.summarize_experiment(fecam)
    assert len([line for line in text.splitlines() if line.startswith("|")][2:]) == 2
    for side, config in (("old", {}), ("new", {"published_regime": False})):
        make_run(tmp_path / side / "SplitMNIST_part0_best" / "seed_1", **config)
    assert "Configurations differ" not in evaluation.compare(tmp_path / "old", tmp_path / "new")


def test_summaries_cover_experiments_whose_runs_all_failed_before_their_first_task(
        tmp_path, capsys):
    experiment = tmp_path / "SplitMNIST_part0_best"
    make_run(experiment / "seed_1")
    (experiment / "seed_1" / "accuracies.csv").unlink()
    (experiment / "seed_1" / "final_weights.pt").unlink()
    (experiment / "seed_1" / "failed.txt").write_text("diverged: loss is NaN\n")
    (experiment / "seed_2").mkdir()  # killed before config.json was written
    (experiment / "seed_2" / "failed.txt").write_text("its process was killed by SIGKILL\n")
    assert evaluation.main([str(tmp_path)]) == 0
    summary = (experiment / "summary.md").read_text()
    assert summary in capsys.readouterr().out and "No finished runs yet." in summary
    assert "Failed run (not in the table): seed_1: diverged: loss is NaN" in summary
    assert "Failed run (not in the table): seed_2: its process was killed by SIGKILL" in summary


def test_a_file_that_cannot_be_written_is_one_line_naming_it_and_the_os_error(results, capsys):
    (results / "results_table.md").mkdir()
    assert evaluation.main([str(results), "--table"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: cannot write {results / 'results_table.md'}: Is a directory\n"
    assert not (results / "results_table.md.tmp").exists()


# --------------------------------------------------------------------- runs at chance

def test_the_table_counts_runs_at_chance_and_keeps_them_in_the_means(results, capsys):
    permuted = results / "PermutedMNIST_part0_best"
    make_run(permuted / "seed_5", last_row=(10.0, 90.0))  # task 1 at chance: 10 classes
    assert evaluation.main([str(results), "--table"]) == 0
    markdown = (results / "results_table.md").read_text()
    [line] = [line for line in markdown.splitlines() if line.startswith("| Permuted MNIST  ")]
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    assert cells[4] == "74.00 ± 16.99"  # (85 + 87 + 50) / 3: reported, not dropped
    assert cells[-1] == "1 of 3: seed 5 (task 1)"
    assert "| at chance" in markdown and chance.CHANCE_NOTE in markdown
    split = [line for line in markdown.splitlines() if line.startswith("| Split MNIST ")]
    assert split[0].rstrip(" |").endswith("none")
    csv = pd.read_csv(results / "results_table.csv")
    assert csv.loc[0, "runs_at_chance"] == 1 and csv.loc[0, "at_chance"] == "seed 5 (task 1)"
    assert "1 of 3: seed 5 (task 1)" in (results / "results_table.tex").read_text()


def test_grid_summary_marks_the_points_with_runs_at_chance(tmp_path, monkeypatch):
    grid = tmp_path / "SplitMNIST_part1_grid"
    make_run(grid / "point_000_seed_1", beta=0.1, classes=2)
    make_run(grid / "point_001_seed_1", last_row=(50.0, 90.0), beta=0.5, classes=2)
    make_run(grid / "point_001_seed_2", beta=0.5, classes=2)
    figures = []
    monkeypatch.setattr(plots.plt, "close", figures.append)  # keep them to look at
    text = evaluation.summarize_experiment(grid)
    rows = {line.split("|")[1].strip(): [cell.strip() for cell in line.strip("|").split("|")]
            for line in text.splitlines() if line.startswith("|")}
    assert rows["point_001"][1] == "0.5" and rows["point_000"][1] == "0.1"
    assert rows["point_001"][-1] == "1 of 2: seed 1 (task 1)" and rows["point_000"][-1] == "none"
    assert rows["point_001"][3] == "77.50 ± 7.50"  # (70 + 85) / 2
    assert chance.CHANCE_NOTE in text
    [figure] = [f for f in figures if f._suptitle and "grid search" in f._suptitle.get_text()]
    assert "red x: tasks at chance" in figure._suptitle.get_text().replace("\n", " ")
    summary = pd.read_csv(grid / "summary.csv")
    assert summary["tasks_at_chance"].tolist() == ["[]", "[1]", "[]"]


def test_runs_from_before_the_classes_column_are_marked_from_their_benchmark(tmp_path):
    """No `classes` in accuracies.csv: the benchmark's split; no task_sizes: a 3-point margin."""
    experiment = tmp_path / "CIFAR100_FeCAM_setup_part0_best"  # 50 classes, then 10 a task
    make_run(experiment / "seed_1", last_row=(4.9, 12.0), classes=None)
    make_run(experiment / "seed_2", last_row=(4.9, 12.0), classes=None,
             task_sizes=[{"training_samples": 1, "validation_samples": 1,
                          "test_samples": 10000}] * 2)
    rows = {row["seed"]: row["tasks_at_chance"]
            for row in evaluation.experiment_runs(experiment).to_dict("records")}
    # seed 1: |4.9 - 2| <= 3 and |12 - 10| <= 3; seed 2: margins 0.42 + 1 and 0.9 + 1 points
    assert rows == {1: [1, 2], 2: []}


# --------------------------------------------------------------------- damaged run files

# A damaged file of a run folder and what the one-line error says of it.
DAMAGED = [
    ("config.json", '{"dataset": ', "not readable JSON: JSONDecodeError"),
    ("config.json", "[1, 2]", "not a JSON object"),
    ("accuracies.csv", 'a,b\n1,2,3\n"x', "not readable CSV: ParserError"),
    ("accuracies.csv", "", "not readable CSV: EmptyDataError"),
    ("accuracies.csv", "a,b,c\n1,2,3\n", "no column trained_task, evaluated_task, accuracy"),
    ("accuracies.csv", ",".join(evaluation.ACCURACY_COLUMNS) + "\n",  "no rows"),
    ("accuracies.csv", "trained_task,evaluated_task,accuracy\n0,0,90\n1,0,x\n",
     "values that are not numbers in accuracy"),
    ("accuracies.csv", "trained_task,evaluated_task,accuracy\n0,0,90\n1\n",
     "missing or invalid task numbers in evaluated_task"),
    ("accuracies.csv", "trained_task,evaluated_task,accuracy\n0,0,90\n1,1,80\n",  # no A[1, 0]
     "cells missing from, repeated in or beyond the accuracy matrix"),
    ("accuracies.csv", "trained_task,evaluated_task,accuracy\n0,0,90\n5,0,80\n5,1,70\n",
     "cells missing from, repeated in or beyond the accuracy matrix"),
    ("accuracies.csv", "trained_task,evaluated_task,accuracy\n0,0,90\n0,0,90\n",
     "cells missing from, repeated in or beyond the accuracy matrix"),
    ("accuracies.csv", "trained_task,evaluated_task,accuracy\n0,0,90\n1,0,\n1,1,80\n",
     "missing accuracies or accuracies outside 0-100 in accuracy"),
    ("accuracies.csv", "trained_task,evaluated_task,accuracy\n0,0,900\n",
     "missing accuracies or accuracies outside 0-100 in accuracy"),
    ("transfer.csv", "task\n0\n1\n",
     "no column previous_network_accuracy, random_init_accuracy"),
    ("transfer.csv", "task,random_init_accuracy,previous_network_accuracy\n0,-5,\n1,20,50\n",
     "accuracies outside 0-100 in random_init_accuracy"),
    ("task_agnostic.csv", "task,accurac\n0,50\n", "no column accuracy"),
    ("fecam.csv", "tasks_seen,accuracy\n", "no rows"),
]


@pytest.mark.parametrize("name, text, problem", DAMAGED)
def test_a_damaged_run_file_is_one_line_naming_it_and_what_to_do(tmp_path, capsys, name, text,
                                                                  problem):
    run = tmp_path / "SplitMNIST_part0_best" / "seed_1"
    make_run(run)
    pd.DataFrame({"accuracy": [50.0] * 2, "task_identification_accuracy": [60.0] * 2}).to_csv(
        run / "task_agnostic.csv", index=False)
    (run / name).write_text(text)
    assert evaluation.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {run / name} is corrupt or incomplete (")
    assert problem in err and err.count("\n") == 1
    assert err.endswith(f"; delete the run folder {run} to run it again\n")


def test_a_damaged_table_of_a_run_with_a_checkpoint_is_mended_by_a_rerun(tmp_path, capsys):
    run = tmp_path / "SplitMNIST_part0_best" / "seed_1"
    make_run(run, finished=False)
    (run / folders.CHECKPOINT).write_bytes(b"")
    (run / "accuracies.csv").write_text("")
    assert evaluation.main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.endswith(
        "; rerun the same command: the run resumes from its checkpoint and rewrites it\n")


@pytest.mark.parametrize("name", ["config.json", "accuracies.csv"])
def test_a_run_file_that_cannot_be_opened_is_one_line_naming_it(tmp_path, capsys, name):
    run = tmp_path / "SplitMNIST_part0_best" / "seed_1"
    make_run(run)
    (run / name).unlink()
    (run / name).mkdir()  # as unreadable as a file without permission, also for root
    assert evaluation.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: cannot read {run / name} (Is a directory); make it a file this " \
                  "user may read\n"


def test_published_regime_experiments_are_table_rows_and_compare_with_the_fixed_ones(tmp_path):
    fixed = tmp_path / "fixed" / "SplitMNIST_part0_best"
    published = tmp_path / "published" / "SplitMNIST_part0_best_published"
    make_run(fixed / "seed_1", published_regime=False)
    make_run(published / "seed_1", last_row=(60.0, 90.0), published_regime=True)
    text = evaluation.compare(fixed.parent, published.parent)
    assert comparison_cells(text, "ACC")[:5] == [
        "SplitMNIST_part0_best (B: SplitMNIST_part0_best_published)", "ACC", "1/1", "85.00",
        "75.00"]
    assert ("Configurations differ in SplitMNIST_part0_best (B: "
            "SplitMNIST_part0_best_published): published_regime") in text
    assert "Only in" not in text
    published.rename(fixed.parent / published.name)  # both regimes in one results folder
    table, left_out = evaluation.results_table(fixed.parent)
    assert table["experiment"].tolist() == [fixed.name, published.name] and left_out == []
    assert table["benchmark"].tolist() == ["Split MNIST", "Split MNIST (published regime)"]
    assert table["ACC_mean"].tolist() == [85.0, 75.0]
    assert "Only in" not in evaluation.compare(fixed.parent, fixed.parent)  # equal names pair


def test_two_experiments_of_one_name_below_a_folder_are_refused_by_table_and_compare(
        tmp_path, capsys):
    for copy in ("threads1", "seeds23"):
        make_run(tmp_path / "A" / copy / "SplitMNIST_part0_best" / "seed_1")
    make_run(tmp_path / "B" / "SplitMNIST_part0_best" / "seed_1")
    assert evaluation.main([str(tmp_path / "A"), "--table"]) == 2
    assert evaluation.main(["--compare", str(tmp_path / "A"), str(tmp_path / "B"),
                            f"--output={tmp_path / 'c.md'}"]) == 2
    for line in capsys.readouterr().err.splitlines():
        assert line.startswith("error: two experiment folders named SplitMNIST_part0_best "
                               f"below {tmp_path / 'A'} (") and "holds only one" in line


def test_a_finished_run_without_config_json_is_refused(results, capsys):
    run = results / "PermutedMNIST_part0_best" / "seed_2"
    (run / "config.json").unlink()
    assert evaluation.main([str(results), "--table"]) == 2
    assert capsys.readouterr().err.startswith(f"error: {run} is finished but has no "
                                              "config.json, the record of its configuration")


@pytest.mark.parametrize("missing", ["transfer.csv", "task_agnostic.csv", "accuracies.csv"])
def test_a_finished_run_missing_a_table_is_refused_not_averaged_over_fewer_seeds(
        results, missing, capsys):
    """Counted as a seed but without its FWT (say), it would leave that metric's mean to the
    other seeds while the table says every seed."""
    run = results / "PermutedMNIST_part0_best" / "seed_2"
    (run / missing).unlink()
    assert evaluation.main([str(results), "--table"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {run} is finished but has no {missing}, which every finished run "
                   "writes (its checkpoint, gone, could rebuild them); delete the run folder "
                   "to run it again")


def test_a_finished_fecam_run_needs_its_fecam_table(tmp_path):
    run = tmp_path / "CIFAR100_FeCAM_setup_part6_best" / "seed_1"
    make_run(run, fecam_evaluation=True)
    with pytest.raises(UserError, match="is finished but has no fecam.csv"):
        evaluation.results_table(tmp_path)
    pd.DataFrame({"task": [0, 1], "accuracy": [61.0, 40.0]}).to_csv(run / "fecam.csv")
    assert evaluation.results_table(tmp_path)[0]["fecam_accuracy_mean"].tolist() == [40.0]


@pytest.mark.parametrize("config, problem", [
    ({"seed": None}, "seed None is not a whole number"),
    ({"seed": "one"}, "seed 'one' is not a whole number"),
    ({"data": None}, "data None is not a text"),
    ({"part": "0"}, "part '0' is not a whole number"),
    ({"dataset": 7}, "dataset 7 is not a text"),
    ({"number_of_tasks": "2",  # the audit's hand edit: "2" reads like 2
      "task_sizes": [{"training_samples": 5, "validation_samples": 1, "test_samples": 5}] * 2},
     "task_sizes has 2 tasks, number_of_tasks '2'"),
    ({"task_sizes": "x"}, "task_sizes is not a list of training_samples, validation_samples, "
                          "test_samples counts per task"),
    ({"task_sizes": [{}, {}]}, "task_sizes is not a list"),
    ({"task_sizes": [{"training_samples": 5, "validation_samples": 1, "test_samples": -5}] * 2},
     "task_sizes is not a list"),
    ({"task_sizes": [{"training_samples": 5, "validation_samples": 1, "test_samples": 5}]},
     "task_sizes has 1 tasks, number_of_tasks 2"),
])
def test_a_hand_edited_config_is_a_one_line_error(tmp_path, config, problem, capsys):
    run = tmp_path / "SplitMNIST_part0_best" / "seed_1"
    make_run(run, **config)
    assert evaluation.main([str(tmp_path), "--table"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {run / 'config.json'} is corrupt or incomplete ({problem}")
    assert "\n" not in err


@pytest.mark.parametrize("name", ["accuracies.csv", "transfer.csv", "task_agnostic.csv",
                                  "fecam.csv", "validation.csv"])
def test_a_finished_runs_table_cut_short_is_refused(tmp_path, capsys, name):
    """The audit's finished 3-task run whose last task's rows were deleted: averaged as
    whole, its ACC rose from 81.67 to 92.50."""
    run = tmp_path / "CIFAR100_FeCAM_setup_part6_best" / "seed_1"
    make_run(run, number_of_tasks=3, fecam_evaluation=True)
    for table in ("fecam.csv", "validation.csv"):  # validation.csv: runs since 2026-12-08
        pd.DataFrame({"task": [0, 1, 2], "accuracy": [61.0, 40.0, 30.0]}).to_csv(run / table)
    assert evaluation.main([str(tmp_path), "--table"]) == 0  # whole: fine
    table = pd.read_csv(run / name)
    last = (table["trained_task"] < 2) if name == "accuracies.csv" else table.index < 2
    table[last].to_csv(run / name, index=False)
    assert evaluation.main([str(tmp_path), "--table"]) == 2
    advice = ("delete that file (the summaries then leave its run out of validation_ACC)"
              if name == "validation.csv" else f"delete the run folder {run} to run it again")
    assert capsys.readouterr().err == (
        f"error: {run / name} is corrupt or incomplete (it covers 2 of the run's 3 tasks); "
        f"{advice}\n")
    (run / "final_weights.pt").unlink()  # unfinished: its tasks so far, not in the table
    assert evaluation.main([str(tmp_path), "--table"]) == 0


@pytest.mark.parametrize("key", ["dataset", "part", "data", "seed"])
def test_a_config_without_a_key_the_summaries_read_is_a_one_line_error(tmp_path, key, capsys):
    """The audit's evaluation.py met a KeyError in the plots (main.py said another run)."""
    run = tmp_path / "SplitMNIST_part0_best" / "seed_1"
    make_run(run)
    config = json.loads((run / "config.json").read_text())
    del config[key]
    (run / "config.json").write_text(json.dumps(config))
    assert evaluation.main([str(run.parent)]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {run / 'config.json'} is corrupt or incomplete (no {key}); "
                   f"delete the run folder {run} to run it again\n")


@pytest.mark.parametrize("classes", ["abc", -3, 1, 0, 2.5])
def test_class_counts_below_two_or_not_whole_are_refused(tmp_path, classes, capsys):
    run = tmp_path / "SplitMNIST_part0_best" / "seed_1"
    make_run(run)
    accuracies = pd.read_csv(run / "accuracies.csv")
    accuracies["classes"] = accuracies["classes"].astype(object)
    accuracies.loc[1, "classes"] = classes
    accuracies.to_csv(run / "accuracies.csv", index=False)
    assert evaluation.main([str(tmp_path), "--table"]) == 2
    err = capsys.readouterr().err.strip()
    assert "class counts that are not whole numbers of at least 2 in classes" in err
    assert "\n" not in err


def test_a_run_file_in_the_results_folder_itself_writes_nothing_above_it(tmp_path, capsys):
    """Its parent's parent would be the folder above RESULTS_DIR: no experiment of it."""
    results = tmp_path / "Results"
    make_run(results / "SplitMNIST_part0_best" / "seed_1")
    (results / "config.json").write_text("{}")
    (tmp_path / "unrelated").mkdir()
    assert folders.experiment_folders(results) == [results / "SplitMNIST_part0_best"]
    assert evaluation.main([str(results)]) == 0
    assert not (tmp_path / "summary.md").exists()


def test_compare_pairs_grid_points_by_their_settings_not_their_numbers(tmp_path):
    """B's grid ran with beta fixed, which removed a dimension and renumbered the points."""
    for k, (beta, lam) in enumerate([(0.1, 1.0), (0.1, 2.0), (0.5, 1.0), (0.5, 2.0)]):
        make_run(tmp_path / "A" / "SplitMNIST_part1_grid" / f"point_{k:03d}_seed_1",
                 last_row=(80.0 + k, 80.0 + k), beta=beta, lam=lam)
    for k, lam in enumerate([1.0, 2.0]):  # beta=0.5: A's points 2 and 3
        make_run(tmp_path / "B" / "SplitMNIST_part1_grid" / f"point_{k:03d}_seed_1",
                 last_row=(82.0 + k, 82.0 + k), beta=0.5, lam=lam)
    text = evaluation.compare(tmp_path / "A", tmp_path / "B")
    acc = [[cell.strip() for cell in line.strip("|").split("|")[:6]]
           for line in text.splitlines() if "| ACC " in line]
    assert acc == [["SplitMNIST_part1_grid point_002 (B: point_000)", "ACC", "1/1", "82.00",
                    "82.00", "+0.00"],
                   ["SplitMNIST_part1_grid point_003 (B: point_001)", "ACC", "1/1", "83.00",
                    "83.00", "+0.00"]]
    assert "Only in A: SplitMNIST_part1_grid point_000, SplitMNIST_part1_grid point_001" in text
    assert "Configurations differ" not in text


def test_summary_names_the_settings_other_than_the_benchmarks(tmp_path):
    best = datasets.get_benchmark("SplitMNIST", 0).best
    record = json.loads(json.dumps(dataclasses.asdict(best)))
    experiment = tmp_path / "SplitMNIST_part0_best"
    make_run(experiment / "seed_1", **(record | {"beta": 0.5, "number_of_tasks": 2}))
    text = evaluation.summarize_experiment(experiment)
    assert "Settings other than the benchmark's: number_of_tasks=2, beta=0.5." in text
    make_run(tmp_path / "plain" / "SplitMNIST_part0_best" / "seed_1",
             **(record | {"number_of_tasks": 2}))
    text = evaluation.summarize_experiment(tmp_path / "plain" / "SplitMNIST_part0_best")
    assert "Settings other than the benchmark's: number_of_tasks=2." in text
    # a grid point: its grid's base, and for what the grid searches a value of its list
    benchmark = datasets.get_benchmark("SplitMNIST", 1)
    point = json.loads(json.dumps(dataclasses.asdict(benchmark.grid_base)
                                  | {name: values[0] for name, values in benchmark.grid.items()}))
    grid = tmp_path / "SplitMNIST_part1_grid"
    make_run(grid / "point_000_seed_1", **(point | {"number_of_tasks": 2}))
    assert "Settings other than the benchmark's: number_of_tasks=2." in \
        evaluation.summarize_experiment(grid)
    # a searched setting fixed by an override to a value outside the grid's list (the audit's
    # --sparsity=70 on a grid of [30]) is named too
    fixed = tmp_path / "fixed" / "SplitMNIST_part1_grid"
    make_run(fixed / "point_000_seed_1", **(point | {"number_of_tasks": 2, "sparsity": 70.0}))
    assert "Settings other than the benchmark's: number_of_tasks=2, sparsity=70." in \
        evaluation.summarize_experiment(fixed)


def test_a_grid_summary_names_searched_settings_that_hold_one_value(tmp_path):
    """The audit's grid with beta, lam and masking fixed by overrides to values of their
    lists: its one row, without them, could not be told from the grid's other points."""
    benchmark = datasets.get_benchmark("PermutedMNIST", 0)
    searched = [name for name, values in benchmark.grid.items() if len(values) > 1]
    assert len(searched) >= 2
    base = dataclasses.asdict(benchmark.grid_base or benchmark.best)
    point = json.loads(json.dumps(base | {name: values[-1]
                                          for name, values in benchmark.grid.items()}
                                  | {"number_of_tasks": 2}))
    grid = tmp_path / "PermutedMNIST_part0_grid"
    make_run(grid / "point_000_seed_1", **point)
    assert ("\nSearched settings with one value in every row: " + ", ".join(
        f"{name}={evaluation.setting_text(point[name])}" for name in searched) + ".\n"
            ) in evaluation.summarize_experiment(grid)
    values = benchmark.grid[searched[0]]  # a second point varies the first: not named
    make_run(grid / "point_001_seed_1", **(point | {searched[0]: values[0]}))
    text = evaluation.summarize_experiment(grid)
    assert "Searched settings with one value in every row: " + ", ".join(
        f"{name}={evaluation.setting_text(point[name])}" for name in searched[1:]) + ".\n" in text
    best = tmp_path / "PermutedMNIST_part0_best"  # no grid: no such line
    make_run(best / "seed_1", **point)
    assert "Searched settings" not in evaluation.summarize_experiment(best)


def test_compare_meets_one_configuration_with_its_namesake_in_a_folder_of_two(tmp_path):
    a, b = write_pair(tmp_path)
    make_run(b / "PermutedMNIST_part0_best" / "seed_5", last_row=(20.0, 30.0), beta=0.5)
    text = evaluation.compare(a, b)
    acc = [[cell.strip() for cell in line.strip("|").split("|")[:6]]
           for line in text.splitlines() if "| ACC " in line]
    assert acc == [["PermutedMNIST_part0_best (B: [beta=0.1])", "ACC", "2/2", "86.00 ± 1.00",
                    "89.00 ± 1.00", "+3.00"]]
    assert "Only in B: CIFAR100_part0_best, PermutedMNIST_part0_best [beta=0.5]" in text


def test_plots_of_a_folder_of_several_configurations_name_the_one_shown(results, monkeypatch):
    permuted = results / "PermutedMNIST_part0_best"
    make_run(permuted / "seed_5", last_row=(20.0, 30.0), beta=0.5)
    titles = []
    monkeypatch.setattr(plots, "plot_heatmap", lambda matrix, path, title: titles.append(
        title))
    evaluation.summarize_experiment(permuted)
    assert titles == ["PermutedMNIST part 0, 2 seed(s), best configuration (beta=0.1): mean "
                      "accuracy (%)"]


@pytest.mark.parametrize("grid, demo, published", [(False, False, False), (True, False, True),
                                                   (False, True, False)])
def test_folder_names_read_back_as_written(grid, demo, published):
    """main.py names folders with folders.experiment_name/run_name; the summaries, the
    table and comparisons read them with EXPERIMENT_FOLDER and configuration_name."""
    name = folders.experiment_name("CIFAR100", 3, grid=grid, demo=demo, published=published)
    match = folders.EXPERIMENT_FOLDER.fullmatch(name)
    assert (match["dataset"], match["part"], match["kind"]) == (
        "CIFAR100", "3", "grid" if grid else "best")
    assert (bool(match["demo"]), bool(match["published"])) == (demo, published)
    point = 7 if grid else None
    assert folders.configuration_name(folders.run_name(12, point)) == (
        "point_007" if grid else "")


def test_every_metric_column_is_explained_under_its_table(results):
    """summary.md and results_table.md say what each metric column means (SEED_METRICS)."""
    summary = evaluation.summarize_experiment(results / "PermutedMNIST_part0_best")
    header = next(line for line in summary.splitlines() if line.startswith("|"))
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    shown = [name for name in evaluation.SEED_METRICS
             if name in columns or name == "ACC" and "accuracy (ACC)" in columns]
    assert shown == ["ACC", "BWT", "FWT", "forgetting", "task_agnostic_accuracy",
                     "task_identification_accuracy"]
    for name in shown:
        assert f"{name}: {evaluation.SEED_METRICS[name]}" in summary
    assert "fecam_accuracy:" not in summary  # no such column: no such note
    table = evaluation.write_results_table(results)
    for name in evaluation.TABLE_METRICS:
        assert f"{name}: {evaluation.SEED_METRICS[name]}" in table


def test_a_metric_that_only_some_runs_have_says_over_how_many(tmp_path):
    """Runs from before a metric existed (here task_agnostic_steps.csv) have no value for
    it: its cell says how many runs it averages rather than passing for every seed's."""
    experiment = tmp_path / "CIFAR100_FeCAM_setup_part6_best"
    for seed in (1, 2, 3):
        make_run(experiment / f"seed_{seed}")
    for seed, accuracy in ((1, 30.0), (2, 40.0)):
        pd.DataFrame({"tasks_seen": [1, 2], "task_identification_accuracy": [100.0, 50.0],
                      "accuracy": [accuracy, accuracy]}).to_csv(
            experiment / f"seed_{seed}" / "task_agnostic_steps.csv", index=False)
    summary = evaluation.summarize_experiment(experiment)
    header, row = (line for line in summary.splitlines() if line.startswith("|")
                   and "---" not in line)
    cells = dict(zip(*([cell.strip() for cell in line.strip("|").split("|")]
                       for line in (header, row))))
    assert cells["task_agnostic_incremental_accuracy"] == "35.00 ± 5.00 (2 of 3 runs)"
    assert cells["BWT"] == "-10.00 ± 0.00"  # every run has it: no count


def test_seeds_that_read_data_of_other_sizes_are_other_configurations(tmp_path):
    """The audit's case: seeds on a 400- and a 200-image MNIST were one mean, under the first
    seed's Data line. A run from before sizes were recorded joins the sizes all others share;
    a data folder that moved splits nothing."""
    experiment = tmp_path / "SplitMNIST_part0_best"
    small, large = ([{"training_samples": n, "validation_samples": 4, "test_samples": 20}] * 2
                    for n in (36, 76))
    make_run(experiment / "seed_1")  # no record of its data
    make_run(experiment / "seed_2", data_source="/data/a", task_sizes=large)
    make_run(experiment / "seed_3", data_source="/moved/a", task_sizes=large,
             data_fingerprint="0123456789abcdef")  # seed 2 from before contents were hashed
    text = evaluation.summarize_experiment(experiment)
    rows = [line for line in text.splitlines() if line.startswith("|")][2:]
    assert len(rows) == 1 and "|       3 |" in rows[0]
    assert ("read from /data/a: 2 tasks of 76 training, 4 validation and 20 test images; and "
            "from /moved/a: 2 tasks of 76") in text
    make_run(experiment / "seed_4", last_row=(50.0, 50.0), data_source="/data/b",
             task_sizes=small)
    text = evaluation.summarize_experiment(experiment)
    rows = [line for line in text.splitlines() if line.startswith("|")][2:]
    assert len(rows) == 3  # seed 1's data are unknown now: it stays apart
    assert any("2 tasks of 36 training" in row and "|       1 |" in row for row in rows)
    assert "; and from /data/b: 2 tasks of 36 training" in text


def test_table_rows_say_which_data_they_read(tmp_path):
    """Other files in the benchmark's format read like the paper's data but for this."""
    sizes = [{"training_samples": 480, "validation_samples": 120, "test_samples": 100}] * 2
    make_run(tmp_path / "SplitMNIST_part0_best" / "seed_1", task_sizes=sizes,
             data_source="/data/small", data_fingerprint="0123456789abcdef")
    text = evaluation.write_results_table(tmp_path)
    assert ("- Split MNIST: 2 tasks of 480 training, 120 validation and 100 test images, read "
            "from /data/small (data_fingerprint 0123456789abcdef)") in text
    csv = pd.read_csv(tmp_path / "results_table.csv")
    assert csv.loc[0, ["data_source", "data_fingerprint"]].tolist() == [
        "/data/small", "0123456789abcdef"]


def test_table_rows_say_which_settings_are_not_the_benchmarks(tmp_path):
    """The audit's case: a Permuted MNIST run of 2 tasks and 5 iterations read like the
    paper's row. A row of the best configuration says none; without such rows, no column."""
    best = json.loads(json.dumps(dataclasses.asdict(datasets.get_benchmark("SplitMNIST",
                                                                           0).best)))
    make_run(tmp_path / "paper" / "SplitMNIST_part0_best" / "seed_1", **best)
    assert evaluation.main([str(tmp_path / "paper"), "--table"]) == 0
    assert "settings other than" not in (tmp_path / "paper" / "results_table.md").read_text()
    make_run(tmp_path / "paper" / "PermutedMNIST_part0_best" / "seed_1", **json.loads(
        json.dumps(dataclasses.asdict(datasets.get_benchmark("PermutedMNIST", 0).best)))
        | {"number_of_iterations": 5, "number_of_tasks": 2})
    assert evaluation.main([str(tmp_path / "paper"), "--table"]) == 0
    table = pd.read_csv(tmp_path / "paper" / "results_table.csv").set_index("experiment")
    assert table["overrides"].fillna("").tolist() == [
        "number_of_tasks=2, number_of_iterations=5", ""]  # Permuted MNIST first, as the paper
    rows = [line for line in (tmp_path / "paper" / "results_table.md").read_text().splitlines()
            if line.startswith("| Split MNIST")]
    assert "| none " in rows[0]


def test_a_table_piped_into_head_ends_without_a_traceback(results):
    """`python evaluation.py --table DIR | head -1`: the reader quits before the table ends."""
    reader, writer = os.pipe()
    os.close(reader)  # a reader that has quit: every write meets a broken pipe
    done = subprocess.run([sys.executable, "evaluation.py", "--table", str(results)],
                          cwd=REPO, stdout=writer, stderr=subprocess.PIPE, text=True)
    os.close(writer)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert (results / "results_table.md").exists()


def test_a_copied_run_folder_is_no_second_seed(tmp_path, capsys):
    """The audit's backup before a rerun, seed_1.bak: counted as a seed of its own, it made
    two seeds of one with a spread of 0."""
    experiment = tmp_path / "SplitMNIST_part0_best"
    make_run(experiment / "seed_1")
    shutil.copytree(experiment / "seed_1", experiment / "seed_1.bak")
    text = evaluation.summarize_experiment(experiment)
    assert pd.read_csv(experiment / "summary.csv")["run"].tolist() == ["seed_1"]
    assert ("Not named as a run (seed_N or point_K_seed_N), not in the table: seed_1.bak"
            in text)
    assert evaluation.results_table(tmp_path)[0]["seeds"].tolist() == [1]
    alone = tmp_path / "alone"  # an experiment of nothing but a copy: no experiment
    shutil.copytree(experiment / "seed_1.bak", alone / experiment.name / "seed_1.bak")
    assert evaluation.main([str(alone)]) == evaluation.main([str(alone), "--table"]) == 2
    assert capsys.readouterr().err.startswith("error: no results (run folders with ")
    shutil.move(experiment / "seed_1.bak", experiment / "seed_2")  # a copy under a run's name
    assert evaluation.main([str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"error: {experiment / 'seed_2'} holds the run of seed 1 (config.json), not of seed 2: "
        "move that folder out of the experiment folder\n")
