#!/usr/bin/env python3
"""Set up and start the workshop with one command.

    python3 run.py lab     # create .venv if needed, fetch CIFAR-10 if needed, open JupyterLab
    python3 run.py test    # create .venv if needed, then run every test and re-run every notebook
    python3 run.py data    # only fetch and verify CIFAR-10

Options:
    --here       use the Python that runs this script (a conda environment, say) instead of .venv
    lab:
      --executed   open the executed lessons in notebooks/ (instructors) instead of the
                   attendee copies in attendee/ (outputs and solutions removed)
      anything else goes to JupyterLab, e.g. `--port 9000`
    test:
      anything else goes to pytest, e.g. `python3 run.py test -k data`; without it,
      tools/run_tests.py runs everything (the lessons whose numbers depend on the CPU also on a
      second CPU path, see README.md)

Standard library only, so it runs before anything is installed. Works on Linux, macOS and Windows.
"""
import hashlib
import json
import os
import secrets
import socket
import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent
VENV = REPO / ".venv"
REQUIREMENTS = REPO / "requirements.txt"
STAMP = VENV / "requirements.sha256"
FIRST_LESSON = "00-setup-check.ipynb"
# JupyterLab settings shipped with the workshop's environment (never the user's own settings):
# no "get notified about Jupyter news?" prompt and no update check over a lesson
LAB_OVERRIDES = {"@jupyterlab/apputils-extension:notification": {"checkForUpdates": False,
                                                                  "fetchNews": "false"}}


def say(msg):
    print(f"[workshop] {msg}", flush=True)


def venv_python():
    sub = ("Scripts", "python.exe") if os.name == "nt" else ("bin", "python")
    return VENV.joinpath(*sub)


def ensure_venv():
    """Create .venv and install requirements.txt into it, unless it is already up to date."""
    if sys.version_info < (3, 10):
        sys.exit(f"Python {sys.version.split()[0]} is too old: install Python 3.11 and run this again.")
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes() + (REPO / "pyproject.toml").read_bytes()).hexdigest()
    py = venv_python()
    if py.exists() and STAMP.exists() and STAMP.read_text().strip() == wanted:
        return py
    if not py.exists():
        say(f"creating the environment in {VENV.name}/ (once)")
        venv.create(VENV, with_pip=True)
    say("installing the packages from requirements.txt (once; PyTorch is large, allow a few minutes)")
    # requirements.txt ends with `-e .`: the workshop's own package, editable, from this folder
    done = subprocess.run([str(py), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)], cwd=REPO)
    if done.returncode != 0:
        sys.exit("Installing the packages failed (see pip's message above). Check your internet "
                 "connection, or follow 'Running with conda' in README.md.")
    STAMP.write_text(wanted + "\n")
    return py


# ----------------------------------------------------------------------------- test

def test(py, rest, env):
    """The test command, tools/run_tests.py (its docstring says what it runs), in the environment."""
    return subprocess.run([str(py), str(REPO / "tools" / "run_tests.py"), *rest], cwd=REPO, env=env).returncode


# ----------------------------------------------------------------------------- lab

def option(args, name):
    """The value of `--name VALUE` or `--name=VALUE` in args, else None."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def free_port(ip, start=8888):
    for port in range(start, start + 100):
        with socket.socket() as s:
            try:
                s.bind((ip if ip not in ("", "*") else "0.0.0.0", port))
                return port
            except OSError:
                continue
    sys.exit(f"[workshop] no free port between {start} and {start + 99}: pass --port N")


def write_lab_overrides(py, env):
    """Put the workshop's JupyterLab settings into the environment that runs JupyterLab."""
    prefix = subprocess.run([str(py), "-c", "import sys; print(sys.prefix)"], env=env,
                            capture_output=True, text=True).stdout.strip()
    target = Path(prefix) / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    try:
        current = json.loads(target.read_text()) if target.exists() else {}
        current.update(LAB_OVERRIDES)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(current, indent=2) + "\n")
    except (OSError, ValueError):
        pass                    # a read-only environment: the prompt may show, nothing else changes


def has_display():
    if sys.platform != "linux":
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def lab_command(py, rest, folder, is_root, display, root=REPO):
    """The JupyterLab command line, the URL to open and what to tell the user about it."""
    args = list(rest)
    ip = option(args, "--ip") or "127.0.0.1"
    port = option(args, "--port")
    if port is None:
        port = str(free_port(ip))
        args += ["--port", port]
    token = option(args, "--IdentityProvider.token") or option(args, "--ServerApp.token")
    if token is None:
        token = secrets.token_hex(16)
        args.append(f"--IdentityProvider.token={token}")
    notes = []
    if is_root and "--allow-root" not in args:
        args.append("--allow-root")
        notes.append("running as root (usual in containers and cloud machines): JupyterLab "
                     "starts with --allow-root")
    if not display and "--no-browser" not in args:
        args.append("--no-browser")
        notes.append("no display here: open the address below in a browser")
    page = f"lab/tree/{folder}/{FIRST_LESSON}"
    host = "127.0.0.1" if ip in ("0.0.0.0", "", "*", "::") else ip
    url = f"http://{host}:{port}/{page}?token={token}"
    command = [str(py), "-m", "jupyter", "lab", f"--ServerApp.root_dir={root}",
               f"--LabApp.default_url=/{page}", *args]
    return command, url, notes


def lab(py, rest, env):
    executed = "--executed" in rest
    rest = [a for a in rest if a != "--executed"]
    folder = "notebooks" if executed else "attendee"
    if not executed:                  # attendee/: made on the first start, refreshed, never overwritten
        made = subprocess.run([str(py), str(REPO / "tools" / "make_attendee_copies.py")], cwd=REPO, env=env)
        if made.returncode != 0:
            return made.returncode
    write_lab_overrides(py, env)
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    command, url, notes = lab_command(py, rest, folder, is_root, has_display())
    for note in notes:
        say(note)
    bar = "=" * min(100, len(url) + 4)
    print(f"\n{bar}\n  Open the workshop ({folder}/, lesson 00 first):\n  {url}\n{bar}\n"
          f"[workshop] Ctrl+C here stops JupyterLab.\n", flush=True)
    return subprocess.run(command, cwd=REPO, env=env).returncode


def main(argv):
    here = "--here" in argv
    argv = [a for a in argv if a != "--here"]
    if not argv or argv[0] not in ("lab", "test", "data"):
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    py = Path(sys.executable) if here else ensure_venv()
    env = dict(os.environ)
    if command == "test":
        # conftest.py prepares the data (offline), so the tests never download
        return test(py, rest, env)
    # lab and data: make sure CIFAR-10 is present and verified (downloads it when missing)
    fetch = ("import sys\nfrom workshop.data import WorkshopError, find_cifar10\n"
             "try:\n    find_cifar10()\n"
             "except WorkshopError as err:\n    sys.exit(f'[workshop] {err}')")
    if subprocess.run([str(py), "-c", fetch], cwd=REPO, env=env).returncode != 0:
        return 1
    if command == "lab":
        try:
            return lab(py, rest, env)
        except KeyboardInterrupt:
            return 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
