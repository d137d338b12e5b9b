"""`pmn synth` as a user meets it: --help, a small genome in the real formats, one-line errors for bad input."""
import json

from pmn_nb.formats import read_peaks, read_tf_table
from pmn_nb.synth import load_truth


def test_help(run_pmn):
    r = run_pmn("synth", "--help")
    assert r.returncode == 0, r.stderr
    assert "usage: pmn synth" in r.stdout
    for opt in ("--size", "--tfs TABLE", "--seed", "--out", "--preset"):
        assert opt in r.stdout


def test_small_genome_in_real_formats(run_pmn, tmp_path):
    g = tmp_path / "g"
    r = run_pmn("synth", "--preset", "tiny", "--size", "300k", "--seed", "5", "--out", g)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"wrote {g}: 300,000 bases, 12 TFs")
    for f in ("genome.fa", "genome.fa.fai", "chrom.sizes", "tfs.tsv", "config.json", "plan.json", "summary.json",
              "provenance.json", "truth/modules.json", "truth/motifs.json", "truth/sites.tsv", "truth/tfs.tsv",
              "truth/gaps.bed"):
        assert (g / f).is_file(), f
    # the .fai points at each chromosome's first base, 60 bases a line
    data = (g / "genome.fa").read_bytes()
    sizes = dict(line.split("\t") for line in (g / "chrom.sizes").read_text().splitlines())
    for line in (g / "genome.fa.fai").read_text().splitlines():
        name, length, offset, lb, lw = line.split("\t")
        offset, length = int(offset), int(length)
        assert data[:offset].endswith(f">{name}\n".encode())
        assert (lb, lw) == ("60", "61") and int(sizes[name]) == length
        body = data[offset:offset + length + length // 60 + 1].replace(b"\n", b"")
        assert len(body) >= length and set(body[:length]) <= set(b"ACGTN")
    # a TF table like data/genome's, each TF's peaks a narrowPeak file
    t = read_tf_table(g / "tfs.tsv")
    assert list(t.columns) == ["tf", "source_file", "url", "notes"] and len(t) == 12
    assert t.notes.str.startswith("paper=yes; staged=yes (").all()
    for f in t.source_file:
        p = read_peaks(g / f)
        assert len(p) > 0 and ((p.summit >= p.start) & (p.summit < p.end)).all()
    truth = load_truth(g)
    assert sorted(sum(truth.modules, [])) == sorted(t.tf) and truth.config["seed"] == 5
    assert json.loads((g / "provenance.json").read_text())["data_source"].startswith("synthetic genome")


def test_bad_input_is_one_clear_error(run_pmn, tmp_path):
    (tmp_path / "t.tsv").write_text("name\nCTCF\n")
    r = run_pmn("synth", "--preset", "tiny", "--tfs", tmp_path / "t.tsv", "--out", tmp_path / "g")
    assert r.returncode == 2 and "no 'tf' column" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "g").exists()  # nothing half-written
    r = run_pmn("synth", "--size", "huge", "--out", tmp_path / "g")
    assert r.returncode == 2 and "cannot read genome size 'huge'" in r.stderr
    (tmp_path / "c.json").write_text('{"sizee": 1}')
    r = run_pmn("synth", "--preset", "tiny", "--config", tmp_path / "c.json", "--out", tmp_path / "g")
    assert r.returncode == 2 and "unknown config keys ['sizee']" in r.stderr
