"""The first thing a GPU owner runs: do the code paths written for CUDA work on this GPU, and how fast are they?

    python bench/gpu_check.py                          # on the GPU, about 8 minutes: results/bench/gpu/<device-name>.json
    python bench/gpu_check.py --device cpu --tiny      # the same checks, tiny sizes, on the CPU in under a minute (pytest)

Checks and figures, each recorded in the JSON file (`passed` is true when every check passed):

  train_steps  one Adam step of the paper-size PMN, multi-label CNN and 86 single-label CNNs (batch 512, 200 bp, 86 TFs),
               in fp32 and under bf16 autocast: sequences/s, peak GPU memory, achieved TFLOP/s and the fraction of the
               GPU's dense bf16 peak (a table of data-sheet peaks; unknown GPUs get none)
  ensemble     the grouped single-label ensemble (one grouped convolution for all members) equals the member loop
               (`CNNEncoder.member_loop`) numerically: logits and every gradient, fp32 with TF32 off; and the step time of both
  fit          `pmn_nb.train.fit` on the synthetic `tiny` genome (chapter 20) with bf16 AMP: the test auROC it reaches
               must be at least KNOWN_AUROC (what the same fit reaches on a CPU in fp32) minus AUROC_TOL
  ddp          `torchrun --nproc_per_node=1` runs a worker that joins a process group (NCCL on CUDA, gloo on CPU), all-reduces,
               checks that DistributedDataParallel steps equal plain steps, and runs the same fit, whose auROC must match
  predict      `pmn predict` throughput (`predict_fasta` on the real chr22 sample, both strands): windows/s

`pmn reproduce --profile paper --dry-run` (and the reproduction chapter) read the train-step figures of a CUDA result file
instead of the assumed fraction of peak. Nothing here needs the network.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

torch = None  # imported by main() once the arguments are checked (a refusal should not wait for torch to load)

KNOWN_AUROC = 0.585  # test auROC of the fit below on this project's CPU, fp32, seed 0 (bf16 autocast there: 0.620); chance is 0.5
AUROC_TOL = 0.05  # allowed shortfall: bf16 rounding and other kernels change the trajectory of so small a fit
DDP_TOL = 0.02  # the torchrun fit vs the single-process fit (same seed, same data; AMP kernels may differ run to run)
BF16_PEAK_TFLOPS = {  # dense bf16 tensor-core peak from the data sheets (no sparsity); matched against the device name
    "H200": 989.0, "H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 756.0,
    "GH200": 989.0, "B200": 2250.0, "A100": 312.0, "A800": 312.0, "L40S": 362.0, "L40": 181.0, "L4": 121.0, "A10G": 70.0,
    "A10": 125.0, "A30": 165.0, "RTX 4090": 165.0, "RTX 3090": 71.0, "RTX A6000": 155.0,
}


def device_info(dev: torch.device) -> dict:
    "Name, type, memory and the bf16 peak of the device."
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        name = p.name
        peak = next((v for k, v in BF16_PEAK_TFLOPS.items() if k.lower() in name.lower()), None)
        return {"name": name, "type": "cuda", "capability": f"{p.major}.{p.minor}", "memory_gb": p.total_memory / 1e9,
                "bf16_supported": torch.cuda.is_bf16_supported(), "bf16_peak_tflops": peak, "count": torch.cuda.device_count(),
                "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
    name = platform.processor() or "cpu"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"): name = line.split(":", 1)[1].strip(); break
    return {"name": name, "type": dev.type, "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
            "bf16_supported": True, "bf16_peak_tflops": None}


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower() or "device"


def sync(dev):
    if dev.type == "cuda": torch.cuda.synchronize(dev)


def sizes(tiny: bool) -> dict:
    "Model sizes, batches and repetitions: the paper's, or tiny ones for a CPU smoke run."
    if tiny: return {"n": 8, "batch": 32, "batch_single": 16, "steps": 2, "warmup": 1, "members": 8, "predict_windows": 600}
    return {"n": 86, "batch": 512, "batch_single": 512, "steps": 10, "warmup": 3, "members": 86, "predict_windows": 40_000}


def model_cfg(kind: str, tiny: bool, n: int):
    from pmn_nb.model import ModelConfig
    kw = {"pmn": {}, "cnn": {"kind": "cnn"}, "cnn_single": {"kind": "cnn_single"}}[kind]
    if tiny: return ModelConfig.quick(n, conv_channels=(16, 16, 16), d=16, **kw)
    return ModelConfig.paper(n, **kw)


def batch(n: int, B: int, dev, seed=0):
    g = torch.Generator().manual_seed(seed)
    from pmn_nb.dna import one_hot
    x = one_hot(torch.randint(0, 4, (B, 200), generator=g)).to(dev)
    y = (torch.rand(B, n, generator=g) < 0.1).float().to(dev)
    return x, y


def train_step_fn(model, x, y, dtype, lam=1.0):
    from pmn_nb.model import pmn_loss
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
            out = model(x)
        loss, _ = pmn_loss(type(out)(out.logits.float(), None if out.w is None else out.w.float(), *out[2:]), y, lam)
        loss.backward()
        opt.step()
    return step


def timed(step, dev, steps, warmup) -> float:
    "Median seconds of `steps` calls after `warmup`."
    for _ in range(warmup): step()
    sync(dev)
    ts = []
    for _ in range(steps):
        t0 = time.perf_counter(); step(); sync(dev); ts.append(time.perf_counter() - t0)
    return sorted(ts)[len(ts) // 2]


def check_train_steps(dev, tiny, info, log) -> list:
    from pmn_nb.model import build_model, example_input, forward_flops
    S = sizes(tiny)
    rows = []
    for kind in ("pmn", "cnn", "cnn_single"):
        cfg = model_cfg(kind, tiny, S["n"])
        torch.manual_seed(0)
        model = build_model(cfg).to(dev).train()
        fwd = forward_flops(model, example_input(cfg, 2, dev)) / 2
        for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
            B = S["batch_single"] if kind == "cnn_single" else S["batch"]
            while True:
                x, y = batch(cfg.n_labels, B, dev)
                if dev.type == "cuda": torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats(dev)
                rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                try:
                    sec = timed(train_step_fn(model, x, y, dtype), dev, S["steps"], S["warmup"])
                    break
                except torch.OutOfMemoryError:
                    del x, y
                    if B <= 32: raise
                    B //= 2
                    log(f"  {kind} {name}: out of memory, batch halved to {B}")
            mem = (torch.cuda.max_memory_allocated(dev) / 1e9 if dev.type == "cuda"
                   else max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1e6)
            tflops = 3 * fwd * B / sec / 1e12  # a training step = forward + backward (about 2x forward)
            peak = info.get("bf16_peak_tflops")
            rows.append({"model": kind, "dtype": name, "batch": B, "params": sum(p.numel() for p in model.parameters()),
                         "gflop_fwd_per_seq": fwd / 1e9, "seconds_per_step": sec, "seq_per_s": B / sec,
                         "peak_mem_gb": mem, "peak_mem_kind": "cuda max_memory_allocated" if dev.type == "cuda" else "rss growth",
                         "tflops": tflops, "frac_bf16_peak": tflops / peak if peak else None})
            log(f"  {kind:10s} {name}: batch {B}, {B / sec:10,.0f} seq/s, {mem:6.2f} GB, {tflops:7.2f} TFLOP/s"
                + (f" = {tflops / peak:.1%} of the bf16 peak" if peak else ""))
        del model
    return rows


@contextlib.contextmanager
def no_tf32():
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try: yield
    finally: torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def check_ensemble(dev, tiny, log) -> dict:
    "Grouped ensemble == member loop (forward and gradients, fp32, TF32 off); step time of both."
    from pmn_nb.model import build_model, pmn_loss
    S = sizes(tiny)
    cfg = model_cfg("cnn_single", tiny, S["members"])
    torch.manual_seed(0)
    model = build_model(cfg).to(dev).eval()  # eval: no dropout, so both paths see the same function
    B = min(S["batch_single"], 64)
    x, y = batch(cfg.n_labels, B, dev, seed=1)
    res = {}
    with no_tf32():
        for loop in (False, True):
            model.encoder.member_loop = loop
            model.zero_grad(set_to_none=True)
            out = model(x)
            pmn_loss(out, y, 1.0)[0].backward()
            res[loop] = (out.logits.detach().double().cpu(), {k: p.grad.detach().double().cpu() for k, p in model.named_parameters()})
    lg, gr = res[False], res[True]
    fwd_err = float((lg[0] - gr[0]).abs().max() / lg[0].abs().max().clamp_min(1e-12))
    grad_err = max(float((lg[1][k] - gr[1][k]).abs().max() / lg[1][k].abs().max().clamp_min(1e-12)) for k in lg[1])
    tol = 1e-4
    times = {}
    model.train()
    dtype = torch.bfloat16 if dev.type == "cuda" else None
    xb, yb = batch(cfg.n_labels, S["batch_single"], dev, seed=2)
    for loop in (False, True):
        model.encoder.member_loop = loop
        times["loop" if loop else "grouped"] = timed(train_step_fn(model, xb, yb, dtype), dev, max(1, S["steps"] // 2), 1)
    model.encoder.member_loop = None
    ok = fwd_err < tol and grad_err < tol
    log(f"  grouped vs member loop ({cfg.n_labels} members): logits rel. diff {fwd_err:.1e}, gradients {grad_err:.1e} "
        f"(tolerance {tol:g}) {'OK' if ok else 'FAILED'}; step {times['grouped'] * 1e3:.0f} ms grouped vs "
        f"{times['loop'] * 1e3:.0f} ms loop")
    return {"members": cfg.n_labels, "batch_equality": B, "logits_rel_diff": fwd_err, "grads_rel_diff": grad_err,
            "tolerance": tol, "equal": ok, "batch_timing": S["batch_single"],
            "step_dtype": "bf16" if dtype is not None else "fp32", "seconds_grouped": times["grouped"],
            "seconds_loop": times["loop"], "loop_over_grouped": times["loop"] / times["grouped"]}


FIT = dict(epochs=12, batch_size=32, lr=1e-2, train_eval_size=0, eval_batch_size=512, checkpoint_every=10_000, seed=0)


def fit_store(root: Path) -> Path:
    "The window store of the synthetic tiny genome (made once under root)."
    from pmn_nb.synth import synth_genome
    from pmn_nb.windows import build_store
    st = root / "tiny_store"
    if not (st / "meta.json").exists():
        sg = synth_genome("tiny", root=root / "cache")
        build_store(sg / "genome.fa", sg / "tfs.tsv", st, show_progress=False, cache=root / "cache")
    return st


def run_fit(store: Path, out: Path, device: str, amp: str) -> dict:
    "The short fit of the check: a small PMN on the tiny store; -> test auROC and timing."
    from pmn_nb.metrics import summarize_metrics
    from pmn_nb.model import ModelConfig, build_model
    from pmn_nb.train import TrainConfig, evaluate, fit
    from pmn_nb.windows import WindowDataset, load_store
    st = load_store(store)
    names = st.tf_names
    torch.manual_seed(0)
    model = build_model(ModelConfig.quick(len(names), conv_channels=(64, 32, 32), d=32))
    cfg = TrainConfig(amp=amp, device=device, **FIT)
    t0 = time.perf_counter()
    hist = fit(model, WindowDataset(store, "train"), WindowDataset(store, "valid"), cfg, out, tf_names=names, resume=False)
    secs = time.perf_counter() - t0
    with warnings_off():
        test = summarize_metrics(evaluate(model, WindowDataset(store, "test"), names, device=device, amp="off"))
    return {"amp": amp, "epochs": FIT["epochs"], "best_epoch": int(hist.attrs["best_epoch"]), "seconds": secs,
            "test_auroc": test["auroc_mean"], "train_windows": len(WindowDataset(store, "train"))}


@contextlib.contextmanager
def warnings_off():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def check_fit(dev, root, log) -> dict:
    store = fit_store(root)
    r = run_fit(store, root / "fit", str(dev), "bf16")
    r.update(known_auroc=KNOWN_AUROC, tolerance=AUROC_TOL, reached=r["test_auroc"] >= KNOWN_AUROC - AUROC_TOL)
    log(f"  fit on the synthetic tiny genome, bf16 AMP, {r['epochs']} epochs: test auROC {r['test_auroc']:.3f} "
        f"(known {KNOWN_AUROC:.3f} - {AUROC_TOL}) {'OK' if r['reached'] else 'FAILED'} in {r['seconds']:.1f} s")
    return r


def ddp_worker(a) -> int:
    "Run by torchrun: join the process group, all-reduce, DDP steps == plain steps, then the fit."
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from pmn_nb.model import build_model
    dev = torch.device(a.device)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda": torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend=backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    t = torch.full((4,), float(rank + 1), device=dev)
    dist.all_reduce(t)
    allreduce_ok = bool(torch.allclose(t.cpu(), torch.full((4,), world * (world + 1) / 2)))
    cfg = model_cfg("pmn", True, 8)
    x, y = batch(8, 32, dev, seed=3)
    w = {}
    for wrap in (False, True):
        torch.manual_seed(0)
        m = build_model(cfg).to(dev).eval()
        net = DistributedDataParallel(m, device_ids=[dev.index or 0] if dev.type == "cuda" else None) if wrap else m
        with no_tf32():
            step = train_step_fn(net, x, y, None)
            for _ in range(3): step()
        w[wrap] = torch.cat([p.detach().flatten().double().cpu() for p in m.parameters()])
    ddp_diff = float((w[True] - w[False]).abs().max())
    fitr = run_fit(Path(a.store), Path(a.out) / "fit", a.device, "bf16")
    if rank == 0:
        (Path(a.out) / "ddp.json").write_text(json.dumps({"backend": backend, "world": world, "allreduce_ok": allreduce_ok,
                                                          "ddp_vs_plain_max_abs_diff": ddp_diff, "fit": fitr}))
    dist.destroy_process_group()
    return 0


def check_ddp(dev, root, fit_result, log, timeout=900) -> dict:
    out = root / "ddp"
    out.mkdir(exist_ok=True)
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = ([str(torchrun)] if torchrun.exists() else [sys.executable, "-m", "torch.distributed.run"])
    cmd += ["--nproc_per_node=1", "--master_port", str(29500 + os.getpid() % 1000), __file__, "--ddp-worker",
            "--device", str(dev), "--store", str(fit_store(root)), "--out", str(out)]
    env = {**os.environ, "PMN_PROGRESS": "0", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    if dev.type == "cpu": env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    secs = time.perf_counter() - t0
    if p.returncode != 0 or not (out / "ddp.json").exists():
        log(f"  torchrun DDP: FAILED (exit code {p.returncode})\n" + p.stderr[-2000:])
        return {"ok": False, "returncode": p.returncode, "stderr_tail": p.stderr[-2000:], "seconds": secs}
    r = json.loads((out / "ddp.json").read_text())
    diff = abs(r["fit"]["test_auroc"] - fit_result["test_auroc"])
    ok = r["allreduce_ok"] and r["ddp_vs_plain_max_abs_diff"] < 1e-6 and diff <= DDP_TOL
    log(f"  torchrun --nproc_per_node=1 ({r['backend']}): all-reduce {'OK' if r['allreduce_ok'] else 'FAILED'}, DDP steps vs "
        f"plain max |diff| {r['ddp_vs_plain_max_abs_diff']:.1e}, fit test auROC {r['fit']['test_auroc']:.3f} vs "
        f"{fit_result['test_auroc']:.3f} single-process {'OK' if ok else 'FAILED'} ({secs:.1f} s with start-up)")
    return {**r, "auroc_diff": diff, "tolerance": DDP_TOL, "ok": ok, "seconds": secs}


def check_predict(dev, tiny, root, log) -> dict:
    from pmn_nb.core import data_path
    from pmn_nb.model import build_model, save_model
    from pmn_nb.predict import load_predictor, predict_fasta
    from pmn_nb.windows import CHR22_FASTA
    S = sizes(tiny)
    cfg = model_cfg("pmn", tiny, S["n"])
    torch.manual_seed(0)
    save_model(build_model(cfg), root / "predict_model")
    pred = load_predictor(root / "predict_model", names=[f"tf{i}" for i in range(cfg.n_labels)], device=str(dev))
    start = 17_000_000
    (root / "r.bed").write_text(f"chr22\t{start}\t{start + 50 * (S['predict_windows'] - 1) + 200}\n")
    fa = data_path(*CHR22_FASTA)
    predict_fasta(pred, fa, root / "warm.tsv", bed=root / "r.bed", show_progress=False, cache=root / "cache", chunk=256)
    s = predict_fasta(pred, fa, root / "p.tsv", bed=root / "r.bed", show_progress=False, cache=root / "cache",
                      batch_size=512 if tiny else 2048)
    log(f"  pmn predict: {s['windows']:,} windows x {s['tfs']} TFs, both strands, {s['windows_per_s']:,.0f} windows/s "
        "(FASTA reading and TSV writing included)")
    return {k: s[k] for k in ("windows", "tfs", "seconds", "windows_per_s", "device")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available)")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (a smoke run; the result file is marked tiny)")
    ap.add_argument("--out", default=None, help="result JSON (default: results/bench/gpu/<device-name>[-tiny].json)")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one, removed at the end)")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: train_steps, ensemble, fit, ddp, predict")
    ap.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--store", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.device == "cpu" and not a.tiny and not a.ddp_worker:
        print("gpu_check: on a CPU only the --tiny run is meant (the paper sizes take hours there)", file=sys.stderr)
        return 2
    global torch
    import torch
    if a.ddp_worker: return ddp_worker(a)
    dev = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run with --device cpu --tiny for the smoke run", file=sys.stderr)
        return 2
    if dev.type == "cpu" and not a.tiny:
        print("gpu_check: on a CPU only the --tiny run is meant (the paper sizes take hours there)", file=sys.stderr)
        return 2
    os.environ.setdefault("PMN_PROGRESS", "0")
    t0 = time.perf_counter()
    info = device_info(dev)
    log = lambda s: print(s, flush=True)
    log(f"gpu_check on {info['name']} ({dev}){', tiny sizes' if a.tiny else ''}; torch {torch.__version__}")
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="pmn-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    skip = {s.strip() for s in a.skip.split(",") if s.strip()}
    res = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "device": info, "tiny": a.tiny, "torch": torch.__version__,
           "python": platform.python_version(), "command": " ".join(["python", "bench/gpu_check.py", *(argv or sys.argv[1:])])}
    checks = {}
    try:
        if "train_steps" not in skip:
            log("train steps (one Adam step, fp32 and bf16 autocast):")
            res["train_steps"] = check_train_steps(dev, a.tiny, info, log)
        if "ensemble" not in skip:
            log("single-label ensemble:")
            res["ensemble"] = check_ensemble(dev, a.tiny, log)
            checks["ensemble_equals_loop"] = res["ensemble"]["equal"]
        if "fit" not in skip or "ddp" not in skip:
            log("fit:")
            res["fit"] = check_fit(dev, work, log)
            checks["fit_reaches_known_auroc"] = res["fit"]["reached"]
        if "ddp" not in skip:
            log("DDP:")
            res["ddp"] = check_ddp(dev, work, res["fit"], log)
            checks["ddp"] = res["ddp"]["ok"]
        if "predict" not in skip:
            log("predict:")
            res["predict"] = check_predict(dev, a.tiny, work, log)
    finally:
        if not a.work: shutil.rmtree(work, ignore_errors=True)
    res["checks"] = checks
    res["passed"] = all(checks.values()) and not skip
    res["seconds"] = time.perf_counter() - t0
    out = Path(a.out) if a.out else (Path(__file__).resolve().parents[1] / "results" / "bench" / "gpu" /
                                     f"{slug(info['name'])}{'-tiny' if a.tiny else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(res, indent=1, default=float) + "\n")
    os.replace(tmp, out)
    log(f"{'PASSED' if res['passed'] else 'FAILED: ' + ', '.join(k for k, v in checks.items() if not v) if checks else 'no checks run'}"
        f" in {res['seconds']:.0f} s; wrote {out}")
    return 0 if res["passed"] or (skip and all(checks.values())) else 1


if __name__ == "__main__":
    sys.exit(main())
