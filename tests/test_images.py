"""Image benchmarks: files in their real on-disk formats, class splits, networks, runs."""

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import config_for, make_cifar100, make_tiny_imagenet
from test_task_classes import authors_tiny_imagenet_tasks

import data_files
import datasets
import errors
import hypermask
import main
from batches import AugmentedImages, TrainingBatches, augmentation_workers

CPU = torch.device("cpu")


# ----------------------------------------------------------------------- CIFAR-100


def test_cifar100_is_read_from_torchvisions_pickles(cifar_root):
    train_x, train_y, test_x, test_y = data_files.load_cifar100(cifar_root)
    assert train_x.shape == (600, 32, 32, 3) and train_x.dtype == np.uint8
    assert test_x.shape == (200, 32, 32, 3)
    assert sorted(set(train_y.tolist())) == list(range(100))
    # channel-first rows of the pickle become NHWC images
    with open(cifar_root / "cifar-100-python" / "train", "rb") as f:
        raw = pickle.load(f, encoding="latin1")["data"]
    assert np.array_equal(train_x[7, :, :, 1], raw[7, 1024:2048].reshape(32, 32))


def test_missing_and_corrupt_cifar100(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv

    monkeypatch.setattr(tv, "download_and_extract_archive",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    with pytest.raises(errors.UserError, match="CIFAR-100 is not in .*cifar-100-python and "):
        data_files.load_cifar100(tmp_path)
    (tmp_path / "cifar-100-python.tar.gz").write_bytes(b"not the archive")  # the audit's case
    with pytest.raises(errors.UserError, match=r"cifar-100-python \(the cifar-100-python.tar.gz "
                       "in .* is not the official one, whose MD5 torchvision checks: replace"):
        data_files.load_cifar100(tmp_path)
    root = make_cifar100(tmp_path / "broken")
    (root / "cifar-100-python" / "test").write_bytes(b"not a pickle")
    with pytest.raises(errors.UserError, match="test is unreadable.*replace it"):
        data_files.load_cifar100(root)
    root = make_cifar100(tmp_path / "labels")
    with open(root / "cifar-100-python" / "train", "rb") as f:
        batch = pickle.load(f)
    batch["fine_labels"][5] = 100  # the reason said, not only "unreadable"
    with open(root / "cifar-100-python" / "train", "wb") as f:
        pickle.dump(batch, f)
    with pytest.raises(errors.UserError, match=r"train is unreadable \(ValueError: label 100 is "
                                               r"not a class 0..99\); replace it"):
        data_files.load_cifar100(root)


def test_a_tiny_imagenet_zip_in_the_data_folder_is_unpacked_or_named_as_damaged(tmp_path,
                                                                               monkeypatch):
    """The archive put beside where it unpacks (no network): unpacked and read; truncated,
    named as damaged, not as a failed download."""
    import torchvision.datasets.utils as tv

    monkeypatch.setattr(tv, "download_and_extract_archive",
                        lambda *a, **k: pytest.fail("downloaded beside the archive"))
    made = make_tiny_imagenet(tmp_path / "made", per_class_train=1)
    data = tmp_path / "Data"
    archive = Path(shutil.make_archive(str(data / "tiny-imagenet-200"), "zip", made,
                                       "tiny-imagenet-200"))
    train_x = data_files.load_tiny_imagenet(data)[0]
    assert train_x.shape == (200, 64, 64, 3) and (data / "tiny-imagenet-200" / "wnids.txt").exists()
    shutil.rmtree(data / "tiny-imagenet-200")
    archive.write_bytes(archive.read_bytes()[:5000])
    with pytest.raises(errors.UserError, match=f"^{archive} is damaged \\(BadZipFile\\); replace "
                                                 "it \\(from http"):
        data_files.load_tiny_imagenet(data)


def test_missing_and_partial_tiny_imagenet(tmp_path, monkeypatch):
    """Nothing there: the download, which fails offline, then where to put the files. A
    folder without wnids.txt: that file named, and no 240 MB download started."""
    import torchvision.datasets.utils as tv

    monkeypatch.setattr(tv, "download_and_extract_archive",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    with pytest.raises(errors.UserError, match="Tiny ImageNet is not in .*tiny-imagenet-200 "
                       r"and could not be downloaded \(OSError\); unpack tiny-imagenet-200.zip"):
        data_files.load_tiny_imagenet(tmp_path)
    folder = make_tiny_imagenet(tmp_path / "partial", per_class_train=1) / "tiny-imagenet-200"
    (folder / "wnids.txt").unlink()
    monkeypatch.setattr(tv, "download_and_extract_archive",
                        lambda *a, **k: pytest.fail("downloaded over a partial folder"))
    with pytest.raises(errors.UserError, match=f"^{folder} lacks wnids.txt, the list of its 200 "
                       "classes"):
        data_files.load_tiny_imagenet(folder.parent)


def test_split_cifar100_tasks(cifar_root):
    config = config_for("CIFAR100", 0, validation_size=10)
    tasks = datasets.load_tasks("CIFAR100", 0, config, seed=1, root=cifar_root, device=CPU)
    _, _, test_x, test_y = data_files.load_cifar100(cifar_root)
    assert len(tasks) == 10
    for t, task in enumerate(tasks):
        expected = (test_y >= 10 * t) & (test_y < 10 * t + 10)
        assert torch.equal(task.test_x, torch.from_numpy(test_x[expected]))
        assert task.test_y.tolist() == (test_y[expected] - 10 * t).tolist()
        assert task.num_classes == 10 and len(task.val_y) == 10 and len(task.train_y) == 50
        assert task.input_shape == (32, 32, 3)


@pytest.mark.parametrize("part, sizes", [(6, [20] * 5), (7, [20] * 5), (0, [50] + [10] * 5),
                                         (4, [50] + [5] * 10), (2, [40] + [3] * 20)])
def test_fecam_splits_have_correct_offsets_and_outputs(cifar_root, part, sizes):
    config = config_for("CIFAR100_FeCAM_setup", part, validation_size=2, batch_size=8)
    tasks = datasets.load_tasks("CIFAR100_FeCAM_setup", part, config, seed=1, root=cifar_root,
                                device=CPU)
    _, _, test_x, test_y = data_files.load_cifar100(cifar_root)
    assert [t.num_classes for t in tasks] == sizes
    seen, start = [], 0
    for task, size in zip(tasks, sizes):
        classes = datasets.FECAM_CLASS_ORDER[start:start + size]
        start += size
        members = np.isin(test_y, classes)
        assert torch.equal(task.test_x, torch.from_numpy(test_x[members]))
        assert task.test_y.tolist() == [classes.index(c) for c in test_y[members]]
        assert (torch.bincount(task.val_y) == 2).all()  # 2 validation images per class
        seen += classes
    assert sorted(seen) == list(range(100))  # every class exactly once: no overlap


def test_fecam_class_order_is_fecams():
    """Spot checks by hand against FeCAM's published order: its start, its end and the
    classes around the 50-class first task's edge."""
    order = datasets.FECAM_CLASS_ORDER
    assert order[:8] == [87, 0, 52, 58, 44, 91, 68, 97] and order[-4:] == [54, 26, 35, 39]
    assert order[48:52] == [80, 73, 1, 28]


def test_fecam_validation_split_depends_on_the_seed(cifar_root):
    config = config_for("CIFAR100_FeCAM_setup", 6, validation_size=2)
    load = lambda seed: datasets.load_tasks("CIFAR100_FeCAM_setup", 6, config, seed=seed,  # noqa
                                            root=cifar_root, device=CPU)[0].val_x
    assert torch.equal(load(1), load(1)) and not torch.equal(load(1), load(2))


# ------------------------------------------------------------------- Tiny ImageNet


def test_tiny_imagenet_is_decoded_once_and_cached(tmp_path, monkeypatch):
    root = make_tiny_imagenet(tmp_path, per_class_train=2)
    train_x, train_y, test_x, test_y = data_files.load_tiny_imagenet(root)
    assert train_x.shape == (400, 64, 64, 3) and test_x.shape == (200, 64, 64, 3)
    wnids = (root / "tiny-imagenet-200" / "wnids.txt").read_text().split()
    assert wnids != sorted(wnids)
    line = [wnids.index(wnid) for wnid in sorted(wnids)]  # class ids: wnids.txt's line order
    assert train_y.tolist()[:4] == [line[0]] * 2 + [line[1]] * 2  # stored in sorted-wnid order
    assert test_y.tolist() == line  # val_c.JPEG shows the c-th wnid in sorted order
    even = np.arange(0, 200, 2)
    assert np.abs(test_x[even, 10, 10, 0].astype(int) - even).max() <= 3  # red encodes class
    grey = test_x[1]
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    assert (root / "tiny-imagenet-200" / "uint8_cache" / "train_x.npy").exists()

    def no_jpeg(path):
        raise AssertionError(f"read {path}")

    monkeypatch.setattr(data_files, "_decode_jpeg", no_jpeg)
    again = data_files.load_tiny_imagenet(root)
    assert all(np.array_equal(a, b) for a, b in zip(again, (train_x, train_y, test_x, test_y)))


def test_tiny_imagenet_errors(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv

    monkeypatch.setattr(tv, "download_and_extract_archive",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    with pytest.raises(errors.UserError, match="unpack tiny-imagenet-200.zip"):
        data_files.load_tiny_imagenet(tmp_path)
    root = make_tiny_imagenet(tmp_path / "bad", per_class_train=1)
    jpeg = next((root / "tiny-imagenet-200" / "train").rglob("*.JPEG"))
    jpeg.write_bytes(b"broken")
    with pytest.raises(errors.UserError, match=f"{jpeg.name} is not a readable JPEG"):
        data_files.load_tiny_imagenet(root)


def test_an_incompletely_unpacked_tiny_imagenet_is_refused_and_not_cached(tmp_path, monkeypatch):
    root = make_tiny_imagenet(tmp_path, per_class_train=1)
    folder = root / "tiny-imagenet-200"
    cache = folder / "uint8_cache"
    images = folder / "train" / sorted((folder / "wnids.txt").read_text().split())[7] / "images"
    jpeg = next(images.glob("*.JPEG"))
    saved = jpeg.read_bytes()
    jpeg.unlink()
    with pytest.raises(errors.UserError, match=f"{images} holds no JPEG images; unpack "
                                                 "tiny-imagenet-200.zip in .* again"):
        data_files.load_tiny_imagenet(root)
    assert not cache.exists()
    jpeg.write_bytes(saved)  # the archive unpacked again
    val = folder / "val" / "images" / "val_3.JPEG"
    val.unlink()
    with pytest.raises(errors.UserError, match=f"{val} is missing; unpack"):
        data_files.load_tiny_imagenet(root)
    assert not cache.exists()
    make_tiny_imagenet(tmp_path / "again", per_class_train=1)
    val.write_bytes((tmp_path / "again" / "tiny-imagenet-200" / "val" / "images"
                     / "val_3.JPEG").read_bytes())
    train_y = data_files.load_tiny_imagenet(root)[1]
    assert np.bincount(train_y).tolist() == [1] * 200
    np.save(cache / "train_y.npy", np.where(train_y == 7, 8, train_y))  # decoded before the check
    with pytest.raises(errors.UserError, match=f"the image cache {cache} holds training classes "
                                                 "of different sizes"):
        data_files.load_tiny_imagenet(root)
    np.save(cache / "train_y.npy", train_y)
    test_y = np.load(cache / "test_y.npy")
    np.save(cache / "test_y.npy", np.where(test_y == 7, 8, test_y))  # labels of a shorter list
    with pytest.raises(errors.UserError, match=f"the image cache {cache} holds test classes "):
        data_files.load_tiny_imagenet(root)


def test_tiny_imagenet_classes_of_other_sizes_are_refused_and_not_cached(tmp_path):
    """One training image gone, a val image that val_annotations.txt does not list (a cut
    file: the test set would shrink without a word), or one listed twice: refused."""
    root = make_tiny_imagenet(tmp_path, per_class_train=2)
    folder = root / "tiny-imagenet-200"
    wnid = sorted((folder / "wnids.txt").read_text().split())[7]
    jpeg = next((folder / "train" / wnid / "images").glob("*.JPEG"))
    saved = jpeg.read_bytes()
    jpeg.unlink()
    with pytest.raises(errors.UserError, match=f"^train/ holds 1 image\\(s\\) of class {wnid} "
                                                 "and 2 of most others"):
        data_files.load_tiny_imagenet(root)
    jpeg.write_bytes(saved)
    annotations = folder / "val" / "val_annotations.txt"
    lines = annotations.read_text().splitlines()
    annotations.write_text("\n".join(lines[:100]) + "\n")
    with pytest.raises(errors.UserError, match=f"^{folder / 'val' / 'images'} holds 100 "
                       "image\\(s\\) that val/val_annotations.txt does not list, val_100.JPEG"):
        data_files.load_tiny_imagenet(root)
    annotations.write_text("\n".join([*lines, lines[3]]) + "\n")
    with pytest.raises(errors.UserError, match=f"^{annotations} line 201 lists 'val_3.JPEG' a "
                                                 "second time"):
        data_files.load_tiny_imagenet(root)
    (folder / "val" / "images" / "val_3.JPEG").unlink()
    annotations.write_text("\n".join(lines[:3] + lines[4:]) + "\n")
    third = sorted((folder / "wnids.txt").read_text().split())[3]  # val_3.JPEG's class
    with pytest.raises(errors.UserError, match=f"^val/ holds 0 image\\(s\\) of class {third} "):
        data_files.load_tiny_imagenet(root)
    assert not (folder / "uint8_cache").exists()


def test_a_tiny_imagenet_that_cannot_be_cached_is_read_with_a_warning(tmp_path, monkeypatch,
                                                                      capsys):
    """A read-only dataset folder (shared on a cluster): the decoded arrays, and one line."""
    root = make_tiny_imagenet(tmp_path, per_class_train=1)

    def read_only(cache, arrays):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(data_files, "write_cache", read_only)
    train_x, train_y, test_x, test_y = data_files.load_tiny_imagenet(root)
    assert train_x.shape == (200, 64, 64, 3) and np.bincount(test_y).tolist() == [1] * 200
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("warning: the decoded images could not be cached in ") and \
        "(Read-only file system): each run decodes the JPEGs again" in err


def test_tiny_imagenet_tasks(tiny_root):
    config = config_for("TinyImageNet", 1, validation_size=1, batch_size=8)
    tasks = datasets.load_tasks("TinyImageNet", 1, config, seed=5, root=tiny_root, device=CPU)
    assert len(tasks) == 40
    order = np.random.default_rng(5).permutation(200)  # the authors' draw
    _, _, test_x, test_y = data_files.load_tiny_imagenet(tiny_root)
    for t in (0, 17, 39):
        classes = sorted(order[5 * t:5 * t + 5])  # labels follow the sorted class ids
        task = tasks[t]
        assert task.test_y.tolist() == [classes.index(c) for c in test_y if c in classes]
        assert (torch.bincount(task.val_y) == 1).all() and (torch.bincount(task.train_y) == 2).all()
    assert {c for t in range(40) for c in order[5 * t:5 * t + 5]} == set(range(200))
    x = tasks[0].transform(tasks[0].test_x, False)
    assert x.shape == (5, 64 * 64 * 3)


# ------------------------------------------------------------------------ networks


def test_tiny_zenkenet_shapes_and_forward():
    net = hypermask.TinyZenkeNet(num_classes=5)
    assert net.param_shapes[-2:] == [[5, 12544], [5]]
    assert sum(p.numel() for p in net.parameters()) == 3 * 64 * 9 * 64 + 64 * 27 + 4 * 64 \
        + 5 * 12544 + 5
    out = net(torch.rand(2, 64 * 64 * 3))
    assert out.shape == (2, 5)
    config = config_for("TinyImageNet", 1, hnet_hidden_layers=(3,))
    model = hypermask.build_model(config, (64, 64, 3), 5)
    masks = model.masks(model.hnet_outputs([0])[0], config.sparsity)
    assert [list(m.shape) for m in masks] == net.param_shapes
    assert model(torch.rand(2, 64 * 64 * 3), 0, config.sparsity).shape == (2, 5)


def test_zenkenets_do_not_share_their_shape_lists():
    ten = hypermask.build_target_network("ZenkeNet", (32, 32, 3), 10)
    fifty = hypermask.build_target_network("ZenkeNet", (32, 32, 3), 50)
    assert ten.param_shapes[-1] == [10] and fifty.param_shapes[-1] == [50]


def test_resnet_batch_norm_is_shared_not_masked():
    config = config_for("CIFAR100", 0, hnet_hidden_layers=(2,))
    model = hypermask.build_model(config, (32, 32, 3), 10)
    names = [m["name"] for m in model.target.param_shapes_meta]
    assert "bn_scale" in names
    assert len(model.maskable) == len([n for n in names if n not in ("bn_scale", "bn_shift")])
    weights = model.masked_weights(torch.zeros(sum(model.numels)))
    for i, name in enumerate(names):
        if name.startswith("bn_"):
            assert weights[i] is model.target.internal_params[i]


def test_dropout_stays_on_after_evaluation(cifar_root):
    """The reference's defect 3: evaluation must not leave dropout switched off."""
    config = config_for("CIFAR100", 1, hnet_hidden_layers=(2,), validation_size=10)
    task = datasets.load_tasks("CIFAR100", 1, config, seed=1, root=cifar_root, device=CPU)[0]
    model = hypermask.build_model(config, (32, 32, 3), 10)
    model.train()
    hypermask.evaluate(model, task, 0, sparsity=0)
    assert model.training and all(m.training for m in model.modules())
    x = task.transform(task.train_x[:4], False)
    torch.manual_seed(0)
    assert not torch.equal(model(x, 0, 0), model(x, 0, 0))  # dropout active


def test_image_transform_normalises_and_augments():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8)
    plain = datasets.image_transform(datasets.FECAM_MEAN, datasets.FECAM_STD, None)(x, True)
    expected = (x.float() / 255 - torch.tensor(datasets.FECAM_MEAN)) / torch.tensor(
        datasets.FECAM_STD)
    assert torch.allclose(plain, expected.flatten(1))  # NHWC, flat
    augmented = datasets.image_transform(datasets.FECAM_MEAN, datasets.FECAM_STD, "crop_flip")
    assert augmented(x, True).shape == plain.shape and not torch.equal(augmented(x, True), plain)
    assert torch.equal(augmented(x, False), plain)


def test_per_image_augmentation_runs_in_workers_and_follows_the_seed(cifar_root):
    config = config_for("CIFAR100_FeCAM_setup", 6, validation_size=2)
    task = datasets.load_tasks("CIFAR100_FeCAM_setup", 6, config, seed=1, root=cifar_root,
                               device=CPU)[0]
    assert task.image_augment is datasets.FECAM_AUGMENT

    def first_batches(seed):
        torch.manual_seed(seed)
        batches = TrainingBatches(task, 32)
        return [next(batches) for _ in range(3)]

    one, again, other = first_batches(0), first_batches(0), first_batches(1)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(one, again))
    assert not torch.equal(one[0][0], other[0][0])
    x, y = one[0]
    assert x.shape == (32, 32 * 32 * 3) and y.shape == (32,)
    plain = {tuple(v.tolist()) for v in task.transform(task.train_x, False)}
    assert sum(tuple(v.tolist()) in plain for v in x) < 16  # most images were changed


def test_autoaugment_fills_uncovered_pixels_with_grey():
    """FeCAM's CIFAR-10 policy fills with (128, 128, 128); torchvision's default is black."""
    import copy

    autoaugment = copy.deepcopy(datasets.FECAM_AUGMENT.transforms[-1])
    autoaugment._policies = [(("Rotate", 1.0, 9), ("TranslateY", 1.0, 9))]  # force geometry
    torch.manual_seed(0)
    white = torch.full((3, 32, 32), 255, dtype=torch.uint8)
    out = autoaugment(white)
    assert set(out.unique().tolist()) == {128, 255}  # nearest interpolation: fill or image
    assert (out == 128).all(0).float().mean() > 0.1


def test_image_transform_copies_mean_and_std_to_the_device_once(monkeypatch):
    """A torch.tensor(..., device=cuda) is a blocking host-to-device copy: not per batch."""
    x = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8)
    transform = datasets.image_transform(datasets.FECAM_MEAN, datasets.FECAM_STD, "crop_flip")
    expected = transform(x, False)
    created, real = [], torch.tensor
    monkeypatch.setattr(torch, "tensor", lambda *a, **k: created.append(a) or real(*a, **k))
    for _ in range(3):
        assert torch.equal(transform(x, False), expected)
        transform(x, True)
    assert created == []


def test_batch_norm_makes_no_host_sync(monkeypatch):
    """hypnettorch's `num_stats > 1` on a buffer is a Tensor.__bool__: a host sync on a GPU."""
    from hypnettorch.utils.batchnorm_layer import BatchNormLayer
    from torch.overrides import TorchFunctionMode

    class SyncCounter(TorchFunctionMode):  # Python-level reads of a tensor's value
        calls = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            if getattr(func, "__name__", "") in ("__bool__", "item", "__int__", "__float__",
                                                 "__index__", "tolist"):
                SyncCounter.calls += 1
            return func(*args, **(kwargs or {}))

    config = config_for("CIFAR100", 0, hnet_hidden_layers=(2,))
    torch.manual_seed(0)
    model = hypermask.build_model(config, (32, 32, 3), 10)
    x, y = torch.rand(4, 32 * 32 * 3), torch.tensor([0, 1, 2, 3])
    start = hypermask.task_start(model, 1)

    def step():
        SyncCounter.calls = 0
        with SyncCounter():
            terms = hypermask.training_loss(model, x, y, task_id=1, num_classes=10, sparsity=30,
                                            start=start, config=config)
            terms["loss"].backward()
        return SyncCounter.calls, terms["loss"].detach()

    syncs, loss = step()
    assert syncs == 0
    keys = list(model.state_dict())
    for layer in model.target.batchnorm_layers:  # back to hypnettorch's own layer
        layer.__class__ = BatchNormLayer
    unpatched_syncs, unpatched_loss = step()
    assert unpatched_syncs == 19 and torch.equal(loss, unpatched_loss)  # 6n + 1 layers, n = 3
    assert list(model.state_dict()) == keys


def test_augmented_images_are_picklable_and_run_in_spawned_workers(cifar_root, monkeypatch):
    """Workers started by spawn or forkserver (macOS, Python 3.14) unpickle the dataset."""
    import functools
    import pickle

    config = config_for("CIFAR100_FeCAM_setup", 6, validation_size=2)
    task = datasets.load_tasks("CIFAR100_FeCAM_setup", 6, config, seed=1, root=cifar_root,
                               device=CPU)[0]
    images = AugmentedImages(task.train_x, task.train_y, datasets.FECAM_AUGMENT)
    copy = pickle.loads(pickle.dumps(images))
    key = (7, torch.tensor([3, 1, 4]))
    assert torch.equal(copy[key][0], images[key][0])  # the batch follows its key's seed
    monkeypatch.setattr(torch.utils.data, "DataLoader", functools.partial(
        torch.utils.data.DataLoader, multiprocessing_context="spawn"))
    x, y = next(TrainingBatches(task, 8))
    assert x.shape == (8, 32 * 32 * 3) and x.dtype == torch.float32 and y.shape == (8,)


def test_augmentation_workers_follow_the_runs_threads_not_the_machine(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 128)
    threads = torch.get_num_threads()
    try:
        counts = []
        for budget in (1, 2, 6, 32):
            torch.set_num_threads(budget)
            counts.append(augmentation_workers())
    finally:
        torch.set_num_threads(threads)
    assert counts == [1, 1, 3, 8]


def test_random_flip_flips_about_half():
    torch.manual_seed(0)
    x = torch.arange(6.0).view(1, 1, 6).expand(400, 1, 6)
    flipped = (datasets.random_flip(x)[:, 0, 0] == 5).float().mean()
    assert 0.4 < flipped < 0.6


# ---------------------------------------------------------------- end to end, all 12

# The FeCAM setup's part 7 (ZenkeNet, 5 tasks) in the fast tier, its other parts with --full.
IMAGE_BENCHMARKS = [("CIFAR100", 0), ("CIFAR100", 1), ("TinyImageNet", 0), ("TinyImageNet", 1)] \
    + [("CIFAR100_FeCAM_setup", part) if part == 7
       else pytest.param("CIFAR100_FeCAM_setup", part, marks=pytest.mark.slow) for part in range(8)]


@pytest.mark.parametrize("dataset, part", IMAGE_BENCHMARKS)
def test_every_image_benchmark_runs_end_to_end(dataset, part, cifar_root, tiny_root, tmp_path,
                                               capsys):
    root = tiny_root if dataset == "TinyImageNet" else cifar_root
    validation = {"CIFAR100": 10, "TinyImageNet": 1}.get(dataset, 1)
    code = main.main([f"--dataset={dataset}", f"--part={part}", f"--path_to_datasets={root}",
                      f"--results_dir={tmp_path}", "--seeds=[1]", "--number_of_tasks=2",
                      "--number_of_epochs=1", "--hnet_hidden_layers=[2]", "--embedding_size=4",
                      "--batch_size=8",
                      f"--validation_size={validation}", "--device=cpu"])
    assert code == 0
    run = tmp_path / f"{dataset}_part{part}_best" / "seed_1"
    accuracies = pd.read_csv(run / "accuracies.csv")
    assert accuracies[["trained_task", "evaluated_task"]].values.tolist() == [[0, 0], [1, 0],
                                                                               [1, 1]]
    log = pd.read_csv(run / "training_log.csv")
    assert log["learning_rate"].iloc[0] == datasets.get_benchmark(dataset, part).best.learning_rate
    assert (run / "final_weights.pt").exists() and (run / "heatmap.png").exists()
    classes = json.loads((run / "config.json").read_text())["task_classes"]
    if dataset == "TinyImageNet":  # wnids, as the authors draw them
        assert classes == authors_tiny_imagenet_tasks(root / "tiny-imagenet-200", 1)[:2]
    else:  # CIFAR-100 class indices
        assert classes == datasets.class_ids(dataset, part, datasets.get_benchmark(
            dataset, part).best, seed=1)[:2] and all(type(c) is int for c in classes[1])
    out = capsys.readouterr().out
    for t, names in enumerate(classes):  # each task's classes when it starts
        assert f"task {t + 1}/2: classes {', '.join(map(str, names))} (labels 0-" in out
    assert "task_classes" not in (run.parent / "summary.csv").read_text()
    if dataset == "CIFAR100_FeCAM_setup":
        fecam = pd.read_csv(run / "fecam.csv")
        assert fecam["tasks_seen"].tolist() == [1, 2]
        assert fecam["accuracy"].between(0, 100).all()
        # the entropy's incremental steps: the last is every mask on every test set
        steps = pd.read_csv(run / "task_agnostic_steps.csv")
        per_task = pd.read_csv(run / "task_agnostic.csv")
        sizes = [size["test_samples"] for size in json.loads(
            (run / "config.json").read_text())["task_sizes"]]
        assert steps["tasks_seen"].tolist() == [1, 2]
        assert steps["task_identification_accuracy"].iloc[0] == 100.0  # one mask, one task
        assert steps["accuracy"].iloc[-1] == pytest.approx(
            (per_task["accuracy"] * sizes).sum() / sum(sizes))
        summary = pd.read_csv(run.parent / "summary.csv")
        assert summary["task_agnostic_incremental_accuracy"].iloc[0] == pytest.approx(
            steps["accuracy"].mean())
        assert summary["fecam_average_accuracy"].iloc[0] == pytest.approx(
            fecam["accuracy"].mean())
    else:  # the class-incremental steps belong to the FeCAM setup's evaluations
        assert not (run / "task_agnostic_steps.csv").exists()
