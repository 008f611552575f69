#!/usr/bin/env python3
"""Everything that needs a GPU, in one command: for a short loan of a CUDA machine.

    python tools/gpu_run.py               # on a CUDA machine: about 10 minutes on one H100
    python tools/gpu_run.py --dry-run     # the same steps on this CPU's short path (a rehearsal)

Steps, in order, each timed and reported; a step that fails is reported and the rest still run:
1. data:       $CIFAR10_ROOT, else data/offline-copy or data/ if they hold CIFAR-10, else the
               offline copy built by make_cifar10.py (shared/cifar10/ in the repository, or
               ../shared/cifar10/ beside it);
2. lessons:    06 and 07 re-executed top to bottom, each in a fresh Python process, and written
               with their outputs into OUT/ (never in place: the stored lessons keep the CPU run
               that the tests compare on every machine; some of their outputs, such as lesson
               07's sizes, differ on a GPU by design), with the workshop's one notebook
               executor (nbclient: the GPU machine needs nbclient and ipykernel);
3. benchmark:  benchmarks/gpu_training.py --against airbench with seeds 0-4 (--dry-run: --quick,
               one seed, one epoch of one step on 128 images, tested on 50, without airbench),
               and lesson 07's ablation at that length for the same seeds, into
               OUT/ablation-<device>.json (lesson 07 points to it; a test checks it);
4. gpu tests:  pytest -m gpu (float16 with GradScaler, torch.compile, GPU against CPU accuracy);
               on a machine without CUDA they are reported as skipped;
5. results:    OUT/gpu-<device>.json (device, versions, date, commit, every step's figures and
               seconds) and OUT/gpu-<device>.png (accuracy per seed), then the README lines to
               paste. OUT is results/, or build/gpu-dry-run/ with --dry-run.

Needs PyTorch, torchvision, matplotlib, nbclient and ipykernel (the GPU machine's own Python and
PyTorch), and the workshop's package (`pip install --no-deps --no-build-isolation -e .`);
airbench comes from benchmarks/requirements.txt or a carried copy.
Exit status: 0 when every step passed.
"""
import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

try:
    from workshop import lessons
except ImportError:
    sys.exit("[gpu_run] the workshop's package is not installed in this Python: run "
             "`pip install --no-deps --no-build-isolation -e .` in the repository first")

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = lessons.NOTEBOOKS
LESSONS = ["06-gpu", "07-fast-training"]
BUILDERS = [REPO / "shared" / "cifar10" / "make_cifar10.py", REPO.parent / "shared" / "cifar10" / "make_cifar10.py"]


def say(msg):
    print(f"[gpu_run] {msg}", flush=True)


def python_env():
    return dict(os.environ, MPLBACKEND="Agg")


# ----------------------------------------------------------------------------- executing a lesson

def execute_lesson(source, dest, timeout=900):
    """Execute the lesson at `source` top to bottom in a fresh kernel, in notebooks/, with the
    workshop's one executor (workshop.lessons.execute, nbclient), and write it to `dest`;
    returns (ok, seconds, message)."""
    start = time.perf_counter()
    try:
        nb = lessons.execute(source, dest, timeout=timeout, env=python_env())
    except Exception as err:                       # a cell raised, or the kernel could not start
        return False, time.perf_counter() - start, f"{type(err).__name__}: {str(err)[-1500:]}"
    return True, time.perf_counter() - start, f"{len(lessons.code(nb))} cells ran"


# ----------------------------------------------------------------------------- the steps

def probe():
    code = ("import importlib.metadata, json, platform, sys, torch\n"
            "cuda = torch.cuda.is_available()\n"
            "print(json.dumps({'python': platform.python_version(), 'torch': torch.__version__,"
            " 'torchvision': importlib.metadata.version('torchvision'), 'cuda': cuda,"
            " 'device': torch.cuda.get_device_name(0) if cuda else 'cpu'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=python_env())
    if done.returncode != 0:
        sys.exit(f"[gpu_run] PyTorch cannot be imported here: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def find_data():
    """A folder holding CIFAR-10 (exported as CIFAR10_ROOT for every step)."""
    check = ("import sys\nfrom workshop.data import WorkshopError, find_cifar10\n"
             "try:\n    find_cifar10(sys.argv[1], download=False, quiet=True)\n"
             "except WorkshopError as err:\n    sys.exit(str(err))")
    candidates = [Path(os.environ["CIFAR10_ROOT"])] if os.environ.get("CIFAR10_ROOT") else [
        REPO / "data" / "offline-copy", REPO / "data"]
    for root in candidates:
        if subprocess.run([sys.executable, "-c", check, str(root)], env=python_env(),
                          capture_output=True).returncode == 0:
            return root
    builder = next((b for b in BUILDERS if b.exists()), None)
    if builder is None or os.environ.get("CIFAR10_ROOT"):
        sys.exit("[gpu_run] no CIFAR-10 found: set CIFAR10_ROOT to a folder with cifar-10-batches-py/, "
                 "run `python3 run.py data`, or bring shared/cifar10/make_cifar10.py into the repository")
    root = REPO / "data" / "offline-copy"
    say(f"building the offline copy with {builder.relative_to(builder.parents[2])}")
    subprocess.run([sys.executable, str(builder), str(root)], check=True, stdout=subprocess.DEVNULL)
    return root


def last_json(text):
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return None


def run_benchmark(dry_run, seeds, ablation):
    command = [sys.executable, str(REPO / "benchmarks" / "gpu_training.py"), "--ablation", str(ablation)]
    command += (["--quick", "--epochs", "1", "--seeds", "0", "--train-images", "128", "--test-images", "50"]
                if dry_run
                else ["--against", "airbench", "--seeds", *map(str, seeds)])
    done = subprocess.run(command, cwd=REPO, env=python_env(), capture_output=True, text=True)
    result = last_json(done.stdout) if done.returncode == 0 else None
    return result, (done.stderr.strip().splitlines() or ["no output"])[-1] if result is None else "ok"


def run_gpu_tests(expression="gpu"):
    """pytest -m EXPRESSION on tests/test_gpu.py: (passed, counts, summary line). Passed means
    pytest exited 0: a run in which no test was collected (exit 5) has checked nothing, and fails."""
    done = subprocess.run([sys.executable, "-m", "pytest", "-m", expression, "-o", "addopts=", "-p",
                           "no:cacheprovider", "-p", "no:nbval", "-q", "-rs", "tests/test_gpu.py"], cwd=REPO,
                          env=python_env(), capture_output=True, text=True)
    summary = (done.stdout.strip().splitlines() or ["no output"])[-1]
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error)", summary)}
    return done.returncode == 0 and not counts.get("failed") and not counts.get("error"), counts, summary


def slug(name):
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def commit():
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
    return done.stdout.strip() or None


def draw(bench, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3))
    seeds = bench["seeds"]
    ax.plot(seeds, [100 * a for a in bench["accs"]], "o-", label="workshop (lesson 07)")
    if "airbench_accs" in bench:
        ax.plot(seeds, [100 * a for a in bench["airbench_accs"]], "s--", label="airbench94")
    ax.set_xlabel("seed")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{bench['device']}: {bench['epochs']} epochs")
    ax.legend()
    fig.savefig(path, bbox_inches="tight", dpi=100)
    plt.close(fig)


def readme_lines(facts, bench):
    lines = [f"Measured with `python tools/gpu_run.py` on {facts['device']} ({facts['date']}, "
             f"PyTorch {facts['torch']}, Python {facts['python']}, commit {facts['commit']}):", "```"]
    if bench:
        lines.append(f"workshop (lesson 07): mean {bench['mean_acc']:.2%}, min {bench['min_acc']:.2%}, "
                     f"{bench['mean_train_s']:.2f} s per run over seeds {bench['seeds']}")
        if "airbench_mean_acc" in bench:
            lines.append(f"airbench94:          mean {bench['airbench_mean_acc']:.2%}, min "
                         f"{bench['airbench_min_acc']:.2%}, {bench['airbench_mean_train_s']:.2f} s per run; "
                         f"time_ratio {bench['time_ratio']}")
        lines.append(json.dumps(bench))
    lines.append("```")
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="rehearse every step on this CPU's short path")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--skip", nargs="+", default=[], choices=["lessons", "benchmark", "tests"],
                   help="leave out these steps (the tests' rehearsal leaves out the lessons, which nbval runs)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    began = time.perf_counter()
    facts = probe()
    if not facts["cuda"] and not args.dry_run:
        sys.exit("[gpu_run] no CUDA GPU here: run this on a machine with one, or rehearse with --dry-run")
    out = args.out or (REPO / "build" / "gpu-dry-run" if args.dry_run else REPO / "results")
    out.mkdir(parents=True, exist_ok=True)
    facts.update(date=datetime.date.today().isoformat(), commit=commit(), dry_run=args.dry_run)
    say(f"{facts['device']}; Python {facts['python']}, torch {facts['torch']}; results in {out.name}/")
    root = find_data()
    os.environ["CIFAR10_ROOT"] = str(root)
    steps, ok = {}, True

    if "lessons" not in args.skip:
        for lesson in LESSONS:
            source = NOTEBOOKS / f"{lesson}.ipynb"
            dest = out / source.name
            passed, seconds, message = execute_lesson(source, dest)
            steps[f"lesson {lesson}"] = {"ok": passed, "seconds": round(seconds, 1), "message": message}
            say(f"lesson {lesson}: {'ok' if passed else 'FAILED'} in {seconds:.0f} s ({message})")
            ok &= passed
    if "benchmark" not in args.skip:
        start = time.perf_counter()
        bench, message = run_benchmark(args.dry_run, args.seeds, out / f"ablation-{slug(facts['device'])}.json")
        steps["benchmark"] = {"ok": bench is not None, "seconds": round(time.perf_counter() - start, 1),
                              "message": message, "result": bench}
        say(f"benchmark: {message}; {json.dumps(bench) if bench else ''}")
        ok &= bench is not None
    if "tests" not in args.skip:
        start = time.perf_counter()
        passed, counts, summary = run_gpu_tests()
        steps["gpu tests"] = {"ok": passed, "seconds": round(time.perf_counter() - start, 1),
                              "counts": counts, "message": summary}
        say(f"gpu tests: {summary}")
        ok &= passed
    bench = steps.get("benchmark", {}).get("result")
    name = f"gpu-{slug(facts['device'])}"
    (out / f"{name}.json").write_text(json.dumps(
        dict(facts, ok=ok, seconds=round(time.perf_counter() - began, 1), steps=steps), indent=1) + "\n")
    if bench:
        draw(bench, out / f"{name}.png")
    say(f"wrote {name}.json{' and ' + name + '.png' if bench else ''} in {out.name}/ after "
        f"{time.perf_counter() - began:.0f} s; {'every step passed' if ok else 'SOME STEPS FAILED'}")
    print("\n".join(["", "README lines to paste:", *readme_lines(facts, bench)]), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
