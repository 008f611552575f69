#!/usr/bin/env python3
"""Set up and start the workshop with one command.

    python3 run.py lab     # create .venv if needed, fetch CIFAR-10 if needed, open JupyterLab
    python3 run.py test    # create .venv if needed, then run every test and re-run every notebook
    python3 run.py data    # only fetch and verify CIFAR-10

Options (before or after the command):
    --here     use the Python that runs this script (a conda environment, say) instead of .venv
    anything after `test` goes to pytest, e.g. `python3 run.py test -k data`

Standard library only, so it runs before anything is installed. Works on Linux, macOS and Windows.
"""
import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent
VENV = REPO / ".venv"
REQUIREMENTS = REPO / "requirements.txt"
STAMP = VENV / "requirements.sha256"


def say(msg):
    print(f"[workshop] {msg}", flush=True)


def venv_python():
    sub = ("Scripts", "python.exe") if os.name == "nt" else ("bin", "python")
    return VENV.joinpath(*sub)


def ensure_venv():
    """Create .venv and install requirements.txt into it, unless it is already up to date."""
    if sys.version_info < (3, 10):
        sys.exit(f"Python {sys.version.split()[0]} is too old: install Python 3.11 and run this again.")
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    py = venv_python()
    if py.exists() and STAMP.exists() and STAMP.read_text().strip() == wanted:
        return py
    if not py.exists():
        say(f"creating the environment in {VENV.name}/ (once)")
        venv.create(VENV, with_pip=True)
    say("installing the packages from requirements.txt (once; PyTorch is large, allow a few minutes)")
    done = subprocess.run([str(py), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)])
    if done.returncode != 0:
        sys.exit("Installing the packages failed (see pip's message above). Check your internet "
                 "connection, or follow 'Running with conda' in README.md.")
    STAMP.write_text(wanted + "\n")
    return py


def main(argv):
    here = "--here" in argv
    argv = [a for a in argv if a != "--here"]
    if not argv or argv[0] not in ("lab", "test", "data"):
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    py = Path(sys.executable) if here else ensure_venv()
    env = dict(os.environ, PYTHONPATH=str(REPO / "notebooks"))
    if command == "test":
        # tests/conftest.py prepares the data (offline), so the tests never download
        return subprocess.run([str(py), "-m", "pytest", *rest], cwd=REPO, env=env).returncode
    # lab and data: make sure CIFAR-10 is present and verified (downloads it when missing)
    fetch = ("import sys, workshop\n"
             "try:\n    workshop.find_cifar10()\n"
             "except workshop.WorkshopError as err:\n    sys.exit(f'[workshop] {err}')")
    if subprocess.run([str(py), "-c", fetch], cwd=REPO, env=env).returncode != 0:
        return 1
    if command == "lab":
        say("opening JupyterLab; start with notebooks/00-setup-check.ipynb (Ctrl+C here to stop)")
        return subprocess.run([str(py), "-m", "jupyter", "lab", "notebooks/00-setup-check.ipynb"],
                              cwd=REPO, env=env).returncode
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
