"""Generate a synthetic genome (pmn_nb.synth) and save its statistics and costs under results/bench/synth/ (preset paper;
results/bench/synth_<preset>/ for another) for the chapter.

    nice python bench/bench_synth.py --preset paper    # hg19 layout, 86 TFs: minutes on 2 cores, 3.3 GB in bench/out/
    python bench/bench_synth.py --preset quick          # 10 Mb: seconds

The genome goes to bench/out/synth_<preset>/ (git-ignored) unless --out says otherwise; --delete removes it afterwards.
Prints generation time, peak memory and disk use, and the Table 3 statistics beside the paper's.
"""
import argparse
import os
import shutil
import subprocess
import time
from pathlib import Path

from pmn_nb.core import load_results, provenance, repo_root, save_results
from pmn_nb.formats import read_chrom_sizes
from pmn_nb.synth import PRESETS, generate, synth_report
from pmn_nb.windows import build_store, label_windows, split_summary


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=list(PRESETS), default="paper")
    p.add_argument("--out", default=None, help="output folder (default bench/out/synth_<preset>)")
    p.add_argument("--delete", action="store_true", help="delete the genome after measuring it")
    p.add_argument("--store", action="store_true", help="also build the window store with pmn_nb.windows and time it")
    p.add_argument("--report-only", action="store_true",
                   help="do not generate: recompute the statistics of the genome already in --out, keeping the saved timings")
    a = p.parse_args()
    cfg = PRESETS[a.preset]
    name = "bench/synth" if a.preset == "paper" else f"bench/synth_{a.preset}"  # under results/
    out = Path(a.out) if a.out else (repo_root() or Path(".")) / "bench" / "out" / f"synth_{a.preset}"
    if a.report_only:  # the genome is there: redo the statistics, keep the generation's measurements
        old = load_results(name)["run"]
        keep = {k: old[k] for k in ("wall_seconds", "du_bytes", "load_average", "store_seconds", "store_bytes") if k in old}
        wall = keep["wall_seconds"]
    else:
        t0 = time.time()
        generate(cfg, out)
        wall = time.time() - t0
        keep = {"wall_seconds": round(wall, 1), "load_average": list(os.getloadavg()),
                "du_bytes": int(subprocess.run(["du", "-sb", str(out)], capture_output=True, text=True).stdout.split()[0])}
    t1 = time.time()
    rep = synth_report(out)
    rep["run"].update(keep, report_seconds=round(time.time() - t1, 1))
    du = rep["run"]["du_bytes"]
    try:  # the windowing chapter's labels (and store), at this scale; its failure does not lose the run above
        t2 = time.time()
        lab = label_windows(out / "tfs.tsv", read_chrom_sizes(out / "chrom.sizes"))
        rep["windows_chapter"] = split_summary(lab)
        rep["run"]["windows_chapter_seconds"] = round(time.time() - t2, 1)
        rep["run"]["windows_chapter_report"] = lab.report
        print("pmn_nb.windows labels:\n" + rep["windows_chapter"].to_string(index=False))
        if a.store:
            t2 = time.time()
            build_store(out / "genome.fa", out / "tfs.tsv", out.parent / f"{out.name}_store",
                        data_source=f"synthetic genome, preset {a.preset}")
            rep["run"]["store_seconds"] = round(time.time() - t2, 1)
            rep["run"]["store_bytes"] = int(subprocess.run(["du", "-sb", str(out.parent / f"{out.name}_store")],
                                                           capture_output=True, text=True).stdout.split()[0])
    except Exception as e:  # noqa: BLE001 - reported, not hidden
        rep["run"]["windows_chapter_error"] = f"{type(e).__name__}: {e}"
        print("pmn_nb.windows failed:", rep["run"]["windows_chapter_error"])
    dest = save_results(name, rep, provenance(cfg, seed=cfg.seed, profile=a.preset, data_source=f"synthetic genome, preset {a.preset}"))
    print(rep["table3"].to_string(index=False))
    r = rep["run"]
    print(f"{r['n_bases']:,} bases in {wall:.0f} s ({r['n_bases'] / wall / 1e6:.1f} Mb/s), max RSS {r['max_rss_mb']:.0f} MB, "
          f"{du / 1e9:.2f} GB on disk; modules within {rep['modules']['within']:.3f} between {rep['modules']['between']:.3f}")
    print(f"saved {dest}")
    if a.delete: shutil.rmtree(out)


if __name__ == "__main__":
    main()
