"""The documentation against the code, where a mechanical check pays for itself: every module has
its row in docs/ARCHITECTURE.md, every agent module its line in docs/AGENT.md, the top-level
--help names every option of the two tools it introduces, every link, path and setting the docs
name exists, and the figures they quote from the campaign files are those files'."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from engine_helpers import compose_config
from omegaconf import OmegaConf

from autoresearch.config import AutoresearchConfig, CampaignConfig

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "autoresearch"
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _module_table() -> str:
    """ARCHITECTURE.md's "Where things live": the table that names each module and its one idea."""
    text = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    return text.split("## Where things live", 1)[1].split("\n## ", 1)[0]


def test_every_module_has_a_row_in_the_architecture_table() -> None:
    rows = _module_table()
    named = {
        name for cell in re.findall(r"^\| ([^|]+) \|", rows, re.M) for name in re.findall(r"`([^`]+)`", cell)
    }
    modules = {p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    packages = {f"{p.parent.name}/" for p in PACKAGE.glob("*/__init__.py")}
    assert sorted((modules | packages) - named) == []
    assert sorted(named - modules - packages) == []  # and no row for a module that is gone


def test_every_agent_module_is_listed_in_the_agent_doc() -> None:
    text = (REPO / "docs" / "AGENT.md").read_text()
    tree = text.split("autoresearch/agent/", 1)[1].split("```", 1)[0]
    listed = set(re.findall(r"^\s+(\w+\.py)\s", tree, re.M))
    modules = {p.name for p in (PACKAGE / "agent").glob("*.py") if p.name != "__init__.py"}
    assert sorted(modules ^ listed) == []


def _help(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "autoresearch", *args, "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("tool", ["status", "report"])
def test_top_level_help_names_every_option_of_each_tool(tool: str) -> None:
    """The top-level --help's line for a tool is where a user learns what it takes."""
    options = set(re.findall(r"^\s+(--[a-z][a-z-]*)", _help(tool), re.M)) - {"--help"}
    assert options, "the tool's --help lists no option"
    line = next(line for line in _help().splitlines() if line.strip().startswith(f"autoresearch {tool} "))
    assert sorted(o for o in options if o not in line) == [], line


def _anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_between_the_docs_leads_to_a_file_and_heading() -> None:
    broken, links = [], 0
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # a web address
            links += 1
            path, _, anchor = target.partition("#")
            file = doc.parent / path if path else doc
            headings = re.findall(r"^#+ (.*)$", file.read_text(), re.M) if file.is_file() else []
            if not file.exists() or (anchor and anchor not in map(_anchor, headings)):
                broken.append(f"{doc.name}: {target}")
    assert links > 20, "the docs' links were not found"
    assert broken == []


def test_every_project_path_the_docs_name_exists() -> None:
    """`conf/campaign/gpt2.yaml`, `scripts/simulate.py` and the like, as a user would type them."""
    pattern = r"`((?:conf|scripts|slurm|trainer|autoresearch|tests|docs|\.ci)/[\w./-]*[\w/])`"
    named = {(doc.name, path) for doc in DOCS for path in re.findall(pattern, doc.read_text())}
    assert len(named) > 20, "the docs' paths were not found"
    assert sorted((doc, path) for doc, path in named if not (REPO / path).exists()) == []


def _is_setting(fields: type, path: list[str]) -> bool:
    """Whether a dotted path, such as campaign.knobs.DEPTH.high, names a setting of the schema:
    a field at each step, any key of a map (knobs, partitions)."""
    for part in path:
        if dataclasses.is_dataclass(fields):
            hints = typing.get_type_hints(fields)
            if part not in hints:
                return False
            fields = hints[part]
        elif typing.get_origin(fields) is dict:
            fields = typing.get_args(fields)[1]
        else:
            return False
    return True


STUDY_SETTERS = {
    "set_user_attr": 0,
    "set_system_attr": 0,
    "set_study_user_attr": 1,
    "set_study_system_attr": 1,
}


def _study_attrs_set(path: Path) -> set[str]:
    """The study-level attrs one module sets: `study.set_user_attr(KEY, ...)` (a receiver that is
    a study) and a storage's `set_study_user_attr(id, KEY, ...)`, KEY a string or a constant of
    the module; a storage's method passing its own `key` on (a wrapper of another) names none."""

    def module() -> object:  # (imported only where a constant names the key)
        return importlib.import_module(".".join(path.relative_to(REPO).with_suffix("").parts))

    found = set()
    for function in ast.walk(ast.parse(path.read_text())):
        if not isinstance(function, ast.FunctionDef):
            continue
        for call in ast.walk(function):
            if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)):
                continue
            method = call.func.attr
            if method not in STUDY_SETTERS or method == function.name:
                continue
            if STUDY_SETTERS[method] == 0 and "study" not in ast.unparse(call.func.value):
                continue  # (a trial's)
            key = call.args[STUDY_SETTERS[method]]
            found.add(key.value if isinstance(key, ast.Constant) else getattr(module(), ast.unparse(key)))
    return found


def test_every_study_attribute_the_code_sets_is_in_the_architecture_table() -> None:
    """A study-level attr the controller keeps is part of what a resume must find: one set in the
    code and not named under "Study attributes" was state no reader of the docs knew of."""
    text = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    table = text.split("### Study attributes", 1)[1].split("\n#", 1)[0]
    named = set(re.findall(r"^\| `([^`]+)` \|", table, re.M))
    set_in_code = set().union(*(_study_attrs_set(p) for p in sorted(PACKAGE.rglob("*.py"))))
    assert {"started_at", "pool_slots"} <= set_in_code  # (the scan finds them)
    assert sorted(set_in_code - named) == []


def test_every_setting_the_docs_name_is_in_the_config() -> None:
    """A setting renamed or removed leaves no doc telling users to set it. A name that is code
    (tracking.py, tracking.check_credentials) is its module's file or attribute instead."""
    pattern = r"(?<![\w./-])((?:campaign|cluster|agent|tracking)(?:\.\w+)+)"
    named = {(doc.name, name) for doc in DOCS for name in re.findall(pattern, doc.read_text())}
    assert len(named) > 40, "the docs' settings were not found"
    unknown = []
    for doc, name in sorted(named):
        group, attribute = name.split(".")[:2]
        if _is_setting(AutoresearchConfig, name.split(".")):
            continue
        if (PACKAGE / name).is_file() or hasattr(importlib.import_module(f"autoresearch.{group}"), attribute):
            continue
        unknown.append(f"{doc}: {name}")
    assert unknown == []


def test_the_keep_rule_table_gives_each_campaigns_values() -> None:
    """docs/CAMPAIGNS.md's table: the default, then what gpt2.yaml and demo.yaml set."""
    section = (
        (REPO / "docs" / "CAMPAIGNS.md").read_text().split("## The keep rule", 1)[1].split("\n## ", 1)[0]
    )
    rows = re.findall(r"^\| `campaign\.(\w+)` \|[^|]*\| ([^|]+) \| ([^|]+) \| ([^|]+) \|$", section, re.M)
    assert len(rows) == 5, section
    campaigns = [CampaignConfig(name="default")] + [
        compose_config(f"+campaign={name}").campaign for name in ("gpt2", "demo")
    ]
    stated = {
        (key, c.name): float(value)
        for key, *values in rows
        for c, value in zip(campaigns, values, strict=True)
    }
    assert stated == {(key, c.name): float(getattr(c, key)) for key, *_ in rows for c in campaigns}


def test_the_demo_budget_the_docs_quote_is_demo_yaml() -> None:
    budget = OmegaConf.load(REPO / "conf" / "campaign" / "demo.yaml").budget
    readme, campaigns = ((REPO / name).read_text() for name in ("README.md", "docs/CAMPAIGNS.md"))
    demo = campaigns.split("## The demo", 1)[1].split("\n## ", 1)[0]
    for text in (readme, demo):
        assert re.findall(r"It runs (\d+)\s+experiments", text) == [str(budget.max_experiments)]
    slurm_local = (REPO / "docs" / "SLURM_LOCAL.md").read_text()  # the same demo through Slurm
    for text in (demo, slurm_local):
        assert re.findall(r"`max_wall_hours: ([\d.]+)`", text) == [str(budget.max_wall_hours)]
    assert "(15 minutes)" in demo and "(15 minutes)" in slurm_local and "15-minute" in readme
    assert round(budget.max_wall_hours * 60, 6) == 15, "both docs say 15 minutes"


def test_the_sqlite_lock_wait_the_docs_quote_is_the_engines() -> None:
    """The wait for a locked SQLite file bounds how long a stop or a database's deadline may run
    over: a doc that kept the driver's old 5 s told users of a wait five times too long."""
    from autoresearch.study import SQLITE_LOCK_WAIT_S

    quoted = [
        (doc.name, float(n))
        for doc in DOCS
        for n in re.findall(r"SQLite(?:'s| waits up to)\s+(\d+(?:\.\d+)?) s\b", doc.read_text())
    ]
    assert len(quoted) >= 2, "the docs' SQLite waits were not found"
    assert [(name, n) for name, n in quoted if n != SQLITE_LOCK_WAIT_S] == []


def test_the_docs_say_the_wall_budget_counts_only_the_time_controllers_ran() -> None:
    """Since the wall budget left out time stopped, a doc still saying it ran on had users of a
    Slurm controller raise max_wall_hours for a pause that no longer costs anything."""
    from autoresearch.heartbeat import COUNTING_SINCE, RAN_BEFORE

    stale = []
    for doc in DOCS:
        text = " ".join(doc.read_text().split())
        for said in re.finditer(r"wall (?:budget|hours) runs? on while|time stopped included", text):
            if "older version" not in text[max(0, said.start() - 200) : said.start()]:
                stale.append(f"{doc.name}: {text[max(0, said.start() - 80) : said.end()]}")
    assert stale == []
    architecture = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    assert f"`{RAN_BEFORE}`" in architecture and f"`{COUNTING_SINCE}`" in architecture


def test_the_readmes_campaign_folder_table_names_every_file_the_code_writes_there() -> None:
    """The table is where a user learns what each file in runs/<name>/ is before deleting one:
    a file the code writes that it does not name (abandoned.json, sent.json) was a guess."""
    from autoresearch import config, folder_lock, heartbeat, open_checks, report, runner, study, temporaries
    from autoresearch.fleet import leftovers, lineage, slurm

    table = (REPO / "README.md").read_text().split("## The campaign folder", 1)[1].split("\n## ", 1)[0]
    names = [
        *(
            getattr(runner, n)
            for n in dir(runner)
            if n.endswith("_FILE") and isinstance(getattr(runner, n), str)
        ),
        slurm.SENT_LATE_FILE,
        leftovers.UNSEEN_FILE,
        lineage.LINEAGE_FILE,
        temporaries.SWEEP_FILE,
        heartbeat.CONTROLLER_FILE,
        folder_lock.LOCK_FILE,
        open_checks.LOG_FILE,
        config.SAVED_CONFIG,
        study.FOLDER_ID_FILE,
        report.REPORT_FILE,
    ]
    assert sorted(name for name in names if f"`{name}`" not in table) == []


def test_each_timing_the_architecture_gives_leads_to_its_command_in_benchmarks() -> None:
    """A figure without its command cannot be checked or measured again: the poll's 'about 10 ms
    with 140 processes' had none, and measured 1.6 ms."""
    architecture = " ".join((REPO / "docs" / "ARCHITECTURE.md").read_text().split())
    benchmarks = (REPO / "docs" / "BENCHMARKS.md").read_text()
    sections = dict(re.findall(r"^#+ (.*)\n((?:(?!^#).*\n)*)", benchmarks, re.M))
    timings = re.findall(r"\(about \d+(?:\.\d+)? m?s with [^)]*\)", architecture)
    assert timings, "the architecture's timings were not found"
    for timing in timings:
        title = re.search(r'docs/BENCHMARKS\.md, "([^"]+)"', timing)
        assert title, f"no section named: {timing}"
        heading = next((h for h in sections if h.startswith(title[1])), None)
        assert heading and re.search(r"^    \S", sections[heading], re.M), f"no command: {timing}"


def test_the_demos_steps_under_load_the_campaigns_doc_gives_are_benchmarks() -> None:
    """CAMPAIGNS.md quotes the steps a loaded demo's runs trained from docs/BENCHMARKS.md, where
    they were read from each run's outcome.json: a quote that drifted (55-57 for 53-57) is no one's."""
    campaigns = " ".join((REPO / "docs" / "CAMPAIGNS.md").read_text().split())
    benchmarks = " ".join((REPO / "docs" / "BENCHMARKS.md").read_text().split())
    quoted = re.findall(r"\((\d+-\d+) against the baselines' (\d+-\d+)", campaigns)
    assert quoted, "the demo's steps under load were not found"
    for changes, baselines in quoted:
        assert f"baselines trained {baselines} steps" in benchmarks
        assert f"the changes after them {changes}" in benchmarks
