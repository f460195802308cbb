"""The campaign engine at fleet scale, on a virtual clock: does one controller keep 1 to 1,600 GPUs busy?

Runs the real `Campaign` (proposer, Optuna study on a journal file, workspaces, policy, frontier
git lineage, results.tsv) with two parts replaced: a `VirtualFleet` whose experiments end on a
virtual clock after a queue wait and the run's own minutes, and a made-up val_bpb landscape
(`Surface`) that scores each experiment's train.py. Everything else is the code a campaign runs,
so the real seconds the controller spends per experiment are measured, not modelled:

    python scripts/simulate.py --gpus 16 160 1600 --experiments 2000

Per fleet size it prints the virtual hours the experiments took, how busy the GPUs were, the
speed-up against one GPU running them back to back, the keeps (and how many of them the landscape
without its seed noise calls real improvements), the val_bpb gained as measured and as true, and
the controller's own real seconds per experiment against the budget the fleet leaves it (run
minutes / GPUs), and the study journal's appends and reads per experiment. `--set
campaign.validate_seeds=0 campaign.promote_z=0` compares another keep rule, `--seed-share 0.8`
gives 80% of the seed noise's variance to the seed alone, drawn alike by every version, and
`--shape-share 0.6` 60% to the seed and the model's shape, drawn alike by versions of one shape
(on the CPU scale a learning-rate change's runs followed its parent's seed for seed with a
correlation of +0.99, a change of shape's with +0.48 and -0.43); `--append-ms 5` and
`--read-ms 0.5` give each journal append and read the latency of a cluster's shared file system
(this machine's local disk has next to none).
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import hashlib
import heapq
import itertools
import json
import logging
import math
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optuna.storages.journal import JournalFileBackend
from optuna.storages.journal._storage import JournalOperation

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from autoresearch.campaign import Campaign  # noqa: E402
from autoresearch.config import AutoresearchConfig, campaign_dir_of, register_configs  # noqa: E402
from autoresearch.fleet.base import Finished, JobSpec, Pool  # noqa: E402
from autoresearch.knobs import read_knobs  # noqa: E402
from autoresearch.proposers.base import KnobSpec  # noqa: E402
from autoresearch.proposers.offline import OfflineProposer  # noqa: E402
from autoresearch.sampler import knob_specs  # noqa: E402
from autoresearch.study import finished  # noqa: E402

START = 1.8e9  # virtual seconds since the epoch at which each simulated campaign starts
SHAPE_KNOBS = ("ASPECT_RATIO", "DEPTH")  # the gpt2 campaign's knobs that size the model's weights
PATHS = {"train_py": "train.py", "prepare_py": "prepare.py", "program_md": "program.md"}
GPT2_CONSTANTS = {"SCALE_NAME": "gpt2", "MAX_SEQ_LEN": 2048}  # what train.py's conditional knobs read


class VirtualClock:
    """The controller's own real seconds pass as they do (a slow controller leaves GPUs idle);
    the stretches in which it only waits for experiments are skipped."""

    def __init__(self, start: float) -> None:
        self.skipped = start
        self.began = time.perf_counter()
        self.world_s = 0.0  # real seconds spent standing in for the world (`stopped`)

    def now(self) -> float:
        return self.skipped + time.perf_counter() - self.began

    def advance_to(self, t: float) -> None:
        self.skipped += max(0.0, t - self.now())

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        """Time the simulation spends standing in for the world (scoring a train.py on the made-up
        landscape) is not the controller's: it does not pass."""
        began = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - began
            self.skipped -= elapsed
            self.world_s += elapsed


def _number(value: Any) -> Any:
    """A knob's value; conditional defaults (`8 if SCALE_NAME == "gpt2" else 2`) at the gpt2 scale."""
    if isinstance(value, str):
        try:
            return eval(value, {"__builtins__": {}}, dict(GPT2_CONSTANTS))  # our own train.py text
        except Exception:
            return value
    return value


class Surface:
    """A made-up but plausible val_bpb landscape over a train.py.

    Each declared knob has a hidden optimum: a quadratic bowl (in log space for log knobs) whose
    penalty at the starting value is drawn between 0.002 and 0.02. Each other changed line of
    train.py has a fixed effect, mostly harmful (mean +0.002, sd 0.004), and 3% of them crash;
    half of them change the model's shape, as the knobs in `SHAPE_KNOBS` do. Seeds add Gaussian
    noise, a share of whose variance (`seed_share`) every train.py draws alike at a seed, and
    another (`shape_share`) every train.py of one shape: one data order and one initialisation
    are luckier than another for nearby versions (docs/BENCHMARKS.md, "Seed noise on the CPU
    scale"). Kept changes stack, as real ones roughly do.
    """

    def __init__(
        self,
        start: str,
        knobs: list[KnobSpec],
        seed: int,
        noise: float = 0.002,
        seed_share: float = 0.0,
        shape_share: float = 0.0,
    ) -> None:
        if seed_share + shape_share > 1:
            raise ValueError(
                f"the seed's and the shape's shares add up to more than 1: {seed_share + shape_share}"
            )
        self.start_lines = self._structure(start, knobs)
        self.knobs = knobs
        self.noise = noise
        self.seed_share = seed_share
        self.shape_share = shape_share
        self._shapes: dict[str, int] = {}  # train.py's hash -> `shape` (asked for each score and result)
        rng = random.Random(seed)
        start_values = {k.name: _number(v) for k, v in zip(knobs, self._values(start, knobs), strict=True)}
        self.bowls: dict[str, tuple[float, float]] = {}  # numeric knob -> (optimum, weight), in t-space
        self.choices: dict[str, dict[Any, float]] = {}
        for k in knobs:
            if k.kind == "categorical":
                self.choices[k.name] = {c: rng.uniform(0.0, 0.01) for c in k.choices}
                self.choices[k.name][start_values[k.name]] = 0.005
                continue
            low, high = self._t(k, k.low), self._t(k, k.high)  # type: ignore[arg-type]
            optimum = rng.uniform(low, high)
            distance = (self._t(k, start_values[k.name]) - optimum) / (high - low)
            self.bowls[k.name] = (optimum, rng.uniform(0.002, 0.02) / max(distance**2, 0.01))

    @staticmethod
    def _t(k: KnobSpec, x: float) -> float:
        return math.log(max(x, 1e-12)) if k.log else float(x)

    @staticmethod
    def _values(source: str, knobs: list[KnobSpec]) -> list[Any]:
        found = read_knobs(source)
        return [found.get(k.name) for k in knobs]

    @staticmethod
    def _structure(source: str, knobs: list[KnobSpec]) -> list[str]:
        """train.py without the declared knobs' assignments: what edits, not knob moves, change."""
        names = tuple(f"{k.name} =" for k in knobs)
        return [line for line in source.splitlines() if not line.startswith(names)]

    @staticmethod
    def _line_hash(line: str) -> int:
        """A changed line's fixed draw: its effect, whether it crashes, whether it changes the shape."""
        return int(hashlib.sha1(line.encode()).hexdigest()[:12], 16)

    @staticmethod
    def _line_effect(line: str) -> tuple[float, bool]:
        h = Surface._line_hash(line)
        return random.Random(h).gauss(0.002, 0.004), (h % 100) < 3

    def shape(self, source: str) -> int:
        """A made-up parameter count: equal for two train.py alike in `SHAPE_KNOBS` and in the
        changed lines that change the shape (those whose hash is even)."""
        digest = hashlib.sha1(source.encode()).hexdigest()
        if digest in self._shapes:
            return self._shapes[digest]
        found = read_knobs(source)
        lines = self._structure(source, self.knobs)
        changed = [
            line
            for line in difflib.ndiff(self.start_lines, lines)
            if line[:2] in ("+ ", "- ") and self._line_hash(line[2:]) % 2 == 0
        ]
        key = repr(([found.get(k) for k in SHAPE_KNOBS], changed))
        self._shapes[digest] = 50_000_000 + int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) % 1_000_000
        return self._shapes[digest]

    def score(self, source: str, seed: int) -> float | None:
        """val_bpb of this train.py with this seed, or None when it crashes."""
        value = self.expected(source)
        if value is None:
            return None

        def draw(key: str) -> float:
            return random.Random(hashlib.sha1(key.encode()).digest()).gauss(0.0, 1.0)

        seed_share, shape_share = self.seed_share, self.shape_share
        luck = math.sqrt(seed_share) * draw(f"seed {seed}")
        luck += math.sqrt(shape_share) * draw(f"shape {self.shape(source)} {seed}") if shape_share else 0.0
        luck += math.sqrt(1 - seed_share - shape_share) * draw(f"{source}{seed}")
        return value + self.noise * luck

    def expected(self, source: str) -> float | None:
        """The true val_bpb of this train.py (its mean over seeds), or None when it crashes."""
        value = 1.0
        for k, raw in zip(self.knobs, self._values(source, self.knobs), strict=True):
            x = _number(raw)
            if k.kind == "categorical":
                value += self.choices[k.name].get(x, 0.01)
            elif isinstance(x, int | float):
                optimum, weight = self.bowls[k.name]
                span = self._t(k, k.high) - self._t(k, k.low)  # type: ignore[arg-type]
                value += weight * ((self._t(k, x) - optimum) / span) ** 2
        lines = self._structure(source, self.knobs)
        for line in difflib.ndiff(self.start_lines, lines):
            if line[:2] in ("+ ", "- "):
                effect, crashes = self._line_effect(line)
                if crashes:
                    return None
                value += effect / 2  # a replaced line counts once as removed, once as added
        return value


@dataclass
class VirtualFleet:
    """Slots per pool; an experiment ends after a queue wait and its run time, on the virtual clock."""

    pools: dict[str, Pool]
    clock: VirtualClock
    surface: Surface
    run_s: float
    queue_wait_s: float
    lost_rate: float
    seed: int
    events: list[tuple[float, int, str, dict[str, Any]]] = field(default_factory=list)  # a heap by end time
    slot_seconds: float = 0.0  # GPU time experiments held

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.busy = dict.fromkeys(self.pools, 0)

    def free_slots(self, pool: str) -> int:
        return self.pools[pool].slots - self.busy[pool]

    def submit(self, jobs: list[JobSpec]) -> dict[int, str]:
        for job in jobs:
            seed = int(json.loads((job.exp_dir / "spec.json").read_text())["env"]["AUTORESEARCH_SEED"])
            start = (
                self.clock.now() + self.rng.expovariate(1 / self.queue_wait_s) if self.queue_wait_s else 0.0
            )
            start = max(start, self.clock.now())
            end = start + self.run_s * self.rng.uniform(0.95, 1.1)
            with self.clock.stopped():  # the landscape's time is not the controller's
                source = (job.exp_dir / "train.py").read_text()
                value, params = self.surface.score(source, seed), self.surface.shape(source)
            if self.rng.random() < self.lost_rate:
                end = start + self.rng.uniform(0, self.run_s)
                outcome = {"status": "lost", "reason": "simulated node failure"}
            elif value is None:
                end = start + 60.0
                outcome = {"status": "error", "reason": "simulated crash: exit 1"}
            else:
                metrics = {
                    "val_bpb": value,
                    "training_seconds": 300.0,
                    "peak_vram_mb": 45000.0,
                    "num_steps": 950,
                    "num_params_M": params / 1e6,
                }
                outcome = {"status": "ok", "metrics": metrics}
            outcome.update(trial=job.trial, started_at=start, ended_at=end, node="virtual")
            self.slot_seconds += end - start
            self.busy[job.pool] += 1
            heapq.heappush(self.events, (end, job.trial, job.pool, outcome))
        return {job.trial: f"virtual:{job.pool}:{job.trial}" for job in jobs}

    def reattach(self, job: JobSpec, handle: str) -> bool:
        return False

    def note_node(self, pool: str, outcome: dict[str, Any]) -> None:
        pass

    def poll(self) -> list[Finished]:
        done = []
        while self.events and self.events[0][0] <= self.clock.now():
            _, trial, pool, outcome = heapq.heappop(self.events)
            self.busy[pool] -= 1
            done.append(Finished(trial, outcome))
        return done

    def wait(self, seconds: float) -> None:
        """Nothing happens between events (the proposer runs in the loop), so time jumps to the next."""
        self.clock.advance_to(self.events[0][0] if self.events else self.clock.now() + seconds)

    def running(self) -> int:
        return len(self.events)

    def shutdown(self, cancel: bool) -> None:
        pass


def agent_setting(override: str) -> bool:
    """Whether a --set override chooses the proposer (`agent=claude`) or sets one of its settings
    (`agent.kind=claude`): the simulator always proposes offline, so it would be ignored."""
    key = override.lstrip("+~").partition("=")[0]
    return key == "agent" or key.startswith("agent.")


def compose(gpus: int, experiments: int, runs_dir: Path, extra: list[str]) -> AutoresearchConfig:
    """The gpt2 campaign on the Slurm cluster config, one GPU in eight validating; a single GPU
    screens and confirms, as the reference's sequential loop runs on one."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    register_configs()
    validate = max(1, gpus // 8)
    pools = [f"cluster.partitions.h100.slots={gpus - validate}", f"cluster.partitions.h200.slots={validate}"]
    if gpus == 1:
        pools = ["cluster.partitions.h100.slots=1", "~cluster.partitions.h200", "~cluster.tiers.validate"]
    overrides = [
        "+campaign=gpt2", "cluster=slurm", "agent=offline", "tracking=none",
        f"runs_dir={runs_dir}", f"campaign.name=sim{gpus}", *pools,
        "campaign.prepare_data=false", f"campaign.budget.max_experiments={experiments}",
        "campaign.budget.max_wall_hours=0", "campaign.budget.max_gpu_hours=0", "tracking.plot_every=100000",
        *(f"campaign.{key}={REPO / 'trainer' / name}" for key, name in PATHS.items()),  # from any folder
        *extra,
    ]  # fmt: skip
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return OmegaConf.to_object(hydra_compose("config", overrides=overrides))  # type: ignore[return-value]


@dataclass
class JournalIO:
    """The study journal's appends by operation, and its reads (an open and a stat each)."""

    appends: Counter[str] = field(default_factory=Counter)
    reads: int = 0


@contextlib.contextmanager
def journal_io(append_s: float, read_s: float) -> Iterator[JournalIO]:
    """Count the study journal's appends and reads, each given real time as a cluster's shared file
    system (NFS, Lustre) charges it: an append makes and removes a lock file, writes and fsyncs;
    a read opens the file and stats it, a round trip to the server each."""
    io = JournalIO()
    append, read = JournalFileBackend.append_logs, JournalFileBackend.read_logs

    def slow_append(self: JournalFileBackend, logs: list[dict[str, Any]]) -> None:
        io.appends[JournalOperation(logs[0]["op_code"]).name.lower()] += 1
        if append_s:
            time.sleep(append_s)  # the latency simulated, paid in the controller's real seconds
        append(self, logs)

    def slow_read(self: JournalFileBackend, log_number_from: int) -> Iterator[dict[str, Any]]:
        io.reads += 1
        if read_s:
            time.sleep(read_s)
        return read(self, log_number_from)

    JournalFileBackend.append_logs = slow_append  # type: ignore[method-assign]
    JournalFileBackend.read_logs = slow_read  # type: ignore[method-assign,assignment]
    try:
        yield io
    finally:
        JournalFileBackend.append_logs = append  # type: ignore[method-assign]
        JournalFileBackend.read_logs = read  # type: ignore[method-assign]


def simulate(gpus: int, experiments: int, args: argparse.Namespace, runs_dir: Path) -> dict[str, Any]:
    cfg = compose(gpus, experiments, runs_dir, args.set)
    campaign_dir = campaign_dir_of(cfg)
    knobs = knob_specs(cfg)
    start = Path(cfg.campaign.train_py).read_text()
    surface = Surface(start, knobs, args.seed, args.noise, args.seed_share, args.shape_share)
    clock = VirtualClock(start=START)
    pools = {
        name: Pool(name, p.slots, p.gpu_type, p.price_per_gpu_hour, p.partition)
        for name, p in cfg.cluster.partitions.items()
    }
    fleet = VirtualFleet(
        pools, clock, surface, args.run_minutes * 60, args.queue_wait, args.lost_rate, args.seed
    )
    proposer = OfflineProposer(seed=args.seed)
    campaign = Campaign(cfg, campaign_dir, fleet, proposer, clock=clock, background_proposals=False)
    with journal_io(args.append_ms / 1000, args.read_ms / 1000) as journal:
        began = time.perf_counter()
        summary = campaign.run()
        controller_s = time.perf_counter() - began - clock.world_s
    hours = (clock.now() - START) / 3600
    ran = sum(1 for t in finished(campaign.study) if "exp_dir" in t.user_attrs)
    lineage = [surface.expected(source) for source in kept_sources(campaign_dir / "frontier")]
    return {
        "gpus": gpus,
        "experiments": ran,
        "virtual_hours": hours,
        "utilisation": fleet.slot_seconds / (gpus * hours * 3600) if hours else 0.0,
        "speedup": fleet.slot_seconds / (hours * 3600) if hours else 0.0,
        "kept": summary.kept,
        "real": sum(1 for before, after in itertools.pairwise(lineage) if after < before),  # type: ignore[operator]
        "gain": -summary.compared.change if summary.compared else 0.0,  # on the seeds both ran
        "true_gain": lineage[0] - lineage[-1],  # type: ignore[operator]
        "controller_s_per_exp": controller_s / max(ran, 1),
        "allowed_s_per_exp": args.run_minutes * 60 / gpus,
        "appends_per_exp": journal.appends.total() / max(ran, 1),
        "appends_by_kind": {kind: n / max(ran, 1) for kind, n in journal.appends.most_common()},
        "reads_per_exp": journal.reads / max(ran, 1),
    }


def kept_sources(frontier: Path) -> list[str]:
    """Each train.py of the frontier's git lineage, the start first."""
    git = ["git", "-C", str(frontier)]
    commits = subprocess.run(
        [*git, "rev-list", "--reverse", "HEAD"], capture_output=True, text=True, check=True
    )
    return [
        subprocess.run([*git, "show", f"{c}:train.py"], capture_output=True, text=True, check=True).stdout
        for c in commits.stdout.split()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--gpus", type=int, nargs="+", default=[16, 160, 1600], help="fleet sizes, one campaign each"
    )
    parser.add_argument(
        "--experiments", type=int, default=0, help="per fleet size (default: 4 per GPU, at least 200)"
    )
    parser.add_argument(
        "--run-minutes", type=float, default=5.5, help="one experiment: start-up, 5 min, evaluation"
    )
    parser.add_argument("--queue-wait", type=float, default=60.0, help="mean Slurm queue wait, seconds")
    parser.add_argument("--lost-rate", type=float, default=0.01, help="share of runs lost to node failures")
    parser.add_argument("--seed", type=int, default=0, help="seeds the landscape, the fleet and the proposer")
    parser.add_argument(
        "--noise", type=float, default=0.002, help="seed-to-seed std of val_bpb (reported: 0.002)"
    )
    parser.add_argument(
        "--seed-share",
        type=float,
        default=0.0,
        help="share of the seed noise's variance that every train.py draws alike at a seed (0 to 1)",
    )
    parser.add_argument(
        "--shape-share",
        type=float,
        default=0.0,
        help="share of the seed noise's variance that train.py versions of one shape draw alike at a seed",
    )
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides, e.g. campaign.validate_seeds=0",
    )
    parser.add_argument(
        "--append-ms",
        type=float,
        default=0.0,
        help="latency added to each journal append (shared file systems)",
    )
    parser.add_argument(
        "--read-ms",
        type=float,
        default=0.0,
        help="latency added to each journal read (an open and a stat on a shared file system)",
    )
    parser.add_argument(
        "--appends-by-kind",
        action="store_true",
        help="and a line of journal appends per experiment by operation",
    )
    parser.add_argument(
        "--keep", type=Path, help="keep the campaign folders here (default: a temporary folder)"
    )
    args = parser.parse_args()
    if ignored := [kv for kv in args.set if agent_setting(kv)]:
        parser.error(
            f"{ignored[0]}: the simulator always proposes with the offline proposer; agent settings would be ignored"
        )
    logging.getLogger("autoresearch").setLevel(logging.ERROR)  # lost runs are expected here
    runs_dir = args.keep or Path(tempfile.mkdtemp(prefix="autoresearch-sim-"))
    print(f"{'GPUs':>5} {'experiments':>11} {'virtual h':>9} {'busy':>6} {'speed-up':>8} {'kept':>4} {'real':>4} "
          f"{'gain':>7} {'true gain':>9} {'controller s/exp':>16} {'allowed s/exp':>13} {'appends/exp':>11} {'reads/exp':>9}")  # fmt: skip
    try:
        for gpus in args.gpus:
            experiments = args.experiments or max(200, 4 * gpus)
            r = simulate(gpus, experiments, args, runs_dir)
            print(
                f"{r['gpus']:>5} {r['experiments']:>11} {r['virtual_hours']:>9.2f} {100 * r['utilisation']:>5.1f}% "
                f"{r['speedup']:>7.1f}x {r['kept']:>4} {r['real']:>4} {r['gain']:>7.4f} {r['true_gain']:>9.4f} "
                f"{r['controller_s_per_exp']:>16.3f} "
                f"{r['allowed_s_per_exp']:>13.3f} {r['appends_per_exp']:>11.1f} {r['reads_per_exp']:>9.1f}",
                flush=True,
            )
            if args.appends_by_kind:
                kinds = ", ".join(f"{kind} {n:.1f}" for kind, n in r["appends_by_kind"].items())
                print(f"      journal appends per experiment: {kinds}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(runs_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
