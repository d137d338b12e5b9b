"""`pmn windows` as a user meets it: the command, every kind of bad input, killed builds, and agreement with bedtools.

The chapter (nbs/10_windows.ipynb) tests the functions; these tests need subprocesses, signals or an external tool.
"""
import gzip
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from pmn_nb.core import PMNError, data_path
from pmn_nb.dna import decode
from pmn_nb.formats import Genome, tf_peak_files
from pmn_nb.windows import (CHR22_FASTA, PROVENANCE_CHR22, PROVENANCE_REFERENCE, SPLITS, WindowDataset, WindowParams,
                            bedtools_labels, build_store, chr22_params, gm12878_peaks, hg19_sizes, label_windows, load_store)

ROW = "{}\t{}\t{}\t.\t0\t.\t1.0\t{}\t-1\t{}\n"
SEQS = {"chr1": "ACGT" * 50 + "ggcca" * 50, "chr2": ("TTGCA" * 30 + "RYKM" + "TTGCA" * 34)[:320],
        "chr3": "GATC" * 45 + "N" * 30 + "CCGGA" * 38}


def fasta_text(seqs=SEQS, width=60) -> str:
    return "".join(f">{n}\n" + "".join(s[i:i + width] + "\n" for i in range(0, len(s), width)) for n, s in seqs.items())


@pytest.fixture
def toy(tmp_path):
    "The chapter's toy genome: toy.fa and peaks/{A,B,C}.narrowPeak (A has a peak on chr9, which the genome lacks)."
    (tmp_path / "toy.fa").write_text(fasta_text())
    pk = tmp_path / "peaks"
    pk.mkdir()
    (pk / "A.narrowPeak").write_text("".join(ROW.format(*r) for r in [
        ("chr1", 0, 40, -1, 10), ("chr1", 120, 200, -1, 30), ("chr1", 150, 190, -1, 20), ("chr2", 280, 320, -1, 10),
        ("chr9", 100, 200, -1, 50)]))
    (pk / "B.narrowPeak").write_text("".join(ROW.format(*r) for r in [
        ("chr1", 200, 300, -1, 50), ("chr3", 150, 250, 0.5, 50), ("chr3", 250, 350, 3, 50)]))
    (pk / "C.narrowPeak").write_text("".join(ROW.format(*r) for r in [("chr1", 200, 298, -1, -1), ("chr3", 0, 60, -1, -1)]))
    return tmp_path


def store_arrays(path):
    st = load_store(path)
    return {f"{s}.{p}": np.asarray(getattr(st, p)(s)) for s in SPLITS for p in ("seq", "labels")} | \
           {f"{s}.index": st.index(s).values.tolist() for s in SPLITS}


def test_cli_builds_the_toy_store(run_pmn, toy):
    r = run_pmn("windows", "--genome", toy / "toy.fa", "--peaks", toy / "peaks", "--out", toy / "store",
                "--labels-bed", toy / "labels.bed", env={"PMN_CACHE": str(toy / "cache")})
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "windows: train 1, valid 5, test 2 (dropped: 1 with > 10% N, 0 across split cuts)" in out
    assert "skipped peaks: 1 on chromosomes not in the genome (chr9 1), 0 beyond a chromosome end" in out
    assert "1 dropped for pValue < 1" in out
    st = load_store(toy / "store")
    assert st.tf_names == ["A", "B", "C"]
    assert st.index("valid").start.tolist() == [0, 50, 100, 150, 200]
    assert np.asarray(st.labels("valid")).tolist() == [[1, 0, 0], [1, 0, 1], [1, 1, 1], [1, 1, 1], [0, 1, 1]]
    assert decode(st.seq("train")[0]) == SEQS["chr2"][100:300].replace("RYKM", "NNNN")
    bed = (toy / "labels.bed").read_text().splitlines()
    assert len(bed) == 14 and bed[0] == "chr1\t0\t200\tA" and bed[-1] == "chr3\t200\t400\tB"
    assert (toy / "toy.fa.fai").exists()  # an unindexed FASTA gets its index


def test_help(run_pmn):
    r = run_pmn("windows", "--help")
    assert r.returncode == 0
    for opt in ("--genome", "--peaks", "--out", "--window", "--stride", "--split", "--unbound-fraction", "--max-n-fraction",
                "--labels-bed", "--strict", "--region", "--valid-chroms", "--split-fractions"):
        assert opt in r.stdout


def test_plain_gzip_and_bgzip_genomes_give_the_same_store(toy):
    text = (toy / "toy.fa").read_bytes()
    (toy / "toy.fa.gz").write_bytes(gzip.compress(text))
    out = b""
    for i in range(0, len(text), 100):  # BGZF: gzip members with the 'BC' extra field, then the empty EOF block
        block = text[i:i + 100]
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        body = c.compress(block) + c.flush()
        out += (b"\x1f\x8b\x08\x04\0\0\0\0\0\xff\x06\0BC\x02\0" + (len(body) + 25).to_bytes(2, "little") + body
                + zlib.crc32(block).to_bytes(4, "little") + len(block).to_bytes(4, "little"))
    (toy / "toy.bgz.fa.gz").write_bytes(out + bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000"))
    stores = {}
    for name in ("toy.fa", "toy.fa.gz", "toy.bgz.fa.gz"):
        st = build_store(toy / name, toy / "peaks", toy / f"store-{name}", cache=toy / "cache", show_progress=False)
        stores[name] = store_arrays(st.path)
        assert st.meta["genome"]["compression"] == {"toy.fa": "plain", "toy.fa.gz": "gzip", "toy.bgz.fa.gz": "bgzip"}[name]
    for k, v in stores["toy.fa"].items():
        assert np.array_equal(v, stores["toy.fa.gz"][k]) and np.array_equal(v, stores["toy.bgz.fa.gz"][k]), k
    assert not list(toy.glob("toy.fa.gz.fai")) and not list(toy.glob("*.gzi"))  # compressed inputs are indexed in the cache


def _bad_input_cases(d: Path):
    "name -> (extra files to write, CLI arguments, expected text in the one-line error)."
    fa, pk = d / "toy.fa", d / "peaks"
    good = ROW.format("chr1", 100, 200, -1, 50)
    return {
        "genome missing": ({}, ["--genome", d / "absent.fa"], "absent.fa: genome FASTA not found"),
        "genome not fasta": ({"g.fa": "chr1\t1\t2\n"}, ["--genome", d / "g.fa"], "g.fa:1: not a FASTA file"),
        "genome ragged lines": ({"g.fa": ">a\nACGT\nAC\nACGT\n"}, ["--genome", d / "g.fa"], "g.fa:3: cannot index the FASTA"),
        "genome corrupt gzip": ({"g.fa.gz": gzip.compress(fasta_text().encode())[:-40]}, ["--genome", d / "g.fa.gz"],
                                "g.fa.gz: corrupt or truncated gzip file"),
        "peaks missing": ({}, ["--peaks", d / "nowhere"], "nowhere: peaks not found"),
        "peak file empty": ({"peaks/D.narrowPeak": ""}, [], "D.narrowPeak: no peaks in the file"),
        "wrong column count": ({"peaks/D.narrowPeak": good + "chr1\t5\t9\n"}, [],
                               "D.narrowPeak:2: expected 10 tab-separated columns (as on line 1), found 3"),
        "start > end": ({"peaks/D.narrowPeak": good + ROW.format("chr1", 300, 200, -1, -1)}, [], "D.narrowPeak:2: start > end"),
        "non-integer": ({"peaks/D.narrowPeak": good + good.replace("200", "2x0")}, [],
                        "D.narrowPeak:2: column 3 (end) is not an integer: '2x0'"),
        "peak gzip corrupt": ({"peaks/D.narrowPeak.gz": gzip.compress(good.encode() * 50)[:30]}, [],
                              "D.narrowPeak.gz: corrupt or truncated gzip file"),
        "chromosome missing, strict": ({}, ["--strict"], "A.narrowPeak:5: peak on chr9, which the genome lacks"),
        "duplicate TF": ({"peaks/a.narrowPeak.gz": gzip.compress(good.encode())}, [], "two peak files for TF a"),
        "table names a missing file": ({"t.tsv": "tf\tsource_file\nA\tpeaks/A.narrowPeak\nZ\tpeaks/Z.narrowPeak\n"},
                                       ["--peaks", d / "t.tsv"], "t.tsv:3: peak file of Z not found: peaks/Z.narrowPeak"),
        "table duplicate TF spelling": ({"t.tsv": "tf\tsource_file\nA\tpeaks/A.narrowPeak\na\tpeaks/B.narrowPeak\n"},
                                        ["--peaks", d / "t.tsv"], "TF names 'A' and 'a' differ only in case"),
        "bad stride": ({}, ["--stride", "0"], "bad windowing parameter: stride must be a positive integer"),
        "bad region": ({}, ["--region", "chr1:9-3"], "region 'chr1:9-3' is empty"),
        "region chromosome absent": ({}, ["--region", "chr7:1-100"], "region chromosome 'chr7' is not in the genome"),
        "out is not a store": ({"out/notes.txt": "mine"}, [], "refusing to replace it"),
    }


@pytest.mark.parametrize("case", list(_bad_input_cases(Path("."))))
def test_bad_input_is_one_clear_error(run_pmn, toy, case):
    files, args, msg = _bad_input_cases(toy)[case]
    for rel, content in files.items():
        p = toy / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content) if isinstance(content, bytes) else p.write_text(content)
    base = {"--genome": toy / "toy.fa", "--peaks": toy / "peaks", "--out": toy / "out"}
    for k, v in zip(args[::2], args[1::2]): base[k] = v
    argv = [x for kv in base.items() for x in kv] + [a for a in args if a == "--strict"]
    r = run_pmn("windows", *argv, env={"PMN_CACHE": str(toy / "cache")})
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.startswith("pmn windows: error: "), r.stderr
    assert msg in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert "hint:" in r.stderr  # and what to do
    if case != "out is not a store":
        assert not (toy / "out").exists()  # no partial store
    assert not list(toy.glob(".out.*"))


def test_missing_chromosome_is_skipped_and_counted_without_strict(run_pmn, toy):
    r = run_pmn("windows", "--genome", toy / "toy.fa", "--peaks", toy / "peaks", "--out", toy / "out",
                env={"PMN_CACHE": str(toy / "cache")})
    assert r.returncode == 0
    assert load_store(toy / "out").meta["report"]["skipped_chrom"] == {"chr9": 1}


KILL_MID_BUILD = """
import os, signal, sys
from pmn_nb import windows
real = windows._NpyRows.write
def die(self, rows):
    real(self, rows)
    os.kill(os.getpid(), signal.SIGKILL)  # killed half-way: sequence rows written, nothing finished
windows._NpyRows.write = die
windows.build_store(sys.argv[1], sys.argv[2], sys.argv[3], show_progress=False, cache=sys.argv[4])
"""


def test_killed_build_leaves_no_store_and_rerun_rebuilds(run_pmn, toy):
    out, cache = toy / "out", toy / "cache"
    args = [sys.executable, "-c", KILL_MID_BUILD, toy / "toy.fa", toy / "peaks", out, cache]
    r = subprocess.run(list(map(str, args)), capture_output=True, text=True)
    assert r.returncode == -9, r.stderr
    assert not out.exists()
    assert len(list(toy.glob(".out.*.tmp"))) == 1  # the killed build's temporary folder
    with pytest.raises(PMNError, match="not a window store"): load_store(out)
    r = run_pmn("windows", "--genome", toy / "toy.fa", "--peaks", toy / "peaks", "--out", out, env={"PMN_CACHE": str(cache)})
    assert r.returncode == 0, r.stderr
    good = store_arrays(out)
    assert not list(toy.glob(".out.*"))  # the rerun cleared the dead build's leftovers
    # killing a rebuild of an existing store leaves the previous store, whole
    r = subprocess.run(list(map(str, args)), capture_output=True, text=True)
    assert r.returncode == -9
    after = store_arrays(out)
    assert all(np.array_equal(good[k], after[k]) for k in good)


def test_unbound_fraction_is_seeded_and_drops_n_windows(toy):
    def starts(seed, f):
        lab = label_windows(toy / "peaks", {"chr1": 20_000}, WindowParams(unbound_fraction=f, seed=seed, valid_chroms=()))
        return lab.start[lab.y.sum(1) == 0]
    a, b, c = starts(0, 0.3), starts(0, 0.3), starts(1, 0.3)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    n = (20_000 - 200) // 50 + 1 - 5
    assert abs(len(a) - 0.3 * n) < 4 * np.sqrt(n * 0.3 * 0.7)
    st = build_store(toy / "toy.fa", toy / "peaks", toy / "neg", WindowParams(unbound_fraction=1.0), cache=toy / "cache", show_progress=False)
    assert [st.meta["counts"][s]["dropped_n"] for s in SPLITS] == [0, 0, 3]
    assert [st.meta["counts"][s]["unbound"] for s in SPLITS] == [2, 1, 0]


def test_reference_counts():
    "data/genome/PROVENANCE.md §7: 1,133,565 labelled windows from the 77 uniform files; 2,586 in chr22:1-22 Mb (78 TFs)."
    lab = label_windows(gm12878_peaks(uniform_only=True), hg19_sizes())
    assert len(lab) == PROVENANCE_REFERENCE["total"]
    per = dict(zip(lab.chroms, np.bincount(lab.chrom, minlength=len(lab.chroms))))
    assert {c: per[c] for c in PROVENANCE_REFERENCE if c != "total"} == {k: v for k, v in PROVENANCE_REFERENCE.items() if k != "total"}
    assert len(label_windows(data_path("genome", "gm12878_tfs.tsv"), {"chr22": 22_000_000})) == PROVENANCE_CHR22


@pytest.mark.skipif(not shutil.which("bedtools"), reason="bedtools not installed (CI installs Debian's bedtools)")
@pytest.mark.parametrize("split,binding", [("chrom", "summit"), ("position", "summit"), ("chrom", "peak")])
def test_bedtools_agrees_on_the_chr22_sample(tmp_path, split, binding):
    "bedtools makewindows + intersect + getfasta give the store's windows, labels and bases (N filter off: bedtools has none)."
    prm = chr22_params(split=split, binding=binding, max_n_fraction=1.0)
    table = data_path("genome", "gm12878_tfs.tsv")
    st = build_store(data_path(*CHR22_FASTA), table, tmp_path / "store", prm, cache=tmp_path / "cache", show_progress=False)
    ref = bedtools_labels(Genome(data_path(*CHR22_FASTA), cache=tmp_path / "cache").fasta, tf_peak_files(table)[0], prm)
    key = {(c, s): i for i, (c, s) in enumerate(zip(ref["chrom"], ref["start"]))}
    n = 0
    for s in SPLITS:
        rows = [key[(c, int(x))] for c, x in st.index(s).values]  # KeyError: a window bedtools does not label
        assert np.array_equal(np.asarray(st.labels(s)), ref["y"][rows])
        assert np.array_equal(np.asarray(st.seq(s)), ref["seq"][rows])
        n += len(rows)
    assert n + st.meta["report"]["split_boundary"] == len(key)
    if binding == "summit": assert len(key) == PROVENANCE_CHR22


def test_dataloader_workers_see_the_same_data(tmp_path):
    import torch
    from torch.utils.data import DataLoader
    from pmn_nb.windows import chr22_store
    st = chr22_store(cache=tmp_path)
    ds = WindowDataset(st.path, "valid")
    one = [b for b in DataLoader(ds, batch_size=64)]
    two = [b for b in DataLoader(ds, batch_size=64, num_workers=1, multiprocessing_context="spawn")]  # a fresh process: the dataset is pickled
    assert len(one) == len(two) == -(-len(ds) // 64)
    for (x1, y1), (x2, y2) in zip(one, two):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert one[0][0].shape == (64, 4, 200) and one[0][1].shape == (64, len(st.tf_names))
