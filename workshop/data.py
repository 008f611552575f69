"""Where CIFAR-10 lives, and whether it is complete and intact: what the workshop does for every
lesson, and what no lesson teaches.

    data_root, find_cifar10      the folder ($CIFAR10_ROOT, else data/), checked or fetched
    load_cifar10_tensors         a whole split as one uint8 tensor and its labels (lesson 05's way)
    WorkshopError                a problem with a known fix, shown in a notebook as one line
    shown                        a path as lessons print it, naming no machine's folders

No lesson teaches this module; the lessons that call it name what they call. Only standard
PyTorch and torchvision: the official data keeps torchvision's own checksums; the offline test
copy (a JPEG re-encoding with its own checksums file) is verified against those. Each file is
hashed once, and the result remembered beside it by size and modification time. torchvision is
imported only where it is needed (a download, an archive, the official checksums): importing it
takes a second or two, and lesson 07, lesson 08 and its training script read the data without it.
"""
import hashlib
import json
import os
import pickle
import socket
import tarfile
import tempfile
import urllib.error
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
BATCHES = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"
LOCAL_SUMS = "cifar10-local-md5.json"   # written beside the offline test copy by make_cifar10.py


class WorkshopError(RuntimeError):
    """A problem with a known fix. Jupyter shows only this message, not a traceback."""

    def _render_traceback_(self):          # IPython calls this instead of printing a traceback
        return [f"\x1b[31m{type(self).__name__}\x1b[0m: {self}"]


def data_root():
    """The folder that holds (or will hold) cifar-10-batches-py/: $CIFAR10_ROOT, else the repo's data/."""
    return Path(os.environ.get("CIFAR10_ROOT") or REPO / "data").expanduser()


def md5sum(path):
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def official_sums():
    """torchvision's built-in checksums for the official batch files (never changed here)."""
    import torchvision
    return dict(torchvision.datasets.CIFAR10.train_list + torchvision.datasets.CIFAR10.test_list)


VERIFIED = ".workshop-verified.json"     # beside the batch files: what has been checked already


def _remembered(folder):
    try:
        return json.loads((folder / VERIFIED).read_text())
    except (OSError, ValueError):
        return {}


def _remember(folder, verified):
    """Keep {file: [size, mtime_ns, md5]} of the files that matched, so that the next process
    (every lesson, every torchrun worker) hashes only what changed since; a folder that cannot be
    written is simply checked again next time."""
    try:
        partial = folder / f".{VERIFIED}.{os.getpid()}.partial"
        partial.write_text(json.dumps(verified, indent=1, sort_keys=True) + "\n")
        os.replace(partial, folder / VERIFIED)
    except OSError:
        pass


def _check_files(folder, sums, what):
    """Each file in `sums` is in `folder` and has that md5, else WorkshopError says what to do.

    A file is hashed once: a later check takes the remembered result while the file's size and
    modification time are those it had when it matched."""
    remembered = _remembered(folder)
    verified = dict(remembered)
    for name, expected in sums.items():
        path = folder / name
        if not path.exists():
            raise WorkshopError(
                f"{path} is missing, so the CIFAR-10 folder is incomplete ({what}). "
                f"Delete the folder {folder} and run again to fetch a fresh copy.")
        stat = path.stat()
        if remembered.get(name) == [stat.st_size, stat.st_mtime_ns, expected]:
            continue
        if md5sum(path) != expected:
            verified.pop(name, None)
            _remember(folder, verified)
            raise WorkshopError(
                f"{path} is corrupted or truncated: its checksum does not match ({what}). "
                f"Delete it, or the whole folder {folder}, and run again to fetch a fresh copy; "
                f"offline, put the official {ARCHIVE} in {folder.parent} first.")
        verified[name] = [stat.st_size, stat.st_mtime_ns, expected]
    if verified != remembered:
        _remember(folder, verified)


def _use_local_copy(root):
    """The offline test copy: verify it against the sums written beside it.

    The copy's pixels are a JPEG re-encoding of CIFAR-10, so its files cannot match the official
    checksums: only a folder with cifar10-local-md5.json beside its batches is checked this way.
    torchvision's CIFAR10 keeps its own official check, so it reads such a copy only where the
    tests have taught it these sums (tests/offline_copy.py); the workshop's own tensor loader,
    load_cifar10_tensors, reads it anywhere.
    """
    sums = json.loads((root / LOCAL_SUMS).read_text())
    _check_files(root / BATCHES, sums, "offline copy, checked against " + LOCAL_SUMS)
    return "offline copy (JPEG re-encoded), checksums verified"


def _writable(root):
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as err:
        raise WorkshopError(
            f"The data folder {root} cannot be written ({err.strerror}), so CIFAR-10 cannot be "
            f"saved there. Set CIFAR10_ROOT to a folder you can write (or one that already holds "
            f"{BATCHES}/), then restart the kernel.") from None


def _extract(archive, root):
    import torchvision
    if md5sum(archive) != torchvision.datasets.CIFAR10.tgz_md5:
        raise WorkshopError(
            f"{archive} is corrupted or truncated: its checksum does not match the official one. "
            f"Delete it and run again to download it (163 MB), or copy a good one in its place.")
    _writable(root)
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):          # Python 3.11.4+: refuse unsafe paths
            tar.extractall(root, filter="data")
        else:
            tar.extractall(root)


def _download(root):
    import torchvision
    _writable(root)
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)            # a blocked network fails in seconds, not never
    try:
        torchvision.datasets.CIFAR10(root=root, train=True, download=True)
    except (urllib.error.URLError, OSError) as err:
        raise WorkshopError(
            f"CIFAR-10 is not in {root} and could not be downloaded ({err}). Connect to the "
            f"internet and run again; or, offline, copy the official {ARCHIVE} (163 MB) into "
            f"{root}; or set CIFAR10_ROOT to a folder that holds {BATCHES}/.") from None
    finally:
        socket.setdefaulttimeout(old)


def find_cifar10(root=None, download=True, quiet=False):
    """Make sure CIFAR-10 is in `root` (default: data_root()) and verified; return the folder.

    In order: the offline test copy (verified against its own checksums); the official batch
    files (verified against torchvision's); the official archive placed in the folder (verified,
    then unpacked, no download); a download through torchvision (which verifies it too).
    Every failure raises WorkshopError with what happened and what to do.
    """
    root = Path(root) if root is not None else data_root()
    batches = root / BATCHES
    if (root / LOCAL_SUMS).exists() and batches.exists():
        source = _use_local_copy(root)
    elif batches.exists():
        _check_files(batches, official_sums(), "official CIFAR-10")
        source = "official files, checksums verified"
    elif (root / ARCHIVE).exists():
        _extract(root / ARCHIVE, root)
        _check_files(batches, official_sums(), "official CIFAR-10")
        source = f"unpacked from the {ARCHIVE} found there, checksums verified"
    elif download:
        _download(root)
        source = "downloaded, checksums verified"
    else:
        raise WorkshopError(f"CIFAR-10 is not in {root}. Run `python3 run.py data` to fetch it, "
                            f"or set CIFAR10_ROOT to a folder that holds {BATCHES}/.")
    if not quiet:
        print(f"CIFAR-10 ready in {shown(root)}: {source}")
    return root


def shown(path):
    """A path as a lesson prints it: relative to the repository, or to the home folder (~), where
    it lies inside one, so that stored outputs name no machine's folders."""
    path, home = Path(path).resolve(), Path.home().resolve()
    if path.is_relative_to(REPO.resolve()):
        return str(path.relative_to(REPO.resolve()))
    if path.is_relative_to(home):
        return str(Path("~") / path.relative_to(home))
    return str(path)


def load_cifar10_tensors(root, train, count=None):
    """The whole split as tensors: images (N, 3, 32, 32) uint8 and labels (N,) int64; with
    `count`, its first `count` images only (read from the batch files that hold them: 10,000
    images each).

    Reads the batch files that torchvision's CIFAR10 reads, in its layout (pickled dicts of 3,072
    bytes per image, red plane, green, blue), after checking each against its checksum: the
    offline copy's own sums beside it, else torchvision's official ones. A folder without the
    data, or with a damaged file, raises WorkshopError, as find_cifar10 does.
    """
    root = Path(root)
    if not (root / BATCHES).exists():
        find_cifar10(root, download=False, quiet=True)          # explains what is missing
    if (root / LOCAL_SUMS).exists():
        sums, what = json.loads((root / LOCAL_SUMS).read_text()), f"offline copy, checked against {LOCAL_SUMS}"
    else:
        sums, what = official_sums(), "official CIFAR-10"
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    if count is not None:
        names = names[:max(1, -(-count // 10_000))]
    _check_files(root / BATCHES, {name: sums[name] for name in names}, what)
    images, labels = [], []
    for name in names:
        with open(root / BATCHES / name, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        images.append(batch["data"])
        labels += batch["labels"]
    images = torch.from_numpy(np.concatenate(images)).view(-1, 3, 32, 32)    # (N, C, H, W)
    return images[:count], torch.tensor(labels)[:count]
