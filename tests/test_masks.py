"""The semi-binary mask, the masked network and the regularisers (SPEC §2-3)."""

import dataclasses
import json

import pandas as pd
import pytest
import torch
from hypnettorch.utils.hnet_regularizer import calc_fix_target_reg, get_current_targets

import datasets
import hypermask
import main

CONFIG = dataclasses.replace(datasets.DEMO["SplitMNIST"], target_hidden_layers=(6,),
                             hnet_hidden_layers=(5,), embedding_size=4, number_of_tasks=4)


def from_scores(scores):
    """Hypernetwork outputs whose |tanh| equals the given scores."""
    return torch.atanh(torch.tensor(scores, dtype=torch.float64))


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
    masks = hypermask.semi_binary_masks([from_scores(scores), from_scores([0.5])], sparsity)
    assert torch.allclose(masks[0], torch.tensor(kept, dtype=torch.float64))


def test_last_tensor_is_never_pruned():
    scores = [0.1, 0.2, 0.3, 0.4, 0.5]
    masks = hypermask.semi_binary_masks([from_scores(scores), from_scores(scores)], 60)
    assert (masks[0] == 0).sum() == 3
    assert torch.allclose(masks[1], torch.tensor(scores, dtype=torch.float64))


def test_mask_keeps_gradient_of_kept_entries_only():
    h = from_scores([0.1, 0.2, 0.3, 0.4]).requires_grad_()
    masks = hypermask.semi_binary_masks([h, from_scores([0.5])], 50)
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
    ones = [torch.ones(s) for s in model.target.param_shapes]
    assert torch.allclose(model.target(x, weights=model.masked_weights(ones)), model.target(x))


def test_output_bias_passes_unmasked():
    model = hypermask.build_model(CONFIG, input_shape=(7,), num_outputs=3)
    zeros = [torch.zeros(s) for s in model.target.param_shapes]
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


@pytest.mark.parametrize("batched", [True, False])
def test_output_regulariser_equals_hypnettorch(batched):
    task_id = 3
    model, targets, start = perturbed_model_and_targets(task_id)
    x, y = torch.randn(4, 7), torch.tensor([0, 1, 2, 0])
    terms = hypermask.training_loss(model, x, y, task_id=task_id, num_classes=3, sparsity=0,
                                    start=start, config=CONFIG, batched=batched)
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
    expected = sum(((p - p0) * (m if masking else 1)).abs().sum()
                   for p, p0, m in zip(model.maskable_params, start.start_params, masks))
    assert torch.allclose(terms["target_term"], config.lam * expected)


def test_first_task_has_no_regularisers():
    model = hypermask.build_model(CONFIG, input_shape=(7,), num_outputs=3)
    start = hypermask.task_start(model, 0)
    terms = hypermask.training_loss(model, torch.randn(4, 7), torch.tensor([0, 1, 2, 0]),
                                    task_id=0, num_classes=3, sparsity=0, start=start,
                                    config=CONFIG)
    assert terms["hnet_term"] == 0 and terms["target_term"] == 0
    assert torch.allclose(terms["loss"], terms["task_loss"])


def loss_as_first_written(model, x, y, *, task_id, num_classes, sparsity, start, config):
    """The training loss exactly as it was computed before the step was sped up: two views
    of the hypernetwork outputs and the squared differences through sub/pow/sum."""
    outputs = model.hnet_outputs(list(range(task_id + 1)))
    masks = model.masks(outputs[-1], sparsity)
    logits = model.target(x, weights=model.masked_weights(masks))
    task_loss = torch.nn.functional.cross_entropy(logits[:, :num_classes], y)
    hnet_reg = (outputs[:-1] - start.hnet_targets).pow(2).sum() / task_id
    drifts = [(p - p0) * m for p, p0, m in zip(model.maskable_params, start.start_params, masks)]
    target_reg = sum(d.abs().sum() for d in drifts)
    hnet_term = config.beta * hnet_reg / max(1, task_id)
    target_term = config.lam * target_reg
    return dict(loss=task_loss + hnet_term + target_term, task_loss=task_loss,
                hnet_term=hnet_term, target_term=target_term)


@pytest.mark.parametrize("sparsity", [0, 30])
def test_loss_and_gradients_are_bitwise_those_of_the_first_implementation(sparsity):
    task_id = 3
    model, _, start = perturbed_model_and_targets(task_id)
    x, y = torch.randn(16, 7), torch.randint(0, 3, (16,))
    arguments = dict(task_id=task_id, num_classes=3, sparsity=sparsity, start=start,
                     config=CONFIG)
    results = []
    for loss_function in (hypermask.training_loss, loss_as_first_written):
        model.zero_grad(set_to_none=True)
        terms = loss_function(model, x, y, **arguments)
        terms["loss"].backward()
        results.append((terms, [p.grad.clone() for p in model.parameters()]))
    (ours, our_grads), (first, first_grads) = results
    assert ours["hnet_term"] > 0 and ours["target_term"] > 0
    for name in ours:
        assert torch.equal(ours[name], first[name]), name
    assert len(our_grads) == len(first_grads)
    for ours_grad, first_grad in zip(our_grads, first_grads):
        assert torch.equal(ours_grad, first_grad)


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
