#!/usr/bin/env python3
"""Write the package's taught modules from the lessons' cells: one source for every definition.

    python tools/export_lessons.py           # rewrite workshop/images.py, nets.py, ... from the lessons
    python tools/export_lessons.py --check   # change nothing; fail if a module and its lesson disagree

A code cell tagged `export` (cell metadata, which attendees never see) gives the package every
top-level function, class and UPPER_CASE constant it defines, in the lesson's order; the cell's
other lines (a demonstration, a print) stay in the lesson. Each definition is headed by the
lesson and section it comes from. A module's imports are the lesson's own import lines that its
definitions use, so a definition can only use what the lesson imported. The lesson that a module
comes from is in MODULES below: add a line there for a new lesson that exports.
"""
import argparse
import ast
import builtins
import sys

from workshop import lessons

# lesson -> (module in workshop/, what it holds, in a few words)
MODULES = {
    "02-data": ("images", "the statistics that normalise CIFAR-10's images"),
    "03-cnn": ("nets", "the networks"),
    "05-training-on-cpu": ("training", "the training recipe and loop, testing and accuracy"),
    "06-gpu": ("gpu", "timing on a GPU"),
    "07-fast-training": ("fast", "the fast-training recipe"),
    "08-scaling-out": ("distributed", "data-parallel training"),
}
TAG = "export"
PACKAGE = lessons.REPO / "workshop"


def is_exported(node):
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        return True
    return isinstance(node, ast.Assign) and all(
        isinstance(t, ast.Name) and t.id.isupper() for t in node.targets)


def defined_names(node):
    if isinstance(node, ast.Assign):
        return [t.id for t in node.targets]
    return [node.name]


def used_names(node):
    """The names a definition reads from outside itself (its arguments and locals left out)."""
    local = {a.arg for n in ast.walk(node) if isinstance(n, ast.arguments)
             for a in n.posonlyargs + n.args + n.kwonlyargs + [n.vararg, n.kwarg] if a is not None}
    local |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    local |= {n.name for n in ast.walk(node) if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n is not node}
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)} - local


def lesson_imports(path):
    """{name bound: (module, imported name or None, alias)} for every import line of the lesson."""
    found = {}
    for cell in lessons.code(path):
        for node in ast.parse(lessons.source(cell)).body:
            if isinstance(node, ast.Import):
                for a in node.names:
                    found[a.asname or a.name.split(".")[0]] = (a.name if a.asname else a.name.split(".")[0], None, a.asname)
            elif isinstance(node, ast.ImportFrom):
                for a in node.names:
                    found[a.asname or a.name] = (node.module, a.name, a.asname)
    return found


def exported(path):
    """[(section heading, names, source lines)] of the lesson's exported definitions, in order."""
    found, heading = [], None
    for cell in lessons.cells(path):
        text = lessons.source(cell)
        if cell["cell_type"] == "markdown":
            titles = [line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#")]
            heading = titles[-1] if titles else heading
            continue
        if cell["cell_type"] != "code" or TAG not in lessons.tags(cell):
            continue
        lines = text.splitlines()
        tree = ast.parse(text)
        chosen = [node for node in tree.body if is_exported(node)]
        if not chosen:
            raise SystemExit(f"{path.name}: a cell tagged {TAG!r} defines nothing to export:\n{text[:200]}")
        for node in chosen:
            first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
            found.append((heading, node, "\n".join(lines[first - 1:node.end_lineno])))
    return found


def import_lines(path, needed):
    """The lesson's import statements for `needed` names, as `import x` lines then `from` lines."""
    known = lesson_imports(path)
    missing = sorted(needed - set(known))
    if missing:
        raise SystemExit(f"{path.name}: exported code uses {missing}, which the lesson neither "
                         f"imports nor exports: import it in the lesson, or tag its cell {TAG!r}")
    plain, froms = set(), {}
    for name in needed:
        module, what, alias = known[name]
        if what is None:
            plain.add(f"import {module}" + (f" as {alias}" if alias else ""))
        else:
            froms.setdefault(module, set()).add(what + (f" as {alias}" if alias else ""))
    outside = sorted(plain) + [f"from {m} import {', '.join(sorted(n))}" for m, n in sorted(froms.items())
                               if not m.startswith("workshop")]
    ours = [f"from {m} import {', '.join(sorted(n))}" for m, n in sorted(froms.items()) if m.startswith("workshop")]
    return outside + ([""] if outside and ours else []) + ours


def module_text(path):
    """The text of the module that the lesson at `path` exports."""
    module, what = MODULES[path.stem]
    definitions = exported(path)
    own = {name for _, node, _ in definitions for name in defined_names(node)}
    needed = set().union(*(used_names(node) for _, node, _ in definitions)) - own - set(dir(builtins))
    title = lessons.source(lessons.cells(path)[0]).splitlines()[0].lstrip("# ").strip()
    names = ", ".join(name for _, node, _ in definitions for name in defined_names(node))
    head = [f'"""Lesson {title}: {what}, as the lesson writes them out.',
            "",
            f"    {names}",
            "",
            f"Made from the cells tagged {TAG!r} in notebooks/{path.name} by tools/export_lessons.py:",
            "edit the lesson, then run that tool; tests fail while the two disagree.",
            '"""']
    body = []
    for heading, node, text in definitions:
        body += ["", "", f"# lesson {path.stem[:2]}, {heading}" if heading else f"# lesson {path.stem[:2]}", text]
    return "\n".join(head + import_lines(path, needed) + body) + "\n"


def expected_modules():
    """{path of the module file: the text the lessons give it}."""
    found = {}
    for path in lessons.lesson_paths():
        if path.stem in MODULES:
            found[PACKAGE / f"{MODULES[path.stem][0]}.py"] = module_text(path)
        elif any(TAG in lessons.tags(c) for c in lessons.code(path)):
            raise SystemExit(f"{path.name} has cells tagged {TAG!r} but no module in MODULES")
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if a module differs from its lesson")
    args = parser.parse_args(argv)
    stale = [path for path, text in expected_modules().items()
             if not path.exists() or path.read_text(encoding="utf-8") != text]
    if args.check:
        for path in stale:
            print(f"workshop/{path.name} differs from its lesson: edit the lesson, then run "
                  f"`python tools/export_lessons.py` (never edit the module by hand)")
        return 1 if stale else 0
    for path, text in expected_modules().items():
        if path in stale:
            path.write_text(text, encoding="utf-8")
            print(f"wrote workshop/{path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
