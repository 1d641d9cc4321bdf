from pathlib import Path

import pytest

import liverburden as lb
from liverburden.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def test_configs_default_is_the_packaged_default():
    packaged = (Path(lb.__file__).parent / "data" / "default.toml").read_text()
    assert (ROOT / "configs" / "default.toml").read_text() == packaged


def test_every_threshold_of_the_reference_is_configurable():
    cfg = load_config()
    assert cfg["recist"]["min_measurable_ld_mm"] == 10.0
    assert cfg["recist"]["max_targets_total"] == 5
    assert cfg["recist"]["max_targets_per_organ"] == 2
    assert cfg["thresholds"]["involvement_favourable_pct"] == 25.0
    assert cfg["thresholds"]["involvement_milan_pct"] == 50.0
    assert cfg["thresholds"]["remnant_sod_high_mm"] == 50.0
    assert cfg["diameters"]["sa_perpendicular_tolerance_deg"] == 10.0
    assert cfg["lesions"]["connectivity"] == 26


def test_user_file_overrides_only_its_keys(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[lesions]\nconnectivity = 6\n")
    cfg = load_config(p)
    assert cfg["lesions"]["connectivity"] == 6
    assert cfg["lesions"]["hepatic_fraction"] == 0.5


@pytest.mark.parametrize(
    "text, match",
    [
        ("[lesions]\nconectivity = 6\n", "unknown key 'conectivity'"),
        ("[lesions]\nconnectivity = 7\n", "lesions.connectivity"),
        ("[thresholds]\ninvolvement_milan_pct = 150\n", "thresholds.involvement_milan_pct"),
        ("[thresholds]\ninvolvement_favourable_pct = 60\n", "must not exceed"),
        ("[labels]\nliver = [0]\n", "labels.liver"),
        ("not toml = = \n", "not a valid TOML"),
        ("[nosuch]\na = 1\n", "unknown key 'nosuch'"),
    ],
)
def test_bad_config_is_rejected_before_work(tmp_path, text, match):
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(lb.ConfigError, match=match):
        load_config(p)


def test_missing_config_file(tmp_path):
    with pytest.raises(lb.ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_config_schema_passes_its_meta_schema():
    """The run-time validator skips the meta-schema check (speed); it is here."""
    import json
    from pathlib import Path

    import jsonschema

    p = Path(__file__).resolve().parents[1] / "src" / "liverburden" / "schemas" / "config.schema.json"
    schema = json.loads(p.read_text())
    jsonschema.validators.validator_for(schema).check_schema(schema)
    bad = dict(schema, type="no-such-type")
    with pytest.raises(jsonschema.SchemaError):
        jsonschema.validators.validator_for(bad).check_schema(bad)
