"""The kernel operations of a training step stay few (bench/count_ops.py counts them).

On a GPU each operation is a kernel launch of a few microseconds; a mask, θ ⊙ m
or drift term computed tensor by tensor costs about 15 of them per target
tensor. The targets of issue 23: ResNet-20 at most 300 per step at its last task
(815 before the masks were flat), ZenkeNet at most 120 (from 261).
"""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def count_ops():
    sys.path.insert(0, str(BENCH))  # count_ops imports train_step
    spec = importlib.util.spec_from_file_location("count_ops", BENCH / "count_ops.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("dataset, part, last_task, most", [
    ("CIFAR100", 0, 9, 300), ("CIFAR100", 1, 9, 120)])
def test_a_step_at_the_last_task_stays_under_its_kernel_count(dataset, part, last_task, most):
    """8-unit hypernetwork layers, batches of 4 (small=True): the same operations."""
    kernels, _ = count_ops().count_step(dataset, part, last_task, small=True)
    assert 0 < sum(kernels.values()) <= most
    assert kernels["aten.tanh"] == 1 and kernels["aten._fused_adam_"] == 1


def test_the_count_takes_the_output_layer_as_a_gpu_computes_it(monkeypatch):
    """On a CPU a large output layer is shared among the cores in threads a dispatch mode
    does not see (output_layer.py); a GPU computes it in one GEMM, and so does the count."""
    import output_layer

    module = count_ops()
    gpu_way = module.count_step("CIFAR100", 1, 9, small=True)[0]
    monkeypatch.setattr(output_layer, "MIN_WEIGHTS", 0)  # every layer shared on a CPU
    assert module.count_step("CIFAR100", 1, 9, small=True)[0] == gpu_way
    assert output_layer.SHARED_ON == {"cpu"}  # restored after counting
