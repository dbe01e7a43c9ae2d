"""The semi-binary mask, the masked network and the regularisers (docs/method.md)."""

import dataclasses
import json
import math

import pandas as pd
import pytest
import torch
from conftest import random_task, semi_binary_masks
from hypnettorch.utils.hnet_regularizer import calc_fix_target_reg, get_current_targets

import datasets
import hypermask
import main

CONFIG = dataclasses.replace(datasets.DEMO["SplitMNIST"], target_hidden_layers=(6,),
                             hnet_hidden_layers=(5,), embedding_size=4, number_of_tasks=4)


def from_scores(scores):
    """Hypernetwork outputs whose |tanh| equals the given scores (to float32's precision)."""
    return torch.atanh(torch.tensor(scores))


@pytest.mark.parametrize("scores, sparsity, kept", [
    # 5 values, p=40: position 0.4*4 = 1.6 -> 0.2 + 0.6*0.1 = 0.26 (lower/nearest would keep 0.2)
    ([0.3, 0.1, 0.5, 0.2, 0.4], 40, [0.3, 0.0, 0.5, 0.0, 0.4]),
    # 4 values, p=50: position 1.5 -> 0.25, halfway between 0.2 and 0.3
    ([0.4, 0.2, 0.1, 0.3], 50, [0.4, 0.0, 0.0, 0.3]),
    # p=25 on 5 values lands exactly on 0.2, which is kept (>=)
    ([0.1, 0.2, 0.3, 0.4, 0.5], 25, [0.0, 0.2, 0.3, 0.4, 0.5]),
    # p=0 keeps everything
    ([0.1, 0.2, 0.3, 0.4, 0.5], 0, [0.1, 0.2, 0.3, 0.4, 0.5]),
])
def test_mask_percentile_with_linear_interpolation(scores, sparsity, kept):
    masks = semi_binary_masks([from_scores(scores), from_scores([0.5])], sparsity)
    assert torch.allclose(masks[0], torch.tensor(kept))


def test_last_tensor_is_never_pruned():
    scores = [0.1, 0.2, 0.3, 0.4, 0.5]
    masks = semi_binary_masks([from_scores(scores), from_scores(scores)], 60)
    assert (masks[0] == 0).sum() == 3
    assert torch.allclose(masks[1], torch.tensor(scores))


def test_mask_keeps_gradient_of_kept_entries_only():
    h = from_scores([0.1, 0.2, 0.3, 0.4]).requires_grad_()
    masks = semi_binary_masks([h, from_scores([0.5])], 50)
    masks[0].sum().backward()
    assert h.grad[2] > 0 and h.grad[3] > 0  # d|tanh h|/dh = 1 - tanh^2 > 0 for h > 0
    assert h.grad[0] == 0 and h.grad[1] == 0  # pruned: 0.1 and 0.2 are below 0.25


def test_sparsity_ramps_over_the_first_task_only():
    config = dataclasses.replace(CONFIG, sparsity=30, adaptive_sparsity=True)
    assert hypermask.current_sparsity(config, 0, 0, 10) == pytest.approx(3)
    assert hypermask.current_sparsity(config, 0, 4, 10) == pytest.approx(15)
    assert hypermask.current_sparsity(config, 0, 9, 10) == pytest.approx(30)
    assert hypermask.current_sparsity(config, 1, 0, 10) == 30
    fixed = dataclasses.replace(config, adaptive_sparsity=False)
    assert hypermask.current_sparsity(fixed, 0, 0, 10) == 30


def test_hnet_outputs_match_target_parameter_shapes():
    model = hypermask.build_model(CONFIG, input_shape=(7,), num_outputs=3)
    masks = model.masks(model.hnet_outputs([2])[0], sparsity=30)
    assert [list(m.shape) for m in masks] == model.target.param_shapes
    assert model.hnet_outputs([0, 1, 2]).shape == (3, sum(model.numels))


def test_all_ones_mask_reproduces_the_unmasked_network():
    model = hypermask.build_model(CONFIG, input_shape=(7,), num_outputs=3)
    x = torch.randn(5, 7)
    ones = torch.ones(sum(model.numels))
    assert torch.allclose(model.target(x, weights=model.masked_weights(ones)), model.target(x))


def test_output_bias_passes_unmasked():
    model = hypermask.build_model(CONFIG, input_shape=(7,), num_outputs=3)
    zeros = torch.zeros(sum(model.numels))
    out = model.target(torch.randn(5, 7), weights=model.masked_weights(zeros))
    assert torch.allclose(out, model.target.internal_params[-1].expand(5, 3))


def perturbed_model_and_targets(task_id):
    torch.manual_seed(0)
    model = hypermask.build_model(CONFIG, input_shape=(7,), num_outputs=3)
    targets = get_current_targets(task_id, model.hnet)
    start = hypermask.task_start(model, task_id)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model, targets, start


def test_output_regulariser_equals_hypnettorch():
    task_id = 3
    model, targets, start = perturbed_model_and_targets(task_id)
    x, y = torch.randn(4, 7), torch.tensor([0, 1, 2, 0])
    terms = hypermask.training_loss(model, x, y, task_id=task_id, num_classes=3, sparsity=0,
                                    start=start, config=CONFIG)
    ours = terms["hnet_term"] * task_id / CONFIG.beta  # undo beta / max(1, t)
    reference = calc_fix_target_reg(model.hnet, task_id, targets=targets)
    assert reference > 0
    assert torch.allclose(ours, reference, rtol=1e-5)
    params = list(model.hnet.parameters())
    ours_grad = torch.autograd.grad(ours, params, allow_unused=True, materialize_grads=True)
    reference_grad = torch.autograd.grad(calc_fix_target_reg(model.hnet, task_id, targets=targets),
                                         params, allow_unused=True, materialize_grads=True)
    for a, b in zip(ours_grad, reference_grad):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("masking", [True, False])
def test_target_regulariser_is_l1_drift_masked_by_current_task(masking):
    task_id = 2
    config = dataclasses.replace(CONFIG, norm_regularizer_masking=masking)
    model, _, start = perturbed_model_and_targets(task_id)
    x, y = torch.randn(4, 7), torch.tensor([0, 1, 2, 0])
    terms = hypermask.training_loss(model, x, y, task_id=task_id, num_classes=3,
                                    sparsity=config.sparsity, start=start, config=config)
    masks = model.masks(model.hnet_outputs([task_id])[0], config.sparsity)
    expected = sum(((p - p0) * (m if masking else 1)).abs().sum() for p, p0, m in
                   zip(model.maskable_params, model.unflatten(start.start_params), masks))
    assert torch.allclose(terms["target_term"], config.lam * expected)


def test_first_task_has_no_regularisers():
    model = hypermask.build_model(CONFIG, input_shape=(7,), num_outputs=3)
    start = hypermask.task_start(model, 0)
    terms = hypermask.training_loss(model, torch.randn(4, 7), torch.tensor([0, 1, 2, 0]),
                                    task_id=0, num_classes=3, sparsity=0, start=start,
                                    config=CONFIG)
    assert terms["hnet_term"] == 0 and terms["target_term"] == 0
    assert torch.allclose(terms["loss"], terms["task_loss"])


# ------------------------------------------- the previous, per-tensor implementation


def masks_one_quantile_per_tensor(hnet_output, sparsity):
    """The specification of semi_binary_mask, whose bits it must give: a loop over the
    tensors, one torch.quantile each (as before the masks were flat)."""
    masks = []
    prune = isinstance(sparsity, torch.Tensor) or sparsity > 0
    for l, h in enumerate(hnet_output):
        r = torch.tanh(h).abs()
        if prune and l < len(hnet_output) - 1:
            q = sparsity / 100
            q = q.to(r.dtype) if isinstance(q, torch.Tensor) else q
            threshold = torch.quantile(r.flatten(), q)
            r = torch.where(r >= threshold, r, torch.zeros_like(r))
        masks.append(r)
    return masks


def loss_one_tensor_at_a_time(model, x, y, *, task_id, num_classes, sparsity, start, config):
    """training_loss as it was before the masks were flat: masks, θ ⊙ m and the drift
    term in a loop over the masked tensors (the hypernetwork call is the model's own)."""
    previous, current = model.hnet_outputs(list(range(task_id + 1))).split([task_id, 1])
    masks = masks_one_quantile_per_tensor(model.unflatten(current[0]), sparsity)
    weights = list(model.target.internal_params)
    for i, m in zip(model.maskable[:-1], masks[:-1]):
        weights[i] = weights[i] * m
    logits = model.target(x, weights=weights)
    task_loss = torch.nn.functional.cross_entropy(logits[:, :num_classes], y)
    hnet_reg = torch.nn.functional.mse_loss(previous, start.hnet_targets,
                                            reduction="sum") / task_id
    drifts = [p - p0 for p, p0 in zip(model.maskable_params,
                                      model.unflatten(start.start_params))]
    if config.norm_regularizer_masking:
        drifts = [d * m for d, m in zip(drifts, masks)]
    target_reg = sum(d.abs().sum() for d in drifts)
    hnet_term = config.beta * hnet_reg / max(1, task_id)
    target_term = config.lam * target_reg
    return dict(loss=task_loss + hnet_term + target_term, task_loss=task_loss,
                hnet_term=hnet_term, target_term=target_term)


SCORE_SIZES = [1, 2, 3, 5, 7, 16, 17, 31, 33, 100, 257, 1000, 4099, 3]


def scores_with_ties(seed):
    """Hypernetwork outputs of many sizes: spread, saturated (|tanh| = 1 exactly), repeated
    values and exact zeros, so that thresholds fall on ties and between equal neighbours."""
    generator = torch.Generator().manual_seed(seed)
    outputs = []
    for size in SCORE_SIZES:
        h = torch.randn(size, generator=generator) * (20 if size % 2 else 1)
        if size > 30:
            h[: size // 3] = torch.round(h[: size // 3] * 4) / 4  # ties, zeros among them
        outputs.append(h)
    return outputs


RAMP = [30 * (i + 1) / 2000 for i in range(0, 2000, 333)]


@pytest.fixture(params=["one sort", "quantile per tensor"])
def thresholds(request, monkeypatch):
    """Both ways to the thresholds: one sort (GPUs) and torch.quantile per tensor (CPUs)."""
    devices = {"cpu"} if request.param == "quantile per tensor" else set()
    monkeypatch.setattr(hypermask, "QUANTILE_PER_TENSOR_ON", devices)
    return request.param


@pytest.mark.parametrize("seed", [0, 1])
def test_masks_are_bitwise_those_of_one_quantile_per_tensor(seed, thresholds):
    outputs = scores_with_ties(seed)
    for sparsity in RAMP + [0.0, 0.5, 12.5, 29.999, 50.0, 70.0, 99.5, 100.0]:
        for p in (sparsity, torch.tensor(sparsity, dtype=torch.float64)):
            ours = semi_binary_masks(outputs, p)
            reference = masks_one_quantile_per_tensor(outputs, p)
            for ours_mask, reference_mask in zip(ours, reference):
                assert torch.equal(ours_mask, reference_mask), sparsity


@pytest.mark.parametrize("sparsity", [0.5, 30.0, 50.0, 90.0])
def test_one_sort_thresholds_are_quantiles_within_ulps(sparsity):
    """segment_quantiles against torch.quantile per tensor, on ResNet-20-like sizes: within
    4 float32 ulps, the rounding of the interpolation, which the CPU's quantile does its
    own way (docs/performance.md); a wrong rank or order would be off by the gap between
    two sorted scores instead."""
    sizes = [432, 16, 2304, 16, 4608, 32, 9216, 32, 18432, 64, 36864, 64, 640, 10, 7, 3]
    scores = torch.tanh(torch.randn(sum(sizes), generator=torch.Generator().manual_seed(0)))
    scores = scores.abs()
    ours = hypermask.segment_quantiles(scores, sparsity / 100, hypermask.pruned_segments(sizes))
    reference = torch.stack([torch.quantile(v, sparsity / 100) for v in scores.split(sizes)])
    # positive floats order like their bits: the difference of the bits counts the ulps
    ulps = (ours.view(torch.int32) - reference.view(torch.int32)).abs()
    assert ulps.max() <= 4, ulps


def test_a_nan_output_prunes_its_tensor_as_quantile_does(thresholds):
    """torch.quantile of a tensor holding a NaN is NaN: nothing of it is kept (and the
    loss, NaN, stops the run); the last tensor is never pruned, NaN included."""
    outputs = scores_with_ties(0)
    outputs[9][0] = outputs[-1][1] = float("nan")  # 100 entries; the last tensor
    ours = semi_binary_masks(outputs, 30)
    assert (ours[9] == 0).all() and (ours[8] > 0).any() and ours[-1][1].isnan()
    for ours_mask, reference_mask in zip(ours, masks_one_quantile_per_tensor(outputs, 30)):
        torch.testing.assert_close(ours_mask, reference_mask, rtol=0, atol=0, equal_nan=True)


def target_network_case(name):
    """A small configuration of each target network: (config, input shape, classes)."""
    if name in ("MLP", "chunked MLP"):
        chunks = dict(chunk_size=7, chunk_embedding_size=3) if name == "chunked MLP" else {}
        return dataclasses.replace(CONFIG, **chunks), (7,), 3
    dataset, part, shape, classes = {
        # ResNet-20 takes any image size: 8x8 keeps the test fast (same tensors)
        "ResNet-20": ("CIFAR100", 0, (8, 8, 3), 10), "ZenkeNet": ("CIFAR100", 1, (32, 32, 3), 10),
        "ZenkeNet-tiny": ("TinyImageNet", 1, (64, 64, 3), 5)}[name]
    config = dataclasses.replace(datasets.get_benchmark(dataset, part).best,
                                 hnet_hidden_layers=(3,), number_of_tasks=4)
    return config, shape, classes


def loss_and_gradients(loss_function, model, x, y, **arguments):
    """The loss terms and every parameter's gradient (None where a parameter got none)."""
    model.zero_grad(set_to_none=True)
    terms = loss_function(model, x, y, **arguments)
    terms["loss"].backward()
    return terms, [None if p.grad is None else p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("network", ["MLP", "chunked MLP", "ResNet-20", "ZenkeNet",
                                     "ZenkeNet-tiny"])
@pytest.mark.parametrize("sparsity, masking", [(0, False), (30, True)])
def test_flat_masks_give_the_gradients_of_one_tensor_at_a_time(network, sparsity, masking,
                                                               monkeypatch):
    """Every gradient bit for bit as the per-tensor loop gave it, so training is unchanged.

    Only the drift term's value may differ: one float32 sum over all entries instead of
    a sum of per-tensor sums, the same non-negative terms added in another order. Each
    order is within about log2(n)·2⁻²⁴ of the exact sum (torch sums in a cascade), so
    both are held to 2⁻¹⁹ of the float64 sum of the same float32 terms.
    """
    config, shape, classes = target_network_case(network)
    config = dataclasses.replace(config, sparsity=sparsity, norm_regularizer_masking=masking)
    monkeypatch.setattr(hypermask, "QUANTILE_PER_TENSOR_ON", set())  # as on a GPU: one sort
    task_id = 3
    torch.manual_seed(0)
    model = hypermask.build_model(config, shape, classes)
    start = hypermask.task_start(model, task_id)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x, y = torch.rand(4, math.prod(shape)), torch.arange(4) % classes
    arguments = dict(task_id=task_id, num_classes=classes, sparsity=sparsity, start=start,
                     config=config)
    torch.manual_seed(1)  # ZenkeNet's dropout draws the same masks in both
    ours, our_grads = loss_and_gradients(hypermask.training_loss, model, x, y, **arguments)
    torch.manual_seed(1)
    before, before_grads = loss_and_gradients(loss_one_tensor_at_a_time, model, x, y,
                                              **arguments)
    assert ours["hnet_term"] > 0 and ours["target_term"] > 0
    assert torch.equal(ours["task_loss"], before["task_loss"])
    assert torch.equal(ours["hnet_term"], before["hnet_term"])
    with torch.no_grad():
        mask = model.mask(model.hnet_outputs([task_id])[0], sparsity)
        terms = (model.flat_params() - start.start_params) * (mask if masking else 1)
        exact = config.lam * terms.abs().double().sum()
    for value in (ours["target_term"], before["target_term"]):
        assert abs(value.double() - exact) <= 2**-19 * exact
    assert abs(ours["loss"] - before["loss"]) <= 2**-18 * before["loss"]
    assert len(our_grads) == len(before_grads)
    for ours_grad, before_grad in zip(our_grads, before_grads):
        assert (ours_grad is None) == (before_grad is None)
        assert ours_grad is None or torch.equal(ours_grad, before_grad)


def test_the_mask_of_a_model_is_the_per_tensor_masks_flat(thresholds):
    config, shape, classes = target_network_case("ZenkeNet-tiny")
    model = hypermask.build_model(config, shape, classes)
    output = model.hnet_outputs([1])[0]
    flat = model.mask(output, 50)
    reference = masks_one_quantile_per_tensor(model.unflatten(output), 50)
    assert torch.equal(flat, torch.cat([m.flatten() for m in reference]))
    assert (flat[:-model.numels[-1]] == 0).float().mean() == pytest.approx(0.5, abs=0.01)


def test_a_checkpoint_with_one_start_tensor_per_masked_tensor_resumes():
    """Checkpoints written before θ^start was flat hold a list of tensors: still resumable."""
    model = hypermask.build_model(CONFIG, (7,), 3)
    task = random_task(7, 3)
    state = hypermask.training_state(model, task, 1, CONFIG)
    next(state.batches)  # a task in progress
    saved = state.state_dict()
    assert tuple(saved) == hypermask.TrainingState.SAVED  # what a checkpoint's check requires
    assert saved["start_params"].shape == (sum(model.numels),)
    saved["start_params"] = [p.clone() for p in model.unflatten(saved["start_params"])]
    resumed = hypermask.training_state(model, task, 1, CONFIG, saved)
    assert torch.equal(resumed.start.start_params, state.start.start_params)


# ------------------------------------------------------- the output layer as W·hᵀ


def test_a_chunked_hypernetwork_masks_and_learns(mnist_root, tmp_path):
    """chunk_size: a ChunkedHMLP gives masks shaped like the target's tensors and trains."""
    from hypnettorch.hnets import ChunkedHMLP

    config = dataclasses.replace(CONFIG, chunk_size=7, chunk_embedding_size=3)
    model = hypermask.build_model(config, (784,), 2)
    assert isinstance(model.hnet, ChunkedHMLP)
    masks = model.masks(model.hnet_outputs([0])[0], 30)
    assert [m.shape for m in masks] == [p.shape for p in model.maskable_params]
    assert main.main([f"--path_to_datasets={mnist_root}", f"--results_dir={tmp_path}",
                      "--dataset=SplitMNIST", "--seeds=[1]", "--number_of_tasks=2",
                      "--number_of_iterations=150", "--target_hidden_layers=[20]",
                      "--hnet_hidden_layers=[10]", "--chunk_size=500", "--validation_size=10",
                      "--batch_size=32", "--device=cpu"]) == 0
    run = tmp_path / "SplitMNIST_part0_best" / "seed_1"
    assert json.loads((run / "config.json").read_text())["chunk_size"] == 500
    accuracies = pd.read_csv(run / "accuracies.csv")
    learnt = accuracies.query("trained_task == evaluated_task")["accuracy"]  # just after each
    assert len(learnt) == 2 and (learnt > 75).all()  # chance is 50 %


def test_a_target_network_without_an_output_bias_is_refused():
    from hypnettorch.hnets import HMLP
    from hypnettorch.mnets import MLP

    target = MLP(n_in=4, n_out=2, hidden_layers=(3,), use_bias=False, no_weights=True)
    hnet = HMLP(target.param_shapes, uncond_in_size=0, cond_in_size=2, layers=(5,),
                num_cond_embs=1)
    with pytest.raises(ValueError, match=r"last tensor is \(2, 3\), not the output bias"):
        hypermask.HyperMask(target, hnet)


def test_outputs_that_overflow_from_finite_weights_are_divergence_not_an_accuracy():
    """argmax over NaN logits picks class 0: a chance-looking number that is none."""
    config = dataclasses.replace(datasets.DEMO["SplitMNIST"], target_hidden_layers=(8,),
                                 hnet_hidden_layers=(4,), embedding_size=2)
    torch.manual_seed(0)
    model = hypermask.build_model(config, (5,), 2)
    task = random_task(5, 2)
    assert 0 <= hypermask.evaluate(model, task, 0, sparsity=0) <= 100
    with torch.no_grad():  # finite, and too large for float32 once summed over the inputs
        for weight in model.target.internal_params:
            weight.fill_(3e38)
    with pytest.raises(hypermask.Diverged, match="task 1's network gives NaN or infinite "
                                                 "outputs on the test images"):
        hypermask.evaluate(model, task, 0, sparsity=0)


def test_a_nan_hypernetwork_is_divergence_although_its_masks_are_finite():
    """A NaN score falls below every threshold: its mask entry is 0, the network is its output
    bias, and loss and accuracy look like numbers (the audit's case: sparsity 30)."""
    config = dataclasses.replace(datasets.DEMO["SplitMNIST"], target_hidden_layers=(8,),
                                 hnet_hidden_layers=(4,), embedding_size=2)
    torch.manual_seed(0)
    model = hypermask.build_model(config, (5,), 2)
    task = random_task(5, 2)
    with torch.no_grad():
        for weight in model.hnet.parameters():
            weight.fill_(float("nan"))
    weights = model.masked_weights(model.mask(model.hnet_outputs([0])[0], 30.0))
    assert all(torch.isfinite(weight).all() for weight in weights)
    with pytest.raises(hypermask.Diverged, match="^task 1's hypernetwork gives NaN or infinite "
                                                 "outputs$"):
        hypermask.evaluate(model, task, 0, sparsity=30.0, split="val")
