"""Training throughput on this machine: matmul GFLOP/s, conv-stack and full train-step GFLOP/s and sequences/s for every
model variant, data-loader throughput against what a step consumes, and the cost of a paper-scale epoch.

    python bench/bench_train.py --store STORE            # what the Training chapter renders (results/bench/train/)
    python bench/bench_train.py --store STORE --no-save  # print only

Timings are medians of `--reps` repeats; the machine's load average is recorded before and after, because on a shared
2-core machine other processes change the figures (and make 2 threads slower than 1). The figures are printed and saved
with `pmn_nb.core.save_results('bench/train', ...)`.
"""
import argparse
import math
import os
import statistics
import time

import numpy as np
import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from pmn_nb.core import PMNError, get_device, provenance, save_results
from pmn_nb.model import ModelConfig, build_model, pmn_loss
from pmn_nb.train import MODEL_VARIANTS, TRAIN_PROFILES, store_meta

PAPER_WINDOWS = {"train": 1_446_320, "valid": 331_884, "test": 306_297}  # §4.1 Data statistics
# GPU figures are estimates from FLOP counts, not measurements: dense bf16 tensor-core peak of an H100 SXM (NVIDIA's data
# sheet, without sparsity) and an assumed sustained fraction of it for small 1-d convolutions.
GPU = {"name": "H100 SXM (bf16 dense, data-sheet peak)", "peak_tflops": 989.0, "assumed_utilisation": 0.25}


def median_time(f, reps: int, warmup: int = 1) -> float:
    for _ in range(warmup): f()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def matmul_gflops(n: int, reps: int) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n ** 3 / median_time(lambda: torch.mm(a, b), reps) / 1e9


def batch(cfg: ModelConfig, b: int):
    x = torch.nn.functional.one_hot(torch.randint(0, 4, (b, cfg.seq_len)), 4).float().transpose(1, 2).contiguous()
    return x, (torch.rand(b, cfg.n_labels) < 0.05).float()


def step_flops(model, x, y, encoder_only=False) -> int:
    "FLOPs of one forward + backward (FlopCounterMode: matmuls and convolutions)."
    if hasattr(model, "member") and not encoder_only:
        # FlopCounterMode counts the backward of a grouped convolution as if it were dense (groups times too many FLOPs),
        # so the one-CNN-per-TF model is counted as n_labels copies of one member
        return model.n_labels * step_flops(model.member(0), x, y[:, :1])
    with FlopCounterMode(display=False) as fc:
        if encoder_only: model.encoder(x).sum().backward()
        else: pmn_loss(model(x), y, 1.0)[0].backward()
    model.zero_grad(set_to_none=True)
    return fc.get_total_flops()


MM_N = 2048


def bench_step(cfg: ModelConfig, b: int, reps: int, steps: int, encoder_only=False) -> dict:
    """Median seconds of `steps` Adam steps (forward, loss, backward, step) at batch b, FLOPs per sequence, and the ratio of
    the step's FLOP rate to torch.mm's, each repeat timing a 2048^2 matmul right before the steps (paired: the machine's
    load changes from minute to minute)."""
    torch.manual_seed(0)
    model = build_model(cfg).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = batch(cfg, b)
    ma, mb = torch.randn(MM_N, MM_N), torch.randn(MM_N, MM_N)

    def run():
        for _ in range(steps):
            if encoder_only: loss = model.encoder(x).sum()
            else: loss = pmn_loss(model(x), y, 1.0)[0]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    fl = step_flops(model, x, y, encoder_only)
    run(); torch.mm(ma, mb)  # warm-up
    t_step, ratio, mm_rate = [], [], []
    for _ in range(reps):
        t0 = time.perf_counter(); torch.mm(ma, mb); t_mm = time.perf_counter() - t0
        t0 = time.perf_counter(); run(); t = (time.perf_counter() - t0) / steps
        t_step.append(t)
        mm_rate.append(2 * MM_N ** 3 / t_mm)
        ratio.append((fl / t) / mm_rate[-1])
    t = statistics.median(t_step)
    return {"seq_per_s": b / t, "gflops": fl / t / 1e9, "mflop_per_seq": fl / b / 1e6, "step_ms": 1e3 * t,
            "matmul_gflops": statistics.median(mm_rate) / 1e9, "frac_of_matmul": statistics.median(ratio)}


def forward_flops_per_seq(cfg: ModelConfig) -> float:
    model = build_model(cfg).eval()
    x, _ = batch(cfg, 4)
    with torch.no_grad(), FlopCounterMode(display=False) as fc: model(x)
    return fc.get_total_flops() / 4


def bench_loader(store: str, b: int, workers: int, n_batches: int, reps: int) -> float:
    "Sequences per second the DataLoader delivers from the window store's training split (shuffled, as in training)."
    from pmn_nb.windows import WindowDataset
    from torch.utils.data import DataLoader
    ds = WindowDataset(store, "train")
    g = torch.Generator().manual_seed(0)

    def run():
        dl = DataLoader(ds, batch_size=b, shuffle=True, generator=g, num_workers=workers,
                        persistent_workers=False)
        it = iter(dl)
        next(it)  # worker start-up is paid once per epoch, not per batch: time from the first batch on
        t = time.perf_counter()
        k = 0
        for _ in range(n_batches):
            try: next(it)
            except StopIteration: break
            k += 1
        return k * b / (time.perf_counter() - t)
    return statistics.median(run() for _ in range(reps))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default=None, help="window store for the loader benchmark and the TF count")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", default="1,2", help="torch CPU thread counts to measure")
    ap.add_argument("--no-save", action="store_true")
    a = ap.parse_args(argv)
    n_tfs = len(store_meta(a.store)["tf_names"]) if a.store else 86
    window = int(store_meta(a.store)["window"]) if a.store else 200
    load0 = os.getloadavg()
    t_start = time.time()
    quick_b = TRAIN_PROFILES["quick"]["batch_size"]
    rows, mm = [], []
    for nt in [int(t) for t in a.threads.split(",")]:
        torch.set_num_threads(nt)
        g = matmul_gflops(MM_N, a.reps)
        mm.append({"threads": nt, "n": MM_N, "gflops": g})
        print(f"threads {nt}: matmul 2048^2 {g:.1f} GFLOP/s  (load {os.getloadavg()[0]:.2f})", flush=True)
        for profile, b, steps, variants in (("quick", quick_b, 3, list(MODEL_VARIANTS)), ("paper", 64, 1, ["cnn", "pmn"])):
            for v in variants:
                cfg = ModelConfig.for_profile(n_tfs, profile, seq_len=window, **MODEL_VARIANTS[v])
                bv, sv = (16, 1) if v == "cnn_single" else (b, steps)  # one CNN per TF: ~n_tfs times the work per window
                r = bench_step(cfg, bv, a.reps, sv)
                rows.append({"threads": nt, "profile": profile, "model": v, "part": "train step", "batch": bv, **r})
                print(f"  {profile:5s} {v:11s} train step  b={bv:3d} {r['seq_per_s']:8.0f} seq/s {r['gflops']:6.1f} GFLOP/s "
                      f"({r['frac_of_matmul']:.0%} of matmul) {r['mflop_per_seq']:.1f} MFLOP/seq", flush=True)
            cfg = ModelConfig.for_profile(n_tfs, profile, seq_len=window, kind="cnn")
            r = bench_step(cfg, b, a.reps, steps, encoder_only=True)
            rows.append({"threads": nt, "profile": profile, "model": "conv stack", "part": "encoder fwd+bwd", "batch": b, **r})
            print(f"  {profile:5s} conv stack  fwd+bwd     b={b:3d} {r['seq_per_s']:8.0f} seq/s {r['gflops']:6.1f} GFLOP/s "
                  f"({r['frac_of_matmul']:.0%} of matmul)", flush=True)
    steps_df = pd.DataFrame(rows)
    torch.set_num_threads(max(int(t) for t in a.threads.split(",")))

    loader = []
    if a.store:
        for workers in (0, 1, 2):
            s = bench_loader(a.store, quick_b, workers, n_batches=40, reps=3)
            loader.append({"workers": workers, "batch": quick_b, "seq_per_s": s})
            print(f"loader: {workers} workers, batch {quick_b}: {s:8.0f} seq/s", flush=True)
    loader_df = pd.DataFrame(loader)

    # paper-scale cost: one epoch = forward+backward over the training windows + forward over validation
    loader_rate = loader_df.seq_per_s[loader_df.workers == 0].iloc[0] if len(loader_df) else float("nan")
    paper_rows = steps_df[(steps_df.profile == "paper") & (steps_df.part == "train step")]
    est = []
    for v in MODEL_VARIANTS:
        cfg = ModelConfig.for_profile(86, "paper", **MODEL_VARIANTS[v])
        fwd = forward_flops_per_seq(cfg)
        x, y = batch(cfg, 4)
        train_fl = step_flops(build_model(cfg).train(), x, y) / 4
        epoch_fl = PAPER_WINDOWS["train"] * train_fl + PAPER_WINDOWS["valid"] * fwd
        own = paper_rows[paper_rows.model == v].gflops
        cpu = own.max() if len(own) else paper_rows.gflops.max()  # variants not timed at paper size: the best rate measured
        gpu = GPU["peak_tflops"] * 1e12 * GPU["assumed_utilisation"]
        gpu_s = epoch_fl / gpu
        est.append({"model": v, "fwd_mflop_per_seq": fwd / 1e6, "train_mflop_per_seq": train_fl / 1e6,
                    "epoch_tflop": epoch_fl / 1e12, "cpu_gflops_used": cpu, "cpu_rate_measured": bool(len(own)),
                    "cpu_hours_per_epoch": epoch_fl / (cpu * 1e9) / 3600, "gpu_minutes_per_epoch": gpu_s / 60,
                    "gpu_minutes_at_peak": epoch_fl / (GPU["peak_tflops"] * 1e12) / 60,
                    "loader_minutes_per_epoch_1proc": sum(PAPER_WINDOWS[k] for k in ("train", "valid")) / loader_rate / 60,
                    "loader_procs_to_keep_up": math.ceil(sum(PAPER_WINDOWS[k] for k in ("train", "valid")) / loader_rate / gpu_s)})
    est_df = pd.DataFrame(est)
    print(est_df.to_string(index=False))
    load1 = os.getloadavg()
    machine = {"cpu_count": os.cpu_count(), "load_before": load0, "load_after": load1, "seconds": time.time() - t_start,
               "device_note": "no GPU was lent to this task: GPU figures are FLOP-count estimates", "gpu_assumption": GPU,
               "paper_windows": PAPER_WINDOWS, "n_tfs_measured": n_tfs, "window": window, "reps": a.reps}
    print(f"load average before {load0}, after {load1}")
    if not a.no_save:
        prov = provenance({"reps": a.reps, "threads": a.threads, "store": os.path.basename(os.path.normpath(a.store or ""))},
                          data=[os.path.join(a.store, "meta.json")] if a.store else (), device=get_device("cpu"),
                          data_source="real chr22 sample store" if a.store else None, command="python bench/bench_train.py")
        d = save_results("bench/train", {"matmul": pd.DataFrame(mm), "steps": steps_df, "loader": loader_df,
                                         "paper_epoch": est_df, "machine": machine}, prov)
        print(f"saved {d}")


if __name__ == "__main__":
    main()
