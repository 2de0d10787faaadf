"""Safe to share, safe on bad input: one real (small, offline) demo run whose metadata carries
hostile display names and whose config carries secrets, then its report in a real browser.

* No name is ever live markup: not in ``report.html`` (Snakemake writes rule parameters into
  ``<script>`` blocks unescaped), not on the landing page, not in the DOM Chromium renders.
* No secret of the config (proxy credentials, a yt-dlp password, an ``Authorization``
  header, the cookies file's path) is in any file under ``results/`` or in the report.
* The worst-mistakes pages render inside the report (their ``data:`` URIs stay small).
* The landing page's tables sort when a header is clicked, inside the report too.

The demo downloads with yt-dlp from ``file://`` URLs only; the proxy (loopback, port 9, where
nothing listens) is never used, and a clip downloaded through it would fail.
"""

from __future__ import annotations

import base64
import csv
import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
import yaml

from audiosetflow import demo
from audiosetflow.reporting.html import SORT_SCRIPT

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

MUSIC, SPEECH = "/m/04rlf", "/m/09x0r"
HOSTILE = {
    MUSIC: "Music</script><img src=x onerror=alert(1)>",
    SPEECH: "Speech \"dq\" 'sq' <b>bold</b> &amp; \x07bell\x01 <svg onload=alert(2)>",
}
SECRETS = {
    "proxy": "s3cretProxyPw",
    "password": "s3cretYtdlpPw",
    "bearer": "s3cretBearerTok",
    "cookie_value": "s3cretCookieValue",
    "cookie_path": "cookies-s3cretPathPart",
}


def _demo_spec() -> demo.DemoSpec:
    return demo.DemoSpec(clips_per_class=10, eval_fraction=0.25, seed=7)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The run's folder (with ``results/report.html``) and the Chromium executable."""
    import browser

    reason = browser.skip_reason()
    if reason:
        pytest.skip(f"no headless browser: {reason}")
    root = tmp_path_factory.mktemp("hostile")
    meta = root / "results/demo/metadata"
    spec = _demo_spec()
    demo.write_metadata(meta, spec)  # the run keeps these files: same spec
    rows = list(csv.reader((meta / "class_labels_indices.csv").open(encoding="utf-8")))
    with (meta / "class_labels_indices.csv").open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(rows[0])
        for idx, mid, name in rows[1:]:
            w.writerow([idx, mid, HOSTILE.get(mid, name)])
    secret = root / "secret"
    secret.mkdir()
    cookies = secret / f"{SECRETS['cookie_path']}.txt"
    cookies.write_text(
        "# Netscape HTTP Cookie File\n"
        f".youtube.com\tTRUE\t/\tTRUE\t2147483647\tSID\t{SECRETS['cookie_value']}\n"
    )
    cfg = {
        "demo": {"enabled": True, "clips_per_class": spec.clips_per_class,
                 "eval_fraction": spec.eval_fraction, "seed": spec.seed},
        "labels": [MUSIC, SPEECH],
        "shard_size": 16,
        "training": {"epochs": 2, "patience": 2},
        "multilabel": {"min_positives": 5, "epochs": 2},
        "download": {
            "proxy": f"http://user:{SECRETS['proxy']}@127.0.0.1:9",
            "cookies": str(cookies),
            "ytdlp_options": {
                "password": SECRETS["password"],
                "http_headers": {"Authorization": f"Bearer {SECRETS['bearer']}"},
            },
        },
    }  # fmt: skip
    (root / "hostile.yaml").write_text(yaml.safe_dump(cfg))
    base = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(root), "--cores", "2",
        "--configfile", str(REPO / "config.yaml"), str(REPO / "config/demo.yaml"),
        str(root / "hostile.yaml"),
    ]  # fmt: skip
    proc = subprocess.run(base, capture_output=True, text=True, cwd=root, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-5000:]
    rep = subprocess.run(
        [*base, "--report", str(root / "results/report.html")],
        capture_output=True, text=True, cwd=root, timeout=600,
    )  # fmt: skip
    assert rep.returncode == 0, rep.stderr[-3000:]
    return root, browser.find() or browser.install()


class _Markup(HTMLParser):
    """Every element with its attributes, and the text of every script."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict]] = []
        self.scripts: list[str] = []
        self._in_script = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append("")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data


def _assert_no_injection(text: str, where: str) -> _Markup:
    m = _Markup(text)
    for tag, attrs in m.elements:
        assert not (tag == "img" and "onerror" in attrs), f"{where}: injected <img onerror>"
        for k, v in attrs.items():
            # the only event handler of the project's pages: the sort script of table headers
            if k.startswith("on"):
                assert (tag, k, v) == ("th", "onclick", SORT_SCRIPT), f"{where}: <{tag} {k}={v!r}>"
    for s in m.scripts:  # nothing of a name is markup in a script either
        assert "<img src=x" not in s and "<svg onload" not in s and "<b>bold" not in s, where
    assert "onerror=alert(1)>" not in text.replace("onerror=alert(1)\\u003e", ""), where
    return m


def test_hostile_names_are_text_everywhere(run):
    import browser

    root, exe = run
    res = root / "results"
    names = [json.loads(p.read_text(encoding="utf-8"))["name"]
             for p in (res / "metrics").glob("*.json") if p.stem != "multilabel"]  # fmt: skip
    assert sorted(names) == sorted(HOSTILE.values())  # the names reached the run
    landing = (res / "reports/overview.html").read_text(encoding="utf-8")
    _assert_no_injection(landing, "overview.html")
    report = (res / "report.html").read_text(encoding="utf-8")
    _assert_no_injection(report, "report.html")
    for page in sorted((res / "reports/errors").glob("*.html")):
        _assert_no_injection(page.read_text(encoding="utf-8"), page.name)
    # the names are in the report's parameters, escaped (audiosetflow.smk.report_param)
    assert "Music\\\\u003c/script\\\\u003e\\\\u003cimg src=x onerror=alert(1)\\\\u003e" in report

    dom = browser.dump_dom(exe, res / "report.html")
    _assert_no_injection(dom, "report.html in Chromium")
    page = browser.Elements(dom, root_id="app")
    assert "asf-overview" in page.ids, dom[-2000:]
    shown = [r[0] for r in page.tables["asf-labels"][1:]]

    def clean(s):  # the DOM text of a name: control characters may be dropped
        return re.sub(r"[\x00-\x1f]", "", s)

    assert sorted(map(clean, shown)) == sorted(clean(n) for n in HOSTILE.values())


def test_no_secret_in_results_or_report(run):
    root, _ = run
    res = root / "results"
    files = [p for p in res.rglob("*") if p.is_file()]
    # and what Snakemake keeps of the run (stored parameters, its log)
    stored = [p for p in (root / ".snakemake").rglob("*") if p.is_file() and "conda" not in p.parts]
    params = [p for p in stored if "metadata" in p.parts]  # the download jobs' settings, redacted
    assert any(b"[redacted]" in p.read_bytes() for p in params), "no stored params found"
    files += stored
    assert len(files) > 50 and (res / "report.html") in files
    assert any(p.suffix == ".pt" for p in files) and any(p.suffix == ".log" for p in files)
    report = (res / "report.html").read_text(encoding="utf-8")
    embedded = [  # the report's items and the pages' images and players, decoded
        base64.b64decode(b) for b in re.findall(r"data:[^,\"']*;base64,([A-Za-z0-9+/=]+)", report)
    ]
    assert len(embedded) > 20
    named = [(str(p.relative_to(root)), p.read_bytes()) for p in files]
    named += [(f"report.html data: URI {i}", d) for i, d in enumerate(embedded)]
    for name, data in named:
        for what, secret in SECRETS.items():
            assert secret.encode() not in data, f"{name} holds the {what}"
    # the downloads went through file:// only: every clip made it, none through the proxy
    avail = pd.read_csv(res / "reports/availability.tsv", sep="\t", keep_default_na=False)
    down = avail[avail["stage"] == "download"]
    assert len(down) == 2 and (down["failed"] == 0).all() and (down["done"] > 0).all()


def _report_items(report: str) -> dict:
    m = re.search(r'<script id="results">\s*var results = (.*?);\s*</script>', report, re.S)
    assert m, "no results in report.html"
    return json.loads(m.group(1))


def test_error_pages_render_inside_the_report(run, tmp_path):
    import browser
    from PIL import Image

    root, exe = run
    report = (root / "results/report.html").read_text(encoding="utf-8")
    items = {k: v for k, v in _report_items(report).items() if "/reports/errors/" in k}
    assert len(items) == 2
    for path, item in items.items():
        uri = item["data_uri"]
        assert uri.startswith("data:text/html") and len(uri) < 1_500_000, (path, len(uri))
        page = base64.b64decode(uri.split(",", 1)[1]).decode("utf-8")
        assert "worst mistakes" in page and "data:audio/ogg;base64," in page
        # the report shows an item in a frame whose src is its data: URI; so does this page
        frame = tmp_path / "frame.html"
        frame.write_text(
            '<html><body style="margin:0;background:#fff">'
            f'<iframe src="{uri}" style="width:1200px;height:900px;border:0"></iframe>'
            "</body></html>"
        )
        shot = browser.screenshot(exe, frame, tmp_path / "frame.png", size=(1200, 900))
        with Image.open(shot) as im:
            colours = im.convert("L").getcolors(1 << 16) or []
        assert len(colours) > 30, f"{path}: the frame is blank in Chromium"


def test_landing_page_sorts_inside_the_report(run, tmp_path):
    """Clicking a header of the metrics table (in the report as Snakemake renders it) sorts
    its rows; the names stay text."""
    import browser

    root, exe = run
    report = (root / "results/report.html").read_text(encoding="utf-8")
    click = (
        "<script>setTimeout(function(){"
        "var th=[].slice.call(document.querySelectorAll('#asf-metrics th'))"
        ".filter(function(h){return h.textContent.trim()==='AP'})[0];"
        "th.click();th.click();}, 3000);</script>"
    )
    page = tmp_path / "report-click.html"
    head, end, tail = report.rpartition("</body>")  # the page's own end, not a script's string
    page.write_text(head + click + end + tail, encoding="utf-8")
    dom = browser.dump_dom(exe, page, budget_ms=20000)
    _assert_no_injection(dom.replace(click, ""), "clicked report")
    rows = browser.Elements(dom, root_id="app").tables["asf-metrics"]
    col = rows[0].index("AP")
    aps = [float(r[col]) for r in rows[1:]]
    assert len(aps) == 6 and aps == sorted(aps, reverse=True), aps  # descending: two clicks
    before = browser.Elements(browser.dump_dom(exe, root / "results/report.html"), root_id="app")
    assert [r[col] for r in before.tables["asf-metrics"][1:]] != [r[col] for r in rows[1:]]
    assert 'data-dir="desc"' in dom
