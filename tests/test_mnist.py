"""MNIST appendix (pmn_nb.mnist): checksummed IDX loading, the download path against a local HTTP server, and `pmn mnist`."""
import functools
import gzip
import http.server
import json
import shutil
import threading

import numpy as np
import pytest

from pmn_nb.core import PMNError
from pmn_nb.mnist import MNIST_HASHES, fetch_mnist, load_mnist, mnist_dir, read_idx, run_finished


@pytest.fixture
def mnist_copy(tmp_path):
    "A private copy of the four real MNIST files."
    d = tmp_path / "mnist"
    d.mkdir()
    for f in MNIST_HASHES: shutil.copy(mnist_dir() / f, d / f)
    return d


def test_real_files_load():
    x, y = load_mnist("test")
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8
    assert y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # the well-known first ten test labels


@pytest.mark.parametrize("name", sorted(MNIST_HASHES))
def test_any_flipped_byte_is_refused(mnist_copy, name):
    p = mnist_copy / name
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0x01
    p.write_bytes(bytes(b))
    split = "train" if name.startswith("train") else "test"
    with pytest.raises(PMNError, match=f"{name}: checksum mismatch"):
        load_mnist(split, root=mnist_copy)


def test_valid_gzip_of_other_content_is_refused(mnist_copy):
    "A well-formed IDX file that is not the original (e.g. relabelled) fails on its checksum, not later."
    p = mnist_copy / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(p.read_bytes()))
    raw[8] = (raw[8] + 1) % 10
    p.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(PMNError, match="checksum mismatch"):
        load_mnist("test", root=mnist_copy)
    assert read_idx(p).shape == (10000,)  # the IDX reader alone would accept it


def test_missing_file_says_how_to_restore(mnist_copy):
    (mnist_copy / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(PMNError, match="MNIST file missing") as e:
        load_mnist("train", root=mnist_copy)
    assert "--download" in str(e.value)


def test_idx_reader_rejects_garbage(tmp_path):
    p = tmp_path / "x.idx"
    p.write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(PMNError, match="not an IDX file"):
        read_idx(p)
    p.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(PMNError, match="corrupt or truncated gzip"):
        read_idx(p)


@pytest.fixture
def http_mirror(tmp_path):
    "A local HTTP server over a folder: (base URL, folder). No internet involved."
    root = tmp_path / "mirror"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/", root
    srv.shutdown()
    srv.server_close()


def test_fetch_downloads_and_checks(http_mirror, tmp_path):
    url, root = http_mirror
    for f in MNIST_HASHES: shutil.copy(mnist_dir() / f, root / f)
    dest = tmp_path / "fetched"
    fetch_mnist(dest, mirrors=("http://127.0.0.1:9/", url))  # the first mirror refuses; the second serves
    assert sorted(p.name for p in dest.glob("*.gz")) == sorted(MNIST_HASHES)
    x, y = load_mnist("test", root=dest)
    assert len(y) == 10000


def test_fetch_refuses_a_bad_mirror(http_mirror, tmp_path):
    url, root = http_mirror
    for f in MNIST_HASHES: shutil.copy(mnist_dir() / f, root / f)
    p = root / "t10k-labels-idx1-ubyte.gz"
    p.write_bytes(p.read_bytes()[:-10])  # truncated on the server
    dest = tmp_path / "fetched"
    with pytest.raises(PMNError, match="could not download t10k-labels-idx1-ubyte.gz"):
        fetch_mnist(dest, mirrors=(url,))
    assert not (dest / "t10k-labels-idx1-ubyte.gz").exists()


def test_cli_errors_are_one_line(run_pmn, tmp_path):
    r = run_pmn("mnist", "--models", "rnn", "--out", tmp_path / "o")
    assert r.returncode == 2 and "unknown MNIST model 'rnn'" in r.stderr and "Traceback" not in r.stderr
    r = run_pmn("mnist", "--data", tmp_path / "nowhere", "--out", tmp_path / "o", "--n-train", "10")
    assert r.returncode == 2 and "MNIST file missing" in r.stderr
    r = run_pmn("mnist", "--epochs", "0", "--out", tmp_path / "o")
    assert r.returncode == 2 and "--epochs must be >= 1" in r.stderr


def test_cli_tiny_grid_and_skip(run_pmn, tmp_path):
    out = tmp_path / "grid"
    args = ("mnist", "--profile", "quick", "--models", "cnn", "pmn0.5", "--seeds", "3", "--n-train", "400",
            "--n-test", "200", "--tsne-n", "60", "--epochs", "1", "--out", out)
    r = run_pmn(*args)
    assert r.returncode == 0, r.stderr
    for m in ("cnn", "pmn0.5"):
        d = out / f"{m}-s3"
        assert run_finished(d)
        met = json.loads((d / "metrics.json").read_text())
        assert (met["model"], met["seed"], met["n_train"], met["n_test"], met["tsne_n"]) == (m, 3, 400, 200, 60)
        assert json.loads((d / "config.json").read_text())["encoder"] == "mnist_cnn"
        prov = json.loads((d / "provenance.json").read_text())
        assert prov["profile"] == "quick" and "data/mnist/t10k-images-idx3-ubyte.gz" in prov["data"]
    assert "PMN (λ=0.5)" in r.stdout
    r2 = run_pmn(*args)
    assert r2.returncode == 0 and r2.stdout.count("finished, skipped") == 2
