"""Check a built book: every chapter ran without writing stderr, and no page loads anything from the network.

    python tools/check_book.py               # checks book/_build (run by `make book`, hence by `make test`)
    python tools/check_book.py path/_build   # another build folder

Fails (exit 1, one line per finding) if
* a chapter of book/_toc.yml has no executed notebook (`_build/jupyter_execute/<file>.ipynb`) or no HTML page: the
  build is missing or partial (a missing build is an error, never a skip);
* any executed notebook has a `stderr` stream output: a progress bar, a warning, a log line. Jupyter Book turns these
  into build warnings (`stderr_output: remove-warn`), which `-W` makes fatal; this check says which chapter and cell,
  whatever the config says;
* any built HTML page names an http(s) script, stylesheet or font: `<script src=...>`, `<link href=...>`, CSS `url(...)`
  or `@import`, or any `https?://...js` text at all (the issue's `grep 'https\\?://[^"]*\\.js'`, which also catches
  scripts loaded by inline code such as sphinx-thebe's `THEBE_JS_URL`). The book is read offline.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_EXTERNAL = [
    ("script", re.compile(r'<script\b[^>]*\bsrc\s*=\s*["\']?(https?:)?//[^"\'\s>]+', re.I)),
    ("link", re.compile(r'<link\b[^>]*\bhref\s*=\s*["\']?(https?:)?//[^"\'\s>]+', re.I)),
    ("css url()", re.compile(r'url\(\s*["\']?(https?:)?//[^)]+\)', re.I)),
    ("css @import", re.compile(r'@import\s+["\']?(https?:)?//', re.I)),
    ("a .js URL", re.compile(r'https?://[^"\s<>\']*\.js\b', re.I)),
]


def toc_files(toc: Path) -> list[str]:
    "Every `root:` and `file:` of a Jupyter Book _toc.yml, in order (a small reader: no YAML library needed)."
    out = []
    for line in toc.read_text().splitlines():
        m = re.match(r'\s*(?:-\s*)?(?:root|file)\s*:\s*["\']?([^"\'#\s]+)', line)
        if m: out.append(m.group(1))
    return out


def stderr_outputs(nb_path: Path) -> list[str]:
    "'<file> cell <i>: <first line>' for each stderr stream output of an executed notebook."
    nb = json.loads(nb_path.read_text())
    found = []
    for i, cell in enumerate(nb.get("cells", [])):
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream" and o.get("name") == "stderr":
                text = "".join(o.get("text", "")) if isinstance(o.get("text"), list) else str(o.get("text", ""))
                first = next((l.strip() for l in text.replace("\r", "\n").splitlines() if l.strip()), "")
                found.append(f"{nb_path}: cell {i} writes stderr: {first[:120]!r}")
    return found


def external_refs(text: str) -> list[tuple[str, str]]:
    "(kind, matched text) for each reference to a script, stylesheet or font on another host."
    return [(kind, m.group(0)[:160]) for kind, rx in _EXTERNAL for m in rx.finditer(text)]


def check(build: Path, toc: Path) -> list[str]:
    "Every problem found in the built book `build` (the `_build` folder) of the chapters in `toc`."
    problems = []
    html, execd = build / "html", build / "jupyter_execute"
    if not html.is_dir():
        return [f"{html}: no built book (run `make book`)"]
    for f in toc_files(toc):
        if not (html / f"{f}.html").exists(): problems.append(f"{html / f}.html: chapter in the toc but not built")
        nb = execd / f"{f}.ipynb"
        if not nb.exists(): problems.append(f"{nb}: chapter in the toc but not executed")
        else: problems += stderr_outputs(nb)
    pages = sorted(html.rglob("*.html")) + sorted(p for p in (html / "_static").rglob("*.css"))
    for p in pages:
        for kind, what in external_refs(p.read_text(errors="replace")):
            problems.append(f"{p}: external {kind}: {what}")
    return problems


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    build = Path(argv[0]) if argv else ROOT / "book" / "_build"
    problems = check(build, ROOT / "book" / "_toc.yml")
    for p in problems: print(p)
    n = len(toc_files(ROOT / "book" / "_toc.yml"))
    print(f"check_book: {n} chapters, {len(problems)} problem(s) in {build}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
