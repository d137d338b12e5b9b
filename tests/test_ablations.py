"`pmn ablate` end to end on the tiny synthetic genome: skips finished runs, resumes interrupted ones, refuses changed ones."
import json
from pathlib import Path

import pandas as pd
import pytest

from pmn_nb.ablations import default_grid, load_grid
from pmn_nb.runs import run_state


@pytest.fixture
def tiny_grid(tmp_path):
    "Two rows of Table 4 (multi-label CNN and the full PMN), 2 epochs of 4 steps, deterministic kernels."
    g = default_grid("quick", seeds=[0], name="tiny")
    g["rows"] = [r for r in g["rows"] if r["key"] in ("cnn_multi", "pmn_lam1")]
    g["train"].update(epochs=2, max_steps_per_epoch=4, train_eval_size=64, checkpoint_every=2, deterministic=True,
                      batch_size=32)
    g["valid_size"], g["test_curve_size"] = 256, 256
    p = tmp_path / "grid.json"
    p.write_text(json.dumps(g))
    return p


def _actions(stdout: str) -> dict:
    lines = [l.split("\t") for l in stdout.strip().splitlines()]
    head = next(i for i, l in enumerate(lines) if l[:4] == ["key", "seed", "state", "action"])
    return {r[0]: r[3] for r in lines[head + 1:]}


def test_skip_and_resume(run_pmn, tiny_grid, tmp_path):
    out = tmp_path / "grid"
    env = {"PMN_RESULTS": str(tmp_path / "results")}
    # 1. interrupted after 5 optimiser steps: epoch 1 (4 steps) is checkpointed, the run is not finished
    r = run_pmn("ablate", "--grid", tiny_grid, "--data", "synth:tiny", "--out", out, "--jobs", "1", "--threads", "1", "--stop-after", "5",
                env=env)
    assert r.returncode == 3, r.stderr
    first = out / "cnn_multi" / "seed0"
    assert run_state(first) == "interrupted" and not (out / "pmn_lam1").exists()
    # 2. the rerun resumes the first run, trains the second, and collects the results
    r = run_pmn("ablate", "--grid", tiny_grid, "--data", "synth:tiny", "--out", out, "--jobs", "1", "--threads", "1",
                "--results", "ablations/tiny", env=env)
    assert r.returncode == 0, r.stderr
    assert _actions(r.stdout) == {"cnn_multi": "resumed", "pmn_lam1": "trained"}
    assert "resuming CNN (multi-label)" in r.stderr
    res = json.loads((first / "result.json").read_text())
    assert res["epochs"] == 2 and len(res["history"]) == 2
    assert all(h["test_auroc"] == h["test_auroc"] for h in res["history"])  # the test curve has both epochs
    mtime = (first / "result.json").stat().st_mtime_ns
    # 3. nothing left to do: every run is skipped and left untouched
    r = run_pmn("ablate", "--grid", tiny_grid, "--data", "synth:tiny", "--out", out, "--jobs", "1", "--threads", "1", env=env)
    assert r.returncode == 0, r.stderr
    assert set(_actions(r.stdout).values()) == {"skipped"}
    assert (first / "result.json").stat().st_mtime_ns == mtime
    # the collected tables
    d = tmp_path / "results" / "ablations" / "tiny"
    t4 = pd.read_csv(d / "table4.csv")
    assert list(t4.key) == ["cnn_multi", "pmn_lam1"]
    prov = json.loads((d / "provenance.json").read_text())
    assert prov["runs_finished"] == 2 and prov["wall_seconds"]["elapsed"] > 0 and prov["wall_seconds"]["calls"] == 2
    # 4. the resumed run is the run that was never interrupted (deterministic kernels, same data order)
    straight = tmp_path / "straight"
    r = run_pmn("ablate", "--grid", tiny_grid, "--data", "synth:tiny", "--out", straight, "--jobs", "1", "--threads", "1",
                "--rows", "cnn_multi", env=env)
    assert r.returncode == 0, r.stderr
    a = pd.read_csv(first / "test_per_tf.csv")
    b = pd.read_csv(straight / "cnn_multi" / "seed0" / "test_per_tf.csv")
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-6)


def test_changed_grid_is_refused(run_pmn, tiny_grid, tmp_path):
    out = tmp_path / "grid"
    r = run_pmn("ablate", "--grid", tiny_grid, "--data", "synth:tiny", "--out", out, "--jobs", "1", "--threads", "1", "--rows", "cnn_multi")
    assert r.returncode == 0, r.stderr
    g = json.loads(tiny_grid.read_text())
    g["train"]["lr"] = 1e-4
    tiny_grid.write_text(json.dumps(g))
    r = run_pmn("ablate", "--grid", tiny_grid, "--data", "synth:tiny", "--out", out, "--jobs", "1", "--threads", "1", "--rows", "cnn_multi")
    assert r.returncode == 2
    assert "other settings" in r.stderr


def test_write_grid_and_bad_input(run_pmn, tmp_path):
    r = run_pmn("ablate", "--profile", "paper", "--data", "chr22", "--out", tmp_path / "x", "--write-grid", tmp_path / "g.json",
                "--seeds", "0", "1")
    assert r.returncode == 0, r.stderr
    g = load_grid(tmp_path / "g.json")
    assert g["profile"] == "paper" and len(g["rows"]) == 7 and g["rows"][0]["seeds"] == [0, 1]
    r = run_pmn("ablate", "--data", tmp_path, "--out", tmp_path / "x")
    assert r.returncode == 2 and "not a window store" in r.stderr
    (tmp_path / "bad.json").write_text('{"rows": [{"key": "a", "lamda": 1}]}')
    r = run_pmn("ablate", "--grid", tmp_path / "bad.json", "--data", "chr22", "--out", tmp_path / "x")
    assert r.returncode == 2 and "unknown keys" in r.stderr
