"""A workshop that survives a real room: no GPU, interrupted training, missing checkpoints,
slides that render, attendee copies.

Each test runs real lesson cells in a fresh kernel (nbclient), as a learner's Jupyter would.
"""
import json
import os
import signal
import subprocess
import threading
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tools import build_slides, make_attendee_copies

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"


def outputs_text(cell):
    return "".join(o.get("text", "") for o in cell.get("outputs", []))


def run_cells(lesson, stop_before, client_hook=None, skip=()):
    """Run a lesson's cells in a fresh kernel up to (not including) the first code cell whose
    source contains `stop_before`, leaving out those that contain one of `skip`; return
    (notebook, index of that cell), with the kernel still running inside
    `client_hook(client, nb, index)`. The kernel inherits os.environ: tests set variables for it
    with monkeypatch.setenv."""
    nb = nbformat.read(NOTEBOOKS / f"{lesson}.ipynb", as_version=4)
    stop = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and stop_before in c.source)
    client = NotebookClient(nb, timeout=600, resources={"metadata": {"path": str(NOTEBOOKS)}})
    with client.setup_kernel():
        for i, cell in enumerate(nb.cells[:stop]):
            if cell.cell_type == "code" and not any(s in cell.source for s in skip):
                client.execute_cell(cell, i)
        if client_hook:
            client_hook(client, nb, stop)
    return nb, stop


@pytest.mark.parametrize("lesson,stop_before", [("06-gpu", "def synchronize"),
                                                ("07-fast-training", "def random_crop")])
def test_gpu_lessons_run_and_say_so_without_a_gpu(lesson, stop_before, monkeypatch):
    """CUDA hidden: the GPU lessons pick the CPU, say so, and run their first sections."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    nb, stop = run_cells(lesson, stop_before)
    text = "\n".join(outputs_text(c) for c in nb.cells[:stop] if c.cell_type == "code")
    assert "device: cpu - no accelerator (GPU) found" in text
    errors = [o for c in nb.cells[:stop] for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors


def test_interrupted_training_keeps_a_usable_model(tmp_path, monkeypatch):
    """Stop (KeyboardInterrupt) in the middle of lesson 05's first epoch: the loop says so, the
    model keeps its weights, and the next cells run."""
    seen = {}

    def interrupt_then_continue(client, nb, i):
        # what Jupyter's Stop button does: SIGINT to the kernel process
        pid = client.km.provisioner.process.pid
        timer = threading.Timer(5.0, os.kill, (pid, signal.SIGINT))
        timer.start()
        client.execute_cell(nb.cells[i], i)          # the training loop
        timer.cancel()
        seen["loop"] = outputs_text(nb.cells[i])
        nxt = next(j for j in range(i + 1, len(nb.cells)) if nb.cells[j].cell_type == "code")
        client.execute_cell(nb.cells[nxt], nxt)      # the curves of the (empty) history
        probe = nbformat.v4.new_code_cell(
            "scores = predict(model, test_images[:100], autocast_dtype=autocast_dtype)\n"
            "print(tuple(scores.shape), bool(torch.isfinite(scores).all()))")
        nb.cells.append(probe)
        client.execute_cell(probe, len(nb.cells) - 1)
        seen["probe"] = outputs_text(probe)

    monkeypatch.setenv("WORKSHOP_CHECKPOINT", str(tmp_path / "net.pt"))
    # the tutorial's loop (its set-up, the loop, its check) is not needed for this
    run_cells("05-training-on-cpu", "start = time.perf_counter()\ntry:", client_hook=interrupt_then_continue,
              skip=("train_loader = ", "enumerate(train_loader)", "np.log(10)"))
    assert "Stopped after 0 full epochs; the model keeps what it learned." in seen["loop"]
    assert "(100, 10) True" in seen["probe"]


@pytest.mark.parametrize("problem", ["missing", "corrupted"])
def test_lesson_06_carries_on_without_a_good_checkpoint(tmp_path, problem, monkeypatch):
    checkpoint = tmp_path / "workshop_net.pt"
    if problem == "corrupted":
        checkpoint.write_bytes(b"PK\x03\x04 not really a checkpoint")
    nb = nbformat.read(NOTEBOOKS / "06-gpu.ipynb", as_version=4)
    i = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "load_checkpoint(reference)" in c.source)
    j = next(k for k in range(i + 1, len(nb.cells)) if nb.cells[k].cell_type == "code")
    imports = next(c for c in nb.cells if c.cell_type == "code")             # the lesson's own imports
    setup = nbformat.v4.new_code_cell("DATA_ROOT = find_cifar10(quiet=True)\n"
                                      "test_images, test_labels = load_cifar10_tensors(DATA_ROOT, train=False)")
    nb.cells = [imports, setup, nb.cells[i], nb.cells[j]]
    monkeypatch.setenv("WORKSHOP_CHECKPOINT", str(checkpoint))
    NotebookClient(nb, timeout=300, resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    message = outputs_text(nb.cells[2])
    assert ("No checkpoint at" if problem == "missing" else "cannot be used") in message
    assert "Carrying on without it." in message
    assert outputs_text(nb.cells[3]).strip() == "True"
    if problem == "corrupted":
        assert checkpoint.read_bytes().startswith(b"PK"), "the learner's file was left as it was"


# ------------------------------------------------------------------ presenter's path

def test_slides_build_and_render_in_a_headless_browser(tmp_path, chromium):
    decks = build_slides.build(sorted(NOTEBOOKS.glob("[0-9][0-9]-*.ipynb"))[:2])
    assert [d.name for d in decks][:2] == ["00-setup-check.slides.html", "01-tensors.slides.html"]
    deck = decks[1]
    nb = json.loads((NOTEBOOKS / "01-tensors.ipynb").read_text())
    breaks = [c for c in nb["cells"] if c["metadata"].get("slideshow", {}).get("slide_type")
              in ("slide", "subslide")]
    assert 4 <= len(breaks) < len(nb["cells"]) // 3, "slide breaks are chosen, not set on every cell"
    html = deck.read_text()
    assert 'src="assets/requirejs/require.js"' in html, "the deck uses the local reveal.js"
    dom = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", "--dump-dom",
         deck.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert "A tensor is an n-dimensional grid of numbers of one type" in dom
    assert 'class="reveal' in dom and "ready" in dom, "reveal.js did not start"
    assert 'class="present"' in dom, "no slide is shown"


def test_an_attendees_old_module_copy_is_set_aside_never_overwritten(tmp_path, monkeypatch):
    """Earlier versions copied workshop.py beside the lessons, where it would shadow the installed
    package; an attendee may have edited it. It is renamed, with its content, not replaced."""
    monkeypatch.setattr(make_attendee_copies, "OUT", tmp_path)
    (tmp_path / "workshop.py").write_text("# my notes\nMY_SETTING = 1\n")
    make_attendee_copies.main()
    assert not (tmp_path / "workshop.py").exists()
    assert (tmp_path / "workshop.py.old").read_text() == "# my notes\nMY_SETTING = 1\n"
    make_attendee_copies.main()                                      # and it stays so
    assert (tmp_path / "workshop.py.old").read_text() == "# my notes\nMY_SETTING = 1\n"


def test_attendee_copies_have_no_outputs_and_no_solutions(tmp_path, monkeypatch):
    monkeypatch.setattr(make_attendee_copies, "OUT", tmp_path)
    make_attendee_copies.main()
    lessons = sorted(NOTEBOOKS.glob("[0-9][0-9]-*.ipynb"))
    assert sorted(p.name for p in tmp_path.glob("*.ipynb")) == [p.name for p in lessons]
    assert not list(tmp_path.glob("*.py")), "attendee/ holds the lessons only: they import the package"
    for lesson in lessons:
        original = json.loads(lesson.read_text())
        copy = json.loads((tmp_path / lesson.name).read_text())
        assert len(copy["cells"]) == len(original["cells"])
        for before, after in zip(original["cells"], copy["cells"]):
            text = "".join(after["source"])
            assert "<details>" not in text and "Solution" not in text
            if after["cell_type"] == "code":
                assert after["outputs"] == [] and after["execution_count"] is None
                hidden = before["metadata"].get("jupyter", {}).get("source_hidden")
                assert text == (make_attendee_copies.ANSWER_HERE if hidden else "".join(before["source"]))
            elif text.startswith("#"):
                assert text.splitlines()[0] == "".join(before["source"]).splitlines()[0], "headings kept"
