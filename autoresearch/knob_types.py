"""The type of the value train.py gives each constant, and whether a knob's draws or a value fit it.

A knob's value is written over its constant's (`knobs.set_knobs`) and train.py uses it as it used
the constant: a string choice for an int constant, or a fraction drawn for one, passes every check
of the config and fails in each experiment, at run time. So the start compares a knob's kind and
choices with the type of what train.py assigns, and a proposal's value for any other constant is
compared with that constant's type before it is queued, as is the type an edit gives a declared
knob's constant (`retype_problems`). The type is read from the syntax, never run: a literal,
arithmetic on literals, `a if cond else b` with both of one type, or an annotation (`LR: float =
...`); anything else (a call, an imported name) is unknown and not judged.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from typing import Any

from autoresearch.knobs import knob_assignments, parsed
from autoresearch.proposals import quoted
from autoresearch.proposers.base import KnobSpec

NUMBERS = (int, float)
ANNOTATIONS = {"bool": bool, "int": int, "float": float, "str": str}
# What Optuna's storages keep as a categorical choice (it warns on anything else, and a list
# written back over a tuple constant is another type anyway).
CHOICE_TYPES = (type(None), bool, int, float, str)


def constant_types(source: str) -> dict[str, tuple[type, int]]:
    """By constant name, the type of its one module-level value and the line it is on, where the
    syntax tells it (a constant assigned twice is `knobs.unsettable`'s to refuse)."""
    found = {}
    for name, nodes in knob_assignments(parsed(source)).items():
        node = nodes[0]
        # (an annotation says what the value may be: `int | None` admits a null choice)
        annotated = isinstance(node, ast.AnnAssign)
        value_type = _annotated(node.annotation) if annotated else _type_of(node.value)  # type: ignore[attr-defined]
        if len(nodes) == 1 and value_type is not None:
            found[name] = (value_type, node.lineno)
    return found


def _annotated(annotation: ast.expr) -> type | None:
    """The type an annotation names where it is one plain type; None (not judged) otherwise."""
    return ANNOTATIONS.get(annotation.id) if isinstance(annotation, ast.Name) else None


def _type_of(node: ast.expr) -> type | None:
    """The type `node` evaluates to, or None where the syntax alone cannot tell."""
    if isinstance(node, ast.Constant):
        return None if node.value is None else type(node.value)
    if isinstance(node, ast.UnaryOp):
        inner = _type_of(node.operand)
        if isinstance(node.op, ast.Not):
            return bool
        return int if inner is bool else inner if inner in NUMBERS else None
    if isinstance(node, ast.BinOp):
        return _arithmetic_type(node)
    if isinstance(node, ast.IfExp):
        body, orelse = _type_of(node.body), _type_of(node.orelse)
        return body if body == orelse else None
    if isinstance(node, ast.Compare):
        return bool
    containers = {ast.Tuple: tuple, ast.List: list, ast.Dict: dict, ast.Set: set}
    return next((kind for syntax, kind in containers.items() if isinstance(node, syntax)), None)


def _arithmetic_type(node: ast.BinOp) -> type | None:
    left, right = _type_of(node.left), _type_of(node.right)
    if left is str or right is str:  # 'S' * 4, 'S' + 'L'
        return str if {left, right} <= {str, int} else None
    if left not in (*NUMBERS, bool) or right not in (*NUMBERS, bool):
        return None
    if isinstance(node.op, ast.Div) or float in (left, right):
        return float
    negative_power = isinstance(node.op, ast.Pow) and isinstance(node.right, ast.UnaryOp)
    return None if negative_power else int  # (2**-1 is a float)


def fits(value: Any, declared: type) -> bool:
    """Whether `value` can stand where train.py has a `declared` value: an int serves for a float,
    nothing else for another type (bool is an int to Python, but not to a reader of a flag)."""
    if isinstance(value, bool) or declared is bool:
        return isinstance(value, bool) and declared is bool
    if declared is float:
        return isinstance(value, NUMBERS)
    return isinstance(value, declared)


def value_problem(name: str, value: Any, types: dict[str, tuple[type, int]]) -> str:
    """Why `value` cannot be written over train.py's constant `name`, or '' (also where its type
    is unknown). `types`: `constant_types` of the train.py it is written into, edits applied. A
    declared knob's values are its spec's to judge; any other constant's, only its type's."""
    declared, line = types.get(name, (None, 0))
    if value is None or declared is None or fits(value, declared):
        return ""
    return f"knob {name}: {quoted(value)} is {_a(type(value))}, but train.py's {name} is {_a(declared)} (line {line}): give a value of its type"


def as_written(settings: dict[str, Any], types: dict[str, tuple[type, int]]) -> dict[str, Any]:
    """`settings` as `set_knobs` should write them: an int over a float constant as a float, so
    the constant stays a float in the train.py that a kept change makes the frontier, and a
    fraction set after it is not refused as the wrong type."""
    return {
        name: _as_float(value) if type(value) is int and types.get(name, (None,))[0] is float else value
        for name, value in settings.items()
    }


def _as_float(value: int) -> float | int:
    """The same number as a float, or the int where a float cannot hold it exactly."""
    try:
        return float(value) if float(value) == value else value
    except OverflowError:  # (more than some 300 digits)
        return value


def unstorable_choice(spec: KnobSpec) -> str:
    """Why a categorical knob's choices cannot be searched, or '': Optuna's storages keep only
    plain values (it warns of any other, as each distribution is made, and stores it as JSON)."""
    if odd := next((c for c in spec.choices if not isinstance(c, CHOICE_TYPES)), None):
        return (
            f"campaign.knobs.{spec.name}: choice {odd!r} is {_a(type(odd))}; a choice must be a number, a "
            "string, true/false or null (make each part of a tuple or list a constant of its own)"
        )
    return ""


def given_once(choices: Iterable[Any]) -> tuple[Any, ...]:
    """`choices` with each one at its first place only, by type and value (1 and 1.0 are other
    choices, and another problem's: `fits`)."""
    return tuple(choice for choice, first in _at_first_place(choices) if first)


def repeats(choices: Iterable[Any]) -> tuple[Any, ...]:
    """The choices given again past their first place (by type and value, as `given_once`)."""
    return tuple(choice for choice, first in _at_first_place(choices) if not first)


def _at_first_place(choices: Iterable[Any]) -> Iterator[tuple[Any, bool]]:
    """Each choice, and whether it is at its first place in `choices`."""
    seen: set[tuple[type, Any]] = set()
    for choice in choices:
        yield choice, (type(choice), choice) not in seen
        seen.add((type(choice), choice))


def type_problem(spec: KnobSpec, declared: type | None, where: str) -> str:
    """Why the knob's values would not fit its constant, `declared` in train.py at `where`
    (a file and line), or '' (also where the type is unknown, None)."""
    if declared is None:
        return ""
    key, named = f"campaign.knobs.{spec.name}", f"train.py's {spec.name} is {_a(declared)} ({where})"
    if spec.kind == "categorical":
        odd = [c for c in spec.choices if not fits(c, declared)]  # (a list: the odd one may be None)
        return (
            f"{key}: choice {odd[0]!r} is {_a(type(odd[0]))}, but {named}: give choices of its type"
            if odd
            else ""
        )
    drawn = int if spec.kind == "int" else float
    if fits(drawn(1), declared):
        return ""
    fix = "make it kind: int" if declared is int else "make it kind: categorical, with choices of its type"
    return f"{key}: {_a(drawn)} knob draws {drawn.__name__}s, but {named}: {fix}"


def retype_problems(
    specs: Iterable[KnobSpec],
    frontier: dict[str, tuple[type, int]],
    edited: dict[str, tuple[type, int]],
    source: str,
) -> list[str]:
    """Why edits that made `source` (its `constant_types`: `edited`) give a declared knob's constant
    another type than the frontier's (its `frontier` types), a line each; where the frontier's type
    is unknown, one the knob's values do not fit. Every value of the knob is written over that
    constant, an int as a float where the constant is one (`as_written`): `DEPTH = 8.5` made each
    later DEPTH a float, and `DEPTH = "8"` left one a str wherever the knob was not set."""
    problems = []
    for spec in specs:
        new, line = edited.get(spec.name, (None, 0))
        old = frontier.get(spec.name, (None, 0))[0]
        if new is None or new is old or (old is None and not type_problem(spec, new, "")):
            continue
        text = source.split("\n")[line - 1].strip()  # (as ast counts lines: not at \f or \v)
        was = f", where the frontier's is {_a(old)}" if old else ""
        fix = f"keep it {_a(old)}" if old else "give it a value the knob can take"
        problems.append(
            f"knob {spec.name}: the edits make train.py's {spec.name} {_a(new)} "
            f"(line {line}: {text[:80]}){was}; it is {_declared(spec)}: {fix}"
        )
    return problems


def _declared(spec: KnobSpec) -> str:
    """The declared knob as its values' reader sees it: `a declared int knob`, or its choices."""
    if spec.kind == "categorical":
        return f"a declared knob of choices {list(spec.choices)}"
    return f"a declared {spec.kind} knob"


def _a(kind: type) -> str:
    """`a float`, `an int`, as a reader of the config says it (None is YAML's null)."""
    if kind is type(None):
        return "null"
    return f"{'an' if kind.__name__[0] in 'aeiou' else 'a'} {kind.__name__}"
