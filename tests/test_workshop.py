"""The package's code: the networks, the recipes' pieces, checkpoints, reproducibility, the benchmarks."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import workshop.checkpoints
import workshop.data
import workshop.device
import workshop.fast
import workshop.nets
import workshop.training
from tests import offline_copy

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def small_data(cifar10_root):
    images, labels = workshop.data.load_cifar10_tensors(cifar10_root, train=True)
    return images[:1024], labels[:1024]


def test_networks_give_10_logits_and_the_documented_sizes():
    x = torch.randn(2, 3, 32, 32)
    for net, params in [(workshop.nets.TutorialNet(), 62_006), (workshop.nets.WorkshopNet(), 221_026)]:
        assert tuple(net.eval()(x).shape) == (2, 10)
        assert sum(p.numel() for p in net.parameters()) == params


def test_the_test_data_is_cifar10(small_data):
    images, labels = small_data
    assert images.dtype == torch.uint8 and tuple(images.shape[1:]) == (3, 32, 32)
    assert labels.dtype == torch.int64 and set(labels.tolist()) == set(range(10))


def test_normalize_centres_the_data(small_data):
    x = workshop.training.normalize(small_data[0])
    assert x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)
    assert abs(x.mean().item()) < 0.1 and abs(x.std().item() - 1) < 0.1


def test_augment_keeps_shape_and_content(small_data):
    x = workshop.training.normalize(small_data[0][:64])
    g = torch.Generator().manual_seed(0)
    y = workshop.training.augment(x, g)
    assert y.shape == x.shape and y.is_contiguous(memory_format=torch.channels_last)
    assert not torch.equal(x, y), "augmentation changed nothing"
    # the same seed gives the same augmentation
    assert torch.equal(y, workshop.training.augment(x, torch.Generator().manual_seed(0)))


def test_one_cycle_schedule_warms_up_then_decays():
    optimizer, scheduler = workshop.training.make_optimizer(workshop.nets.TutorialNet(), 25, dict(workshop.training.RECIPE, epochs=4))
    rates = []
    for _ in range(100):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    peak = rates.index(max(rates))
    assert 20 <= peak <= 30 and max(rates) == pytest.approx(workshop.training.RECIPE["lr"])
    assert rates[0] < max(rates) / 10 and rates[-1] < max(rates) / 100


def train_a_little(data, seed=0, epochs=1, **changes):
    torch.manual_seed(seed)
    model = workshop.nets.WorkshopNet().to(memory_format=torch.channels_last)
    recipe = dict(workshop.training.RECIPE, epochs=epochs, batch_size=128, lr=0.05, **changes)   # 8 steps an epoch
    history = workshop.training.fit(model, data, data, recipe, seed=seed,
                           autocast_dtype=workshop.device.cpu_autocast_dtype())
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


def test_the_recipe_given_is_the_recipe_trained(small_data):
    """Every setting arrives in the recipe (no module state is read): lesson 05's exercise 2,
    label smoothing switched off, gives a lower training loss, as its solution says."""
    _, smoothed = train_a_little(small_data, epochs=2)
    _, plain = train_a_little(small_data, epochs=2, label_smoothing=0.0)
    assert plain["train_loss"][-1] < smoothed["train_loss"][-1] - 0.05
    assert workshop.training.RECIPE["label_smoothing"] == 0.1, "the module's recipe is left as it was"


@pytest.mark.parametrize("value,expected", [("0", None), ("off", None), ("1", torch.bfloat16)])
def test_bfloat16_can_be_switched_by_environment(monkeypatch, value, expected):
    monkeypatch.setenv("WORKSHOP_BFLOAT16", value)
    assert workshop.device.cpu_autocast_dtype() == expected
    assert ("bfloat16" in workshop.device.cpu_path()) == (expected is not None)


def test_a_misspelt_bfloat16_switch_is_explained(monkeypatch):
    monkeypatch.setenv("WORKSHOP_BFLOAT16", "maybe")
    with pytest.raises(workshop.data.WorkshopError, match="WORKSHOP_BFLOAT16"):
        workshop.device.cpu_autocast_dtype()


SPIN = "import time\nend = time.time() + 20\nwhile time.time() < end: pass"


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="pins processes to a core (Linux)")
def test_cpu_share_falls_when_another_program_is_busy():
    """On one core shared with two spinning processes, PyTorch's one thread gets about a third of it."""
    core, threads = {sorted(os.sched_getaffinity(0))[0]}, torch.get_num_threads()
    saved = os.sched_getaffinity(0)
    busy = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(2)]
    try:
        for process in busy:
            os.sched_setaffinity(process.pid, core)
        os.sched_setaffinity(0, core)
        torch.set_num_threads(1)
        share = workshop.device.cpu_share(seconds=1.0)
    finally:
        os.sched_setaffinity(0, saved)
        torch.set_num_threads(threads)
        for process in busy:
            process.kill()
            process.wait(timeout=10)
    assert share < 0.75, f"a third of one core measured as {share:.0%}"
    assert workshop.device.cpu_advice(share).startswith("Another program is using the CPU")
    assert "torch.set_num_threads(1)" in workshop.device.cpu_advice(share)
    assert workshop.device.cpu_advice(0.95, threads=2).startswith("The CPU is free")


def test_checkpoint_round_trip(tmp_path):
    model = workshop.nets.WorkshopNet()
    torch.save(model.state_dict(), tmp_path / "net.pt")
    other = workshop.nets.WorkshopNet()
    assert workshop.checkpoints.load_checkpoint(other, tmp_path / "net.pt")
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("problem", ["missing", "truncated", "garbage", "other network"])
def test_a_bad_checkpoint_is_reported_and_changes_nothing(tmp_path, capsys, problem):
    path = tmp_path / "net.pt"
    if problem == "other network":
        torch.save(workshop.nets.TutorialNet().state_dict(), path)
    elif problem != "missing":
        torch.save(workshop.nets.WorkshopNet().state_dict(), path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3] if problem == "truncated" else b"not a checkpoint")
    model = workshop.nets.WorkshopNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert workshop.checkpoints.load_checkpoint(model, path) is False
    message = capsys.readouterr().out
    assert "lesson 05" in message and "Carrying on without it" in message
    assert message.count("\n") == 1, "one line, not a traceback"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ----------------------------------------------------------------------------- lesson 07's fast recipe

def test_fast_net_size_frozen_scales_and_scaled_logits():
    net = workshop.fast.FastNet().eval()
    assert tuple(net(torch.randn(2, 3, 32, 32)).shape) == (2, 10)
    assert sum(p.numel() for p in net.parameters()) == 1_972_792
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 6 and all(not m.weight.requires_grad and m.bias.requires_grad for m in norms)
    net.logit_scale = 1.0
    unscaled = net(torch.ones(1, 3, 32, 32))
    net.logit_scale = 1 / 9
    assert torch.allclose(net(torch.ones(1, 3, 32, 32)) * 9, unscaled, atol=1e-5)


def test_identity_init_passes_the_input_through():
    net = workshop.fast.FastNet()
    workshop.fast.identity_init(net)
    convs = [m for m in net.layers.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 6
    for conv in convs:
        x = torch.randn(1, conv.in_channels, 8, 8)
        assert torch.allclose(conv(x)[:, :conv.in_channels], x, atol=1e-6)
    assert torch.count_nonzero(net.whiten.bias) == 0


def test_whitening_decorrelates_patches(small_data):
    x = workshop.training.normalize(small_data[0][:500])
    w = workshop.fast.whitening_weights(x)
    assert tuple(w.shape) == (24, 3, 2, 2) and torch.equal(w[12:], -w[:12])
    out = torch.nn.functional.conv2d(x, w[:12]).permute(0, 2, 3, 1).reshape(-1, 12)
    cov = torch.cov(out.T)
    assert (cov - torch.diag(cov.diag())).abs().max() < 0.01
    model = workshop.fast.fast_model(x)
    assert torch.equal(model.whiten.weight, w) and not model.whiten.weight.requires_grad


def test_random_crop_and_mirror_half(small_data):
    x = workshop.training.normalize(small_data[0][:256])
    g = torch.Generator().manual_seed(0)
    crops = workshop.fast.random_crop(x, g)
    assert crops.shape == x.shape and not torch.equal(crops, x)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect")
    for i in range(4):      # every crop is one of the 25 windows of its padded image
        assert any(torch.equal(crops[i], padded[i, :, dy:dy + 32, dx:dx + 32])
                   for dy in range(5) for dx in range(5))
    mirrored = workshop.fast.mirror_half(x, g)
    flipped = torch.tensor([torch.equal(m, i.flip(2)) for m, i in zip(mirrored, x)])
    same = torch.tensor([torch.equal(m, i) for m, i in zip(mirrored, x)])
    assert torch.all(flipped | same) and 0.35 < flipped.float().mean() < 0.65


def test_random_crop_works_at_the_low_resolution(small_data):
    """The CPU path's first epochs crop 24x24 images: every crop is one of the 25 windows of its
    padded image, of the image's own size."""
    x = torch.nn.functional.interpolate(workshop.training.normalize(small_data[0][:64]), size=24,
                                        mode="bilinear", antialias=True)
    crops = workshop.fast.random_crop(x, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect")
    assert crops.shape == x.shape
    for i in range(4):
        assert any(torch.equal(crops[i], padded[i, :, dy:dy + 24, dx:dx + 24]) for dy in range(5) for dx in range(5))


def test_cpu_net_takes_any_size_and_starts_as_an_identity():
    """CpuNet: 10 scores from 32x32, 24x24 and 20x20 images (the low-resolution epochs), lesson
    07's frozen batch-norm scales, and convolutions that pass their input through after
    identity_init (as many channels as they have filters; the strided first one every second pixel)."""
    net = workshop.fast.CpuNet().eval()
    assert all(tuple(net(torch.randn(2, 3, s, s)).shape) == (2, 10) for s in (32, 24, 20))
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 5 and all(not m.weight.requires_grad for m in norms)
    workshop.fast.identity_init(net)
    convs = [m for m in net.layers.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[0].stride == (2, 2)
    for conv in convs:
        x, kept = torch.randn(1, conv.in_channels, 5, 5), min(conv.in_channels, conv.out_channels)
        step = conv.stride[0]
        assert torch.allclose(conv(x)[:, :kept], x[:, :kept, ::step, ::step], atol=1e-6)
    assert isinstance(workshop.fast.fast_model(torch.randn(64, 3, 32, 32), workshop.fast.FAST_RECIPE_CPU), workshop.fast.CpuNet)


def test_ablation_rows_switch_off_one_ingredient_each():
    """Lesson 07's ablation_rows: each row differs from its recipe in one ingredient, and a row
    that changes nothing for a recipe (low resolution, on the GPU recipe) is left out."""
    fast = workshop.fast
    for recipe in (fast.FAST_RECIPE, fast.FAST_RECIPE_CPU, fast.FAST_RECIPE_CPU_FLOAT32):
        for name, args in fast.ablation_rows(recipe).items():
            changed = [k for k, v in args["recipe"].items() if recipe[k] != v]
            assert len(changed) + len(set(args) - {"recipe"}) == 1, (name, changed)
    assert list(fast.ablation_rows(fast.FAST_RECIPE)) == [n for n in fast.ABLATION if "low-resolution" not in n]
    assert list(fast.ablation_rows(fast.FAST_RECIPE_CPU)) == list(fast.ABLATION)


def test_evaluate_scores_six_two_or_one_views(small_data):
    """evaluate's views are predict_shifted's six, predict's image and mirror, and the image alone."""
    images, labels = small_data[0][:40], small_data[1][:40]
    model = workshop.fast.CpuNet().eval()
    scores = {6: workshop.fast.predict_shifted(model, images), 2: workshop.training.predict(model, images),
              1: workshop.training.predict(model, images, mirror=False)}
    for views, s in scores.items():
        assert workshop.fast.evaluate(model, images, labels, views) == workshop.training.accuracy(s, labels)
    assert not torch.allclose(scores[6], scores[1])


def test_fast_optimizer_groups_and_schedule():
    model = workshop.fast.fast_model(torch.randn(64, 3, 32, 32))
    optimizer, scheduler = workshop.fast.fast_optimizer(model, steps=100)
    biases, others = optimizer.param_groups
    r = workshop.fast.FAST_RECIPE
    assert len(biases["params"]) == 6 and biases["lr"] == pytest.approx(0.2 * r["lr"] * r["bias_lr_scale"])
    # the weight decay per step is the same in both groups
    assert biases["lr"] * biases["weight_decay"] == pytest.approx(others["lr"] * others["weight_decay"])
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(biases["params"]) + len(others["params"]) == len(trainable)
    assert all(p is not model.whiten.weight for p in others["params"])
    rates = []
    for _ in range(100):
        rates.append(scheduler.get_last_lr()[1] / r["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(0.2) and rates.index(max(rates)) == 23
    assert max(rates) == pytest.approx(1) and rates[-1] == pytest.approx(0.07 + 0.93 / 77, abs=1e-6)


def test_lookahead_starts_late_then_pulls_the_weights_to_their_average():
    model = torch.nn.Linear(3, 2)
    recipe = dict(workshop.fast.FAST_RECIPE, lookahead_from=0.5, lookahead_every=5)
    assert workshop.fast.lookahead(model, None, step=45, total=100, recipe=recipe) is None
    average = workshop.fast.lookahead(model, None, step=50, total=100, recipe=recipe)
    assert torch.equal(average[0], model.weight)
    before = average[0].clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    assert workshop.fast.lookahead(model, average, step=52, total=100, recipe=recipe) is average
    assert torch.equal(average[0], before)                      # only every 5th step
    workshop.fast.lookahead(model, average, step=55, total=100, recipe=recipe)
    moved = (average[0] - before).mean().item()
    assert 0 < moved < 1 and torch.equal(model.weight, average[0])


def test_predict_scores_do_not_depend_on_the_batch_size():
    """Lesson 05: in eval mode batch normalisation uses its running averages, so testing 250 images
    at a time gives the scores of 1,000 at a time (up to float rounding), while training mode would not."""
    torch.manual_seed(0)
    model = workshop.nets.WorkshopNet().to(memory_format=torch.channels_last)
    images = torch.randint(0, 256, (500, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        model.train()(workshop.training.normalize(images[:64]))           # running averages that are not 0 and 1
    small, large = (workshop.training.predict(model, images, batch_size=b) for b in (250, 1000))
    torch.testing.assert_close(small, large, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        in_train_mode = torch.cat([model.train()(workshop.training.normalize(images[s:s + 4])) for s in range(0, 8, 4)])
    assert not torch.allclose(in_train_mode, workshop.training.predict(model, images[:8], mirror=False), atol=1e-3)


def test_predict_shifted_averages_six_views():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10, bias=False))
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    x = workshop.training.normalize(images)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    views = [(x, 0.25), (padded[:, :, :32, :32], 0.125), (padded[:, :, 2:, 2:], 0.125)]
    expected = sum(w * (model(v) + model(v.flip(3))) for v, w in views)
    assert torch.allclose(workshop.fast.predict_shifted(model, images, batch_size=2), expected, atol=1e-4)


def test_fast_training_learns_on_a_small_subset(small_data):
    images, labels = small_data
    x = workshop.training.normalize(images)
    recipe = dict(workshop.fast.FAST_RECIPE_SHORT, epochs=4, batch_size=128)
    model = workshop.fast.train_fast(x[:768], labels[:768], recipe, seed=0)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    acc = workshop.training.accuracy(workshop.fast.predict_shifted(model, images[768:]), labels[768:])
    assert acc > 0.2, f"{acc:.3f}: no better than chance (0.1) after training"
    # the same seed, the same weights (on a shorter run: two steps)
    short = dict(recipe, epochs=1)
    once, again = (workshop.fast.train_fast(x[:256], labels[:256], short, seed=0) for _ in range(2))
    assert all(torch.equal(a, b) for a, b in zip(once.state_dict().values(), again.state_dict().values()))


def test_cpu_benchmark_prints_its_json_last(cifar10_root):
    """A smoke run on 512 training and 500 test images: the figures come out, in the promised form."""
    done = subprocess.run(   # the tutorial's half reads the offline copy through torchvision
        offline_copy.script_command(REPO / "benchmarks" / "cpu_training.py", "--train-images", "512",
                                    "--test-images", "500", "--epochs", "1", "--tutorial-epochs", "1", "--float32",
                                    "--fast", "--fast-epochs", "2"),
        capture_output=True, text=True, timeout=600, cwd=REPO, env=dict(os.environ))
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(result) == {"tutorial_s", "tutorial_acc", "workshop_s", "workshop_acc", "time_ratio",
                           "fast_s", "fast_acc", "fast_ratio", "fast_vs_workshop_time",
                           "cpu_capability", "autocast", "threads", "torch", "commit"}
    assert "fast (lesson 07, CpuNet): 2 epochs" in done.stdout
    assert result["fast_ratio"] == pytest.approx(result["fast_s"] / result["tutorial_s"], abs=0.02)
    assert result["autocast"] is None, "--float32 keeps float32 even where the CPU has bfloat16"
    assert result["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert result["threads"] == torch.get_num_threads() and result["torch"] == torch.__version__
    assert 0 <= result["workshop_acc"] <= 1 and result["tutorial_s"] > 0
    # the seconds are printed rounded to 0.01 s, the ratio is computed before rounding
    assert result["time_ratio"] == pytest.approx(result["workshop_s"] / result["tutorial_s"], abs=0.02)


def test_cpu_benchmark_ablation_writes_every_row_for_every_seed(cifar10_root, tmp_path):
    """--ablation: lesson 07's rows for the CPU recipe, each seed's accuracy, and mean and spread,
    with the machine and versions that measured them (a smoke run: 512 images, 2 epochs)."""
    out = tmp_path / "ablation.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "cpu_training.py"), "--ablation", str(out), "--seeds", "0", "1",
         "--train-images", "512", "--test-images", "200", "--fast-epochs", "2", "--float32"],
        capture_output=True, text=True, timeout=600, cwd=REPO, env=dict(os.environ))
    assert done.returncode == 0, done.stderr[-2000:]
    measured = json.loads(out.read_text())
    recipe = workshop.fast.FAST_RECIPE_CPU_FLOAT32
    assert list(measured["rows"]) == ["full recipe", *workshop.fast.ablation_rows(recipe),
                                      "test: image and mirror only", "test: image alone"]
    assert measured["seeds"] == [0, 1] and measured["autocast"] is None and measured["recipe"]["epochs"] == 2
    for row in measured["rows"].values():
        assert len(row["accs"]) == 2 and row["std"] == pytest.approx(np.std(row["accs"]), abs=1e-4)
    assert measured["torch"] == torch.__version__ and "cores" in measured["machine"]


def test_the_checkpoint_path_follows_the_environment_at_every_call(monkeypatch, tmp_path):
    """WORKSHOP_CHECKPOINT is read when the path is asked for, not once at import: a kernel
    that sets it (or a test) gets the new place at once."""
    monkeypatch.delenv("WORKSHOP_CHECKPOINT", raising=False)
    assert workshop.checkpoints.checkpoint_path() == REPO / "checkpoints" / "workshop_net.pt"
    monkeypatch.setenv("WORKSHOP_CHECKPOINT", str(tmp_path / "mine.pt"))
    assert workshop.checkpoints.checkpoint_path() == tmp_path / "mine.pt"
