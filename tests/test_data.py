"""Every way the data can be missing or broken gives a short message that says what to do.

None of these tests touches the network: downloads are made to fail in-process.
"""
import json
import os
import shutil
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest
import torch
import torchvision
from nbclient import NotebookClient

import workshop.data

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def copy_of(src_root, dest_root, with_sums=True):
    """A private copy of the offline data (hard links where possible: it is 180 MB), with nothing
    remembered about it yet."""
    (dest_root / workshop.data.BATCHES).mkdir(parents=True)
    for name in FILES:
        src, dst = src_root / workshop.data.BATCHES / name, dest_root / workshop.data.BATCHES / name
        try:
            dst.hardlink_to(src)
        except OSError:
            shutil.copy(src, dst)
    if with_sums:
        shutil.copy(src_root / workshop.data.LOCAL_SUMS, dest_root / workshop.data.LOCAL_SUMS)
    return dest_root


def damage(path, how):
    data = path.read_bytes()
    path.unlink()                       # never write through a hard link into the shared copy
    path.write_bytes(data[: len(data) // 2] if how == "truncate" else data[:-100] + b"\0" * 100)


def test_the_test_data_is_found_and_verified(cifar10_root):
    assert workshop.data.find_cifar10(cifar10_root, download=False, quiet=True) == cifar10_root


def test_no_data_and_no_network(tmp_path, no_network):
    with pytest.raises(workshop.data.WorkshopError) as err:
        workshop.data.find_cifar10(tmp_path / "data", quiet=True)
    message = str(err.value)
    assert "could not be downloaded" in message
    assert workshop.data.ARCHIVE in message and "CIFAR10_ROOT" in message


def test_no_data_and_download_off(tmp_path):
    with pytest.raises(workshop.data.WorkshopError, match="run.py data"):
        workshop.data.find_cifar10(tmp_path, download=False, quiet=True)


@pytest.mark.parametrize("how", ["truncate", "corrupt"])
def test_damaged_batch_file_is_named(cifar10_root, tmp_path, how):
    root = copy_of(cifar10_root, tmp_path)
    damage(root / workshop.data.BATCHES / "data_batch_3", how)
    with pytest.raises(workshop.data.WorkshopError, match=r"data_batch_3 is corrupted or truncated"):
        workshop.data.find_cifar10(root, quiet=True)


def test_missing_batch_file_is_named(cifar10_root, tmp_path):
    root = copy_of(cifar10_root, tmp_path)
    (root / workshop.data.BATCHES / "test_batch").unlink()
    with pytest.raises(workshop.data.WorkshopError, match=r"test_batch is missing"):
        workshop.data.find_cifar10(root, quiet=True)


def test_the_tensors_are_what_torchvision_reads(cifar10_root):
    """load_cifar10_tensors reads the batch files itself: the same images, in (N, C, H, W), and
    labels as torchvision's CIFAR10 dataset (which lessons 02 and 05 use)."""
    workshop.data.find_cifar10(cifar10_root, download=False, quiet=True)
    for train in (False, True):
        images, labels = workshop.data.load_cifar10_tensors(cifar10_root, train=train)
        dataset = torchvision.datasets.CIFAR10(cifar10_root, train=train)
        assert images.dtype == torch.uint8 and images.shape == (len(dataset), 3, 32, 32)
        assert torch.equal(images.permute(0, 2, 3, 1), torch.from_numpy(dataset.data))
        assert labels.tolist() == dataset.targets


def test_the_first_images_are_read_from_the_files_that_hold_them(cifar10_root, tmp_path):
    """count=N gives the first N images of the split, reading (and checking) only the batch files
    that hold them: 12,000 training images need data_batch_1 and 2, not a damaged data_batch_5."""
    images, labels = workshop.data.load_cifar10_tensors(cifar10_root, train=True)
    root = copy_of(cifar10_root, tmp_path)
    damage(root / workshop.data.BATCHES / "data_batch_5", "corrupt")
    first, first_labels = workshop.data.load_cifar10_tensors(root, train=True, count=12_000)
    assert torch.equal(first, images[:12_000]) and torch.equal(first_labels, labels[:12_000])
    assert len(workshop.data.load_cifar10_tensors(root, train=False, count=500)[0]) == 500
    with pytest.raises(workshop.data.WorkshopError, match="data_batch_5 is corrupted"):
        workshop.data.load_cifar10_tensors(root, train=True, count=40_001)


def test_torchvision_is_imported_only_when_used(cifar10_root, tmp_path):
    """With the tests' adapter installed, a process that finds the offline copy without
    torchvision (lessons 07 and 08) never imports it; one that imports it afterwards reads the
    offline copy through its CIFAR10 class, while a folder without the copy's sums keeps
    torchvision's own check."""
    code = ("import sys\nfrom tests import offline_copy\nfrom workshop.data import find_cifar10\n"
            "offline_copy.install()\n"
            "root = find_cifar10(sys.argv[1], download=False, quiet=True)\n"
            "print('torchvision' in sys.modules)\n"
            "import torchvision\n"
            "print(len(torchvision.datasets.CIFAR10(root, train=False)))\n"
            "try:\n"
            "    torchvision.datasets.CIFAR10(sys.argv[2], train=False)\n"
            "except RuntimeError as err:\n"
            "    print(str(err).splitlines()[0])\n")
    other = copy_of(cifar10_root, tmp_path, with_sums=False)   # the same files, not verified as a copy
    done = subprocess.run([sys.executable, "-c", code, str(cifar10_root), str(other)],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == ["False", "10000", "Dataset not found or corrupted. You can use download=True to download it"]


def test_a_learners_process_keeps_torchvisions_own_check(cifar10_root):
    """The offline copy's adapter is test machinery: a process that imports only the workshop's
    package (a learner's kernel) gets torchvision's official check, which refuses the
    re-encoded copy, while the workshop's own loader reads it against its sums."""
    code = ("import sys\nfrom workshop.data import find_cifar10, load_cifar10_tensors\n"
            "root = find_cifar10(sys.argv[1], download=False, quiet=True)\n"
            "print(len(load_cifar10_tensors(root, train=False)[0]))\n"
            "import torchvision\n"
            "try:\n"
            "    torchvision.datasets.CIFAR10(root, train=False)\n"
            "except RuntimeError as err:\n"
            "    print(str(err).splitlines()[0])\n"
            "print(any('offline_copy' in m for m in sys.modules))\n")
    env = {k: v for k, v in os.environ.items() if k != "IPYTHONDIR"}
    done = subprocess.run([sys.executable, "-c", code, str(cifar10_root)], capture_output=True,
                          text=True, timeout=120, cwd=NOTEBOOKS, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == ["10000", "Dataset not found or corrupted. You can use download=True to download it", "False"]


def test_each_file_is_hashed_once_until_it_changes(cifar10_root, tmp_path, monkeypatch):
    """Verification is remembered beside the files by size and modification time: a second
    check hashes nothing, a file changed since is hashed again, and a damaged one is refused."""
    root = copy_of(cifar10_root, tmp_path)
    hashed = []
    real = workshop.data.md5sum
    monkeypatch.setattr(workshop.data, "md5sum", lambda path: hashed.append(Path(path).name) or real(path))
    workshop.data.find_cifar10(root, quiet=True)
    every = sorted(json.loads((root / workshop.data.LOCAL_SUMS).read_text()))
    assert sorted(hashed) == every and "test_batch" in every
    hashed.clear()
    workshop.data.load_cifar10_tensors(root, train=False)
    workshop.data.find_cifar10(root, quiet=True)
    assert hashed == []
    damage(root / workshop.data.BATCHES / "data_batch_2", "corrupt")
    with pytest.raises(workshop.data.WorkshopError, match="data_batch_2 is corrupted"):
        workshop.data.find_cifar10(root, quiet=True)
    assert hashed == ["data_batch_2"]


@pytest.mark.parametrize("split,name", [(False, "test_batch"), (True, "data_batch_4")])
def test_loading_a_damaged_file_is_refused(cifar10_root, tmp_path, split, name):
    root = copy_of(cifar10_root, tmp_path)
    damage(root / workshop.data.BATCHES / name, "corrupt")
    with pytest.raises(workshop.data.WorkshopError, match=f"{name} is corrupted or truncated"):
        workshop.data.load_cifar10_tensors(root, train=split)


def test_offline_copy_is_not_accepted_as_official_data(cifar10_root, tmp_path):
    """Without its checksum file, the re-encoded copy fails torchvision's official checksums, even
    in a process that has verified (and loaded) the offline copy in another folder."""
    workshop.data.load_cifar10_tensors(cifar10_root, train=False)
    root = copy_of(cifar10_root, tmp_path, with_sums=False)
    with pytest.raises(workshop.data.WorkshopError, match="corrupted or truncated"):
        workshop.data.find_cifar10(root, quiet=True)
    with pytest.raises(RuntimeError, match="not found or corrupted"):
        torchvision.datasets.CIFAR10(root, train=False)
    with pytest.raises(workshop.data.WorkshopError, match="corrupted or truncated"):
        workshop.data.load_cifar10_tensors(root, train=False)


def test_data_folder_that_cannot_be_written(tmp_path, no_network):
    # /proc refuses new folders even to root, for whom chmod-ed folders stay writable
    with pytest.raises(workshop.data.WorkshopError, match="cannot be written.*CIFAR10_ROOT"):
        workshop.data.find_cifar10("/proc/workshop-data", quiet=True)


def make_archive(cifar10_root, path):
    # a real .tar.gz; stored without compression (level 0): 180 MB are quicker written and read
    with tarfile.open(path, "w:gz", compresslevel=0) as tar:
        tar.add(cifar10_root / workshop.data.BATCHES, arcname=workshop.data.BATCHES)
    return path


def test_archive_placed_offline_is_verified_and_unpacked(cifar10_root, tmp_path, no_network,
                                                         monkeypatch):
    """A classroom without internet: the archive in the data folder is used, not downloaded."""
    archive = make_archive(cifar10_root, tmp_path / workshop.data.ARCHIVE)
    local = {n: workshop.data.md5sum(cifar10_root / workshop.data.BATCHES / n) for n in FILES}
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "tgz_md5", workshop.data.md5sum(archive))
    official = workshop.data.official_sums()
    monkeypatch.setattr(workshop.data, "official_sums", lambda: {n: local[n] for n in official})
    assert workshop.data.find_cifar10(tmp_path, quiet=True) == tmp_path
    assert (tmp_path / workshop.data.BATCHES / "test_batch").exists()


def test_corrupted_archive_is_refused(cifar10_root, tmp_path, no_network):
    archive = make_archive(cifar10_root, tmp_path / workshop.data.ARCHIVE)
    damage(archive, "truncate")
    with pytest.raises(workshop.data.WorkshopError, match="cifar-10-python.tar.gz is corrupted"):
        workshop.data.find_cifar10(tmp_path, quiet=True)
    assert not (tmp_path / workshop.data.BATCHES).exists()


def test_a_lesson_shows_the_message_not_a_traceback(cifar10_root, tmp_path, monkeypatch):
    """Lesson 02 run on a damaged folder stops at its data cell with one readable line."""
    root = copy_of(cifar10_root, tmp_path)
    damage(root / workshop.data.BATCHES / "data_batch_1", "truncate")
    monkeypatch.setenv("CIFAR10_ROOT", str(root))
    nb = nbformat.read(NOTEBOOKS / "02-data.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, allow_errors=True,
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert errors, "the damaged data went unnoticed"
    first = errors[0]
    assert first.ename == "WorkshopError"
    assert len(first.traceback) == 1, "\n".join(first.traceback)
    assert "data_batch_1 is corrupted or truncated" in first.traceback[0]
