"""Shared fixtures.

Trainer: the harness (trainer/prepare.py) imported at the cpu scale with offline data whatever the
host is, one prepared cache (offline corpus + tokenizer) per test session in a temporary folder,
and a helper that runs train.py the way the engine does: copied with prepare.py into a workspace.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from engine_helpers import release, scripted_campaign
from trainer_helpers import TRAINER_DIR

from autoresearch.campaign import Campaign


def _clean_env() -> dict[str, str]:
    """The host environment without any AUTORESEARCH_* setting, so tests never see the user's."""
    return {k: v for k, v in os.environ.items() if not k.startswith("AUTORESEARCH_")}


@pytest.fixture(autouse=True)
def _package_logger_given_back() -> Iterator[None]:
    """A test that runs the command in-process (`__main__.run`) sets the package's logger up for
    the streams pytest captured for it, closed once it ends: left so, every later record became a
    "--- Logging error ---" traceback on the stderr of whichever test was running."""
    logger = logging.getLogger("autoresearch")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    yield
    for handler in set(logger.handlers) - set(handlers):
        handler.close()
    logger.handlers[:] = handlers
    logger.setLevel(level)
    logger.propagate = propagate


def wandb_given_back() -> None:
    """W&B torn down in this process, if a test started it here: its service stopped, its runs left
    unfinished finished, and WANDB_SERVICE, which every subprocess inherits, cleared; so the next
    send, here or by a test's controller, starts a service of its own, as a user's controller does."""
    if "wandb" not in sys.modules:
        return
    import wandb

    from autoresearch.tracking import quiet_wandb

    wandb.teardown()
    quiet_wandb.cache_clear()  # (its settings went with the torn-down setup)


@pytest.fixture(autouse=True)
def _own_wandb_service() -> Iterator[None]:
    """Each test that starts W&B does so with a service of its own (`wandb_given_back`)."""
    yield
    wandb_given_back()


@pytest.fixture(scope="session")
def prepare_mod() -> Iterator[ModuleType]:
    """trainer/prepare.py imported at the cpu scale; trainer/ stays on sys.path for `import train`."""
    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if key.startswith("AUTORESEARCH_"):
                mp.delenv(key)
        mp.setenv("AUTORESEARCH_SCALE", "cpu")
        mp.syspath_prepend(str(TRAINER_DIR))
        sys.modules.pop("prepare", None)
        sys.modules.pop("train", None)
        module = importlib.import_module("prepare")
        mp.delenv("AUTORESEARCH_SCALE")
        yield module
        sys.modules.pop("prepare", None)
        sys.modules.pop("train", None)


@pytest.fixture(scope="session")
def train_mod(prepare_mod: ModuleType) -> ModuleType:
    """trainer/train.py imported (its training runs only as a script)."""
    return importlib.import_module("train")


@pytest.fixture(scope="session")
def offline_cache(prepare_mod: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder holding the offline corpus and the cpu-scale tokenizer, built once per session."""
    cache = tmp_path_factory.mktemp("autoresearch-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUTORESEARCH_CACHE", str(cache))
        prepare_mod.build_offline_corpus()
        prepare_mod.train_tokenizer("offline", prepare_mod.VOCAB_SIZE)
    return cache


@pytest.fixture
def use_offline_cache(monkeypatch: pytest.MonkeyPatch, offline_cache: Path) -> Path:
    """Point the harness at the session's prepared cache for one test."""
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(offline_cache))
    return offline_cache


@pytest.fixture
def run_trainer(
    tmp_path: Path, offline_cache: Path
) -> Callable[..., tuple[subprocess.CompletedProcess[str], Path]]:
    """Run train.py at the cpu scale from a workspace copy, from another working directory.

    Returns (completed process, result JSON path). `edit` maps old -> new text in train.py.
    """

    def run(
        budget: float = 4.0, edit: dict[str, str] | None = None, timeout: float = 120
    ) -> tuple[subprocess.CompletedProcess[str], Path]:
        workspace = tmp_path / "workspace"
        workspace.mkdir(exist_ok=True)
        shutil.copy(TRAINER_DIR / "prepare.py", workspace)
        source = (TRAINER_DIR / "train.py").read_text()
        for old, new in (edit or {}).items():
            assert old in source, f"train.py has no {old!r}"
            source = source.replace(old, new)
        (workspace / "train.py").write_text(source)
        elsewhere = tmp_path / "cwd"
        elsewhere.mkdir(exist_ok=True)
        result = tmp_path / "result.json"
        env = _clean_env() | {
            "AUTORESEARCH_SCALE": "cpu",
            "AUTORESEARCH_CACHE": str(offline_cache),
            "AUTORESEARCH_TIME_BUDGET": str(budget),
            "AUTORESEARCH_RESULT": str(result),
            "OMP_NUM_THREADS": "1",
        }
        proc = subprocess.run(
            [sys.executable, str(workspace / "train.py")],
            cwd=elsewhere,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return proc, result

    return run


@pytest.fixture
def harness_env() -> Callable[..., dict[str, str]]:
    """An environment for a subprocess that imports the harness: clean, plus the given settings."""

    def make(**settings: str) -> dict[str, str]:
        return _clean_env() | {f"AUTORESEARCH_{k.upper()}": v for k, v in settings.items()}

    return make


def slurm_cluster_problem() -> str | None:
    """Why the local Slurm cluster (slurm/local/up.sh) cannot be used, or None when it is up."""
    if shutil.which("sinfo") is None:
        return "sinfo not found (bash .ci/install-debian.sh, then make slurm-up)"

    def run(*cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=15, check=False)

    try:
        if "is UP" not in run("scontrol", "ping").stdout:  # answers at once; sinfo retries when down
            return "slurmctld is not answering (scontrol ping; make slurm-up)"
        out = run("sinfo", "-h", "-o", "%R %T")
    except subprocess.TimeoutExpired:
        return "sinfo timed out: slurmctld is not answering (make slurm-up)"
    if out.returncode != 0:
        return f"sinfo failed: {out.stderr.strip() or out.stdout.strip()} (make slurm-up)"
    states = dict(line.split(maxsplit=1) for line in out.stdout.splitlines() if " " in line)
    for part in ("h100", "h200"):
        if part not in states:
            return f"partition {part} missing from sinfo (make slurm-up)"
        if not node_state_usable(states[part]):
            return f"partition {part} node state is {states[part].strip()!r} (make slurm-up)"
    return None


def node_state_usable(state: str) -> bool:
    """Whether sinfo's long node state (%T) takes jobs. A trailing "+" is Slurm's mark of a job
    still completing on an allocated node ("allocated+"), which passes as the suite's own jobs end."""
    return state.strip().removesuffix("+") in {"idle", "mixed", "allocated", "completing", "planned"}


@pytest.fixture(scope="module")
def slurm_cluster() -> None:
    """Skip when the local Slurm cluster is not up; fail instead under CI (env CI=true)."""
    problem = slurm_cluster_problem()
    if problem is not None:
        _needed(f"local Slurm cluster is not up: {problem}")


def _needed(problem: str) -> None:
    """Skip for want of a local service; fail instead under CI (env CI=true), which installs it."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"under CI: {problem}", pytrace=False)
    pytest.skip(problem)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[dict[str, str]]:
    """A throwaway PostgreSQL server for the session, on a Unix socket in its own folder: the
    libpq settings (PGHOST, PGPORT, PGUSER) that reach it. Debian's server binaries
    (bash .ci/install-debian.sh); as root, the server runs as the `postgres` user."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found and shutil.which("initdb") is None:
        _needed("PostgreSQL server not installed (bash .ci/install-debian.sh)")
    bin_dir = found[-1].parent if found else Path(shutil.which("initdb")).parent  # type: ignore[arg-type]
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    home = Path(tempfile.mkdtemp(prefix="autoresearch-pg-"))  # not under pytest's root-only folder
    if as_user:
        shutil.chown(home, "postgres")
    data, port = home / "data", "5432"  # only names the socket: the server listens on no TCP port

    def run(*cmd: str) -> None:
        subprocess.run([*as_user, *cmd], check=True, capture_output=True, timeout=120)

    run(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust")
    options = f"-k {home} -p {port} -c listen_addresses='' -c fsync=off"
    run(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(home / "log"), "-w", "start")
    try:
        yield {"PGHOST": str(home), "PGPORT": port, "PGUSER": "postgres"}
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def open_campaign() -> Iterator[Callable[..., Campaign]]:
    """Opens scripted campaigns (study, frontier, lock: `scripted_campaign`'s arguments) for a test
    to drive by hand, and after it stops their heartbeats and lets go of their locks."""
    opened: list[Campaign] = []

    def open_(*args: Any, **kwargs: Any) -> Campaign:
        campaign = scripted_campaign(*args, **kwargs)
        opened.append(campaign)  # before open(): one that fails part-way is let go of too
        campaign.open()
        return campaign

    yield open_
    for campaign in opened:
        release(campaign)


@contextlib.contextmanager
def tmpfs_at(mount: Path, options: str = "size=1m") -> Iterator[Path]:
    """A small tmpfs mounted at `mount` (made here), unmounted after: a file system a test may
    remount read-only, or fill (`options`: nr_inodes=N, its inodes). Skips the test where this
    machine may not mount one."""
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"this machine may not mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


NOBODY = 65534  # the unprivileged user a permission test runs as: root writes through any mode


@pytest.fixture
def as_nobody() -> Iterator[tuple[Callable[[list[str]], list[str]], Path]]:
    """A command's prefix that runs it as user nobody, and a folder (removed after) that nobody
    may enter but not write: permissions, which root passes through, tested for real. Nobody keeps
    CAP_DAC_READ_SEARCH, reading and entering any folder, as this interpreter and its packages lie
    where root cloned them (under /root, mode 700 on Debian: the tests skipped there); writes are
    nobody's own, and so is access(2), which drops capabilities. Skips where this is not root,
    setpriv is missing, or nobody cannot run this interpreter even so."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run a command as an unprivileged user")
    reads = ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
    prefix = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *reads]
    tried = subprocess.run([*prefix, sys.executable, "-c", "import torch"], capture_output=True, text=True)
    if tried.returncode != 0:
        pytest.skip(f"user nobody cannot run {sys.executable}: {tried.stderr.strip()[-200:]}")
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o755)
        yield (lambda command: [*prefix, *command]), Path(folder)
