"""The lesson notebooks as files: reading their cells, and executing them with nbclient.

Every tool and test that reads or runs a lesson goes through here, so that there is one way to
find the lessons, one idea of a cell's source and tags, and one notebook executor. No lesson
imports this module.

    REPO, NOTEBOOKS, lesson_paths    where the lessons are, in their order
    read, cells, source, tags        a notebook's JSON, its cells, a cell's text and tags
    markdown, code                   a lesson's markdown text, its code cells
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


def execute(path, dest=None, timeout=900, env=None, cwd=None):
    """Run the notebook at `path` top to bottom in a fresh kernel of this Python, as Jupyter's
    "Restart Kernel and Run All" does, and return it with its outputs (also written to `dest`,
    when given). `env` is the kernel's environment (default: this process's), less any
    MPLBACKEND, so that figures are stored as Jupyter shows them; the kernel starts
    in `cwd` (default: the notebook's folder). Stops at the first cell that raises."""
    import nbformat
    from nbclient import NotebookClient
    nb = nbformat.read(str(path), as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(cwd or Path(path).parent)}})
    kernel_env = dict(os.environ if env is None else env)
    kernel_env.pop("MPLBACKEND", None)      # figures inline, as in Jupyter (Agg would draw none)
    client.execute(env=kernel_env)
    nb.metadata["language_info"] = {"name": "python", "version": "3.11"}   # no patch version stored
    if dest is not None:
        nbformat.write(nb, str(dest))
    return nb
