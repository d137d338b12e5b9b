"""`pmn reproduce` as a user meets it: end to end through file:// URLs on data/ (quick profile) and on the synthetic
genome, reruns and resumes, a download killed half-way and resumed (over a loopback HTTP server: no network), the
portal-only TFs left out or added with --extra-peaks, the paper plan of --dry-run, and every error path of the command.
`pmn predict` is tested in tests/test_predict.py.

The chapter (nbs/80_reproduce.ipynb) tests the functions; these tests need subprocesses, a server or longer runs.
"""
import gzip
import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pmn_nb.core import PMNError, data_path, file_md5
from pmn_nb.dna import decode
from pmn_nb.reproduce import (Reproduction, ResumableDownloader, fetch, local_manifest, paper_manifest, quick_manifest,
                              read_manifest, write_manifest)
from pmn_nb.windows import CHR22_FASTA, build_store, chr22_params, load_store

THREADS = {"OMP_NUM_THREADS": "1"}  # the test machine is shared: one thread avoids waiting on busy cores


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    "Refuse connections to anything but the loopback interface."
    real = socket.socket.connect

    def connect(self, address, *a, **k):
        host = address[0] if isinstance(address, tuple) else address
        if host not in ("127.0.0.1", "localhost", "::1"): raise AssertionError(f"network access attempted: {address}")
        return real(self, address, *a, **k)
    monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.fixture
def env(tmp_path):
    "Cache and results under tmp_path, so that nothing is written into the checkout."
    return {"PMN_CACHE": str(tmp_path / "cache"), "PMN_RESULTS": str(tmp_path / "results"), **THREADS}


# --- manifest --------------------------------------------------------------------------------------------------------

def test_paper_manifest_covers_the_86_labels():
    m = paper_manifest()
    pk = m[m.kind == "peaks"]
    assert pk.tf.nunique() == 86
    counts = pk.groupby("source").tf.nunique().to_dict()
    assert counts == {"ucsc_uniform": 72, "encode_dream": 2, "ucsc_sydh": 7, "encode_portal": 5}
    ucsc = pk[pk.url.str.contains("hgdownload.soe.ucsc.edu")]
    assert len(ucsc) == 80 and (ucsc.md5.str.len() == 32).all()  # every UCSC file is verified after download
    assert (pk[pk.source == "ucsc_sydh"].confirmed == "yes").all()
    assert set(m.kind) == {"genome", "chrom_sizes", "peaks", "trrust", "mnist"}
    for r in m[m.local != ""].itertuples():  # staged copies are where the manifest says, with its md5
        assert file_md5(data_path(*r.local.split("/"))) == r.local_md5


def test_written_manifest_reads_back_and_errors_name_the_line(tmp_path):
    m = paper_manifest()
    write_manifest(m, tmp_path / "m.tsv")
    pd.testing.assert_frame_equal(read_manifest(tmp_path / "m.tsv"), m)
    bad = m.copy()
    bad.loc[10, "kind"] = "genomes"
    bad.to_csv(tmp_path / "bad.tsv", sep="\t", index=False)
    with pytest.raises(PMNError, match=r"bad.tsv:12: unknown kind 'genomes'"): read_manifest(tmp_path / "bad.tsv")
    bad = m[m.kind != "genome"]
    bad.to_csv(tmp_path / "bad.tsv", sep="\t", index=False)
    with pytest.raises(PMNError, match="exactly one genome row, found 0"): read_manifest(tmp_path / "bad.tsv")
    bad = m.copy()
    bad.loc[3, "dest"] = "../outside.gz"
    bad.to_csv(tmp_path / "bad.tsv", sep="\t", index=False)
    with pytest.raises(PMNError, match=r"bad.tsv:5: dest must be a relative path"): read_manifest(tmp_path / "bad.tsv")


def test_plain_and_relative_paths_in_a_manifest(tmp_path):
    src = tmp_path / "mirror" / "x.narrowPeak.gz"
    src.parent.mkdir()
    src.write_bytes(gzip.compress(b"chr1\t0\t10\n"))
    m = quick_manifest().iloc[[0]].copy()
    m = pd.concat([m, pd.DataFrame([{**m.iloc[0].to_dict(), "kind": "peaks", "tf": "X", "dest": "peaks/x.narrowPeak.gz",
                                      "url": "mirror/x.narrowPeak.gz", "md5": file_md5(src)}])], ignore_index=True)
    m.loc[0, "url"] = str(data_path(*CHR22_FASTA))  # an absolute plain path
    write_manifest(m, tmp_path / "m.tsv")
    res = fetch(tmp_path / "m.tsv", tmp_path / "dl", show_progress=False)  # relative to the manifest's folder
    assert res.action.tolist() == ["copied", "copied"]
    assert file_md5(tmp_path / "dl" / "peaks" / "x.narrowPeak.gz") == file_md5(src)


# --- resumable download over a loopback server -----------------------------------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    payload, cut, seen = b"", 0, []

    def log_message(self, *a): pass

    def do_GET(self):
        rng = self.headers.get("Range")
        type(self).seen.append(rng)
        data, start = self.payload, 0
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if not rng and self.cut:  # first request: send part of the body, then drop the connection
            self.wfile.write(data[:self.cut])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(data[start:])


@pytest.fixture
def server():
    _Handler.payload = np.random.default_rng(0).integers(0, 256, 3_000_000, dtype=np.uint8).tobytes()
    _Handler.cut, _Handler.seen = 1_000_000, []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/hg19.fa.gz"
    httpd.shutdown()


def _remote_manifest(url, md5):
    m = quick_manifest().iloc[[0]].copy()
    m.loc[:, ["url", "md5", "dest"]] = [url, md5, "genome/remote.fa.gz"]
    return m


def test_download_killed_half_way_resumes(server, tmp_path):
    md5 = __import__("hashlib").md5(_Handler.payload).hexdigest()
    with pytest.raises(PMNError, match="download failed") as e:  # no retries: the dropped connection is an error ...
        fetch(_remote_manifest(server, md5), tmp_path / "dl", retries=0, show_progress=False)
    assert "run again to resume" in str(e.value)
    part = tmp_path / "dl" / "genome" / "remote.fa.gz.part"
    kept = part.stat().st_size
    assert 0 < kept <= _Handler.cut  # ... and what arrived is kept (up to the last complete chunk)
    res = fetch(_remote_manifest(server, md5), tmp_path / "dl", retries=0, show_progress=False)
    assert res.action.tolist() == ["downloaded"] and res.checksum.tolist() == ["ok"]
    assert _Handler.seen == [None, f"bytes={kept}-"]  # the second request asked only for the rest
    assert file_md5(tmp_path / "dl" / "genome" / "remote.fa.gz") == md5 and not part.exists()
    assert fetch(_remote_manifest(server, md5), tmp_path / "dl", show_progress=False).action.tolist() == ["cached"]


def test_download_retries_and_resumes_within_one_call(server, tmp_path):
    md5 = __import__("hashlib").md5(_Handler.payload).hexdigest()
    res = fetch(_remote_manifest(server, md5), tmp_path / "dl", retries=2, show_progress=False)  # pooch's retry_if_failed
    assert res.action.tolist() == ["downloaded"]
    assert len(_Handler.seen) == 2 and _Handler.seen[0] is None and _Handler.seen[1].startswith("bytes=")
    assert 0 < int(_Handler.seen[1][6:-1]) <= _Handler.cut


def test_download_with_a_wrong_checksum_is_refused(server, tmp_path):
    _Handler.cut = 0
    with pytest.raises(PMNError, match="download failed"):
        fetch(_remote_manifest(server, "0" * 32), tmp_path / "dl", retries=0, show_progress=False)
    assert not (tmp_path / "dl" / "genome" / "remote.fa.gz").exists()


def test_resumable_downloader_restarts_when_the_server_ignores_range(tmp_path, server):
    _Handler.cut = 0
    part = tmp_path / "x.part"
    part.write_bytes(b"stale bytes from another file")
    orig = _Handler.do_GET

    def no_range(self):  # a server without Range support answers 200 with the whole file
        del self.headers["Range"]
        orig(self)
    _Handler.do_GET = no_range
    try: ResumableDownloader(part, progressbar=False)(server, tmp_path / "out")
    finally: _Handler.do_GET = orig
    assert (tmp_path / "out").read_bytes() == _Handler.payload


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
    assert ("not valid JSON" in err) or ("not available in this installation" in err)
    assert f"resume with: pmn reproduce --profile quick --workdir {w} --manifest {tmp_path / 'synth.tsv'} --grid {grid} --from ablate" in err
    assert (w / "ablate.failed").exists() and not (w / "ablate.done").exists()
    r = run_pmn("reproduce", "--manifest", tmp_path / "synth.tsv", "--workdir", w, "--only", "trrust", env=env)
    assert r.returncode == 2 and "stage 'trrust' needs ablate" in r.stderr


@pytest.mark.skipif(__import__("importlib").util.find_spec("pmn_nb.ablations") is not None,
                    reason="pmn_nb.ablations is installed")
def test_missing_ablation_runner_is_reported(tmp_path, monkeypatch):
    from pmn_nb.synth import synth_genome
    sg = synth_genome("tiny", root=tmp_path / "cache")
    m = local_manifest(sg / "genome.fa", sg / "tfs.tsv")
    write_manifest(m, tmp_path / "m.tsv")
    monkeypatch.setenv("PMN_CACHE", str(tmp_path / "cache"))
    rp = Reproduction(manifest=str(tmp_path / "m.tsv"), workdir=str(tmp_path / "w"), downloads=str(tmp_path / "dl"))
    rp.run(["fetch", "windows"], log=lambda s: None)
    with pytest.raises(PMNError, match="`pmn ablate` is not available in this installation"): rp.run(["ablate"], log=lambda s: None)


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


def test_paper_fetch_uses_staged_copies_and_skip_missing(tmp_path):
    m = paper_manifest()
    m = m[(m.local != "") | (m.source == "encode_portal")].reset_index(drop=True)
    res = fetch(m, tmp_path / "dl", show_progress=False)  # no network needed: everything comes from data/ or is manual
    assert set(res.action) == {"copied", "manual"}
    assert res[res.action == "copied"].source.str.startswith("data/").all()
    sydh = paper_manifest()
    sydh = sydh[sydh.source == "ucsc_sydh"].iloc[[0]].copy()
    sydh.loc[:, "url"] = "http://127.0.0.1:9/nothing.narrowPeak.gz"  # a closed port: the download fails at once
    res = fetch(sydh, tmp_path / "dl", skip_missing=True, retries=0, show_progress=False)
    assert res.action.tolist() == ["failed"] and "download failed" in res.message[0]


@pytest.mark.skipif(__import__("importlib").util.find_spec("pmn_nb.ablations") is None,
                    reason="the ablation runner (pmn_nb.ablations) is not installed")
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
