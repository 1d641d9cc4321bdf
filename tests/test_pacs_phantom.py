"""Phantom studies for the PACS tests: a CT series written with pydicom and a DICOM
SEG of liver + lesions written with highdicom, referencing the CT instances.

Helpers for ``test_pacs_*.py`` (imported as ``test_pacs_phantom``), plus the
tests that the phantom itself is what it claims to be. The CT carries the fake
identifiers of :data:`dicomgen.PHI`, which must never reach a log, a spool file
name or a JSON.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pydicom
import pytest

import dicomgen as dg

#: Where Debian puts Orthanc and dcmtk (``/usr/sbin`` may be missing from PATH).
_EXTRA_PATH = "/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin"


def which(name: str) -> str | None:
    import os

    return shutil.which(name) or shutil.which(name, path=_EXTRA_PATH + ":" + os.environ.get("PATH", ""))


def dcmtk(name: str) -> str | None:
    """Path of a dcmtk tool (not pynetdicom's app of the same name), or None."""
    for cand in (which(name), f"/usr/bin/{name}"):
        if cand and Path(cand).exists():
            try:
                out = subprocess.run([cand, "--version"], capture_output=True, text=True, timeout=10).stdout
            except (OSError, subprocess.TimeoutExpired):
                continue
            if "dcmtk" in out.lower():
                return cand
    return None


def free_port() -> int:
    """An ephemeral TCP port on loopback that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PhantomStudy:
    folder: Path
    ct: dg.SeriesTruth
    seg_path: Path
    liver: np.ndarray  # (slice, row, col) bool, slice order of ct
    lesions: np.ndarray  # (slice, row, col) int: 0 or the lesion number (1..)
    files: list[Path]  # CT files then the SEG

    @property
    def study_uid(self) -> str:
        return self.ct.study_uid


def _ellipsoid(shape, centre, radii) -> np.ndarray:
    idx = np.indices(shape).astype(np.float64)
    r = sum(((idx[a] - centre[a]) / radii[a]) ** 2 for a in range(3))
    return r <= 1.0


def make_study(
    folder: Path | str,
    *,
    n: int = 24,
    rows: int = 64,
    cols: int = 64,
    lesion_boxes: Sequence[tuple[tuple[float, float, float], tuple[float, float, float]]] | None = None,
    per_lesion_segments: bool = False,
    seed: int = 0,
    phi: dict[str, str] | None = dg.PHI,
    study_uid: str | None = None,
    liver_label: str = "Liver",
    lesion_label: str = "Tumor",
    with_seg: bool = True,
    extra_segments: Sequence[tuple[str, np.ndarray]] = (),
) -> PhantomStudy:
    """A CT series (``n`` slices of ``rows`` x ``cols``) with an ellipsoidal liver and
    ellipsoidal lesions, and a SEG with a "Liver" segment and either one "Tumor"
    segment (binary: the lesions are its components) or one segment per lesion."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    root = Path(folder)
    shape = (n, rows, cols)
    liver = _ellipsoid(shape, ((n - 1) / 2, (rows - 1) / 2, (cols - 1) / 2), (n * 0.42, rows * 0.4, cols * 0.4))
    if lesion_boxes is None:
        lesion_boxes = (
            ((n * 0.5, rows * 0.35, cols * 0.35), (max(2.0, n * 0.15), rows * 0.12, cols * 0.12)),
            ((n * 0.45, rows * 0.65, cols * 0.62), (max(1.5, n * 0.1), rows * 0.08, cols * 0.1)),
            ((n * 0.6, rows * 0.4, cols * 0.7), (max(1.2, n * 0.06), rows * 0.05, cols * 0.05)),
        )
    lesions = np.zeros(shape, dtype=np.uint8)
    for k, (c, r) in enumerate(lesion_boxes, start=1):
        lesions[_ellipsoid(shape, c, r) & (lesions == 0)] = k
    rng = np.random.default_rng(seed)
    hu = np.where(liver, 60, -100) + np.where(lesions > 0, -40, 0) + rng.integers(-5, 6, size=shape)
    stored = (hu + 1024).astype(np.uint16)
    ct = dg.write_series(
        root / "ct", n=n, rows=rows, cols=cols, stored=stored, pixel_spacing=(1.5, 1.5), slice_spacing=2.5,
        origin=(-48.0, -60.0, -30.0), phi=phi, seed=seed, study_uid=study_uid, nested=False,
    )
    files = list(ct.paths)
    seg_path = root / "seg.dcm"
    if with_seg:
        src = [pydicom.dcmread(p) for p in ct.paths]  # slice order
        for ds in src:  # the CT files lack Type 2 patient/study attributes on purpose; highdicom needs them
            for kw in ("PatientSex", "StudyID", "AccessionNumber", "ReferringPhysicianName", "PatientBirthDate"):
                if kw not in ds:
                    setattr(ds, kw, "")
        descs = [
            hd.seg.SegmentDescription(
                segment_number=1, segment_label=liver_label,
                segmented_property_category=codes.SCT.Organ, segmented_property_type=codes.SCT.Liver,
                algorithm_type="MANUAL",
            )
        ]
        planes = [liver]
        ids = sorted(int(v) for v in np.unique(lesions) if v)
        groups = [[k] for k in ids] if per_lesion_segments else [ids]
        for j, grp in enumerate(groups, start=2):
            label = f"{lesion_label} {grp[0]}" if per_lesion_segments else lesion_label
            descs.append(
                hd.seg.SegmentDescription(
                    segment_number=j, segment_label=label,
                    segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
                    segmented_property_type=codes.SCT.Neoplasm, algorithm_type="MANUAL",
                )
            )
            planes.append(np.isin(lesions, grp))
        for j, (label, mask) in enumerate(extra_segments, start=len(descs) + 1):
            descs.append(
                hd.seg.SegmentDescription(
                    segment_number=j, segment_label=label,
                    segmented_property_category=codes.SCT.Tissue, segmented_property_type=codes.SCT.Tissue,
                    algorithm_type="MANUAL",
                )
            )
            planes.append(np.asarray(mask, dtype=bool))
        seg = hd.seg.Segmentation(
            source_images=src,
            pixel_array=np.stack(planes, axis=-1).astype(np.uint8),
            segmentation_type="BINARY",
            segment_descriptions=descs,
            series_instance_uid=dg.new_uid(),
            series_number=50,
            sop_instance_uid=dg.new_uid(),
            instance_number=1,
            manufacturer="PHANTOM-SEGMENTER",
            manufacturer_model_name="phantom",
            software_versions="1",
            device_serial_number="1",
        )
        seg.save_as(seg_path)
        files.append(seg_path)
    return PhantomStudy(root, ct, seg_path, liver, lesions, files)


def couinaud_map(liver: np.ndarray) -> np.ndarray:
    """A synthetic Couinaud map: the liver cut into 8 blocks (values 1..8), the right
    lobe (5-8) on the low column side, enough for an FLR plan."""
    n, rows, cols = liver.shape
    zz, yy, xx = np.indices(liver.shape)
    up = zz >= n // 2
    right = xx < cols // 2
    front = yy < rows // 2
    seg = np.zeros(liver.shape, dtype=np.uint8)
    seg[right & front & ~up] = 5
    seg[right & ~front & ~up] = 6
    seg[right & ~front & up] = 7
    seg[right & front & up] = 8
    left = ~right
    seg[left & front & up] = 2
    seg[left & ~front & up] = 3
    seg[left & front & ~up] = 4
    seg[left & ~front & ~up] = 1
    seg[~liver] = 0
    return seg


def make_post(study: PhantomStudy, folder: Path | str, zone: np.ndarray, *, liver: bool = True) -> list[Path]:
    """A post-ablation series of the same study (same pixels and grid, a new series)
    and its SEG with an "Ablation zone" (and "Liver") segment; returns the files."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    root = Path(folder)
    ct = dg.write_series(
        root / "post", n=study.ct.size[0], rows=study.ct.size[1], cols=study.ct.size[2], stored=study.ct.stored,
        pixel_spacing=(1.5, 1.5), slice_spacing=2.5, origin=(-48.0, -60.0, -30.0), study_uid=study.study_uid,
        series_number=7, description="POST ABLATION", nested=False, seed=11,
    )
    src = [pydicom.dcmread(p) for p in ct.paths]
    for ds in src:
        for kw in ("PatientSex", "StudyID", "AccessionNumber", "ReferringPhysicianName", "PatientBirthDate"):
            if kw not in ds:
                setattr(ds, kw, "")
    descs = [hd.seg.SegmentDescription(
        segment_number=1, segment_label="Ablation zone", segmented_property_category=codes.SCT.Tissue,
        segmented_property_type=codes.SCT.Tissue, algorithm_type="MANUAL")]
    planes = [np.asarray(zone, dtype=bool)]
    if liver:
        descs.append(hd.seg.SegmentDescription(
            segment_number=2, segment_label="Liver", segmented_property_category=codes.SCT.Organ,
            segmented_property_type=codes.SCT.Liver, algorithm_type="MANUAL"))
        planes.append(study.liver)
    seg = hd.seg.Segmentation(
        source_images=src, pixel_array=np.stack(planes, axis=-1).astype(np.uint8), segmentation_type="BINARY",
        segment_descriptions=descs, series_instance_uid=dg.new_uid(), series_number=51,
        sop_instance_uid=dg.new_uid(), instance_number=1, manufacturer="PHANTOM-SEGMENTER",
        manufacturer_model_name="phantom", software_versions="1", device_serial_number="1",
    )
    seg.save_as(root / "post_seg.dcm")
    return list(ct.paths) + [root / "post_seg.dcm"]


def clone_datasets(files: Sequence[Path], *, phi: dict[str, str] | None = None) -> list[pydicom.Dataset]:
    """The study in ``files`` as new datasets with every UID replaced (study,
    series, instances, frame of reference, and the SEG's references), so one
    phantom gives many distinct studies quickly."""
    mapping: dict[str, str] = {}

    def new(uid: str) -> str:
        if uid not in mapping:
            mapping[uid] = dg.new_uid()
        return mapping[uid]

    def walk(ds: pydicom.Dataset) -> None:
        for elem in ds:
            if elem.VR == "SQ":
                for item in elem.value:
                    walk(item)
            elif elem.VR == "UI" and elem.tag not in (0x00080016, 0x00020002, 0x00020010, 0x00081150):
                if elem.VM == 1 and elem.value:
                    elem.value = new(str(elem.value))

    out = []
    for p in files:
        ds = pydicom.dcmread(p)
        if ds.Modality == "SEG":
            walk(ds)  # references everywhere
        else:
            for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
                setattr(ds, kw, new(str(getattr(ds, kw))))
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        for k, v in (phi or {}).items():
            setattr(ds, k, v)
        out.append(ds)
    return out


def send_datasets(datasets: Sequence[pydicom.Dataset], port: int, *, called: str = "LIVERBURDEN",
                  calling: str = "MODALITY", host: str = "127.0.0.1") -> dict[str, int]:
    """C-STORE datasets over one association; SOPInstanceUID -> status."""
    from pynetdicom import AE

    from pynetdicom import evt

    from liverburden.pacs._send import no_delay

    ae = AE(ae_title=calling)
    for uid in sorted({str(ds.SOPClassUID) for ds in datasets}):
        ae.add_requested_context(uid, [pydicom.uid.ExplicitVRLittleEndian])
    assoc = ae.associate(host, port, ae_title=called, evt_handlers=[(evt.EVT_CONN_OPEN, no_delay)])
    if not assoc.is_established:
        raise ConnectionRefusedError("association rejected" if assoc.is_rejected else "association failed")
    out: dict[str, int] = {}
    try:
        for ds in datasets:
            st = assoc.send_c_store(ds)
            if not st or "Status" not in st:
                break
            out[str(ds.SOPInstanceUID)] = int(st.Status)
    finally:
        if assoc.is_established:
            assoc.release()
    return out


def send_files(
    files: Sequence[Path], port: int, *, called: str = "LIVERBURDEN", calling: str = "MODALITY",
    host: str = "127.0.0.1", bind_address: tuple[str, int] | None = None, stop_after: int | None = None,
) -> dict[str, int]:
    """C-STORE ``files`` over one association; returns SOPInstanceUID -> status
    (only for instances that got a response). Raises if the association fails."""
    from pynetdicom import AE

    ae = AE(ae_title=calling)
    classes = sorted({str(pydicom.dcmread(p, stop_before_pixels=True).SOPClassUID) for p in files[:1] + files[-1:]})
    for uid in classes:
        ae.add_requested_context(uid, [pydicom.uid.ExplicitVRLittleEndian, pydicom.uid.ImplicitVRLittleEndian])
    kw = {} if bind_address is None else {"bind_address": bind_address}
    assoc = ae.associate(host, port, ae_title=called, **kw)
    if not assoc.is_established:
        raise ConnectionRefusedError("association rejected" if assoc.is_rejected else "association failed")
    out: dict[str, int] = {}
    try:
        for k, p in enumerate(files):
            if stop_after is not None and k >= stop_after:
                break
            ds = pydicom.dcmread(p)
            st = assoc.send_c_store(ds)
            if st and "Status" in st:
                out[str(ds.SOPInstanceUID)] = int(st.Status)
            else:
                break
    finally:
        if assoc.is_established:
            assoc.release()
    return out


# ---------------------------------------------------------------------------------- Orthanc


class Orthanc:
    """A real Orthanc on loopback with a temporary configuration and storage."""

    def __init__(self, root: Path, *, http_port: int | None = None, dicom_port: int | None = None,
                 modalities: dict[str, list] | None = None, stable_age: int = 1):
        import json

        self.binary = which("Orthanc")
        if self.binary is None:
            pytest.skip("Orthanc binary not found (apt-get install orthanc; .ci/run installs it): "
                        "this test needs a real Orthanc server")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.http_port = http_port or free_port()
        self.dicom_port = dicom_port or free_port()
        cfg = {
            "Name": "LBTEST",
            "StorageDirectory": str(self.root / "storage"),
            "IndexDirectory": str(self.root / "index"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": "ORTHANC",
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "HttpServerEnabled": True,
            "DicomServerEnabled": True,
            "StableAge": stable_age,
            "DicomModalities": modalities or {},
            "DicomAlwaysAllowStore": True,
            "DicomCheckCalledAet": False,
            "Plugins": [],
            "StorageCompression": False,
            "ConcurrentJobs": 2,
        }
        (self.root / "orthanc.json").write_text(json.dumps(cfg, indent=1))
        self.log = open(self.root / "orthanc.log", "wb")
        self.proc = subprocess.Popen([self.binary, str(self.root / "orthanc.json")], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.http_port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                self.get("/system")
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("Orthanc did not start: " + (self.root / "orthanc.log").read_text()[-2000:])
                time.sleep(0.1)

    def get(self, path: str):
        import json
        import urllib.request

        with urllib.request.urlopen(self.url + path, timeout=10) as r:
            data = r.read()
        return json.loads(data) if data[:1] in (b"{", b"[") else data

    def post(self, path: str, body: bytes, content_type: str = "application/dicom"):
        import json
        import urllib.request

        req = urllib.request.Request(self.url + path, data=body, method="POST", headers={"Content-Type": content_type})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def store(self, files: Sequence[Path]) -> None:
        for p in files:
            self.post("/instances", Path(p).read_bytes())

    def wait_stable(self, orthanc_study_id: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.get(f"/studies/{orthanc_study_id}").get("IsStable"):
                return
            time.sleep(0.2)
        raise TimeoutError("study did not become stable")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# ---------------------------------------------------------------------------------- tests


def test_phantom_seg_reads_back_on_the_ct(tmp_path):
    import liverburden
    from liverburden.io import load_study

    st = make_study(tmp_path, n=12, rows=32, cols=32)
    cfg = liverburden.load_config()
    study = load_study(st.ct.folder, st.seg_path, st.seg_path, config=cfg)
    assert np.array_equal(study.liver.array > 0, st.liver)
    assert np.array_equal(study.lesions.array > 0, st.lesions > 0)


if __name__ == "__main__":  # pragma: no cover - a sender process for the load test
    # python tests/test_pacs_phantom.py send FOLDER PORT
    _, cmd, folder, port = sys.argv
    assert cmd == "send"
    sent = send_datasets([pydicom.dcmread(p) for p in sorted(Path(folder).iterdir())], int(port))
    sys.exit(0 if sent and set(sent.values()) == {0} else 1)
