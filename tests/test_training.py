"""What training a task keeps and measures: the best networks (model_selection), the
plateau schedule, whole epochs of batches, each task's own output units, the
forward-transfer entry A[t, t+1] under task t's networks, and the sparsity a run tests at."""

import copy
import dataclasses
import math

import pandas as pd
import pytest
import torch
from conftest import random_task, tiny_options

import datasets
import hypermask
import main
import runs
import task_agnostic
from batches import TrainingBatches

CONFIG = dataclasses.replace(datasets.DEMO["SplitMNIST"], target_hidden_layers=(8,),
                             hnet_hidden_layers=(4,), embedding_size=2, number_of_tasks=2,
                             learning_rate=1e-3, lr_scheduler=False, number_of_iterations=3,
                             number_of_epochs=None, batch_size=16)


def validations_scoring(monkeypatch, scores: list[float]) -> None:
    """Validation every iteration, scoring the given accuracies in turn."""
    scores = iter(scores)
    monkeypatch.setattr(hypermask, "VALIDATION_EVERY", 1)
    real = hypermask.evaluate
    monkeypatch.setattr(hypermask, "evaluate", lambda *args, split="test", **kwargs: next(
        scores) if split == "val" else real(*args, split=split, **kwargs))


def trained_snapshots(config, monkeypatch, scores, task=None) -> tuple[list[dict], dict]:
    """The networks after each iteration of one task, and those train_task leaves."""
    validations_scoring(monkeypatch, scores)
    torch.manual_seed(0)
    model = hypermask.build_model(config, (5,), 2)
    snapshots = []
    hypermask.train_task(model, task or random_task(5, 2), 0, config, after_step=lambda state: (
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})))
    return snapshots, model.state_dict()


def same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[name], b[name]) for name in a)


def test_best_val_keeps_the_networks_of_the_best_validation(monkeypatch):
    config = dataclasses.replace(CONFIG, model_selection="best_val")
    snapshots, kept = trained_snapshots(config, monkeypatch, [50.0, 90.0, 10.0])
    assert not same(snapshots[1], snapshots[2])  # training moved on after the best
    assert same(kept, snapshots[1])  # after iteration 2, validated at 90 %
    monkeypatch.undo()
    snapshots, kept = trained_snapshots(config, monkeypatch, [50.0, 90.0, 90.0])
    assert not same(snapshots[1], snapshots[2]) and same(kept, snapshots[1])  # a tie: the first


def test_last_keeps_the_last_networks(monkeypatch):
    config = dataclasses.replace(CONFIG, model_selection="last")
    snapshots, kept = trained_snapshots(config, monkeypatch, [50.0, 90.0, 10.0])
    assert same(kept, snapshots[2])


def test_the_plateau_schedule_lowers_the_rate_after_six_validations_without_gain(monkeypatch):
    """ReduceLROnPlateau(patience=5, factor=sqrt(0.1)) stepped at each epoch end: the first
    validation sets the best, the 7th is the 6th without gain; the log row of the 8th shows
    the lowered rate (a row records the rate it validated with, before the step)."""
    config = dataclasses.replace(CONFIG, lr_scheduler=True, number_of_iterations=None,
                                 number_of_epochs=8, batch_size=64)  # one batch an epoch
    validations_scoring(monkeypatch, [50.0] * 8)
    torch.manual_seed(0)
    model = hypermask.build_model(config, (5,), 2)
    log = hypermask.train_task(model, random_task(5, 2), 0, config)
    rates = [row["learning_rate"] for row in log]
    assert rates[:7] == [1e-3] * 7 and math.isclose(rates[7], 1e-3 * math.sqrt(0.1))


def test_every_epoch_is_whole_batches_of_each_sample_once():
    """64 samples in batches of 16: four full batches an epoch, never an empty fifth."""
    task = random_task(5, 2, samples=64)
    task.train_x = torch.arange(64.0)[:, None].repeat(1, 5)  # each row names its sample
    batches = TrainingBatches(task, 16)
    for _ in range(3):
        epoch = [next(batches)[0][:, 0] for _ in range(4)]
        assert [len(x) for x in epoch] == [16] * 4
        assert sorted(torch.cat(epoch).tolist()) == list(range(64))


def test_a_task_is_scored_on_its_own_output_units():
    """The shared output layer is as wide as the widest task: a 2-class task's prediction is
    the argmax of its first 2 logits, whatever the others say."""
    torch.manual_seed(0)
    model = hypermask.build_model(CONFIG, (5,), 4)
    task = random_task(5, 2)
    with torch.no_grad():  # logits = the output bias alone: class 0 wins among 0 and 1
        for weight in model.target.internal_params:
            weight.zero_()
        model.target.internal_params[-1].copy_(torch.tensor([10.0, 0.0, 1000.0, 1000.0]))
    expected = 100.0 * (task.test_y == 0).float().mean().item()
    assert hypermask.evaluate(model, task, 0, sparsity=0.0) == expected > 0
    # and trained on them: the cross-entropy of the first 2 logits, not of all 4
    x, y = task.train_x[:8], torch.zeros(8, dtype=torch.long)
    terms = hypermask.training_loss(model, x, y, task_id=0, num_classes=2, sparsity=0.0,
                                    start=hypermask.task_start(model, 0), config=CONFIG)
    logits = model.target(x, weights=model.task_weights(0, 0.0))
    assert torch.equal(terms["task_loss"], torch.nn.functional.cross_entropy(logits[:, :2], y))
    assert terms["task_loss"].item() < 1e-3  # class 0 leads class 1 by the masked bias


def test_forward_transfer_scores_the_next_task_under_the_trained_tasks_networks(
        mnist_root, tmp_path, monkeypatch):
    """A[t, t+1]: task t+1's test set through task t's embedding and mask (its own mask
    would be b_{t+1}, the untrained score)."""
    calls = []

    def accuracy_on_test_split(model, task, task_id, config):
        calls.append((id(task), task_id))
        return 50.0

    monkeypatch.setattr(runs, "accuracy_on_test_split", accuracy_on_test_split)
    assert main.main(tiny_options(mnist_root, tmp_path, "--seeds=[1]")) == 0
    (first, own_first), (second, own_second) = calls[:2]  # b_j: each task under its own,
    assert (own_first, own_second) == (0, 1)  # untrained, mask
    assert calls[2:] == [(first, 0), (second, 0), (first, 0), (second, 1)]


def test_a_run_tests_and_infers_tasks_at_the_configured_sparsity(mnist_root, tmp_path,
                                                                  monkeypatch):
    """accuracies.csv, transfer.csv and task_agnostic.csv measure the networks at p (at
    p = 0 an audit's run read 96.14 where 96.62 was right)."""
    tested, inferred = [], []
    evaluate, entropy_counts = hypermask.evaluate, task_agnostic.entropy_counts

    def evaluate_spy(*args, split="test", **kwargs):
        if split == "test":
            tested.append(kwargs["sparsity"])
        return evaluate(*args, split=split, **kwargs)

    def entropy_spy(model, tasks, sparsity, *args):
        inferred.append(sparsity)
        return entropy_counts(model, tasks, sparsity, *args)

    monkeypatch.setattr(hypermask, "evaluate", evaluate_spy)
    monkeypatch.setattr(task_agnostic, "entropy_counts", entropy_spy)
    assert main.main(tiny_options(mnist_root, tmp_path, "--seeds=[1]", "--sparsity=30")) == 0
    assert len(tested) == 2 + 2 + 2 and set(tested) == {30} and inferred == [30]  # b, A


def test_validation_csv_holds_every_tasks_final_validation_accuracy(mnist_root, tmp_path,
                                                                    monkeypatch):
    """validation.csv: the final networks at p on each task's validation set, for choosing
    configurations without the test sets (an outputs audit found no way to)."""
    expected, calls = [], []
    finish_run, evaluate = runs.finish_run, hypermask.evaluate

    def recording(model, tasks, config, **kwargs):
        expected.extend(evaluate(model, task, j, sparsity=config.sparsity, split="val",
                                 batch_size=7) for j, task in enumerate(tasks))
        monkeypatch.setattr(hypermask, "evaluate", lambda *args, **options: (
            calls.append(options), evaluate(*args, **options))[1])
        finish_run(model, tasks, config, **kwargs)

    monkeypatch.setattr(runs, "finish_run", recording)
    assert main.main(tiny_options(mnist_root, tmp_path, "--seeds=[1]", "--sparsity=30",
                                  "--evaluation_batch_size=7")) == 0
    assert [(c["split"], c["sparsity"], c.get("batch_size")) for c in calls] == [
        ("val", 30, 7), ("val", 30, 7)]
    run = tmp_path / "SplitMNIST_part0_best" / "seed_1"
    table = pd.read_csv(run / "validation.csv")
    assert table["task"].tolist() == [0, 1] and table["accuracy"].tolist() == expected
    summary = pd.read_csv(run.parent / "summary.csv")
    assert summary.loc[0, "validation_ACC"] == pytest.approx(sum(expected) / 2)


class Stopped(Exception):
    pass


def test_a_best_val_task_resumed_mid_task_keeps_the_best_networks_of_before(monkeypatch):
    """The image benchmarks' best_val runs are the long ones that are stopped and resumed:
    the best networks, validated before the stop, are kept after it."""
    config = dataclasses.replace(CONFIG, model_selection="best_val", number_of_iterations=5)
    scores = [50.0, 90.0, 10.0, 20.0, 30.0]  # the best at iteration 2, before the stop
    torch.manual_seed(0)
    task = random_task(5, 2)
    whole, _ = trained_snapshots(config, monkeypatch, scores, task=task)
    monkeypatch.undo()
    saved = {}

    def stop_after_three(state):
        if state.iteration == 3:
            saved.update(state=copy.deepcopy(state.state_dict()),
                         networks=copy.deepcopy(model.state_dict()), rng=torch.get_rng_state())
            raise Stopped

    validations_scoring(monkeypatch, scores)
    torch.manual_seed(0)
    model = hypermask.build_model(config, (5,), 2)
    with pytest.raises(Stopped):
        hypermask.train_task(model, task, 0, config, after_step=stop_after_three)
    model = hypermask.build_model(config, (5,), 2)
    model.load_state_dict(saved["networks"])
    torch.set_rng_state(saved["rng"])
    hypermask.train_task(model, task, 0, config, resume=saved["state"])
    assert same(model.state_dict(), whole[1])  # after iteration 2, validated at 90 %
