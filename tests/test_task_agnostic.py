"""Task-agnostic inference: entropy-based task choice and FeCAM, on cases with known answers."""

import dataclasses
import math

import numpy as np
import pytest
import torch

import datasets
import hypermask
import runs
import task_agnostic
from batches import Task


def choose_by_entropy(logits: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The chosen task and class once every mask (one [N, C] logits tensor each) competed."""
    *_, last = task_agnostic.lowest_entropy(map(task_agnostic.entropy_and_class, logits))
    return last


def test_lowest_entropy_task_wins_and_gives_the_class():
    confident = torch.tensor([[8.0, 0.0], [0.0, 0.0], [0.0, 5.0]])
    unsure = torch.tensor([[0.1, 0.0], [0.0, 9.0], [1.0, 0.0]])
    chosen, predicted = choose_by_entropy([confident, unsure])
    assert chosen.tolist() == [0, 1, 0]
    assert predicted.tolist() == [0, 1, 1]
    tie = torch.zeros(1, 2)
    assert choose_by_entropy([tie, tie])[0].tolist() == [0]
    # the same choice as the lowest entropy over every mask at once (first minimum)
    logits = [torch.randn(50, 3, generator=torch.Generator().manual_seed(j)) for j in range(4)]
    entropy = torch.stack([task_agnostic.entropy_and_class(l)[0] for l in logits])
    assert torch.equal(choose_by_entropy(logits)[0], entropy.argmin(0))


def test_incremental_steps_let_only_the_tasks_seen_compete():
    """Step i: the masks of tasks 0..i on the union of their test sets (the authors' FeCAM
    setup); the last step is every mask on every test set, the per-task rows' union."""
    tasks = [random_task_with_labels([0, 1]), random_task_with_labels([1, 0, 0])]
    per_mask = [  # per test set, per mask: (entropy [N], predicted class [N])
        [(torch.tensor([0.9, 0.2]), torch.tensor([0, 1])),
         (torch.tensor([0.1, 0.5]), torch.tensor([1, 1]))],
        [(torch.tensor([0.3, 0.1, 0.9]), torch.tensor([1, 0, 0])),
         (torch.tensor([0.2, 0.4, 0.1]), torch.tensor([1, 1, 0]))]]
    found = [task_agnostic.step_counts(masks, task.test_y, s).tolist()
             for s, (masks, task) in enumerate(zip(per_mask, tasks))]
    steps = task_agnostic.entropy_step_rows(found, tasks)
    # step 1: task 0's mask alone on task 0's test set: task right 2/2, classes 0, 1 right
    # step 2: test set 0 chooses tasks 1, 0 (classes 1, 1): task right 1/2, class right 1/2;
    #         test set 1 chooses tasks 1, 0, 1 (classes 1, 0, 0): task right 2/3, both 2/3
    assert steps == [{"tasks_seen": 1, "task_identification_accuracy": 100.0, "accuracy": 100.0},
                     {"tasks_seen": 2, "task_identification_accuracy": 60.0, "accuracy": 60.0}]
    per_task = task_agnostic.entropy_rows(found, tasks)  # every mask competing: step 2's
    assert [row["accuracy"] for row in per_task] == [50.0, pytest.approx(200 / 3)]
    assert [row["task_identification_accuracy"] for row in per_task] == \
        [50.0, pytest.approx(200 / 3)]  # test set 0 with its mask alone: 100


def random_task_with_labels(labels: list[int]) -> Task:
    """A Task whose test labels are `labels` (its images do not matter here)."""
    x, y = torch.zeros(len(labels), 1), torch.tensor(labels)
    return Task(x, y, x, y, x, y, num_classes=2, transform=lambda batch, training: batch,
                input_shape=(1,))


def test_shrinkage_by_hand():
    cov = torch.tensor([[2.0, 1.0], [1.0, 4.0]])
    assert torch.allclose(task_agnostic.shrink(cov), torch.tensor([[5.0, 2.0], [2.0, 7.0]]))
    diagonal = torch.tensor([[2.0, 0.0], [0.0, 4.0]])
    assert torch.allclose(task_agnostic.shrink(diagonal), torch.tensor([[5.0, 0.0], [0.0, 7.0]]))


def test_shrinkage_averages_only_the_non_zero_off_diagonal_entries():
    """Diagonal mean 4; off-diagonal entries 0, 1, 1 (twice each): only the 1s count."""
    cov = torch.tensor([[2.0, 0.0, 1.0], [0.0, 4.0, 1.0], [1.0, 1.0, 6.0]])
    assert torch.equal(task_agnostic.shrink(cov),
                       torch.tensor([[6.0, 1.0, 2.0], [1.0, 8.0, 2.0], [2.0, 2.0, 10.0]]))


def test_class_statistics_shrink_twice_then_invert_the_correlation():
    """By hand: features (-1, 0), (0, -2), (1, 2) have mean 0 and covariance
    [[1, 1], [1, 4]]. Shrunk once: [[3.5, 2], [2, 6.5]]; twice: [[8.5, 4], [4, 11.5]],
    correlation r = 4 / sqrt(8.5 * 11.5), precision 1 / (1 - r^2) [[1, -r], [-r, 1]]
    (FeCAM's 1e-8 added to every entry moves it by about 1e-8)."""
    features = torch.tensor([[-1.0, 0.0], [0.0, -2.0], [1.0, 2.0]])
    prototypes, precisions = task_agnostic.class_statistics(features, torch.zeros(3).long(), 1)
    r = 4 / math.sqrt(8.5 * 11.5)
    expected = torch.tensor([[1, -r], [-r, 1]], dtype=torch.float64) / (1 - r * r)
    assert torch.equal(prototypes, torch.zeros(1, 2, dtype=torch.float64))
    assert torch.allclose(precisions[0], expected, rtol=0, atol=1e-6)


def test_fecam_counts_an_image_right_only_in_its_own_task_with_its_label():
    """Two tasks of two classes, one test image each. Task 0's image is nearest to task 1's
    class 0, which has its label but not its task: wrong. Task 1's image is nearest to its
    own class 1: right. With task 0 alone, its image's nearest class is its class 0."""
    distance = [[torch.tensor([[1.0, 5.0]]), torch.tensor([[0.5, 9.0]])],
                [torch.tensor([[9.0, 9.0]]), torch.tensor([[3.0, 2.0]])]]
    labels = [torch.tensor([0]), torch.tensor([1])]
    assert task_agnostic.fecam_rows(distance, labels) == [
        {"tasks_seen": 1, "accuracy": 100.0}, {"tasks_seen": 2, "accuracy": 50.0}]


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

    tasks = [separable_task(0), separable_task(4)]
    model = hypermask.build_model(config, input_shape=(8,), num_outputs=2)
    for t, data in enumerate(tasks):
        hypermask.train_task(model, data, t, config)
    assert hypermask.evaluate(model, tasks[1], 1, sparsity=0) == 100.0
    fecam = task_agnostic.fecam_evaluation(model, tasks, sparsity=0)
    assert [row["tasks_seen"] for row in fecam] == [1, 2]
    assert fecam[0]["accuracy"] == 100.0 and fecam[1]["accuracy"] >= 90.0
    entropy = task_agnostic.entropy_evaluation(model, tasks, sparsity=0)
    assert [row["task"] for row in entropy] == [0, 1]
    # each task's network is confident on its own axes only: the lowest entropy finds the
    # task (a highest-entropy choice would pick the other task for most samples)
    assert all(row["task_identification_accuracy"] >= 90 and row["accuracy"] >= 90
               for row in entropy)
    # with evaluation_batch_size, in chunks of at most that many images and, without
    # batch statistics in the network, the same numbers
    batches, forward = [], model.target.forward
    model.target.forward = lambda x, **kwargs: batches.append(len(x)) or forward(x, **kwargs)
    assert task_agnostic.entropy_evaluation(model, tasks, sparsity=0, batch_size=7) == entropy
    assert max(batches) == 7 and len(batches) > 2 * len(tasks)


def statistics_spy(monkeypatch) -> list:
    """Record every call of class_statistics: (number of samples, prototypes, precisions)."""
    calls, real = [], task_agnostic.class_statistics

    def spy(features, labels, num_classes):
        prototypes, precisions = real(features, labels, num_classes)
        calls.append((len(features), prototypes, precisions))
        return prototypes, precisions

    monkeypatch.setattr(task_agnostic, "class_statistics", spy)
    return calls


def separable_task(offset: int) -> Task:
    """Two classes on input axes offset and offset + 1 (class c: axis offset + c): 80 training,
    10 validation and 30 test samples."""
    labels = torch.arange(2).repeat(60)
    x = torch.randn(120, 8) * 0.3
    x[torch.arange(120), offset + labels] += 3.0
    return Task(train_x=x[:80], train_y=labels[:80], val_x=x[80:90], val_y=labels[80:90],
                test_x=x[90:], test_y=labels[90:], num_classes=2,
                transform=lambda b, training: b, input_shape=(8,))


def test_fecam_statistics_come_from_the_training_split_only(monkeypatch):
    """As the authors' extract_training_set_from_all_tasks (train_iterator): validation
    samples, here replaced by outliers, change nothing unless asked for."""
    torch.manual_seed(0)
    config = dataclasses.replace(datasets.DEMO["SplitMNIST"], target_hidden_layers=(16,),
                                 hnet_hidden_layers=(8,), embedding_size=4, sparsity=0)
    model = hypermask.build_model(config, input_shape=(8,), num_outputs=2)
    tasks = [separable_task(0), separable_task(4)]
    outliers = [dataclasses.replace(task, val_x=task.val_x * 50 + 20) for task in tasks]
    results = {}
    for name, data, with_validation in (("plain", tasks, False), ("outliers", outliers, False),
                                        ("with validation", tasks, True),
                                        ("with outliers", outliers, True)):
        calls = statistics_spy(monkeypatch)
        accuracy = task_agnostic.fecam_evaluation(model, data, sparsity=0,
                                                  with_validation=with_validation)
        results[name] = (calls, accuracy)
        monkeypatch.undo()
    (plain, accuracy), (outlying, outlier_accuracy) = results["plain"], results["outliers"]
    assert [n for n, _, _ in plain] == [len(task.train_y) for task in tasks]  # 80 each
    assert all(torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])
               for a, b in zip(plain, outlying)) and accuracy == outlier_accuracy
    with_validation, with_outliers = results["with validation"][0], results["with outliers"][0]
    assert [n for n, _, _ in with_validation] == [90, 90]
    assert not torch.equal(with_validation[0][1], with_outliers[0][1])


def test_each_tasks_fecam_statistics_are_taken_under_its_own_mask(monkeypatch):
    """Task t's class statistics: its training images under its own embedding's mask (under
    the last task's, FeCAM fell from 100 to 63 % in an audit)."""
    torch.manual_seed(0)
    config = dataclasses.replace(datasets.DEMO["SplitMNIST"], target_hidden_layers=(16,),
                                 hnet_hidden_layers=(8,), embedding_size=4)
    model = hypermask.build_model(config, input_shape=(8,), num_outputs=2)
    tasks = [separable_task(0), separable_task(4), separable_task(2)]
    seen, real = [], task_agnostic.task_features

    def spy(model, task, images, weights, batch_size):
        seen.append((images, weights))
        return real(model, task, images, weights, batch_size)

    monkeypatch.setattr(task_agnostic, "task_features", spy)
    task_agnostic.fecam_evaluation(model, tasks, sparsity=30)
    with torch.no_grad():
        masked = [model.task_weights(t, 30) for t in range(len(tasks))]
    for t, task in enumerate(tasks):
        weights, = [w for images, w in seen if images is task.train_x]
        assert all(torch.equal(a, b) for a, b in zip(weights, masked[t]))
        assert not all(torch.equal(a, b) for a, b in zip(weights, masked[t - 1]))


def test_task_inference_reads_only_each_tasks_own_output_units():
    """An output layer wider than a task (the FeCAM setup: 50 units, tasks of 10 classes):
    the entropy and the class of a task's mask come from its own units only."""
    torch.manual_seed(0)
    model = hypermask.build_model(dataclasses.replace(
        datasets.DEMO["SplitMNIST"], target_hidden_layers=(8,), hnet_hidden_layers=(4,),
        embedding_size=2), input_shape=(5,), num_outputs=4)
    with torch.no_grad():  # logits = the output bias: units 2, 3 would win and be sure
        for weight in model.target.internal_params:
            weight.zero_()
        model.target.internal_params[-1].copy_(torch.tensor([3.0, 0.0, 50.0, 50.0]))
    tasks = [dataclasses.replace(random_task_with_labels(labels), test_x=torch.zeros(
        len(labels), 5), input_shape=(5,)) for labels in ([0, 0, 1], [0, 1])]
    found = task_agnostic.entropy_counts(model, tasks, sparsity=0)
    # task 0's mask is chosen for every image; it predicts class 0 (its units 0, 1), right
    # for two of test set 0's images (units 2, 3 would predict class 2: none right)
    assert found == [[[3, 2], [3, 2]], [[0, 0], [0, 0]]]


def test_percentages_are_exact_counts_not_float32_means():
    task = random_task_with_labels([0] * 1000)
    row, = task_agnostic.entropy_rows([[[564, 564]]], [task])
    assert row["accuracy"] == 56.4  # a float32 mean gives 56.40000104904175


def test_a_class_without_fecam_statistics_is_named_not_a_linear_algebra_error():
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2])
    features = torch.rand(7, 4)
    features[labels == 1] = 0.5  # the same features for every image of class 1: cov 0
    with pytest.raises(task_agnostic.DegenerateClass, match=r"^its class 1 \(3 images\) has "
                                                            "the same penultimate features"):
        task_agnostic.class_statistics(features, labels, 2)
    with pytest.raises(task_agnostic.DegenerateClass, match=r"^its class 2 has 1 image\(s\)"):
        task_agnostic.class_statistics(torch.rand(7, 4), labels, 3)


def test_one_feature_gives_statistics_as_the_shrunk_variance_does():
    """A penultimate layer of one unit: torch.cov returns a number, not a [1, 1] matrix."""
    features, labels = torch.tensor([[1.0], [3.0], [2.0], [4.0]]), torch.tensor([0, 0, 1, 1])
    prototypes, precisions = task_agnostic.class_statistics(features, labels, 2)
    assert prototypes.flatten().tolist() == [2.0, 3.0]
    assert precisions.shape == (2, 1, 1)  # a correlation of 1, pseudo-inverted
    assert precisions.flatten().tolist() == pytest.approx([1.0, 1.0])


def test_a_run_whose_fecam_is_undefined_fails_in_one_line_and_finishes_without_it(
        mnist_root, tmp_path, monkeypatch, capsys):
    from test_resume import run

    monkeypatch.setattr(task_agnostic, "task_features",  # a network whose units all died
                        lambda model, task, images, weights, batch_size: torch.zeros(
                            len(images), 8))
    assert run(mnist_root, tmp_path) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: 1 run(s) failed: ") and error.endswith(
        "penultimate features for every image; rerun the same command with "
        "--fecam_evaluation=False to finish the run without FeCAM")
    assert "FeCAM has no class statistics for task 1: its class 0 (" in error
    run_dir = tmp_path / "SplitMNIST_part0_best" / "seed_3"
    assert not (run_dir / "task_agnostic_steps.csv").exists()  # written beside fecam.csv only
    for name in ("fecam.csv", "task_agnostic_steps.csv"):  # as a launch stopped later leaves
        (run_dir / name).write_text("tasks_seen,accuracy\n1,50.0\n")
    monkeypatch.undo()
    assert run(mnist_root, tmp_path, "--fecam_evaluation=False") == 0
    assert (run_dir / "final_weights.pt").exists() and not (run_dir / "fecam.csv").exists()
    assert not (run_dir / "task_agnostic_steps.csv").exists()  # the summaries report neither
    assert "resuming" in capsys.readouterr().out  # not trained again


def test_fecam_bytes_are_one_float64_matrix_per_class_of_the_penultimate_width():
    """The numbers audit's case: Tiny ImageNet's ZenkeNet (12,544 features), 200 classes:
    252 GB, which would fail only after all 40 tasks had trained."""
    config = dataclasses.replace(datasets.get_benchmark("TinyImageNet", 1).best,
                                 hnet_hidden_layers=(2,), embedding_size=2)
    model = hypermask.build_model(config, input_shape=(64, 64, 3), num_outputs=5)
    x = torch.rand(2, 64, 64, 3)
    width = task_agnostic.penultimate_features(model, x.flatten(1),
                                               model.task_weights(0, sparsity=0)).shape[1]
    assert width == 12544
    labels = torch.arange(5)  # 5 classes a task; the output layer may be wider (published)
    tasks = [Task(labels, labels, labels, labels, labels, labels, num_classes=50,
                  transform=None, input_shape=())] * 40
    assert sum(runs.trained_classes(tasks)) == 200
    assert task_agnostic.fecam_bytes(model, 200) == 200 * 12544 ** 2 * 8


def test_a_fecam_that_cannot_fit_is_refused_before_training(mnist_root, tmp_path, monkeypatch,
                                                            capsys):
    from test_resume import run

    import machine

    monkeypatch.setattr(machine, "total_memory", lambda device: 1000)
    assert run(mnist_root, tmp_path) == 2  # with --fecam_evaluation=True
    assert capsys.readouterr().err == (
        "error: fecam_evaluation needs 3 kB for its 6 class precision matrices (float64, one "
        "per class, as wide as the output layer's input), more than the 1 kB of cpu ("
        f"{torch.get_num_threads()} CPU thread(s)); set fecam_evaluation=False\n")
    assert not (tmp_path / "SplitMNIST_part0_best" / "seed_3").exists()  # nothing trained
    assert run(mnist_root, tmp_path, "--fecam_evaluation=False") == 0
