"""What a newcomer meets first: the front page's verdict table, the checks on the built book, and progress bars that
show at a terminal but never in notebook or book output (issue 13)."""
import fcntl
import json
import os
import pty
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import check_book  # noqa: E402
import verdict  # noqa: E402

RESULTS = ROOT / "results"


# --- the verdict table ------------------------------------------------------------------------------------------------

def test_verdict_table_is_up_to_date():
    "The saved table is what results/ gives now, from the same files (md5s): else run `make readme`."
    assert verdict.stale(RESULTS) == [], "\n".join(verdict.stale(RESULTS)) + "\nrun `make readme` (or `make verdict`)"


def test_verdict_table_shape():
    df, prov = verdict.load_saved(RESULTS)
    assert list(df.columns) == verdict.COLUMNS
    assert set(df.verdict) <= {"reproduced", "partly reproduced", "not reproduced", "not testable here"}
    assert all(df.why.str.len() > 0) and all(df.ours.str.len() > 0) and all(df.data.str.len() > 0)
    for chapter in df.chapter:  # every row links to a chapter of the book
        assert (ROOT / "nbs" / f"{chapter}.ipynb").exists(), chapter
        assert f"nbs/{chapter}" in check_book.toc_files(ROOT / "book" / "_toc.yml")
    for res in ("Table 3", "Table 4", "Table 5", "Table 6", "Prototype clustering"):
        assert df.result.str.startswith(res).any(), res
    assert prov["inputs"] and all(len(m) == 32 for m in prov["inputs"].values())


@pytest.fixture
def results_copy(tmp_path):
    "A copy of the results files the verdict table reads, and the saved table, in a scratch results folder."
    _, used = verdict.compute(RESULTS)
    for p in used:
        dest = tmp_path / p.relative_to(RESULTS)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, dest)
    verdict.save(tmp_path)
    assert verdict.stale(tmp_path) == []
    return tmp_path


def test_a_changed_result_changes_the_table(results_copy):
    "Worse MNIST accuracies for the PMN (λ=1): the table's cells change, and the saved table is reported stale."
    for f in results_copy.glob("mnist/paper/pmn1-s*/metrics.json"):
        m = json.loads(f.read_text()); m["test_acc"] = 98.0; f.write_text(json.dumps(m))
    why = verdict.stale(results_copy)
    assert any("metrics.json: changed" in w for w in why)
    assert any("Table 6: MNIST test accuracy" in w and "verdict" in w for w in why)
    df, _ = verdict.compute(results_copy)
    row = df.set_index("result").loc["Table 6: MNIST test accuracy (%) of the CNN and the PMNs"]
    assert row.verdict == "not reproduced" and "PMN (λ=1) 98.00 ± 0.00" in row.ours


def test_a_changed_file_with_the_same_numbers_is_still_stale(results_copy):
    "Any change to an input file (here only its formatting) must be followed by `make verdict`."
    f = results_copy / "trrust" / "table5" / "provenance.json"
    f.write_text(json.dumps(json.loads(f.read_text())))  # same content, other whitespace
    assert verdict.stale(results_copy) == [f"results/trrust/table5/provenance.json: changed since the verdict table was computed"]


def test_new_table4_layout_and_synthetic_modules_grid(results_copy):
    "When the re-run Table 4 grids land (new columns, Holm p-values, synth_table4/), the table reads them."
    import shutil
    old = results_copy / "ablations" / "synth_2000"
    new = results_copy / "ablations" / "synth_table4"
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir()
    prov = json.loads((RESULTS / "ablations" / "synth_2000" / "provenance.json").read_text())
    prov["data_source"] = "synthetic genome with planted modules (test)"
    (new / "provenance.json").write_text(json.dumps(prov))
    pd.DataFrame({"key": ["cnn_single", "cnn_multi", "pmn_lam1"], "name": ["CNN (single-label)", "CNN (multi-label)",
                                                                          "PMN (λ=1), sigmoid att"],
                  "n_seeds": 5, "auroc_mean": [0.70, 0.71, 0.80], "auroc_sd": [0.01, 0.02, 0.015],
                  "aupr_mean": 0.2}).to_csv(new / "table4.csv", index=False)
    pd.DataFrame({"grid": "synth_modules", "key": "pmn_lam1", "vs": ["cnn_single", "cnn_multi"], "diff_mean": [0.10, 0.09],
                  "diff_ci_low": [0.05, 0.04], "diff_ci_high": [0.15, 0.14], "p_ttest": [1e-4, 2e-4],
                  "p_seed": [0.01, 0.02], "p_holm": [0.02, 0.03]}).to_csv(new / "tests.csv", index=False)
    assert "results/ablations/synth_table4/table4.csv: " in " ".join(verdict.stale(results_copy))
    df, used = verdict.compute(results_copy)
    row = df[df.result.str.contains("synthetic")].iloc[0]
    assert row.verdict == "reproduced" and "Holm" in row.why
    assert row.ours.startswith("PMN (λ=1) 0.800 ± 0.015: vs CNN (single-label) +0.100 (p = 0.02)")
    assert "synthetic genome with planted modules (test)" in row.data and "5 seeds" in row.data
    assert new / "table4.csv" in used and old / "table4.csv" not in used
    # a Holm p above 0.05 turns the same row into "not reproduced"
    pd.read_csv(new / "tests.csv").assign(p_holm=[0.02, 0.2]).to_csv(new / "tests.csv", index=False)
    assert verdict.compute(results_copy)[0].query("result.str.contains('synthetic')").verdict.iloc[0] == "not reproduced"


def test_markdown_links_every_row():
    df, _ = verdict.load_saved(RESULTS)
    md = verdict.markdown(df)
    assert md.count("\n") == len(df) + 1
    for c in df.chapter: assert f"]({c}.html)" in md


# --- tools/check_book.py -------------------------------------------------------------------------------------------------

def _nb(outputs):
    return {"cells": [{"cell_type": "code", "source": "", "metadata": {}, "outputs": outputs}], "metadata": {},
            "nbformat": 4, "nbformat_minor": 5}


def test_check_book_finds_stderr_and_external_references(tmp_path):
    toc = tmp_path / "_toc.yml"
    toc.write_text("format: jb-book\nroot: nbs/index\nparts:\n  - caption: A\n    chapters:\n      - file: nbs/10_x\n")
    assert check_book.toc_files(toc) == ["nbs/index", "nbs/10_x"]
    b = tmp_path / "_build"
    assert check_book.check(b, toc) == [f"{b / 'html'}: no built book (run `make book`)"]
    (b / "html" / "nbs").mkdir(parents=True); (b / "html" / "_static").mkdir()
    (b / "jupyter_execute" / "nbs").mkdir(parents=True)
    good = '<script src="../_static/mathjax/tex-chtml.js"></script><link href="../_static/a.css" rel="stylesheet"/>'
    (b / "html" / "nbs" / "index.html").write_text(good)
    (b / "jupyter_execute" / "nbs" / "index.ipynb").write_text(json.dumps(_nb(
        [{"output_type": "stream", "name": "stdout", "text": ["fine\n"]}])))
    assert check_book.check(b, toc) == [f"{b / 'html/nbs/10_x'}.html: chapter in the toc but not built",
                                        f"{b / 'jupyter_execute/nbs/10_x.ipynb'}: chapter in the toc but not executed"]
    (b / "html" / "nbs" / "10_x.html").write_text(
        good + '<script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script>'
        '<script>const THEBE_JS_URL = "https://unpkg.com/thebe@0.8.2/lib/index.js"</script>')
    (b / "html" / "_static" / "f.css").write_text("@font-face{src:url(https://fonts.example.org/x.woff2)}")
    (b / "jupyter_execute" / "nbs" / "10_x.ipynb").write_text(json.dumps(_nb(
        [{"output_type": "stream", "name": "stderr", "text": ["\r  0%|          | 0/10\r 50%|#####     | 5/10"]}])))
    found = check_book.check(b, toc)
    assert any("10_x.ipynb: cell 0 writes stderr: '0%|" in f for f in found)
    assert any("external script" in f and "cdn.jsdelivr.net" in f for f in found)
    assert any("external a .js URL" in f and "unpkg.com/thebe" in f for f in found)
    assert any("f.css: external css url()" in f for f in found)
    assert not any("index.html" in f for f in found)
    assert check_book.external_refs('<a href="https://example.org/page.html">a link is fine</a>') == []


def test_the_built_book_passes_its_check():
    "After `make book` (which runs tools/check_book.py itself, so this is a second look, not the only one)."
    build = ROOT / "book" / "_build"
    if not (build / "html").is_dir(): pytest.skip("no built book here; `make book` runs tools/check_book.py itself")
    assert check_book.check(build, ROOT / "book" / "_toc.yml") == []


def test_book_config_is_offline():
    import yaml
    ext = yaml.safe_load((ROOT / "book" / "_config.yml").read_text())["sphinx"]["config"]["extensions"]
    assert "sphinx-mathjax-offline" in ext and "sphinx_thebe" not in ext  # thebe names a script on unpkg.com
    assert "sphinx-mathjax-offline==" in (ROOT / "settings.ini").read_text()


# --- progress bars: at a terminal, and nowhere else ------------------------------------------------------------------

def _pmn(tmp_path, tty: bool, progress: str | None):
    "Run a small `pmn synth`, its stderr a pseudo-terminal or a pipe; return (exit code, stderr text)."
    exe = Path(sys.executable).with_name("pmn")
    env = {k: v for k, v in os.environ.items() if k != "PMN_PROGRESS"}
    if progress is not None: env["PMN_PROGRESS"] = progress
    cmd = [str(exe), "synth", "--preset", "tiny", "--size", "300k", "--seed", "1", "--out", str(tmp_path / f"g{tty}{progress}")]
    if not tty:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        return r.returncode, r.stderr
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal has a size; a bare pty 0x0
    p = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try: data = os.read(master, 65536)
        except OSError: break  # EIO: the child closed the terminal
        if not data: break
        chunks.append(data)
    os.close(master)
    return p.wait(timeout=300), b"".join(chunks).decode(errors="replace")


def test_progress_bar_at_a_terminal_only(tmp_path):
    code, err = _pmn(tmp_path, tty=True, progress=None)
    assert code == 0 and "pmn synth" in err and "100%" in err  # a person at a terminal sees the bar
    code, err = _pmn(tmp_path, tty=False, progress=None)
    assert code == 0 and err == ""  # a notebook, the book, a log, CI: no bar, nothing on stderr
    code, err = _pmn(tmp_path, tty=False, progress="1")
    assert code == 0 and "pmn synth" in err  # PMN_PROGRESS=1 forces it


def test_seed_level_layout_uses_the_ci(results_copy):
    "`pmn ablate` results (better/than/metric rows with a bootstrap CI): the verdict follows the CI of PMN minus each CNN."
    g = results_copy / "ablations" / "chr22_table4"
    g.mkdir(exist_ok=True)
    prov = json.loads((RESULTS / "ablations" / "synth_2000" / "provenance.json").read_text())
    (g / "provenance.json").write_text(json.dumps(prov))
    pd.DataFrame({"key": ["cnn_single", "cnn_multi", "pmn_lam1"], "name": ["CNN (single-label)", "CNN (multi-label)",
                                                                          "PMN (λ=1), sigmoid att"],
                  "n_seeds": 3, "auroc_mean": [0.70, 0.71, 0.72], "auroc_sd": [0.01, 0.02, 0.015]}).to_csv(g / "table4.csv", index=False)
    tests = pd.DataFrame({"better": "pmn_lam1", "than": ["cnn_single", "cnn_multi"], "metric": "auroc", "seeds": 3,
                          "mean_diff": [0.02, 0.01], "p_ttest": [1e-5, 1e-3], "diff_mean": [0.02, 0.01],
                          "diff_ci_low": [0.01, -0.005], "diff_ci_high": [0.03, 0.02], "p_seed": [0.01, 0.3],
                          "p_holm": [0.02, 0.3]})
    tests.to_csv(g / "tests.csv", index=False)
    row = verdict.compute(results_copy)[0].query("result.str.contains('real chr22')").iloc[0]
    assert row.verdict == "not reproduced" and "95 % CI -0.005 to +0.020" in row.ours, row.ours
    tests.assign(diff_ci_low=[0.01, 0.001]).to_csv(g / "tests.csv", index=False)
    assert verdict.compute(results_copy)[0].query("result.str.contains('real chr22')").verdict.iloc[0] == "reproduced"
