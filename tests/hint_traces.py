"""Reasoning traces for the Hint-Engineering tests, written in the style of R1 with a code interpreter (CoRT fences)."""

from __future__ import annotations

# No code at all; the model multiplies by hand (delayed computation: the calculate point is "Let me multiply").
AREA_PROBLEM = "A rectangle has sides 437 and 289. What is its area plus its perimeter?"
AREA_TRACE = (
    "Okay, so I need the area and the perimeter of a rectangle with sides 437 and 289, then their sum.\n\n"
    "The area is the product of the sides. Let me multiply: 437 * 289 = 437 * 300 - 437 * 11 = 131100 - 4807 = "
    "126293.\n"
    "The perimeter is $2(437 + 289) = 2 \\times 726 = 1452$.\n\n"
    "Adding them, 126293 + 1452 = 127745.\n</think>\n\n"
    "The answer is \\boxed{127745}."
)
AREA_ANSWER = "127745"

# Code, a successful output, then re-verification by hand (the trust point is "Wait, let me verify").
SQUARES_PROBLEM = "What is the sum of the squares of the integers from 1 to 250?"
SQUARES_TRACE = (
    "Okay, so I need the sum of k^2 for k from 1 to 250. There is a closed form, n(n+1)(2n+1)/6, but computing "
    "it directly is safer.\n"
    "```python\nprint(sum(k**2 for k in range(1, 251)))\n```\n"
    "```output\n5239625\n```\n"
    "So the sum is 5239625. Wait, let me verify this with the formula: 250 * 251 = 62750, and 62750 * 501 = "
    "31437750, divided by 6 gives 5239625. Yes, that matches.\n"
    "</think>\n\n\\boxed{5239625}"
)

# Code whose result is used as it is: no hint needed.
CLEAN_PROBLEM = "What is the remainder when $2^{64}$ is divided by 1000?"
CLEAN_TRACE = (
    "Okay, so I need 2^{64} mod 1000. Python can do modular powers exactly.\n"
    "```python\nprint(pow(2, 64, 1000))\n```\n"
    "```output\n616\n```\n"
    "The remainder is 616.\n</think>\n\n\\boxed{616}"
)

# The code fails; the model then computes by hand. Arithmetic after a *failed* output is not result distrust, and it
# comes after the first code block, so no calculate point either.
FAILED_TRACE = (
    "Let me compute the product with code.\n"
    "```python\nprint(a * 456)\n```\n"
    '```output\nTraceback (most recent call last):\n  File "<cell>", line 1, in <module>\n'
    "NameError: name 'a' is not defined\n```\n"
    "The variable was not defined. By hand then: 123 * 456 = 56088.\n</think>\n\n\\boxed{56088}"
)

# Two outputs, each followed by re-checking; the multiplication sits in display math spanning lines.
TWO_CHECKS_TRACE = (
    "We first need the product of 347 and 521, then its square root rounded down.\n"
    "We compute\n\\[\n347 \\times 521 = 180787\n\\]\nbut that is error-prone, so let me use code.\n"
    "```python\nprint(347 * 521)\n```\n"
    "```output\n180787\n```\n"
    "Good. Let me double-check the last digit: 7 * 1 = 7. Fine. Now the root.\n"
    "```python\nimport math\nprint(math.isqrt(180787))\n```\n"
    "```output\n425\n```\n"
    "So the answer is 425. But wait, is that right? 425 * 425 = 180625, which is below 180787. Then 426 * 426 = "
    "181476 is above.\n</think>\n\n\\boxed{425}"
)
