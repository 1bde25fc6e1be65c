r"""AnswerChecker against math-verify called serially, on the same generations and golds, in one run.

The items: every gold of CoRT's five benchmark files (``../shared/data/cort`` from the project root, or ``--data``)
or, without them, synthetic golds in the same forms. For each gold, one CoRT-style generation with the right answer
and one with a wrong one (thinking with code calls and their outputs, ``</think>``, then ``\boxed{}``). Two sets:
all golds, where a quarter of the generations also box a tentative answer while thinking and a few end without a
box; and the integer golds with one final box (the AIME/AMC case, where the fast path decides). Scoring is CoRT's
(``mode="cort"``):

* baseline: ``math_verify.parse`` of the gold (``$``-wrapped) and of the whole generation, then ``verify``, one item
  after the other in this process, with math-verify's own (``signal.alarm``) timeouts;
* ``AnswerChecker``: normalised golds, the fast path in the calling process, the rest in a worker pool with a
  per-item time limit equal to math-verify's (5 s);
* ``AnswerChecker(fast_path=False)``: the pool alone, to show what each part brings.

Prints a markdown section and, for a full run, writes it into docs/benchmarks.md as "## Answer checking" (replacing
that section only).

    python benchmarks/answer_check.py            # full run (~1-2 minutes on 2 busy cores)
    python benchmarks/answer_check.py --quick    # 450 items, under a minute; prints only
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import random
import re
import sys
import time
from importlib.metadata import version
from pathlib import Path

from _docs import write_section  # benchmarks/ is on sys.path when run as a script

from lightning_cort.answer_pool import AnswerChecker
from lightning_cort.answers import normalize_gold

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "cort"
BENCHMARKS = ("aime24", "aime25", "amc23", "math500", "olympiad_bench")
HEADING = "## Answer checking"

SYNTHETIC_GOLDS = [
    "204", "025", "073", "27.0", "-1.0", "3159.0", "0.5", ".35625", r"\frac{14}{3}", r"\frac{3}{56}", r"-\frac{\pi}{6}",
    r"3\sqrt{13}", r"11\sqrt2", r"6 - 5i", "p - q", r"\text{Evelyn}", r"\text{(C)}", r"90^\circ", r"\$18.90",
    r"\$32,\!348", "58,500", r"5.4 \text{ cents}", r"\left( 3, \frac{\pi}{2} \right)", "(1,2)", "[0,1)", "(3,4]",
    r"(-\infty, 0]", r"(-\infty, 2) \cup (3, \infty)", "1,-2", "3, 5, 7", "x=5", r"x^5 - x^4 + x^3 - x^2 + x - 1",
    r"$\frac{1}{2 n+2}$", "$2^{1009}$", "$(2,4)$", "$69$,$84$", "$f(n)=n$", r"$\binom{2n}{n}$", "62.5%",
    r"\begin{pmatrix} -2 \\ -14 \\ -7 \end{pmatrix}",
]  # fmt: skip


def load_golds(data: Path) -> tuple[list[tuple[str, str]], str]:
    """``(problem, gold)`` pairs and a description of where they come from."""
    if all((data / f"test_{name}.reason_step.jsonl").exists() for name in BENCHMARKS):
        rows = []
        for name in BENCHMARKS:
            with open(data / f"test_{name}.reason_step.jsonl") as f:
                rows += [json.loads(line) for line in f]
        return [(r["problem"], r["gt_answer"]) for r in rows], f"the {len(rows)} golds of CoRT's five benchmark files"
    problems = [(f"Compute the quantity number {i}.", g) for i, g in enumerate(SYNTHETIC_GOLDS * 25)]
    return problems, f"{len(problems)} synthetic golds ({len(SYNTHETIC_GOLDS)} forms; CoRT's files not found)"


def as_written(gold: str) -> str:
    """The gold as a model would box it: without the benchmark's ``$`` delimiters."""
    return gold.strip().removesuffix("$.").replace("\\$", "").replace("$", "")


def wrong_answer(gold: str, others: list[str], rng: random.Random) -> str:
    try:
        return str(int(float(normalize_gold(gold))) + rng.choice([-2, -1, 1, 7]))
    except ValueError:
        while True:
            other = as_written(rng.choice(others))
            if normalize_gold(other) != normalize_gold(gold):
                return other


def generation(problem: str, boxed: str | None, tentative: str | None, rng: random.Random) -> str:
    """A CoRT-style generation: reasoning with code calls and outputs, ``</think>``, a final answer."""
    parts = [f"Okay, let me restate the problem. {problem[:400]}\n\nLet me set up the computation with sympy."]
    for _ in range(rng.randint(2, 5)):
        a, b = rng.randint(2, 30), rng.randint(2, 30)
        parts.append(
            f"```python\nimport sympy as sp\nx = sp.symbols('x')\nprint(sp.factor(x**2 + {a + b}*x + {a * b}))\n```\n"
            f"```output\n(x + {a})*(x + {b})\n```\nSo the roots are $x = -{a}$ and $x = -{b}$, and their product is "
            f"${a * b}$. That is consistent with Vieta's formulas, since $\\frac{{{a * b}}}{{1}} = {a * b}$."
        )
    if tentative is not None:
        parts.append(f"Tentatively the answer would be \\boxed{{{tentative}}}, but let me double-check.")
    parts.append("Everything checks out.\n</think>\n")
    parts.append(f"The answer is $\\boxed{{{boxed}}}$." if boxed is not None else "The computation above gives it.")
    return "\n\n".join(parts)


def build_items(
    golds: list[tuple[str, str]], seed: int, tentative: float = 0.25, unboxed: float = 0.03
) -> list[tuple[str, str, bool]]:
    """``(generation, gold, answered right)``: one right and one wrong generation per gold, shuffled; a share
    ``tentative`` also box a wrong answer while thinking, a share ``unboxed`` end without a box."""
    rng = random.Random(seed)
    all_golds = [g for _, g in golds]
    items = []
    for problem, gold in golds:
        for right in (True, False):
            answer = as_written(gold) if right else wrong_answer(gold, all_golds, rng)
            early = wrong_answer(gold, all_golds, rng) if rng.random() < tentative else None
            boxed = None if rng.random() < unboxed else answer
            items.append((generation(problem, boxed, early, rng), gold, right))
    rng.shuffle(items)
    return items


def math_verify_serial(items: list[tuple[str, str, bool]]) -> list[bool]:
    """CoRT's scoring (compute_metrics_dp.py): parse the gold and the whole generation, verify; one at a time."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    config = (ExprExtractionConfig(), LatexExtractionConfig())
    out = []
    for text, gold, _ in items:
        try:
            g = parse(gold if gold.startswith("$") else f"${gold}$")
            out.append(bool(verify(g, parse(text, extraction_config=config))))
        except Exception:
            out.append(False)
    return out


LABELS = {
    "baseline": "math-verify serially, in one process (baseline)",
    "checker": "`AnswerChecker`",
    "pool": "`AnswerChecker(fast_path=False)` (pool only)",
}


def measure(items, contenders, checkers, rounds: int) -> dict:
    """Times every contender on ``items``: each round checks a different slice (no contender sees an item twice, so
    no cache helps it), contenders in a rotated order (the machine is shared: its load changes during the run)."""
    n = len(items)
    before = {name: dataclasses.replace(c.stats) for name, c in checkers.items()}
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    verdicts: dict[str, list[bool]] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(rounds):
        part = items[r * n // rounds : (r + 1) * n // rounds]
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            verdicts[name] += contenders[name](part)
            seconds[name].append(time.perf_counter() - start)
    after = {name: c.stats for name, c in checkers.items()}
    stats = {
        name: {f: getattr(after[name], f) - getattr(before[name], f) for f in ("checked", "fast_path", "timeouts")}
        for name in checkers
    }
    return {"seconds": seconds, "verdicts": verdicts, "stats": stats}


def table(items, result) -> list[str]:
    n = len(items)
    seconds, verdicts, stats = result["seconds"], result["verdicts"], result["stats"]
    total = {name: sum(s) for name, s in seconds.items()}
    right = [r for _, _, r in items]
    lines = [
        "| checker | items/s | total s | vs serial math-verify | per-round ratios (min–max) | fast path | timeouts "
        "| same verdict as baseline | verdict = intended label |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in seconds:
        ratios = sorted(b / s for b, s in zip(seconds["baseline"], seconds[name]))
        same = sum(a == b for a, b in zip(verdicts[name], verdicts["baseline"]))
        label = sum(a == b for a, b in zip(verdicts[name], right))
        fast = f"{100 * stats[name]['fast_path'] / stats[name]['checked']:.0f}%" if name in stats else "–"
        timeouts = str(stats[name]["timeouts"]) if name in stats else "–"
        ratio = total["baseline"] / total[name]
        lines.append(
            f"| {LABELS[name]} | {n / total[name]:.0f} | {total[name]:.1f} | **{ratio:.2f}x** "
            f"| {ratios[0]:.2f}–{ratios[-1]:.2f} | {fast} | {timeouts} | {same}/{n} | {label}/{n} |"
        )
    lines.append("")
    diffs = [(g, b, v, r) for (_, g, r), b, v in zip(items, verdicts["baseline"], verdicts["checker"]) if b != v]
    for gold, b, v, r in diffs[:6]:
        lines.append(
            f"- verdicts differ: gold `{gold[:60]}` ({'right' if r else 'wrong'} answer): baseline {b}, "
            f"`AnswerChecker` {v}"
        )
    if diffs:
        lines.append("")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer items; print only, do not write docs/benchmarks.md")
    ap.add_argument("--data", type=Path, default=DATA, help="directory of CoRT's test_*.reason_step.jsonl files")
    ap.add_argument("--workers", type=int, default=None, help="AnswerChecker workers (default: the cores)")
    ap.add_argument("--timeout", type=float, default=5.0, help="AnswerChecker's per-item limit, seconds")
    ap.add_argument("--rounds", type=int, default=None, help="disjoint slices of the items (default: 5, quick: 3)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # its "Timeout during comparison" lines
    rounds = args.rounds or (3 if args.quick else 5)
    load_start = os.getloadavg()[0]

    golds, source = load_golds(args.data)
    mixed = build_items(golds, args.seed)
    integer_golds = [(p, g) for p, g in golds if re.fullmatch(r"-?\d+", normalize_gold(g))]
    single_box = build_items(integer_golds, args.seed, tentative=0.0, unboxed=0.0)
    if args.quick:
        mixed, single_box = mixed[:300], single_box[:150]

    start = time.perf_counter()
    checkers = {
        "checker": AnswerChecker(mode="cort", timeout=args.timeout, workers=args.workers),
        "pool": AnswerChecker(mode="cort", timeout=args.timeout, workers=args.workers, fast_path=False),
    }
    contenders = {
        "baseline": math_verify_serial,
        "checker": lambda part: checkers["checker"].check_many([(t, g) for t, g, _ in part]),
        "pool": lambda part: checkers["pool"].check_many([(t, g) for t, g, _ in part]),
    }
    # Warm every contender (imports, lazily built regexes and caches, the pools' start-up) on items not measured.
    warmup = build_items([(f"Warm-up problem {i}.", g) for i, g in enumerate(SYNTHETIC_GOLDS)], args.seed + 1)
    for fn in contenders.values():
        fn(warmup)
    warmup_s = time.perf_counter() - start
    results = {name: measure(items, contenders, checkers, rounds) for name, items in
               (("mixed", mixed), ("single_box", single_box))}  # fmt: skip
    workers = checkers["checker"].workers
    restarts = checkers["checker"].stats.restarts
    for checker in checkers.values():
        checker.close()

    kb = sum(len(t) for t, _, _ in mixed) / len(mixed) / 1000
    lines = [
        f"{HEADING}\n",
        f"Command: `python benchmarks/answer_check.py{' --quick' if args.quick else ''}` "
        f"({platform.node()}: {os.cpu_count()} cores shared with other jobs, load average {load_start:.1f} at the "
        f"start and {os.getloadavg()[0]:.1f} at the end; Python {platform.python_version()}, math-verify "
        f"{version('math-verify')}, sympy {version('sympy')})\n",
        f'CoRT\'s scoring throughout (math-verify over the whole generation, `mode="cort"`), on CoRT-style '
        f"generations: reasoning with 2–5 code calls and their outputs, `</think>`, the boxed answer "
        f"(mean {kb:.1f} kB; real ones are longer). For each gold one generation with the right answer and one "
        f"with a wrong one. "
        f"`AnswerChecker` has {workers} workers and a {args.timeout:g} s limit per item (math-verify's own default "
        f"per call). {rounds} rounds, each on a different slice of the items, contenders in rotated order; every "
        f"contender warmed first on {len(warmup)} other items ({warmup_s:.1f} s with the pools' start-up, not timed). "
        f"Golds: {source}.\n",
        f"### All golds ({len(mixed)} items; a quarter also box a tentative answer while thinking, 3% end unboxed)\n",
        *table(mixed, results["mixed"]),
        f"### Integer golds, one final box ({len(single_box)} items: the AIME/AMC case)\n",
        *table(single_box, results["single_box"]),
        f"Pool restarts after a timeout, whole run: {restarts}.\n",
    ]
    section = "\n".join(lines)
    print(section)
    if not args.quick:
        write_section(HEADING.removeprefix("## "), section)
        print("(written to docs/benchmarks.md)", file=sys.stderr)


if __name__ == "__main__":
    main()
