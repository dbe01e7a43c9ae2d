"""Permuted MNIST with 100 tasks: the benchmark entry, plots and evaluations at that length."""

import re

import matplotlib.axes
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from PIL import Image

import datasets
import hypermask
import main
import plots


def image_size(path) -> tuple[int, int]:
    """A PNG's (width, height) in pixels, the file closed again."""
    with Image.open(path) as image:
        return image.size


def test_permuted_mnist_part_1_runs_100_distinct_tasks_over_three_seeds(mnist_root, tmp_path,
                                                                          capsys):
    """Part 1: three runs, each of 100 tasks, each task its own permutation and embedding."""
    small = {"target_hidden_layers": (8,), "hnet_hidden_layers": (4,), "validation_size": 50}
    settings, _, _ = main.resolve([f"--results_dir={tmp_path}"])
    folder, jobs = main.experiment_jobs(settings, small, dataset="PermutedMNIST", part=1)
    assert folder.name == "PermutedMNIST_part1_best" and [j.seed for j in jobs] == [1, 2, 3]
    config = jobs[0].config
    tasks = datasets.load_tasks("PermutedMNIST", 1, config, seed=1, root=mnist_root,
                                device=torch.device("cpu"))
    first_images = {tuple(task.test_x[0].tolist()) for task in tasks}
    assert len(tasks) == 100 and len(first_images) == 100  # 100 different permutations
    assert hypermask.build_model(config, tasks[0].input_shape, 10).hnet.num_known_conds == 100
    assert main.main(["--dataset=PermutedMNIST", "--part=1", "--status",
                      f"--results_dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert re.findall(r"\| (seed_\d) +\| not started", out) == ["seed_1", "seed_2", "seed_3"]


def accuracy_matrices(seeds: int, tasks: int) -> np.ndarray:
    """[seeds, T, T] lower-triangular accuracy matrices with values in 10..100."""
    rng = np.random.RandomState(0)
    matrices = rng.uniform(10, 100, size=(seeds, tasks, tasks))
    matrices[:, np.triu_indices(tasks, 1)[0], np.triu_indices(tasks, 1)[1]] = np.nan
    return matrices


def count_cell_texts(monkeypatch) -> list:
    """Record every Axes.text call (the heatmap's per-cell numbers)."""
    calls = []
    original = matplotlib.axes.Axes.text
    monkeypatch.setattr(matplotlib.axes.Axes, "text",
                        lambda self, *a, **k: calls.append(a) or original(self, *a, **k))
    return calls


def test_heatmap_of_100_tasks_has_a_bounded_size_and_no_cell_numbers(tmp_path, monkeypatch):
    texts = count_cell_texts(monkeypatch)
    plots.plot_heatmap(accuracy_matrices(1, 100)[0], tmp_path / "big.png", "100 tasks")
    width, height = image_size(tmp_path / "big.png")
    assert width <= 1000 and height <= 800
    assert texts == []
    plots.plot_heatmap(accuracy_matrices(1, 5)[0], tmp_path / "small.png", "5 tasks")
    assert len(texts) == 15  # every value of a 5-task matrix is printed
    assert image_size(tmp_path / "small.png") == (660, 420)  # as before: 5.5 x 3.5 in


def test_per_task_plot_of_100_tasks_has_a_bounded_size_and_thinned_ticks(tmp_path):
    plots.plot_per_task(accuracy_matrices(3, 100), tmp_path / "per_task.png", "100 tasks")
    width, height = image_size(tmp_path / "per_task.png")
    assert width <= 1200 and height <= 500
    fig, ax = plt.subplots()
    plots.task_ticks(ax, 100)
    assert [t.get_text() for t in ax.get_xticklabels()] == \
        ["1"] + [str(k) for k in range(10, 101, 10)]
    plots.task_ticks(ax, 7)
    assert [t.get_text() for t in ax.get_yticklabels()] == [str(k) for k in range(1, 8)]
    plt.close(fig)


def test_grid_plot_wraps_many_hyperparameters_into_rows(tmp_path):
    names = [f"h{k}" for k in range(6)]
    runs = pd.DataFrame({**{n: [0.1, 1.0, 0.1, 1.0] for n in names},
                         "mean_accuracy": [80.0, 90.0, 85.0, 95.0]})
    plots.plot_grid(runs, names, tmp_path / "grid.png", "six hyperparameters")
    width, height = image_size(tmp_path / "grid.png")
    assert width <= plots.GRID_COLUMNS * 3.2 * 120 and height == 2 * 3.2 * 120


def test_a_run_past_20_tasks_ends_with_bounded_plots(mnist_root, tmp_path):
    assert main.main(["--dataset=PermutedMNIST", "--part=1", "--seeds=[1]", "--device=cpu",
                      "--number_of_tasks=21", "--number_of_iterations=1",
                      "--target_hidden_layers=[8]", "--hnet_hidden_layers=[4]",
                      "--validation_size=20", f"--path_to_datasets={mnist_root}",
                      f"--results_dir={tmp_path}"]) == 0
    experiment = tmp_path / "PermutedMNIST_part1_best"
    accuracies = pd.read_csv(experiment / "seed_1" / "accuracies.csv")
    assert len(accuracies) == 21 * 22 // 2
    for plot, (max_width, max_height) in (("seed_1/heatmap.png", (1000, 800)),
                                          ("mean_heatmap.png", (1000, 800)),
                                          ("per_task_accuracy.png", (1200, 500))):
        width, height = image_size(experiment / plot)
        assert width <= max_width and height <= max_height, plot
