"""The `pmn` command and the package as a user meets them: fresh import, --help, data discovery, clear errors."""
import subprocess
import sys

import pmn_nb
from pmn_nb.cli import COMMANDS


def test_fresh_import_from_elsewhere(tmp_path):
    out = subprocess.run([sys.executable, "-c", "import pmn_nb, pmn_nb.core, pmn_nb.cli; print(pmn_nb.__version__)"],
                         cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == pmn_nb.__version__


def test_help_lists_commands(run_pmn):
    r = run_pmn("--help")
    assert r.returncode == 0, r.stderr
    assert "usage: pmn" in r.stdout
    for name in ("version", "data"):
        assert f"  {name} " in r.stdout


def test_help_does_not_import_torch(tmp_path):
    code = ("import contextlib, io, sys\n"
            "from pmn_nb.cli import main\n"
            "try:\n    with contextlib.redirect_stdout(io.StringIO()): main(['--help'])\nexcept SystemExit: pass\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_listed_subcommand_has_help(run_pmn):
    r = run_pmn("--help")
    listed = [n for n in COMMANDS if f"  {n} " in r.stdout]
    assert {"version", "data"} <= set(listed)
    for name in listed:
        h = run_pmn(name, "--help")
        assert h.returncode == 0, (name, h.stderr)
        assert f"usage: pmn {name}" in h.stdout


def test_version(run_pmn):
    r = run_pmn("version")
    assert r.returncode == 0
    assert r.stdout.splitlines()[0] == f"pmn_nb {pmn_nb.__version__}"
    assert "torch 2.13.0" in r.stdout
    assert r.stdout.splitlines()[-1].startswith("device ")
    assert run_pmn("--version").stdout.strip() == f"pmn_nb {pmn_nb.__version__}"


def test_data_found_from_any_directory(run_pmn, tmp_path):
    r = run_pmn("data", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert ", 0 bad" in r.stdout
    for sub in ("genome/", "mnist/", "trrust/"):
        assert sub in r.stdout


def test_missing_data_is_one_clear_error(run_pmn, tmp_path):
    r = run_pmn("data", env={"PMN_DATA": str(tmp_path / "nowhere")})
    assert r.returncode == 2
    assert r.stderr.startswith("pmn data: error: data folder not found")
    assert "Traceback" not in r.stderr
    assert "PMN_DATA" in r.stderr


def test_corrupt_data_file_is_reported(run_pmn, tmp_path):
    (tmp_path / "d" / "x").mkdir(parents=True)
    (tmp_path / "d" / "x" / "a.txt").write_text("B")
    (tmp_path / "d" / "x" / "MD5SUMS").write_text("7fc56270e7a70fa81a5935b72eacbe29  a.txt\n")  # md5 of "A"
    r = run_pmn("data", env={"PMN_DATA": str(tmp_path / "d")})
    assert r.returncode == 1
    assert "0 ok, 1 bad" in r.stdout
    assert "md5 differs from MD5SUMS line 1" in r.stderr


def test_unknown_command(run_pmn):
    r = run_pmn("frobnicate")
    assert r.returncode == 2
    assert "unknown command 'frobnicate'" in r.stderr


def test_bad_profile(run_pmn):
    r = run_pmn("--profile", "huge", "version")
    assert r.returncode == 2
    assert "invalid choice: 'huge'" in r.stderr


def test_only_the_cli_reads_profile_and_device_from_the_environment():
    "The profile and the device are arguments below the `pmn` entry: no other module reads them from the environment, and no module imports the CLI back."
    import ast, pathlib
    pkg = pathlib.Path(pmn_nb.__file__).parent
    for f in sorted(pkg.glob("*.py")):
        if f.name in ("cli.py", "_modidx.py"): continue
        text = f.read_text()
        for word in ("PMN_PROFILE", "PMN_DEVICE", "find_spec"):
            assert word not in text, f"{f.name} mentions {word}"
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom):
                assert (node.module or "") not in ("pmn_nb.cli", "cli") and not (node.level and node.module == "cli"), \
                    f"{f.name} imports the CLI"
            elif isinstance(node, ast.Import):
                assert all(n.name != "pmn_nb.cli" for n in node.names), f"{f.name} imports the CLI"
