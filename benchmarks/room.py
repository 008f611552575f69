#!/usr/bin/env python3
"""A room on one server, measured: N simulated attendees log in through the hub at once and run
lesson 02, then lesson 05, from their own copies, as each would press Run All.

    sudo .venv/bin/python benchmarks/room.py --attendees 4 [--prefix /opt/workshop] [--save results/room.json]
    .venv/bin/python benchmarks/room.py --table results/room.json    # INSTRUCTORS.md's table

It starts the room exactly as `python3 run.py hub` does (from the shared install in --prefix,
which `run.py hub --prepare` makes), on loopback, with scratch state and homes, and talks to it
as browsers would: the login form, then the hub's REST API with the attendee's own token, then
their server's kernels over the kernel protocol (a websocket). Every attendee's processes run
under their own account, so their memory is read by account from /proc: PSS, which counts a
page shared by k processes as 1/k in each (what an attendee costs the machine), and RSS.

Per attendee it prints peak memory, seconds from login to the first cell's result and to the
end of lesson 05, and failures (cells that raised; must be 0); then the machine's peak memory in
use. The last line is JSON. At the end the room is ended (Ctrl+C's way: every server stops) and
the accounts and homes it made are removed.
"""
import argparse
import asyncio
import http.cookiejar
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

from workshop.hub import processes_of

REPO = Path(__file__).resolve().parent.parent
LESSONS = ("02-data.ipynb", "05-training-on-cpu.ipynb")


def free_room_port():
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 65000 and all(_free(port + i) for i in range(3)):
            return port
    raise RuntimeError("no three free ports in a row on loopback")


def _free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class Attendee:
    """One simulated attendee: a login, a token, a server, kernels; times and failures."""

    def __init__(self, base, name, password):
        self.base, self.name, self.password = base, name, password
        self.times, self.failures, self.error = {}, [], None

    def log_in(self):
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect)
        opener.open(f"{self.base}/hub/login", timeout=60).read()
        xsrf = next(c.value for c in jar if c.name == "_xsrf")
        form = urllib.parse.urlencode({"username": self.name, "password": self.password, "_xsrf": xsrf})
        try:
            opener.open(f"{self.base}/hub/login", data=form.encode(), timeout=60)
        except urllib.error.HTTPError as reply:        # 302: logged in, sent on to the spawn page
            if reply.code != 302:
                raise RuntimeError(f"login refused: HTTP {reply.code}")
        xsrf = [c.value for c in jar if c.name == "_xsrf"][-1]   # logging in renews it
        request = urllib.request.Request(f"{self.base}/hub/api/users/{self.name}/tokens",
                                         data=b'{"note": "room benchmark"}', method="POST",
                                         headers={"X-XSRFToken": xsrf, "Content-Type": "application/json"})
        self.token = json.loads(opener.open(request, timeout=60).read())["token"]

    def api(self, method, path, body=None, timeout=120):
        request = urllib.request.Request(self.base + path, method=method,
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            raw = reply.read()
            return json.loads(raw) if raw else None

    def start_server(self, limit=600):
        self.api("POST", f"/hub/api/users/{self.name}/server")
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            server = self.api("GET", f"/hub/api/users/{self.name}")["servers"].get("", {})
            if server.get("ready"):
                return
            time.sleep(1)
        raise RuntimeError(f"server not ready after {limit} s")

    async def run_lesson(self, lesson):
        from tornado.httpclient import HTTPRequest
        from tornado.websocket import websocket_connect
        nb = self.api("GET", f"/user/{self.name}/api/contents/attendee/{lesson}")["content"]
        kernel = self.api("POST", f"/user/{self.name}/api/kernels", {"name": "python3"})["id"]
        ws_base = self.base.replace("http", "ws", 1)
        ws = await websocket_connect(HTTPRequest(f"{ws_base}/user/{self.name}/api/kernels/{kernel}/channels",
                                                 headers={"Authorization": f"token {self.token}"}),
                                     max_message_size=512 * 2**20)
        session = uuid.uuid4().hex
        try:
            for i, cell in enumerate(c for c in nb["cells"] if c["cell_type"] == "code"):
                msg_id = uuid.uuid4().hex
                await ws.write_message(json.dumps({
                    "header": {"msg_id": msg_id, "msg_type": "execute_request", "session": session,
                               "username": self.name, "version": "5.3", "date": ""},
                    "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                    "content": {"code": cell["source"], "silent": False, "store_history": True,
                                "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}}))
                while True:
                    raw = await asyncio.wait_for(ws.read_message(), timeout=1800)
                    if raw is None:
                        raise RuntimeError(f"{lesson}: the kernel's connection closed")
                    if isinstance(raw, bytes):
                        continue
                    msg = json.loads(raw)
                    if msg.get("parent_header", {}).get("msg_id") != msg_id:
                        continue
                    if msg["msg_type"] == "error":
                        self.failures.append(f"{lesson} cell {i}: {msg['content']['ename']}: "
                                             f"{msg['content']['evalue'][:200]}")
                    if msg["channel"] == "shell" and msg["msg_type"] == "execute_reply":
                        break
                self.times.setdefault("first_result", time.monotonic())
        finally:
            ws.close()
            self.api("DELETE", f"/user/{self.name}/api/kernels/{kernel}")

    def run(self, start_line):
        try:
            start_line.wait()
            self.times["login"] = time.monotonic()
            self.log_in()
            self.start_server()
            self.times["ready"] = time.monotonic()
            for lesson in LESSONS:
                asyncio.run(self.run_lesson(lesson))
            self.times["end"] = time.monotonic()
        except Exception as err:                        # counted, and the others go on
            self.error = f"{type(err).__name__}: {err}"
            self.failures.append(self.error)


def memory_of(uid):
    """(PSS, RSS) in bytes of every process of account `uid`, from /proc."""
    pss = rss = 0
    for pid in processes_of(uid):
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
                elif line.startswith("Rss:"):
                    rss += int(line.split()[1]) * 1024
        except (OSError, ValueError):
            continue
    return pss, rss


def machine_in_use():
    info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return (int(info["MemTotal"].split()[0]) - int(info["MemAvailable"].split()[0])) * 1024


# ----------------------------------------------------------------------------- what it implies

ROOM = 30                   # the room INSTRUCTORS.md sizes for
LESSON_05_MINUTES = 10      # how long a room may wait for lesson 05 when everyone runs it at once


def _half_gib_up(x):
    return -(-x // 0.5) * 0.5


def sizing(saved, room=ROOM):
    """What the measured runs imply for a room: per attendee, the memory to guarantee (the
    largest peak PSS, rounded up to half a GiB) and to allow (1.5 times that: a second kernel
    left open, an exercise), the CPU seconds lessons 02 and 05 cost one attendee (a run's wall
    time times the cores, shared by its attendees, all at once), and for `room` attendees the
    cores that finish lesson 05 within LESSON_05_MINUTES and the memory of the whole room."""
    runs = [r for r in saved["runs"] if not r["hub_options"] and not r["failures"]]
    peak = max(r["max_pss_gib"] for r in runs)
    guarantee = _half_gib_up(peak)
    limit = _half_gib_up(1.5 * guarantee)
    cpu_s = max(r["wall_s"] * r["cores"] / r["attendees"] for r in runs)
    cores = int(-(-room * cpu_s // (LESSON_05_MINUTES * 60)))
    hub = max(r["machine_in_use_before_gib"] for r in runs)
    return {"memory_guarantee_gib": guarantee, "memory_limit_gib": limit,
            "cpu_seconds_per_attendee": round(cpu_s), "room": room, "room_cores": cores,
            "cpu_guarantee": round(cores / room, 2), "cpu_limit": 1,
            "room_memory_gib": int(-(-(room * guarantee + hub) // 1)), "peak_pss_gib": peak}


def table(saved):
    """INSTRUCTORS.md's sizing table and what it implies, in Markdown."""
    runs = sorted((r for r in saved["runs"] if not r["hub_options"]), key=lambda r: r["attendees"])
    lines = ["| attendees at once | threads each | peak memory per attendee (PSS, GiB) | "
             "login to first result (s) | login to end of lesson 05 (s) | failures |",
             "|---|---|---|---|---|---|"]
    for r in runs:
        first = [x["first_result_s"] for x in r["rows"]]
        end = [x["end_s"] for x in r["rows"]]
        lines.append(f"| {r['attendees']} | {r['threads_per_attendee']} | "
                     f"{min(x['peak_pss_gib'] for x in r['rows']):.2f}–{r['max_pss_gib']:.2f} | "
                     f"{min(first):.0f}–{max(first):.0f} | {min(end):.0f}–{max(end):.0f} | {r['failures']} |")
    s = sizing(saved)
    r = runs[-1]
    lines += ["", f"Measured on {r['cores']} cores and {r['machine_gib']} GiB ({r['cpu_capability']}), "
              f"torch {r['torch']}, commit {r['commit']}, lessons 02 and 05 from the attendee copies. "
              f"For a room of {s['room']} that runs lesson 05 in the lab: each attendee costs about "
              f"{s['cpu_seconds_per_attendee']} CPU-seconds for lessons 02 and 05, so "
              f"**{s['room_cores']} cores** finish lesson 05 within {LESSON_05_MINUTES} minutes when "
              f"everybody starts it at once, and **{s['room_memory_gib']} GiB** of memory hold the "
              f"room ({s['memory_guarantee_gib']:g} GiB per attendee, the largest peak rounded up, "
              f"plus the hub); limit each attendee to {s['memory_limit_gib']:g} GiB "
              f"(`--memory {s['memory_limit_gib']:g}G`, the default)."]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--attendees", type=int, default=4)
    p.add_argument("--prefix", default="/opt/workshop", help="the room's shared install (run.py hub --prepare)")
    p.add_argument("--save", help="add this run's figures to a JSON file (results/room.json)")
    p.add_argument("--hub-option", action="append", default=[], help="passed to run.py hub")
    p.add_argument("--table", metavar="JSON", help="print the sizing table of saved runs and stop")
    args = p.parse_args(argv)
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return 0
    if os.geteuid() != 0:
        sys.exit("the room makes an account per attendee: run this as root")
    scratch = Path(tempfile.mkdtemp(prefix="room-benchmark-", dir="/var/tmp"))
    os.chmod(scratch, 0o755)
    port = free_room_port()
    base = f"http://127.0.0.1:{port}"
    log = open(scratch / "hub.log", "w")
    hub = subprocess.Popen([sys.executable, str(REPO / "run.py"), "hub", "--prefix", args.prefix,
                            "--ip", "127.0.0.1", "--port", str(port), "--state", str(scratch / "state"),
                            "--homes", str(scratch / "homes"), "--attendees", str(args.attendees),
                            *args.hub_option], stdout=log, stderr=subprocess.STDOUT)
    names = [f"bench{i + 1}" for i in range(args.attendees)]
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"{base}/hub/api/", timeout=2)
                break
            except OSError:
                if hub.poll() is not None:
                    sys.exit("the hub did not start:\n" + (scratch / "hub.log").read_text()[-3000:])
                time.sleep(0.5)
        password = json.loads((scratch / "state" / "passwords.json").read_text())["room"]
        room = [Attendee(base, name, password) for name in names]
        peaks = {name: [0, 0] for name in names}
        machine = [machine_in_use(), 0]
        done = threading.Event()

        def sample():
            while not done.is_set():
                for name in names:
                    try:
                        pss, rss = memory_of(pwd.getpwnam(f"jupyter-{name}").pw_uid)
                    except KeyError:
                        continue
                    peaks[name] = [max(peaks[name][0], pss), max(peaks[name][1], rss)]
                machine[1] = max(machine[1], machine_in_use())
                done.wait(1.0)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start_line = threading.Event()
        workers = [threading.Thread(target=a.run, args=(start_line,)) for a in room]
        for w in workers:
            w.start()
        began = time.monotonic()
        start_line.set()                                 # everybody logs in at once
        for w in workers:
            w.join(4 * 3600)
        wall = time.monotonic() - began
        done.set()
        sampler.join(5)
    finally:
        hub.send_signal(signal.SIGINT)                   # the room ends: every server stops
        try:
            hub.wait(180)
        except subprocess.TimeoutExpired:
            hub.kill()
        log.close()
        for name in names:
            account = f"jupyter-{name}"
            subprocess.run(["pkill", "-KILL", "-u", account], capture_output=True)
            subprocess.run(["userdel", "--remove", account], capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)
    gib = 2 ** 30
    rows = []
    print(f"{'attendee':10} {'peak PSS GiB':>12} {'peak RSS GiB':>12} {'to first result s':>18} "
          f"{'to the end s':>13} {'failures':>9}")
    for a in room:
        t = a.times
        row = {"attendee": a.name, "peak_pss_gib": round(peaks[a.name][0] / gib, 2),
               "peak_rss_gib": round(peaks[a.name][1] / gib, 2),
               "first_result_s": round(t["first_result"] - t["login"], 1) if "first_result" in t else None,
               "end_s": round(t["end"] - t["login"], 1) if "end" in t else None,
               "failures": len(a.failures), "errors": a.failures}
        rows.append(row)
        print(f"{a.name:10} {row['peak_pss_gib']:12.2f} {row['peak_rss_gib']:12.2f} "
              f"{row['first_result_s'] or float('nan'):18.1f} {row['end_s'] or float('nan'):13.1f} "
              f"{row['failures']:9d}")
        for failure in a.failures:
            print(f"    {failure}")
    import torch
    summary = {"attendees": args.attendees, "cores": os.cpu_count(),
               "threads_per_attendee": max(1, (os.cpu_count() or 1) // args.attendees),
               "machine_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / gib, 1),
               "machine_peak_in_use_gib": round(machine[1] / gib, 2),
               "machine_in_use_before_gib": round(machine[0] / gib, 2),
               "wall_s": round(wall, 1), "failures": sum(r["failures"] for r in rows),
               "max_pss_gib": max(r["peak_pss_gib"] for r in rows),
               "max_end_s": max((r["end_s"] or 0) for r in rows),
               "lessons": list(LESSONS), "hub_options": args.hub_option,
               "torch": torch.__version__.split("+")[0], "cpu_capability": torch.backends.cpu.get_cpu_capability(),
               "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                        capture_output=True, text=True).stdout.strip(),
               "rows": rows}
    print(f"machine: {summary['cores']} cores, {summary['machine_gib']} GiB; peak in use "
          f"{summary['machine_peak_in_use_gib']} GiB (before: {summary['machine_in_use_before_gib']}); "
          f"all {args.attendees} done in {summary['wall_s']} s; failures: {summary['failures']}")
    if args.save and not summary["failures"]:
        path = Path(args.save)
        saved = json.loads(path.read_text()) if path.exists() else {"runs": []}
        saved["runs"] = [r for r in saved["runs"] if (r["attendees"], r["hub_options"]) !=
                         (args.attendees, args.hub_option)] + [summary]
        saved["runs"].sort(key=lambda r: (r["hub_options"], r["attendees"]))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(saved, indent=1) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}))
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
