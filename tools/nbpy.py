"""Round-trip notebooks and `# %%` percent scripts, for authors who prefer a text editor.

    python tools/nbpy.py to-nb  draft.py nbs/10_windows.ipynb   # percent script -> notebook
    python tools/nbpy.py to-py  nbs/10_windows.ipynb draft.py   # notebook -> percent script

Cells start with `# %%` (code) or `# %% [markdown]` (markdown; each line is written `# text`).
An optional tag list follows in braces: `# %% {"tags": ["skip-execution"]}`.
The notebook in nbs/ stays the source of truth: the script is a scratch copy, never committed.
Outputs are dropped; cells whose source is unchanged keep their ids. Run `make export` afterwards.
"""
import hashlib, json, re, sys
from pathlib import Path

import nbformat

_HDR = re.compile(r'^# %%(?P<md> \[markdown\])?(?P<meta>\s*\{.*\})?\s*$')


def py_to_nb(src: str, old=None) -> nbformat.NotebookNode:
    "Build a notebook from a percent script; cells whose source is unchanged keep their ids from `old`."
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"display_name": "python3", "language": "python", "name": "python3"}}
    keep = {c.source: c.id for c in (old.cells if old else []) if "id" in c}
    cells, cur = [], None
    for line in src.splitlines():
        m = _HDR.match(line)
        if m:
            cur = {"md": bool(m["md"]), "meta": json.loads(m["meta"]) if m["meta"] else {}, "lines": []}
            cells.append(cur)
        elif cur is not None:
            cur["lines"].append(line)
    for c in cells:
        lines = c["lines"]
        while lines and not lines[-1].strip(): lines.pop()
        while lines and not lines[0].strip(): lines.pop(0)
        if c["md"]:
            text = "\n".join(l[2:] if l.startswith("# ") else l.lstrip("#") for l in lines)
            cell = nbformat.v4.new_markdown_cell(text)
        else:
            cell = nbformat.v4.new_code_cell("\n".join(lines))
        cell.metadata.update(c["meta"])
        cell.id = keep.get(cell.source) or hashlib.sha1(cell.source.encode()).hexdigest()[:8]
        nb.cells.append(cell)
    return nb


def nb_to_py(nb) -> str:
    out = []
    for c in nb.cells:
        meta = {k: v for k, v in c.metadata.items() if k == "tags"}
        m = (" " + json.dumps(meta)) if meta else ""
        if c.cell_type == "markdown":
            out.append(f"# %% [markdown]{m}\n" + "\n".join(("# " + l) if l else "#" for l in c.source.splitlines()))
        else:
            out.append(f"# %%{m}\n" + c.source)
    return "\n\n".join(out) + "\n"


if __name__ == "__main__":
    cmd, a, b = sys.argv[1:4]
    if cmd == "to-nb":
        old = nbformat.read(b, as_version=4) if Path(b).exists() else None
        nb = py_to_nb(Path(a).read_text(), old)
        nbformat.validator.normalize(nb)
        Path(b).write_text(nbformat.writes(nb, version=4) + "\n")
    elif cmd == "to-py":
        Path(b).write_text(nb_to_py(nbformat.read(a, as_version=4)))
    else:
        sys.exit(__doc__)
