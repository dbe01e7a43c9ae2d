"""A run never trains on nothing: splits that leave a task without data are refused,
batches are checked, and every run records the sizes of its tasks."""

import dataclasses
import json

import pandas as pd
import pytest
import torch
from conftest import config_for, make_cifar100

import datasets
import errors
import evaluation
import main
from batches import Task, TrainingBatches

CPU = torch.device("cpu")
TINY = ["--seeds=[1]", "--number_of_tasks=2", "--number_of_iterations=3",
        "--target_hidden_layers=[8]", "--hnet_hidden_layers=[4]", "--device=cpu"]


# The test files hold 400 MNIST training images (40 per digit), 6 CIFAR-100 and
# 3 Tiny ImageNet training images per class (conftest).
@pytest.mark.parametrize("dataset, part, validation_size, message", [
    ("PermutedMNIST", 0, 400, "PermutedMNIST task 1 has 400 training images and "
                              "validation_size=400 takes them all; lower validation_size"),
    ("SplitMNIST", 0, 1000, "SplitMNIST task 1 has 80 training images and "
                            "validation_size=1000 takes them all; lower validation_size"),
    ("CIFAR100", 0, 60, "CIFAR100 task 1 has 60 training images and validation_size=60 "
                        "takes them all; lower validation_size"),
    ("TinyImageNet", 0, 3, "TinyImageNet task 1 has 15 training images and validation_size=3 "
                           "per class takes them all; lower validation_size"),
    ("CIFAR100_FeCAM_setup", 6, 7, "CIFAR100_FeCAM_setup task 1 has 120 training images and "
                                   "validation_size=7 per class takes them all; lower "
                                   "validation_size"),
])
def test_validation_that_takes_every_training_image_is_refused(
        dataset, part, validation_size, message, mnist_root, cifar_root, tiny_root):
    root = {"TinyImageNet": tiny_root, "CIFAR100": cifar_root,
            "CIFAR100_FeCAM_setup": cifar_root}.get(dataset, mnist_root)
    config = config_for(dataset, part, validation_size=validation_size, batch_size=1)
    with pytest.raises(errors.UserError) as error:
        datasets.load_tasks(dataset, part, config, seed=1, root=root, device=CPU)
    assert str(error.value) == message


@pytest.mark.parametrize("dataset, part, validation_size, training", [
    ("PermutedMNIST", 0, 390, 10), ("SplitMNIST", 0, 75, 5), ("CIFAR100", 0, 50, 10),
    ("TinyImageNet", 0, 2, 5), ("CIFAR100_FeCAM_setup", 2, 5, 3)])
def test_fewer_training_images_than_a_batch_are_refused(
        dataset, part, validation_size, training, mnist_root, cifar_root, tiny_root):
    root = {"TinyImageNet": tiny_root, "CIFAR100": cifar_root,
            "CIFAR100_FeCAM_setup": cifar_root}.get(dataset, mnist_root)
    config = config_for(dataset, part, validation_size=validation_size, batch_size=training + 1)
    with pytest.raises(errors.UserError, match=rf"^{dataset} task \d+ keeps {training} "
                       rf"training images after validation_size={validation_size}.*, fewer "
                       rf"than one batch \(batch_size={training + 1}\); lower batch_size"):
        datasets.load_tasks(dataset, part, config, seed=1, root=root, device=CPU)
    config = dataclasses.replace(config, batch_size=training)  # exactly one batch: fits
    datasets.load_tasks(dataset, part, config, seed=1, root=root, device=CPU)


def tasks_of(labels, num_classes=2, test=2):
    """Hand-made tasks: (train labels, validation labels) per task."""
    if isinstance(test, int):  # how many test images, their labels in turn; else the labels
        test = [i % num_classes for i in range(test)]

    def task(train, val):
        return Task(
            train_x=torch.zeros(len(train), 4), train_y=torch.tensor(train, dtype=torch.long),
            val_x=torch.zeros(len(val), 4), val_y=torch.tensor(val, dtype=torch.long),
            test_x=torch.zeros(len(test), 4), test_y=torch.tensor(test, dtype=torch.long),
            num_classes=num_classes, transform=lambda x, training: x, input_shape=(4,))

    return [task(train, val) for train, val in labels]


@pytest.mark.parametrize("labels, test, message", [
    ([([0, 1], [0]), ([], [])], 2, "SplitMNIST task 2 has no training images: the data hold "
                                   "none of its classes; check the files in path_to_datasets"),
    ([([0, 1], [0])], 0, "SplitMNIST task 1 has no test images"),
    ([([0, 0, 0], [1, 1])], 2, "SplitMNIST task 1 label 1 has 2 training images and "
                               "validation_size=5 takes them all; lower validation_size"),
    ([([0, 0, 0], [0])], 2, "SplitMNIST task 1 has no training images of its label 1"),
    ([([0, 1], [0])], [0, 0], "SplitMNIST task 1 has no test images of its label 1: check the "
                              "files in path_to_datasets"),
])
def test_tasks_missing_data_or_a_class_are_refused(labels, test, message):
    config = config_for("SplitMNIST", 0, validation_size=5, batch_size=1)
    with pytest.raises(errors.UserError, match=f"^{message}"):
        datasets.check_task_sizes(tasks_of(labels, test=test), "SplitMNIST", config)
    datasets.check_task_sizes(tasks_of([([0, 1], [0])], test=[0, 1]), "SplitMNIST", config)


def test_a_missing_class_is_named_by_its_task_counted_from_1_and_its_class_id():
    config = config_for("SplitMNIST", 0, validation_size=5, batch_size=1)
    tasks = tasks_of([([0, 1], [0]), ([0], [0])], test=[0, 1])
    with pytest.raises(errors.UserError, match=r"^SplitMNIST task 2 has no training images of "
                       r"its class 3 \(label 1\)"):
        datasets.check_task_sizes(tasks, "SplitMNIST", config, classes=[[0, 1], [2, 3]])


@pytest.mark.parametrize("classes, message", [
    ((50, 50), "has no training images: the data hold none of its classes"),
    ((50, 100), "has no training images: the data hold none of its classes"),
    ((100, 50), "has no test images: the test data hold none of its classes"),
    ((55, 100), r"has no training images of its class 55 \(label 5\): check the files"),
    ((100, 55), r"has no test images of its class 55 \(label 5\): check the files")])
def test_cifar_files_lacking_a_tasks_classes_are_refused_in_one_line(classes, message,
                                                                     tmp_path):
    """Split CIFAR-100 part 0's task 6 holds classes 50..59; these files stop there (before,
    files without classes 50..99 raised an IndexError from deep inside)."""
    make_cifar100(tmp_path, classes=classes)
    config = config_for("CIFAR100", 0, validation_size=1, batch_size=1)
    with pytest.raises(errors.UserError, match=f"^CIFAR100 task 6 {message}"):
        datasets.load_tasks("CIFAR100", 0, config, seed=1, root=tmp_path, device=CPU)


def test_training_batches_refuse_an_empty_task_and_non_finite_input():
    empty = tasks_of([([], [0])])[0]
    with pytest.raises(RuntimeError, match="no training samples"):
        next(TrainingBatches(empty, 4))
    task = tasks_of([([0, 1, 1], [0])])[0]
    x, y = next(TrainingBatches(task, 4))
    assert x.shape == (3, 4) and sorted(y.tolist()) == [0, 1, 1]
    task.transform = lambda x, training: x / 0  # 0/0: NaN
    with pytest.raises(RuntimeError, match="NaN or infinite"):
        next(TrainingBatches(task, 4))


def test_the_issues_run_stops_at_once_with_one_line(mnist_root, tmp_path, capsys):
    """Issue 17: Split MNIST validates on 1,000 images per task; these tasks have 80."""
    code = main.main(["--dataset=SplitMNIST", "--create_grid_search=True", "--seeds=[1]",
                      "--number_of_iterations=100", f"--path_to_datasets={mnist_root}",
                      f"--results_dir={tmp_path}", "--device=cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == ("error: SplitMNIST task 1 has 80 training images and "
                                 "validation_size=1000 takes them all; lower validation_size")
    assert not (tmp_path / "SplitMNIST_part0_grid" / "point_000_seed_1").exists()


def test_a_run_that_just_fits_trains_and_records_its_sizes(mnist_root, tmp_path, capsys):
    """80 images per Split MNIST task: 64 validate, 16 train, one batch of 16."""
    arguments = ["--dataset=SplitMNIST", f"--path_to_datasets={mnist_root}",
                 f"--results_dir={tmp_path}", *TINY, "--batch_size=16"]
    assert main.main([*arguments, "--validation_size=65"]) == 2
    assert "keeps 15 training images" in capsys.readouterr().err
    assert main.main([*arguments, "--validation_size=64"]) == 0
    experiment = tmp_path / "SplitMNIST_part0_best"
    config = json.loads((experiment / "seed_1" / "config.json").read_text())
    sizes = {"training_samples": 16, "validation_samples": 64, "test_samples": 20}
    assert config["task_sizes"] == [sizes, sizes]
    assert config["data_source"] == str(mnist_root.resolve() / "MNIST" / "raw")
    log = pd.read_csv(experiment / "seed_1" / "training_log.csv")
    assert log[["task", *sizes]].drop_duplicates().values.tolist() == [[0, 16, 64, 20],
                                                                       [1, 16, 64, 20]]
    summary = (experiment / "summary.md").read_text()
    assert (f"Data: SplitMNIST, read from {mnist_root.resolve() / 'MNIST' / 'raw'}: 2 tasks "
            "of 16 training, 64 validation and 20 test images.") in summary
    # the sizes describe the run, they do not define it: the rerun finds it finished
    assert main.main([*arguments, "--validation_size=64"]) == 0
    assert "already finished" in capsys.readouterr().out


def test_summary_gives_size_ranges():
    sizes = [{"training_samples": 800, "validation_samples": 200, "test_samples": n}
             for n in (2115, 1902, 1980)]
    assert datasets.task_sizes(tasks_of([([0, 1, 1], [0])])) == [
        {"training_samples": 3, "validation_samples": 1, "test_samples": 2}]
    assert evaluation.data_size(sizes) == ("3 tasks of 800 training, 200 validation and "
                                           "1,902–2,115 test images")
