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
      anything else goes to JupyterLab, e.g. `--ip 0.0.0.0 --port 9000` on a classroom server
    test:
      anything else goes to pytest, e.g. `python3 run.py test -k data`; without it, the lessons
      whose numbers depend on the CPU are also re-run on a second CPU path (see README.md)

Standard library only, so it runs before anything is installed. Works on Linux, macOS and Windows.
"""
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
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
# lessons whose compared outputs come from floating-point training or convolutions: the test
# command re-runs them on a second CPU path, so that stored outputs hold on every kind of CPU
CPU_DEPENDENT = ["01-tensors", "03-cnn", "04-loss-and-optimizer", "05-training-on-cpu",
                 "07-fast-training"]
CHEAP = ["01-tensors", "03-cnn", "04-loss-and-optimizer"]


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


# ----------------------------------------------------------------------------- test

def second_cpu_path(capability, has_bfloat16, machine):
    """(environment, lessons, description) of the second CPU path the lessons are checked on.

    A CPU with AVX-512 or native bfloat16 also runs the CPU-dependent lessons as a laptop with
    AVX2 and float32 does; an AVX2 CPU without bfloat16 (already that path) runs the cheap ones
    on PyTorch's plain vector-free kernels. Returns None where no second path can be forced.
    """
    if machine.lower() not in ("x86_64", "amd64"):
        return None
    if capability != "AVX2" or has_bfloat16:
        env = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "WORKSHOP_BFLOAT16": "0"}
        return env, CPU_DEPENDENT, "AVX2 kernels and float32, as on most laptops"
    env = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "WORKSHOP_BFLOAT16": "0"}
    return env, CHEAP, "PyTorch's plain kernels (no AVX) and float32"


# lessons whose checks compare timings they measure (05: its training time with the estimate it
# printed; 06: the speed of batch sizes and of number types): they get the machine to themselves
ALONE = ["05-training-on-cpu", "06-gpu"]
# what mostly starts processes (torchrun jobs, JupyterLab and a browser): one run of its own
STARTS_PROCESSES = ["tests/test_distributed.py", "tests/test_exercises.py",
                    "tests/test_attendee_view.py", "notebooks/08-scaling-out.ipynb"]
SIDE_BY_SIDE = 3       # pytest runs at a time: 2 cores stay busy while runs start processes


def lesson_paths(names):
    return [f"notebooks/{name}.ipynb" for name in names]


def test_plan(lessons, test_files, second):
    """The full test command as (alone, side_by_side), lists of pytest runs, each (title, pytest
    args, extra environment). `alone` runs first, one run after the other, with the machine to
    itself: the lessons that time themselves (ALONE). Then `side_by_side` runs SIDE_BY_SIDE at a
    time, the next starting when one ends: the tests in tests/; the tests that mostly start
    processes, with lesson 08; the other lessons. `second` is second_cpu_path()'s answer, or None:
    its lessons run again on that path, those in ALONE alone, the others side by side."""
    alone = [("lessons " + " ".join(n[:2] for n in ALONE), lesson_paths([n for n in ALONE if n in lessons]), {})]
    tests = [f for f in test_files if f not in STARTS_PROCESSES]
    others = [n for n in lessons if n not in ALONE and f"notebooks/{n}.ipynb" not in STARTS_PROCESSES]
    side_by_side = [("tests", tests, {}),
                    ("processes: " + " ".join(Path(f).stem for f in STARTS_PROCESSES), STARTS_PROCESSES, {}),
                    ("lessons " + " ".join(n[:2] for n in others), lesson_paths(others), {})]
    if second is not None:
        extra, names, description = second
        timed, rest = [n for n in names if n in ALONE], [n for n in names if n not in ALONE]
        if timed:
            alone.append((f"lessons {' '.join(n[:2] for n in timed)} again on {description}",
                          lesson_paths(timed), extra))
        side_by_side.append((f"again: lessons {' '.join(n[:2] for n in rest)} on {description}",
                             lesson_paths(rest), extra))
    return alone, side_by_side


def run_pytest(py, title, args, env, tag=None):
    """One pytest run; its lines are printed as they come (prefixed with `tag` when two runs
    share the terminal). Returns (return code, its whole output)."""
    say(f"{title}: pytest {' '.join(args)}")
    proc = subprocess.Popen([str(py), "-m", "pytest", *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        print(f"[{tag}] {line}" if tag else line, end="", flush=True)
    return proc.wait(), "".join(lines)


def summary_line(output):
    found = re.findall(r"^=+ (.*(?:passed|failed|error|skipped|no tests ran).*) =+$", output, flags=re.M)
    return found[-1] if found else "no summary (see its output above)"


def test(py, rest, env):
    if rest:                                   # `run.py test -k data`: one plain pytest run
        return subprocess.run([str(py), "-m", "pytest", *rest], cwd=REPO, env=env).returncode
    probe = ("import json, platform, torch, workshop\n"
             "print(json.dumps([torch.backends.cpu.get_cpu_capability(),"
             " workshop.cpu_autocast_dtype() is not None, platform.machine()]))")
    found = subprocess.run([str(py), "-c", probe], cwd=REPO, env=env, capture_output=True, text=True)
    if found.returncode != 0:
        print(found.stderr, file=sys.stderr)
        return found.returncode
    second = second_cpu_path(*json.loads(found.stdout.strip().splitlines()[-1]))
    if second is None:
        say("no second CPU path can be forced on this processor; the first pass is the check")
    lessons = sorted(p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]-*.ipynb"))
    test_files = sorted(f"tests/{p.name}" for p in (REPO / "tests").glob("test_*.py"))
    alone, side_by_side = test_plan(lessons, test_files, second)
    # lesson 05 saves the model that lesson 06 loads, as in a learner's run; never into checkpoints/
    scratch = Path(tempfile.mkdtemp(prefix="workshop-test-"))
    env = dict(env, WORKSHOP_CHECKPOINT=str(scratch / "workshop_net.pt"))
    results = []
    for title, args, extra in alone:
        code, output = run_pytest(py, title, args, dict(env, **extra))
        results.append((title, code, output))
    # the runs share the cores: one thread each for PyTorch's arithmetic, since threads that
    # must meet at every operation wait for each other whenever another run holds a core
    # (compared outputs do not depend on it: see "The same outputs on every CPU" in README.md)
    env.setdefault("OMP_NUM_THREADS", "1")
    say(f"next, {SIDE_BY_SIDE} at a time: " + " | ".join(title for title, _, _ in side_by_side))
    waiting = list(side_by_side)
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                if not waiting:
                    return
                title, args, extra = waiting.pop(0)
            code, output = run_pytest(py, title, args, dict(env, **extra), title.split()[0].rstrip(":"))
            results.append((title, code, output))
    threads = [threading.Thread(target=worker) for _ in range(SIDE_BY_SIDE)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    shutil.rmtree(scratch, ignore_errors=True)
    for title, code, output in results:
        if code != 0:                          # its failures in one piece, not between other lines
            failures = re.search(r"^=+ (FAILURES|ERRORS) =+$.*", output, flags=re.M | re.S)
            print(f"\n{'=' * 30} {title}: what failed\n{failures.group(0) if failures else output[-5000:]}")
    say("summary:")
    for title, code, output in results:
        print(f"  {'ok    ' if code == 0 else 'FAILED'} {title}: {summary_line(output)}")
    return max(code for _, code, _ in results)


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
    if not executed:
        sys.path.insert(0, str(REPO / "tools"))
        import make_attendee_copies
        written, kept = make_attendee_copies.refresh(quiet=True)
        if written:
            say(f"attendee copies written or updated: {len(written)} lessons")
        for name in kept:
            say(f"kept your own attendee/{name} (rename or delete it for a fresh copy)")
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
    env = dict(os.environ, PYTHONPATH=str(REPO / "notebooks"))
    if command == "test":
        # conftest.py prepares the data (offline), so the tests never download
        return test(py, rest, env)
    # lab and data: make sure CIFAR-10 is present and verified (downloads it when missing)
    fetch = ("import sys, workshop\n"
             "try:\n    workshop.find_cifar10()\n"
             "except workshop.WorkshopError as err:\n    sys.exit(f'[workshop] {err}')")
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
