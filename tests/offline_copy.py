"""Test machinery: torchvision's CIFAR10 accepts the offline test copy, checked by its own sums.

The offline copy that ../shared/cifar10/make_cifar10.py builds is a JPEG re-encoding of CIFAR-10,
so its files cannot match the official checksums that torchvision's CIFAR10 checks. In the test
processes only, `install()` makes CIFAR10 check a folder that has the copy's sums file
(cifar10-local-md5.json) beside its batches against those sums, file by file, with torchvision's
own check_integrity; every other folder, the official data above all, keeps torchvision's own
check. A learner's kernel never runs this: conftest.py installs it in the test process and, through
an IPython startup file in a scratch IPYTHONDIR, in every kernel the tests start.

It acts when torchvision's CIFAR10 is first imported, so a process that never uses torchvision
never imports it (that takes a second or two).
"""
import importlib.abc
import importlib.util
import json
import os
import sys

LOCAL_SUMS = "cifar10-local-md5.json"
MODULE = "torchvision.datasets.cifar"


def _check_offline_copies_by_their_sums(cifar10):
    from torchvision.datasets.utils import check_integrity
    if getattr(cifar10._check_integrity, "offline_copies", False):
        return
    official_check = cifar10._check_integrity

    def _check_integrity(dataset):
        sums_file = os.path.join(dataset.root, LOCAL_SUMS)
        if not os.path.exists(sums_file):
            return official_check(dataset)
        with open(sums_file) as f:
            sums = json.load(f)
        return all(check_integrity(os.path.join(dataset.root, dataset.base_folder, name), sums[name])
                   for name, _ in dataset.train_list + dataset.test_list)
    _check_integrity.offline_copies = True
    cifar10._check_integrity = _check_integrity


class _WhenCifarIsImported(importlib.abc.MetaPathFinder):
    """Finds no module itself: when torchvision.datasets.cifar is about to be imported, it steps
    aside, lets Python find that module as usual, and adjusts CIFAR10 as soon as the module has run."""

    def find_spec(self, name, path, target=None):
        if name != MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                _check_offline_copies_by_their_sums(module.CIFAR10)
            spec.loader.exec_module = exec_module
        return spec


def kernel_profile(scratch):
    """An IPYTHONDIR in `scratch` whose startup file installs this adapter in every kernel that
    has it in its environment (the tests' kernels, tools/execute_lessons.py's)."""
    from pathlib import Path
    startup = Path(scratch) / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True, exist_ok=True)
    adapter = Path(__file__).resolve()
    (startup / "00-offline-copy.py").write_text(
        "# test kernels only: torchvision may read the offline test copy (tests/offline_copy.py)\n"
        f"exec(compile(open({str(adapter)!r}).read(), {str(adapter)!r}, 'exec'), "
        "{'__name__': 'tests.offline_copy.startup'})\n")
    return startup.parent.parent


def script_command(script, *args):
    """The command line that runs `python SCRIPT ARGS` with this adapter installed first: for a
    test's subprocess (a benchmark) that reads the offline copy through torchvision. Run it from
    the repository, where `tests` is importable."""
    run = ("import runpy, sys\nfrom tests import offline_copy\noffline_copy.install()\n"
           "sys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')")
    return [sys.executable, "-c", run, str(script), *map(str, args)]


def install():
    """Let torchvision's CIFAR10 read offline copies: now if it is imported, else when it is."""
    if MODULE in sys.modules:
        _check_offline_copies_by_their_sums(sys.modules[MODULE].CIFAR10)
    elif not any(isinstance(f, _WhenCifarIsImported) for f in sys.meta_path):
        sys.meta_path.insert(0, _WhenCifarIsImported())


if __name__ == "tests.offline_copy.startup":      # run as the test kernels' IPython startup file
    install()
