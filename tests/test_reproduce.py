"""`pmn reproduce` as a user meets it: end to end through file:// URLs on data/ (quick profile) and on the synthetic
genome, reruns and resumes, the stage commands and their arguments, the portal-only TFs left out or added with
--extra-peaks, the paper plan of --dry-run, and every error path of the command. The manifest and the downloader are
tested in tests/test_fetch.py, `pmn predict` in tests/test_predict.py.

The chapter (nbs/80_reproduce.ipynb) tests the functions; these tests need subprocesses or longer runs.
"""
import argparse
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pmn_nb import cli, reproduce
from pmn_nb.core import data_path
from pmn_nb.fetch import local_manifest, paper_manifest, quick_manifest, read_manifest, write_manifest
from pmn_nb.reproduce import DEVICE_COMMANDS, Reproduction
from pmn_nb.windows import CHR22_FASTA, build_store, chr22_params, load_store

THREADS = {"OMP_NUM_THREADS": "1"}  # the test machine is shared: one thread avoids waiting on busy cores


pytestmark = pytest.mark.usefixtures("no_network")  # tests/conftest.py: only the loopback interface


@pytest.fixture
def env(tmp_path):
    "Cache and results under tmp_path, so that nothing is written into the checkout."
    return {"PMN_CACHE": str(tmp_path / "cache"), "PMN_RESULTS": str(tmp_path / "results"), **THREADS}


# --- pmn reproduce end to end ----------------------------------------------------------------------------------------

def test_quick_profile_fetch_and_windows_end_to_end(run_pmn, tmp_path, env):
    w = tmp_path / "work"
    r = run_pmn("reproduce", "--profile", "quick", "--workdir", w, "--until", "windows", env=env)
    assert r.returncode == 0, r.stderr
    assert "[1/2] fetch: running" in r.stdout and "[2/2] windows: done" in r.stdout
    rec = json.loads((w / "fetch.done").read_text())
    fetched = pd.read_csv(w / "fetch" / "fetch.csv")
    assert set(fetched.action) == {"copied"} and (fetched.checksum == "ok").all()
    assert all(s.startswith("/") for s in fetched.source)  # file:// URLs of data/, not the data/ shortcut
    assert rec["outputs"]["tfs"] == 78 and rec["outputs"]["missing_tfs"] == []
    st = load_store(json.loads((w / "windows.done").read_text())["outputs"]["store"])
    ref = build_store(data_path(*CHR22_FASTA), data_path("genome", "gm12878_tfs.tsv"), tmp_path / "ref", chr22_params(),
                      show_progress=False, cache=tmp_path / "cache")
    pd.testing.assert_frame_equal(st.counts(), ref.counts())
    assert st.tf_names == ref.tf_names
    for s in ("train", "valid", "test"):
        assert np.array_equal(np.asarray(st.labels(s)), np.asarray(ref.labels(s)))
    # a rerun skips both stages and leaves the markers alone
    before = {s: (w / f"{s}.done").read_text() for s in ("fetch", "windows")}
    r = run_pmn("reproduce", "--profile", "quick", "--workdir", w, "--until", "windows", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("skipped") == 2
    assert before == {s: (w / f"{s}.done").read_text() for s in ("fetch", "windows")}
    # --force reruns a stage; --status shows the states
    r = run_pmn("reproduce", "--profile", "quick", "--workdir", w, "--only", "windows", "--force", env=env)
    assert r.returncode == 0 and "[1/1] windows: running" in r.stdout
    r = run_pmn("reproduce", "--profile", "quick", "--workdir", w, "--status", env=env)
    assert "windows    done" in r.stdout and "ablate pending" in r.stdout.replace("  ", " ").replace("  ", " ")


def test_synthetic_genome_end_to_end(run_pmn, tmp_path, env):
    from pmn_nb.synth import synth_genome
    sg = synth_genome("tiny", root=tmp_path / "cache")
    write_manifest(local_manifest(sg / "genome.fa", sg / "tfs.tsv", sg / "chrom.sizes"), tmp_path / "synth.tsv")
    w = tmp_path / "work"
    r = run_pmn("reproduce", "--manifest", tmp_path / "synth.tsv", "--workdir", w, "--only", "fetch,windows", env=env)
    assert r.returncode == 0, r.stderr
    st = load_store(w / "store")
    ref = build_store(sg / "genome.fa", sg / "tfs.tsv", tmp_path / "ref", show_progress=False, cache=tmp_path / "cache")
    pd.testing.assert_frame_equal(st.counts(), ref.counts())
    for s in ("train", "valid", "test"):
        assert np.array_equal(np.asarray(st.seq(s)), np.asarray(ref.seq(s)))
    # a changed rule reruns windows only
    r = run_pmn("reproduce", "--manifest", tmp_path / "synth.tsv", "--workdir", w, "--until", "windows", "--split", "position", env=env)
    assert r.returncode == 0, r.stderr
    assert "[1/2] fetch: done" in r.stdout and "[2/2] windows: running" in r.stdout


def test_a_failed_stage_says_how_to_resume(run_pmn, tmp_path, env):
    from pmn_nb.synth import synth_genome
    sg = synth_genome("tiny", root=tmp_path / "cache")
    write_manifest(local_manifest(sg / "genome.fa", sg / "tfs.tsv"), tmp_path / "synth.tsv")
    w = tmp_path / "work"
    assert run_pmn("reproduce", "--manifest", tmp_path / "synth.tsv", "--workdir", w, "--until", "windows", env=env).returncode == 0
    grid = tmp_path / "grid.json"
    grid.write_text("{not json")
    r = run_pmn("reproduce", "--manifest", tmp_path / "synth.tsv", "--workdir", w, "--from", "ablate", "--grid", grid, env=env)
    assert r.returncode == 2
    err = r.stderr
    assert "stage 'ablate' failed" in err
    assert "not valid JSON" in err
    assert f"resume with: pmn reproduce --profile quick --workdir {w} --manifest {tmp_path / 'synth.tsv'} --grid {grid} --from ablate" in err
    assert (w / "ablate.failed").exists() and not (w / "ablate.done").exists()
    r = run_pmn("reproduce", "--manifest", tmp_path / "synth.tsv", "--workdir", w, "--only", "trrust", env=env)
    assert r.returncode == 2 and "stage 'trrust' needs ablate" in r.stderr


class _Parsed(Exception):
    "Raised instead of running a command, once its parser has accepted the arguments."


def test_stage_commands_accept_their_arguments(tmp_path, monkeypatch):
    "Every stage that runs `pmn COMMAND` gives it arguments its parser accepts: the profile first, --device where it trains."
    calls = []
    monkeypatch.setattr(reproduce.subprocess, "run", lambda argv, **k: calls.append(argv[3:]) or subprocess.CompletedProcess(argv, 0))
    monkeypatch.setattr(reproduce, "find_pmn_run", lambda folder: Path(folder) / "pmn_lam1")
    monkeypatch.setenv("PMN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PMN_DEVICE", raising=False)
    monkeypatch.delenv("PMN_PROFILE", raising=False)
    rp = Reproduction(profile="paper", device="cpu", workdir=str(tmp_path / "w"))
    rp.workdir.mkdir(parents=True)
    done = {"fetch": {"trrust": str(tmp_path / "trrust.tsv"), "mnist": str(tmp_path / "mnist")},
            "windows": {"store": str(tmp_path / "store")}, "ablate": {"out": str(tmp_path / "ablate")}}
    for s, out in done.items(): rp.marker(s).write_text(json.dumps({"outputs": out}))
    for s in ("ablate", "trrust", "mnist"): getattr(rp, f"_stage_{s}")(lambda m: None)
    assert [c[:3] for c in calls] == [["--profile", "paper", s] for s in ("ablate", "trrust", "mnist")]
    real = argparse.ArgumentParser.parse_args

    def parse_only(self, args=None, namespace=None):
        ns = real(self, args, namespace)
        if self.prog != "pmn": raise _Parsed(ns)
        return ns
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_only)
    for argv in calls:
        with pytest.raises(_Parsed) as e: cli.main(argv)  # an argument the command does not take exits with code 2 instead
        ns = e.value.args[0]
        assert ("--device" in argv) == (argv[2] in DEVICE_COMMANDS)
        if hasattr(ns, "device"): assert ns.device == "cpu", (argv, "takes --device but is not given it")
        if hasattr(ns, "profile"): assert ns.profile == "paper"


def test_dry_run_and_write_manifest(run_pmn, tmp_path, env):
    r = run_pmn("reproduce", "--profile", "paper", "--dry-run", "--downloads", tmp_path / "dl", "--workdir", tmp_path / "w", env=env)
    assert r.returncode == 0, r.stderr
    assert "would download" in r.stdout and "would copy" in r.stdout and "manual" in r.stdout
    assert re.search(r"would download\s+8 files", r.stdout)  # hg19.fa.gz and the 7 SYDH files
    assert re.search(r"would download\s+size unknown  genome/hg19.fa.gz  <- http://hgdownload.soe.ucsc.edu/", r.stdout)
    assert re.search(r"would copy\s+0.00 MB  genome/hg19.chrom.sizes  <- data/genome/hg19.chrom.sizes", r.stdout)
    assert not (tmp_path / "dl").exists() and not (tmp_path / "w").exists()
    plan = r.stdout[r.stdout.index("plan of the paper profile:"):]
    assert "(UCSC files: 80 of 80)" in plan and "labels: 81 of 86 TFs have a file" in plan
    assert "BRD4, POLR3A, STAG1, TCF7L1, TP53 (add them with --extra-peaks DIR" in plan
    assert re.search(r"disk: about \d+ GB", plan) and re.search(r"GPU time: ablate [\d,]+-[\d,]+ GPU hours \(assumed", plan)
    r = run_pmn("reproduce", "--profile", "paper", "--write-manifest", tmp_path / "m.tsv", env=env)
    assert r.returncode == 0 and read_manifest(tmp_path / "m.tsv").equals(paper_manifest())
    r = run_pmn("reproduce", "--only", "fetch", "--from", "windows", env=env)
    assert r.returncode == 2 and "--only cannot be combined" in r.stderr
    r = run_pmn("reproduce", "--only", "fetch,train", env=env)
    assert r.returncode == 2 and "unknown stage 'train'" in r.stderr


def test_ablate_trrust_results_stages_end_to_end(run_pmn, tmp_path, env):
    "The training stages with a one-row, two-step grid on the tiny synthetic genome: ablate -> trrust -> results."
    from pmn_nb.synth import synth_genome
    sg = synth_genome("tiny", root=tmp_path / "cache")
    write_manifest(local_manifest(sg / "genome.fa", sg / "tfs.tsv"), tmp_path / "synth.tsv")
    grid = {"name": "tiny", "profile": "quick", "seeds": [0], "valid_size": 256, "test_curve_size": 0,
            "train": {"epochs": 1, "batch_size": 16, "max_steps_per_epoch": 2, "train_eval_size": 64, "eval_batch_size": 256,
                      "checkpoint_every": 10},
            "model": {"conv_channels": [8, 8, 8], "d": 8, "hops": 2},
            "rows": [{"key": "pmn_lam1", "name": "PMN (λ=1), sigmoid att", "model": {"kind": "pmn"}, "lam": 1.0}]}
    (tmp_path / "grid.json").write_text(json.dumps(grid))
    w = tmp_path / "work"
    args = ["reproduce", "--manifest", tmp_path / "synth.tsv", "--workdir", w, "--grid", tmp_path / "grid.json", "--n-perm", "50"]
    r = run_pmn(*args, "--only", "fetch,windows,ablate,trrust,results", env=env, timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for s in ("fetch", "windows", "ablate", "trrust", "results"): assert (w / f"{s}.done").exists()
    rec = json.loads((w / "trrust.done").read_text())
    assert Path(rec["outputs"]["checkpoint"]).parent.name == "pmn_lam1"
    res = Path(env["PMN_RESULTS"]) / "reproduce" / "run-quick"
    assert (res / "provenance.json").exists() and (res / "windows_table3.csv").exists()
    summary = json.loads((res / "summary.json").read_text())
    assert summary["stages"]["ablate"]["state"] == "done" and summary["stages"]["mnist"]["state"] == "pending"
    assert any(f.name.startswith("ablate_") for f in res.iterdir()) and any(f.name.startswith("trrust_") for f in res.iterdir())
    # everything is skipped on a rerun
    r = run_pmn(*args, "--only", "fetch,windows,ablate,trrust,results", env=env)
    assert r.returncode == 0 and r.stdout.count("skipped") == 5


def test_portal_tfs_are_left_out_or_added_with_extra_peaks(run_pmn, tmp_path, env):
    "The paper manifest's staged and portal-only peak rows on the chr22 sample: the run goes on without the 5 portal-only TFs"
    " and says so; --extra-peaks adds one of them; a bad extra file stops the run naming the file."
    pm, qm = paper_manifest(), quick_manifest()
    m = pd.concat([qm[qm.kind == "genome"], pm[(pm.kind == "peaks") & ((pm.local != "") | (pm.source == "encode_portal"))]])
    write_manifest(m, tmp_path / "m.tsv")
    w = tmp_path / "work"
    args = ["reproduce", "--manifest", tmp_path / "m.tsv", "--workdir", w, "--only", "fetch,windows", "--split", "position",
            "--region", "chr22:16050001-22000000"]
    r = run_pmn(*args, env=env)
    assert r.returncode == 0, r.stderr
    assert "labels: 74 of 79 TFs have a peak file; left out: BRD4, POLR3A, STAG1, TCF7L1, TP53" in r.stdout
    assert "--extra-peaks DIR" in r.stdout
    st = load_store(w / "store")
    assert len(st.tf_names) == 74 and "POLR3A" not in st.tf_names
    ex = tmp_path / "extra"
    ex.mkdir()
    (ex / "POLR3A.narrowPeak.gz").write_bytes(data_path("genome", "peaks", "gm12878_tf_peaks_hg19_chr22_1-22000000.narrowPeak.gz").read_bytes())
    r = run_pmn(*args, "--extra-peaks", ex, env=env)
    assert r.returncode == 0, r.stderr
    assert "[1/2] fetch: running" in r.stdout and "labels: 75 of 79 TFs have a peak file; left out: BRD4, STAG1, TCF7L1, TP53" in r.stdout
    st = load_store(w / "store")
    assert "POLR3A" in st.tf_names and int(np.asarray(st.labels("train"))[:, st.tf_names.index("POLR3A")].sum()) > 0
    (ex / "TP53.narrowPeak").write_text("chr22\t100\n")
    r = run_pmn(*args, "--extra-peaks", ex, env=env)
    assert r.returncode == 2 and "TP53.narrowPeak:1: expected tab-separated peak columns" in r.stderr, r.stderr
