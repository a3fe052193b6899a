from __future__ import annotations

import os
from pathlib import Path

import pytest

_MNIST = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
          "t10k-labels-idx1-ubyte")


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The folder with the real MNIST IDX files (raw or .gz), from $SOFTMAXLAB_DATA; skips without it."""
    reason = "SOFTMAXLAB_DATA not set: point it at a folder with the four MNIST IDX files"
    env = os.environ.get("SOFTMAXLAB_DATA", "")
    if not env:
        pytest.skip(reason)
    d = Path(env).expanduser()
    missing = [n for n in _MNIST if not (d / n).is_file() and not (d / f"{n}.gz").is_file()]
    if missing:
        pytest.skip(f"{reason} ({d} lacks {', '.join(missing)})")
    return d


# ---- CI never skips what it exists to check ---------------------------------------------------------------
# Under CI=true (.ci/run sets it) a test that cannot run fails, saying why, instead of skipping: a missing
# chromedriver once turned the report's browser test into a quiet skip. Only these stay optional there:
OPTIONAL_SKIPS = ("no CUDA device", "TensorFlow is not installed")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _mandatory_skip(report) -> str | None:
    """The reason, if `report` is a skip that CI must not accept."""
    if not (in_ci() and report.skipped) or hasattr(report, "wasxfail"):
        return None
    lr = report.longrepr
    reason = lr[2] if isinstance(lr, tuple) else str(lr)
    reason = reason.removeprefix("Skipped: ")
    return None if any(o in reason for o in OPTIONAL_SKIPS) else reason


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    reason = _mandatory_skip(report)
    if reason is not None:
        report.outcome = "failed"
        report.longrepr = f"CI=true: this test must run in CI, but it skipped: {reason}"


_SKIPPED_FILES: list[str] = []  # files a module-level skip took out, under CI=true: the session fails


def pytest_collectreport(report):
    reason = _mandatory_skip(report)  # failing the collect report itself would stop the whole session
    if reason is not None:
        _SKIPPED_FILES.append(f"CI=true: the tests of {report.nodeid} must run in CI, but they skipped: {reason}")


def pytest_terminal_summary(terminalreporter):
    for line in _SKIPPED_FILES:
        terminalreporter.write_line(f"FAILED {line}", red=True)


def pytest_sessionfinish(session):
    if _SKIPPED_FILES and session.exitstatus in (0, 5):  # 5: nothing else was collected
        session.exitstatus = 1
