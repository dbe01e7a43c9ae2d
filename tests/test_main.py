"""The command line and a tiny end-to-end run through main.py's entry point."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import evaluation
import launchers
import main
from errors import UserError

REPO = Path(__file__).resolve().parents[1]
TINY = ["--seeds=[1]", "--number_of_tasks=2", "--number_of_iterations=4",
        "--target_hidden_layers=[8]", "--hnet_hidden_layers=[4]", "--validation_size=20",
        "--batch_size=32", "--device=cpu"]


def test_overrides_are_parsed_and_typed():
    settings, hyper = main.parse_overrides(
        ["--dataset=SplitMNIST", "--demo", "--seeds=[1,2]", "--beta=1", "--part=0",
         "--target_hidden_layers=[100,100]", "--chunk_size=None", "--chunk_size=500",
         "--optimizer=rmsprop"])
    assert settings == {"dataset": "SplitMNIST", "demo": True, "seeds": [1, 2], "part": 0}
    assert hyper == {"beta": 1.0, "target_hidden_layers": (100, 100), "chunk_size": 500,
                     "optimizer": "rmsprop"}
    assert type(hyper["beta"]) is float


def test_a_home_folder_in_a_path_setting_is_expanded(tmp_path, monkeypatch):
    """"~/Data" in main.py's block is not expanded by a shell: the files in the home folder
    were reported missing, with advice to delete them."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(main, "results_dir", "~/Results")
    settings, _, _ = main.resolve(["--path_to_datasets=~/Data"])
    assert (settings["path_to_datasets"], settings["results_dir"]) == \
        (str(tmp_path / "Data"), str(tmp_path / "Results"))


@pytest.mark.parametrize("argument, message", [
    ("--betta=0.1",
     r"unknown option --betta \(did you mean beta\?\); settings: .*dataset.*"
     r"hyperparameters: .*beta"),
    ("--number_of_iterations=many", "--number_of_iterations expects int or None, not 'many'"),
    ("--number_of_iterations=1.5", "expects int"),
    ("--sparsity=[1]", "--sparsity expects float"),
    ("--seeds=1", "--seeds expects None or a list of integers"),
    ("--part=first", "--part expects int"),
    ("--demo=yes", "--demo expects bool"),
    ("--published_regime=true", r"--published_regime expects bool, not 'true' \(write True\)"),
    ("--seeds=[1,", r"not '\[1,' \(a list or dict with spaces must be quoted whole"),
    ("--target_hidden_layers=[100,", r"\(a list or dict with spaces must be quoted whole"),
    ("--target_hidden_layers=[1,'a']", r"expects a list of integers such as \[100,100\]"),
    ("dataset=SplitMNIST", "use --name=value"),
])
def test_bad_overrides_are_refused(argument, message):
    with pytest.raises(UserError, match=message):
        main.parse_overrides([argument])


@pytest.mark.parametrize("argument, message", [
    ("--dataset=MNIST", "unknown dataset 'MNIST'"),
    ("--dataset=TinyImageNet --part=2", "exists only as a grid search"),
    ("--dataset=CIFAR100_FeCAM_setup --part=1 --create_grid_search=True",
     "part 1 has no grid search; set create_grid_search=False, or use part [6] for its grid"),
    ("--dataset=PermutedMNIST --part=1 --create_grid_search=True",
     "part 1 has no grid search; set create_grid_search=False"),
    ("--part=5", "has no part 5"),
    ("--optimizer=sgd", "optimizer must be one of adam, rmsprop, not 'sgd'"),
    ("--model_selection=best", "model_selection must be one of last, best_val"),
])
def test_bad_input_is_one_line_on_stderr(argument, message, capsys, tmp_path):
    assert main.main([*argument.split(), f"--results_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_bad_input_from_the_shell_has_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "main.py", "--datset=SplitMNIST"], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("error: unknown option --datset") and "Traceback" not in \
        result.stderr


def run_tiny(mnist_root, results, dataset="PermutedMNIST", extra=()):
    code = main.main([f"--dataset={dataset}", f"--path_to_datasets={mnist_root}",
                      f"--results_dir={results}", *TINY, *extra])
    assert code == 0
    return results / f"{dataset}_part0_best"


@pytest.mark.parametrize("dataset", ["PermutedMNIST", "SplitMNIST"])
def test_end_to_end_writes_every_output(mnist_root, tmp_path, dataset):
    experiment = run_tiny(mnist_root, tmp_path, dataset)
    run = experiment / "seed_1"
    config = json.loads((run / "config.json").read_text())
    assert config["number_of_iterations"] == 4 and config["seed"] == 1
    assert config["dataset"] == dataset and config["target_hidden_layers"] == [8]
    accuracies = pd.read_csv(run / "accuracies.csv")
    assert list(accuracies.columns) == evaluation.ACCURACY_COLUMNS
    assert accuracies[["trained_task", "evaluated_task"]].values.tolist() == [[0, 0], [1, 0],
                                                                               [1, 1]]
    assert accuracies["accuracy"].between(0, 100).all()
    log = pd.read_csv(run / "training_log.csv")
    assert {"task", "iteration", "task_loss", "hnet_term", "target_term",
            "validation_accuracy"} <= set(log.columns)
    assert log[["task", "iteration"]].values.tolist() == [[0, 1], [0, 4], [1, 1], [1, 4]]
    assert (run / "heatmap.png").stat().st_size > 1000
    import torch
    weights = torch.load(run / "final_weights.pt", weights_only=True)
    assert set(weights) == {"hnet", "target"}
    summary = pd.read_csv(experiment / "summary.csv")
    assert {"seed", "beta", "mean_accuracy", "std_accuracy", "ACC", "BWT"} <= set(summary.columns)
    assert (experiment / "summary.md").read_text().startswith(f"# {dataset}_part0_best")
    assert (experiment / "planned_runs.txt").read_text() == "seed_1\n"


def test_same_seed_gives_identical_results(mnist_root, tmp_path):
    first = run_tiny(mnist_root, tmp_path / "a")
    second = run_tiny(mnist_root, tmp_path / "b")
    for name in ("accuracies.csv", "config.json"):
        assert (first / "seed_1" / name).read_bytes() == (second / "seed_1" / name).read_bytes()
    logs = [pd.read_csv(f / "seed_1" / "training_log.csv").drop(columns="seconds")
            for f in (first, second)]
    pd.testing.assert_frame_equal(*logs)


def test_finished_runs_are_kept_and_other_configurations_refused(mnist_root, tmp_path, capsys):
    experiment = run_tiny(mnist_root, tmp_path)
    before = (experiment / "seed_1" / "accuracies.csv").stat().st_mtime_ns
    run_tiny(mnist_root, tmp_path)
    assert "already finished" in capsys.readouterr().out
    assert (experiment / "seed_1" / "accuracies.csv").stat().st_mtime_ns == before
    code = main.main(["--dataset=PermutedMNIST", f"--path_to_datasets={mnist_root}",
                      f"--results_dir={tmp_path}", *TINY, "--beta=0.5"])
    err = capsys.readouterr().err
    assert code == 2 and "another configuration (beta: 0.0005 there, 0.5 now)" in err
    assert "delete" not in err  # a finished result: never advised away
    assert err.strip().endswith("use another --results_dir")  # no grid here to renumber


def test_a_run_from_before_a_new_field_is_still_the_same_run(mnist_root, tmp_path, capsys):
    """A field added to HyperParameters later (tf32, say) takes its default for old runs."""
    experiment = run_tiny(mnist_root, tmp_path)
    config = experiment / "seed_1" / "config.json"
    saved = json.loads(config.read_text())
    del saved["tf32"], saved["published_regime"]
    config.write_text(json.dumps(saved))
    run_tiny(mnist_root, tmp_path)
    assert "already finished" in capsys.readouterr().out


def test_damaged_files_of_a_finished_run_are_one_line_errors(mnist_root, tmp_path, capsys):
    """Rerun and --status read the run's config.json and accuracies.csv: no traceback."""
    run = run_tiny(mnist_root, tmp_path) / "seed_1"
    options = ["--dataset=PermutedMNIST", f"--path_to_datasets={mnist_root}",
               f"--results_dir={tmp_path}", *TINY]
    capsys.readouterr()
    for name, extra in (("config.json", []), ("accuracies.csv", [])):
        damaged = run / name
        kept = damaged.read_bytes()
        damaged.write_text('{"dataset": ' if name == "config.json" else 'a,b\n1,2,3\n"x')
        assert main.main(options + extra) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {damaged} is corrupt or incomplete (not readable ")
        assert err.endswith(f"; delete the run folder {run} to run it again\n")
        assert err.count("\n") == 1
        damaged.write_bytes(kept)
    # --status says it in the run's row: the other runs' states stay readable
    (run / "accuracies.csv").write_text('a,b\n1,2,3\n"x')
    assert main.main(options + ["--status=True"]) == 0
    row = [line for line in capsys.readouterr().out.splitlines() if "| seed_1 " in line][0]
    assert f"| damaged: {run / 'accuracies.csv'} is corrupt or incomplete (not readable " in row
    assert f"; delete the run folder {run} to run it again " in row


def test_a_damaged_run_file_is_said_beside_the_launchs_failures(mnist_root, tmp_path, capsys,
                                                                monkeypatch):
    run = run_tiny(mnist_root, tmp_path) / "seed_1"
    (run / "accuracies.csv").write_text("a,b\n")
    monkeypatch.setattr(launchers, "run_sequentially", lambda jobs: ["seed_2: diverged"])
    capsys.readouterr()
    assert main.main(["--dataset=PermutedMNIST", f"--path_to_datasets={mnist_root}",
                      f"--results_dir={tmp_path}", *TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 1 run(s) failed: seed_2: diverged; ")
    assert f"{run / 'accuracies.csv'} is corrupt or incomplete (no column" in err


@pytest.mark.parametrize("launcher", ["sequential", "local"])
def test_missing_data_stops_before_creating_a_run_folder(tmp_path, capsys, monkeypatch, launcher):
    import torchvision.datasets.mnist as tv

    monkeypatch.setattr(tv, "download_and_extract_archive",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    code = main.main([f"--path_to_datasets={tmp_path / 'empty'}", f"--launcher={launcher}",
                      f"--results_dir={tmp_path / 'results'}", "--seeds=[1,2]", *TINY])
    err = capsys.readouterr().err.strip()
    # said once, before any run starts: not once per parallel run
    assert code == 2 and err.startswith("error: MNIST is not in") and "--demo" in err
    assert err.count("MNIST is not in") == 1
    assert not list((tmp_path / "results").rglob("*"))  # no folder holding only the plan


@pytest.mark.parametrize("launcher", ["sequential", "local"])
def test_an_unusable_device_stops_before_creating_a_folder(mnist_root, tmp_path, capsys,
                                                           launcher):
    code = main.main([f"--path_to_datasets={mnist_root}", f"--launcher={launcher}",
                      f"--results_dir={tmp_path}", *TINY, "--device=cuda:7"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "cuda:7" in err and "\n" not in err
    assert not list(tmp_path.rglob("*"))


@pytest.mark.parametrize("argv", [["--help"], ["--dataset=SplitMNIST", "-h"]])
def test_help_lists_the_settings_with_their_defaults_and_the_hyperparameters(argv, capsys):
    assert main.main(argv) == 0
    out = capsys.readouterr().out
    assert 'dataset = "PermutedMNIST"' in out and "launcher = " in out  # the block, as set
    assert "wandb_entity = None" in out and "edit these" not in out
    assert "published_regime" in out.split("Hyperparameters")[1]


def test_a_scheduler_that_never_steps_is_said(mnist_root, tmp_path, capsys):
    """ReduceLROnPlateau steps at epoch ends; a run counted in iterations has none."""
    run_tiny(mnist_root, tmp_path / "iterations", extra=["--lr_scheduler=True"])
    assert ("warning: lr_scheduler=True steps at epoch ends, which number_of_iterations does "
            "not have: the learning rate stays 0.001") in capsys.readouterr().out
    run_tiny(mnist_root, tmp_path / "epochs", extra=[
        "--lr_scheduler=True", "--number_of_iterations=None", "--number_of_epochs=1"])
    assert "warning: lr_scheduler" not in capsys.readouterr().out


@pytest.mark.parametrize("overrides, expected", [
    ({}, ("PermutedMNIST", "SplitMNIST")),
    ({"dataset": "SplitMNIST"}, ("SplitMNIST",)),
    ({"dataset": "PermutedMNIST", "part": 0}, ("PermutedMNIST",)),
])
def test_the_demo_runs_both_benchmarks_or_the_one_chosen(overrides, expected):
    assert main.demo_datasets(overrides) == expected


@pytest.mark.parametrize("argument, message", [
    ("--dataset=CIFAR100", "the demo covers PermutedMNIST and SplitMNIST, not 'CIFAR100'"),
    ("--part=1", "the demo has part 0 only, not 1"),
    ("--augmentation=True", "PermutedMNIST has no augmentation"),
    ("--number_of_tasks=6", "SplitMNIST has 5 tasks, not 6"),  # before Permuted MNIST's runs
])
def test_the_demo_refuses_what_it_would_ignore(argument, message, capsys, tmp_path):
    # one iteration, so that a demo run instead of a refusal fails fast
    assert main.main(["--demo", argument, f"--results_dir={tmp_path}",
                      "--number_of_iterations=1", "--device=cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("arguments, message", [
    (["--slurm_partition='gpu'"], "--slurm_partition applies to launcher='slurm', and the "
                                  "launcher is 'sequential': add --launcher=slurm, or leave "
                                  "--slurm_partition out"),
    (["--max_parallel_runs=2"], "--max_parallel_runs applies to launcher='local', and the "
                                "launcher is 'sequential'"),
    (["--launcher=slurm", "--runs_per_gpu=2"], "--runs_per_gpu applies to launcher='local', "
                                               "and the launcher is 'slurm'"),
])
def test_a_launchers_setting_beside_another_launcher_is_refused(arguments, message, capsys,
                                                                tmp_path):
    """The launch audit's --slurm_partition without --launcher=slurm trained on the login
    node, one run after another, without a word."""
    assert main.main(["--demo", *arguments, f"--results_dir={tmp_path}",
                      "--number_of_iterations=1", "--device=cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1
    assert not any(tmp_path.iterdir())
