"""The visual QC report (issue 7): rendered for the sample study and a margin phantom,
opened in a real headless Chromium over the DevTools protocol, and checked against
the JSON it shows.

Chromium is driven with a small standard-library WebSocket client (below), so the
test needs no extra package. Without a ``chromium`` binary the browser tests are
skipped with the reason printed; ``.ci/run`` installs it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html.parser
import io
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from liverburden.cli import main as cli_main
from liverburden.geometry import Volume
from liverburden.io import volume_to_sitk
from liverburden.report._figures import LD_COLOUR, SA_COLOUR, lesion_picture, sod_picture
from liverburden.report._html import (
    IMAGE_DIR,
    add_cli,
    best_responses,
    config_hash,
    run_cli,
    verdict_words,
    write_report,
)
from liverburden.report._views import Plane, patient_axes

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data" / "study"


# --------------------------------------------------------------------------- a minimal DevTools client


class _WebSocket:
    """RFC 6455 client, text frames only: enough for the Chrome DevTools protocol."""

    def __init__(self, url: str, timeout: float = 120.0):
        assert url.startswith("ws://")
        hostport, _, path = url[5:].partition("/")
        host, _, port = hostport.partition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        req = (f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
        self.sock.sendall(req.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("websocket handshake: connection closed")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"websocket handshake refused: {head[:200]!r}")
        accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        assert accept in head

    def _recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("websocket closed")
            buf += chunk
        return bytes(buf)

    def send(self, text: str) -> None:
        payload = text.encode()
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 1 << 16:
            head = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def recv(self) -> str:
        data = b""
        while True:
            b0, b1 = self._recv_exact(2)
            op = b0 & 0x0F
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._recv_exact(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._recv_exact(8))[0]
            mask = self._recv_exact(4) if b1 & 0x80 else None
            payload = self._recv_exact(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if op == 0x8:
                raise ConnectionError("websocket closed by the browser")
            if op == 0x9:  # ping -> pong
                self.sock.sendall(struct.pack("!BB", 0x8A, 0x80 | len(payload)) + b"\0\0\0\0" + payload)
                continue
            data += payload
            if b0 & 0x80:
                return data.decode()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class _Page:
    """One page target: commands with ids, events collected while waiting."""

    def __init__(self, ws_url: str):
        self.ws = _WebSocket(ws_url)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params):
        self.next_id += 1
        my = self.next_id
        self.ws.send(json.dumps({"id": my, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def wait_event(self, method: str, timeout: float = 30.0) -> dict:
        t0 = time.monotonic()
        for e in self.events:
            if e["method"] == method:
                return e
        while time.monotonic() - t0 < timeout:
            msg = json.loads(self.ws.recv())
            if "method" in msg:
                self.events.append(msg)
                if msg["method"] == method:
                    return msg
        raise TimeoutError(method)

    def evaluate(self, expression: str):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"page script failed: {r['exceptionDetails']}")
        return r["result"].get("value")

    def errors(self) -> list[str]:
        out = []
        for e in self.events:
            m, p = e["method"], e.get("params", {})
            if m == "Runtime.exceptionThrown":
                out.append(f"exception: {p.get('exceptionDetails', {}).get('text')}")
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(f"console.{p.get('type')}: {[a.get('value') for a in p.get('args', [])]}")
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append(f"log: {p['entry'].get('text')}")
        return out


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        p = shutil.which(name)
        if p:
            return p
    return None


@contextlib.contextmanager
def _browser():
    exe = _chromium()
    if exe is None:
        msg = "chromium not installed (Debian: apt-get install -y chromium; .ci/run installs it): browser check skipped"
        print(msg, file=sys.stderr)
        pytest.skip(msg)
    prof = tempfile.mkdtemp(prefix="lb-chromium-")
    try:
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-extensions", "--hide-scrollbars", "--mute-audio", f"--user-data-dir={prof}",
               "--remote-debugging-port=0", "--window-size=1280,900", "about:blank"]
        # its own process group: the browser's helper processes end with it
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            port_file = Path(prof) / "DevToolsActivePort"
            t0 = time.monotonic()
            while not (port_file.exists() and port_file.read_text().strip().count("\n") >= 1):
                if proc.poll() is not None:
                    raise RuntimeError(f"chromium exited with code {proc.returncode}")
                if time.monotonic() - t0 > 30:
                    raise TimeoutError("chromium did not open its DevTools port")
                time.sleep(0.05)
            port = int(port_file.read_text().split()[0])
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                targets = json.load(r)
            target = next(t for t in targets if t.get("type") == "page")
            page = _Page(target["webSocketDebuggerUrl"])
            try:
                yield page
            finally:
                page.ws.close()
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    finally:
        # helper processes may still flush into the profile for a moment: never fail the test on cleanup
        shutil.rmtree(prof, ignore_errors=True)


_DOM_PROBE = r"""
(() => {
  const imgs = [...document.images].map(i => ({
    file: i.dataset.file, complete: i.complete, w: i.naturalWidth, h: i.naturalHeight,
    data: i.src.startsWith('data:image/png;base64,'), src: i.src}));
  const nums = [...document.querySelectorAll('[data-key]')].map(e => ({
    src: e.dataset.src, key: e.dataset.key, value: e.dataset.value, decimals: e.dataset.decimals,
    text: e.textContent, cls: e.className}));
  const hashes = [...document.querySelectorAll('[data-config-hash]')].map(e => ({
    src: e.dataset.src, hash: e.dataset.configHash, text: e.textContent}));
  const sections = [...document.querySelectorAll('section')].map(s => s.id);
  const resources = performance.getEntriesByType('resource').map(r => r.name);
  return {title: document.title, imgs, nums, hashes, sections, resources,
          notes: [...document.querySelectorAll('#notes li')].map(e => e.textContent)};
})()
"""


def _open_report(page: _Page, report: Path, shot: Path) -> dict:
    page.call("Runtime.enable")
    page.call("Log.enable")
    page.call("Page.enable")
    page.call("Page.navigate", url=report.resolve().as_uri())
    page.wait_event("Page.loadEventFired")
    dom = page.evaluate(_DOM_PROBE)
    m = page.call("Page.getLayoutMetrics")
    size = m.get("cssContentSize") or m["contentSize"]
    w, h = int(size["width"]), int(min(size["height"], 12000))
    r = page.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                  clip={"x": 0, "y": 0, "width": w, "height": h, "scale": 1})
    shot.write_bytes(base64.b64decode(r["data"]))
    page.call("Emulation.setEmulatedMedia", media="print")
    dom["nav_display_print"] = page.evaluate("getComputedStyle(document.querySelector('nav')).display")
    pdf = page.call("Page.printToPDF", printBackground=True)
    dom["pdf"] = base64.b64decode(pdf["data"])
    page.call("Emulation.setEmulatedMedia", media="")
    dom["errors"] = page.errors()
    return dom


# --------------------------------------------------------------------------- checks shared by the tests


def _resolve(doc, key: str):
    cur = doc
    for part in key.split("."):
        if isinstance(cur, list):
            cur = cur[int(part)]
        else:
            cur = cur[part]
    return cur


def _check_numbers(nums: list[dict], docs: dict[str, dict]) -> int:
    """Every data-key element of a JSON source shows that JSON's value, to its decimals."""
    checked = 0
    for n in nums:
        if n["src"] not in docs:
            continue
        want = _resolve(docs[n["src"]], n["key"])
        got = json.loads(n["value"])
        assert got == want, f"{n['src']}:{n['key']}: page holds {got!r}, file {want!r}"
        if "num" in n["cls"].split() and want is not None:
            d = int(n["decimals"])
            shown = float(n["text"].replace("\u2212", "-"))
            assert abs(shown - float(want)) <= 0.5 * 10 ** (-d) + 1e-9, f"{n['key']}: shows {n['text']}, value {want}"
        checked += 1
    return checked


def _png_array(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=float)


class _ImgParser(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs: list[dict] = []
        self.keys: list[dict] = []
        self._stack: list[dict | None] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a)
        if "data-key" in a:
            rec = {"src": a.get("data-src"), "key": a["data-key"], "value": a.get("data-value"),
                   "decimals": a.get("data-decimals"), "cls": a.get("class", ""), "text": ""}
            self.keys.append(rec)
            self._stack.append(rec)
        elif tag not in ("img", "meta", "br", "hr", "link", "input"):
            self._stack.append(None)

    def handle_endtag(self, tag):
        if self._stack:
            self._stack.pop()

    def handle_data(self, data):
        for rec in self._stack:
            if rec is not None:
                rec["text"] += data


def _parse(report: Path) -> _ImgParser:
    p = _ImgParser()
    p.feed(report.read_text(encoding="utf-8"))
    return p


def _check_images(report: Path, parsed: _ImgParser) -> int:
    """Every <img> is an embedded PNG, equal to its file in report_images/, and not blank."""
    files = sorted((report.parent / IMAGE_DIR).glob("*.png"))
    assert len(parsed.imgs) == len(files) > 0
    for img in parsed.imgs:
        src = img["src"]
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1])
        assert data == (report.parent / img["data-file"]).read_bytes()
        arr = _png_array(data)
        assert arr.shape[0] > 50 and arr.shape[1] > 200
        assert arr.std() > 10.0, f"{img['data-file']} looks blank (pixel sd {arr.std():.2f})"
    return len(files)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "bundle"
    rc = cli_main(["measure", "--image", str(SAMPLE / "ct"), "--liver", str(SAMPLE / "liver.nii.gz"),
                   "--lesions", str(SAMPLE / "lesions.nii.gz"), "--segments", str(SAMPLE / "segments.nii.gz"),
                   "--resect", "right-hepatectomy", "--out", str(out), "--quiet"])
    assert rc == 0
    report = write_report(out)
    doc = json.loads((out / "measurements.json").read_text())
    return out, report, doc


def _margin_phantom(root: Path) -> Path:
    import regphantom as P

    d = np.eye(3)[:, ::-1]
    org = np.array([-150.0, -80.0, -60.0])
    pre_size, pre_sp = (40, 72, 96), (3.0, 2.0, 2.0)
    R, t = P.rotation(2, -2, 3), np.array([6.0, -4.0, 5.0])
    post_size, post_sp, post_org = (36, 76, 100), (3.5, 2.0, 2.0), org + np.array([4.0, -6.0, 6.0])
    pre = P.make_volume(pre_size, pre_sp, org, d, seed=1)
    post = P.make_volume(post_size, post_sp, post_org, d, transform=(R, t), seed=2)
    lpre = P.make_volume(pre_size, pre_sp, org, d, kind="liver")
    lpost = P.make_volume(post_size, post_sp, post_org, d, transform=(R, t), kind="liver")
    c = P.LIVER_C + np.array([10.0, 5.0, 0.0])
    tumor = P.sphere_mask(pre_size, pre_sp, org, d, c, 10.0)
    zone = P.sphere_mask(post_size, post_sp, post_org, d, c + np.array([0.0, 3.0, 0.0]), 15.0, transform=(R, t))
    root.mkdir(parents=True, exist_ok=True)
    for name, v, a in [("pre", pre, None), ("post", post, None), ("lpre", lpre, None), ("lpost", lpost, None),
                       ("tumor", pre, tumor), ("zone", post, zone)]:
        sitk.WriteImage(volume_to_sitk(v, v.array if a is None else a), str(root / f"{name}.nii.gz"))
    out = root / "out"
    rc = cli_main(["margin", "--pre", str(root / "pre.nii.gz"), "--post", str(root / "post.nii.gz"),
                   "--tumor", str(root / "tumor.nii.gz"), "--zone", str(root / "zone.nii.gz"),
                   "--liver-pre", str(root / "lpre.nii.gz"), "--liver-post", str(root / "lpost.nii.gz"),
                   "--out", str(out), "--quiet", "--no-pictures"])
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def margin(tmp_path_factory):
    out = _margin_phantom(tmp_path_factory.mktemp("margin"))
    report = write_report(out)
    doc = json.loads((out / "margin.json").read_text())
    return out, report, doc


# --------------------------------------------------------------------------- browser


def test_study_report_in_chromium(study, tmp_path):
    out, report, doc = study
    with _browser() as page:
        dom = _open_report(page, report, tmp_path / "study_report.png")
    assert dom["errors"] == [], dom["errors"]
    assert dom["resources"] == [], "the report must load nothing from outside itself"
    assert dom["title"] == "liverburden QC report"
    assert {"summary", "lesions", "overview", "anatomy", "flr", "provenance"} <= set(dom["sections"])
    files = sorted(p.name for p in (out / IMAGE_DIR).glob("*.png"))
    assert len(dom["imgs"]) == len(files) == len(doc["lesions"]) + 3  # lesions, involvement, overview, FLR
    for img in dom["imgs"]:
        assert img["complete"] and img["data"] and img["w"] > 200 and img["h"] > 50, img["file"]
    n = _check_numbers(dom["nums"], {"measurements.json": doc})
    assert n > 60
    keys = {x["key"] for x in dom["nums"]}
    for k in ("lesion_count", "liver.tumor_volume_ml", "liver.involvement_pct", "sum_diameters.all_mm",
              "sum_diameters.recist_mm", "flr.flr_ml", "flr.flr_pct", "flr.sflr_pct.vauthey", "flr.adequate"):
        assert k in keys
    for i in range(len(doc["lesions"])):
        for f in ("ld_mm", "sa_mm", "volume_ml", "segment"):
            assert f"lesions.{i}.{f}" in keys
    assert dom["hashes"] == [{"src": "measurements.json", "hash": config_hash(doc["config"]),
                              "text": config_hash(doc["config"])}]
    assert dom["nav_display_print"] == "none"
    assert dom["pdf"][:5] == b"%PDF-"
    shot = _png_array((tmp_path / "study_report.png").read_bytes())
    assert shot.shape[0] > 2000 and shot.std() > 10
    (tmp_path / "study_report.pdf").write_bytes(dom["pdf"])


def test_margin_report_in_chromium(margin, tmp_path):
    out, report, doc = margin
    with _browser() as page:
        dom = _open_report(page, report, tmp_path / "margin_report.png")
    assert dom["errors"] == [], dom["errors"]
    assert dom["resources"] == []
    assert {"registration", "margin", "provenance"} <= set(dom["sections"])
    assert dom["notes"] == []  # the CT, masks and transform were all found
    names = sorted(Path(i["file"]).name for i in dom["imgs"])
    assert names == ["margin_tumor_1.png", "registration.png"]
    for img in dom["imgs"]:
        assert img["complete"] and img["w"] > 200
    n = _check_numbers(dom["nums"], {"margin.json": doc})
    keys = {x["key"] for x in dom["nums"]}
    for k in ("registration.liver_dice", "registration.liver_msd_mm", "registration.ok", "tumors.0.min_margin_mm",
              "tumors.0.classification", "tumors.0.coverage_pct", "tumors.0.uncertain"):
        assert k in keys
    assert n > 15
    html_text = report.read_text()
    assert verdict_words(doc["tumors"][0], doc["threshold_mm"]) in html.unescape(html_text)
    assert dom["pdf"][:5] == b"%PDF-"


# --------------------------------------------------------------------------- without a browser


def test_study_report_images_numbers_and_privacy(study):
    out, report, doc = study
    parsed = _parse(report)
    assert _check_images(report, parsed) == len(doc["lesions"]) + 3
    assert _check_numbers(parsed.keys, {"measurements.json": doc}) > 60
    text = report.read_text()
    assert "<script" not in text.lower()
    assert "Content-Security-Policy" in text
    # input paths are in inputs.json only, never in the report
    assert str(SAMPLE) not in text and "sample_data" not in text
    assert "Notes on this report" not in text  # CT and masks were reloaded and verified


def test_ld_caliper_is_drawn_on_the_json_end_points(study):
    """The key image: LD/SA drawn exactly between the JSON end points, on the LD slice."""
    from liverburden.io import read_volume_file

    out, report, doc = study
    labels_v = read_volume_file(out / "lesion_labels.nii.gz", "labels")
    les = max(doc["lesions"], key=lambda x: x["ld_mm"])
    pic = lesion_picture(labels_v, None, np.asarray(labels_v.array), None, les)
    d = pic.drawn
    assert d["slice_index"] == les["slice_index"] and d["normal_axis"] == doc["image"]["ld_axis"]
    assert d["letters"] == ["R", "L", "A", "P"]
    plane = Plane.of(labels_v, "axial", index=les["slice_index"])
    # screen mm -> LPS: the drawn end points are the JSON's
    back = plane.to_lps(np.asarray(d["ld_screen_mm"]), slice_coord=np.asarray(d["ld_slice_coord"]))
    np.testing.assert_allclose(back, les["ld_endpoints_mm"], atol=1e-6)
    np.testing.assert_allclose(d["ld_slice_coord"], [les["slice_index"]] * 2, atol=1e-6)
    back_sa = plane.to_lps(np.asarray(d["sa_screen_mm"]))
    np.testing.assert_allclose(back_sa, les["sa_endpoints_mm"], atol=1e-6)
    # the displayed voxel under each drawn end point belongs to the lesion
    sl = plane.image(np.asarray(labels_v.array))
    su, sv = plane.pixel_mm
    for x, y in d["ld_screen_mm"]:
        assert sl[int(round(y / sv)), int(round(x / su))] == les["id"]
    # the line length on screen is the LD (in-plane distance of the two end points)
    (x1, y1), (x2, y2) = d["ld_screen_mm"]
    assert abs(np.hypot(x2 - x1, y2 - y1) - les["ld_mm"]) < 1e-6
    # and in the PNG the caliper colours sit at those pixels
    arr = _png_array(pic.png)

    def colour_near(px, colour, r=1):
        c, rr = int(round(px[0])), int(round(px[1]))
        patch = arr[rr - r: rr + r + 1, c - r: c + r + 1].reshape(-1, 3)
        return float(np.min(np.linalg.norm(patch - 255.0 * np.asarray(colour), axis=1)))

    for px in d["ld_png_px"]:
        assert colour_near(px, LD_COLOUR) < 40
    p1, p2 = np.asarray(d["ld_png_px"])
    for f in (0.2, 0.35, 0.65, 0.8):
        assert colour_near(p1 + f * (p2 - p1), LD_COLOUR) < 60
    for px in d["sa_png_px"]:
        assert colour_near(px, SA_COLOUR) < 40
    # the same figure in the report is the file on disk
    assert (out / IMAGE_DIR / f"lesion_{les['id']}.png").exists()


def test_margin_report_numbers_and_histogram(margin):
    out, report, doc = margin
    parsed = _parse(report)
    assert _check_images(report, parsed) == 2
    assert _check_numbers(parsed.keys, {"margin.json": doc}) > 15
    assert doc["registration"]["ok"] is True and doc["tumors"][0]["classification"] in ("A0", "A1")
    assert "Notes on this report" not in report.read_text()  # recomputed margins equal margin.json


def test_patient_orientation_regardless_of_array_order():
    """The same anatomy stored in another axis order and sign gives the same pictures and letters."""
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 1000, size=(7, 9, 11)).astype(np.int16)
    d = np.eye(3)[:, ::-1]  # (slice, row, col) -> (S, P, L): the usual axial DICOM order
    a = Volume(arr, (3.0, 2.0, 1.0), (-10.0, -20.0, -30.0), d)
    # store it as (col, slice, row) with the col and slice axes reversed: another file, same patient
    perm = (2, 0, 1)
    arr_b = np.transpose(arr, perm)[::-1, ::-1, :]
    d_b = d[:, list(perm)] * np.array([-1.0, -1.0, 1.0])
    origin_b = a.index_to_lps([arr.shape[0] - 1, 0, arr.shape[2] - 1])
    b = Volume(np.ascontiguousarray(arr_b), (1.0, 3.0, 2.0), tuple(origin_b), d_b)
    p = a.index_to_lps([3, 4, 5])
    np.testing.assert_allclose(b.index_to_lps([arr.shape[2] - 1 - 5, arr.shape[0] - 1 - 3, 4]), p)
    expected = {"axial": ("R", "L", "A", "P"), "coronal": ("R", "L", "S", "I"), "sagittal": ("A", "P", "S", "I")}
    for view, letters in expected.items():
        pa, pb = Plane.of(a, view, point_lps=p), Plane.of(b, view, point_lps=p)
        assert pa.letters == pb.letters == letters
        np.testing.assert_array_equal(pa.image(a.array), pb.image(b.array))
        np.testing.assert_array_equal(pa.projection(a.array), pb.projection(b.array))
        assert pa.extent == pb.extent
        np.testing.assert_allclose(pa.to_screen(p), pb.to_screen(p), atol=1e-9)
        np.testing.assert_allclose(pb.to_lps(pb.to_screen(p)[:2]), p, atol=1e-9)
    # axial: anterior (smaller LPS y) is up; the patient's right (smaller x) is on the left
    pl = Plane.of(a, "axial", point_lps=p)
    xa, ya, _ = pl.to_screen(p + np.array([0.0, -4.0, 0.0]))
    x0, y0, _ = pl.to_screen(p)
    assert ya < y0 and xa == x0
    xr, _, _ = pl.to_screen(p + np.array([-3.0, 0.0, 0.0]))
    assert xr < x0
    # coronal: superior is up
    pc = Plane.of(a, "coronal", point_lps=p)
    assert pc.to_screen(p + np.array([0.0, 0.0, 6.0]))[1] < pc.to_screen(p)[1]


def test_oblique_grid_keeps_points_and_names_the_tilt():
    th = np.radians(12.0)
    rot = np.array([[1, 0, 0], [0, np.cos(th), -np.sin(th)], [0, np.sin(th), np.cos(th)]])
    d = rot @ np.eye(3)[:, ::-1]
    v = Volume(np.zeros((6, 8, 10), np.int16), (2.5, 1.5, 1.0), (5.0, -7.0, 11.0), d)
    assert patient_axes(d) == (2, 1, 0)
    p = v.index_to_lps([2.0, 3.0, 4.0])
    for view in ("axial", "coronal", "sagittal"):
        pl = Plane.of(v, view, point_lps=p)
        s = pl.to_screen(p)
        np.testing.assert_allclose(pl.to_lps(s[:2], slice_coord=s[2]), p, atol=1e-9)
    assert abs(Plane.of(v, "axial").tilt_deg - 12.0) < 1e-6
    assert Plane.of(v, "axial").letters == ("R", "L", "A", "P")


def test_blank_background_when_the_ct_is_gone(study, tmp_path):
    out, _, doc = study
    copy = tmp_path / "bundle"
    shutil.copytree(out, copy)
    (copy / "inputs.json").unlink()
    shutil.rmtree(copy / IMAGE_DIR)
    report = write_report(copy)
    text = html.unescape(report.read_text())
    assert "masks are drawn on a blank background" in text
    assert "The segment map is not available" in text
    parsed = _parse(report)
    assert _check_images(report, parsed) == len(doc["lesions"]) + 2  # no FLR picture without the segment map
    assert _check_numbers(parsed.keys, {"measurements.json": doc}) > 60


def test_moved_inputs_are_reported_not_guessed(study, tmp_path):
    out, _, _ = study
    copy = tmp_path / "bundle"
    shutil.copytree(out, copy)
    inputs = json.loads((copy / "inputs.json").read_text())
    inputs["inputs"]["image"] = [str(tmp_path / "gone" / Path(p).name) for p in inputs["inputs"]["image"]]
    (copy / "inputs.json").write_text(json.dumps(inputs))
    text = html.unescape(write_report(copy).read_text())
    assert "was not found" in text and str(tmp_path / "gone") not in text


def test_changed_ct_is_not_drawn(study, tmp_path):
    """A CT whose content hash differs from the measured one is not used."""
    out, _, doc = study
    copy = tmp_path / "bundle"
    shutil.copytree(out, copy)
    m = json.loads((copy / "measurements.json").read_text())
    m["inputs"]["image"]["sha256"] = "0" * 64
    (copy / "measurements.json").write_text(json.dumps(m))
    inputs = json.loads((copy / "inputs.json").read_text())
    inputs["sha256"]["image"] = "0" * 64
    (copy / "inputs.json").write_text(json.dumps(inputs))
    text = html.unescape(write_report(copy).read_text())
    assert "has changed since the measurement" in text


def test_explicit_image_on_another_grid_is_an_error(study, tmp_path):
    from liverburden import GeometryError

    out, _, _ = study
    copy = tmp_path / "bundle"
    shutil.copytree(out, copy)
    wrong = Volume(np.zeros((4, 5, 6), np.int16), (1.0, 1.0, 1.0))
    with pytest.raises(GeometryError, match="not on the image grid"):
        write_report(copy, image=wrong)


def test_window_is_validated(study, tmp_path):
    from liverburden import InputError

    with pytest.raises(InputError, match="W > 0"):
        write_report(study[0], window=(0.0, 40.0))


def test_nothing_to_report(tmp_path):
    from liverburden import InputError

    with pytest.raises(InputError, match="nothing to report"):
        write_report(tmp_path)
    with pytest.raises(InputError, match="output folder not found"):
        write_report(tmp_path / "missing")


def test_unreadable_json_is_an_input_error(tmp_path):
    from liverburden import InputError

    (tmp_path / "response.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        write_report(tmp_path)


def _followup_files(root: Path) -> dict:
    response = {
        "timepoints": [
            {"label": "baseline", "target_sod_mm": 80.0, "change_from_baseline_pct": None,
             "change_from_nadir_pct": None, "new_lesions": [], "response": None, "reason": "baseline"},
            {"label": "fu1", "target_sod_mm": 50.0, "change_from_baseline_pct": -37.5, "nadir_mm": 80.0,
             "change_from_nadir_pct": -37.5, "new_lesions": [], "response": "PR", "reason": "SoD -37.5 % from baseline",
             "sum_diameters_all_mm": 52.5, "tumor_volume_ml": 12.25},
            {"label": "fu2", "target_sod_mm": 45.0, "change_from_baseline_pct": -43.75, "nadir_mm": 50.0,
             "change_from_nadir_pct": -10.0, "new_lesions": [], "response": "PR", "reason": "SoD -43.8 % from baseline",
             "sum_diameters_all_mm": 47.0, "tumor_volume_ml": 10.0},
            {"label": "fu3", "target_sod_mm": 56.0, "change_from_baseline_pct": -30.0, "nadir_mm": 45.0,
             "change_from_nadir_pct": 24.444444444444443, "new_lesions": [7], "response": "PD",
             "reason": "SoD +24.4 % and +11.0 mm from the nadir; new lesion 7",
             "sum_diameters_all_mm": 70.0, "tumor_volume_ml": 15.5},
        ],
        "remnant": {"label": "fu1", "remnant_sod_mm": 52.5, "remnant_burden": "high", "threshold_mm": 50.0},
        "warnings": ["lesion 3 of fu2 matches two baseline lesions (merged)"],
        "config": {"compare": {"pr_decrease_pct": 30.0, "pd_increase_pct": 20.0, "pd_increase_min_mm": 5.0}},
    }
    (root / "response.json").write_text(json.dumps(response))
    rows = ["patient,label,target_sod_mm,change_from_baseline_pct,response",
            "p1,baseline,80.0,,", "p1,fu1,50.0,-37.5,PR", "p1,fu2,45.0,-43.75,PR",
            "p2,baseline,40.0,,", "p2,fu1,52.0,30.0,PD",
            "p3,baseline,30.0,,", "p3,fu1,27.0,-10.0,SD", "p3,fu2,0.0,-100.0,CR"]
    (root / "response.csv").write_text("\n".join(rows) + "\n")
    (root / "studies.csv").write_text("patient,timepoint,sum_diameters_all_mm,lesion_count\n"
                                      "p1,baseline,80.0,3\np1,fu1,52.5,3\np2,baseline,40.0,1\n")
    survival = {"n": 7, "groups": {"high": {"n": 3, "events": 3, "time": [0.0, 5.0, 10.0, 15.0],
                                            "survival": [1.0, 0.8, 0.5, 0.3], "median_months": 10.0},
                                   "low": {"n": 4, "events": 1, "time": [0.0, 12.0, 30.0, 54.0],
                                           "survival": [1.0, 0.9, 0.8, 0.6], "median_months": None}},
                "logrank_p": 0.005, "hazard_ratio": 2.7, "hazard_ratio_ci95": [1.1, 6.6],
                "method": "Kaplan-Meier by remnant burden; log-rank; Cox PH (lifelines)"}
    (root / "survival.json").write_text(json.dumps(survival))
    summary = {"studies": 9, "ok": 8, "failed": 1, "patients_compared": 3, "survival": True}
    (root / "summary.json").write_text(json.dumps(summary))
    (root / "errors.csv").write_text("row,patient,timepoint,error_class,message\n"
                                     "9,p4,baseline,InputError,/secret/path/p4/ct: image file not found\n")
    return {"response.json": response, "survival.json": survival, "summary.json": summary}


def test_followup_and_cohort_sections(tmp_path):
    docs = _followup_files(tmp_path)
    report = write_report(tmp_path)
    parsed = _parse(report)
    names = sorted(Path(i["data-file"]).name for i in parsed.imgs)
    assert names == ["kaplan_meier.png", "sod_over_time.png", "spider.png", "waterfall.png"]
    _check_images(report, parsed)
    assert _check_numbers(parsed.keys, docs) >= 4 * 4 + 2
    # CSV values: "<row>.<column>" of response.csv
    import csv

    with open(tmp_path / "response.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for k in parsed.keys:
        if k["src"] == "response.csv":
            row, col = k["key"].split(".", 1)
            want = rows[int(row)][col]
            assert json.loads(k["value"]) == (float(want) if want else None)
    text = html.unescape(report.read_text())
    assert "progressive disease" in text and "partial response" in text and "high" in text
    assert "Failed studies (1)" in text and "/secret/path" not in text
    assert best_responses(rows) == [("p1", -43.75, "PR"), ("p2", 30.0, "PD"), ("p3", -100.0, "CR")]
    shown = {k["key"] for k in parsed.keys}
    assert {"timepoints.3.nadir_mm", "remnant.remnant_sod_mm", "groups.high.median_months", "hazard_ratio_ci95.1",
            "ok", "failed"} <= shown


def test_report_of_a_real_compare_output(study, tmp_path):
    """``compare`` output as the lead's code writes it: the same bundle twice is stable disease."""
    out = tmp_path / "cmp"
    assert cli_main(["compare", str(study[0]), str(study[0]), "--labels", "base,fu", "--out", str(out),
                     "--quiet"]) == 0
    doc = json.loads((out / "response.json").read_text())
    report = write_report(out)
    parsed = _parse(report)
    assert [Path(i["data-file"]).name for i in parsed.imgs] == ["sod_over_time.png"]
    _check_images(report, parsed)
    assert _check_numbers(parsed.keys, {"response.json": doc}) >= 10
    assert doc["timepoints"][1]["response"] == "SD"
    assert "stable disease" in report.read_text()


def test_sod_picture_lines_and_nadir():
    tps = [{"label": "b", "target_sod_mm": 80.0, "response": None}, {"label": "f1", "target_sod_mm": 50.0,
                                                                    "response": "PR"},
           {"label": "f2", "target_sod_mm": 45.0, "response": "PR"}, {"label": "f3", "target_sod_mm": 56.0,
                                                                     "response": "PD"}]
    d = sod_picture(tps).drawn
    assert d["pr_line_mm"] == pytest.approx(56.0)
    assert d["nadir"] == (2, 45.0)
    # PD at each time point: +20 % and +5 mm above the nadir BEFORE it
    assert d["pd20_mm"] == [(1, 96.0), (2, 60.0), (3, 54.0)]
    assert d["pd5_mm"] == [(1, 85.0), (2, 55.0), (3, 50.0)]


def test_verdict_words():
    base = {"min_margin_mm": 6.8, "coverage_pct": 100.0, "uncertain": False, "uncertainty_mm": 1.5}
    assert verdict_words({**base, "classification": "A0"}, 5.0).startswith("A0: complete ablation with a margin of "
                                                                            "at least 5 mm")
    assert "below 5 mm somewhere (minimal margin 3.0 mm)" in verdict_words(
        {**base, "classification": "A1", "min_margin_mm": 3.0}, 5.0)
    assert "outside the ablation zone (coverage 92.0 %)" in verdict_words(
        {**base, "classification": "A2", "min_margin_mm": -1.0, "coverage_pct": 92.0}, 5.0)
    assert verdict_words({**base, "classification": None}, 5.0).startswith("not assessed")
    w = verdict_words({**base, "classification": "A0", "min_margin_mm": 5.4, "uncertain": True}, 5.0)
    assert "Uncertain" in w and "(±1.5 mm) of 5 mm" in w
    w = verdict_words({**base, "classification": "A1", "min_margin_mm": 0.4, "uncertain": True}, 5.0)
    assert "of 0 mm" in w


def test_config_hash_is_canonical():
    a = {"b": 1, "a": {"y": [1, 2], "x": "é"}}
    b = {"a": {"x": "é", "y": [1, 2]}, "b": 1}
    assert config_hash(a) == config_hash(b)
    want = hashlib.sha256('{"a":{"x":"é","y":[1,2]},"b":1}'.encode()).hexdigest()
    assert config_hash(a) == want


def test_cli_report(study, tmp_path, capsys):
    import argparse

    from liverburden import LiverburdenError

    parser = argparse.ArgumentParser(prog="liverburden")
    add_cli(parser.add_subparsers(dest="command"))
    copy = tmp_path / "bundle"
    shutil.copytree(study[0], copy)
    args = parser.parse_args(["report", str(copy), "--window", "400,40"])
    assert run_cli(args) == 0
    assert "report.html" in capsys.readouterr().out
    assert "W 400 / L 40 HU" in (copy / "report.html").read_text()
    with pytest.raises(SystemExit):
        parser.parse_args(["report", str(copy), "--window", "0,40"])
    with pytest.raises(LiverburdenError):
        run_cli(parser.parse_args(["report", str(tmp_path / "empty"), "--quiet"]))


def test_stale_images_are_removed(study, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(study[0], copy)
    (copy / IMAGE_DIR / "lesion_99.png").write_bytes(b"old")
    write_report(copy)
    assert not (copy / IMAGE_DIR / "lesion_99.png").exists()


def test_mr_study_uses_a_percentile_window(study, tmp_path):
    """The CT liver window means nothing on MR: the report says which window it used instead."""
    copy = tmp_path / "bundle"
    shutil.copytree(study[0], copy)
    m = json.loads((copy / "measurements.json").read_text())
    m["source"]["modality"] = "MR"
    (copy / "measurements.json").write_text(json.dumps(m))
    text = html.unescape(write_report(copy).read_text())
    assert "MR image: shown with a window from its 1st to 99th percentile" in text
