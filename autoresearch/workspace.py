"""Experiment workspaces: the frontier train.py with a candidate applied, checked before compute.

A workspace is a folder holding train.py (edited), prepare.py (the harness, copied and hashed) and
the diff against the frontier. Every check that can fail without a GPU fails here, with a reason
the proposer can read: a bad proposal costs a FAIL trial, never a crash of the campaign.
"""

from __future__ import annotations

import ast
import difflib
import functools
import hashlib
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoresearch.knob_types import as_written, constant_types
from autoresearch.knobs import KnobError, parsed, read_knobs, set_knobs
from autoresearch.proposals import Edit, quoted

EDITABLE_FILE = "train.py"
HARNESS_FILE = "prepare.py"
MAX_EDIT_CHARS = 20_000  # one search or replace block
MAX_TRAIN_PY_CHARS = 200_000  # the edited file


def experiment_dir(campaign_dir: Path, number: int) -> Path:
    """Where trial `number` runs and leaves its files; the one place that knows the layout."""
    return Path(campaign_dir) / "experiments" / f"{int(number):05d}"


class InvalidCandidate(ValueError):
    """A candidate that cannot become an experiment; the message is the reason, in one line."""


class InvalidOnAnyFrontier(InvalidCandidate):
    """A candidate whose own edits are at fault on whatever frontier it meets (`edit_problem`,
    `OVERWRITTEN_EDITS`): refused as invalid, never skipped as a keep's doing since it was queued."""


@dataclass(frozen=True)
class Workspace:
    path: Path
    harness_sha256: str
    diff: str


def source_version(source: str) -> str:
    """A train.py's identity in the study (`run_key`): runs of equal versions are repeats."""
    return hashlib.sha1(source.encode()).hexdigest()[:16]


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def apply_edits(source: str, edits: list[Edit]) -> str:
    """Apply search/replace blocks in order; each search must match exactly once. An edit that
    fits no frontier (`edit_problem`) is said first, whichever edit it is: its fault is its own."""
    for i, edit in enumerate(edits, start=1):
        if why := edit_problem(edit, i):
            raise InvalidOnAnyFrontier(why)
    for i, edit in enumerate(edits, start=1):
        count = source.count(edit.search)
        if count != 1:
            where = "does not occur" if count == 0 else f"occurs {count} times"
            raise InvalidCandidate(f"edit {i}: search block {where} in train.py: {_preview(edit.search)}")
        source = source.replace(edit.search, edit.replace)
    return source


def edit_problem(edit: Edit, number: int) -> str:
    """Why edit `number` can change no frontier's train.py (another file, too large, no search
    text, a text replaced by itself), or ''. It does not depend on the frontier, so a proposer is
    told in the wave (`agent.tools.check_wave`); the engine refuses it by this one rule whatever
    proposed it (a resumed study's stored proposal, the offline proposer, a user's own): an edit
    that changes nothing made a grid's cells repeat knob-only runs, judged as a change."""
    normalized = Path(edit.path.strip())
    if normalized.is_absolute() or ".." in normalized.parts or str(normalized) != EDITABLE_FILE:
        return f"edits may only change {EDITABLE_FILE}; refused an edit to {quoted(edit.path)}"
    if len(edit.search) > MAX_EDIT_CHARS or len(edit.replace) > MAX_EDIT_CHARS:
        return f"edit {number} is too large (over {MAX_EDIT_CHARS} characters)"
    if not edit.search:
        return f"edit {number} has an empty search text"
    if edit.search == edit.replace:
        return f"edit {number} replaces a text by itself, so it changes nothing"
    return ""


def _preview(text: str, limit: int = 60) -> str:
    first = text.strip().splitlines()[0] if text.strip() else ""
    return repr(first[:limit] + ("..." if len(first) > limit else ""))


def length_problem(source: str, what: str) -> str:
    """Why `source` (named `what`) is too large to run, with the numbers, or ''."""
    if len(source) <= MAX_TRAIN_PY_CHARS:
        return ""
    return f"{what} would be too large: {len(source):,} characters, over the limit of {MAX_TRAIN_PY_CHARS:,}"


def check_source(source: str) -> None:
    """The edited train.py must parse and must leave the harness module alone."""
    problem = _source_problem(source)
    if problem:
        raise InvalidCandidate(problem)


@functools.lru_cache(maxsize=64)
def _source_problem(source: str) -> str:
    """What is wrong with a train.py, or ''. Cached: every knob-only candidate checks the frontier
    itself again, and a check (parse and walk) costs milliseconds the controller needs at scale."""
    return length_problem(source, "edited train.py") or code_problem(source)


def code_problem(source: str) -> str:
    """Why an edited train.py cannot run as code, whatever its size: it does not parse, or it
    writes to the harness module. Also said in the wave that proposes it (`check_wave`)."""
    try:
        tree = parsed(source)
    except SyntaxError as err:
        line = f"line {err.lineno}: " if err.lineno else ""
        return f"edited train.py does not parse: {line}{err.msg}"
    if _writes_to_harness(tree):
        return "train.py may not modify the harness module (prepare)"
    return ""


def _writes_to_harness(tree: ast.Module) -> bool:
    """Whether train.py writes to the harness module's attributes: the metric must stay the
    harness's own, so such a train.py is refused."""
    aliases = {"prepare"}
    written: list[ast.expr] = []  # one walk collects both; aliases may be imported after a write
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases |= {a.asname or a.name for a in node.names if a.name == "prepare"}
        elif isinstance(node, ast.Assign | ast.Delete):
            written += node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            written.append(node.target)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in {"setattr", "delattr"}
            and node.args
        ):
            written.append(ast.Attribute(value=node.args[0], attr="?"))
    return any(
        isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id in aliases
        for t in written
    )


# The harness's functions a run must call to end with a result: its metric, and the one writer of
# the result file the runner reads (printing a summary is not it).
RESULT_CALLS = ("evaluate_bpb", "write_result")


def result_problem(frontier_source: str, source: str) -> str:
    """Why edits that made `source` leave it no way to write a result, or '': a function of
    RESULT_CALLS that the frontier's train.py names and `source` names nowhere (its call deleted,
    or commented out), or that the frontier's calls from module level and `source` only in a
    function nothing there calls (`if __name__ == "__main__": main()` deleted). Such a run ended
    with no result, a crash charged to its change. A `source` that cannot run as code (it does
    not parse) is `code_problem`'s to say."""
    if code_problem(source):
        return ""
    gone = [name for name in RESULT_CALLS if name in _names(frontier_source) and name not in _names(source)]
    if gone:
        return (
            f"the edits remove train.py's call of prepare.{gone[0]}, so its run would train and end "
            "with no result: keep the call"
        )
    before, after = _reached_calls(frontier_source), _reached_calls(source)
    cut = [name for name in RESULT_CALLS if name in before and name not in after]
    if not cut:
        return ""
    holder = _holder(source, cut[0])
    if not holder or holder in _reached_functions(source):
        where = f" in {holder}()" if holder else ""
        return (
            f"the edits leave train.py's call of prepare.{cut[0]}{where} only under a condition never "
            "true when train.py runs (if False:, if 0:, or __name__ compared with another name than "
            "'__main__'), so its run would end with no result: call it where it runs"
        )
    return (
        f"the edits leave train.py's call of prepare.{cut[0]} in {holder}(), which "
        "nothing run at module level calls, directly or through other functions, so its run would "
        'end with no result: call it from module level (if __name__ == "__main__": main())'
    )


@functools.lru_cache(maxsize=64)
def _names(source: str) -> frozenset[str]:
    """Every name `source` uses, imports or spells as a string (`getattr(prepare, "...")`);
    empty where it does not parse (`check_source` says so)."""
    try:
        return _names_in(parsed(source), imports=True)
    except SyntaxError:
        return frozenset()


def _names_in(node: ast.AST, imports: bool, live: bool = False) -> frozenset[str]:
    """Every name the code of `node` uses or spells as a string, and with `imports` the names
    its imports bind or take; with `live` only in the branches its conditions let run
    (`_live_nodes`)."""
    names: set[str] = set()
    for inner in _live_nodes(node) if live else ast.walk(node):
        if isinstance(inner, ast.Name):
            names.add(inner.id)
        elif isinstance(inner, ast.Attribute):
            names.add(inner.attr)
        elif isinstance(inner, ast.alias) and imports:
            names.update(filter(None, (inner.name, inner.asname)))
        elif isinstance(inner, ast.Constant) and isinstance(inner.value, str):
            names.add(inner.value)
    return frozenset(names)


# Names through which code can call a function no static name in it gives (`eval("main()")`,
# `globals()[name]()`, `getattr(sys.modules[__name__], name)()`): code that uses one may reach
# anything. As names (the builtins, or imported: `from importlib import import_module`); of
# attributes only those that reach a module's names, since `torch.compile(model)` or
# `model.modules()` call nothing by name, and taking them so let every edit of a train.py that
# compiles its model leave its result call in a function nothing calls.
_DYNAMIC_NAMES = frozenset(
    {"eval", "exec", "compile", "globals", "locals", "vars", "getattr", "__import__", "modules"}
    | {"import_module", "run_path", "run_module"}
)
_DYNAMIC_ATTRIBUTES = frozenset({"__dict__", "import_module", "run_path", "run_module"})


@functools.lru_cache(maxsize=64)
def _reached_calls(source: str) -> frozenset[str]:
    """The functions of RESULT_CALLS that the code run when train.py runs as a script names
    (`_reached_code`), by the harness's name or one an import gives it (`... as save`)."""
    tree = parsed(source)
    code = _reached_code(tree)
    if any(_calls_by_computed_name(node) for node in code):  # only a static path is followed
        return frozenset(name for name in RESULT_CALLS if name in _names(source))
    reached = frozenset().union(*(_names_in(node, imports=False, live=True) for node in code))
    aliases = _result_aliases(tree)
    return frozenset(aliases[name] for name in reached if name in aliases)


def _calls_by_computed_name(node: ast.AST) -> bool:
    """Whether the code of `node` may call a function by a name it computes (`_DYNAMIC_NAMES`),
    in the branches its conditions let run, or binds `__name__`, which `_static_truth` takes for
    a script's. `getattr(x, "name")` is not: its name is a string `_names_in` counts as reached."""
    spelt: set[int] = set()  # getattr names of calls with a literal name (a call comes before its parts)
    for inner in _live_nodes(node):
        if isinstance(inner, ast.Call) and _getattr_by_literal(inner):
            spelt.add(id(inner.func))
        if isinstance(inner, ast.Name) and inner.id in _DYNAMIC_NAMES and id(inner) not in spelt:
            return True
        if _binds_script_name(inner):
            return True
        if isinstance(inner, ast.Attribute) and (
            inner.attr in _DYNAMIC_ATTRIBUTES
            or (inner.attr == "modules" and isinstance(inner.value, ast.Name) and inner.value.id == "sys")
        ):
            return True
    return False


def _getattr_by_literal(node: ast.Call) -> bool:
    """Whether `node` is `getattr(x, "name")` (or with a default): a name written out, not computed."""
    return (
        isinstance(node.func, ast.Name)
        and node.func.id == "getattr"
        and len(node.args) in (2, 3)
        and not node.keywords
        and isinstance(node.args[1], ast.Constant)
        and isinstance(node.args[1].value, str)
    )


def _binds_script_name(node: ast.AST) -> bool:
    """Whether `node` gives `__name__` a value of its own (`__name__ = "x"`, `global __name__`,
    a parameter, an import, an `except ... as`, a def or a match capture named so)."""
    if isinstance(node, ast.Name):
        return node.id == "__name__" and not isinstance(node.ctx, ast.Load)
    if isinstance(node, ast.Global | ast.Nonlocal):
        return "__name__" in node.names
    if isinstance(node, ast.arg):
        return node.arg == "__name__"
    if isinstance(node, ast.ExceptHandler | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return node.name == "__name__"
    if isinstance(node, ast.MatchAs | ast.MatchStar):
        return node.name == "__name__"
    return isinstance(node, ast.alias) and node.asname == "__name__"


def _result_aliases(tree: ast.Module) -> dict[str, str]:
    """The local names of RESULT_CALLS: their own, and each `import ... as` name."""
    aliases = {name: name for name in RESULT_CALLS}
    for node in ast.walk(tree):
        if isinstance(node, ast.alias) and node.name in RESULT_CALLS and node.asname:
            aliases[node.asname] = node.name
    return aliases


def _reached_code(tree: ast.Module) -> list[ast.AST]:
    """The code run when train.py runs as a script: its module-level statements and, reached
    from them directly or through each other, the module-level functions they name (`_names_in`,
    imports left out). Kept simple and on the safe side: a function named anywhere there counts
    as called (a callback, `atexit.register(main)`), a decorated function and a class's whole body
    count as run, and every condition but a constant or `__name__` compared with a string
    (`_live_nodes`) as taking both branches. Only such static module-level paths are followed; a call by
    a computed name is `_reached_calls`' to let pass."""
    functions = _plain_functions(tree)
    todo: list[ast.AST] = [node for node in tree.body if functions.get(getattr(node, "name", "")) is not node]
    todo += [function.args for function in functions.values()]  # defaults are evaluated at the def
    reached: list[ast.AST] = []
    called: set[str] = set()
    while todo:
        reached.append(node := todo.pop())
        for name in _names_in(node, imports=False, live=True) & functions.keys() - called:
            called.add(name)
            todo.append(functions[name])
    return reached


def _live_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """`ast.walk` of `node` that leaves out the branch of an `if` (statement or expression) its
    condition never takes when train.py runs as a script (`_static_truth`), at module level or in
    a function: an edit to `if __name__ == "__foo__": main()`, or `if False:` over main()'s result
    call, ran nothing of it and ended with no result. Any other condition (`if DEBUG:`, a knob a
    run may set either way) counts both branches as run."""
    todo = [node]
    while todo:
        inner = todo.pop()
        yield inner
        truth = _static_truth(inner.test) if isinstance(inner, ast.If | ast.IfExp) else None
        if truth is None:
            todo.extend(ast.iter_child_nodes(inner))
        else:
            assert isinstance(inner, ast.If | ast.IfExp)
            branch = inner.body if truth else inner.orelse
            todo += [inner.test, *(branch if isinstance(branch, list) else [branch])]


def _static_truth(test: ast.expr) -> bool | None:
    """The value of a condition known without running it, or None: a constant (`if False:`,
    `if 0:`), `__name__` compared with a string (a script's is "__main__"), and `not` of either.
    (Code that binds `__name__` itself is taken as one that may call anything,
    `_binds_script_name`.)"""
    if isinstance(test, ast.Constant):
        return bool(test.value)
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        inner = _static_truth(test.operand)
        return None if inner is None else not inner
    if not (
        isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq | ast.NotEq)
    ):
        return None
    sides = [test.left, test.comparators[0]]
    names = [s for s in sides if isinstance(s, ast.Name) and s.id == "__name__"]
    texts = [s.value for s in sides if isinstance(s, ast.Constant) and isinstance(s.value, str)]
    if len(names) != 1 or len(texts) != 1:
        return None
    return (texts[0] == "__main__") == isinstance(test.ops[0], ast.Eq)


def _plain_functions(tree: ast.Module) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    """train.py's module-level functions that run only when called: undecorated, by name (the
    last definition of a name is the one called; an earlier one is taken as run)."""
    return {
        node.name: node
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not node.decorator_list
    }


def _holder(source: str, name: str) -> str:
    """The module-level function of `source` whose body names RESULT_CALLS' `name`, or '' (a
    call at module level, or in a method or a decorated function, which count as run)."""
    tree = parsed(source)
    local = {alias for alias, call in _result_aliases(tree).items() if call == name}
    functions = _plain_functions(tree).values()
    return next((f.name for f in functions if local & _names_in(f, imports=False)), "")


def _reached_functions(source: str) -> set[str]:
    """The names of train.py's module-level functions its run as a script calls (`_reached_code`)."""
    return {getattr(node, "name", "") for node in _reached_code(parsed(source))} - {""}


def build_source(frontier_source: str, edits: list[Edit], knobs: dict[str, Any]) -> str:
    """Frontier + edits + knob values, checked; raises InvalidCandidate with the reason."""
    source = apply_edits(frontier_source, edits)
    check_source(source)
    if edits and (why := result_problem(frontier_source, source)):
        raise InvalidCandidate(why)
    existing = read_knobs(source)
    missing = sorted(k for k in knobs if k not in existing)
    if missing:
        raise InvalidCandidate(f"unknown knob(s) {', '.join(missing)}: not UPPER_CASE constants of train.py")
    try:
        built = set_knobs(source, as_written(knobs, constant_types(source)))
    except KnobError as err:
        raise InvalidCandidate(str(err)) from err
    # (one that gives back the frontier is the launcher's to skip: "no change")
    if edits and built != frontier_source and overwritten_edits(frontier_source, source, knobs):
        raise InvalidOnAnyFrontier(OVERWRITTEN_EDITS)
    source = built
    # Not checked again: set_knobs puts Python literals where values were, which can neither break
    # the syntax nor write to the harness, and re-parsing every new source cost the controller a
    # third of its time at 1,600 GPUs. Only a long literal can make it too large.
    if too_long := length_problem(source, "train.py with these knob values"):
        raise InvalidCandidate(too_long)
    return source


OVERWRITTEN_EDITS = (
    "its edits leave train.py the frontier's but for what its knobs set, so its run would be its "
    "knob values alone judged as a change: drop the edits, or make them change something"
)


def overwritten_edits(frontier_source: str, source: str, knobs: Iterable[str]) -> bool:
    """Whether `source` (the frontier's with some edits) differs from the frontier's train.py only
    in the values of constants that `knobs` set (`LR = 0.03` under LR=0.02, a grid's shared
    edit of a factor, edits that undo each other): every run of it is the same as one of the knobs
    alone, judged as a change its edits never made, and a run the sampler does not learn from
    (only a run with no edits is knob-only). One rule for the wave (`check_wave`) and the engine
    (`build_source`), whoever proposed the candidate."""
    names = list(knobs)
    values = read_knobs(frontier_source) if frontier_source and names else {}
    if not names or any(name not in values for name in names):
        return False
    settings = {name: values[name] for name in names}  # any value will do: both get the same
    try:
        ours, theirs = (
            set_knobs(s, as_written(settings, constant_types(s))) for s in (source, frontier_source)
        )
    except (KnobError, SyntaxError):
        return False
    return ours == theirs


def create_workspace(path: Path, frontier_source: str, source: str, harness: Path) -> Workspace:
    """Write the experiment folder: train.py, a fresh copy of the harness, and the diff. Whatever
    the folder held is removed first: a trial is launched once, so it is an earlier campaign's of
    the same name (removed to start over, its runner ending late), or the start of this launch by a
    controller killed before it recorded it; an outcome.json left there was read as this run's."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    (path / EDITABLE_FILE).write_text(source)
    shutil.copyfile(harness, path / HARNESS_FILE)
    diff = "".join(
        difflib.unified_diff(
            frontier_source.splitlines(keepends=True),
            source.splitlines(keepends=True),
            fromfile="frontier/train.py",
            tofile="experiment/train.py",
        )
    )
    (path / "train.diff").write_text(diff)
    return Workspace(path=path, harness_sha256=sha256_file(harness), diff=diff)
