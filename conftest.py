"""Test set-up: find or build CIFAR-10 offline before any test or notebook runs.

Where the data comes from, first match wins:
  1. $CIFAR10_ROOT, if set (it must already hold the data);
  2. the offline copy built by ../shared/cifar10/make_cifar10.py into data/offline-copy/
     (the workshop's CI, and any machine with shared/ beside the repo);
  3. the repo's data/ folder (a learner who ran `python3 run.py data` once).
The tests never download. The chosen folder is exported as CIFAR10_ROOT, so the notebook
kernels that nbval starts use it too; WORKSHOP_CHECKPOINT points lesson 05's saved model at a
scratch file, so the tests never touch a learner's own checkpoints/.
"""
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent
MAKER = REPO.parent / "shared" / "cifar10" / "make_cifar10.py"
sys.path.insert(0, str(REPO / "notebooks"))

import workshop  # noqa: E402


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
        workshop.find_cifar10(root, download=False, quiet=True)
    except workshop.WorkshopError as err:
        pytest.exit(f"The tests need CIFAR-10 and never download it: {err}", returncode=1)
    os.environ["CIFAR10_ROOT"] = str(root)
    # lesson 05 saves a checkpoint that lesson 06 reads: in the tests, a scratch file, so that
    # running the tests never overwrites the model a learner trained
    if not os.environ.get("WORKSHOP_CHECKPOINT"):
        scratch = Path(tempfile.mkdtemp(prefix="workshop-tests-"))
        os.environ["WORKSHOP_CHECKPOINT"] = str(scratch / "workshop_net.pt")
    # the notebook kernels import workshop.py from notebooks/, as a learner's kernel does
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO / "notebooks"), os.environ.get("PYTHONPATH")) if p)


@pytest.fixture(scope="session")
def cifar10_root():
    return Path(os.environ["CIFAR10_ROOT"])


def pytest_collection_modifyitems(session, config, items):
    """Re-run the lessons in a shuffled order, each in its own fresh kernel (nbval starts one per
    notebook), to prove that none depends on another having run first. Set NOTEBOOK_ORDER_SEED
    to repeat an order; the order used is printed in the report header."""
    seed = int(os.environ.get("NOTEBOOK_ORDER_SEED") or random.SystemRandom().randrange(10**6))
    for item in items:                       # lesson 08's cells belong to `-k distributed` too
        if Path(str(item.fspath)).name == "08-scaling-out.ipynb":
            item.add_marker(pytest.mark.distributed)
    tests = [item for item in items if not str(item.fspath).endswith(".ipynb")]
    lessons = {}
    for item in items:
        if str(item.fspath).endswith(".ipynb"):
            lessons.setdefault(str(item.fspath), []).append(item)
    order = sorted(lessons)
    random.Random(seed).shuffle(order)
    items[:] = tests + [item for path in order for item in lessons[path]]
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
