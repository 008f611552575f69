"""The stored lessons are clean, follow the house style, and run the code that was measured.

nbval (see pytest.ini) re-executes every notebook; these tests read the stored files.
"""
import ast
import inspect
import json
import re
from pathlib import Path

import pytest

import workshop

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
LESSONS = sorted(NOTEBOOKS.glob("[0-9][0-9]-*.ipynb"))
EXPECTED = ["00-setup-check", "01-tensors", "02-data", "03-cnn", "04-loss-and-optimizer",
            "05-training-on-cpu", "06-gpu", "07-fast-training"]
ALLOWED_TAGS = {"nbval-ignore-output", "nbval-skip", "nbval-raises-exception"}
MAX_LINES = 15


def cells(path):
    return json.loads(path.read_text())["cells"]


def source(cell):
    return "".join(cell["source"])


def code_lines(cell):
    return [l for l in source(cell).splitlines() if l.strip()]


def tags(cell):
    return set(cell.get("metadata", {}).get("tags", []))


def ids(paths):
    return [p.stem for p in paths]


def test_the_lessons_are_the_planned_ones():
    present = [p.stem for p in LESSONS]
    assert present == [name for name in EXPECTED if name in present], "lessons out of order"
    assert present[:6] == EXPECTED[:6], f"missing lessons: {sorted(set(EXPECTED[:6]) - set(present))}"


@pytest.mark.parametrize("path", LESSONS, ids=ids(LESSONS))
def test_stored_from_one_clean_run(path):
    counts = [c.get("execution_count") for c in cells(path) if c["cell_type"] == "code"]
    assert counts == list(range(1, len(counts) + 1)), f"execution counts {counts}"


@pytest.mark.parametrize("path", LESSONS, ids=ids(LESSONS))
def test_no_errors_or_warnings_stored(path):
    for i, cell in enumerate(cells(path)):
        for out in cell.get("outputs", []):
            assert out["output_type"] != "error", f"cell {i} stored an error: {out.get('ename')}"
            text = "".join(out.get("text", []))
            if out.get("name") == "stderr":
                assert not re.search(r"Warning|Traceback|Error", text), f"cell {i} stderr: {text[:300]}"


@pytest.mark.parametrize("path", LESSONS, ids=ids(LESSONS))
def test_every_code_cell_is_explained_and_short(path):
    nb = cells(path)
    for i, cell in enumerate(nb):
        if cell["cell_type"] != "code":
            continue
        assert i > 0 and nb[i - 1]["cell_type"] == "markdown", f"cell {i} has no markdown above it"
        assert source(nb[i - 1]).strip(), f"cell {i}: the markdown above it is empty"
        assert 0 < len(code_lines(cell)) <= MAX_LINES, f"cell {i}: {len(code_lines(cell))} lines"


@pytest.mark.parametrize("path", LESSONS, ids=ids(LESSONS))
def test_varying_cells_are_tagged_sparingly_and_followed_by_a_check(path):
    code = [c for c in cells(path) if c["cell_type"] == "code"]
    for i, cell in enumerate(code):
        assert tags(cell) <= ALLOWED_TAGS, f"unknown tags {tags(cell)}"
        if "nbval-ignore-output" in tags(cell) and i + 1 < len(code):
            assert not tags(code[i + 1]), f"code cell {i} is unchecked and so is the one after it"
    ignored = sum(1 for c in code if tags(c))
    assert ignored <= len(code) // 3, f"{ignored} of {len(code)} cells are not compared"


@pytest.mark.parametrize("path", LESSONS, ids=ids(LESSONS))
def test_opening_closing_and_navigation(path):
    nb = cells(path)
    first, last = source(nb[0]), source(nb[-1])
    number = path.stem[:2]
    assert first.startswith(f"# {number} · "), "the first cell is the lesson's title"
    for field in ("**You will learn**", "**Time:**", "**You need:**"):
        assert field in first, f"opening cell lacks {field}"
    nav = [l for l in first.splitlines() if "[All lessons](../README.md)" in l]
    assert nav and nav[0] in last, "the last cell repeats the navigation line"
    links = re.findall(r"\]\(([^)]+\.ipynb)\)", nav[0])
    for link in links:
        assert (NOTEBOOKS / link).exists(), f"navigation links to missing {link}"
    assert (number == "00") == (not nav[0].startswith("[←")), "only lesson 00 has no previous link"
    text = "\n".join(source(c) for c in nb if c["cell_type"] == "markdown")
    assert "## Recap" in text and "## Exercises" in text
    assert "<summary>Solution</summary>" in text, "exercise solutions are folded in <details>"


@pytest.mark.parametrize("path", LESSONS, ids=ids(LESSONS))
def test_no_hidden_helpers_or_installs(path):
    for cell in cells(path):
        if cell["cell_type"] == "code":
            assert not re.search(r"^\s*[!%]pip|import \*", source(cell), flags=re.M)


def test_pytest_never_falls_back_to_lax_mode():
    config = (NOTEBOOKS.parent / "pytest.ini").read_text()
    assert "--nbval" in config and "lax" not in config


# ------------------------------------------------------------ the lessons' code is the module's

def definitions(path):
    """{name: ast of the function or class} for every top-level definition in the lesson."""
    found = {}
    for cell in cells(path):
        if cell["cell_type"] != "code":
            continue
        for node in ast.parse(source(cell).replace("workshop.", "")).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                found[node.name] = node
    return found


def without_docstrings(node):
    for n in ast.walk(node):
        if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.body and isinstance(n.body[0], ast.Expr) \
                and isinstance(n.body[0].value, ast.Constant) and isinstance(n.body[0].value.value, str):
            n.body = n.body[1:]
    return ast.dump(node, annotate_fields=False)


SHARED = {"03-cnn": ["TutorialNet", "conv_bn", "WorkshopNet"],
          "05-training-on-cpu": ["normalize", "augment", "train_step", "train_epoch", "predict",
                                 "accuracy"],
          "06-gpu": ["synchronize"],
          "07-fast-training": ["random_crop", "mirror_half", "whitening_weights", "fast_norm",
                               "fast_block", "FastNet", "identity_init", "fast_model",
                               "fast_optimizer", "lookahead", "fast_epoch", "train_fast",
                               "predict_shifted"]}


@pytest.mark.parametrize("lesson,name", [(l, n) for l, names in SHARED.items() for n in names])
def test_lesson_code_is_the_module_code(lesson, name):
    """What the lesson writes out is, statement for statement, what workshop.py runs."""
    path = NOTEBOOKS / f"{lesson}.ipynb"
    if not path.exists():
        pytest.fail(f"{lesson} is missing")
    in_lesson = definitions(path).get(name)
    assert in_lesson is not None, f"{lesson} does not define {name}"
    in_module = ast.parse(inspect.getsource(getattr(workshop, name))).body[0]
    assert without_docstrings(in_lesson) == without_docstrings(in_module), (
        f"{name} in {lesson} differs from workshop.{name}: change both together")
