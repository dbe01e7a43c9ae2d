"""What only a GPU can show: no host syncs, the run's own device, repeatable runs.

Skipped without CUDA (tests/conftest.py). `python -m pytest -q -m cuda` runs these only.
"""

import dataclasses
import warnings

import pandas as pd
import pytest
import torch

import datasets
import hypermask
import main
import runs

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
    return [f"{w.filename}:{w.lineno}" for w in caught if "synchroniz" in str(w.message)]


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
    state = runs.rng_state(device)
    first = torch.rand(4, device=device)
    runs.set_rng_state(state, device)
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
