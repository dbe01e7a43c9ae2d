"""The hypernetwork's output layer with W's rows shared among the CPU's cores.

The shared layer adds the same products as torch's GEMM in another order, so its
numbers may differ in the last digits. The tests hold them to float32 rounding:
every entry of y = h·Wᵀ + b, ∂h = ∂y·W and ∂W = ∂yᵀ·h is a sum of k products, and any
float32 summation order lies within γ_k·Σ|terms| of the exact sum (Higham's bound,
γ_k = k·u / (1 − k·u), u = 2⁻²⁴); torch's own GEMM is held to the same bound.
"""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

import datasets
import hypermask
import machine
import output_layer
from conftest import config_for, same_results

U = 2.0**-24


def gamma(k: int) -> float:
    return k * U / (1 - k * U)


def layer_and_gradients(linear, h, weight, bias, grad_y):
    """y and (∂h, ∂W, ∂b) of linear(h, weight, bias) for the upstream gradient grad_y."""
    inputs = [t.detach().clone().requires_grad_() for t in (h, weight, bias)]
    y = linear(*inputs)
    y.backward(grad_y)
    return y.detach(), [t.grad for t in inputs]


def assert_within_rounding(value, exact, magnitude, k):
    """|value − exact| ≤ γ_(k+1)·magnitude entry by entry (+1: a bias or partial sum)."""
    bound = gamma(k + 1) * magnitude
    excess = (value.double() - exact).abs() - bound
    assert excess.max() <= 0, f"off by up to {excess.max():.3g} beyond float32 rounding"


@pytest.mark.parametrize("rows", [1, 4])
def test_the_shared_layer_is_the_linear_layer_to_float32_rounding(rows):
    # More outputs than two cores' shares of whole blocks: partial blocks at both ends.
    outputs, hidden = 3 * output_layer.BLOCK_ROWS + 17, 30
    torch.manual_seed(0)
    h, weight, bias = torch.randn(rows, hidden), torch.randn(outputs, hidden), torch.randn(outputs)
    grad_y = torch.randn(rows, outputs)
    exact_y, exact = layer_and_gradients(F.linear, *(t.double() for t in (h, weight, bias,
                                                                          grad_y)))
    magnitude_y = F.linear(h.abs().double(), weight.abs().double(), bias.abs().double())
    magnitude = [grad_y.abs().double() @ weight.abs().double(),  # ∂h: sums over the outputs
                 grad_y.abs().double().T @ h.abs().double(),  # ∂W: sums over the rows
                 grad_y.abs().double().sum(0)]  # ∂b
    terms = [outputs, rows, rows]
    for linear in (F.linear, output_layer.SharedLinear.apply):
        y, grads = layer_and_gradients(linear, h, weight, bias, grad_y)
        assert_within_rounding(y, exact_y, magnitude_y, hidden)
        for grad, exact_grad, size, k in zip(grads, exact, magnitude, terms):
            assert_within_rounding(grad, exact_grad, size, k)


def test_only_the_gradients_asked_for_are_computed():
    """Frozen embeddings (h without a gradient): ∂W and ∂b as when ∂h is computed too."""
    torch.manual_seed(0)
    h, weight, bias = torch.randn(3, 20), torch.randn(output_layer.BLOCK_ROWS + 5, 20), \
        torch.randn(output_layer.BLOCK_ROWS + 5)
    grad_y = torch.randn(3, weight.shape[0])
    _, (grad_h, grad_weight, grad_bias) = layer_and_gradients(
        output_layer.SharedLinear.apply, h, weight, bias, grad_y)
    weight, bias = weight.clone().requires_grad_(), bias.clone().requires_grad_()
    output_layer.SharedLinear.apply(h, weight, bias).backward(grad_y)
    assert torch.equal(weight.grad, grad_weight) and torch.equal(bias.grad, grad_bias)


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_the_shared_layer_runs_without_autograd_as_the_caller_does(mode):
    """Evaluation under no_grad or inference_mode: the worker threads, whose autograd
    modes are their own, write into the caller's output."""
    h, weight, bias = torch.randn(2, 3), torch.randn(10, 3), torch.randn(10)
    with mode():
        y = output_layer.SharedLinear.apply(h, weight, bias)
    torch.testing.assert_close(y, F.linear(h, weight, bias))


def test_the_cores_leave_the_callers_thread_count():
    threads = torch.get_num_threads()
    output_layer.SharedLinear.apply(torch.ones(2, 3), torch.ones(10, 3), torch.ones(10))
    assert torch.get_num_threads() == threads
    assert output_layer.workers(threads).submit(torch.get_num_threads).result() == 1


def test_only_large_plain_hypernetworks_on_a_cpu_share_their_output_layer():
    def applies(config) -> bool:
        return output_layer.applies(hypermask.build_model(config, (28, 28), 10).hnet)

    large = config_for("SplitMNIST", 0, hnet_hidden_layers=(100,))  # 475,202 × 100 weights
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)  # as on any machine with two cores or more
        assert applies(large)
        assert not applies(dataclasses.replace(large, chunk_size=1000))
        assert not applies(config_for("SplitMNIST", 0))  # 475,202 × 25: faster unshared
        # the demo's networks keep hypnettorch's layer, hence their numbers bit for bit
        assert not any(applies(config) for config in datasets.DEMO.values())
        torch.set_num_threads(1)
        assert not applies(large)  # one thread: nothing to share the rows with
    finally:
        torch.set_num_threads(threads)


def test_a_step_with_the_shared_layer_gives_the_loss_and_gradients_to_rounding(monkeypatch):
    """The whole training loss through hnet_outputs, against hypnettorch's HMLP forward.

    Both float32 paths are compared with the float64 computation: each gradient
    tensor of the shared path is within 2⁻¹⁸ of its largest float64 entry, a bound
    the hypnettorch path meets as well (float32 rounding of sums of a few hundred
    terms, far below any change a wrong block would make).
    """
    monkeypatch.setattr(output_layer, "MIN_WEIGHTS", 0)
    config = config_for("SplitMNIST", 0, target_hidden_layers=(20,), hnet_hidden_layers=(8,),
                        sparsity=0)
    task_id, classes = 3, 2
    torch.manual_seed(0)
    model = hypermask.build_model(config, (784,), classes)
    start = hypermask.task_start(model, task_id)
    with torch.no_grad():  # away from the start, so that both regularisers count
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x, y = torch.rand(16, 784), torch.arange(16) % classes

    def loss_and_gradients(model, x, start, shared: bool):
        monkeypatch.setattr(output_layer, "applies", lambda hnet: shared)
        model.zero_grad(set_to_none=True)
        terms = hypermask.training_loss(model, x, y, task_id=task_id, num_classes=classes,
                                        sparsity=0, start=start, config=config)
        terms["loss"].backward()
        return terms["loss"].item(), [p.grad for p in model.parameters()]

    shared = loss_and_gradients(model, x, start, True)
    hypnettorch = loss_and_gradients(model, x, start, False)
    model64 = model.double()
    start64 = hypermask.TaskStart(start.hnet_targets.double(), start.start_params.double())
    exact = loss_and_gradients(model64, x.double(), start64, False)
    for loss, grads in (shared, hypnettorch):
        assert math.isclose(loss, exact[0], rel_tol=2**-18)
        assert [g is None for g in grads] == [g is None for g in exact[1]]
        for grad, exact_grad in zip(grads, exact[1]):
            if grad is None:  # a later task's embedding
                continue
            scale = exact_grad.abs().max().item()
            assert (grad.double() - exact_grad).abs().max() <= 2**-18 * scale


def test_hnet_outputs_are_hypnettorchs_to_rounding(monkeypatch):
    monkeypatch.setattr(output_layer, "MIN_WEIGHTS", 0)
    config = dataclasses.replace(config_for("SplitMNIST", 0), target_hidden_layers=(20,))
    model = hypermask.build_model(config, (784,), 2)
    assert output_layer.applies(model.hnet)
    ids = [0, 2, 4]
    ours = model.hnet_outputs(ids)
    theirs = model.hnet(cond_id=ids, ret_format="flattened")
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, rtol=2**-20, atol=2**-20)


def test_a_run_with_the_shared_layer_resumes_to_the_uninterrupted_results(
        mnist_root, tmp_path, monkeypatch):
    """The whole pipeline (training, evaluation, checkpoints) with the shared layer: an
    interrupted run resumes to the files of the uninterrupted one, byte for byte."""
    from test_resume import interrupt_at_task, run

    monkeypatch.setattr(machine, "cpu_threads", lambda share=None: 2)  # a 1-CPU machine too
    calls = []

    def counted(hnet, task_ids):
        calls.append(len(task_ids))
        return hmlp_outputs(hnet, task_ids)

    hmlp_outputs = output_layer.hmlp_outputs
    monkeypatch.setattr(output_layer, "MIN_WEIGHTS", 0)  # the tiny hypernetwork shares too
    monkeypatch.setattr(output_layer, "hmlp_outputs", counted)
    assert run(mnist_root, tmp_path / "whole") == 0
    assert calls  # the run computed its hypernetwork's outputs through the shared layer
    with monkeypatch.context() as cut:
        interrupt_at_task(cut, 2)
        assert run(mnist_root, tmp_path / "cut") == 130
    assert run(mnist_root, tmp_path / "cut") == 0
    same_results(*(tmp_path / name / "SplitMNIST_part0_best" / "seed_3" for name in
                   ("cut", "whole")))
