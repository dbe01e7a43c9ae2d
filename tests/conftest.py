"""Shared fixtures and helpers: small data files in their real on-disk layouts, tiny runs
through main.py, and the test tiers (--full)."""

import dataclasses
import struct
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

# A tiny Split MNIST run through main.py: seconds on a CPU. A test adds options after these;
# a later --name=value overrides an earlier one.
TINY = ["--dataset=SplitMNIST", "--number_of_tasks=2", "--number_of_iterations=5",
        "--target_hidden_layers=[8]", "--hnet_hidden_layers=[4]", "--validation_size=10",
        "--batch_size=16", "--device=cpu"]
# A run folder's result files that must be byte for byte the same in equal runs.
OUTPUTS = ("accuracies.csv", "transfer.csv", "task_agnostic.csv", "config.json")


def tiny_options(mnist_root, results, *extra) -> list[str]:
    """main.py's arguments for a TINY run on the test MNIST files, results under `results`."""
    return [f"--path_to_datasets={mnist_root}", f"--results_dir={results}", *TINY, *extra]


def broken_run(arguments: list[str], run_dir: Path) -> None:
    """run_dir as main.main(arguments) begins it (its config.json), with a corrupt
    checkpoint.pt: a run that fails when it resumes."""
    import json

    import main
    import runs

    settings, hyperparameters, _ = main.resolve(arguments)
    _, jobs = main.experiment_jobs(settings, hyperparameters, dataset=settings["dataset"],
                                   part=settings["part"])
    job, = (job for job in jobs if job.run_dir == run_dir)
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(runs.job_record(job)))
    (run_dir / "checkpoint.pt").write_bytes(b"not a checkpoint")


def random_task(features: int, classes: int, samples: int = 64, held_out: int = 8):
    """A Task of random features and labels whose validation and test sets are its first
    `held_out` training samples, with no transform: enough for a training state."""
    from batches import Task

    x, y = torch.rand(samples, features), torch.randint(0, classes, (samples,))
    return Task(x, y, x[:held_out], y[:held_out], x[:held_out], y[:held_out],
                num_classes=classes, transform=lambda batch, training: batch,
                input_shape=(features,))


def run_folder(results, seed: int, experiment: str = "SplitMNIST_part0_best") -> Path:
    return Path(results) / experiment / f"seed_{seed}"


def config_for(dataset: str, part: int, **changes):
    """The benchmark's best configuration (a grid-only part: its grid's base), changed."""
    import datasets

    benchmark = datasets.get_benchmark(dataset, part)
    return dataclasses.replace(benchmark.best or benchmark.grid_base, **changes)


def same_results(a: Path, b: Path, *, weights: bool = True) -> None:
    """Two run folders hold the same results, byte for byte (the training log's times aside),
    and, with `weights`, equal final weights."""
    for name in OUTPUTS:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    logs = [pd.read_csv(d / "training_log.csv").drop(columns="seconds") for d in (a, b)]
    pd.testing.assert_frame_equal(*logs)
    if weights:
        final = [torch.load(d / "final_weights.pt", weights_only=True) for d in (a, b)]
        for net in ("hnet", "target"):
            for name, tensor in final[0][net].items():
                assert torch.equal(tensor, final[1][net][name]), name


def wait_for(condition, seconds: float = 300, process=None, explain=lambda: "") -> None:
    """Poll until condition() holds. Fails at once if `process` ends first, and after
    `seconds` (a guard against a hang, not a measurement) with explain()'s text."""
    deadline = time.monotonic() + seconds
    while not condition():
        if process is not None and process.poll() is not None:
            output = process.stderr.read()[-2000:] if process.stderr else ""
            pytest.fail(f"the process ended first (exit {process.returncode}): {output}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {seconds} s waiting for {condition}; {explain()}")
        time.sleep(0.02)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file, MNIST's format (a big-endian header, then bytes)."""
    array = np.asarray(array, dtype=np.uint8)
    header = struct.pack(">I", 0x0800 + array.ndim)  # type 0x08: unsigned byte
    path.write_bytes(header + b"".join(struct.pack(">I", n) for n in array.shape)
                     + array.tobytes())


def make_mnist(root: Path, n_train: int = 400, n_test: int = 100, seed: int = 0) -> Path:
    """Random 28x28 digits with class-dependent brightness, so the classes are learnable."""
    rng = np.random.RandomState(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = rng.randint(0, 60, size=(n, 28, 28))
        for digit in range(10):  # a bright stripe whose row depends on the digit
            images[labels == digit, 2 + 2 * digit: 4 + 2 * digit, :] = 250
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


def pytest_addoption(parser):
    parser.addoption("--full", action="store_true",
                     help="also run the tests marked slow and slurm (.ci/run does)")


def pytest_collection_modifyitems(config, items):
    """Tests marked `slow` or `slurm` run only with --full; tests marked `cuda` are skipped,
    not failed, on a machine without a GPU."""
    import torch

    full = config.getoption("--full")
    for item in items:
        if not full and (item.get_closest_marker("slow") or item.get_closest_marker("slurm")):
            item.add_marker(pytest.mark.skip(reason="slow or slurm: run with --full"))
        elif item.get_closest_marker("cuda") and not torch.cuda.is_available():
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory) -> Path:
    return make_mnist(tmp_path_factory.mktemp("data"))


def make_cifar100(root: Path, per_class_train: int = 6, per_class_test: int = 2,
                  seed: int = 0, classes: tuple[int, int] = (100, 100)) -> Path:
    """cifar-100-python/{train,test,meta} pickles as torchvision unpacks them (tiny); the
    training and test files hold classes 0..classes[0]-1 and 0..classes[1]-1."""
    import pickle

    rng = np.random.RandomState(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, per_class, count in (("train", per_class_train, classes[0]),
                                   ("test", per_class_test, classes[1])):
        labels = np.tile(np.arange(count), per_class)
        images = rng.randint(0, 256, size=(len(labels), 3072), dtype=np.uint8)
        batch = {"filenames": [f"{i}.png" for i in range(len(labels))], "batch_label": name,
                 "fine_labels": labels.tolist(), "coarse_labels": (labels // 5).tolist(),
                 "data": images}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)],
                     "coarse_label_names": [f"s{i}" for i in range(20)]}, f)
    return root


def make_tiny_imagenet(root: Path, per_class_train: int = 3, seed: int = 0) -> Path:
    """A miniature tiny-imagenet-200: 200 wnids, JPEGs in the official train/val layout.

    Every other class is stored grey (the real set has grey images too). Pixel
    values encode the class so tests can check labels: red channel = class
    index in sorted wnid order, approximately (JPEG is lossy).
    """
    from PIL import Image

    rng = np.random.RandomState(seed)
    folder = root / "tiny-imagenet-200"
    wnids = [f"n{10000 + 7 * i:08d}" for i in range(200)]
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(rng.permutation(wnids)) + "\n")
    annotations = []
    for c, wnid in enumerate(wnids):
        images = folder / "train" / wnid / "images"
        images.mkdir(parents=True)
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        colour = (c, 255 - c, 128)
        mode = "L" if c % 2 else "RGB"
        for i in range(per_class_train):
            Image.new("RGB", (64, 64), colour).convert(mode).save(images / f"{wnid}_{i}.JPEG")
        name = f"val_{c}.JPEG"
        Image.new("RGB", (64, 64), colour).convert(mode).save(folder / "val" / "images" / name)
        annotations.append(f"{name}\t{wnid}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(annotations) + "\n")
    return root


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory) -> Path:
    return make_cifar100(tmp_path_factory.mktemp("cifar"))


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    return make_tiny_imagenet(tmp_path_factory.mktemp("tiny"))


def semi_binary_masks(hnet_output: list, sparsity) -> list:
    """hypermask.semi_binary_mask for outputs given as one tensor per target tensor,
    shaped alike: the masks one tensor each (the last never pruned)."""
    import hypermask

    flat = torch.cat([h.flatten() for h in hnet_output])
    segments = hypermask.pruned_segments([h.numel() for h in hnet_output[:-1]], flat.device)
    pieces = hypermask.semi_binary_mask(flat, sparsity, segments).split(
        [h.numel() for h in hnet_output])
    return [piece.view(h.shape) for piece, h in zip(pieces, hnet_output)]
