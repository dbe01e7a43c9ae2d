"""Checkpoints after every task: an interrupted run resumes to the same results."""

import pandas as pd
import pytest
import torch
from conftest import tiny_options

import datasets
import evaluation
import main
import runs


def run(mnist_root, results, *extra):
    return main.main(tiny_options(mnist_root, results, "--seeds=[3]", "--number_of_tasks=3",
                                  "--number_of_iterations=6", "--batch_size=32",
                                  "--fecam_evaluation=True", *extra))


def interrupt_at_task(monkeypatch, stop_task):
    real = runs.train_with_progress

    def train(model, task, task_id, config, **options):
        if task_id == stop_task:
            raise KeyboardInterrupt
        return real(model, task, task_id, config, **options)

    monkeypatch.setattr(runs, "train_with_progress", train)


def test_interrupted_run_resumes_to_identical_results(mnist_root, tmp_path, monkeypatch, capsys):
    assert run(mnist_root, tmp_path / "whole") == 0
    interrupt_at_task(monkeypatch, 2)
    assert run(mnist_root, tmp_path / "cut") == 130
    run_dir = tmp_path / "cut" / "SplitMNIST_part0_best" / "seed_3"
    assert (run_dir / "checkpoint.pt").exists() and not (run_dir / "final_weights.pt").exists()
    assert pd.read_csv(run_dir / "accuracies.csv")["trained_task"].max() == 1
    assert "rerun the same command" in capsys.readouterr().err
    monkeypatch.undo()
    assert run(mnist_root, tmp_path / "cut") == 0
    assert "resuming after task 2" in capsys.readouterr().out
    assert not (run_dir / "checkpoint.pt").exists()
    whole = tmp_path / "whole" / "SplitMNIST_part0_best" / "seed_3"
    for name in ("accuracies.csv", "transfer.csv", "task_agnostic.csv", "fecam.csv"):
        assert (run_dir / name).read_bytes() == (whole / name).read_bytes(), name
    logs = [pd.read_csv(d / "training_log.csv").drop(columns="seconds") for d in (run_dir, whole)]
    pd.testing.assert_frame_equal(*logs)


def test_a_failed_final_evaluation_resumes_with_other_evaluation_settings(
        mnist_root, tmp_path, monkeypatch, capsys):
    import json

    import torch

    import task_agnostic

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(task_agnostic, "fecam_evaluation", out_of_memory)
    assert run(mnist_root, tmp_path) == 2  # a run failure with one line, not a traceback
    run_dir = tmp_path / "SplitMNIST_part0_best" / "seed_3"
    assert "ran out of GPU memory in the final evaluations" in capsys.readouterr().err
    assert (run_dir / "failed.txt").exists()
    trained = (run_dir / "accuracies.csv").read_bytes()
    assert (run_dir / "checkpoint.pt").exists() and not (run_dir / "final_weights.pt").exists()
    monkeypatch.undo()
    monkeypatch.setattr(runs, "train_with_progress", lambda *a, **k: pytest.fail("retrained"))
    capsys.readouterr()
    assert run(mnist_root, tmp_path, "--evaluation_batch_size=7") == 0
    out = capsys.readouterr().out
    assert "resuming after task 3" in out and "evaluation_batch_size None -> 7" in out
    assert (run_dir / "final_weights.pt").exists() and (run_dir / "fecam.csv").exists()
    assert not (run_dir / "failed.txt").exists()
    assert (run_dir / "accuracies.csv").read_bytes() == trained
    assert json.loads((run_dir / "config.json").read_text())["evaluation_batch_size"] == 7
    # what defines the numbers (here TF32 on a GPU) still may not change
    assert run(mnist_root, tmp_path, "--tf32=True") == 2
    assert "another configuration (tf32: False there, True now)" in capsys.readouterr().err


def test_a_trained_run_without_its_config_json_is_refused(mnist_root, tmp_path, monkeypatch,
                                                          capsys):
    """Resumed under whatever the command now says, its config.json would record what the
    first tasks were not trained with."""
    interrupt_at_task(monkeypatch, 1)
    assert run(mnist_root, tmp_path) == 130
    monkeypatch.undo()
    run_dir = tmp_path / "SplitMNIST_part0_best" / "seed_3"
    (run_dir / "config.json").unlink()
    checkpoint = (run_dir / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    assert run(mnist_root, tmp_path, "--beta=0.9") == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {run_dir} holds a trained run but no config.json, the record of "
                   "its configuration, so it cannot resume as the same run: put the file "
                   "back, or delete the folder to run it again")
    assert (run_dir / "checkpoint.pt").read_bytes() == checkpoint
    assert not (run_dir / "config.json").exists()


def test_corrupt_checkpoint_is_a_one_line_error(mnist_root, tmp_path, monkeypatch, capsys):
    interrupt_at_task(monkeypatch, 1)
    assert run(mnist_root, tmp_path) == 130
    monkeypatch.undo()
    checkpoint = tmp_path / "SplitMNIST_part0_best" / "seed_3" / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:500])
    capsys.readouterr()
    assert run(mnist_root, tmp_path) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: checkpoint {checkpoint} is corrupt") and "\n" not in err


@pytest.mark.parametrize("edit, problem", [
    (lambda state: state.pop("transfer"), "no transfer"),
    (lambda state: state.update(task_in_progress={"iteration": 3, "log": []}),
     "no task_in_progress.optimizer, task_in_progress.scheduler, "),
    (lambda state: state.update(next_task=5), "next_task 5 in a run of 3 tasks"),
    (lambda state: state.update(next_task=2), "its accuracy or transfer rows do not fit 2 "
                                              "tasks done of 3"),
])
def test_a_checkpoint_of_another_version_is_a_one_line_error(mnist_root, tmp_path, monkeypatch,
                                                             capsys, edit, problem):
    """The audit's edited checkpoints: a KeyError deep inside, or (next_task=5) a run of one
    task reported finished."""
    interrupt_at_task(monkeypatch, 1)
    assert run(mnist_root, tmp_path) == 130
    monkeypatch.undo()
    checkpoint = tmp_path / "SplitMNIST_part0_best" / "seed_3" / "checkpoint.pt"
    state = torch.load(checkpoint, weights_only=True)
    edit(state)
    torch.save(state, checkpoint)
    capsys.readouterr()
    assert run(mnist_root, tmp_path) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: checkpoint {checkpoint} is corrupt or incomplete ({problem}")
    assert err.endswith("; delete it to restart this run from its first task\n")
    assert not (checkpoint.parent / "final_weights.pt").exists()


def test_evaluation_cli_regenerates_the_tables(mnist_root, tmp_path, capsys):
    assert run(mnist_root, tmp_path) == 0
    experiment = tmp_path / "SplitMNIST_part0_best"
    written = {name: (experiment / name).read_bytes() for name in ("summary.csv", "summary.md")}
    summary = pd.read_csv(experiment / "summary.csv")
    assert {"ACC", "BWT", "FWT", "forgetting", "task_agnostic_accuracy",
            "fecam_accuracy"} <= set(summary.columns)
    assert summary[["FWT", "forgetting", "fecam_accuracy"]].notna().all().all()
    for name in list(written) + ["mean_heatmap.png", "per_task_accuracy.png"]:
        (experiment / name).unlink()
    assert evaluation.main([str(tmp_path)]) == 0
    for name, content in written.items():
        assert (experiment / name).read_bytes() == content, name
    assert (experiment / "mean_heatmap.png").stat().st_size > 1000
    assert (experiment / "per_task_accuracy.png").stat().st_size > 1000


def test_evaluation_cli_refuses_a_folder_without_results(tmp_path, capsys):
    assert evaluation.main([str(tmp_path)]) == 2
    assert "no results" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [[], ["a", "b"]])
def test_evaluation_cli_usage(argv, capsys):
    assert evaluation.main(argv) == 2
    assert "usage" in capsys.readouterr().err


def test_every_job_field_but_the_unrecorded_is_in_config_json(tmp_path):
    """A field that changes numbers must be recorded, or a rerun with another value takes
    the finished run for its own (the ease-of-change audit's gradient-clip knob): each
    field not in runs.UNRECORDED, changed, changes the record."""
    import dataclasses

    config = datasets.get_benchmark("SplitMNIST", 0).best
    job = runs.Job(config, "SplitMNIST", 0, 1, tmp_path / "seed_1", "", "cpu")

    def other(value):
        if isinstance(value, datasets.HyperParameters):
            return dataclasses.replace(value, beta=value.beta * 2)
        return (not value if isinstance(value, bool) else 1 if value is None
                else value + 1 if isinstance(value, int) else f"{value}x")

    fields = [field.name for field in dataclasses.fields(runs.Job)]
    assert set(runs.UNRECORDED) <= set(fields)
    for name in fields:
        if name not in runs.UNRECORDED:
            changed = dataclasses.replace(job, **{name: other(getattr(job, name))})
            assert runs.job_record(changed) != runs.job_record(job), name
