"""One prepared check of the GPU path (or, without a GPU, the same checks on the CPU).

    bash bench/device_check.sh --budget=300   # installs .whl/ wheels if any, then runs this
    python bench/device_check.py [--out=DIR] [--only=CHECK,...] [--budget=SECONDS]

Checks, each a command whose output is kept, the most telling first (--only picks some):
  1. cuda tests: tests/test_cuda.py (on a CPU they are skipped, which passes);
  2. reproduction time: bench/reproduction_time.py --pipeline: the hours every best
     configuration takes beside its memory floor, and FeCAM's augmentation workers
     against the steps they feed;
  3. runs per gpu: five seeds of ResNet-20 and of ZenkeNet (Split CIFAR-100 best
     configurations, 2 tasks of a few hundred steps on CIFAR-format files written
     here) with runs_per_gpu 1 and 5: runs per hour and training throughput (on a
     CPU: ZenkeNet with a small hypernetwork, a pool of 1 vs 2 workers);
  4. input layout: bench/input_layout.py, NHWC against NCHW batches;
  5. train step: bench/train_step.py (eager vs captured, peak memory, the
     paper-scale step's memory bound);
  6. demo: the demo on the device against the demo on the CPU (final accuracies
     within the spread over seeds; on a CPU: one thread against all). The CPU's
     demo starts in the background once checks 2 and 3 (which time CPU work) are done;
  7. image step: bench/image_step.py, as 5 for the image benchmarks;
  8. profile: bench/profile_step.py, the paper-scale step's phases at tasks 1 and 10;
  9. thresholds: bench/quantile_ulps.py, the one-sort mask thresholds against the
     device's own torch.quantile, in ulps (into steps.txt).
Everything measured goes into --out (default $OUT, else a new
Results/device_check/<date_time>/), at most 8 files; a folder that holds files already
is refused, so that a rerun's files never mix with an earlier run's. The log's first line
gives the device, the commit of the tree and the date; the scratch files (CIFAR-format
data, the runs and demos) go into a temporary folder removed at the end, also after a
failure. With --budget=SECONDS, checks that would start with under 30 s left are
not run (and say so). The last line says `device check: K/N checks passed on <device>`.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
sys.path[:0] = [str(REPO / "bench"), str(REPO), str(REPO / "tests")]


def device_name() -> tuple[str, bool]:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0), True
    return "cpu", False


def command(name: str, args: list[str], log, out: Path, timeout: float) -> tuple[bool, str]:
    """Run one check's command; its output goes to out/<name>.txt (appended) and the log."""
    started = time.perf_counter()
    try:
        result = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        text, ok = result.stdout + result.stderr, result.returncode == 0
    except subprocess.TimeoutExpired as error:
        text, ok = f"{as_text(error.stdout)}{as_text(error.stderr)}\ntimed out after {timeout} s", \
            False
    text = f"$ {' '.join(args)}\n{text}\n({time.perf_counter() - started:.0f} s)\n"
    with open(out / f"{name}.txt", "a") as f:
        f.write(text)
    log.write(text)
    log.flush()
    return ok, text


def as_text(output: bytes | str | None) -> str:
    """A timed-out process's output: bytes (even with text=True), a string or nothing."""
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def demo_accuracies(results: Path) -> dict:
    """Final mean accuracy per demo benchmark: (mean, population std) over seeds."""
    import pandas as pd

    accuracies = {}
    for summary in results.glob("demo_*/summary.csv"):
        table = pd.read_csv(summary)
        accuracies[summary.parent.name] = (table["mean_accuracy"].mean(),
                                          table["mean_accuracy"].std(ddof=0))
    return accuracies


def demo_starters(gpu: bool, scratch: Path) -> dict:
    """Check 6's demos: label -> (results folder, a function starting its process)."""
    small = ["--number_of_iterations=150", "--number_of_tasks=3"] if not gpu else []
    variants = ({"device": ["--device=cuda"], "cpu": ["--device=cpu"]} if gpu else
                {"all threads": ["--device=cpu"], "one thread": ["--device=cpu"]})
    # A run takes as many threads as CPUs it may run on (machine.cpu_threads reads the
    # affinity; OMP_NUM_THREADS does not limit it): taskset gives it fewer.
    threads = {"one thread": 1, "cpu": max(1, (os.cpu_count() or 2) // 4)}

    def pinned(label: str) -> list[str]:
        cpus = sorted(os.sched_getaffinity(0))[:threads[label]] if label in threads else []
        return ["taskset", "-c", ",".join(map(str, cpus))] if cpus else []

    return {label: (scratch / label.replace(" ", "_"), lambda label=label, extra=extra: (
        subprocess.Popen([*pinned(label), PYTHON, "main.py", "--demo",
                          f"--results_dir={scratch / label.replace(' ', '_')}", *small, *extra],
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
            for label, extra in variants.items()}


def compare_demos(demos: dict, device: str, log, out: Path, timeout: float) -> bool:
    """Check 6: the demo on the device agrees with the demo on the CPU within the seeds'
    spread (the larger std, at least 0.5 points: two seeds give a rough spread).
    `demos` maps a label to (results folder, its process or a function starting it)."""
    rows, ok = [], True
    found = {}
    deadline = time.perf_counter() + timeout
    for label, (folder, process) in demos.items():
        process = process if isinstance(process, subprocess.Popen) else process()
        try:
            output = process.communicate(timeout=max(1.0, deadline - time.perf_counter()))[0]
        except subprocess.TimeoutExpired:
            process.kill()
            output = process.communicate()[0] + f"\ntimed out after {timeout:.0f} s"
        log.write(f"demo ({label}):\n{output}\n")
        ok &= process.returncode == 0
        found[label] = demo_accuracies(folder)
    first, second = found.values()
    for name in sorted(set(first) | set(second)):
        if name not in first or name not in second:
            rows.append(f"| {name} | missing | | | | no |")
            ok = False
            continue
        (a, sa), (b, sb) = first[name], second[name]
        spread = max(sa, sb, 0.5)
        agree = bool(abs(a - b) <= spread)  # numpy's bool is not True
        ok &= agree
        rows.append(f"| {name} | {a:.2f} ± {sa:.2f} | {b:.2f} ± {sb:.2f} | {b - a:+.2f} | "
                    f"{spread:.2f} | {'yes' if agree else 'NO'} |")
    labels = list(demos)
    table = "\n".join([f"# Demo on {device}: {labels[0]} against {labels[1]}", "",
                       f"| demo | {labels[0]} | {labels[1]} | difference | spread | agree |",
                       "|---|---|---|---|---|---|", *rows, ""])
    (out / "demo_comparison.md").write_text(table)
    log.write(table)
    return ok


# Check 3: (label, dataset options); the runs are shortened to 2 tasks of ITERATIONS each.
NETWORKS = {"ResNet-20": ["--dataset=CIFAR100", "--part=0"],
            "ZenkeNet": ["--dataset=CIFAR100", "--part=1"]}
ITERATIONS = {True: 500, False: 5}  # per task, on a GPU / on a CPU


def pool_launch(options: list[str], folder: Path, timeout: float, log) -> dict:
    """One `main.py --launcher=local` launch: wall seconds, finished runs, training seconds
    (each run's summed per-task training time, from its training_log.csv), MPS in use."""
    import pandas as pd

    started = time.perf_counter()
    try:
        result = subprocess.run([PYTHON, "main.py", *options, f"--results_dir={folder}"],
                                cwd=REPO, capture_output=True, text=True, timeout=timeout)
        output, code = result.stdout + result.stderr, result.returncode
    except subprocess.TimeoutExpired as error:
        output, code = f"{as_text(error.stdout)}{as_text(error.stderr)}\ntimed out", "timed out"
    seconds = time.perf_counter() - started
    log.write(output)
    training = [pd.read_csv(path).groupby("task")["seconds"].max().sum()
                for path in folder.glob("*/seed_*/training_log.csv")]
    return {"seconds": seconds, "finished": len(list(folder.glob("*/seed_*/final_weights.pt"))),
            "training": training, "code": code, "mps": "CUDA MPS on" in output,
            "tail": output[-1500:]}


def runs_per_gpu(gpu: bool, scratch: Path, log, out: Path, timeout: float) -> bool:
    """Check 3: per network, one seed alone (runs_per_gpu=1) and five seeds together
    (runs_per_gpu=5); on a CPU two seeds with a pool of 1 and of 2 workers."""
    import conftest

    data = conftest.make_cifar100(scratch / "cifar", per_class_train=60, per_class_test=10)
    common = ["--launcher=local", f"--path_to_datasets={data}", "--number_of_tasks=2",
              "--number_of_epochs=None", f"--number_of_iterations={ITERATIONS[gpu]}",
              "--validation_size=50"]
    if not gpu:  # a CPU steps slowly through the paper's hypernetworks: small ones
        common += ["--hnet_hidden_layers=[4]", "--embedding_size=8"]
    # (label, options, runs training at once)
    variants = ((("alone", ["--seeds=[1]", "--runs_per_gpu=1"], 1),
                 ("5 per GPU", ["--seeds=[1,2,3,4,5]", "--runs_per_gpu=5"], 5)) if gpu else
                (("1 worker", ["--seeds=[1,2]", "--max_parallel_runs=1"], 1),
                 ("2 workers", ["--seeds=[1,2]", "--max_parallel_runs=2"], 2)))
    lines = [f"{'network':<11}{'launch':<11}{'runs':>5}{'wall s':>8}{'runs/hour':>11}"
             f"{'train s/run':>13}  MPS"]
    ok, deadline = True, time.perf_counter() + timeout
    for network, options in NETWORKS.items() if gpu else [("ZenkeNet", NETWORKS["ZenkeNet"])]:
        rates = []
        for label, extra, together in variants:
            launch = pool_launch([*options, *common, *extra],
                                 scratch / f"{network}_{label.replace(' ', '_')}",
                                 max(1.0, deadline - time.perf_counter()), log)
            training = sum(launch["training"]) / max(1, len(launch["training"]))
            # runs per second (wall clock), and runs' worth of training steps per second
            rates.append((launch["finished"] / launch["seconds"],
                          together / training if training else float("nan")))
            lines.append(f"{network:<11}{label:<11}{launch['finished']:>5}"
                         f"{launch['seconds']:>8.0f}{rates[-1][0] * 3600:>11.0f}"
                         f"{training:>13.1f}  {'on' if launch['mps'] else 'off'}")
            if launch["code"] != 0 or launch["finished"] == 0:
                ok = False
                lines.append(launch["tail"])
        (wall, steps), (wall_2, steps_2) = rates
        lines.append(f"{network}: {variants[1][0]} / {variants[0][0]}: "
                     f"{wall_2 / wall if wall else float('nan'):.2f}x the runs per hour (wall "
                     f"clock, start-up and evaluations included); {steps_2 / steps:.2f}x the "
                     f"training steps per second (the runs' training time, the runs of a "
                     f"launch counted as training side by side)")
    text = "\n".join(lines) + "\n"
    (out / "runs_per_gpu.txt").write_text(text)
    log.write(text)
    return ok


CHECKS = ("cuda tests", "reproduction time", "runs per gpu", "input layout", "train step",
          "demo", "image step", "profile", "thresholds")
CPU_TIMED = ("reproduction time", "runs per gpu")  # the CPU's demo waits for these


def check_commands(gpu: bool, device: str, log, out: Path, left) -> dict:
    """Each check's function (returning whether it passed), sized for a GPU or a CPU."""
    steps = "--steps=10" if gpu else "--steps=1"
    return {
        "cuda tests": lambda: command(
            "pytest_cuda", [PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            "tests/test_cuda.py"], log, out, left(240))[0],
        "reproduction time": lambda: command(
            "reproduction_time", [PYTHON, "bench/reproduction_time.py", f"--device={device}",
                                  "--pipeline", *(["--steps=3"] if gpu else [
                                      "--steps=1", "--only=CIFAR100_FeCAM_setup:7",
                                      "--batches=9"])], log, out, left(300))[0],
        "input layout": lambda: command(
            "input_layout", [PYTHON, "bench/input_layout.py", f"--device={device}",
                             *(["--steps=30"] if gpu else ["--steps=1", "--only=CIFAR100:1",
                                                           "--task=1", "--small"])],
            log, out, left(180))[0],
        "train step": lambda: command(
            "steps", [PYTHON, "bench/train_step.py", f"--device={device}", steps,
                      *([] if gpu else ["--benchmark=SplitMNIST:0"])], log, out, left(300))[0],
        "image step": lambda: command(
            "steps", [PYTHON, "bench/image_step.py", f"--device={device}", steps,
                      *([] if gpu else ["--benchmark=CIFAR100:0", "--tasks=1"])],
            log, out, left(300))[0],
        "profile": lambda: command(
            "profile_step", [PYTHON, "bench/profile_step.py", f"--device={device}",
                             *([] if gpu else ["--benchmark=SplitMNIST:0", "--tasks=1,5",
                                               "--steps=1"])], log, out, left(120))[0],
        "thresholds": lambda: command(
            "steps", [PYTHON, "bench/quantile_ulps.py", f"--device={device}",
                      *([] if gpu else ["--seeds=3"])], log, out, left(60))[0],
    }


def fresh_folder(out: str | None) -> Path:
    """The folder this check writes to, empty: `out` (--out or $OUT) if it holds no files,
    else a new Results/device_check/<date_time>/. A folder with files ends the check in one
    line: a rerun's files would mix with the earlier ones (several checks append to one)."""
    folder = Path(out or f"Results/device_check/{time.strftime('%Y-%m-%d_%H%M%S')}")
    if folder.is_file() or (folder.is_dir() and any(folder.iterdir())):
        sys.exit(f"device check: {folder} is not an empty folder: give a new or empty one "
                 f"with --out (or move its files away)")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def provenance() -> str:
    """The commit of this tree (with `+ changes` where it differs from it) and the date."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                                capture_output=True, timeout=30).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                 cwd=REPO, text=True, capture_output=True,
                                 timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit, changed = "", ""
    commit = (commit + (" + uncommitted changes" if changed else "")) or "unknown (no git here)"
    return f"commit {commit}; {time.strftime('%Y-%m-%d %H:%M:%S %Z')}"


def run_checks(chosen: list[str], out: Path, scratch: Path, budget: float) -> int:
    """Run the chosen checks, writing to `out` (scratch files in `scratch`); 0 if all passed."""
    name, gpu = device_name()
    device = "cuda" if gpu else "cpu"
    started = time.perf_counter()
    deadline = started + budget

    def left(most: float) -> float:
        return min(most, deadline - time.perf_counter())

    demos = demo_starters(gpu, scratch) if "demo" in chosen else {}
    with open(out / "device_check.log", "w") as log:
        log.write(f"device check on {name}; {provenance()}\n")
        checks_to_run = check_commands(gpu, device, log, out, left) | {
            "runs per gpu": lambda: runs_per_gpu(gpu, scratch, log, out, left(400 if gpu
                                                                             else 600)),
            "demo": lambda: compare_demos(demos, device, log, out, left(600 if gpu else 900))}
        checks = {}
        try:
            for check in chosen:
                cpu_timed_to_come = set(CPU_TIMED) & (set(chosen) - set(checks))
                if gpu and demos and not cpu_timed_to_come and callable(demos["cpu"][1]):
                    demos["cpu"] = (demos["cpu"][0], demos["cpu"][1]())  # beside the GPU checks
                if left(60) < 30:  # under half a minute left: not started
                    checks[check] = None
                    continue
                log.write(f"--- {check} ({time.perf_counter() - started:.0f} s in)\n")
                log.flush()
                checks[check] = checks_to_run[check]()
        finally:
            for _, process in demos.values():  # a demo started but not compared
                if isinstance(process, subprocess.Popen) and process.poll() is None:
                    process.kill()
                    process.wait()
        passed = sum(ok is not None and bool(ok) for ok in checks.values())
        summary = {"device": name, "seconds": round(time.perf_counter() - started),
                   "checks": {k: "not run: no time left" if v is None else
                              "passed" if v else "FAILED" for k, v in checks.items()}}
        text = json.dumps(summary, indent=2)
        log.write(text + "\n")
    print(text)
    print(f"device check: {passed}/{len(checks)} checks passed on {name}")
    return 0 if passed == len(checks) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT"),
                        help="an empty or new folder (default $OUT, else a new "
                             "Results/device_check/<date_time>/)")
    parser.add_argument("--budget", type=float, default=float("inf"),
                        help="seconds for all checks: those that no longer fit are not run "
                             "(a lent GPU's minutes are few); the most telling run first")
    parser.add_argument("--only", help=f"some of the checks, comma-separated: {', '.join(CHECKS)}")
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else list(CHECKS)
    if not set(chosen) <= set(CHECKS):
        parser.error(f"--only: choose among {', '.join(CHECKS)}")
    out = fresh_folder(args.out)
    scratch = Path(tempfile.mkdtemp(prefix="device_check_", dir=os.environ.get("TMPDIR")))
    try:
        return run_checks(chosen, out, scratch, args.budget)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # the CIFAR files and runs, demos' results


if __name__ == "__main__":
    sys.exit(main())
