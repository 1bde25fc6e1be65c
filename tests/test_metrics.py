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


def test_pass_at_k_matches_exact_enumeration():
    import itertools
    import random

    from lightning_cort.metrics import pass_at_k

    rng = random.Random(0)
    for _ in range(30):
        n = rng.randint(1, 9)
        flags = [rng.random() < 0.4 for _ in range(n)]
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(flags, k))
            exact = sum(any(s) for s in subsets) / len(subsets)
            assert pass_at_k(n, sum(flags), k) == pytest.approx(exact, abs=1e-12)
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)


def test_sample_metrics_avg_pass_and_majority():
    from lightning_cort.metrics import sample_metrics

    correct = [[True, False, False, True], [False, False, False, False], [True, True, True, False]]
    answers = [["7", "8", "8", "7"], ["1", None, "2", "2"], ["5", "5", "5", "6"]]
    out = sample_metrics(correct, answers, ks=(1, 2, 4, 8))
    assert out["avg@4"] == pytest.approx((0.5 + 0.0 + 0.75) / 3)
    assert out["pass@1"] == pytest.approx(out["avg@4"])  # pass@1 is the mean correctness
    assert out["pass@4"] == pytest.approx(2 / 3)
    assert "pass@8" not in out  # more than the samples drawn
    # Problem 0: "7" and "8" tie 2-2, the first seen ("7") wins and is correct; 1: "2" wins, wrong; 2: "5", right.
    assert out["maj@4"] == pytest.approx(2 / 3)


def test_budget_accuracy_truncates_and_rescores():
    from lightning_cort.metrics import accuracy_per_kilotoken, budget_accuracy

    lengths, correct = [100, 300, 900, 50], [True, True, True, False]
    assert budget_accuracy(lengths, correct, [60, 300, 1000]) == {60: 0.0, 300: 0.5, 1000: 0.75}
    # With a rescorer: response 2 already states its (right) answer in its first 500 tokens.
    rescored = budget_accuracy(lengths, correct, [500], rescore=lambda i, b: i == 2 and b >= 500)
    assert rescored == {500: 0.75}
    assert accuracy_per_kilotoken(0.5, 250.0) == pytest.approx(2.0)
