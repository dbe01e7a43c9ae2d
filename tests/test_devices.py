"""Devices without a GPU: the CUDA calls a run makes, checked with mocks of torch.cuda."""

import os
import runpy
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import checkpoints
import datasets
import files
import hypermask
import launchers
import machine

GPU1 = torch.device("cuda", 1)


@pytest.fixture
def restore_backends():
    flags = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision)
    yield
    (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
     torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision) = flags


@pytest.mark.parametrize("tf32, precision", [(False, "ieee"), (True, "tf32")])
def test_use_device_sets_cudnn_and_tf32_explicitly(tf32, precision, restore_backends,
                                                   monkeypatch):
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = True, False
    current = []
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    machine.use_device(GPU1, tf32)
    assert current == [GPU1]  # the pin-memory thread and "cuda" then mean GPU 1
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert torch.backends.cuda.matmul.fp32_precision == precision
    assert torch.backends.cudnn.conv.fp32_precision == precision
    machine.use_device(torch.device("cpu"), tf32)
    assert current == [GPU1]


def test_random_state_is_saved_and_restored_for_the_runs_gpu_only(monkeypatch):
    calls = []

    def refuse(*args):
        raise AssertionError("every GPU's random state was used")

    monkeypatch.setattr(torch.cuda, "get_rng_state_all", refuse)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", refuse)
    monkeypatch.setattr(torch.cuda, "get_rng_state",
                        lambda device="cuda": calls.append(("get", device)) or torch.ones(3))
    monkeypatch.setattr(torch.cuda, "set_rng_state",
                        lambda state, device="cuda": calls.append(("set", device)))
    state = checkpoints.rng_state(GPU1)
    assert torch.equal(state["cuda"], torch.ones(3))
    checkpoints.set_rng_state(state, GPU1)
    assert calls == [("get", GPU1), ("set", GPU1)]
    checkpoints.set_rng_state(state, torch.device("cpu"))  # resumed on a CPU: no GPU generator
    assert "cuda" not in checkpoints.rng_state(torch.device("cpu")) and len(calls) == 2


def test_a_random_state_that_cannot_be_restored_is_a_warning_not_corruption(
        tmp_path, monkeypatch, capsys):
    config = datasets.DEMO["SplitMNIST"]
    torch.manual_seed(0)
    saved = hypermask.build_model(config, (784,), 2)
    path = tmp_path / "checkpoint.pt"
    state = (checkpoints.rng_state(torch.device("cpu"))
             | {"cuda": torch.zeros(16, dtype=torch.uint8)})
    rows = {"next_task": 1, "accuracies": [{"accuracy": 90.0}], "log": [], "transfer": [{}] * 2}
    files.save({**rows, "model": saved.state_dict(), "rng": state}, path)

    def fewer_gpus(state, device="cuda"):
        raise RuntimeError("Invalid device index")

    monkeypatch.setattr(torch.cuda, "set_rng_state", fewer_gpus)
    model = hypermask.build_model(config, (784,), 2)
    checkpoint = checkpoints.load_checkpoint(path, model, GPU1, 2)
    assert checkpoint == rows
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 saved.state_dict().values()))
    out = capsys.readouterr().out
    assert "warning: the random generators of" in out and "Invalid device index" in out


def test_pool_workers_get_the_parents_visible_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert launchers.worker_gpus(3, 2) == ["2", "3", "2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-6f1e, MIG-0a2b")
    assert launchers.worker_gpus(2, 2) == ["GPU-6f1e", "MIG-0a2b"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert launchers.worker_gpus(2, 2) == ["0", "1"]
    assert launchers.worker_gpus(2, 0) == [None, None]
    launchers.pin_gpu("MIG-0a2b")  # monkeypatch restores the variable afterwards
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "MIG-0a2b"


@pytest.mark.parametrize("slurm, share, expected", [
    (None, None, 4),  # every CPU this process may use (not the machine's 64)
    ("2", None, 2),  # inside a SLURM job: its cpus-per-task
    ("16", None, 4),  # never more than the process may use
    ("2", 3, 3),  # the local pool's share (inside a job too)
    (None, 1, 1),
])
def test_the_thread_budget(slurm, share, expected, monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {4, 5, 6, 7})
    if slurm is None:
        monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    else:
        monkeypatch.setenv("SLURM_CPUS_PER_TASK", slurm)
    assert machine.cpu_threads(share) == expected


def test_code_version_is_the_commit_and_says_when_the_modules_differ(tmp_path, monkeypatch):
    """config.json's code_version: which code made a result (another may move last digits)."""
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    shutil.copy(Path(machine.__file__), tmp_path / "machine.py")
    (tmp_path / "README.md").write_text("front page\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    copy = runpy.run_path(str(tmp_path / "machine.py"))["code_version"]
    commit = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "--short=12", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    assert copy() == commit and len(commit) == 12
    (tmp_path / "README.md").write_text("other words\n")  # no module changed
    assert copy.__wrapped__() == commit
    (tmp_path / "new_module.py").write_text("# not committed\n")
    assert copy.__wrapped__() == commit + "+changes"
    (tmp_path / "new_module.py").unlink()
    (tmp_path / "machine.py").write_text("# changed\n", encoding="utf-8")
    assert copy.__wrapped__() == commit + "+changes"
    git("rm", "-q", "--cached", "machine.py")  # the code a copy inside another repository
    assert copy.__wrapped__() is None
    shutil.rmtree(tmp_path / ".git")
    assert copy.__wrapped__() is None  # not a git checkout
