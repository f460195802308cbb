"""Knobs: the module-level UPPER_CASE constants of train.py, read and rewritten through `ast`.

Rewriting by syntax tree rather than by regex means a knob is set exactly where it is assigned,
whatever the formatting, and a value that would not parse back is caught before compute is spent.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import io
from collections import Counter
from collections.abc import Iterable
from typing import Any

# What `ast.literal_eval` raises for a value that is not a literal: ValueError, but TypeError for an
# unhashable key or set member (`{[1]: 2}`), RecursionError or MemoryError for one nested too deep.
NOT_A_LITERAL = (ValueError, TypeError, RecursionError, MemoryError)


class KnobError(ValueError):
    """A knob that does not exist, is assigned twice, or cannot take the given value."""


def _is_knob_name(name: str) -> bool:
    return name.isupper() and name[0].isalpha()


def knob_assignments(tree: ast.Module) -> dict[str, list[ast.stmt]]:
    found: dict[str, list[ast.stmt]] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target = node.target
        else:
            continue
        if isinstance(target, ast.Name) and _is_knob_name(target.id):
            found.setdefault(target.id, []).append(node)
    return found


# What `ast.parse` raises besides SyntaxError for a source it cannot take: RecursionError for an
# expression nested too deep (`1+0+0...`), MemoryError for a long chain of unary operators
# (`----1`), ValueError for some malformed sources.
NOT_PARSED = (RecursionError, MemoryError, ValueError)


@functools.lru_cache(maxsize=8)
def parsed(source: str) -> ast.Module:
    """The syntax tree of a train.py, shared and read-only: checking and rewriting one candidate
    reads the same source several times, and parsing is most of what that costs. A source the
    parser cannot take raises SyntaxError, whatever ast raised: a proposal may be any text, and
    every caller can then refuse it with a reason instead of crashing."""
    try:
        return ast.parse(source)
    except NOT_PARSED as err:
        why = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        raise SyntaxError(
            f"the parser gave up ({why}): an expression nested or chained too deeply?"
        ) from None


def source_lines(source: str) -> list[str]:
    """`source` split where the parser counts lines (\\n, \\r\\n, \\r) and nowhere else:
    `str.splitlines` also breaks at form feeds and Unicode separators, so ast's line numbers
    would point at the wrong line."""
    return io.StringIO(source, newline="").readlines()


def literal_knobs(source: str) -> dict[str, Any]:
    """Every UPPER_CASE constant whose value is a literal, with that value: the ones a setting
    can be put back to (in `read_knobs` an expression's text and a string look alike)."""
    values: dict[str, Any] = {}
    for name, nodes in knob_assignments(parsed(source)).items():
        with contextlib.suppress(*NOT_A_LITERAL):
            values[name] = ast.literal_eval(nodes[-1].value)  # type: ignore[attr-defined]
    return values


def read_knobs(source: str) -> dict[str, Any]:
    """Every UPPER_CASE constant whose value is a literal; others map to their source text."""
    literals = literal_knobs(source)
    lines: list[str] | None = None  # split once, only if some value is not a literal
    values: dict[str, Any] = {}
    for name, nodes in knob_assignments(parsed(source)).items():
        if name in literals:
            values[name] = literals[name]
        else:
            lines = lines or source_lines(source)
            values[name] = _segment(lines, nodes[-1].value)  # type: ignore[attr-defined]
    return values


def _segment(lines: list[str], node: ast.expr) -> str:
    """The source text of `node`, as `ast.get_source_segment` gives it, without re-splitting the
    whole file for every node (which made reading a train.py's knobs take 15 ms)."""
    first, last = node.lineno - 1, node.end_lineno - 1  # type: ignore[operator]
    start = _byte_to_char(lines[first], node.col_offset)
    end = _byte_to_char(lines[last], node.end_col_offset)  # type: ignore[arg-type]
    if first == last:
        return lines[first][start:end]
    return lines[first][start:] + "".join(lines[first + 1 : last]) + lines[last][:end]


SETTABLE = "a knob must be one module-level assignment, NAME = value, for the engine to set it"


def unsettable(source: str, names: Iterable[str]) -> dict[str, str]:
    """Why each of the knobs `names` that `set_knobs` cannot set in `source` cannot, by name.
    A knob is set by writing its value over its one module-level `NAME = value`: with none, or
    two, it cannot be; another module-level binding (`LR *= 4`, `for LR in ...`) would change the
    value set before the run reads it."""
    tree = parsed(source)
    assignments = knob_assignments(tree)
    bindings = _module_bindings(tree)
    problems: dict[str, str] = {}
    for name in names:
        count = len(assignments.get(name, []))
        if count == 0:
            problems[name] = f"knob {name} is not a module-level constant (NAME = value) of train.py"
        elif count > 1:
            problems[name] = f"knob {name} is assigned {count} times in train.py"
        elif bindings[name] > 1:
            problems[name] = f"knob {name} is bound again after its assignment in train.py"
    return problems


def unset_by_edits(before: str, after: str, names: Iterable[str]) -> list[str]:
    """Why edits that made `after` of `before` leave knobs of `names` that `before` lets be set
    unsettable, a line each: kept, such an edit (`LR = LR * 4` after `LR = 0.01`) would make
    every later setting of that knob invalid. A knob `before` could not set already is not the
    edits' doing. Shared by the engine, which refuses such a candidate when it queues it, and
    propose_wave, which says it in the wave, in the same words."""
    broken = unsettable(after, names)
    if broken:
        broken = {k: v for k, v in broken.items() if k not in unsettable(before, broken)}
    return [f"{why}: {SETTABLE}" for why in broken.values()]


def _module_bindings(tree: ast.Module) -> Counter[str]:
    """How often each name is bound (or deleted) in module scope, at any depth of its statements
    (an `if`, a `for`), not inside functions or classes."""
    counts: Counter[str] = Counter()
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            counts[node.name] += 1
            continue
        if isinstance(node, ast.Lambda | ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp):
            continue
        if isinstance(node, ast.AnnAssign) and node.value is None:
            continue  # `LR: float` declares, binds nothing
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            counts[node.id] += 1
        elif isinstance(node, ast.Import | ast.ImportFrom):
            counts.update((a.asname or a.name).partition(".")[0] for a in node.names)
        todo.extend(ast.iter_child_nodes(node))
    return counts


def _assignment_problem(name: str, count: int) -> str:
    """Why `set_knobs` cannot set knob `name`, assigned `count` times at module level, or ''."""
    if count == 0:
        return f"knob {name} is not a module-level constant of train.py"
    if count > 1:
        return f"knob {name} is assigned {count} times in train.py; cannot set it"
    return ""


def setting_problems(source: str, names: Iterable[str]) -> dict[str, str]:
    """Why `set_knobs` would refuse to set each of `names` in `source`, by name, in its words:
    propose_wave says it in the wave of edits that add a second assignment of a constant a knob
    or grid factor sets, where the engine would refuse each of their runs when it queues it."""
    assignments = knob_assignments(parsed(source))
    problems = {name: _assignment_problem(name, len(assignments.get(name, []))) for name in names}
    return {name: why for name, why in problems.items() if why}


def set_knobs(source: str, settings: dict[str, Any]) -> str:
    """Return `source` with each knob's assignment replaced by the given literal value."""
    if not settings:
        return source
    tree = parsed(source)
    assignments = knob_assignments(tree)
    lines = source_lines(source)
    edits: list[tuple[ast.expr, str]] = []
    for name, value in settings.items():
        nodes = assignments.get(name, [])
        if why := _assignment_problem(name, len(nodes)):
            raise KnobError(why)
        if isinstance(value, float) and value != value:
            raise KnobError(f"knob {name} cannot be NaN")
        literal = repr(value)
        try:
            ast.literal_eval(literal)
        except (*NOT_A_LITERAL, SyntaxError) as err:
            raise KnobError(f"knob {name}: value {value!r} is not a Python literal") from err
        edits.append((nodes[0].value, literal))  # type: ignore[attr-defined]
    # Apply from the bottom up so earlier offsets stay valid.
    for value_node, literal in sorted(edits, key=lambda e: (e[0].lineno, e[0].col_offset), reverse=True):
        start, end = value_node.lineno - 1, value_node.end_lineno - 1  # type: ignore[operator]
        head = lines[start][: _byte_to_char(lines[start], value_node.col_offset)]
        tail = lines[end][_byte_to_char(lines[end], value_node.end_col_offset) :]  # type: ignore[arg-type]
        lines[start : end + 1] = [head + literal + tail]
    return "".join(lines)


def _byte_to_char(line: str, byte_offset: int) -> int:
    """ast reports UTF-8 byte offsets; slicing needs character offsets."""
    return len(line.encode("utf-8")[:byte_offset].decode("utf-8", errors="ignore"))
