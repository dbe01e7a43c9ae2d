"""FeCAM's augmentation in batches (augmentation.py) against torchvision's per-image pipeline:
the same kernels given the same draws, the same laws for the draws, the same statistics."""

import copy
import dataclasses

import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

import augmentation
import batches
import datasets


def random_images(count: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8, generator=generator)


def fecam_autoaugment() -> v2.AutoAugment:
    return copy.deepcopy(datasets.FECAM_AUGMENT.transforms[-1])


def test_crops_flips_and_brightness_are_torchvisions_kernels():
    images = random_images(16)
    generator = torch.Generator().manual_seed(1)
    rows, cols = torch.randint(0, 9, (2, 16), generator=generator)
    flip = torch.rand(16, generator=generator) < 0.5
    factors = torch.empty(16).uniform_(1 - 63 / 255, 1 + 63 / 255, generator=generator)
    cropped = augmentation.crops(images, rows, cols, size=(32, 32), padding=[4] * 4, fill=0)
    flipped = augmentation.flips(images, flip)
    brighter = augmentation.brightness(images, factors)
    for i, image in enumerate(images):
        padded = TF.pad(image, [4, 4, 4, 4], fill=0)
        assert torch.equal(cropped[i], TF.crop(padded, int(rows[i]), int(cols[i]), 32, 32))
        assert torch.equal(flipped[i], TF.horizontal_flip(image) if flip[i] else image)
        assert torch.equal(brighter[i], TF.adjust_brightness(image, float(factors[i])))


def forced_forward(transform: v2.AutoAugment, image: torch.Tensor, policy: int,
                   applied: list[bool], negated: list[bool], monkeypatch) -> torch.Tensor:
    """torchvision's own AutoAugment.forward on one image, its random draws forced: the
    sub-policy, then per operation whether it applies and, if signed, its sign."""
    draws = []
    for (name, _, _), apply, negate in zip(transform._policies[policy], applied, negated):
        draws.append(0.0 if apply else 1.0)  # rand() <= probability
        bins, signed = type(transform)._AUGMENTATION_SPACE[name]
        if apply and signed and bins(10, 32, 32) is not None:
            draws.append(0.0 if negate else 1.0)  # rand() <= 0.5
    values = iter(draws)
    monkeypatch.setattr(torch, "randint", lambda *args, **kwargs: torch.tensor(policy))
    monkeypatch.setattr(torch, "rand", lambda *args, **kwargs: torch.tensor(next(values)))
    try:
        return transform(image)
    finally:
        monkeypatch.undo()


def test_autoaugment_in_batches_is_torchvisions_forward_given_the_same_draws(monkeypatch):
    """Every sub-policy of FeCAM's CIFAR-10 policy, with each operation applied or not and
    negated or not: the batch comes out image for image as torchvision makes it."""
    transform = fecam_autoaugment()
    cases = [(policy, [a, b], [c, d]) for policy in range(len(transform._policies))
             for a in (False, True) for b in (False, True) for c in (False, True)
             for d in (False, True)]
    images = random_images(len(cases), seed=2)
    batch = augmentation.auto_augment_with(
        images, transform, torch.tensor([c[0] for c in cases]),
        torch.tensor([c[1] for c in cases]), torch.tensor([c[2] for c in cases]))
    changed = 0
    for image, result, (policy, applied, negated) in zip(images, batch, cases):
        expected = forced_forward(transform, image, policy, applied, negated, monkeypatch)
        assert torch.equal(result, expected), (transform._policies[policy], applied, negated)
        changed += not torch.equal(result, image)
    assert changed > len(cases) / 2  # the draws did make the operations run


def operations(transform: v2.AutoAugment, run) -> dict:
    """How often `run()` makes `transform` apply each (operation, magnitude): its kernel
    dispatch is replaced by a counter that leaves the images as they are."""
    counts = {}

    def count(image, name, magnitude, **kwargs):
        key = (name, round(magnitude, 6))
        counts[key] = counts.get(key, 0) + (len(image) if image.dim() == 4 else 1)
        return image

    transform._apply_image_or_video_transform = count
    run()
    return counts


def test_autoaugment_in_batches_draws_with_torchvisions_law():
    """Over 4,000 images each, every (operation, magnitude) is applied about as often in
    batches as torchvision's per-image forward applies it (counts within 5 standard
    deviations of their difference)."""
    transform, draws = fecam_autoaugment(), 4000
    images = random_images(draws, size=8, seed=3)
    torch.manual_seed(4)
    per_image = operations(transform, lambda: [transform(image) for image in images])
    torch.manual_seed(5)
    in_batches = operations(transform, lambda: [augmentation.auto_augment(
        images[i:i + 32], transform=transform) for i in range(0, draws, 32)])
    assert set(per_image) == set(in_batches) and len(per_image) > 30
    for key in per_image:
        a, b = per_image[key], in_batches[key]
        assert abs(a - b) <= 5 * (a + b) ** 0.5, (key, a, b)


def test_crop_flip_and_jitter_in_batches_draw_with_torchvisions_law():
    """2,000 draws each way on images that show their draw: the crop's row and column
    offsets (where the zero padding lands), the flip (a ramp), the brightness factor (a
    grey level): the same frequencies within 5 standard deviations."""
    draws, white = 2000, torch.full((1, 3, 16, 16), 255, dtype=torch.uint8)
    ramp = torch.arange(16, dtype=torch.uint8).expand(1, 3, 16, 16)
    grey = torch.full((1, 3, 16, 16), 100, dtype=torch.uint8)
    crop, flip = v2.RandomCrop(16, padding=4), v2.RandomHorizontalFlip()
    jitter = v2.ColorJitter(brightness=63 / 255)

    def observed(cropped, flipped, jittered):  # offsets 0..8, flipped or not, grey level
        rows = 4 - (cropped[:, 0, :, 8] == 0).cumprod(1).sum(1) \
            + (cropped[:, 0, :, 8] == 0).flip(1).cumprod(1).sum(1)
        return [torch.bincount(rows, minlength=9),
                torch.bincount((flipped[:, 0, 0, 0] == 15).long(), minlength=2),
                torch.histc(jittered[:, 0, 0, 0].float(), bins=8, min=75, max=125).long()]

    torch.manual_seed(0)
    per_image = observed(*(torch.stack([t(image[0]) for _ in range(draws)])
                           for t, image in ((crop, white), (flip, ramp), (jitter, grey))))
    torch.manual_seed(1)
    in_batches = observed(*(augmentation.in_batches(t)(image.expand(draws, -1, -1, -1))
                            for t, image in ((crop, white), (flip, ramp), (jitter, grey))))
    for a, b in zip(per_image, in_batches):
        assert ((a - b).abs() <= 5 * (a + b).clamp(min=1).sqrt()).all(), (a, b)
        assert (a > 0).sum() > 1  # more than one outcome: the frequencies can differ


def image_statistics(images: torch.Tensor) -> torch.Tensor:
    """Per image [B, 6]: mean, standard deviation, and the shares of pixels at 128
    (AutoAugment's fill), at 0 (the crop's padding), at 200 and above, at 50 and below."""
    x = images.float()
    return torch.stack([x.mean((1, 2, 3)), x.std((1, 2, 3)), *(
        share.float().mean((1, 2, 3)) for share in (images == 128, images == 0, images >= 200,
                                                    images <= 50))], 1)


@pytest.mark.slow
def test_the_fecam_pipeline_in_batches_gives_its_statistics_image_by_image():
    """The whole pipeline (crop, flip, jitter, AutoAugment) on 16 smooth images, 100 draws
    each way: every statistic's mean agrees within 4 standard errors. (Dropping either
    operation of AutoAugment's sub-policies moves a statistic by more than 5.)"""
    coarse = torch.randint(96, 160, (16, 3, 8, 8), generator=torch.Generator().manual_seed(6))
    images = torch.nn.functional.interpolate(coarse.float(), size=32, mode="bilinear") \
        .round().to(torch.uint8)
    batched = augmentation.in_batches(datasets.FECAM_AUGMENT)
    samples = {"per image": [], "in batches": []}
    for seed in range(100):
        torch.manual_seed(seed)
        samples["per image"].append(image_statistics(
            torch.stack([datasets.FECAM_AUGMENT(image) for image in images])))
        torch.manual_seed(1000 + seed)
        samples["in batches"].append(image_statistics(batched(images)))
    a, b = (torch.cat(s) for s in samples.values())  # [1600, 6]
    error = ((a.var(0) + b.var(0)) / len(a)).sqrt()
    assert ((a.mean(0) - b.mean(0)).abs() <= 4 * error).all(), (a.mean(0), b.mean(0), error)


def test_a_transform_without_a_batch_form_is_refused():
    with pytest.raises(ValueError, match="no batch form of RandomRotation"):
        augmentation.in_batches(v2.Compose([v2.RandomHorizontalFlip(), v2.RandomRotation(10)]))


def test_the_setting_augments_fecam_batches_in_batches(cifar_root):
    """batched_augmentation=True: the workers augment whole batches; a batch follows the
    seed, not the number of workers, and differs from the per-image pipeline's."""
    config = dataclasses.replace(datasets.get_benchmark("CIFAR100_FeCAM_setup", 6).best,
                                 validation_size=2)
    first = {}
    for in_batches in (False, True):
        task = datasets.load_tasks("CIFAR100_FeCAM_setup", 6, dataclasses.replace(
            config, batched_augmentation=in_batches), seed=1, root=cifar_root,
            device=torch.device("cpu"))[0]
        assert task.augment_in_batches is in_batches
        for workers in (1, 2):
            torch.manual_seed(0)
            first[in_batches, workers] = next(batches.TrainingBatches(task, 32,
                                                                      workers=workers))[0]
    assert torch.equal(first[True, 1], first[True, 2])
    assert torch.equal(first[False, 1], first[False, 2])
    assert not torch.equal(first[True, 1], first[False, 1])
