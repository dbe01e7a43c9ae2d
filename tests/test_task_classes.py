"""Which classes each task holds: the authors' Tiny ImageNet tasks, task_classes in
config.json and the log, old run folders and the comparison of result sets."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import make_tiny_imagenet
from test_resume import interrupt_at_task
from test_resume import run as run_split_mnist
from test_tables import make_run

import data_files
import datasets
import errors
import evaluation
import folders
import main
import runs

CPU = torch.device("cpu")


def config_for(dataset, part, **changes):
    return dataclasses.replace(datasets.get_benchmark(dataset, part).best, **changes)


def authors_tiny_imagenet_tasks(folder, seed: int) -> list[list[str]]:
    """The authors' prepare_tinyimagenet_tasks, written out: class i is line i of wnids.txt;
    the class order is np.random.default_rng(seed).permutation(200); task t holds positions
    5t..5t+4, its labels 0..4 following the sorted class ids (their handler sorts them)."""
    wnids = (folder / "wnids.txt").read_text().split()
    order = np.random.default_rng(seed).permutation(200)
    return [[wnids[c] for c in sorted(order[5 * t:5 * t + 5])] for t in range(40)]


def annotated_wnids(folder) -> list[str]:
    """The wnid of every val/ image, in val_annotations.txt's order (the stored test order)."""
    lines = (folder / "val" / "val_annotations.txt").read_text().splitlines()
    return [line.split("\t")[1] for line in lines if line.strip()]


# ------------------------------------------------------------------- Tiny ImageNet


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_tiny_imagenet_tasks_hold_the_authors_classes(tiny_root, seed):
    folder = tiny_root / "tiny-imagenet-200"
    wnids = (folder / "wnids.txt").read_text().split()
    assert wnids != sorted(wnids)  # the official file is not sorted either
    expected = authors_tiny_imagenet_tasks(folder, seed)
    config = config_for("TinyImageNet", 1, validation_size=1, batch_size=2)
    assert datasets.task_classes("TinyImageNet", 1, config, seed=seed, root=tiny_root) == expected
    tasks = datasets.load_tasks("TinyImageNet", 1, config, seed=seed, root=tiny_root, device=CPU)
    test_x = data_files.load_tiny_imagenet(tiny_root)[2]  # pixels, in val_annotations' order
    annotated = annotated_wnids(folder)
    for t in (0, 1, 21, 39):
        members = [i for i, wnid in enumerate(annotated) if wnid in expected[t]]
        assert torch.equal(tasks[t].test_x, torch.from_numpy(test_x[members]))
        assert tasks[t].test_y.tolist() == [expected[t].index(annotated[i]) for i in members]
        assert (torch.bincount(tasks[t].train_y) == 2).all()
    assert sorted(sum(expected, [])) == sorted(wnids)  # every class once


def test_the_cache_is_read_in_the_line_order_of_wnids_txt(tmp_path):
    """The cache keeps the sorted-wnid numbering that every version wrote: a cache from
    before this numbering, or a wnids.txt reordered since, still reads right."""
    root = make_tiny_imagenet(tmp_path, per_class_train=1)
    folder = root / "tiny-imagenet-200"
    decoded = data_files.load_tiny_imagenet(root)
    cache = folder / "uint8_cache"
    assert np.load(cache / "test_y.npy").tolist() == list(range(200))  # as before: sorted index
    wnids = (folder / "wnids.txt").read_text().split()
    line = [wnids.index(wnid) for wnid in sorted(wnids)]
    assert decoded[3].tolist() == line and decoded[1].tolist() == line  # one image a class
    cached = data_files.load_tiny_imagenet(root)
    assert all(np.array_equal(a, b) for a, b in zip(cached, decoded))
    reordered = wnids[::-1]
    (folder / "wnids.txt").write_text("\n".join(reordered) + "\n")
    assert data_files.load_tiny_imagenet(root)[3].tolist() == [
        reordered.index(wnid) for wnid in sorted(wnids)]


def test_a_missing_or_wrong_wnids_txt_is_a_one_line_error(tmp_path):
    root = make_tiny_imagenet(tmp_path, per_class_train=1)
    data_files.load_tiny_imagenet(root)  # cached
    wnids = root / "tiny-imagenet-200" / "wnids.txt"
    lines = wnids.read_text()
    wnids.unlink()
    with pytest.raises(errors.UserError, match=f"{wnids} is missing; its lines number"):
        data_files.load_tiny_imagenet(root)
    wnids.write_text(lines + lines.split()[0] + "\n")
    with pytest.raises(errors.UserError, match="200 different wnids in 201 lines, not 200"):
        data_files.load_tiny_imagenet(root)


# --------------------------------------------------------- every benchmark's record


@pytest.mark.parametrize("dataset, part, expected", [
    ("PermutedMNIST", 0, [list(range(10))] * 3),
    ("SplitMNIST", 0, [[0, 1], [2, 3], [4, 5]]),
    ("CIFAR100", 1, [list(range(10)), list(range(10, 20)), list(range(20, 30))]),
    ("CIFAR100_FeCAM_setup", 3, [datasets.FECAM_CLASS_ORDER[:50],
                                 datasets.FECAM_CLASS_ORDER[50:60],
                                 datasets.FECAM_CLASS_ORDER[60:70]])])
def test_task_classes_name_what_each_task_holds(mnist_root, cifar_root, dataset, part, expected):
    config = config_for(dataset, part, number_of_tasks=3, validation_size=2, batch_size=2)
    classes = datasets.task_classes(dataset, part, config, seed=1, root=None)
    assert classes == expected
    root = mnist_root if "MNIST" in dataset else cifar_root
    tasks = datasets.load_tasks(dataset, part, config, seed=1, root=root, device=CPU)
    test_y = (data_files.load_mnist(root)[3] if "MNIST" in dataset
              else torch.from_numpy(data_files.load_cifar100(root)[3]))
    for task, names in zip(tasks, classes):  # label i of a task is its i-th class
        if dataset == "PermutedMNIST":
            assert torch.equal(task.test_y, test_y)
        else:
            assert task.test_y.tolist() == [names.index(c) for c in test_y.tolist() if c in names]


@pytest.mark.slow
def test_runs_of_seeds_1_to_3_record_the_authors_tiny_imagenet_classes(tiny_root, tmp_path):
    code = main.main(["--dataset=TinyImageNet", "--part=1", f"--path_to_datasets={tiny_root}",
                      f"--results_dir={tmp_path}", "--seeds=[1, 2, 3]", "--number_of_tasks=2",
                      "--number_of_epochs=1", "--hnet_hidden_layers=[2]", "--embedding_size=4",
                      "--batch_size=8", "--validation_size=1", "--device=cpu"])
    assert code == 0
    for seed in (1, 2, 3):
        config = json.loads((tmp_path / "TinyImageNet_part1_best" / f"seed_{seed}"
                             / "config.json").read_text())
        assert config["task_classes"] == authors_tiny_imagenet_tasks(
            tiny_root / "tiny-imagenet-200", seed)[:2]


# ------------------------------------------------------------------- old run folders


def test_a_run_folder_from_before_task_classes_resumes(mnist_root, tmp_path, monkeypatch, capsys):
    interrupt_at_task(monkeypatch, 2)
    assert run_split_mnist(mnist_root, tmp_path) == 130
    monkeypatch.undo()
    run_dir = tmp_path / "SplitMNIST_part0_best" / "seed_3"
    config = json.loads((run_dir / "config.json").read_text())
    assert config.pop("task_classes") == [[0, 1], [2, 3], [4, 5]]
    (run_dir / "config.json").write_text(json.dumps(config))  # as an earlier version wrote it
    capsys.readouterr()
    assert run_split_mnist(mnist_root, tmp_path) == 0
    out = capsys.readouterr().out
    assert "resuming after task 2" in out and "changed settings" not in out
    assert "task 3/3: classes 4, 5" in out
    assert json.loads((run_dir / "config.json").read_text())["task_classes"][2] == [4, 5]
    assert evaluation.summarize_experiment(run_dir.parent)  # and summarises


def tiny_record(**changes) -> dict:
    return {**datasets.recorded_defaults(), "dataset": "TinyImageNet", "data": "TinyImageNet",
            "part": 1, "seed": 5, **changes}


def test_other_classes_are_another_run(tmp_path):
    old = [["n1", "n2"], ["n3", "n4"]]
    (tmp_path / "config.json").write_text(json.dumps(tiny_record(task_classes=old)))
    assert runs.changed_settings(tmp_path, tiny_record()) == []  # before the data are loaded
    assert runs.changed_settings(tmp_path, tiny_record(task_classes=old)) == []
    with pytest.raises(errors.UserError, match=r"another configuration \(the classes of task 2: "
                                               r"\['n3', 'n4'\] there, \['n4', 'n3'\] now\)"):
        runs.changed_settings(tmp_path, tiny_record(task_classes=[["n1", "n2"], ["n4", "n3"]]))


def test_an_unfinished_tiny_imagenet_run_of_an_earlier_version_is_refused(tmp_path):
    """Its tasks held other classes: resuming would mix them. Finished, it is summarised."""
    (tmp_path / "config.json").write_text(json.dumps(tiny_record()))  # no task_classes
    record = tiny_record(task_classes=[["n1"]])
    assert runs.changed_settings(tmp_path, record) == []  # nothing trained yet: starts afresh
    (tmp_path / "accuracies.csv").write_text("")
    with pytest.raises(errors.UserError, match="unfinished TinyImageNet run begun by an earlier "
                                               "version, whose tasks held other classes; delete"):
        runs.finished(tmp_path, record)
    (tmp_path / folders.FINAL_WEIGHTS).write_bytes(b"")
    assert runs.finished(tmp_path, record)
    (tmp_path / "config.json").write_text(json.dumps(tiny_record(dataset="CIFAR100")))
    (tmp_path / folders.FINAL_WEIGHTS).unlink()
    assert not runs.finished(tmp_path, tiny_record(dataset="CIFAR100", task_classes=[[0]]))


# ----------------------------------------------------------------------- --compare


def test_compare_names_seeds_whose_tasks_held_other_classes(tmp_path):
    experiment = "TinyImageNet_part1_best"
    for side, second in (("A", ["n3", "n4"]), ("B", ["n4", "n3"])):
        make_run(tmp_path / side / experiment / "seed_1", task_classes=[["n1", "n2"], ["n3", "n4"]])
        make_run(tmp_path / side / experiment / "seed_2", task_classes=[["n1", "n2"], second])
    make_run(tmp_path / "A" / experiment / "seed_3")  # from before task_classes was recorded
    make_run(tmp_path / "B" / experiment / "seed_3", task_classes=[["n1", "n2"], ["n3", "n4"]])
    text = evaluation.compare(tmp_path / "A", tmp_path / "B")
    assert "Tasks hold other classes in A than in B in TinyImageNet_part1_best, seed(s) 2 " in text
    assert "A's runs of TinyImageNet_part1_best record no task classes (seed(s) 3)" in text
    assert "Configurations differ" not in text
    make_run(tmp_path / "A" / experiment / "seed_4", task_classes=[["n1", "n2"], ["n3", "n4"]])
    make_run(tmp_path / "B" / experiment / "seed_4", task_classes=[["n1", "n2"]])  # fewer tasks
    assert "seed(s) 2 (config.json" in evaluation.compare(tmp_path / "A", tmp_path / "B")
    summary = evaluation.summarize_experiment(tmp_path / "B" / experiment)
    rows = [line for line in summary.splitlines() if line.startswith("|")][2:]
    assert len(rows) == 1  # seeds whose classes differ are still one configuration


def test_every_dataset_has_its_classes_loader_and_folder_and_an_unknown_one_none():
    for (dataset, part), benchmark in datasets.BENCHMARKS.items():
        config = benchmark.best or benchmark.grid_base
        assert len(datasets.class_ids(dataset, part, config, seed=1)) >= config.number_of_tasks
        assert data_files.data_source(dataset, "Data", demo=False).startswith("/")
    # a benchmark added to the table but not to the code that builds it fails loudly, rather
    # than getting another benchmark's classes, files or folder
    config = datasets.get_benchmark("SplitMNIST", 0).best
    for build in (lambda: datasets.class_ids("NoSuchDataset", 0, config, seed=1),
                  lambda: datasets.stored_data("NoSuchDataset", "Data"),
                  lambda: data_files.data_source("NoSuchDataset", "Data", demo=False)):
        with pytest.raises(ValueError, match="NoSuchDataset .*adding-a-benchmark"):
            build()
