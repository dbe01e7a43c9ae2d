"""One run: a configuration and a seed, trained task after task into its own folder.

A run writes only into its own folder: config.json first, then after every
task its tables and a checkpoint, at the end its plots, task-agnostic
evaluations and final weights. Rerunning a run resumes after its last finished
task, or mid-task from its latest checkpoint; a stop signal saves first. A write
that fails for a full disk, an exceeded quota or a read-only folder stops the run
with one line saying where the rerun continues (files.py: every write goes there,
whole or not at all). The launchers (launchers.py) decide where and when each run
runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import re
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import filelock
import pandas as pd
import torch
from tqdm import tqdm

import capture
import chance
import data_files
import datasets
import evaluation
import files
import folders
import hypermask
import loggers
import machine
import plots
import task_agnostic
from checkpoints import (CHECKPOINT, TaskCheckpoints, cpu_copy, load_checkpoint, resume_point,
                         warn_about_space)
from datasets import HyperParameters
from errors import UserError


# config.json keys that describe a run but do not define it: a rerun may change them.
RECORD_ONLY = (*folders.EVALUATION_SETTINGS, *folders.MACHINE_COLUMNS,
               "data_source", "task_sizes", "data_fingerprint")


# config.json keys that follow from the defining ones and the data files (each task's
# classes: from dataset, part, seed and wnids.txt). A folder from before such a key was
# recorded lacks it, which is no change; held by both records, a difference is one.
DERIVED = ("task_classes",)


PROGRESS_SECONDS = 120  # batch logs: a progress line at most this often (and at a task's ends)


# -------------------------------------------------------------- stopping


class RunFailed(UserError):
    """A run that cannot go on (it diverged, say); the launcher goes on with the others."""


class OtherRun(UserError):
    """The run folder holds another run (another configuration, other classes or data):
    nothing may be written into it. `differences`: the settings that differ, as in the
    message ("beta: 0.0005 there, 0.5 now"), where the configuration differs."""

    def __init__(self, message: str, differences: str = ""):
        super().__init__(message)
        self.differences = differences


class AlreadyRunning(UserError):
    """The run folder is being trained by another process (its lock is held)."""


class Preempted(Exception):
    """A run stopped on request (a STOP_SIGNALS signal) after saving its state."""

    def __init__(self, signum: int, saved: str):
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}: saved {saved}; rerun the "
                         "same command to continue from there")


class StopRequest:
    """The stop signal received during a run, if any (set by stop_signals)."""

    def __init__(self):
        self.signum: int | None = None  # the first stop signal
        self.interrupts = 0  # Ctrl-Cs (SIGINT) so far: the second stops at once
        # when a stop asked for now takes effect (train_run sets it for the final evaluations)
        self.when = "after saving its state at the next training step"

    def check(self, saved: str) -> None:
        """Preempted if a stop was asked for; `saved` says what was saved, and where."""
        if self.signum is not None:
            raise Preempted(self.signum, saved)


# SIGHUP: the terminal closed (a dropped SSH session); SIGUSR2: submitit's time-limit warning
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGUSR2")
                     if hasattr(signal, name))


def handled_stop_signals() -> list[int]:
    """STOP_SIGNALS but SIGHUP where the process ignores it: started under nohup, a run
    must outlive its terminal, not stop with it."""
    return [signum for signum in STOP_SIGNALS
            if not (signum == getattr(signal, "SIGHUP", None)
                    and signal.getsignal(signum) is signal.SIG_IGN)]


@contextlib.contextmanager
def stop_signals():
    """SIGTERM, SIGINT, SIGHUP and SIGUSR2 ask the run to stop at its next step boundary.

    The run then saves a checkpoint and raises Preempted; the handlers that
    were there before (submitit's among them) are back when the block ends. A
    second Ctrl-C (SIGINT, whatever came between) stops at once
    (KeyboardInterrupt). Outside the main thread signals cannot be caught, and
    the request stays empty.
    """
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum, frame):
        if signum == signal.SIGINT:
            request.interrupts += 1
            if request.interrupts > 1:  # a second Ctrl-C
                raise KeyboardInterrupt
        if request.signum is not None:  # already stopping (the pool's SIGTERM after Ctrl-C)
            return
        request.signum = signum
        print(f"\n{signal.Signals(signum).name}: the run stops {request.when}"
              + (" (Ctrl-C again: stop at once, losing what it did since its last checkpoint)"
                 if signum == signal.SIGINT else ""), flush=True)

    previous = {signum: signal.signal(signum, handler) for signum in handled_stop_signals()}
    try:
        yield request
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


# --------------------------------------------------------------- one run


@dataclass(frozen=True)
class Job:
    """One run: a configuration and a seed, written only into run_dir."""

    config: HyperParameters
    dataset: str
    part: int
    seed: int
    run_dir: Path
    path_to_datasets: str
    device: str  # "auto", "cpu", "cuda", "cuda:1", "mps"
    demo: bool = False
    threads: int | None = None  # CPU threads; None: machine.cpu_threads() decides in the run
    checkpoint_minutes: float = 10  # a mid-task checkpoint this often; 0: only after tasks
    cuda_graphs: bool = True  # on a GPU, replay each task's training step from a CUDA graph
    logger: tuple[str, ...] = ()  # loggers.LOGGERS to watch the run with (no effect on results)
    wandb_project: str | None = None
    wandb_entity: str | None = None


# Job fields that config.json does not record as asked (job_record): where the run reads
# and writes, how often it saves, who watches it, the device and threads it asks for (the
# record holds those it got: machine.where_it_runs, `threads`). None may change a number
# the run writes beyond the machine's rounding: a field that does must be recorded, or a
# rerun with another value would take the finished run for its own.
UNRECORDED = ("run_dir", "path_to_datasets", "device", "threads", "checkpoint_minutes",
              "logger", "wandb_project", "wandb_entity")


# -------------------------------------------------------- the run folder


def make_folder(folder: Path) -> None:
    """Create a results folder, or a one-line UserError naming the path in the way (a
    files.WriteFailed for a full disk, an exceeded quota, a read-only folder)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        if error.errno in files.CAUSES:
            raise files.WriteFailed(folder, error, kept=False) from None
        raise UserError(f"cannot create the folder {folder} ({error.strerror}: "
                        f"{error.filename}); choose another --results_dir") from None


@contextlib.contextmanager
def one_writer(run_dir: Path):
    """Hold run_dir's lock while training it: a second process is refused at once.

    The lock is an OS file lock (filelock): it dies with its process, so a run
    killed with SIGKILL leaves nothing that blocks its rerun. running.txt says
    who holds it.
    """
    lock = take_lock(run_dir)
    owner = run_dir / folders.RUNNING
    try:
        # the second line tells this process from a later one given its pid (liveness)
        files.write_text(f"process {os.getpid()} on {socket.gethostname()}, since "
                         f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                         f"start tick {machine.process_start_tick(os.getpid())}\n", owner)
        yield
    finally:
        owner.unlink(missing_ok=True)
        lock.release()


def take_lock(run_dir: Path) -> filelock.FileLock:
    """run_dir's lock, acquired without waiting; AlreadyRunning, saying who holds it, if
    another process does."""
    lock = filelock.FileLock(run_dir / folders.LOCK)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        owner = run_dir / folders.RUNNING
        holder = (owner.read_text().partition("\n")[0].strip() if owner.exists()
                  else "another process")
        raise AlreadyRunning(f"{run_dir} is already being trained by {holder}; wait for it to "
                             "end (the same command with --status shows it) or stop that "
                             "process") from None
    except OSError as error:  # the lock file cannot be created: a read-only folder, say
        raise files.WriteFailed(run_dir / folders.LOCK, error, kept=False) from None
    return lock


def refuse_if_running(run_dir: Path) -> None:
    """AlreadyRunning if another process holds run_dir's lock (one_writer's) now: before a
    launcher writes its run.log there. A probe only: one_writer still decides."""
    with contextlib.suppress(files.WriteFailed):  # one_writer says it in one line
        take_lock(run_dir).release()


def liveness(run_dir: Path) -> str:
    """Whether an unfinished run's process lives, from its running.txt (one_writer):
    running, interrupted, or "running or interrupted" (a process of another machine)."""
    try:
        owner = (run_dir / folders.RUNNING).read_text()
    except OSError:  # removed when the process ended: nothing holds the run
        return "interrupted"
    match = re.match(r"process (\d+) on (\S+),", owner)
    if match is None or match[2] != socket.gethostname():
        return "running or interrupted"
    try:
        os.kill(int(match[1]), 0)  # signal 0: only whether the process exists
    except ProcessLookupError:  # killed (SIGKILL leaves running.txt behind)
        return "interrupted"
    except PermissionError:  # another user's process
        pass
    tick = re.search(r"^start tick (\d+)$", owner, re.MULTILINE)  # None: the pid alone decides
    if tick and machine.process_start_tick(int(match[1])) not in (None, int(tick[1])):
        return "interrupted"  # its pid, given to a later process
    return "running"


def changed_settings(run_dir: Path, record: dict) -> list[str]:
    """The settings this run's record changes in run_dir's config.json, as "name old -> new".

    Only keys in RECORD_ONLY (evaluation settings, threads, where it runs) may
    differ: a run resumes with their new values. Any other difference means the
    folder holds another run: a UserError.
    """
    config_path = run_dir / folders.CONFIG
    if not config_path.exists():
        if trained_unfinished(run_dir):  # config.json is written before any training
            raise OtherRun(f"{run_dir} holds a trained run but no config.json, the record of "
                           "its configuration, so it cannot resume as the same run: put the "
                           "file back, or delete the folder to run it again")
        return []
    # A field added to HyperParameters since the run began has its default there.
    saved = datasets.recorded_defaults() | folders.read_config(config_path)
    refuse_redrawn_classes(run_dir, saved)
    as_saved = json.loads(json.dumps(record))
    # The data's description (data_source, task_sizes, task_classes) joins the
    # record once the data are loaded, after this check: not yet known is no change.
    # task_classes (DERIVED) is compared only where both records hold it.
    changed = [k for k in sorted(set(saved) | set(as_saved)) if saved.get(k) != as_saved.get(k)
               and (k in as_saved or k not in RECORD_ONLY)
               and (k not in DERIVED or (k in saved and k in as_saved))]
    differences = ", ".join(describe_difference(k, saved.get(k), as_saved.get(k))
                            for k in changed if k not in RECORD_ONLY)
    if differences:
        advice = ("use another --results_dir" if folders.run_state(run_dir) == "finished"
                  else "use another --results_dir or delete that folder")
        if folders.configuration_name(run_dir.name):
            advice += (" (a grid search's points are numbered in its order: an override that "
                       "removes a grid dimension renumbers them)")
        raise OtherRun(f"{run_dir} holds a run with another configuration ({differences}); "
                       + advice, differences)
    other_data = [k for k in ("task_sizes", "data_fingerprint") if k in changed and k in saved]
    if other_data and trained_unfinished(run_dir):
        refuse_other_data(run_dir, saved, as_saved)
    return [f"{k} {saved.get(k)!r} -> {as_saved.get(k)!r}" for k in changed]


def trained_unfinished(run_dir: Path) -> bool:
    """Whether run_dir holds a run that has trained but not finished: one that resumes."""
    trained = any((run_dir / name).exists() for name in (CHECKPOINT, folders.ACCURACIES))
    return trained and folders.run_state(run_dir) != "finished"


def refuse_other_data(run_dir: Path, saved: dict, now: dict) -> None:
    """A UserError for an unfinished run whose data now give tasks of other sizes, or other
    contents (data_fingerprint): resuming would mix two datasets in one run (and, with other
    sizes, index its checkpoint's batch order into other images)."""
    there = saved.get("task_sizes") or []
    # the first task whose sizes differ (the task counts agree: number_of_tasks is compared)
    task = next((j for j, sizes in enumerate(zip(there, now["task_sizes"]))
                 if sizes[0] != sizes[1]), None)
    what = (f"task {task + 1}: {there[task]} then, {now['task_sizes'][task]} now" if task is
            not None else f"of the same sizes, other contents: data_fingerprint "
            f"{saved['data_fingerprint']} then, {now['data_fingerprint']} now")
    raise OtherRun(f"{run_dir} holds an unfinished run begun on other data ({what}, from "
                   f"{saved.get('data_source')}); put those data back or delete that folder to "
                   "start the run again")


def describe_difference(key: str, there, now) -> str:
    """"key: OLD there, NEW now"; of task_classes, only the first task whose classes differ."""
    if key == "task_classes" and isinstance(there, list) and isinstance(now, list):
        task = next(t for t, (a, b) in enumerate(itertools.zip_longest(there, now)) if a != b)
        key, there, now = (f"the classes of task {task + 1}",
                           *(c[task] if task < len(c) else None for c in (there, now)))
    return f"{key}: {there!r} there, {now!r} now"


def refuse_redrawn_classes(run_dir: Path, saved: dict) -> None:
    """A UserError for an unfinished run whose tasks an earlier version filled with other
    classes (datasets.CLASSES_REDRAWN; its config.json has no task_classes): resuming it
    would train its later tasks, and test its earlier ones, on classes its networks never
    learnt. A finished one stays: it is only summarised."""
    if "task_classes" in saved or saved.get("dataset") not in datasets.CLASSES_REDRAWN:
        return
    if trained_unfinished(run_dir):
        raise OtherRun(f"{run_dir} holds an unfinished {saved['dataset']} run begun by an "
                        "earlier version, whose tasks held other classes; delete that folder "
                        "to run it again with the authors' classes, or use another --results_dir")


def finished(run_dir: Path, record: dict) -> bool:
    """True if run_dir holds this exact run, complete; UserError if it holds another one
    (changed_settings). Prints nothing."""
    changed_settings(run_dir, record)
    return folders.run_state(run_dir) == "finished"


def write_failed(run_dir: Path, message: str) -> None:
    """The run's failed.txt; if it cannot be written (no space left, say), the message
    still goes out through the launcher and the log."""
    with contextlib.suppress(files.WriteFailed):
        files.write_text(message + "\n", run_dir / folders.FAILED)


def fail(run_dir: Path, message: str) -> None:
    """Record a run's failure in its failed.txt and raise RunFailed for the launcher."""
    write_failed(run_dir, message)
    raise RunFailed(message)


@contextlib.contextmanager
def failed_writes_stop(run_dir: Path, num_tasks: int):
    """A failed write (files.WriteFailed) stops the run, with one line that says what to
    do and where the rerun of the same command continues, kept in failed.txt.

    A full, over-quota or read-only file system (WriteFailed.shared) stops the launch
    as well: every run writing there would stop. Any other failed write is this run's
    failure (RunFailed); the launcher goes on with the others.
    """
    try:
        yield
    except files.WriteFailed as error:
        if folders.run_state(run_dir) == "finished":  # a logger's file after the results
            raise error.advise("rerun the same command: the run is finished, its results "
                               "are saved") from None
        advised = error.advise("rerun the same command: "
                               + resume_point(run_dir / CHECKPOINT, num_tasks))
        write_failed(run_dir, str(advised))  # its temporary file, removed, left room for it
        if advised.shared:
            raise advised from None
        raise RunFailed(str(advised)) from None


# -------------------------------------------------------------- progress


def clock_time() -> str:
    """The time of day as a line prefix: "[HH:MM:SS] "."""
    return time.strftime("[%H:%M:%S] ")


class ProgressBar:
    """A tqdm bar: loss and validation accuracy after each validation."""

    def __init__(self, label: str, total: int):
        self.bar = tqdm(total=total, desc=label, unit="it", leave=False, dynamic_ncols=True,
                        mininterval=1.0)
        self.row = None

    def __call__(self, iteration: int, row: dict) -> None:
        self.bar.update(1)
        if row and row is not self.row:
            self.row = row
            self.bar.set_postfix(loss=f"{row['loss']:.3f}",
                                 val=f"{row['validation_accuracy']:.1f}%")

    def skip(self, iterations: int) -> None:
        """Iterations done before a resume."""
        self.bar.update(iterations)

    def close(self) -> None:
        self.bar.close()


class ProgressLines:
    """Progress as plain lines for a log: after the first and the last iteration, and
    otherwise at most every `every_seconds` (the latest validation in each line).

    About 30 lines an hour, however fast the steps: a 10-hour task writes a few
    kilobytes, where a redrawn bar writes megabytes of carriage returns.
    """

    def __init__(self, label: str, total: int, every_seconds: float = PROGRESS_SECONDS,
                 clock=time.monotonic):
        self.label, self.total, self.every, self.clock = label, total, every_seconds, clock
        self.started = self.shown = clock()
        self.skipped = 0

    def skip(self, iterations: int) -> None:
        """Iterations done before a resume (not in the rate)."""
        self.skipped = iterations

    def __call__(self, iteration: int, row: dict) -> None:
        now = self.clock()
        if iteration in (self.skipped, self.total - 1) or now - self.shown >= self.every:
            self.shown = now
            rate = (iteration + 1 - self.skipped) / max(now - self.started, 1e-9)
            validation = (f", at the last validation (iteration {row['iteration']}): "
                          f"training loss {row['loss']:.4f}, validation accuracy "
                          f"{row['validation_accuracy']:.2f}%" if row else "")
            print(f"{clock_time()}{self.label}: iteration {iteration + 1}/{self.total}"
                  f"{validation}, {rate:.2f} it/s", flush=True)

    def close(self) -> None:
        pass


def train_with_progress(model, task, task_id: int, config, *, seed: int,
                        resume: dict | None = None, after_step=None,
                        make_step=hypermask.eager_step) -> list[dict]:
    """hypermask.train_task with its progress shown: a tqdm bar on a terminal, else
    plain lines (ProgressLines) for the logs of the local pool and SLURM.

    Args:
        resume, after_step, make_step: passed on to hypermask.train_task (after_step
            after the progress).
    """
    total = hypermask.task_iterations(task, config)
    label = f"  seed {seed} task {task_id + 1}/{config.number_of_tasks}"
    # tqdm draws on stderr: a bar only where it is seen, never redraws in a log file
    progress = (ProgressBar(label, total) if sys.stderr.isatty()
                else ProgressLines(label, total))
    if resume is not None:
        progress.skip(resume["iteration"])

    def step_done(state: hypermask.TrainingState) -> None:
        progress(state.iteration - 1, state.log[-1] if state.log else {})
        if after_step is not None:
            after_step(state)

    try:
        return hypermask.train_task(model, task, task_id, config, resume=resume,
                                    after_step=step_done, make_step=make_step)
    finally:
        progress.close()


# -------------------------------------------------------- training a run


@contextlib.contextmanager
def out_of_memory_names(where: str, advice: str | None = None):
    """An out-of-memory error (GPU or CPU) becomes RunFailed: where it happened and what
    to change (`advice`, else what lowers a run's memory)."""
    try:
        yield
    except torch.OutOfMemoryError as error:
        detail = str(error).splitlines()[0] if str(error) else "out of memory"
        raise RunFailed(f"ran out of GPU memory in {where} ({detail}); " + (
            advice or "rerun the same command to resume from the last checkpoint with a "
            "smaller evaluation_batch_size (evaluations), runs_per_gpu (runs sharing a GPU) "
            "or batch_size, or on a GPU with more memory")) from None
    except RuntimeError as error:  # torch's CPU allocator raises a plain RuntimeError
        if "DefaultCPUAllocator" not in str(error):
            raise
        detail = str(error).splitlines()[0].split("DefaultCPUAllocator: ")[-1]
        raise RunFailed(f"ran out of CPU memory in {where} ({detail}); " + (
            advice or "use smaller networks (target_hidden_layers, hnet_hidden_layers), a "
            "smaller batch_size or evaluation_batch_size, or a machine with more memory")
        ) from None


def require_finite(model, task_id: int) -> None:
    """Diverged if a weight is NaN or infinite (checked once per task: a host sync)."""
    if not torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all():
        raise hypermask.Diverged(f"task {task_id + 1}: the networks hold NaN or infinite weights "
                                 "after training")


def accuracy_on_test_split(model, task, task_id: int, config) -> float:
    """Test accuracy of `task`'s data under task `task_id`'s network at the configured
    sparsity and evaluation batch size (hypermask.evaluate)."""
    return hypermask.evaluate(model, task, task_id, sparsity=config.sparsity,
                              batch_size=config.evaluation_batch_size)


def chance_warning(task_id: int, accuracies: list[float], classes: list[int],
                   sizes: list[dict]) -> str | None:
    """The log's warning after task `task_id`: the evaluated tasks whose test accuracy is
    at chance (chance.at_chance), with their accuracy; None if there is none.

    Args:
        accuracies: the test accuracy (percent) of tasks 0..task_id.
        classes, sizes: per task, its number of classes and its datasets.task_sizes.
    """
    named = [f"task {j + 1} {accuracy:.2f}% ({classes[j]} classes)"
             for j, accuracy in enumerate(accuracies)
             if chance.at_chance(accuracy, classes[j], sizes[j]["test_samples"])]
    if not named:
        return None
    return (f"  warning: after task {task_id + 1}, {len(named)} task(s) at chance, "
            f"{chance.CHANCE_RULE}: " + ", ".join(named))


def write_run_tables(run_dir: Path, state: dict) -> None:
    """accuracies.csv, training_log.csv and transfer.csv from the run's rows so far."""
    for name in ("accuracies", "log", "transfer"):
        filename = {"log": "training_log"}.get(name, name)
        files.write_csv(pd.DataFrame(state[name]), run_dir / f"{filename}.csv")


def finish_run(model, tasks, config, *, run_dir: Path, keys: dict, title: str,
               watch: loggers.RunLoggers) -> None:
    """The end-of-run outputs: heatmap, task-agnostic accuracy, final metrics to the loggers,
    final weights."""
    accuracies = pd.read_csv(run_dir / folders.ACCURACIES)
    point = folders.configuration_name(run_dir.name)  # a grid point's, else ""
    plots.plot_heatmap(evaluation.accuracy_matrix(accuracies), run_dir / "heatmap.png",
                       f"{title}, {point + ', ' if point else ''}seed {keys['seed']}: "
                       "accuracy (%)")
    write_rows([{"task": j, "accuracy": hypermask.evaluate(
        model, task, j, sparsity=config.sparsity, split="val",
        batch_size=config.evaluation_batch_size)} for j, task in enumerate(tasks)],
        keys, run_dir / folders.VALIDATION)  # to choose configurations without the test sets
    found = task_agnostic.entropy_counts(model, tasks, config.sparsity,
                                         config.evaluation_batch_size)
    write_rows(task_agnostic.entropy_rows(found, tasks), keys, run_dir / folders.TASK_AGNOSTIC)
    if not config.fecam_evaluation:  # switched off on resume: no earlier launch's tables
        for name in (folders.FECAM, folders.TASK_AGNOSTIC_STEPS):
            (run_dir / name).unlink(missing_ok=True)
    else:  # the class-incremental evaluations, step by step
        try:
            rows = task_agnostic.fecam_evaluation(model, tasks, config.sparsity,
                                                  config.evaluation_batch_size,
                                                  with_validation=config.fecam_with_validation)
        except task_agnostic.DegenerateClass as error:  # training is saved: finish without it
            raise RunFailed(f"FeCAM has no class statistics for {error}; rerun the same command "
                            "with --fecam_evaluation=False to finish the run without FeCAM") \
                from None
        write_rows(rows, keys, run_dir / folders.FECAM)
        write_rows(task_agnostic.entropy_step_rows(found, tasks), keys,
                   run_dir / folders.TASK_AGNOSTIC_STEPS)
    watch.final(run_dir)  # before final_weights.pt: a run stopped here logs them again
    files.save({"hnet": cpu_copy(model.hnet.state_dict()),
                "target": cpu_copy(model.target.state_dict())},
               run_dir / folders.FINAL_WEIGHTS)
    (run_dir / CHECKPOINT).unlink(missing_ok=True)


def write_rows(rows: list[dict], keys: dict, path: Path) -> None:
    """One of the run's final tables: each row led by the keys that name the run (dataset,
    part, seed)."""
    files.write_csv(pd.DataFrame([{**keys, **row} for row in rows]), path)


def start_state(model, tasks: list, config, *, path: Path, device: torch.device,
                keys: dict) -> dict:
    """The run's state from its checkpoint at `path`, saying where it resumes; or, for a
    new run, a state before task 1 with the untrained networks' accuracy on each task."""
    state = load_checkpoint(path, model, device, len(tasks))
    if state is None:
        # b_j of forward transfer: the untrained networks under task j's (random) mask
        return {"next_task": 0, "accuracies": [], "log": [], "transfer": [
            {**keys, "task": j,
             "random_init_accuracy": accuracy_on_test_split(model, task, j, config),
             "previous_network_accuracy": float("nan")} for j, task in enumerate(tasks)]}
    if "task_in_progress" in state:
        print(f"  resuming task {state['next_task'] + 1} at iteration "
              f"{state['task_in_progress']['iteration']} from {path}")
    elif state["next_task"] == 0:  # stopped before its first step
        print(f"  resuming at the start of task 1 from {path}")
    else:
        print(f"  resuming after task {state['next_task']} from {path}")
    return state


def evaluate_after_task(model, tasks: list, task_id: int, config, state: dict, *, keys: dict,
                        class_count: list[int]) -> list[float]:
    """Row t of the accuracy matrix, A[t, j] for j <= t, added to the state's accuracies,
    and A[t, t+1] (the next task under task t's networks and embedding: forward transfer)
    to its transfer rows. Returns A[t, :t+1], percent."""
    last = [accuracy_on_test_split(model, tasks[j], j, config) for j in range(task_id + 1)]
    state["accuracies"] += [{**keys, "trained_task": task_id, "evaluated_task": j,
                             "accuracy": accuracy, "classes": class_count[j]}
                            for j, accuracy in enumerate(last)]
    if task_id + 1 < len(tasks):
        state["transfer"][task_id + 1]["previous_network_accuracy"] = \
            accuracy_on_test_split(model, tasks[task_id + 1], task_id, config)
    return last


def train_run(model, tasks: list, config, *, job: Job, device: torch.device,
              stop: StopRequest, watch: loggers.RunLoggers, classes: list[list]) -> None:
    """Train every task not yet done, saving after each (and within each, see TaskCheckpoints)
    and showing it to the run's loggers; `classes`: each task's classes, for the log
    (datasets.task_classes)."""
    run_dir = job.run_dir
    label = f"{job.dataset}{' (demo sample)' if job.demo else ''}"
    keys = {"dataset": label, "part": job.part, "seed": job.seed}
    sizes = datasets.task_sizes(tasks)  # [{training_samples, ...}] per task, for the log rows
    class_count = trained_classes(tasks)
    state = start_state(model, tasks, config, path=run_dir / CHECKPOINT, device=device,
                        keys=keys)
    checkpoints = TaskCheckpoints(run_dir / CHECKPOINT, state, model, device,
                                  minutes=job.checkpoint_minutes, stop=stop)
    make_step = (capture.graphed_step if device.type == "cuda" and job.cuda_graphs
                 else hypermask.eager_step)
    # the loggers' global step: the run's training iterations before each task, and in all
    watch.start(state, [0, *itertools.accumulate(hypermask.task_iterations(task, config)
                                                 for task in tasks)])

    def after_step(training: hypermask.TrainingState) -> None:
        watch.training_rows(training.log)  # before a checkpoint that may stop the run
        checkpoints(training)

    for task_id in range(state["next_task"], len(tasks)):
        if stop.signum is not None and not (run_dir / CHECKPOINT).exists():
            checkpoints.save()  # stopped before the first step: keep what is done
        stop.check(f"the run before task {task_id + 1} in {run_dir / CHECKPOINT}")
        print(f"  task {task_id + 1}/{len(tasks)}: classes "
              f"{', '.join(map(str, classes[task_id]))} (labels 0-{len(classes[task_id]) - 1} "
              "in this order)")
        with out_of_memory_names(f"task {task_id + 1}"):
            rows = train_with_progress(model, tasks[task_id], task_id, config, seed=job.seed,
                                       resume=state.pop("task_in_progress", None),
                                       after_step=after_step, make_step=make_step)
        state["log"] += [{"task": task_id, **sizes[task_id], **row} for row in rows]
        require_finite(model, task_id)
        last = evaluate_after_task(model, tasks, task_id, config, state, keys=keys,
                                   class_count=class_count)
        state["next_task"] = task_id + 1
        write_run_tables(run_dir, state)
        watch.accuracies(task_id, last)
        checkpoints.save()
        print(f"  after task {task_id + 1}: mean accuracy {sum(last) / len(last):.2f}% "
              f"over {len(last)} task(s)")
        if warning := chance_warning(task_id, last, class_count, sizes):
            print(warning, flush=True)
    stop.check(f"after the last task in {run_dir / CHECKPOINT}")
    stop.when = "when its final evaluations end, finished"
    with out_of_memory_names("the final evaluations (task-agnostic, FeCAM)"):
        finish_run(model, tasks, config, run_dir=run_dir, keys=keys,
                   title=f"{label} part {job.part}", watch=watch)
    stop.check(f"the finished run in {run_dir}")  # a stop during the final evaluations


def begin_in_folder(run_dir: Path, record: dict, model, config, tasks: list) -> None:
    """What a run does in its folder, under its lock, before training: say which settings
    changed, remove the temporary files a killed write left, warn if the disk is short
    of space, write config.json, and forget an earlier failure."""
    if changes := changed_settings(run_dir, record):
        print("  resuming with changed settings (used from now on): " + ", ".join(changes))
    if stale := files.remove_temporaries(run_dir):  # never read, only written anew
        print(f"  removed {', '.join(stale)}, left by a write that was cut off")
    warn_about_space(run_dir, model, config, tasks)
    files.write_text(json.dumps(record, indent=2), run_dir / folders.CONFIG)
    (run_dir / folders.FAILED).unlink(missing_ok=True)


def job_record(job: Job) -> dict:
    """What config.json records of a run before its data are loaded."""
    return {"dataset": job.dataset, "part": job.part, "seed": job.seed,
            "data": datasets.DEMO_LABEL if job.demo else job.dataset,
            **dataclasses.asdict(job.config), "threads": torch.get_num_threads(),
            "cuda_graphs": job.cuda_graphs}


def check_folders(jobs: list[Job]) -> None:
    """OtherRun for the first job whose folder holds another run: a launch stops before
    any run starts, as the sequential launcher would at that run."""
    for job in jobs:
        changed_settings(job.run_dir, job_record(job))


def _run(job: Job) -> None:
    config, dataset, part, seed, run_dir = (job.config, job.dataset, job.part, job.seed,
                                            job.run_dir)
    record = job_record(job)
    if finished(run_dir, record):
        print(f"  already finished: {run_dir} (delete it, or use another --results_dir, to run "
              "it again: a finished run is neither trained nor evaluated again, nor logged)")
        return
    device = machine.select_device(job.device)
    machine.use_device(device, config.tf32)
    print(f"  device: {machine.describe_device(device)}")
    if config.lr_scheduler and config.number_of_iterations:  # hypermask steps it per epoch
        print("  warning: lr_scheduler=True steps at epoch ends, which number_of_iterations does "
              f"not have: the learning rate stays {config.learning_rate} (set number_of_epochs "
              "to schedule it)")
    machine.keep_freed_memory()
    machine.set_seed(seed)
    with out_of_memory_names("loading the tasks", "every task's images are kept on the "
                             "device: use fewer tasks (number_of_tasks) or a device with more "
                             "memory"):
        stored = datasets.stored_data(dataset, job.path_to_datasets, job.demo)
        fingerprint = data_files.fingerprint(stored)  # before tasks are built from the arrays
        tasks = datasets.load_tasks(dataset, part, config, seed=seed, root=job.path_to_datasets,
                                    device=device, demo=job.demo, stored=stored)
    del stored  # freed as before, when only load_tasks held it (Tiny ImageNet: 1.3 GB)
    record |= {"data_source": data_files.data_source(dataset, job.path_to_datasets, job.demo),
               "data_fingerprint": fingerprint,
               "task_sizes": datasets.task_sizes(tasks),
               "task_classes": datasets.task_classes(dataset, part, config, seed=seed,
                                                     root=job.path_to_datasets),
               **machine.where_it_runs(device)}
    # One output layer shared by all tasks, as wide as the widest task needs.
    with out_of_memory_names("building the networks"):
        model = hypermask.build_model(config, tasks[0].input_shape,
                                      max(t.num_classes for t in tasks)).to(device)
    refuse_oversized_fecam(model, tasks, config, device)
    make_folder(run_dir)  # only now: missing data leave no folder
    with stop_signals() as stop, one_writer(run_dir), \
            failed_writes_stop(run_dir, config.number_of_tasks):
        if finished(run_dir, record):  # by the process that held the lock before
            return
        begin_in_folder(run_dir, record, model, config, tasks)
        try:
            with loggers.opened(job.logger, run_dir, wandb_project=job.wandb_project,
                                wandb_entity=job.wandb_entity) as watch:
                train_run(model, tasks, config, job=job, device=device, stop=stop, watch=watch,
                          classes=record["task_classes"])
        except hypermask.Diverged as error:
            fail(run_dir, f"diverged: {error}; configuration in {run_dir / 'config.json'} "
                          f"(learning_rate={config.learning_rate}, beta={config.beta}, "
                          f"lam={config.lam}); no accuracy of the diverged task was written")
        except RunFailed as error:
            fail(run_dir, str(error))


def trained_classes(tasks: list) -> list[int]:
    """Each task's number of classes, what its accuracy is held against: its labels are
    0..k-1 and every class is trained (datasets.check_task_sizes); not num_classes, which
    may be wider (the published FeCAM setup's output layer)."""
    return [int(task.train_y.max()) + 1 for task in tasks]


def refuse_oversized_fecam(model, tasks: list, config, device: torch.device) -> None:
    """A UserError before training when FeCAM's statistics could not fit in the device's
    memory: they are computed after the last task, and would fail hours later."""
    if not config.fecam_evaluation:
        return
    classes = sum(trained_classes(tasks))
    needed, total = task_agnostic.fecam_bytes(model, classes), machine.total_memory(device)
    if total is not None and needed > total:
        raise UserError(f"fecam_evaluation needs {files.size_text(needed)} for its {classes} "
                        f"class precision matrices (float64, one per class, as wide as the "
                        f"output layer's input), more than the {files.size_text(total)} of "
                        f"{machine.describe_device(device)}; set fecam_evaluation=False")


def run_one(job: Job) -> None:
    """Train one configuration with one seed, writing everything into job.run_dir.

    After every task, and every checkpoint_minutes during one, the run folder gets
    a checkpoint (and after a task its accuracy rows); a rerun continues from the
    last checkpoint and gives the same results.
    The run uses machine.cpu_threads(job.threads) CPU threads, recorded in config.json.
    """
    with machine.process_settings(machine.cpu_threads(job.threads)):
        _run(job)
