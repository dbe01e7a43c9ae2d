"""Launchers: the runs of an experiment one after another, in a local pool, or on SLURM.

Every run (grid point x seed) is independent and writes only into its own folder
(runs.run_one); a launcher decides where and when each one runs, reports the
ones that fail while the others go on, and shows progress read from the run
folders. `status_table` is `python main.py --status`.

    python main.py --launcher=local             # a process per GPU (or per 2 CPU cores)
    python main.py --launcher=slurm --slurm_partition=gpu   # a SLURM job array (submitit)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import multiprocessing.connection
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path

import pandas as pd
import torch

import files
import folders
import machine
import runs
from errors import UserError


CPU_THREADS_PER_RUN = 2  # the local pool's default share of the cores on a CPU machine
# A pool run's exit codes besides 0 (done) and 1 (failed: its failed.txt says why).
STOPPED_EXIT_CODES = tuple(128 + signum for signum in runs.STOP_SIGNALS)  # saved, stopped
ALREADY_RUNNING = 3  # refused: another process trains its folder (runs.AlreadyRunning)
DISK_STOPPED = 4  # a write failed: the disk is full, over quota or read-only (its failed.txt)
OTHER_RUN = 5  # refused: its folder holds another run (runs.OtherRun)
INTERRUPTED = 6  # stopped at once by a second Ctrl-C: its last checkpoint kept, no failed.txt


# ------------------------------------------------------------ sequential


class RunLog(machine.SparedOutput):
    """run.log, appended to; what cannot be written (the disk is full) is left out.

    A full disk must not stop a run from a print in the middle of a step: the
    run's next write of its own files says it in one line (files.WriteFailed),
    and the log goes on once there is space again.
    """

    def __init__(self, path: Path):
        try:
            super().__init__(open(path, "a"))
        except OSError as error:
            raise files.WriteFailed(path, error, kept=path.exists()) from None

    def close(self) -> None:
        super().close()  # flushes
        with contextlib.suppress(OSError):
            self.stream.close()


def run_logged(job: runs.Job) -> str | None:
    """runs.run_one with its output appended to run_dir/run.log; the error line, or None.

    runs.Preempted (a stop on request, state saved), runs.AlreadyRunning (another process
    trains this folder), runs.OtherRun (the folder holds another configuration's run) and
    a full or read-only disk (files.WriteFailed.shared: the other runs write there too) are
    raised, not reported as failures of this run alone; the middle two write no failed.txt.
    """
    runs.make_folder(job.run_dir)
    runs.refuse_if_running(job.run_dir)  # its run.log is the other process's to write
    try:
        log = RunLog(job.run_dir / folders.RUN_LOG)
    except files.WriteFailed as error:  # failed.txt, if it fits; raised like the run's own
        runs.write_failed(job.run_dir, str(error))
        raise
    with log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        # a header per launch: the log is appended to by every rerun
        print(f"{runs.clock_time()}run {job.run_dir} ({job.dataset} part {job.part}, seed "
              f"{job.seed}{', demo sample' if job.demo else ''})", flush=True)
        try:
            runs.run_one(job)
        except (runs.Preempted, runs.AlreadyRunning, runs.OtherRun) as stop:
            print(stop)  # no failed.txt for the last two: the folder holds another's run
            raise
        except files.WriteFailed as error:  # failed.txt, if it fits (the lock's, say)
            print(error)
            runs.write_failed(job.run_dir, str(error))
            if error.shared:
                raise
            return str(error)
        except Exception as error:  # reported to the launcher; the other runs go on
            if isinstance(error, UserError):  # a failure said in one line: no traceback
                print(f"error: {error}")
            else:
                traceback.print_exc()
            message = str(error) if isinstance(error, UserError) else \
                f"{type(error).__name__}: {error}"
            if not isinstance(error, runs.RunFailed):  # which wrote failed.txt itself
                runs.write_failed(job.run_dir, message)
            return message
    return None


def run_sequentially(jobs: list[runs.Job]) -> list[str]:
    """Run the jobs one after another in this process, output on the terminal.

    A run that fails on its own (runs.RunFailed: it diverged) is reported and the
    others go on; any other error stops the launch (it would stop them all).
    """
    failures = []
    for number, job in enumerate(jobs, 1):
        print(f"[run {number}/{len(jobs)}] {job.run_dir.name}")
        try:
            runs.run_one(job)
        except runs.RunFailed as error:
            failures.append(f"{job.run_dir}: {error}")
            print(f"FAILED {failures[-1]}", flush=True)
    return failures


# ------------------------------------------------------------ local pool


def pool_workers(max_parallel_runs: int | None, *, gpus: int, runs_per_gpu: int,
                 cpus: int) -> int:
    """How many runs the local pool runs at once: max_parallel_runs if set, else
    runs_per_gpu on each GPU, else one per CPU_THREADS_PER_RUN CPUs."""
    return max_parallel_runs or gpus * runs_per_gpu or max(1, cpus // CPU_THREADS_PER_RUN)


def worker_gpus(workers: int, gpus: int) -> list[str | None]:
    """Each pool worker's CUDA_VISIBLE_DEVICES: the parent's visible GPUs in turn.

    Entries of the parent's own CUDA_VISIBLE_DEVICES (indices, UUIDs, MIG ids)
    are passed on as they are, so CUDA_VISIBLE_DEVICES=2,3 runs on GPUs 2 and 3.
    """
    if not gpus:
        return [None] * workers
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = ([entry.strip() for entry in visible.split(",")] if visible
           else [str(i) for i in range(gpus)])[:gpus]
    return [ids[i % len(ids)] for i in range(workers)]


def pin_gpu(gpu: str | None, environment: dict | None = None) -> None:
    """Make `gpu` (an entry of CUDA_VISIBLE_DEVICES) this process's only GPU, before any
    CUDA call; None: leave the process as it is. `environment` (from shared_gpus: the
    GPU's UUID and its MPS daemon's folders) is set after it."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    os.environ.update(environment or {})


# CUDA MPS (Multi-Process Service): the runs sharing a GPU run their kernels side by side.
MPS_CONTROL = "nvidia-cuda-mps-control"
# A first client, started before the runs: it must reach the GPU through the daemon.
MPS_PROBE = [sys.executable, "-c", "import torch; torch.ones(1, device='cuda').sum().item()"]


@contextlib.contextmanager
def shared_gpus(gpu_ids: list[str], runs_per_gpu: int):
    """CUDA MPS for the local pool's runs while several share a GPU; yields, per GPU id, the
    environment of its runs ({} without MPS).

    Without MPS, the processes on one GPU take turns on it (time slicing): their
    kernels never run at the same time, and small steps leave most of the GPU idle.
    Under MPS they run side by side, with the same arithmetic (a run's numbers do
    not change). One control daemon per GPU is started here, with that GPU alone
    visible, its pipe and log folders in a temporary folder, and stopped (`quit`)
    when the pool ends. MPS numbers the GPUs it serves from 0, so the daemon and its
    runs name the GPU by its UUID. With CUDA_MPS_PIPE_DIRECTORY already set, the
    user's own daemon serves the runs. Where MPS cannot start (no
    nvidia-cuda-mps-control, no GPU UUIDs, a daemon that fails, or a first client
    that does not get the GPU through it) one line says why, and the runs take
    turns on the GPU.
    """
    if runs_per_gpu <= 1 or not gpu_ids:
        yield {}
        return
    if os.environ.get("CUDA_MPS_PIPE_DIRECTORY"):
        print(f"local pool: the runs use the CUDA MPS daemon at "
              f"{os.environ['CUDA_MPS_PIPE_DIRECTORY']} (CUDA_MPS_PIPE_DIRECTORY)")
        yield {}
        return
    # ignore_cleanup_errors: a daemon told to quit may still be closing its log
    with tempfile.TemporaryDirectory(prefix="hypermask_mps_", ignore_cleanup_errors=True) \
            as folder:
        started, environments = [], {}
        try:
            try:
                problem = start_mps(gpu_ids, Path(folder), started, environments)
            except (OSError, subprocess.TimeoutExpired) as error:  # a command hung or failed
                problem = f"{type(error).__name__}: {error}"
            if problem:
                print(f"local pool: {runs_per_gpu:g} runs per GPU without CUDA MPS ({problem}): "
                      "they take turns on the GPU, which is slower", flush=True)
                environments = {}
            else:
                print("local pool: CUDA MPS on (a daemon per GPU): the runs on a GPU run their "
                      "kernels side by side", flush=True)
            yield environments
        finally:
            for environment in started:
                mps_command(["quit"], environment)


def start_mps(gpu_ids: list[str], folder: Path, started: list, environments: dict) -> str | None:
    """Start a daemon per GPU (each added to `started`, each GPU's environment to
    `environments`) and probe it; None, or what went wrong."""
    control = shutil.which(MPS_CONTROL)
    if control is None:
        return f"{MPS_CONTROL} is not on PATH"
    uuids = gpu_uuids(gpu_ids)
    if isinstance(uuids, str):
        return uuids
    for number, gpu in enumerate(gpu_ids):
        environment = {"CUDA_VISIBLE_DEVICES": uuids[gpu],
                       "CUDA_MPS_PIPE_DIRECTORY": str(folder / f"gpu{number}" / "pipe"),
                       "CUDA_MPS_LOG_DIRECTORY": str(folder / f"gpu{number}" / "log")}
        for name in ("CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY"):
            Path(environment[name]).mkdir(parents=True)
        result = subprocess.run([control, "-d"], env=os.environ | environment, text=True,
                                capture_output=True, timeout=60)
        if result.returncode != 0:
            return f"its daemon did not start: {first_line(result)}"
        started.append(environment)
        probe = subprocess.run(MPS_PROBE, env=os.environ | environment, text=True,
                               capture_output=True, timeout=300)
        if probe.returncode != 0:
            return f"a first client failed under it: {first_line(probe)}"
        if not mps_command(["get_server_list"], environment).strip():
            return "a first client did not reach the GPU through it"
        environments[gpu] = environment
    return None


def gpu_uuids(gpu_ids: list[str]) -> dict[str, str] | str:
    """Each GPU id (an index or a UUID, as CUDA_VISIBLE_DEVICES names it) -> its UUID, by
    nvidia-smi; or a string saying why not."""
    try:
        listing = subprocess.run(["nvidia-smi", "--query-gpu=index,uuid", "--format=csv,noheader"],
                                 text=True, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"nvidia-smi did not list the GPUs ({type(error).__name__})"
    by_index = dict(line.replace(" ", "").split(",", 1) for line in
                    listing.stdout.splitlines() if "," in line)
    uuids = {gpu: gpu if gpu.startswith(("GPU-", "MIG-")) else by_index.get(gpu)
             for gpu in gpu_ids}
    missing = [gpu for gpu, uuid in uuids.items() if uuid is None]
    return f"nvidia-smi lists no GPU {', '.join(missing)}" if missing else uuids


def mps_command(words: list[str], environment: dict) -> str:
    """Send one command to the MPS daemon of `environment`; its answer (empty if none)."""
    try:
        return subprocess.run([MPS_CONTROL], input=" ".join(words) + "\n",
                              env=os.environ | environment, text=True, capture_output=True,
                              timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def first_line(result: subprocess.CompletedProcess) -> str:
    """The first line a process printed (error output first), or its exit code."""
    lines = (result.stderr + result.stdout).strip().splitlines()
    return lines[0] if lines else f"exit code {result.returncode}"


def exit_error(job: runs.Job, exitcode: int, stopping: bool = False) -> str | None:
    """What went wrong with a pool run, from its process's exit code and failed.txt.

    With `stopping` (the pool was asked to stop), a run that saved and stopped is no error,
    nor one killed by the stop signal it was sent (it had not installed its handlers yet:
    still loading). Without, a run stopped by a signal from elsewhere (`kill` of its
    process) is reported: the launch did not do what it was asked.
    """
    if exitcode == 0 or (stopping and (exitcode in (*STOPPED_EXIT_CODES, INTERRUPTED)
                                       or -exitcode in runs.STOP_SIGNALS)):
        return None
    if exitcode == INTERRUPTED:  # a Ctrl-C the pool did not see (sent to the run alone)
        return ("stopped by a second SIGINT from outside the launcher, at once, its last "
                "checkpoint kept; rerun the same command to continue it")
    if exitcode in STOPPED_EXIT_CODES:  # its state saved, no failed.txt: it is interrupted
        return (f"stopped by {signal.Signals(exitcode - 128).name} from outside the launcher, "
                "its state saved; rerun the same command to continue it")
    if exitcode == OTHER_RUN:  # its reason is the last line of the run's log, not failed.txt
        log = (job.run_dir / folders.RUN_LOG).read_text(errors="replace")
        lines = log.strip().splitlines()
        return lines[-1] if lines else f"{job.run_dir} holds another run"
    if exitcode == ALREADY_RUNNING:  # its failed.txt would land in the other's live run
        return (f"it is already being trained by another process (see "
                f"{job.run_dir / folders.RUNNING}); wait for it to end (the same command with "
                "--status shows it)")
    failed = job.run_dir / folders.FAILED
    if exitcode == DISK_STOPPED and not failed.exists():  # no room even for failed.txt
        return (f"{files.STOPPED[0]} or read-only: a write into {job.run_dir} failed and "
                f"{failed.name} could not be written either; make space there, then rerun the "
                "same command to continue the run from its last checkpoint")
    if exitcode < 0 and folders.run_state(job.run_dir) == "finished":
        return None  # killed after its results were saved (closing its loggers, say)
    if exitcode < 0:  # killed by a signal: nothing could write failed.txt
        name = signal.Signals(-exitcode).name
        saved = (job.run_dir / folders.CHECKPOINT).exists()
        again = ("resume it from its last checkpoint" if saved
                 else "start it again (it had saved no checkpoint)")
        message = (f"its process was killed by {name}" + (" (out of memory?)" if name == "SIGKILL"
                                                          else "")
                   + f"; rerun the same command to {again}")
        runs.write_failed(job.run_dir, message)
        return message
    return failed.read_text().strip() if failed.exists() else f"exit code {exitcode}"


def _pool_run(job: runs.Job, gpu: str | None, environment: dict | None = None) -> None:
    """A pool process: pin the GPU, run the job, exit 1 if it failed, 128+n if stopped,
    ALREADY_RUNNING if another process trains its folder, OTHER_RUN if the folder holds
    another run, DISK_STOPPED if its disk is full or read-only (files.WriteFailed.shared)."""
    pin_gpu(gpu, environment)
    try:
        error = run_logged(job)
    except runs.Preempted as stop:
        sys.exit(128 + stop.signum)
    except runs.AlreadyRunning:
        sys.exit(ALREADY_RUNNING)
    except runs.OtherRun:
        sys.exit(OTHER_RUN)
    except files.WriteFailed as failed:  # its failed.txt written by run_logged, if it fit
        sys.exit(DISK_STOPPED if failed.shared else 1)
    except KeyboardInterrupt:  # a second Ctrl-C (the pool says it once for every run)
        sys.exit(INTERRUPTED)
    finally:  # a Ctrl-C now, the run's handlers gone, would make its exit code -SIGINT
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(1 if error else 0)


class Pool:
    """Processes running one job each, on slots (a GPU id or None) that they free on exit."""

    def __init__(self, slots: list[str | None], environments: dict | None = None):
        self.free, self.queue, self.running = list(slots), [], {}  # process -> (job, slot)
        self.environments = environments or {}  # slot -> its runs' environment (CUDA MPS)
        self.context = multiprocessing.get_context("spawn")
        self.stopped: int | None = None  # the signal that stopped the pool
        self.interrupted = False  # a run stopped at once (a second Ctrl-C), not saved
        self.disk_stopped = False  # a run stopped by a full or read-only disk (no new runs)

    def start_queued(self) -> None:
        while self.queue and self.free and self.stopped is None:
            job, slot = self.queue.pop(0), self.free.pop(0)
            process = self.context.Process(target=_pool_run,
                                           args=(job, slot, self.environments.get(slot)),
                                           name=f"run {job.run_dir.name}")
            process.start()
            self.running[process] = (job, slot)

    def wait(self, seconds: float) -> list[tuple[runs.Job, str]]:
        """Wait for runs to end (at most `seconds`); return the failed ones with their error."""
        sentinels = {process.sentinel: process for process in self.running}
        failed = []
        for sentinel in multiprocessing.connection.wait(list(sentinels), timeout=seconds):
            process = sentinels[sentinel]
            process.join()
            job, slot = self.running.pop(process)
            self.free.append(slot)
            self.disk_stopped |= process.exitcode == DISK_STOPPED
            # stopped at once while the pool stops: the launch ends as interrupted
            self.interrupted |= process.exitcode == INTERRUPTED and self.stopped is not None
            error = exit_error(job, process.exitcode, stopping=self.stopped is not None)
            if error:
                failed.append((job, error))
        return failed

    @contextlib.contextmanager
    def forwarding_stop_signals(self):
        """SIGTERM, Ctrl-C and SIGHUP (the terminal closed): no new runs; the runs in flight
        save their state and stop."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if signum == signal.SIGINT and self.stopped is not None:  # Ctrl-C again
                print("\nSIGINT again: the runs that get it stop at once, each keeping its "
                      "last checkpoint", flush=True)
                return
            self.stopped = signum
            self.queue.clear()
            # Ctrl-C reaches the runs by itself, a `kill -INT` of the pool does not: SIGTERM
            # asks the same of them and never counts as the second Ctrl-C that stops at once
            for process in self.running:
                if process.pid:
                    os.kill(process.pid, signal.SIGTERM if signum == signal.SIGINT else signum)
            print(f"\n{signal.Signals(signum).name}: no new runs; the runs in flight stop "
                  "after saving their state", flush=True)

        previous = {signum: signal.signal(signum, handler) for signum in runs.handled_stop_signals()
                    if signum != getattr(signal, "SIGUSR2", None)}  # SLURM's, to its own runs
        try:
            yield
        finally:
            for signum, old in previous.items():
                signal.signal(signum, old)


def run_in_pool(jobs: list[runs.Job], max_parallel_runs: int | None = None, *,
                runs_per_gpu: int = 1, refresh_seconds: float = 10.0) -> list[str]:
    """Run the jobs in a pool of processes, one per run; return one line per failed run.

    Each run's process is pinned to one GPU (CUDA_VISIBLE_DEVICES) when there
    are GPUs, runs_per_gpu of them on each, else to its share of the CPU
    threads. A run's output goes to its run.log; a run that raises, or whose
    process dies (killed, out of memory), is reported with its folder and log
    while the others go on. A run stopped by a full or read-only disk is
    reported as stopped, and no new run starts (their folders are on that
    disk), while the runs in flight go on until they end or stop at their next
    write. SIGTERM or Ctrl-C stops every run at its next step, each saving its
    state. While runs are in flight their progress is printed, read from their
    folders, whenever it changes (at most every refresh_seconds).
    """
    gpus = torch.cuda.device_count() if jobs[0].device.startswith(("auto", "cuda")) else 0
    cpus = machine.cpu_threads()
    workers = pool_workers(max_parallel_runs, gpus=gpus, runs_per_gpu=runs_per_gpu, cpus=cpus)
    threads = max(1, cpus // workers)
    # a run sees only its own GPU, as device 0
    jobs = [dataclasses.replace(job, threads=threads, **({"device": "cuda"} if gpus else {}))
            for job in jobs]
    print(f"local pool: {workers} worker(s), "
          + (f"{gpus} GPU(s), {workers / gpus:g} run(s) on each" if gpus
             else f"{threads} CPU thread(s) each")
          + "; each run's output is in its folder's run.log")
    slots = worker_gpus(workers, gpus)
    sharing = max((slots.count(slot) for slot in slots if slot is not None), default=0)
    with shared_gpus(sorted({s for s in slots if s is not None}), sharing) as environments:
        return run_pool(jobs, Pool(slots, environments), refresh_seconds)


def run_pool(jobs: list[runs.Job], pool: Pool, refresh_seconds: float) -> list[str]:
    """run_in_pool's loop: start queued runs on free slots, report failures and progress."""
    failures, shown, stopping = [], "", -1
    with pool.forwarding_stop_signals():
        for job in jobs:
            pool.queue.append(job)
        while pool.queue or pool.running:
            pool.start_queued()
            for job, error in pool.wait(refresh_seconds):
                failures.append(f"{job.run_dir}: {error} (log: {job.run_dir / folders.RUN_LOG})")
                disk = error.startswith(files.STOPPED)  # its disk is full or read-only
                stopping = len(failures) - 1 if disk else stopping
                stopped = disk or error.startswith("stopped by")
                print(f"{'STOPPED' if stopped else 'FAILED'} {failures[-1]}", flush=True)
            if pool.disk_stopped and pool.queue:
                not_started, pool.queue = [job.run_dir.name for job in pool.queue], []
                failures[stopping] += (f"; {len(not_started)} other run(s) not started, their "
                                       f"folders being on that disk ({', '.join(not_started)})"
                                       ": the same command starts them")
                print(f"no new runs ({len(not_started)} not started): their folders are on the "
                      "same disk; the runs in flight go on until they end or a write fails",
                      flush=True)
            text = progress_text(jobs)
            if text != shown:  # not every refresh: the clock alone would change
                print(runs.clock_time() + text, flush=True)
                shown = text
    if pool.interrupted:  # main says what a second Ctrl-C keeps
        raise KeyboardInterrupt
    if pool.stopped is not None:
        raise runs.Preempted(pool.stopped, "every run in flight, in its folder")
    return failures


# ----------------------------------------------------------------- SLURM


class SlurmRun:
    """The job function of the SLURM array: runs.run_one, requeued on preemption or timeout.

    SLURM signals a job before its time limit (SIGUSR2, asked for by submitit)
    or when it is preempted or requeued (SIGTERM): the run saves a mid-task
    checkpoint at its next step and stops, and the requeued job continues from
    that step.
    """

    def __call__(self, job: runs.Job) -> str | None:
        try:
            return run_logged(job)
        except (runs.AlreadyRunning, runs.OtherRun) as error:  # no failed.txt: another's folder
            print(f"error: {error}", file=sys.stderr, flush=True)  # the job's .err says why
            return str(error)
        except files.WriteFailed as error:  # the disk is full or read-only: the job's log says
            print(f"error: {error}", file=sys.stderr, flush=True)  # it (each job stops so)
            return str(error)
        except runs.Preempted as stop:  # state saved; for submitit's time-limit signal, let
            # its handler requeue the job now
            print(f"{stop} (a job that SLURM requeues continues by itself)", file=sys.stderr,
                  flush=True)
            handler = signal.getsignal(stop.signum)
            if stop.signum == getattr(signal, "SIGUSR2", None) and callable(handler):
                from submitit.core.utils import UncompletedJobError

                try:
                    handler(stop.signum, None)  # requeues the job and exits
                except UncompletedJobError as error:  # its requeues for a time limit used up
                    print(f"error: the time limit ended this job, which is not requeued again "
                          f"({error}); its run's state is saved: submit the same command "
                          "again, with a larger slurm_time_minutes", file=sys.stderr,
                          flush=True)
            # preempted or requeued: SLURM starts the job again by itself; no traceback,
            # and no result for submitit (it would read as an error)
            sys.exit(128 + stop.signum)

    def checkpoint(self, job: runs.Job):
        import submitit

        return submitit.helpers.DelayedSubmission(self, job)


def python_path_line() -> str:
    """The job script's line that lets its Python import this project from any folder
    (the job starts in the folder sbatch was called from, not necessarily this one)."""
    here = shlex.quote(str(Path(__file__).resolve().parent))
    return f"export PYTHONPATH={here}${{PYTHONPATH:+:$PYTHONPATH}}"


def submit_to_slurm(jobs: list[runs.Job], experiment_dir: Path, settings: dict,
                    executor=None) -> list:
    """Submit the jobs as one SLURM job array (submitit); return submitit's jobs.

    Logs go to experiment_dir/slurm_logs, job ids to experiment_dir/slurm_jobs.json.
    `executor` replaces the SLURM executor (tests use submitit's local ones).
    """
    import submitit

    if executor is None:
        missing = [command for command in ("sbatch", "srun") if shutil.which(command) is None]
        if missing:  # submitit's executor needs srun too, and would raise a traceback
            raise UserError(f"launcher='slurm' needs SLURM, and {' and '.join(missing)} "
                            f"{'is' if len(missing) == 1 else 'are'} not on this machine; "
                            "use launcher='local' or 'sequential'")
        executor = submitit.AutoExecutor(folder=experiment_dir / "slurm_logs", cluster="slurm")
        executor.update_parameters(
            name=experiment_dir.name, timeout_min=settings["slurm_time_minutes"],
            gpus_per_node=settings["slurm_gpus_per_run"],
            cpus_per_task=settings["slurm_cpus_per_run"], mem_gb=settings["slurm_mem_gb"],
            slurm_partition=settings["slurm_partition"],
            slurm_additional_parameters=settings["slurm_additional_parameters"],
            slurm_setup=[python_path_line()])
    try:
        submitted = executor.map_array(SlurmRun(), jobs)
    except submitit.core.utils.FailedJobError as error:  # sbatch refused: its last line says why
        lines = [line for line in str(error).splitlines() if line.strip()]
        raise UserError(f"sbatch could not submit the runs ({lines[-1] if lines else error}); "
                        "check that this machine reaches the cluster (sinfo) and the slurm_* "
                        "settings (partition, time, GPUs, memory)") from None
    ids = {str(job.run_dir.name): s.job_id for job, s in zip(jobs, submitted)}
    experiment_dir.mkdir(parents=True, exist_ok=True)
    try:  # an earlier submission's ids stay for the runs not submitted again
        files.write_text(json.dumps(earlier_job_ids(experiment_dir) | ids, indent=2),
                         experiment_dir / "slurm_jobs.json")
    except files.WriteFailed as error:
        raise error.advise(f"note the job ids, submitted all the same: "
                           f"{', '.join(ids.values())}") from None
    print(f"submitted {len(submitted)} run(s): job ids {', '.join(ids.values())} "
          f"(saved in {experiment_dir / 'slurm_jobs.json'})")
    return submitted


def earlier_job_ids(experiment_dir: Path) -> dict:
    """slurm_jobs.json of an earlier submission (run folder -> job id); {} if there is none
    or it cannot be read (it is only a record: rewritten whole)."""
    try:
        ids = json.loads((experiment_dir / "slurm_jobs.json").read_text())
    except (OSError, ValueError):
        return {}
    return ids if isinstance(ids, dict) else {}


# ---------------------------------------------------------------- status


def run_status(job: runs.Job) -> dict:
    """A run's state from its folder (folders.run_state) with its progress: not started,
    running, interrupted, or running or interrupted (its process on another machine), and at
    which task; failed (and why), stopped (its disk is full or read-only: what to do),
    finished; "another configuration" (its `differences` beside) where the folder holds a
    run of other settings than the job's, "other run" where it holds other data."""
    run_dir, total = job.run_dir, job.config.number_of_tasks
    row = {"run": run_dir.name, "state": folders.run_state(run_dir), "tasks_done": 0,
           "mean_accuracy": float("nan")}
    try:
        runs.changed_settings(run_dir, runs.job_record(job))
    except runs.OtherRun as error:  # what a launch with these options would refuse
        if error.differences:  # status_table says them once for the runs that share them
            return row | {"state": "another configuration", "tasks_done": None,
                          "differences": error.differences}
        return row | {"state": f"other run: {error}", "tasks_done": None}  # not this job's
    except UserError as error:  # a damaged config.json: said in its row, the others go on
        return row | {"state": f"damaged: {error}", "tasks_done": None}
    if (run_dir / folders.ACCURACIES).exists():
        try:
            accuracies = folders.read_run_csv(run_dir / folders.ACCURACIES,
                                              ("trained_task", "accuracy"))
        except UserError as error:  # said in its row: the pool and the others go on
            return row | {"state": f"damaged: {error}", "tasks_done": None}
        last = accuracies[accuracies["trained_task"] == accuracies["trained_task"].max()]
        row |= {"tasks_done": int(last["trained_task"].iloc[0]) + 1,
                "mean_accuracy": round(float(last["accuracy"].mean()), 2)}
    if row["state"] == "failed":
        log = run_dir / folders.RUN_LOG  # the pool's and SLURM's runs write one
        error = folders.failure(run_dir)["failed"]
        kind = "stopped" if error.startswith(files.STOPPED) else "failed"  # a full disk: stopped
        row["state"] = f"{kind}: {error}" + (f" (log: {log})" if log.exists() else "")
    elif row["state"] == "unfinished":
        row["state"] = (f"{runs.liveness(run_dir)} " + (
            f"(task {row['tasks_done'] + 1}/{total})" if row["tasks_done"] < total
            else "(final evaluations)"))
    return row


def progress_text(jobs: list[runs.Job]) -> str:
    """A line per started, unfinished run and a count of all runs by state."""
    rows = [run_status(job) for job in jobs]
    # a state without its details: "failed: <reason>", "running or interrupted (task 2/5)"
    counts = pd.Series([re.split(r": | \(", r["state"])[0] for r in rows]).value_counts()
    lines = [", ".join(f"{n} {state}" for state, n in counts.items())]
    lines += [f"  {r['run']}: {r['state']}, {r['tasks_done']} task(s) done"
              + (f", mean accuracy {r['mean_accuracy']:.2f}%" if r["tasks_done"] else "")
              for r in rows if r["state"].startswith("running")]
    return "\n".join(lines)


def status_table(jobs: list[runs.Job]) -> str:
    """Every run of an experiment and its state, as a markdown table; n/a where a number is
    not known (no task done, or the folder holds another run). Above it, a line for each
    set of differences of runs of another configuration (the options of another launch)."""
    rows = [run_status(job) for job in jobs]
    others = {}
    for row in rows:
        if "differences" in row:
            others.setdefault(row.pop("differences"), []).append(row["run"])
    lines = []
    for differences, names in others.items():
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        lines.append(f"{len(names)} run folder(s) ({shown}) hold another configuration "
                     f"({differences}): give --status the options they were launched with")
    table = pd.DataFrame(rows, dtype=object)
    return "\n".join(lines + [table.where(table.notna(), "n/a").to_markdown(index=False)])
