"""The stored lessons are clean, follow the house style, and run the code that was measured.

nbval (see pytest.ini) re-executes every notebook; these tests read the stored files.
"""
import ast
import json
import re

import numpy as np
import pytest

import workshop.fast
from tools import export_lessons, lesson_time, make_navigation
from workshop.lessons import (NOTEBOOKS, cells, code, going_deeper, heading, lesson_paths, markdown,
                              read, source, tags)

LESSONS = lesson_paths()
EXPECTED = ["00-setup-check", "01-tensors", "02-data", "03-cnn", "04-loss-and-optimizer",
            "05-training-on-cpu", "06-gpu", "07-fast-training", "08-scaling-out"]
ALLOWED_TAGS = {"nbval-ignore-output", "nbval-skip", "nbval-raises-exception", export_lessons.TAG}
COMPARE_TAGS = ALLOWED_TAGS - {export_lessons.TAG}       # tags that change what nbval compares
MAX_LINES = 15


def code_lines(cell):
    return [l for l in source(cell).splitlines() if l.strip()]


def code_text(path):
    """A lesson's code cells, one after the other."""
    return "\n".join(source(c) for c in code(path))


def ids(paths):
    return [p.stem for p in paths]


def test_the_lessons_are_the_planned_ones():
    present = [p.stem for p in LESSONS]
    assert present == EXPECTED, (f"missing: {sorted(set(EXPECTED) - set(present))}, "
                                 f"unplanned: {sorted(set(present) - set(EXPECTED))}, in order: {present}")


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
        assert not tags(code[i + 1]) & COMPARE_TAGS, f"code cell {i} is unchecked and so is the one after it"
        live = names(source(cell), ast.Store) - {"_"}
        for later in code[i + 1:]:
            if not tags(later) & COMPARE_TAGS and names(source(later), ast.Load) & live:
                break
            live -= names(source(later), ast.Store)          # overwritten: no longer its result
        else:
            pytest.fail(f"code cell {i} ({source(cell).splitlines()[0][:60]}): no compared cell "
                        f"after it reads what it produced")
    ignored = sum(1 for c in code if tags(c) & COMPARE_TAGS)
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


# ------------------------------------------------------------ the lessons' code is the package's

def test_the_package_is_made_from_the_lessons():
    """Every taught module of workshop/ is, byte for byte, what its lesson's exported cells give."""
    assert export_lessons.main(["--check"]) == 0, "run: python tools/export_lessons.py"


def test_a_definition_changed_in_one_place_only_fails_the_check(tmp_path, monkeypatch):
    """The check fails on a changed constant or function in a lesson (the module not re-made),
    and on a module edited by hand; it passes again once the module is re-made."""
    lesson = NOTEBOOKS / "05-training-on-cpu.ipynb"
    nb = json.loads(lesson.read_text())
    for cell in nb["cells"]:
        if export_lessons.TAG in tags(cell) and source(cell).startswith("RECIPE = dict("):
            cell["source"] = source(cell).replace("epochs=6,", "epochs=7,")
    copy = tmp_path / "notebooks" / lesson.name
    copy.parent.mkdir()
    copy.write_text(json.dumps(nb))
    package = tmp_path / "workshop"
    package.mkdir()
    for path in export_lessons.expected_modules():
        (package / path.name).write_text(path.read_text())
    monkeypatch.setattr(export_lessons, "PACKAGE", package)
    monkeypatch.setattr(export_lessons.lessons, "lesson_paths", lambda: [copy])
    assert export_lessons.main(["--check"]) == 1                   # lesson edited, module not
    assert export_lessons.main([]) == 0 and export_lessons.main(["--check"]) == 0
    assert "epochs=7," in (package / "training.py").read_text()
    text = (package / "training.py").read_text().replace("F.cross_entropy(", "F.nll_loss(")
    (package / "training.py").write_text(text)
    assert export_lessons.main(["--check"]) == 1                   # module edited by hand


IMPORTS = re.compile(r"^from (workshop\.\w+) import (.+)$", re.M)


def exported_by_lesson():
    """{name: lesson} for every name that a lesson exports to the package."""
    found = {}
    for path in LESSONS:
        if path.stem in export_lessons.MODULES:
            for _, node, _ in export_lessons.exported(path):
                for name in export_lessons.defined_names(node):
                    assert name not in found, f"{name} is exported by {found[name]} and {path.stem}"
                    found[name] = path.stem
    return found


@pytest.mark.parametrize("path", LESSONS, ids=ids(LESSONS))
def test_imports_from_the_package_were_taught_or_are_introduced(path):
    """A lesson imports from a taught module only what an earlier lesson wrote out, and from
    the other modules (data, device, checkpoints, launch) only what its prose names."""
    taught = exported_by_lesson()
    generated = {f"workshop.{module}" for module, _ in export_lessons.MODULES.values()}
    prose = markdown(path)
    for cell in cells(path):
        if cell["cell_type"] != "code":
            continue
        for module, names in IMPORTS.findall(source(cell)):
            for name in (n.strip() for n in names.split(",")):
                if module in generated:
                    assert taught.get(name, "99") < path.stem, (
                        f"{path.stem} imports {name} from {module}, which no earlier lesson writes out")
                else:
                    assert name in prose, f"{path.stem} imports {name} from {module} without naming it"


def test_no_lesson_defines_what_it_imports():
    for path in LESSONS:
        imported = {n.strip() for _, names in IMPORTS.findall(code_text(path)) for n in names.split(",")}
        defined = {name for _, node, _ in (export_lessons.exported(path) if path.stem in export_lessons.MODULES else [])
                   for name in export_lessons.defined_names(node)}
        assert not imported & defined, f"{path.stem} both imports and defines {imported & defined}"


# ------------------------------------------------------------ what the reader sees holds

def test_navigation_is_generated():
    """tools/make_navigation.py writes every lesson's navigation; nothing is edited by hand."""
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
    """Every lesson time is tools/lesson_time.py's prediction for the core path (word counts and
    the committed compute timings, not this machine's clock): each lesson's header, the README's
    table and INSTRUCTORS.md's 60-minute plan; lesson 05's training time reads the same in its
    header, the README and INSTRUCTORS.md."""
    readme = (NOTEBOOKS.parent / "README.md").read_text()
    instructors = (NOTEBOOKS.parent / "INSTRUCTORS.md").read_text()
    result = lesson_time.summary(lesson_time.table())
    assert result["compute_measured"], "results/lesson-time.json lacks a lab lesson: run --run"
    predicted = {n: round(r["core_minutes"]) for n, r in result["lessons"].items()}
    table = {m[2]: int(m[3]) for m in lesson_time.README_ROW.finditer(readme)}
    headers = {p.stem[:2]: lesson_time.HEADER.search(source(cells(p)[0])) for p in LESSONS}
    assert table == predicted, "README's times: run python -m tools.lesson_time --write"
    assert {n: int(m[2]) for n, m in headers.items() if m} == predicted, "lesson headers' times"
    plan = {m[3]: (int(m[1]), int(m[2])) for m in lesson_time.PLAN_ROW.finditer(instructors)}
    assert plan == lesson_time.lab_plan(result), "INSTRUCTORS.md's 60-minute plan"
    training = re.search(r"including (about \d+ minutes) of training", source(cells(LESSONS[5])[0])).group(1)
    assert f"trains for {training}" in readme and f"runs {training}" in instructors


def test_the_lab_core_path_fits_an_hour():
    """00-05's core path, with its core exercises (at most two a lesson, each under two minutes
    of compute on the laptop path), predicts at most 60 minutes."""
    result = lesson_time.summary(lesson_time.table())
    assert result["core_minutes_00_05"] <= 60, result["core_minutes_00_05"]
    seconds = lesson_time.stored_timings()["lessons"]
    for path in LAB:
        nb = read(path)
        rows = lesson_time.count(nb)
        assert rows["core"]["exercises"] <= 2, path.name
        deeper = going_deeper(nb)
        start = next(i for i, c in enumerate(cells(nb)) if "## Exercises" in source(c))
        for i, cell in enumerate(cells(nb)[start:], start):
            if cell["cell_type"] == "code" and i not in deeper:
                assert seconds[path.name[:2]].get(cell["id"], 0) <= 120, f"{path.name} cell {i}"


def test_lesson_time_counts_by_heading_level_and_leaves_solutions_out():
    md = lambda text: {"cell_type": "markdown", "source": text, "metadata": {}}
    nb = {"cells": [md("## Core\none two three"),
                    md("## Going deeper: more\nfour five"),
                    md("### Still deeper\nsix <details>hidden words here</details>"),
                    md("## Core again\nseven\n\n**1.** Try it.")]}
    parts = lesson_time.count(nb)
    assert parts["deeper"]["words"] == 2 + 4 + 3 + 1         # headings count as read words
    assert parts["core"]["words"] == 2 + 3 + 3 + 1 + 3 and parts["core"]["exercises"] == 1
    assert lesson_time.minutes(parts["core"]) == 12 / 150 + 3
    nb["cells"][2]["source"] = "## Still deeper"                 # as high as the Going deeper heading:
    assert 2 not in going_deeper(nb)                             # it ends the fold


# ------------------------------------------------------------ lesson 07's ablation, at full length

RESULTS = NOTEBOOKS.parent / "results"


CPU_ABLATION = RESULTS / "cpu-ablation.json"
VERDICT = re.compile(r"^- \*\*(.+?)\*\*: ([+-]\d+\.\d) points, (an effect|within the spread)", re.M)


def cpu_ablation_rows(measured):
    """(name, difference from the full recipe in points, verdict) of each row of the stored CPU
    ablation, as lesson 07's table cell computes them."""
    full = measured["rows"]["full recipe"]["accs"]
    for name, row in measured["rows"].items():
        if name != "full recipe":
            difference = 100 * (np.mean(row["accs"]) - np.mean(full))
            noise = 100 * (np.std(row["accs"]) + np.std(full))
            yield name, difference, "an effect" if abs(difference) > noise else "within the spread"


def test_the_cpu_ablation_is_of_the_lessons_recipe_and_rows():
    """results/cpu-ablation.json (benchmarks/cpu_training.py --ablation) measured lesson 07's CPU
    recipe as it is now, three seeds per row, every row of ablation_rows and the test-time views."""
    measured = json.loads(CPU_ABLATION.read_text())
    recipe = json.loads(json.dumps(workshop.fast.FAST_RECIPE_CPU))          # tuples as JSON has them
    assert measured["recipe"] == recipe, "the lesson's CPU recipe changed: measure the ablation again"
    assert measured["seeds"] == [0, 1, 2] and measured["autocast"] == "bfloat16"
    assert list(measured["rows"]) == ["full recipe", *workshop.fast.ablation_rows(workshop.fast.FAST_RECIPE_CPU),
                                      "test: image and mirror only", "test: image alone"]
    for row in measured["rows"].values():
        assert len(row["accs"]) == 3 and row["mean"] == pytest.approx(np.mean(row["accs"]), abs=1e-4)


def test_lesson_07_says_what_the_cpu_ablation_measured():
    """Every sentence of lesson 07 that says how much an ingredient matters on the CPU path
    ('- **row**: -1.2 points, an effect') agrees with the stored ablation, and every row has one."""
    text = "\n".join(source(c) for c in cells(NOTEBOOKS / "07-fast-training.ipynb") if c["cell_type"] == "markdown")
    said = {name: (float(points), verdict) for name, points, verdict in VERDICT.findall(text)}
    measured = {name: (round(d, 1), v) for name, d, v in cpu_ablation_rows(json.loads(CPU_ABLATION.read_text()))}
    assert said == measured


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


def test_no_load_runs_code_from_a_file():
    """A torch.load that is not weights-only unpickles arbitrary objects, so it can run code from
    the file: nothing in the lessons, package, tools, benchmarks or tests asks for one."""
    root = NOTEBOOKS.parent
    files = [*root.glob("*.py"), *(p for d in ("workshop", "tools", "benchmarks", "tests", "notebooks")
                                   for p in (root / d).rglob("*") if p.suffix in (".py", ".ipynb"))]
    unsafe = re.compile(r"weights_only\s*=\s*" + "False")
    found = [str(p.relative_to(root)) for p in files if unsafe.search(p.read_text(encoding="utf-8"))]
    assert not found, f"a torch.load that is not weights-only in {found}"


def lesson_and_package_code():
    """(name, text) of every module of the package and every lesson's code cells."""
    root = NOTEBOOKS.parent
    yield from ((str(p.relative_to(root)), p.read_text(encoding="utf-8")) for p in sorted((root / "workshop").glob("*.py")))
    yield from ((path.name, code_text(path)) for path in LESSONS)


def test_device_is_chosen_with_torch_accelerator():
    """The lessons and the package pick the device as PyTorch's tutorials do, with torch.accelerator:
    no per-kind chain that starts `if torch.cuda.is_available():` or builds `torch.device("cuda")`
    (lesson 00 shows that chain once, in an expression, for readers of older code)."""
    chain = re.compile(r"^\s*(el)?if\s+(not\s+)?torch\.(cuda|backends\.mps)\.is_available\(\)"
                       r"|torch\.device\(\s*[\"'](cuda|mps)[\"']", re.M)
    found = [name for name, text in lesson_and_package_code() if chain.search(text)]
    assert not found, f"a torch.cuda/mps device chain in {found}: use torch.accelerator"
    assert "torch.accelerator.current_accelerator()" in source(code(LESSONS[0])[2])   # the device cell


def test_lessons_use_transforms_v2():
    """From lesson 02 on, images become tensors with torchvision.transforms.v2 (ToImage, ToDtype),
    as PyTorch's tutorials do; the v1 names appear only in prose, as what older code writes."""
    for path in LESSONS[2:]:
        text = code_text(path)
        assert "ToTensor" not in text and "import torchvision.transforms as" not in text, path.name
    assert "v2.ToDtype(torch.float32, scale=True)" in code_text(LESSONS[2])


PROMPT = re.compile(r"\*\*(\d)\.\*\*")
CALL = re.compile(r"`[^`\n]*\w\([^`\n]*`")       # code in backticks that calls something


def exercises(path):
    """(number, the attendee's copy has a code cell between prompt and solution, solution text)
    for each exercise of a lesson, read in the order a learner meets them."""
    found, current = [], None
    for cell in cells(path):
        if cell["cell_type"] == "code":
            if current and current[2] is None:
                current[1] = True
            continue
        text = source(cell)
        for piece in re.split(r"(?=\*\*\d\.\*\*)|(?=<details>)", text):
            if PROMPT.match(piece):
                current = [PROMPT.match(piece).group(1), False, None]
                found.append(current)
            elif piece.startswith("<details>") and current and current[2] is None:
                current[2] = piece
    return [tuple(e) for e in found]


LAB = [p for p in LESSONS if p.name < "06"]       # the 60-minute lab: 00-05


@pytest.mark.parametrize("path", LAB, ids=ids(LAB))
def test_an_exercise_answered_in_code_has_a_cell_to_write_it_in(path):
    """In the lab's lessons, when an exercise's solution is code (a call in backticks), the
    attendee's copy has a code cell under the question: a given one, or the empty answer cell
    that replaces the hidden solution (tools/make_attendee_copies.py). Lessons 06-08's code
    exercises change a cell already there (`train_fast`, the training loop) or run on a GPU."""
    for number, has_cell, solution in exercises(path):
        if solution and CALL.search(solution):
            assert has_cell, f"exercise {number}: its solution is code, and no cell is under it to write it in"


BENCH_WORDS = re.compile(r"compared by the tests|not compared|the tests? (check|compare)|a (unit )?test checks|"
                         r"\bnbval\b|\bpytest\b|tests/test_", re.I)


@pytest.mark.parametrize("path", LESSONS, ids=ids(LESSONS))
def test_no_test_bench_in_the_attendees_text(path):
    """What the test suite compares is cell metadata (tags) and INSTRUCTORS.md, not lesson prose."""
    found = BENCH_WORDS.search(markdown(path))
    assert not found, f"{found.group(0)!r}: the lesson's text speaks of the tests"


def names_bound_and_read(text):
    """(names a cell binds, names it reads before binding them itself), from its syntax tree."""
    tree = ast.parse(text)
    bound, read = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.Name):
            (bound if isinstance(node.ctx, ast.Store) else read).add(node.id)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    return bound, read


def core_reads_from_going_deeper(nb):
    """(cell index, name) for each core code cell that reads a name which, above it, only a
    Going deeper cell binds: a learner who leaves the folded sections unrun would meet a
    NameError there."""
    deeper, core_bound, deeper_bound, found = going_deeper(nb), set(), set(), []
    for i, cell in enumerate(cells(nb)):
        if cell["cell_type"] != "code":
            continue
        bound, read = names_bound_and_read(source(cell))
        if i in deeper:
            deeper_bound |= bound
            continue
        found += [(i, name) for name in sorted(read & deeper_bound - core_bound - bound)]
        core_bound |= bound
    return found


@pytest.mark.parametrize("path", LESSONS, ids=ids(LESSONS))
def test_the_core_path_runs_without_the_going_deeper_sections(path):
    assert core_reads_from_going_deeper(read(path)) == []


def test_a_core_cell_that_needs_a_going_deeper_cell_is_found():
    nb = {"cells": [{"cell_type": "markdown", "source": "## Going deeper: extra"},
                    {"cell_type": "code", "source": "extra = 1"},
                    {"cell_type": "markdown", "source": "## Core again"},
                    {"cell_type": "code", "source": "print(extra + 1)"}]}
    assert core_reads_from_going_deeper(nb) == [(3, "extra")]
    nb["cells"][2]["source"] = "### Core again"          # a lower heading stays in the fold
    assert core_reads_from_going_deeper(nb) == []


@pytest.mark.parametrize("path", LESSONS[:6], ids=ids(LESSONS[:6]))
def test_going_deeper_sections_open_folded_and_say_they_are_optional(path):
    nb = read(path)
    starts = [c for c in cells(nb) if (heading(c) or (0, ""))[1].startswith("Going deeper")]
    assert starts, "the lab's lessons each have optional sections"
    for cell in starts:
        assert cell["metadata"].get("jp-MarkdownHeadingCollapsed") is True, source(cell)[:60]
    assert "**Going deeper**" in markdown(LESSONS[0]) and "optional" in markdown(LESSONS[0])
