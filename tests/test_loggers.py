"""Loggers: TensorBoard's event files read back with TensorBoard's own reader, W&B's offline
run read back from the file W&B writes, the same results with and without loggers, resumed
runs that continue their curves, and where a run ran in its config.json."""

import importlib.util
import json
import struct
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import run_folder, tiny_options

import checkpoints
import evaluation
import hypermask
import main
import machine
import runs

ITERATIONS = 12
TRAINING_TAGS = {f"train/{name}" for name in ("loss", "task_loss", "hnet_term", "target_term",
                                               "sparsity", "validation_sparsity",
                                               "learning_rate",
                                               "validation_accuracy")}
RESULTS = ("accuracies.csv", "transfer.csv", "task_agnostic.csv")
# The loggers' packages are optional (requirements.txt installs them, as CI does).
needs_loggers = pytest.mark.skipif(
    not all(importlib.util.find_spec(name) for name in ("tensorboard", "wandb")),
    reason="optional: pip install tensorboard wandb")


@pytest.fixture(autouse=True)
def validate_often(monkeypatch):
    """A validation (a log row) after iterations 1, 6, 11 and 12 of every task."""
    monkeypatch.setattr(hypermask, "VALIDATION_EVERY", 5)


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    """W&B without a network or an account; its settings and caches inside tmp_path."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR",
                 "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb_home" / name.lower()))
    return tmp_path / "wandb_home" / "wandb_dir" / "wandb"


def run(mnist_root, results, *extra, seeds="[3]"):
    return main.main(tiny_options(mnist_root, results, "--number_of_tasks=3",
                                  f"--number_of_iterations={ITERATIONS}", f"--seeds={seeds}",
                                  *extra))


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar curve of the run's TensorBoard folder, as TensorBoard's reader sees it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    reader = EventAccumulator(str(run_dir / "tensorboard"))
    reader.Reload()
    return {tag: [(event.step, event.value) for event in reader.Scalars(tag)]
            for tag in reader.Tags()["scalars"]}


def wandb_records(path: Path) -> list:
    """The records of a .wandb file: W&B's header (":W&B", 7 bytes), then LevelDB's log
    format (32 KiB blocks of chunks: crc32, length, type) holding wandb_internal_pb2.Record."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pending, position = [], b"", 7
    while position + 7 <= len(data):
        if 32768 - position % 32768 < 7:  # a block's zero-filled tail
            position += 32768 - position % 32768
            continue
        length, kind = struct.unpack("<HB", data[position + 4:position + 7])
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a whole record, or the last chunk of one
            records.append(wandb_internal_pb2.Record.FromString(pending))
            pending = b""
    return records


def offline_runs(wandb_dir: Path, run_id: str) -> list[list]:
    """The records of every offline W&B run with this id, oldest first."""
    files = sorted(wandb_dir.glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    return [wandb_records(path) for path in files]


def history(records: list) -> dict[int, dict]:
    """W&B's history rows by step: {step: {key: value}}."""
    rows = {}
    for record in records:
        if record.WhichOneof("record_type") == "history":
            items = {"/".join(item.nested_key) or item.key: json.loads(item.value_json)
                     for item in record.history.item}
            rows[items.pop("_step")] = {k: v for k, v in items.items() if not k.startswith("_")}
    return rows


def expected_rows(run_dir: Path) -> list[tuple[int, float]]:
    """(global step, loss) of every training-log row: the task's offset plus its iteration."""
    log = pd.read_csv(run_dir / "training_log.csv")
    return list(zip(log["task"] * ITERATIONS + log["iteration"], log["loss"]))


def same_curve(curve, expected) -> None:
    assert [step for step, _ in curve] == [step for step, _ in expected]
    assert [value for _, value in curve] == pytest.approx([v for _, v in expected], rel=1e-6)


@needs_loggers
def test_tensorboard_holds_every_row_the_accuracy_matrix_and_final_metrics(mnist_root, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    assert run(mnist_root, tmp_path, "--logger=tensorboard") == 0
    run_dir = run_folder(tmp_path, 3)
    curves = scalars(run_dir)
    accuracy_tags = {f"accuracy/task_0{j}" for j in range(3)} | {"accuracy/mean"}
    assert set(curves) == TRAINING_TAGS | accuracy_tags | {
        "final/ACC", "final/BWT", "final/FWT", "final/forgetting", "final/validation_ACC",
        "final/task_agnostic_accuracy", "final/task_identification_accuracy"}
    same_curve(curves["train/loss"], expected_rows(run_dir))
    assert [s for s, _ in curves["train/loss"]] == [1, 6, 11, 12, 13, 18, 23, 24, 25, 30, 35, 36]
    accuracies = pd.read_csv(run_dir / "accuracies.csv")
    for j in range(3):  # after each task t >= j, at the step that ends task t
        rows = accuracies[accuracies["evaluated_task"] == j]
        same_curve(curves[f"accuracy/task_0{j}"],
                   list(zip((rows["trained_task"] + 1) * ITERATIONS, rows["accuracy"])))
    summary = pd.read_csv(run_dir.parent / "summary.csv").iloc[0]
    for metric in ("ACC", "BWT", "FWT", "forgetting"):
        same_curve(curves[f"final/{metric}"], [(3 * ITERATIONS, summary[metric])])
    reader = EventAccumulator(str(run_dir / "tensorboard"))
    reader.Reload()  # the resolved configuration as the run's hyperparameters
    content = reader.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hyperparameters = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    assert hyperparameters.hparams["seed"].number_value == 3
    assert hyperparameters.hparams["number_of_iterations"].number_value == ITERATIONS
    assert hyperparameters.hparams["target_hidden_layers"].string_value == "[8]"


@needs_loggers
def test_wandb_offline_run_is_named_after_the_run_and_grouped_by_experiment(
        mnist_root, tmp_path, offline_wandb):
    assert run(mnist_root, tmp_path / "results", "--logger=wandb",
               "--wandb_project=hypermask-tests", "--wandb_entity=my-lab") == 0
    run_dir = run_folder(tmp_path / "results", 3)
    run_id = (run_dir / "wandb_id.txt").read_text().strip()
    [records] = offline_runs(offline_wandb, run_id)
    [start] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (start.run_id, start.project, start.entity) == (run_id, "hypermask-tests", "my-lab")
    assert start.display_name == "SplitMNIST_part0_best/seed_3"
    assert start.run_group == "SplitMNIST_part0_best"
    config = {item.key: json.loads(item.value_json) for item in start.config.update}
    assert config["seed"] == 3 and config["number_of_iterations"] == ITERATIONS
    logged = history(records)
    assert sorted(logged) == [1, 6, 11, 12, 13, 18, 23, 24, 25, 30, 35, 36]
    assert TRAINING_TAGS <= set(logged[24]) and "accuracy/task_01" in logged[24]
    same_curve([(step, logged[step]["train/loss"]) for step in sorted(logged)],
               expected_rows(run_dir))
    summary = pd.read_csv(run_dir.parent / "summary.csv").iloc[0]
    assert logged[36]["final/ACC"] == pytest.approx(summary["ACC"])


@needs_loggers
def test_loggers_do_not_change_results(mnist_root, tmp_path, offline_wandb):
    assert run(mnist_root, tmp_path / "without") == 0
    assert run(mnist_root, tmp_path / "with", "--logger=['tensorboard','wandb']") == 0
    plain, logged = run_folder(tmp_path / "without", 3), run_folder(tmp_path / "with", 3)
    for name in RESULTS:
        assert (plain / name).read_bytes() == (logged / name).read_bytes(), name
    logs = [pd.read_csv(d / "training_log.csv").drop(columns="seconds") for d in (plain, logged)]
    pd.testing.assert_frame_equal(*logs)
    assert scalars(logged) and (logged / "wandb_id.txt").exists()
    assert not (plain / "tensorboard").exists() and not (plain / "wandb_id.txt").exists()


def interrupt_in_task_1(monkeypatch, save_at: int | None, stop_at: int):
    """Task 1 (the second) saves a mid-task checkpoint after iteration `save_at` (None: no
    mid-task checkpoint), then the process dies after iteration `stop_at`: the rows logged in
    between are not in the checkpoint."""
    real = checkpoints.TaskCheckpoints.__call__

    def after_step(self, training):
        if self.run_state["next_task"] == 1 and training.iteration == save_at:
            self.save(training)
        if self.run_state["next_task"] == 1 and training.iteration == stop_at:
            raise KeyboardInterrupt
        real(self, training)

    monkeypatch.setattr(checkpoints.TaskCheckpoints, "__call__", after_step)


@needs_loggers
@pytest.mark.parametrize("save_at", [4, None], ids=["mid-task checkpoint", "after task 0"])
def test_a_resumed_run_continues_its_curves_without_duplicated_steps(
        mnist_root, tmp_path, monkeypatch, offline_wandb, save_at):
    both = "--logger=['tensorboard','wandb']"
    assert run(mnist_root, tmp_path / "whole", both) == 0
    with monkeypatch.context() as patch:
        interrupt_in_task_1(patch, save_at, stop_at=8)
        assert run(mnist_root, tmp_path / "cut", both) == 130
    run_dir = run_folder(tmp_path / "cut", 3)
    cut = [step for step, _ in scalars(run_dir)["train/loss"]]
    assert cut == [1, 6, 11, 12, 13, 18]  # 18: after the checkpoint, logged, to be redone
    # W&B names an offline run's folder to the second (offline-run-YYYYmmdd_HHMMSS-<id>): the
    # resumed process gets a W&B folder of its own, so that a resume within the same second
    # cannot write into the interrupted process's folder
    resumed_wandb = tmp_path / "wandb_resumed"
    monkeypatch.setenv("WANDB_DIR", str(resumed_wandb))
    assert run(mnist_root, tmp_path / "cut", both) == 0
    whole = run_folder(tmp_path / "whole", 3)
    assert (run_dir / "accuracies.csv").read_bytes() == (whole / "accuracies.csv").read_bytes()
    resumed, expected = scalars(run_dir), scalars(whole)
    assert set(resumed) == set(expected)
    for tag, curve in expected.items():  # every step once, with the uninterrupted values
        same_curve(resumed[tag], curve)
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 1
    run_id = (run_dir / "wandb_id.txt").read_text().strip()
    (first,), (second,) = (offline_runs(folder, run_id)  # one W&B run, continued
                           for folder in (offline_wandb, resumed_wandb / "wandb"))
    assert [r.run.run_id for r in second if r.WhichOneof("record_type") == "run"] == [run_id]
    assert max(history(first)) == 18 and max(history(second)) == 3 * ITERATIONS


@needs_loggers
def test_a_logger_turned_on_when_a_run_resumes_shows_the_whole_run(mnist_root, tmp_path,
                                                                  monkeypatch, capsys):
    """Loggers do not define a run: switched on (or off) at a rerun, the run resumes and the
    new logger gets everything the checkpoint holds, then the rest."""
    assert run(mnist_root, tmp_path / "whole", "--logger=tensorboard") == 0
    with monkeypatch.context() as patch:
        interrupt_in_task_1(patch, save_at=4, stop_at=8)
        assert run(mnist_root, tmp_path / "cut") == 130
    run_dir = run_folder(tmp_path / "cut", 3)
    assert not (run_dir / "tensorboard").exists()
    capsys.readouterr()
    assert run(mnist_root, tmp_path / "cut", "--logger=tensorboard") == 0
    assert "resuming task 2 at iteration 4" in capsys.readouterr().out
    resumed, expected = scalars(run_dir), scalars(run_folder(tmp_path / "whole", 3))
    assert set(resumed) == set(expected)
    for tag, curve in expected.items():
        same_curve(resumed[tag], curve)
    assert run(mnist_root, tmp_path / "cut", "--logger=wandb", "--wandb_project=other") == 0
    assert "already finished" in capsys.readouterr().out
    assert not (run_dir / "wandb_id.txt").exists()


@pytest.mark.parametrize("logger", ["tensorboard", "wandb"])
def test_a_logger_that_is_not_installed_is_a_one_line_error(mnist_root, tmp_path, monkeypatch,
                                                           capsys, logger):
    monkeypatch.setitem(sys.modules, logger, None)  # import fails as if not installed
    assert run(mnist_root, tmp_path, f"--logger={logger}") == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: --logger={logger} needs the {logger} package, which is not "
                   f"installed: pip install {logger}")
    assert not any(tmp_path.iterdir())  # refused before anything ran


@pytest.mark.parametrize("value", ["mlflow", "['tensorboard','mlflow']", "3"])
def test_an_unknown_logger_is_a_one_line_error(mnist_root, tmp_path, capsys, value):
    assert run(mnist_root, tmp_path, f"--logger={value}") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --logger") and "\n" not in err


def test_config_records_where_the_run_ran_without_defining_the_run(mnist_root, tmp_path,
                                                                   monkeypatch, capsys):
    real = runs.train_with_progress

    def stop_at_task_1(model, task, task_id, config, **options):
        if task_id == 1:
            raise KeyboardInterrupt
        return real(model, task, task_id, config, **options)

    monkeypatch.setattr(runs, "train_with_progress", stop_at_task_1)
    assert run(mnist_root, tmp_path, seeds="[3,4]") == 130
    monkeypatch.undo()
    path = run_folder(tmp_path, 3) / "config.json"
    here = json.loads(path.read_text())
    assert here["device"] == "cpu" and here["device_name"] == machine.device_name(
        torch.device("cpu")) != ""
    assert here["torch_version"] == torch.__version__ and here["hypnettorch_version"] == "0.0.4"
    assert here["threads"] == machine.cpu_threads()
    assert here["code_version"] == machine.code_version() is not None
    elsewhere = {"device_name": "Another CPU", "torch_version": "2.99.0",
                 "hypnettorch_version": "0.0.5", "device": "cuda", "threads": 96,
                 "code_version": "0123456789ab"}
    path.write_text(json.dumps(here | elsewhere))  # as if it began on another machine
    capsys.readouterr()
    assert run(mnist_root, tmp_path, seeds="[3,4]") == 0  # resumes here
    out = capsys.readouterr().out
    assert "resuming with changed settings" in out and "'Another CPU' -> " in out
    assert "'2.99.0' -> " in out and "96 -> " in out and "'0123456789ab' -> " in out
    assert json.loads(path.read_text()) == here
    # runs of one configuration on two machines are one row of the summary
    other = run_folder(tmp_path, 4) / "config.json"
    other.write_text(json.dumps(json.loads(other.read_text()) | elsewhere))
    summary = evaluation.summarize_experiment(run_folder(tmp_path, 3).parent)
    table = [line for line in summary.splitlines() if line.startswith("|")]
    assert len(table) == 3 and table[2].split("|")[1].strip() == "2"  # header, rule, 2 seeds
