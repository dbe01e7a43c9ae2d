"""The documentation against the code it describes: the README's settings,
docs/benchmarks.md's best configurations and grids, docs/development.md's import order."""

import ast
import fnmatch
import re
from pathlib import Path

import pytest

import datasets
import main

REPO = Path(__file__).resolve().parents[1]


def table_rows(text: str, header: str) -> list[list[str]]:
    """The cells of every row of the Markdown table whose header row starts with `header`."""
    lines = text[text.index(header):].splitlines()
    rows = []
    for line in lines[2:]:  # after the header and the |---| line
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def test_the_readme_settings_table_names_every_setting_of_main():
    rows = table_rows((REPO / "README.md").read_text(), "| variable | meaning |")
    documented = [name for row in rows for name in re.findall(r"`(\w+\*?)`", row[0])]
    assert not [name for name in documented  # a row for a setting main.py lacks
                if not fnmatch.filter(main.SETTINGS, name)]
    assert not [name for name in main.SETTINGS
                if not any(fnmatch.fnmatch(name, pattern) for pattern in documented)]


def numbers(text: str) -> tuple:
    """'100, 100' -> (100, 100); '5,000' -> 5000: the docs' way of writing values."""
    values = re.findall(r"\d[\d,]*(?:\.\d+)?(?:e-?\d+)?", text.replace(", ", " "))
    return tuple(float(value.replace(",", "")) for value in values)


def seed_range(text: str) -> tuple[int, ...]:
    """'1–5' -> (1, 2, 3, 4, 5); '5' -> (5,)."""
    low, _, high = text.partition("–")
    return tuple(range(int(low), int(high or low) + 1))


BEST_TABLE = "| dataset, part | tasks × classes |"


def best_rows() -> dict[tuple[str, int], list[str]]:
    rows = table_rows((REPO / "docs" / "benchmarks.md").read_text(), BEST_TABLE)
    return {(row[0].split()[0], int(row[0].split()[1])): row[1:] for row in rows}


def test_every_best_configuration_has_a_row():
    with_best = {key for key, benchmark in datasets.BENCHMARKS.items()
                 if benchmark.best is not None}
    # parts 0-5 of the FeCAM setup take part 6's or 7's row (the text under the table)
    assert set(best_rows()) == {key for key in with_best
                                if not (key[0] == "CIFAR100_FeCAM_setup" and key[1] < 6)}


@pytest.mark.parametrize("key", sorted(best_rows()), ids=lambda key: f"{key[0]}-{key[1]}")
def test_the_best_configuration_table_is_the_code(key):
    (tasks, network, per_task, batch, embedding, hnet, lr, beta, lam, sparsity, masked,
     selection, seeds) = best_rows()[key]
    benchmark = datasets.BENCHMARKS[key]
    config = benchmark.best
    name, _, layers = network.partition(" ")
    documented = {
        "number_of_tasks": int(tasks.split("×")[0]), "target_network": name,
        "target_hidden_layers": numbers(layers) or config.target_hidden_layers,
        "number_of_iterations": numbers(per_task)[0] if per_task.endswith("it") else None,
        "number_of_epochs": numbers(per_task)[0] if per_task.endswith("epochs") else None,
        "batch_size": float(batch), "embedding_size": float(embedding),
        "hnet_hidden_layers": numbers(hnet), "learning_rate": float(lr), "beta": float(beta),
        "lam": float(lam), "sparsity": float(sparsity),
        "norm_regularizer_masking": {"yes": True, "no": False}[masked],
        "model_selection": selection.replace(" ", "_")}
    actual = {field: getattr(config, field) for field in documented}
    actual["target_hidden_layers"] = tuple(map(float, actual["target_hidden_layers"]))
    actual["hnet_hidden_layers"] = tuple(map(float, actual["hnet_hidden_layers"]))
    assert documented == actual
    assert seed_range(seeds) == benchmark.seeds


def grid_rows() -> dict[tuple[str, int], tuple[int, tuple[int, ...]]]:
    """(dataset, part) -> (points, seeds) of every row of the grid table."""
    rows = table_rows((REPO / "docs" / "benchmarks.md").read_text(),
                      "| dataset, part | points | seeds |")
    found = {}
    for name, points, seeds, _ in rows:
        dataset, parts = name.split(" ", 1)
        for part in re.findall(r"\d+", parts.split("(")[0]):
            found[dataset, int(part)] = (int(points.split()[0]), seed_range(seeds))
    return found


def test_the_grid_table_gives_every_grid_its_points_and_seeds():
    grids = {key: (len(datasets.configurations(benchmark, True, {})), benchmark.grid_seeds)
             for key, benchmark in datasets.BENCHMARKS.items() if benchmark.grid}
    assert grid_rows() == grids


def module_imports(path: Path) -> set[str]:
    """The top-level modules a file imports, leaving out those under `if TYPE_CHECKING:`
    (annotations only, never run)."""
    tree = ast.parse(path.read_text())
    typing_only = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and getattr(block.test, "id", None) == "TYPE_CHECKING"
                   for node in ast.walk(block)}
    names = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_modules_import_only_those_below_them_in_the_documented_order():
    text = (REPO / "docs" / "development.md").read_text()
    sentence = re.split(r"\.\s", text[text.index("Each module imports only"):], maxsplit=1)[0]
    order = re.findall(r"`(\w+)`", sentence)
    assert sorted(order) == sorted(path.stem for path in REPO.glob("*.py"))
    upward = [f"{module} imports {name}" for position, module in enumerate(order)
              for name in module_imports(REPO / f"{module}.py") & set(order[:position + 1])
              if name != module]
    assert not upward
