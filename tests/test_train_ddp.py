"""DDP: `fit` launched by torchrun as 2 CPU processes (gloo) ends where single-process training on the same global batches
ends, within a stated tolerance; and a distributed run killed mid-epoch resumes to the same weights as an uninterrupted one."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

# The tolerance: with no dropout, 2 processes and 1 process compute the same global-batch gradient; only the order of the
# float32 sums differs (half-batch means averaged by all-reduce vs one mean), so the weights may differ in the last bits,
# and Adam can amplify that over steps. After 2 epochs (2 × 16 steps) we require every weight to agree within ATOL.
ATOL = 1e-5

WORKER = textwrap.dedent('''
    import json, os, sys, types
    from pathlib import Path
    import torch, torch.nn as nn, torch.nn.functional as F
    from torch.utils.data import TensorDataset
    from pmn_nb.train import TrainConfig, fit, dist_info

    torch.set_num_threads(1)
    out, model_kind, kill_at = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])

    def motif_data(n, L=40, seed=0):
        g = torch.Generator().manual_seed(seed)
        codes = torch.randint(0, 4, (n, L), generator=g)
        y = torch.zeros(n, 3)
        for t, m in enumerate(([0, 1, 2, 3, 0], [3, 3, 2, 2, 1], [1, 0, 1, 0, 2])):
            has = torch.rand(n, generator=g) < 0.3
            pos = torch.randint(0, L - 5, (n,), generator=g)
            for i in torch.nonzero(has).flatten().tolist(): codes[i, pos[i]:pos[i] + 5] = torch.tensor(m)
            y[:, t] = has.float()
        return TensorDataset(F.one_hot(codes, 4).float().transpose(1, 2).contiguous(), y)

    class Tiny(nn.Module):
        def __init__(self, dropout):
            super().__init__()
            self.conv, self.drop = nn.Conv1d(4, 16, 7, padding=3), nn.Dropout(dropout)
            self.head, self.match = nn.Linear(16, 3), nn.Linear(16, 3)
        def forward(self, x):
            h = self.drop(F.relu(self.conv(x)).amax(-1))
            return types.SimpleNamespace(logits=self.head(h), w=torch.sigmoid(self.match(h)))

    def loss(o, y, lam):
        bce = F.binary_cross_entropy_with_logits(o.logits, y, reduction="none").sum(1).mean()
        proto = (y - o.w).pow(2).sum(1).mean()
        return bce + lam * proto, {"bce": bce, "proto": proto}

    torch.manual_seed(0)
    if model_kind == "pmn":
        from pmn_nb.model import ModelConfig, build_model, pmn_loss
        model = build_model(ModelConfig(kind="pmn", n_labels=3, seq_len=40, conv_channels=(16, 16), conv_widths=(5, 3),
                                        d=16, hops=2, dropout=0.0))
        loss = pmn_loss
    else:
        model = Tiny(dropout=0.2 if model_kind == "tiny_dropout" else 0.0)
    cfg = TrainConfig(epochs=2, batch_size=64, lr=5e-3, train_eval_size=200, eval_batch_size=50, checkpoint_every=4,
                      amp="off",  # exact equivalence is a float32 property: bf16 rounds differently per batch split
                      deterministic=True, device="cpu")
    def on_step(s):
        if s["global_step"] == kill_at: raise SystemExit(3)  # a kill between two checkpoints
    # 1001 windows: the last global batch has 41, split 21 + 20 across 2 processes (the loss weighting is exercised)
    hist = fit(model, motif_data(1001), motif_data(301, seed=1), cfg, out, loss_fn=loss, on_step=on_step,
               restore_best=False)
    rank, world, _ = dist_info()
    if rank == 0:
        torch.save(model.state_dict(), out / "final.pt")
        (out / "world.json").write_text(json.dumps({"world": world}))
''')


def _run(tmp_path, name, model_kind, nproc, kill_at=0, check=True):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / name
    env = {**os.environ, "PMN_PROGRESS": "0", "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    if nproc == 1:
        cmd = [sys.executable, str(script)]
        for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"): env.pop(k, None)
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(script)]
    r = subprocess.run([*cmd, str(out), model_kind, str(kill_at)], env=env, capture_output=True, text=True, timeout=120)
    if check: assert r.returncode == 0, r.stderr[-3000:]
    return out, r


def _max_diff(a, b):
    sa = torch.load(a / "final.pt", weights_only=True)
    sb = torch.load(b / "final.pt", weights_only=True)
    assert sa.keys() == sb.keys()
    return max((sa[k] - sb[k]).abs().max().item() for k in sa)


@pytest.mark.parametrize("model_kind", ["tiny", "pmn"])
def test_ddp_matches_single_process(tmp_path, model_kind):
    one, _ = _run(tmp_path, "one", model_kind, 1)
    two, _ = _run(tmp_path, "two", model_kind, 2)
    assert json.loads((two / "world.json").read_text()) == {"world": 2}
    d = _max_diff(one, two)
    print(f"{model_kind}: largest weight difference, 2 processes vs 1: {d:.2e} (tolerance {ATOL:g})")
    assert d < ATOL
    h1 = json.loads((one / "history.json").read_text())
    h2 = json.loads((two / "history.json").read_text())
    for r1, r2 in zip(h1, h2):
        assert r1["windows"] == r2["windows"] == 1001
        for k in ("train_loss", "valid_loss", "valid_auroc", "train_auroc"):
            assert r1[k] == pytest.approx(r2[k], rel=1e-4, abs=1e-4), k


def test_ddp_kill_and_resume(tmp_path):
    "Two processes with dropout (different masks per process), killed at step 10 of 32, resumed: identical weights."
    full, _ = _run(tmp_path, "full", "tiny_dropout", 2)
    cut, r = _run(tmp_path, "cut", "tiny_dropout", 2, kill_at=10, check=False)
    assert r.returncode != 0 and not (cut / "final.pt").exists()
    ck = torch.load(cut / "last.pt", weights_only=True)
    assert (ck["epoch"], ck["step"], ck["world"], len(ck["ranks"])) == (0, 8, 2, 2)
    _run(tmp_path, "cut", "tiny_dropout", 2)
    assert _max_diff(full, cut) == 0.0


def test_pmn_train_under_torchrun(tmp_path):
    "The `pmn train` command itself under torchrun: 2 gloo processes, validation and test split across them, one writer."
    from pmn_nb.windows import chr22_store
    import shutil
    store = chr22_store().path
    exe = shutil.which("pmn") or str(__import__("pathlib").Path(sys.executable).with_name("pmn"))
    env = {**os.environ, "PMN_PROGRESS": "0", "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", exe, "train",
                        "--data", str(store), "--out", str(out), "--model", "cnn", "--epochs", "1", "--batch-size", "256",
                        "--device", "cpu"], env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    ck = torch.load(out / "last.pt", weights_only=True)
    assert ck["world"] == 2 and len(ck["ranks"]) == 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test"]["n_tfs"] == 78 and 0 < summary["test"]["auroc_mean"] < 1
    assert r.stdout.count('"best_epoch"') == 1  # only rank 0 reports
