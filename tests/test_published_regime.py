"""`published_regime`: the reference's defects that change numbers, kept on request
(docs/differences.md).

Each test runs both regimes and fails if the switch does nothing.
"""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import config_for, make_cifar100

import data_files
import datasets
import errors
import hypermask
import main
from batches import TrainingBatches

CPU = torch.device("cpu")
REGIMES = [False, True]


@pytest.mark.parametrize("published", REGIMES)
def test_published_regime_leaves_dropout_off_after_the_first_validation(cifar_root, published):
    """Defect 3: the reference's validation switches to eval mode and never back."""
    config = config_for("CIFAR100", 1, hnet_hidden_layers=(2,), embedding_size=4,
                        validation_size=10, number_of_epochs=None, number_of_iterations=3,
                        published_regime=published)
    task = datasets.load_tasks("CIFAR100", 1, config, seed=1, root=cifar_root, device=CPU)[1]
    model = hypermask.build_model(config, (32, 32, 3), 10)
    modes = []
    hypermask.train_task(model, task, 1, config,
                         after_step=lambda state: modes.append(model.target.training))
    # validation follows iteration 0: the reference trains the rest of the task in eval mode
    assert modes == ([False] * 3 if published else [True] * 3)


@pytest.mark.parametrize("published", REGIMES)
def test_published_regime_validates_the_first_task_at_the_ramped_sparsity(
        mnist_root, published, monkeypatch):
    """Defect 5: validation during task 0 uses the ramped p, not the target p."""
    config = dataclasses.replace(datasets.DEMO["SplitMNIST"], number_of_iterations=3,
                                 target_hidden_layers=(8,), hnet_hidden_layers=(4,),
                                 validation_size=10, sparsity=60, batch_size=16,
                                 published_regime=published)
    tasks = datasets.load_tasks("SplitMNIST", 0, config, seed=1, root=mnist_root, device=CPU)
    model = hypermask.build_model(config, (784,), 2)
    used = []
    evaluate = hypermask.evaluate

    def spy(model, task, task_id, *, sparsity, **kwargs):
        used.append((task_id, sparsity))
        return evaluate(model, task, task_id, sparsity=sparsity, **kwargs)

    monkeypatch.setattr(hypermask, "evaluate", spy)
    log = []
    for task_id in (0, 1):
        log += hypermask.train_task(model, tasks[task_id], task_id, config)
    # validation after iterations 0 and 2 (the last) of each task
    first = [20.0, 60.0] if published else [60.0, 60.0]
    assert [task_id for task_id, _ in used] == [0, 0, 1, 1]
    assert [sparsity for _, sparsity in used] == pytest.approx(first + [60.0, 60.0])
    # the log says the sparsity each validation used beside the step's (the numbers audit)
    assert [row["validation_sparsity"] for row in log] == pytest.approx(first + [60.0, 60.0])
    assert [row["sparsity"] for row in log] == pytest.approx([20.0, 60.0, 60.0, 60.0])


def make_tiny_cache(root):
    """A Tiny ImageNet uint8 cache in which every training image says its own index.

    Pixel [0, 0] holds (index % 256, index // 256, 0); 3 training images per
    class, stored class by class, so image i is class i // 3, position i % 3
    (wnids.txt, which numbers the classes, lists them sorted).
    """
    cache = root / "tiny-imagenet-200" / "uint8_cache"
    cache.mkdir(parents=True)
    (cache.parent / "wnids.txt").write_text("".join(f"n{c:08d}\n" for c in range(200)))
    train_x = np.zeros((600, 64, 64, 3), dtype=np.uint8)
    train_x[:, 0, 0, 0], train_x[:, 0, 0, 1] = np.arange(600) % 256, np.arange(600) // 256
    arrays = {"train_x": train_x, "train_y": np.repeat(np.arange(200), 3),
              "test_x": np.zeros((200, 64, 64, 3), dtype=np.uint8), "test_y": np.arange(200)}
    for name, array in arrays.items():
        np.save(cache / f"{name}.npy", array)
    return root


def image_index(x: torch.Tensor) -> list[int]:
    return (x[:, 0, 0, 0].long() + 256 * x[:, 0, 0, 1].long()).tolist()


@pytest.mark.parametrize("published", REGIMES)
def test_published_tiny_imagenet_splits_and_shuffles_alike_for_every_seed(tmp_path, published):
    """The reference resets NumPy's seed to 1 in its Tiny ImageNet handler."""
    root = make_tiny_cache(tmp_path)
    config = config_for("TinyImageNet", 1, validation_size=1, batch_size=8,
                        published_regime=published)
    tasks = {seed: datasets.load_tasks("TinyImageNet", 1, config, seed=seed, root=root,
                                       device=CPU) for seed in (5, 6)}
    # which of its class's three images validates, for every class of every task
    positions = {seed: [i % 3 for task in tasks[seed] for i in image_index(task.val_x)]
                 for seed in (5, 6)}
    classes = {seed: [i // 3 for i in image_index(tasks[seed][0].val_x)] for seed in (5, 6)}
    assert classes[5] != classes[6]  # the class order follows the seed in both regimes
    assert (positions[5] == positions[6]) == published

    stored = dataclasses.replace(tasks[5][0], transform=lambda x, training: x)  # raw pixels

    def first_batch(seed):
        torch.manual_seed(seed)  # what the run's seed does
        return image_index(next(TrainingBatches(stored, 8))[0])

    assert (first_batch(5) == first_batch(6)) == published


def test_published_fecam_slices_overlap_the_first_task():
    """Defect 1: task i starts at i * (its class count); 5 tasks stay right."""
    order = datasets.FECAM_CLASS_ORDER
    six = datasets.fecam_classes(6, published_regime=True)
    assert six == [order[:50]] + [order[10 * i:10 * i + 10] for i in range(1, 6)]
    assert datasets.fecam_classes(11, True)[10] == order[50:55]
    twenty_one = datasets.fecam_classes(21, True)
    assert twenty_one[13] == order[39:42] and twenty_one[20] == order[60:63]
    assert datasets.fecam_classes(5, True) == datasets.fecam_classes(5) \
        == [order[20 * i:20 * i + 20] for i in range(5)]
    fixed = datasets.fecam_classes(6)
    assert fixed[1] == order[50:60] and sum(fixed, []) == order  # no overlap when fixed


@pytest.mark.parametrize("published", REGIMES)
def test_published_fecam_tasks_have_task_0s_outputs(cifar_root, published):
    """Defects 1-2 in the built tasks: overlapping classes, task 0's output count."""
    config = config_for("CIFAR100_FeCAM_setup", 0, validation_size=2, batch_size=8,
                        published_regime=published)
    tasks = datasets.load_tasks("CIFAR100_FeCAM_setup", 0, config, seed=1, root=cifar_root,
                                device=CPU)
    _, _, test_x, test_y = data_files.load_cifar100(cifar_root)
    second = datasets.FECAM_CLASS_ORDER[10:20] if published else datasets.FECAM_CLASS_ORDER[50:60]
    assert torch.equal(tasks[1].test_x, torch.from_numpy(test_x[np.isin(test_y, second)]))
    assert [t.num_classes for t in tasks] == ([50] * 6 if published else [50] + [10] * 5)
    assert set(tasks[1].train_y.tolist()) == set(range(10))  # labels stay the task's own


# ------------------------------------------------- every benchmark, published, end to end

BEST = [("PermutedMNIST", 0), ("PermutedMNIST", 1), ("SplitMNIST", 0), ("CIFAR100", 0),
        ("CIFAR100", 1), ("TinyImageNet", 0), ("TinyImageNet", 1)] \
    + [pytest.param("CIFAR100_FeCAM_setup", part, marks=pytest.mark.slow)  # with --full:
       for part in (0, 7)]  # overlapping slices; 5 tasks, ZenkeNet
# (the other FeCAM parts differ only in their split, pinned by the tests above; end to end
# each costs minutes on a CPU)


@pytest.fixture(scope="module")
def small_cifar_root(tmp_path_factory):
    """3 training and 1 test image per class: ResNet-20 is slow on a CPU."""
    return make_cifar100(tmp_path_factory.mktemp("small_cifar"), per_class_train=3,
                         per_class_test=1)


@pytest.mark.parametrize("dataset, part", BEST)
def test_every_best_configuration_runs_in_the_published_regime(
        dataset, part, mnist_root, small_cifar_root, tiny_root, tmp_path):
    root = {"TinyImageNet": tiny_root, "PermutedMNIST": mnist_root,
            "SplitMNIST": mnist_root}.get(dataset, small_cifar_root)
    size = ["--number_of_iterations=3"] if "MNIST" in dataset else ["--number_of_epochs=1"]
    validation = {"CIFAR100": 10, "PermutedMNIST": 20, "SplitMNIST": 10}.get(dataset, 1)
    code = main.main([f"--dataset={dataset}", f"--part={part}", f"--path_to_datasets={root}",
                      f"--results_dir={tmp_path}", "--seeds=[1]", "--number_of_tasks=2", *size,
                      *(["--target_hidden_layers=[8]"] if "MNIST" in dataset else []),
                      "--hnet_hidden_layers=[2]",
                      "--embedding_size=4", f"--validation_size={validation}", "--device=cpu",
                      "--batch_size=4", "--published_regime=True"])
    assert code == 0
    experiment = tmp_path / f"{dataset}_part{part}_best_published"
    assert json.loads((experiment / "seed_1" / "config.json").read_text())["published_regime"]
    assert "Regime: published" in (experiment / "summary.md").read_text()
    accuracies = pd.read_csv(experiment / "seed_1" / "accuracies.csv")
    assert len(accuracies) == 3 and accuracies["accuracy"].between(0, 100).all()
    if dataset == "CIFAR100_FeCAM_setup":
        assert pd.read_csv(experiment / "seed_1" / "fecam.csv")["accuracy"].between(0, 100).all()


def test_the_regime_names_the_folder_and_is_recorded(mnist_root, tmp_path):
    settings, _, _ = main.resolve([f"--results_dir={tmp_path}"])
    for published in REGIMES:
        folder, jobs = main.experiment_jobs(settings, {"published_regime": published},
                                            dataset="SplitMNIST", part=0)
        assert folder.name == "SplitMNIST_part0_best" + ("_published" if published else "")
        assert jobs and all(job.config.published_regime is published for job in jobs)
    assert main.main([f"--path_to_datasets={mnist_root}", f"--results_dir={tmp_path}",
                      "--dataset=SplitMNIST", "--seeds=[1]", "--number_of_tasks=2",
                      "--number_of_iterations=2", "--target_hidden_layers=[8]",
                      "--hnet_hidden_layers=[2]", "--validation_size=10", "--batch_size=16",
                      "--device=cpu"]) == 0
    fixed = tmp_path / "SplitMNIST_part0_best"
    assert json.loads((fixed / "seed_1" / "config.json").read_text())["published_regime"] is False
    assert "Regime: fixed" in (fixed / "summary.md").read_text()


def test_the_regime_takes_a_bool():
    assert main.parse_overrides(["--published_regime"])[1] == {"published_regime": True}
    with pytest.raises(errors.UserError, match="--published_regime expects bool, not 'yes'"):
        main.parse_overrides(["--published_regime=yes"])
    with pytest.raises(errors.UserError, match="--published_regime expects bool, not 'yes'"):
        main._check_setting("hyperparameters", {"published_regime": "yes"})


def test_the_hyperparameters_setting_names_unknown_fields(capsys):
    assert main.main(["--hyperparameters={'published_regim': True}"]) == 2
    assert "unknown field(s) 'published_regim'; fields: number_of_tasks" in capsys.readouterr().err


# ------------------------------------------------------------- resumed in the middle of a task

def test_published_tiny_imagenet_batches_resume_mid_epoch(tmp_path):
    """The seed-1 batch order continues where it stopped, whatever torch's generator holds."""
    config = config_for("TinyImageNet", 1, validation_size=1, batch_size=4,
                        published_regime=True)
    task = datasets.load_tasks("TinyImageNet", 1, config, seed=5, root=make_tiny_cache(tmp_path),
                               device=CPU)[0]
    task = dataclasses.replace(task, transform=lambda x, training: x)  # raw pixels
    batches = TrainingBatches(task, 4)  # 10 images: 3 batches an epoch
    for _ in range(4):  # into the second epoch
        next(batches)
    saved = batches.state_dict()
    expected = [image_index(next(batches)[0]) for _ in range(6)]  # to the fourth epoch
    torch.manual_seed(123)
    resumed = TrainingBatches(task, 4, saved)
    assert [image_index(next(resumed)[0]) for _ in range(6)] == expected


def test_a_published_task_resumed_mid_task_trains_as_uninterrupted(cifar_root):
    """The networks stay in eval mode (no dropout) after a resume past the first validation."""
    import copy

    config = config_for("CIFAR100", 1, hnet_hidden_layers=(2,), embedding_size=4,
                        validation_size=10, batch_size=8, number_of_epochs=None,
                        number_of_iterations=6, published_regime=True)
    task = datasets.load_tasks("CIFAR100", 1, config, seed=1, root=cifar_root, device=CPU)[0]
    torch.manual_seed(0)
    model = hypermask.build_model(config, (32, 32, 3), 10)
    saved = {}

    def save(state):
        if state.iteration == 3:
            saved.update(training=copy.deepcopy(state.state_dict()), rng=torch.get_rng_state(),
                         model=copy.deepcopy(model.state_dict()))

    log = hypermask.train_task(model, task, 0, config, after_step=save)
    resumed = hypermask.build_model(config, (32, 32, 3), 10)
    resumed.load_state_dict(saved["model"])
    torch.set_rng_state(saved["rng"])
    again = hypermask.train_task(resumed, task, 0, config, resume=saved["training"])
    assert [row | {"seconds": 0} for row in again] == [row | {"seconds": 0} for row in log]
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name


# ------------------------------------------------------------ the pixels a network receives

def network_inputs(model, run) -> list[torch.Tensor]:
    """The inputs ([B, H * W * C]) model's target network received while run() ran."""
    seen = []
    hook = model.target.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    try:
        run()
    finally:
        hook.remove()
    return seen


def pixels(images: torch.Tensor, statistics: tuple | None) -> torch.Tensor:
    """Stored images [N, H, W, C] uint8 as a network input [N, H * W * C]: x / 255 in float32,
    then (x - mean) / std per channel where `statistics` = (mean, std) is given."""
    x = images.float() / 255
    if statistics is not None:
        mean, std = (torch.tensor(v) for v in statistics)
        x = (x - mean) / std
    return x.flatten(1)


IMAGE_BENCHMARKS = [("CIFAR100", 1, (datasets.IMAGENET_MEAN, datasets.IMAGENET_STD)),
                    ("CIFAR100_FeCAM_setup", 7, (datasets.FECAM_MEAN, datasets.FECAM_STD))]


@pytest.mark.parametrize("augmentation", [False, True])
@pytest.mark.parametrize("published", REGIMES)
@pytest.mark.parametrize("dataset, part, statistics", IMAGE_BENCHMARKS)
def test_published_cifar100_networks_get_raw_pixels_without_augmentation(
        cifar_root, dataset, part, statistics, published, augmentation):
    """The authors' CIFAR-100 loaders normalise only inside their augmentation transforms."""
    config = config_for(dataset, part, hnet_hidden_layers=(2,), embedding_size=4,
                        validation_size=1, batch_size=8, number_of_epochs=None,
                        number_of_iterations=1, augmentation=augmentation,
                        published_regime=published)
    task = datasets.load_tasks(dataset, part, config, seed=1, root=cifar_root, device=CPU)[0]
    model = hypermask.build_model(config, (32, 32, 3), task.num_classes)
    expected = None if published and not augmentation else statistics
    [tested] = network_inputs(model, lambda: hypermask.evaluate(
        model, task, 0, sparsity=config.sparsity))
    assert torch.equal(tested, pixels(task.test_x, expected))
    trained, validated = network_inputs(model, lambda: hypermask.train_task(model, task, 0,
                                                                            config))
    assert torch.equal(validated, pixels(task.val_x, expected))
    if augmentation:  # crops, flips (FeCAM: colour jitter, AutoAugment), then normalised
        mean, std = (torch.tensor(v) for v in statistics)
        stored = (trained.view(-1, 3) * std + mean) * 255
        assert torch.allclose(stored, stored.round(), atol=1e-3) and trained.min() < 0
    else:  # every training input is one of the task's training images, unchanged
        candidates = pixels(task.train_x, expected)
        assert (trained[:, None] == candidates[None]).all(-1).any(1).all()
        assert (trained.min() >= 0) == (expected is None)


@pytest.mark.parametrize("augmentation", [False, True])
@pytest.mark.parametrize("published", REGIMES)
def test_published_split_mnist_networks_get_raw_pixels_without_augmentation(
        mnist_root, published, augmentation):
    """hypnettorch's MNIST loader normalises only inside its augmentation transforms too."""
    config = config_for("SplitMNIST", 0, target_hidden_layers=(8,), hnet_hidden_layers=(2,),
                        validation_size=10, batch_size=16, number_of_iterations=1,
                        augmentation=augmentation, published_regime=published)
    task = datasets.load_tasks("SplitMNIST", 0, config, seed=1, root=mnist_root, device=CPU)[0]
    model = hypermask.build_model(config, (784,), 2)
    x = task.test_x.float() / 255
    expected = x if published and not augmentation else (x - 0.1307) / 0.3081
    [tested] = network_inputs(model, lambda: hypermask.evaluate(
        model, task, 0, sparsity=config.sparsity))
    assert torch.equal(tested, expected.flatten(1))
    trained, _ = network_inputs(model, lambda: hypermask.train_task(model, task, 0, config))
    assert (trained.min() >= 0) == (published and not augmentation)


def test_tiny_imagenet_networks_get_normalised_pixels_in_both_regimes(tmp_path):
    """The authors' Tiny ImageNet loader normalises with or without augmentation."""
    root = make_tiny_cache(tmp_path)
    statistics = (datasets.IMAGENET_MEAN, datasets.IMAGENET_STD)
    for published in REGIMES:
        config = config_for("TinyImageNet", 1, hnet_hidden_layers=(2,), embedding_size=4,
                            validation_size=1, batch_size=8, augmentation=False,
                            published_regime=published)
        task = datasets.load_tasks("TinyImageNet", 1, config, seed=5, root=root,
                                   device=CPU)[0]
        model = hypermask.build_model(config, (64, 64, 3), task.num_classes)
        [tested] = network_inputs(model, lambda: hypermask.evaluate(model, task, 0, sparsity=0))
        assert torch.equal(tested, pixels(task.test_x, statistics))


def bytes_keyed_copy(root, destination):
    """The CIFAR-100 pickles with bytes keys, as hypnettorch's loader reads them (it opens
    them with encoding="bytes", as the original Python 2 files)."""
    import pickle
    import shutil

    folder = destination / "cifar-100-python"
    folder.mkdir(parents=True)
    shutil.copy(root / "cifar-100-python" / "meta", folder / "meta")
    for name in ("train", "test"):
        with open(root / "cifar-100-python" / name, "rb") as f:
            batch = pickle.load(f)
        with open(folder / name, "wb") as f:
            pickle.dump({key.encode(): value for key, value in batch.items()}, f)
    return destination


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # hypnettorch's numpy.matlib
@pytest.mark.parametrize("augmentation", [False, True])
@pytest.mark.parametrize("published", REGIMES)
def test_split_cifar100_test_inputs_are_hypnettorchs_in_the_published_regime(
        cifar_root, tmp_path, published, augmentation):
    """Task 0's test set through hypnettorch's SplitCIFAR100Data, which the authors' Split
    CIFAR-100 uses (labels 0-9, inference mode), and through ours: the same tensor in the
    published regime; without augmentation the fixed regime normalises and theirs does not."""
    from hypnettorch.data.special.split_cifar import SplitCIFAR100Data

    handler = SplitCIFAR100Data(str(bytes_keyed_copy(cifar_root, tmp_path)), use_one_hot=True,
                                validation_size=0, use_data_augmentation=augmentation,
                                labels=range(10))
    theirs = handler.input_to_torch_tensor(handler.get_test_inputs(), CPU, mode="inference")
    config = config_for("CIFAR100", 1, hnet_hidden_layers=(2,), embedding_size=4,
                        validation_size=1, augmentation=augmentation, published_regime=published)
    task = datasets.load_tasks("CIFAR100", 1, config, seed=1, root=cifar_root, device=CPU)[0]
    model = hypermask.build_model(config, (32, 32, 3), task.num_classes)
    [ours] = network_inputs(model, lambda: hypermask.evaluate(
        model, task, 0, sparsity=config.sparsity))
    assert theirs.dtype == ours.dtype and theirs.shape == ours.shape
    assert torch.equal(ours, theirs) == (published or augmentation)
