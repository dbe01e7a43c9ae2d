"""Task-agnostic inference: entropy-based task choice and FeCAM, on cases with known answers."""

import dataclasses

import numpy as np
import torch

import datasets
import hypermask
import task_agnostic
from batches import Task


def test_lowest_entropy_task_wins_and_gives_the_class():
    confident = torch.tensor([[8.0, 0.0], [0.0, 0.0], [0.0, 5.0]])
    unsure = torch.tensor([[0.1, 0.0], [0.0, 9.0], [1.0, 0.0]])
    chosen, predicted = task_agnostic.choose_by_entropy([confident, unsure])
    assert chosen.tolist() == [0, 1, 0]
    assert predicted.tolist() == [0, 1, 1]
    tie = torch.zeros(1, 2)
    assert task_agnostic.choose_by_entropy([tie, tie])[0].tolist() == [0]


def test_shrinkage_by_hand():
    cov = torch.tensor([[2.0, 1.0], [1.0, 4.0]])
    assert torch.allclose(task_agnostic.shrink(cov), torch.tensor([[5.0, 2.0], [2.0, 7.0]]))
    diagonal = torch.tensor([[2.0, 0.0], [0.0, 4.0]])
    assert torch.allclose(task_agnostic.shrink(diagonal), torch.tensor([[5.0, 0.0], [0.0, 7.0]]))


def test_mahalanobis_matches_a_direct_computation():
    rng = np.random.RandomState(0)
    features, prototypes = rng.randn(4, 3), rng.randn(2, 3)
    a = rng.randn(2, 3, 3)
    precisions = a @ a.transpose(0, 2, 1)
    got = task_agnostic.mahalanobis(torch.tensor(features), torch.tensor(prototypes),
                                    torch.tensor(precisions))
    unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
    for n in range(4):
        for c in range(2):
            d = unit(features[n]) - unit(prototypes[c])
            assert np.isclose(got[n, c].item(), d @ precisions[c] @ d)


def test_class_statistics_classify_separated_clusters():
    torch.manual_seed(0)
    directions = torch.eye(4)[:3] * 5  # three classes, along three axes
    labels = torch.arange(3).repeat_interleave(50)
    features = directions[labels] + torch.randn(150, 4)
    prototypes, precisions = task_agnostic.class_statistics(features, labels, 3)
    assert prototypes.shape == (3, 4) and precisions.shape == (3, 4, 4)
    test_labels = torch.arange(3).repeat_interleave(20)
    test = directions[test_labels] + torch.randn(60, 4)
    predicted = task_agnostic.mahalanobis(test, prototypes, precisions).argmin(1)
    assert (predicted == test_labels).float().mean() > 0.95


def test_penultimate_features_are_the_last_hidden_activations():
    config = dataclasses.replace(datasets.DEMO["SplitMNIST"], target_hidden_layers=(4,),
                                 hnet_hidden_layers=(3,), embedding_size=2)
    model = hypermask.build_model(config, input_shape=(6,), num_outputs=2)
    weights = model.task_weights(1, sparsity=30)
    x = torch.randn(5, 6)
    expected = torch.relu(x @ weights[0].T + weights[1])
    assert torch.allclose(task_agnostic.penultimate_features(model, x, weights), expected)


def test_fecam_and_entropy_on_a_synthetic_two_task_setup():
    """Two tasks whose classes live on different input axes: both evaluators find them."""
    torch.manual_seed(0)
    config = dataclasses.replace(datasets.DEMO["SplitMNIST"], number_of_tasks=2,
                                 target_hidden_layers=(16,), hnet_hidden_layers=(8,),
                                 embedding_size=4, sparsity=0, number_of_iterations=150,
                                 augmentation=False)

    def task(offset):
        labels = torch.arange(2).repeat(60)
        x = torch.randn(120, 8) * 0.3
        x[torch.arange(120), offset + labels] += 3.0  # class c of this task: axis offset + c
        return Task(train_x=x[:80], train_y=labels[:80], val_x=x[80:90],
                             val_y=labels[80:90], test_x=x[90:], test_y=labels[90:],
                             num_classes=2, transform=lambda b, training: b, input_shape=(8,))

    tasks = [task(0), task(4)]
    model = hypermask.build_model(config, input_shape=(8,), num_outputs=2)
    for t, data in enumerate(tasks):
        hypermask.train_task(model, data, t, config)
    assert hypermask.evaluate(model, tasks[1], 1, 0) == 100.0
    fecam = task_agnostic.fecam_evaluation(model, tasks, sparsity=0)
    assert [row["tasks_seen"] for row in fecam] == [1, 2]
    assert fecam[0]["accuracy"] == 100.0 and fecam[1]["accuracy"] >= 90.0
    entropy = task_agnostic.entropy_evaluation(model, tasks, sparsity=0)
    assert [row["task"] for row in entropy] == [0, 1]
    assert all(0 <= row["accuracy"] <= row["task_identification_accuracy"] <= 100
               for row in entropy)
