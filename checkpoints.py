"""A run's checkpoint: what it holds, how it is saved and read back, and how big it gets.

runs.py saves one after every task, and within a task every few minutes or when a stop
is asked for (TaskCheckpoints); a rerun restores the networks, the task in progress
and every random generator from it (load_checkpoint) and continues with the very next
step. Before training, a run warns when its disk cannot hold two checkpoints
(warn_about_space); after a failed write it says where the rerun continues
(resume_point).
"""

from __future__ import annotations

import random
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

import files
import hypermask
from errors import UserError
from folders import CHECKPOINT

if TYPE_CHECKING:
    import runs

# A run's state between tasks (runs.start_state): what a checkpoint holds besides the
# networks, the random generators and the task in progress.
RUN_STATE = ("next_task", "accuracies", "log", "transfer")


def cpu_copy(state_dict: dict) -> dict:
    """A state dict with every tensor on the CPU: loadable on a machine without a GPU."""
    return {name: tensor.cpu() for name, tensor in state_dict.items()}


def rng_state(device: torch.device) -> dict:
    """The random generators' states, as tensors and plain containers (weights_only-safe).

    Of the GPUs, only the run's own: the run is resumed wherever its next
    job lands, which may see fewer GPUs.
    """
    name, key, position, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": [name, torch.from_numpy(key.astype(np.int64)), position, has_gauss, gauss]}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    """Restore rng_state's generators; the GPU's into the run's device (skipped on a CPU)."""
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    name, key, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), position, has_gauss, gauss))
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def load_checkpoint(path: Path, model, device: torch.device, num_tasks: int) -> dict | None:
    """Restore model and random generators from a run's checkpoint; return its rows.

    A checkpoint that cannot be read, or whose rows do not fit a run of `num_tasks`
    tasks, is a UserError; random generators that cannot be restored are a
    warning: the networks and rows are good, only bit-identity with an
    uninterrupted run is lost.
    """
    if not path.exists():
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(checkpoint.pop("model"))
        rng = checkpoint.pop("rng")
        problem = state_problem(checkpoint, num_tasks)
    except Exception as error:  # truncated zip, foreign pickle, missing keys: all unusable
        problem = type(error).__name__
    if problem:
        raise UserError(f"checkpoint {path} is corrupt or incomplete ({problem}); "
                        "delete it to restart this run from its first task") from None
    try:
        set_rng_state(rng, device)
    except Exception as error:  # e.g. a GPU generator state this device cannot take
        print(f"  warning: the random generators of {path} were not restored "
              f"({type(error).__name__}: {error}); the run goes on from its checkpoint, "
              "but will not repeat an uninterrupted run bit for bit")
    return checkpoint


def state_problem(state: dict, num_tasks: int) -> str | None:
    """What makes a checkpoint's run state unusable for a run of num_tasks tasks (None:
    nothing): a missing key (another version's checkpoint), or tasks done that its rows
    do not hold, which the rerun would skip and report as trained."""
    missing = [key for key in RUN_STATE if key not in state]
    progress = state.get("task_in_progress")
    if isinstance(progress, dict):
        missing += [f"task_in_progress.{key}" for key in hypermask.TrainingState.SAVED
                    if key not in progress]
    if missing:
        return f"no {', '.join(missing)}"
    done = state["next_task"]
    if type(done) is not int or not 0 <= done <= num_tasks - (progress is not None):
        return f"next_task {done!r} in a run of {num_tasks} tasks"
    if len(state["accuracies"]) != done * (done + 1) // 2 or len(state["transfer"]) != num_tasks:
        return f"its accuracy or transfer rows do not fit {done} tasks done of {num_tasks}"
    return None


class TaskCheckpoints:
    """Saves the run's checkpoint: after each task, and within a task every few minutes or
    when a stop is asked for (then raising Preempted).

    A mid-task checkpoint holds the task's whole training state (networks,
    optimiser, scheduler, best networks, log rows, iteration, data order) and
    every random generator, taken at a step boundary: the rerun continues with
    the very next step.
    """

    def __init__(self, path: Path, run_state: dict, model, device: torch.device, *,
                 minutes: float, stop: runs.StopRequest, clock=time.monotonic):
        self.path, self.run_state, self.model, self.device = path, run_state, model, device
        self.seconds, self.stop, self.clock = 60 * minutes, stop, clock
        self.saved_at = clock()

    def save(self, training: hypermask.TrainingState | None = None) -> None:
        """The run's state, with the task in progress if `training` is given."""
        extra = {} if training is None else {"task_in_progress": training.state_dict()}
        files.save({**self.run_state, **extra, "model": self.model.state_dict(),
                    "rng": rng_state(self.device)}, self.path)
        self.saved_at = self.clock()

    def __call__(self, training: hypermask.TrainingState) -> None:
        due = self.seconds > 0 and self.clock() - self.saved_at >= self.seconds
        if due or self.stop.signum is not None:
            self.save(training)
            self.stop.check(f"task {self.run_state['next_task'] + 1} at iteration "
                            f"{training.iteration} in {self.path}")


# --------------------------------------------------------- disk space

CHECKPOINT_ALLOWANCE = 1 << 20  # bytes a checkpoint holds beyond its tensors (rows, framing)


def checkpoint_bytes(model, config, training_samples: int) -> int:
    """An upper estimate of the run's largest checkpoint, in bytes: one saved mid-task in
    its last task (TaskCheckpoints).

    It holds the networks (model.state_dict(), whose tensors hypnettorch lists under
    several names: torch.save writes each once), the optimiser's state (Adam: two
    moments per trainable parameter; RMSprop: one), the best networks once more under
    model_selection="best_val", the task's reference points (θ^start, the masked target
    tensors, and h*_j for the T-1 earlier tasks: T x n_outputs values), the epoch's
    sample order (an int64 per training sample), and CHECKPOINT_ALLOWANCE for the log
    rows, the random generators' states and the file's framing.
    """
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                for t in model.state_dict().values()}
    networks = sum(storages.values())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters()
                    if p.requires_grad)
    moments = 1 if config.optimizer == "rmsprop" else 2
    best = networks if config.model_selection == "best_val" else 0
    value_bytes = model.maskable_params[0].element_size()
    references = config.number_of_tasks * sum(model.numels) * value_bytes
    return (networks + moments * trainable + best + references + 8 * training_samples
            + CHECKPOINT_ALLOWANCE)


def warn(line: str) -> None:
    """A warning line in the run's output; where that is a log (the local pool, SLURM),
    on the process's own stderr too, so that the launcher's terminal shows it."""
    print(line, flush=True)
    shown = getattr(sys.stdout, "stream", sys.stdout)  # behind machine.SparedOutput, if it is
    if shown is not sys.__stdout__ and sys.__stderr__ is not None:
        print(line, file=sys.__stderr__, flush=True)


def warn_about_space(run_dir: Path, model, config, tasks: list) -> None:
    """One warning line if run_dir's file system has less free space than the run needs at
    its peak: its checkpoint and the next one while that is written, 2 x
    checkpoint_bytes, less what its checkpoint takes already (final weights and tables
    are smaller). Runs writing to the same disk at once need this each."""
    largest = checkpoint_bytes(model, config, max(len(task.train_y) for task in tasks))
    path = run_dir / CHECKPOINT
    needed = 2 * largest - (path.stat().st_size if path.exists() else 0)
    free = shutil.disk_usage(run_dir).free
    if free < needed:
        warn(f"  warning: {files.size_text(free)} free on the disk of {run_dir}, less than "
             f"the {files.size_text(needed)} this run may need (its checkpoint, up to "
             f"{files.size_text(largest)}, and the next one while it is written); free "
             "space now, or the run stops when the disk is full")


def resume_point(path: Path, num_tasks: int) -> str:
    """Where a rerun continues the run, from its checkpoint file at `path` (read lazily)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except FileNotFoundError:
        return "it starts this run from its first task (no checkpoint was saved yet)"
    except Exception:  # unreadable: load_checkpoint will say so
        return f"it continues from the last checkpoint, {path}"
    done, progress = state["next_task"], state.get("task_in_progress")
    if progress is not None:
        where = f"with task {done + 1} at iteration {progress['iteration']}"
    elif done == num_tasks:
        where = f"after task {done} of {done}, with the final evaluations"
    else:
        where = f"after task {done}" if done else "at the start of task 1"
    return f"it continues {where}, from {path}"
