"""The lesson notebooks as files: reading their cells, and executing them with nbclient.

Every tool and test that reads or runs a lesson goes through here, so that there is one way to
find the lessons, one idea of a cell's source and tags, and one notebook executor. No lesson
imports this module.

    REPO, NOTEBOOKS, lesson_paths    where the lessons are, in their order
    read, cells, source, tags        a notebook's JSON, its cells, a cell's text and tags
    markdown, code                   a lesson's markdown text, its code cells
    heading, going_deeper            a cell's first heading; the cells of the optional sections
    execute                          run a notebook top to bottom in a fresh kernel (nbclient)
"""
import json
import os
from pathlib import Path

from workshop.data import REPO

NOTEBOOKS = REPO / "notebooks"


def lesson_paths(folder=NOTEBOOKS):
    """The numbered lessons, 00 first."""
    return sorted(Path(folder).glob("[0-9][0-9]-*.ipynb"))


def read(path):
    """A notebook as the dict that nbformat writes (its JSON)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write(nb, path):
    """Store a notebook as Jupyter does: indented JSON, a newline at the end."""
    Path(path).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def cells(nb_or_path):
    nb = nb_or_path if isinstance(nb_or_path, dict) else read(nb_or_path)
    return nb["cells"]


def source(cell):
    text = cell["source"]
    return text if isinstance(text, str) else "".join(text)


def tags(cell):
    return set(cell.get("metadata", {}).get("tags", []))


def markdown(nb_or_path):
    """All of a lesson's markdown, one cell after the other."""
    return "\n".join(source(c) for c in cells(nb_or_path) if c["cell_type"] == "markdown")


def code(nb_or_path):
    """A lesson's code cells, in order."""
    return [c for c in cells(nb_or_path) if c["cell_type"] == "code"]


def heading(cell):
    """(level, text) of a markdown cell's first line when it is a heading, else None. JupyterLab
    folds a cell's section by this heading: down to the next cell whose heading is as high."""
    if cell["cell_type"] != "markdown":
        return None
    first = source(cell).lstrip("\n").split("\n", 1)[0]
    marks = len(first) - len(first.lstrip("#"))
    if not 1 <= marks <= 6 or first[marks:marks + 1] != " ":
        return None
    return marks, first[marks:].strip()


GOING_DEEPER = "Going deeper"


def going_deeper(nb_or_path):
    """Indices of the cells in a lesson's optional sections: each starts at a heading whose text
    starts "Going deeper" and runs down to the next heading of the same or a higher level."""
    inside, level = set(), None
    for i, cell in enumerate(cells(nb_or_path)):
        found = heading(cell)
        if found and level is not None and found[0] <= level:
            level = None
        if found and level is None and found[1].startswith(GOING_DEEPER):
            level = found[0]
        if level is not None:
            inside.add(i)
    return inside


def execute(path, dest=None, timeout=900, env=None, cwd=None, record_timing=False):
    """Run the notebook at `path` top to bottom in a fresh kernel of this Python, as Jupyter's
    "Restart Kernel and Run All" does, and return it with its outputs (also written to `dest`,
    when given), and with each cell's start and end times in its metadata when `record_timing`.
    `env` is the kernel's environment (default: this process's), less any MPLBACKEND, so that
    figures are stored as Jupyter shows them; the kernel starts in `cwd` (default: the
    notebook's folder). Stops at the first cell that raises."""
    import nbformat
    from nbclient import NotebookClient
    nb = nbformat.read(str(path), as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=record_timing,
                            resources={"metadata": {"path": str(cwd or Path(path).parent)}})
    kernel_env = dict(os.environ if env is None else env)
    kernel_env.pop("MPLBACKEND", None)      # figures inline, as in Jupyter (Agg would draw none)
    client.execute(env=kernel_env)
    nb.metadata["language_info"] = {"name": "python", "version": "3.11"}   # no patch version stored
    if dest is not None:
        nbformat.write(nb, str(dest))
    return nb
