"""W&B tracking: one W&B run per finished experiment, plus a campaign run with the report.

Sent by the controller from the study and the experiment folders, never from the compute nodes:
nodes often have no network, and the agent's code there never sees a W&B key. Like results.tsv it
is derived, so nothing is lost when W&B is down: `wandb/sent.txt` in the campaign folder lists
the trials already sent, and the next controller sends the rest. The W&B calls run in a thread of
their own, so a slow or unreachable server never holds up the scheduling loop.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import queue
import re
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import optuna
from optuna.trial import FrozenTrial, TrialState

from autoresearch.config import TrackingConfig
from autoresearch.files import append_line, complete_lines
from autoresearch.results import row_status
from autoresearch.study import finished

if TYPE_CHECKING:
    import wandb

log = logging.getLogger("autoresearch")

SENT_FILE = "sent.txt"
# Each W&B project (and entity) the campaign's runs were sent to, one JSON line per move, in order:
# W&B moves no run, so a campaign whose tracking.project changed twice has runs in three places.
PLACES_FILE = "projects.txt"
CLOSE_TIMEOUT_S = 120.0
# Each point is one call of W&B's run.log (about 0.2 ms): a train.py printing every step of a
# small model would make its run's send take seconds, and the fleet's backlog grow. One line a
# second for 5 minutes is 310 points; a longer curve is thinned evenly to this many.
MAX_CURVE_POINTS = 1000
# The progress lines train.py prints; the agent may change them, so what does not parse is skipped.
STEP_LINE = re.compile(r"^step (\d+)\b.*?\bloss ([-+\w.]+)")
FIELDS = {"tok/s": re.compile(r"tok/s ([\d,.]+)"), "mfu": re.compile(r"mfu ([\d.]+)%")}
CONFIG_ATTRS = (
    "kind", "tier", "wave", "seed", "source", "parent", "gpu_type", "partition", "node",
    "description", "hypothesis", "stack_of", "validates", "retry_of",
)  # fmt: skip
SUMMARY_ATTRS = ("reason", "delta", "commit", "training_seconds", "mfu", "memory_gb", "num_steps")


class Tracker(Protocol):
    def update(self, study: optuna.Study) -> None:
        """Send the experiments that finished since the last call."""

    def close(self, report: Path | None) -> None:
        """Send what is left and the campaign's report; wait (boundedly) for it to go out."""


class NoTracker:
    def update(self, study: optuna.Study) -> None:
        pass

    def close(self, report: Path | None) -> None:
        pass


def training_curve(run_log: Path) -> list[dict[str, float]]:
    """The per-step figures train.py printed (loss, tokens/s, MFU), as far as they parse."""
    if not run_log.is_file():
        return []
    curve = []
    for line in run_log.read_text(errors="replace").splitlines():
        match = STEP_LINE.match(line)
        if not match:
            continue
        try:
            point = {"step": float(match.group(1)), "train/loss": float(match.group(2))}
        except ValueError:
            continue
        for name, pattern in FIELDS.items():
            found = pattern.search(line)
            if found:
                with contextlib.suppress(ValueError):  # "tok/s ... (warming up)": that field is skipped
                    point[f"train/{name}"] = float(found.group(1).replace(",", ""))
        curve.append(point)
    return curve


def thinned(curve: list[dict[str, float]], limit: int) -> list[dict[str, float]]:
    """At most `limit` points, spread evenly over the curve, its first and last kept (the last is
    what W&B's summary shows)."""
    if len(curve) <= limit:
        return curve
    last = len(curve) - 1
    return [curve[round(i * last / (limit - 1))] for i in range(limit)]


def run_id(campaign: str, started_at: float, suffix: str) -> str:
    """Stable across controller restarts (the study keeps started_at), distinct for a campaign of
    the same name started again from scratch."""
    slug = re.sub(r"[^a-z0-9]+", "-", campaign.lower()).strip("-")[:40] or "campaign"
    return f"{slug}-{int(started_at):x}-{suffix}"


def experiment_number(run_dir: Path) -> int | None:
    """The trial an offline run folder holds (None for the campaign's report run, or a folder
    without its data file, whose run id is not known)."""
    from autoresearch.wandb_files import run_file

    path = run_file(run_dir)
    found = re.search(r"-t(\d+)\.wandb$", path.name) if path is not None else None
    return int(found.group(1)) if found else None


def experiment_config(t: FrozenTrial) -> dict[str, Any]:
    attrs = t.user_attrs
    config: dict[str, Any] = {"trial": t.number, **{k: attrs[k] for k in CONFIG_ATTRS if k in attrs}}
    config.update(json.loads(attrs.get("knobs") or "{}"))
    config.update(t.params)
    return config


def experiment_summary(t: FrozenTrial) -> dict[str, Any]:
    attrs = t.user_attrs
    summary = {"status": row_status(t), **{k: attrs[k] for k in SUMMARY_ATTRS if attrs.get(k) is not None}}
    if t.state == TrialState.COMPLETE:
        summary["val_bpb"] = t.value
    if attrs.get("started_at") and attrs.get("ended_at"):
        summary["run_seconds"] = attrs["ended_at"] - attrs["started_at"]
    return summary


@functools.cache
def quiet_wandb() -> None:
    """W&B prints to the controller's terminal for each run it sends: a notice per file saved, and
    online a banner and links, a line or more a second at fleet scale. A run's `silent` setting
    does not reach those: they follow the settings of the process's first wandb.setup, so they
    are turned off there, once (the one line a user needs of them, where the runs are, the
    controller says itself: `where_runs_are`). Silent so, its login (`check_credentials`) no
    longer asks the server who the key's user is to say so: 5 s to a timeout offline."""
    import wandb

    wandb.setup(settings=wandb.Settings(silent=True))
    wandb.termsetup(wandb.Settings(silent=True), None)


class WandbTracker:
    """Sends each finished experiment once, in trial order, from a thread of its own."""

    def __init__(self, cfg: TrackingConfig, campaign_dir: Path, campaign: str) -> None:
        self.cfg = cfg
        self.dir = campaign_dir
        self.campaign = campaign
        self.wandb_dir = campaign_dir / "wandb"
        self.wandb_dir.mkdir(parents=True, exist_ok=True)
        self._queued = {int(n) for n in complete_lines(self.wandb_dir / SENT_FILE)}
        self._settled = False  # (`_settle_killed_sends`: at the first update, never before)
        self._started_at = 0.0
        self._work: queue.Queue[FrozenTrial | Path | None] = queue.Queue()
        self._broken = ""  # W&B refused once: say so once, send nothing more in this controller
        self._told_where = False  # where the runs are is said once, with the first run (`_init`)
        self._thread = threading.Thread(target=self._send_all, name="wandb", daemon=True)
        self._thread.start()

    def _settle_killed_sends(self) -> None:
        """A controller killed mid-send leaves its run folder torn: without its data file, or with
        a file that ends before the run's exit. `wandb sync` of the campaign's folder then fails
        for all runs, or replays the torn run as a failed one. Its trial is not listed as sent, so
        this controller sends it again: the torn folder goes, and nothing is lost. Killed once the
        run was whole (`run.finish()` returns once its file is) but before it was listed, the run
        is listed now, not written again: W&B keeps each write under a run id as a run of its own,
        from step 1, and `wandb sync` sends them all to that id. So is a torn run the user sent
        with `wandb sync` (its `.synced` mark): W&B has it, cut short, and a second write would be
        sent on top of it. Only the folders not listed as sent are read: those a killed controller
        left, and the report's, one a start. Done at the
        first update, which only a controller holding the campaign's lock makes: a start is built
        before it takes the lock, and one refused by it would tear the running controller's sends."""
        from autoresearch.wandb_files import is_synced, is_whole

        torn, synced = [], []
        for run_dir in sorted(self.wandb_dir.glob("offline-run-*")):
            number = experiment_number(run_dir)
            if number in self._queued:
                continue
            if not is_whole(run_dir):
                if not is_synced(run_dir):
                    torn.append(run_dir)
                    continue
                if number is not None:  # (a report's is written again by each start all the same)
                    synced.append(run_dir)
            if number is not None:
                self._queued.add(number)
                self._sent(number)
        if synced:
            log.warning(
                "W&B: kept %d run folder(s) left torn by a controller stopped mid-send that were sent "
                "by hand with `wandb sync` (%s): W&B holds their runs cut short, and they are not "
                "written again",
                len(synced),
                ", ".join(run_dir.name for run_dir in synced),
            )
        for run_dir in torn:
            shutil.rmtree(run_dir)
        if torn:
            log.warning(
                "W&B: removed %d run folder(s) left torn by a controller stopped mid-send (%s); "
                "their runs are written again",
                len(torn),
                ", ".join(run_dir.name for run_dir in torn),
            )

    def update(self, study: optuna.Study) -> None:
        if not self._settled:
            self._settle_killed_sends()
            self._settled = True
        self._started_at = float(study.user_attrs.get("started_at", 0.0))
        for t in sorted(finished(study), key=lambda t: t.number):
            if t.number not in self._queued and t.user_attrs.get("status") != "skip":
                self._queued.add(t.number)
                self._work.put(t)

    def close(self, report: Path | None) -> None:
        with_report = report is not None and report.is_file()
        if with_report:
            self._work.put(report)
        self._work.put(None)
        self._thread.join(CLOSE_TIMEOUT_S)
        if self._thread.is_alive():
            unsent = self._queued - {int(n) for n in complete_lines(self.wandb_dir / SENT_FILE)}
            log.warning(
                "W&B: %d experiment(s)%s not sent after %.0f s; the campaign's command run again "
                "sends them (with no budget left, it only sends and reports)",
                len(unsent),
                " and the report" if with_report else "",
                CLOSE_TIMEOUT_S,
            )

    # -- the sending thread --------------------------------------------------------------------
    def _send_all(self) -> None:
        while (item := self._work.get()) is not None:
            if self._broken:
                continue
            try:
                if isinstance(item, Path):
                    self._send_report(item)
                else:
                    self._send_experiment(item)
            except Exception as err:  # W&B's errors are many and its own; tracking must not stop a campaign
                self._broken = str(err).splitlines()[0] if str(err) else type(err).__name__
                log.warning(
                    "W&B: cannot send (%s); the campaign goes on, and its next run sends what is missing",
                    self._broken,
                )

    def _init(self, suffix: str, **kwargs: Any) -> Any:
        import wandb

        quiet_wandb()
        settings = wandb.Settings(
            console="off",  # the controller's own output is not the experiment's
            save_code=False,
            disable_git=True,
            x_disable_stats=True,  # the controller's machine is not where the experiment ran
            x_disable_meta=True,
            x_save_requirements=False,
            silent=True,
        )
        run = wandb.init(
            project=self.cfg.project,
            entity=self.cfg.entity,
            mode=self.cfg.mode,
            group=self.campaign,
            id=run_id(self.campaign, self._started_at, suffix),
            resume="allow",
            reinit="create_new",
            dir=str(self.dir),
            settings=settings,
            **kwargs,
        )
        if not self._told_where:
            self._told_where = True
            log.info("%s", where_runs_are(run.settings, self.wandb_dir, self.campaign))
            place = Place(self.cfg.project, self.cfg.entity)
            if place not in places_sent_to(self.wandb_dir)[-1:]:
                append_line(self.wandb_dir / PLACES_FILE, json.dumps(place._asdict()))
        return run

    def _send_experiment(self, t: FrozenTrial) -> None:
        """One trial's W&B run. Its records are read first: a trial whose records do not read is
        left out (and not tried again), while W&B's own errors stop sending (`_send_all`)."""
        attrs = t.user_attrs
        try:
            exp_dir = self.dir / attrs["exp_dir"] if "exp_dir" in attrs else None
            config, summary = experiment_config(t), experiment_summary(t)
            curve = training_curve(exp_dir / "run.log") if exp_dir is not None else []
            curve = thinned(curve, MAX_CURVE_POINTS)
        except Exception as err:  # a bug of ours on one trial must not end tracking for the campaign
            log.warning("W&B: trial %d left out: its records do not read (%r)", t.number, err)
            self._sent(t.number)
            return
        status = row_status(t)
        run = self._init(
            f"t{t.number:05d}",
            name=f"{t.number}: {attrs.get('description', '')}"[:120],
            job_type=attrs.get("tier", "screen"),
            tags=[status],
            config=config,
        )
        for point in curve:
            step = int(point.pop("step"))
            # Written at once: a row logged with a step is otherwise held back until the next
            # step's row or run.finish.
            run.log(point, step=step, commit=True)
        for name in ("train.diff", "run.log"):
            if exp_dir is not None and (exp_dir / name).is_file():
                run.save(str(exp_dir / name), base_path=str(exp_dir), policy="now")
        run.summary.update(summary)
        run.finish(exit_code=0 if t.state == TrialState.COMPLETE else 1)
        self._sent(t.number)

    def _sent(self, number: int) -> None:
        """Trial `number` is done with: the next controller sends it no more."""
        append_line(self.wandb_dir / SENT_FILE, str(number))

    def _send_report(self, report: Path) -> None:
        import wandb

        run = self._init("campaign", name=f"{self.campaign}: report", job_type="report")
        run.log({"report": wandb.Html(report.read_text(encoding="utf-8"))})
        run.finish()


class Place(NamedTuple):
    """A W&B project as the config names it (entity None: the login's default)."""

    project: str | None
    entity: str | None


def places_sent_to(wandb_dir: Path) -> list[Place]:
    """Where the campaign's runs were sent, in order, one entry per move (`PLACES_FILE`); empty for
    a campaign that sent nothing, or none since this list was kept. A line that is no place (an
    edit by hand) is passed over: the list only words a warning."""
    places = []
    for line in complete_lines(wandb_dir / PLACES_FILE):
        with contextlib.suppress(ValueError, TypeError):
            places.append(Place(**json.loads(line)))
    return places


def places_in_run_files(wandb_dir: Path, known: list[Place]) -> list[Place]:
    """The places the run files under `wandb_dir` name that `known` does not, in the order they
    were sent: those of runs sent before `PLACES_FILE` was kept, which it lacks. A known place's
    entity None (the login's default) is any entity: a run file names the one W&B resolved it to."""
    from autoresearch.wandb_files import run_folders, run_place

    def is_known(project: str, entity: str) -> bool:
        return any(place.project in (None, project) and place.entity in (None, entity) for place in known)

    found = (run_place(folder) for folder in run_folders(wandb_dir))
    return list(dict.fromkeys(Place(p, e or None) for p, e in filter(None, found) if not is_known(p, e)))


def where_runs_are(settings: wandb.Settings, wandb_dir: Path, campaign: str) -> str:
    """The line that replaces W&B's own banner (`quiet_wandb` turns it off): online, the project's
    link, as the banner gives it, once the server has named the entity; offline, where the files
    are and the command that sends them, as an offline run has no link."""
    if settings.mode in ("offline", "dryrun"):
        return f"W&B: offline: runs written under {wandb_dir}; send them with `wandb sync {wandb_dir}`"
    if settings.mode == "disabled":  # (WANDB_MODE=disabled)
        return "W&B: disabled (WANDB_MODE=disabled): no run is kept"
    return f"W&B: runs at {settings.project_url} (group {campaign})"


class TrackingSetupError(RuntimeError):
    """W&B cannot send from this machine as configured: refused before the campaign starts."""


def wandb_mode(cfg: TrackingConfig) -> str:
    """The mode wandb.init runs in: the config's, else WANDB_MODE, else online (W&B's default)."""
    return cfg.mode or os.environ.get("WANDB_MODE") or "online"


def check_credentials(cfg: TrackingConfig) -> None:
    """An online campaign without W&B credentials would learn so only at its first result, and
    then track nothing. So the key is looked up now (WANDB_API_KEY, ~/.netrc), before anything is
    written. It is not verified with the server: that may be down for a while, and the campaign's
    next controller sends what did not go out."""
    if cfg.kind != "wandb" or wandb_mode(cfg) != "online":
        return
    import wandb

    quiet_wandb()  # (else its login says on the terminal, at each start, where it found the key)
    try:
        found = wandb.login(verify=False, prompt=False)  # reads the key; no prompt, no server call
    except wandb.errors.Error as err:  # AuthenticationError: a malformed key
        problem = str(err).splitlines()[0]
    else:
        if found:
            return
        problem = "no API key in WANDB_API_KEY or ~/.netrc"
    raise TrackingSetupError(
        f"W&B: {problem} (tracking=wandb sends online: run `wandb login` or set WANDB_API_KEY in the "
        "controller's environment; or set tracking.mode=offline and `wandb sync` the campaign's "
        "wandb folder later; or tracking=none)"
    )


def make_tracker(cfg: TrackingConfig, campaign_dir: Path, campaign: str) -> Tracker:
    return WandbTracker(cfg, campaign_dir, campaign) if cfg.kind == "wandb" else NoTracker()
