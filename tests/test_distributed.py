"""Lesson 08's claims about DistributedDataParallel and torchrun, checked on the CPU with gloo.

`python3 run.py test -k distributed` runs these alone. Every job is started as lesson 08 starts
it, through notebooks/ddp_launch.py (torchrun with a deadline), on a few thousand images.
"""
import json
import socket
import threading
import time
from pathlib import Path

import pytest
import torch

import ddp_launch
import ddp_train

SCRIPT = str(Path(ddp_train.__file__))
QUICK = ["--epochs", "1", "--train-images", "1024", "--test-images", "500"]


def launch(tmp_path, torchrun, script_args, name, deadline=240, checkpoint=None):
    """Run one job, with its checkpoint at tmp_path/NAME.pt unless `checkpoint` names another;
    return (returncode, printed output, explanation, its JSON result or None)."""
    out = tmp_path / f"{name}.json"
    code, printed, why = ddp_launch.run(
        [*torchrun, SCRIPT, *script_args, "--out", str(out),
         "--checkpoint", str(tmp_path / (checkpoint or f"{name}.pt"))], deadline=deadline, echo=False)
    return code, printed, why, json.loads(out.read_text()) if out.exists() else None


def weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def test_distributed_two_processes_match_one(tmp_path, monkeypatch):
    """2 processes with half of every batch take the same steps as 1 process with the whole batch."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    same = [*QUICK, "--net", "tutorial", "--no-augment", "--batch-size", "64"]
    one = launch(tmp_path, ["--standalone", "--nproc-per-node=1"], same, "one")
    two = launch(tmp_path, ["--standalone", "--nproc-per-node=2"], same, "two")
    assert one[0] == 0 and two[0] == 0, (one[2], two[2])
    assert (one[3]["world_size"], two[3]["world_size"]) == (1, 2)
    assert two[3]["backend"] == "gloo"
    a, b = weights(tmp_path / "one.pt"), weights(tmp_path / "two.pt")
    assert a.keys() == b.keys()
    moved = max((a[k] - ddp_train.make_model("tutorial", torch.device("cpu"), False).state_dict()[k])
                .abs().max().item() for k in a)
    assert moved > 1e-3                               # training did change the weights ...
    for k in a:                                       # ... and identically, up to rounding
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.parametrize("world", [2, 4, 8])
def test_distributed_sampler_visits_every_image_once(world):
    n = 50_000
    local = 256 // world
    for epoch in (0, 1):
        shards = [ddp_train.shard(n, epoch, 0, rank, world) for rank in range(world)]
        assert len({len(s) for s in shards}) == 1                    # every process takes as many steps
        seen = torch.cat([b for s in shards for b in s.split(local)])  # the batches the script trains on
        assert torch.equal(seen.sort().values, torch.arange(n))      # every image exactly once
    first = ddp_train.shard(n, 0, 0, 0, world)
    assert not torch.equal(first, ddp_train.shard(n, 1, 0, 0, world))  # set_epoch: a new order


def test_distributed_killed_worker_resumes_from_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    args = ["--epochs", "2", "--train-images", "1024", "--test-images", "500", "--batch-size", "128",
            "--kill", "1:2:3"]
    code, printed, why, result = launch(
        tmp_path, ["--standalone", "--nproc-per-node=2", "--max-restarts=1"], args, "killed")
    assert code == 0, why
    assert "rank 1: killing myself at epoch 2, step 3" in printed
    assert "after epoch 1" in printed                                # resumed, not restarted from zero
    assert result["restarts"] == 1 and result["epochs"] == 1          # the retry trained epoch 2 only
    state = torch.load(tmp_path / "killed.pt", map_location="cpu", weights_only=False)
    assert state["epoch"] == 2
    assert not list(tmp_path.glob(".*.partial"))                     # no half-written file left


def test_distributed_checkpoint_is_never_half_written(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    ddp_train.save_atomically({"epoch": 1}, path)

    def crash(state, f):                     # a process killed in the middle of writing
        Path(f).write_bytes(b"PK\x03\x04 half a zip file")
        raise KeyboardInterrupt
    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        ddp_train.save_atomically({"epoch": 2}, path)
    assert torch.load(path, weights_only=False) == {"epoch": 1}      # the last whole checkpoint survives


def test_distributed_two_nodes_on_localhost(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    port = ddp_train.free_port()
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


def test_distributed_missing_node_fails_clearly(tmp_path):
    began = time.monotonic()
    code, printed, why, _ = launch(
        tmp_path, ["--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d",
                   f"--rdzv-endpoint=127.0.0.1:{ddp_train.free_port()}", "--rdzv-id=alone",
                   "--rdzv-conf=join_timeout=5"], QUICK, "alone", deadline=60)
    assert code != 0 and time.monotonic() - began < 60
    assert why.startswith("The rendezvous at 127.0.0.1:") and "timed out after 5 s" in why
    assert "Traceback" not in why


def test_distributed_port_taken_fails_within_deadline(tmp_path):
    with socket.socket() as other:                 # another program holds the port and never answers
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        began = time.monotonic()
        code, printed, why, _ = launch(
            tmp_path, ["--nnodes=1", "--nproc-per-node=1", "--rdzv-backend=c10d",
                       f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=taken",
                       "--rdzv-conf=join_timeout=5,read_timeout=5"], QUICK, "taken", deadline=12)
    assert code != 0 and time.monotonic() - began < 30
    assert f"127.0.0.1:{port}" in why and "port" in why


def test_distributed_launcher_limits_every_rendezvous():
    limited = ddp_launch.with_rendezvous_limits(["--nnodes=2", "--rdzv-endpoint=h:1", "x.py"])
    assert limited[0] == "--rdzv-conf=join_timeout=60,read_timeout=60"
    mine = ddp_launch.with_rendezvous_limits(["--rdzv-endpoint", "h:1", "--rdzv-conf", "join_timeout=5", "x.py"])
    assert mine[3] == "join_timeout=5,read_timeout=60"
    assert ddp_launch.with_rendezvous_limits(["--standalone", "x.py"]) == ["--standalone", "x.py"]
