"""Give notebook cells the Jupyter Book tags that match their nbdev directives.

Jupyter Book ignores nbdev's `#|` directives, so each directive gets its Jupyter Book equivalent as a cell tag:

    #| default_exp / #| hide        -> remove-cell      (not shown in the book)
    #| echo: false                  -> remove-input     (output shown, code hidden)
    #| eval: false / slow / notest  -> skip-execution   (not run by the book; `nbdev_test --flags slow` still runs slow cells)

    python tools/nbtags.py [NOTEBOOK ...]   # default: nbs/*.ipynb; rewrites only notebooks whose tags change
    python tools/nbtags.py --check          # exit 1 if any notebook lacks its tags (CI)

Tags set by hand that are not in this table are kept.
"""
import json, re, sys
from pathlib import Path

MANAGED = {"remove-cell", "remove-input", "skip-execution"}
_DIRECTIVE = re.compile(r"^\s*#\|\s*(.+?)\s*$")


def wanted_tags(source: str) -> set:
    tags = set()
    for line in source.splitlines():
        m = _DIRECTIVE.match(line)
        if not m:
            if line.strip(): break  # directives sit at the top of a cell
            continue
        d = m[1].replace(" ", "").lower()
        if d.startswith("default_exp") or d == "hide": tags.add("remove-cell")
        elif d == "echo:false": tags.add("remove-input")
        elif d in ("eval:false", "slow", "notest"): tags.add("skip-execution")
    return tags


def retag(path: Path, write: bool = True) -> bool:
    "Set the managed tags of every code cell of `path`; return True if anything changed."
    text = path.read_text(encoding="utf-8")
    nb = json.loads(text)
    changed = False
    for cell in nb["cells"]:
        if cell["cell_type"] != "code": continue
        src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        old = cell.get("metadata", {}).get("tags", [])
        new = [t for t in old if t not in MANAGED] + sorted(wanted_tags(src))
        if new != old:
            changed = True
            if new: cell.setdefault("metadata", {})["tags"] = new
            else: cell["metadata"].pop("tags", None)
    if changed and write:
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return changed


if __name__ == "__main__":
    args = sys.argv[1:]
    check = "--check" in args
    files = [Path(a) for a in args if a != "--check"] or sorted(Path("nbs").glob("*.ipynb"))
    stale = [f for f in files if retag(f, write=not check)]
    for f in stale: print(f"{'needs tags' if check else 'tagged'}: {f}")
    sys.exit(1 if (check and stale) else 0)
