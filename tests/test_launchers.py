"""Launchers: a local process pool, submitit's executors, failures, kills, status."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import OUTPUTS, broken_run, run_folder, tiny_options, wait_for

import datasets
import launchers
import main
import machine
import runs
from batches import augmentation_workers

REPO = Path(__file__).resolve().parents[1]


def options(mnist_root, results, *extra):
    return tiny_options(mnist_root, results, "--batch_size=32", *extra)


def outputs(results, seed):
    run = run_folder(results, seed)
    return {name: (run / name).read_bytes() for name in OUTPUTS}


@pytest.mark.slow
def test_local_pool_gives_the_sequential_results(mnist_root, tmp_path, capsys, monkeypatch):
    # Two workers get half the CPUs each; the sequential run given as many (as
    # taskset would) sums floats in the same order, hence gives identical results.
    share = max(1, machine.cpu_threads() // 2)
    with monkeypatch.context() as patch:
        patch.setattr(os, "sched_getaffinity", lambda pid: set(range(share)))
        assert main.main(options(mnist_root, tmp_path / "seq", "--seeds=[1,2]")) == 0
    assert main.main(options(mnist_root, tmp_path / "pool", "--seeds=[1,2]", "--launcher=local",
                             "--max_parallel_runs=2")) == 0
    out = capsys.readouterr().out
    assert "local pool: 2 worker(s)" in out and "2 finished" in out
    for seed in (1, 2):
        assert outputs(tmp_path / "pool", seed) == outputs(tmp_path / "seq", seed)
        assert "after task 2" in (tmp_path / "pool" / "SplitMNIST_part0_best" / f"seed_{seed}"
                                  / "run.log").read_text()
    summary = pd.read_csv(tmp_path / "pool" / "SplitMNIST_part0_best" / "summary.csv")
    assert summary["finished"].all() and len(summary) == 2


@pytest.mark.slow
def test_a_failing_run_is_reported_and_the_others_finish(mnist_root, tmp_path, capsys):
    broken = tmp_path / "SplitMNIST_part0_best" / "seed_2"
    args = options(mnist_root, tmp_path, "--seeds=[1,2]", "--launcher=local",
                   "--max_parallel_runs=2")
    broken_run(args, broken)
    code = main.main(args)
    captured = capsys.readouterr()
    assert code == 2
    assert f"1 run(s) failed: {broken}: " in captured.err and "run.log" in captured.err
    assert "is corrupt or incomplete" in (broken / "failed.txt").read_text()
    assert (tmp_path / "SplitMNIST_part0_best" / "seed_1" / "final_weights.pt").exists()
    assert (tmp_path / "SplitMNIST_part0_best" / "summary.md").exists()
    assert main.main(options(mnist_root, tmp_path, "--seeds=[1,2]", "--status")) == 0
    table = capsys.readouterr().out
    assert "| seed_1 | finished" in table and "| seed_2 | failed: " in table


@pytest.mark.parametrize("executor", ["debug", pytest.param("local", marks=pytest.mark.slow)])
def test_submitit_executors_run_the_job_function(mnist_root, tmp_path, executor):
    import submitit

    settings, hyperparameters, _ = main.resolve(
        tiny_options(mnist_root, tmp_path, "--seeds=[1,2]", "--batch_size=32"))
    experiment, jobs = main.experiment_jobs(settings, hyperparameters, dataset="SplitMNIST",
                                            part=0)
    folder = tmp_path / "submitit"
    chosen = submitit.DebugExecutor(folder) if executor == "debug" else \
        submitit.LocalExecutor(folder)
    if executor == "local":
        chosen.update_parameters(timeout_min=10)
    submitted = launchers.submit_to_slurm(jobs, experiment, settings, executor=chosen)
    assert [job.result() for job in submitted] == [None, None]
    ids = json.loads((experiment / "slurm_jobs.json").read_text())
    assert set(ids) == {"seed_1", "seed_2"}
    for job in jobs:
        assert (job.run_dir / "final_weights.pt").exists()
    # a second submission of one run keeps the other's id (the launch audit's resubmission
    # had replaced the file, losing the id of the job still training)
    again = launchers.submit_to_slurm(jobs[1:], experiment, settings, executor=chosen)
    assert json.loads((experiment / "slurm_jobs.json").read_text()) == {
        "seed_1": ids["seed_1"], "seed_2": again[0].job_id}
    # requeueing (preemption, time limit) resubmits the same job, which resumes
    delayed = launchers.SlurmRun().checkpoint(jobs[0])
    assert delayed.args == (jobs[0],)


@pytest.mark.parametrize("present, missing", [((), "sbatch and srun are"),
                                               (("sbatch",), "srun is")])
def test_slurm_without_slurm_is_a_one_line_error(mnist_root, tmp_path, capsys, monkeypatch,
                                                 present, missing):
    for command in present:
        (tmp_path / command).write_text("#!/bin/sh\nexit 1\n")
        (tmp_path / command).chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))  # none of SLURM's commands but these
    assert main.main(options(mnist_root, tmp_path, "--launcher=slurm")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: launcher='slurm' needs SLURM, and {missing} not on this "
                          "machine") and "\n" not in err


@pytest.mark.slow
def test_a_killed_launch_resumes_on_the_second(mnist_root, tmp_path):
    args = options(mnist_root, tmp_path / "killed", "--seeds=[4]", "--number_of_tasks=3",
                   "--number_of_iterations=400", "--launcher=local", "--max_parallel_runs=1")
    run = tmp_path / "killed" / "SplitMNIST_part0_best" / "seed_4"
    process = subprocess.Popen([sys.executable, "main.py", *args], cwd=REPO,
                               start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    wait_for(lambda: (run / "checkpoint.pt").exists(), process=process)  # task 1 is done
    os.killpg(process.pid, signal.SIGKILL)  # the launcher and its worker, in task 2 or 3
    process.wait()
    # where the kill landed: after task 1 or 2 (3 tasks of 400 steps: never the end)
    done = pd.read_csv(run / "accuracies.csv")["trained_task"].max() + 1
    assert done in (1, 2) and not (run / "final_weights.pt").exists()
    assert main.main(args) == 0
    assert f"resuming after task {done}" in (run / "run.log").read_text()
    whole = [a.replace("--results_dir=" + str(tmp_path / "killed"),
                       "--results_dir=" + str(tmp_path / "whole")) for a in args]
    assert main.main(whole) == 0
    assert outputs(tmp_path / "killed", 4) == outputs(tmp_path / "whole", 4)


def tiny_jobs(mnist_root, results, *extra):
    """The runs main.py would make of a TINY Split MNIST command line, one seed."""
    settings, hyperparameters, _ = main.resolve(
        tiny_options(mnist_root, results, "--seeds=[1]", "--batch_size=32", *extra))
    return main.experiment_jobs(settings, hyperparameters, dataset="SplitMNIST", part=0)[1]


def test_a_slurm_job_uses_its_cpus_per_task(mnist_root, tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")  # what SLURM sets inside a job
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})  # not pinned
    seen, real = [], runs.train_with_progress

    def train(*args, **kwargs):
        seen.append((torch.get_num_threads(), augmentation_workers()))
        return real(*args, **kwargs)

    monkeypatch.setattr(runs, "train_with_progress", train)
    threads = torch.get_num_threads()
    job, = tiny_jobs(mnist_root, tmp_path)
    launchers.SlurmRun()(job)
    assert seen == [(1, 1), (1, 1)]
    assert json.loads((job.run_dir / "config.json").read_text())["threads"] == 1
    assert torch.get_num_threads() == threads  # the caller's own setting comes back


def test_a_failure_said_in_one_line_gets_no_traceback_in_the_log(mnist_root, tmp_path):
    """The launch audit's diverged run: a 30-line chained traceback in run.log, where the
    launcher and --status said it in one line."""
    job, = tiny_jobs(mnist_root, tmp_path)
    job = dataclasses.replace(job, config=dataclasses.replace(job.config, learning_rate=1e30))
    error = launchers.run_logged(job)
    assert error.startswith("diverged: task 1")
    log = (job.run_dir / "run.log").read_text()
    assert "Traceback" not in log and log.rstrip().endswith(f"error: {error}")


def test_logs_get_plain_progress_lines_not_a_redrawn_bar(mnist_root, tmp_path):
    job, = tiny_jobs(mnist_root, tmp_path)
    assert launchers.run_logged(job) is None  # what pool workers and SLURM jobs run
    log = (job.run_dir / "run.log").read_text()
    assert log.splitlines()[0].endswith(f"run {job.run_dir} (SplitMNIST part 0, seed 1)")
    assert "\r" not in log
    lines = [line for line in log.splitlines() if "it/s" in line]
    for task in (1, 2):  # the first and the last iteration of each task at least
        first, last = (next(line for line in lines if f"task {task}/2: iteration {i}/5" in line)
                       for i in (1, 5))
        assert "at the last validation (iteration 1): training loss " in first
        assert "at the last validation (iteration 5)" in last


def test_progress_lines_come_every_few_minutes_whatever_the_step_rate(capsys):
    now = [0.0]
    progress = runs.ProgressLines("task 1/1", 1000, every_seconds=120, clock=lambda: now[0])
    row = {"loss": 0.5, "validation_accuracy": 50.0, "iteration": 1}
    for iteration in range(1000):
        now[0] += 1.0  # one second per step: a line every 120 steps
        progress(iteration, row)
    printed = capsys.readouterr().out.splitlines()
    numbers = [int(line.split("iteration ")[1].split("/")[0]) for line in printed]
    assert numbers == [1, 121, 241, 361, 481, 601, 721, 841, 961, 1000]
    assert printed[1].endswith("task 1/1: iteration 121/1000, at the last validation "
                               "(iteration 1): training loss 0.5000, validation accuracy "
                               "50.00%, 1.00 it/s")


def test_a_terminal_keeps_the_progress_bar(mnist_root, capsys):
    import contextlib
    import dataclasses
    import io

    import hypermask

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    config = dataclasses.replace(datasets.DEMO["SplitMNIST"], number_of_iterations=5,
                                 validation_size=10, batch_size=32)
    task = datasets.load_tasks("SplitMNIST", 0, config, seed=1, root=mnist_root,
                               device=torch.device("cpu"))[0]
    model = hypermask.build_model(config, (784,), 2)
    terminal = Terminal()
    with contextlib.redirect_stderr(terminal):
        runs.train_with_progress(model, task, 0, config, seed=1)
    assert "\r" in terminal.getvalue() and "it/s" not in capsys.readouterr().out


def test_the_pools_progress_counts_runs_by_whole_state(monkeypatch):
    states = ["not started", "not started", "finished", "failed: out of memory (log: x)",
              "running or interrupted (task 2/5)"]
    monkeypatch.setattr(launchers, "run_status", lambda job: {
        "run": f"seed_{job}", "state": states[job], "tasks_done": 1, "mean_accuracy": 90.0})
    counts, running = launchers.progress_text(list(range(len(states)))).split("\n")
    assert counts == "2 not started, 1 finished, 1 failed, 1 running or interrupted"  # no clock
    assert running == ("  seed_4: running or interrupted (task 2/5), 1 task(s) done, "
                       "mean accuracy 90.00%")


def test_a_damaged_run_table_is_a_state_in_the_pools_progress_and_status_not_a_crash(tmp_path):
    """A rerun mends it from the checkpoint (docs/outputs.md): the pool must live to see it."""
    config = datasets.get_benchmark("SplitMNIST", 0).best
    jobs = [runs.Job(config, "SplitMNIST", 0, seed, tmp_path / f"seed_{seed}", "", "cpu")
            for seed in (1, 2)]
    for job in jobs:
        job.run_dir.mkdir()
        (job.run_dir / "config.json").write_text(json.dumps(runs.job_record(job)))
    (jobs[0].run_dir / "accuracies.csv").write_text("")
    assert launchers.run_status(jobs[0])["state"].startswith(
        f"damaged: {jobs[0].run_dir / 'accuracies.csv'} is corrupt or incomplete")
    assert launchers.progress_text(jobs).startswith("1 damaged, 1 interrupted")
    table = launchers.status_table(jobs)
    assert "damaged: " in table
    # nothing known of the damaged run's progress, none of the interrupted run's accuracy
    rows = {line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[3:5]]
            for line in table.splitlines()[2:]}
    assert rows == {"seed_1": ["n/a", "n/a"], "seed_2": ["0", "n/a"]}
    (jobs[1].run_dir / "config.json").write_text("{")
    assert launchers.run_status(jobs[1])["state"].startswith(
        f"damaged: {jobs[1].run_dir / 'config.json'} is corrupt or incomplete")


@pytest.mark.parametrize("launcher", ["sequential", "local"])
def test_a_folder_holding_another_run_stops_the_launch_and_keeps_that_run(
        mnist_root, tmp_path, capsys, launcher):
    """Nothing is written into it: a failed.txt there would mark the other run failed."""
    other = tmp_path / "SplitMNIST_part0_best" / "seed_2"
    other.mkdir(parents=True)
    (other / "config.json").write_text(json.dumps({"dataset": "SplitMNIST", "part": 0,
                                                          "data": "SplitMNIST", "seed": 99}))
    code = main.main(options(mnist_root, tmp_path, "--seeds=[1,2]", f"--launcher={launcher}"))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: {other} holds a run with another configuration (")
    assert sorted(p.name for p in other.iterdir()) == ["config.json"]
    assert not (tmp_path / "SplitMNIST_part0_best" / "seed_1").exists()  # none started


def test_an_sbatch_that_refuses_the_array_is_one_line_with_its_reason(
        mnist_root, tmp_path, capsys, monkeypatch):
    fake = tmp_path / "bin" / "sbatch"  # a machine that does not reach its cluster
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'sbatch: error: fetch_config: DNS SRV lookup failed' >&2\n"
                    "echo 'sbatch: fatal: Could not establish a configuration source' >&2\n"
                    "exit 1\n")
    (fake.parent / "srun").write_text("#!/bin/sh\nexit 1\n")  # never called, only looked up
    for command in fake.parent.iterdir():
        command.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    assert main.main(tiny_options(mnist_root, tmp_path, "--launcher=slurm")) == 2
    err = capsys.readouterr().err  # sbatch's own lines, then ours: no traceback
    assert "Traceback" not in err and err.endswith(
        "\nerror: sbatch could not submit the runs (sbatch: fatal: Could not establish a "
        "configuration source); check that this machine reaches the cluster (sinfo) and the "
        "slurm_* settings (partition, time, GPUs, memory)\n")


def test_status_tells_a_live_run_from_an_interrupted_one_and_names_another_configuration(
        tmp_path):
    import dataclasses
    import socket

    config = datasets.get_benchmark("SplitMNIST", 0).best
    job = runs.Job(config, "SplitMNIST", 0, 1, tmp_path / "seed_1", "", "cpu")
    job.run_dir.mkdir()
    (job.run_dir / "config.json").write_text(json.dumps(runs.job_record(job)))
    owner = job.run_dir / "running.txt"
    assert launchers.run_status(job)["state"] == "interrupted (task 1/5)"  # no running.txt
    owner.write_text(f"process {os.getpid()} on {socket.gethostname()}, since today\n")
    assert launchers.run_status(job)["state"] == "running (task 1/5)"  # no start tick: the pid
    # the run's pid given to a later process (the crash audit's): another start tick
    later = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        tick = machine.process_start_tick(later.pid)
        for written, state in ((tick, "running"), (tick - 1, "interrupted")):
            owner.write_text(f"process {later.pid} on {socket.gethostname()}, since today\n"
                             f"start tick {written}\n")
            assert launchers.run_status(job)["state"] == f"{state} (task 1/5)"
    finally:
        later.kill()
    with runs.one_writer(job.run_dir):  # what a run writes: its own start tick
        assert owner.read_text().splitlines()[1] == \
            f"start tick {machine.process_start_tick(os.getpid())}"
        assert launchers.run_status(job)["state"] == "running (task 1/5)"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid is free now: a run killed with SIGKILL leaves running.txt so
    owner.write_text(f"process {dead.pid} on {socket.gethostname()}, since today\n")
    assert launchers.run_status(job)["state"] == "interrupted (task 1/5)"
    owner.write_text("process 1 on another-node, since today\n")  # a SLURM node, say
    assert launchers.run_status(job)["state"] == "running or interrupted (task 1/5)"
    other = dataclasses.replace(job, config=dataclasses.replace(config, beta=0.5))
    status = launchers.run_status(other)
    assert status["state"] == "another configuration"
    assert status["differences"] == f"beta: {config.beta} there, 0.5 now"
    # said once above the table for the runs that share it, not in every row
    others = [dataclasses.replace(other, run_dir=tmp_path / f"seed_{k}") for k in (2, 3, 4, 5)]
    for job_k in others:
        job_k.run_dir.mkdir()
        (job_k.run_dir / "config.json").write_text(json.dumps(runs.job_record(job)))
    text = launchers.status_table([other, *others])
    assert text.startswith(f"5 run folder(s) (seed_1, seed_2, seed_3, ...) hold another "
                           f"configuration (beta: {config.beta} there, 0.5 now): give --status "
                           "the options they were launched with\n|")
    assert text.count("another configuration") == 6 and text.count("beta") == 1


def test_slurm_submits_only_the_runs_not_finished(mnist_root, tmp_path, monkeypatch, capsys):
    """The launch audit's resubmission asked SLURM for a job (a GPU, 32 GB) per finished
    run, each only to say "already finished"."""
    assert main.main(options(mnist_root, tmp_path, "--seeds=[1]")) == 0
    submitted = []
    monkeypatch.setattr(launchers, "submit_to_slurm",
                        lambda jobs, folder, settings: submitted.append(
                            [job.run_dir.name for job in jobs]))
    assert main.main(options(mnist_root, tmp_path, "--seeds=[1,2]", "--launcher=slurm")) == 0
    assert submitted == [["seed_2"]]
    assert "1 run(s) already finished: not submitted" in capsys.readouterr().out
    assert main.main(options(mnist_root, tmp_path, "--seeds=[1]", "--launcher=slurm")) == 0
    assert submitted == [["seed_2"]]  # nothing to submit: the summary, as after a launch
    assert "# SplitMNIST_part0_best" in capsys.readouterr().out


def test_a_slurm_job_says_in_one_line_why_it_ends(tmp_path, monkeypatch, capsys):
    """The launch audit: a job whose requeues were used up ended in two tracebacks; a job
    refused by its folder said why only inside submitit's result file."""
    job = runs.Job(None, "SplitMNIST", 0, 1, tmp_path / "seed_1", "", "cpu")

    from submitit.core.utils import UncompletedJobError

    def used_up(signum, frame):
        raise UncompletedJobError("Job not requeued because: timed-out too many times.")

    monkeypatch.setattr(launchers, "run_logged", lambda job: (_ for _ in ()).throw(
        runs.Preempted(signal.SIGUSR2, "task 1 at iteration 9")))
    previous = signal.signal(signal.SIGUSR2, used_up)
    try:
        with pytest.raises(SystemExit) as stop:
            launchers.SlurmRun()(job)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert stop.value.code == 128 + signal.SIGUSR2
    err = capsys.readouterr().err
    assert err == (
        "stopped by SIGUSR2: saved task 1 at iteration 9; rerun the same command to continue "
        "from there (a job that SLURM requeues continues by itself)\n"
        "error: the time limit ended this job, which is not requeued again (Job not requeued "
        "because: timed-out too many times.); its run's state is saved: submit the same "
        "command again, with a larger slurm_time_minutes\n")
    monkeypatch.setattr(launchers, "run_logged", lambda job: (_ for _ in ()).throw(
        runs.AlreadyRunning("it is being trained by process 12")))
    assert launchers.SlurmRun()(job) == "it is being trained by process 12"
    assert capsys.readouterr().err == "error: it is being trained by process 12\n"
