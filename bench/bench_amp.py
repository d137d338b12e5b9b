"""bf16 autocast on the CPU and `pmn ablate --jobs`: is it faster, and is it the same answer?

    python bench/bench_amp.py              # both parts; saves results/bench/amp/
    python bench/bench_amp.py --no-grid    # only the per-step table
    python bench/bench_amp.py --learning   # only part 3; saves results/bench/amp_learning/

1. Per-step table: one Adam training step (forward, loss, backward, step) of each model at the `quick` and `paper` sizes,
   fp32 vs `torch.autocast("cpu", dtype=torch.bfloat16)`, one thread; medians of `--reps` steps after 3 warm-up steps.
2. Grid: the seven rows of Table 4 x 3 seeds on the synthetic `tiny` genome (5 epochs of 20 steps; a grid small enough to
   run twice here), trained once with `amp: off` and `--jobs 1`, and once with the default precision (`amp: auto`, bf16
   on a CPU with bf16 units) and `--jobs 2`, one thread per job. Reported: the wall-time ratio and, per row, the mean test
   auROC of each precision with its SD across seeds (ddof = 1) and the difference.

3. Where models learn: on the tiny genome every row stays near chance, so part 2 cannot show that bf16 changes nothing
   that matters. The multi-label CNN and the PMN (λ=1) of Table 4 on the synthetic genome `synth:table4`, 3 seeds, a fixed
   15 epochs of 100 steps (long enough to leave chance far behind), trained in fp32 and in bf16, two jobs each; per row
   the mean test auROC of each precision with its SD across seeds and the difference.

The load average is recorded before and after: on a shared 2-core machine other processes change the figures.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pmn_nb.core import provenance, save_results
from pmn_nb.model import ModelConfig, build_model, pmn_loss
from pmn_nb.train import amp_name, resolve_amp


def step_ms(cfg: ModelConfig, batch: int, amp: bool, reps: int) -> float:
    "Median milliseconds of one Adam step on random one-hot windows."
    torch.manual_seed(0)
    m = build_model(cfg)
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    x = torch.nn.functional.one_hot(torch.randint(0, 4, (batch, cfg.seq_len)), 4).float().transpose(1, 2).contiguous()
    y = (torch.rand(batch, cfg.n_labels) < 0.05).float()
    ts = []
    for i in range(reps + 3):
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss, _ = pmn_loss(m(x), y, 1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 3: ts.append(time.perf_counter() - t)
    return 1000 * statistics.median(ts)


def step_table(reps: int) -> pd.DataFrame:
    torch.set_num_threads(1)
    cases = [  # (size, kind, channels, n_labels, batch)
        ("quick", "pmn", (128, 64, 64), 86, 64), ("quick", "cnn", (128, 64, 64), 86, 64),
        ("quick", "pmn", (32, 32, 32), 78, 64), ("quick", "cnn", (32, 32, 32), 78, 64),
        ("quick", "cnn_single", (32, 32, 32), 24, 64),
        ("paper", "pmn", (512, 256, 128), 86, 32), ("paper", "cnn", (512, 256, 128), 86, 32),
    ]
    rows = []
    for size, kind, ch, n, batch in cases:
        cfg = ModelConfig(kind=kind, n_labels=n, conv_channels=ch, conv_widths=(9, 5, 3), d=ch[-1], dropout=0.2)
        r = max(3, reps // (4 if size == "paper" else 1))
        f, b = step_ms(cfg, batch, False, r), step_ms(cfg, batch, True, r)
        rows.append({"size": size, "model": kind, "conv_channels": "-".join(map(str, ch)), "n_labels": n, "batch": batch,
                     "fp32_ms": round(f, 1), "bf16_ms": round(b, 1), "speedup": round(f / b, 2)})
        print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def run_ablate(grid: dict, out: Path, jobs: int) -> float:
    g = out.with_suffix(".json")
    g.write_text(json.dumps(grid))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import sys; from pmn_nb.cli import main; sys.exit(main())", "ablate", "--grid", str(g), "--data", "synth:tiny", "--out", str(out),
                    "--jobs", str(jobs), "--threads", "1"], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def grid_part() -> tuple[pd.DataFrame, dict]:
    from pmn_nb.ablations import collect, default_grid, resolve_data, table4
    resolve_data("synth:tiny")  # build the store before timing
    base = default_grid("quick", seeds=[0, 1, 2], name="amp_check_tiny", valid_size=0, test_curve_size=0)
    base["train"].update(epochs=5, max_steps_per_epoch=20, train_eval_size=256, checkpoint_every=0)
    tmp = Path(tempfile.mkdtemp(prefix="bench_amp_"))
    out = {}
    try:
        for label, amp, jobs in (("fp32, --jobs 1", "off", 1), ("default precision, --jobs 2", "auto", 2)):
            g = json.loads(json.dumps(base))
            g["train"]["amp"] = amp
            d = tmp / amp
            secs = run_ablate(g, d, jobs)
            t4 = table4(collect(g, d)["per_tf"]).set_index("key")
            out[label] = {"seconds": secs, "amp": amp, "jobs": jobs, "t4": t4}
            print(f"{label}: {secs:.0f} s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    (a, fa), (b, fb) = out.items()
    prec = amp_name(resolve_amp("auto", torch.device("cpu")))
    tab = pd.DataFrame({"key": fa["t4"].index, "name": fa["t4"].name,
                        "fp32_auroc": fa["t4"].auroc_mean, "fp32_sd_seeds": fa["t4"].auroc_sd,
                        f"{prec}_auroc": fb["t4"].auroc_mean.loc[fa["t4"].index],
                        f"{prec}_sd_seeds": fb["t4"].auroc_sd.loc[fa["t4"].index]}).reset_index(drop=True)
    tab["diff"] = tab[f"{prec}_auroc"] - tab.fp32_auroc
    tab["max_sd"] = tab[["fp32_sd_seeds", f"{prec}_sd_seeds"]].max(axis=1)
    tab["within_sd"] = tab["diff"].abs() <= tab.max_sd
    summary = {"fp32_jobs1_seconds": fa["seconds"], "default_jobs2_seconds": fb["seconds"],
               "wall_ratio": fa["seconds"] / fb["seconds"], "default_precision": prec,
               "rows_within_sd": int(tab.within_sd.sum()), "rows": len(tab)}
    return tab, summary


def learning_part() -> tuple[pd.DataFrame, dict]:
    from pmn_nb.ablations import collect, default_grid, table4
    grid = default_grid("quick", seeds=[0, 1, 2], name="amp_check_table4", valid_size=0, test_curve_size=1024)
    grid["rows"] = [r for r in grid["rows"] if r["key"] in ("cnn_multi", "pmn_lam1")]
    grid["model"] = {"conv_channels": [32, 32, 32], "conv_widths": [9, 5, 3], "d": 32, "dropout": 0.2}  # as the Table 4 grids
    grid["train"].update(epochs=15, max_steps_per_epoch=100, train_eval_size=512, checkpoint_every=0)
    tmp = Path(tempfile.mkdtemp(prefix="bench_amp_learning_"))
    out = {}
    try:
        for amp in ("off", "auto"):
            g = json.loads(json.dumps(grid))
            g["train"]["amp"] = amp
            d = tmp / amp
            g_file = d.with_suffix(".json"); g_file.write_text(json.dumps(g))
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import sys; from pmn_nb.cli import main; sys.exit(main())", "ablate",
                            "--grid", str(g_file), "--data", "synth:table4", "--out", str(d), "--jobs", "2", "--threads", "1"],
                           check=True, stdout=subprocess.DEVNULL)
            out[amp] = {"seconds": time.perf_counter() - t0, "t4": table4(collect(g, d)["per_tf"]).set_index("key")}
            print(f"amp {amp}: {out[amp]['seconds']:.0f} s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    prec = amp_name(resolve_amp("auto", torch.device("cpu")))
    a, b = out["off"]["t4"], out["auto"]["t4"]
    tab = pd.DataFrame({"key": a.index, "name": a.name, "fp32_auroc": a.auroc_mean, "fp32_sd_seeds": a.auroc_sd,
                        f"{prec}_auroc": b.auroc_mean.loc[a.index], f"{prec}_sd_seeds": b.auroc_sd.loc[a.index]}).reset_index(drop=True)
    tab["diff"] = tab[f"{prec}_auroc"] - tab.fp32_auroc
    tab["max_sd"] = tab[["fp32_sd_seeds", f"{prec}_sd_seeds"]].max(axis=1)
    tab["within_sd"] = tab["diff"].abs() <= tab.max_sd
    return tab, {"fp32_seconds": out["off"]["seconds"], "default_seconds": out["auto"]["seconds"],
                 "default_precision": prec, "rows_within_sd": int(tab.within_sd.sum()), "rows": len(tab),
                 "schedule": "15 epochs x 100 steps of 64, 3 seeds, synth:table4, 2 jobs of 1 thread"}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=12)
    p.add_argument("--no-grid", action="store_true")
    p.add_argument("--no-save", action="store_true")
    p.add_argument("--learning", action="store_true", help="only part 3 (results/bench/amp_learning/)")
    a = p.parse_args()
    load0 = os.getloadavg()
    if a.learning:
        tab, summ = learning_part()
        print(tab.to_string(), "\n", summ, flush=True)
        summ.update(load_before=load0, load_after=os.getloadavg())
        if not a.no_save:
            print(save_results("bench/amp_learning", {"agreement": tab, "summary": summ},
                               provenance(command="python bench/bench_amp.py --learning",
                                          data_source="synthetic genome synth:table4 (ablations chapter)")))
        return
    tables, summary = {}, {}
    if not a.no_grid:
        tables["grid_agreement"], summary["grid"] = grid_part()
        print(tables["grid_agreement"].to_string(), "\n", summary["grid"], flush=True)
    tables["steps"] = step_table(a.reps)
    summary["load_before"], summary["load_after"] = load0, os.getloadavg()
    summary["cpu_bf16"] = prec = amp_name(resolve_amp("auto", torch.device("cpu")))
    if not a.no_save:
        print(save_results("bench/amp", {**tables, "summary": summary},
                           provenance(command="python bench/bench_amp.py", data_source="synthetic genome (tiny preset)")))


if __name__ == "__main__":
    main()
