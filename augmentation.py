"""A per-image augmentation applied to a whole batch at once, every image with its own draws.

torchvision's v2 transforms draw one set of random parameters per call, so the
FeCAM setup's pipeline (datasets.FECAM_AUGMENT: crop, flip, colour jitter,
AutoAugment) runs image by image in batches.AugmentedImages: about 0.55 ms of
Python and small kernels per CIFAR image on one CPU core. `in_batches(transform)`
gives a function of a whole batch [B, C, H, W] uint8 that

- draws every image's parameters from the distributions the transform draws
  them from (each transform's own, restated in the functions below: crop
  offsets, flip, brightness factor; AutoAugment's sub-policy, whether each of
  its two operations applies and the sign of a signed magnitude), and
- applies the same torchvision kernels, once per group of images that drew
  the same parameters: crop, flip and brightness as one tensor operation over
  the batch (each image's offset, flip or factor), AutoAugment's operations
  through the transform's own dispatch (`_apply_image_or_video_transform`)
  on the images that drew that operation and magnitude.

Given the same parameters an image comes out as the per-image pipeline makes
it (tests/test_augmentation.py), so the two pipelines have one distribution;
they draw from torch's generator in another order, so the same seed gives
other images. Only the transforms FeCAM uses are supported; any other is a
ValueError when the batch function is made.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn.functional as F
from torchvision.transforms import v2


def in_batches(transform) -> Callable[[torch.Tensor], torch.Tensor]:
    """The batch form of a v2 transform (or v2.Compose of them): images [B, C, H, W] uint8
    in, the augmented images out; random draws from torch's global generator."""
    steps = [batch_step(t) for t in (transform.transforms if isinstance(transform, v2.Compose)
                                     else [transform])]

    def augment(images: torch.Tensor) -> torch.Tensor:
        for step in steps:
            images = step(images)
        return images

    return augment


def batch_step(transform) -> Callable[[torch.Tensor], torch.Tensor]:
    """The batch form of one v2 transform, or a ValueError naming what is not supported."""
    if (isinstance(transform, v2.RandomCrop) and transform.padding_mode == "constant"
            and not transform.pad_if_needed and isinstance(transform.fill, (int, float))):
        return functools.partial(random_crops, size=tuple(transform.size),
                                 padding=transform.padding or [0] * 4, fill=transform.fill)
    if type(transform) is v2.RandomHorizontalFlip:
        return functools.partial(random_flips, p=transform.p)
    if (isinstance(transform, v2.ColorJitter) and transform.brightness is not None
            and transform.contrast is transform.saturation is transform.hue is None):
        return functools.partial(random_brightness, bounds=transform.brightness)
    if type(transform) is v2.AutoAugment:
        return functools.partial(auto_augment, transform=transform)
    raise ValueError(f"no batch form of {transform!r}: batched augmentation supports "
                     "RandomCrop (constant padding), RandomHorizontalFlip, ColorJitter "
                     "(brightness only) and AutoAugment")


def random_crops(images: torch.Tensor, *, size: tuple[int, int], padding: list[int],
                 fill: float) -> torch.Tensor:
    """v2.RandomCrop per image: an offset drawn uniformly among all that fit in the padded
    image, rows and columns apart (see crops)."""
    left, right, top, bottom = padding
    b, (h, w) = len(images), size
    rows = torch.randint(0, images.shape[-2] + top + bottom - h + 1, (b,))
    cols = torch.randint(0, images.shape[-1] + left + right - w + 1, (b,))
    return crops(images, rows, cols, size=size, padding=padding, fill=fill)


def crops(images: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, *,
          size: tuple[int, int], padding: list[int], fill: float) -> torch.Tensor:
    """Pad (left, right, top, bottom) with `fill`, then crop `size` from (rows[i], cols[i])
    of image i: [B, C, H, W] in, [B, C, *size] out."""
    left, right, top, bottom = padding
    padded = F.pad(images, (left, right, top, bottom), value=fill)
    (h, w), rows, cols = size, rows.tolist(), cols.tolist()
    # a slice per image: a few microseconds each, where one gather over the batch takes
    # the time of hundreds
    return torch.stack([image[:, row:row + h, col:col + w]
                        for image, row, col in zip(padded, rows, cols)])


def random_flips(images: torch.Tensor, *, p: float) -> torch.Tensor:
    """v2.RandomHorizontalFlip per image: flipped where a uniform draw is below p."""
    return flips(images, torch.rand(len(images)) < p)


def flips(images: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Image i mirrored left to right where flip[i] ([B] bool)."""
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def random_brightness(images: torch.Tensor, *, bounds: tuple[float, float]) -> torch.Tensor:
    """v2.ColorJitter(brightness) per image: a factor uniform in bounds (a float32 draw, as
    the transform's)."""
    return brightness(images, torch.empty(len(images)).uniform_(*bounds))


def brightness(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Image i's pixels times factors[i] ([B] float32), clamped to 0..255 and truncated to
    uint8, as v2's adjust_brightness computes them."""
    return images.mul(factors[:, None, None, None]).clamp_(0, 255).to(images.dtype)


def auto_augment(images: torch.Tensor, *, transform: v2.AutoAugment) -> torch.Tensor:
    """v2.AutoAugment per image: a sub-policy drawn uniformly; each of its two operations
    applies with its probability; a signed magnitude is negated with probability 1/2."""
    policies = transform._policies  # [((name, probability, bin), (name, probability, bin))]
    b = len(images)
    chosen = torch.randint(len(policies), (b,))
    probabilities = torch.tensor([[p for _, p, _ in policy] for policy in policies])
    applied = torch.rand(b, 2) <= probabilities[chosen]  # float32, as the transform compares
    negated = torch.rand(b, 2) <= 0.5
    return auto_augment_with(images, transform, chosen, applied, negated)


def auto_augment_with(images: torch.Tensor, transform: v2.AutoAugment, chosen: torch.Tensor,
                      applied: torch.Tensor, negated: torch.Tensor) -> torch.Tensor:
    """AutoAugment with given draws: image i takes sub-policy chosen[i] ([B]); its operation
    k applies where applied[i, k] ([B, 2] bool), negated where negated[i, k]. The first
    operations run before the second ones, each on all the images that drew the same
    operation and magnitude at once."""
    policies = transform._policies
    chosen, applied, negated = chosen.tolist(), applied.tolist(), negated.tolist()
    images = images.clone()
    for position in (0, 1):
        groups: dict[tuple[str, float], list[int]] = {}
        for i, policy in enumerate(chosen):
            if applied[i][position]:
                name, _, magnitude_bin = policies[policy][position]
                value = magnitude(type(transform), name, magnitude_bin, negated[i][position],
                                  size=tuple(images.shape[-2:]))
                groups.setdefault((name, value), []).append(i)
        for (name, value), members in groups.items():
            index = torch.tensor(members)
            images[index] = transform._apply_image_or_video_transform(
                images[index], name, value, interpolation=transform.interpolation,
                fill=transform._fill)
    return images


@functools.lru_cache(maxsize=4096)
def magnitude(kind: type, name: str, magnitude_bin: int | None, negated: bool, *,
              size: tuple[int, int]) -> float:
    """The magnitude an AutoAugment (class `kind`) uses for operation `name` at
    `magnitude_bin` of its 10 bins on images of `size` (H, W): 0.0 for operations
    without one, negated if signed."""
    bins, signed = kind._AUGMENTATION_SPACE[name]
    values = bins(10, *size)
    if values is None:
        return 0.0
    value = float(values[magnitude_bin])
    return -value if signed and negated else value
