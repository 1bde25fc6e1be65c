"""``trainer.logger``: every training recipe logs through one code path to CSV and, when asked, to TensorBoard,
Weights & Biases (offline) or MLflow (a file store), with the run's config attached; a missing tracker package is
an error at start."""

from __future__ import annotations

import importlib.util
import json
import time

import pytest
import yaml

from lightning_cort.recipes import sft

#: A few seconds of SFT on the tiny model: enough for logged steps.
TINY_SFT = [
    "--sft.examples", "32", "--sft.epochs", "1", "--sft.batch_size", "8", "--model.tiny.num_layers", "1",
    "--held_out.size", "0", "--progress", "false", "--trainer.log_every_n_steps", "1",
]  # fmt: skip


def _run(tmp_path, logger: str) -> dict:
    return sft.main([*TINY_SFT, "--trainer.logger", logger, "--run_dir", str(tmp_path), "--sft.lr", "0.00123"])


def test_tensorboard_gets_the_metrics_and_the_config(tmp_path):
    _run(tmp_path, "tensorboard")
    (events,) = (tmp_path / "tensorboard").rglob("events.out.tfevents.*")
    assert b"train/sft_loss" in events.read_bytes()
    (hparams,) = (tmp_path / "tensorboard").rglob("hparams.yaml")
    assert yaml.safe_load(hparams.read_text())["sft"]["lr"] == 0.00123
    assert (tmp_path / "logs" / "version_0" / "metrics.csv").exists()  # CSV is always written


def test_wandb_offline_gets_the_metrics_and_the_config(tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    try:
        _run(tmp_path, "wandb")
    finally:
        wandb.finish()
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    (record,) = run_dir.glob("run-*.wandb")
    for _ in range(100):  # wandb's service may still be writing the record after finish() returns
        data = record.read_bytes()
        if b"train/sft_loss" in data:
            break
        time.sleep(0.1)
    assert b"train/sft_loss" in data and b"0.00123" in data  # the metric and the config's sft.lr
    assert (tmp_path / "logs" / "version_0" / "metrics.csv").exists()


def test_mlflow_file_store_gets_the_metrics_and_the_config(tmp_path):
    _run(tmp_path, "mlflow")
    metrics = list((tmp_path / "mlruns").rglob("metrics/train/sft_loss"))
    assert len(metrics) == 1 and metrics[0].read_text().strip()
    (lr,) = (tmp_path / "mlruns").rglob("params/sft/lr")  # nested config keys flattened as sft/lr
    assert lr.read_text() == "0.00123"
    assert next((tmp_path / "mlruns").rglob("params/model/tiny/num_layers")).read_text() == "1"
    assert json.loads((tmp_path / "summary.json").read_text())["optimizer_steps"] == 4


def test_a_missing_tracker_package_is_an_error_at_start(monkeypatch, capsys):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real_find_spec(name, *a)
    )
    with pytest.raises(SystemExit):
        sft.main(["--trainer.logger", "wandb", "--dry-run"])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "trainer.logger wandb needs the wandb package: pip install 'lightning-cort[loggers]'" in line
