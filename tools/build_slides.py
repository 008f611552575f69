#!/usr/bin/env python3
"""Build a reveal.js slide deck from every executed lesson.

    python tools/build_slides.py [NOTEBOOK ...]      # default: every notebooks/NN-*.ipynb

Writes build/slides/NN-name.slides.html. The slide breaks come from each cell's
`slideshow.slide_type` metadata, chosen on purpose in the lessons: the title cell starts the
deck and each `##` section starts a sub-slide; everything else stays on its section's slide.

The decks load reveal.js, require.js and jQuery from build/slides/assets/, fetched once with
`npm pack` (Node.js's npm), so they also work offline in a classroom. Without npm the decks
point at the public CDN instead and need internet to display.

Going deeper sections stay folded, as in JupyterLab: the deck shows each one's heading with a
line saying it is optional, and skips its cells (slide type `skip`); the notebook has them.

Made for presenting: the lessons' figures are embedded in the deck (so it can be copied
anywhere), relative links point from build/slides/ to the same files (a link to another lesson
opens that lesson's deck), and long lines of code and output wrap instead of running off the
slide.
"""
import base64
import mimetypes
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from nbconvert import SlidesExporter

import nbformat

from workshop.lessons import going_deeper, heading, lesson_paths

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "build" / "slides"
ASSETS = OUT / "assets"
# the versions nbconvert's reveal template is written for
PACKAGES = {"reveal.js": "4.0.2", "requirejs": "2.3.7", "jquery": "3.7.1"}
LOCAL = {"reveal_url_prefix": "assets/reveal.js",
         "require_js_url": "assets/requirejs/require.js",
         "jquery_url": "assets/jquery/dist/jquery.min.js"}


def fetch_assets():
    """Unpack the three JavaScript packages into ASSETS; return True when they are there."""
    if all((ASSETS / name / "package.json").exists() for name in PACKAGES):
        return True
    npm = shutil.which("npm")
    if npm is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        specs = [f"{name}@{version}" for name, version in PACKAGES.items()]
        done = subprocess.run([npm, "pack", "--silent", *specs], cwd=tmp, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"npm pack failed, the decks will use the CDN: {done.stderr.strip()[:200]}")
            return False
        for name, version in PACKAGES.items():
            target = ASSETS / name
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            with tarfile.open(Path(tmp) / f"{name}-{version}.tgz") as tar:
                for member in tar.getmembers():
                    member.name = member.name.split("/", 1)[1] if "/" in member.name else ""
                    if member.name and (member.isfile() or member.isdir()):
                        tar.extract(member, target)
    return True


WRAP = """<style>
/* long code and output lines wrap rather than run off the right edge of the slide */
.reveal pre, .reveal code, .jp-OutputArea-output pre { white-space: pre-wrap; overflow-wrap: anywhere; }
.reveal pre { width: 100%; box-sizing: border-box; }
.reveal img { max-width: 100%; height: auto; }
</style>
"""


def fix_paths(html, folder):
    """Embed the images that `folder`'s notebooks link relatively, and re-point relative links."""
    def embed(match):
        target = (folder / match.group(2)).resolve()
        if not target.is_file():
            return match.group(0)
        kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        data = base64.b64encode(target.read_bytes()).decode("ascii")
        return f'{match.group(1)}"data:{kind};base64,{data}"'

    def link(match):
        href = match.group(2)
        path, _, anchor = href.partition("#")
        target = (folder / path).resolve()
        if target.suffix == ".ipynb" and target.parent == (REPO / "notebooks").resolve():
            new = f"{target.stem}.slides.html"
        else:
            new = Path(os.path.relpath(target, OUT)).as_posix()
        return f'{match.group(1)}"{new}{"#" + anchor if anchor else ""}"'

    html = re.sub(r'(<img[^>]*?\ssrc=)"(?!data:|https?:|/)([^"]+)"', embed, html)
    html = re.sub(r'(<a[^>]*?\shref=)"(?!#|https?:|mailto:|data:|/)([^"]+)"', link, html)
    return html.replace("</head>", WRAP + "</head>", 1)


FOLDED_NOTE = "\n\n*Optional: this section is folded in the notebook, which has its cells.*"


def folded(nb):
    """The notebook as the deck shows it: each Going deeper section reduced to its heading."""
    deeper = going_deeper(nb)
    for i, cell in enumerate(nb.cells):
        if i not in deeper:
            continue
        found = heading(cell)
        if found and found[1].startswith("Going deeper"):
            cell.source = f"{'#' * found[0]} {found[1]}" + FOLDED_NOTE
        else:
            cell.metadata.setdefault("slideshow", {})["slide_type"] = "skip"
    return nb


def build(notebooks):
    OUT.mkdir(parents=True, exist_ok=True)
    # reveal_scroll: a section longer than the screen scrolls instead of being cut off
    exporter = SlidesExporter(reveal_scroll=True, **(LOCAL if fetch_assets() else {}))
    written = []
    for path in notebooks:
        nb = folded(nbformat.read(str(path), as_version=4))
        body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"path": str(Path(path).parent)}})
        body = fix_paths(body, Path(path).resolve().parent)
        target = OUT / f"{Path(path).stem}.slides.html"
        target.write_text(body, encoding="utf-8")
        written.append(target)
    return written


def main(argv):
    notebooks = [Path(a) for a in argv] or lesson_paths()
    for target in build(notebooks):
        print(target.relative_to(REPO))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
