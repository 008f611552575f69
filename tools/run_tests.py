#!/usr/bin/env python3
"""The test command: every test and every lesson, planned to fit two cores, on two CPU paths.

    python tools/run_tests.py            # what `python3 run.py test` runs (and .ci/run)
    python tools/run_tests.py -k data    # anything else: one plain pytest run with those arguments

The plan comes from pytest's markers (pytest.ini), which each lesson sets in its notebook
metadata and each test file in its `pytestmark`; there is no list of files to keep here:
  0. tools/export_lessons.py --check: the package's taught modules are their lessons' cells;
  1. alone, one after the other: what is marked `timed` (it prints timings it measures);
  2. then SIDE_BY_SIDE pytest runs at a time, the next starting when one ends: the tests that are
     not marked `processes`, those that are (torchrun jobs, JupyterLab, a browser), the other
     lessons; and the lessons marked `cpu_dependent` again on a second CPU path (see README.md,
     "The same outputs on every CPU"), those also `timed` alone first.
"""
import os
import platform
import re
import subprocess
import sys
import shutil
import tempfile
import threading
from pathlib import Path

import torch

from workshop.device import cpu_autocast_dtype

REPO = Path(__file__).resolve().parent.parent
SIDE_BY_SIDE = 3       # pytest runs at a time: 2 cores stay busy while runs start processes


def say(msg):
    print(f"[workshop] {msg}", flush=True)


def second_cpu_path(capability, has_bfloat16, machine):
    """(environment, marker expression, description) of the second CPU path, or None.

    A CPU with AVX-512 or native bfloat16 also runs the CPU-dependent lessons as a laptop with
    AVX2 and float32 does; an AVX2 CPU without bfloat16 (already that path) runs the short ones
    on PyTorch's plain vector-free kernels. None where no second path can be forced.
    """
    if machine.lower() not in ("x86_64", "amd64"):
        return None
    if capability != "AVX2" or has_bfloat16:
        env = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "WORKSHOP_BFLOAT16": "0"}
        return env, "cpu_dependent", "AVX2 kernels and float32, as on most laptops"
    env = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "WORKSHOP_BFLOAT16": "0"}
    return env, "cpu_dependent and not timed and not long", "PyTorch's plain kernels (no AVX) and float32"


def test_plan(second):
    """The test command as (alone, side_by_side), lists of pytest runs (title, pytest args,
    extra environment); `second` is second_cpu_path()'s answer, or None."""
    alone = [("lessons marked timed", ["notebooks", "-m", "timed"], {})]
    side_by_side = [("tests", ["tests", "-m", "not processes"], {}),
                    ("processes", ["tests", "notebooks", "-m", "processes"], {}),
                    ("lessons", ["notebooks", "-m", "not timed and not processes"], {})]
    if second is not None:
        extra, marks, description = second
        if "not timed" not in marks:
            alone.append((f"lessons marked timed again on {description}",
                          ["notebooks", "-m", f"({marks}) and timed"], extra))
        side_by_side.append((f"again: lessons on {description}",
                             ["notebooks", "-m", f"({marks}) and not timed"], extra))
    return alone, side_by_side


def run_pytest(title, args, env, tag=None):
    """One pytest run; its lines are printed as they come (prefixed with `tag` when runs share
    the terminal). Returns (return code, its whole output); pytest's exit 5 (nothing selected)
    counts as a failure, like any other non-zero code."""
    say(f"{title}: pytest {' '.join(args)}")
    proc = subprocess.Popen([sys.executable, "-m", "pytest", *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        print(f"[{tag}] {line}" if tag else line, end="", flush=True)
    return proc.wait(), "".join(lines)


def summary_line(output):
    found = re.findall(r"^=+ (.*(?:passed|failed|error|skipped|no tests ran).*) =+$", output, flags=re.M)
    return found[-1] if found else "no summary (see its output above)"


def main(rest):
    env = dict(os.environ)
    if rest:                                   # `run.py test -k data`: one plain pytest run
        return subprocess.run([sys.executable, "-m", "pytest", *rest], cwd=REPO, env=env).returncode
    check = subprocess.run([sys.executable, str(REPO / "tools" / "export_lessons.py"), "--check"], cwd=REPO)
    if check.returncode != 0:
        return check.returncode
    second = second_cpu_path(torch.backends.cpu.get_cpu_capability(),
                             cpu_autocast_dtype() is not None, platform.machine())
    if second is None:
        say("no second CPU path can be forced on this processor; the first pass is the check")
    alone, side_by_side = test_plan(second)
    # lesson 05 saves the model that lesson 06 loads, as in a learner's run; never into checkpoints/
    scratch = Path(tempfile.mkdtemp(prefix="workshop-test-"))
    env["WORKSHOP_CHECKPOINT"] = str(scratch / "workshop_net.pt")
    results = []
    for title, args, extra in alone:
        code, output = run_pytest(title, args, dict(env, **extra))
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
            code, output = run_pytest(title, args, dict(env, **extra), title.split()[0].rstrip(":"))
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
    passed = sum(int(n) for _, _, o in results for n in re.findall(r"(\d+) passed", summary_line(o)))
    failed = sum(int(n) for _, _, o in results for n in re.findall(r"(\d+) failed", summary_line(o)))
    print(f"{passed} passed, {failed} failed")
    return max(code for _, code, _ in results)       # exit 5 (a run that selected nothing) fails too


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
