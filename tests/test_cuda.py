"""What only a GPU can show: no host syncs, the run's own device, repeatable runs.

Skipped without CUDA (tests/conftest.py). `python -m pytest -q -m cuda` runs these only.
"""

import dataclasses
import warnings

import pandas as pd
import pytest
import torch

import checkpoints
import datasets
import hypermask
import main
import machine

pytestmark = pytest.mark.cuda
GPU = torch.device("cuda")


def host_syncs(function) -> list[str]:
    """Where `function` synchronised with the host (torch.cuda's sync debug mode)."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            function()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    # the sync debugger's own words; setting its mode also warns ("a prototype feature
    # [that does not] detect all synchronizing operations"), which is no sync
    return [f"{w.filename}:{w.lineno}" for w in caught
            if "called a synchronizing CUDA operation" in str(w.message)]


def test_a_resnet_forward_and_backward_never_wait_for_the_gpu():
    config = dataclasses.replace(datasets.get_benchmark("CIFAR100", 0).best,
                                 hnet_hidden_layers=(2,))
    model = hypermask.build_model(config, (32, 32, 3), 10).to(GPU)
    x = torch.rand(8, 32 * 32 * 3, device=GPU)

    def step():
        weights = [w.detach().requires_grad_() for w in model.task_weights(0, 30)]
        model.target(x, weights=weights).sum().backward()

    step()  # warm-up: cuDNN handles and kernels are set up once
    assert host_syncs(step) == []


@pytest.mark.parametrize("augment", [None, "crop_flip"])
def test_the_image_transform_never_waits_for_the_gpu(augment):
    transform = datasets.image_transform(datasets.IMAGENET_MEAN, datasets.IMAGENET_STD, augment)
    x = torch.randint(0, 256, (32, 32, 32, 3), dtype=torch.uint8, device=GPU)
    transform(x, True)  # the first batch copies mean and std to the GPU
    assert host_syncs(lambda: (transform(x, True), transform(x, False))) == []


def test_the_runs_own_gpu_random_state_round_trips():
    device = torch.device("cuda", torch.cuda.device_count() - 1)
    state = checkpoints.rng_state(device)
    first = torch.rand(4, device=device)
    checkpoints.set_rng_state(state, device)
    assert torch.equal(torch.rand(4, device=device), first)


RUNS = {"SplitMNIST": ["--dataset=SplitMNIST", "--number_of_iterations=30",
                       "--target_hidden_layers=[16]", "--hnet_hidden_layers=[4]",
                       "--validation_size=10", "--batch_size=32"],
        "ResNet-20": ["--dataset=CIFAR100", "--part=0", "--number_of_epochs=2",
                      "--hnet_hidden_layers=[4]", "--validation_size=10", "--batch_size=8"],
        "ZenkeNet": ["--dataset=CIFAR100", "--part=1", "--number_of_epochs=2",
                     "--hnet_hidden_layers=[4]", "--validation_size=10", "--batch_size=8"]}


@pytest.mark.parametrize("network", list(RUNS))
def test_a_gpu_run_repeats_bit_for_bit_and_saves_cpu_weights(network, mnist_root, cifar_root,
                                                             tmp_path):
    root = mnist_root if network == "SplitMNIST" else cifar_root
    results = []
    for attempt in ("a", "b"):
        assert main.main([*RUNS[network], "--seeds=[1]", "--number_of_tasks=2",
                          "--device=cuda", f"--path_to_datasets={root}",
                          f"--results_dir={tmp_path / attempt}"]) == 0
        run_dir = next((tmp_path / attempt).glob("*/seed_1"))
        results.append([pd.read_csv(run_dir / name) for name in
                        ("accuracies.csv", "transfer.csv", "task_agnostic.csv")])
        results[-1].append(pd.read_csv(run_dir / "training_log.csv").drop(columns="seconds"))
    for first, second in zip(*results):
        pd.testing.assert_frame_equal(first, second, check_exact=True)
    weights = torch.load(run_dir / "final_weights.pt", weights_only=True)  # no map_location
    assert all(t.device.type == "cpu" for part in weights.values() for t in part.values())


# ------------------------------------------------------------------ captured steps

def train_one_task(make_step, *, sparsity=30, epochs=3, lower_lr_at=None):
    """A ZenkeNet task trained with a step maker: (terms per step, final parameters).

    120 training images in batches of 16: every epoch ends on a smaller (8)
    batch; the first task ramps the sparsity; `lower_lr_at` lowers the learning
    rate after that step, as the plateau scheduler does.
    """
    config = dataclasses.replace(datasets.get_benchmark("CIFAR100", 1).best,
                                 hnet_hidden_layers=(8,), sparsity=sparsity, batch_size=16,
                                 number_of_epochs=epochs)
    torch.manual_seed(0)
    model = hypermask.build_model(config, (32, 32, 3), 10).to(GPU)
    optimizer = hypermask.make_optimizer(model, config,
                                         capturable=getattr(make_step, "capturable", False))
    start = hypermask.task_start(model, 0)
    step = make_step(model, optimizer, start, task_id=0, num_classes=10, config=config)
    generator = torch.Generator(device=GPU).manual_seed(1)
    images = torch.rand(120, 32 * 32 * 3, device=GPU, generator=generator)
    labels = torch.randint(0, 10, (120,), device=GPU, generator=generator)
    losses, total = [], epochs * 8
    for i in range(total):
        index = torch.arange(16 * (i % 8), min(120, 16 * (i % 8) + 16), device=GPU)
        terms = step(images[index], labels[index],
                     hypermask.current_sparsity(config, 0, i, total))
        losses.append(terms["loss"].detach().clone())
        if i == lower_lr_at:
            optimizer.param_groups[0]["lr"] *= 0.1
    return torch.stack(losses), [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("sparsity", [0, 30])
def test_a_captured_step_trains_exactly_as_the_eager_one(sparsity):
    import capture

    eager = train_one_task(hypermask.eager_step, sparsity=sparsity, lower_lr_at=11)
    graphed = train_one_task(capture.graphed_step, sparsity=sparsity, lower_lr_at=11)
    assert torch.equal(eager[0], graphed[0])
    assert all(torch.equal(a, b) for a, b in zip(eager[1], graphed[1]))


def test_a_captured_step_is_one_graph_replay_without_host_syncs():
    import capture

    config = dataclasses.replace(datasets.get_benchmark("SplitMNIST", 0).best,
                                 target_hidden_layers=(64,), hnet_hidden_layers=(8,))
    model = hypermask.build_model(config, (784,), 2).to(GPU)
    optimizer = hypermask.make_optimizer(model, config, capturable=True)
    step = capture.graphed_step(model, optimizer, hypermask.task_start(model, 1), task_id=1,
                                num_classes=2, config=config)
    x, y = torch.rand(128, 784, device=GPU), torch.randint(0, 2, (128,), device=GPU)
    for _ in range(capture.WARMUP_STEPS + 1):
        step(x, y, 30.0)
    assert step.graph is not None
    assert host_syncs(lambda: step(x, y, 30.0)) == []


def test_loss_masks_and_gradients_on_the_gpu_equal_the_cpus():
    """Same weights, same batch: CUDA (fp32, no TF32) against the CPU: loss terms and
    masks within 1e-4 relative, gradients as rounding allows (below)."""
    config = dataclasses.replace(datasets.get_benchmark("CIFAR100", 0).best,
                                 hnet_hidden_layers=(8,), sparsity=30)
    torch.manual_seed(0)
    cpu_model = hypermask.build_model(config, (32, 32, 3), 10)
    gpu_model = hypermask.build_model(config, (32, 32, 3), 10).to(GPU)
    gpu_model.load_state_dict(cpu_model.state_dict())
    x, y = torch.rand(16, 32 * 32 * 3), torch.randint(0, 10, (16,))
    results = []
    for model, device in ((cpu_model, "cpu"), (gpu_model, GPU)):
        machine.use_device(torch.device(device), tf32=False)
        start = hypermask.task_start(model, 1)
        terms = hypermask.training_loss(model, x.to(device), y.to(device), task_id=1,
                                        num_classes=10, sparsity=30, start=start,
                                        config=config)
        masks = model.masks(model.hnet_outputs([1])[0], 30)
        terms["loss"].backward()
        results.append(([t.detach().cpu() for t in terms.values()],
                        [m.detach().cpu() for m in masks],
                        [p.grad.cpu() for p in model.parameters() if p.grad is not None]))
    (cpu_terms, cpu_masks, cpu_grads), (gpu_terms, gpu_masks, gpu_grads) = results
    for a, b in zip(cpu_terms + cpu_masks, gpu_terms + gpu_masks):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
    # The backward pass amplifies rounding (other summation orders and kernels) through
    # ReLU kinks and the batch norm of 16 images: on an H200 a gradient differed by up to
    # 2.5 % of its tensor's largest entry (0.25 % typically). A wrong mask or term
    # differs by whole entries. Gradients that are zero but for rounding (conv biases
    # before batch norm, the regulariser at its targets) are held to 0.1 % of the
    # model's largest gradient entry.
    largest = max(g.abs().max() for g in cpu_grads)
    for a, b in zip(cpu_grads, gpu_grads):
        assert (a - b).abs().max() <= 0.05 * a.abs().max() + 1e-3 * largest
    cpu_all, gpu_all = torch.cat([g.flatten() for g in cpu_grads]), torch.cat(
        [g.flatten() for g in gpu_grads])
    assert (gpu_all - cpu_all).norm() <= 1e-2 * cpu_all.norm()


@pytest.mark.parametrize("stopped_eager", [False, True])
def test_a_gpu_run_stopped_mid_task_resumes_to_the_same_results(mnist_root, tmp_path,
                                                                 monkeypatch, stopped_eager):
    """Also when the stopped run took eager steps (--cuda_graphs=False) and the rerun
    replays captured ones: the same arithmetic, so the same files."""
    import os
    import signal

    options = [*RUNS["SplitMNIST"], "--number_of_iterations=60", "--seeds=[1]",
               "--number_of_tasks=2", "--device=cuda", f"--path_to_datasets={mnist_root}"]
    assert main.main([*options, f"--results_dir={tmp_path / 'whole'}"]) == 0
    real = checkpoints.TaskCheckpoints.__call__

    def stop_in_task_2(self, training):
        if self.run_state["next_task"] == 1 and training.iteration == 25:
            os.kill(os.getpid(), signal.SIGTERM)
        real(self, training)

    monkeypatch.setattr(checkpoints.TaskCheckpoints, "__call__", stop_in_task_2)
    cut = [*options, f"--results_dir={tmp_path / 'cut'}"]
    assert main.main([*cut, *(["--cuda_graphs=False"] if stopped_eager else [])]) == \
        128 + signal.SIGTERM
    monkeypatch.undo()
    assert main.main(cut) == 0
    for name in ("accuracies.csv", "transfer.csv", "task_agnostic.csv"):
        a, b = (next((tmp_path / d).glob("*/seed_1")) / name for d in ("whole", "cut"))
        assert a.read_bytes() == b.read_bytes(), name


def test_seeds_sharing_a_gpu_write_what_each_writes_alone(cifar_root, tmp_path, capsys):
    """Three ResNet-20 seeds with runs_per_gpu=3 (under CUDA MPS, where it starts: the
    pool says which) write byte for byte the files each seed writes alone on the GPU
    (runs_per_gpu=1)."""
    options = [*RUNS["ResNet-20"], "--seeds=[1,2,3]", "--number_of_tasks=2",
               "--launcher=local", f"--path_to_datasets={cifar_root}"]
    assert main.main([*options, "--runs_per_gpu=3", f"--results_dir={tmp_path / 'shared'}"]) == 0
    out = capsys.readouterr().out
    gpus = torch.cuda.device_count()
    assert f"local pool: {3 * gpus} worker(s), {gpus} GPU(s), 3 run(s) on each" in out
    assert any(line in out for line in ("CUDA MPS on", "without CUDA MPS", "MPS daemon at"))
    assert main.main([*options, "--runs_per_gpu=1", f"--results_dir={tmp_path / 'alone'}"]) == 0
    for seed in (1, 2, 3):
        shared, alone = (next((tmp_path / launch).glob("*")) / f"seed_{seed}"
                         for launch in ("shared", "alone"))
        assert "device: cuda" in (shared / "run.log").read_text()
        for name in ("accuracies.csv", "transfer.csv", "task_agnostic.csv"):
            assert (shared / name).read_bytes() == (alone / name).read_bytes(), (seed, name)
        logs = [pd.read_csv(run / "training_log.csv").drop(columns="seconds")
                for run in (shared, alone)]
        pd.testing.assert_frame_equal(*logs, check_exact=True)


def test_a_batch_crosses_to_the_gpu_from_pinned_memory_without_a_host_sync(monkeypatch):
    """The augmentation workers' batches arrive pinned; batches.to_device copies them (and
    an order drawn on the CPU, pinned first) without making the host wait."""
    import batches
    from batches import Task

    received, real = [], batches.to_device
    monkeypatch.setattr(batches, "to_device", lambda tensor, device: received.append(
        tensor.is_pinned()) or real(tensor, device))
    x = torch.randint(0, 256, (64, 32, 32, 3), dtype=torch.uint8, device=GPU)
    y = torch.arange(64, device=GPU) % 2
    task = Task(x, y, x[:4], y[:4], x[:4], y[:4], num_classes=2,
                transform=lambda batch, training: batch.float().flatten(1),
                input_shape=(32, 32, 3), image_augment=datasets.FECAM_AUGMENT, shuffle_seed=3)
    stream = batches.TrainingBatches(task, 16, workers=1)
    first = next(stream)
    assert received == [False, True, True]  # the order (pinned inside), images, labels
    assert first[0].device.type == "cuda" and first[1].device.type == "cuda"
    pageable = torch.arange(4096.0)
    real(pageable, GPU)  # the first pinned buffer is set up once
    assert host_syncs(lambda: real(pageable, GPU)) == []
    assert torch.equal(real(pageable, GPU).cpu(), pageable)
