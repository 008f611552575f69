"""The exercises' written solutions, run as the solution says, and their stated results checked.

Solutions written as hidden code cells run in nbval with the rest of their lesson, and their
outputs are compared there. The ones here are the solutions written in prose, and the exercises
whose point is a second run with something changed. Solutions that are about timings on the
learner's own machine (lesson 02 exercise 3, lesson 08 exercise 1) or that retrain for minutes
(lesson 05 exercises 2 and 3, whose loss claim a unit test checks) are not repeated here.
"""
import re
import time
import urllib.error
import urllib.request

import pytest
import torch
import torch.nn as nn

import workshop.data
import workshop.ddp_train
import workshop.device
import workshop.fast
from tests import test_distributed
from workshop import lessons

pytestmark = pytest.mark.processes          # lesson 08's exercises start torchrun jobs


def cell_sources(lesson):
    return [lessons.source(c) for c in lessons.code(lessons.NOTEBOOKS / f"{lesson}.ipynb")]


def test_lesson_00_exercise_2_an_empty_folder_set_in_the_kernel(tmp_path, monkeypatch):
    """Setting CIFAR10_ROOT in the running kernel is enough: the next data check reads it."""
    empty = tmp_path / "empty-cifar"
    empty.mkdir()
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: (_ for _ in ()).throw(
        urllib.error.URLError("network is off")))
    monkeypatch.setenv("CIFAR10_ROOT", str(empty))
    data_cell = next(s for s in cell_sources("00-setup-check") if "find_cifar10()" in s)
    with pytest.raises(workshop.data.WorkshopError) as err:
        exec(data_cell, {"find_cifar10": workshop.data.find_cifar10})
    message = str(err.value)
    assert "could not be downloaded" in message and "cifar-10-python.tar.gz" in message
    assert "CIFAR10_ROOT" in message


def test_lesson_01_exercise_3_the_mean_broadcasts_as_3_1_1():
    batch = torch.rand(4, 3, 32, 32)
    channel_mean = batch.mean(dim=(0, 2, 3))
    centred = batch - channel_mean.view(3, 1, 1)
    assert torch.allclose(centred.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-6)
    with pytest.raises(RuntimeError):            # (3,) lines up with the width, 32
        batch - channel_mean


def output_size(size, kernel, padding, stride):
    """Lesson 03's formula for a convolution's output height (and width)."""
    return (size + 2 * padding - kernel) // stride + 1


@pytest.mark.parametrize("size, kernel, padding, stride", [(32, 3, 1, 2), (32, 3, 1, 1), (32, 5, 0, 1),
                                                           (28, 5, 0, 1), (16, 3, 1, 2), (31, 2, 0, 3)])
def test_lesson_03_exercise_2_the_formula_predicts_the_shape(size, kernel, padding, stride):
    """The solution's arithmetic is lesson 03's formula, and the formula is what PyTorch computes
    (stride 2 with padding 1 halves a 32-pixel image: the exercise's case, the first row)."""
    images = torch.rand(2, 3, size, size)
    out = nn.Conv2d(3, 8, kernel, stride=stride, padding=padding)(images)
    assert tuple(out.shape) == (2, 8, *(2 * [output_size(size, kernel, padding, stride)]))
    if (size, kernel, padding, stride) == (32, 3, 1, 2):
        assert out.shape[-1] == 16


def test_lesson_07_exercise_2_the_runs_train_the_recipe_set_before_them():
    """Exercise 2 sets `recipe = dict(...)`, then runs the cell with the runs again: the lesson's
    own cells (timed_run, the runs) must train that recipe, not the one bound when timed_run was
    defined."""
    cells = cell_sources("07-fast-training")
    timed = next(s for s in cells if "def timed_run" in s)
    runs = next(s for s in cells if "runs = [timed_run(seed, recipe)" in s)
    trained = []
    namespace = dict(torch=torch, synchronize=lambda device: None, time=time, np=__import__("numpy"), FULL=False,
                     cpu_autocast_dtype=workshop.device.cpu_autocast_dtype,
                     device=torch.device("cpu"), train_x=None, train_y=None, SEEDS=[0, 1],
                     recipe=workshop.fast.FAST_RECIPE_SHORT, evaluate=lambda model, *args, **kwargs: 0.5,
                     test_images=None, test_labels=None,
                     train_fast=lambda x, y, recipe, seed, dtype, **switches: trained.append((seed, recipe)))
    exec(timed, namespace)
    namespace["recipe"] = dict(workshop.fast.FAST_RECIPE_SHORT, epochs=1)   # the exercise's edit
    exec(runs, namespace)
    assert [(seed, recipe["epochs"]) for seed, recipe in trained] == [(0, 1), (1, 1)]


# ------------------------------------------------------------------ lesson 08, through torchrun

SHORT = ["--train-images", "2048", "--test-images", "500", "--cpu"]


def launch(tmp_path, torchrun, args, name="run"):
    """test_distributed's launcher, every job of a test sharing one checkpoint, c.pt."""
    return test_distributed.launch(tmp_path, torchrun, args, name, checkpoint="c.pt")


def test_lesson_08_exercises_2_and_3_rank_0_killed_before_any_checkpoint(tmp_path, monkeypatch):
    """Exercise 2: with no checkpoint yet the restarted job starts again from epoch 1.
    Exercise 3 (same run): a global batch of 512 doubles the learning rate to 0.4."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    code, printed, why, result = launch(
        tmp_path, ["--standalone", "--nproc-per-node=2", "--max-restarts=1"],
        ["--epochs", "2", *SHORT, "--batch-size", "512", "--kill", "0:1:2"])
    assert code == 0, why
    assert "rank 0: killing myself at epoch 1, step 2" in printed and "resumed" not in printed
    assert result["restarts"] == 1 and result["epochs"] == 2
    assert "256 images per process per step, 512 per step in all" in printed and "lr 0.4" in printed


def test_lesson_08_exercise_3_diverges_and_a_longer_warm_up_fixes_it(tmp_path, monkeypatch):
    """Exercise 3's solution: the call as written (16 steps, 4 of warm-up, peak lr 0.4) ends with a
    train loss above the 2.30 of even guessing and chance accuracy; the same batch on all 50,000
    images (97 steps, 24 of warm-up) learns."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torchrun = ["--standalone", "--nproc-per-node=2"]
    call = ["--epochs", "1", "--batch-size", "512", "--test-images", "2000", "--cpu"]
    code, printed, why, short = test_distributed.launch(tmp_path, torchrun, [*call, "--train-images", "8192"], "short")
    assert code == 0, why
    loss = float(re.search(r"train loss ([\d.]+)", printed).group(1))
    assert "16 steps per epoch, lr 0.4" in printed
    assert loss > 2.5 and short["test_acc"] < 0.2, (loss, short["test_acc"])
    code, printed, why, long = test_distributed.launch(tmp_path, torchrun, call, "long")
    assert code == 0, why
    assert "97 steps per epoch, lr 0.4" in printed
    assert long["test_acc"] > 0.3, long["test_acc"]


def test_lesson_08_exercise_4_without_restarts_the_job_stops_and_says_so(tmp_path, monkeypatch):
    """The launcher names the dead rank and its exit code; the checkpoint of epoch 1 is still there,
    and the same call without --kill is the same run, so it resumes from it. (Resuming, and then
    training the remaining epoch only, lesson 08's restart cell shows live.)"""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torchrun = ["--standalone", "--nproc-per-node=2"]
    call = ["--epochs", "2", *SHORT]
    code, printed, why, _ = launch(tmp_path, torchrun, [*call, "--kill", "1:2:3"], "killed")
    assert code != 0
    assert why.startswith("The training processes failed: rank 1 (exit code -9)")
    same = [*call, "--checkpoint", str(tmp_path / "c.pt")]           # as launch() passes it
    again = workshop.ddp_train.run_config(workshop.ddp_train.options(same))
    assert again == workshop.ddp_train.run_config(workshop.ddp_train.options([*same, "--kill", "1:2:3"]))
    assert workshop.ddp_train.resume_state(tmp_path / "c.pt", again)["epoch"] == 1
