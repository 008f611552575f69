"""What attendees and instructors see: `run.py lab`, the attendee copies, every figure and link,
the slides, and the lessons in a real browser.

The browser test starts JupyterLab exactly as `python3 run.py lab` does (its command line, a free
port, a known token), serving a scratch copy of the repository so that nothing it runs is ever
saved into a learner's own attendee/ copies, and drives Debian's Chromium with Playwright;
screenshots go to build/screenshots/.
"""
import base64
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
LESSONS = sorted(NOTEBOOKS.glob("[0-9][0-9]-*.ipynb"))
SHOTS = REPO / "build" / "screenshots"

import conftest
import run
from tools import build_slides, make_attendee_copies, run_tests
from workshop import lessons

pytestmark = pytest.mark.processes          # JupyterLab and a browser


# ------------------------------------------------------------------ run.py lab

def test_lab_as_root_without_a_display_starts_and_prints_its_address():
    command, url, notes = run.lab_command(Path("python"), [], "attendee", is_root=True, display=False)
    assert "--allow-root" in command and "--no-browser" in command
    assert f"--ServerApp.root_dir={REPO}" in command, "the server shows the whole repository"
    assert "--LabApp.default_url=/lab/tree/attendee/00-setup-check.ipynb" in command
    token = re.search(r"\?token=([0-9a-f]{32})$", url).group(1)
    assert f"--IdentityProvider.token={token}" in command
    port = command[command.index("--port") + 1]
    assert url.startswith(f"http://127.0.0.1:{port}/lab/tree/attendee/00-setup-check.ipynb")
    assert any("root" in n for n in notes) and any("display" in n for n in notes)


def test_lab_passes_its_arguments_to_jupyterlab():
    rest = ["--ip", "0.0.0.0", "--port=9000", "--IdentityProvider.token=abc", "--allow-root"]
    command, url, notes = run.lab_command(Path("python"), rest, "notebooks", is_root=True, display=True)
    assert command[-len(rest):] == rest and command.count("--allow-root") == 1
    assert "--no-browser" not in command
    assert url == "http://127.0.0.1:9000/lab/tree/notebooks/00-setup-check.ipynb?token=abc"
    # one JupyterLab for whoever has the address: it says so, and names the room's command
    assert len(notes) == 1 and "shares this one folder" in notes[0] and "run.py hub" in notes[0]


def test_hub_says_in_one_line_that_it_needs_linux_and_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(SystemExit) as stopped:
        run.hub([])
    assert "runs as root" in str(stopped.value) and "sudo python3 run.py hub" in str(stopped.value)


def test_lab_on_loopback_says_nothing_about_a_room():
    _, _, notes = run.lab_command(Path("python"), ["--port=9000"], "attendee", is_root=False, display=True)
    assert notes == []


def test_lab_news_and_update_prompts_are_off_in_the_environment_only(tmp_path, monkeypatch):
    prefix = tmp_path / "env"
    monkeypatch.setattr(run.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, str(prefix)))
    run.write_lab_overrides(Path("python"), {})
    written = json.loads((prefix / "share/jupyter/lab/settings/overrides.json").read_text())
    notification = written["@jupyterlab/apputils-extension:notification"]
    assert notification == {"checkForUpdates": False, "fetchNews": "false"}


def api(base, path, token, method="GET", body=None):
    request = urllib.request.Request(f"{base}{path}?token={token}", method=method,
                                     data=None if body is None else json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read() or b"null")


def start_lab(tmp_path, cifar10_root, token):
    """`python3 run.py lab` as a learner starts it, on a free loopback port: (process, base URL)."""
    port = run.free_port("127.0.0.1", 18800)
    env = dict(os.environ, CIFAR10_ROOT=str(cifar10_root), JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"))
    log = tmp_path / "run-lab.log"
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, str(REPO / "run.py"), "lab", "--here", "--no-browser",
                                   "--port", str(port), f"--IdentityProvider.token={token}"],
                                  cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    if not lab_answers(base, token, server, log, tries=240):     # at most 2 minutes
        server.kill()
        pytest.fail("JupyterLab did not answer within 2 minutes")
    return server, base, log


def lab_answers(base, token, server, log, tries):
    """Poll JupyterLab's status every 0.5 s, at most `tries` times; fails at once if it exits."""
    for _ in range(tries):
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
            return True
        except OSError:
            assert server.poll() is None, log.read_text()[-2000:]
            time.sleep(0.5)
    return False


def read_or_nothing(path):
    try:
        return path.read_bytes().decode(errors="replace")
    except OSError:                                       # the process has just ended
        return ""


def port_is_free(base):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", int(base.rsplit(":", 1)[1]))) != 0


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX signals")
def test_run_py_lab_stops_with_its_kernels_and_starts_on_a_fresh_workspace(tmp_path, cifar10_root):
    """SIGTERM (a process manager) or SIGHUP (a closed terminal) to `run.py lab` stops its
    JupyterLab and kernels: nothing is left on the port. A tab left open in one session is not
    restored in the next: the first screen is lesson 00."""
    token = "workshop-test"
    for number, signum in enumerate((signal.SIGTERM, signal.SIGHUP)):
        server, base, log = start_lab(tmp_path, cifar10_root, token)
        try:
            layout = api(base, "/lab/api/workspaces/lab", token)
            assert "attendee/08-scaling-out.ipynb" not in json.dumps(layout), f"start {number}: a tab was restored"
            layout["data"]["layout-restorer:data"] = {"main": {"dock": {"type": "tab-area", "currentIndex": 0,
                                                               "widgets": ["notebook:attendee/08-scaling-out.ipynb"]}}}
            layout["data"]["notebook:attendee/08-scaling-out.ipynb"] = {"data": {"path": "attendee/08-scaling-out.ipynb",
                                                                                  "factory": "Notebook"}}
            api(base, "/lab/api/workspaces/lab", token, "PUT", layout)    # what an open tab saves
            assert "08-scaling-out" in json.dumps(api(base, "/lab/api/workspaces/lab", token))
            kernel = api(base, "/api/kernels", token, "POST", {"name": "python3"})["id"]
            server.send_signal(signum)
            server.wait(timeout=60)
        finally:
            if server.poll() is None:
                server.kill()
        out = log.read_text()
        assert server.returncode == 0 and "JupyterLab stopped, with its kernels" in out, out[-2000:]
        assert port_is_free(base), f"{signal.Signals(signum).name}: JupyterLab still serves on {base}"
        if sys.platform == "linux":
            left = [p for p in Path("/proc").glob("[0-9]*/cmdline") if kernel in read_or_nothing(p)]
            assert not left, f"{signal.Signals(signum).name}: the kernel {kernel} is still running"


@pytest.mark.parametrize("capability,bf16,machine,expected", [
    ("AVX512", True, "x86_64", ("avx2", "cpu_dependent")),
    ("AVX512", False, "x86_64", ("avx2", "cpu_dependent")),
    ("AVX2", True, "x86_64", ("avx2", "cpu_dependent")),
    ("AVX2", False, "x86_64", ("default", "cpu_dependent and not timed and not long")),
    ("NO AVX", False, "arm64", None)])
def test_the_second_cpu_path_is_always_another_one(capability, bf16, machine, expected):
    path = run_tests.second_cpu_path(capability, bf16, machine)
    if expected is None:
        assert path is None
        return
    env, marks, _ = path
    assert (env["ATEN_CPU_CAPABILITY"], marks) == expected and env["WORKSHOP_BFLOAT16"] == "0"


def file_markers():
    """{file: its markers}: a lesson's from its notebook metadata, a test file's `pytestmark`."""
    import importlib
    found = {f"notebooks/{p.name}": set(conftest.lesson_markers(p)) for p in LESSONS}
    for path in sorted((REPO / "tests").glob("test_*.py")):
        marks = getattr(importlib.import_module(f"tests.{path.stem}"), "pytestmark", [])
        found[f"tests/{path.name}"] = {m.name for m in (marks if isinstance(marks, list) else [marks])}
    return found


def selected(run, markers):
    """The files a planned pytest run (title, args, env) selects, by its paths and -m expression."""
    from _pytest.mark.expression import Expression
    args = run[1]
    paths, expression = args[:args.index("-m")], Expression.compile(args[args.index("-m") + 1])
    return {f for f, marks in markers.items() if f.split("/")[0] in paths
            and expression.evaluate(lambda name, **kw: name in marks)}


def test_the_test_command_gives_timed_lessons_the_machine_and_shares_it_for_the_rest():
    markers = file_markers()
    second = run_tests.second_cpu_path("AVX512", True, "x86_64")
    alone, side_by_side = run_tests.test_plan(second)
    # lessons 05 and 06 compare timings they measure: they never share the machine
    timed = {"notebooks/05-training-on-cpu.ipynb", "notebooks/06-gpu.ipynb"}
    assert selected(alone[0], markers) == timed and alone[0][2] == {}
    assert selected(alone[1], markers) == {"notebooks/05-training-on-cpu.ipynb"} and alone[1][2] == second[0]
    first_pass = [selected(r, markers) for r in side_by_side if not r[2]]
    assert sum(len(s) for s in first_pass) + len(timed) == len(markers)    # every file once
    assert set().union(*first_pass) | timed == set(markers)
    tests, processes, others, again = side_by_side
    assert selected(processes, markers) == {"tests/test_distributed.py", "tests/test_exercises.py",
                                            "tests/test_attendee_view.py", "tests/test_hub.py",
                                            "notebooks/08-scaling-out.ipynb"}
    assert selected(again, markers) == {"notebooks/01-tensors.ipynb", "notebooks/03-cnn.ipynb",
                                        "notebooks/04-loss-and-optimizer.ipynb", "notebooks/07-fast-training.ipynb"}
    assert again[2] == second[0]
    cheap = run_tests.second_cpu_path("AVX2", False, "x86_64")
    alone, side_by_side = run_tests.test_plan(cheap)
    assert len(alone) == 1 and selected(side_by_side[-1], markers) == {
        "notebooks/01-tensors.ipynb", "notebooks/03-cnn.ipynb", "notebooks/04-loss-and-optimizer.ipynb"}
    alone, side_by_side = run_tests.test_plan(None)
    assert len(alone) == 1 and len(side_by_side) == 3


def test_the_test_command_reports_each_run_by_its_pytest_summary():
    output = "tests/x.py ..F\n=== FAILURES ===\n...\n====== 1 failed, 2 passed in 3.10s ======\n"
    assert run_tests.summary_line(output) == "1 failed, 2 passed in 3.10s"
    assert run_tests.summary_line("Traceback ...") == "no summary (see its output above)"


# ------------------------------------------------------------------ attendee copies

def test_attendee_copies_are_refreshed_but_never_overwrite_an_attendee(tmp_path, monkeypatch):
    written, kept = make_attendee_copies.refresh(tmp_path, quiet=True)
    assert written == [p.name for p in LESSONS] and kept == []
    edited = tmp_path / LESSONS[1].name
    edited.write_text(edited.read_text().replace("# Your answer here", "x = 42  # mine"))
    mine = edited.read_text()
    assert make_attendee_copies.refresh(tmp_path, quiet=True) == ([], [])   # nothing new: nothing said
    original = make_attendee_copies.attendee_copy

    def changed_lessons(nb):                      # every lesson gets a new cell, as after an update
        nb = original(nb)
        nb["cells"].append({"cell_type": "markdown", "id": "new", "metadata": {}, "source": ["New."]})
        return nb

    monkeypatch.setattr(make_attendee_copies, "attendee_copy", changed_lessons)
    written, kept = make_attendee_copies.refresh(tmp_path, quiet=True)
    assert kept == [edited.name] and edited.read_text() == mine, "the attendee's edits survive"
    assert sorted(written) == sorted(p.name for p in LESSONS if p.name != edited.name)
    assert '"New."' in (tmp_path / LESSONS[0].name).read_text()


# ------------------------------------------------------------------ figures and links, everywhere

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)|<img[^>]*\ssrc=\"([^\"]+)\"")
IMAGE = re.compile(r"!\[[^\]]*\]\(|<img\s")


def relative_links(text):
    for match in LINK.finditer(text):
        target = match.group(1) or match.group(2)
        if not re.match(r"[a-z]+:|#|/", target):
            yield target.split("#")[0]


def markdown_of(path):
    nb = json.loads(path.read_text())
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")


@pytest.mark.parametrize("folder", ["notebooks", "attendee"])
def test_every_figure_and_link_in_the_lessons_resolves(folder, tmp_path):
    """The lessons as stored, and the attendee copies (one folder below the repository too)."""
    where = NOTEBOOKS if folder == "notebooks" else REPO / "attendee"
    if folder == "attendee":
        where = tmp_path / "repo" / "attendee"
        make_attendee_copies.refresh(where, quiet=True)          # links the repository's pages beside it
        assert all((tmp_path / "repo" / name).resolve() == REPO / name for name in make_attendee_copies.PAGES)
    dead = []
    for lesson in sorted(where.glob("[0-9][0-9]-*.ipynb")):
        for target in relative_links(markdown_of(lesson)):
            if not (where / target).exists():
                dead.append(f"{folder}/{lesson.name}: {target}")
    assert not dead, "\n".join(dead)


@pytest.mark.parametrize("page", ["README.md", "INSTRUCTORS.md", "GLOSSARY.md"])
def test_every_link_on_the_repository_pages_resolves(page):
    dead = [t for t in relative_links((REPO / page).read_text()) if not (REPO / t).exists()]
    assert not dead, f"{page} links to missing {dead}"


def test_slides_carry_their_figures_and_working_links():
    decks = build_slides.build(LESSONS)
    for deck in decks:
        html = deck.read_text()
        sources = re.findall(r"<img[^>]*\ssrc=\"([^\"]+)\"", html)
        assert all(s.startswith("data:image/") for s in sources), f"{deck.name}: {[s[:40] for s in sources]}"
        for href in re.findall(r"<a[^>]*\shref=\"([^\"#]+)[^\"]*\"", html):
            if not re.match(r"[a-z]+:|/", href):
                assert (deck.parent / href).exists(), f"{deck.name} links to missing {href}"
        assert "white-space: pre-wrap" in html, "long lines wrap"
    with_figure = (build_slides.OUT / "01-tensors.slides.html").read_text()
    assert with_figure.count("data:image/png;base64,") >= 2, "lesson 01's figure is embedded"


def test_going_deeper_stays_folded_in_the_slides_and_the_attendee_copies():
    """A deck shows each Going deeper section as its heading and a line saying it is optional;
    an attendee's copy keeps the metadata that makes JupyterLab open it folded."""
    lesson = NOTEBOOKS / "05-training-on-cpu.ipynb"
    deck = build_slides.build([lesson])[0].read_text()
    assert "the tutorial&#39;s loop" in deck or "the tutorial's loop" in deck, "the heading stays"
    assert "running_loss" not in deck, "the folded section's code is not on a slide"
    assert build_slides.FOLDED_NOTE.strip().strip("*") in deck
    assert "The training loop" in deck, "the core path is on the slides"
    copy = make_attendee_copies.attendee_copy(lessons.read(lesson))
    folded = [c for c in copy["cells"] if c["metadata"].get("jp-MarkdownHeadingCollapsed")]
    assert folded and all(lessons.heading(c)[1].startswith("Going deeper") for c in folded)


# ------------------------------------------------------------------ in a real browser

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory, chromium):
    """JupyterLab started as `python3 run.py lab` starts it; yields (base URL, token, browser, URL)."""
    executable = chromium
    playwright = pytest.importorskip("playwright.sync_api")
    home = tmp_path_factory.mktemp("jupyter")
    settings = home / "settings" / "@jupyterlab"
    (settings / "notebook-extension").mkdir(parents=True)
    (settings / "docmanager-extension").mkdir(parents=True)
    # every cell rendered at once, so that every figure of a long lesson can be checked
    (settings / "notebook-extension" / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    (settings / "docmanager-extension" / "plugin.jupyterlab-settings").write_text('{"autosave": false}')
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(home / "config"),
               JUPYTER_RUNTIME_DIR=str(home / "runtime"), JUPYTERLAB_SETTINGS_DIR=str(home / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"))
    root = home / "workshop"                       # the repository as a learner has it
    root.mkdir()
    for name in ("README.md", "INSTRUCTORS.md", "GLOSSARY.md", "LICENSE"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "images", root / "images")
    shutil.copytree(NOTEBOOKS, root / "notebooks", ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
    make_attendee_copies.refresh(root / "attendee", quiet=True)
    run.write_lab_overrides(Path(sys.executable), env)
    command, url, _ = run.lab_command(Path(sys.executable), [], "attendee", root=root,
                                      is_root=hasattr(os, "geteuid") and os.geteuid() == 0, display=False)
    base, token = url.split("/lab/")[0], url.split("token=")[1]
    log = open(home / "lab.log", "w")
    server = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        lab_answers(base, token, server, home / "lab.log", tries=120)
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
            yield base, token, browser, url
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def open_lesson(browser, base, token, path):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(f"{base}/lab/tree/{path}?reset&token={token}")      # reset: this lesson alone
    page.wait_for_selector(".jp-Notebook .jp-RenderedMarkdown h1", timeout=60000)   # the title
    page.wait_for_timeout(300)
    try:                                            # figures arrive after the markdown renders
        page.wait_for_function("""() => Array.from(document.querySelectorAll('.jp-Notebook img'))
            .every(i => i.complete)""", timeout=15000)
    except Exception:
        pass                                        # reported as broken images below
    return page


def broken_images(page):
    return page.evaluate("""() => Array.from(document.querySelectorAll('.jp-Notebook img'))
        .filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('alt') || i.src)""")


def served(base, token, path):
    try:
        return urllib.request.urlopen(f"{base}/api/contents/{path}?content=0&token={token}", timeout=10).status == 200
    except OSError:
        return False


@pytest.mark.parametrize("folder", ["attendee", "notebooks"])
def test_every_lesson_shows_its_figures_and_its_links_work_in_jupyterlab(lab, folder):
    base, token, browser, _ = lab
    SHOTS.mkdir(parents=True, exist_ok=True)
    problems = []
    for lesson in LESSONS:
        # a page for every lesson whose text shows a figure from images/, which JupyterLab must
        # serve; figures in stored outputs are embedded PNGs (checked whole, without a browser,
        # below), and lesson 02's test shows one drawn live
        if IMAGE.search(markdown_of(lesson)):
            page = open_lesson(browser, base, token, f"{folder}/{lesson.name}")
            problems += [f"{folder}/{lesson.name}: image {b} did not load" for b in broken_images(page)]
            if lesson.stem.startswith("01") and folder == "notebooks":
                page.screenshot(path=str(SHOTS / "lab-01-tensors.png"))
            page.close()
        for target in relative_links(markdown_of(lesson)):
            resolved = os.path.normpath(f"{folder}/{target}")
            if not served(base, token, resolved):
                problems.append(f"{folder}/{lesson.name}: link {target} is not served")
    assert not problems, "\n".join(problems)


def test_every_stored_figure_is_a_whole_png():
    """What a browser would fail to draw: an output figure that is not a complete PNG."""
    broken = []
    for lesson in LESSONS:
        for i, cell in enumerate(json.loads(lesson.read_text())["cells"]):
            for output in cell.get("outputs", []):
                if "image/png" not in output.get("data", {}):
                    continue
                png = base64.b64decode(output["data"]["image/png"])
                width, height = struct.unpack(">II", png[16:24])
                if not (png.startswith(b"\x89PNG\r\n\x1a\n") and png[12:16] == b"IHDR"
                        and width * height > 0 and png[-8:-4] == b"IEND"):
                    broken.append(f"{lesson.name} cell {i}")
    assert not broken, broken


def run_all(page):
    page.click(".lm-MenuBar-itemLabel:text-is('Run')")
    page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")


def errors_shown(page):
    return page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").count()


def test_lesson_00_runs_all_from_the_menu_and_says_ready(lab):
    base, token, browser, url = lab
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(url.replace("?token", "?reset&token"))   # the address run.py prints: lesson 00 opens
    page.wait_for_selector(".jp-Notebook .jp-RenderedMarkdown h1", timeout=60000)
    assert "00-setup-check.ipynb" in page.title() or page.locator("text=00 · Setup check").count()
    assert page.locator("text=get notified about official Jupyter news").count() == 0
    run_all(page)
    ready = page.wait_for_selector(".jp-OutputArea-output >> text=Ready.", timeout=180000)
    ready.scroll_into_view_if_needed()
    page.mouse.wheel(0, 250)                       # the checks above it, and Ready. in view
    page.wait_for_timeout(500)
    page.screenshot(path=str(SHOTS / "lab-00-setup-check.png"))
    assert errors_shown(page) == 0, "lesson 00 showed an error"
    page.close()


def test_lesson_02_draws_its_batch_after_running(lab):
    base, token, browser, _ = lab
    page = open_lesson(browser, base, token, "attendee/02-data.ipynb")
    assert page.locator(".jp-OutputArea-output img").count() == 0, "the attendee copy has no outputs"
    run_all(page)
    page.wait_for_function("""() => Array.from(document.querySelectorAll('.jp-OutputArea-output img'))
        .some(i => i.complete && i.naturalWidth > 0)""", timeout=300000)
    page.screenshot(path=str(SHOTS / "lab-02-data.png"))
    page.close()


def test_a_slide_deck_shows_its_figures_and_nothing_runs_off_the_slide(lab):
    _, _, browser, _ = lab
    deck = build_slides.build([NOTEBOOKS / "01-tensors.ipynb"])[0]
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    page.goto(deck.as_uri())
    page.wait_for_selector(".reveal.ready", state="attached", timeout=60000)
    images = page.evaluate("() => Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
    assert images and all(images), "a figure of the deck did not load"
    overflowing = page.evaluate("""() => Array.from(document.querySelectorAll('.reveal pre'))
        .filter(e => e.scrollWidth > e.clientWidth + 1).length""")
    assert overflowing == 0, f"{overflowing} code blocks run off their slide"
    page.screenshot(path=str(SHOTS / "slides-01-tensors.png"))
    page.close()
