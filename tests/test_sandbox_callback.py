"""SandboxCallback under Lightning, and sandbox failures during training (counted, logged, not fatal)."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch

from lightning_cort.callbacks import RolloutCallback, SandboxCallback, TokenEfficiencyCallback
from lightning_cort.data import ListDataset
from lightning_cort.formats import CoRTFormat
from lightning_cort.rollout import RolloutConfig, SamplingConfig
from lightning_cort.rollout.sampler import collate_prompts
from lightning_cort.sandbox import ExecutionError, ExecutionResult, LocalSandbox
from lightning_cort.tasks import CalculatorTask, build_prompt


class FlakySandbox(LocalSandbox):
    """A real sandbox whose every other execution fails as infrastructure (as a dying remote sandbox would)."""

    calls = 0

    def run_many(self, codes, *, sessions=None, timeout=None):
        results = super().run_many(codes, sessions=sessions, timeout=timeout)
        out = []
        for r in results:
            FlakySandbox.calls += 1
            failed = ExecutionResult("sandbox_error", error=ExecutionError("Injected", "the sandbox died"))
            out.append(failed if FlakySandbox.calls % 2 else r)
        return out


class _Boom(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)

    def training_step(self, batch, batch_idx):
        raise RuntimeError("boom")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_sandbox_is_closed_when_training_raises():
    cb = SandboxCallback(partial(LocalSandbox, timeout=2))
    trainer = L.Trainer(
        max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, callbacks=[cb]
    )
    loader = torch.utils.data.DataLoader(torch.zeros(4, 1), batch_size=2)
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(_Boom(), loader)
    with pytest.raises(RuntimeError, match="only while the Trainer runs"):
        _ = cb.sandbox


@pytest.mark.slow
def test_sandbox_failures_during_grpo_are_counted_and_excluded(trained_policy, tokenizer, tmp_path):
    import copy

    from lightning.pytorch.loggers import CSVLogger

    from lightning_cort.modules import GRPOModule
    from lightning_cort.modules.grpo import GRPOConfig

    rows = []
    for p in CalculatorTask(seed=3).problems("train", 8):
        rows.append({**p.to_row(), "prompt": build_prompt(p.question)})
    module = GRPOModule(copy.deepcopy(trained_policy), tokenizer, GRPOConfig(group_size=4, lr=1e-5))
    config = RolloutConfig(max_calls=2, max_total_tokens=160, sampling=SamplingConfig(temperature=1.0))
    sandbox = SandboxCallback(partial(FlakySandbox, timeout=2))
    trainer = L.Trainer(
        max_steps=2,
        logger=CSVLogger(tmp_path),
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[
            sandbox,
            RolloutCallback(CoRTFormat(), config, sandbox=sandbox),
            TokenEfficiencyCallback(),
        ],
    )
    trainer.fit(module, torch.utils.data.DataLoader(ListDataset(rows), batch_size=4, collate_fn=collate_prompts))
    assert trainer.global_step == 2  # training went on
    metrics = (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").read_text()
    header, *lines = metrics.strip().splitlines()
    cols = header.split(",")
    failure_rates = [
        float(v)
        for line in lines
        for k, v in zip(cols, line.split(","))
        if k == "rollout/infrastructure_failure_rate" and v
    ]
    excluded = [float(v) for line in lines for k, v in zip(cols, line.split(",")) if k == "train/excluded" and v]
    errors = [
        float(v) for line in lines for k, v in zip(cols, line.split(",")) if k == "sandbox/status_sandbox_error" and v
    ]
    assert failure_rates and max(failure_rates) > 0
    assert excluded and max(excluded) > 0
    assert errors and sum(errors) > 0
