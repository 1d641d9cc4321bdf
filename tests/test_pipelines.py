"""``pipelines/``: every file there runs or is checked.

The sample cohort is the bundled study measured twice; the rescan must reproduce
the baseline exactly (a reproducibility check, not a phantom): same lesions, same
LDs and volumes, target SoD change 0 %, response SD. The baseline's own numbers
are checked against ``sample_data/study/truth.json`` (brute-force truth).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pandas as pd
import pytest

from liverburden.cli import main

ROOT = Path(__file__).resolve().parents[1]
PIPE = ROOT / "pipelines"


def test_every_pipeline_file_is_listed_in_its_readme():
    readme = (PIPE / "README.md").read_text()
    files = [p.relative_to(PIPE).as_posix() for p in PIPE.rglob("*") if p.is_file() and p.name != "README.md"]
    assert files
    missing = [f for f in files if f"`{f}`" not in readme]
    assert not missing, f"pipelines/README.md does not list {missing}"


@pytest.mark.parametrize("script", sorted(p.name for p in PIPE.rglob("*.sh")))
def test_shell_scripts_parse(script):
    path = next(PIPE.rglob(script))
    r = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_dask_script_refuses_missing_arguments():
    r = subprocess.run(["bash", str(PIPE / "dask_cluster.sh")], capture_output=True, text=True)
    assert r.returncode == 2 and "usage" in r.stderr


def test_pacs_hook_config_is_valid():
    from liverburden.pacs._config import load_pacs_config, peers

    cfg = load_pacs_config(PIPE / "pacs_hook" / "pacs.toml")
    assert cfg["listener"]["ae_title"] == "LIVERBURDEN"
    ps = peers(cfg)
    assert len(ps) == 1 and ps[0].ae_title == "MODALITY"
    unit = (PIPE / "pacs_hook" / "liverburden-listen.service").read_text()
    assert "liverburden listen --config /etc/liverburden/pacs.toml" in unit


def test_sample_cohort_reproduces_itself(tmp_path):
    out = tmp_path / "cohort"
    rc = main(["batch", str(PIPE / "sample_cohort" / "manifest.csv"), "--out", str(out), "--workers", "1", "--quiet"])
    assert rc == 0
    studies = pd.read_csv(out / "studies.csv")
    lesions = pd.read_csv(out / "lesions.csv")
    assert len(studies) == 2 and set(studies["state"]) == {"ok"}
    s0, s1 = (studies[studies["timepoint"] == t].iloc[0] for t in ("baseline", "rescan"))
    for col in ("liver_volume_ml", "tumor_volume_ml", "involvement_pct", "sum_diameters_all_mm"):
        assert s0[col] == s1[col], col
    truth = json.loads((ROOT / "sample_data" / "study" / "truth.json").read_text())
    base = lesions[lesions["timepoint"] == "baseline"].sort_values("id")
    rescan = lesions[lesions["timepoint"] == "rescan"].sort_values("id")
    assert len(base) == len(rescan) > 0
    for col in ("volume_ml", "ld_mm", "sa_mm"):
        assert list(base[col]) == list(rescan[col]), col
    # the baseline against the sample's brute-force truth
    tl = {int(l["id"]): l for l in truth["lesions"]}
    assert sorted(tl) == sorted(int(i) for i in base["id"])
    for _, row in base.iterrows():
        t = tl[int(row["id"])]
        assert row["ld_mm"] == pytest.approx(t["ld_mm"], abs=1e-6)
        assert row["volume_ml"] == pytest.approx(t["volume_ml"], rel=1e-9)
    resp = pd.read_csv(out / "response.csv")
    r2 = resp[resp["label"] == "rescan"].iloc[0]
    assert r2["change_from_baseline_pct"] == pytest.approx(0.0, abs=1e-9)
    assert r2["response"] == "SD"


@pytest.mark.skipif(shutil.which("liverburden") is None, reason="the liverburden command is not installed")
def test_sample_cohort_script_runs(tmp_path):
    r = subprocess.run(["bash", str(PIPE / "sample_cohort" / "run.sh"), str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "o" / "studies.csv").is_file()
