"""Watching runs live: TensorBoard and Weights & Biases loggers (off by default).

A run's loggers receive what the run already writes to its CSV files: every
training-log row (a row per validation: the loss and its terms, the sparsity,
the learning rate, the validation accuracy), the accuracy matrix after each
task and the final metrics, all against one global step, the run's training
iterations so far over all tasks. They only read what training produces: a run
gives the same numbers with or without them.

    python main.py --demo --logger=tensorboard && tensorboard --logdir Results/
    WANDB_MODE=offline python main.py --demo --logger=wandb

A resumed run continues the same curves: its checkpoint holds every row
logged up to it, and what the interrupted process logged after it is trained
again. TensorBoard's folder is written anew from the checkpoint's rows, so
every step appears once, with the values of the resumed run. W&B cannot take
back a logged step: a resumed W&B run keeps what the interrupted process logged
and goes on after its checkpoint.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import threading
from pathlib import Path

import evaluation
import files
import folders
from errors import UserError

LOGGERS = ("tensorboard", "wandb")  # each the name of the package it needs, too
TENSORBOARD_FOLDER = "tensorboard"  # in the run folder: `tensorboard --logdir Results/`
WANDB_ID = "wandb_id.txt"  # in the run folder: a resumed run continues its W&B run
FINAL_METRICS = tuple(evaluation.SEED_METRICS)  # logged as final/<name>
# training-log columns that are no curve (the task sizes: the run's saved rows only)
NOT_CURVES = ("task", "iteration", "seconds", "training_samples", "validation_samples",
              "test_samples")


def check_setting(value) -> tuple[str, ...]:
    """The `logger` setting as a tuple of logger names, their packages checked.

    Args:
        value: None, "tensorboard", "wandb" or a list of them.
    Raises:
        UserError: an unknown logger, or one whose package is not installed.
    """
    names = [value] if isinstance(value, str) else [] if value is None else value
    unknown = [name for name in names if name not in LOGGERS]
    if unknown or not isinstance(names, list):
        raise UserError(f"--logger must be None, \"tensorboard\", \"wandb\" or a list of them "
                        f"such as [\"tensorboard\",\"wandb\"], not {value!r}")
    for name in names:
        require(name)
    return tuple(dict.fromkeys(names))


def require(name: str) -> None:
    """UserError saying what to install if the logger's package cannot be imported."""
    # torch.utils.tensorboard needs the tensorboard package
    modules = ("tensorboard", "torch.utils.tensorboard") if name == "tensorboard" else ("wandb",)
    try:
        for module in modules:
            importlib.import_module(module)
    except ImportError:
        raise UserError(f"--logger={name} needs the {name} package, which is not installed: "
                        f"pip install {name}") from None


def training_scalars(row: dict) -> dict[str, float]:
    """A training-log row as scalars: {"train/loss": ..., "train/sparsity": ..., ...}."""
    return {f"train/{name}": float(value) for name, value in row.items()
            if name not in NOT_CURVES}


def accuracy_scalars(accuracies: list[float], num_tasks: int) -> dict[str, float]:
    """One row of the accuracy matrix (after a task) as scalars.

    Args:
        accuracies: [t + 1] test accuracy of tasks 0..t after training task t.
        num_tasks: the run's tasks; tags are numbered from 0 with as many digits
            as the last one needs (at least 2), so they sort: accuracy/task_03.
    """
    width = max(2, len(str(num_tasks - 1)))
    return {**{f"accuracy/task_{j:0{width}d}": float(a) for j, a in enumerate(accuracies)},
            "accuracy/mean": sum(accuracies) / len(accuracies)}


def final_scalars(summary: dict) -> dict[str, float]:
    """The final metrics of evaluation.run_summary that are numbers: {"final/ACC": ...}."""
    return {f"final/{name}": float(summary[name]) for name in FINAL_METRICS
            if name in summary and math.isfinite(summary[name])}


def checkpoint_events(state: dict, offsets: list[int]) -> list[tuple[int, dict]]:
    """Every (step, scalars) a run's checkpoint state holds, in the order they were logged.

    Args:
        state: the run's rows (runs.train_run): "log", "accuracies" and the
            "task_in_progress" training state, if any.
        offsets: [T + 1] the global step at which each task starts (and the total).
    """
    rows = state["log"] + state.get("task_in_progress", {}).get("log", [])
    events = [(offsets[row["task"]] + row["iteration"], training_scalars(row)) for row in rows]
    for trained in sorted({row["trained_task"] for row in state["accuracies"]}):
        accuracies = [row["accuracy"] for row in state["accuracies"]
                      if row["trained_task"] == trained]
        events.append((offsets[trained + 1], accuracy_scalars(accuracies, len(offsets) - 1)))
    return sorted(events, key=lambda event: event[0])  # stable: a task's rows, then its row of A


def checkpoint_step(state: dict, offsets: list[int]) -> int:
    """The global step the run's checkpoint stands at (0 for a run that starts now)."""
    return offsets[state["next_task"]] + state.get("task_in_progress", {}).get("iteration", 0)


class RunLoggers:
    """The loggers of one run, given its events at their global step (no-ops without any).

    Opened by `opened` before the run's state is known, started by `start`
    once it is (the checkpoint loaded), closed when `opened`'s block ends.
    """

    def __init__(self, names: tuple[str, ...], run_dir: Path, *, wandb_project: str | None,
                 wandb_entity: str | None):
        self.names, self.run_dir = names, run_dir
        self.wandb = {"project": wandb_project, "entity": wandb_entity}
        self.backends, self.offsets = [], [0]
        self.last_row_step = -1  # of the last training row sent

    def start(self, state: dict, offsets: list[int]) -> None:
        """Open the loggers where the run stands and log again what its checkpoint holds
        from each logger's first step on (all of it for a logger that starts now).

        Args:
            state: the run's rows, as loaded from its checkpoint (or fresh).
            offsets: [T + 1] the global step at which each task starts (and the total).
        """
        self.offsets = offsets
        if not self.names:
            return
        resumed_at = checkpoint_step(state, offsets)
        config = json.loads((self.run_dir / folders.CONFIG).read_text())
        for name in self.names:  # again: a pool or SLURM worker may lack what main.py has
            require(name)
        if "tensorboard" in self.names:
            self.backends.append(TensorBoard(self.run_dir, config))
        if "wandb" in self.names:
            self.backends.append(WeightsAndBiases(self.run_dir, resumed_at, config,
                                                  **self.wandb))
        for step, scalars in checkpoint_events(state, offsets):
            for backend in self.backends:
                if step >= backend.since:
                    backend.log(step, scalars)
            if any(name.startswith("train/") for name in scalars):
                self.last_row_step = step
        self.flush()

    def log(self, step: int, scalars: dict[str, float]) -> None:
        for backend in self.backends:
            backend.log(step, scalars)

    def training_rows(self, rows: list[dict]) -> None:
        """Log the rows of a task's training log not logged yet (called after every step)."""
        new = []
        for row in reversed(rows if self.backends else []):
            step = self.offsets[row["task"]] + row["iteration"]
            if step <= self.last_row_step:
                break
            new.append((step, row))
        for step, row in reversed(new):
            self.log(step, training_scalars(row))
            self.last_row_step = step
        if new:
            self.flush()

    def accuracies(self, task_id: int, accuracies: list[float]) -> None:
        """The accuracy matrix's row after task `task_id`, at the step that ends the task."""
        self.log(self.offsets[task_id + 1], accuracy_scalars(accuracies, len(self.offsets) - 1))
        self.flush()

    def final(self, run_dir: Path) -> None:
        """The run's final metrics (evaluation.run_summary's), at its last step."""
        if not self.backends:
            return
        scalars = final_scalars(evaluation.run_summary(run_dir))
        self.log(self.offsets[-1], scalars)
        for backend in self.backends:
            backend.summarize(scalars)
        self.flush()

    def flush(self) -> None:
        for backend in self.backends:
            backend.flush()

    def close(self, failed: bool) -> None:
        for backend in self.backends:
            backend.close(failed)
        self.backends = []


@contextlib.contextmanager
def opened(names: tuple[str, ...] | None, run_dir: Path, *, wandb_project: str | None = None,
           wandb_entity: str | None = None):
    """The run's loggers (RunLoggers, to be started), closed when the block ends.

    Args:
        names: the loggers (check_setting's tuple); () or None: loggers that do nothing.
        run_dir: the run folder, holding config.json (logged as hyperparameters).
    """
    loggers = RunLoggers(tuple(names or ()), run_dir, wandb_project=wandb_project,
                         wandb_entity=wandb_entity)
    try:
        yield loggers
    except BaseException:
        loggers.close(failed=True)
        raise
    loggers.close(failed=False)


class TensorBoard:
    """One TensorBoard run: the events file in <run>/tensorboard/.

    A resumed run replaces the folder's events files with one written from its
    checkpoint's rows on (`since` 0): some readers drop what an earlier file
    logged from a restart's step on (purge_step), others keep it (`tensorboard
    --load_fast=false` shows such steps twice), so a fresh file is the one way
    every reader shows each step once. purge_step=0 still tells a
    TensorBoard that watched the folder to forget the earlier file. Every batch
    of scalars is flushed at once, so TensorBoard shows it without delay.
    """

    since = 0  # the first step it is given again from the checkpoint: all of them

    def __init__(self, run_dir: Path, config: dict):
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        self.folder = run_dir / TENSORBOARD_FOLDER
        earlier = sorted(self.folder.glob("events.out.tfevents.*"))
        for path in earlier:  # all of it is in the checkpoint, or trained again
            path.unlink()
        self.thread_errors = threading.excepthook
        threading.excepthook = self.writer_thread_error
        try:
            with self.writes():
                self.writer = SummaryWriter(self.folder, purge_step=0 if earlier else None)
                # the hyperparameters, with the metrics they are judged by
                values = {k: v if v is None or isinstance(v, (bool, int, float, str))
                          else str(v) for k, v in config.items()}
                for summary in hparams(values, {f"final/{name}": 0 for name in FINAL_METRICS}):
                    self.writer.file_writer.add_summary(summary)
        except BaseException:
            threading.excepthook = self.thread_errors
            raise

    @contextlib.contextmanager
    def writes(self):
        """A write that fails (a full disk) is files.WriteFailed, naming the events file."""
        try:
            yield
        except OSError as error:  # gfile names its files in bytes
            where = os.fsdecode(error.filename) if error.filename else self.folder
            raise files.WriteFailed(Path(where), error, kept=False) from None

    def writer_thread_error(self, args) -> None:
        """threading.excepthook while the writer is open: TensorBoard writes from a thread
        of its own, and an OSError there (a full disk) comes back in the run's next log or
        flush as a WriteFailed; the thread's traceback is not printed too."""
        if not (issubclass(args.exc_type, OSError)
                and type(args.thread).__module__.startswith("tensorboard")):
            self.thread_errors(args)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        with self.writes():
            for tag, value in scalars.items():
                self.writer.add_scalar(tag, value, step)

    def summarize(self, scalars: dict[str, float]) -> None:
        pass  # the final scalars are the hyperparameters' metrics

    def flush(self) -> None:
        with self.writes():
            self.writer.flush()

    def close(self, failed: bool) -> None:
        try:
            with self.writes():
                self.writer.close()
        except files.WriteFailed:
            if not failed:  # else the run's own error is the one to report
                raise
        finally:
            threading.excepthook = self.thread_errors


class WeightsAndBiases:
    """One W&B run, named <experiment>/<run folder>, grouped by experiment.

    Its id is kept in the run folder (wandb_id.txt), so a resumed run
    continues it (resume="allow"). W&B's local files go into the run folder
    (<run>/wandb/) unless WANDB_DIR says where; WANDB_MODE=offline keeps them
    there for `wandb sync`.
    """

    def __init__(self, run_dir: Path, resumed_at: int, config: dict, *, project: str | None,
                 entity: str | None):
        import wandb

        id_file = run_dir / WANDB_ID
        continuing = id_file.exists()
        run_id = id_file.read_text().strip() if continuing else None  # None: W&B makes one
        self.since = resumed_at if continuing else 0
        try:
            self.run = wandb.init(
                project=project, entity=entity, group=run_dir.parent.name,
                name=f"{run_dir.parent.name}/{run_dir.name}", id=run_id,
                resume="allow", config=config, dir=os.environ.get("WANDB_DIR", run_dir),
                settings=wandb.Settings(console="off"))  # the run's output stays ours
        except Exception as error:  # no login, no network, a refused project: one line
            message = str(error).strip().splitlines()[0] if str(error).strip() else \
                type(error).__name__
            raise UserError(f"W&B could not start the run of {run_dir} ({message}); log in "
                            "with `wandb login`, or set WANDB_MODE=offline") from None
        if not continuing:  # only now: the run exists
            files.write_text(self.run.id + "\n", id_file)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        if step >= self.run.step:  # W&B ignores (and warns about) steps before its last
            self.run.log(scalars, step=step)

    def summarize(self, scalars: dict[str, float]) -> None:
        self.run.summary.update(scalars)

    def flush(self) -> None:
        pass  # W&B sends in the background

    def close(self, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)
