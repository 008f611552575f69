"""torchrun with a deadline and one-line explanations: how lesson 08 and the tests start a job.

    python -m workshop.launch [--deadline SECONDS] TORCHRUN-OPTIONS SCRIPT [SCRIPT-OPTIONS]
    python -m workshop.launch --standalone --nproc-per-node=2 -m workshop.ddp_train --epochs 1

It runs exactly `torchrun TORCHRUN-OPTIONS SCRIPT ...` (as `python -m torch.distributed.run`,
so the torchrun of this Python is used), shows what the processes print, and hides torchrun's
own tracebacks: when the job cannot start or fails, one line says why and what to do. A job that
has not finished within the deadline (default: none) is stopped, never left hanging. Multi-node
rendezvous waits at most --rdzv-conf join_timeout seconds (torchrun's default: 600); this
launcher sets 60 unless you choose, and the same for the store's read_timeout.
"""
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

DEFAULT_RDZV = {"join_timeout": "60", "read_timeout": "60"}


def free_port():
    """A TCP port on the loopback address that nothing listens on now (for a rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def with_rendezvous_limits(args):
    """args with --rdzv-conf completed by DEFAULT_RDZV where a multi-node rendezvous is asked for."""
    if "--standalone" in args or not any(a.startswith("--rdzv-endpoint") for a in args):
        return list(args)
    args = list(args)
    for i, a in enumerate(args):
        if a.startswith("--rdzv-conf"):
            value = a.split("=", 1)[1] if "=" in a else args[i + 1]
            given = dict(kv.split("=", 1) for kv in value.split(",") if "=" in kv)
            merged = ",".join(f"{k}={v}" for k, v in {**DEFAULT_RDZV, **given}.items())
            if "=" in a:
                args[i] = f"--rdzv-conf={merged}"
            else:
                args[i + 1] = merged
            return args
    conf = ",".join(f"{k}={v}" for k, v in DEFAULT_RDZV.items())
    return [f"--rdzv-conf={conf}", *args]


def option(args, name):
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def explain(returncode, errors, args, deadline_hit, deadline, started=True):
    """The one line that says why the job failed, from torchrun's error output."""
    endpoint = option(args, "--rdzv-endpoint") or "the rendezvous endpoint"
    nnodes = option(args, "--nnodes") or "1"
    conf = option(args, "--rdzv-conf") or ""
    join = re.search(r"join_timeout=(\d+)", conf)
    if deadline_hit and not started:
        return (f"The job had not started within its deadline of {deadline:g} s: the rendezvous at "
                f"{endpoint} never completed (another program on that port, or a machine missing). "
                f"Pick a free port (--rdzv-endpoint=HOST:PORT) and start every machine.")
    if deadline_hit:
        return (f"The job did not finish within its deadline of {deadline:g} s, so it was stopped. "
                f"Raise --deadline, or train less (--epochs, --train-images).")
    if "RendezvousTimeoutError" in errors:
        return (f"The rendezvous at {endpoint} timed out after {join.group(1) if join else 600} s: "
                f"not all of the --nnodes={nnodes} machines joined. Start the same torchrun line "
                f"(same --rdzv-id and --rdzv-endpoint) on every machine, and check that each can "
                f"reach {endpoint}.")
    if "RendezvousConnectionError" in errors or "DistNetworkError" in errors:
        return (f"No rendezvous could be held at {endpoint}: the port is taken by another program, "
                f"or the host cannot be reached. Pick a free port (--rdzv-endpoint=HOST:PORT) and "
                f"check the address.")
    if "ChildFailedError" in errors:
        root = re.search(r"Root Cause.*?rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)", errors, flags=re.S)
        first = f"rank {root.group(1)} (exit code {root.group(2)})" if root else "a worker"
        return (f"The training processes failed: {first} first, then torchrun stopped the others; "
                f"their own messages are above. torchrun gave up after "
                f"--max-restarts={option(args, '--max-restarts') or 0} restarts.")
    return f"torchrun ended with exit code {returncode}; its messages are above."


def readable(errors):
    """torchrun's error output without the tracebacks' frames: the messages only."""
    keep, in_traceback = [], False
    for line in errors.splitlines():
        if line.startswith("Traceback (most recent call last)"):
            in_traceback = True
            continue
        if in_traceback and (line.startswith((" ", "\t")) or not line.strip()):
            continue
        in_traceback = False
        if re.match(r"(frame #\d+|Exception raised from|\[W\d+|\*{5,}|=+$|-+$)", line):
            continue
        if "torch.distributed.elastic" in line and "Error" not in line:
            continue
        keep.append(line)
    return "\n".join(keep[-20:])


# the processes' own error messages from the latest run (readable()), for a test to show
last_errors = ""


def run(args, deadline=None, echo=True):
    """Run torchrun with args; return (returncode, what the processes printed, explanation or None)."""
    global last_errors
    args = with_rendezvous_limits(args)
    env = dict(os.environ)
    nproc = option(args, "--nproc-per-node") or option(args, "--nproc_per_node") or "1"
    if "OMP_NUM_THREADS" not in env and nproc.isdigit():       # share this machine's cores out
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // int(nproc)))
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    printed, errors = [], []

    def pump(stream, into, show):
        for line in stream:
            into.append(line)
            if show:
                print(line, end="", flush=True)
    threads = [threading.Thread(target=pump, args=(proc.stdout, printed, echo), daemon=True),
               threading.Thread(target=pump, args=(proc.stderr, errors, False), daemon=True)]
    for t in threads:
        t.start()
    began, deadline_hit = time.monotonic(), False
    while proc.poll() is None:
        if deadline is not None and time.monotonic() - began > deadline:
            deadline_hit = True
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                try:
                    os.killpg(proc.pid, sig)
                    proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
                except ProcessLookupError:
                    break
        time.sleep(0.2)
    for t in threads:
        t.join(5)
    errors = "".join(errors)
    last_errors = readable(errors)
    if proc.returncode == 0 and not deadline_hit:
        return 0, "".join(printed), None
    why = explain(proc.returncode, errors, args, deadline_hit, deadline, bool(printed))
    if echo and ("processes failed" in why or "exit code" in why):
        print(readable(errors), file=sys.stderr, flush=True)     # the processes' own messages
    return 124 if deadline_hit else proc.returncode or 1, "".join(printed), why


def main(argv):
    deadline = None
    if argv[:1] == ["--deadline"]:
        deadline, argv = float(argv[1]), argv[2:]
    elif argv and argv[0].startswith("--deadline="):
        deadline, argv = float(argv[0].split("=", 1)[1]), argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    code, _, why = run(argv, deadline)
    if why:
        print(f"[workshop.launch] {why}", file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
