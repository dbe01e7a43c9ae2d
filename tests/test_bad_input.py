"""Impossible values, damaged data files and unwritable results: one-line errors, nothing lost."""

import json

import numpy as np
import pytest
from conftest import make_cifar100, make_mnist, make_tiny_imagenet, tiny_options

import data_files
import datasets
import errors
import main
import runs


@pytest.mark.parametrize("argument, message", [
    ("--number_of_iterations=0", "number_of_iterations must be at least 1, not 0"),
    ("--number_of_iterations=None --number_of_epochs=-2",
     "number_of_epochs must be at least 1, not -2"),
    ("--batch_size=0", "batch_size must be at least 1, not 0"),
    ("--number_of_tasks=-1", "number_of_tasks must be at least 1, not -1"),
    ("--learning_rate=0", "learning_rate must be a positive number, not 0.0"),
    ("--learning_rate=-0.001", "learning_rate must be a positive number"),
    ("--beta=-1", "beta must be a number of at least 0, not -1.0"),
    ("--lam=-1", "lam must be a number of at least 0, not -1.0"),
    ("--dataset=CIFAR100 --number_of_iterations=3", "number_of_iterations=3 and "
     "number_of_epochs=200 are both set: set one to None (add --number_of_epochs=None to run "
     "by iterations, or --number_of_iterations=None to run by epochs)"),
    ("--number_of_iterations=None", "neither number_of_iterations nor number_of_epochs is set"),
    ("--sparsity=100", "sparsity is a percentage in [0, 100), not 100"),
    ("--sparsity=-1", "sparsity is a percentage in [0, 100), not -1"),
    ("--target_hidden_layers=[100,0]", "target_hidden_layers are layer sizes of at least 1"),
    ("--chunk_size=0", "chunk_size must be at least 1, not 0"),
    ("--evaluation_batch_size=0", "evaluation_batch_size must be at least 1, not 0"),
    ("--seeds=[]", "--seeds expects None or a list of integers"),
    ("--seeds=[1,-1]", "--seeds must lie between 0 and 2**32 - 1, not [1, -1]"),
    ("--seeds=[4294967296]", "--seeds must lie between 0 and 2**32 - 1"),
    ("--seeds=[1,2,1]", "--seeds repeats 1: give each seed once"),
    ("--results_dir=", "--results_dir is empty: give a folder, e.g. --results_dir=./Results"),
    ("--path_to_datasets=README.md", "--path_to_datasets is a file, README.md: give a folder"),
    ("--device=meta", "--device must be auto, cpu, mps, cuda or cuda:N, not 'meta'"),
    ("--device=cuda:abc", "--device must be auto, cpu, mps, cuda or cuda:N"),
    ("--part=9", "SplitMNIST has no part 9"),
    ("--number_of_tasks=6", "SplitMNIST has 5 tasks, not 6: set number_of_tasks to at most 5"),
    ("--dataset=CIFAR100 --number_of_epochs=None --number_of_tasks=11",
     "CIFAR100 has 10 tasks, not 11"),
    ("--dataset=CIFAR100_FeCAM_setup --part=6 --create_grid_search=True --number_of_tasks=6 "
     "--number_of_epochs=None",
     "CIFAR100_FeCAM_setup has 5 tasks, not 6"),
    ("--demo --number_of_tasks=6 --dataset=SplitMNIST", "SplitMNIST has 5 tasks, not 6"),
    ("--launcher=local --device=cuda:7", "device 'cuda:7' is not usable here"),
    ("--launcher=local --device=mps", "device 'mps' is not usable here"),
    ("--target_network=VGG", "target_network must be one of MLP, ResNet-20"),
    ("--optimizer=sgd", "optimizer must be one of adam, rmsprop"),
    ("--launcher=pbs", "--launcher must be one of sequential, local, slurm, not 'pbs'"),
    ("--max_parallel_runs=0", "--max_parallel_runs must be at least 1, not 0"),
    ("--slurm_cpus_per_run=0", "--slurm_cpus_per_run must be at least 1, not 0"),
    ("--slurm_time_minutes=0", "--slurm_time_minutes must be at least 1"),
    ("--checkpoint_minutes=-5", "--checkpoint_minutes must be at least 0, not -5"),
    ("--demo --create_grid_search=True", "--demo runs each MNIST benchmark's small demo "
                                         "configuration, which has no grid"),
    ("--dataset=PermutedMNIST --augmentation=True", "PermutedMNIST has no augmentation"),
    ("--dataset=CIFAR100 --number_of_epochs=None", "target_hidden_layers applies to the MLP "
                                                   "only; ResNet-20 has a fixed architecture"),
    ("--dataset=CIFAR100 --part=1 --number_of_epochs=None --target_network=MLP "
     "--chunk_embedding_size=9", "chunk_embedding_size applies to a chunked hypernetwork only"),
    ("--batched_augmentation=True", "batched_augmentation applies to the "
                                    "CIFAR100_FeCAM_setup's augmentation only, not to "
                                    "SplitMNIST's"),
])
def test_impossible_values_are_refused_up_front(argument, message, mnist_root, tmp_path,
                                                capsys):
    code = main.main(tiny_options(mnist_root, tmp_path, "--seeds=[1]", *argument.split()))
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err
    assert message in err
    assert not any(tmp_path.iterdir())  # refused before anything was written


@pytest.mark.parametrize("argument, message", [
    ("--target_network=ResNet-20", "target_network ResNet-20 cannot take this dataset's inputs "
                                   "of shape [784]: use MLP"),
    ("--target_network=ZenkeNet", "target_network ZenkeNet cannot take"),
    ("--target_network=ZenkeNet-tiny", "target_network ZenkeNet-tiny cannot take"),
    ("--chunk_size=100000", "chunk_size 100000 exceeds the 6,298 weights the hypernetwork "
                            "produces for this target network"),
    ("--target_hidden_layers=[1000000,1000000]", "ran out of CPU memory in building the "
                                                 "networks ("),
])
def test_networks_that_cannot_be_built_are_one_line_errors(argument, message, mnist_root,
                                                           tmp_path, capsys):
    options = tiny_options(mnist_root, tmp_path, "--seeds=[1]", argument)
    if "--target_network" in argument:  # a fixed architecture: no hidden layers to set
        options = [o for o in options if not o.startswith("--target_hidden_layers")]
    code = main.main(options)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err
    assert message in err
    assert not list(tmp_path.rglob("seed_*"))  # before the run's folder


def test_an_impossible_value_in_mains_block_is_refused(monkeypatch, capsys):
    monkeypatch.setattr(main, "launcher", "slurmm")  # a typo in the editable block
    assert main.main([]) == 2
    assert "--launcher must be one of" in capsys.readouterr().err
    monkeypatch.setattr(main, "seeds", (1, 2))  # a tuple where a list is meant
    assert main.main(["--status"]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "(set at the top of main.py: seeds = (1, 2))")


def test_a_setting_missing_from_or_misspelt_in_mains_block_is_refused(monkeypatch, capsys):
    """A commented-out line was a KeyError from deep inside; a misspelt one was ignored,
    its setting keeping its value (the best configuration ran instead of the grid)."""
    monkeypatch.delattr(main, "seeds")
    assert main.main(["--status"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: the settings at the top of main.py lack seeds (deleted or commented out?): "
        "put the line back; the README's settings table gives each default")
    monkeypatch.undo()
    block = main.settings_block()
    monkeypatch.setattr(main, "settings_block", lambda: block + "\ncreate_grid_serach = True")
    assert main.main(["--status"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the settings at the top of main.py set 'create_grid_serach', "
                          "which is no setting (did you mean create_grid_search?)")
    assert "\n" not in err.strip()


def test_a_misspelt_option_gets_a_suggestion(capsys):
    assert main.main(["--datset=SplitMNIST"]) == 2
    assert capsys.readouterr().err.startswith(
        "error: unknown option --datset (did you mean dataset?); settings: ")


def test_damaged_cifar100_and_tiny_imagenet_files_are_named(tmp_path):
    root = make_cifar100(tmp_path / "cifar")
    train = root / "cifar-100-python" / "train"
    train.write_bytes(train.read_bytes()[:2000])  # truncated
    with pytest.raises(errors.UserError, match=f"^{train} is unreadable"):
        data_files.load_cifar100(root)
    root = make_tiny_imagenet(tmp_path / "tiny", per_class_train=1)
    data_files.load_tiny_imagenet(root)  # decodes and caches
    cache = root / "tiny-imagenet-200" / "uint8_cache" / "test_x.npy"
    cache.write_bytes(cache.read_bytes()[:1000])
    with pytest.raises(errors.UserError, match=f"cache file {cache} is unreadable"):
        data_files.load_tiny_imagenet(root)
    np.save(cache, np.zeros((3, 32, 32, 3), dtype=np.uint8))  # a foreign array
    with pytest.raises(errors.UserError, match=f"cache file {cache} is unreadable"):
        data_files.load_tiny_imagenet(root)


def test_tiny_imagenet_cache_labels_that_do_not_fit_their_images_are_named(tmp_path):
    """Labels of another length, not integers or outside the 200 classes: the file is named
    (they were IndexErrors far from the file, or more labels than images)."""
    root = make_tiny_imagenet(tmp_path, per_class_train=1)
    data_files.load_tiny_imagenet(root)  # decodes and caches
    cache = root / "tiny-imagenet-200" / "uint8_cache"
    train_y, test_y = np.load(cache / "train_y.npy"), np.load(cache / "test_y.npy")
    for name, labels in (("train_y", np.r_[train_y, 0]), ("test_y", test_y.astype(float)),
                         ("test_y", np.r_[test_y[:-1], 200]), ("train_y", np.r_[-1, train_y[1:]])):
        np.save(cache / f"{name}.npy", labels)
        with pytest.raises(errors.UserError,
                           match=f"^the image cache file {cache / name}.npy is unreadable"):
            data_files.load_tiny_imagenet(root)
        np.save(cache / "train_y.npy", train_y)
        np.save(cache / "test_y.npy", test_y)
    data_files.load_tiny_imagenet(root)  # the cache restored reads again


def test_a_missing_or_malformed_val_annotations_txt_is_named(tmp_path):
    """A partly unpacked or edited val_annotations.txt: a one-line error, nothing cached."""
    root = make_tiny_imagenet(tmp_path, per_class_train=1)
    folder = root / "tiny-imagenet-200"
    annotations = folder / "val" / "val_annotations.txt"
    lines = annotations.read_text().splitlines()
    annotations.unlink()
    with pytest.raises(errors.UserError, match=f"^{annotations} is missing; unpack"):
        data_files.load_tiny_imagenet(root)
    annotations.write_text("\n".join([*lines[:4], "val_4.JPEG n99999999 0 0 63 63"]))
    with pytest.raises(errors.UserError, match=f"^{annotations} line 5 is not 'FILE<tab>WNID"):
        data_files.load_tiny_imagenet(root)
    annotations.write_text("\n".join([*lines[:4], "val_4.JPEG\tn99999999\t0\t0\t63\t63"]))
    with pytest.raises(errors.UserError, match=f"^{annotations} line 5 names 'n99999999', "
                                               "which wnids.txt does not list; unpack"):
        data_files.load_tiny_imagenet(root)
    assert not (folder / "uint8_cache").exists()


def test_a_results_path_under_a_file_is_a_one_line_error(mnist_root, tmp_path, capsys):
    blocker = tmp_path / "results"
    blocker.write_text("a file where the results folder should be")
    code = main.main(tiny_options(mnist_root, blocker / "inner", "--seeds=[1]"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: cannot create the folder ") and "\n" not in err
    assert str(blocker) in err


def test_runs_checkpoint_writer_names_the_path(tmp_path):
    folder = tmp_path / "run"
    folder.write_text("")
    with pytest.raises(errors.UserError, match=f"cannot create the folder {folder}"):
        runs.make_folder(folder)


def test_an_unfinished_run_is_not_resumed_on_data_of_other_sizes(mnist_root, tmp_path, capsys):
    """Resuming would index the checkpoint's batch order into other images."""
    options = tiny_options(mnist_root, tmp_path, "--seeds=[1]")
    assert main.main(options) == 0
    run = tmp_path / "SplitMNIST_part0_best" / "seed_1"
    config = json.loads((run / "config.json").read_text())
    sizes = config["task_sizes"]
    config["task_sizes"] = [sizes[0], {**sizes[1], "training_samples": 7}]  # other files then
    (run / "config.json").write_text(json.dumps(config))
    assert main.main(options) == 0  # finished: only summarised, whatever the data now
    (run / "final_weights.pt").unlink()  # unfinished: it would resume
    capsys.readouterr()
    assert main.main(options) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {run} holds an unfinished run begun on other data (task 2: ")
    assert "'training_samples': 7" in err and "\n" not in err


def test_an_unfinished_run_is_not_resumed_on_other_data_of_the_same_sizes(mnist_root, tmp_path,
                                                                          capsys):
    """Data files swapped for others of the same sizes (an audit resumed a run so, and its
    first task had trained on other images than the rest): data_fingerprint tells them apart;
    seeds run on either are not averaged as one configuration."""
    other_root = make_mnist(tmp_path / "other", seed=1)
    options = tiny_options(mnist_root, tmp_path, "--seeds=[1]")
    assert main.main(options) == 0
    run = tmp_path / "SplitMNIST_part0_best" / "seed_1"
    fingerprint = json.loads((run / "config.json").read_text())["data_fingerprint"]
    assert len(fingerprint) == 16
    (run / "final_weights.pt").unlink()  # unfinished: it would resume
    capsys.readouterr()
    assert main.main([*options, f"--path_to_datasets={other_root}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {run} holds an unfinished run begun on other data (of the "
                          f"same sizes, other contents: data_fingerprint {fingerprint} then, ")
    assert "\n" not in err
    assert main.main(options) == 0  # its own data back: it resumes
    assert main.main([*tiny_options(other_root, tmp_path, "--seeds=[2]")]) == 0
    summary = (tmp_path / "SplitMNIST_part0_best" / "summary.md").read_text()
    assert summary.count("| data_fingerprint") == 1 and summary.count(fingerprint) == 1


def test_running_out_of_memory_while_loading_the_tasks_is_one_line(mnist_root, tmp_path, capsys,
                                                                   monkeypatch):
    """Permuted MNIST keeps its tasks on the device (part 1: about 7 GB), so a small GPU or a
    memory limit runs out before any network is built."""
    def too_large(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:121] data. DefaultCPUAllocator: "
                           "can't allocate memory: you tried to allocate 7340032000 bytes.")

    monkeypatch.setattr(datasets, "load_tasks", too_large)
    code = main.main(tiny_options(mnist_root, tmp_path, "--seeds=[1]"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert ("ran out of CPU memory in loading the tasks (can't allocate memory: you tried to "
            "allocate 7340032000 bytes.); every task's images are kept on the device: use fewer "
            "tasks (number_of_tasks)") in err
