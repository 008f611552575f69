"""The stored lessons are clean, follow the house style, and run the code that was measured.

nbval (see pytest.ini) re-executes every notebook; these tests read the stored files.
"""
import ast
import inspect
import json
import re
import sys
from pathlib import Path

import pytest

import cifar10_data
import workshop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
LESSONS = sorted(NOTEBOOKS.glob("[0-9][0-9]-*.ipynb"))
EXPECTED = ["00-setup-check", "01-tensors", "02-data", "03-cnn", "04-loss-and-optimizer",
            "05-training-on-cpu", "06-gpu", "07-fast-training", "08-scaling-out"]
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


def names(src, ctx):
    """The variable names a cell's code stores (ctx=ast.Store) or reads (ctx=ast.Load)."""
    found = set()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ctx):
            found.add(node.id)
        elif ctx is ast.Store and isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            found.add(node.name)
        elif ctx is ast.Store and isinstance(node, (ast.Import, ast.ImportFrom)):
            found |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    return found


@pytest.mark.parametrize("path", LESSONS, ids=ids(LESSONS))
def test_varying_cells_are_tagged_sparingly_and_followed_by_a_check(path):
    """A cell whose output is not compared (it varies by machine) is followed by a compared cell,
    and a later compared cell reads what the varying cell produced: its claim is checked."""
    code = [c for c in cells(path) if c["cell_type"] == "code"]
    for i, cell in enumerate(code):
        assert tags(cell) <= ALLOWED_TAGS, f"unknown tags {tags(cell)}"
        if "nbval-ignore-output" not in tags(cell) or i + 1 == len(code):
            continue
        assert not tags(code[i + 1]), f"code cell {i} is unchecked and so is the one after it"
        live = names(source(cell), ast.Store) - {"_"}
        for later in code[i + 1:]:
            if not tags(later) and names(source(later), ast.Load) & live:
                break
            live -= names(source(later), ast.Store)          # overwritten: no longer its result
        else:
            pytest.fail(f"code cell {i} ({source(cell).splitlines()[0][:60]}): no compared cell "
                        f"after it reads what it produced")
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


# What the module offers without a lesson writing it out: data location and checks (all of
# cifar10_data.py, which workshop imports), device and CPU facts, loading a checkpoint. A lesson
# that calls one introduces it by name in its prose.
TOOLS = {"pick_device", "cpu_autocast_dtype", "cpu_path", "load_checkpoint",
         "WorkshopError", "data_root", "find_cifar10", "shown", "load_cifar10_tensors"}


def module_definitions():
    """{name: ast} of every public function and class that workshop.py defines."""
    return {name: ast.parse(inspect.getsource(obj)).body[0]
            for name, obj in vars(workshop).items()
            if not name.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
            and obj.__module__ == "workshop"}


def taught():
    """{name: lesson} for every module definition that a lesson writes out."""
    found = {}
    module = module_definitions()
    for path in LESSONS:
        for name in definitions(path):
            if name in module:
                assert name not in found, f"{name} is written out in {found[name]} and {path.stem}"
                found[name] = path.stem
    return found


def test_every_definition_has_one_source():
    """Each public function or class of workshop.py is written out in exactly one lesson (and is
    identical there: the next test), or is one of the listed tools; no name is both."""
    module, lessons = module_definitions(), taught()
    untaught = set(module) - set(lessons) - TOOLS
    assert not untaught, f"in workshop.py but in no lesson and not a listed tool: {sorted(untaught)}"
    assert not set(lessons) & TOOLS, f"listed as tools but written out in a lesson: {set(lessons) & TOOLS}"
    assert TOOLS <= set(vars(workshop)), f"listed tools missing from workshop: {TOOLS - set(vars(workshop))}"
    data = {n for n, o in vars(cifar10_data).items() if not n.startswith("_") and callable(o)
            and getattr(o, "__module__", None) == "cifar10_data"}
    written = {name for path in LESSONS for name in definitions(path)}
    assert not data & written, f"written out in a lesson but kept in cifar10_data.py: {data & written}"


@pytest.mark.parametrize("name", sorted(set(module_definitions()) - TOOLS))
def test_lesson_code_is_the_module_code(name):
    """What the lesson writes out is, statement for statement, what workshop.py runs."""
    lesson = taught().get(name)
    assert lesson is not None, f"no lesson writes out {name}"
    in_lesson = definitions(NOTEBOOKS / f"{lesson}.ipynb")[name]
    in_module = module_definitions()[name]
    assert without_docstrings(in_lesson) == without_docstrings(in_module), (
        f"{name} in {lesson} differs from workshop.{name}: change both together")


@pytest.mark.parametrize("path", LESSONS, ids=ids(LESSONS))
def test_module_calls_were_taught_or_are_introduced(path):
    """A lesson calls workshop.NAME only for what an earlier lesson wrote out, or for a listed
    tool that its own prose names."""
    lessons = taught()
    prose = "\n".join(source(c) for c in cells(path) if c["cell_type"] == "markdown")
    code = "\n".join(source(c) for c in cells(path) if c["cell_type"] == "code")
    for name in sorted(set(re.findall(r"workshop\.([a-z_][a-z0-9_]*)\(", code))):
        if name in TOOLS:
            assert f"workshop.{name}" in prose, f"{path.stem} calls workshop.{name} without introducing it"
        else:
            assert name in lessons and lessons[name] < path.stem, (
                f"{path.stem} calls workshop.{name}, which no earlier lesson writes out")


# ------------------------------------------------------------ what the reader sees holds

def test_navigation_is_generated():
    """tools/make_navigation.py writes every lesson's navigation; nothing is edited by hand."""
    import make_navigation
    assert make_navigation.update(write=False) == [], "run: python tools/make_navigation.py"


MACHINE = re.compile(r"/(?:work|home|root|Users|tmp|private|mnt)/|[A-Z]:\\\\|\+cu\d{2,3}\b|\+cpu\b|\+rocm")


def output_texts(cell):
    for out in cell.get("outputs", []):
        yield "".join(out.get("text", ""))
        for kind in ("text/plain", "text/html", "text/markdown"):
            yield "".join(out.get("data", {}).get(kind, ""))


@pytest.mark.parametrize("path", LESSONS, ids=ids(LESSONS))
def test_no_machine_paths_or_builds_in_stored_outputs(path):
    """Stored outputs name no folder of the machine that ran them, and no local build tag of
    PyTorch (such as +cu130), which would tell a reader about that machine, not theirs."""
    for i, cell in enumerate(cells(path)):
        for text in output_texts(cell):
            found = MACHINE.search(text)
            assert not found, f"cell {i} stores {text[max(0, found.start() - 40):found.end() + 40]!r}"


COUNTS = {"": 1, "twice": 2, "three times": 3, "four times": 4}


def expectations(text):
    """The `snippets` a markdown cell's 'Expect ...' sentences name, and how often each must appear
    (`True` twice: two times)."""
    found = []
    for sentence in re.findall(r"Expect\b[^.]*(?:\.(?=\S)[^.]*)*", text):
        for snippet, times in re.findall(r"`([^`]+)`(?: (twice|three times|four times))?", sentence):
            found.append((snippet, COUNTS[times]))
    return found


@pytest.mark.parametrize("path", LESSONS, ids=ids(LESSONS))
def test_every_expect_in_the_prose_is_in_the_output_below_it(path):
    """Each `snippet` that an 'Expect' sentence names appears in the stored output of the code cell
    under it (as often as 'twice' or 'three times' says). Cells whose output is not compared are
    exempt: their claims are checked by the cells after them."""
    nb, problems = cells(path), []
    for i, cell in enumerate(nb[:-1]):
        below = nb[i + 1]
        if cell["cell_type"] != "markdown" or below["cell_type"] != "code" or tags(below):
            continue
        shown = "\n".join(output_texts(below))
        for snippet, times in expectations(source(cell)):
            if shown.count(snippet) < times:
                problems.append(f"cell {i}: expects `{snippet}`" + (f" {times} times" if times > 1 else ""))
    assert not problems, "\n".join(problems)


def test_times_agree_between_lessons_readme_and_instructors():
    """One figure per claim: the README's table gives each lesson's header time, and lesson 05's
    training time reads the same in its header, the README and INSTRUCTORS.md."""
    readme = (NOTEBOOKS.parent / "README.md").read_text()
    instructors = (NOTEBOOKS.parent / "INSTRUCTORS.md").read_text()
    table = dict(re.findall(r"^\| (\d\d) \| .*\| (\d+) min \|$", readme, flags=re.M))
    for path in LESSONS:
        header = re.search(r"\*\*Time:\*\* (\d+) minutes", source(cells(path)[0]))
        assert header and table.get(path.stem[:2]) == header.group(1), f"{path.stem}: README says {table.get(path.stem[:2])} min"
    training = re.search(r"including (about \d+ minutes) of training", source(cells(LESSONS[5])[0])).group(1)
    assert f"trains for {training}" in readme and f"runs {training}" in instructors


# ------------------------------------------------------------ lesson 07's ablation, at full length

RESULTS = NOTEBOOKS.parent / "results"


def test_the_ablation_rows_are_the_lessons():
    """The benchmark that measures lesson 07's ablation at full length switches off what the lesson does."""
    sys.path.insert(0, str(NOTEBOOKS.parent / "benchmarks"))
    import gpu_training
    cell = next(source(c) for c in cells(NOTEBOOKS / "07-fast-training.ipynb") if "switched_off = {" in source(c))
    assert re.findall(r'"(no [^"]+)":', cell) == list(gpu_training.ABLATION)


def test_stored_ablations_show_that_every_ingredient_helps():
    """Lesson 07 says every ingredient helps. In each ablation measured at full length
    (results/ablation-*.json, written by tools/gpu_run.py on a GPU), every row with one ingredient
    switched off averages below the full recipe."""
    files = sorted(RESULTS.glob("ablation-*.json"))
    if not files:
        pytest.skip("no ablation measured at full length yet: tools/gpu_run.py writes one on a CUDA GPU")
    for path in files:
        rows = json.loads(path.read_text())["rows"]
        full = rows.pop("full recipe")["mean"]
        assert rows and all(row["mean"] < full for row in rows.values()), (
            f"{path.name}: full recipe {full}, {({k: r['mean'] for k, r in rows.items()})}")
