#!/usr/bin/env python3
"""Write the navigation line of every lesson: under its title and at its end.

    python tools/make_navigation.py            # rewrite the lines that differ
    python tools/make_navigation.py --check    # only report them (exit 1 if any)

The line links the previous lesson, the README's list of all lessons, and the next lesson,
with the short titles below. A new lesson needs one entry in SHORT_TITLES and a run of this
script; its neighbours' lines follow. tests/test_lessons.py fails while a line is out of date
(it calls update(write=False), the same check as --check).
"""
import sys
from pathlib import Path

from workshop import lessons as notebooks
SHORT_TITLES = {
    "00-setup-check": "Setup check",
    "01-tensors": "Tensors",
    "02-data": "CIFAR-10 data",
    "03-cnn": "The CNN",
    "04-loss-and-optimizer": "Loss and optimizer",
    "05-training-on-cpu": "Training on the CPU",
    "06-gpu": "Same code, on a GPU",
    "07-fast-training": "Bonus: 94% in seconds",
    "08-scaling-out": "Scaling out",
}
ALL_LESSONS = "[All lessons](../README.md)"
GLOSSARY = "[Glossary](../GLOSSARY.md)"


def lessons():
    return notebooks.lesson_paths()


def label(path):
    if path.stem not in SHORT_TITLES:
        sys.exit(f"{path.name} has no short title: add it to SHORT_TITLES in {Path(__file__).name}")
    return f"{path.stem[:2]} {SHORT_TITLES[path.stem]}"


def navigation(paths, i):
    parts = [ALL_LESSONS, GLOSSARY]
    if i > 0:
        parts.insert(0, f"[← {label(paths[i - 1])}]({paths[i - 1].name})")
    if i + 1 < len(paths):
        parts.append(f"[{label(paths[i + 1])} →]({paths[i + 1].name})")
    return " · ".join(parts)


def with_line(lines, index, line):
    """lines with the navigation line at `index` replaced (or, if there is none, inserted)."""
    lines = list(lines)
    if index < len(lines) and ALL_LESSONS in lines[index]:
        lines[index] = line
    else:
        lines.insert(index if index >= 0 else len(lines), line)
    return lines


def source_lines(cell):
    return "".join(cell["source"]).split("\n")


def set_source(cell, lines):
    text = "\n".join(lines)
    cell["source"] = [l + "\n" for l in text.split("\n")[:-1]] + [text.split("\n")[-1]]


def update(write=True):
    """Bring every lesson's navigation up to date; return the names of those that were not."""
    paths, stale = lessons(), []
    for i, path in enumerate(paths):
        nb = notebooks.read(path)
        line = navigation(paths, i)
        first, last = nb["cells"][0], nb["cells"][-1]
        new_first = with_line(source_lines(first), 1, line)
        old_last = source_lines(last)
        new_last = with_line(old_last, len(old_last) - 1, line)
        if new_last[-1] != line:                                  # no line there yet: append one
            new_last = old_last + ["", line]
        if new_first == source_lines(first) and new_last == old_last:
            continue
        stale.append(path.name)
        if write:
            set_source(first, new_first)
            set_source(last, new_last)
            notebooks.write(nb, path)
    return stale


def main(argv):
    check = "--check" in argv
    stale = update(write=not check)
    for name in stale:
        print(f"{'out of date' if check else 'updated'}: {name}")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
