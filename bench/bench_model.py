"""Benchmarks for the model chapter (nbs/30_model.ipynb): where a PMN training step spends its time, and what the models cost.

    python bench/bench_model.py                      # everything (about 30-60 min on 2 shared CPU cores)
    python bench/bench_model.py --parts costs head   # some parts only; the others keep their saved results
    python bench/bench_model.py --quick              # a smoke run with tiny sizes (results are not saved)

Parts (results under results/bench/model/, with provenance; the chapter renders them, it never runs this script):
  costs     parameters and forward FLOPs per sequence of every variant, `paper` and `quick` sizes, 86 TFs
  step      one Adam training step (batch 512, 200 bp, 86 TFs, paper-size encoder): multi-label CNN vs PMN, both
            "before" (stock nn.MaxPool1d/nn.Dropout encoder and a literal PMN head: nn.LSTMCell per hop, pairwise cosine
            by broadcasting, prototypes re-normalised every hop) and "after" (pmn_nb.model as it is)
  head      the same step restricted to what follows the encoder (x̂ fixed): linear head vs literal vs fast PMN head
  profile   torch.profiler: self CPU time per operator of one step for the CNN and the PMN before/after, 1 and 2 threads
  ensemble  86 single-label CNNs: SingleLabelCNNs (default: members one by one over shared weights on CPU; and forced
            grouped convolutions) vs torch.func.vmap vs a Python loop over 86 separate models

The OpenMP wait policy is read when torch starts, so it is set from outside:
    OMP_WAIT_POLICY=PASSIVE python bench/bench_model.py --parts step --threads 2   # adds rows, keeps the others

Timings are medians over interleaved rounds (every model once per round, so a change of machine load hits all alike);
ratios are medians of per-round ratios. The 1-minute load average is recorded with every measurement.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from pmn_nb.core import PMNError, load_results, provenance, results_dir, save_results
from pmn_nb.model import (PMN, CNNEncoder, CombinationLSTM, ModelConfig, ModelOutput, MultiLabelCNN, build_model,
                          count_parameters, example_input, forward_flops, pmn_loss)

NAME = "bench/model"


def load1() -> float:
    return float(open("/proc/loadavg").read().split()[0]) if os.path.exists("/proc/loadavg") else float("nan")


def random_batch(B, n, L=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(B, 4, L)
    x[torch.arange(B)[:, None], torch.randint(0, 4, (B, L), generator=g), torch.arange(L)] = 1
    return x, (torch.rand(B, n, generator=g) < 0.1).float()


# ---------------------------------------------------------------- the "before" models
class StockEncoder(nn.Module):
    "The paper encoder as first written: conv -> ReLU -> nn.MaxPool1d -> nn.Dropout per layer, global max."
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        layers, c_in = [], cfg.in_channels
        for i, (c, w) in enumerate(zip(cfg.conv_channels, cfg.conv_widths)):
            layers += [nn.Conv1d(c_in, c, w), nn.ReLU()]
            if i < len(cfg.conv_channels) - 1: layers.append(nn.MaxPool1d(cfg.pool_size))
            layers.append(nn.Dropout(cfg.dropout))
            c_in = c
        self.layers = nn.Sequential(*layers)

    def forward(self, x): return self.layers(x).amax(-1)


class LiteralCombinationLSTM(CombinationLSTM):
    "Eqs. 3-7 written literally: nn.LSTMCell on [x̂; r] every hop, pairwise cosine by broadcasting (B, n, d)."
    def forward(self, x_hat, P):
        B = x_hat.shape[0]
        h = x_hat.new_zeros(B, self.d); c = torch.zeros_like(h); r = P.mean(0).expand(B, -1)
        ws = []
        for k in range(1, self.hops + 1):
            h_hat, c = self.cell(torch.cat([x_hat, r], 1), (h, c))
            h = h_hat + x_hat
            w = torch.sigmoid(self.eps * F.cosine_similarity(h_hat[:, None, :], P[None], dim=-1))
            r = w @ P
            ws.append(w)
        return h, r, w, torch.stack(ws, 1)


def before_models(n):
    cfg = ModelConfig.paper(n)
    cnn = MultiLabelCNN(StockEncoder(cfg), n, cfg.d)
    pmn = PMN(StockEncoder(cfg), n, cfg.d, cfg.hops, cfg.eps)
    pmn.lstm = LiteralCombinationLSTM(cfg.d, cfg.hops, cfg.eps)
    return cnn, pmn


# ---------------------------------------------------------------- timing helpers
def train_step(model, x, y, lam=1.0):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    def step():
        loss, _ = pmn_loss(model(x), y, lam)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def interleaved(steps: dict, rounds: int, warmup: int = 1, tag: dict | None = None):
    "Time every step function once per round, round-robin; rows of (round, name, seconds, load1)."
    for s in steps.values():
        for _ in range(warmup): s()
    rows = []
    for r in range(rounds):
        for name, s in steps.items():
            l = load1()
            c, t = time.process_time(), time.perf_counter()
            s()
            dt, dc = time.perf_counter() - t, time.process_time() - c
            rows.append({**(tag or {}), "round": r, "model": name, "seconds": dt, "cpu_seconds": dc, "load1": l})
            print(f"  {tag or ''} round {r} {name:14s} {dt:8.3f} s wall {dc:8.3f} s cpu  (load {l})", flush=True)
    return rows


def medians(df, by=("model",)):
    return df.groupby(list(by))["seconds"].median()


def paired_ratio(df, num, den, keys=("round",), col="seconds"):
    a = df[df.model == num].set_index(list(keys))[col]
    b = df[df.model == den].set_index(list(keys))[col]
    return float((a / b).median())


# ---------------------------------------------------------------- parts
def part_costs(n=86):
    rows = []
    for profile in ("paper", "quick"):
        base = ModelConfig.paper(n) if profile == "paper" else ModelConfig.quick(n)
        variants = {
            "CNN (single-label)": dict(kind="cnn_single"),
            "CNN (multi-label)": dict(kind="cnn"),
            "PMN, no LSTM": dict(use_lstm=False),
            "PMN, softmax att": dict(attention="softmax"),
            "PMN, sigmoid att": dict(),
        }
        for name, kw in variants.items():
            cfg = ModelConfig(**{**base.__dict__, **kw})
            torch.manual_seed(0)
            m = build_model(cfg).eval()
            rows.append({"profile": profile, "variant": name, "params": count_parameters(m),
                         "flops_per_seq": forward_flops(m, example_input(cfg))})
            del m
    df = pd.DataFrame(rows)
    print(df.to_string(index=False))
    return {"costs": df}


def part_step(n=86, B=512, rounds=9, threads=(1, 2), old=None):
    "Full training steps; rows are tagged with OMP_WAIT_POLICY (set it in the environment: it is read when torch starts)."
    policy = os.environ.get("OMP_WAIT_POLICY", "").upper() or "default"
    x, y = random_batch(B, n)
    rows = []
    for t in threads:
        torch.set_num_threads(t)
        torch.manual_seed(0)
        cnn0, pmn0 = before_models(n)
        models = {"cnn_before": cnn0, "pmn_before": pmn0,
                  "cnn": build_model(ModelConfig.paper(n, kind="cnn")), "pmn": build_model(ModelConfig.paper(n))}
        steps = {k: train_step(m.train(), x, y) for k, m in models.items()}
        rows += interleaved(steps, rounds, tag={"threads": t, "omp_wait_policy": policy})
    df = pd.DataFrame(rows)
    if old is not None and len(old):  # keep earlier runs with other (threads, policy) settings
        old = old.assign(omp_wait_policy=old.get("omp_wait_policy", pd.Series("default", index=old.index)).fillna("default"))
        done = set(zip(df.threads, df.omp_wait_policy))
        df = pd.concat([old[[(t, p) not in done for t, p in zip(old.threads, old.omp_wait_policy)]], df], ignore_index=True)
    summ = {}
    for (t, p), d in df.groupby(["threads", "omp_wait_policy"]):
        med = medians(d)
        summ[f"threads_{t}" + ("" if p == "default" else f"_{p.lower()}")] = {
            "threads": int(t), "omp_wait_policy": p,
            "median_s": med.round(4).to_dict(),
            "ratio_before": paired_ratio(d, "pmn_before", "cnn_before"),
            "ratio_after": paired_ratio(d, "pmn", "cnn"),
            "cpu_ratio_before": paired_ratio(d, "pmn_before", "cnn_before", col="cpu_seconds"),
            "cpu_ratio_after": paired_ratio(d, "pmn", "cnn", col="cpu_seconds"),
            "encoder_speedup": paired_ratio(d, "cnn_before", "cnn"),
            "rounds": int(d["round"].nunique()),
            "load1_median": float(d.load1.median()),
        }
    print(json.dumps(summ, indent=1))
    return {"step_times": df}, {"step": summ}


class _Head(nn.Module):
    def __init__(self, kind, n, d=128, K=5):
        super().__init__()
        self.kind = kind
        if kind == "linear": self.out = nn.Linear(d, n); return
        self.pmn = PMN(nn.Identity(), n, d, K)
        if kind == "literal": self.pmn.lstm = LiteralCombinationLSTM(d, K)

    def forward(self, x_hat):
        return ModelOutput(self.out(x_hat)) if self.kind == "linear" else self.pmn(x_hat)


def part_head(n=86, B=512, rounds=30, threads=(2, 1)):
    torch.manual_seed(0)
    x_hat0, y = torch.randn(B, 128).relu(), (torch.rand(B, n) < 0.1).float()
    rows = []
    for t in threads:
        torch.set_num_threads(t)
        heads = {k: _Head(k, n) for k in ("linear", "literal", "fast")}
        def mk(h):
            opt = torch.optim.Adam(h.parameters())
            def step():
                x_hat = x_hat0.clone().requires_grad_()  # the encoder's output, as in a real step
                loss, _ = pmn_loss(h(x_hat), y)
                opt.zero_grad(); loss.backward(); opt.step()
            return step
        rows += interleaved({k: mk(h) for k, h in heads.items()}, rounds, warmup=2, tag={"threads": t})
    df = pd.DataFrame(rows)
    summ = {f"threads_{t}": (d.groupby("model")["seconds"].median() * 1e3).round(3).to_dict() for t, d in df.groupby("threads")}
    print(json.dumps(summ, indent=1))
    return {"head_times": df}, {"head_ms": summ}


def part_profile(n=86, B=512, threads=(1, 2), reps=2):
    "Self CPU time per operator of one step (mean of `reps`), for the CNN and both PMNs; the ops where they differ most."
    from torch.profiler import profile
    x, y = random_batch(B, n)
    rows = []
    for t in threads:
        torch.set_num_threads(t)
        torch.manual_seed(0)
        cnn0, pmn0 = before_models(n)
        models = {"cnn_before": cnn0, "pmn_before": pmn0,
                  "cnn": build_model(ModelConfig.paper(n, kind="cnn")), "pmn": build_model(ModelConfig.paper(n))}
        per = {}
        for name, m in models.items():
            step = train_step(m.train(), x, y)
            step()
            tot = {}
            for _ in range(reps):
                with profile() as prof: step()
                for e in prof.key_averages():
                    c, ms = tot.get(e.key, (0, 0.0))
                    tot[e.key] = (c + e.count / reps, ms + e.self_cpu_time_total / 1e3 / reps)
            per[name] = tot
        ops = set().union(*per.values())
        df = pd.DataFrame([{"threads": t, "op": op, **{f"{k}_ms": per[k].get(op, (0, 0.0))[1] for k in per},
                            **{f"{k}_calls": per[k].get(op, (0, 0.0))[0] for k in per}} for op in ops])
        df["before_minus_cnn_ms"] = df.pmn_before_ms - df.cnn_before_ms
        df["after_minus_cnn_ms"] = df.pmn_ms - df.cnn_ms
        keep = set(df.nlargest(8, "before_minus_cnn_ms").op) | set(df.nlargest(8, "after_minus_cnn_ms").op) | set(df.nlargest(4, "cnn_ms").op)
        total = {"threads": t, "op": "TOTAL", **{c: df[c].sum() for c in df.columns if c.endswith("_ms") or c.endswith("_calls")}}
        rows.append(pd.concat([df[df.op.isin(keep)].sort_values("before_minus_cnn_ms", ascending=False), pd.DataFrame([total])]))
        print(rows[-1].round(1).to_string(index=False), flush=True)
    return {"profile_ops": pd.concat(rows).round(3)}


def _loop_step(members, x, y):
    opt = torch.optim.Adam([p for m in members for p in m.parameters()], lr=1e-3)
    B = x.shape[0]
    def step():
        opt.zero_grad(set_to_none=True)
        for i, m in enumerate(members):  # each model's own loss and backward, as 86 separate trainings would do
            F.binary_cross_entropy_with_logits(m(x).logits[:, 0], y[:, i], reduction="sum").div(B).backward()
        opt.step()
    return step


def _vmap_step(members, x, y):
    from torch.func import functional_call, stack_module_state, vmap
    params, buffers = stack_module_state(members)
    params = {k: nn.Parameter(v) for k, v in params.items()}
    base = copy.deepcopy(members[0]).to("meta")
    f = vmap(lambda p, b, x: functional_call(base, (p, b), (x,)).logits[:, 0], in_dims=(0, 0, None), randomness="different")
    opt = torch.optim.Adam(params.values(), lr=1e-3)
    def step():
        loss, _ = pmn_loss(ModelOutput(f(params, buffers, x).T), y)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    return step


def part_ensemble(n=86, grid=(("tiny", 64), ("quick", 64), ("paper", 16)), rounds=3, threads=1):
    torch.set_num_threads(threads)
    sizes = {"quick": ((128, 64, 64), 64), "tiny": ((16, 16, 16), 16), "paper": ((512, 256, 128), 128)}
    rows, summ = [], {}
    for size, B in grid:
        ch, d = sizes[size]
        cfg = ModelConfig(kind="cnn_single", n_labels=n, conv_channels=ch, d=d, dropout=0.2)
        x, y = random_batch(B, n)
        torch.manual_seed(0)
        ens = build_model(cfg).train()  # default member_loop=None: members one by one on CPU
        grouped = copy.deepcopy(ens)
        grouped.encoder.member_loop = False  # all members in grouped convolutions (the GPU path)
        members = [ens.member(i).train() for i in range(n)]
        steps = {"ensemble": train_step(ens, x, y), "grouped": train_step(grouped, x, y),
                 "vmap": _vmap_step(members, x, y), "loop": _loop_step(members, x, y)}
        tag = {"members": size, "channels": "-".join(map(str, ch)), "batch": B, "threads": threads}
        d_ = pd.DataFrame(interleaved(steps, rounds, tag=tag))
        rows.append(d_)
        key = f"{size}_b{B}"
        summ[key] = {"median_s": medians(d_).round(4).to_dict(),
                     "loop_over_ensemble": paired_ratio(d_, "loop", "ensemble"),
                     "loop_over_grouped": paired_ratio(d_, "loop", "grouped"),
                     "loop_over_vmap": paired_ratio(d_, "loop", "vmap"), **tag}
        print(json.dumps(summ[key], indent=1))
        del ens, grouped, members, steps
    return {"ensemble_times": pd.concat(rows)}, {"ensemble": summ}


def machine():
    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "torch_threads_default": torch.get_num_threads()}
    try:
        info["cpu"] = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        info["cpu"] = platform.processor()
    return info


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", default=["costs", "head", "step", "profile", "ensemble"],
                    choices=["costs", "head", "step", "profile", "ensemble"])
    ap.add_argument("--rounds", type=int, default=9, help="rounds of the full-step benchmark")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts for the full-step benchmark")
    ap.add_argument("--ensemble-threads", type=int, default=1, help="torch threads for the ensemble benchmark")
    ap.add_argument("--ensemble-grid", nargs="+", default=["tiny:64", "quick:64", "paper:16"],
                    help="member size (tiny|quick|paper):batch pairs; mind memory, the grouped model's activations are n times wider")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, nothing saved")
    a = ap.parse_args(argv)
    if a.quick:
        part_costs(n=4); part_head(n=4, B=16, rounds=2, threads=(1,))
        part_ensemble(n=3, grid=(("tiny", 8),), rounds=1, threads=1)
        return 0
    try:
        old = load_results(NAME)
    except PMNError:
        old = {}
    tables = {k: v for k, v in old.items() if k not in ("provenance", "summary")}
    summary = old.get("summary", {})
    t0, l0 = time.time(), os.popen("uptime").read().strip()
    summary.setdefault("runs", {})
    for part in a.parts:
        print(f"== {part}", flush=True)
        start = time.time()
        if part == "costs": out, s = part_costs(), {}
        elif part == "head": out, s = part_head()
        elif part == "step": out, s = part_step(rounds=a.rounds, threads=tuple(a.threads), old=tables.get("step_times"))
        elif part == "profile":
            out, s = part_profile(), {}
            tables.pop("profile_top_ops", None)
        else: out, s = part_ensemble(grid=[(g.split(":")[0], int(g.split(":")[1])) for g in a.ensemble_grid],
                                     threads=a.ensemble_threads)
        tables.update(out); summary.update(s)
        summary["runs"][part] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start)),
                                 "minutes": round((time.time() - start) / 60, 2), "uptime_before": l0,
                                 "uptime_after": os.popen("uptime").read().strip()}
        l0 = summary["runs"][part]["uptime_after"]
        summary["machine"] = machine()
        save_results(NAME, {**tables, "summary": summary},
                     provenance(config={"parts": a.parts, "rounds": a.rounds, "threads": a.threads}, device="cpu",
                                profile="paper", data_source="random one-hot DNA and labels (timing only)"))
    print(f"saved {results_dir(create=False) / NAME} after {(time.time() - t0) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
