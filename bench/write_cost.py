"""What a whole-or-nothing write costs: files.save (temporary file, fsync, rename) against
a plain torch.save to the path, for a small checkpoint and a large one.

Every write of a run goes through files.py, which syncs the file to the disk before
renaming it into place (so a crash leaves the old file or the new one, and a network
file system's late write error surfaces in the run). The sync is the price; this
measures it on the disk that holds --folder (by default a temporary folder under the
current one, where Results/ would be).

    python bench/write_cost.py [--folder=DIR] [--large_mb=600] [--repeats=3]
"""

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import files  # noqa: E402
import timing  # noqa: E402  (bench/ is on sys.path when run)


def checkpoint(megabytes: float, tensors: int) -> dict:
    """A checkpoint-like dict of `tensors` float32 tensors holding `megabytes` MB in all."""
    numel = max(1, int(megabytes * 1e6 / 4 / tensors))
    return {f"tensor_{i}": torch.rand(numel) for i in range(tensors)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=None)
    parser.add_argument("--large_mb", type=float, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.folder or Path.cwd()) as folder:
        path = Path(folder) / "checkpoint.pt"
        print(f"writes to {folder}; median of {args.repeats} after one warm-up")
        print(f"{'checkpoint':>28}  {'torch.save ms':>13}  {'files.save ms':>13}")
        for megabytes, tensors in ((1, 120), (args.large_mb, 120)):
            state = checkpoint(megabytes, tensors)
            plain, whole = (timing.median_seconds(lambda: write(state, path), device="cpu",
                                                  repeats=args.repeats)
                            for write in (torch.save, files.save))
            print(f"{f'{megabytes:g} MB, {tensors} tensors':>28}  {plain * 1e3:13.1f}  "
                  f"{whole * 1e3:13.1f}")


if __name__ == "__main__":
    main()
