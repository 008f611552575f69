"""A room on one server: `python3 run.py hub`, JupyterHub with an account, a home and a copy of
the lessons per attendee, tried with real parts (JupyterHub, its proxy, the attendees' servers
and kernels, Chromium through Playwright), on loopback, as root like CI.

The room's shared install is prepared once by `run.py hub --prepare` in PREFIX (an environment
made from the system's Python: minutes the first time, kept for the next run like .venv). Its
data is the offline test copy, which torchvision in the attendees' kernels reads through the
test adapter (tests/offline_copy.py), installed by a .pth file in that test-only environment.
Every account and home a test makes is removed when the module ends, pass or fail.
"""
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from benchmarks.room import free_room_port
from tests import offline_copy
from workshop.hub import FOLDER

REPO = Path(__file__).resolve().parent.parent
PREFIX = Path("/var/tmp/workshop-hub-tests/prefix")
ATTENDEES = ("ada", "bob", "cy", "dee")
INSTRUCTOR = "teach"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
MINUTE = 60_000                                    # Playwright counts milliseconds

pytestmark = [pytest.mark.processes,
              pytest.mark.skipif(sys.platform != "linux" or os.geteuid() != 0,
                                 reason="a room's hub makes system accounts: Linux, as root (as in CI)")]


def prepare_prefix(cifar10_root):
    """The shared install, as `run.py hub --prepare` makes it, reading the offline test copy."""
    data = PREFIX / "data"
    if not (data / offline_copy.LOCAL_SUMS).exists():
        shutil.rmtree(data, ignore_errors=True)
        shutil.copytree(cifar10_root, data, ignore=shutil.ignore_patterns(".workshop-verified*"))
    done = subprocess.run([sys.executable, str(REPO / "run.py"), "hub", "--prepare", "--prefix", str(PREFIX)],
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    site = next((PREFIX / ".venv" / "lib").glob("python3.*/site-packages"))
    shutil.copy(REPO / "tests" / "offline_copy.py", site / "workshop_tests_offline_copy.py")
    (site / "workshop_tests_offline_copy.pth").write_text(
        "import workshop_tests_offline_copy; workshop_tests_offline_copy.install()\n")


class Room:
    """The hub as `python3 run.py hub` starts it, in scratch state and homes folders."""

    def __init__(self, scratch):
        self.scratch = scratch
        self.state, self.homes = scratch / "state", scratch / "homes"
        self.port = free_room_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = scratch / "hub.log"
        self.proc = None

    def start(self, *extra):
        self.log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "run.py"), "hub", "--prefix", str(PREFIX), "--ip", "127.0.0.1",
             "--port", str(self.port), "--state", str(self.state), "--homes", str(self.homes),
             "--instructor", INSTRUCTOR, "--attendees", str(len(ATTENDEES)), *extra],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO)
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{self.base}/hub/api/", timeout=2)
                return
            except OSError:
                assert self.proc.poll() is None, self.log_text()[-3000:]
                time.sleep(0.5)
        raise AssertionError("the hub did not answer within 2 minutes:\n" + self.log_text()[-3000:])

    def stop(self, sig=signal.SIGTERM):
        """SIGTERM: the hub alone (a restart); SIGINT (Ctrl+C): the room ends, every server stops."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc:
            self.log.close()

    def log_text(self):
        return self.log_path.read_text(errors="replace")

    @property
    def passwords(self):
        return json.loads((self.state / "passwords.json").read_text())

    def home(self, name):
        return self.homes / f"jupyter-{name}"

    def remove_accounts(self):
        for entry in pwd.getpwall():
            if entry.pw_dir.startswith(str(self.homes) + "/") or entry.pw_name == "jupyter-eve":
                subprocess.run(["pkill", "-KILL", "-u", entry.pw_name], capture_output=True)
                subprocess.run(["userdel", "--remove", entry.pw_name], capture_output=True)


@pytest.fixture(scope="module")
def room(cifar10_root):
    prepare_prefix(cifar10_root)
    # not under pytest's own temporary folder, which only root may enter: homes go in here
    scratch = Path(tempfile.mkdtemp(prefix="room-", dir=PREFIX.parent))
    os.chmod(scratch, 0o755)
    room = Room(scratch)
    try:
        room.start()
        yield room
    finally:
        room.stop()
        room.remove_accounts()
        (REPO / "build").mkdir(exist_ok=True)
        shutil.copy(room.log_path, REPO / "build" / "hub-tests.log")     # to read after a failure
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture(scope="module")
def browser(chromium):
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


def log_in(browser, room, name, password, wait=True):
    context = browser.new_context(viewport={"width": 1300, "height": 850})
    page = context.new_page()
    page.goto(f"{room.base}/hub/login")
    page.fill("#username_input", name)
    page.fill("#password_input", password)
    page.click("#login_submit", no_wait_after=not wait)
    return page


def login_message(page):
    page.wait_for_selector(".login_error", timeout=MINUTE)
    return page.inner_text(".login_error")


def wait_for_lesson(page):
    page.wait_for_selector(".jp-Notebook .jp-RenderedMarkdown h1", timeout=4 * MINUTE)


def run_all(page):
    page.click(".lm-MenuBar-itemLabel:text-is('Run')")
    page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")


def xsrf(page):
    return next(c["value"] for c in page.context.cookies() if c["name"] == "_xsrf")


def put_file(page, room, owner, name, text):
    """Save a file through the owner's server, as JupyterLab saves one."""
    return page.request.put(f"{room.base}/user/{owner}/api/contents/{name}",
                            data=json.dumps({"type": "file", "format": "text", "content": text}),
                            headers={"X-XSRFToken": xsrf(page), "Content-Type": "application/json"})


def test_a_wrong_password_or_an_impossible_name_is_refused_in_one_line(room, browser):
    page = log_in(browser, room, "zed", "not-the-password")
    assert "Invalid username or password" in login_message(page)
    page.context.close()
    page = log_in(browser, room, "Zed Smith!", room.passwords["room"])
    assert "cannot be a name here" in login_message(page)
    page.context.close()
    page = log_in(browser, room, INSTRUCTOR, room.passwords["room"])   # the room's password is not enough
    assert "Invalid username or password" in login_message(page)
    page.context.close()


def test_four_attendees_at_once_each_run_their_own_lesson_00(room, browser):
    pages = [log_in(browser, room, name, room.passwords["room"], wait=False) for name in ATTENDEES]
    for page in pages:                              # all logged in and spawning together
        wait_for_lesson(page)
        assert "/attendee/00-setup-check.ipynb" in page.url
    for page in pages:
        run_all(page)
    for name, page in zip(ATTENDEES, pages):
        ready = page.wait_for_selector(".jp-OutputArea-output >> text=Ready.", timeout=8 * MINUTE)
        ready.scroll_into_view_if_needed()
        assert page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").count() == 0
        page.screenshot(path=str(REPO / "build" / "screenshots" / f"hub-{name}.png"))
    for name in ATTENDEES:                          # each copy belongs to its attendee alone
        home = room.home(name)
        assert (home / FOLDER / "attendee" / "00-setup-check.ipynb").exists()
        assert home.stat().st_uid == pwd.getpwnam(f"jupyter-{name}").pw_uid
        assert home.stat().st_mode & 0o077 == 0
    ada, bob = pages[0], pages[1]
    assert put_file(ada, room, "ada", "mine.txt", "ada's notes\n").status == 201
    assert (room.home("ada") / FOLDER / "mine.txt").read_text() == "ada's notes\n"
    assert not (room.home("bob") / FOLDER / "mine.txt").exists()
    assert bob.request.get(f"{room.base}/user/bob/api/contents/mine.txt").status == 404
    # bob asks for ada's server and files: refused, through the hub and on disk
    assert bob.request.get(f"{room.base}/user/ada/api/contents/mine.txt").status == 403
    assert put_file(bob, room, "ada", "mine.txt", "bob was here\n").status in (403, 405)
    as_bob = subprocess.run(["runuser", "-u", "jupyter-bob", "--", "cat",
                             str(room.home("ada") / FOLDER / "mine.txt")], capture_output=True, text=True)
    assert as_bob.returncode != 0 and "Permission denied" in as_bob.stderr
    assert (room.home("ada") / FOLDER / "mine.txt").read_text() == "ada's notes\n"
    for page in pages[2:]:
        page.context.close()


def test_a_claimed_name_cannot_be_taken_by_someone_else(room, browser):
    page = log_in(browser, room, "ada", room.passwords["room"])
    assert "is taken" in login_message(page)
    page.context.close()


def test_the_instructor_sees_the_room_and_opens_an_attendees_notebook(room, browser):
    page = log_in(browser, room, INSTRUCTOR, room.passwords["instructors"][INSTRUCTOR])
    users = page.request.get(f"{room.base}/hub/api/users").json()
    assert {u["name"] for u in users if u["servers"]} >= {"ada", "bob"}
    page.goto(f"{room.base}/user/ada/lab/tree/attendee/00-setup-check.ipynb")
    page.wait_for_selector("h1:text-is('Authorize access'), .jp-Notebook", timeout=2 * MINUTE)
    if page.locator("h1:text-is('Authorize access')").count():
        page.click("button:text-is('Authorize')")  # JupyterHub asks before opening another's server
    wait_for_lesson(page)
    assert page.request.get(f"{room.base}/user/ada/api/contents/mine.txt").status == 200
    page.context.close()


def test_a_server_that_cannot_start_says_why_and_the_log_names_the_account(room, browser):
    subprocess.run(["useradd", "--no-create-home", "jupyter-eve"], check=True)   # not the room's
    page = log_in(browser, room, "eve", room.passwords["room"])
    page.wait_for_selector("text=could not be prepared", timeout=2 * MINUTE)
    assert "jupyter-eve" in page.inner_text("body")
    assert "account jupyter-eve" in room.log_text()
    page.context.close()


def test_a_restart_and_an_idle_cull_keep_every_file(room, browser):
    fay = log_in(browser, room, "fay", room.passwords["room"])
    wait_for_lesson(fay)
    assert put_file(fay, room, "fay", "notes.txt", "fay's notes\n").status == 201
    room.stop()                                    # the hub alone: fay's server keeps running
    room.start("--cull-idle", "60")                # and now servers idle a minute are stopped
    lesson = f"{room.base}/user/fay/lab/tree/attendee/00-setup-check.ipynb"
    fay.goto(lesson)                               # still logged in, her server rejoined the hub
    wait_for_lesson(fay)
    assert "Adding user fay to proxy" in room.log_text().split("Running JupyterHub version")[-1]
    assert fay.request.get(f"{room.base}/user/fay/api/contents/notes.txt").json()["content"] == "fay's notes\n"
    fay.goto(f"{room.base}/hub/home")              # fay leaves: her server goes idle
    teach = log_in(browser, room, INSTRUCTOR, room.passwords["instructors"][INSTRUCTOR])
    for _ in range(90):
        if not teach.request.get(f"{room.base}/hub/api/users/fay").json()["servers"]:
            break
        time.sleep(2)
    else:
        raise AssertionError("the idle culler did not stop fay's server within 3 minutes")
    assert "Culling server fay" in room.log_text()
    assert (room.home("fay") / FOLDER / "notes.txt").read_text() == "fay's notes\n"
    fay.goto(lesson)                               # back: a new server, the same files
    wait_for_lesson(fay)
    assert fay.request.get(f"{room.base}/user/fay/api/contents/notes.txt").status == 200


def test_ctrl_c_ends_the_room_and_stops_every_attendees_server(room, browser):
    gus = log_in(browser, room, "gus", room.passwords["room"])
    wait_for_lesson(gus)
    entry = pwd.getpwnam("jupyter-gus")
    account = entry.pw_uid
    assert running_as(account)
    # a process of the account that its server does not know of, as a kernel that was starting
    # while its server stopped becomes (it then runs on alone): the room's end stops it as well
    stray = subprocess.run(["setsid", "--fork", "sleep", "600"], user=account, group=entry.pw_gid,
                           extra_groups=[], cwd="/", timeout=30)
    assert stray.returncode == 0
    room.stop(signal.SIGINT)
    assert room.proc.returncode == 0, room.log_text()[-2000:]
    assert not running_as(account), "a process of an attendee outlived the room"
    room.start()                                   # the next tests, and the fixture, use it


def running_as(uid):
    return [p for p in Path("/proc").iterdir() if p.name.isdigit() and _owner(p) == uid]


def _owner(proc):
    try:
        return proc.stat().st_uid
    except OSError:
        return None


def test_a_busy_port_is_named_in_one_line(tmp_path):
    import socket
    from workshop import hub
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as stopped:
            hub.main(["--ip", "127.0.0.1", "--port", str(port), "--proxy", "/bin/true",
                      "--state", str(tmp_path / "state"), "--homes", str(tmp_path / "homes")])
    message = str(stopped.value)
    assert f"port {port} is in use" in message and "--port" in message and "\n" not in message
