"""The report page as a reader sees it: rendered by headless Chromium (Debian's `chromium`,
which scripts/setup.sh installs) at 1000 and 1400 px. A copy of the page gets a script that,
once the page has loaded, measures it from inside the browser and writes the result into the
DOM, which Chromium prints (--dump-dom)."""
from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bnexp.report.build import build_report
from test_report import write_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                                "(scripts/setup.sh installs it with apt)")

MEASURE = """<script>
window.addEventListener("load", () => {
  const width = window.innerWidth;
  const wide = [...document.body.querySelectorAll("*")]
    .filter(e => !e.closest(".scroll, details:not([open])"))
    .filter(e => e.getBoundingClientRect().right > width + 1)
    .map(e => e.tagName + (e.id ? "#" + e.id : ""));
  const anchors = [...document.querySelectorAll('a[href^="#"]')]
    .map(a => a.getAttribute("href").slice(1))
    .filter(id => !document.getElementById(decodeURIComponent(id)));
  const result = {
    width: width,
    scrollWidth: document.documentElement.scrollWidth,
    wide: wide,
    images: [...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight]),
    brokenAnchors: anchors,
    anchorCount: document.querySelectorAll('a[href^="#"]').length,
    requests: performance.getEntriesByType("resource").map(e => e.name)
      .filter(name => !name.startsWith("data:")),
    viewport: !!document.querySelector('meta[name="viewport"]'),
  };
  const out = document.createElement("pre");
  out.id = "bnexp-measure";
  out.textContent = JSON.stringify(result);
  document.body.appendChild(out);
});
</script>"""


def measure(page: Path, width: int, profile: Path) -> dict:
    probe = page.with_name("_measured.html")
    probe.write_text(page.read_text().replace("</body>", MEASURE + "</body>"))
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-extensions",
         "--no-first-run", f"--user-data-dir={profile}", f"--window-size={width},900",
         "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120)
    probe.unlink()
    found = re.search(r'<pre id="bnexp-measure">(.*?)</pre>', done.stdout, re.S)
    assert found, f"chromium printed no measurement (exit {done.returncode}): {done.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


@pytest.fixture(scope="module")
def study_report(tmp_path_factory) -> Path:
    """A multi-factor study (norm kind x batch size x activation, 3 seeds) with a question,
    reported as a study would be."""
    root = tmp_path_factory.mktemp("browser") / "study"
    question = {"question.claim": "BN helps at every batch size.",
                "question.comparisons": [{"factor": "norm.kind", "reference": "none"}]}
    for kind in ("batch", "none"):
        for batch in (8, 64, 512):
            for activation in ("relu", "sigmoid"):
                for seed in range(3):
                    config = {"seed": seed, "norm.kind": kind, "train.batch_size": batch,
                              "model.activation": activation, "data.name": "fashion_mnist",
                              **question}
                    accuracy = 0.7 + 0.1 * (kind == "batch") + batch / 10_000 + seed / 100
                    write_run(root / f"{kind}-{batch}-{activation}-{seed}", config,
                              accuracy=accuracy, steps=6)
    build_report(root)
    return root / "report"


@pytest.mark.parametrize("width", [1000, 1400])
def test_report_reads_in_a_real_browser(study_report, tmp_path, width):
    result = measure(study_report / "report.html", width, tmp_path / "profile")
    assert result["viewport"]
    assert result["width"] == width
    assert result["scrollWidth"] <= width, "the page scrolls sideways"
    assert result["wide"] == [], f"wider than the viewport: {result['wide'][:10]}"
    assert len(result["images"]) == len(list(study_report.glob("*.png"))) > 0
    for complete, natural_width, natural_height in result["images"]:
        assert complete and natural_width > 0 and natural_height > 0
    assert result["anchorCount"] > 5 and result["brokenAnchors"] == []
    assert result["requests"] == [], "the page fetched something"


def test_every_file_the_page_links_exists(study_report):
    page = (study_report / "report.html").read_text()
    links = re.findall(r'href="([^"#][^"]*)"', page)
    assert links
    for link in links:
        assert (study_report / html.unescape(link)).exists(), link
