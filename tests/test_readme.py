"""The README's Python example runs and its commands name real flags."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_python_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert blocks, "README has no python example"
    out = subprocess.run([sys.executable, "-c", blocks[0]], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.strip().splitlines()
    vol, ld, sa, m3, inv = map(float, first.split())
    # the example's lesion is a 7 x 20 x 14 voxel box at (2.5, 0.8, 0.8) mm
    assert vol == pytest.approx(7 * 20 * 14 * 2.5 * 0.64 / 1000)
    assert ld == pytest.approx(((19 * 0.8) ** 2 + (13 * 0.8) ** 2) ** 0.5)
    assert m3 == pytest.approx(((6 * 2.5) ** 2 + (19 * 0.8) ** 2 + (13 * 0.8) ** 2) ** 0.5)
    assert "A" in second


def test_ci_runs_the_readme_test_command():
    assert "bash .ci/run" in README
    assert "pytest" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("cmd", ["measure", "margin", "compare", "batch", "report"])
def test_every_documented_flag_exists(cmd):
    from liverburden.cli import _build_parser

    parser = _build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[cmd]
    known = {o for a in sub._actions for o in a.option_strings}
    section = README.split(f"### `liverburden {cmd}`")[1].split("### ")[0].split("\n\n")[1]
    flags = set(re.findall(r"(--[a-z][a-z0-9-]*)", section))
    assert flags, cmd
    assert flags <= known, f"README flags not in the parser: {flags - known}"
