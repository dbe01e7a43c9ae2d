"""The SLURM launcher on a real one-node cluster, started by tests/slurm/start_cluster.sh.

One cluster for the session, stopped at its end, failed tests or not. Skipped, with
the reason, where the cluster cannot be had (not root, no package registry to install
the packages from, daemons that do not come up). Runs use one CPU thread each, as the
sequential baselines do, so their files must be identical.
"""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import torch

import main
from conftest import broken_run, run_folder, same_results, tiny_options, wait_for

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "tests" / "slurm"
ITERATIONS = 400  # per task: a few seconds on one thread, long enough to signal mid-task
SLURM = ["--launcher=slurm", "--slurm_cpus_per_run=1", "--slurm_gpus_per_run=0",
         "--slurm_mem_gb=1", "--slurm_time_minutes=30"]
WAIT_SECONDS = 300  # generous: a job here takes under a minute, on a shared machine too


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """A one-node cluster for this session; SLURM_CONF points the commands at it."""
    state = tmp_path_factory.mktemp("slurm_cluster")
    started = subprocess.run([SCRIPTS / "start_cluster.sh", state], capture_output=True,
                             text=True, timeout=1800)
    if started.returncode != 0:  # its "start_cluster:" lines say why (else its last line)
        lines = started.stderr.strip().splitlines() or ["no output"]
        why = [line for line in lines if line.startswith("start_cluster:")]
        pytest.skip(f"no SLURM cluster: tests/slurm/start_cluster.sh exit "
                    f"{started.returncode}: {'; '.join(dict.fromkeys(why + lines[-1:]))}")
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(state / "slurm.conf")
    try:
        yield state
    finally:
        subprocess.run([SCRIPTS / "stop_cluster.sh", state], timeout=300)
        if previous is None:
            os.environ.pop("SLURM_CONF")
        else:
            os.environ["SLURM_CONF"] = previous


def options(mnist_root, results, *extra):
    return tiny_options(mnist_root, results, f"--number_of_iterations={ITERATIONS}", *extra)


def job_ids(results) -> dict:
    return json.loads((Path(results) / "SplitMNIST_part0_best" / "slurm_jobs.json").read_text())


@pytest.fixture(scope="module")
def sequential(mnist_root, tmp_path_factory):
    """Seeds 1 and 2 with the sequential launcher, given one CPU (as taskset -c 0 would)."""
    results = tmp_path_factory.mktemp("sequential")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "sched_getaffinity", lambda pid: {0})
        assert main.main(options(mnist_root, results, "--seeds=[1,2]")) == 0
    return results


def squeue() -> dict:
    """Each job (array tasks one by one) in the queue: its state."""
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T"], capture_output=True,
                         text=True, check=True).stdout
    return dict(line.split() for line in out.splitlines())


def wait_in_queue(condition, results, what: str):
    """wait_for `condition`; on timeout, fail with the queue and the runs' logs."""
    def explain() -> str:
        logs = sorted((Path(results) / "SplitMNIST_part0_best").rglob("*log*"))
        tails = "\n".join(f"== {log}\n{log.read_text()[-2000:]}" for log in logs
                          if log.is_file())
        return f"{what}; queue {squeue()}\n{tails}"

    wait_for(condition, seconds=WAIT_SECONDS, explain=explain)


def states(mnist_root, results, seeds: str, capsys) -> dict:
    """Each run's state as `python main.py --status` prints it."""
    capsys.readouterr()
    assert main.main(options(mnist_root, results, seeds, "--status")) == 0
    rows = [line.split("|") for line in capsys.readouterr().out.splitlines()
            if line.startswith("| seed_")]
    return {row[1].strip(): row[2].strip() for row in rows}


def checkpoint_in_task(run: Path, task: int) -> dict | None:
    """The checkpoint if it holds a mid-task state of `task` (0-based)."""
    try:
        state = torch.load(run / "checkpoint.pt", weights_only=True)
    except Exception:  # absent, or being replaced
        return None
    return state if state["next_task"] == task and "task_in_progress" in state else None


def test_an_array_gives_the_sequential_results(cluster, mnist_root, tmp_path, sequential,
                                               capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # jobs start here, and must import the project all the same
    # held at submission, so that "not started" is seen for certain, then released
    args = options(mnist_root, tmp_path, "--seeds=[1,2]", *SLURM,
                   "--slurm_additional_parameters={'hold': True}")
    assert main.main(args) == 0
    ids = job_ids(tmp_path)
    assert set(ids) == {"seed_1", "seed_2"}
    assert {squeue()[ids[run]] for run in ids} == {"PENDING"}
    assert states(mnist_root, tmp_path, "--seeds=[1,2]", capsys) == {
        "seed_1": "not started", "seed_2": "not started"}
    subprocess.run(["scontrol", "release", *ids.values()], check=True)
    seen, side_by_side = set(), []

    def finished() -> bool:
        current = states(mnist_root, tmp_path, "--seeds=[1,2]", capsys)
        seen.update(current.values())
        queue = squeue()
        side_by_side.append(all(queue.get(ids[run]) == "RUNNING" for run in ids))
        return set(current.values()) == {"finished"}

    wait_in_queue(finished, tmp_path, "both runs to finish")
    # its process on this machine (a one-node cluster): running, else "running or interrupted"
    assert any(state.startswith(("running (task", "running or interrupted (task"))
               for state in seen), seen
    node_cpus = int(subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True,
                                   text=True, check=True).stdout.split()[0])
    assert any(side_by_side) or node_cpus < 2  # 1-CPU jobs share the node's cores
    for seed in (1, 2):
        run = run_folder(tmp_path, seed)
        same_results(run, run_folder(sequential, seed))
        # one torch thread: SLURM_CPUS_PER_TASK, not the node's CPUs (task/none: no pinning)
        assert json.loads((run / "config.json").read_text())["threads"] == 1
        assert (f"seed {seed} task 2/2: iteration {ITERATIONS}/{ITERATIONS}, at the last "
                "validation") in (run / "run.log").read_text()
    logs = [*(tmp_path / "SplitMNIST_part0_best" / "slurm_logs").glob("*_log.*"),
            *(run_folder(tmp_path, s) / "run.log" for s in (1, 2))]
    for log in logs:  # plain lines, no progress-bar redraws
        assert "\r" not in log.read_text(), log


def test_jobs_stopped_mid_task_resume_to_identical_files(cluster, mnist_root, tmp_path,
                                                         sequential):
    # seed 1: requeued (preemption, an administrator): SLURM sends SIGTERM and requeues it.
    # seed 2: the time-limit warning, SIGUSR2, which submitit asks SLURM to send its steps
    # (--signal=USR2@90) and answers by requeueing the job.
    how = {1: (["scontrol", "requeue"], "SIGTERM"), 2: (["scancel", "--signal=USR2"], "SIGUSR2")}
    # a mid-task checkpoint every 0.1 s shows how far each run is
    assert main.main(options(mnist_root, tmp_path, "--seeds=[1,2]", *SLURM,
                             "--checkpoint_minutes=0.002")) == 0
    ids = job_ids(tmp_path)
    waiting = set(how)

    def signal_those_in_task_2() -> bool:
        for seed in sorted(waiting):
            if checkpoint_in_task(run_folder(tmp_path, seed), 1) is not None:
                subprocess.run([*how[seed][0], ids[f"seed_{seed}"]], check=True)
                waiting.discard(seed)
        return not waiting

    wait_in_queue(signal_those_in_task_2, tmp_path, "task 2 to begin")
    wait_in_queue(lambda: all((run_folder(tmp_path, seed) / "final_weights.pt").exists()
                         for seed in how) and not set(ids.values()) & set(squeue()),
             tmp_path, "the resumed jobs to finish")
    for seed, (_, signal_name) in how.items():
        run = run_folder(tmp_path, seed)
        log = (run / "run.log").read_text()
        saved = re.search(rf"stopped by {signal_name}: saved task 2 at iteration (\d+) in ",
                          log)
        assert saved, log
        assert 0 < int(saved[1]) < ITERATIONS
        assert f"resuming task 2 at iteration {saved[1]} from" in log
        same_results(run, run_folder(sequential, seed))
    logs = tmp_path / "SplitMNIST_part0_best" / "slurm_logs"  # job 5_1's: 5_1_0_log.out
    submitit_log = next(logs.glob(f"{ids['seed_2']}_*log.out")).read_text()
    assert f"Requeued job {ids['seed_2']}" in submitit_log  # by submitit, after the run saved


def test_a_failing_job_is_reported_with_its_log(cluster, mnist_root, tmp_path, capsys):
    broken = run_folder(tmp_path, 3)
    broken_run(options(mnist_root, tmp_path, "--seeds=[3]", *SLURM), broken)
    assert main.main(options(mnist_root, tmp_path, "--seeds=[3]", *SLURM)) == 0
    wait_in_queue(lambda: (broken / "failed.txt").exists(), tmp_path, "the job to fail")
    state = states(mnist_root, tmp_path, "--seeds=[3]", capsys)["seed_3"]
    assert state.startswith(f"failed: checkpoint {broken / 'checkpoint.pt'} is corrupt")
    assert str(broken / "run.log") in state
    assert "is corrupt or incomplete" in (broken / "run.log").read_text()
