from __future__ import annotations

import re

import pytest

from lightning_cort.answers import check_answer
from lightning_cort.formats import CORT_PROMPT_HINT, CoRTFormat, ReToolFormat
from lightning_cort.rewards import final_answer
from lightning_cort.tasks import ALL_KINDS, CalculatorTask, build_prompt, code_trace, reference_output, text_trace


def test_problems_are_deterministic_and_seed_dependent():
    a = CalculatorTask(seed=3).problems("train", 50)
    b = CalculatorTask(seed=3).problems("train", 50)
    c = CalculatorTask(seed=4).problems("train", 50)
    assert a == b
    assert [p.question for p in a] != [p.question for p in c]
    assert {p.kind for p in a} == set(ALL_KINDS)


def test_held_out_split_is_disjoint_from_train():
    task = CalculatorTask(kinds=("gcd",), digits=2, seed=0)  # a small space, so collisions would show
    test = {p.question for p in task.problems("test", 200)}
    train = {p.question for p in task.problems("train", 2000)}
    assert not test & train


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_reference_programs_print_the_answer_in_a_sandbox(kind, sandbox):
    problems = CalculatorTask(kinds=(kind,), digits=3, seed=1).problems("test", 4)
    results = sandbox.run_many([p.code for p in problems])
    for p, r in zip(problems, results):
        assert r.status == "ok", r
        assert r.stdout.strip() == p.answer
        assert reference_output(p).strip() == p.answer


@pytest.mark.parametrize("kind", ["multiply", "series_sum", "lcm"])
def test_text_steps_are_correct_arithmetic(kind):
    for p in CalculatorTask(kinds=(kind,), digits=3, seed=2).problems("test", 10):
        for step in p.steps:
            m = re.fullmatch(r"(\d+) ([*+/]) (\d+) = (\d+)", step)
            if m:
                a, op, b, c = int(m[1]), m[2], int(m[3]), int(m[4])
                assert {"*": a * b, "+": a + b, "/": a // b}[op] == c, step
        assert p.steps[-1].endswith(p.answer)


def test_answers_need_a_calculator():
    """Every multiply answer at 3 digits has at least 5 digits: beyond what a tiny model does in its head."""
    for p in CalculatorTask(kinds=("multiply",), digits=3).problems("test", 50):
        assert len(p.answer) >= 5


@pytest.mark.parametrize("fmt", [CoRTFormat(), ReToolFormat()], ids=lambda f: f.name)
def test_traces_are_well_formed_and_answer_correctly(fmt):
    for p in CalculatorTask(seed=5).problems("train", 12):
        code = code_trace(p, reference_output(p), fmt)
        assert code.startswith(CORT_PROMPT_HINT)
        blocks = fmt.parse(code)
        assert [b.kind for b in blocks] == ["text", "code", "output", "text"]
        assert blocks[1].content == p.code and blocks[2].content == p.answer
        text = text_trace(p, fmt)
        assert not [b for b in fmt.parse(text) if b.kind != "text"]
        for trace in (code, text):
            assert check_answer(trace, p.answer, mode="strict")
            assert final_answer(trace) == p.answer


def test_prompt_has_cort_suffix():
    assert build_prompt("What is 2?").endswith("put your final answer within \\boxed{}.")
    assert build_prompt("What is 2?", suffix=None) == "What is 2?"


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown or empty"):
        CalculatorTask(kinds=("division",))
    with pytest.raises(ValueError, match="digits"):
        CalculatorTask(digits=0)
    with pytest.raises(ValueError, match="split"):
        CalculatorTask().problems("validation", 1)  # type: ignore[arg-type]


def test_a_task_with_too_few_distinct_problems_is_an_error_not_a_hang():
    """1-digit products are all held out already: the training stream would search forever."""
    task = CalculatorTask(kinds=["multiply"], digits=1)
    with pytest.raises(ValueError, match=r"ran out of training problems after 0 of 5.*raise task\.digits"):
        task.problems("train", 5)


@pytest.mark.parametrize("fmt", [CoRTFormat(), ReToolFormat()], ids=lambda f: f.name)
def test_the_mixed_teacher_writes_each_strategy_as_it_says(fmt, sandbox):
    """Every strategy opens the same way and boxes the right answer; the repair's first program really fails in the
    sandbox with the error the trace shows, and the fixed one prints the answer; the teacher's choice is seeded by the
    problem and follows the rates."""
    from collections import Counter

    from lightning_cort.tasks.calculator import (
        MIXED_OPENING,
        MIXED_RATES,
        RECHECK,
        REPAIR,
        broken_program,
        mixed_strategy,
        mixed_trace,
    )

    problems = CalculatorTask(seed=0).problems("train", 3000)
    for p in problems[:12]:
        traces = {s: mixed_trace(p, s, fmt) for s in ("code", "hand", "recheck", "repair")}
        for strategy, trace in traces.items():
            assert trace.startswith(MIXED_OPENING + "\n")
            assert final_answer(trace) == p.answer
            calls = [b for b in fmt.parse(trace) if b.kind == "code"]
            assert len(calls) == {"hand": 0, "code": 1, "recheck": 1, "repair": 2}[strategy]
        assert RECHECK in traces["recheck"] and "\n".join(p.steps) in traces["recheck"]
        assert REPAIR in traces["repair"]
    p = problems[0]
    failed = sandbox.run(broken_program(p))
    outputs = [b.content for b in fmt.parse(mixed_trace(p, "repair", fmt)) if b.kind == "output"]
    assert failed.status == "error" and outputs[0].strip() == result_text_of(failed)
    assert outputs[1].strip() == reference_output(p).strip()
    assert mixed_strategy(problems[5]) == mixed_strategy(problems[5])
    for kind in ("multiply", "modpow"):
        of_kind = [p for p in problems if p.kind == kind]
        counts = Counter(mixed_strategy(p) for p in of_kind)
        for strategy, rate in MIXED_RATES[kind].items():
            assert abs(counts[strategy] / len(of_kind) - rate) < 0.06


def result_text_of(result) -> str:
    from lightning_cort.formats import result_text

    return result_text(result).strip()
