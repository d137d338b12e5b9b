"""`pmn trrust` as a user meets it: Table 5 from the raw TRRUST table, a model's TF vectors, clear errors."""
import json

import pandas as pd
import pytest


def test_help(run_pmn):
    r = run_pmn("trrust", "--help")
    assert r.returncode == 0, r.stderr
    assert "usage: pmn trrust" in r.stdout and "--checkpoint" in r.stdout and "--background" in r.stdout


def test_table5_from_raw_table(run_pmn, tmp_path):
    r = run_pmn("trrust", "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert "shared counts equal: 7 of 10" in r.stdout
    t = pd.read_csv(tmp_path / "out" / "table5.csv")
    assert t.shared_file.tolist() == [8, 4, 3, 8, 13, 10, 8, 2, 2, 2]
    assert t.shared_paper.tolist() == [9, 4, 3, 8, 2, 2, 8, 2, 2, 2]
    prov = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert prov["config"]["background_N"] == 20_000
    assert prov["data"]["data/trrust/trrust_rawdata.human.tsv"] == "63bed867f32fa6519a4ee481bcee0785"


def test_background_changes_p_not_counts(run_pmn, tmp_path):
    assert run_pmn("trrust", "--out", tmp_path / "a").returncode == 0
    assert run_pmn("trrust", "--out", tmp_path / "b", "--background", "2862").returncode == 0
    a, b = (pd.read_csv(tmp_path / x / "table5.csv") for x in "ab")
    assert (a.shared_file == b.shared_file).all()
    assert (b.p_file > a.p_file).all()  # a smaller background makes the same overlap less surprising


def test_other_trrust_file(run_pmn, tmp_path):
    f = tmp_path / "mini.tsv"
    f.write_text("MYC\tCCND1\tActivation\t1\nEP300\tCCND1\tUnknown\t2\nMYC\tTERT\tActivation\t3\n")
    r = run_pmn("trrust", "--trrust", f, "--out", tmp_path / "out", "--background", "100")
    assert r.returncode == 0, r.stderr
    t = pd.read_csv(tmp_path / "out" / "table5.csv")
    row = t[(t.tf_a == "MYC") & (t.tf_b == "EP300")].iloc[0]
    assert (row.n_a, row.n_b, row.shared_file) == (2, 1, 1)
    assert abs(row.p_file - 2 / 100) < 1e-12  # P(X >= 1) for K=2, n=1, N=100


@pytest.mark.parametrize("content, message", [
    ("MYC\tCCND1\tActivation\n", "expected 4 tab-separated fields"),
    ("MYC\tCCND1\tUp\t1\n", "unknown mode"),
    ("AR\tSep-07\tUnknown\t1\n", "looks like a date"),
])
def test_bad_trrust_file_is_one_line_error(run_pmn, tmp_path, content, message):
    f = tmp_path / "bad.tsv"
    f.write_text("MYC\tCCND1\tActivation\t1\n" + content)
    r = run_pmn("trrust", "--trrust", f, "--out", tmp_path / "out")
    assert r.returncode == 2
    assert r.stderr.startswith("pmn trrust: error: ") and "bad.tsv:2: " in r.stderr and message in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_bad_quantiles(run_pmn, tmp_path):
    r = run_pmn("trrust", "--checkpoint", tmp_path, "--quantiles", "0.5,2", "--out", tmp_path / "out")
    assert r.returncode == 2 and "[0, 1]" in r.stderr


def test_missing_checkpoint(run_pmn, tmp_path):
    r = run_pmn("trrust", "--checkpoint", tmp_path / "nope", "--out", tmp_path / "out")
    assert r.returncode == 2 and "checkpoint not found" in r.stderr and "Traceback" not in r.stderr


def test_checkpoint_analysis(run_pmn, tmp_path):
    from pmn_nb.model import ModelConfig, build_model, save_model
    names = ["MYC", "EP300", "USF1", "E2F4", "RELA", "PAX5", "ATF2", "CREB1", "YY1", "STAT5A", "BRCA1", "STAT3",
             "ZZZ3"]  # ZZZ3 is not a TRRUST regulator: it is left out of the tests, not an error
    save_model(build_model(ModelConfig.quick(n_labels=len(names))), tmp_path / "model")
    (tmp_path / "names.txt").write_text("\n".join(names) + "\n")
    (tmp_path / "meta.json").write_text(json.dumps({"tf_names": names[:-1]}))
    r = run_pmn("trrust", "--checkpoint", tmp_path / "model", "--names", tmp_path / "names.txt",
                "--out", tmp_path / "out", "--n-perm", "200", "--quantiles", "0.5,0.9")
    assert r.returncode == 0, r.stderr
    assert "PMN prototypes: 13 TFs" in r.stdout
    e = pd.read_csv(tmp_path / "out" / "enrichment.csv")
    assert e.cut.unique().tolist() == ["0.7 x max", "quantile 0.5", "quantile 0.9"] and len(e) == 6
    assert (e.n_tfs == 12).all()
    assert ((e.p > 0) & (e.p <= 1)).all()
    assert (tmp_path / "out" / "dendrogram.png").stat().st_size > 1000
    link = json.loads((tmp_path / "out" / "linkage.json").read_text())
    assert link["names"] == names and len(link["Z"]) == len(names) - 1
    # names from a window store's meta.json must match the model's size
    r = run_pmn("trrust", "--checkpoint", tmp_path / "model", "--names", tmp_path / "meta.json", "--out", tmp_path / "o2")
    assert r.returncode == 2 and "12 TF names for 13 vectors" in r.stderr
