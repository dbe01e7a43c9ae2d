"""Permuted MNIST with 100 tasks: the benchmark entry, plots and evaluations at that length."""

import dataclasses
import re

import datasets
import main


def test_permuted_mnist_part_1_is_part_0_with_100_tasks_and_three_seeds(tmp_path, capsys):
    part0 = datasets.get_benchmark("PermutedMNIST", 0).best
    part1 = datasets.get_benchmark("PermutedMNIST", 1)
    assert part1.best == dataclasses.replace(part0, number_of_tasks=100)
    assert part1.seeds == (1, 2, 3)
    assert main.main(["--dataset=PermutedMNIST", "--part=1", "--status",
                      f"--results_dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "PermutedMNIST_part1_best" in out
    assert re.findall(r"\| (seed_\d) +\| not started", out) == ["seed_1", "seed_2", "seed_3"]
