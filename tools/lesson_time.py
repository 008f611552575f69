#!/usr/bin/env python3
"""How long each lesson takes, predicted from what it asks of a learner.

    python -m tools.lesson_time            # the table, from the lessons and the stored timings
    python -m tools.lesson_time --run      # first time every lesson's cells on this CPU's laptop path
    python -m tools.lesson_time --write    # write the minutes into the lessons, README and INSTRUCTORS

A lesson's minutes are its reading (markdown words at 150 a minute; exercise solutions, which
sit in closed <details>, are not read), its compute (the seconds its code cells ran, measured by
`--run` and stored in results/lesson-time.json with the machine they ran on) and its exercises
(EXERCISE_MINUTES each). The core path leaves out the "Going deeper" sections (see
workshop.lessons.going_deeper): their words, cells and exercises are counted apart. Each lesson's
"**Time:** about N minutes", the README's table and INSTRUCTORS.md's 60-minute plan quote the core
minutes (`--write` puts them there); tests/test_lessons.py checks that they agree.
The last line is JSON: per lesson, and `core_minutes_00_05` / `full_minutes_00_05` for the lab.
"""
import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import torch

from workshop import lessons

WORDS_PER_MINUTE = 150
EXERCISE_MINUTES = 3            # read it, predict, type a line or two, run it, open the solution
LAB = ("00", "01", "02", "03", "04", "05")
TIMINGS = lessons.REPO / "results" / "lesson-time.json"
SOLUTION = re.compile(r"<details>.*?</details>", flags=re.S)
EXERCISE = re.compile(r"^\*\*\d+\.\*\*", flags=re.M)


def read_words(text):
    """The words a learner reads in a markdown cell: all but the closed solutions."""
    return len(SOLUTION.sub(" ", text).split())


def exercises(text):
    return len(EXERCISE.findall(SOLUTION.sub(" ", text)))


def cell_seconds(cell):
    """How long a code cell ran, from the times nbclient records in its metadata (0 if none)."""
    times = cell.get("metadata", {}).get("execution", {})
    if "iopub.execute_input" not in times or "shell.execute_reply" not in times:
        return 0.0
    began, ended = (datetime.fromisoformat(times[k].replace("Z", "+00:00"))
                    for k in ("iopub.execute_input", "shell.execute_reply"))
    return max(0.0, (ended - began).total_seconds())


def count(nb, seconds=None):
    """A lesson's counts, core path and Going deeper apart. `seconds` maps cell ids to seconds."""
    seconds = seconds or {}
    deeper = lessons.going_deeper(nb)
    parts = {part: {"words": 0, "code_cells": 0, "exercises": 0, "compute_s": 0.0}
             for part in ("core", "deeper")}
    for i, cell in enumerate(lessons.cells(nb)):
        part = parts["deeper" if i in deeper else "core"]
        if cell["cell_type"] == "markdown":
            part["words"] += read_words(lessons.source(cell))
            part["exercises"] += exercises(lessons.source(cell))
        elif cell["cell_type"] == "code":
            part["code_cells"] += 1
            part["compute_s"] += seconds.get(cell.get("id"), 0.0)
    return parts


def minutes(part):
    """Predicted minutes for a part of a lesson: reading, compute and exercises."""
    return (part["words"] / WORDS_PER_MINUTE + part["compute_s"] / 60
            + part["exercises"] * EXERCISE_MINUTES)


def stored_timings(path=TIMINGS):
    return json.loads(path.read_text()) if path.exists() else {"lessons": {}}


def measure(numbers):
    """Execute the chosen lessons on the laptop path in fresh kernels and store each code cell's
    seconds, by cell id, in results/lesson-time.json (other lessons' figures are kept)."""
    from tools.execute_lessons import lesson_env
    scratch = Path(tempfile.mkdtemp(prefix="lesson-time-"))
    env = lesson_env(scratch)
    stored = stored_timings()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=lessons.REPO,
                            capture_output=True, text=True).stdout.strip()
    stored["measured_on"] = {"cpu_capability": "AVX2 (forced, as on most laptops)",
                             "cores": os.cpu_count(), "machine": platform.machine(),
                             "host_cpu_capability": torch.backends.cpu.get_cpu_capability(),
                             "torch": torch.__version__, "commit": commit}
    for path in lessons.lesson_paths():
        if numbers and path.name[:2] not in numbers:
            continue
        nb = lessons.execute(path, env=env, cwd=scratch, record_timing=True)
        stored["lessons"][path.name[:2]] = {c["id"]: round(cell_seconds(c), 2)
                                            for c in nb.cells if c.cell_type == "code"}
        TIMINGS.parent.mkdir(exist_ok=True)
        TIMINGS.write_text(json.dumps(stored, indent=1) + "\n")     # after each: a failure keeps the rest
        print(f"{path.name}: {sum(stored['lessons'][path.name[:2]].values()):.0f} s", flush=True)


def table(timings=None):
    """Per lesson: its core and Going deeper counts and minutes."""
    timings = stored_timings() if timings is None else timings
    rows = {}
    for path in lessons.lesson_paths():
        number = path.name[:2]
        parts = count(lessons.read(path), timings["lessons"].get(number))
        rows[number] = {"name": path.stem, "measured": number in timings["lessons"], **{
            part: dict(counts, minutes=round(minutes(counts), 1)) for part, counts in parts.items()}}
    return rows


def summary(rows):
    lab = [rows[n] for n in LAB if n in rows]
    core = sum(r["core"]["minutes"] for r in lab)
    return {"core_minutes_00_05": round(core, 1),
            "full_minutes_00_05": round(core + sum(r["deeper"]["minutes"] for r in lab), 1),
            "compute_measured": all(r["measured"] for r in lab),
            "lessons": {n: {"core_minutes": r["core"]["minutes"],
                            "deeper_minutes": r["deeper"]["minutes"]} for n, r in rows.items()}}


HEADER = re.compile(r"(\*\*Time:\*\* about )(\d+)( minutes)")
README_ROW = re.compile(r"^(\| (\d\d) \| .*\| )(\d+)( min \|)$", flags=re.M)
PLAN_ROW = re.compile(r"^\| (\d+)–(\d+) \| (\d\d|Wrap-up)\b", flags=re.M)


def lab_plan(result):
    """The 60-minute plan: {lesson number: (start, end)}, minutes from the start, then the
    wrap-up to 60; each lesson's span is its core minutes, rounded as they add up."""
    plan, elapsed = {}, 0.0
    for number in LAB:
        start = round(elapsed)
        elapsed += result["lessons"][number]["core_minutes"]
        plan[number] = (start, round(elapsed))
    plan["Wrap-up"] = (round(elapsed), 60)
    return plan


def write(result):
    """Put the core minutes into each lesson's header, the README's table and the plan."""
    minutes = {n: round(r["core_minutes"]) for n, r in result["lessons"].items()}
    for path in lessons.lesson_paths():
        nb = lessons.read(path)
        title = nb["cells"][0]
        text = HEADER.sub(lambda m: f"{m[1]}{minutes[path.name[:2]]}{m[3]}", lessons.source(title))
        if text != lessons.source(title):
            title["source"] = text.splitlines(keepends=True)
            lessons.write(nb, path)
    readme = lessons.REPO / "README.md"
    readme.write_text(README_ROW.sub(lambda m: f"{m[1]}{minutes.get(m[2], m[3])}{m[4]}", readme.read_text()))
    plan = lab_plan(result)
    instructors = lessons.REPO / "INSTRUCTORS.md"
    instructors.write_text(PLAN_ROW.sub(lambda m: "| {}–{} | {}".format(*plan[m[3]], m[3]),
                                        instructors.read_text()))


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", nargs="*", metavar="NN",
                        help="first time these lessons (default: all) on this CPU")
    parser.add_argument("--write", action="store_true",
                        help="write the core minutes into the lessons, README.md and INSTRUCTORS.md")
    args = parser.parse_args(argv)
    if args.run is not None:
        measure(set(args.run))
    rows = table()
    print(f"{'lesson':28} {'words':>6} {'cells':>5} {'compute':>8} {'exerc.':>6} {'minutes':>8}"
          f"   going deeper: words, cells, compute, exercises, minutes")
    for number, r in rows.items():
        c, d = r["core"], r["deeper"]
        compute = f"{c['compute_s']:.0f} s" if r["measured"] else "-"
        print(f"{r['name']:28} {c['words']:6} {c['code_cells']:5} {compute:>8} {c['exercises']:6} "
              f"{c['minutes']:8.1f}   {d['words']:5} {d['code_cells']:3} {d['compute_s']:5.0f} s "
              f"{d['exercises']:3} {d['minutes']:6.1f}")
    result = summary(rows)
    if args.write:
        write(result)
    print(f"lab {LAB[0]}-{LAB[-1]}: core path {result['core_minutes_00_05']} min, with every "
          f"Going deeper section {result['full_minutes_00_05']} min"
          + ("" if result["compute_measured"] else " (compute not measured: run with --run)"))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
