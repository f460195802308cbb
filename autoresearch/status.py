"""`python -m autoresearch.status runs/NAME [--watch SECONDS] [--json]`: a live view of a running or
finished campaign.

Read-only: it opens the study and the campaign folder, never the controller, so it is safe to run
from a login node while the campaign runs elsewhere.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from statistics import fmean
from typing import NoReturn

import optuna
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from autoresearch.agent.usage import unanswered_note, usage_totals
from autoresearch.budget import (
    Spend,
    across_pools,
    earlier_prices,
    experiment_ran,
    hours_unit,
    hours_without_price,
    measure,
    pool_prices,
    ran_undecided,
    unpriced_said,
)
from autoresearch.cli import reader_may_stop_early, tool_name
from autoresearch.config import (
    SAVED_CONFIG,
    AutoresearchConfig,
    SavedConfigError,
    read_saved_config,
    reading_saved_config,
    with_defaults,
)
from autoresearch.eta import ends_said
from autoresearch.files import finite_number, read_json
from autoresearch.fleet.runner_pid import (
    left_its_lock,
    on_this_host,
    on_this_kernel,
    runner_alive,
    runner_record,
)
from autoresearch.folder_hints import campaigns_inside_hint, missing_folder_hint
from autoresearch.heartbeat import CONTROLLER_FILE, controller_state, known_not_running, unlaunched_note
from autoresearch.logs import waits_said
from autoresearch.open_checks import LOG_FILE
from autoresearch.results import compare, rerun_values, rows
from autoresearch.runner import PID_FILE, STARTED_FILE, ended_outcome
from autoresearch.study import StudyUnavailable, finished, load_study, reading_storage, trials

STATUS_WORDS = {  # how the head names trial statuses; any other shows as it is
    "baseline": "baseline",
    "keep": "kept",
    "discard": "discarded",
    "rerun": "re-runs",
    "crash": "crashed",
    "invalid": "invalid",
    "lost": "lost",
}
ALWAYS_SHOWN = ("keep", "discard", "crash")  # even at 0
# A reason's length in the latest table: a decision's (about 75) shows whole, a crash's last line is cut.
REASON_CHARS = 90
DESCRIPTION = "a live view of a running or finished campaign"  # (usage names the command as run)


# What a campaign's first start writes before its config.yaml: a folder with none of them never ran one.
CAMPAIGN_FILES = (LOG_FILE, CONTROLLER_FILE)


@contextlib.contextmanager
def reading_campaign(campaign_dir: Path) -> Iterator[tuple[optuna.Study, DictConfig]]:
    """The campaign's study and saved config, for reading while in the context. A folder that
    holds none, a config.yaml that does not read, and a storage that fails while it is read (a
    journal line damaged under `--watch`, a database gone for longer than the campaign's
    `storage_retry_seconds`) are a one-line refusal (exit 2, as the campaign command's); a
    database's wait is said on stderr as it begins and ends."""
    if not campaign_dir.is_dir():
        what = "not a folder" if campaign_dir.exists() else "no such folder"
        refuse(f"{what}: {campaign_dir}{missing_folder_hint(campaign_dir)}")
    if not (saved := campaign_dir / SAVED_CONFIG).is_file():
        if any((campaign_dir / "experiments").glob("[0-9]*")):  # it ran: config.yaml was deleted since
            what = "not a file: remove it, and" if saved.exists() else "gone:"
            refuse(
                f"{campaign_dir} ran experiments, but its config.yaml, which says where its study is, is "
                f"{what} the campaign's command writes it anew as it resumes the campaign (study and results kept)"
            )
        if (controller := controller_state(campaign_dir)) is not None:  # config.yaml comes once set up
            running = "is still" if controller.startswith("running") else "may still be"  # (or unreadable)
            how = "did not get past" if known_not_running(controller) else running
            refuse(
                f"{campaign_dir}: its first start {how} setting up (the data, the study); controller {controller}"
            )
        refuse(f"not a campaign folder (no config.yaml): {campaign_dir}{campaigns_inside_hint(campaign_dir)}")
    try:
        config = read_saved_config(saved)
        retry = OmegaConf.select(
            config, "storage_retry_seconds", default=AutoresearchConfig.storage_retry_seconds
        )
        with reading_saved_config(saved), reading_storage(config.storage, campaign_dir), waits_said():
            yield load_study(campaign_dir, config.campaign.name, config.storage, float(retry)), config
    except (SavedConfigError, StudyUnavailable) as err:
        if isinstance(err, SavedConfigError) and not any((campaign_dir / f).exists() for f in CAMPAIGN_FILES):
            # (a Hydra config folder holds a config.yaml too: its repair, "remove it", is not for it)
            refuse(
                f"not a campaign folder (its config.yaml is no campaign's, and no campaign ran there): "
                f"{campaign_dir}{campaigns_inside_hint(campaign_dir)}"
            )
        refuse(str(err))


@contextlib.contextmanager
def reads_allowed() -> Iterator[None]:
    """A file of the campaign folder this user may not read (a colleague's campaign, a file made
    private by hand), or a folder where the campaign keeps a file (a file where it keeps a folder),
    in the context: refused in one line that names it, not a traceback."""
    try:
        yield
    except (PermissionError, IsADirectoryError, NotADirectoryError) as err:
        what = err.filename or "a file of the campaign folder"  # (a library's refusal may name none)
        repair = {
            PermissionError: "run this as a user who may read the whole campaign folder",
            IsADirectoryError: "a folder stands where the campaign keeps a file",
            NotADirectoryError: "a file stands where the campaign keeps a folder on that path",
        }[type(err)]
        if not isinstance(err, PermissionError):
            repair += ": move it aside and put back the campaign's own"
        refuse(f"cannot read {what} ({err.strerror}): {repair}")


def refuse(reason: str) -> NoReturn:
    print(f"error: {reason}", file=sys.stderr)
    sys.exit(2)


def experiment_counts(counts: Counter[str]) -> str:
    """Finished trials by status, in words that add up. Skipped ones (repeats, re-runs no longer
    needed) never ran: they are counted apart, as report.html leaves them out."""
    ran = sum(n for status, n in counts.items() if status != "skip")
    words = [f"{counts[s]} {word}" for s, word in STATUS_WORDS.items() if counts[s] or s in ALWAYS_SHOWN]
    words += [f"{n} {s}" for s, n in sorted(counts.items()) if s not in STATUS_WORDS and s != "skip"]
    skipped = f", {counts['skip']} skipped (never ran)" if counts["skip"] else ""
    return f"{ran} finished ({', '.join(words)}){skipped}"


def _rerun_means(by_tier: dict[str, list[float]]) -> str:
    """A kept change's re-runs in one cell; the tier named where there are several (other GPUs)."""
    named = len(by_tier) > 1
    means = [
        f"{fmean(v):.6f} (mean of {len(v)}{f' on {tier}' if named else ''})" for tier, v in by_tier.items()
    ]
    return "; ".join(means) or "-"


# Ran, its decision waiting: for other runs, or for a controller to collect its result (the live
# one's next look, or none: the controller is gone).
AWAITING_RERUNS = "awaiting re-runs"  # a promoted change: its re-runs decide it
AWAITING_COMPARISON = "awaiting comparison"  # for the runs it is compared with (a baseline, the frontier's)
BEING_COLLECTED = "ended, being collected"  # its outcome.json, which the live controller reads next
NOT_COLLECTED = "ended, not collected"  # its outcome.json, with no controller running to read it
AWAITING = (AWAITING_RERUNS, AWAITING_COMPARISON, BEING_COLLECTED, NOT_COLLECTED)  # (counted together)


RUNNER_GONE = "runner gone"  # a local run whose runner died with its controller: it never ends
# A local run whose controller is not running, where this host cannot see whether its runner lives:
# the runner ran on another host, or /proc does not show its process (hidepid, another user's).
RUNNER_UNSEEN = "runner unknown from this host"


def launch_state(
    trial: FrozenTrial, campaign_dir: Path, collecting: bool = False, stopped_on: str | None = None
) -> tuple[str, float | None]:
    """A launched trial: "pending" until its runner starts on a node (a Slurm job can wait in the
    queue, or never start: a request no node can meet), then "running"; once its run ended, the
    runs its decision waits for: its re-runs (promoted), or those it is compared with (a baseline,
    the frontier's run at its seed); and since when. A promoted change counted as running for
    as long as its re-runs took. A run whose runner ended (its outcome.json) with no controller
    to collect its result (killed meanwhile) showed running for ever: it is said not collected,
    and being collected while `collecting` (a live controller collects it at its next look); so
    did one whose runner died too, which is looked for where its controller stopped (`stopped_on`,
    its host: `local_runner_state`)."""
    if (ended := trial.user_attrs.get("ended_at")) is not None:
        return AWAITING_RERUNS if trial.user_attrs.get("promoted") else AWAITING_COMPARISON, ended
    exp_dir = trial.user_attrs.get("exp_dir")
    if exp_dir and (outcome := ended_outcome(campaign_dir / exp_dir, trial.number)) is not None:
        ended = outcome.get("ended_at")
        return BEING_COLLECTED if collecting else NOT_COLLECTED, ended if finite_number(ended) else None
    started = read_json(campaign_dir / exp_dir / STARTED_FILE) if exp_dir else None
    if started is None:
        return "pending", trial.user_attrs.get("launched_at")
    since = started.get("started_at")
    state = "running"
    if stopped_on is not None and (campaign_dir / exp_dir / PID_FILE).exists():  # a local run's runner
        state = local_runner_state(campaign_dir / exp_dir, started.get("node"), stopped_on)
    return state, since if finite_number(since) else None  # (a file damaged by hand: since unknown)


def local_runner_state(exp_dir: Path, node: object, stopped_on: str) -> str:
    """Whether a local run's runner, its controller stopped, still runs: seen in /proc, on the host
    it ran on (`node`, its started.json's) and its controller did (`stopped_on`); where this host
    cannot see it, it is said unknown, not gone (a resume, on that host, reattaches a live one).
    One /proc shows here is running whatever the names say: this host's, its name changed since
    (a laptop's, with its network), as a resume here adopts it (`fleet.runner_pid.runner_elsewhere`);
    so is one it shows gone, where runner.pid names this kernel view (`fleet.runner_pid.kernel_view`),
    and one of another pid namespace of this kernel that left its lock (`fleet.runner_pid.left_its_lock`)."""
    alive = runner_alive(exp_dir)
    if alive is True:
        return "running"
    record = runner_record(exp_dir)
    if alive is False and (on_this_kernel(record) or left_its_lock(exp_dir, record)):
        return RUNNER_GONE
    if not on_this_host(stopped_on) or (node is not None and not on_this_host(node)):
        return RUNNER_UNSEEN
    return RUNNER_GONE if alive is False else RUNNER_UNSEEN


def stopped_controller_host(campaign_dir: Path, controller: str | None) -> str | None:
    """The host of the campaign's controller where it is known not to be running (its local
    runners ran there: whether they still run can be seen only there); None while it may run."""
    if not known_not_running(controller):
        return None
    return str((read_json(campaign_dir / CONTROLLER_FILE) or {}).get("host", ""))


def job_said(handle: object) -> str:
    """What runs a launched trial, as its user would name it to scancel or kill it: the Slurm job
    (`slurm:POOL:JOB`), the local runner's pid (`local:PID`), a Slurm worker's queue (`queue:POOL`:
    whichever worker takes it); "-" where the fleet gave none (not launched yet, an older version)."""
    kind, _, rest = str(handle or "").partition(":")
    if kind == "slurm":
        return rest.rpartition(":")[2]
    if kind == "local":
        return f"pid {rest}"
    return "worker queue" if kind == "queue" else "-"


def ran_said(spend: Spend, config: DictConfig | None) -> str:
    """The time the wall budget counts (its controllers' running time), against max_wall_hours
    where set. The calendar time since the first start, shown alone as "elapsed", read as a budget
    that did not hold: 26 h against a limit of 1, for a campaign stopped overnight."""
    limit = OmegaConf.select(config, "campaign.budget.max_wall_hours", default=0) if config else 0
    of_limit = f" of max_wall_hours {limit:g}" if limit else ""
    return f"{spend.wall_hours:.2f} h{of_limit}, the time its controllers ran (what the wall budget counts)"


def hours_said(study: optuna.Study, spend: Spend, prices: dict[str, float] | None) -> str:
    """The slot-hours (CPU-hours where every launched run was on CPU slots, none finished yet
    too), and what they cost as the `max_dollars` budget counts them (`prices`: none, no dollars).
    Hours launched before prices were recorded, on a pool config.yaml no longer names, have none:
    said apart, with the GPU types they ran on, as report.html does, not counted as free."""
    unit = hours_unit(str(t.user_attrs["gpu_type"]) for t in trials(study) if "gpu_type" in t.user_attrs)
    said = f"{spend.gpu_hours:.2f} {unit}"
    if prices is None:
        return said
    ran = [t for t in [*finished(study), *ran_undecided(study)] if experiment_ran(t)]
    by_type = across_pools(hours_without_price(ran, earlier_prices(study), prices))
    return said + f" (${spend.gpu_dollars:,.2f}" + (f" + {unpriced_said(by_type, unit)})" if by_type else ")")


def render(
    study: optuna.Study,
    campaign_dir: Path,
    recent: int = 12,
    now: float | None = None,
    prices: dict[str, float] | None = None,
    config: DictConfig | None = None,
) -> Group:
    """One frame, as of `now` (the clock by default); `prices` (`pool_prices`) adds the dollars
    of the hours, and `config` (config.yaml, `with_defaults`) when a running campaign will end
    (`eta`). The study is opened once: its journal storage reads only what was appended since."""
    table = rows(study)
    now = time.time() if now is None else now
    started = study.user_attrs.get("started_at", now)
    running = trials(study, TrialState.RUNNING)
    waiting = trials(study, TrialState.WAITING)
    spend = measure(study, prices or {}, campaign_dir, now)
    counts = Counter(r["status"] for r in table)
    head = Table.grid(padding=(0, 2))
    plain_row(head, "campaign", f"{study.study_name}  ({campaign_dir})")
    if (controller := controller_state(campaign_dir, now)) is not None:
        plain_row(head, "controller", controller)
    controller_live = (controller or "").startswith("running")
    plain_row(head, "ran", ran_said(spend, config) + ("" if running else "; nothing running"))
    plain_row(head, "first start", f"{(now - started) / 3600:.2f} h ago (calendar time)")
    stopped_host = stopped_controller_host(campaign_dir, controller)
    launched = {  # (a file read each)
        t.number: launch_state(t, campaign_dir, controller_live, stopped_host) for t in running
    }
    states = Counter(state for state, _ in launched.values())
    in_flight = (
        f"{states['running']} running, {states['pending']} pending on the cluster, {len(waiting)} queued"
    )
    if waiting:
        in_flight += unlaunched_note(controller)
    if awaiting := sum(states[state] for state in AWAITING):
        in_flight += f", {awaiting} ran and awaiting a decision"
    if states[RUNNER_GONE]:
        in_flight += f", {states[RUNNER_GONE]} whose runner is gone (lost: a resume runs them again)"
    if states[RUNNER_UNSEEN]:
        in_flight += f", {states[RUNNER_UNSEEN]} whose runner this host cannot see"
    plain_row(head, "experiments", f"{experiment_counts(counts)}, {in_flight}")
    calls = usage_totals(campaign_dir)
    plain_row(
        head,
        "spend",
        f"{hours_said(study, spend, prices)}, ${spend.llm_dollars:.2f} of LLM calls "
        f"({calls['calls']} calls, {calls['failed_calls']} failed{unanswered_note(calls)}, "
        f"{calls['cache_read_input_tokens']:,} "
        "tokens read from the prompt cache)",
    )
    if config is not None and controller_live:  # (a stopped one says why)
        plain_row(head, "ends", ends_said(config, study, spend))
    kept = [r for r in table if r["status"] == "keep"]
    if (compared := compare(table)) is not None:
        plain_row(
            head,
            "val_bpb",
            f"{compared.baseline:.6f} (baseline) -> {compared.frontier:.6f} ({compared.over()})",
        )

    parts: list[RenderableType] = [head]  # empty tables are left out: the head says why
    if not kept:
        plain_row(head, "kept changes", "none yet: the frontier is the starting train.py")
    else:
        lineage = Table(title="kept changes", title_justify="left")
        for col in ("trial", "val_bpb", "re-runs", "tier", "commit", "description"):
            lineage.add_column(col)
        reruns = rerun_values(table)
        for r in kept:
            confirmed = _rerun_means(reruns.get(r["trial"], {}))
            plain_row(
                lineage,
                str(r["trial"]),
                f"{r['val_bpb']:.6f}",
                confirmed,
                r["tier"],
                r["commit"],
                r["description"],
            )
        parts.append(lineage)

    if running:
        live = Table(title="running", title_justify="left")
        for col in ("trial", "partition", "job", "state", "for", "description"):
            live.add_column(col)
        for t in running:
            state, since = launched[t.number]
            age = f"{(now - since) / 60:.1f} min" if since else "-"
            plain_row(
                live,
                str(t.number),
                t.user_attrs.get("partition", ""),
                job_said(t.user_attrs.get("job")),
                state,
                age,
                t.user_attrs.get("description", ""),
            )
        parts.append(live)

    latest = Table(title=f"latest {recent}", title_justify="left")
    for col in ("trial", "status", "val_bpb", "tier", "description", "reason"):
        latest.add_column(col)
    for r in table[-recent:][::-1]:
        value = f"{r['val_bpb']:.6f}" if r["val_bpb"] else "-"  # failed trials of any kind carry 0.0
        plain_row(
            latest,
            str(r["trial"]),
            r["status"],
            value,
            r["tier"],
            r["description"],
            clipped(str(r["reason"])),
        )
    if table:
        parts.append(latest)
    return Group(*parts)


def plain_row(table: Table, *cells: str) -> None:
    """A row shown as written: rich reads [...] in a str cell as markup, and agent descriptions,
    log lines (`[rank0]: ...`) and stop reasons would lose it, or fail the whole view on a
    closing tag that opens nothing."""
    table.add_row(*(Text(cell) for cell in cells))


def clipped(reason: str, limit: int = REASON_CHARS) -> str:
    """A reason short enough for one table cell, cut visibly (a decision's fits whole)."""
    return reason if len(reason) <= limit else reason[: limit - 1] + "…"


def seconds(text: str) -> float:
    """A refresh period for argparse: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, not {text!r}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(prog=tool_name("status"), description=DESCRIPTION)
    parser.add_argument("campaign_dir", type=Path, help="runs/<campaign name>")
    parser.add_argument(
        "--watch",
        type=seconds,
        metavar="SECONDS",
        help="refresh every SECONDS until Ctrl-C (into a pipe or a file: a new view each time)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print each finished trial's row (results.tsv's columns) as a JSON line",
    )
    args = parser.parse_args()
    with reads_allowed(), reading_campaign(args.campaign_dir) as (study, config), reader_may_stop_early():
        typed = None
        with contextlib.suppress(ConfigKeyError):  # (a hand-added key with a dot: no "ends" line)
            typed = with_defaults(config)
        show(study, args.campaign_dir, args.watch, args.json, pool_prices(config), typed)


class PipedConsole(Console):
    """rich ends the program itself, with exit status 1, when the reader of its pipe leaves (`status
    --watch 5 | head -3`); the BrokenPipeError goes on instead to `reader_may_stop_early`, which ends
    it quietly with 0, as it does the --json rows."""

    def on_broken_pipe(self) -> None:
        self.quiet = True  # (nothing more to a reader that has gone)
        raise BrokenPipeError


def show(
    study: optuna.Study,
    campaign_dir: Path,
    watch: float | None,
    as_json: bool,
    prices: dict[str, float],
    config: DictConfig | None = None,
) -> None:
    if as_json:
        for row in rows(study):
            print(json.dumps(row))
        return
    console = PipedConsole()
    frame = functools.partial(render, study, campaign_dir, prices=prices, config=config)
    if not watch:
        console.print(frame())
        return
    if not console.is_terminal:  # a pipe or a file (`| tee`, a log): no screen to redraw in place
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                console.print(frame())
                console.file.flush()  # (a pipe holds what it is given until it is full)
                time.sleep(watch)
        return
    live = Live(frame(), console=console, refresh_per_second=1)
    with contextlib.suppress(KeyboardInterrupt), live:  # Ctrl-C is how a live view ends
        while True:
            time.sleep(watch)
            live.update(frame())


if __name__ == "__main__":
    main()
