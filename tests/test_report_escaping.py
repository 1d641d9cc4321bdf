"""report.html escapes every field (issue 12 item 11).

Every string of measurements.json (and of a cohort's response.json and CSV
tables) is replaced by markup: a ``<script>`` and an ``<img onerror>``. The
report must show them as text: the parsed HTML has no element, attribute or
event handler that came from the data, and in a real Chromium no script ran
and the DOM holds no injected element.
"""

from __future__ import annotations

import html.parser
import json
import shutil
from pathlib import Path

import pytest

from liverburden.cli import main as cli_main
from liverburden.report._html import write_report

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data" / "study"
PAYLOAD = "<script>window.__xss=1</script><img src=x onerror=\"window.__xss=2\">\"'><b data-xss=1>x</b>"


def _plant(obj):
    """Every string value replaced by the payload (keys kept, numbers kept). Strings
    that the report maps to words ("liver", "A0", a Couinaud key) become the payload
    prefixed by themselves, so both the lookup path and the fallback path are hit."""
    if isinstance(obj, dict):
        return {k: _plant(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plant(v) for v in obj]
    if isinstance(obj, str):
        return obj + PAYLOAD
    return obj


class _Tags(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.bad: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "script" or tag == "b" and ("data-xss", "1") in attrs:
            self.bad.append(tag)
        for k, v in attrs:
            if k.startswith("on") or k == "data-xss":
                self.bad.append(f"{tag} {k}={v}")
        if tag == "img" and dict(attrs).get("src") == "x":
            self.bad.append("img src=x")


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    out = tmp_path_factory.mktemp("xss") / "bundle"
    rc = cli_main(["measure", "--image", str(SAMPLE / "ct"), "--liver", str(SAMPLE / "liver.nii.gz"),
                   "--lesions", str(SAMPLE / "lesions.nii.gz"), "--segments", str(SAMPLE / "segments.nii.gz"),
                   "--resect", "right-hepatectomy", "--out", str(out), "--quiet"])
    assert rc == 0
    doc = json.loads((out / "measurements.json").read_text())
    (out / "measurements.json").write_text(json.dumps(_plant(doc)))
    n = sum(1 for _ in _strings(doc))
    assert n > 50  # every kind of field: warnings, flags, segment keys, plan, sources, ...
    return out, n


def _strings(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)
    elif isinstance(obj, str):
        yield obj


def _check(report: Path) -> None:
    text = report.read_text()
    p = _Tags()
    p.feed(text)
    assert p.bad == [], f"unescaped data in {report.name}: {p.bad[:5]}"
    assert "&lt;script&gt;" in text  # the payload is shown, as text


def test_study_report_escapes_every_field(planted):
    out, _ = planted
    _check(write_report(out))


def test_study_report_escapes_without_images(planted, tmp_path):
    out, _ = planted
    copy = tmp_path / "b"
    shutil.copytree(out, copy)
    (copy / "inputs.json").unlink()
    _check(write_report(copy))


def test_cohort_report_escapes_every_field(tmp_path):
    from test_report import _followup_files

    docs = _followup_files(tmp_path)
    for name in ("response.json", "survival.json", "summary.json"):
        (tmp_path / name).write_text(json.dumps(_plant(docs[name])))
    for name in ("response.csv", "studies.csv", "errors.csv"):
        lines = (tmp_path / name).read_text().splitlines()
        head, rows = lines[0], lines[1:]
        planted = []
        for r in rows:
            cells = r.split(",")
            planted.append(",".join(c if c.replace(".", "").replace("-", "").isdigit() or c == "" else
                                    '"' + (c + PAYLOAD).replace('"', '""') + '"' for c in cells))
        (tmp_path / name).write_text("\n".join([head, *planted]) + "\n")
    _check(write_report(tmp_path))


def test_planted_report_in_chromium(planted, tmp_path):
    from test_report import _browser, _open_report

    out, _ = planted
    report = write_report(out)
    with _browser() as page:
        dom = _open_report(page, report, tmp_path / "xss.png")
        ran = page.evaluate("String(window.__xss)")
        injected = page.evaluate("document.querySelectorAll('script, [data-xss], img[src=\"x\"]').length")
    assert ran == "undefined" and injected == 0
    assert dom["errors"] == [], dom["errors"]
