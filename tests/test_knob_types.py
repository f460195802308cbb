"""The line a retype refusal quotes is the one Python's parser numbered, whatever characters
other lines hold (str.splitlines also breaks at a form feed, which Python's lines do not)."""

from __future__ import annotations

from autoresearch.knob_types import constant_types, retype_problems
from autoresearch.proposers.base import KnobSpec


def test_a_retype_refusal_quotes_the_line_the_parser_numbered() -> None:
    frontier = "WIDTH = 1  # a page break:\x0c in a comment\nDEPTH = 8\n"
    edited = frontier.replace("DEPTH = 8", "DEPTH = 8.5")
    (said,) = retype_problems(
        [KnobSpec("DEPTH", "int", 2, 16)], constant_types(frontier), constant_types(edited), edited
    )
    assert "(line 2: DEPTH = 8.5)" in said, said
    assert "where the frontier's is an int" in said
