"""A room's JupyterHub: every attendee logs in with a name and the room's password and gets a
system account, a home and a copy of the lessons of their own.

    sudo python3 run.py hub [--port 8000] [--instructor NAME] [--attendees 30] ...

run.py installs the workshop for everybody in a shared, read-only prefix (/opt/workshop: the
lessons, one environment made from the system's Python, JupyterHub's proxy, one verified copy of
CIFAR-10) and starts this module from there, as root: `python -m workshop.hub --help` lists the
options. It keeps the room's state (passwords, JupyterHub's database and cookie secret) in
--state, a folder only root can read, writes JupyterHub's configuration there and runs JupyterHub.

What JupyterHub is told (configure()):
- login: RoomAuthenticator, JupyterHub's SharedPasswordAuthenticator (any name, the room's
  password) where the first login claims a name, so that nobody else can log in as it;
- one account per attendee, jupyter-NAME (The Littlest JupyterHub's naming), made on the first
  login by prepare_home(), whose home (mode 700) holds the attendee's copies of the lessons, made
  as that account, once, never overwritten;
- each server runs as that account: SystemdSpawner (a unit with a memory and CPU limit) where
  systemd runs, else JupyterHub's LocalProcessSpawner (no memory limit: said at start), which
  here also ends any process of the account left behind when its server stops;
- a bounded number of threads per attendee, so a full room shares the cores;
- jupyterhub-idle-culler stops idle servers (their files stay); the instructor is an admin who
  sees who is logged in and may open any attendee's server.
"""
import argparse
import asyncio
import importlib.util
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from workshop.data import REPO

ACCOUNT = "jupyter-{name}"                 # the system account of attendee NAME
NAME = re.compile(r"[a-z][a-z0-9_-]{0,23}$")   # fits a Linux account name once prefixed
NAME_RULE = ("a name is 1 to 24 lowercase letters, digits, '-' or '_', starting with a letter "
             "(e.g. ada or ada-l)")
MARK = "workshop attendee"                 # the accounts' comment: accounts made here, and only they
FOLDER = "pytorch-workshop"               # in each home; a name Python cannot import (no
                                          # folder named `workshop` to shadow the package)
FIRST_LESSON = "attendee/00-setup-check.ipynb"
VENV = REPO / ".venv"


def say(msg):
    print(f"[workshop] {msg}", flush=True)


def account_of(name):
    return ACCOUNT.format(name=name)


# ----------------------------------------------------------------------------- JupyterHub's parts
# what JupyterHub itself uses, from the configuration that main() writes

if importlib.util.find_spec("jupyterhub"):
    from jupyterhub.authenticators.shared import SharedPasswordAuthenticator
    from jupyterhub.spawner import LocalProcessSpawner, set_user_setuid
else:                        # a learner's own environment: no JupyterHub (a room's server has it)
    SharedPasswordAuthenticator = LocalProcessSpawner = object


class RoomAuthenticator(SharedPasswordAuthenticator):
    """The room's password for any name that may be an account; the first login claims it."""

    async def authenticate(self, handler, data):
        from tornado import web
        name = self.normalize_username(data.get("username", ""))
        if not NAME.match(name):
            raise web.HTTPError(403, f"'{name[:30]}' cannot be a name here: {NAME_RULE}.")
        result = await super().authenticate(handler, data)
        if result and not result.get("admin") and handler.find_user(name) is not None:
            raise web.HTTPError(403, f"The name {name} is taken in this room: pick another, "
                                     f"or ask the instructor to let you back in.")
        return result


class AttendeeSpawner(LocalProcessSpawner):
    """JupyterHub's LocalProcessSpawner, with the server run as the account jupyter-NAME."""

    def make_preexec_fn(self, name):
        return set_user_setuid(account_of(self.user.name))

    def user_env(self, env):
        entry = pwd.getpwnam(account_of(self.user.name))
        env.update(USER=entry.pw_name, HOME=entry.pw_dir, SHELL=entry.pw_shell or "/bin/bash")
        return env

    async def stop(self, now=False):
        """Stop the server, then whatever of its account outlived it. A kernel that was starting
        as its server stopped is not among the kernels the server shuts down: it would run on,
        alone. (SystemdSpawner stops a server's whole unit, so it needs no such step.)"""
        await super().stop(now=now)
        uid = pwd.getpwnam(account_of(self.user.name)).pw_uid
        left = processes_of(uid)
        if left:
            self.log.info("%s's server stopped; ending %d process(es) of its account left behind",
                          self.user.name, len(left))
            if not await end_processes(uid):
                self.log.warning("processes of %s did not end: %s", account_of(self.user.name),
                                 processes_of(uid))


def processes_of(uid):
    """The ids of the processes running as `uid`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and entry.stat().st_uid == uid:
                found.append(int(entry.name))
        except OSError:                           # it ended while we looked
            pass
    return found


async def end_processes(uid, wait=5.0):
    """SIGTERM every process of `uid`, then SIGKILL what is left after `wait` seconds; True when
    none is left (bounded: at most twice `wait`)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in processes_of(uid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        for _ in range(int(wait / 0.1)):
            if not processes_of(uid):
                return True
            await asyncio.sleep(0.1)
    return not processes_of(uid)


def run_as(account, command):
    """Run `command` as `account` in its home (root's files never enter a home it controls)."""
    entry = pwd.getpwnam(account)
    env = {"HOME": entry.pw_dir, "USER": account, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    return subprocess.run(command, cwd=entry.pw_dir, env=env, capture_output=True, text=True,
                          user=entry.pw_uid, group=entry.pw_gid, extra_groups=[], umask=0o077,
                          timeout=120)


def ensure_account(name, homes):
    """The account of attendee `name`, made on the first login with a home only it can open."""
    account = account_of(name)
    try:
        entry = pwd.getpwnam(account)
        if MARK not in entry.pw_gecos:
            raise RuntimeError(f"the account {account} exists and was not made for this room")
        return entry
    except KeyError:
        pass
    home = Path(homes) / account
    made = subprocess.run(["useradd", "--create-home", "--home-dir", str(home), "--shell", "/bin/bash",
                           "--user-group", "--comment", f"{MARK} {name}", account],
                          capture_output=True, text=True)
    if made.returncode != 0:
        raise RuntimeError(f"useradd {account} failed: {made.stderr.strip()}")
    os.chmod(home, 0o700)
    return pwd.getpwnam(account)


def prepare_home(spawner, homes):
    """JupyterHub's pre-spawn hook: the attendee's account, home and copies of the lessons."""
    name = spawner.user.name
    account = account_of(name)
    try:
        entry = ensure_account(name, homes)
        made = run_as(account, [str(VENV / "bin" / "python"), str(REPO / "tools" / "make_attendee_copies.py"),
                                str(Path(entry.pw_dir) / FOLDER / "attendee")])
        if made.returncode != 0:
            said = (made.stderr or made.stdout).strip().splitlines() or ["no message"]
            raise RuntimeError(f"copying the lessons failed: {said[-1]}")
    except Exception as err:
        spawner.log.error("Attendee %s (account %s): their server cannot start: %s", name, account, err)
        from tornado import web
        shown = web.HTTPError(500, f"Your workspace could not be prepared ({err}). Tell the "
                                   f"instructor: the hub's log names your account, {account}.")
        shown.jupyterhub_message = shown.log_message     # what the attendee's page shows
        raise shown from None
    spawner.log.info("Attendee %s runs as account %s, home %s", name, account, entry.pw_dir)


def configure(c, s):
    """Fill JupyterHub's configuration `c` from the room's settings `s` (room.json)."""
    state = Path(s["state"])
    passwords = json.loads((state / "passwords.json").read_text())
    c.JupyterHub.ip, c.JupyterHub.port = s["ip"], s["port"]
    c.JupyterHub.hub_ip, c.JupyterHub.hub_port = "127.0.0.1", s["port"] + 1
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{s['port'] + 2}"
    c.ConfigurableHTTPProxy.command = [s["proxy"]]
    c.ConfigurableHTTPProxy.pid_file = str(state / "proxy.pid")
    c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
    c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")
    c.JupyterHub.pid_file = str(state / "jupyterhub.pid")
    if s.get("ssl_cert"):
        c.JupyterHub.ssl_cert, c.JupyterHub.ssl_key = s["ssl_cert"], s["ssl_key"]
    c.JupyterHub.authenticator_class = RoomAuthenticator
    c.Authenticator.allow_all = True
    c.SharedPasswordAuthenticator.user_password = passwords["room"]
    if s.get("instructor"):
        c.Authenticator.admin_users = {s["instructor"]}
        c.SharedPasswordAuthenticator.admin_password = passwords["instructors"][s["instructor"]]
    c.JupyterHub.template_vars = {"announcement_login": "Type a name of your own (" + NAME_RULE +
                                  ") and the room's password."}
    home = f"{s['homes']}/{ACCOUNT.format(name='{username}')}"
    c.Spawner.cmd = [str(VENV / "bin" / "jupyterhub-singleuser")]
    c.Spawner.notebook_dir = f"{home}/{FOLDER}"
    c.Spawner.default_url = f"/lab/tree/{FIRST_LESSON}"
    threads = str(s["threads"])
    c.Spawner.environment = {
        "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
        "CIFAR10_ROOT": s["data"],
        "WORKSHOP_CHECKPOINT": lambda spawner: f"{s['homes']}/{account_of(spawner.user.name)}"
                                                f"/{FOLDER}/checkpoints/workshop_net.pt"}
    c.Spawner.pre_spawn_hook = lambda spawner: prepare_home(spawner, s["homes"])
    c.Spawner.start_timeout = c.Spawner.http_timeout = 180      # a room's logins come all at once
    if s["systemd"]:
        c.JupyterHub.spawner_class = "systemdspawner.SystemdSpawner"
        c.SystemdSpawner.username_template = ACCOUNT.format(name="{USERNAME}")
        c.SystemdSpawner.mem_limit = s["memory"]
        c.SystemdSpawner.cpu_limit = float(s["threads"])
        c.SystemdSpawner.isolate_tmp = True
        c.SystemdSpawner.disable_user_sudo = True
        c.SystemdSpawner.default_shell = "/bin/bash"
    else:
        c.JupyterHub.spawner_class = AttendeeSpawner
    culler = [sys.executable, "-m", "jupyterhub_idle_culler", f"--timeout={s['cull_idle']}",
              f"--cull-every={max(5, min(300, s['cull_idle'] // 2))}"]
    c.JupyterHub.services = [{"name": "idle-culler", "command": culler},
                             {"name": "workshop-room", "api_token": passwords["room_token"]}]
    c.JupyterHub.load_roles = [{"name": "idle-culler", "services": ["idle-culler"],
                                "scopes": ["list:users", "read:users:activity", "read:servers",
                                           "delete:servers"]},
                               {"name": "workshop-room", "services": ["workshop-room"],
                                "scopes": ["list:users", "read:servers", "delete:servers"]}]
    # a hub restarted in the middle of a lesson leaves every server and kernel running (main()
    # stops them only at Ctrl+C); an attendee whose server was stopped gets it back by coming back
    c.JupyterHub.cleanup_servers = False
    c.JupyterHub.implicit_spawn_seconds = 2


# ----------------------------------------------------------------------------- starting the room

def options(argv):
    cores = os.cpu_count() or 1
    p = argparse.ArgumentParser(prog="python3 run.py hub", description="Serve the workshop to a room.")
    p.add_argument("--ip", default="0.0.0.0", help="address to listen on (default: every one)")
    p.add_argument("--port", type=int, default=8000, help="the room's port (the hub also uses the "
                   "next two, on loopback)")
    p.add_argument("--instructor", metavar="NAME", help="an admin account with its own password")
    p.add_argument("--attendees", type=int, default=30, help="expected room size (default 30): "
                   "each attendee's kernels get the cores divided by it, at least one thread")
    p.add_argument("--threads", type=int, help="threads per attendee, instead of that share")
    p.add_argument("--memory", default="3G", help="memory limit per attendee where systemd "
                   "runs (default 3G, from the room benchmark in INSTRUCTORS.md)")
    p.add_argument("--cull-idle", type=int, default=3600, metavar="SECONDS",
                   help="stop a server idle this long (default 3600); its files stay")
    p.add_argument("--state", default="/var/lib/workshop-hub", help="the room's state, root only")
    p.add_argument("--homes", default="/home", help="where the attendees' homes are made")
    p.add_argument("--ssl-cert", help="HTTPS certificate (with --ssl-key)")
    p.add_argument("--ssl-key")
    p.add_argument("--config", help="a JupyterHub configuration file read after the room's own")
    p.add_argument("--new-passwords", action="store_true", help="replace the room's passwords")
    p.add_argument("--proxy", default=shutil.which("configurable-http-proxy"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.instructor and not NAME.match(args.instructor):
        p.error(f"--instructor {args.instructor}: {NAME_RULE}")
    if bool(args.ssl_cert) != bool(args.ssl_key):
        p.error("--ssl-cert and --ssl-key go together")
    args.threads = args.threads or max(1, cores // max(1, args.attendees))
    return args


def port_in_use(ip, port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip or "0.0.0.0", port))
            return False
        except OSError:
            return True


def previous_proxy(state):
    """True when the proxy of an earlier run of this room still runs (JupyterHub replaces it)."""
    try:
        pid = int((state / "proxy.pid").read_text())
        return "configurable-http-proxy" in Path(f"/proc/{pid}/cmdline").read_text()
    except (OSError, ValueError):
        return False


def room_passwords(state, instructor, renew):
    """The room's password (easy to type) and the instructor's, made once, kept root-only."""
    path = state / "passwords.json"
    kept = json.loads(path.read_text()) if path.exists() and not renew else {}
    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
    kept.setdefault("room", "-".join("".join(secrets.choice(alphabet) for _ in range(4)) for _ in range(3)))
    kept.setdefault("instructors", {})
    kept.setdefault("room_token", secrets.token_hex(32))     # main()'s own key to the hub's API
    if instructor:
        kept["instructors"].setdefault(instructor, secrets.token_urlsafe(24))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(kept, f, indent=1)
    return kept


def box(lines):
    width = min(100, max(len(line) for line in lines) + 4)
    return "\n".join(["=" * width, *(f"  {line}" for line in lines), "=" * width])


def main(argv):
    args = options(argv)
    if os.geteuid() != 0:
        sys.exit("[workshop] the hub makes an account per attendee: run it as root (sudo python3 run.py hub)")
    if not args.proxy or not Path(args.proxy).exists():
        sys.exit("[workshop] JupyterHub's proxy is missing: start the room with `python3 run.py hub`, "
                 "which installs it")
    state = Path(args.state)
    state.mkdir(parents=True, exist_ok=True)
    os.chmod(state, 0o700)
    Path(args.homes).mkdir(parents=True, exist_ok=True)
    for port, ip in ((args.port, args.ip), (args.port + 1, "127.0.0.1"), (args.port + 2, "127.0.0.1")):
        if port_in_use(ip, port) and not (port != args.port + 1 and previous_proxy(state)):
            sys.exit(f"[workshop] port {port} is in use by another program: pick another room port "
                     f"with --port N (the hub also uses the two after it)")
    passwords = room_passwords(state, args.instructor, args.new_passwords)
    systemd = Path("/run/systemd/system").is_dir() and shutil.which("systemd-run") is not None
    settings = {"ip": args.ip, "port": args.port, "state": str(state), "homes": str(Path(args.homes).resolve()),
                "proxy": str(args.proxy), "data": str(REPO / "data"), "threads": args.threads,
                "memory": args.memory, "cull_idle": args.cull_idle, "systemd": systemd,
                "instructor": args.instructor, "ssl_cert": args.ssl_cert, "ssl_key": args.ssl_key}
    (state / "room.json").write_text(json.dumps(settings, indent=1) + "\n")
    config = state / "jupyterhub_config.py"
    extra = f"load_subconfig({str(Path(args.config).resolve())!r})\n" if args.config else ""
    config.write_text("# Written by `python3 run.py hub` at every start: change its options, not this file.\n"
                      "import json\nfrom workshop import hub\n"
                      f"hub.configure(c, json.load(open({str(state / 'room.json')!r})))\n" + extra)
    scheme = "https" if args.ssl_cert else "http"
    host = args.ip if args.ip not in ("0.0.0.0", "") else socket.getfqdn()
    lines = [f"The room's address:  {scheme}://{host}:{args.port}/",
             "Attendees type a name of their own and the room's password:",
             f"    {passwords['room']}"]
    if args.instructor:
        lines += [f"Instructor {args.instructor}'s password (admin: /hub/admin):",
                  f"    {passwords['instructors'][args.instructor]}"]
    lines += [f"Kept in {state / 'passwords.json'} (root only); --new-passwords replaces them."]
    print("\n" + box(lines) + "\n", flush=True)
    say(f"{args.threads} thread(s) per attendee ({os.cpu_count()} cores, room of {args.attendees}; "
        f"--threads N to change)")
    if systemd:
        say(f"each attendee's server is limited to {args.memory} of memory (--memory)")
    else:
        say("memory per attendee is not limited here: systemd is not running, and JupyterHub's "
            "SystemdSpawner needs it; watch the machine's free memory")
    if scheme == "http" and args.ip not in ("127.0.0.1", "localhost", "::1"):
        say("warning: plain HTTP on the room's network, so passwords cross it readable: pass "
            "--ssl-cert FILE --ssl-key FILE, or put the hub behind an HTTPS reverse proxy")
    say(f"attendees' servers stop after {args.cull_idle} s idle (--cull-idle), their files stay")
    say("Ctrl+C here ends the room: every attendee's server stops. SIGTERM or SIGHUP stops only "
        "the hub (to restart it): servers and kernels keep running and rejoin it")
    hub = subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", str(config)], cwd=state,
                           start_new_session=True)
    asked = []
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: asked.append(signum))
    while hub.poll() is None:
        if asked:
            if asked[0] == signal.SIGINT:
                say("ending the room: stopping every attendee's server (their files stay)")
                stop_servers(f"http://127.0.0.1:{args.port + 1}/hub/api", passwords["room_token"])
            else:
                say("stopping the hub; attendees' servers keep running until it starts again")
            hub.send_signal(signal.SIGTERM)
            asked.clear()
            try:
                return hub.wait(120)
            except subprocess.TimeoutExpired:
                hub.kill()
        time.sleep(0.2)
    return hub.returncode


def stop_servers(api, token, wait=60):
    """Stop every attendee's server through the hub's API; wait at most `wait` seconds."""
    def call(method, path):
        request = urllib.request.Request(api + path, method=method,
                                         headers={"Authorization": f"token {token}"})
        with urllib.request.urlopen(request, timeout=30) as reply:
            return json.loads(reply.read() or b"null")
    try:
        running = [u["name"] for u in call("GET", "/users?state=active") if u.get("servers")]
        for name in running:
            call("DELETE", f"/users/{name}/server")
        for _ in range(int(wait / 0.5)):
            if not [u for u in call("GET", "/users?state=active") if u.get("servers")]:
                return
            time.sleep(0.5)
        say("some servers had not stopped after a minute: they stop with their accounts' processes")
    except OSError as err:
        say(f"could not reach the hub to stop the servers ({err}); `pkill -u jupyter-NAME` stops one")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
