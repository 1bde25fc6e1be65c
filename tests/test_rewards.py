from __future__ import annotations

import pytest

from lightning_cort.rewards import final_answer, is_equivalent, last_boxed


def test_last_boxed_matches_braces():
    assert last_boxed(r"\boxed{1} then \boxed{\frac{1}{2}}") == r"\frac{1}{2}"
    assert last_boxed("no box") is None
    assert last_boxed(r"\boxed{unclosed") is None


def test_final_answer_requires_think_close():
    text = "thinking \\boxed{3}\n</think>\n\n\\boxed{4}"
    assert final_answer(text) == "4"
    assert final_answer("\\boxed{4}") is None
    assert final_answer("\\boxed{4}", require_think_close=False) == "4"


@pytest.mark.parametrize(
    ("pred", "gold", "same"),
    [
        ("25", "025", True),
        ("27", "27.0", True),
        ("3159", "3159.0", True),
        ("-4", "-4", True),
        ("12", "13", False),
        (r"\frac{1}{2}", "0.5", True),
        (r"\text{Evelyn}", r"\text{Evelyn}", True),
        (None, "1", False),
    ],
)
def test_equivalence(pred, gold, same):
    assert is_equivalent(pred, gold) is same
