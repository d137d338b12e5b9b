"""`pmn train` as a user meets it: clear errors for a store and a config that disagree, a run that resumes when started
again on its folder, and results saved with provenance."""
import json

import pandas as pd
import pytest


@pytest.fixture(scope="module")
def store():
    from pmn_nb.windows import chr22_store
    return chr22_store().path


def test_not_a_store(run_pmn, tmp_path):
    r = run_pmn("train", "--data", tmp_path, "--out", tmp_path / "run")
    assert r.returncode == 2
    assert "not a window store" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("model, msg", [
    ({"n_labels": 5}, "n_labels=5 but the store has 78 TFs"),
    ({"seq_len": 101}, "seq_len=101 but the store's windows are 200 bp"),
    ({"widht": 3}, "unknown config keys ['widht']"),
])
def test_config_disagrees_with_store(run_pmn, tmp_path, store, model, msg):
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps({"model": model}))
    r = run_pmn("train", "--data", store, "--out", tmp_path / "run", "--config", cfg)
    assert r.returncode == 2, r.stderr
    assert msg in r.stderr, r.stderr
    assert not (tmp_path / "run").exists()


def test_train_resume_and_results(run_pmn, tmp_path, store):
    out = tmp_path / "run"
    base = ["train", "--data", store, "--out", out, "--batch-size", "256", "--threads", "1"]
    common = [*base, "--model", "cnn"]
    r = run_pmn(*common, "--epochs", "1", env={"PMN_RESULTS": str(tmp_path / "results")})
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_epoch"] == 1 and summary["test"]["n_tfs"] == 78
    assert len(pd.read_csv(out / "test_per_tf.csv")) == 78
    assert (out / "best_model" / "model.pt").exists()
    # started again with more epochs: resumes from last.pt and trains only the new epoch
    r = run_pmn(*common, "--epochs", "2", "--results", "train/demo", env={"PMN_RESULTS": str(tmp_path / "results")})
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stderr
    hist = pd.read_csv(out / "history.csv")
    assert hist.epoch.tolist() == [1, 2]
    saved = tmp_path / "results" / "train" / "demo"
    assert {"history.csv", "test_per_tf.csv", "summary.json", "provenance.json"} <= {f.name for f in saved.iterdir()}
    prov = json.loads((saved / "provenance.json").read_text())
    assert prov["config"]["train"]["epochs"] == 2 and prov["config"]["model"]["kind"] == "cnn"
    # the same folder with another learning rate is refused, naming the change
    r = run_pmn(*common, "--epochs", "3", "--lr", "0.01")
    assert r.returncode == 2 and "different settings: lr" in r.stderr
    # ... and with another model
    r = run_pmn(*base, "--model", "pmn", "--epochs", "3")
    assert r.returncode == 2 and "different model" in r.stderr


def test_sigkill_mid_epoch_then_resume(run_pmn, tmp_path, store):
    "A real kill (SIGKILL, no chance to save) in the middle of an epoch; the same command again ends with the same weights."
    import os
    import signal
    import subprocess
    import time

    import torch
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps({"train": {"epochs": 3, "batch_size": 64, "checkpoint_every": 4, "deterministic": True,
                                         "train_eval_size": 256}}))
    args = ["train", "--data", store, "--model", "cnn", "--config", cfg, "--threads", "1", "--no-test"]
    r = run_pmn(*args, "--out", tmp_path / "full")
    assert r.returncode == 0, r.stderr
    cut = tmp_path / "cut"
    from conftest import _pmn_exe  # the fixture waits for the command to end; this test needs a process it can kill
    env = {**os.environ, "PMN_PROGRESS": "0"}
    p = subprocess.Popen([_pmn_exe(), *map(str, args), "--out", str(cut)], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    killed_at = None
    try:
        t0 = time.time()
        while time.time() - t0 < 300 and p.poll() is None:
            if (cut / "last.pt").exists():
                ck = torch.load(cut / "last.pt", weights_only=True)
                if ck["epoch"] == 1 and ck["step"] > 0:  # a mid-epoch checkpoint of epoch 2 exists: kill now
                    p.send_signal(signal.SIGKILL)
                    killed_at = (ck["epoch"], ck["step"])
                    break
            time.sleep(0.05)
    finally:
        p.wait()
    assert killed_at is not None, "the run ended before it could be killed"
    assert p.returncode == -signal.SIGKILL
    r = run_pmn(*args, "--out", cut)
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stderr
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    b = torch.load(cut / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 3
    for k, v in a["model"].items(): assert torch.equal(v, b["model"][k]), k
    ha, hb = pd.read_csv(tmp_path / "full" / "history.csv"), pd.read_csv(cut / "history.csv")
    timing = ["train_seconds", "eval_seconds", "train_seq_per_s"]
    pd.testing.assert_frame_equal(ha.drop(columns=timing), hb.drop(columns=timing))


@pytest.mark.parametrize("train, msg", [
    ({"epochs": -1}, "TrainConfig: epochs must be >= 1, not -1"),
    ({"epochs": 2.5}, "TrainConfig: epochs must be an integer, not 2.5"),
    ({"lr": -0.001}, "TrainConfig: lr must be > 0"),
    ({"batch_size": 0}, "TrainConfig: batch_size must be >= 1"),
    ({"amp": "fp8"}, "TrainConfig: amp must be one of"),
    ({"device": "tpu7"}, "TrainConfig: device must be"),
])
def test_bad_train_settings_name_the_config_file(run_pmn, tmp_path, store, train, msg):
    "A bad value in a config file is one line naming the file, before any training (nothing written to --out)."
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps({"train": train}))
    r = run_pmn("train", "--data", store, "--out", tmp_path / "run", "--config", cfg)
    assert r.returncode == 2, r.stderr
    assert f"run.json: {msg}" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, msg", [
    (["--batch-size", "-4"], "TrainConfig: batch_size must be >= 1, not -4"),
    (["--epochs", "0"], "TrainConfig: epochs must be >= 1, not 0"),
    (["--device", "tpu7"], "TrainConfig: device must be"),
    (["--threads", "0"], "--threads must be >= 1"),
])
def test_bad_train_options(run_pmn, tmp_path, store, args, msg):
    r = run_pmn("train", "--data", store, "--out", tmp_path / "run", *args)
    assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_unwritable_out_folder(run_pmn, tmp_path, store):
    import os
    if os.geteuid() == 0: pytest.skip("root can write anywhere")  # CI runs as root: covered by the chmod-free case below
    ro = tmp_path / "ro"
    ro.mkdir(); ro.chmod(0o500)
    r = run_pmn("train", "--data", store, "--out", ro / "run", "--epochs", "1")
    assert r.returncode == 2 and "cannot write --out" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_out_is_a_file(run_pmn, tmp_path, store):
    "An --out that cannot be a folder (here: an existing file) is one clear line, for root too."
    f = tmp_path / "run"
    f.write_text("not a folder")
    r = run_pmn("train", "--data", store, "--out", f, "--epochs", "1")
    assert r.returncode == 2 and "cannot write --out" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_empty_test_split_fails_before_training(run_pmn, tmp_path, store):
    "A store whose test split is empty stops `pmn train` before its first step, naming the store and the split."
    import shutil

    import numpy as np
    s = tmp_path / "store"
    shutil.copytree(store, s)
    meta = json.loads((s / "meta.json").read_text())
    meta["counts"]["test"]["windows"] = 0
    (s / "meta.json").write_text(json.dumps(meta))
    for part in ("seq", "labels", "index"):
        a = np.load(s / f"test.{part}.npy")
        np.save(s / f"test.{part}.npy", a[:0])
    r = run_pmn("train", "--data", s, "--out", tmp_path / "run", "--epochs", "1")
    assert r.returncode == 2 and "the test split of this window store is empty" in r.stderr, r.stderr
    assert not (tmp_path / "run" / "last.pt").exists()
    r = run_pmn("train", "--data", s, "--out", tmp_path / "run", "--epochs", "1", "--no-test", "--model", "cnn",
                "--batch-size", "512", "--threads", "1")
    assert r.returncode == 0, r.stderr  # told to skip the test split, it trains


@pytest.mark.parametrize("damage", ["truncated", "random"])
def test_damaged_last_checkpoint(run_pmn, tmp_path, store, damage):
    "A torn or foreign last.pt is one line naming the file and what to do; deleting it restarts the run."
    import os
    out = tmp_path / "run"
    args = ["train", "--data", store, "--out", out, "--model", "cnn", "--batch-size", "512", "--threads", "1", "--no-test"]
    r = run_pmn(*args, "--epochs", "1")
    assert r.returncode == 0, r.stderr
    last = out / "last.pt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2] if damage == "truncated" else os.urandom(4096))
    r = run_pmn(*args, "--epochs", "2")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "last.pt: damaged checkpoint" in r.stderr and "delete it to restart" in r.stderr, r.stderr
    last.unlink()
    r = run_pmn(*args, "--epochs", "1")
    assert r.returncode == 0, r.stderr
