"""Windowing at genome scale: `pmn windows` against the bedtools pipeline on the same 3.1 Gb input.

    python bench/bench_windows.py                    # generate the input once (bench/out/windows/), time both, save results/bench/windows/
    python bench/bench_windows.py --gb 0.3 --no-save # a smaller try-out, print only
    python bench/bench_windows.py --genome G.fa --peaks DIR   # your own input (a plain FASTA with its .fai)

The generated input imitates the real one at the paper's scale: 24 chromosomes with the hg19 lengths (3.1 Gb; `--gb` scales
them), random bases with soft-masked (lower-case) stretches and a 10-kb N run at each chromosome start, and 86 TFs whose
narrowPeak files (gzip, with summits and p-values, about 12 % of them below 1, so the p-value rule acts) bind shared
sites in clusters plus private sites, for about 2 M bound windows. It is written once to `bench/out/windows/` (ignored
by git) with a `.fai`, as a user's genome would have one (`samtools faidx`); `--index` also times building the `.fai`
with pyfaidx. Both tools get the same input in the page cache; our md5 of the genome (for meta.json) is computed in the
first build and remembered for the second, and both builds are reported.

Timed in the same run, each as a child process whose peak RSS is recorded:
* ours: `pmn windows --genome ... --peaks DIR --out ...` (labels, sequence store, meta with input md5s);
* bedtools: `awk` binding windows from every peak file, `bedtools makewindows | bedtools intersect -f`, label matrix
  assembly (pandas), `bedtools getfasta` of the labelled windows (`pmn_nb.windows.bedtools_labels`).
Both outputs are then compared: windows, labels and sequences must be identical. The machine's load average is recorded
before and after (the machine is shared; other processes slow both sides).
"""
import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "windows"
HG19 = {**{f"chr{i}": n for i, n in enumerate(
    [249250621, 243199373, 198022430, 191154276, 180915260, 171115067, 159138663, 146364022, 141213431, 135534747,
     135006516, 133851895, 115169878, 107349540, 102531392, 90354753, 81195210, 78077248, 59128983, 63025520, 48129895,
     51304566], 1)}, "chrX": 155270560, "chrY": 59373566}


def generate(folder: Path, gb: float, n_tfs: int = 86, sites_per_gb: int = 100_000, private_per_gb: int = 500, seed: int = 0):
    "Write genome.fa (+ .fai) and peaks/<TF>.narrowPeak.gz into `folder`."
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    scale = gb * 1e9 / sum(HG19.values())
    sizes = {c: int(n * scale) // 60 * 60 + 17 for c, n in HG19.items()}  # last line of each record is short
    lut = np.frombuffer(b"ACGTacgt", np.uint8)
    fai = []
    t0 = time.perf_counter()
    with open(folder / "genome.fa.tmp", "wb") as f:
        for c, n in sizes.items():
            f.write(f">{c} synthetic\n".encode())
            off = f.tell()
            codes = rng.integers(0, 4, n, dtype=np.uint8)
            soft = np.zeros(n, bool)  # soft-masked stretches, about 1/2 of the bases, in 5-kb blocks
            blocks = rng.random(n // 5000 + 1) < 0.5
            soft[:] = np.repeat(blocks, 5000)[:n]
            seq = lut[codes + 4 * soft]
            seq[:10_000] = ord("N")
            full = n // 60
            body = np.empty((full, 61), np.uint8)
            body[:, :60] = seq[:full * 60].reshape(full, 60)
            body[:, 60] = 10
            body.tofile(f)
            f.write(seq[full * 60:].tobytes() + b"\n")
            fai.append(f"{c}\t{n}\t{off}\t60\t61\n")
    os.replace(folder / "genome.fa.tmp", folder / "genome.fa")
    (folder / "genome.fa.fai").write_text("".join(fai))
    t_fa = time.perf_counter() - t0
    # peaks: shared sites (co-binding clusters) and private sites, away from the N run
    names = list(sizes)
    L = np.array([sizes[c] for c in names])
    n_sites = int(sites_per_gb * gb)
    sc = rng.choice(len(names), n_sites, p=L / L.sum())
    spos = 10_500 + (rng.random(n_sites) * (L[sc] - 11_000)).astype(np.int64)
    rates = np.exp(rng.uniform(np.log(0.005), np.log(0.3), n_tfs))
    pk = folder / "peaks"
    shutil.rmtree(pk, ignore_errors=True)
    pk.mkdir()
    total = 0
    for t in range(n_tfs):
        on = rng.random(n_sites) < rates[t]
        n_priv = int(private_per_gb * gb * rng.uniform(0.5, 3))
        pc = rng.choice(len(names), n_priv, p=L / L.sum())
        ppos = 10_500 + (rng.random(n_priv) * (L[pc] - 11_000)).astype(np.int64)
        c = np.concatenate([sc[on], pc])
        s = np.concatenate([spos[on] + rng.normal(0, 15, on.sum()).astype(np.int64), ppos])
        left, right = rng.integers(40, 250, c.size), rng.integers(40, 250, c.size)
        pv = np.round(rng.exponential(8, c.size), 3)  # about 12 % below 1
        df = pd.DataFrame({"chrom": np.asarray(names)[c], "start": s - left, "end": s + right, "name": ".",
                           "score": rng.integers(0, 1000, c.size), "strand": ".", "signal": np.round(rng.gamma(2, 10, c.size), 3),
                           "p": pv, "q": -1, "peak": left})
        with gzip.open(pk / f"TF{t:02d}.narrowPeak.gz", "wt", compresslevel=1) as f: df.to_csv(f, sep="\t", header=False, index=False)
        total += len(df)
    return {"genome_bp": sum(sizes.values()), "chromosomes": len(sizes), "tfs": n_tfs, "peaks": total,
            "seconds_fasta": round(t_fa, 1), "seconds_total": round(time.perf_counter() - t0, 1)}


def timed(cmd: list, env=None) -> dict:
    "Run `cmd` under a small python wrapper: wall seconds and the child's peak RSS (GB)."
    code = ("import resource, subprocess, sys, time, json; t = time.perf_counter(); "
            "r = subprocess.run(sys.argv[1:]); "
            "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
            "print(json.dumps({'rc': r.returncode, 'seconds': time.perf_counter() - t, "
            "'cpu_seconds': u.ru_utime + u.ru_stime, 'peak_rss_gb': u.ru_maxrss / 1e6}))")
    r = subprocess.run([sys.executable, "-c", code, *map(str, cmd)], capture_output=True, text=True, env=env)
    if r.returncode != 0 or not r.stdout.strip(): sys.exit(f"failed: {' '.join(map(str, cmd))}\n{r.stderr[-3000:]}")
    lines = r.stdout.strip().splitlines()
    res = json.loads(lines[-1])
    if res["rc"] != 0: sys.exit(f"failed (rc {res['rc']}): {' '.join(map(str, cmd))}\n{r.stderr[-3000:]}")
    res["stdout"], res["stderr"] = "\n".join(lines[:-1]), r.stderr
    return res


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gb", type=float, default=3.1, help="genome size to generate, Gb")
    ap.add_argument("--genome", help="use this plain FASTA (with .fai) instead of generating one")
    ap.add_argument("--peaks", help="folder of <TF>.narrowPeak[.gz] for --genome")
    ap.add_argument("--regenerate", action="store_true", help="generate the input again")
    ap.add_argument("--index", action="store_true", help="also time building the .fai with pyfaidx")
    ap.add_argument("--no-bedtools", action="store_true", help="time only pmn windows")
    ap.add_argument("--no-save", action="store_true", help="print only; do not write results/bench/windows/")
    a = ap.parse_args(argv)
    from pmn_nb.core import provenance, save_results
    from pmn_nb.windows import WindowParams, WindowStore

    gen = {}
    if a.genome:
        fa, peaks = Path(a.genome), Path(a.peaks)
    else:
        folder = OUT / f"genome_{a.gb:g}gb"
        fa, peaks = folder / "genome.fa", folder / "peaks"
        info = folder / "info.json"
        if a.regenerate or not info.exists():
            print(f"generating a {a.gb:g} Gb genome and 86 TFs' peaks in {folder} (load {load()}) ...", flush=True)
            gen = generate(folder, a.gb)
            info.write_text(json.dumps(gen))
        gen = json.loads(info.read_text())
        print(f"input: {gen}")
    rows = []
    pmn = Path(sys.executable).with_name("pmn")
    env = {**os.environ, "PMN_PROGRESS": "0", "PMN_CACHE": str(OUT / "cache")}
    if a.index:
        tmp_fa = OUT / "index_test.fa"
        if not tmp_fa.exists(): os.link(fa, tmp_fa)
        Path(str(tmp_fa) + ".fai").unlink(missing_ok=True)
        r = timed([sys.executable, "-c", f"import pyfaidx; pyfaidx.Faidx({str(tmp_fa)!r})"])
        rows.append({"step": "pyfaidx .fai index (once per genome)", "tool": "pyfaidx", "seconds": r["seconds"], "cpu_seconds": r["cpu_seconds"], "peak_rss_gb": r["peak_rss_gb"]})
    # make sure the FASTA is in the page cache for both sides alike
    subprocess.run(["cat", str(fa)], stdout=subprocess.DEVNULL, check=True)
    store = OUT / "store"
    shutil.rmtree(OUT / "cache" / "md5", ignore_errors=True)  # the first build hashes the genome (md5 for meta.json)
    summary = {"input": gen, "cpus": os.cpu_count(), "load_before": load()}
    for run in ("first", "again"):
        r = timed([pmn, "windows", "--genome", fa, "--peaks", peaks, "--out", store], env=env)
        st = WindowStore(store)
        rep = st.meta["report"]
        what = ("first build on this genome (md5 of the 3 Gb FASTA computed beside the work)" if run == "first"
                else "the same build again (md5 remembered in the cache)")
        rows.append({"step": f"pmn windows, {what}", "tool": "pmn_nb", "seconds": r["seconds"], "cpu_seconds": r["cpu_seconds"],
                     "peak_rss_gb": r["peak_rss_gb"]})
        summary[f"pmn_{run}"] = {"seconds": r["seconds"], "cpu_seconds": r["cpu_seconds"], "peak_rss_gb": r["peak_rss_gb"],
                                 "seconds_to_labels": rep["seconds_labels"], "load_before": load()}
        print(f"pmn windows ({run}): {r['seconds']:.1f} s wall, {r['cpu_seconds']:.1f} s CPU, peak RSS {r['peak_rss_gb']:.2f} GB; "
              f"{len(st):,} windows, {len(st.tf_names)} TFs; peaks read and labels done after {rep['seconds_labels']:.1f} s", flush=True)
    summary.update(windows=len(st), bound_windows=rep["bound_windows"], tfs=len(st.tf_names), peaks=rep["peaks"],
                   dropped_pvalue=rep["dropped_pvalue"], counts={k: st.meta["counts"][k]["windows"] for k in ("train", "valid", "test")})
    if not a.no_bedtools:
        if not shutil.which("bedtools"): sys.exit("bedtools not found: apt-get install bedtools, or pass --no-bedtools")
        work = OUT / "bedtools"
        shutil.rmtree(work, ignore_errors=True)
        code = ("import sys, json, time, numpy as np; from pathlib import Path; "
                "from pmn_nb.windows import bedtools_labels, peak_folder, WindowParams; t = time.perf_counter(); "
                f"r = bedtools_labels({str(fa)!r}, peak_folder({str(peaks)!r}), WindowParams(), workdir={str(work)!r}); "
                "total = time.perf_counter() - t; "
                f"np.save({str(work / 'y.npy')!r}, r['y']); np.save({str(work / 'seq.npy')!r}, r['seq']); "
                f"np.save({str(work / 'start.npy')!r}, r['start']); np.save({str(work / 'chrom.npy')!r}, r['chrom'].astype(str)); "
                "s = r['seconds']; s['total'] = total; print(json.dumps(s))")
        l1 = load()
        r = timed([sys.executable, "-c", code], env=env)
        parts = json.loads(r["stdout"].strip().splitlines()[-1])
        rows.append({"step": "bedtools pipeline: awk binding windows, makewindows | intersect -f, label matrix, getfasta",
                     "tool": "bedtools 2.30", "seconds": r["seconds"], "cpu_seconds": r["cpu_seconds"], "peak_rss_gb": r["peak_rss_gb"]})
        for k, v in parts.items():
            if k != "total": rows.append({"step": f"  of which {k}", "tool": "pandas" if k == "labels_python" else "bedtools 2.30",
                                          "seconds": v, "cpu_seconds": None, "peak_rss_gb": None})
        print(f"bedtools pipeline: {r['seconds']:.1f} s wall, {r['cpu_seconds']:.1f} s CPU, peak RSS {r['peak_rss_gb']:.2f} GB "
              f"(load before {l1})", flush=True)
        # the same windows, labels and sequences?
        same = {}
        y_ref = np.load(work / "y.npy", mmap_mode="r")
        ref_key = pd.MultiIndex.from_arrays([np.load(work / "chrom.npy"), np.load(work / "start.npy")])
        idx = pd.concat([st.index(s) for s in ("train", "valid", "test")])  # ours: grouped by split, genome order inside
        our_key = pd.MultiIndex.from_arrays([idx.chrom.to_numpy(), idx.start.to_numpy()])
        perm = ref_key.get_indexer(our_key)
        same["windows"] = bool(len(ref_key) == len(our_key) and ref_key.is_unique and (perm >= 0).all())
        if same["windows"]:
            y_ours = np.concatenate([np.asarray(st.labels(s)) for s in ("train", "valid", "test")])
            same["labels"] = bool(np.array_equal(y_ours, np.asarray(y_ref)[perm]))
            seq_ref = np.load(work / "seq.npy", mmap_mode="r")
            same["sequences"] = bool(all(np.array_equal(np.asarray(st.seq(s)), np.asarray(seq_ref[perm[o:o + n]]))
                                         for s, o, n in _offsets(st)))
        print(f"identical: {same}")
        summary["bedtools"] = {"seconds": r["seconds"], "cpu_seconds": r["cpu_seconds"], "peak_rss_gb": r["peak_rss_gb"],
                               "parts": parts, "load_before": l1}
        summary["identical"] = same
        summary["speedup_first"] = round(r["seconds"] / summary["pmn_first"]["seconds"], 1)
        summary["speedup_again"] = round(r["seconds"] / summary["pmn_again"]["seconds"], 1)
        summary["speedup_cpu_first"] = round(r["cpu_seconds"] / summary["pmn_first"]["cpu_seconds"], 1)
    summary["load_after"] = load()
    f, g = summary["pmn_first"], summary["pmn_again"]
    note = (f"{gen.get('genome_bp', 0) / 1e9:.2f} Gb genome, {summary['tfs']} TFs, {summary['peaks']:,} peaks -> "
            f"{summary['windows']:,} windows. pmn windows: {f['seconds']:.0f} s (first build, hashing the genome; "
            f"{f['cpu_seconds']:.0f} s CPU), {g['seconds']:.0f} s again; peak RSS {max(f['peak_rss_gb'], g['peak_rss_gb']):.1f} GB")
    if "bedtools" in summary:
        b = summary["bedtools"]
        note += (f". bedtools pipeline: {b['seconds']:.0f} s ({b['cpu_seconds']:.0f} s CPU, {b['peak_rss_gb']:.1f} GB): "
                 f"{summary['speedup_first']:.1f}x (first) / {summary['speedup_again']:.1f}x (again) faster in wall time, "
                 f"{summary['speedup_cpu_first']:.1f}x in CPU time; identical outputs: {all(summary['identical'].values())}")
    note += (f". {os.cpu_count()} CPUs shared with other work: load average {summary['load_before'].split()[0]} before, "
             f"{summary['load_after'].split()[0]} after.")
    summary["note"] = note
    print(note)
    table = pd.DataFrame(rows)
    for c in ("seconds", "cpu_seconds"): table[c] = table[c].astype(float).round(1)
    table["peak_rss_gb"] = table["peak_rss_gb"].astype(float).round(2)
    print(table.to_string(index=False))
    if not a.no_save:
        d = save_results("bench/windows", {"bench": table, "summary": summary},
                         provenance(WindowParams(), data_source="generated genome-scale input (bench/bench_windows.py)"))
        print(f"saved {d}")


def _offsets(st):
    o = 0
    for s in ("train", "valid", "test"):
        n = st.meta["counts"][s]["windows"]
        yield s, o, n
        o += n


if __name__ == "__main__":
    main()
