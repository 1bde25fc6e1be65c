"""The toy CoRT study (benchmarks/toy_cort.py), shortened: every stage of both tables is produced by the recipes."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "toy_cort.py"


def _study():
    spec = importlib.util.spec_from_file_location("toy_cort", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_shortened_study_produces_every_row(tmp_path):
    study = _study()
    results = study.main(["--quick", "--out", str(tmp_path)])
    rows = results["rows"]
    assert [(r["format"], r["stage"]) for r in rows] == [(f, s) for f in ("cort", "retool") for s in study.STAGES]
    for r in rows:
        for metric in study.METRICS:
            assert metric in r
        assert 0.0 <= r["accuracy"] <= 1.0 and r["tokens_per_response"] > 0
    sft_rows = [r for r in rows if "SFT" in r["stage"] and "RFT" not in r["stage"]]
    budget = results["config"]["token_budget"]
    for r in sft_rows:  # same budget of trained tokens for both SFT stages (whole traces, so within one trace's worth)
        assert abs(r["trained_tokens"] - budget) < 0.35 * budget, r
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == json.loads(json.dumps(rows))
    assert (tmp_path / "toy_cort.png").stat().st_size > 0
    for fmt in ("cort", "retool"):
        assert (tmp_path / fmt / "grpo" / "policy" / "config.json").exists()
    section = study.readme_section(results)
    assert section.count("| GRPO from RFT |") == 2 and "python benchmarks/toy_cort.py" in section
