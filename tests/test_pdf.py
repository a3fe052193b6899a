"""report.pdf through headless Chromium: pages (pdftoppm), the answers in its text (pdftotext), vector figures;
and without Chromium, one error line, exit 2, the HTML left in place. Skips where Chromium or poppler-utils is
missing (under CI=true that skip is a failure; .ci/run installs both)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import campaign  # noqa: E402
import fakes  # noqa: E402
from test_report import make_study  # noqa: E402

from softmaxlab import cli, report  # noqa: E402
from softmaxlab.report.document import acc_text  # noqa: E402
from softmaxlab.report.pdf import find_chromium  # noqa: E402


def _tools():
    if find_chromium() is None:
        pytest.skip("Chromium not found: apt-get install chromium (Debian) to test --pdf")
    for tool in ("pdftoppm", "pdftotext", "pdfinfo"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not found: apt-get install poppler-utils to test the PDF")


def _text(pdf: Path, *pages: str) -> str:
    return subprocess.run(["pdftotext", "-layout", *pages, str(pdf), "-"], capture_output=True, text=True,
                          check=True).stdout


@pytest.fixture(scope="module")
def pdf(tmp_path_factory):
    _tools()
    out = tmp_path_factory.mktemp("pdf")
    summary, images = make_study(n_test=400)
    paths = report.write_report(out, summary, images, pdf=True)
    return paths["report.pdf"], summary


def test_pdf_pages_render(pdf, tmp_path):
    path, _ = pdf
    info = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True).stdout
    pages = int(next(ln.split()[-1] for ln in info.splitlines() if ln.startswith("Pages:")))
    assert 6 <= pages <= 40, pages  # a section per page at least, per-run records left to the HTML
    subprocess.run(["pdftoppm", "-r", "40", "-png", str(path), str(tmp_path / "p")], check=True)
    pngs = sorted(tmp_path.glob("p-*.png"))
    assert len(pngs) == pages and all(p.stat().st_size > 1000 for p in pngs)
    assert "A4" in info or "595" in info  # @page size: A4 (595 x 842 pt)


def test_first_page_has_the_title_and_problem1_q1(pdf):
    path, _ = pdf
    first = " ".join(_text(path, "-l", "1").split())
    assert report.TITLE in first
    assert "Problem 1 Q1" in first and "∂l/∂w_i = (p_i − 1[i = c]) x" in first


def test_pdf_text_holds_every_answer(pdf):
    path, s = pdf
    text = " ".join(_text(path).split())
    for title in ("Problem 1 Q1", "Problem 1 Q2", "Problem 2 Q1", "Problem 2 Q2", "Problem 2 Q3", "Problem 2 Q4"):
        assert title in text, title
    assert "for a sampled class j" in text  # Problem 1 Q2's gradient
    assert acc_text(s.q1) in text and acc_text(s.q2) in text  # Problem 2 Q1, Q2
    assert "P(L, k) = (L − 1)k² + (L + 794)k + 10" in text  # Q3
    assert "cannot show any difference at the 5% level" in text  # Q4 with this study's 2 seeds
    assert text.count("The source wrote") == 5
    assert "Appendix: provenance and code" in text


def test_pdf_figures_are_vector(pdf):
    path, _ = pdf
    images = subprocess.run(["pdfimages", "-list", str(path)], capture_output=True, text=True).stdout.splitlines()[2:]
    # Only the misclassified digits are pixels (imshow); the plots are paths and text.
    assert len(images) <= 4, images
    assert path.stat().st_size < 2_000_000


def test_without_chromium_one_error_and_the_html_stays(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    campaign.finished_study(out)
    monkeypatch.setenv("SOFTMAXLAB_CHROMIUM", str(tmp_path / "no-chromium"))
    d = fakes.fake_data(128, 64)
    monkeypatch.setattr("softmaxlab.mnist.study.load_data", lambda data_dir=None, **kw: d)
    (out / "report.html").unlink()
    with pytest.raises(SystemExit) as e:
        cli.main(["report", "--pdf", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error: --pdf needs Chromium"), err
    assert "apt-get install chromium" in err[0] and f"softmaxlab report --pdf --out {out}" in err[0]
    assert (out / "report.html").is_file() and (out / "report.md").is_file() and not (out / "report.pdf").exists()


def test_report_refuses_an_unfinished_study(tmp_path, capsys):
    out = tmp_path / "out"
    campaign.finished_study(out)
    next((out / "runs").glob("*/result.json")).unlink()
    with pytest.raises(SystemExit) as e:
        cli.main(["report", "--out", str(out)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "not finished (1 of 3 runs missing)" in err and "softmaxlab reproduce" in err
