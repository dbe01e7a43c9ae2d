"""Where a run runs: its device, its CPU threads, its seed and the process-wide settings.

A run picks its device (`select_device`, `check_device` before any run starts),
fixes how it computes there (`use_device`: deterministic cuDNN, TF32 only if
asked), takes its share of the CPUs (`cpu_threads`), seeds every generator once
(`set_seed`) and records where it ran (`where_it_runs`, for config.json);
`process_settings` puts every process-wide setting back afterwards, so runs in one
process do not change one another. `spared_output` keeps a closed terminal or pipe
from stopping a command (main.py's and evaluation.py's).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import importlib.metadata
import io
import os
import platform
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from errors import UserError


def select_device(name: str):
    """torch.device for "auto" (cuda, then mps, then cpu) or an explicit name."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError) as error:
        reason = str(error).splitlines()[0].split(". ")[0]  # torch's first sentence
        raise unusable_device(name, reason[:200]) from None
    return device


def unusable_device(name: str, reason: str) -> UserError:
    """The one error for a device that cannot be used here, saying what to use instead."""
    return UserError(f"device {name!r} is not usable here ({reason}); use --device=auto or "
                     "--device=cpu")


def check_device(name: str) -> None:
    """select_device's UserError for a device that is not there, found without using it:
    the local pool's process opens no CUDA context, which would hold GPU memory all along
    (and, on a GPU in exclusive-process mode, lock its runs out)."""
    kind, _, index = name.partition(":")
    there = {"cuda": lambda: torch.cuda.is_available() and int(index or 0)
             < torch.cuda.device_count(), "mps": torch.backends.mps.is_available}
    if kind in there and not there[kind]():
        raise unusable_device(name, "no such device")


def describe_device(device: torch.device) -> str:
    """The device and what it is: "cuda:0 (NVIDIA H100 80GB HBM3; CUDA_VISIBLE_DEVICES=3)"."""
    if device.type == "cuda":
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        return (f"{device} ({torch.cuda.get_device_name(device)}"
                + (f"; CUDA_VISIBLE_DEVICES={visible})" if visible else ")"))
    return f"{device} ({torch.get_num_threads()} CPU thread(s))"


def use_device(device: torch.device, tf32: bool) -> None:
    """Make `device` the current one and fix how it computes: deterministic cuDNN, TF32 if asked.

    torch.cuda.set_device makes "cuda" and the pin-memory thread mean the run's
    GPU, not GPU 0. cuDNN's autotuner (benchmark) picks kernels by timing, so
    it is off; TF32 (10-bit mantissa matmuls and convolutions on Ampere and
    later) changes the numbers, so it is on only with tf32=True. CPU maths is
    unaffected.
    """
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    precision = "tf32" if tf32 else "ieee"
    torch.backends.cuda.matmul.fp32_precision = precision
    torch.backends.cudnn.conv.fp32_precision = precision


def cpu_threads(share: int | None = None) -> int:
    """A run's CPU thread budget: torch's threads, and half of it for DataLoader workers.

    Args:
        share: the run's share of the local pool's CPUs, if it runs in the pool.
    Returns:
        `share`; else, inside a SLURM job, its cpus-per-task (SLURM_CPUS_PER_TASK:
        many clusters do not pin a job to its cores); else every CPU this
        process may run on (its affinity, which taskset and cgroups restrict;
        not os.cpu_count(), the whole machine). Never more than that affinity.
    """
    available = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                 else os.cpu_count() or 1)
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if share is None and slurm.isdigit():
        share = int(slurm)
    return max(1, min(share or available, available))


def where_it_runs(device: torch.device) -> dict:
    """Where a run runs, for its config.json: a result is bit-identical only on the same
    device, with the same threads and library versions (folders.MACHINE_COLUMNS: a rerun
    elsewhere may change them)."""
    return {"device": str(device), "device_name": device_name(device),
            "torch_version": torch.__version__,
            "hypnettorch_version": importlib.metadata.version("hypnettorch"),
            "code_version": code_version()}


@functools.cache
def code_version() -> str | None:
    """This code's git commit ("3f2c1a9b0d4e"), with "+changes" where the project's modules
    (the *.py beside this file) differ from it or a new one is not committed; None where
    this file is not in a git checkout's commit (no git, a copy inside another repository)."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(Path(__file__).resolve().parent), *args],
                              capture_output=True, text=True, timeout=60)

    try:
        commit, tracked = (git("rev-parse", "--short=12", "HEAD"),
                           git("ls-files", "--error-unmatch", "--", Path(__file__).name))
        changed = git("diff", "--quiet", "HEAD", "--", ":(glob)*.py").returncode == 1 or bool(
            git("ls-files", "--others", "--exclude-standard", "--", ":(glob)*.py").stdout)
    except (OSError, subprocess.SubprocessError):  # no git, or a hung one
        return None
    if commit.returncode or tracked.returncode:
        return None
    return commit.stdout.strip() + ("+changes" if changed else "")


def process_start_tick(pid: int) -> int | None:
    """When process pid began, in clock ticks since boot (/proc/PID/stat): with its pid it
    names one process, whatever the wall clock did since. None where that cannot tell
    (not Linux, the process gone)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def device_name(device: torch.device) -> str:
    """The GPU's name ("NVIDIA H100 80GB HBM3"), else the CPU's model (/proc/cpuinfo)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def total_memory(device: torch.device) -> int | None:
    """The device's memory in bytes: a GPU's, or the machine's RAM for a CPU; None where
    it cannot be told (mps)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    if device.type == "cpu" and hasattr(os, "sysconf"):
        with contextlib.suppress(ValueError, OSError):
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return None


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) once per run."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def keep_freed_memory(keep: bool = True) -> None:
    """Make glibc keep freed memory for reuse instead of handing it back to the kernel.

    A training step frees and allocates the same large blocks every time (a
    paper-scale Permuted MNIST step: an 800 MB hypernetwork gradient and
    [t, n_outputs] temporaries). glibc serves each block over 32 MB with a fresh
    mmap and unmaps it when freed, so the kernel zero-fills every page again on
    first touch: about 200,000 page faults, a third of the step on a CPU. With
    mmap off and no trimming, freed blocks stay in the heap and the next step
    reuses them. Numbers are unchanged; peak memory grows by at most the
    largest temporaries. A no-op where the C library has no mallopt (macOS).
    keep=False puts glibc's defaults back (65,536 mmaps, trimming above 128 KiB).
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    if not hasattr(libc, "mallopt"):
        return
    m_trim_threshold, m_mmap_max = -1, -4  # glibc's malloc.h
    libc.mallopt(m_mmap_max, 0 if keep else 65536)
    libc.mallopt(m_trim_threshold, 2**31 - 1 if keep else 128 * 1024)


@contextlib.contextmanager
def process_settings(threads: int):
    """Inside the block torch uses `threads` CPU threads; after it, every process-wide
    setting a run changes is as it was (threads, cuDNN and matmul precision flags of
    use_device) or at its default (glibc's, see keep_freed_memory), so that runs in one
    process (tests, the sequential launcher) do not change one another."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (torch.get_num_threads(), cudnn.deterministic, cudnn.benchmark,
             matmul.fp32_precision, cudnn.conv.fp32_precision)
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        keep_freed_memory(False)
        (threads, cudnn.deterministic, cudnn.benchmark, matmul.fp32_precision,
         cudnn.conv.fp32_precision) = saved
        torch.set_num_threads(threads)


class SparedOutput(io.TextIOBase):
    """A text stream that leaves out what it cannot write, so that a print never stops a
    command: a terminal gone (SIGHUP), a pipe whose reader quit (`| head`, a `tee` killed), a
    full disk under run.log. The run's own files say a failed write (files.WriteFailed)."""

    def __init__(self, stream):
        super().__init__()
        self.stream, self.lost = stream, False

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:  # a terminal keeps its progress bars (runs.train_with_progress)
        try:
            return self.stream.isatty()
        except (OSError, ValueError, AttributeError):
            return False

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self.stream, "encoding", "utf-8")

    def write(self, text: str) -> int:
        try:
            self.stream.write(text)
        except (OSError, ValueError):  # ValueError: the stream was closed
            self.lost = True
        return len(text)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except (OSError, ValueError):
            self.lost = True


@contextlib.contextmanager
def spared_output():
    """stdout and stderr as SparedOutput inside the block. A stream found lost writes to
    /dev/null afterwards, so that Python's own flush at exit raises nothing either."""
    if sys.stdout is None or sys.stderr is None:  # started with a stream closed: print() skips
        yield
        return
    spared = SparedOutput(sys.stdout), SparedOutput(sys.stderr)
    try:
        with contextlib.redirect_stdout(spared[0]), contextlib.redirect_stderr(spared[1]):
            yield
    finally:
        for output in spared:
            if output.lost:
                with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):
                    devnull = os.open(os.devnull, os.O_WRONLY)
                    os.dup2(devnull, output.stream.fileno())
                    os.close(devnull)
