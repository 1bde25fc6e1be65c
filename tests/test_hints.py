"""Hint-Engineering: hint points, insertion, the heuristic detector, review by scripted answers, format conversion,
and synthesis end to end with a scripted teacher and the real sandbox. The LLM judge is in test_hints_judge.py."""

from __future__ import annotations

import io
import json

import pytest
from hint_traces import (
    AREA_ANSWER,
    AREA_PROBLEM,
    AREA_TRACE,
    CLEAN_PROBLEM,
    CLEAN_TRACE,
    FAILED_TRACE,
    SQUARES_PROBLEM,
    SQUARES_TRACE,
    TWO_CHECKS_TRACE,
)
from rich.console import Console

from lightning_cort.filters import (
    text_shows_delayed_computation,
    text_shows_result_distrust,
)
from lightning_cort.formats import CORT_HINT_CALCULATE, CORT_HINT_TRUST, CORT_PROMPT_HINT, CORT_SUFFIX
from lightning_cort.hints import (
    HeuristicDetector,
    HintDetector,
    HintPoint,
    apply_hints,
    convert,
    cut_at_hint,
    from_messages,
    insert_prompt_hint,
    read_traces,
    review_file,
    review_points,
    to_messages,
    write_jsonl,
)

H1 = CORT_HINT_CALCULATE
H2 = CORT_HINT_TRUST


# -- hint points and insertion --
def test_prompt_hint_goes_at_the_start_of_the_thinking_once():
    assert insert_prompt_hint("Let me see.") == f"{CORT_PROMPT_HINT}.\nLet me see."
    assert insert_prompt_hint("<think>\nLet me see.") == f"<think>\n{CORT_PROMPT_HINT}.\nLet me see."
    assert insert_prompt_hint("<think>Let me see.") == f"<think>{CORT_PROMPT_HINT}.\nLet me see."
    once = insert_prompt_hint("<think>\nLet me see.")
    assert insert_prompt_hint(once) == once  # idempotent
    assert insert_prompt_hint("x", "Use code.") == "Use code.\nx"  # no second full stop
    assert insert_prompt_hint("x", "Use code", end=". ") == "Use code. x"


def test_hint_point_validation_and_dicts():
    p = HintPoint("trust", 12, "re-checks", 0.5, text="Trust it.")
    assert HintPoint.from_dict(p.to_dict()) == p
    assert HintPoint("calculate", 3).to_dict() == {"kind": "calculate", "offset": 3, "reason": "", "score": 1.0}
    with pytest.raises(ValueError, match=r"kind must be one of .*got 'verify'.*offset must be an int >= 0, got -1"):
        HintPoint("verify", -1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"a hint point needs \['offset'\]"):
        HintPoint.from_dict({"kind": "trust"})


def test_apply_and_cut_at_a_calculate_point():
    at = AREA_TRACE.index("Let me multiply")
    point = HintPoint("calculate", at)
    applied = apply_hints(AREA_TRACE, [point])
    assert applied == AREA_TRACE[:at] + H1 + "\n```python\n" + AREA_TRACE[at:]
    assert cut_at_hint(AREA_TRACE, point) == (
        "Okay, so I need the area and the perimeter of a rectangle with sides 437 and 289, then their sum.\n\n"
        "The area is the product of the sides. It looks tedious, and we can use python code to simplify the "
        "reasoning.\n```python\n"
    )
    assert cut_at_hint(AREA_TRACE, point, code_format="retool").endswith("reasoning.\n<code>\n```python\n")
    # mid-sentence: a space before the hint; a trace that already opens code there gets no second fence
    assert cut_at_hint("so 12 ", HintPoint("calculate", 2)) == f"so {H1}\n```python\n"
    assert apply_hints("Hm.\n```python\nx\n```\n", [HintPoint("calculate", 4)]) == f"Hm.\n{H1}\n```python\nx\n```\n"
    with pytest.raises(ValueError, match="past the end of the trace"):
        apply_hints("abc", [HintPoint("trust", 4)])
    with pytest.raises(ValueError, match="past the end of the trace"):
        cut_at_hint("abc", HintPoint("trust", 4))


def test_apply_trust_points_and_text_overrides():
    at = SQUARES_TRACE.index("Wait, let me verify")
    applied = apply_hints(SQUARES_TRACE, [HintPoint("trust", at)])
    assert applied == SQUARES_TRACE[:at] + H2 + " " + SQUARES_TRACE[at:]
    assert "So the sum is 5239625. We don't need to doubt the accuracy of python calculations. Wait," in applied
    assert cut_at_hint(SQUARES_TRACE, HintPoint("trust", at)) == SQUARES_TRACE[:at] + H2
    custom = apply_hints("A. B.", [HintPoint("trust", 3, text="Trust it."), HintPoint("calculate", 0, text="Code!")])
    assert custom == "Code!\n```python\nA. Trust it. B."


# -- the heuristic detector --
def test_heuristic_detector_finds_manual_calculation_before_code():
    detect = HeuristicDetector()
    assert isinstance(detect, HintDetector)
    (point,) = detect(AREA_PROBLEM, AREA_TRACE)
    assert point.kind == "calculate" and point.offset == AREA_TRACE.index("Let me multiply")
    assert point.reason == "manual calculation '437 * 289'"
    # a calculation that restates the problem is not one; stating a result makes it one again
    assert detect("What is 123 * 456?", "We need 123 * 456. Fine.") == []
    assert detect("What is 123 * 456?", "We need 123 * 456. So 123 * 456 = 56088.") == [
        HintPoint("calculate", 19, "manual calculation '123 * 456'")
    ]
    perimeter = "First the perimeter.\nThe perimeter is $2(437 + 289) = 1452$."
    assert detect(AREA_PROBLEM, perimeter) == [
        HintPoint("calculate", perimeter.index("The perimeter"), "manual calculation '437 + 289'")
    ]  # in $...$, at the start of its line
    assert HeuristicDetector(min_calculations=9)(AREA_PROBLEM, AREA_TRACE) == []
    assert HeuristicDetector(kinds=["trust"])(AREA_PROBLEM, AREA_TRACE) == []


def test_heuristic_detector_finds_distrust_after_a_successful_output_only():
    detect = HeuristicDetector()
    (point,) = detect(SQUARES_PROBLEM, SQUARES_TRACE)
    assert point == HintPoint(
        "trust", SQUARES_TRACE.index("Wait, let me verify"), "re-verifies the output: 'let me verify'"
    )
    assert detect(CLEAN_PROBLEM, CLEAN_TRACE) == []
    assert detect("What is 123 * 456?", FAILED_TRACE) == []  # the output failed; the arithmetic is after the code


def test_heuristic_detector_stretches_math_and_limits():
    t = TWO_CHECKS_TRACE
    points = HeuristicDetector()("What is the integer part of the square root of 347 * 521?", t)
    assert [(p.kind, p.offset) for p in points] == [
        ("calculate", t.index("We compute")),  # not inside the display math on the next lines
        ("trust", t.index("Let me double-check")),
        ("trust", t.index("But wait")),
    ]
    more = HeuristicDetector(max_per_stretch=2)("q", t)
    assert [p.offset for p in more] == [p.offset for p in points] + [t.index("425 * 425")]
    retool = convert(t, "cort", "retool")
    assert [
        (p.kind, retool[p.offset : p.offset + 8]) for p in HeuristicDetector(code_format="retool")("q", retool)
    ] == [
        ("calculate", "We compu"),
        ("trust", "Let me d"),
        ("trust", "But wait"),
    ]
    with pytest.raises(ValueError, match=r"min_digits must be >= 1.*max_per_stretch must be >= 1.*kinds must be"):
        HeuristicDetector(0, max_per_stretch=0, kinds=["verify"])  # type: ignore[list-item]


def test_text_level_filters():
    assert text_shows_delayed_computation(AREA_TRACE)  # six multi-digit operations, no code
    assert not text_shows_delayed_computation(SQUARES_TRACE)
    assert text_shows_result_distrust(SQUARES_TRACE)
    assert not text_shows_result_distrust(CLEAN_TRACE)
    assert not text_shows_result_distrust(FAILED_TRACE)  # no output succeeded
    assert text_shows_result_distrust(convert(SQUARES_TRACE, "cort", "retool"), "retool")


# -- review --
def _review(trace, points, answers, **kw):
    script = iter(answers)
    asked: list[str] = []

    def ask(prompt: str) -> str:
        asked.append(prompt)
        return next(script)

    out = io.StringIO()
    kept = review_points(trace, points, console=Console(file=out, width=200), ask=ask, **kw)
    assert next(script, None) is None, "not every scripted answer was used"
    return kept, out.getvalue(), asked


def test_review_accept_reject_and_quit():
    t = TWO_CHECKS_TRACE
    a, b, c = (HintPoint("trust", t.index(s)) for s in ("Good.", "Let me double-check", "But wait"))
    kept, shown, _ = _review(t, [c, a, b], ["r", "a", "x", "q"])  # reviewed in offset order; "x" shows the help
    assert kept == [b, c]  # a rejected, b accepted, c kept by quitting
    assert "point 1/3: trust at offset" in shown and "k: switch kind" in shown
    assert f"Good. {H2} Let me double-check" in shown  # the insertion as it would be, in context
    kept, _, _ = _review(t, [a, b], ["", "a"])  # Enter accepts
    assert kept == [a, b]


def test_review_default_prompt_reads_the_terminal(monkeypatch):
    answers = iter(["r", "m /Now the root", ""])  # points in offset order: q, then p
    monkeypatch.setattr("builtins.input", lambda *args: next(answers))
    out = io.StringIO()
    p, q = HintPoint("trust", TWO_CHECKS_TRACE.index("Good."), "[bold]x[/bold]"), HintPoint("trust", 0)
    kept = review_points(TWO_CHECKS_TRACE, [p, q], console=Console(file=out, width=200))
    assert kept == [p.moved(TWO_CHECKS_TRACE.index("Now the root"))]  # q rejected; p moved, then Enter accepted
    shown = out.getvalue()
    assert "[a]ccept  [r]eject  [m]ove" in shown and "([bold]x[/bold])" in shown  # no markup interpretation


def test_review_moves():
    t = TWO_CHECKS_TRACE
    start = t.index("Good.")
    p = HintPoint("trust", start, "proposed")
    kept, _, _ = _review(t, [p], ["m +6", "a"])
    assert kept == [p.moved(start + 6)]
    kept, _, _ = _review(t, [p], ["m /Now the root", "m -4", "a"])
    assert kept == [p.moved(t.index("Now the root") - 4)]
    kept, _, _ = _review(t, [p], ["m >", "m >", "m <", "a"])  # next, next, previous sentence start
    assert kept == [p.moved(t.index("Let me double-check"))]
    kept, _, asked = _review(t, [p], ["m", "/Now   the\nroot", "a"])  # white space is ignored
    assert kept == [p.moved(t.index("Now the root"))] and asked[1].startswith("move to")
    kept, shown, _ = _review(t, [p], [f"m {t.index('math.isqrt')}", "m /not in the trace", "m sideways", "a"])
    assert kept == [p]
    assert "inside a code or output block; not moved" in shown and "cannot move by 'sideways'" in shown
    kept, _, _ = _review(t, [p], ["m -100000", "a"])
    assert kept == [p.moved(0)]


def test_review_edit_kind_and_add():
    t = SQUARES_TRACE
    p = HintPoint("trust", t.index("Wait, let me verify"))
    kept, shown, _ = _review(t, [p], ["e The interpreter is exact.", "a"])
    assert kept == [HintPoint("trust", p.offset, text="The interpreter is exact.")]
    assert "5239625. The interpreter is exact. Wait" in shown
    kept, _, _ = _review(t, [p], ["e", "", "e", "Trust it.", "k", "a"])  # empty answer keeps the text
    assert kept == [HintPoint("calculate", p.offset, text="Trust it.")]
    kept, _, asked = _review(t, [p], ["n c /There is a closed form", "n", "t", "/So the sum", "n q", "a", "r", "a"])
    added = HintPoint("calculate", t.index("There is a closed form"), "added in review")
    assert kept == [added, p]  # p accepted; the second added point (trust at "So the sum") rejected
    assert asked[2].startswith("kind of the new point") and asked[3].startswith("where")


def test_review_file_resumes_and_reports_bad_rows(tmp_path):
    src, dst = tmp_path / "proposals.jsonl", tmp_path / "reviewed.jsonl"
    a = HintPoint("trust", SQUARES_TRACE.index("Wait, let me verify"))
    rows = [
        {"id": "sq", "problem": SQUARES_PROBLEM, "trace": SQUARES_TRACE, "points": [a.to_dict()]},
        {"id": "area", "problem": AREA_PROBLEM, "trace": AREA_TRACE},  # no points: the detector proposes
        {"id": "clean", "trace": CLEAN_TRACE, "points": []},
    ]
    write_jsonl(rows, src)
    answers = iter(["e Trust it.", "q"])
    out = Console(file=io.StringIO())
    assert review_file(src, dst, detector=HeuristicDetector(), console=out, ask=lambda _: next(answers)) == 1
    written = [json.loads(line) for line in dst.read_text().splitlines()]
    assert written[0]["points"] == [{**a.to_dict(), "text": "Trust it."}] and written[0]["reviewed"] is True
    assert "reviewed" not in written[1] and "points" not in written[1] and written[2]["points"] == []
    answers = iter(["a"])  # resume in place: only the unreviewed rows are shown
    assert review_file(dst, dst, detector=HeuristicDetector(), console=out, ask=lambda _: next(answers)) == 2
    written = [json.loads(line) for line in dst.read_text().splitlines()]
    assert written[1]["points"] == [
        {
            "kind": "calculate",
            "offset": AREA_TRACE.index("Let me multiply"),
            "reason": "manual calculation '437 * 289'",
            "score": 1.0,
        }
    ]
    assert [r["reviewed"] for r in written] == [True, True, True] and written[0]["points"][0]["text"] == "Trust it."
    src.write_text('{"trace": "x", "points": [{"kind": "maybe", "offset": 0}]}\n\n{"problem": "p"}\nnot json\n')
    with pytest.raises(ValueError, match=r"3 malformed.*line 1: invalid points: .*kind.*line 3: no 'trace'.*line 4"):
        review_file(src, dst, console=out, ask=lambda _: "a")


# -- conversion --
_CONVERSION_TRACES = [
    "No code here, just 2 + 2 = 4.\n</think>\n\n\\boxed{4}",
    CLEAN_TRACE,
    TWO_CHECKS_TRACE,
    FAILED_TRACE,
    "Backticks:\n```python\ns = '```'\nprint(s + \"`x`\")\n```\n```output\n````x`\n```\nDone.</think>\\boxed{1}",
    "Nothing printed:\n```python\nx = 5\n```\n```output\n\n```\nSo x is 5.\n</think>\n\n\\boxed{\\frac{1}{2}}",
    "Ünïcode π ≈ 3.14159 — 你好\n```python\nprint('π≈', 3.14)\n```\n```output\nπ≈ 3.14\n```\n</think>\n\\boxed{π}",
    "Truncated at the end\n```python\nprint(1",
]


@pytest.mark.parametrize(
    "trace",
    _CONVERSION_TRACES,
    ids=["no-code", "one-call", "two-calls", "failed-call", "backticks", "empty-output", "unicode", "unclosed-code"],
)
def test_conversions_round_trip_exactly(trace):
    retool = convert(trace, "cort", "retool")
    assert convert(retool, "retool", "cort") == trace
    assert convert(trace, "cort", "cort") == trace
    for fmt, text in (("cort", trace), ("retool", retool)):
        messages = to_messages("the prompt", text, fmt)
        assert from_messages(messages, fmt) == ("the prompt", text)
        assert sum(m["role"] == "tool" for m in messages) == text.count("```output" if fmt == "cort" else "<interp")


def test_conversion_exact_forms():
    retool = convert(CLEAN_TRACE, "cort", "retool")
    assert retool == (
        "Okay, so I need 2^{64} mod 1000. Python can do modular powers exactly.\n"
        "<code>\n```python\nprint(pow(2, 64, 1000))\n```\n</code>\n"
        "<interpreter>\n616\n</interpreter>\n"
        "The remainder is 616.\n</think>\n\n<answer>\\boxed{616}</answer>"
    )
    assert convert("a</think><answer>42</answer>", "retool", "cort") == "a</think>\\boxed{42}"
    assert to_messages("p", TWO_CHECKS_TRACE) == [
        {"role": "user", "content": "p"},
        {"role": "assistant", "content": TWO_CHECKS_TRACE[: TWO_CHECKS_TRACE.index("```output")]},
        {"role": "tool", "content": "180787"},
        {
            "role": "assistant",
            "content": "Good. Let me double-check the last digit: 7 * 1 = 7. Fine. Now the root.\n"
            "```python\nimport math\nprint(math.isqrt(180787))\n```\n",
        },
        {"role": "tool", "content": "425"},
        {"role": "assistant", "content": TWO_CHECKS_TRACE[TWO_CHECKS_TRACE.index("So the answer") :]},
    ]
    assert to_messages("p", "") == [{"role": "user", "content": "p"}, {"role": "assistant", "content": ""}]
    with pytest.raises(ValueError, match="start with the user message"):
        from_messages([{"role": "assistant", "content": "x"}])
    with pytest.raises(ValueError, match="message 2 has role 'system'"):
        from_messages([{"role": "user", "content": "p"}, {"role": "tool", "content": ""}, {"role": "system"}])


# -- reading traces --
def test_read_traces_maps_columns_and_reports_malformed_rows(tmp_path):
    path = tmp_path / "traces.jsonl"
    path.write_text(
        json.dumps({"question": "q1", "gt_answer": 7, "response": "t1", "id": "a"})
        + "\n\n"
        + json.dumps({"question": "q2", "gt_answer": "8", "response": "t2"})
        + "\n"
    )
    rows = read_traces(path, {"problem": "question", "answer": "gt_answer", "trace": "response"})
    assert [(r["problem"], r["answer"], r["trace"], r.get("id")) for r in rows] == [
        ("q1", 7, "t1", "a"),
        ("q2", "8", "t2", None),
    ]
    path.write_text('{"problem": "p", "answer": "1", "trace": "t"}\n[1, 2]\n{"problem": "p", "trace": ""}\n{oops\n')
    with pytest.raises(
        ValueError, match=r"traces.jsonl: 3 malformed row\(s\): line 2: a JSON list.*line 3: missing.*line 4: not valid"
    ):
        read_traces(path)
    path.write_text('{"problem": "p", "answer": "1", "trace": "t"}\n{"problem": "p", "trace": ""}\n')
    with pytest.raises(
        ValueError, match=r"line 2: missing or empty \['answer', 'trace'\] \(has \['problem', 'trace'\]\)"
    ):
        read_traces(path)


# -- synthesis --
def test_synthesize_keeps_right_continuations_and_filters_the_others(tokenizer, sandbox, tmp_path):
    from test_rollout import ScriptedBackend

    from lightning_cort.formats import CoRTFormat
    from lightning_cort.hints import synthesize
    from lightning_cort.rollout import RolloutConfig, RolloutEngine

    code = "print(437 * 289 + 2 * (437 + 289))\n```\n"  # the teacher completes the block the hint opened
    script = [
        (code, "stop"),
        ("The interpreter gives 127745.\n</think>\n\n\\boxed{127745}", "eos"),
        ("print(437 * 289 + 437 + 289)\n```\n", "stop"),  # forgets to double the perimeter
        ("So the total is 127019.\n</think>\n\n\\boxed{127019}", "eos"),
        (code, "stop"),
        ("That gives 127745. Let me verify by hand: 437 * 289 = 126293.\n</think>\n\n\\boxed{127745}", "eos"),
    ]
    engine = RolloutEngine(ScriptedBackend(tokenizer, script), tokenizer, CoRTFormat(), sandbox, RolloutConfig())
    at = AREA_TRACE.index("Let me multiply")
    item = {"problem": AREA_PROBLEM, "answer": AREA_ANSWER, "trace": AREA_TRACE}
    items = [
        {**item, "id": "right"},
        {**item, "source_id": "wrong"},
        # reviewed points (offsets include the leading <think>, which is dropped from the prefix)
        {
            **item,
            "id": "distrust",
            "trace": "<think>\n" + AREA_TRACE,
            "points": [{"kind": "calculate", "offset": at + 8}],
        },
        {"id": "clean", "problem": CLEAN_PROBLEM, "answer": "616", "trace": CLEAN_TRACE},
    ]
    results = synthesize(items, engine, detector=HeuristicDetector(), batch_size=1)
    assert [(r.source_id, r.kept, r.rejected_by) for r in results] == [
        ("right", True, ()),
        ("wrong", False, ("correct_answer",)),
        ("distrust", False, ("no_result_distrust",)),
        ("clean", False, ("no calculate point",)),
    ]
    right = results[0]
    prefix = f"{CORT_PROMPT_HINT}.\n{AREA_TRACE[:at]}{H1}\n```python\n"
    assert right.prefix == prefix == results[1].prefix == results[2].prefix
    assert (
        right.completion
        == prefix + code + "```output\n127745\n```\nThe interpreter gives 127745.\n</think>\n\n\\boxed{127745}"
    )
    assert right.trajectory.tool_calls[0].result.stdout == "127745\n"  # really executed
    assert right.trajectory.prompt_ids.tolist()[-3:] == tokenizer.encode(prefix, add_special_tokens=False)[-3:]
    record = right.record()
    assert record["prompt"] == f"{AREA_PROBLEM}\n{CORT_SUFFIX}" and record["answer"] == "127745"
    assert record["hints"] == [
        {"kind": "prompt", "offset": 0, "text": CORT_PROMPT_HINT},
        {"kind": "calculate", "offset": len(CORT_PROMPT_HINT) + 2 + at, "text": H1},
    ]
    assert all(record["completion"][h["offset"] :].startswith(h["text"]) for h in record["hints"])
    assert [m["role"] for m in record["messages"]] == ["user", "assistant", "tool", "assistant"]
    assert record["messages"][2]["content"] == "127745"
    assert from_messages(record["messages"]) == (record["prompt"], record["completion"])
    assert record["finish_reason"] == "eos" and record["source_id"] == "right"

    path = tmp_path / "sft.jsonl"
    assert write_jsonl([r.record() for r in results if r.kept], path) == 1
    assert [json.loads(line) for line in path.read_text().splitlines()] == [record]
    with pytest.raises(ValueError, match=r"item 0 lacks \['answer', 'trace'\].*n must be >= 1"):
        synthesize([{"problem": "p"}], engine, n=0)


def test_cli_detect_writes_proposals(tmp_path):
    from lightning_cort.hints.__main__ import main

    src, dst = tmp_path / "traces.jsonl", tmp_path / "proposals.jsonl"
    write_jsonl([{"problem": AREA_PROBLEM, "trace": AREA_TRACE}, {"problem": CLEAN_PROBLEM, "trace": CLEAN_TRACE}], src)
    assert main(["detect", str(src), str(dst), "--min-digits", "3"]) == 2
    rows = [json.loads(line) for line in dst.read_text().splitlines()]
    assert [[p["offset"] for p in r["points"]] for r in rows] == [[AREA_TRACE.index("Let me multiply")], []]
    assert main(["detect", str(src), str(dst), "--min-digits", "7"]) == 2  # no operand has 7 digits
    assert [json.loads(line)["points"] for line in dst.read_text().splitlines()] == [[], []]


def test_synthesize_samples_n_continuations_per_prefix(tokenizer, sandbox):
    from test_rollout import ScriptedBackend

    from lightning_cort.formats import CoRTFormat
    from lightning_cort.hints import synthesize
    from lightning_cort.rollout import RolloutConfig, RolloutEngine

    class BatchScripted(ScriptedBackend):
        """The scripted continuations, one per prompt of a batch, in batch order."""

        def generate(self, prompts, sampling, stop_strings):
            return [super(BatchScripted, self).generate([p], sampling, stop_strings)[0] for p in prompts]

    script = [
        ("print(437 * 289 + 2 * (437 + 289))\n```\n", "stop"),  # sample 0, then sample 1, in each round
        ("print(437 * 289)\n```\n", "stop"),
        ("</think>\n\n\\boxed{127745}", "eos"),
        ("</think>\n\n\\boxed{126293}", "eos"),
    ]
    config = RolloutConfig(schedule="rounds")  # both samples in every backend call, in order
    engine = RolloutEngine(BatchScripted(tokenizer, script), tokenizer, CoRTFormat(), sandbox, config)
    item = {"id": "area", "problem": AREA_PROBLEM, "answer": AREA_ANSWER, "trace": AREA_TRACE}
    results = synthesize([item], engine, n=2, prompt_hint=None)
    assert [(r.sample, r.kept, r.rejected_by) for r in results] == [(0, True, ()), (1, False, ("correct_answer",))]
    assert results[0].completion.startswith("Okay, so I need") and results[0].hints[0]["kind"] == "calculate"
    assert results[1].completion.endswith("```output\n126293\n```\n</think>\n\n\\boxed{126293}")
