"""How every bench times work: warm-up, synchronise the device, repeat, take the median.

A GPU runs what it is given later than Python hands it over, so a host clock
means something only after the device has finished: `synchronize` waits for it
(a no-op on a CPU). `median_seconds` is the one timer of the bench scripts, and
`usable_device` their one check of --device (a device that is not there ends a
script with one line, not a traceback), `at_least` and `whole_numbers` that of their
counts.
"""

import argparse
import statistics
import sys
import time
from typing import Callable


def synchronize(device) -> None:
    """Wait until `device` (a torch.device or its name) has finished its queued work."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(work: Callable[[], object], *, device, warmup: int = 1, repeats: int = 5,
                   number: int = 1) -> float:
    """Seconds one call of work() takes: the median over `repeats` timings.

    Each timing runs work() `number` times between two synchronisations of
    `device` (so that a GPU overlaps consecutive calls as it does in a run) and
    divides by `number`; `warmup` untimed calls come first (lazy set-up,
    allocator caches, a CUDA graph's recording).
    """
    for _ in range(warmup):
        work()
    timings = []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        for _ in range(number):
            work()
        synchronize(device)
        timings.append((time.perf_counter() - started) / number)
    return statistics.median(timings)


def usable_device(name: str) -> str:
    """`name` if it names a device this machine has (cpu, cuda, cuda:N, mps); else the
    script ends here with one line saying what to use instead (exit status 1).

    Found without using the device: a CUDA context is opened only by the work itself.
    """
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        sys.exit(f"--device={name} is no device: use --device=cpu or --device=cuda (cuda:N)")
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device here: run on a GPU machine or use --device=cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        sys.exit(f"no {name} here: this machine has {count} CUDA device(s), cuda:0 to "
                 f"cuda:{count - 1}; use one of them or --device=cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        sys.exit("no MPS device here: use --device=cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        sys.exit(f"--device={name}: the bench scripts run on cpu, cuda (cuda:N) or mps")
    return name


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least `minimum` (else argparse's one-line error)."""
    def whole_number(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"give a whole number of at least {minimum}, "
                                             f"not {text!r}")
        return value

    return whole_number


def whole_numbers(minimum: int) -> Callable[[str], list[int]]:
    """An argparse type: comma-separated whole numbers, each at least `minimum` ("1,2,3")."""
    single = at_least(minimum)

    def numbers(text: str) -> list[int]:
        try:
            return [single(item.strip()) for item in text.split(",")]
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"give whole numbers of at least {minimum} "
                                             f"separated by commas, not {text!r}") from None

    return numbers
