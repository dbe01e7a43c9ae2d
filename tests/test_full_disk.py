"""A full disk, an exceeded quota, a read-only folder (issue 26): one line naming the path,
the cause and where the rerun continues; no temporary file left; the same command then
ends with the files of an undisturbed run.

Faults are made without a small disk: files.open is replaced by one whose Nth write to a
given file raises the OSError, or torch.save raises the RuntimeError it raises on a short
write while shutil.disk_usage reports the file system full. As root, a slow test also
fills a real tmpfs during a checkpoint write. Runs use the CPU and one thread.
"""

import dataclasses
import errno
import functools
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import TINY, run_folder, same_results, tiny_options

import checkpoints
import datasets
import files
import hypermask
import launchers
import main
import machine
import runs

REPO = Path(__file__).resolve().parents[1]
# A checkpoint after every step (1e-9 minutes): a fault lands mid-task at a known write.
LONGER = ["--number_of_tasks=3", "--number_of_iterations=6", "--checkpoint_minutes=1e-9"]
SMALL = [*TINY, *LONGER]
TORCH_SHORT_WRITE = "[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0"


def options(mnist_root, results, *extra):
    return tiny_options(mnist_root, results, *LONGER, *extra)


def temporaries(folder: Path) -> list[Path]:
    return sorted(Path(folder).rglob("*" + files.TEMPORARY))


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """Every run on one CPU thread (as taskset -c 0 would): the same sums in every run."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})


@pytest.fixture(scope="module")
def undisturbed(mnist_root, tmp_path_factory) -> Path:
    """The run folder of seed 5, run without a fault."""
    results = tmp_path_factory.mktemp("undisturbed")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "sched_getaffinity", lambda pid: {0})
        assert main.main(options(mnist_root, results, "--seeds=[5]")) == 0
    return run_folder(results, 5)


class FailingFile:
    """A file opened for writing whose `fail_at`-th write (counted by `counter` over every
    file of that name) writes half its bytes and raises `error`, as a disk that fills."""

    def __init__(self, path, mode, counter: list, fail_at: int, error: OSError):
        self.file = open(path, mode)
        self.counter, self.fail_at, self.error = counter, fail_at, error

    def write(self, data):
        self.counter[0] += 1
        if self.counter[0] == self.fail_at:
            self.file.write(bytes(data)[:len(data) // 2])
            raise self.error
        return self.file.write(data)

    def __getattr__(self, name):  # flush, tell, fileno, close, mode
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def fail_writes(monkeypatch, name: str, fail_at: int, code: int = errno.ENOSPC,
                where: str = "") -> list:
    """From now on the `fail_at`-th write to a file named `name` (in a folder whose path
    holds `where`) raises OSError(code); returns the write counter."""
    counter, real_open = [0], open

    def failing_open(path, mode="r", *args, **kwargs):
        path = Path(path)
        if path.name == name + files.TEMPORARY and where in str(path):
            return FailingFile(path, mode, counter, fail_at, OSError(code, os.strerror(code)))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(files, "open", failing_open, raising=False)
    return counter


def resumes_at(run: Path) -> str:
    """Where the rerun continues, read from the checkpoint itself (not checkpoints.resume_point)."""
    if not (run / "checkpoint.pt").exists():
        return "it starts this run from its first task"
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    if "task_in_progress" in state:
        return (f"it continues with task {state['next_task'] + 1} at iteration "
                f"{state['task_in_progress']['iteration']}, from {run / 'checkpoint.pt'}")
    return f"it continues after task {state['next_task']}"


def check_stopped(code: int, err: str, run: Path, name: str, cause: str, capsys,
                  mnist_root, results) -> None:
    """The run stopped with one line naming the file and the cause, saying where the
    rerun continues; no temporary file; failed.txt and --status say it."""
    assert code == 2
    line = err.strip()
    assert "\n" not in line and "Traceback" not in err
    assert line.startswith(f"error: {cause}: cannot write {run / name} (")
    assert "then rerun the same command: " + resumes_at(run) in line
    assert temporaries(results) == []
    assert (run / "failed.txt").read_text().strip() == line.removeprefix("error: ")
    assert main.main(options(mnist_root, results, "--seeds=[5]", "--status")) == 0
    assert f"| seed_5 | stopped: {cause}: cannot write {run / name}" in capsys.readouterr().out


def stopped_then_resumed(monkeypatch, capsys, mnist_root, results, undisturbed, detail: str,
                         free_space=lambda: None) -> None:
    """Seed 5 stops for a full disk at its checkpoint (check_stopped, and `detail` in the
    line); once the fault is gone (free_space, the monkeypatches undone) the same command
    ends with the undisturbed run's results."""
    args = options(mnist_root, results, "--seeds=[5]")
    code = main.main(args)
    run = run_folder(results, 5)
    err = capsys.readouterr().err
    check_stopped(code, err, run, "checkpoint.pt", "the disk is full", capsys, mnist_root,
                  results)
    assert detail in err
    free_space()
    monkeypatch.undo()
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert main.main(args) == 0
    same_results(run, undisturbed)


# --------------------------------------------------------------- the one place writes go


@pytest.mark.parametrize("code, cause, shared", [
    (errno.ENOSPC, "the disk is full", True),
    (errno.EDQUOT, "the disk quota is exceeded", True),
    (errno.EROFS, "the file system is read-only", True),
    (errno.EACCES, "no permission to write", False)])
def test_a_failed_write_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch, code, cause,
                                                           shared):
    path = tmp_path / "accuracies.csv"
    path.write_text("the previous file\n")
    fail_writes(monkeypatch, path.name, 1, code)
    with pytest.raises(files.WriteFailed) as caught:
        files.write_csv(pd.DataFrame({"accuracy": [1.0, 2.0]}), path)
    error = caught.value
    assert str(error) == (f"{cause}: cannot write {path} ({os.strerror(code)}; the previous "
                          f"one is kept); {files.REMEDIES[code]}, then run the same command "
                          "again")
    assert error.shared == shared and error.path == path
    assert path.read_text() == "the previous file\n" and temporaries(tmp_path) == []
    advised = error.advise("rerun it")
    assert str(advised).endswith(", then rerun it") and advised.shared == shared


def test_a_folder_that_cannot_be_made_for_lack_of_space_says_so(tmp_path, monkeypatch):
    def mkdir(self, *args, **kwargs):
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), str(self))

    monkeypatch.setattr(Path, "mkdir", mkdir)
    with pytest.raises(files.WriteFailed, match=f"^the disk quota is exceeded: cannot write "
                                                f"{tmp_path / 'results'} \\(Disk quota"):
        runs.make_folder(tmp_path / "results")


def test_torch_saves_short_write_is_found_through_the_file_object(tmp_path, monkeypatch):
    """torch.save raises RuntimeError on a short write; the OSError its write raised is the
    cause reported, though the file system (as seen here) has room to spare."""
    path = tmp_path / "checkpoint.pt"
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: shutil._ntuple_diskusage(
        10**12, 0, 10**12))
    fail_writes(monkeypatch, path.name, 5, errno.EDQUOT)
    with pytest.raises(files.WriteFailed, match=f"^the disk quota is exceeded: cannot write "
                                                f"{path} \\(Disk quota exceeded\\)"):
        files.save({"weights": torch.ones(1000)}, path)
    assert temporaries(tmp_path) == [] and not path.exists()


def test_a_short_write_without_an_oserror_counts_as_full_only_on_a_full_disk(tmp_path,
                                                                            monkeypatch):
    def short_write(obj, file):
        file.write(b"PK\x03\x04 half a checkpoint")
        raise RuntimeError(TORCH_SHORT_WRITE)

    monkeypatch.setattr(torch, "save", short_write)
    path = tmp_path / "final_weights.pt"
    free = [10**9]
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: shutil._ntuple_diskusage(
        10**12, 10**12 - free[0], free[0]))
    with pytest.raises(RuntimeError, match="unexpected pos"):  # room left: another failure
        files.save({}, path)
    assert temporaries(tmp_path) == []
    free[0] = 4096
    with pytest.raises(files.WriteFailed) as caught:
        files.save({}, path)
    assert str(caught.value).startswith(
        f"the disk is full: cannot write {path} (a short write (RuntimeError) with 4,096 bytes "
        "left on that file system); free space on that disk")
    assert temporaries(tmp_path) == []


def test_csv_png_text_and_torch_files_are_the_bytes_of_a_plain_write(tmp_path):
    """Written through a file object, the outputs are what pandas, matplotlib and torch
    write to a path (the results of earlier runs stay comparable byte for byte)."""
    import matplotlib.pyplot as plt

    frame = pd.DataFrame({"accuracy": [97.125, 3.5], "name": ["a", "é"]})
    frame.to_csv(tmp_path / "plain.csv", index=False)
    files.write_csv(frame, tmp_path / "atomic.csv")
    figure, ax = plt.subplots()
    ax.plot([1, 2, 3])
    figure.savefig(tmp_path / "plain.png", dpi=50)
    files.save_figure(figure, tmp_path / "atomic.png", dpi=50)
    plt.close(figure)
    for suffix in ("csv", "png"):
        assert (tmp_path / f"atomic.{suffix}").read_bytes() == \
            (tmp_path / f"plain.{suffix}").read_bytes()
    files.write_text("± 0.5\n", tmp_path / "summary.md")
    assert (tmp_path / "summary.md").read_text(encoding="utf-8") == "± 0.5\n"
    files.save({"x": torch.arange(3)}, tmp_path / "weights.pt")
    lazily = torch.load(tmp_path / "weights.pt", weights_only=True, mmap=True)
    assert torch.equal(lazily["x"], torch.arange(3))


# -------------------------------------------------------------------- a run's writes


def test_a_full_disk_during_a_checkpoint_stops_the_run_and_the_rerun_continues_it(
        mnist_root, tmp_path, monkeypatch, capsys, undisturbed):
    # some 40 writes a checkpoint: the 300th falls in a mid-task checkpoint
    counter = fail_writes(monkeypatch, "checkpoint.pt", 300)
    code = main.main(options(mnist_root, tmp_path, "--seeds=[5]"))
    err = capsys.readouterr().err
    assert counter[0] >= 300
    run = run_folder(tmp_path, 5)
    check_stopped(code, err, run, "checkpoint.pt", "the disk is full", capsys, mnist_root,
                  tmp_path)
    assert "(No space left on device; the previous one is kept); free space on that disk, " \
        "then rerun the same command: it continues with task " in err
    monkeypatch.undo()
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert main.main(options(mnist_root, tmp_path, "--seeds=[5]")) == 0
    assert "resuming task " in capsys.readouterr().out
    assert not (run / "failed.txt").exists() and temporaries(tmp_path) == []
    same_results(run, undisturbed)


@pytest.mark.slow
@pytest.mark.parametrize("name, fail_at", [
    ("config.json", 1),  # before anything is trained
    ("accuracies.csv", 2),  # after task 2, its checkpoint not yet written
    ("heatmap.png", 3),  # the final outputs
    ("task_agnostic.csv", 1),
    ("final_weights.pt", 10)])
def test_a_full_disk_at_any_write_of_a_run_is_continued_to_the_same_results(
        mnist_root, tmp_path, monkeypatch, capsys, undisturbed, name, fail_at):
    fail_writes(monkeypatch, name, fail_at, errno.EDQUOT)
    code = main.main(options(mnist_root, tmp_path, "--seeds=[5]"))
    run = run_folder(tmp_path, 5)
    check_stopped(code, capsys.readouterr().err, run, name, "the disk quota is exceeded",
                  capsys, mnist_root, tmp_path)
    monkeypatch.undo()
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert main.main(options(mnist_root, tmp_path, "--seeds=[5]")) == 0
    same_results(run, undisturbed)


@pytest.mark.slow
def test_torchs_runtime_error_on_a_full_file_system_is_a_full_disk(mnist_root, tmp_path,
                                                                   monkeypatch, capsys,
                                                                   undisturbed):
    real_save, saves = torch.save, [0]

    def save(obj, file, *args, **kwargs):  # the 10th checkpoint stops short, as on a full disk
        saves[0] += 1
        if saves[0] == 10:
            file.write(b"PK\x03\x04 half a checkpoint")
            monkeypatch.setattr(shutil, "disk_usage", lambda folder: shutil._ntuple_diskusage(
                10**9, 10**9, 0))
            raise RuntimeError(TORCH_SHORT_WRITE)
        return real_save(obj, file, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    stopped_then_resumed(monkeypatch, capsys, mnist_root, tmp_path, undisturbed,
                         "(a short write (RuntimeError) with 0 bytes left on that file system;")


def test_a_full_disk_under_tensorboard_is_one_line_too(mnist_root, tmp_path, monkeypatch,
                                                      capsys, undisturbed):
    """TensorBoard writes its events from a thread of its own: the failure comes back to
    the run as one line, without the thread's traceback."""
    pytest.importorskip("tensorboard")
    from tensorboard.compat.tensorflow_stub.io import gfile

    class FullAfter:  # the io module, as gfile sees it: its 20th append finds the disk full
        appends = 0

        def open(self, filename, mode, **kwargs):
            FullAfter.appends += mode.startswith("a")
            if FullAfter.appends >= 20:
                raise OSError(errno.ENOSPC, "No space left on device", filename)
            return open(filename, mode, **kwargs)

    monkeypatch.setattr(gfile, "io", FullAfter())
    unhandled = []  # what a thread raised and nothing handled (its traceback is printed)
    monkeypatch.setattr(threading, "excepthook", lambda args: unhandled.append(args.exc_type))
    args = options(mnist_root, tmp_path, "--seeds=[5]", "--logger=tensorboard")
    code = main.main(args)
    captured = capsys.readouterr()
    run = run_folder(tmp_path, 5)
    assert code == 2 and "Traceback" not in captured.err + captured.out and unhandled == []
    line, = captured.err.strip().splitlines()
    assert line.startswith(f"error: the disk is full: cannot write {run / 'tensorboard'}")
    assert "then rerun the same command: " + resumes_at(run) in line
    monkeypatch.undo()
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert main.main(args) == 0
    same_results(run, undisturbed)


def test_a_failed_summary_says_the_runs_are_saved(mnist_root, tmp_path, monkeypatch, capsys):
    fail_writes(monkeypatch, "summary.md", 1)
    code = main.main(options(mnist_root, tmp_path, "--seeds=[5]", "--number_of_tasks=1",
                             "--checkpoint_minutes=0"))
    err = capsys.readouterr().err.strip()
    experiment = tmp_path / "SplitMNIST_part0_best"
    assert code == 2 and "\n" not in err
    assert err == (f"error: the disk is full: cannot write {experiment / 'summary.md'} (No "
                   "space left on device); free space on that disk, then rerun the same "
                   "command (finished runs are not run again) or `python evaluation.py "
                   f"{experiment}` for the summary")
    assert (run_folder(tmp_path, 5) / "final_weights.pt").exists() and temporaries(tmp_path) == []
    monkeypatch.undo()
    assert __import__("evaluation").main([str(tmp_path)]) == 0
    assert (experiment / "summary.md").exists()
    fail_writes(monkeypatch, "results_table.csv", 1, errno.EROFS)  # the command line's writes
    assert __import__("evaluation").main([str(tmp_path), "--table"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: the file system is read-only: cannot write "
                          f"{tmp_path / 'results_table.csv'}") and err.count("\n") == 1


# ------------------------------------------------------------- half-written files


def interrupted_run(mnist_root, results, monkeypatch) -> Path:
    """Seed 5 stopped (Ctrl-C) at the start of task 3: a checkpoint after task 2."""
    real = runs.train_with_progress

    def train(model, task, task_id, config, **kwargs):
        if task_id == 2:
            raise KeyboardInterrupt
        return real(model, task, task_id, config, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(runs, "train_with_progress", train)
        assert main.main(options(mnist_root, results, "--seeds=[5]")) == 130
    return run_folder(results, 5)


def test_stale_temporary_files_are_removed_and_never_read(mnist_root, tmp_path, monkeypatch,
                                                          capsys, undisturbed):
    run = interrupted_run(mnist_root, tmp_path, monkeypatch)
    checkpoint = run / "checkpoint.pt"
    # what a killed writer leaves: a valid-looking checkpoint being written, half a CSV
    shutil.copy(checkpoint, run / "checkpoint.pt.tmp")
    checkpoint.unlink()
    (run / "accuracies.csv.tmp").write_text("trained_task,evaluated_task,accur")
    capsys.readouterr()
    assert main.main(options(mnist_root, tmp_path, "--seeds=[5]")) == 0
    out = capsys.readouterr().out
    assert "removed accuracies.csv.tmp, checkpoint.pt.tmp, left by a write that was cut off" \
        in out
    assert "resuming" not in out  # the temporary checkpoint is no checkpoint: from task 1
    assert temporaries(tmp_path) == []
    same_results(run, undisturbed)


@pytest.mark.slow
def test_a_kill_during_a_checkpoint_write_leaves_a_temporary_file_the_rerun_removes(
        mnist_root, tmp_path, undisturbed):
    args = options(mnist_root, tmp_path, "--seeds=[5]")
    run, temporary = run_folder(tmp_path, 5), run_folder(tmp_path, 5) / "checkpoint.pt.tmp"
    for attempt in range(10):  # until a kill lands while a checkpoint is being written
        process = subprocess.Popen(["taskset", "-c", "0", sys.executable, "main.py", *args],
                                   cwd=REPO, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while not temporary.exists() and process.poll() is None:
            assert time.time() < deadline
            time.sleep(0.0005)
        process.send_signal(signal.SIGKILL)
        process.wait()
        if temporary.exists():
            break
    assert temporary.exists(), "no kill landed inside a checkpoint write"
    code = subprocess.run(["taskset", "-c", "0", sys.executable, "main.py", *args], cwd=REPO,
                          capture_output=True, text=True, check=False)
    assert code.returncode == 0, code.stderr
    assert "removed checkpoint.pt.tmp" in code.stdout and temporaries(tmp_path) == []
    same_results(run, undisturbed)


# ------------------------------------------------------------------- warned before


def test_the_checkpoint_estimate_is_what_torch_writes(mnist_root, tmp_path):
    """checkpoint_bytes: the tensors of a mid-task checkpoint in the last task, plus an
    allowance that covers the rest (Adam and RMSprop, with and without best networks)."""
    base = datasets.get_benchmark("SplitMNIST", 0).best
    for changes in ({}, {"optimizer": "rmsprop", "model_selection": "best_val"}):
        config = dataclasses.replace(base, number_of_tasks=2, validation_size=10,
                                     number_of_iterations=2, batch_size=16,
                                     target_hidden_layers=(50,), hnet_hidden_layers=(10,),
                                     **changes)
        tasks = datasets.load_tasks("SplitMNIST", 0, config, seed=1, root=mnist_root,
                                    device=torch.device("cpu"))
        model = hypermask.build_model(config, tasks[0].input_shape, 2)
        estimate = checkpoints.checkpoint_bytes(model, config, max(len(t.train_y) for t in tasks))
        path = tmp_path / "checkpoint.pt"
        state = {"next_task": 1, "accuracies": [], "log": [], "transfer": []}
        save = checkpoints.TaskCheckpoints(path, state, model, torch.device("cpu"), minutes=1e-9,
                                    stop=runs.StopRequest())
        with machine.process_settings(threads=1):
            hypermask.train_task(model, tasks[1], 1, config, after_step=save)
        written = path.stat().st_size
        assert estimate - checkpoints.CHECKPOINT_ALLOWANCE <= written <= estimate, changes


def test_a_short_disk_is_warned_about_before_the_run(mnist_root, tmp_path, monkeypatch,
                                                     capsys):
    free = [1000]
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: shutil._ntuple_diskusage(
        10**12, 10**12 - free[0], free[0]))
    args = options(mnist_root, tmp_path, "--seeds=[5]", "--number_of_tasks=1",
                   "--checkpoint_minutes=0")
    assert main.main(args) == 0
    out = capsys.readouterr().out
    warnings = [line for line in out.splitlines() if "warning:" in line]
    assert len(warnings) == 1
    match = re.fullmatch(r"  warning: 1 kB free on the disk of (.+), less than the (.+) this "
                         r"run may need \(its checkpoint, up to (.+), and the next one while it "
                         r"is written\); free space now, or the run stops when the disk is full",
                         warnings[0])
    assert match and match[1] == str(run_folder(tmp_path, 5))
    config = dataclasses.replace(datasets.get_benchmark("SplitMNIST", 0).best,
                                 **main.parse_overrides(SMALL)[1] | {"number_of_tasks": 1})
    tasks = datasets.load_tasks("SplitMNIST", 0, config, seed=5, root=mnist_root,
                                device=torch.device("cpu"))
    largest = checkpoints.checkpoint_bytes(hypermask.build_model(config, (784,), 2), config,
                                    len(tasks[0].train_y))
    assert match[2] == files.size_text(2 * largest) and match[3] == files.size_text(largest)
    free[0] = 10**12
    shutil.rmtree(tmp_path / "SplitMNIST_part0_best")
    assert main.main(args) == 0 and "warning:" not in capsys.readouterr().out


def test_a_warning_from_a_logged_run_reaches_the_launchers_terminal(capfd):
    import contextlib

    with contextlib.redirect_stdout(io.StringIO()) as log:
        checkpoints.warn("  warning: 1 kB free")
    assert log.getvalue() == "  warning: 1 kB free\n"
    assert capfd.readouterr().err == "  warning: 1 kB free\n"
    with contextlib.redirect_stdout(machine.SparedOutput(sys.__stdout__)):  # main's terminal
        checkpoints.warn("  warning: 2 kB free")
    assert capfd.readouterr() == ("  warning: 2 kB free\n", "")  # once, not twice


# --------------------------------------------------------------------------- launchers


def pool_run_with_a_full_disk(name: str, fail_at: int, where: str, job, *where_it_runs) -> None:
    """launchers._pool_run in a pool process whose `fail_at`-th write to `name` in a folder
    named `where` finds the disk full (the parent's monkeypatches do not reach a spawned
    process)."""
    with pytest.MonkeyPatch.context() as patch:
        fail_writes(patch, name, fail_at, where=where)
        launchers_pool_run(job, *where_it_runs)


launchers_pool_run = launchers._pool_run


@pytest.mark.slow
def test_the_pool_reports_a_full_disk_and_starts_no_new_run(mnist_root, tmp_path, monkeypatch,
                                                            capsys, undisturbed):
    monkeypatch.setattr(launchers, "_pool_run", functools.partial(
        pool_run_with_a_full_disk, "checkpoint.pt", 300, "seed_5"))
    args = options(mnist_root, tmp_path, "--seeds=[5,6,7]", "--launcher=local",
                   "--max_parallel_runs=1")
    assert main.main(args) == 2
    captured = capsys.readouterr()
    run = run_folder(tmp_path, 5)
    assert f"STOPPED {run}: the disk is full: cannot write {run / 'checkpoint.pt'}" \
        in captured.out
    assert "no new runs (2 not started): their folders are on the same disk" in captured.out
    err = captured.err.strip()
    assert "\n" not in err and "Traceback" not in captured.err + captured.out
    assert err.startswith(f"error: 1 run(s) failed: {run}: the disk is full: cannot write ")
    assert err.endswith("; 2 other run(s) not started, their folders being on that disk "
                        "(seed_6, seed_7): the same command starts them")
    assert "then rerun the same command: " + resumes_at(run) in err
    assert temporaries(tmp_path) == []
    assert main.main([*args, "--status"]) == 0
    table = capsys.readouterr().out
    assert "| seed_5 | stopped: the disk is full: cannot write" in table
    assert "| seed_6 | not started" in table and "| seed_7 | not started" in table
    monkeypatch.undo()
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert main.main(args) == 0
    same_results(run, undisturbed)
    assert "resuming task " in (run / "run.log").read_text()


def test_a_slurm_job_stopped_by_a_full_disk_says_so(mnist_root, tmp_path, monkeypatch, capsys):
    import submitit

    settings, hyperparameters, _ = main.resolve([
        f"--results_dir={tmp_path}", f"--path_to_datasets={mnist_root}", "--seeds=[5]",
        "--device=cpu", *SMALL, "--number_of_tasks=1"])
    experiment, jobs = main.experiment_jobs(settings, hyperparameters, dataset="SplitMNIST",
                                            part=0)
    fail_writes(monkeypatch, "final_weights.pt", 1, errno.EDQUOT)
    submitted = launchers.submit_to_slurm(jobs, experiment, settings,
                                          executor=submitit.DebugExecutor(tmp_path / "logs"))
    result, = [job.result() for job in submitted]
    run = run_folder(tmp_path, 5)
    assert result.startswith(f"the disk quota is exceeded: cannot write "
                             f"{run / 'final_weights.pt'} (Disk quota exceeded); free space "
                             "within your quota (or have it raised), then rerun the same "
                             "command: it continues after task 1 of 1, with the final "
                             "evaluations, from")
    assert f"error: {result}" in capsys.readouterr().err  # the job's own log
    assert temporaries(tmp_path) == [] and "Traceback" not in (run / "run.log").read_text()
    assert launchers.run_status(jobs[0])["state"] == f"stopped: {result} (log: {run / 'run.log'})"


def test_exit_code_of_a_pool_run_stopped_by_its_disk(tmp_path):
    job = runs.Job(None, "SplitMNIST", 0, 1, tmp_path, "", "cpu")
    assert launchers.exit_error(job, launchers.DISK_STOPPED).startswith(
        f"the disk is full or read-only: a write into {tmp_path} failed and failed.txt could "
        "not be written either")
    (tmp_path / "failed.txt").write_text("the disk is full: cannot write x\n")
    assert launchers.exit_error(job, launchers.DISK_STOPPED) == "the disk is full: cannot write x"


def test_a_run_log_on_a_full_disk_loses_lines_not_the_run(tmp_path, monkeypatch):
    log = launchers.RunLog(tmp_path / "run.log")
    log.write("kept\n")
    log.flush()

    class Full:
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self):
            self.write("")

    real, log.stream = log.stream, Full()
    assert log.write("lost\n") == 5
    log.flush()
    log.stream = real
    log.write("kept again\n")
    log.close()
    assert (tmp_path / "run.log").read_text() == "kept\nkept again\n"


# ------------------------------------------------------------------------ a real disk


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs: a real file system that fills (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"mount -t tmpfs failed: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.slow
def test_a_real_disk_filling_during_a_checkpoint_write(mnist_root, small_disk, monkeypatch,
                                                       capsys, undisturbed):
    filler, real_save, saves = small_disk / "filler", checkpoints.TaskCheckpoints.save, [0]

    def save(self, training=None):  # before the 8th checkpoint, leave room for half of one
        saves[0] += 1
        if saves[0] == 8:
            room = self.path.stat().st_size // 2
            with open(filler, "wb") as file:
                file.write(b"\0" * (shutil.disk_usage(small_disk).free - room))
        real_save(self, training)

    monkeypatch.setattr(checkpoints.TaskCheckpoints, "save", save)
    stopped_then_resumed(monkeypatch, capsys, mnist_root, small_disk, undisturbed,
                         "(No space left on device; the previous one is kept)",
                         free_space=filler.unlink)
