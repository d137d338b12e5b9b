"""Throughput of `pmn predict` on this machine's CPU: windows per second for a quick-size and a paper-size PMN.

    python bench/bench_predict.py            # prints the table and saves results/bench/predict/

Scores windows of the real chr22 sample (data/) through `predict_fasta` (FASTA read, encoding, both strands, TSV writing),
with untrained weights (they score as fast as trained ones), at 1 and 2 torch threads. The machine is shared: the load
average before and after is recorded with the figures.
"""
import os
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from pmn_nb.core import data_path, provenance, save_results
from pmn_nb.model import ModelConfig, build_model, count_parameters, example_input, forward_flops, save_model
from pmn_nb.predict import load_predictor, predict_fasta
from pmn_nb.windows import CHR22_FASTA

REGION = ("chr22", 17_000_000)  # real sequence, few N
SIZES = {"quick": (78, 4_000), "paper": (86, 1_000)}  # profile: (outputs, windows to score)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"): return line.split(":", 1)[1].strip()
    except OSError: pass
    return platform.processor() or "unknown CPU"


def main():
    fasta = data_path(*CHR22_FASTA)
    tmp = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    load_before, rows = os.getloadavg()[0], []
    for profile, (n, windows) in SIZES.items():
        torch.manual_seed(0)
        cfg = ModelConfig.for_profile(n, profile)
        model = build_model(cfg).eval()
        save_model(model, tmp / profile)
        flop = forward_flops(model, example_input(cfg, 2)) / 2
        span = REGION[1] + 50 * (windows - 1) + 200
        (tmp / f"{profile}.bed").write_text(f"{REGION[0]}\t{REGION[1]}\t{span}\n")
        for threads in (1, 2):
            torch.set_num_threads(threads)
            pred = load_predictor(tmp / profile, names=[f"tf{i}" for i in range(n)], device="cpu")
            predict_fasta(pred, fasta, tmp / "warm.tsv", bed=tmp / f"{profile}.bed", show_progress=False, chunk=512)  # warm-up
            t0, l0 = time.perf_counter(), os.getloadavg()[0]
            s = predict_fasta(pred, fasta, tmp / "out.tsv", bed=tmp / f"{profile}.bed", show_progress=False)
            secs = time.perf_counter() - t0
            rows.append({"model": f"PMN, {profile} size", "profile": profile, "outputs": n, "params": count_parameters(model),
                         "mflop_per_window": 2 * flop / 1e6, "threads": threads, "windows": s["windows"], "seconds": round(secs, 2),
                         "windows_per_s": round(s["windows"] / secs, 1), "gflops": round(s["windows"] * 2 * flop / secs / 1e9, 2),
                         "load_at_start": round(l0, 2)})
            print(rows[-1], flush=True)
    t = pd.DataFrame(rows)
    summary = {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "torch": torch.__version__, "load_before": load_before,
               "load_after": os.getloadavg()[0], "region": f"{REGION[0]}:{REGION[1] + 1}-", "stride": 50, "both_strands": True,
               "note": "untrained weights; FASTA reading, encoding, both strands and TSV writing included"}
    save_results("bench/predict", {"throughput": t, "summary": summary},
                 provenance({"sizes": SIZES, "region": REGION}, data=[fasta], device="cpu",
                            data_source="real hg19 chr22 sample (data/)", command="python bench/bench_predict.py"))
    print(t.to_string(index=False))


if __name__ == "__main__":
    main()
