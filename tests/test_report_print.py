"""plots/report.html printed as a reader prints it: in a real headless browser (Chromium), on A4 and on Letter, from
real-sized runs of every task. At most 14 pages, no heading alone at the foot of a page, every figure there.

Needs Chromium (Debian: `apt-get install chromium`; .ci/run installs it where it may); skipped without it."""
import re
import shutil
import subprocess

import pytest

import report
from helpers import ZEBRA, fake_run

BROWSER = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)),
               None)
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(BROWSER is None, reason="no Chromium to print the report with (Debian: apt-get "
                                                         "install chromium; see docs/code.md)")]
TASKS = ("task2", "task3_model1", "task3_model2", "task3c_before", "task3d", "task4a")


def print_to_pdf(page, pdf, size: str, profile):
    """The page as Chromium prints it on `size` paper (the page's own @page margins)."""
    sized = page.with_name(f"{page.stem}-{size}.html")
    sized.write_text(page.read_text().replace("</style>", f"@page {{ size: {size}; }}</style>", 1))
    subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={profile}", "--no-pdf-header-footer", f"--print-to-pdf={pdf}",
                    sized.as_uri()], check=True, capture_output=True, timeout=180)
    sized.unlink()
    return pdf


@pytest.fixture(scope="module")
def printed(tmp_path_factory):
    """The report of real-sized runs of every task (Figures 4b/4c from a stand-in for the cached ImageNet
    weights), and its PDF on A4 and on Letter."""
    import os

    import torch
    from PIL import Image
    from torchvision.models import resnet18

    import resnet

    root = tmp_path_factory.mktemp("print")
    for name in TASKS:
        fake_run(root / "runs", name, 0.8, real=True, track_test=name in ("task3_model1", "task3c_before"))
    previous = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(root / "torch")
    try:
        cache = resnet.weights_cache_dir()
        cache.mkdir(parents=True)
        torch.save(resnet18(weights=None).state_dict(), cache / resnet.WEIGHTS_FILE)
        photo = ZEBRA if ZEBRA.is_file() else root / "photo.jpg"
        if not ZEBRA.is_file():
            Image.new("RGB", (600, 400), (200, 180, 60)).save(photo)
        report.main(["--runs-dir", str(root / "runs"), "--plot-dir", str(root / "plots"), "--answers",
                     str(root / "answers.md"), "--image", str(photo)])
    finally:
        if previous is None:
            os.environ.pop("TORCH_HOME", None)
        else:
            os.environ["TORCH_HOME"] = previous
    page = root / "plots" / "report.html"
    return page, {size: print_to_pdf(page, root / f"{size}.pdf", size, root / "profile") for size in ("A4", "Letter")}


@pytest.mark.parametrize("size", ["A4", "Letter"])
def test_the_report_prints_in_at_most_14_pages_with_every_figure(printed, size):
    from pypdf import PdfReader

    page, pdfs = printed
    html = page.read_text()
    pages = PdfReader(pdfs[size]).pages
    assert 6 <= len(pages) <= 14, len(pages)
    figures = html.count('<img src="data:image/png;base64,')
    assert figures == 13   # Figures 2-8 and a confusion matrix per run
    images = [image for sheet in pages for image in sheet.images]
    assert len(images) == figures
    for image in images:           # each decodes to a picture that is not blank
        picture = image.image
        low, high = picture.convert("L").getextrema()
        assert picture.width > 200 and high - low > 50


@pytest.mark.parametrize("size", ["A4", "Letter"])
def test_no_heading_is_alone_at_the_foot_of_a_page(printed, size):
    from pypdf import PdfReader

    page, pdfs = printed
    headings = {re.sub(r"<[^>]+>", "", text).strip() for text in re.findall(r"<h[1-4][^>]*>(.*?)</h[1-4]>",
                                                                            page.read_text())}
    assert {"Task 1a: convolution by hand", "Task 4c: last-layer activations"} <= headings
    for number, sheet in enumerate(PdfReader(pdfs[size]).pages, 1):
        lines = [line.strip() for line in sheet.extract_text().splitlines() if line.strip()]
        assert lines and lines[-1] not in headings, f"page {number} ends with the heading {lines[-1]!r}"
