"""How every bench times work: warm-up, synchronise the device, repeat, take the median.

A GPU runs what it is given later than Python hands it over, so a host clock
means something only after the device has finished: `synchronize` waits for it
(a no-op on a CPU). `median_seconds` is the one timer of the bench scripts.
"""

import statistics
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
