"""workshop.py: the networks, the recipe's pieces, checkpoints, reproducibility, the benchmark."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import workshop

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def small_data(cifar10_root):
    images, labels = workshop.load_cifar10_tensors(cifar10_root, train=True)
    return images[:1024], labels[:1024]


def test_networks_give_10_logits_and_the_documented_sizes():
    x = torch.randn(2, 3, 32, 32)
    for net, params in [(workshop.TutorialNet(), 62_006), (workshop.WorkshopNet(), 391_466)]:
        assert tuple(net.eval()(x).shape) == (2, 10)
        assert sum(p.numel() for p in net.parameters()) == params


def test_the_test_data_is_cifar10(small_data):
    images, labels = small_data
    assert images.dtype == torch.uint8 and tuple(images.shape[1:]) == (3, 32, 32)
    assert labels.dtype == torch.int64 and set(labels.tolist()) == set(range(10))


def test_normalize_centres_the_data(small_data):
    x = workshop.normalize(small_data[0])
    assert x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)
    assert abs(x.mean().item()) < 0.1 and abs(x.std().item() - 1) < 0.1


def test_augment_keeps_shape_and_content(small_data):
    x = workshop.normalize(small_data[0][:64])
    g = torch.Generator().manual_seed(0)
    y = workshop.augment(x, g)
    assert y.shape == x.shape and y.is_contiguous(memory_format=torch.channels_last)
    assert not torch.equal(x, y), "augmentation changed nothing"
    # the same seed gives the same augmentation
    assert torch.equal(y, workshop.augment(x, torch.Generator().manual_seed(0)))


def test_one_cycle_schedule_warms_up_then_decays():
    optimizer, scheduler = workshop.make_optimizer(workshop.TutorialNet(), steps=100)
    rates = []
    for _ in range(100):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    peak = rates.index(max(rates))
    assert 20 <= peak <= 30 and max(rates) == pytest.approx(workshop.RECIPE["lr"])
    assert rates[0] < max(rates) / 10 and rates[-1] < max(rates) / 100


def train_a_little(data, seed=0, epochs=1):
    torch.manual_seed(seed)
    model = workshop.WorkshopNet().to(memory_format=torch.channels_last)
    recipe = dict(workshop.RECIPE, epochs=epochs, batch_size=128, lr=0.05)   # gentle: 8 steps an epoch
    history = workshop.fit(model, data, data, recipe, seed=seed,
                           autocast_dtype=workshop.cpu_autocast_dtype())
    return model, history


def test_the_same_seed_gives_the_same_numbers_twice(small_data):
    model_a, history_a = train_a_little(small_data)
    model_b, history_b = train_a_little(small_data)
    assert history_a == history_b
    for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values()):
        assert torch.equal(a, b)


def test_training_lowers_the_loss(small_data):
    _, history = train_a_little(small_data, epochs=3)
    assert history["train_loss"][-1] < 0.7 * history["train_loss"][0]


def test_checkpoint_round_trip(tmp_path):
    model = workshop.WorkshopNet()
    torch.save(model.state_dict(), tmp_path / "net.pt")
    other = workshop.WorkshopNet()
    assert workshop.load_checkpoint(other, tmp_path / "net.pt")
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("problem", ["missing", "truncated", "garbage", "other network"])
def test_a_bad_checkpoint_is_reported_and_changes_nothing(tmp_path, capsys, problem):
    path = tmp_path / "net.pt"
    if problem == "other network":
        torch.save(workshop.TutorialNet().state_dict(), path)
    elif problem != "missing":
        torch.save(workshop.WorkshopNet().state_dict(), path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3] if problem == "truncated" else b"not a checkpoint")
    model = workshop.WorkshopNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert workshop.load_checkpoint(model, path) is False
    message = capsys.readouterr().out
    assert "lesson 05" in message and "Carrying on without it" in message
    assert message.count("\n") == 1, "one line, not a traceback"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_cpu_benchmark_prints_its_json_last(cifar10_root):
    """A smoke run on 512 images: the figures come out, in the promised form."""
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "cpu_training.py"), "--train-images", "512",
         "--epochs", "1", "--tutorial-epochs", "1"],
        capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(result) == {"tutorial_s", "tutorial_acc", "workshop_s", "workshop_acc", "time_ratio"}
    assert 0 <= result["workshop_acc"] <= 1 and result["tutorial_s"] > 0
    # the seconds are printed rounded to 0.01 s, the ratio is computed before rounding
    assert result["time_ratio"] == pytest.approx(result["workshop_s"] / result["tutorial_s"], abs=0.02)


def test_gpu_benchmark_quick_run_prints_its_json_last(cifar10_root):
    """On a machine without CUDA, the shortened run of lesson 07's recipe, end to end."""
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_training.py"), "--quick", "--seeds", "0"],
        capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"device", "torch", "seeds", "mean_acc", "min_acc", "mean_train_s"} <= set(result)
    assert result["seeds"] == [0] and result["train_images"] == 4000
    assert result["mean_acc"] == result["min_acc"] > 0.2
