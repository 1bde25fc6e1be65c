from __future__ import annotations

import pytest

from lightning_cort.formats import (
    CORT_BUDGET_NOTICE,
    Block,
    CoRTFormat,
    HermesFormat,
    ReToolFormat,
    get_format,
    middle_truncate,
    result_text,
)
from lightning_cort.sandbox import ExecutionError, ExecutionResult

FORMATS = [CoRTFormat(), ReToolFormat(), HermesFormat()]
CODES = ["print(1 + 1)", "import math\nfor i in range(3):\n    print(math.factorial(i))", "x = 'a```b'", ""]


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
@pytest.mark.parametrize("code", CODES)
def test_render_call_then_find_call_round_trips(fmt, code):
    text = "Let me compute.\n" + fmt.render_call(code)
    call = fmt.find_call(text)
    assert call is not None
    assert call.code == code
    assert text[call.start :].startswith(fmt.render_call(code)[:6])
    assert call.end == len(text)


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_stop_string_ends_the_rendered_call(fmt):
    rendered = fmt.render_call("print(2)")
    assert any(rendered.rstrip("\n").endswith(s.rstrip("\n")) or rendered.endswith(s) for s in fmt.stop_strings)


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_find_call_ignores_text_after_the_call_and_incomplete_calls(fmt):
    call = fmt.render_call("print(3)")
    assert fmt.find_call("no code here") is None
    assert fmt.find_call(call[: len(call) // 2]) is None  # still open
    assert fmt.find_call(call + "and then more text") is None  # the model went on: not a pending call
    assert fmt.find_call(call + fmt.render_output("3")) is None  # a (hallucinated) output already follows
    assert fmt.find_call(call + "\n\n") is not None  # a close merged with whitespace in one token still counts


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_parse_join_round_trip(fmt):
    blocks = [
        Block("text", "Okay, let's compute.\n"),
        Block("code", "x = 6 * 7\nprint(x)"),
        Block("output", "42"),
        Block("text", "So it is 42.\n</think>\n\n\\boxed{42}"),
    ]
    text = fmt.join(blocks)
    assert fmt.parse(text) == blocks
    assert fmt.join(fmt.parse(text)) == text


def test_cort_output_rendering_is_exact():
    fmt = CoRTFormat()
    assert fmt.render_call("print(1)") == "```python\nprint(1)\n```\n"
    assert fmt.render_output("  7\n") == "```output\n7\n```\n"
    assert fmt.render_output("") == "```output\n\n```\n"
    assert fmt.render_output("5", budget_notice=True) == "```output\n5" + CORT_BUDGET_NOTICE + "\n```\n"
    assert CORT_BUDGET_NOTICE.startswith("\n\n[SYSTEM]\nYou have exceeded the allowed number of code executions.")
    long = "a" * 500 + "b" * 500
    body = fmt.render_output(long)[len("```output\n") : -len("\n```\n")]
    assert body == "a" * 400 + "..." + "b" * 400
    assert len(body) == 803


def test_middle_truncate():
    assert middle_truncate("abc", 800) == "abc"
    assert middle_truncate("x" * 801, 800) == "x" * 400 + "..." + "x" * 400
    assert middle_truncate("x" * 10, 0) == "x" * 10


def test_result_text_follows_cort_executor():
    ok = ExecutionResult("ok", stdout="12\n")
    err = ExecutionResult(
        "error",
        stdout="printed before\n",
        error=ExecutionError("ZeroDivisionError", "division by zero", "Traceback..."),
    )
    assert result_text(ok) == "12\n"
    assert result_text(err) == "Traceback..."  # stdout of a failed execution is dropped, as in CoRT
    assert result_text(ExecutionResult("timeout")) == "Timeout Error"
    assert result_text(ExecutionResult("sandbox_error", error=ExecutionError("X", "down"))).startswith(
        "Execution Error"
    )


def test_retool_tags():
    fmt = ReToolFormat()
    assert fmt.stop_strings == ("</code>",)
    assert fmt.render_output("9") == "<interpreter>\n9\n</interpreter>\n"
    assert fmt.render_answer("9") == "<answer>\\boxed{9}</answer>"
    # Fences inside <code> are optional when the model writes them.
    assert fmt.find_call("<code>\nprint(4)\n</code>").code == "print(4)"
    assert fmt.find_call("<code>\n```python\nprint(4)\n```\n</code>\n").code == "print(4)"


def test_cort_code_is_dedented():
    assert CoRTFormat().find_call("```python\n    x = 1\n    print(x)\n```\n").code == "x = 1\nprint(x)"


def test_get_format():
    assert get_format("cort").name == "cort"
    assert get_format("retool").name == "retool"
    with pytest.raises(ValueError, match="unknown code format"):
        get_format("jupyter")


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("Run it:\n```python\nprint(1)\n```\n", "print(1)"),
        ("Run it:\n```python\nprint(1)\n```", "print(1)"),  # the turn ended right after the fence
        ("```py\nprint(2)\n```\n", "print(2)"),
        ("```Python\nprint(3)\n```\n\n", "print(3)"),  # the fence token carried a second newline
        ("```python3 \nprint(4)\n```\n", "print(4)"),
        ("```python\nprint(0)\n```\n```output\n0\n```\nAgain:\n```py\nprint(5)\n```\n", "print(5)"),  # the last one
        ("```python\nprint(1)\n``` is the program", None),  # the model went on: not a call
        ("```\nprint(1)\n```\n", None),  # no language tag: a plain block, not a call
        ("```bash\nls\n```\n", None),
        ("```python\nprint(1)\n", None),  # not closed yet
    ],
)
def test_cort_calls_as_real_models_write_them(text, code):
    call = CoRTFormat().find_call(text)
    assert (call.code if call else None) == code


@pytest.mark.parametrize("tag", ["python", "py", "python3", ""])
def test_retool_code_fences_with_any_python_tag(tag):
    call = ReToolFormat().find_call(f"<code>\n```{tag}\nprint(1)\n```\n</code>")
    assert call is not None and call.code == "print(1)"


# -- chat-template tool calls (Hermes) ---------------------------------------------------------------------------------
def test_hermes_tool_schema_is_what_transformers_derives_from_the_documented_function():
    """TRL and the chat template take tools as documented functions: the schema the format renders must be the one
    ``get_json_schema`` derives from such a function, so both toolkits' prompts are the same tokens."""
    from transformers.utils import get_json_schema

    from lightning_cort.formats.hermes import PYTHON_TOOL_CODE_DESCRIPTION, PYTHON_TOOL_DESCRIPTION

    def python(code: str) -> str:
        return code

    python.__doc__ = f"{PYTHON_TOOL_DESCRIPTION}\n\nArgs:\n    code: {PYTHON_TOOL_CODE_DESCRIPTION}\n"
    assert HermesFormat().tools == (get_json_schema(python),)
    assert CoRTFormat().tools == () and ReToolFormat().tools == ()


@pytest.mark.parametrize(
    "body",
    [
        '{"name": "search", "arguments": {"code": "print(1)"}}',  # another tool
        '{"name": "python", "arguments": {"program": "print(1)"}}',  # no code argument
        '{"name": "python", "arguments": {"code": "print(1)"}',  # broken JSON
        '["python"]',
    ],
)
def test_hermes_blocks_that_are_not_python_calls_are_text(body):
    fmt = HermesFormat()
    text = f"Let me see.\n<tool_call>\n{body}\n</tool_call>"
    assert fmt.find_call(text) is None
    assert fmt.parse(text) == [Block("text", text)]


def test_hermes_reads_arguments_given_as_a_json_string_and_keeps_unicode():
    fmt = HermesFormat()
    text = '<tool_call>\n{"name": "python", "arguments": "{\\"code\\": \\"print(\'π\')\\"}"}\n</tool_call>\n'
    assert fmt.find_call(text).code == "print('π')"
    assert "π" in fmt.render_call("print('π')")  # written as the chat template's tojson writes it, unescaped
