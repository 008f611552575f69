#!/usr/bin/env python3
"""Store the lessons executed: each run top to bottom in a fresh kernel, written in place.

    python -m tools.execute_lessons                 # every lesson
    python -m tools.execute_lessons 05 07           # the lessons whose numbers start so

Run from the repository (as a module, so that it finds the tests' offline-copy adapter). It
executes with the workshop's one executor (workshop.lessons.execute, nbclient), on the path that
every CPU can reproduce: AVX2 kernels and float32 (see README.md, "The same outputs on every
CPU"), with lesson 05's checkpoint in build/execute-lessons/ (kept between runs, so lesson 06 finds it). Where the data is the offline test copy,
the kernels get the tests' adapter (tests/offline_copy.py), as nbval's do.
"""
import os
import sys
import tempfile
import time
from pathlib import Path

from tests import offline_copy
from workshop import lessons
from workshop.data import data_root

LAPTOP_PATH = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "WORKSHOP_BFLOAT16": "0"}


def lesson_env(scratch):
    """The kernels' environment: the laptop path, the data, the checkpoint, the offline adapter
    (its IPython profile made under `scratch`)."""
    offline = lessons.REPO / "data" / "offline-copy"
    root = Path(os.environ.get("CIFAR10_ROOT") or (offline if offline.exists() else data_root()))
    checkpoint = Path(os.environ.get("WORKSHOP_CHECKPOINT")
                      or lessons.REPO / "build" / "execute-lessons" / "workshop_net.pt")
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    return dict(os.environ, **LAPTOP_PATH, CIFAR10_ROOT=str(root), WORKSHOP_CHECKPOINT=str(checkpoint),
                IPYTHONDIR=str(offline_copy.kernel_profile(scratch)))


def main(argv):
    env = lesson_env(Path(tempfile.mkdtemp(prefix="execute-lessons-")))
    chosen = [p for p in lessons.lesson_paths() if not argv or any(p.stem.startswith(a) for a in argv)]
    for path in chosen:
        began = time.perf_counter()
        lessons.execute(path, path, env=env)
        print(f"{path.name}: executed in {time.perf_counter() - began:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
