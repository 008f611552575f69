#!/usr/bin/env python3
"""Make the attendees' copies of the lessons: outputs cleared, exercise solutions removed.

    python tools/make_attendee_copies.py        # writes attendee/NN-name.ipynb
    python tools/make_attendee_copies.py DIR    # writes DIR/NN-name.ipynb (a room's home, say)

Made from the executed lessons in notebooks/; `python3 run.py lab` runs this on every start.
A copy is written when it is missing, or replaced when the lesson changed and the attendee has
not touched the copy (attendee/.made.json records what was written). A copy the attendee has
edited or run is never overwritten: when the lesson has changed since, the fresh version is
skipped and a line says how to get it (rename or delete the copy). In each copy:
- every output and execution count is cleared, so learners see the results only by running;
- every `<details>` block (the folded written solutions) is removed from the markdown;
- every code cell whose source is hidden (`jupyter.source_hidden`, the folded code solutions)
  is replaced by an empty cell to write the answer in.
The copies sit one folder below the repository, like notebooks/, so their links to ../images
and ../README.md keep working; copies made elsewhere get links to those (PAGES) beside their
folder. attendee/ holds the lessons only: they import the installed
package, `workshop`. Module files that earlier versions copied beside them (OLD_MODULES) would
shadow the package, so they are renamed to NAME.old, never deleted: an attendee's edits stay.
"""
import copy
import hashlib
import json
import re
import sys
from pathlib import Path

from workshop import lessons

SOURCE = lessons.NOTEBOOKS
OUT = lessons.REPO / "attendee"
DETAILS = re.compile(r"\n?<details>.*?</details>\n?", flags=re.S)
ANSWER_HERE = "# Your answer here\n"
PAGES = ("README.md", "INSTRUCTORS.md", "GLOSSARY.md", "images", "results")   # what the lessons use, one folder up
OLD_MODULES = ("workshop.py", "cifar10_data.py", "ddp_train.py", "ddp_launch.py")


def attendee_copy(nb):
    nb = copy.deepcopy(nb)
    for cell in nb["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            cell["source"] = DETAILS.sub("\n", source).strip("\n")
        elif cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
            meta = cell.get("metadata", {})
            if meta.get("jupyter", {}).get("source_hidden"):
                cell["source"] = ANSWER_HERE
                meta.pop("jupyter")
            meta.pop("execution", None)
    return nb


def digest(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def refresh(out=None, quiet=False):
    """Write or update the copies in `out` (default attendee/); return (written, kept) file names."""
    out = Path(out or OUT)
    out.mkdir(parents=True, exist_ok=True)
    record_path = out / ".made.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    written, kept = [], []
    for path in lessons.lesson_paths(SOURCE):
        nb = attendee_copy(lessons.read(path))
        fresh = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
        target = out / path.name
        if target.exists():
            current = target.read_text(encoding="utf-8")
            if current == fresh:
                record[path.name] = digest(fresh)
                continue
            if record.get(path.name) != digest(current):     # the attendee changed it: keep it,
                if record.get(path.name) != digest(fresh):   # and say so when the lesson is newer
                    kept.append(path.name)
                continue
        target.write_text(fresh, encoding="utf-8")
        record[path.name] = digest(fresh)
        written.append(path.name)
    if out.resolve().parent != lessons.REPO.resolve():     # elsewhere: link the repository's pages
        for name in PAGES:
            link = out.parent / name
            if not link.exists() and not link.is_symlink():
                link.symlink_to(lessons.REPO / name)
    moved = []
    for module in OLD_MODULES:                # would shadow the installed package: set aside
        if (out / module).exists():
            (out / module).replace(out / f"{module}.old")
            moved.append(module)
    record_path.write_text(json.dumps(record, indent=1) + "\n")
    if not quiet:
        for name in written:
            print(f"wrote {out.name}/{name}")
        for name in kept:
            print(f"kept your edited {out.name}/{name}; rename or delete it to get the fresh copy")
    for name in moved:
        print(f"renamed {out.name}/{name} to {name}.old: the lessons import the installed package now")
    return written, kept


def main(argv=()):
    refresh(argv[0] if argv else None)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
