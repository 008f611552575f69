"""Test set-up: find or build CIFAR-10 offline before any test or notebook runs.

Where the data comes from, first match wins:
  1. $CIFAR10_ROOT, if set (it must already hold the data);
  2. the offline copy built by ../shared/cifar10/make_cifar10.py into data/offline-copy/
     (the workshop's CI, and any machine with shared/ beside the repo);
  3. the repo's data/ folder (a learner who ran `python3 run.py data` once).
The tests never download. The chosen folder is exported as CIFAR10_ROOT, so the notebook
kernels that nbval starts use it too; WORKSHOP_CHECKPOINT points lesson 05's saved model at a
scratch file, so the tests never touch a learner's own checkpoints/.

torchvision reads the offline copy only through the test adapter tests/offline_copy.py: it is
installed here for the test process, and for every kernel the tests start through an IPython
startup file in a scratch IPYTHONDIR. A learner's kernel never has it.

How the lessons are grouped for the test command (tools/run_tests.py) is said where each lesson
is, in its notebook metadata ("workshop": {"tests": [...]}: markers of pytest.ini), and for test
files by their `pytestmark`.
"""
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests import offline_copy
from workshop import lessons
from workshop.data import WorkshopError, find_cifar10

REPO = Path(__file__).resolve().parent
MAKER = REPO.parent / "shared" / "cifar10" / "make_cifar10.py"


def pytest_configure(config):
    if os.environ.get("CIFAR10_ROOT"):
        root = Path(os.environ["CIFAR10_ROOT"])
    elif MAKER.exists():
        root = REPO / "data" / "offline-copy"
        subprocess.run([sys.executable, str(MAKER), str(root)], check=True,
                       stdout=subprocess.DEVNULL)
    else:
        root = REPO / "data"
    try:
        find_cifar10(root, download=False, quiet=True)
    except WorkshopError as err:
        pytest.exit(f"The tests need CIFAR-10 and never download it: {err}", returncode=1)
    os.environ["CIFAR10_ROOT"] = str(root)
    offline_copy.install()
    scratch = Path(tempfile.mkdtemp(prefix="workshop-tests-"))
    os.environ["IPYTHONDIR"] = str(offline_copy.kernel_profile(scratch))
    # lesson 05 saves a checkpoint that lesson 06 reads: in the tests, a scratch file, so that
    # running the tests never overwrites the model a learner trained
    if not os.environ.get("WORKSHOP_CHECKPOINT"):
        os.environ["WORKSHOP_CHECKPOINT"] = str(scratch / "workshop_net.pt")
    # lesson 07 rehearses its CPU path (4,000 images, 2 epochs; INSTRUCTORS.md): its full run is
    # measured by benchmarks/cpu_training.py --fast, and the stored lesson shows one
    os.environ.setdefault("WORKSHOP_QUICK", "1")


@pytest.fixture(scope="session")
def cifar10_root():
    return Path(os.environ["CIFAR10_ROOT"])


def lesson_markers(path):
    """The markers a lesson's notebook metadata gives its cells ("workshop": {"tests": [...]})."""
    return lessons.read(path).get("metadata", {}).get("workshop", {}).get("tests", [])


def pytest_collection_modifyitems(session, config, items):
    """Mark each lesson's cells as its metadata says, and re-run the lessons in a shuffled order,
    each in its own fresh kernel (nbval starts one per notebook), to prove that none depends on
    another having run first. Set NOTEBOOK_ORDER_SEED to repeat an order; the order used is
    printed in the report header."""
    seed = int(os.environ.get("NOTEBOOK_ORDER_SEED") or random.SystemRandom().randrange(10**6))
    tests, found = [], {}
    for item in items:
        path = Path(str(item.fspath))
        if path.suffix != ".ipynb":
            tests.append(item)
            continue
        if str(path) not in found:
            found[str(path)] = (lesson_markers(path), [])
        for name in found[str(path)][0]:
            item.add_marker(getattr(pytest.mark, name))
        found[str(path)][1].append(item)
    order = sorted(found)
    random.Random(seed).shuffle(order)
    items[:] = tests + [item for path in order for item in found[path][1]]
    config._notebook_order = (seed, [Path(p).stem[:2] for p in order])


def pytest_report_collectionfinish(config):
    seed, order = getattr(config, "_notebook_order", (None, []))
    if order:
        return f"lessons run in the order {' '.join(order)} (NOTEBOOK_ORDER_SEED={seed})"


@pytest.fixture(scope="session")
def chromium():
    """The system's Chromium (Debian's package; nothing is downloaded). CI must have it."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if os.environ.get("CI"):
        pytest.fail("CI must have Chromium for the browser tests (.ci/run installs it)")
    pytest.skip("Chromium is not installed: `apt-get install chromium` for the browser tests")
