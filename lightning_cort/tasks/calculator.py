"""A synthetic task whose problems need a calculator.

Each problem asks for an exact integer that a tiny language model cannot compute "in its head" (multi-digit products,
modular powers, sums of series, gcd/lcm, prime counts) but can get right by writing a one-line program and copying the
interpreter's answer. That makes it the smallest honest setting in which tool-integrated reasoning pays off.

Everything is seeded: the same ``(seed, split)`` always yields the same problems, and the held-out split never repeats a
question of the training split.

Two trace styles are generated for supervised fine-tuning:

* **code-integrated** (CoRT style): the prompt hint after ``<think>``, one code block, its real interpreter output,
  then a boxed answer;
* **text-only**: the same answer worked out in words, step by step.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from lightning_cort.formats.base import CodeFormat
from lightning_cort.formats.cort import (
    CORT_HINT_CALCULATE,
    CORT_HINT_TRUST,
    CORT_PROMPT_HINT,
    CORT_SUFFIX,
    CoRTFormat,
)

ProblemKind = Literal["multiply", "modpow", "series_sum", "gcd", "lcm", "prime_count"]
ALL_KINDS: tuple[ProblemKind, ...] = ("multiply", "modpow", "series_sum", "gcd", "lcm", "prime_count")

Split = Literal["train", "test"]


@dataclass(frozen=True)
class Problem:
    """One synthetic problem with its exact answer.

    Attributes:
        id: Stable identifier, ``"{split}-{seed}-{index}"``.
        kind: Which generator produced it.
        question: The problem statement shown to the model (without any instruction suffix).
        answer: The exact answer, as the decimal string of an integer.
        code: A reference Python program that prints the answer.
        steps: Worked arithmetic in words (one line each) for text-only traces.
    """

    id: str
    kind: ProblemKind
    question: str
    answer: str
    code: str
    steps: tuple[str, ...] = field(default=())

    def to_row(self) -> dict[str, str]:
        """The problem as a dataset row (``problem``/``answer`` columns, like the benchmark loaders produce)."""
        return {"id": self.id, "kind": self.kind, "problem": self.question, "answer": self.answer}


def _digits(rng: random.Random, n: int) -> int:
    return rng.randint(10 ** (n - 1), 10**n - 1)


def _multiply(rng: random.Random, d: int) -> tuple[str, int, str, list[str]]:
    a, b = _digits(rng, d), _digits(rng, d)
    steps = []
    partials = []
    for place, ch in enumerate(reversed(str(b))):
        term = int(ch) * 10**place
        if term:
            partials.append(a * term)
            steps.append(f"{a} * {term} = {a * term}")
    acc = partials[0]
    for p in partials[1:]:
        steps.append(f"{acc} + {p} = {acc + p}")
        acc += p
    return f"What is {a} * {b}?", a * b, f"print({a} * {b})", steps


def _modpow(rng: random.Random, d: int) -> tuple[str, int, str, list[str]]:
    base = rng.randint(2, 10**d - 1)
    exp = rng.randint(10, 10 ** max(d, 2) - 1)
    mod = rng.randint(10, 10**d - 1)
    steps = []
    # Square-and-multiply in words.
    power, sq, acc = 1, base % mod, 1
    steps.append(f"{base} mod {mod} = {sq}")
    e = exp
    while e:
        if e & 1:
            steps.append(f"take {base}^{power}: {acc} * {sq} mod {mod} = {acc * sq % mod}")
            acc = acc * sq % mod
        e >>= 1
        if e:
            steps.append(f"{base}^{2 * power} = {sq} * {sq} mod {mod} = {sq * sq % mod}")
            sq = sq * sq % mod
            power *= 2
    question = f"What is the remainder when {base}^{exp} is divided by {mod}?"
    return question, pow(base, exp, mod), f"print(pow({base}, {exp}, {mod}))", steps


def _series_sum(rng: random.Random, d: int) -> tuple[str, int, str, list[str]]:
    a = _digits(rng, d)
    b = a + rng.randint(10, 10**d)
    count, pair = b - a + 1, a + b
    total = pair * count // 2
    steps = [
        f"the sum of an arithmetic series is (first + last) * count / 2 with count = {b} - {a} + 1 = {count}",
        f"{a} + {b} = {pair}",
        f"{pair} * {count} = {pair * count}",
        f"{pair * count} / 2 = {total}",
    ]
    question = f"What is the sum of all integers from {a} to {b}?"
    return question, total, f"print(sum(range({a}, {b} + 1)))", steps


def _euclid(a: int, b: int) -> list[str]:
    steps = []
    while b:
        q, r = divmod(a, b)
        steps.append(f"{a} = {q} * {b} + {r}")
        a, b = b, r
    return steps


def _gcd(rng: random.Random, d: int) -> tuple[str, int, str, list[str]]:
    g = rng.randint(2, 10 ** max(d - 1, 1))
    a = g * rng.randint(2, 10 ** max(d - 1, 1))
    b = g * rng.randint(2, 10 ** max(d - 1, 1))
    question = f"What is the greatest common divisor of {a} and {b}?"
    code = f"import math\nprint(math.gcd({a}, {b}))"
    return question, math.gcd(a, b), code, _euclid(max(a, b), min(a, b))


def _lcm(rng: random.Random, d: int) -> tuple[str, int, str, list[str]]:
    a, b = _digits(rng, d), _digits(rng, d)
    g = math.gcd(a, b)
    lcm = a * b // g
    steps = [*_euclid(max(a, b), min(a, b)), f"gcd = {g}", f"{a} * {b} = {a * b}", f"{a * b} / {g} = {lcm}"]
    question = f"What is the least common multiple of {a} and {b}?"
    return question, lcm, f"import math\nprint(math.lcm({a}, {b}))", steps


def _prime_count(rng: random.Random, d: int) -> tuple[str, int, str, list[str]]:
    n = rng.randint(20, 10 ** min(d, 3))
    primes = [k for k in range(2, n) if all(k % p for p in range(2, math.isqrt(k) + 1))]
    steps = [f"the primes below {n} are " + ", ".join(map(str, primes)), f"counting them gives {len(primes)}"]
    question = f"How many prime numbers are less than {n}?"
    code = f"print(sum(all(k % p for p in range(2, int(k ** 0.5) + 1)) for k in range(2, {n})))"
    return question, len(primes), code, steps


_GENERATORS: dict[str, Callable[[random.Random, int], tuple[str, int, str, list[str]]]] = {
    "multiply": _multiply,
    "modpow": _modpow,
    "series_sum": _series_sum,
    "gcd": _gcd,
    "lcm": _lcm,
    "prime_count": _prime_count,
}


class CalculatorTask:
    """Seeded generator of problems that need exact arithmetic.

    Args:
        kinds: Which problem generators to mix (uniformly). Defaults to all of them.
        digits: Operand size (digits of each factor for ``multiply``, of the modulus for ``modpow``, ...).
        seed: Base seed; the train and test splits use independent streams derived from it.
        held_out: Size of the test split; its questions are excluded from the train split.

    Example:
        >>> task = CalculatorTask(kinds=("multiply",), digits=3, seed=0)
        >>> p = task.problems("test", 1)[0]
        >>> int(p.answer) == eval(p.question.removeprefix("What is ").removesuffix("?"))
        True
    """

    def __init__(
        self, kinds: Sequence[ProblemKind] = ALL_KINDS, digits: int = 3, seed: int = 0, held_out: int = 1000
    ) -> None:
        unknown = sorted(set(kinds) - set(_GENERATORS))
        if unknown or not kinds:
            raise ValueError(f"unknown or empty problem kinds {unknown or list(kinds)}; choose from {list(ALL_KINDS)}")
        if not 1 <= digits <= 12:
            raise ValueError(f"digits must be between 1 and 12, got {digits}")
        self.kinds = tuple(kinds)
        self.digits = digits
        self.seed = seed
        self.held_out = held_out

    def _stream(self, split: Split) -> Iterator[Problem]:
        rng = random.Random(f"lightning_cort/{self.seed}/{split}/{self.digits}/{','.join(self.kinds)}")
        index = 0
        while True:
            kind = self.kinds[rng.randrange(len(self.kinds))]
            question, answer, code, steps = _GENERATORS[kind](rng, self.digits)
            yield Problem(f"{split}-{self.seed}-{index}", kind, question, str(answer), code, tuple(steps))  # type: ignore[arg-type]
            index += 1

    def problems(self, split: Split, n: int) -> list[Problem]:
        """The first ``n`` problems of a split; test questions never appear in the train split.

        Args:
            split: ``"train"`` or ``"test"``.
            n: How many problems.
        """
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if split == "test":
            if n > self.held_out:
                raise ValueError(f"the test split has held_out={self.held_out} problems; {n} were asked for")
            return [p for p, _ in zip(self._stream("test"), range(n))]
        held_out = {p.question for p, _ in zip(self._stream("test"), range(self.held_out))}
        out: list[Problem] = []
        misses = 0
        for p in self._stream("train"):
            if len(out) == n:
                break
            if p.question not in held_out:
                out.append(p)
                misses = 0
                continue
            misses += 1
            if misses > MAX_HELD_OUT_DRAWS:  # e.g. 1-digit operands: every question is a held-out one
                raise ValueError(
                    f"the calculator task ran out of training problems after {len(out)} of {n}: its kinds "
                    f"{self.kinds} with {self.digits}-digit operands have too few distinct questions beside the "
                    f"{self.held_out} held-out ones; raise task.digits or add kinds"
                )
        return out


#: Consecutive draws that only gave held-out questions before the training stream is declared exhausted.
MAX_HELD_OUT_DRAWS = 20_000


def build_prompt(problem: str, suffix: str | None = CORT_SUFFIX) -> str:
    """The user message: the problem, then CoRT's instruction suffix on its own line (``None`` for no suffix)."""
    return problem if not suffix else f"{problem}\n{suffix}"


def code_trace(problem: Problem, output: str, fmt: CodeFormat | None = None, hint: str = CORT_PROMPT_HINT) -> str:
    """A code-integrated assistant completion for ``problem`` (the text after the ``<think>`` of the prompt).

    Args:
        problem: The problem.
        output: The interpreter's real output for ``problem.code`` (run it through a sandbox; see
            :func:`lightning_cort.tasks.make_sft_examples`).
        fmt: The code format (CoRT fences by default).
        hint: The opening hint of the thinking.
    """
    fmt = fmt or CoRTFormat()
    value = output.strip()
    return f"{hint}.\n{fmt.render_call(problem.code)}{fmt.render_output(value)}</think>\n\n{fmt.render_answer(value)}"


def text_trace(problem: Problem, fmt: CodeFormat | None = None) -> str:
    """A text-only assistant completion: the arithmetic worked out in words, then the boxed answer."""
    fmt = fmt or CoRTFormat()
    worked = "\n".join(problem.steps)
    return (
        "Okay, let's solve this step by step.\n"
        f"{worked}\n"
        f"So the result is {problem.answer}.\n</think>\n\n"
        f"{fmt.render_answer(problem.answer)}"
    )


#: The reasoning a Hint-Engineering trace writes before the hand calculation it hands to the interpreter instead.
PLANS: dict[str, str] = {
    "multiply": "Multiplying these by hand means adding up partial products.",
    "modpow": "By hand this needs repeated squaring modulo the divisor.",
    "series_sum": "The sum of an arithmetic series is (first + last) * count / 2.",
    "gcd": "The Euclidean algorithm gives the greatest common divisor.",
    "lcm": "The least common multiple is the product divided by the greatest common divisor.",
    "prime_count": "By hand I would have to test every number below the bound for primality.",
}


def hint_trace(problem: Problem, output: str, fmt: CodeFormat | None = None) -> str:
    """A Hint-Engineering-style completion: the prompt hint, a sentence of reasoning, Hint-1 where the hand
    calculation would start and the program that does it instead, then Hint-2 and the answer taken from the output
    without re-verifying it (CoRT's hand-annotated traces have this shape)."""
    fmt = fmt or CoRTFormat()
    value = output.strip()
    first = f"{PLANS[problem.kind]}\n"
    return (
        f"{CORT_PROMPT_HINT}.\n{first}{CORT_HINT_CALCULATE}\n{fmt.render_call(problem.code)}"
        f"{fmt.render_output(value)}{CORT_HINT_TRUST} So the result is {value}.\n</think>\n\n"
        f"{fmt.render_answer(value)}"
    )


def reasoning_trace(problem: Problem, fmt: CodeFormat | None = None) -> str:
    """A reasoning trace as a strong model without tools writes it: the approach in one sentence, then the
    arithmetic by hand, then the answer. The input of Hint-Engineering synthesis (Hint-1 goes where the hand
    calculation starts)."""
    fmt = fmt or CoRTFormat()
    worked = "\n".join(problem.steps)
    return (
        f"{PLANS[problem.kind]}\n{worked}\nSo the result is {problem.answer}.\n</think>\n\n"
        f"{fmt.render_answer(problem.answer)}"
    )


#: The opening every strategy of the mixed teacher shares, so that the strategy is chosen by the next tokens.
MIXED_OPENING = "Okay, let's solve this step by step."
#: What the mixed teacher writes before re-checking a code result by hand (CoRT's "result distrust").
RECHECK = "Let me double-check this by hand."
#: What it writes after a program failed, before the fixed one (ReTool's recovery from failing code).
REPAIR = "The program failed. Let me fix it."

Strategy = Literal["code", "hand", "recheck", "repair"]
#: How often the mixed teacher uses each strategy (:func:`mixed_trace`), per problem kind. Like a model fine-tuned
#: on human-written solutions, it mostly works by hand where people would (products, series, Euclid), though a
#: small model's hand arithmetic fails there; where a hand calculation would not fit a response (modular powers,
#: prime counts) it always writes a program, sometimes a failing one first. A policy that imitates these rates
#: prefers the unreliable strategy on four kinds of six when decoding greedily, while sampling still explores the
#: reliable one: the choice RL can learn (AutoCode's "when to use code"), with re-checks (CoRT's result distrust) and
#: repairs (ReTool) as the costly middle.
_BY_HAND: dict[Strategy, float] = {"hand": 0.55, "code": 0.2, "recheck": 0.15, "repair": 0.1}
_BY_PROGRAM: dict[Strategy, float] = {"hand": 0.0, "code": 0.7, "recheck": 0.0, "repair": 0.3}
MIXED_RATES: dict[str, dict[Strategy, float]] = {
    "multiply": _BY_HAND,
    "series_sum": _BY_HAND,
    "gcd": _BY_HAND,
    "lcm": _BY_HAND,
    "modpow": _BY_PROGRAM,
    "prime_count": _BY_PROGRAM,
}


def broken_program(problem: Problem) -> str:
    """The reference program with a mistake a model makes: the printed name misspelt (a ``NameError``)."""
    return problem.code.replace("print(", "prnt(", 1)


def mixed_trace(problem: Problem, strategy: Strategy, fmt: CodeFormat | None = None) -> str:
    """A completion of ``problem`` by one strategy of the mixed teacher; every strategy opens with
    :data:`MIXED_OPENING` and ends with the boxed (correct) answer:

    * ``hand``: the arithmetic worked out in words (cheap on small operands, long on large ones);
    * ``code``: one program and its output;
    * ``recheck``: the program and its output, then the same arithmetic re-done by hand (CoRT's result distrust);
    * ``repair``: a program that fails, the error, then the fixed program and its output (ReTool's recovery).
    """
    fmt = fmt or CoRTFormat()
    answer = fmt.render_answer(problem.answer)
    if strategy == "hand":
        worked = "\n".join(problem.steps)
        return f"{MIXED_OPENING}\n{worked}\nSo the result is {problem.answer}.\n</think>\n\n{answer}"
    value = reference_output(problem).strip()
    call = f"{fmt.render_call(problem.code)}{fmt.render_output(value)}"
    if strategy == "repair":
        broken = broken_program(problem)
        line = next(i for i, text in enumerate(broken.split("\n"), 1) if "prnt(" in text)
        error = (  # what the local sandbox shows for it
            f'Traceback (most recent call last):\n  File "<cell>", line {line}, in <module>\n'
            "NameError: name 'prnt' is not defined"
        )
        call = f"{fmt.render_call(broken)}{fmt.render_output(error)}{REPAIR}\n{call}"
    middle = ""
    if strategy == "recheck":
        worked = "\n".join(problem.steps)
        middle = f"{RECHECK}\n{worked}\n"
    return f"{MIXED_OPENING}\n{call}{middle}So the result is {value}.\n</think>\n\n{answer}"


def mixed_strategy(problem: Problem, rates: dict[Strategy, float] | None = None) -> Strategy:
    """The strategy the mixed teacher uses for ``problem`` (seeded by the problem, so it is the same every run), by
    ``rates`` (default: :data:`MIXED_RATES` of its kind)."""
    rates = rates or MIXED_RATES[problem.kind]
    draw = random.Random(f"mixed/{problem.id}").random() * sum(rates.values())
    for strategy, rate in rates.items():
        draw -= rate
        if draw < 0:
            return strategy
    return next(reversed(rates))  # type: ignore[call-overload]


TraceStyle = Literal["code", "hint", "text", "mixed"]


def trace_for(problem: Problem, style: TraceStyle, fmt: CodeFormat | None = None) -> str:
    """The completion of ``problem`` in ``style``: ``code`` (:func:`code_trace`), ``hint`` (:func:`hint_trace`),
    ``text`` (:func:`text_trace`) or ``mixed`` (:func:`mixed_trace` with the problem's :func:`mixed_strategy`)."""
    if style == "text":
        return text_trace(problem, fmt)
    if style == "mixed":
        return mixed_trace(problem, mixed_strategy(problem), fmt)
    output = reference_output(problem)
    return hint_trace(problem, output, fmt) if style == "hint" else code_trace(problem, output, fmt)


def reference_output(problem: Problem) -> str:
    """Run the problem's own reference program in this interpreter and return what it printed.

    The reference programs are generated by this module (trusted), so they run in-process: this is the interpreter
    output a code-integrated trace shows, computed in microseconds instead of a sandbox round trip per example.
    """
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(problem.code, "<reference>", "exec"), {"__name__": "__main__"})
    return buf.getvalue()
