import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _pmn_exe():
    exe = Path(sys.executable).with_name("pmn")
    return str(exe) if exe.exists() else shutil.which("pmn")


@pytest.fixture
def run_pmn(tmp_path):
    "Run the installed `pmn` console script in a scratch working directory; return CompletedProcess."
    exe = _pmn_exe()
    assert exe, "the pmn console script is not installed (pip install -e .)"

    def run(*args, env=None, cwd=None, timeout=600):
        e = {**os.environ, "PMN_PROGRESS": "0", "MPLBACKEND": "Agg", **(env or {})}
        return subprocess.run([exe, *map(str, args)], cwd=cwd or tmp_path, env=e, capture_output=True,
                              text=True, timeout=timeout)
    return run


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not __import__("torch").cuda.is_available(), reason="no CUDA device"))])
def device(request):
    "Run a test on CPU, and on CUDA too where one exists."
    return request.param


@pytest.fixture
def no_network(monkeypatch):
    "Refuse connections to anything but the loopback interface (`pytestmark = pytest.mark.usefixtures(\"no_network\")`)."
    real = socket.socket.connect

    def connect(self, address, *a, **k):
        host = address[0] if isinstance(address, tuple) else address
        if host not in ("127.0.0.1", "localhost", "::1"): raise AssertionError(f"network access attempted: {address}")
        return real(self, address, *a, **k)
    monkeypatch.setattr(socket.socket, "connect", connect)
