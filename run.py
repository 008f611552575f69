#!/usr/bin/env python3
"""Set up and start the workshop with one command.

    python3 run.py lab     # create .venv if needed, fetch CIFAR-10 if needed, open JupyterLab
    python3 run.py test    # create .venv if needed, then run every test and re-run every notebook
    python3 run.py data    # only fetch and verify CIFAR-10
    python3 run.py hub     # serve a room: JupyterHub, one account and copy per attendee (Linux, root)

Options:
    --here       use the Python that runs this script (a conda environment, say) instead of .venv
    lab:
      --executed   open the executed lessons in notebooks/ (instructors) instead of the
                   attendee copies in attendee/ (outputs and solutions removed)
      anything else goes to JupyterLab, e.g. `--port 9000`; one person's lab: for a room, `hub`
    hub:
      --prefix DIR  where the room's shared, read-only install goes (default /opt/workshop)
      --prepare     install only (the day before), start nothing
      anything else goes to workshop/hub.py: `python3 run.py hub --help` lists it
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
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent
VENV = REPO / ".venv"
REQUIREMENTS = REPO / "requirements.txt"
HUB_REQUIREMENTS = REPO / "requirements-hub.txt"
HUB_PREFIX = Path("/opt/workshop")
PROXY = "configurable-http-proxy@5.3.0"     # JupyterHub's proxy, from npm (it runs on Node.js)
FIRST_LESSON = "00-setup-check.ipynb"
# JupyterLab settings shipped with the workshop's environment (never the user's own settings):
# no "get notified about Jupyter news?" prompt and no update check over a lesson
LAB_OVERRIDES = {"@jupyterlab/apputils-extension:notification": {"checkForUpdates": False,
                                                                  "fetchNews": "false"}}


def say(msg):
    print(f"[workshop] {msg}", flush=True)


def venv_python(folder=VENV):
    sub = ("Scripts", "python.exe") if os.name == "nt" else ("bin", "python")
    return folder.joinpath(*sub)


def ensure_venv(folder=VENV, base=None, requirements=(REQUIREMENTS,), root=REPO):
    """Create the environment `folder` (from the Python `base`, default this one) and install
    `requirements` into it, unless it is already up to date. The files name the workshop's own
    package as `-e .`: the one in `root`."""
    if sys.version_info < (3, 10):
        sys.exit(f"Python {sys.version.split()[0]} is too old: install Python 3.11 and run this again.")
    stamp = folder / "requirements.sha256"
    wanted = hashlib.sha256(b"".join(f.read_bytes() for f in (*requirements, root / "pyproject.toml"))).hexdigest()
    py = venv_python(folder)
    if py.exists() and stamp.exists() and stamp.read_text().strip() == wanted:
        return py
    if not py.exists():
        say(f"creating the environment in {shown(folder)}/ (once)")
        if base is None:
            venv.create(folder, with_pip=True)
        elif subprocess.run([str(base), "-m", "venv", str(folder)]).returncode != 0:
            sys.exit(f"[workshop] {base} could not make an environment: install its venv module "
                     f"(Debian and Ubuntu: apt install python3-venv) and run this again.")
    names = " and ".join(f.name for f in requirements)
    say(f"installing the packages from {names} (once; PyTorch is large, allow a few minutes)")
    listed = [arg for f in requirements for arg in ("-r", str(f))]
    done = subprocess.run([str(py), "-m", "pip", "install", "-q", *listed], cwd=root)
    if done.returncode != 0:
        sys.exit("Installing the packages failed (see pip's message above). Check your internet "
                 "connection, or follow 'Running with conda' in README.md.")
    stamp.write_text(wanted + "\n")
    return py


def shown(path):
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def data_ready(py, env, root=REPO, data=None):
    """CIFAR-10 present and verified in `data` (default: where the workshop in `root` looks),
    downloaded when missing, by the environment `py`; else one line says why, and False."""
    fetch = ("import sys\nfrom workshop.data import WorkshopError, find_cifar10\n"
             f"try:\n    find_cifar10({None if data is None else str(data)!r})\n"
             "except WorkshopError as err:\n    sys.exit(f'[workshop] {err}')")
    return subprocess.run([str(py), "-c", fetch], cwd=root, env=env).returncode == 0


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


def lab_command(py, rest, folder, is_root, display, root=REPO, workspaces=None):
    """The JupyterLab command line, the URL to open and what to tell the user about it.
    `workspaces`: the folder JupyterLab keeps its open tabs in; a fresh one for each start means
    the first screen is lesson 00, never a tab restored from an earlier session."""
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
    if ip not in ("127.0.0.1", "localhost", "::1"):
        notes.append(f"--ip {ip}: everyone who has the address below shares this one folder and "
                     f"its kernels; to teach a room, start `python3 run.py hub` instead")
    if not display and "--no-browser" not in args:
        args.append("--no-browser")
        notes.append("no display here: open the address below in a browser")
    page = f"lab/tree/{folder}/{FIRST_LESSON}"
    host = "127.0.0.1" if ip in ("0.0.0.0", "", "*", "::") else ip
    url = f"http://{host}:{port}/{page}?token={token}"
    command = [str(py), "-m", "jupyter", "lab", f"--ServerApp.root_dir={root}",
               *([f"--LabApp.workspaces_dir={workspaces}"] if workspaces is not None else []),
               f"--LabApp.default_url=/{page}", *args]
    return command, url, notes


class Stop(Exception):
    """SIGTERM or SIGHUP reached run.py."""


def serve(command, env, grace=30):
    """Run JupyterLab until it exits. Ctrl+C, SIGTERM or SIGHUP (a closed terminal) to run.py
    stop it the way JupyterLab stops itself: SIGTERM, on which it shuts its kernels down, then
    SIGKILL if it has not exited after `grace` seconds. Nothing is left serving on the port."""
    def stop(signum, frame):
        raise Stop(signum)
    signals = [getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]
    previous = {s: signal.signal(s, stop) for s in signals}
    server = subprocess.Popen(command, cwd=REPO, env=env)
    try:
        return server.wait()
    except (Stop, KeyboardInterrupt):
        for s in signals:                         # a second signal must not cut the shutdown short
            signal.signal(s, signal.SIG_IGN)
        server.terminate()
        try:
            server.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        say("JupyterLab stopped, with its kernels")
        return 0
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


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
    with tempfile.TemporaryDirectory(prefix="workshop-lab-") as workspaces:
        command, url, notes = lab_command(py, rest, folder, is_root, has_display(), workspaces=workspaces)
        for note in notes:
            say(note)
        bar = "=" * min(100, len(url) + 4)
        print(f"\n{bar}\n  Open the workshop ({folder}/, lesson 00 first):\n  {url}\n{bar}\n"
              f"[workshop] Ctrl+C here stops JupyterLab and its kernels.\n", flush=True)
        return serve(command, env)

# ----------------------------------------------------------------------------- hub

def system_python():
    """A Python 3.10+ that every account may run: the operating system's, not one under a home
    (a venv made from a Python in /root cannot be run by the attendees' accounts)."""
    for candidate in ("/usr/bin/python3.11", "/usr/bin/python3", "/usr/local/bin/python3.11",
                      "/usr/local/bin/python3"):
        path = Path(candidate)
        if not path.exists():
            continue
        real = path.resolve()
        if any(not os.stat(folder).st_mode & 0o001 for folder in real.parents):
            continue                                   # a folder on the way is closed to others
        version = subprocess.run([str(real), "-c", "import sys, venv; print(sys.version_info >= (3, 10))"],
                                 capture_output=True, text=True).stdout.strip()
        if version == "True":
            return real
    sys.exit("[workshop] No Python 3.10+ with venv that every account can run: install the "
             "system's (Debian and Ubuntu: apt install python3 python3-venv) and run this again.")


def tracked_files():
    """The workshop's files: those git keeps or would (not what it ignores), else the folder's."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, text=True) \
        if (REPO / ".git").exists() else None
    if listed is not None and listed.returncode == 0:
        return [name for name in listed.stdout.split("\0") if name and (REPO / name).is_file()]
    skip = {".venv", ".git", "data", "build", "attendee", "checkpoints", "__pycache__"}
    return [str(path.relative_to(REPO)) for path in REPO.rglob("*")
            if path.is_file() and not skip & set(path.relative_to(REPO).parts)
            and not path.name.endswith(".egg-info")]


def copy_workshop(prefix):
    """Copy the workshop into `prefix` (a place every account can read), file by file: changed
    files are replaced, files the workshop no longer has are removed, nothing else is touched."""
    record = prefix / ".copied.json"
    before = set(json.loads(record.read_text())) if record.exists() else set()
    files = tracked_files()
    for name in files:
        source, target = REPO / name, prefix / name
        content = source.read_bytes()
        if not target.exists() or target.read_bytes() != content:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
    for name in before - set(files):
        (prefix / name).unlink(missing_ok=True)
    record.write_text(json.dumps(sorted(files), indent=0) + "\n")


def ensure_proxy(prefix):
    """configurable-http-proxy, JupyterHub's proxy, installed from npm into prefix/proxy/."""
    command = prefix / "proxy" / "node_modules" / ".bin" / "configurable-http-proxy"
    if command.exists():
        return command
    if shutil.which("npm") is None and shutil.which("apt-get"):
        say("installing Node.js and npm for JupyterHub's proxy (apt-get, once)")
        subprocess.run(["apt-get", "install", "-y", "-qq", "nodejs", "npm"], stdout=subprocess.DEVNULL)
    if shutil.which("npm") is None:
        sys.exit("[workshop] JupyterHub's proxy needs Node.js and npm: install them "
                 "(https://nodejs.org, or apt install nodejs npm) and run this again.")
    say(f"installing {PROXY} with npm (once)")
    done = subprocess.run(["npm", "install", "--prefix", str(prefix / "proxy"), "--no-audit",
                           "--no-fund", "--loglevel=error", PROXY], stdout=subprocess.DEVNULL)
    if done.returncode != 0 or not command.exists():
        sys.exit(f"[workshop] npm could not install {PROXY} (its message is above): check the "
                 f"internet connection and run this again.")
    return command


def hub(rest):
    """Install the workshop for a room in a shared prefix, then start workshop/hub.py from it."""
    if sys.platform != "linux" or not hasattr(os, "geteuid") or os.geteuid() != 0:
        sys.exit("[workshop] run.py hub serves a room from a Linux server and makes an account per "
                 "attendee, so it runs as root: sudo python3 run.py hub")
    prefix = Path(option(rest, "--prefix") or HUB_PREFIX).resolve()
    rest = [a for i, a in enumerate(rest) if not (a.startswith("--prefix") or (i and rest[i - 1] == "--prefix"))]
    prepare = "--prepare" in rest
    rest = [a for a in rest if a != "--prepare"]
    if "-h" in rest or "--help" in rest:
        prepare = False
    if prefix == REPO or prefix.is_relative_to(REPO) or REPO.is_relative_to(prefix):
        sys.exit(f"[workshop] --prefix {prefix} must be outside the repository ({REPO}) and not above it")
    os.umask(0o022)                                    # what is installed can be read by everyone
    base = system_python()
    say(f"the room's shared install: {prefix} (read-only for attendees)")
    copy_workshop(prefix)
    py = ensure_venv(prefix / ".venv", base, (prefix / REQUIREMENTS.name, prefix / HUB_REQUIREMENTS.name), prefix)
    proxy = ensure_proxy(prefix)
    env = dict(os.environ)
    write_lab_overrides(py, env)
    if "-h" not in rest and "--help" not in rest:
        if not data_ready(py, env, prefix, prefix / "data"):
            return 1
    if prepare:
        say(f"ready: `python3 run.py hub` starts the room (the install is in {prefix})")
        return 0
    os.chdir(prefix)                  # the hub replaces this process: Ctrl+C and signals reach it
    os.execve(str(py), [str(py), "-m", "workshop.hub", "--proxy", str(proxy), *rest], env)


def main(argv):
    here = "--here" in argv
    argv = [a for a in argv if a != "--here"]
    if not argv or argv[0] not in ("lab", "test", "data", "hub"):
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    if command == "hub":
        try:
            return hub(rest)
        except KeyboardInterrupt:
            return 0
    py = Path(sys.executable) if here else ensure_venv()
    env = dict(os.environ)
    if command == "test":
        # conftest.py prepares the data (offline), so the tests never download
        return test(py, rest, env)
    # lab and data: make sure CIFAR-10 is present and verified (downloads it when missing)
    if not data_ready(py, env):
        return 1
    if command == "lab":
        try:
            return lab(py, rest, env)
        except KeyboardInterrupt:     # before JupyterLab started (it stops itself: serve)
            return 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
