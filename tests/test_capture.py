"""What makes a step capturable, checked on the CPU; the capture itself is in test_cuda.py."""

import dataclasses
import functools

import pytest
import torch
from conftest import random_task, semi_binary_masks
from torch.overrides import TorchFunctionMode

import capture
import datasets
import hypermask
import launchers
import main
import runs
from batches import Task


def test_a_sparsity_tensor_gives_the_very_masks_of_the_number():
    """A captured step feeds the ramping sparsity as a float64 tensor: same bits."""
    torch.manual_seed(0)
    outputs = [torch.randn(300, 7), torch.randn(50), torch.randn(10, 3)]
    ramp = [30 * (i + 1) / 2000 for i in range(0, 2000, 97)] + [0.0, 12.0, 50.0, 99.5]
    for sparsity in ramp:
        expected = semi_binary_masks(outputs, sparsity)
        got = semi_binary_masks(outputs, torch.tensor(sparsity, dtype=torch.float64))
        assert all(torch.equal(a, b) for a, b in zip(expected, got)), sparsity


class HostReads(TorchFunctionMode):
    """Counts reads of a tensor's value into Python: each is a host sync on a GPU."""

    def __init__(self):
        super().__init__()
        self.reads = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in ("__bool__", "item", "__int__", "__float__",
                                             "__index__", "tolist"):
            self.reads.append(func.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("dataset, part, shape, classes", [
    ("SplitMNIST", 0, (784,), 2), ("CIFAR100", 0, (32, 32, 3), 10),
    ("CIFAR100", 1, (32, 32, 3), 10), ("TinyImageNet", 1, (64, 64, 3), 5)])
def test_a_training_step_never_reads_a_tensor_into_python(dataset, part, shape, classes):
    """The whole step (loss, backward, Adam) with a tensor sparsity: capturable as a graph."""
    config = dataclasses.replace(datasets.get_benchmark(dataset, part).best,
                                 hnet_hidden_layers=(3,), sparsity=30, batch_size=4)
    torch.manual_seed(0)
    model = hypermask.build_model(config, shape, classes)
    optimizer = hypermask.make_optimizer(model, config)
    start = hypermask.task_start(model, 1)
    step = hypermask.eager_step(model, optimizer, start, task_id=1, num_classes=classes,
                                config=config)
    x, y = torch.rand(4, torch.Size(shape).numel()), torch.arange(4) % classes
    step(x, y, 30.0)  # Adam's state is created on the first step
    with HostReads() as counter:
        step(x, y, torch.tensor(15.0, dtype=torch.float64))
    assert counter.reads == []


def test_pool_size_with_several_runs_per_gpu(monkeypatch):
    assert launchers.pool_workers(None, gpus=2, runs_per_gpu=5, cpus=16) == 10
    assert launchers.pool_workers(3, gpus=2, runs_per_gpu=5, cpus=16) == 3
    assert launchers.pool_workers(None, gpus=0, runs_per_gpu=5, cpus=16) == 8
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    slots = launchers.worker_gpus(10, 2)
    assert slots.count("0") == slots.count("1") == 5


def test_runs_per_gpu_is_a_checked_setting(capsys):
    assert main.main(["--runs_per_gpu=0"]) == 2
    assert "--runs_per_gpu must be at least 1, not 0" in capsys.readouterr().err


def test_running_out_of_gpu_memory_is_a_clear_error(mnist_root, tmp_path, monkeypatch, capsys):
    real = runs.train_with_progress

    def train(model, task, task_id, config, **options):
        if task_id == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB "
                                         "(GPU 0; 79.1 GiB total capacity)\nmore detail")
        return real(model, task, task_id, config, **options)

    monkeypatch.setattr(runs, "train_with_progress", train)
    options = ["--dataset=SplitMNIST", "--seeds=[1]", "--number_of_tasks=2",
               "--number_of_iterations=3", "--target_hidden_layers=[8]",
               "--hnet_hidden_layers=[4]", "--validation_size=10", "--batch_size=16",
               "--device=cpu",
               f"--path_to_datasets={mnist_root}", f"--results_dir={tmp_path}"]
    assert main.main(options) == 2
    err = capsys.readouterr().err.strip()
    run = tmp_path / "SplitMNIST_part0_best" / "seed_1"
    assert err.startswith(f"error: 1 run(s) failed: {run}: ran out of GPU memory in task 2 "
                          "(CUDA out of memory. Tried to allocate 2.00 GiB")
    assert "evaluation_batch_size" in err and "runs_per_gpu" in err and "\n" not in err
    assert (run / "failed.txt").read_text().startswith("ran out of GPU memory in task 2")
    monkeypatch.undo()
    assert main.main(options) == 0  # resumes after task 1
    assert "resuming after task 1" in capsys.readouterr().out


def test_a_run_resumes_with_the_other_kind_of_step():
    """A checkpoint of eager steps resumes captured on a GPU, and the other way round:
    the optimiser's `capturable` follows the resuming step, not the saved state."""
    config = dataclasses.replace(datasets.get_benchmark("SplitMNIST", 0).best,
                                 target_hidden_layers=(8,), hnet_hidden_layers=(4,),
                                 optimizer="rmsprop")
    model = hypermask.build_model(config, (784,), 2)
    task = random_task(784, 2)
    state = hypermask.training_state(model, task, 0, config)
    next(state.batches)  # a task in progress
    saved = state.state_dict()
    saved["optimizer"]["param_groups"][0]["capturable"] = True  # as a captured run saves it
    resumed = hypermask.training_state(model, task, 0, config, saved, capturable=False)
    assert [group["capturable"] for group in resumed.optimizer.param_groups] == [False]
    step = hypermask.eager_step(model, resumed.optimizer, resumed.start, task_id=0,
                                num_classes=2, config=config)
    terms = step(task.train_x[:16], task.train_y[:16], 0.0)  # a capturable step fails on a CPU
    assert terms["loss"].grad_fn is None  # values only: the step's graph is not kept alive


@pytest.mark.parametrize("maker, capturable", [
    (lambda: hypermask.eager_step, False),
    (lambda: functools.partial(hypermask.eager_step), False),  # a knob threaded through it
    (lambda: capture.graphed_step, True)])
def test_the_step_maker_says_whether_the_optimiser_is_captured(monkeypatch, maker, capturable):
    """Told by an attribute, not by identity: a wrapped eager step had made Adam capturable."""
    seen = []

    def training_state(*args, capturable=False, **kwargs):
        seen.append(capturable)
        raise StopIteration  # the optimiser's kind is all this test needs

    monkeypatch.setattr(hypermask, "training_state", training_state)
    config = dataclasses.replace(datasets.get_benchmark("SplitMNIST", 0).best,
                                 target_hidden_layers=(8,), hnet_hidden_layers=(4,))
    model = hypermask.build_model(config, (784,), 2)
    with pytest.raises(StopIteration):
        hypermask.train_task(model, random_task(784, 2), 0, config, make_step=maker())
    assert seen == [capturable]


# ------------------------------------------------------------ several runs on one GPU

FAKE_MPS_CONTROL = """#!/bin/sh
if [ "$1" = "-d" ]; then
    echo "start $CUDA_VISIBLE_DEVICES $CUDA_MPS_PIPE_DIRECTORY $CUDA_MPS_LOG_DIRECTORY" \
        >> "$FAKE_LOG"
    [ -n "$FAKE_START_ERROR" ] && echo "$FAKE_START_ERROR" >&2 && exit 1
    exit 0
fi
read command
echo "$command $CUDA_MPS_PIPE_DIRECTORY" >> "$FAKE_LOG"
[ "$command" = "get_server_list" ] && echo 4242
exit 0
"""


@pytest.fixture
def fake_mps(tmp_path, monkeypatch):
    """nvidia-cuda-mps-control and nvidia-smi stand-ins on PATH (two GPUs), a probe that
    logs the GPU it was given; returns the log of what they were asked."""
    import os

    bin_dir, log = tmp_path / "bin", tmp_path / "mps.log"
    bin_dir.mkdir()
    (bin_dir / "nvidia-cuda-mps-control").write_text(FAKE_MPS_CONTROL)
    (bin_dir / "nvidia-smi").write_text('#!/bin/sh\necho "0, GPU-aaa"\necho "1, GPU-bbb"\n')
    for program in bin_dir.iterdir():
        program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_LOG", str(log))
    monkeypatch.delenv("CUDA_MPS_PIPE_DIRECTORY", raising=False)
    monkeypatch.setattr(launchers, "MPS_PROBE",
                        ["sh", "-c", 'echo "probe $CUDA_VISIBLE_DEVICES" >> "$FAKE_LOG"'])
    return log


def test_runs_sharing_gpus_get_a_cuda_mps_daemon_per_gpu_until_the_pool_ends(fake_mps, capsys):
    from pathlib import Path

    with launchers.shared_gpus(["0", "1"], 3) as environments:
        assert [e["CUDA_VISIBLE_DEVICES"] for e in environments.values()] == ["GPU-aaa",
                                                                              "GPU-bbb"]
        pipes = [e["CUDA_MPS_PIPE_DIRECTORY"] for e in environments.values()]
        assert len(set(pipes)) == 2 and all(Path(p).is_dir() for p in pipes)
        log = fake_mps.read_text().splitlines()
        logs = [e["CUDA_MPS_LOG_DIRECTORY"] for e in environments.values()]
        assert log == [f"start GPU-aaa {pipes[0]} {logs[0]}", "probe GPU-aaa",
                       f"get_server_list {pipes[0]}", f"start GPU-bbb {pipes[1]} {logs[1]}",
                       "probe GPU-bbb", f"get_server_list {pipes[1]}"]
    assert fake_mps.read_text().splitlines()[-2:] == [f"quit {pipes[0]}", f"quit {pipes[1]}"]
    assert not any(Path(p).exists() for p in pipes)  # the temporary folders are gone
    assert "CUDA MPS on" in capsys.readouterr().out


def test_without_cuda_mps_the_runs_take_turns_and_a_line_says_why(fake_mps, monkeypatch,
                                                                 capsys):
    monkeypatch.setenv("FAKE_START_ERROR", "MPS is not supported on this system")
    with launchers.shared_gpus(["0", "1"], 5) as environments:
        assert environments == {}
    out = capsys.readouterr().out.strip()
    assert out == ("local pool: 5 runs per GPU without CUDA MPS (its daemon did not start: "
                   "MPS is not supported on this system): they take turns on the GPU, which "
                   "is slower")
    assert [line.split()[0] for line in fake_mps.read_text().splitlines()] == ["start"]
    monkeypatch.delenv("FAKE_START_ERROR")
    monkeypatch.setattr(launchers, "MPS_PROBE", ["/nonexistent/python"])  # cannot even start
    with launchers.shared_gpus(["0"], 2) as environments:
        assert environments == {}
    assert "without CUDA MPS (FileNotFoundError" in capsys.readouterr().out
    assert fake_mps.read_text().splitlines()[-1].startswith("quit ")  # its daemon is stopped
    monkeypatch.setenv("PATH", "/nonexistent")
    with launchers.shared_gpus(["0"], 2) as environments:
        assert environments == {}
    assert "nvidia-cuda-mps-control is not on PATH" in capsys.readouterr().out
    with launchers.shared_gpus(["0"], 1) as environments:  # one run per GPU: no MPS at all
        assert environments == {}
    assert capsys.readouterr().out == ""


def test_a_users_own_cuda_mps_daemon_serves_the_runs(fake_mps, monkeypatch, capsys):
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", "/run/my-mps")
    with launchers.shared_gpus(["0"], 4) as environments:
        assert environments == {}
    assert "CUDA MPS daemon at /run/my-mps" in capsys.readouterr().out
    assert not fake_mps.exists()  # nothing was started


def test_a_pool_run_sees_its_gpu_and_its_mps_daemon(monkeypatch):
    import os

    for name in ("CUDA_VISIBLE_DEVICES", "CUDA_MPS_PIPE_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    launchers.pin_gpu("1", {"CUDA_VISIBLE_DEVICES": "GPU-bbb",
                            "CUDA_MPS_PIPE_DIRECTORY": "/tmp/x/pipe"})
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "GPU-bbb"
    assert os.environ["CUDA_MPS_PIPE_DIRECTORY"] == "/tmp/x/pipe"


def test_what_crosses_from_the_cpu_to_the_device_goes_through_pinned_copies(monkeypatch):
    """Every tensor TrainingBatches moves from the CPU to its device goes through
    batches.to_device (pinned memory and a non-blocking copy on a GPU, test_cuda.py): an
    epoch's order drawn on the CPU (shuffle_seed) and the workers' images and labels."""
    import batches

    crossed, real = [], batches.to_device
    monkeypatch.setattr(batches, "to_device",
                        lambda tensor, device: crossed.append(tuple(tensor.shape))
                        or real(tensor, device))
    x, y = torch.randint(0, 256, (40, 32, 32, 3), dtype=torch.uint8), torch.arange(40) % 2
    task = Task(x, y, x[:4], y[:4], x[:4], y[:4], num_classes=2,
                transform=lambda batch, training: batch.float().flatten(1),
                input_shape=(32, 32, 3), image_augment=datasets.FECAM_AUGMENT, shuffle_seed=3)
    stream = batches.TrainingBatches(task, 8, workers=1)
    next(stream)
    next(stream)
    assert crossed == [(40,), (8, 32, 32, 3), (8,), (8, 32, 32, 3), (8,)]
