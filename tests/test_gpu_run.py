"""tools/gpu_run.py, rehearsed on the CPU: the one command a short GPU loan runs.

The rehearsal leaves out re-executing lessons 06 and 07 (nbval runs them in the same test
command); the executor that does it is tested here on a small notebook.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent

import workshop.fast
from benchmarks import gpu_training
from tools import gpu_run


def test_gpu_run_dry_run_rehearses_every_step(tmp_path, cifar10_root):
    done = subprocess.run([sys.executable, str(REPO / "tools" / "gpu_run.py"), "--dry-run",
                           "--skip", "lessons", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads((tmp_path / "gpu-cpu.json").read_text())
    assert report["ok"] and report["dry_run"] and not report["cuda"]
    assert report["torch"] == torch.__version__ and report["commit"]
    bench = report["steps"]["benchmark"]["result"]   # lesson 07's recipe end to end, too short to learn
    assert bench["seeds"] == [0] and bench["train_images"] == 128 and bench["epochs"] == 1
    assert 0 < bench["mean_acc"] == bench["min_acc"] < 1 and bench["mean_train_s"] > 0   # (test_workshop checks it learns)
    assert report["steps"]["gpu tests"]["counts"] == {"skipped": 3}   # they need CUDA, and say so
    assert (tmp_path / "gpu-cpu.png").stat().st_size > 1000
    ablation = json.loads((tmp_path / "ablation-cpu.json").read_text())   # the form, not the claim:
    assert ablation["seeds"] == [0] and ablation["date"] and ablation["device"]   # too short a run
    assert list(ablation["rows"]) == ["full recipe", *workshop.fast.ablation_rows(workshop.fast.FAST_RECIPE_SHORT)]
    assert ablation["rows"]["full recipe"]["accs"] == bench["accs"]
    assert all(set(row) == {"accs", "mean", "spread"} for row in ablation["rows"].values())
    assert "README lines to paste:" in done.stdout and json.dumps(bench) in done.stdout


def test_gpu_run_without_cuda_says_to_rehearse(monkeypatch):
    """Where the probe finds no CUDA (the real probe runs in the dry run above), the command
    stops at once and says how to rehearse instead."""
    monkeypatch.setattr(gpu_run, "probe", lambda: {"cuda": False, "device": "cpu", "python": "3",
                                                   "torch": torch.__version__, "torchvision": "0"})
    with pytest.raises(SystemExit) as stopped:
        gpu_run.main([])
    assert "no CUDA GPU here" in str(stopped.value) and "rehearse with --dry-run" in str(stopped.value)


def test_a_gpu_test_run_that_collects_nothing_fails():
    """pytest's exit 5 (no test collected) checked nothing: the step must not pass."""
    passed, counts, summary = gpu_run.run_gpu_tests("gpu and no_such_marker")
    assert not passed and counts.get("passed", 0) == 0, summary


def test_the_lesson_executor_stores_what_jupyter_shows(tmp_path):
    """gpu_run executes lessons with the workshop's one executor: a fresh kernel, prints, the
    value of a last expression, figures, and a stop at the first error."""
    import nbformat
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# title"),
        nbformat.v4.new_code_cell("x = 6 * 7\nprint('x is', x)\nprint('again')\nx"),
        nbformat.v4.new_code_cell("import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()"),
        nbformat.v4.new_code_cell("raise ValueError('stop here')"),
        nbformat.v4.new_code_cell("print('never')")])
    nbformat.write(nb, str(tmp_path / "lesson.ipynb"))
    ok, _, message = gpu_run.execute_lesson(tmp_path / "lesson.ipynb", tmp_path / "out.ipynb", timeout=120)
    assert not ok and "ValueError" in message and "stop here" in message
    nb.cells = nb.cells[:3]
    nbformat.write(nb, str(tmp_path / "lesson.ipynb"))
    ok, _, message = gpu_run.execute_lesson(tmp_path / "lesson.ipynb", tmp_path / "out.ipynb", timeout=120)
    assert ok and message == "2 cells ran"
    first, figure = nbformat.read(str(tmp_path / "out.ipynb"), as_version=4).cells[1:]
    assert [o["output_type"] for o in first.outputs] == ["stream", "execute_result"]
    assert first.outputs[0]["text"] == "x is 42\nagain\n" and first.outputs[1]["data"]["text/plain"] == "42"
    assert figure.outputs[-1]["data"]["image/png"]


def test_airbench_cache_has_the_layout_its_loader_reads(tmp_path):
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(8) % 10
    path = gpu_training.write_airbench_cache(tmp_path / "cifar10", True, images, labels)
    assert path.name == "train.pt"
    saved = torch.load(path)
    assert set(saved) == {"images", "labels", "classes"} and len(saved["classes"]) == 10
    assert saved["images"].dtype == torch.uint8 and saved["images"].shape == (8, 32, 32, 3)  # as the original files
    assert saved["labels"].dtype == torch.int64
    assert torch.equal(saved["images"].permute(0, 3, 1, 2), images) and torch.equal(saved["labels"], labels)


def test_airbench_reads_the_cache(tmp_path):
    airbench = pytest.importorskip("airbench", reason="benchmark-only: pip install -r benchmarks/requirements.txt")
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    gpu_training.write_airbench_cache(tmp_path / "cifar10", False, images, torch.arange(8))
    loader = airbench.CifarLoader(str(tmp_path / "cifar10"), train=False, batch_size=4, gpu="cpu")
    torch.testing.assert_close(loader.images.float(), images.half().float() / 255, atol=1e-3, rtol=0)
