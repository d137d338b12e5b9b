"Longer property tests of pmn_nb.model (the chapter's cells test each piece on hand-built cases)."
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from pmn_nb.core import set_seed
from pmn_nb.model import (PMN, CNNEncoder, CombinationLSTM, ModelConfig, build_model, load_model, pmn_loss,
                          save_model)


def literal_hops(lstm, x_hat, P):
    "Eqs. 3-7 as printed: nn.LSTMCell on [x̂; r], pairwise cosine, every hop."
    B = x_hat.shape[0]
    h, c, r = x_hat.new_zeros(B, lstm.d), x_hat.new_zeros(B, lstm.d), P.mean(0).expand(B, -1)
    ws = []
    for k in range(1, lstm.hops + 1):
        h_hat, c = lstm.cell(torch.cat([x_hat, r], 1), (h, c))
        h = h_hat + x_hat
        cos = F.cosine_similarity(h_hat[:, None, :], P[None, :, :], dim=-1)
        soft = lstm.attention == "softmax" and k < lstm.hops
        w = torch.softmax(lstm.eps * cos, -1) if soft else torch.sigmoid(lstm.eps * cos)
        r = w @ P
        ws.append(w)
    return h, r, w, torch.stack(ws, 1)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("attention", ["sigmoid", "softmax"])
def test_fast_hops_equal_literal_equations(seed, attention):
    g = torch.Generator().manual_seed(seed)
    B, n, d, K = (int(torch.randint(lo, hi, (1,), generator=g)) for lo, hi in ((1, 9), (1, 40), (2, 24), (1, 7)))
    torch.manual_seed(seed)
    lstm = CombinationLSTM(d, K, eps=float(torch.rand(1, generator=g) * 30), attention=attention).double()
    x_hat, P = torch.randn(B, d, dtype=torch.float64), torch.randn(n, d, dtype=torch.float64)
    for got, want in zip(lstm(x_hat, P), literal_hops(lstm, x_hat, P)):
        torch.testing.assert_close(got, want)


def test_gradcheck_combination_lstm():
    torch.manual_seed(0)
    lstm = CombinationLSTM(4, hops=3, eps=3.0).double()
    x_hat = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    P = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: lstm(a, b)[:3], (x_hat, P))


@pytest.mark.parametrize("kind", ["pmn", "cnn", "cnn_single"])
def test_models_on_device(kind, device, tmp_path):
    set_seed(0)
    cfg = ModelConfig(kind=kind, n_labels=5, seq_len=60, conv_channels=(16, 8), conv_widths=(5, 3), d=8, hops=3)
    m = build_model(cfg).to(device)
    x = F.one_hot(torch.randint(0, 4, (6, 60)), 4).float().transpose(1, 2).to(device)
    y = torch.randint(0, 2, (6, 5), device=device)
    out = m(x, return_all=True)
    assert out.logits.device.type == torch.device(device).type and out.logits.shape == (6, 5)
    total, parts = pmn_loss(out, y)
    total.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    dtype = torch.bfloat16
    with torch.autocast(torch.device(device).type, dtype=dtype):
        low = m(x)
        total, _ = pmn_loss(low, y)
    assert torch.isfinite(total) and total.dtype == torch.float32
    if kind == "pmn": assert low.w.dtype == torch.float32
    save_model(m, tmp_path / "m")
    m2 = load_model(tmp_path / "m", map_location=device)
    m.eval()
    with torch.no_grad(): torch.testing.assert_close(m2(x).logits, m(x).logits)


@pytest.mark.parametrize("seed", range(3))
def test_ensemble_members_are_independent_models(seed):
    set_seed(seed)
    cfg = ModelConfig(kind="cnn_single", n_labels=9, seq_len=50, conv_channels=(6, 5, 4), conv_widths=(5, 3, 3), d=4)
    ens = build_model(cfg).eval()
    x = F.one_hot(torch.randint(0, 4, (4, 50)), 4).float().transpose(1, 2)
    with torch.no_grad():
        logits = ens(x).logits
        for i in range(9):
            torch.testing.assert_close(ens.member(i)(x).logits[:, 0], logits[:, i], rtol=1e-5, atol=1e-5)


def test_pmn_takes_any_encoder():
    enc = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 16), nn.ReLU())
    m = PMN(enc, n_labels=10, d=16, hops=2)
    out = m(torch.rand(5, 1, 28, 28), return_all=True)
    assert out.logits.shape == (5, 10) and out.w_hops.shape == (5, 2, 10)
