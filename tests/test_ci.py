"""CI never skips what it exists to check: .ci/run installs each piece the browser test needs on its own, and
under CI=true a mandatory test that cannot run fails, saying why (tests/conftest.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _stub(d: Path, name: str, body: str = "exit 0") -> None:
    (d / name).write_text(f"#!/bin/sh\n{body}\n")
    (d / name).chmod(0o755)


@pytest.mark.parametrize("have,installs", [
    pytest.param(("chromium", "pdftotext"), ["chromium-driver"], id="chromium-without-chromedriver"),
    pytest.param(("chromedriver", "pdftotext"), ["chromium"], id="chromedriver-without-chromium"),
    pytest.param(("chromium", "chromedriver"), ["poppler-utils"], id="no-poppler"),
    pytest.param((), ["chromium", "chromium-driver", "poppler-utils"], id="none"),
    pytest.param(("chromium", "chromedriver", "pdftotext"), None, id="all"),
])
def test_ci_installs_each_missing_report_tool(have, installs, tmp_path):
    """.ci/run on a PATH of stubs: apt-get records what it is asked for; pip and python do nothing, and python
    records the CI variable the tests will see."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    log = tmp_path / "apt.log"
    for tool in ("bash", "dirname", "id", "sudo"):
        if shutil.which(tool):
            (bin_ / tool).symlink_to(shutil.which(tool))
    for name in have:
        _stub(bin_, name)
    _stub(bin_, "apt-get", f'echo "$*" >> {log}')
    _stub(bin_, "pip")
    _stub(bin_, "python", f'echo "CI=$CI $*" > {tmp_path / "python.log"}')
    env = {"PATH": str(bin_), "HOME": str(tmp_path)}
    p = subprocess.run([str(bin_ / "bash"), str(ROOT / ".ci" / "run")], capture_output=True, text=True, env=env,
                       timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    calls = log.read_text().splitlines() if log.exists() else []
    if installs is None:
        assert calls == []
    else:
        (install,) = [c for c in calls if "install" in c]
        assert install.split()[-len(installs):] == installs and len(install.split()) == 3 + len(installs)
    assert (tmp_path / "python.log").read_text().startswith("CI=true -m pytest")


SKIPPING = '''
import pytest
def test_needs_a_tool():
    pytest.skip("/usr/bin/chromedriver not found")
def test_gpu():
    pytest.skip("no CUDA device")
def test_tf():
    pytest.skip("TensorFlow is not installed (pip install tensorflow-cpu)")
'''


@pytest.mark.parametrize("ci,outcome", [("true", "1 failed, 3 skipped"), ("", "4 skipped")])
def test_a_mandatory_test_that_cannot_run_fails_under_ci(ci, outcome, tmp_path):
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_x.py").write_text(SKIPPING)
    (tmp_path / "test_whole_file.py").write_text("import pytest\npytest.importorskip('no_such_module_xyz')\n")
    env = dict(os.environ, CI=ci)
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", str(tmp_path)],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert outcome in p.stdout, p.stdout
    if ci:
        assert p.returncode == 1
        assert "CI=true: this test must run in CI, but it skipped: /usr/bin/chromedriver not found" in p.stdout
        assert "the tests of test_whole_file.py must run in CI, but they skipped" in p.stdout
    else:
        assert p.returncode == 0
