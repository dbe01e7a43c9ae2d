"""Data: MNIST from torchvision's on-disk layout, task construction, augmentation."""

import contextlib
import dataclasses
import typing

import numpy as np
import pytest
import torch

import data_files
import datasets
import errors
from conftest import make_mnist

CPU = torch.device("cpu")


def test_load_mnist_reads_idx_files(mnist_root):
    train_x, train_y, test_x, test_y = data_files.load_mnist(mnist_root)
    assert train_x.shape == (400, 28, 28) and train_x.dtype == torch.uint8
    assert test_x.shape == (100, 28, 28)
    assert train_y.tolist()[:12] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]


def test_missing_mnist_says_where_to_put_it(tmp_path, monkeypatch):
    import torchvision.datasets.mnist as tv

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(tv, "download_and_extract_archive", offline)
    with pytest.raises(errors.UserError, match=r"MNIST.*raw and could not be .*--demo"):
        data_files.load_mnist(tmp_path)
    raw = tmp_path / "MNIST" / "raw"  # torchvision made it
    (raw / "train-images-idx3-ubyte.gz").write_bytes(b"not the official archive")
    with pytest.raises(errors.UserError, match=r"raw \(its .gz archives there are not all the "
                                               r"official ones, whose MD5 torchvision checks: "
                                               r"gunzip them there\)"):
        data_files.load_mnist(tmp_path)


def test_corrupt_mnist_file_is_named(tmp_path, mnist_root):
    from conftest import make_mnist

    root = make_mnist(tmp_path / "copy")
    path = root / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(errors.UserError, match=f"^{path} is not a readable MNIST file.*delete"):
        data_files.load_mnist(root)
    path.write_bytes(b"<html>404 Not Found</html>")  # a foreign file under the right name
    with pytest.raises(errors.UserError, match=f"^{path} is not a readable MNIST file"):
        data_files.load_mnist(root)
    labels = root / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    make_mnist(tmp_path / "other", n_train=50)
    labels.write_bytes((tmp_path / "other" / "MNIST" / "raw" / labels.name).read_bytes())
    path.write_bytes((tmp_path / "other" / "MNIST" / "raw" / path.name).read_bytes())
    with pytest.raises(errors.UserError, match="train-images-idx3-ubyte holds 400 images and "
                                               ".*train-labels-idx1-ubyte 50 labels"):
        data_files.load_mnist(root)


@pytest.mark.parametrize("name, label", [("t10k-labels-idx1-ubyte", 200),
                                         ("train-labels-idx1-ubyte", 12),
                                         ("train-labels-idx1-ubyte", 10)])  # the first not
def test_an_mnist_label_that_is_no_digit_is_refused(tmp_path, name, label):
    """A test label of 200 would be scored as a wrong answer, a training label of 12 crash
    cross_entropy: both files are named instead."""
    from conftest import make_mnist, write_idx

    root = make_mnist(tmp_path)
    path = root / "MNIST" / "raw" / name
    labels = np.frombuffer(path.read_bytes()[8:], dtype=np.uint8).copy()  # past the header
    labels[0] = label
    write_idx(path, labels)
    with pytest.raises(errors.UserError, match=f"^{path} is not a readable MNIST file "
                                               rf"\(ValueError: label {label} is not a digit"):
        data_files.load_mnist(root)


def test_permuted_mnist_tasks(mnist_root):
    config = dataclasses.replace(datasets.DEMO["PermutedMNIST"], number_of_tasks=3,
                                 validation_size=50)
    tasks = datasets.load_tasks("PermutedMNIST", 0, config, seed=1, root=mnist_root, device=CPU)
    assert len(tasks) == 3
    first = tasks[0]
    assert first.train_x.shape == (350, 1024) and first.val_x.shape == (50, 1024)
    assert first.num_classes == 10
    # every task, the first included, is a permutation of the zero-padded image
    _, _, images, _ = data_files.load_mnist(mnist_root)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2)).flatten(1)
    for task in tasks:
        assert not torch.equal(task.test_x, padded)
        assert torch.equal(task.test_x.sort(1).values, padded.sort(1).values)
    assert not torch.equal(tasks[1].test_x, tasks[2].test_x)
    again = datasets.load_tasks("PermutedMNIST", 0, config, seed=1, root=mnist_root, device=CPU)
    other = datasets.load_tasks("PermutedMNIST", 0, config, seed=2, root=mnist_root, device=CPU)
    assert torch.equal(again[2].train_x, tasks[2].train_x)
    assert not torch.equal(other[2].train_x, tasks[2].train_x)
    x = first.transform(first.train_x[:4], True)
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1


def test_split_mnist_tasks(mnist_root):
    config = dataclasses.replace(datasets.DEMO["SplitMNIST"], validation_size=10,
                                 batch_size=32)
    tasks = datasets.load_tasks("SplitMNIST", 0, config, seed=1, root=mnist_root, device=CPU)
    assert len(tasks) == 5
    for task in tasks:
        assert task.num_classes == 2
        assert set(task.train_y.tolist()) == {0, 1} and set(task.test_y.tolist()) == {0, 1}
        assert len(task.val_y) == 10 and len(task.train_y) == 80 - 10
    # task 3 holds digits 6 and 7: its images carry those digits' stripes
    _, _, images, labels = data_files.load_mnist(mnist_root)
    assert torch.equal(tasks[3].test_x, images[(labels == 6) | (labels == 7)])
    x = tasks[0].transform(tasks[0].test_x, False)
    assert x.shape == (20, 784)
    assert x.min() == pytest.approx(-0.1307 / 0.3081)  # a black pixel, MNIST's mean and std


def test_random_crop_shifts_each_image_within_the_padding():
    torch.manual_seed(0)
    x = torch.arange(2 * 3 * 6 * 6).view(2, 3, 6, 6) + 1
    crops = datasets.random_crop(x, padding=2)
    assert crops.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for b in range(2):
        windows = [padded[b, :, i:i + 6, j:j + 6] for i in range(5) for j in range(5)]
        assert any(torch.equal(crops[b], w) for w in windows)
    grey = datasets.random_crop(x[:, 0], padding=2)
    assert grey.shape == (2, 6, 6)
    many = datasets.random_crop(x[:1].expand(64, 3, 6, 6), padding=2)
    assert len({tuple(c.flatten().tolist()) for c in many}) > 5  # offsets vary per image


def test_random_crop_reaches_every_offset_corners_included():
    """torchvision's RandomCrop draws each offset from 0..2*padding: over 500 images both
    extreme windows occur (an off-by-one in the draw never reaches the last)."""
    torch.manual_seed(0)
    x = (torch.arange(36.0).view(1, 1, 6, 6) + 1).expand(500, 1, 6, 6)
    padded = torch.nn.functional.pad(x[0], (2, 2, 2, 2))
    crops = datasets.random_crop(x, padding=2)
    for i, j in ((0, 0), (4, 4), (0, 4), (4, 0)):
        assert any(torch.equal(crop, padded[:, i:i + 6, j:j + 6]) for crop in crops)


def test_the_mnist_sample_gives_each_caller_tensors_of_its_own():
    first = data_files.load_mnist_sample()
    first[0][0].fill_(255)  # a caller that changes its images in place
    second = data_files.load_mnist_sample()
    assert (second[0][0] < 255).any()  # a digit, not the 255s written into the first


def test_unknown_and_unavailable_benchmarks():
    with pytest.raises(errors.UserError, match="unknown dataset 'MNIST'.*PermutedMNIST"):
        datasets.get_benchmark("MNIST", 0)
    with pytest.raises(errors.UserError, match=r"no part 8.*\[0, 1, 2, 3, 4, 5, 6, 7\]"):
        datasets.get_benchmark("CIFAR100_FeCAM_setup", 8)
    with pytest.raises(errors.UserError, match=r"no part 3.*\[0, 1, 2\]"):
        datasets.get_benchmark("SplitMNIST", 3)


def test_grid_is_the_cartesian_product_and_overrides_fix_a_field():
    benchmark = datasets.get_benchmark("PermutedMNIST", 0)
    points = datasets.configurations(benchmark, True)
    assert len(points) == 2 * 3 * 2
    assert {(p.beta, p.lam, p.norm_regularizer_masking) for p in points} == {
        (b, l, m) for b in (1e-3, 5e-4, 5e-3) for l in (1e-3, 5e-4) for m in (True, False)}
    fixed = datasets.configurations(benchmark, True, {"beta": 0.1})
    assert len(fixed) == 4 and {p.beta for p in fixed} == {0.1}
    best = datasets.configurations(benchmark, False, {"number_of_iterations": 7})
    assert len(best) == 1 and best[0].number_of_iterations == 7 and best[0].beta == 5e-4
    with pytest.raises(errors.UserError, match="grid search"):
        datasets.configurations(datasets.get_benchmark("SplitMNIST", 1), False)


class Grid(typing.NamedTuple):
    """What a benchmark's grid search must be (docs/benchmarks.md#grid-searches)."""

    points: int  # how many configurations
    seeds: tuple[int, ...]
    every_point: dict  # what each configuration has
    one_point: dict  # what one of them has (beside every_point)


GRIDS = {
    ("PermutedMNIST", 0): Grid(12, (1, 2, 3, 4, 5),
                               dict(model_selection="best_val", embedding_size=24, sparsity=0,
                                    hnet_hidden_layers=(100, 100), number_of_iterations=5000),
                               dict(beta=5e-3, lam=5e-4, norm_regularizer_masking=False)),
    ("SplitMNIST", 0): Grid(1, (1, 2, 3, 4, 5),
                            dict(norm_regularizer_masking=False, sparsity=0, embedding_size=128,
                                 beta=1e-3, lam=1e-3, hnet_hidden_layers=(25, 25),
                                 model_selection="last", augmentation=True), {}),
    ("SplitMNIST", 1): Grid(1, (1, 2, 3, 4, 5),
                            dict(norm_regularizer_masking=False, sparsity=30, embedding_size=96,
                                 beta=0.01, lam=1e-4, hnet_hidden_layers=(50, 50),
                                 learning_rate=1e-3, batch_size=128), {}),
    ("SplitMNIST", 2): Grid(1, (1, 2, 3, 4, 5),
                            dict(norm_regularizer_masking=True, sparsity=30, embedding_size=128,
                                 beta=1e-3, lam=1e-3, hnet_hidden_layers=(25, 25)), {}),
    ("CIFAR100", 0): Grid(12, (5,), dict(target_network="ResNet-20", embedding_size=48,
                                         hnet_hidden_layers=(100,), learning_rate=1e-3),
                          dict(beta=0.05, lam=0.1)),
    ("CIFAR100", 1): Grid(12, (5,), dict(target_network="ZenkeNet", batch_size=32, sparsity=0),
                          dict(beta=1.0, lam=0.01)),
    ("TinyImageNet", 0): Grid(16, (5,), dict(target_network="ResNet-20", learning_rate=1e-3,
                                             batch_size=16, embedding_size=48,
                                             norm_regularizer_masking=False, number_of_epochs=10),
                              dict(sparsity=30, beta=0.1, lam=0.01, hnet_hidden_layers=(10, 10))),
    ("TinyImageNet", 1): Grid(27, (6,), dict(target_network="ZenkeNet-tiny", embedding_size=96,
                                             learning_rate=5e-3, hnet_hidden_layers=(100, 100)),
                              dict(sparsity=70, beta=1.0, lam=0.01)),
    ("TinyImageNet", 2): Grid(27, (6,), dict(embedding_size=128, learning_rate=1e-3),
                              dict(sparsity=30, beta=0.1, lam=1.0)),
    ("TinyImageNet", 3): Grid(32, (6,), dict(embedding_size=192, learning_rate=1e-3),
                              dict(sparsity=50, beta=1e-3, lam=1e-3)),
    ("CIFAR100_FeCAM_setup", 6): Grid(
        18, (1,), dict(target_network="ResNet-20", number_of_tasks=5, sparsity=0, beta=0.01,
                       lam=1.0, batch_size=32, number_of_epochs=200,
                       norm_regularizer_masking=False, augmentation=True),
        dict(embedding_size=96, learning_rate=1e-2, hnet_hidden_layers=(100,))),
}


@pytest.mark.parametrize("dataset, part", list(GRIDS))
def test_each_grid_is_the_authors(dataset, part):
    grid = GRIDS[(dataset, part)]
    benchmark = datasets.get_benchmark(dataset, part)
    points = datasets.configurations(benchmark, True)
    assert len(points) == grid.points and benchmark.grid_seeds == grid.seeds
    assert all(getattr(p, name) == value for p in points
               for name, value in grid.every_point.items())
    assert any(all(getattr(p, name) == value for name, value in grid.one_point.items())
               for p in points)


def test_only_the_listed_parts_have_grids():
    with_grid = {key for key, benchmark in datasets.BENCHMARKS.items() if benchmark.grid}
    assert with_grid == set(GRIDS)  # FeCAM: ResNet-20 with 5 tasks (part 6) only


def test_permuted_mnist_draws_its_permutations_like_the_authors(mnist_root):
    """The authors' procedure, written out: they seed NumPy's global generator with the run's
    seed (set_seed) right before building the tasks, then draw np.random.permutation(1024)
    once per task, task 0 included. Ours draws from a RandomState of its own."""
    config = dataclasses.replace(datasets.DEMO["PermutedMNIST"], number_of_tasks=3,
                                 validation_size=50)
    _, _, images, _ = data_files.load_mnist(mnist_root)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2)).flatten(1)
    first_tasks = []
    for seed in (1, 2):
        tasks = datasets.load_tasks("PermutedMNIST", 0, config, seed=seed, root=mnist_root,
                                    device=CPU)
        with numpy_global_state():
            np.random.seed(seed)
            authors = [np.random.permutation(1024) for _ in range(3)]
        for task, permutation in zip(tasks, authors, strict=True):
            assert torch.equal(task.test_x, padded[:, permutation])
        first_tasks.append(tasks[0].test_x)
    assert not torch.equal(*first_tasks)  # each seed its own tasks


@contextlib.contextmanager
def numpy_global_state():
    """NumPy's global generator as it was before the block."""
    state = np.random.get_state()
    try:
        yield
    finally:
        np.random.set_state(state)


def test_every_benchmark_is_filed_under_its_own_dataset_and_part():
    # each entry repeats its key inside: a copied entry left half edited would run another part
    assert [key for key, b in datasets.BENCHMARKS.items() if key != (b.dataset, b.part)] == []


def test_mnist_images_and_labels_of_other_counts_are_named_both(tmp_path):
    raw = make_mnist(tmp_path) / "MNIST" / "raw"
    (raw / "train-labels-idx1-ubyte").write_bytes((raw / "t10k-labels-idx1-ubyte").read_bytes())
    with pytest.raises(errors.UserError, match=(
            rf"^{raw / 'train-images-idx3-ubyte'} holds 400 images and "
            rf"{raw / 'train-labels-idx1-ubyte'} 100 labels; replace the wrong one")):
        data_files.load_mnist(tmp_path)
