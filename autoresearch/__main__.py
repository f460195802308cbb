"""`python -m autoresearch +campaign=NAME`: run (or resume) a campaign (`python -m autoresearch
status DIR` and `report DIR` run the two tools, and `check +campaign=NAME` the dry run, as the
console script does).

Hydra composes the config from conf/; the resolved config is saved in the campaign folder,
and re-running the same command continues where the last controller stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import logging
import os
import re
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
import yaml
from hydra.errors import CompactHydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    ConfigTypeError,
    InterpolationResolutionError,
    MissingMandatoryValue,
    OmegaConfBaseException,
)

from autoresearch.cli import (
    campaigns_refusal,
    flags_first,
    hydra_only_prints,
    multirun_refusal,
    output_override_refusal,
    print_check_usage,
    python_command,
    reader_may_stop_early,
    run_tool,
    takes_check_command,
    unknown_command,
    unreadable_override,
)
from autoresearch.config import AutoresearchConfig, register_configs
from autoresearch.stop_signals import ignore_stops, install_stop_handlers, stopped_by

if TYPE_CHECKING:
    from autoresearch.campaign import Campaign, Summary

register_configs()
log = logging.getLogger("autoresearch")
EXIT_STOPPED = 3  # stopped by a signal before the campaign ended: re-running resumes it
EXIT_INTERRUPTED = 130  # a second Ctrl-C (or SIGTERM) while stopping, as shells report SIGINT
EXIT_ERROR = 2  # a bad config, or a campaign that cannot start or go on (the reason is one line)
CONF_DIR = (Path(__file__).parent.parent / "conf").resolve()  # (resolved whole: conf/ may be a link)
CANNOT_ADD = (
    "Hydra cannot add a knob or a partition on the command line; add it in a campaign or "
    "cluster file of your own (--config-dir, see docs/CAMPAIGNS.md)"
)


def run(cfg: AutoresearchConfig) -> int:
    """The campaign: its start's checks, then the controller; the exit code. Stops are ignored
    once it returns (`ignore_stops`): all is written and said."""
    from autoresearch.campaign import Campaign
    from autoresearch.config import deadline_seconds
    from autoresearch.fleet.factory import build_fleet
    from autoresearch.folder_lock import lock_refusal
    from autoresearch.logs import setup_logging
    from autoresearch.open_checks import LOG_FILE, unwritable_folder_message
    from autoresearch.start_checks import StartRefused, start_checks
    from autoresearch.tracking import make_tracker

    setup_logging()  # before the checks: their warnings are held for controller.log
    try:
        ready = start_checks(cfg)
    except StartRefused as err:
        print(err.said(), file=sys.stderr)
        return EXIT_ERROR
    campaign_dir, proposer = ready.campaign_dir, ready.proposer
    if refused := lock_refusal(campaign_dir):  # a controller runs it: build nothing beside it
        log.error("%s", refused)  # (as the lock's own refusal says it, which a start racing one meets)
        return EXIT_ERROR
    log_file = campaign_dir / LOG_FILE  # written from once the campaign holds its folder
    try:  # (a runs_dir that is a file, read-only, or on a mount that is gone)
        campaign_dir.mkdir(parents=True, exist_ok=True)
        with open(log_file, "a"):
            pass
    except OSError as err:
        print(f"error: {unwritable_folder_message(campaign_dir, err)}", file=sys.stderr)
        return EXIT_ERROR
    fleet = build_fleet(ready.fleet, deadline_seconds(cfg), str(campaign_dir))
    tracker = make_tracker(cfg.tracking, campaign_dir, cfg.campaign.name)
    campaign = Campaign(cfg, campaign_dir, fleet, proposer, tracker=tracker, log_file=log_file)

    def request_stop(signum: int, _frame: object) -> None:
        if campaign.stop_requested:
            campaign.leave_now()  # (a second: KeyboardInterrupt, at once or once its files are whole)
            return
        campaign.stopped_by = stopped_by(signum)
        campaign.stop_requested = True
        log.warning("stopping: no new experiments; running ones stay and a re-run re-attaches to them")

    install_stop_handlers(request_stop)
    pools = ", ".join(f"{p.name}: {p.slots} x {p.gpu_type}" for p in fleet.pools.values())
    log.info(
        "campaign %s in %s; proposer %s; slots %s", cfg.campaign.name, campaign_dir, proposer.name, pools
    )
    try:
        code = run_campaign(campaign)
        ignore_stops()  # (in the try: a second signal just before it is still a second stop)
    except KeyboardInterrupt:  # a second signal while stopping: leave now, state is in the study
        ignore_stops()
        log.warning("interrupted: running experiments stay, and a re-run re-attaches to them")
        code = EXIT_INTERRUPTED
    return code


def done_line(summary: Summary) -> str:
    """The closing line: what ran, what was kept, and the start against the frontier over the seeds
    both ran (means over different seeds put a seed's luck in the difference)."""
    # (experiments left in flight by a stop go on; "0 experiments" alone read as nothing running)
    in_flight = (
        f", {summary.running} still in flight (the same command collects them)" if summary.running else ""
    )
    compared = summary.compared.said() if summary.compared is not None else "val_bpb n/a -> n/a"
    # (a scancel or a preemption counts among the experiments: unsaid, they read as measured)
    not_run = "".join(f", {n} {status}" for status, n in summary.not_run.items())
    return (
        f"done ({summary.stop_reason or 'finished'}): {summary.experiments} experiments, "
        f"{summary.kept} kept, {summary.crashed} crashed{not_run}{in_flight}; {compared}"
    )


def run_campaign(campaign: Campaign) -> int:
    """The campaign to its end or stop, then what it found; the exit code (a second stop signal
    raises KeyboardInterrupt here)."""
    from autoresearch.budget import going_on_past
    from autoresearch.campaign import CampaignError
    from autoresearch.files import WRITE_REFUSED, write_failure
    from autoresearch.frontier import FrontierError
    from autoresearch.outage import StoppedInOutage
    from autoresearch.study import StudyUnavailable

    campaign_dir = campaign.dir
    try:
        summary = campaign.run()
    except StoppedInOutage as err:  # a stop while the database was gone: a stop, in one line
        log.warning("%s", err)
        return EXIT_STOPPED
    except (CampaignError, FrontierError, StudyUnavailable) as err:
        log.error("%s", err)
        for line in campaign.headline:  # (what it spent before it could not go on)
            log.info("%s", line)
        return EXIT_ERROR
    except OSError as err:  # the campaign folder refused a write: a full disk, a read-only mount
        if err.errno not in WRITE_REFUSED:
            raise
        log.error(
            "cannot write the campaign folder %s: %s; free space there (or make it writable), then run "
            "the same command again: the study keeps what ran",
            campaign_dir,
            write_failure(err, campaign_dir),
        )
        return EXIT_ERROR
    log.info("%s", done_line(summary))
    for line in summary.kept_descriptions:
        log.info("  kept %s", line)
    for line in summary.headline:
        log.info("%s", line)
    if hint := going_on_past(summary.stop_reason, campaign.cfg.campaign.budget, sys.argv[1:]):
        log.info("%s", hint)
    if not summary.set_up:  # stopped before it was set up: no report of this run to point to
        return EXIT_STOPPED if campaign.stop_requested else 0
    log.info("report: %s (results.tsv and progress.png beside it)", campaign_dir / "report.html")
    log.info(
        "kept changes: git -C %s log -p; overview: %s -m autoresearch.status %s",
        campaign_dir / "frontier",
        python_command(),
        campaign_dir,
    )
    return EXIT_STOPPED if campaign.stop_requested else 0


def config_dirs() -> list[Path]:
    """The folders Hydra composed the config from besides conf/: a --config-dir."""
    from hydra.core.hydra_config import HydraConfig

    return [
        Path(source.path.removeprefix("file://"))
        for source in HydraConfig.get().runtime.config_sources
        if source.schema == "file" and Path(source.path.removeprefix("file://")).resolve() != CONF_DIR
    ]


def campaign_names() -> list[str]:
    """The campaigns +campaign= can name: conf/'s and those of a --config-dir."""
    folders = (CONF_DIR, *config_dirs())
    return sorted({p.stem for folder in folders for p in (folder / "campaign").glob("*.yaml")})


def shadowed_choice() -> str | None:
    """Why a file of a --config-dir that the config loads is not the one Hydra took, or None: Hydra
    looks in conf/ first, so `campaign/demo.yaml` there, edited by the user, would be passed over
    for the shipped demo without a word, and the shipped campaign run in its place. A file is
    loaded by a choice on the command line, or by a config's own `defaults:` list (a campaign file
    of the user's naming `/cluster/slurm`), so it is the defaults list Hydra composed that is read."""
    from hydra.core.hydra_config import HydraConfig

    choices = HydraConfig.get().runtime.choices
    for path, parent in loaded_configs():
        group, _, name = path.partition("/")
        if not name or not (CONF_DIR / f"{path}.yaml").is_file():
            continue
        for folder in config_dirs():
            if not (own := folder / f"{path}.yaml").is_file():
                continue
            if choices.get(group) == name:
                chosen = f"{'+' if group == 'campaign' else ''}{group}="
                return (
                    f"{own} has the name of a shipped {group} file, conf/{path}.yaml, which is the "
                    f"one {chosen}{name} takes: give yours another name ({group}/my-{name}.yaml, "
                    f"{chosen}my-{name})"
                )
            return (
                f"{own} has the name of a shipped {group} file, conf/{path}.yaml, which is the one "
                f"the defaults list of {parent} loads as {path}: give yours another name "
                f"({group}/my-{name}.yaml) and load that"
            )
    return None


def loaded_configs() -> list[tuple[str, str]]:
    """Each config file the composed config was built from (`cluster/slurm`), with the config whose
    defaults list loaded it, as Hydra's `--info defaults` lists them."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    typed = OmegaConf.to_container(hydra_cfg.overrides.task, resolve=False)  # (`${oc.env:X}` as typed)
    loader = GlobalHydra.instance().config_loader()
    defaults = loader.compute_defaults_list(
        config_name=hydra_cfg.job.config_name, overrides=typed, run_mode=RunMode.RUN
    )
    return [
        (d.config_path, d.parent or "")
        for d in defaults.defaults
        if d.config_path and not d.is_self and not d.config_path.startswith("hydra/")
    ]


def interpolation_message(err: InterpolationResolutionError) -> str:
    """A `${...}` that does not resolve (an environment variable not set, a key not there, a value
    not of its setting's type), as the setting and why: OmegaConf says it in a traceback."""
    why = (str(err).splitlines() or [type(err).__name__])[0]
    if unset := re.search(r"Environment variable '([^']*)' not found", why):
        name = unset[1]
        why = (
            f"the environment variable {name} is not set: set it, or give a default, ${{oc.env:{name},VALUE}}"
        )
    return f"{err.full_key}: {why}" if err.full_key else why


def missing_value_message(err: MissingMandatoryValue) -> str:
    """What to type instead, for the settings a config leaves to the command line."""
    key = err.full_key or "?"
    if key == "campaign":
        names = ", ".join(campaign_names())
        return f"no campaign chosen: add +campaign=NAME (one of: {names}), e.g. python -m autoresearch +campaign=demo"
    return f"{key} has no value: set it on the command line, e.g. {key}=..."


def composition_error_line(err: CompactHydraException) -> str:
    """Hydra's several-line account of a bad override as one line: what failed, why, the choices."""
    what = str(err).splitlines()[0].rstrip(".")
    if what.startswith("Could not override '") and "No match in the defaults list" in what:
        key = what.split("'")[1]  # a group with no default (campaign) is added, not overridden
        return f"{what}: add it with a +, as in +{key}=NAME"
    if given := re.match(r"Ambiguous value for argument '([^=]+)=(.*)'$", what):
        return comma_value_line(given[1], given[2])
    if isinstance(err, MissingConfigException) and err.options:
        return f"{what} (one of: {', '.join(err.options)}){campaign_path_hint(err.missing_cfg_file or '')}"
    if in_file := _file_error(err):  # a campaign or cluster file of the user's own (--config-dir)
        return in_file
    if deleted := deletion_refused(err):  # (~campaign.seed)
        return deleted
    if isinstance(err.__cause__, OmegaConfBaseException) and (wrong := wrong_type(err.__cause__)):
        return ": ".join(wrong)  # (a value of the wrong type on the command line)
    if err.__cause__ is not None:
        why = str(err.__cause__).splitlines()[0]
        if re.search(r"is not a subclass of (KnobConfig|PartitionConfig)", why):  # OmegaConf's typed maps
            why = CANNOT_ADD
        elif isinstance(err.__cause__, ConfigKeyError | ConfigAttributeError) and " not in " in why:
            why = missing_entry(err.__cause__)  # a misspelt setting, or a knob or partition not there
        return f"{what}: {why}"
    return what


def comma_value_line(key: str, value: str) -> str:
    """A value with a comma (`partition=h100,h200`, as `sbatch -p` takes several) as the quoting
    that passes it whole: Hydra reads it as a sweep, and its own advice, --multirun, is refused."""
    return (
        f"{key}={value}: Hydra reads a value with a comma as several to sweep over; to pass it as one, "
        f"quote it: \"{key}='{value}'\" (or a list, {key}=[...], where the setting takes one)"
    )


# OmegaConf's words for a value not of its setting's type: the type as a user says it, and a value of it.
WRONG_TYPES = {
    "could not be converted to Integer": ("a whole number", "10"),
    "could not be converted to Float": ("a number", "0.5"),
    "is not a valid bool": ("true or false", "true"),
}


def wrong_type(err: OmegaConfBaseException) -> tuple[str, str] | None:
    """A value not of its setting's type (`max_experiments=ten`) as the setting and what it takes,
    and an override that would do, or None for any other error: OmegaConf said 'Value 'ten' of type
    'str' could not be converted to Integer', in its own type's name."""
    why = (str(err).splitlines() or [""])[0]
    given = re.match(r"Value '(.*)' (of type|is not)", why)
    key = getattr(err, "full_key", None)
    for words, (kind, example) in WRONG_TYPES.items():
        if given and key and words in why:
            return f"{key} takes {kind}, not {given[1]!r}", f"e.g. {key}={example}"
    return None


def deletion_refused(err: CompactHydraException) -> str | None:
    """A deletion override (`~campaign.seed`, `~campaign.seed=0`) as what to do instead, or None for
    any other error: Hydra said 'CampaignConfig (DictConfig) does not support deletion', or, given
    a value, that the value is 0 and not 1, and neither says that a setting can only be set."""
    cause = err.__cause__
    if isinstance(cause, ConfigTypeError) and "does not support deletion" in str(cause) and cause.full_key:
        key = cause.full_key
        example = _set_override(key, OmegaConf.to_container(cause.parent_node, resolve=False)[cause.key])
    elif given := re.match(r"Could not delete from config\. The value of '(.+)' is (.*) and not ", str(err)):
        key, example = given[1], f"{given[1]}={given[2]}"
    else:
        return None
    return f"cannot remove {key}: a setting cannot be removed, only set, e.g. {example}"


def _set_override(key: str, value: object) -> str:
    """An override that sets `key` to its `value` (for a group of settings, one setting in it)."""
    while isinstance(value, dict) and value:
        name, value = next(iter(value.items()))
        key = f"{key}.{name}"
    said = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    return f"{key}={said}"


def campaign_path_hint(missing: str) -> str:
    """How to run a campaign file given by its path (`+campaign=my/campaign/mine.yaml`), which
    Hydra looks for as a name under campaign/; '' for any other config it could not find."""
    given = missing.removeprefix("campaign/")
    path = Path(given if given.endswith(".yaml") else f"{given}.yaml")
    if not missing.startswith("campaign/") or "/" not in given or not path.is_file():
        return ""
    folder = path.resolve().parent
    if folder.name == "campaign":
        return f": +campaign takes a name, not a path: --config-dir={folder.parent} +campaign={path.stem}"
    return (
        f": +campaign takes a name, not a path: move {path} into a folder named campaign/, then "
        f"--config-dir=THE_FOLDER_ABOVE_IT +campaign={path.stem}"
    )


def _file_error(err: CompactHydraException) -> str | None:
    """A config file's bad setting, found as Hydra merged the file (`In 'cluster/mysite':
    ConfigKeyError raised while composing config:`): the file, then the setting and why, from
    OmegaConf's error, which Hydra words on its next lines (and chains as the context, not the
    cause); None for any other error."""
    what = str(err).splitlines()[0]
    found = err.__context__
    if not (what.endswith("raised while composing config:") and isinstance(found, OmegaConfBaseException)):
        return None
    where = what.split(":")[0]  # In 'cluster/mysite'
    why = (str(found).splitlines() or [type(found).__name__])[0]
    if isinstance(found, ConfigKeyError | ConfigAttributeError) and " not in " in why:
        return f"{where}: {missing_entry(found)}"
    if wrong := wrong_type(found):
        return f"{where}: {wrong[0]}"
    key = getattr(found, "full_key", None)
    return f"{where}: {key}: {why}" if key else f"{where}: {why}"


def missing_entry(err: ConfigKeyError | ConfigAttributeError) -> str:
    """A setting, knob or partition the config does not have, named with the closest it does: only
    the fields of the knobs and partitions it has can be set on the command line."""
    names = [str(k) for k in err.parent_node] if err.parent_node is not None else []
    where = str(err.full_key).rpartition(".")[0]
    if where == "campaign" and (elsewhere := outside_campaign(str(err.key))):
        return elsewhere
    if where.endswith(".extra_sbatch"):  # open to any sbatch option, and empty: no name is close
        return (
            f"no {err.key!r} in {where} yet: add an sbatch option with a +, as in "
            f"+{where}.{err.key}=VALUE or +{where}={{{err.key}:VALUE}}"
        )
    # A section's setting of that very name first: a name close to it here is a guess, and a wrong
    # one (`train_py=x` is not `tracking`, `campaign.max_experiments=5` not campaign.max_retries).
    close = nested(str(err.key)) or difflib.get_close_matches(str(err.key), names, n=1)
    said = (f"no {err.key!r} in {where}" if where else f"no setting {err.key!r}") + (
        f" (did you mean {' or '.join(close)}?)" if close else f" ({', '.join(names)})"
    )
    return f"{said}; {CANNOT_ADD}" if where in ("campaign.knobs", "cluster.partitions") else said


GROUPS = ("cluster", "agent", "tracking")  # chosen by name, each from a file of its own


def nested(key: str, section: type = AutoresearchConfig, prefix: str = "") -> list[str]:
    """Each setting of that name in a section, at any depth (`budget.max_experiments=5` meant
    campaign.budget, `max_experiments=5` campaign.budget.max_experiments): the top level's own
    names gave no hint of where it is. All of them: `kind` is the cluster's, the agent's and the
    tracking's, and naming one would send a user who meant another to the wrong section."""
    found = []
    for name, inner in typing.get_type_hints(section).items():
        if dataclasses.is_dataclass(inner):
            inner_names = {f.name for f in dataclasses.fields(inner)}
            found += [f"{prefix}{name}.{key}"] if key in inner_names else []
            found += nested(key, inner, f"{prefix}{name}.")
    return found


def outside_campaign(key: str) -> str:
    """Where a setting that is not the campaign's goes (an `agent:` block in a campaign file, to
    choose the model, read as a misspelt campaign setting), or '' for a key that is none."""
    if key not in {f.name for f in dataclasses.fields(AutoresearchConfig)} - {"campaign"}:
        return ""
    said = f"{key} is not a campaign setting (a campaign file sets campaign.* only)"
    if key not in GROUPS:
        return f"{said}: give {key}=... on the command line"
    return (
        f"{said}: give {key}.SETTING=... on the command line, or choose {'an' if key[0] in 'aeiou' else 'a'} "
        f"{key} file of your own ({key}/mine.yaml beside campaign/) in the campaign file's defaults list, "
        f"as gpt2.yaml chooses its agent: - override /{key}@_global_.{key}: mine"
    )


def unknown_keys(node: DictConfig, prefix: str = "") -> list[str]:
    """Keys the schema does not have, each with the closest it does: a `+key=value` adds any key,
    and the typed config would drop a misspelt one without a word."""
    found = []
    schema = OmegaConf.get_type(node)
    if dataclasses.is_dataclass(schema):
        names = [f.name for f in dataclasses.fields(schema)]
        for key in node:
            if key not in names:
                close = difflib.get_close_matches(str(key), names, n=1)
                found.append(f"{prefix}{key}" + (f" (did you mean {close[0]}?)" if close else ""))
    for key in node:
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            found += unknown_keys(child, f"{prefix}{key}.")
    return found


def dry_run(cfg: AutoresearchConfig) -> int:
    """`autoresearch check ...`: the start's checks and the plan, writing and launching nothing."""
    from autoresearch.dry_run import plan_lines
    from autoresearch.logs import setup_logging, waits_said
    from autoresearch.start_checks import StartRefused, start_checks

    setup_logging(terminal=False)  # the checks' warnings are said in the plan
    try:
        with waits_said():  # (a database waited for: said as it begins and ends)
            lines = plan_lines(cfg, start_checks(cfg))
    except StartRefused as err:
        print(err.said(), file=sys.stderr)
        return EXIT_ERROR
    with reader_may_stop_early():
        print("\n".join(lines))
    return 0


def hydra_main(task: Callable[[AutoresearchConfig], int]) -> Callable[[], None]:
    """Hydra's entry point for `task` (a run, or the dry run): the config composed from conf/ and
    the command line, refused in one line where it has a setting the schema lacks or a value left
    to the command line unset."""

    @hydra.main(version_base="1.3", config_path="../conf", config_name="config")
    def composed(dict_cfg: DictConfig) -> None:
        if shadowed := shadowed_choice():
            print(f"error: bad config: {shadowed}", file=sys.stderr)
            sys.exit(EXIT_ERROR)
        if unknown := unknown_keys(dict_cfg):
            print(f"error: bad config: no such setting: {'; '.join(unknown)}", file=sys.stderr)
            sys.exit(EXIT_ERROR)
        try:
            cfg: AutoresearchConfig = OmegaConf.to_object(dict_cfg)  # type: ignore[assignment]
        except MissingMandatoryValue as err:
            print(f"error: {missing_value_message(err)}", file=sys.stderr)
            sys.exit(EXIT_ERROR)
        except InterpolationResolutionError as err:  # (resolved here, after every override merged)
            print(f"error: bad config: {interpolation_message(err)}", file=sys.stderr)
            sys.exit(EXIT_ERROR)
        code = task(cfg)
        if code:
            sys.exit(code)

    return composed


def main() -> None:
    """Hydra's entry point, with a bad override refused in one line and exit code 2 (Hydra itself
    prints several lines and exits 1). HYDRA_FULL_ERROR=1 keeps Hydra's full account."""
    if run_tool() or print_check_usage():
        return
    task = dry_run if takes_check_command() else run
    sys.argv[1:] = flags_first(sys.argv[1:])
    if len(sys.argv) > 1 and (why := unknown_command(sys.argv[1])):  # first: `stauts DIR` is no override
        print(f"error: {why}", file=sys.stderr)
        sys.exit(EXIT_ERROR)
    for refusal in (unreadable_override, multirun_refusal, output_override_refusal, campaigns_refusal):
        if refused := refusal(sys.argv[1:]):
            print(f"error: {refused}", file=sys.stderr)
            sys.exit(EXIT_ERROR)
    wants_full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises its errors for us to word
    try:
        with reader_may_stop_early() if hydra_only_prints() else contextlib.nullcontext():
            hydra_main(task)()
    except CompactHydraException as err:
        if wants_full_error:
            raise
        print(f"error: bad config: {composition_error_line(err)}", file=sys.stderr)
        sys.exit(EXIT_ERROR)
    except yaml.YAMLError as err:  # a config file that does not parse (Hydra lets it through)
        if wants_full_error:
            raise
        print(f"error: bad config: {yaml_error_line(err)}", file=sys.stderr)
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:  # a Ctrl-C before the controller hears stops (Hydra, imports, checks)
        again = "checks it again" if task is dry_run else "starts or resumes the campaign"
        print(f"interrupted: nothing is lost; the same command {again}", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)


def yaml_error_line(err: yaml.YAMLError) -> str:
    """A YAML file's syntax error in one line: the file, and where and why the parser stopped."""
    if not isinstance(err, yaml.MarkedYAMLError) or err.problem_mark is None:
        return f"a config file is not valid YAML: {' '.join(str(err).split())}"
    mark = err.problem_mark
    context = (
        f"{err.context} (line {err.context_mark.line + 1}): " if err.context and err.context_mark else ""
    )
    return (
        f"{mark.name} is not valid YAML: {context}{err.problem} at line {mark.line + 1}, "
        f"column {mark.column + 1}"
    )


if __name__ == "__main__":
    main()
