"""OpenVLA's prompt format, shared by every policy so training and deployment see the same text."""

from __future__ import annotations

PROMPT_TEMPLATE = "In: What action should the robot take to {instruction}?\nOut:"


def build_prompt(instruction: str) -> str:
    """``In: What action should the robot take to {instruction}?\\nOut:`` with a cleaned instruction."""
    if not isinstance(instruction, str) or not instruction.strip():
        raise ValueError("the task instruction must be a non-empty string")
    text = " ".join(instruction.strip().split())
    text = text.rstrip("?.! ")
    # OpenVLA lower-cases the first letter ("pick up the cube" rather than "Pick up the cube").
    text = text[:1].lower() + text[1:]
    return PROMPT_TEMPLATE.format(instruction=text)
