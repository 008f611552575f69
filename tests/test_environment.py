"""requirements.txt and environment.yml must install the same packages at the same versions."""
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


OWN_PACKAGE = "-e ."                  # the workshop's package itself, installed editable


def requirement_lines():
    lines = (REPO / "requirements.txt").read_text().splitlines()
    return sorted(l.strip() for l in lines if l.strip() and not l.lstrip().startswith("#"))


def pins_in_requirements():
    return [l for l in requirement_lines() if l != OWN_PACKAGE]


def environment_lines():
    text = (REPO / "environment.yml").read_text()
    pip_section = text.split("- pip:", 1)[1]
    return sorted(re.findall(r"^\s+-\s+(\S.*?)\s*$", pip_section, flags=re.M))


def test_requirements_are_all_pinned():
    pins = pins_in_requirements()
    assert pins, "requirements.txt lists no package"
    loose = [p for p in pins if not re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][\w.]*", p)]
    assert not loose, f"pin these to one version with ==: {loose}"


def test_environment_yml_matches_requirements():
    assert environment_lines() == requirement_lines(), (
        "environment.yml's pip section and requirements.txt differ; change both together")


def test_both_install_the_workshop_package_editable():
    assert OWN_PACKAGE in requirement_lines() and OWN_PACKAGE in environment_lines()
    import workshop
    assert Path(workshop.__file__).resolve().parent == REPO / "workshop", "install it with pip -e ."


def test_environment_yml_uses_conda_forge_and_python_311():
    text = (REPO / "environment.yml").read_text()
    assert re.search(r"^channels:\s*\n\s+-\s+conda-forge\s*$", text, flags=re.M)
    assert re.search(r"^\s+-\s+python=3\.11\s*$", text, flags=re.M)


def test_torch_pins_are_the_workshop_versions():
    pins = dict(p.split("==") for p in pins_in_requirements())
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"


def test_installed_versions_match_the_pins():
    """The environment running the tests is the one the README builds."""
    from importlib.metadata import version
    pins = dict(p.split("==") for p in pins_in_requirements())
    wrong = {name: (version(name), want) for name, want in pins.items()
             if version(name).split("+")[0] != want}
    assert not wrong, f"installed (got, wanted): {wrong}; run `python3 run.py test` to reinstall"


def run_py(*args, **env):
    import os
    import subprocess
    return subprocess.run([sys.executable, str(REPO / "run.py"), *args], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, **env))


def test_run_py_without_a_command_prints_its_usage():
    done = run_py()
    assert done.returncode == 2 and "python3 run.py lab" in done.stdout


def test_run_py_data_verifies_the_data(cifar10_root):
    done = run_py("data", "--here", CIFAR10_ROOT=str(cifar10_root))
    assert done.returncode == 0, done.stderr
    assert "CIFAR-10 ready in" in done.stdout and "checksums verified" in done.stdout


def test_run_py_data_explains_a_folder_it_cannot_use():
    done = run_py("data", "--here", CIFAR10_ROOT="/proc/workshop-data")
    assert done.returncode == 1
    assert done.stderr.strip().startswith("[workshop] The data folder /proc/workshop-data cannot be written")
    assert "Traceback" not in done.stderr
