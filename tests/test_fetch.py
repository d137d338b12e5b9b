"""Fetching the paper's data: the manifest of the 86 labels, manifests written and read back, plain and relative paths,
a download killed half-way and resumed (over a loopback HTTP server: no network), checksums, staged copies and
--skip-missing. `pmn reproduce`, which runs the fetch as its first stage, is tested in tests/test_reproduce.py.

The chapter (nbs/78_fetch.ipynb) tests the functions; these tests need a server or longer runs.
"""
import gzip
import hashlib
import http.server
import socket
import threading

import numpy as np
import pandas as pd
import pytest

from pmn_nb.core import PMNError, data_path, file_md5
from pmn_nb.fetch import ResumableDownloader, fetch, paper_manifest, quick_manifest, read_manifest, write_manifest
from pmn_nb.windows import CHR22_FASTA


pytestmark = pytest.mark.usefixtures("no_network")  # tests/conftest.py: only the loopback interface


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
    md5 = hashlib.md5(_Handler.payload).hexdigest()
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
    md5 = hashlib.md5(_Handler.payload).hexdigest()
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


# --- staged copies and failed downloads -----------------------------------------------------------------------

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
