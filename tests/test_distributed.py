"""Lesson 08's claims about DistributedDataParallel and torchrun, checked on the CPU with gloo.

`python3 run.py test -k distributed` runs these and lesson 08 itself (conftest.py gives its cells
the keyword), whose cells check, live, what is not repeated here: DDP against the hand-written
all-reduce, a worker killed under --max-restarts=1 resuming from the last checkpoint (which
rank 0 wrote atomically), and a missing machine ending the rendezvous with one line within its
timeout. Every job is started as lesson 08 starts it, through workshop.launch (torchrun
with a deadline), on a few thousand images.
"""
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import workshop.ddp_train
import workshop.distributed
import workshop.launch

pytestmark = [pytest.mark.distributed, pytest.mark.processes]
SCRIPT = ["-m", "workshop.ddp_train"]        # as lesson 08 starts it
QUICK = ["--epochs", "1", "--train-images", "1024", "--test-images", "500"]


def launch(tmp_path, torchrun, script_args, name, deadline=240, checkpoint=None):
    """Run one job, with its checkpoint at tmp_path/NAME.pt unless `checkpoint` names another;
    return (returncode, printed output, explanation followed by the processes' own error
    messages, its JSON result or None)."""
    out = tmp_path / f"{name}.json"
    code, printed, why = workshop.launch.run(
        [*torchrun, *SCRIPT, *script_args, "--out", str(out),
         "--checkpoint", str(tmp_path / (checkpoint or f"{name}.pt"))], deadline=deadline, echo=False)
    if code != 0:
        why = f"{why}\n{workshop.launch.last_errors}"
    return code, printed, why, json.loads(out.read_text()) if out.exists() else None


def weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_distributed_two_processes_match_one(tmp_path, monkeypatch):
    """2 processes with half of every batch take the same steps as 1 process with the whole batch.

    In float32 on every CPU: with bfloat16 autocast (CPUs that have it) a half batch rounds its
    products differently from the whole one, and the weights drift apart by more than rounding."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("WORKSHOP_BFLOAT16", "0")
    same = [*QUICK, "--net", "tutorial", "--no-augment", "--batch-size", "64"]
    # 1 process: the same script without torchrun (a group of one)
    alone = subprocess.run([sys.executable, *SCRIPT, *same, "--out", str(tmp_path / "one.json"),
                            "--checkpoint", str(tmp_path / "one.pt")], capture_output=True, text=True,
                           timeout=240)
    assert alone.returncode == 0, alone.stderr[-2000:]
    two = launch(tmp_path, ["--standalone", "--nproc-per-node=2"], same, "two")
    assert two[0] == 0, two[2]
    assert json.loads((tmp_path / "one.json").read_text())["world_size"] == 1
    assert two[3]["world_size"] == 2 and two[3]["backend"] == "gloo"
    a, b = weights(tmp_path / "one.pt"), weights(tmp_path / "two.pt")
    assert a.keys() == b.keys()
    moved = max((a[k] - workshop.ddp_train.make_model("tutorial", torch.device("cpu"), False).state_dict()[k])
                .abs().max().item() for k in a)
    assert moved > 1e-3                               # training did change the weights ...
    for k in a:                                       # ... and identically, up to rounding
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.parametrize("world", [2, 4, 8])
def test_distributed_sampler_gives_every_process_its_own_images(world):
    """Each process's share, batched as lesson 05's train_epoch batches its `order` (full batches
    only), takes as many steps as every other; no image is in two batches of an epoch, fewer than
    one global batch are left out, and the next epoch deals a new order."""
    n, local = 50_000, 256 // world
    for epoch in (0, 1):
        shards = [workshop.distributed.shard(n, epoch, 0, rank, world) for rank in range(world)]
        assert len({len(s) for s in shards}) == 1                    # every process takes as many steps
        batches = [s[start:start + local] for s in shards for start in range(0, len(s) - local + 1, local)]
        seen = torch.cat(batches)
        assert len(seen.unique()) == len(seen) and n - len(seen) < 256   # each image at most once
    first = workshop.distributed.shard(n, 0, 0, 0, world)
    assert not torch.equal(first, workshop.distributed.shard(n, 1, 0, 0, world))  # set_epoch: a new order


def test_distributed_checkpoint_is_never_half_written(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    workshop.distributed.save_atomically({"epoch": 1}, path)

    def crash(state, f):                     # a process killed in the middle of writing
        Path(f).write_bytes(b"PK\x03\x04 half a zip file")
        raise KeyboardInterrupt
    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        workshop.distributed.save_atomically({"epoch": 2}, path)
    assert torch.load(path, weights_only=True) == {"epoch": 1}      # the last whole checkpoint survives


def test_distributed_two_nodes_on_localhost(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    port = workshop.launch.free_port()
    results = {}

    def node(i):
        results[i] = launch(tmp_path, ["--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d",
                                       f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=two-nodes",
                                       "--rdzv-conf=join_timeout=60"],
                            [*QUICK, "--batch-size", "128"], f"node{i}")
    threads = [threading.Thread(target=node, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i][0] for i in (0, 1)] == [0, 0], [results[i][2] for i in (0, 1)]
    written = [results[i][3] for i in (0, 1) if results[i][3]]       # rank 0 lives on one node
    assert len(written) == 1 and written[0]["world_size"] == 2


def test_distributed_port_taken_fails_within_deadline(tmp_path):
    """torchrun itself waits for ever on a port that another program holds (its join and read
    timeouts do not cover the first handshake): the launcher's deadline ends it."""
    with socket.socket() as other:                 # another program holds the port and never answers
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        began = time.monotonic()
        code, printed, why, _ = launch(
            tmp_path, ["--nnodes=1", "--nproc-per-node=1", "--rdzv-backend=c10d",
                       f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=taken",
                       "--rdzv-conf=join_timeout=5,read_timeout=5"], QUICK, "taken", deadline=6)
    assert code != 0 and time.monotonic() - began < 30
    explanation = why.splitlines()[0]               # (the processes' own messages follow it)
    assert f"127.0.0.1:{port}" in explanation and "port" in explanation


def test_distributed_launcher_limits_every_rendezvous():
    limited = workshop.launch.with_rendezvous_limits(["--nnodes=2", "--rdzv-endpoint=h:1", "x.py"])
    assert limited[0] == "--rdzv-conf=join_timeout=60,read_timeout=60"
    mine = workshop.launch.with_rendezvous_limits(["--rdzv-endpoint", "h:1", "--rdzv-conf", "join_timeout=5", "x.py"])
    assert mine[3] == "join_timeout=5,read_timeout=60"
    assert workshop.launch.with_rendezvous_limits(["--standalone", "x.py"]) == ["--standalone", "x.py"]


def test_distributed_seed_sets_the_starting_weights():
    """--seed chooses the starting weights too (the same on every process of a run)."""
    def start(seed):
        return workshop.ddp_train.make_model("tutorial", torch.device("cpu"), False, seed).state_dict()
    zero, one, again = start(0), start(1), start(1)
    assert not torch.equal(zero["conv1.weight"], one["conv1.weight"])
    assert all(torch.equal(one[k], again[k]) for k in one)
    assert "seed" in workshop.ddp_train.run_config(workshop.ddp_train.options(["--seed", "3"]))
