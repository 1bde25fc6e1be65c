from __future__ import annotations

import pytest

from lightning_cort.answers import check_answer
from lightning_cort.rewards import final_answer, last_boxed, opens_thinking, response_text


def test_last_boxed_matches_braces():
    assert last_boxed(r"\boxed{1} then \boxed{\frac{1}{2}}") == r"\frac{1}{2}"
    assert last_boxed("no box") is None
    assert last_boxed(r"\boxed{unclosed") is None


def test_final_answer_of_thinking_and_non_thinking_responses():
    # A thinking response answers after its thinking; a box inside the thinking does not count.
    assert final_answer("<think>\nthinking \\boxed{3}\n</think>\n\n\\boxed{4}") == "4"
    assert final_answer("thinking \\boxed{3}\n</think>\n\n\\boxed{4}") == "4"  # the template opened it
    assert final_answer("<think>\nstill thinking \\boxed{3}") is None  # cut off mid-thought: no answer
    assert final_answer("<think>\ndone</think>no box") is None
    # A response without thinking tags (an instruct model's) answers with its last box anywhere.
    assert final_answer("The product is \\(\\boxed{12}\\).") == "12"
    assert final_answer("first \\boxed{1}, finally \\boxed{2}") == "2"
    assert final_answer("no box at all") is None


def test_response_text_follows_the_prompt():
    r1 = "<｜User｜>What is 2+2?<｜Assistant｜><think>\n"
    qwen = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    assert opens_thinking(r1) and not opens_thinking(qwen)
    assert opens_thinking(r1 + "Okay, a forced prefix after the opening")  # Hint-Engineering continuations
    assert not opens_thinking("<think>\n\n</think>\n\n")  # a template that closes an empty thinking
    assert response_text(r1, "\\boxed{4}") == "<think>\n\\boxed{4}"
    assert response_text(qwen, "\\boxed{4}") == "\\boxed{4}"
    # The same completion is correct from an instruct model's prompt and unfinished from a thinking model's.
    assert check_answer(response_text(qwen, "So \\boxed{4}."), "4", mode="strict")
    assert not check_answer(response_text(r1, "So \\boxed{4}."), "4", mode="strict")
    assert check_answer(response_text(r1, "So 4.\n</think>\n\\boxed{4}"), "4", mode="strict")


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
        ("58500", "58,500", True),
        ("12", "1,2", False),  # a list is not a number with its commas dropped
        ("1,2", "12", False),
    ],
)
def test_equivalence(pred, gold, same):
    # The judge every reward uses, on a boxed answer (None: no box at all).
    text = "no answer" if pred is None else f"\\boxed{{{pred}}}"
    assert check_answer(text, gold, mode="strict") is same


def _traj(tokenizer, sandbox, script):
    from test_rollout import ScriptedBackend

    from lightning_cort.formats import CoRTFormat
    from lightning_cort.rollout import RolloutConfig, RolloutEngine

    engine = RolloutEngine(ScriptedBackend(tokenizer, script), tokenizer, CoRTFormat(), sandbox, RolloutConfig())
    (traj,) = engine.generate(engine.encode_prompts(["What is 6 * 7?"]), [{"answer": "42"}])
    return traj


def test_seed_rewards_on_real_trajectories(tokenizer, sandbox):
    from lightning_cort.rewards import (
        combine,
        correctness_reward,
        cort_reward,
        format_reward,
        retool_reward,
        tool_use_reward,
    )

    row = {"answer": "42"}
    code_ok = _traj(
        tokenizer, sandbox, [("```python\nprint(6 * 7)\n```\n", "stop"), ("</think>\n\n\\boxed{42}", "eos")]
    )
    code_err = _traj(
        tokenizer, sandbox, [("```python\nprint(6 * )\n```\n", "stop"), ("</think>\n\n\\boxed{42}", "eos")]
    )
    no_code_wrong = _traj(tokenizer, sandbox, [("It is 41.\n</think>\n\n\\boxed{41}", "eos")])
    unfinished = _traj(tokenizer, sandbox, [("It is \\boxed{42} or so", "length")])
    assert [correctness_reward(t, row) for t in (code_ok, code_err, no_code_wrong, unfinished)] == [1, 1, 0, 0]
    # CoRT: 1/0 plus -0.1 when no execution succeeded with output (a failed one counts as none).
    assert [cort_reward(t, row) for t in (code_ok, code_err, no_code_wrong)] == pytest.approx([1.0, 0.9, -0.1])
    assert [retool_reward(t, row) for t in (code_ok, no_code_wrong)] == [1.0, -1.0]
    assert [format_reward(t, row) for t in (code_ok, no_code_wrong, unfinished)] == [1.0, 1.0, 0.0]
    assert [tool_use_reward(t, row) for t in (code_ok, code_err, no_code_wrong)] == [1.0, 0.0, 0.0]
    mixed = combine([(retool_reward, 1.0), (format_reward, 0.2), (tool_use_reward, 0.1)])
    assert [mixed(t, row) for t in (code_ok, no_code_wrong, unfinished)] == pytest.approx([1.3, -0.8, -1.0])


INSTRUCT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.mark.parametrize(
    ("completion", "thinking_ok", "instruct_ok"),
    [
        ("The answer is \\boxed{42}.", False, True),  # no </think>: a thinking model never finished thinking
        ("Working it out.\n</think>\n\n\\boxed{42}", True, True),
        ("I guess \\boxed{42}, no.\n</think>\n\n\\boxed{41}", False, False),
        ("Nothing boxed: 42.", False, False),
    ],
)
def test_every_scorer_agrees_for_thinking_and_instruct_templates(tokenizer, completion, thinking_ok, instruct_ok):
    """Rewards, training metrics, the held-out check and the eval recipe's records all read one rule, for a template
    that opens <think> (the tiny model's, like R1-Distill's) and one that does not (an instruct model's)."""
    import copy

    from lightning_cort.answer_pool import AnswerChecker
    from lightning_cort.data import trajectory_from_text
    from lightning_cort.evaluation import record_response, trajectory_record
    from lightning_cort.filters import correct as correct_filter
    from lightning_cort.formats import CoRTFormat
    from lightning_cort.metrics import token_efficiency
    from lightning_cort.rewards import correctness_reward, is_correct, retool_reward

    instruct = copy.deepcopy(tokenizer)
    instruct.chat_template = INSTRUCT_TEMPLATE
    row = {"answer": "42"}
    for tok, expected in ((tokenizer, thinking_ok), (instruct, instruct_ok)):
        t = trajectory_from_text(tok, "What is 6 * 7?", completion, CoRTFormat(), row=row)
        assert is_correct(t, row) is expected
        assert correctness_reward(t, row) == float(expected) and retool_reward(t, row) == (1.0 if expected else -1.0)
        assert correct_filter(t, row) is expected
        assert token_efficiency([t], [is_correct(t, row)])["accuracy"] == float(expected)
        record = trajectory_record(t, "calculator", 0, 0)
        with AnswerChecker(mode="strict", workers=1, fast_path=False) as checker:
            assert checker.check(record_response(record), "42") is expected  # the eval recipe's path


def test_responses_without_any_answer_are_diagnosed(tokenizer):
    import warnings

    from lightning_cort.callbacks import RolloutCallback
    from lightning_cort.data import trajectory_from_text
    from lightning_cort.formats import CoRTFormat
    from lightning_cort.metrics import no_answer_diagnosis

    unfinished = trajectory_from_text(tokenizer, "q", "Hmm, \\boxed{4} maybe", CoRTFormat(), add_eos=False)
    assert unfinished.finish_reason == "length"
    message = no_answer_diagnosis([(unfinished.response_text, unfinished.finish_reason)] * 3)
    assert "none of 3 responses" in message and "3 never closed their thinking" in message
    assert "3 hit the token limit" in message
    done = trajectory_from_text(tokenizer, "q", "ok\n</think>\n\\boxed{4}", CoRTFormat())
    assert no_answer_diagnosis([(done.response_text, done.finish_reason)]) is None

    from lightning_cort.callbacks import SandboxCallback

    callback = RolloutCallback(CoRTFormat(), sandbox=SandboxCallback())
    trainer = type("T", (), {"global_step": 0})()
    with pytest.warns(UserWarning, match="RL step 0: none of 2 responses has a final answer"):
        callback._warn_without_answers(trainer, [unfinished, unfinished])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        callback._warn_without_answers(trainer, [unfinished])  # once per run
