"""Save the wall times of the README's two commands, as measured by a run of .ci/run, for the front page.

    bash .ci/run 2>&1 | tee ci.log                      # on a fresh clone
    python tools/record_timings.py ci.log [--load-log load.log] [--nice 19]

Reads the lines `make book: N s` and `make test: N s` that .ci/run prints (each only after its command passed: the
script stops at the first failure), and saves results/bench/commands/
(timings.json + provenance.json). `--load-log` is a file of `HH:MM:SS <contents of /proc/loadavg>` lines sampled
during the run (the machine may be shared); its 1-minute load range is recorded beside the times.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import sys
from pathlib import Path

WHAT = {"make book": "creates .venv and installs (pip, from scratch), runs every chapter, renders and checks the book",
        "make test": "library == notebooks, nbdev_test of every notebook, the book again from scratch, pytest tests/"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log")
    ap.add_argument("--load-log")
    ap.add_argument("--nice", type=int, default=0, help="the niceness the run had (0: not niced)")
    ap.add_argument("--note", default="", help="what else the front page should say about this measurement")
    a = ap.parse_args(argv)
    text = Path(a.log).read_text(errors="replace")
    secs = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(make book|make test): (\d+) s$", text, re.M)}
    if "make book" not in secs: sys.exit(f"{a.log}: no 'make book: N s' line")
    if "make test" not in secs and not a.note:
        sys.exit(f"{a.log}: no 'make test: N s' line; say why with --note (it is shown on the front page)")
    load = None
    if a.load_log:
        l1 = [float(line.split()[1]) for line in Path(a.load_log).read_text().splitlines() if len(line.split()) > 1]
        load = {"min": min(l1), "max": max(l1), "mean": round(sum(l1) / len(l1), 2), "samples": len(l1)}
    how = ("a fresh clone, `bash .ci/run` (the two commands exactly, in `env -i HOME=... PATH=...`)"
           + (f", under `nice -n {a.nice}`" if a.nice else "")
           + (f"; 1-minute load average {load['min']:.1f}–{load['max']:.1f} on its {os.cpu_count()} cores during the run "
              f"(the run's own work included)" if load else "") + ".")
    from pmn_nb.core import provenance, save_results
    out = save_results("bench/commands", {"timings": {
        "date": datetime.date.today().isoformat(),
        "machine": f"{os.cpu_count()} CPU cores, {platform.system()} {platform.machine()}, Python {platform.python_version()}",
        "how": how, "load": load, "nice": a.nice,
        "note": a.note, "commands": [{"command": c, "seconds": secs.get(c), "what": WHAT[c]} for c in WHAT]}},
        provenance(data_source=f"the log of one .ci/run ({Path(a.log).name})", command="tools/record_timings.py"))
    print(f"saved {out}: " + ", ".join(f"{c} {s} s" for c, s in secs.items()) + (f"; note: {a.note}" if a.note else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
