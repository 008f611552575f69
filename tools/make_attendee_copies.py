#!/usr/bin/env python3
"""Make the attendees' copies of the lessons: outputs cleared, exercise solutions removed.

    python tools/make_attendee_copies.py        # writes attendee/NN-name.ipynb and attendee/workshop.py

Made from the executed lessons in notebooks/, never edited by hand: run this again after any
change to a lesson. In each copy:
- every output and execution count is cleared, so learners see the results only by running;
- every `<details>` block (the folded written solutions) is removed from the markdown;
- every code cell whose source is hidden (`jupyter.source_hidden`, the folded code solutions)
  is replaced by an empty cell to write the answer in.
The copies sit one folder below the repository, like notebooks/, so their links to ../images
and ../README.md keep working; workshop.py is copied beside them.
"""
import copy
import json
import re
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "notebooks"
OUT = REPO / "attendee"
DETAILS = re.compile(r"\n?<details>.*?</details>\n?", flags=re.S)
ANSWER_HERE = "# Your answer here\n"


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


def main():
    OUT.mkdir(exist_ok=True)
    for path in sorted(SOURCE.glob("[0-9][0-9]-*.ipynb")):
        nb = attendee_copy(json.loads(path.read_text(encoding="utf-8")))
        (OUT / path.name).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(OUT / path.name)
    shutil.copy(SOURCE / "workshop.py", OUT / "workshop.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
