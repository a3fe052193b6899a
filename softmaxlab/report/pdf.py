"""report.pdf: the printable page (html.py, printable=True) through headless Chromium's print-to-PDF.

Chromium is found as $SOFTMAXLAB_CHROMIUM, else chromium, chromium-browser, google-chrome on PATH. Without it,
or when it fails, a SoftmaxlabError says how to install it; report.html and report.md stay as written. The PDF
is written atomically (records.atomic_write): a report.pdf is always a whole one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import SoftmaxlabError
from ..mnist.records import atomic_write

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
INSTALL = "install Chromium (Debian/Ubuntu: apt-get install chromium) or set SOFTMAXLAB_CHROMIUM to its path"
TIMEOUT_S = 180


def find_chromium() -> str | None:
    given = os.environ.get("SOFTMAXLAB_CHROMIUM")
    if given:
        return given if os.path.isfile(given) and os.access(given, os.X_OK) else None
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


def print_pdf(page: str, dest: Path) -> Path:
    """Print the HTML text `page` to `dest` (A4, no header or footer)."""
    dest = Path(dest)
    after = f"then `softmaxlab report --pdf --out {dest.parent}`; report.html and report.md are written"
    chromium = find_chromium()
    if chromium is None:
        where = f"SOFTMAXLAB_CHROMIUM={os.environ['SOFTMAXLAB_CHROMIUM']} is not an executable" \
            if os.environ.get("SOFTMAXLAB_CHROMIUM") else "headless Chromium is not installed"
        raise SoftmaxlabError(f"--pdf needs Chromium, and {where}: {INSTALL}, {after}")
    with tempfile.TemporaryDirectory(prefix="softmaxlab-pdf-") as tmp:
        src, pdf = Path(tmp) / "report.html", Path(tmp) / "report.pdf"
        src.write_text(page, encoding="utf-8")
        cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={Path(tmp) / 'profile'}", "--no-pdf-header-footer", f"--print-to-pdf={pdf}",
               src.as_uri()]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise SoftmaxlabError(f"Chromium did not print the PDF within {TIMEOUT_S} s: try again, {after}") from None
        if res.returncode != 0 or not pdf.exists() or pdf.read_bytes()[:5] != b"%PDF-":
            last = (res.stderr.strip().splitlines() or ["no output"])[-1][:160]
            raise SoftmaxlabError(f"Chromium failed to print the PDF ({chromium}, exit {res.returncode}: {last}): "
                                  f"check that it starts headless, {after}")
        atomic_write(dest, pdf.read_bytes())
    return dest
