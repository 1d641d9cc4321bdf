"""PACS hook without servers: configuration, role mapping, input rules, spool
state machine, deterministic UIDs, private codes.

Every validation branch has a failing input (house style 8), changed one field
at a time.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pydicom
import pytest

import dicomgen as dg
import test_pacs_phantom as ph
from liverburden import load_config
from liverburden._exceptions import ConfigError
from liverburden.pacs import codes
from liverburden.pacs._config import load_pacs_config, peers
from liverburden.pacs._inputs import Parked, segment_role, select_inputs
from liverburden.pacs._outputs import UidFactory, result_digest
from liverburden.pacs._spool import Spool

MCFG = load_config()


def _toml(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "pacs.toml"
    p.write_text(text)
    return p


# ------------------------------------------------------------------------------ config


def test_config_defaults_and_conventions_keys(tmp_path):
    p = _toml(tmp_path, """
[listener]
ae_title = "LIVERBURDEN"
host = "127.0.0.1"
port = 11112
spool_dir = "spool"
quiet_seconds = 5
max_associations = 32
[[listener.allowed]]
ae_title = "MODALITY"
host = "127.0.0.1"
[destination]
ae_title = "ORTHANC"
host = "127.0.0.1"
port = 4242
""")
    cfg = load_pacs_config(p)
    assert cfg["listener"]["spool_dir"] == str((tmp_path / "spool").resolve())
    assert cfg["listener"]["max_associations"] == 32
    assert cfg["destination"]["enabled"] and cfg["destination"]["calling_ae_title"] == "LIVERBURDEN"
    (peer,) = peers(cfg)
    assert peer.allows("MODALITY", "127.0.0.1")
    assert peer.allows("MODALITY  ", "::ffff:127.0.0.1")
    assert not peer.allows("MODALITY", "127.0.0.2")
    assert not peer.allows("OTHER", "127.0.0.1")


def test_the_example_config_is_valid_and_complete():
    example = Path(__file__).resolve().parents[1] / "configs" / "pacs.example.toml"
    cfg = load_pacs_config(example)
    text = example.read_text()
    from liverburden.pacs._config import DEFAULTS

    def keys(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict) and k != "segment_codes":
                yield from keys(v, prefix + k + ".")
            else:
                yield prefix + k

    for key in keys(DEFAULTS):
        assert key.rsplit(".", 1)[-1] + " =" in text or key.rsplit(".", 1)[-1] + " = " in text, key
    assert cfg["destination"]["enabled"]


def test_maximum_associations_alias(tmp_path):
    cfg = load_pacs_config(_toml(tmp_path, "[listener]\nmaximum_associations = 40\n"))
    assert cfg["listener"]["max_associations"] == 40
    with pytest.raises(ConfigError, match="disagree"):
        load_pacs_config(_toml(tmp_path, "[listener]\nmaximum_associations = 40\nmax_associations = 20\n"))


def test_allowed_peer_as_network(tmp_path):
    cfg = load_pacs_config(_toml(tmp_path, '[[listener.allowed]]\nae_title = "CT1"\nhost = "10.1.0.0/16"\n'))
    (peer,) = peers(cfg)
    assert peer.allows("CT1", "10.1.200.3") and not peer.allows("CT1", "10.2.0.1")


@pytest.mark.parametrize(
    "text, match",
    [
        ("[listener]\nbogus = 1\n", "unknown key 'bogus'"),
        ("[nosuchsection]\n", "unknown key 'nosuchsection'"),
        ("[listener]\nport = 70000\n", "listener.port"),
        ("[listener]\nquiet_seconds = 0\n", "listener.quiet_seconds"),
        ("[listener]\nae_title = \"MUCH-TOO-LONG-AE-TITLE\"\n", "listener.ae_title"),
        ("[listener]\nmax_associations = 0\n", "listener.max_associations"),
        ("[[listener.allowed]]\nae_title = \"X\"\n", "host"),
        ("[[listener.allowed]]\nae_title = \"X\"\nhost = \"no-such-host.invalid\"\n", "does not resolve"),
        ("[[listener.allowed]]\nae_title = \"X\"\nhost = \"127.0.0.1\"\n[[listener.allowed]]\nae_title = \"X\"\n"
         "host = \"127.0.0.1\"\n", "repeats peer"),
        ("[listener.tls]\nenabled = true\n", "needs certificate and private_key"),
        ("[listener.tls]\nrequire_client_certificate = true\n", "needs ca_certificates"),
        ("[roles]\nliver = \"(unclosed\"\n", "roles.liver is not a valid regular expression"),
        ("[roles]\nsegment = \"segment (\\\\d)\"\n", "named 'n'"),
        ("[roles]\nliver_codes = [\"NOCOLON\"]\n", "roles.liver_codes"),
        ("[selection]\nrule = \"largest\"\n", "selection.rule"),
        ("[worker]\nprocesses = 0\n", "worker.processes"),
        ("[measure]\nliver_condition = \"sick\"\n", "measure.liver_condition"),
        ("[destination]\nport = 0\n", "destination.port"),
        ("[output]\nsr = \"yes\"\n", "output.sr"),
        ("listener = 3\n", "'listener' must be a table"),
    ],
)
def test_config_rejects(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        load_pacs_config(_toml(tmp_path, text))


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_pacs_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not a valid TOML"):
        load_pacs_config(_toml(tmp_path, "[listener\n"))


def test_no_destination_means_results_stay_in_the_spool(tmp_path):
    assert not load_pacs_config(_toml(tmp_path, "[listener]\n"))["destination"]["enabled"]


# ------------------------------------------------------------------------------ roles


@pytest.mark.parametrize(
    "label, code, role, key",
    [
        ("Liver", None, "liver", None),
        ("  LIVER ", None, "liver", None),
        ("Tumor", None, "lesion", None),
        ("tumour 3", None, "lesion", None),
        ("Metastasis", None, "lesion", None),
        ("Neoplasm", None, "lesion", None),
        ("Lesion 12", None, "lesion", None),
        ("Segment 5", None, "segment", "5"),
        ("liver segment 4A", None, "segment", "4a"),
        ("Ablation zone", None, "zone", None),
        ("tumor ablation", None, "zone", None),  # zone before lesion in roles.order
        ("Future liver remnant", None, "remnant", None),
        ("Spleen", None, None, None),
        ("ROI 1", "SCT:10200004", "liver", None),
        ("ROI 2", "SCT:108369006", "lesion", None),
        ("ROI 3", "SCT:99999", None, None),
    ],
)
def test_segment_roles(label, code, role, key):
    roles = load_pacs_config(None)["roles"]
    assert segment_role(label, code, roles) == (role, key)


def test_segment_role_mapping_is_replaceable(tmp_path):
    cfg = load_pacs_config(_toml(tmp_path, '[roles]\nlesion = "^HCC"\nsegment_codes = { "SCT:71133005" = "1" }\n'))
    assert segment_role("HCC 1", None, cfg["roles"]) == ("lesion", None)
    assert segment_role("Tumor", None, cfg["roles"]) == (None, None)
    assert segment_role("x", "SCT:71133005", cfg["roles"]) == ("segment", "1")


# ------------------------------------------------------------------------------ input rules


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return ph.make_study(tmp_path_factory.mktemp("small"), n=10, rows=24, cols=24)


def _folder(tmp_path: Path, files, name="study") -> Path:
    d = tmp_path / name
    d.mkdir()
    for k, p in enumerate(files):
        os.link(p, d / f"{k:04d}")
    return d


def test_inputs_chosen_by_rule(tmp_path, small):
    plan = select_inputs(_folder(tmp_path, small.files), load_pacs_config(None), MCFG)
    assert plan.image.uid == small.ct.series_uid
    assert [r.role for r in plan.liver] == ["liver"] and [r.number for r in plan.lesions] == [2]
    assert plan.sop_uids == small.ct.sop_uids and plan.post is None


def test_inputs_park_without_seg(tmp_path, small):
    with pytest.raises(Parked, match="no DICOM SEG"):
        select_inputs(_folder(tmp_path, small.ct.paths), load_pacs_config(None), MCFG)


def test_inputs_park_without_a_matching_series(tmp_path, small):
    cfg = load_pacs_config(None, {"selection": {"description": "*ARTERIAL*"}})
    with pytest.raises(Parked, match="no image series matches"):
        select_inputs(_folder(tmp_path, small.files), cfg, MCFG)
    cfg = load_pacs_config(None, {"selection": {"modalities": ["MR"]}})
    with pytest.raises(Parked, match="no image series matches"):
        select_inputs(_folder(tmp_path, small.files, "b"), cfg, MCFG)


def test_inputs_park_without_lesion_segment(tmp_path, small):
    cfg = load_pacs_config(None, {"roles": {"lesion": "^nothing$", "lesion_codes": []}})
    with pytest.raises(Parked, match="no lesion segmentation"):
        select_inputs(_folder(tmp_path, small.files), cfg, MCFG)


def test_inputs_park_without_liver_segment(tmp_path, small):
    cfg = load_pacs_config(None, {"roles": {"liver": "^nothing$", "liver_codes": []}})
    with pytest.raises(Parked, match="no liver segmentation"):
        select_inputs(_folder(tmp_path, small.files), cfg, MCFG)


def test_inputs_park_when_two_segs_offer_the_liver(tmp_path, small):
    ds = pydicom.dcmread(small.seg_path)
    ds.SOPInstanceUID = dg.new_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    second = tmp_path / "seg2.dcm"
    ds.save_as(second)
    with pytest.raises(Parked, match="ambiguous liver input: 2 SEG objects"):
        select_inputs(_folder(tmp_path, small.files + [second]), load_pacs_config(None), MCFG)


def test_inputs_park_on_a_tie_of_series(tmp_path, small):
    # a second CT series of the same size, with its own SEG: the rule cannot choose
    other = ph.make_study(tmp_path / "other", n=10, rows=24, cols=24, study_uid=small.study_uid, seed=3)
    with pytest.raises(Parked, match="ambiguous image series"):
        select_inputs(_folder(tmp_path, small.files + other.files), load_pacs_config(None), MCFG)


def test_inputs_most_slices_wins(tmp_path, small):
    other = ph.make_study(tmp_path / "other", n=12, rows=24, cols=24, study_uid=small.study_uid, seed=3)
    plan = select_inputs(_folder(tmp_path, small.files + other.files), load_pacs_config(None), MCFG)
    assert plan.image.uid == other.ct.series_uid


def test_inputs_ignore_our_own_outputs(tmp_path, small):
    # a SEG written by liverburden (Manufacturer) offers nothing, even with matching labels
    ds = pydicom.dcmread(small.seg_path)
    ds.Manufacturer = "liverburden"
    ds.SOPInstanceUID = dg.new_uid()
    ds.SeriesInstanceUID = dg.new_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ours = tmp_path / "ours.dcm"
    ds.save_as(ours)
    plan = select_inputs(_folder(tmp_path, small.files + [ours]), load_pacs_config(None), MCFG)
    assert plan.liver[0].path.name != "ours.dcm"
    with pytest.raises(Parked, match="no DICOM SEG"):
        select_inputs(_folder(tmp_path, small.ct.paths + [ours], "b"), load_pacs_config(None), MCFG)


def test_inputs_corrupt_instance_parks(tmp_path, small):
    d = _folder(tmp_path, small.files)
    bad = d / "bad"
    bad.write_bytes(small.ct.paths[0].read_bytes()[:300])
    with pytest.raises(Parked, match="cannot be read"):
        select_inputs(d, load_pacs_config(None), MCFG)


# ------------------------------------------------------------------------------ spool


def test_spool_store_is_durable_private_and_named_by_hash(tmp_path):
    sp = Spool(tmp_path / "spool", "salt")
    p = sp.store("1.2.3.4", "1.2.3.4.5", b"DATA")
    assert p.read_bytes() == b"DATA"
    assert "1.2.3" not in str(p.relative_to(tmp_path))
    for d in [sp.root, sp.root / "studies", p.parent, sp.root / "tmp", sp.root / "results"]:
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert not list((sp.root / "tmp").iterdir())
    # the same instance again keeps one file
    sp.store("1.2.3.4", "1.2.3.4.5", b"DATA2")
    assert sp.instance_files(p.parent.name) == [p] and p.read_bytes() == b"DATA2"


def test_spool_state_machine(tmp_path):
    sp = Spool(tmp_path / "spool", "salt")
    for k in range(3):
        sp.store("1.2.3", f"1.2.3.{k}", b"x")
    skey = sp.study_key("1.2.3")
    assert sp.scan(60.0) == []  # not quiet yet
    now = time.time_ns() + int(61e9)
    assert sp.scan(60.0, now_ns=now) == [skey]
    assert sp.scan(60.0, now_ns=now) == []  # nothing changed
    row, lock = sp.claim(owner=42, max_attempts=3)
    assert row.state == "running" and row.attempts == 1
    assert sp.claim(owner=43, max_attempts=3) is None  # running, and locked
    assert sp.finish(skey, row.fingerprint, "done", reason=None, run="r1", measured_instances=3,
                     outbox=[(tmp_path / "a.dcm", "dicom", "1.2")])
    lock.release()
    assert sp.study(skey).state == "done" and sp.pending("dicom") == 1
    # a crash mid-run: the next start queues it again; attempts are bounded
    sp.store("1.2.3", "1.2.3.9", b"y")
    assert sp.scan(60.0, now_ns=time.time_ns() + int(61e9)) == [skey]
    for attempt in range(1, 3):
        row, lock = sp.claim(owner=7, max_attempts=2)
        lock.release()
        assert row.attempts == attempt
        assert sp.reset_running() == 1
    assert sp.claim(owner=7, max_attempts=2) is None
    assert sp.study(skey).state == "failed" and "2 attempt(s)" in sp.study(skey).reason


def test_spool_new_instances_during_a_run_queue_it_again(tmp_path):
    sp = Spool(tmp_path / "spool", "salt")
    sp.store("9.9", "9.9.1", b"x")
    skey = sp.study_key("9.9")
    sp.scan(1.0, now_ns=time.time_ns() + int(2e9))
    row, lock = sp.claim(owner=1, max_attempts=3)
    time.sleep(0.01)
    sp.store("9.9", "9.9.2", b"x")
    assert sp.scan(1.0, now_ns=time.time_ns() + int(2e9)) == [skey]  # re-queued while running
    assert not sp.finish(skey, row.fingerprint, "done", reason=None, run="r")
    lock.release()
    assert sp.study(skey).state == "queued"


def test_outbox_back_off(tmp_path):
    sp = Spool(tmp_path / "spool", "salt")
    sp.finish("k", "f", "done", reason=None, run=None, outbox=[(tmp_path / "x.dcm", "dicom", "1.2")])
    (rid, *_), = sp.due("dicom")
    t0 = time.time()
    nxt = sp.mark_failed([rid], "down", initial_s=2.0, max_s=5.0)
    assert 1.9 <= nxt - t0 <= 2.5 and sp.due("dicom") == []
    nxt = sp.mark_failed([rid], "down", initial_s=2.0, max_s=5.0)
    assert 3.9 <= nxt - time.time() <= 4.5
    nxt = sp.mark_failed([rid], "down", initial_s=2.0, max_s=5.0)
    assert nxt - time.time() <= 5.0
    assert sp.pending("dicom") == 1  # never dropped
    sp.mark_sent([rid])
    assert sp.pending("dicom") == 0


# ------------------------------------------------------------------------------ UIDs and codes


def test_uids_are_deterministic_and_valid():
    a, b = UidFactory("seed"), UidFactory("seed")
    assert a("sr/sop") == b("sr/sop") != a("seg/sop") != UidFactory("other")("sr/sop")
    for name in ("sr/sop", "seg/series", "lesion/1"):
        u = a(name)
        assert u.startswith("2.25.") and len(u) <= 64 and pydicom.uid.UID(u).is_valid


def test_why_we_do_not_use_pydicom_generate_uid():
    # pydicom 3: with prefix=None (the 2.25 form) entropy_srcs is ignored and the UID is
    # random; only with a prefix is it a hash. UidFactory derives 2.25 UIDs itself.
    from pydicom.uid import generate_uid

    assert generate_uid(prefix=None, entropy_srcs=["a"]) != generate_uid(prefix=None, entropy_srcs=["a"])
    assert generate_uid(prefix="1.2.3.", entropy_srcs=["a"]) == generate_uid(prefix="1.2.3.", entropy_srcs=["a"])


def test_result_digest_ignores_run_dependent_parts():
    d1 = {"lesions": [1], "timing_s": {"x": 1}, "inputs": {"h": "a"}, "warnings": ["/tmp/a"]}
    d2 = {"lesions": [1], "timing_s": {"x": 2}, "inputs": {"h": "b"}, "warnings": ["/tmp/b"]}
    assert result_digest(d1, None) == result_digest(d2, None) != result_digest({"lesions": [2]}, None)


def test_private_codes_are_listed_in_the_docstring():
    doc = codes.__doc__
    found = codes.private_codes()
    assert len(found) >= 14
    for c in found:
        assert c.scheme_designator == "99LIVERBURDEN"
        assert c.value in doc and c.meaning.split(":")[0] in doc, c.value
    assert len({c.value for c in found}) == len(found)


def test_worker_backs_off_when_the_spool_disk_is_full(tmp_path, caplog):
    """sqlite "database or disk is full" on every step: the worker loop waits
    poll, 2 poll, 4 poll ... up to worker.error_backoff_max_seconds and logs each
    wait once; before, it logged the error every poll (10 times a second) (issue 12
    item 10). Time is not waited for: the stop event's wait is recorded."""
    import logging
    import sqlite3
    import threading

    from liverburden.pacs._worker import Worker

    cfg_path = _toml(tmp_path, """
[listener]
spool_dir = "spool"
[worker]
poll_seconds = 0.1
error_backoff_max_seconds = 1.0
""")
    pcfg = load_pacs_config(cfg_path)
    spool = Spool(pcfg["listener"]["spool_dir"], "salt")
    w = Worker(pcfg, spool, index=1)  # index 1: only the study loop, no scan/send threads
    calls = {"n": 0}

    def full():
        calls["n"] += 1
        raise sqlite3.OperationalError("database or disk is full")

    w.run_one = full
    waits = []

    class Stop(threading.Event):
        def wait(self, timeout=None):
            waits.append(timeout)
            if len(waits) >= 8:
                self.set()
            return self.is_set()

    w.stop = Stop()
    with caplog.at_level(logging.INFO, logger="liverburden.pacs._worker"):
        w.serve()
    assert waits == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0])
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == calls["n"] == 8  # one line per wait, not per poll
    assert "OperationalError" in errors[0].getMessage() and "next try in 0.1 s" in errors[0].getMessage()
