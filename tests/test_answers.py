"""Answer checking: gold normalisation, cort vs strict scoring, the fast path, and the process pool's time limit."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from lightning_cort.answer_pool import AnswerChecker
from lightning_cort.answers import check_answer, normalize_gold

CORT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cort"
BENCHMARKS = ("aime24", "aime25", "amc23", "math500", "olympiad_bench")


def scripted_verifier(text: str, gold: str) -> bool:
    """Stands in for math-verify in the workers (module level, so they can import it): ``HANG`` never returns,
    ``CRASH`` kills the worker, ``SLEEP=<s>`` sleeps; the verdict is whether the text says ``RIGHT``."""
    if "HANG" in text:
        time.sleep(3600)
    if "CRASH" in text:
        os._exit(3)
    if "SLEEP=" in text:
        time.sleep(float(text.split("SLEEP=")[1].split()[0]))
    return "RIGHT" in text


@pytest.fixture(scope="module")
def pool_without_fast_path():
    with AnswerChecker(mode="cort", timeout=10.0, workers=1, fast_path=False) as checker:
        yield checker


def answer(boxed: str) -> str:
    return f"Let me compute.\n</think>\n\nThe answer is $\\boxed{{{boxed}}}$."


@pytest.mark.parametrize(
    ("gold", "normalized"),
    [
        ("025", "25"),
        ("27.0", "27"),
        ("-1.0", "-1"),
        (".35625", "0.35625"),
        ("58,500", "58500"),
        (r"\$32,\!348", "32348"),
        (r"11,\! 111,\! 111,\! 100", "11111111100"),
        (r"\$18.90", "18.9"),
        (r"\text{Evelyn}", r"\text{Evelyn}"),
        (r"\textbf{Evelyn}", r"\text{Evelyn}"),
        (r"\text{5}", "5"),
        (r"90^\circ", "90"),
        (r"$90^{\circ}$,$60^{\circ}$", "90, 60"),
        (r"\sin 30^\circ", r"\sin 30^\circ"),  # degrees change a trigonometric value: kept
        (r"5.4 \text{ cents}", "5.4"),
        (r"15\mbox{ cm}^2", "15"),
        (r"\dfrac{17}{50}", r"\frac{17}{50}"),
        (r"\left( 3, \frac{\pi}{2} \right)", r"( 3, \frac{\pi}{2} )"),
        (r"\left(\frac{3}{5},\frac{8}{3}\right]", r"(\frac{3}{5},\frac{8}{3}]"),
        ("[0,1)", "[0,1)"),
        ("1,-2", "1,-2"),
        ("$(2,4)$", "(2,4)"),
        ("$69$,$84$", "69, 84"),
        ("$221,$8$", "221, 8"),  # an odd number of `$`: a typo in OlympiadBench
        (r"$(-\infty, 0) \cup\{1\}$.", r"(-\infty, 0) \cup\{1\}"),
        (r"\begin{pmatrix} -2 \\ -14 \end{pmatrix}", r"\begin{pmatrix} -2 \\ -14 \end{pmatrix}"),
        ("$f(x)=ax+b$, where $b$ is an integer", "$f(x)=ax+b$, where $b$ is an integer"),  # prose: as is
    ],
)
def test_normalize_gold(gold, normalized):
    assert normalize_gold(gold) == normalized


HAND_CASES = [
    # (prediction's boxed answer, gold, correct)
    ("25", "025", True),
    ("025", "25", True),
    ("24", "025", False),
    ("27", "27.0", True),
    ("27.5", "27.0", False),
    ("Evelyn", r"\text{Evelyn}", True),
    (r"\text{Evelyn}", r"\text{Evelyn}", True),
    (r"\text{evelyn}", r"\text{Evelyn}", True),
    (r"\text{Bob}", r"\text{Evelyn}", False),
    ("90", r"90^\circ", True),
    (r"90^\circ", "90", True),
    ("91", r"90^\circ", False),
    ("(1, 2)", "(1,2)", True),
    ("(2, 1)", "(1,2)", False),
    (r"\left( 3, \frac{\pi}{2} \right)", r"\left( 3, \frac{\pi}{2} \right)", True),
    (r"(3, \frac{\pi}{2})", r"\left( 3, \frac{\pi}{2} \right)", True),
    (r"(3, \pi)", r"\left( 3, \frac{\pi}{2} \right)", False),
    ("[0, 1)", "[0,1)", True),
    ("[0, 1]", "[0,1)", False),
    ("(0, 1)", "[0,1)", False),
    ("(2,4)", "$(2,4)$", True),
    ("(4,2)", "$(2,4)$", False),
    ("84, 69", "$69$,$84$", True),
    ("69", "$69$,$84$", False),
    ("0.5", r"\frac{1}{2}", True),
    (r"\frac{1}{2}", "0.5", True),
    ("1/2", "0.5", True),
    (r"\frac{1}{3}", "0.5", False),
    ("-4", "-4", True),
    ("4", "-4", False),
    (r"-\frac{\pi}{6}", r"-\frac{\pi}{6}", True),
    (r"\frac{\pi}{6}", r"-\frac{\pi}{6}", False),
    ("32348", r"\$32,\!348", True),
    ("18.9", r"\$18.90", True),
    ("5.4", r"5.4 \text{ cents}", True),
    ("-2, 1", "1,-2", True),
    ("-2", "1,-2", False),
    ("1,234", "1234", True),
    ("12", "1,2", False),
]


@pytest.mark.parametrize("mode", ["cort", "strict"])
@pytest.mark.parametrize(("pred", "gold", "correct"), HAND_CASES)
def test_hand_written_golds(pred, gold, correct, mode):
    assert check_answer(answer(pred), gold, mode=mode) is correct


def test_fast_path_gives_math_verify_verdicts():
    texts = [
        answer("25"),
        answer("27.0"),
        answer(r"\text{Evelyn}"),
        answer("Evelyn"),
        answer("1,234"),
        answer("0.1234568"),  # math-verify rounds decimals: the fast path leaves them to it
        r"\boxed{3} wait, \boxed{25}",  # two boxes: a set for math-verify
        r"\boxed{3} </think> The final answer is 25",  # the phrase outranks the box
        r"So $\boxed{25}$ percent",
        "```output\n25\n```",
        "I get 25.",
    ]
    golds = ["025", "25", "27", "1234", r"\text{Evelyn}", "0.1234567", "3", "0.25"]
    for mode in ("cort", "strict"):
        for text in texts:
            for gold in golds:
                fast = check_answer(text, gold, mode=mode)
                assert fast == check_answer(text, gold, mode=mode, fast_path=False), (mode, text, gold)


@pytest.mark.parametrize(
    ("text", "cort", "strict"),
    [
        (r"<think>The answer is \boxed{42}", True, False),  # thinking never closed: strict has no answer
        (r"The answer is \boxed{42}", True, True),  # no thinking tags (an instruct model): the last box
        ("Checking.\n```output\n42\n```\n", True, False),  # no box: cort takes the last number
        ("</think>\n\nIt is \\boxed{41}, or rather \\boxed{42}", False, True),  # cort: the set {41, 42}
        ("</think>\n\n\\boxed{42}\nThe final answer is 41", False, True),  # the phrase outranks the box in cort
        ("</think>\n\n\\boxed{42}", True, True),
        ("</think>\n\n\\boxed{41}", False, False),
    ],
)
def test_cort_and_strict_modes_differ(text, cort, strict, pool_without_fast_path):
    assert check_answer(text, "42", mode="cort") is cort
    assert check_answer(text, "42", mode="strict") is strict
    assert pool_without_fast_path.check(text, "42") is cort


def _benchmark_golds() -> list[str]:
    golds = []
    for name in BENCHMARKS:
        with open(CORT_DATA / f"test_{name}.reason_step.jsonl") as f:
            golds += [json.loads(line)["gt_answer"] for line in f]
    return golds


def _as_written(gold: str) -> str:
    """The gold as a model would box it: without the benchmark's `$` delimiters and final full stop."""
    return gold.strip().removesuffix("$.").replace("\\$", "").replace("$", "")


def _wrong(gold: str) -> str:
    normalized = normalize_gold(gold)
    try:
        return str(int(float(normalized)) + 1)
    except ValueError:
        return "-987654321"


@pytest.mark.skipif(not CORT_DATA.exists(), reason=f"the CoRT benchmark files are not at {CORT_DATA}")
def test_every_benchmark_gold():
    """Every gold of the five files (cort mode; every 5th in strict mode) against its boxed self and a wrong answer."""
    golds = _benchmark_golds()
    assert len(golds) == 1275
    failures = []
    for mode, sample in (("cort", golds), ("strict", golds[::5])):
        items = [(answer(_as_written(g)), g, True) for g in sample] + [(answer(_wrong(g)), g, False) for g in sample]
        # The time limit matters: `\frac{\log 2}{\log 2-\log 3}` against a wrong integer never ends in math-verify.
        with AnswerChecker(mode=mode, timeout=3.0) as checker:
            verdicts = checker.check_many([(text, gold) for text, gold, _ in items])
        failures += [(mode, gold, want) for (_, gold, want), got in zip(items, verdicts) if got is not want]
    assert not failures


def test_hung_item_is_killed_and_the_rest_still_checked():
    items = [("RIGHT 1", "1"), ("RIGHT SLEEP=0.2", "1"), ("RIGHT HANG", "1"), ("wrong", "1"), ("RIGHT", "1")] * 2
    with AnswerChecker(timeout=1.0, workers=2, fast_path=False, verifier=scripted_verifier) as checker:
        checker.check("RIGHT", "1")  # workers up, so start-up is not in the timing
        start = time.perf_counter()
        verdicts = checker.check_many(items)
        elapsed = time.perf_counter() - start
        assert verdicts == [True, True, False, False, True] * 2
        assert checker.stats.timeouts == 2 and checker.stats.restarts >= 1
        # Both hung items run at once at worst, so one time limit plus restarting the pool (slow on 2 busy cores).
        assert elapsed < 2 * 1.0 + 10.0
        assert checker.check_many([("RIGHT", "1"), ("no", "1")]) == [True, False]  # the pool keeps working


def test_real_math_verify_hang_is_killed():
    gold = r"$\frac{\log 2}{\log 2-\log 3}$"  # OlympiadBench; sympy does not finish comparing it with an integer
    with AnswerChecker(timeout=1.0, workers=2) as checker:
        checker.check(answer("1"), "1")
        start = time.perf_counter()
        verdicts = checker.check_many([(answer("-987654321"), gold), (answer(r"\frac{1}{2}"), "0.5")])
        assert verdicts == [False, True]
        assert time.perf_counter() - start < 1.0 + 10.0
        assert checker.stats.timeouts == 1


def test_crashing_item_is_incorrect_and_innocent_ones_retried():
    items = [("RIGHT SLEEP=0.3", "1"), ("RIGHT CRASH", "1"), ("RIGHT SLEEP=0.3", "1"), ("RIGHT", "1")]
    with AnswerChecker(timeout=20.0, workers=2, fast_path=False, verifier=scripted_verifier) as checker:
        assert checker.check_many(items) == [True, False, True, True]
        assert checker.stats.crashes == 1 and checker.stats.timeouts == 0


def test_results_in_input_order():
    # Mixed durations, fast-path items between pool items, several chunks per worker.
    items, want = [], []
    for i in range(60):
        if i % 3 == 0:
            items.append((answer(str(i)), str(i + i % 2)))  # plain numbers: decided in the caller
            want.append(i % 2 == 0)
        else:
            items.append((f"{'RIGHT' if i % 4 else 'no'} SLEEP={0.001 * (i % 7)}", "x"))
            want.append(i % 4 != 0)
    with AnswerChecker(timeout=20.0, workers=2, verifier=scripted_verifier) as checker:
        assert checker.check_many(items) == want
        assert checker.stats.fast_path == 20


def test_usable_from_threads():
    items = [(answer(r"\frac{1}{2}"), "0.5"), (answer("(1, 2)"), "(1,2)"), (answer("3"), "4"), (answer("x+1"), "1+x")]
    want = [True, True, False, True]
    results: dict[int, list[bool]] = {}
    errors: list[BaseException] = []
    with AnswerChecker(timeout=10.0, workers=2) as checker:

        def run(k: int) -> None:
            try:
                results[k] = checker.check_many(items * 3)
                results[100 + k] = [check_answer(t, g) for t, g in items]  # math-verify in a thread: no signal error
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=run, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert not errors
    assert sorted(results) == [0, 1, 2, 100, 101, 102]
    for k in (0, 1, 2):
        assert results[k] == want * 3 and results[100 + k] == want


def test_arguments_are_validated_together():
    with pytest.raises(ValueError) as info:
        AnswerChecker(mode="loose", timeout=0, workers=0, chunk_size=0)  # type: ignore[arg-type]
    message = str(info.value)
    assert all(word in message for word in ("mode", "timeout", "workers", "chunk_size"))
    with pytest.raises(ValueError, match="mode"):
        check_answer("", "1", mode="loose")  # type: ignore[arg-type]


def test_closed_checker_refuses_work():
    checker = AnswerChecker(workers=1)
    assert checker.check(answer("2"), "2")  # the fast path: no pool needed
    checker.close()
    checker.close()
    with pytest.raises(RuntimeError, match="closed"):
        checker.check(answer("2"), "2")
