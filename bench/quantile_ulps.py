"""How far the one-sort mask thresholds lie from torch.quantile's, in float32 ulps.

hypermask.segment_quantiles (the GPU path) takes every tensor's p-th percentile of the
mask scores from one sort; torch.quantile per tensor (the CPU path, and the
reference) rounds its linear interpolation its own way. This counts, over ResNet-20-
sized tensors of random |tanh| scores, several seeds and values of p, how many
thresholds are equal and how many lie 1, 2, ... ulps apart; with --device=cuda both
run on the GPU (CUDA's torch.quantile against the one sort there).

    python bench/quantile_ulps.py [--seeds=30] [--device=cpu]
"""

import argparse
import collections
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import hypermask  # noqa: E402
import timing  # noqa: E402  (bench/timing.py)

# ResNet-20's maskable tensors' sizes, in the order of its parameters (as the tests')
SIZES = [432, 16, 2304, 16, 4608, 32, 9216, 32, 18432, 64, 36864, 64, 640, 10, 7, 3]
PERCENTS = (0.5, 10.0, 30.0, 50.0, 70.0, 90.0, 99.0)


def ulp_counts(seeds: int, device: str) -> collections.Counter:
    """{ulps apart: how many thresholds} over seeds x PERCENTS x SIZES."""
    counts = collections.Counter()
    segments = hypermask.pruned_segments(SIZES, device=torch.device(device))
    for seed in range(seeds):
        generator = torch.Generator().manual_seed(seed)
        scores = torch.tanh(torch.randn(sum(SIZES), generator=generator)).abs().to(device)
        for percent in PERCENTS:
            ours = hypermask.segment_quantiles(scores, percent / 100, segments)
            reference = torch.stack([torch.quantile(v, percent / 100)
                                     for v in scores.split(SIZES)])
            # positive floats order like their bits: the difference of the bits counts ulps
            ulps = (ours.view(torch.int32) - reference.view(torch.int32)).abs()
            counts.update(ulps.tolist())
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    args.device = timing.usable_device(args.device)
    counts = ulp_counts(args.seeds, args.device)
    total = sum(counts.values())
    print(f"{total} thresholds ({len(SIZES)} ResNet-20-sized tensors, {args.seeds} seeds, "
          f"p in {', '.join(f'{p:g}' for p in PERCENTS)}) on {args.device}, "
          f"torch {torch.__version__}:")
    for ulps in sorted(counts):
        print(f"  {ulps} ulp(s) apart: {counts[ulps]}")


if __name__ == "__main__":
    main()
