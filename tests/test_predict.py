"""`pmn predict` as a user meets it: the shipped model on a FASTA and on a BED + genome, every output format (TSV, CSV,
bedGraph), streaming in flat memory, and one clear error line (exit code 2, the file named) for every bad input.

The chapter (nbs/75_predict.ipynb) tests the functions; these tests run the command in subprocesses.
"""
import gzip
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from pmn_nb.core import data_path
from pmn_nb.dna import decode
from pmn_nb.predict import load_predictor, shipped_model
from pmn_nb.windows import CHR22_FASTA

THREADS = {"OMP_NUM_THREADS": "1"}  # the test machine is shared: one thread avoids waiting on busy cores


@pytest.fixture
def env(tmp_path):
    "Cache and results under tmp_path, so that nothing is written into the checkout."
    return {"PMN_CACHE": str(tmp_path / "cache"), "PMN_RESULTS": str(tmp_path / "results"), **THREADS}



@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    import torch
    from pmn_nb.model import ModelConfig, build_model, save_model
    d = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    save_model(build_model(ModelConfig.quick(4, conv_channels=(8, 8, 8), d=8)), d / "run" / "best_model")
    torch.save({"tf_names": ["CTCF", "YY1", "EBF1", "SPI1"]}, d / "run" / "best.pt")  # like `pmn train` records them
    return d / "run"


def _fasta(path, n_bases, seed=0, width=60):
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        for name, n in n_bases.items():
            s = decode(rng.integers(0, 4, n).astype(np.uint8))
            f.write(f">{name}\n" + "\n".join(s[i:i + width] for i in range(0, n, width)) + "\n")
    return path


def test_predict_cli_whole_fasta_and_bed(run_pmn, tmp_path, tiny_model, env):
    fa = _fasta(tmp_path / "g.fa", {"c1": 1000, "c2": 150, "c3": 450})
    r = run_pmn("predict", "--checkpoint", tiny_model, "--fasta", fa, "--out", tmp_path / "p.tsv", "--device", "cpu", env=env)
    assert r.returncode == 0, r.stderr
    t = pd.read_csv(tmp_path / "p.tsv", sep="\t")
    assert list(t.columns) == ["chrom", "start", "end", "CTCF", "YY1", "EBF1", "SPI1"]
    assert t.groupby("chrom").size().to_dict() == {"c1": 17, "c3": 6}  # c2 is shorter than a window
    assert ((t.iloc[:, 3:] > 0) & (t.iloc[:, 3:] < 1)).all().all()
    assert "1 regions on sequences shorter than a window" in r.stdout and "windows/s" in r.stdout
    (tmp_path / "r.bed").write_text("# regions\nc1\t100\t400\tp1\nc3\t10\t60\n")
    r = run_pmn("predict", "--checkpoint", tiny_model / "best_model", "--fasta", fa, "--bed", tmp_path / "r.bed",
                "--out", tmp_path / "b.tsv.gz", "--names", tmp_path / "names.txt", env=env)
    assert r.returncode == 2 and "names file not found" in r.stderr
    (tmp_path / "names.txt").write_text("a\nb\nc\nd\n")
    r = run_pmn("predict", "--checkpoint", tiny_model / "best_model", "--fasta", fa, "--bed", tmp_path / "r.bed",
                "--out", tmp_path / "b.tsv.gz", "--names", tmp_path / "names.txt", env=env)
    assert r.returncode == 0, r.stderr
    b = pd.read_csv(tmp_path / "b.tsv.gz", sep="\t")
    assert b[["chrom", "start", "end", "region"]].values.tolist() == [
        ["c1", 100, 300, "p1"], ["c1", 150, 350, "p1"], ["c1", 200, 400, "p1"], ["c3", 0, 200, "c3:10-60"]]
    whole = t.set_index(["chrom", "start"])
    assert np.allclose(b.iloc[:3, 4:].values, whole.loc[[("c1", 100), ("c1", 150), ("c1", 200)]].iloc[:, 1:].values, atol=2e-4)


@pytest.mark.parametrize("args, msg", [
    (["--checkpoint", "{tmp}/none"], "checkpoint not found"),
    (["--checkpoint", "{tmp}/half"], "incomplete checkpoint: config.json without model.pt"),
    (["--checkpoint", "{tmp}/g.fa"], "must be a folder"),
    (["--window", "300"], "scores 200-bp windows; --window 300 does not match"),
    (["--fasta", "{tmp}/none.fa"], "FASTA not found"),
    (["--bed", "{tmp}/bad.bed"], "bad.bed:2: start and end must be integers"),
    (["--bed", "{tmp}/chrom.bed"], "chrom.bed:1: chromosome 'chrZ' is not in the FASTA"),
    (["--checkpoint", "{tmp}/mnist"], "takes 1-channel 'image_cnn' input, not one-hot DNA"),
    (["--out", "{tmp}/p.parquet"], "Parquet needs pyarrow"),
    (["--stride", "0"], "stride must be a positive integer"),
])
def test_predict_errors(run_pmn, tmp_path, tiny_model, env, args, msg):
    import shutil
    from pmn_nb.model import ModelConfig, build_model, save_model
    if "parquet" in msg and __import__("importlib").util.find_spec("pyarrow") is not None: pytest.skip("pyarrow is installed")
    fa = _fasta(tmp_path / "g.fa", {"c1": 1000})
    (tmp_path / "half").mkdir()
    shutil.copy(tiny_model / "best_model" / "config.json", tmp_path / "half")
    (tmp_path / "bad.bed").write_text("c1\t0\t300\nc1\t10\tend\n")
    (tmp_path / "chrom.bed").write_text("chrZ\t0\t300\n")
    save_model(build_model(ModelConfig.quick(10, encoder="image_cnn", in_channels=1, seq_len=28)), tmp_path / "mnist")
    base = {"--checkpoint": str(tiny_model), "--fasta": str(fa), "--out": str(tmp_path / "p.tsv")}
    extra = [a.format(tmp=tmp_path) for a in args]
    for k in list(base):
        if k in extra: base.pop(k)
    r = run_pmn("predict", *[x for kv in base.items() for x in kv], *extra, env=env)
    assert r.returncode == 2, r.stderr
    assert msg in r.stderr and r.stderr.count("\n") <= 2
    assert not (tmp_path / "p.tsv").exists() and not (tmp_path / "p.parquet").exists()


def _max_rss_mb(tiny_model, fa, out, env):
    code = ("import resource, sys; from pmn_nb.predict import predict_fasta; "
            "predict_fasta(sys.argv[1], sys.argv[2], sys.argv[3], names=list('ABCD'), device='cpu', show_progress=False, chunk=2048); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    r = subprocess.run([sys.executable, "-c", code, str(tiny_model), str(fa), str(out)], capture_output=True, text=True,
                       env={**os.environ, **env}, timeout=600)
    assert r.returncode == 0, r.stderr
    return float(r.stdout.strip().splitlines()[-1])


def test_predict_memory_is_flat(tmp_path, tiny_model, env):
    small = _max_rss_mb(tiny_model, _fasta(tmp_path / "s.fa", {"c1": 200_000}), tmp_path / "s.tsv", env)
    big = _max_rss_mb(tiny_model, _fasta(tmp_path / "b.fa", {"c1": 1_500_000, "c2": 1_500_000}), tmp_path / "b.tsv", env)
    assert len(pd.read_csv(tmp_path / "b.tsv", sep="\t", usecols=[0])) == 2 * ((1_500_000 - 200) // 50 + 1)
    # 15x the windows; holding them (codes + one-hot floats) would add > 200 MB
    assert big - small < 40, (small, big)




# --- the shipped model ---------------------------------------------------------------------------------------------

def test_shipped_model_loads_with_its_names():
    p = load_predictor(device="cpu")
    assert p.path == shipped_model() and p.window == 200
    assert len(p.tf_names) == 78 and p.tf_names[:3] == ["NRF1", "EZH2", "NFYA"]
    assert json.loads((shipped_model() / "summary.json").read_text())["test"]["auroc_mean"] > 0.6
    assert sum(f.stat().st_size for f in shipped_model().iterdir()) < 1_000_000


def test_predict_with_the_shipped_model_on_a_bed_of_the_chr22_sample(run_pmn, tmp_path, env):
    "No --checkpoint: the shipped model; TSV, CSV with both strands, and bedGraph tracks of the same windows."
    fa = data_path(*CHR22_FASTA)
    (tmp_path / "r.bed").write_text("chr22\t21900000\t21901000\tr1\n")
    r = run_pmn("predict", "--fasta", fa, "--bed", tmp_path / "r.bed", "--out", tmp_path / "s.tsv", "--device", "cpu", env=env)
    assert r.returncode == 0, r.stderr
    t = pd.read_csv(tmp_path / "s.tsv", sep="\t")
    assert list(t.columns[:4]) == ["chrom", "start", "end", "region"] and t.shape == (17, 4 + 78)
    assert t.start.tolist() == list(range(21_900_000, 21_900_801, 50))
    r = run_pmn("predict", "--fasta", fa, "--bed", tmp_path / "r.bed", "--out", tmp_path / "s.csv", "--strands", "both",
                "--tfs", "CTCF,EBF1", env=env)
    assert r.returncode == 0, r.stderr
    c = pd.read_csv(tmp_path / "s.csv")
    assert list(c.columns) == ["chrom", "start", "end", "region", "CTCF+", "CTCF-", "EBF1+", "EBF1-"]
    assert np.allclose((c["EBF1+"] + c["EBF1-"]) / 2, t["EBF1"], atol=2e-4)
    r = run_pmn("predict", "--fasta", fa, "--bed", tmp_path / "r.bed", "--out", tmp_path / "s.bg.gz", "--tfs", "CTCF,EBF1", env=env)
    assert r.returncode == 0, r.stderr
    lines = gzip.open(tmp_path / "s.bg.gz", "rt").read().splitlines()
    assert [l for l in lines if l.startswith("track")][0].startswith('track type=bedGraph name="PMN CTCF"')
    assert len(lines) == 2 * (1 + 17)
    first = lines[1].split("\t")
    assert first[:3] == ["chr22", "21900075", "21900125"] and abs(float(first[3]) - t.CTCF[0]) < 2e-4


# --- bad input: one line, exit code 2, the file named ---------------------------------------------------------------

@pytest.mark.parametrize("case, msg", [
    ("protein", "protein.fa"),  # a FASTA that is not DNA
    ("short", "nothing to score: every sequence is shorter than the model's 200-bp window"),
    ("window", "scores 200-bp windows; --window 100 does not match"),
    ("bed_chrom", "r.bed:1: chromosome 'chr9' is not in the FASTA"),
    ("other_tfs", "this model predicts 78 TFs, and FOXP3 is not among them"),
    ("names", "names.txt: 3 TF names for a model with 78 outputs"),
    ("truncated", "model.pt: cannot read the model weights, the file is damaged or truncated"),
    ("no_dir", "cannot write the output: the folder"),
    ("under_file", "cannot write the output: the folder"),
    ("xlsx", "s.xlsx: cannot tell the output format from the file name"),
    ("csv_as_tsv", "s.csv: --format tsv contradicts the extension '.csv'"),
])
def test_predict_bad_input(run_pmn, tmp_path, env, case, msg):
    fa = tmp_path / "g.fa"
    fa.write_text(">c1\n" + decode(np.random.default_rng(0).integers(0, 4, 600).astype(np.uint8)) + "\n")
    out = tmp_path / "s.tsv"
    args = ["--fasta", fa, "--out", out]
    if case == "protein":
        (tmp_path / "protein.fa").write_text(">p1\n" + "MKTAYIAKQRQISFVKSHFSRQ" * 20 + "\n")
        args = ["--fasta", tmp_path / "protein.fa", "--out", out]
    elif case == "short":
        (tmp_path / "short.fa").write_text(">a\nACGTACGTAC\n>b\nACGT\n")
        args = ["--fasta", tmp_path / "short.fa", "--out", out]
    elif case == "window": args += ["--window", "100"]
    elif case == "bed_chrom":
        (tmp_path / "r.bed").write_text("chr9\t0\t300\n")
        args += ["--bed", tmp_path / "r.bed"]
    elif case == "other_tfs": args += ["--tfs", "CTCF,FOXP3"]
    elif case == "names":
        (tmp_path / "names.txt").write_text("A\nB\nC\n")
        args += ["--names", tmp_path / "names.txt"]
    elif case == "truncated":
        m = tmp_path / "model"
        shutil.copytree(shipped_model(), m)
        w = (m / "model.pt").read_bytes()
        (m / "model.pt").write_bytes(w[:len(w) // 3])
        args += ["--checkpoint", m]
    elif case == "no_dir": args = ["--fasta", fa, "--out", tmp_path / "no" / "such" / "s.tsv"]
    elif case == "under_file":
        (tmp_path / "afile").write_text("x")
        args = ["--fasta", fa, "--out", tmp_path / "afile" / "s.tsv"]
    elif case == "xlsx": args = ["--fasta", fa, "--out", tmp_path / "s.xlsx"]
    elif case == "csv_as_tsv": args = ["--fasta", fa, "--out", tmp_path / "s.csv", "--format", "tsv"]
    r = run_pmn("predict", *args, env=env)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    first = r.stderr.splitlines()[0]
    assert first.startswith("pmn predict: error: ") and msg in first, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.splitlines()) <= 2
    assert not out.exists() and not (tmp_path / "s.csv").exists() and not (tmp_path / "s.xlsx").exists()
