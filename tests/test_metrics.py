from __future__ import annotations

import pytest
import torch

from lightning_cort.metrics import rollout_statistics, token_efficiency
from lightning_cort.sandbox import ExecutionError, ExecutionResult
from lightning_cort.trajectory import Segment, ToolCall, Trajectory


def _traj(model: int, tool: int, results: list[ExecutionResult], finish="eos", gen=1.0, tool_s=0.5) -> Trajectory:
    mask = [1] * model + [0] * tool
    segments = [Segment("model", 0, model, "m")] + ([Segment("tool", model, model + tool, "t")] if tool else [])
    calls = [ToolCall("print(1)", r, "t", 1) for r in results]
    return Trajectory(
        torch.zeros(3, dtype=torch.long),
        torch.zeros(model + tool, dtype=torch.long),
        torch.tensor(mask),
        segments,
        calls,
        finish,
        generation_s=gen,
        tool_s=tool_s,
    )


def test_token_efficiency_on_hand_built_trajectories():
    ok, bad = ExecutionResult("ok", stdout="1"), ExecutionResult("sandbox_error", error=ExecutionError("X", "y"))
    trajs = [_traj(40, 10, [ok]), _traj(60, 0, [], finish="length"), _traj(30, 10, [bad])]
    m = token_efficiency(trajs, [True, False, True])
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["tokens_per_response"] == pytest.approx(150 / 3)
    assert m["model_tokens_per_response"] == pytest.approx(130 / 3)
    assert m["tool_tokens_per_response"] == pytest.approx(20 / 3)
    assert m["tokens_per_correct"] == pytest.approx(150 / 2)
    assert m["tokens_correct"] == pytest.approx(45) and m["tokens_incorrect"] == pytest.approx(60)
    assert m["tool_calls_per_response"] == pytest.approx(2 / 3)
    assert m["code_use_rate"] == pytest.approx(2 / 3) and m["code_success_rate"] == pytest.approx(0.5)
    assert m["truncation_rate"] == pytest.approx(1 / 3)
    assert m["infrastructure_failure_rate"] == pytest.approx(0.5)
    assert m["interpreter_time_share"] == pytest.approx(1.5 / 4.5)
    stats = rollout_statistics(trajs)
    assert stats["tokens_per_s"] == pytest.approx(130 / 3.0)
    assert {k: m[k] for k in stats if k in m} == {k: v for k, v in stats.items() if k in m}
    assert token_efficiency([_traj(5, 0, [])], [False])["tokens_per_correct"] == float("inf")
