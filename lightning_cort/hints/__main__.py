"""Propose and review hint points from the command line.

    python -m lightning_cort.hints detect traces.jsonl proposals.jsonl            # rule-based proposals
    python -m lightning_cort.hints detect traces.jsonl proposals.jsonl \\
        --judge-url http://127.0.0.1:8000/v1 --judge-model Qwen/Qwen2.5-72B-Instruct  # an LLM judge's proposals
    python -m lightning_cort.hints review proposals.jsonl reviewed.jsonl          # accept / move / edit by hand

``detect`` reads rows with ``problem`` and ``trace`` and writes them with ``points``; ``review`` writes the reviewed
rows (run it again on its output to resume a review stopped with ``q``). The reviewed file feeds
:func:`lightning_cort.hints.synthesize` (rows with ``answer`` and reviewed ``points``).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from lightning_cort.hints.detectors import HeuristicDetector, HintDetector
from lightning_cort.hints.jsonl import read_traces, write_jsonl
from lightning_cort.hints.judge import LLMJudgeDetector
from lightning_cort.hints.review import review_file


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lightning_cort.hints", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    detect = sub.add_parser("detect", help="propose hint points for each trace")
    detect.add_argument("src", help="jsonl with problem and trace")
    detect.add_argument("dst", help="jsonl written with points")
    detect.add_argument("--format", default="cort", choices=["cort", "retool"], help="the traces' code format")
    detect.add_argument("--min-digits", type=int, default=3, help="heuristic: digits of a manual calculation")
    detect.add_argument("--judge-url", help="an OpenAI-compatible server: use it as the judge instead of rules")
    detect.add_argument("--judge-model", help="the judge's model name")
    detect.add_argument("--api-key-env", help="name of the environment variable holding the judge's API key")
    detect.add_argument("--timeout", type=float, default=120, help="seconds per judge request")
    review = sub.add_parser("review", help="accept, reject, move or edit proposed points by hand")
    review.add_argument("src", help="jsonl with trace and points")
    review.add_argument("dst", help="jsonl written with the reviewed points (may be src)")
    review.add_argument("--format", default="cort", choices=["cort", "retool"], help="the traces' code format")
    review.add_argument("--context", type=int, default=300, help="characters shown on each side of a point")
    return parser


def main(args: Sequence[str] | None = None) -> int:
    """Run the command line; returns the number of rows processed."""
    ns = _parser().parse_args(args)
    if ns.command == "review":
        return review_file(ns.src, ns.dst, code_format=ns.format, context=ns.context)
    detector: HintDetector
    if ns.judge_url:
        if not ns.judge_model:
            raise SystemExit("--judge-url needs --judge-model")
        key = os.environ.get(ns.api_key_env) if ns.api_key_env else None
        detector = LLMJudgeDetector(ns.judge_url, ns.judge_model, key, timeout=ns.timeout, code_format=ns.format)
    else:
        detector = HeuristicDetector(ns.min_digits, code_format=ns.format)
    rows = read_traces(ns.src, required=("problem", "trace"))
    out = [{**row, "points": [p.to_dict() for p in detector(str(row["problem"]), str(row["trace"]))]} for row in rows]
    return write_jsonl(out, ns.dst)


if __name__ == "__main__":
    main()
