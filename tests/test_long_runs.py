"""Long runs: mid-task checkpoints, stop signals, one writer per run, divergence, dead workers."""

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import run_folder, same_results, tiny_options, wait_for

import checkpoints
import datasets
import hypermask
import launchers
import machine
import main
import runs
from batches import TrainingBatches

REPO = Path(__file__).resolve().parents[1]


def options(mnist_root, results, *extra):
    return tiny_options(mnist_root, results, "--number_of_tasks=3", *extra)


def launch(args, **kwargs):
    return subprocess.Popen([sys.executable, "main.py", *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def checkpoint_in_task(run: Path, task: int) -> dict | None:
    """The checkpoint if it holds a mid-task state of `task` (0-based)."""
    try:
        state = torch.load(run / "checkpoint.pt", weights_only=True)
    except Exception:  # absent, or being replaced
        return None
    if state["next_task"] == task and "task_in_progress" in state:
        return state
    return None


# ------------------------------------------------------------------ mid-task checkpoints


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["SIGKILL", "SIGTERM", "SIGHUP"])  # SIGHUP: terminal closed
def test_a_run_stopped_mid_task_resumes_to_identical_files(mnist_root, tmp_path, stop):
    # A checkpoint every 6 ms: one after nearly every step.
    args = options(mnist_root, tmp_path / "cut", "--seeds=[5]", "--number_of_iterations=150",
                   "--checkpoint_minutes=0.0001")
    run = run_folder(tmp_path / "cut", 5)
    process = launch(args)
    wait_for(lambda: (state := checkpoint_in_task(run, 1)) is not None
             and state["task_in_progress"]["iteration"] >= 20, process=process)
    process.send_signal(getattr(signal, stop))
    out, err = process.communicate()
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["next_task"] == 1 and not (run / "final_weights.pt").exists()
    iteration = state["task_in_progress"]["iteration"]
    assert 0 < iteration < 150
    if stop != "SIGKILL":  # saved at the next step boundary, then a message and exit
        assert process.returncode == 128 + getattr(signal, stop)
        assert (f"stopped by {stop}: saved task 2 at iteration {iteration} in "
                f"{run / 'checkpoint.pt'}; rerun the same command") in err
    code = subprocess.run([sys.executable, "main.py", *args], cwd=REPO, capture_output=True,
                          text=True)
    assert code.returncode == 0, code.stderr
    assert f"resuming task 2 at iteration {iteration}" in code.stdout
    assert main.main(options(mnist_root, tmp_path / "whole", "--seeds=[5]",
                             "--number_of_iterations=150", "--checkpoint_minutes=0.0001")) == 0
    same_results(run, run_folder(tmp_path / "whole", 5))


@pytest.mark.slow
def test_a_run_whose_output_pipe_closes_trains_on_to_the_end(mnist_root, tmp_path):
    """`python main.py | head -2`, or a `tee` killed: the reader quits, the run goes on."""
    process = launch(options(mnist_root, tmp_path, "--seeds=[1]", "--number_of_iterations=50"))
    process.stdout.readline()
    process.stdout.close()  # every later print meets a closed pipe
    err = process.stderr.read()
    assert process.wait() == 0 and "Traceback" not in err and "Error" not in err, err
    assert (run_folder(tmp_path, 1) / "final_weights.pt").exists()


def test_output_that_cannot_be_written_is_left_out():
    class Gone:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise OSError(5, "Input/output error")  # EIO: the terminal closed

    output = machine.SparedOutput(Gone())
    assert output.write("progress\n") == 9 and output.lost
    output.flush()  # no error either
    assert not output.isatty()


def test_a_terminal_behind_spared_output_is_still_a_terminal():
    """The progress bar needs isatty (runs.train_with_progress); the review found it lost."""
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert machine.SparedOutput(Terminal()).isatty()


def test_nohup_keeps_a_run_alive_when_its_terminal_closes():
    """Under nohup SIGHUP is ignored: the run must not turn it into a stop."""
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        assert signal.SIGHUP not in runs.handled_stop_signals()
        with runs.stop_signals():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        assert signal.SIGHUP in runs.handled_stop_signals()
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_a_closed_stdout_is_no_traceback(mnist_root, tmp_path):
    """`python main.py ... >&-`: Python's sys.stdout is None, which print() skips."""
    code = subprocess.run([sys.executable, "main.py", *options(mnist_root, tmp_path), "--status"],
                          cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          preexec_fn=lambda: os.close(1))
    assert code.returncode == 0 and "Traceback" not in code.stderr, code.stderr


def test_training_batches_continue_mid_epoch_from_their_state(cifar_root):
    """Both kinds of batches: on the device (crop and flip), and FeCAM's DataLoader workers."""
    for dataset, part in (("CIFAR100", 0), ("CIFAR100_FeCAM_setup", 6)):
        config = dataclasses_replace(datasets.get_benchmark(dataset, part).best,
                                     validation_size=1, batch_size=8)
        task = datasets.load_tasks(dataset, part, config, seed=1, root=cifar_root,
                                   device=torch.device("cpu"))[0]
        torch.manual_seed(0)
        batches = TrainingBatches(task, 8)
        for _ in range(5):  # into the second epoch (6 batches of 8 per epoch)
            next(batches)
        saved, rng = batches.state_dict(), torch.get_rng_state()
        expected = [next(batches) for _ in range(10)]
        torch.manual_seed(123)  # the generators are restored by the checkpoint
        torch.set_rng_state(rng)
        resumed = TrainingBatches(task, 8, saved)
        for (x, y), (x_again, y_again) in zip(expected, [next(resumed) for _ in range(10)]):
            assert torch.equal(x, x_again) and torch.equal(y, y_again), dataset


def dataclasses_replace(config, **changes):
    import dataclasses

    return dataclasses.replace(config, **changes)


def test_checkpoint_minutes_zero_saves_after_tasks_only(mnist_root, tmp_path, monkeypatch):
    saves = []
    real = checkpoints.TaskCheckpoints.save

    def save(self, training=None):
        saves.append(training is not None)
        real(self, training)

    monkeypatch.setattr(checkpoints.TaskCheckpoints, "save", save)
    assert main.main(options(mnist_root, tmp_path, "--seeds=[1]", "--number_of_iterations=5",
                             "--checkpoint_minutes=0")) == 0
    assert saves == [False, False, False]


@pytest.mark.parametrize("value", ["-1", "'often'"])
def test_impossible_checkpoint_minutes_are_refused(value, capsys):
    assert main.main([f"--checkpoint_minutes={value}"]) == 2
    assert "--checkpoint_minutes" in capsys.readouterr().err


# ------------------------------------------------------------------------ one writer


@pytest.mark.slow
def test_a_second_launch_of_a_running_run_is_refused(mnist_root, tmp_path, capsys):
    args = options(mnist_root, tmp_path, "--seeds=[2]", "--number_of_iterations=2000",
                   "--number_of_tasks=1")
    run = run_folder(tmp_path, 2)
    first = launch(args, start_new_session=True)
    try:
        wait_for(lambda: (run / "running.txt").exists())
        assert main.main(args) == 2  # the lock is asked for without waiting (timeout 0)
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {run} is already being trained by process {first.pid} on ")
        assert "\n" not in err
        assert (run / "running.txt").exists()  # the first run's lock and note are untouched
        # the same from the local pool: refused, and no failed.txt in the live run's folder
        assert main.main([*args, "--launcher=local"]) == 2
        assert "already being trained" in capsys.readouterr().out
        assert not (run / "failed.txt").exists()
        assert not (run / "run.log").exists()  # the pool's log stays out of another's run
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # a stale lock: the process is gone
        first.wait()
    # the rerun takes the lock the killed process left behind, and finishes
    assert main.main(args) == 0 and (run / "final_weights.pt").exists()
    assert not (run / "running.txt").exists()


# ------------------------------------------------------------------------ divergence


def test_a_diverging_run_fails_alone_and_writes_no_accuracy_from_nan(mnist_root, tmp_path,
                                                                     monkeypatch, capsys):
    real = hypermask.training_loss

    def loss(model, x, y, **kwargs):  # seed 1's second task blows up at its 3rd step
        terms = real(model, x, y, **kwargs)
        loss.calls += kwargs["task_id"] == 1
        if runs_seed[0] == 1 and loss.calls >= 3:
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    runs_seed = [None]
    real_run = runs.run_one

    def run_one(job):
        runs_seed[0], loss.calls = job.seed, 0
        real_run(job)

    monkeypatch.setattr(hypermask, "training_loss", loss)
    monkeypatch.setattr(runs, "run_one", run_one)
    code = main.main(options(mnist_root, tmp_path, "--seeds=[1,2]", "--number_of_iterations=5"))
    captured = capsys.readouterr()
    assert code == 2
    failed = run_folder(tmp_path, 1)
    assert (f"1 run(s) failed: {failed}: diverged: task 2, iteration 5: the loss is nan "
            "(last finite loss") in captured.err
    assert "learning_rate=" in captured.err and str(failed / "config.json") in captured.err
    assert (failed / "failed.txt").read_text().startswith("diverged: task 2, iteration 5")
    accuracies = pd.read_csv(failed / "accuracies.csv")
    assert accuracies["trained_task"].max() == 0  # nothing from the diverged task
    assert (run_folder(tmp_path, 2) / "final_weights.pt").exists()
    summary = pd.read_csv(tmp_path / "SplitMNIST_part0_best" / "summary.csv")
    row = summary.set_index("run").loc["seed_1"]
    assert row["failed"].startswith("diverged:") and not row["finished"]
    assert "Failed run (not in the table): seed_1: diverged" in (
        tmp_path / "SplitMNIST_part0_best" / "summary.md").read_text()


def test_a_huge_learning_rate_is_reported_as_divergence(mnist_root, tmp_path, capsys):
    code = main.main(options(mnist_root, tmp_path, "--seeds=[1]", "--number_of_iterations=30",
                             "--learning_rate=1e30", "--number_of_tasks=2"))
    err = capsys.readouterr().err
    assert code == 2 and "diverged: task 1" in err
    assert not (run_folder(tmp_path, 1) / "accuracies.csv").exists()
    row = pd.read_csv(tmp_path / "SplitMNIST_part0_best" / "summary.csv").iloc[0]
    assert row["failed"].startswith("diverged:")


# ------------------------------------------------------------------------ local pool


@pytest.mark.slow
def test_the_pool_survives_a_killed_worker(mnist_root, tmp_path):
    args = options(mnist_root, tmp_path, "--seeds=[1,2]", "--number_of_iterations=400",
                   "--launcher=local", "--max_parallel_runs=2")
    victim = run_folder(tmp_path, 1)
    process = launch(args)
    wait_for(lambda: (victim / "running.txt").exists())
    pid = int((victim / "running.txt").read_text().split()[1])
    os.kill(pid, signal.SIGKILL)
    out, err = process.communicate(timeout=600)
    assert process.returncode == 2
    assert f"FAILED {victim}: its process was killed by SIGKILL (out of memory?)" in out
    assert f"(log: {victim / 'run.log'})" in out
    assert (run_folder(tmp_path, 2) / "final_weights.pt").exists()
    assert "SIGKILL" in (victim / "failed.txt").read_text()
    assert main.main(args) == 0  # the rerun resumes the killed run
    assert (victim / "final_weights.pt").exists() and not (victim / "failed.txt").exists()


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_stops_the_pool_after_its_runs_save(mnist_root, tmp_path, stop):
    """Sent to the pool's process alone (`kill`, not Ctrl-C at a terminal, which reaches
    every process): the pool passes it on."""
    args = options(mnist_root, tmp_path, "--seeds=[1,2,3]", "--number_of_iterations=3000",
                   "--launcher=local", "--max_parallel_runs=2", "--checkpoint_minutes=0")
    process = launch(args)
    wait_for(lambda: all("iteration 1/3000" in log.read_text() if log.exists() else False
                         for log in (run_folder(tmp_path, s) / "run.log" for s in (1, 2))))
    process.send_signal(stop)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 128 + stop
    assert f"stopped by {stop.name}" in err
    for seed in (1, 2):
        state = torch.load(run_folder(tmp_path, seed) / "checkpoint.pt", weights_only=True)
        assert "task_in_progress" in state  # saved at a step, though checkpoint_minutes=0
        assert not (run_folder(tmp_path, seed) / "failed.txt").exists()
    assert not run_folder(tmp_path, 3).exists()  # never started


def test_a_stop_during_the_final_evaluations_stops_before_the_next_run(mnist_root, tmp_path,
                                                                      monkeypatch, capsys):
    real = runs.finish_run

    def stopped_while_evaluating(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # the handler only asks for a stop
        real(*args, **kwargs)

    monkeypatch.setattr(runs, "finish_run", stopped_while_evaluating)
    code = main.main(options(mnist_root, tmp_path, "--seeds=[1,2]", "--number_of_iterations=5",
                             "--number_of_tasks=2"))
    assert code == 128 + signal.SIGTERM
    out, err = capsys.readouterr()
    assert "stopped by SIGTERM: saved the finished run in" in err
    # no training step is left to stop at (the crash audit's wait through them)
    assert "SIGTERM: the run stops when its final evaluations end, finished" in out
    assert (run_folder(tmp_path, 1) / "final_weights.pt").exists()  # its evaluations done
    assert not run_folder(tmp_path, 2).exists()  # and the next run never started


def test_exit_codes_of_stopped_pool_runs(tmp_path):
    job = runs.Job(None, "SplitMNIST", 0, 1, tmp_path / "seed_1", "", "cpu")
    for signum in runs.STOP_SIGNALS:  # a run that saved and stopped exits 128 + signal
        assert launchers.exit_error(job, 128 + signum, stopping=True) is None
        # stopped from elsewhere (the launch audit's `kill -TERM` of one worker): said, and
        # the launch ends in an error, not "done"
        assert launchers.exit_error(job, 128 + signum) == (
            f"stopped by {signal.Signals(signum).name} from outside the launcher, its state "
            "saved; rerun the same command to continue it")
    # killed by the stop signal the pool forwarded before the run's handlers were set up
    assert launchers.exit_error(job, -signal.SIGTERM, stopping=True) is None
    assert "killed by SIGTERM" in launchers.exit_error(job, -signal.SIGTERM)  # not asked to stop


def test_a_second_ctrl_c_under_the_pool_is_said_once_and_is_no_failure(tmp_path, monkeypatch,
                                                                       capsys):
    """The crash audit's second Ctrl-C: every worker printed a KeyboardInterrupt traceback,
    its run was reported FAILED, and the pool said it had saved every run."""
    job = runs.Job(None, "SplitMNIST", 0, 1, tmp_path / "seed_1", "", "cpu")

    def interrupted(job):
        raise KeyboardInterrupt

    monkeypatch.setattr(launchers, "run_logged", interrupted)
    previous = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit) as exit_:
            launchers._pool_run(job, None)  # a worker: no traceback, its own exit code
        # and a Ctrl-C while it exits cannot make that exit code -SIGINT (a failure)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
    assert exit_.value.code == launchers.INTERRUPTED
    assert launchers.exit_error(job, launchers.INTERRUPTED, stopping=True) is None
    assert launchers.exit_error(job, launchers.INTERRUPTED).startswith(
        "stopped by a second SIGINT from outside the launcher, at once")  # STOPPED, not FAILED
    pool = launchers.Pool([None])
    with pool.forwarding_stop_signals():
        for _ in range(2):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
    out = capsys.readouterr().out
    assert out.count("SIGINT: no new runs") == 1 and "SIGINT again: the runs that get it stop " \
        "at once, each keeping its last checkpoint" in out
    # a worker that exits INTERRUPTED: the launch ends as interrupted only if it was stopping
    for stopped in (None, signal.SIGINT):
        pool = launchers.Pool([None])
        pool.stopped = stopped
        worker = pool.context.Process(target=os._exit, args=(launchers.INTERRUPTED,))
        worker.start()
        pool.running[worker] = (job, pool.free.pop())
        failed = pool.wait(60)
        assert pool.interrupted == (stopped is not None) and len(failed) == (stopped is None)
    with pytest.raises(KeyboardInterrupt):  # main: "interrupted: every run keeps ...", 130
        launchers.run_pool([], pool, refresh_seconds=0)


def test_a_worker_killed_after_its_run_finished_is_no_failure(tmp_path):
    """The crash audit killed a worker while it closed its loggers: failed.txt stayed in a
    finished folder, and every later summary named a failed run."""
    job = runs.Job(None, "SplitMNIST", 0, 1, tmp_path / "seed_1", "", "cpu")
    job.run_dir.mkdir()
    (job.run_dir / "final_weights.pt").write_bytes(b"")
    assert launchers.exit_error(job, -signal.SIGKILL) is None
    assert not (job.run_dir / "failed.txt").exists()


def test_a_killed_pool_run_is_resumed_only_when_it_saved_a_checkpoint(tmp_path):
    job = runs.Job(None, "SplitMNIST", 0, 1, tmp_path / "seed_1", "", "cpu")
    assert launchers.exit_error(job, -signal.SIGKILL).endswith(
        "rerun the same command to start it again (it had saved no checkpoint)")
    job.run_dir.mkdir()
    (job.run_dir / checkpoints.CHECKPOINT).write_bytes(b"")
    assert launchers.exit_error(job, -signal.SIGKILL).endswith(
        "rerun the same command to resume it from its last checkpoint")


def test_a_second_ctrl_c_stops_at_once_whatever_came_between(capsys):
    """Under the local pool a Ctrl-C reaches a run twice, as SIGINT from the terminal and as
    SIGTERM from the pool: one stop, and the next Ctrl-C still stops at once."""
    with runs.stop_signals() as request:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        assert request.signum == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs at the next bytecode; never gets here
    assert capsys.readouterr().out.count("the run stops after saving its state") == 1
