"""The read-only harness: constants, data, tokenizer, dataloader and the metric.

The agent edits train.py only. Everything that decides what a result means lives here: the fixed
constants of a scale, the data and its validation split, the tokenizer, and `evaluate_bpb`, which
calls the model for logits only and computes the loss itself, so an edit to train.py cannot change
how val_bpb is measured. `write_result` stamps the result with this file's own hash. train.py runs
in this interpreter, so the harness also checks at evaluation and at write time that nothing of it
(or of the torch functions its metric uses) was changed since import: `verify_harness`. It counts
the training time too (`training_count`), and `write_result` refuses a run over its budget
(`OverBudget`): train.py keeps the budget, and an edit of train.py could train longer.

Usage: python prepare.py [--scale cpu|gpt2] [--data offline|climbmix] [--num-shards N] [--check]
"""

from __future__ import annotations

import argparse
import atexit
import base64
import bisect
import builtins
import contextlib
import copy
import email.utils
import errno
import fcntl
import filecmp
import functools
import hashlib
import http.client
import importlib
import inspect
import io
import json
import math
import os
import platform
import queue
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tiktoken
import torch
import torch.nn.functional as F
import torch.optim.optimizer as torch_optimizer  # (torch.optim deletes its attribute)


@dataclass(frozen=True)
class Scale:
    max_seq_len: int
    time_budget: float
    eval_tokens: int
    vocab_size: int
    data: str
    loader_workers: int  # processes that tokenize and pack; 0: a thread of the training process


SCALES = {
    "gpt2": Scale(
        max_seq_len=2048,
        time_budget=300.0,
        eval_tokens=40 * 524288,
        vocab_size=8192,
        data="climbmix",
        loader_workers=4,
    ),
    "cpu": Scale(
        max_seq_len=256,
        time_budget=20.0,
        eval_tokens=128 * 256,
        vocab_size=2048,
        data="offline",
        loader_workers=0,
    ),
}


# The exit status of a refusal: a setting out of range, a cached file this user may not read. The
# user must change something, and another node would refuse it the same way, so it is not
# EX_TEMPFAIL (75), which the runner takes for the node's fault and runs elsewhere; the runner
# records it as a crash, its reason the one line said.
EXIT_REFUSED = 2


def _on_command_line(flag: str) -> bool:
    """Whether this file runs as prepare.py's command, with `flag` given (the parser takes no
    abbreviations, so this is the flag as the parser reads it)."""
    return __name__ == "__main__" and any(arg == flag or arg.startswith(f"{flag}=") for arg in sys.argv[1:])


def _setting(
    name: str,
    default: Any,
    parse: Callable[[str], Any],
    valid: Callable[[Any], bool],
    what: str,
    flag: str | None = None,
) -> Any:
    """The variable `name` parsed, or `default` where it is unset or empty, or where the command's
    `flag` is given, which wins. A value that does not parse, or is not `valid`, stops the import in
    one line naming the variable and what it takes: a traceback ending in "could not convert string
    to float: 'abc'" was a run's crash reason, naming neither, and a budget of nan or -5 was taken."""
    text = os.environ.get(name) or ""
    if not text or (flag is not None and _on_command_line(flag)):
        return default
    try:
        value = parse(text)
    except ValueError:
        value = None
    if value is None or not valid(value):
        sys.stderr.write(f"error: {name} must be {what}, not {text!r}\n")
        sys.exit(EXIT_REFUSED)
    return value


SCALE_NAME = _setting(
    "AUTORESEARCH_SCALE",
    "gpt2" if torch.cuda.is_available() else "cpu",
    str,
    SCALES.__contains__,
    f"one of {', '.join(sorted(SCALES))}",
    flag="--scale",
)
_SCALE = SCALES[SCALE_NAME]
MAX_SEQ_LEN = _SCALE.max_seq_len
TIME_BUDGET = _setting(
    "AUTORESEARCH_TIME_BUDGET",
    _SCALE.time_budget,
    float,
    lambda seconds: 0 < seconds < math.inf,
    "a number of seconds above 0",
)
EVAL_TOKENS = _SCALE.eval_tokens
VOCAB_SIZE = _SCALE.vocab_size
# A scale constant, not a machine property: which documents share a row depends on it, so the
# validation rows (and every val_bpb) are the same on any machine.
LOADER_WORKERS = _SCALE.loader_workers
# torch.manual_seed's range: a seed beyond it ended train.py in an "Overflow" ValueError traceback.
SEED_RANGE = range(-(2**63), 2**64)
SEED = _setting(
    "AUTORESEARCH_SEED", 42, int, SEED_RANGE.__contains__, "a whole number from -2**63 to 2**64 - 1"
)
DATA_SOURCE = _setting(
    "AUTORESEARCH_DATA",
    _SCALE.data,
    str,
    ("offline", "climbmix").__contains__,
    "one of offline, climbmix",
    flag="--data",
)
EVAL_ROWS = EVAL_TOKENS // MAX_SEQ_LEN  # the validation rows every evaluation scores
# Validation is read in batches of this many rows whatever batch size the caller evaluates with:
# with loader workers taking turns, the rows read would otherwise depend on the caller's choice.
EVAL_READ_ROWS = 32
assert EVAL_ROWS % EVAL_READ_ROWS == 0, "EVAL_ROWS must be whole read batches"
# What the harness's count of training time allows over TIME_BUDGET (training_count).
BUDGET_OVERRUN = 0.10  # a share of TIME_BUDGET: train.py times its steps, the harness its batch requests
BUDGET_SLACK_STEPS = 12  # train.py's untimed warm-up steps (10 on a GPU) and the step that crosses it
BUDGET_SLACK_MAX = 0.5  # of TIME_BUDGET: the most those steps may add, however long train.py says they are
STALL_FACTOR = 5  # a wait for a batch over this many times the typical one is a stall, not training
# Of TIME_BUDGET: how much of the time from the first training batch to the evaluation the count
# may leave out (stalls, the work after the last batch), and how much more train.py's own clock may
# count than the harness did. Beyond it, train.py trained on batches of its own (kept, or read from
# the files itself), which no count sees.
UNCOUNTED_MAX = 0.5
# Seconds: the least of that allowed on a GPU, whatever the budget. The stalls it allows are most
# of all the first step's compilation, 40 s on an H200 with an empty cache (docs/BENCHMARKS.md);
# more than twice that, for a node whose CPU compiles slower, so that no short GPU benchmark run is
# refused for its compilation.
UNCOUNTED_MIN_GPU = 90.0


def _stop_without_a_gpu() -> None:
    """A campaign on GPUs sets AUTORESEARCH_REQUIRE_GPU=1 for its jobs. A job that sees no CUDA
    device (a CPU build of torch, a driver older than the build, a node that lost its GPU) stops
    here with EX_TEMPFAIL, which the runner records as the node's fault, instead of training on
    the CPU until the deadline. Checked once, by the process that trains: the variable is taken
    out of the environment, so its children (the CPU loader workers) do not check again."""
    if os.environ.pop("AUTORESEARCH_REQUIRE_GPU", "") != "1" or torch.cuda.is_available():
        return
    build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "unset")
    print(
        f"FAIL: this job needs a CUDA GPU and sees none on {platform.node()} "
        f"(torch {torch.__version__}, {build}; CUDA_VISIBLE_DEVICES={visible})",
        file=sys.stderr,
        flush=True,
    )
    sys.exit(os.EX_TEMPFAIL)


_stop_without_a_gpu()

SPECIAL_TOKENS = ("<|bos|>", "<|reserved_1|>", "<|reserved_2|>", "<|reserved_3|>")
BOS_TOKEN = SPECIAL_TOKENS[0]

CLIMBMIX_URL = "https://huggingface.co/datasets/karpathy/climbmix-400b-shuffle/resolve/main"
VAL_SHARD = 6542  # the last shard of climbmix, pinned as validation
DEFAULT_NUM_SHARDS = 10
DOWNLOAD_WORKERS = 8
DOWNLOAD_ATTEMPTS = 5
DOWNLOAD_BACKOFF_S = 2.0  # waits 2, 4, 8, 16 s between attempts
RETRY_AFTER_MAX_S = 300.0  # the longest a server's Retry-After is waited for before an attempt
DOWNLOAD_READ_TIMEOUT_S = 60.0  # a server silent this long mid-shard fails the attempt, which is retried
DOWNLOAD_ANSWER_TIMEOUT_S = 60.0  # the most an attempt waits for its body: DNS, connection, TLS, headers
# A server that sends a byte now and then never trips the read timeout: an attempt that has run
# DOWNLOAD_PACE_GRACE_S and averages under DOWNLOAD_MIN_RATE bytes/s fails, and is retried. Only a
# trickle is that slow: per thread, the 8 sharing the link, 8 kB/s = 64 kbit/s in all. (50 kB/s
# failed every attempt on a healthy link under 3.2 Mbit/s, a busy login node's, each from byte 0.)
DOWNLOAD_MIN_RATE = 1_000
DOWNLOAD_PACE_GRACE_S = 120.0
LOCK_POLL_S = 1.0  # how often a preparation waiting for another's lock tries it again
LOCK_WAIT_REPORT_S = 300.0  # how often it says it is still waiting
GROUP_RW = 0o060  # a lock file's mode bits beside a group-writable folder: every member can lock it
PROGRESS_EVERY_S = 5.0  # how often a download reports the bytes received so far
TOKENIZER_MAX_CHARS = 1_000_000_000  # climbmix text used to train the BPE
TOKENIZER_REPORT_CHARS = 100_000_000  # progress line every this many characters read
TOKENIZER_FILE = "tokenizer.json"  # data only (_tokenizer_json), so reading it runs no code
TOKENIZER_FORMAT = 1
OLD_TOKENIZER_FILE = "tokenizer.pkl"  # the pickle of harnesses before December 2026, never read
# How text is split before the BPE merges (GPT-4's, rustbpe's default): the BPE is trained with it,
# and a tokenizer.json holding any other is trained again. The file is data from a cache others may
# write, and a pattern of theirs (one that backtracks catastrophically) would hang every run's encode.
SPLIT_PATTERN = (
    r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*"
    r"|\s*[\r\n]|\s+(?!\S)|\s+"
)

# Dense bf16 tensor-core peaks, matched in order on torch.cuda.get_device_name (first hit wins).
PEAK_BF16_FLOPS = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989.5e12),
    ("H200 NVL", 835e12),
    ("H200", 989.5e12),  # also the GH200's GPU
    ("B200", 2250e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("RTX 4090", 165.2e12),
)

# The offline corpus: documentation shipped with CPython, so the cpu scale needs no network.
OFFLINE_MODULES = """
abc argparse ast base64 bdb bisect builtins bz2 calendar cmd code codecs codeop collections
collections.abc colorsys compileall concurrent.futures configparser contextlib copy copyreg csv
dataclasses datetime decimal difflib dis doctest email.message email.utils enum filecmp fileinput
fnmatch fractions ftplib functools getopt gettext glob graphlib gzip hashlib heapq hmac html
html.parser http.client http.cookies http.server imaplib importlib inspect io ipaddress itertools
json json.decoder json.encoder keyword linecache locale logging logging.handlers lzma mailbox math
mimetypes numbers operator optparse os pathlib pdb pickle pickletools pkgutil platform plistlib
poplib pprint profile pstats py_compile pyclbr pydoc queue quopri random re reprlib rlcompleter
runpy sched secrets selectors shelve shlex shutil signal smtplib socket socketserver sqlite3 ssl
statistics string struct subprocess symtable sys sysconfig tabnanny tarfile tempfile textwrap
threading timeit token tokenize trace traceback types typing unittest.case unittest.mock
urllib.parse urllib.request uuid warnings wave weakref xml.dom.minidom xml.etree.ElementTree
zipfile zipimport zoneinfo
"""  # whitespace-separated, in a fixed order
OFFLINE_MIN_DOC_CHARS = 64
OFFLINE_CHUNK_CHARS = 1024  # long pages are cut at blank lines into documents of about this size
OFFLINE_VAL_EVERY = 8  # a document is validation when its hash is 0 modulo this

HERE = Path(__file__).resolve().parent  # loader workers import this module from here

_last_val_bpb: float | None = None  # set by evaluate_bpb; write_result reports this figure


def log(message: str) -> None:
    """One write per line: print's separate write of the newline let the download threads'
    messages run into one another."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


_PROCESS_TAG = uuid.uuid4().hex[:12]  # with the pid, names this process's temporary files


def _temporary_name(path: Path) -> Path:
    """Where `path` is written before the rename: named for this process by its pid and a random
    tag, since on a cache shared between hosts a process of another host may have the same pid."""
    return path.with_name(f"{path.name}.{os.getpid()}-{_PROCESS_TAG}.tmp")


class CacheWriteFailed(OSError):
    """The cache refused a write (a full disk, a quota, a read-only mount): no retry mends that,
    and it is no fault of the network."""


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """OSErrors raised inside as CacheWriteFailed naming `path`, the file being written."""
    try:
        yield
    except OSError as err:
        raise CacheWriteFailed(f"{path} cannot be written ({err.strerror or err})") from None


def _write_atomic(path: Path, data: bytes) -> None:
    """Through a temporary name, so a reader never sees half a file; a failed write leaves none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(path)
    try:
        with _writing(path):
            tmp.write_bytes(data)
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _preparing(folder: Path) -> Iterator[None]:
    """Held while this process prepares `folder`: another preparation of it (array tasks of a
    campaign that does not prepare its data, a second campaign on the same cache) waits, and then
    finds the work done, rather than downloading or training it again. An flock on a file beside
    the folder, which the kernel (on NFS, the server) drops when its holder dies, so a killed
    preparation leaves no stale lock; its pid and host inside are only for the waiting line. Where
    the file system takes no flock (Lustre without `-o flock`), each does the work, as before.
    A folder that is a link is locked beside the folder it leads to as well: caches of two users
    linking one shared folder locked each their own file, and both wrote into it at once. Only
    then: a link above the folder (a home on scratch space, a `..` in the path) leads to this same
    lock file, whose second flock, on another handle, this process would wait for for ever."""
    own = folder.with_name(f"{folder.name}.lock")
    real = folder.resolve()
    with contextlib.ExitStack() as locks:
        locks.enter_context(_locked(own, folder))
        if (shared := real.with_name(f"{real.name}.lock")) != own.resolve() and _shared_lock(shared):
            locks.enter_context(_locked(shared, folder))
        yield


def _shared_lock(lock: Path) -> bool:
    """Whether this user can open `lock`: a shared folder's parent may be writable only to its
    owner, who prepared it, and then this user's own lock is all there is, as before."""
    try:
        os.close(_open_lock(lock))
    except OSError:
        return False
    return True


@contextlib.contextmanager
def _locked(lock: Path, folder: Path) -> Iterator[None]:
    """Held with the flock on `lock`, once any other preparation of `folder` holding it is done."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with _writing(lock):
        fd = _open_lock(lock)
    try:
        try:
            _wait_for_lock(fd, folder)
        except OSError as err:  # (EBADF: NFS takes an exclusive flock only for writing)
            if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.EBADF):
                raise
            log(f"{lock} takes no lock ({err.strerror}): preparing {folder} unlocked")
        with contextlib.suppress(OSError):  # (only for the waiting line)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {platform.node()}".encode(), 0)
        yield
    finally:
        os.close(fd)


def _wait_for_lock(fd: int, folder: Path) -> None:
    """Take the flock on `fd`, saying whose preparation it waits for, and again every
    LOCK_WAIT_REPORT_S: a holder that is stuck (suspended with Ctrl-Z, on a hung mount) held a
    waiting one silently for ever. Polled, not blocked on, so that it can say so; no bound, since
    a gpt2-scale download takes an hour."""
    started = time.monotonic()
    reported = 0
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace") or "a process"
        waited = time.monotonic() - started
        if not reported:
            log(f"waiting for another preparation of {folder} ({holder}) to finish")
            reported = 1
        elif waited >= reported * LOCK_WAIT_REPORT_S:
            log(
                f"still waiting for another preparation of {folder} ({holder}), {waited / 60:.0f} min so far;"
                " if it is stuck (suspended, on a hung mount), kill it and this one goes on"
            )
            reported = int(waited // LOCK_WAIT_REPORT_S) + 1
        time.sleep(LOCK_POLL_S)


def _open_lock(lock: Path) -> int:
    """The lock file opened for writing, or for reading where this user cannot write it: in a
    cache shared by a group the folders are writable to all and a lock file is its creator's, and
    a local file system takes an flock through either (NFS only through a descriptor open for
    writing: `_share_with_group` makes that the rule)."""
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except PermissionError as err:
        try:
            return os.open(lock, os.O_RDONLY)
        except OSError:  # (none there, in a folder this user cannot write: the first error says so)
            raise err from None
    _share_with_group(fd, lock.parent)
    return fd


def _share_with_group(fd: int, folder: Path) -> None:
    """Make this user's lock file writable to its group where `folder` is: created with the umask
    (0644 under the usual 022), it could be opened only for reading by the group's other users,
    and on NFS, which takes an flock only through a descriptor open for writing, their
    preparations went on unlocked, downloading into the shared folder at once. Another user's
    file is left as it is: only its owner may change its mode."""
    with contextlib.suppress(OSError):  # (a lock file whose mode cannot change locks as before)
        lock = os.fstat(fd)
        shared = os.stat(folder).st_mode & 0o020  # (S_IWGRP)
        if shared and lock.st_uid == os.geteuid() and lock.st_mode & GROUP_RW != GROUP_RW:
            os.fchmod(fd, lock.st_mode & 0o7777 | GROUP_RW)


# ---------------------------------------------------------------------------------------------
# Locations


def cache_dir() -> Path:
    return Path(os.environ.get("AUTORESEARCH_CACHE") or Path.home() / ".cache" / "autoresearch")


def data_dir(source: str = DATA_SOURCE) -> Path:
    """Offline text depends on the Python that produced it, so its folder names the version."""
    name = "climbmix" if source == "climbmix" else f"offline-py{sys.version_info[0]}{sys.version_info[1]}"
    return cache_dir() / "data" / name


def tokenizer_dir(source: str = DATA_SOURCE, vocab_size: int = VOCAB_SIZE) -> Path:
    return cache_dir() / "tokenizer" / f"{data_dir(source).name}-v{vocab_size}"


def split_files(split: str, source: str = DATA_SOURCE) -> list[Path]:
    """Parquet files of a split ('train' or 'val'), in a fixed order."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', not {split!r}")
    folder = data_dir(source)
    if source == "offline":
        files = [folder / f"{split}.parquet"]
    elif split == "val":
        files = [folder / _shard_name(VAL_SHARD)]
    else:  # the shards prepared, not every one a larger download once left in the folder
        files = [folder / _shard_name(i) for i in range(_prepared_shards(folder))]
    stats = [_stat(f) for f in files]
    if None in stats or not files:
        raise FileNotFoundError(f"no {split} data in {folder}: run `python prepare.py` first")
    damaged = [
        f"{f.name} ({problem})"
        for f, stat in zip(files, stats, strict=True)
        if (problem := _parquet_problem(f, stat))
    ]
    if damaged:
        raise RuntimeError(
            f"damaged {split} data in {folder}: {', '.join(damaged)}: run `python prepare.py` to replace it"
        )
    train_sizes = [stat.st_size for stat in stats] if split == "train" else None
    if source == "climbmix" and (copy := _training_copy_of_validation(folder, train_sizes)):
        raise RuntimeError(
            f"the validation shard {_shard_name(VAL_SHARD)} in {folder} is the same file as the training "
            f"shard {copy}, so val_bpb would score text the model trained on: delete both, "
            "and check that AUTORESEARCH_DATA_URL serves each shard under its own name"
        )
    return files


def _stat(path: Path) -> os.stat_result | None:
    """The stat of `path`; None where it is not there. One stat tells that, the size, and whether
    a footer read before is still the file's."""
    try:
        return path.stat()
    except FileNotFoundError:
        return None


def _training_copy_of_validation(folder: Path, train_sizes: list[int] | None) -> str | None:
    """The training shard that is byte for byte the validation shard, or None: a mirror serving one
    file for every name made every val_bpb a score on training text. Compares the sizes, and only
    the contents of a shard of the same size, so a run's start pays for a stat per shard, and no
    more: `train_sizes` are the training shards' where the caller took them (split_files)."""
    val = folder / _shard_name(VAL_SHARD)
    size = val.stat().st_size
    for index in range(_prepared_shards(folder)):
        train = folder / _shard_name(index)
        train_size = train_sizes[index] if train_sizes else train.stat().st_size
        if train_size == size and filecmp.cmp(train, val, shallow=False):
            return train.name
    return None


# Footers read in this process, by (path, size, mtime, inode): a run's start checks every shard at
# the loader's start and again at evaluation, and lists its row groups, and each read of a footer is a
# server round trip on NFS. A shard replaced or cut short under the run has another key: read again.
_footers: dict[tuple[str, int, int, int], pq.FileMetaData] = {}


def _footer(
    path: Path, stat: os.stat_result | None = None, handle: BinaryIO | None = None
) -> pq.FileMetaData:
    """The parquet footer of `path`, read once per process while the file stays the same; `stat`
    where the caller took it, of `handle` where it has the file open (then the footer is that
    file's, even if another replaced it since). Raises as pq.read_metadata does; a footer that
    failed is not kept."""
    stat = path.stat() if stat is None else stat
    key = (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if key not in _footers:
        _footers[key] = pq.read_metadata(path if handle is None else handle)
    return _footers[key]


def _parquet_problem(path: Path, stat: os.stat_result | None = None) -> str | None:
    """Why `path` is not a whole parquet file of documents (a string column `text`, at least one
    row), or None. Reads only the footer, which a file cut short lacks."""
    try:
        metadata = _footer(path, stat)
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        return str(err)
    schema = metadata.schema.to_arrow_schema()
    text = schema.field("text").type if "text" in schema.names else None
    if not (text is not None and (pa.types.is_string(text) or pa.types.is_large_string(text))):
        return f"no string column 'text' (columns: {', '.join(schema.names) or 'none'})"
    if metadata.num_rows == 0:
        return "no rows"
    return None


# ---------------------------------------------------------------------------------------------
# Data: climbmix download


def _shard_name(index: int) -> str:
    return f"shard_{index:05d}.parquet"


SHARDS_FILE = "train_shards.json"  # how many training shards prepare.py was last asked for
# A .tmp file untouched this long is a killed process's: the corpus and tokenizer are written in one
# go, and a download touches its shard's part as each attempt starts (_fetch) and writes each chunk as
# it comes. Between, at most an attempt that gets no byte of the body (its answer's wait, then a read's),
# and the wait before the next (Retry-After, at most its cap).
STALE_TMP_S = 600.0
assert DOWNLOAD_ANSWER_TIMEOUT_S + DOWNLOAD_READ_TIMEOUT_S + RETRY_AFTER_MAX_S < STALE_TMP_S
# A shard's part (`shard_NNNNN.parquet.<pid>-<tag>.tmp`) has its validator beside it, in a file of
# this suffix (_save_validator), so that the next download, in another process, resumes it. Named
# so no listing of shards or of .tmp files takes it for one.
PART_VALIDATOR = ".validator.json"
PART_NAME = re.compile(r"shard_(\d{5})\.parquet\.(\d+)[^.]*\.tmp")  # its shard's name, then its writer's pid
# A resumable part untouched this long is one no download came back for (a --num-shards lowered
# since): deleted at a download's start, so a cache does not keep them for ever.
PART_KEEP_S = 7 * 24 * 3600.0


def _prepared_shards(folder: Path) -> int:
    """The --num-shards of the last preparation; DEFAULT_NUM_SHARDS for a cache older than the record."""
    record = folder / SHARDS_FILE
    if not record.exists():
        return DEFAULT_NUM_SHARDS
    try:
        num_shards = json.loads(record.read_text())["num_shards"]
    except (ValueError, KeyError, TypeError) as err:  # written atomically: damaged from outside
        num_shards = f"unreadable ({type(err).__name__}: {err})"
    if not _valid_shard_count(num_shards):
        raise RuntimeError(
            f"{record} records no usable shard count: {num_shards}; "
            f"run `python prepare.py --data climbmix --num-shards N` (N = 1 to {VAL_SHARD}) to record one"
        )
    return num_shards


def _valid_shard_count(num_shards: object) -> bool:
    """1 to VAL_SHARD: 0 would leave no training data, more would train on the validation shard."""
    return isinstance(num_shards, int) and 1 <= num_shards <= VAL_SHARD


def _remove_stale_temporaries(folder: Path) -> None:
    """Delete the .tmp files of writes that were killed (a download's can be a shard's 100 MB); a
    live one, this process's or another's, is touched within STALE_TMP_S and left alone. Their
    age is told by the file system's clock, which stamped them, not this host's. A shard's part
    that the next download can resume (its validator beside it) is kept for PART_KEEP_S; a
    validator whose part is gone goes once it is as old as a killed write's file."""
    now = _file_system_now(folder)
    for tmp in folder.glob("*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            if now - tmp.stat().st_mtime > (PART_KEEP_S if _saved_validator(tmp) else STALE_TMP_S):
                _drop_part(tmp)
    for validator in folder.glob(f"*.tmp{PART_VALIDATOR}"):
        with contextlib.suppress(FileNotFoundError):
            part = validator.with_name(validator.name.removesuffix(PART_VALIDATOR))
            if not part.exists() and now - validator.stat().st_mtime > STALE_TMP_S:
                validator.unlink()


def _file_system_now(folder: Path) -> float:
    """The time by the clock that stamps the files of `folder`: a file's modification time as it
    is made there. On NFS that is the file server's clock, and a host whose own clock ran ahead
    of it by more than STALE_TMP_S deleted another node's live download as a killed one's."""
    probe = _temporary_name(folder / "clock")
    with _writing(probe):
        probe.write_bytes(b"")
        try:
            return probe.stat().st_mtime
        finally:
            probe.unlink()


class DownloadProgress:
    """What the download threads share: bytes received (reported at most every PROGRESS_EVERY_S
    seconds), shards done, and the first shard that failed for good, which stops the others."""

    def __init__(self, shards: int, done: int) -> None:
        self.shards, self.done = shards, done
        self.received = 0
        self.started = self.last_report = time.time()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.failure: Exception | None = None  # DownloadFailed, or CacheWriteFailed
        self.waits: set[threading.Event] = set()  # the threads' waits a stop ends too (`ended_by_stop`)

    def add(self, nbytes: int) -> None:
        with self.lock:
            self.received += nbytes
            now = time.time()
            if now - self.last_report >= PROGRESS_EVERY_S:
                self.last_report = now
                rate = self.received / max(now - self.started, 1e-9)
                log(f"  {self.received / 1e6:,.1f} MB received, {rate / 1e6:,.1f} MB/s")

    def finished(self, path: Path) -> None:
        with self.lock:
            self.done += 1
            log(f"  [{self.done}/{self.shards}] {path.name} ({path.stat().st_size / 1e6:.1f} MB)")

    def fail(self, error: Exception) -> None:
        with self.lock:
            self.failure = self.failure or error
            self._stop()

    def halt(self) -> None:
        """Stop the threads: after this, none opens a new file (`open_unless_halted`)."""
        with self.lock:
            self._stop()

    def _stop(self) -> None:
        self.stop.set()
        for wait in self.waits:
            wait.set()

    @contextlib.contextmanager
    def ended_by_stop(self, wait: threading.Event) -> Iterator[None]:
        """Within, a stop sets `wait` too: a thread waiting on it (for an answer, up to
        DOWNLOAD_ANSWER_TIMEOUT_S) held a failed download's end that long."""
        with self.lock:
            self.waits.add(wait)
            if self.stop.is_set():
                wait.set()
        try:
            yield
        finally:
            with self.lock:
                self.waits.discard(wait)

    def open_unless_halted(self, tmp: Path, append: bool) -> BinaryIO | None:
        """`tmp` opened for writing (at its end, to `append`), or None once halted: a thread whose
        connection came up just as the download was stopped must not leave a file after its cleanup."""
        with self.lock:
            return None if self.stop.is_set() else open(tmp, "ab" if append else "wb")  # noqa: SIM115


class DownloadFailed(RuntimeError):
    """A shard could not be downloaded (the message says which and why). `answered`: the server
    gave an HTTP error, so the network is up and the user's question is the server, not it.
    `too_slow`: the last attempt came under DOWNLOAD_MIN_RATE, so the network is up, but slow."""

    def __init__(self, message: str, answered: bool = False, too_slow: bool = False) -> None:
        super().__init__(message)
        self.answered = answered
        self.too_slow = too_slow


class TooSlow(TimeoutError):
    """An attempt averaged under DOWNLOAD_MIN_RATE once past its grace."""


def _refused(err: Exception) -> bool:
    """An HTTP 4xx answer (not found, forbidden) would be the same on every attempt; 408 (timeout)
    and 429 (too many requests) would not."""
    return isinstance(err, urllib.error.HTTPError) and 400 <= err.code < 500 and err.code not in (408, 429)


def _retry_after(err: Exception) -> float:
    """The wait a 429 or 503 answer asks for in its Retry-After header (seconds, or an HTTP date),
    at most RETRY_AFTER_MAX_S; 0 where it asks for none. A rate-limited client that retries sooner
    is refused again: its five attempts, 30 s of back-off, failed a download that waiting finishes."""
    headers = err.headers if isinstance(err, urllib.error.HTTPError) else None
    value = (headers and headers.get("Retry-After")) or ""
    if value.strip().isdecimal():
        seconds = float(value)
    else:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):  # none, or neither form: the back-off alone
            return 0.0
    return min(max(seconds, 0.0), RETRY_AFTER_MAX_S)


@dataclass
class _Part:
    """What the attempts at a shard leave one another: `tmp`, the bytes received so far, and
    `validator`, the ETag (or else Last-Modified) of the file they are of; None: nothing to resume.
    The validator is saved beside `tmp` too, so that an interrupted download's part is resumed by
    the next download, in another process (_take_over_parts)."""

    tmp: Path
    validator: str | None = None


def _validator_file(tmp: Path) -> Path:
    return tmp.with_name(f"{tmp.name}{PART_VALIDATOR}")


def _save_validator(tmp: Path, url: str, validator: str | None) -> None:
    """Beside the part `tmp`, of `url`: the validator a Range request for its rest sends (If-Range),
    and the host writing it, written whole; none where the server gave none, since such a part
    cannot be resumed."""
    if validator is None:
        _validator_file(tmp).unlink(missing_ok=True)
        return
    saved = {"url": url, "validator": validator, "host": platform.node()}
    _write_atomic(_validator_file(tmp), json.dumps(saved).encode())


def _saved(tmp: Path) -> dict[str, str]:
    """What _save_validator wrote beside the part `tmp`; {} where there is nothing readable."""
    try:
        saved = json.loads(_validator_file(tmp).read_bytes())
    except (OSError, ValueError):
        return {}
    whole = isinstance(saved, dict) and all(
        isinstance(saved.get(key), str) for key in ("url", "validator", "host")
    )
    return saved if whole else {}


def _saved_validator(tmp: Path, url: str | None = None) -> str | None:
    """The validator saved beside the part `tmp` (of `url`, where given); None where there is none,
    or it is unreadable or of another URL (AUTORESEARCH_DATA_URL changed): that part starts over."""
    saved = _saved(tmp)
    return saved["validator"] if saved and url in (None, saved["url"]) else None


def _drop_part(tmp: Path) -> None:
    """Delete a part and its validator."""
    tmp.unlink(missing_ok=True)
    _validator_file(tmp).unlink(missing_ok=True)


def _take_over_parts(folder: Path, indices: list[int], base_url: str) -> dict[int, _Part]:
    """The parts this user's stopped downloads left of the shards of `indices`, by shard (another
    user's is left to its owner: `_parts_by_size`), each renamed to this process's name (an atomic
    claim: no other download appends to it) and resumed from where it ends. Of a shard's parts the largest is resumed; the rest, a part whose validator is missing,
    unreadable or of another URL, and a part whose shard is whole in the cache are deleted. A part
    of a shard not asked for now is kept for a later download, and a live download's left alone."""
    now, parts = _file_system_now(folder), {}
    for tmp, index, pid in _parts_by_size(folder):
        with contextlib.suppress(FileNotFoundError):
            if not _stopped(tmp, pid, now - tmp.stat().st_mtime):
                continue
            shard = folder / _shard_name(index)
            if index not in indices:
                if shard.exists():
                    _drop_part(tmp)
                continue
            url = f"{base_url}/{shard.name}"
            validator = _saved_validator(tmp, url)
            if index in parts or validator is None:
                _drop_part(tmp)
                continue
            mine = _temporary_name(shard)
            os.replace(tmp, mine)
            os.utime(mine)  # (live now: its stopped writer's time would let another take it over)
            _save_validator(mine, url, validator)
            _validator_file(tmp).unlink(missing_ok=True)
            parts[index] = _Part(mine, validator)
    return parts


def _parts_by_size(folder: Path) -> list[tuple[Path, int, int]]:
    """This user's parts of shards in `folder`, each with its shard's index and its writer's pid,
    the largest first. Another user's, in a cache a group shares, is left to its owner: its mode
    (the umask's 0644) lets no one else append to it, and a download that took it over failed."""
    found = []
    for tmp in folder.glob("shard_*.parquet.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            if (named := PART_NAME.fullmatch(tmp.name)) and (stat := tmp.stat()).st_uid == os.geteuid():
                found.append((stat.st_size, tmp, int(named[1]), int(named[2])))
    return [(tmp, index, pid) for _, tmp, index, pid in sorted(found, reverse=True)]


def _stopped(tmp: Path, pid: int, idle: float) -> bool:
    """Whether the download that wrote the part `tmp` has stopped, so another may take it over: its
    process, of this host, is gone, or it has left the part untouched for STALE_TMP_S, which a live
    one does not (STALE_TMP_S's note). Not the preparation lock: an NFS mount with `nolock`
    keeps it on one host, and another host's download may be under way in the folder."""
    if idle > STALE_TMP_S:
        return True
    if _saved(tmp).get("host") != platform.node() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # (another user's process)
        pass
    return False


def _fetch(url: str, part: _Part, path: Path, progress: DownloadProgress) -> str:
    """Stream `url` into `part.tmp` until done or `progress.stop` is set; its Content-Type. Where an
    earlier attempt left a part, only the rest is asked for (Range, If-Range: that file's version): a
    server that answers 206 from there sends the rest, appended; one that answers 200 (no ranges, or
    the file changed since) sends it whole, written over the part. A failed attempt at a 100 MB
    shard began again from byte 0. A body shorter than its Content-Length (a connection closed
    early) raises, naming that, instead of failing as parquet; a write the cache refuses raises
    CacheWriteFailed, naming `path`, unlike the network's errors."""
    _touch(part.tmp)
    if part.validator and not part.tmp.exists():
        _lost_to_another(part, path)
    offset = part.tmp.stat().st_size if part.validator and part.tmp.exists() else 0
    asked = {"Range": f"bytes={offset}-", "If-Range": part.validator} if offset else {}
    request = urllib.request.Request(url, headers=asked)
    with _opened(request, part, offset, progress) as response:
        start = _range_start(response) if response.status == 206 else 0
        if start not in (0, offset):
            _start_over(part)
            sent = "without saying from where" if start is None else f"from byte {start:,}"
            raise ValueError(f"the server sent part of the file {sent}, not from byte {offset:,} as asked")
        validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
        with _writing(path):
            out = progress.open_unless_halted(part.tmp, append=start > 0)
        if out is None:
            return ""
        try:
            if validator != part.validator:  # (before a byte of the new file is written)
                part.validator = validator
                _save_validator(part.tmp, url, validator)
            # read1: what has come, up to 1 MB, written at once, so a live download's file is
            # touched at least every read timeout, however slow the link (_remove_stale_temporaries)
            while (chunk := response.read1(1 << 20)) and not progress.stop.is_set():
                with _writing(path):
                    out.write(chunk)
                    out.flush()
                progress.add(len(chunk))
            length, received = response.headers.get("Content-Length"), out.tell()
            content_type = response.headers.get("Content-Type", "")
        finally:
            with _writing(path):
                out.close()
    expected = None if length is None else start + int(length)
    if expected is not None and received < expected and not progress.stop.is_set():
        raise ValueError(f"the connection closed after {received:,} of {expected:,} bytes")
    return content_type


def _touch(tmp: Path) -> None:
    """Mark the part `tmp`, if there is one, live before its server is asked: one claimed as the
    download started (_take_over_parts) and reached by its worker over STALE_TMP_S later looked
    stopped, and a preparation beside it that does not share its lock (another host, an NFS mount
    with `nolock`) renamed it away while the worker waited for the server's first byte."""
    with contextlib.suppress(FileNotFoundError):
        os.utime(tmp)


def _lost_to_another(part: _Part, path: Path) -> None:
    """A part claimed as the download started (_take_over_parts) and gone when its worker reaches
    it was taken over by a download beside this one (another host's, of a cache it locks apart):
    the worker downloaded the shard whole under the old claim, its validator never saved again,
    and an interrupt then deleted what it had received. It starts a part of its own instead."""
    log(f"  {path.name}: its part was taken over by another download; downloading it whole")
    part.validator = None  # (so the answer's validator is saved beside the new part)


def _opened(
    request: urllib.request.Request, part: _Part, offset: int, progress: DownloadProgress
) -> http.client.HTTPResponse:
    """The server's answer to `request`, unless `progress` stops first. A 416 to the rest of a part
    (the part whole already, the file shorter since) is no refusal of the shard: the next attempt
    asks for it whole."""
    try:
        return _Answer(request).wait(progress)
    except urllib.error.HTTPError as err:
        if offset and err.code == 416:
            _start_over(part)
            raise ValueError(f"the server refused the rest of the file from byte {offset:,} (416)") from err
        raise


def _start_over(part: _Part) -> None:
    """Drop what earlier attempts received: the next asks for the whole file."""
    _drop_part(part.tmp)
    part.validator = None


def _range_start(response: http.client.HTTPResponse) -> int | None:
    """Where the part a 206 answer sends begins (its Content-Range, `bytes 500-999/1000`); None
    where it does not say."""
    unit, _, span = (response.headers.get("Content-Range") or "").partition(" ")
    first = span.partition("-")[0]
    return int(first) if unit == "bytes" and first.isdecimal() else None


def _keep_pace(received: int, seconds: float) -> None:
    """Raise TimeoutError where an attempt has run past its grace and averages under
    DOWNLOAD_MIN_RATE: a server trickling a byte every few seconds held a download for hours."""
    if seconds > DOWNLOAD_PACE_GRACE_S and received < DOWNLOAD_MIN_RATE * seconds:
        raise TooSlow(
            f"the server sent {received:,} bytes in {seconds:.0f} s, "
            f"under the {DOWNLOAD_MIN_RATE / 1000:g} kB/s a download needs"
        )


class _PacedReader(io.RawIOBase):
    """A connection's socket as its answer is read: every read, of the headers as of the body,
    held to the pace from the connection's start (`_keep_pace`). The pace covered the body only,
    and a server trickling its headers a byte every few seconds held urlopen for ever."""

    def __init__(self, raw: io.RawIOBase, started: float, answer: _Answer) -> None:
        super().__init__()
        self.raw, self.started, self.answer, self.received = raw, started, answer, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        if self.answer.abandoned:  # (its attempt failed: the headers' trickle is not read on)
            raise TimeoutError("the answer came too late")
        n = self.raw.readinto(buffer)
        self.received += n or 0
        _keep_pace(self.received, time.monotonic() - self.started)
        return n

    def fileno(self) -> int:
        return self.raw.fileno()

    def close(self) -> None:
        self.raw.close()
        super().close()


class _PacedSocket:
    """The socket as http.client's answer sees it: it only makes its file from it."""

    def __init__(self, sock: Any, started: float, answer: _Answer) -> None:
        self.sock, self.started, self.answer = sock, started, answer

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(
            _PacedReader(self.sock.makefile(mode, buffering=0), self.started, self.answer)
        )


class _Answer:
    """An attempt's request, made in a thread of its own so that all it waits for before the body
    (the DNS lookup, the connection, the TLS handshake, the headers) is bounded as one, by
    DOWNLOAD_ANSWER_TIMEOUT_S: each had its own timeout or none (the lookup), and headers trickled
    at 1 kB/s held an attempt, its part untouched, past STALE_TMP_S. `step`: what it waits for."""

    def __init__(self, request: urllib.request.Request) -> None:
        self.step = f"the request to {request.host}"
        self.lock = threading.Lock()
        self.came = False
        self.woken = threading.Event()  # set as the answer comes, and by a stop (wait)
        self.abandoned = False  # the attempt gave up: an answer that comes now is closed unread
        self.response: http.client.HTTPResponse | None = None
        self.error: Exception | None = None
        threading.Thread(target=self._ask, args=(request,), daemon=True).start()

    def _ask(self, request: urllib.request.Request) -> None:
        response: Any = None
        error: Exception | None = None
        try:
            response = urllib.request.build_opener(_PacedHandler(self)).open(
                request, timeout=DOWNLOAD_READ_TIMEOUT_S
            )
        except Exception as err:  # raised in the attempt's thread (wait)
            error = err
        with self.lock:
            late = self.abandoned
            if not late:
                self.response, self.error = response, error
            self.came = True
            self.woken.set()
        if late and response is not None:
            response.close()
        if late and isinstance(error, urllib.error.HTTPError):
            # (a late refusal, a 503, holds its connection: kept in a cycle with this frame, its
            # socket stayed open until Python's cycle collector came by)
            error.close()
        response = error = None  # (the error's traceback holds this frame)

    def wait(self, progress: DownloadProgress) -> http.client.HTTPResponse:
        """The answer, its body unread; what opening it raised, or TimeoutError naming the slow
        step; OSError where `progress` stopped first (an interrupt, another shard's failure)."""
        with progress.ended_by_stop(self.woken):
            self.woken.wait(DOWNLOAD_ANSWER_TIMEOUT_S)
        with self.lock:
            if not self.came:
                self.abandoned = True
                if progress.stop.is_set():
                    raise OSError("the download stopped before the answer came")
                raise TimeoutError(f"no answer after {DOWNLOAD_ANSWER_TIMEOUT_S:g} s, held up by {self.step}")
        if (error := self.error) is not None:
            # Raised held by nothing else: the traceback holds this frame and the thread's, and an
            # error still held by them made a cycle that kept a refused attempt's connection (an
            # HTTPError's) open until Python's cycle collector came by, a socket each refused attempt.
            self.error = None
            try:
                raise error
            finally:
                error = None
        assert self.response is not None
        return self.response


def _connect(
    address: tuple[str, int], timeout: float, source: Any = None, *, answer: _Answer, then: Callable[[], str]
) -> socket.socket:
    """http.client's socket.create_connection, telling `answer` each step as it starts: the lookup,
    the connection to each address found until one takes it, then `then()`, the step after."""
    host, port = address
    answer.step = f"the DNS lookup of {host}"
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    answer.step = f"the connection to {host} port {port}"
    error: OSError = OSError(f"no address found for {host}")
    for family, kind, proto, _, sockaddr in found:
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            if source:
                sock.bind(source)
            sock.connect(sockaddr)
        except OSError as err:
            sock.close()
            error = err
            continue
        answer.step = then()
        return sock
    raise error


class _Connection:
    """What an attempt's connection tells its `answer` of its steps, and how its answer is read (at
    `_keep_pace`). Behind an https proxy (https_proxy) it asks the proxy to CONNECT it to the origin,
    then shakes hands with the origin through it: a handshake that stalled there was named the
    headers of the proxy's answer, the proxy's, where the proxy had answered long before."""

    def __init__(self, conn: http.client.HTTPConnection, answer: _Answer) -> None:
        self.conn, self.answer, self.started = conn, answer, time.monotonic()
        self.tunnel, self.tunnelling = conn._tunnel, False
        self.tls = isinstance(conn, http.client.HTTPSConnection)
        conn._create_connection = functools.partial(_connect, answer=answer, then=self._after_connection)
        conn._tunnel = self._through_proxy
        conn.response_class = self._response

    def _after_connection(self) -> str:
        conn = self.conn
        if conn._tunnel_host:
            return f"the answer of the proxy {conn.host} to CONNECT {conn._tunnel_host}"
        return f"the TLS handshake with {conn.host}" if self.tls else f"the request to {conn.host}"

    def _through_proxy(self) -> None:
        self.tunnelling = True  # (the proxy's answer to CONNECT, read by _response, keeps its step)
        self.tunnel()
        self.tunnelling = False
        conn = self.conn
        self.answer.step = f"the TLS handshake with {conn._tunnel_host} through the proxy {conn.host}"

    def _response(self, sock: Any, *args: Any, **kw: Any) -> http.client.HTTPResponse:
        conn = self.conn
        if not self.tunnelling:
            through = f" through the proxy {conn.host}" if conn._tunnel_host else ""
            self.answer.step = f"the headers of the answer from {conn._tunnel_host or conn.host}{through}"
        return http.client.HTTPResponse(_PacedSocket(sock, self.started, self.answer), *args, **kw)


class _PacedHandler(urllib.request.HTTPHandler, urllib.request.HTTPSHandler):
    """Opens http:// and https:// URLs for `answer`, through `_Connection`s."""

    def __init__(self, answer: _Answer) -> None:
        super().__init__()
        self.answer = answer

    def do_open(self, http_class: type, req: urllib.request.Request, **kwargs: Any) -> Any:
        def connection(*args: Any, **options: Any) -> http.client.HTTPConnection:
            return _Connection(http_class(*args, **options), self.answer).conn

        return super().do_open(connection, req, **kwargs)


def _not_parquet(tmp: Path, content_type: str) -> str | None:
    """What the server sent instead of a parquet file, such as a proxy's or the hub's HTML error
    page served as 200; None for a file that begins as parquet does. pyarrow's "magic bytes not
    found in footer" sent users looking at the file, not at what served it."""
    with open(tmp, "rb") as file:
        head = file.read(200)
    if not head or head.startswith(b"PAR1"):
        return None
    text = " ".join(head.decode("utf-8", "replace").split())[:100]
    return f"the server sent {content_type or 'a file of no Content-Type'}, not a parquet file, beginning {text!r}"


def _data_url() -> str:
    """Where the shards are: AUTORESEARCH_DATA_URL, or the hub. One that urllib cannot open, such
    as a mirror's folder given as a path rather than a file:// URL, is refused before any download:
    each attempt at each shard failed, 30 s in all, and the error asked "no network?"."""
    url = (os.environ.get("AUTORESEARCH_DATA_URL") or CLIMBMIX_URL).rstrip("/")
    if urllib.parse.urlsplit(url).scheme not in ("http", "https", "file"):
        raise ValueError(f"AUTORESEARCH_DATA_URL must be an http://, https:// or file:// URL, not {url!r}")
    return url


def _download_shard(
    index: int, base_url: str, folder: Path, progress: DownloadProgress, part: _Part | None = None
) -> None:
    """One shard, retried with exponential back-off; written to a temporary name, then renamed.
    `part`: what an earlier download left of it (_take_over_parts), resumed. A stop leaves the
    part for the next download to resume."""
    path = folder / _shard_name(index)
    url = f"{base_url}/{path.name}"
    part = part or _Part(_temporary_name(path))
    for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
        if progress.stop.is_set():
            return
        try:
            content_type = _fetch(url, part, path, progress)
            if progress.stop.is_set():
                return
            if problem := _parquet_problem(part.tmp):  # a truncated or wrong file fails here, not in training
                why = _not_parquet(part.tmp, content_type) or problem
                _start_over(part)  # (received whole, so nothing to resume: the next attempt begins again)
                raise ValueError(why)
            with _writing(path):
                os.replace(part.tmp, path)
            _validator_file(part.tmp).unlink(missing_ok=True)
            progress.finished(path)
            return
        except (OSError, ValueError, http.client.HTTPException) as err:
            if progress.stop.is_set():  # interrupted, or another shard failed: no retry to announce
                return
            if isinstance(err, CacheWriteFailed) or _refused(err) or attempt == DOWNLOAD_ATTEMPTS:
                _drop_part(part.tmp)  # (kept only for a retry, or a later download, to resume)
            if isinstance(err, CacheWriteFailed):
                progress.fail(err)
                return
            if _refused(err):
                progress.fail(DownloadFailed(f"download of {url} failed: {err}", answered=True))
                return
            if attempt == DOWNLOAD_ATTEMPTS:
                answered, too_slow = isinstance(err, urllib.error.HTTPError), isinstance(err, TooSlow)
                progress.fail(
                    DownloadFailed(f"download of {url} failed {attempt} times: {err}", answered, too_slow)
                )
                return
            backoff, asked = DOWNLOAD_BACKOFF_S * 2 ** (attempt - 1), _retry_after(err)
            why = ", as the server asked (Retry-After)" if asked > backoff else ""
            wait = max(backoff, asked)
            log(f"  {path.name}: {err}; retrying in {wait:.1f} s{why}")
            progress.stop.wait(wait)


def _kept_shard(path: Path, quiet: bool = False) -> bool:
    """Whether a shard already in the cache is whole; a damaged one (a disk fault, a copy cut
    short) is downloaded again, and replaced only once its new copy is whole. `quiet`: not said,
    where the download's own look, under its lock, says it."""
    if not path.exists():
        return False
    if problem := _parquet_problem(path):
        if not quiet:
            log(f"  {path.name} in the cache is damaged ({problem}): downloading it again")
        return False
    return True


def _download_all(
    indices: list[int],
    base_url: str,
    folder: Path,
    progress: DownloadProgress,
    parts: dict[int, _Part] | None = None,
) -> None:
    """Download these shards, DOWNLOAD_WORKERS at a time, resuming the `parts` earlier downloads
    left. The threads are daemons: on an interrupt this returns at once (a thread stuck in a read
    would hold a join until its read times out, DOWNLOAD_READ_TIMEOUT_S); the threads stop at their
    next chunk or die with it. This process's unfinished parts are kept for the next download to
    resume, but for those it could not resume (a server that gave no ETag or Last-Modified) and
    all of them after a write the cache refused."""
    parts = parts or {}
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for index in indices:
        todo.put(index)

    def work() -> None:
        while not progress.stop.is_set():
            try:
                index = todo.get_nowait()
            except queue.Empty:
                return
            try:
                _download_shard(index, base_url, folder, progress, parts.get(index))
            except Exception as err:  # not one of the network's: stop the others and report it
                progress.fail(
                    DownloadFailed(f"download of {_shard_name(index)} failed: {type(err).__name__}: {err}")
                )

    threads = [threading.Thread(target=work, daemon=True) for _ in range(min(DOWNLOAD_WORKERS, len(indices)))]
    try:  # (starts too: an interrupt may come while the last thread starts, the first downloading)
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        progress.halt()  # (before the files are listed: no thread opens one after)
        for tmp in folder.glob(_temporary_name(folder / "shard_*.parquet").name):
            if isinstance(progress.failure, CacheWriteFailed) or not _saved_validator(tmp):
                _drop_part(tmp)  # (a full cache wants its space back)


def download_climbmix(num_shards: int | None = None) -> list[Path]:
    """The first `num_shards` training shards (None: as many as the last preparation chose, so a
    campaign's start keeps a user's --num-shards) and the validation shard; existing files are kept."""
    folder = data_dir("climbmix")
    num_shards = _prepared_shards(folder) if num_shards is None else num_shards
    if not _valid_shard_count(num_shards):
        raise ValueError(f"num_shards must be 1 to {VAL_SHARD}, not {num_shards}")
    folder.mkdir(parents=True, exist_ok=True)
    indices = [*range(num_shards), VAL_SHARD]
    missing = [i for i in indices if not _kept_shard(folder / _shard_name(i), quiet=True)]
    if missing:  # (only then: a prepared cache may be shared read-only)
        base_url = _data_url()
        _check_writable(folder, f"{len(missing)} of {len(indices)} climbmix shards are missing from it")
        with _preparing(folder):
            _download_missing(indices, folder, base_url)
    _record_shards(folder, num_shards)
    return [folder / _shard_name(i) for i in sorted(indices)]


def _download_missing(indices: list[int], folder: Path, base_url: str) -> None:
    """The shards of `indices` not yet in `folder`: asked again, as another preparation may have
    downloaded them while this one waited for it. What stopped downloads left of them is resumed."""
    missing = [i for i in indices if not _kept_shard(folder / _shard_name(i))]
    if not missing:
        return
    _remove_stale_temporaries(folder)
    parts = _take_over_parts(folder, missing, base_url)
    progress = DownloadProgress(len(indices), done=len(indices) - len(missing))
    log(
        f"downloading {len(missing)} of {len(indices)} climbmix shards to {folder}, {DOWNLOAD_WORKERS} at a time"
    )
    _download_all(missing, base_url, folder, progress, parts)
    if progress.failure:
        raise progress.failure
    log(f"downloaded {progress.received / 1e6:,.1f} MB in {time.time() - progress.started:.1f} s")


def _check_writable(folder: Path, why: str) -> None:
    """Fail at once, saying why the folder is needed, where it cannot be written: in a cache shared
    read-only every shard's download failed 5 times, with back-off, and blamed the network."""
    probe = _temporary_name(folder / "write-check")
    try:
        probe.write_bytes(b"")
    except OSError as err:
        raise OSError(
            f"{folder} cannot be written ({err.strerror}), and {why}: prepare it as its owner"
        ) from None
    probe.unlink()


def _record_shards(folder: Path, num_shards: int) -> None:
    """Write the choice for later runs, unless it is recorded already: a prepared cache may be
    shared read-only (prepared once from a login node), and its users' runs must not write to it."""
    if not _shards_recorded(folder, num_shards):
        _write_atomic(folder / SHARDS_FILE, _shards_record(num_shards))


def _shards_record(num_shards: int) -> bytes:
    return json.dumps({"num_shards": num_shards}).encode()


def _shards_recorded(folder: Path, num_shards: int) -> bool:
    path = folder / SHARDS_FILE
    return path.exists() and path.read_bytes() == _shards_record(num_shards)


# ---------------------------------------------------------------------------------------------
# Data: the offline corpus


def _chunks(text: str, size: int = OFFLINE_CHUNK_CHARS) -> Iterator[str]:
    """Cut at blank lines into pieces of about `size` characters (a longer paragraph stays whole)."""
    piece: list[str] = []
    length = 0
    for para in text.split("\n\n"):
        if piece and length + len(para) > size:
            yield "\n\n".join(piece)
            piece, length = [], 0
        piece.append(para)
        length += len(para) + 2
    if piece:
        yield "\n\n".join(piece)


def _docstrings(module_name: str) -> Iterator[tuple[str, str]]:
    """(qualified name, docstring) of a module, its classes, functions and methods, in sorted order."""
    try:
        module = importlib.import_module(module_name)
    except Exception:  # a module this build of Python lacks (sqlite3, ssl, ...)
        return
    yield module_name, module.__doc__ or ""
    for name, obj in sorted(vars(module).items()):
        if (
            not (inspect.isclass(obj) or inspect.isroutine(obj))
            or getattr(obj, "__module__", None) != module_name
        ):
            continue
        yield f"{module_name}.{name}", obj.__doc__ or ""
        if inspect.isclass(obj):
            for attr, member in sorted(vars(obj).items()):
                if inspect.isroutine(member):
                    yield f"{module_name}.{name}.{attr}", getattr(member, "__doc__", None) or ""


def offline_documents() -> list[str]:
    """Every document of the offline corpus, in a fixed order: pydoc topics, then docstrings."""
    from pydoc_data.topics import topics

    pages = [(key, topics[key]) for key in sorted(topics)]
    with (  # importing is for reading only: keep deprecation noise and import-time prints out
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        for module_name in OFFLINE_MODULES.split():
            pages.extend(_docstrings(module_name))
    docs: list[str] = []
    seen: set[str] = set()
    for title, text in pages:
        body = inspect.cleandoc(text) if isinstance(text, str) else ""
        if len(body) < OFFLINE_MIN_DOC_CHARS or body in seen:
            continue
        seen.add(body)
        docs.extend(f"{title}\n\n{chunk}" for chunk in _chunks(body))
    return docs


def is_offline_val(doc: str) -> bool:
    """The split is a function of the text alone, so it is the same on every run."""
    return int.from_bytes(hashlib.sha256(doc.encode()).digest()[:4], "big") % OFFLINE_VAL_EVERY == 0


def _write_parquet(path: Path, texts: list[str]) -> None:
    tmp = _temporary_name(path)
    try:
        with _writing(path):
            pq.write_table(pa.table({"text": texts}), tmp, row_group_size=128)
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def build_offline_corpus() -> Path:
    folder = data_dir("offline")
    if _offline_corpus_whole(folder):
        return folder
    with _preparing(folder):
        if _offline_corpus_whole(folder):  # built by the preparation this one waited for
            return folder
        folder.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(folder)
        docs = offline_documents()
        val = [d for d in docs if is_offline_val(d)]
        train = [d for d in docs if not is_offline_val(d)]
        _write_parquet(folder / "train.parquet", train)
        _write_parquet(folder / "val.parquet", val)
        log(f"offline corpus: {len(train)} train / {len(val)} val documents in {folder}")
    return folder


def _offline_corpus_whole(folder: Path) -> bool:
    return not any(_parquet_problem(folder / f"{split}.parquet") for split in ("train", "val"))


# ---------------------------------------------------------------------------------------------
# Reading documents


def _row_groups(files: list[Path]) -> list[tuple[Path, int]]:
    return [(f, g) for f in files for g in range(_footer(f).num_row_groups)]


def _read_texts(file: Path, group: int) -> list[str]:
    """The texts of a row group; a null is no document (a string column may hold them, and the
    tokenizer's training and the loader failed on one in a TypeError traceback). The footer is the
    one this process read for the file as it is open now: reading it for every row group was a
    server round trip each on NFS, and a shard replaced under the run has another stat."""
    with open(file, "rb") as handle:
        footer = _footer(file, os.fstat(handle.fileno()), handle)
        table = pq.ParquetFile(handle, metadata=footer).read_row_group(group, columns=["text"])
    return table.column("text").drop_null().to_pylist()


def iter_texts(
    split: str,
    seed: int = SEED,
    source: str = DATA_SOURCE,
    share: tuple[int, int] = (0, 1),
    passes: int | None = None,
) -> Iterator[list[str]]:
    """Batches of documents, endless unless `passes` is given. Training order is shuffled per epoch
    by `seed`; validation is fixed.

    `share` = (k, n) keeps every n-th document from the k-th on, so n workers read disjoint parts.
    """
    k, n = share
    files = split_files(split, source)
    units = _row_groups(files)
    epoch = 0
    while passes is None or epoch < passes:
        rng = random.Random(f"{seed}-{epoch}")
        order = list(units)
        if split == "train":
            rng.shuffle(order)
        read = 0
        for file, group in order:
            texts = _read_texts(file, group)
            read += len(texts)
            if split == "train":
                rng.shuffle(texts)
            if mine := texts[k::n]:
                yield mine
        if not read:  # (an endless reader would read it again for ever, yielding nothing)
            raise RuntimeError(f"the {split} split in {files[0].parent} holds no text, only nulls")
        epoch += 1


# ---------------------------------------------------------------------------------------------
# Tokenizer


def train_tokenizer(source: str = DATA_SOURCE, vocab_size: int = VOCAB_SIZE) -> Path:
    """BPE with rustbpe on the training split, saved for tiktoken; cached per (data, vocab size)."""
    path = tokenizer_dir(source, vocab_size) / TOKENIZER_FILE
    if _cached_tokenizer(path, vocab_size) is not None:
        return path
    with _preparing(path.parent):
        try:  # trained by the preparation this one waited for?
            _read_tokenizer(path, vocab_size)
        except (FileNotFoundError, *_UNREADABLE):
            _train_bpe(source, vocab_size, path)
    return path


def _train_bpe(source: str, vocab_size: int, path: Path) -> None:
    import rustbpe

    def texts() -> Iterator[str]:
        read, next_report = 0, TOKENIZER_REPORT_CHARS
        for file, group in _row_groups(split_files("train", source)):
            for text in _read_texts(file, group):
                yield text
                read += len(text)
                if read >= next_report:
                    log(f"  {read:,} of at most {TOKENIZER_MAX_CHARS:,} characters read")
                    next_report += TOKENIZER_REPORT_CHARS
                if read >= TOKENIZER_MAX_CHARS:
                    return

    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path.parent)
    started = time.time()
    log(f"training a {vocab_size}-token BPE on {source} ...")
    bpe = rustbpe.Tokenizer()
    bpe.train_from_iterator(texts(), vocab_size - len(SPECIAL_TOKENS), pattern=SPLIT_PATTERN)
    ranks = {bytes(token): rank for token, rank in bpe.get_mergeable_ranks()}
    if len(ranks) != vocab_size - len(SPECIAL_TOKENS):
        raise RuntimeError(f"corpus too small for a {vocab_size}-token vocabulary ({len(ranks)} merges)")
    _write_atomic(path, _tokenizer_json(path.parent.name, ranks))
    log(f"tokenizer trained in {time.time() - started:.1f} s: {path}")


def _tokenizer_json(name: str, ranks: dict[bytes, int]) -> bytes:
    """The tokenizer as data only: the token bytes in base64, in rank order, its split pattern
    (SPLIT_PATTERN, written for the harness copies that read the pattern from the file) and its name. (A pickle, its former format, runs code when read, and the cache may be a folder
    others can write.) The special tokens follow the ranks, in SPECIAL_TOKENS order."""
    tokens = sorted(ranks, key=ranks.__getitem__)
    if [ranks[token] for token in tokens] != list(range(len(tokens))):
        raise RuntimeError(f"the BPE's ranks are not 0 to {len(tokens) - 1}")
    spec = {
        "format": TOKENIZER_FORMAT,
        "name": name,
        "pat_str": SPLIT_PATTERN,
        "mergeable_ranks": [base64.b64encode(token).decode("ascii") for token in tokens],
    }
    return json.dumps(spec, indent=0).encode()


# What reading a damaged tokenizer file raises (json's errors and base64's are ValueErrors).
_UNREADABLE = (ValueError, KeyError, TypeError, AttributeError)


def _read_tokenizer(path: Path, vocab_size: int) -> tiktoken.Encoding:
    """The tokenizer at `path`, checked to be this format, of `vocab_size` tokens, holding every
    single byte (as a byte-level BPE does), made for its folder and split by SPLIT_PATTERN; raises ValueError (or KeyError,
    TypeError) on anything else."""
    spec = json.loads(path.read_bytes())
    if spec.get("format") != TOKENIZER_FORMAT:
        raise ValueError(f"format {spec.get('format')!r}, not {TOKENIZER_FORMAT}")
    tokens = [base64.b64decode(token, validate=True) for token in spec["mergeable_ranks"]]
    if len(tokens) + len(SPECIAL_TOKENS) != vocab_size or len(set(tokens)) != len(tokens):
        raise ValueError(f"{len(set(tokens))} distinct tokens, not {vocab_size - len(SPECIAL_TOKENS)}")
    if missing := 256 - len(
        {token for token in tokens if len(token) == 1}
    ):  # (tiktoken panics on such a byte)
        raise ValueError(f"{missing} of the 256 single bytes are not among its tokens")
    if spec["name"] != path.parent.name:  # (a copy of another folder's: other data, or another Python's)
        raise ValueError(f"the tokenizer of {spec['name']!r}, not of {path.parent.name!r}")
    if spec["pat_str"] != SPLIT_PATTERN:  # (planted by a writer of a shared cache, to hang every run)
        raise ValueError("its split pattern is not the harness's")
    return tiktoken.Encoding(
        name=spec["name"],
        pat_str=SPLIT_PATTERN,
        mergeable_ranks={token: rank for rank, token in enumerate(tokens)},
        special_tokens={token: len(tokens) + i for i, token in enumerate(SPECIAL_TOKENS)},
    )


def _trained_again(why: str) -> None:
    log(f"{why}: training the tokenizer again")


def _cached_tokenizer(
    path: Path, vocab_size: int, unused: Callable[[str], None] = _trained_again
) -> tiktoken.Encoding | None:
    """The tokenizer saved at `path`; None when there is none, or when it is damaged (a disk
    fault, a copy cut short), so that it is trained again rather than trusted, `unused` told why.
    One this user may not read stops the process in one line: training it again could not replace
    it. A tokenizer.pkl beside it, the former format, is never read: unpickling a file of a shared
    cache would run whatever code its writer put in it."""
    if not path.exists():
        if path.with_name(OLD_TOKENIZER_FILE).exists():
            unused(f"{path.with_name(OLD_TOKENIZER_FILE)} is a pickle, which is never read")
        return None
    try:
        return _read_tokenizer(path, vocab_size)
    except _UNREADABLE as err:
        unused(f"{path} is damaged ({type(err).__name__}: {err})")
        return None
    except PermissionError:  # (another user's, in a cache shared by a group)
        sys.stderr.write(
            f"error: {path} cannot be read by this user: its owner makes it readable (chmod g+r)\n"
        )
        sys.exit(EXIT_REFUSED)


_TOKENIZERS: dict[Path, tiktoken.Encoding] = {}


def load_tokenizer(source: str = DATA_SOURCE, vocab_size: int = VOCAB_SIZE) -> tiktoken.Encoding:
    """The cached tokenizer. The offline corpus and its tokenizer are built (or repaired) on first
    use, in seconds."""
    path = tokenizer_dir(source, vocab_size) / TOKENIZER_FILE
    if path not in _TOKENIZERS:
        enc = _cached_tokenizer(path, vocab_size)  # read once: every experiment loads it
        if enc is None:  # absent or damaged: built (offline) or trained, then read
            if source == "offline":
                build_offline_corpus()
            train_tokenizer(source, vocab_size)
            enc = _read_tokenizer(path, vocab_size)
        _TOKENIZERS[path] = enc
    return _TOKENIZERS[path]


def token_bytes(enc: tiktoken.Encoding, device: torch.device | str = "cpu") -> torch.Tensor:
    """UTF-8 length of every token id; 0 for special tokens, which the metric does not count."""
    special = {enc.encode_single_token(tok) for tok in enc.special_tokens_set}
    lengths = [0 if i in special else len(enc.decode_single_token_bytes(i)) for i in range(enc.n_vocab)]
    return torch.tensor(lengths, dtype=torch.int64, device=device)


# ---------------------------------------------------------------------------------------------
# Dataloader


def pack_rows(docs: Iterable[list[int]], row_len: int, buffer_size: int = 1000) -> Iterator[list[int]]:
    """Best-fit packing: rows of exactly `row_len` tokens, no padding, each starting at a document start.

    Each row takes the largest buffered document that still fits; when none fits, the shortest one
    is cropped to fill the row (its tail is dropped, so a row never begins mid-document). A finite
    input ends when the buffer can no longer fill a row.
    """
    stream = iter(docs)
    lengths: list[int] = []  # sorted ascending, parallel to `buffer`
    buffer: list[list[int]] = []
    exhausted = False
    while True:
        row: list[int] = []
        while len(row) < row_len:
            while not exhausted and len(buffer) < buffer_size:
                doc = next(stream, None)
                if doc is None:
                    exhausted = True
                elif doc:
                    at = bisect.bisect_right(lengths, len(doc))
                    lengths.insert(at, len(doc))
                    buffer.insert(at, doc)
            if not buffer:
                return
            space = row_len - len(row)
            at = bisect.bisect_right(lengths, space) - 1
            if at < 0:  # nothing fits: crop the shortest
                at = 0
            lengths.pop(at)
            row.extend(buffer.pop(at)[:space])
        yield row


def iter_token_docs(
    split: str,
    seed: int = SEED,
    source: str = DATA_SOURCE,
    vocab_size: int = VOCAB_SIZE,
    share: tuple[int, int] = (0, 1),
    passes: int | None = None,
) -> Iterator[list[int]]:
    """Tokenized documents (endless unless `passes` is given), each with BOS prepended. Parallelism
    comes from loader workers: tiktoken's own thread pool costs more than it gains on documents this short."""
    enc = load_tokenizer(source, vocab_size)
    bos = enc.encode_single_token(BOS_TOKEN)
    for texts in iter_texts(split, seed, source, share, passes):
        for text in texts:
            yield [bos, *enc.encode_ordinary(text)]


def make_dataloader(
    split: str,
    batch_size: int,
    device: torch.device | str = "cpu",
    seq_len: int = MAX_SEQ_LEN,
    seed: int = SEED,
    source: str = DATA_SOURCE,
    vocab_size: int = VOCAB_SIZE,
    workers: int = LOADER_WORKERS,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless (inputs, targets) int64 batches of shape (batch_size, seq_len) on `device`.

    With `workers` > 0, that many processes tokenize and pack every `workers`-th document each and
    the batches are taken from them in turn, so the order is fixed and the training process keeps
    its interpreter to itself (a thread of it cannot feed an H100). With 0, a background thread does
    the work. Either way the next batches are prepared while the caller trains.
    """
    load_tokenizer(source, vocab_size)  # build or load here, before any worker needs it
    for checked in ("train", "val"):  # both: a damaged validation file fails a run at its start, not after it
        split_files(checked, source)
    device = torch.device(device)
    spec = (split, batch_size, seq_len, seed, source, vocab_size)
    batches = _worker_batches(spec, workers) if workers > 0 else _packed_batches(*spec)
    pin = device.type == "cuda"
    for batch in _prefetch(_host_tensor(b, pin) for b in batches):
        batch = batch.to(device, non_blocking=True)
        if split == "train":
            _training_stamps.append(_clock())
        yield batch[:, :-1].contiguous(), batch[:, 1:].contiguous()


def _host_tensor(batch: np.ndarray, pin: bool) -> torch.Tensor:
    """int64 on the host; pinned for a GPU, so the copy to it does not wait for the device."""
    tensor = torch.from_numpy(batch).long()
    return tensor.pin_memory() if pin else tensor


def _packed_batches(
    split: str,
    batch_size: int,
    seq_len: int,
    seed: int,
    source: str,
    vocab_size: int,
    share: tuple[int, int] = (0, 1),
) -> Iterator[np.ndarray]:
    """Endless (batch_size, seq_len + 1) int32 arrays of packed rows."""
    rows = _packed_rows(split, seq_len, seed, source, vocab_size, share)
    while True:
        yield np.array([next(rows) for _ in range(batch_size)], dtype=np.int32)


def _packed_rows(
    split: str, seq_len: int, seed: int, source: str, vocab_size: int, share: tuple[int, int]
) -> Iterator[list[int]]:
    """Endless rows of seq_len + 1 tokens. Training packs its endless shuffled stream. Validation
    packs one pass of its documents at a time, repeated only when more rows are asked for: packed
    from an endless stream, a buffer larger than the split held copies of a document side by side
    (39 of the offline split's 435 documents lay whole in the 128 scored rows: scripts/eval_rows.py)."""
    if split == "train":
        yield from pack_rows(iter_token_docs(split, seed, source, vocab_size, share), seq_len + 1)
        return
    while True:
        rows = 0
        for row in pack_rows(iter_token_docs(split, seed, source, vocab_size, share, passes=1), seq_len + 1):
            rows += 1
            yield row
        if not rows:
            raise RuntimeError(f"the {split} split holds too few tokens for one row of {seq_len + 1}")


def _worker_batches(spec: tuple, workers: int) -> Iterator[np.ndarray]:
    """Batches from `workers` child processes, taken in turn; each writes raw int32 rows to a pipe.

    Plain subprocesses rather than multiprocessing: nothing re-imports the caller's main module
    (an edited train.py without a main guard stays safe), and a child whose reader is gone dies
    on its next write.
    """
    split, batch_size, seq_len = spec[:3]
    nbytes = batch_size * (seq_len + 1) * 4
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
    }
    code = "import sys, prepare; prepare.serve_batches(sys.argv[1:])"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", code, json.dumps(spec), str(k), str(workers)],
            stdout=subprocess.PIPE,
            env=env,
        )
        for k in range(workers)
    ]
    try:
        while True:
            for k, child in enumerate(children):
                data = child.stdout.read(nbytes)
                if len(data) < nbytes:
                    raise RuntimeError(
                        f"{split} dataloader worker {k} exited with code {child.wait()} (its error is above)"
                    )
                yield np.frombuffer(bytearray(data), dtype=np.int32).reshape(batch_size, seq_len + 1)
    finally:
        for child in children:
            child.kill()


def serve_batches(argv: list[str]) -> None:
    """A loader worker's life (see _worker_batches): argv is the JSON spec, k and n of its share."""
    spec, k, n = json.loads(argv[0]), int(argv[1]), int(argv[2])
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print must not corrupt the byte stream: stdout now goes to stderr
    try:
        for batch in _packed_batches(*spec, share=(k, n)):
            out.write(batch.tobytes())
            out.flush()
    except BrokenPipeError:  # the training process is gone
        os._exit(0)


PREFETCH_THREAD = "prepare-prefetch"


def _prefetch(items: Iterator[torch.Tensor], depth: int = 2) -> Iterator[torch.Tensor]:
    """Consume `items` in a thread up to `depth` ahead; its errors are raised here.

    The thread is stopped when the loader is closed and before the interpreter exits: a daemon
    thread still in torch or pipe code when Python shuts down is torn out of it, and the process
    aborts ("terminate called without an active exception", SIGABRT) after train.py wrote its
    result, which the runner would take for a crash.
    """
    ready: queue.Queue[tuple[torch.Tensor | None, BaseException | None]] = queue.Queue(depth)
    stop = threading.Event()

    def offer(entry: tuple[torch.Tensor | None, BaseException | None]) -> bool:
        """Queue `entry` once there is room; False if the loader is stopped first."""
        while not stop.is_set():
            try:
                ready.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer((item, None)):
                    return
        except BaseException as err:
            offer((None, err))

    thread = threading.Thread(target=produce, daemon=True, name=PREFETCH_THREAD)

    def halt() -> None:
        stop.set()
        thread.join(timeout=30)

    atexit.register(halt)
    thread.start()
    try:
        while True:
            item, err = ready.get()
            if err is not None:
                raise err
            yield item
    finally:
        atexit.unregister(halt)
        halt()


# ---------------------------------------------------------------------------------------------
# The harness's own count of training time


class OverBudget(RuntimeError):
    """train.py trained for longer than TIME_BUDGET by the harness's count: its result is not a result."""


# train.py enforces TIME_BUDGET itself, and the agent edits train.py: an edit with more untimed
# warm-up steps or its own stopping rule would train longer and look better. So the harness counts
# too: the waits between train.py's requests for training batches are the training time, less the
# stalls, a wait over STALL_FACTOR times the typical one (the first step's compilation, an
# evaluation inside the loop that long; shorter work between requests counts). Taken against the
# typical wait, stalls need no fixed allowance, which would have to cover the slowest compilation
# and would then let most overruns through. What the count leaves out, the stalls and the work
# after the last batch, is bounded apart, by the harness's clock from the first batch to the
# evaluation (_uncounted). Functions, not a class, so that the seal (verify_harness) covers this
# code as it covers the metric's.

# The budget's clock, bound at import: wall time where there is a GPU, else the process's CPU time
# (train.py's `budget_clock`). Chosen once, not by the device a loader is asked for: a GPU run
# that asked for batches on the CPU was counted in CPU time, which leaves out its waits for the GPU.
_clock = time.perf_counter if torch.cuda.is_available() else time.process_time
_training_stamps: list[float] = []  # when train.py asked for each training batch, on _clock
_evaluations: list[float] = []  # when each evaluate_bpb began, on _clock: the last one's figure is reported
# The number of training batches drawn at each optimizer step, once per number: a step with
# gradient accumulation draws many batches, and train.py's two optimizers step together.
_optimizer_steps: list[int] = []


def _note_optimizer_step(optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
    """A global post-hook of every torch optimizer's step: the harness's own count of train.py's
    steps, so a train.py that reports fewer steps than it took gets no more slack for them."""
    drawn = len(_training_stamps)
    if not _optimizer_steps or _optimizer_steps[-1] != drawn:
        _optimizer_steps.append(drawn)


_OPTIMIZER_HOOK = torch_optimizer.register_optimizer_step_post_hook(_note_optimizer_step)


def training_count() -> tuple[float, float] | None:
    """(seconds of training, the typical wait) by the harness's count of this process's training
    batches, or None before there are waits to count.

    The typical wait is the median of the time, not of the waits: half the time is spent in waits
    no longer than it. On a GPU, where the host runs ahead, a step of 4 micro-batches is one long
    wait (the step's) and 3 short ones (launches): the median wait is a launch, and every step
    would be taken for a stall. The largest waits (1%, at least one) are left out of it: a
    compilation is one wait, and with a short budget the longest."""
    waits = np.sort(np.diff(np.array(_training_stamps, dtype=np.float64)))
    if len(waits) < 3:
        return None
    body = waits[: len(waits) - max(1, len(waits) // 100)]
    typical = float(body[np.searchsorted(np.cumsum(body), body.sum() / 2)])
    return float(waits[waits <= STALL_FACTOR * typical].sum()), typical


def _overrun(counted: tuple[float, float] | None, num_steps: object) -> str:
    """Why the training `counted` (training_count's) is over the budget, or ''. Allowed over TIME_BUDGET: a share of it
    (the two clocks differ a little) and BUDGET_SLACK_STEPS steps (train.py's untimed warm-up
    steps and the step that crosses the budget), at most BUDGET_SLACK_MAX of the budget (else a
    train.py with 1 step would take its whole count for slack). A step lasts the seconds counted
    over the steps: the harness's own count of optimizer steps, or the `num_steps` train.py reports
    where that is more (a train.py that steps no torch optimizer); or the typical wait if longer or
    if there are none: a step of 16 micro-batches is 16 even waits on a CPU (and on a GPU whose
    launch queue is full), so a step is not a wait."""
    if counted is None:
        return ""
    seconds, typical = counted
    reported = isinstance(num_steps, int) and not isinstance(num_steps, bool) and num_steps > 0
    steps = max(num_steps if reported else 0, len(_optimizer_steps)) or None
    step = max(typical, seconds / steps) if steps else typical
    limit = TIME_BUDGET * (
        1 + BUDGET_OVERRUN + min(BUDGET_SLACK_STEPS * step / TIME_BUDGET, BUDGET_SLACK_MAX)
    )
    if seconds <= limit:
        return ""
    if short := _too_short(seconds, typical, limit):
        return short
    return (
        f"train.py trained for {seconds:.1f} s by the harness's count ({len(_training_stamps)} training batches"
        f"{f' in {steps} steps' if steps else ''}, "
        f"stalls over {STALL_FACTOR * typical:.2f} s left out), over the {TIME_BUDGET:g} s budget "
        f"(at most {limit:.1f} s is allowed)"
    )


def _too_short(seconds: float, typical: float, limit: float) -> str:
    """Why a run over its budget (`limit`), but within BUDGET_SLACK_STEPS steps of it, is over: the
    budget, not train.py, or ''. A budget of fewer than BUDGET_SLACK_STEPS / BUDGET_SLACK_MAX steps
    gets less slack than the steps train.py leaves untimed (its warm-up, the step that crosses the
    budget), so every run of it is over; the line names the budget that would hold them. Steps by
    the harness's own count of optimizer steps only: a number train.py reports is not evidence."""
    if not _optimizer_steps:
        return ""
    step = max(typical, seconds / len(_optimizer_steps))
    if seconds > TIME_BUDGET * (1 + BUDGET_OVERRUN) + BUDGET_SLACK_STEPS * step:
        return ""
    needed = BUDGET_SLACK_STEPS * step / BUDGET_SLACK_MAX
    if needed <= TIME_BUDGET:  # the cap on the slack did not bind: the budget holds 12 such steps
        return ""
    return (
        f"the {TIME_BUDGET:g} s time budget is too short for train.py's {step:.2f} s steps: its untimed "
        f"warm-up and the step that crosses the budget took the harness's count to {seconds:.1f} s, over the "
        f"{limit:.1f} s allowed; raise the time budget (campaign.time_budget) to at least {needed:.1f} s"
    )


def _uncounted_parts(counted: tuple[float, float] | None) -> tuple[float, float]:
    """The time from the first training batch to the start of the evaluation that the count of
    training (training_count's; where there are too few batches to count, their span) did not see,
    in two parts: the stalls between batches, and the time after the last batch. Both by the
    harness's clock alone, whatever train.py reports."""
    first, last = _training_stamps[0], _training_stamps[-1]
    seconds = counted[0] if counted else last - first
    return last - first - seconds, _evaluations[-1] - last


def _uncounted(parts: tuple[float, float], on_gpu: bool = _clock is time.perf_counter) -> str:
    """Why the time the count did not see (_uncounted_parts') is more than an honest run's
    compilation and last optimizer step, or ''. What it bounds is training on batches of its own
    (kept, or read from the files) in long gaps between batches or after the last one. Allowed:
    UNCOUNTED_MAX of the budget, and on a GPU at least UNCOUNTED_MIN_GPU seconds, since a
    compilation takes as long whatever the budget."""
    allowed = max(UNCOUNTED_MAX * TIME_BUDGET, UNCOUNTED_MIN_GPU if on_gpu else 0.0)
    if sum(parts) <= allowed:
        return ""
    stalls, after = parts
    return (
        f"train.py spent {sum(parts):.1f} s that the harness's count of training did not see ({stalls:.1f} s "
        f"in stalls between its {len(_training_stamps)} training batches, {after:.1f} s after its last, "
        f"until the evaluation), over the {allowed:.1f} s allowed: "
        "training on batches of its own is not counted against the budget"
    )


def _unreported(counted: tuple[float, float] | None, training_seconds: object) -> str:
    """Why train.py's own `training_seconds` is not the harness's count (training_count's), or ''.
    Training before the first batch is outside the harness's clocks (whose set-up costs, such as
    torch's imports at the first optimizer, are not budget-sized); this check sees it where
    train.py timed it. So the summary must report the figure."""
    if not isinstance(training_seconds, int | float) or isinstance(training_seconds, bool):
        return (
            f"train.py's summary has no training_seconds (a number of seconds, not {training_seconds!r}), "
            "which write_result checks against the harness's count"
        )
    seconds = counted[0] if counted else _training_stamps[-1] - _training_stamps[0]
    if not training_seconds - seconds > UNCOUNTED_MAX * TIME_BUDGET:
        return ""
    return (
        f"train.py trained for {training_seconds:.1f} s by its own clock, but asked make_dataloader for "
        f"training batches during only {seconds:.1f} s of it ({len(_training_stamps)} batches): "
        "training on batches of its own is not counted against the budget"
    )


# ---------------------------------------------------------------------------------------------
# Evaluation


def _logits(model: torch.nn.Module, idx: torch.Tensor) -> torch.Tensor:
    logits = model(idx)
    expected = (*idx.shape, VOCAB_SIZE)
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != expected:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise TypeError(f"model(idx) must return logits of shape {expected}, got {got}")
    return logits.float()


def check_causal(model: torch.nn.Module, idx: torch.Tensor, logits: torch.Tensor, tol: float = 1e-2) -> None:
    """Logits before position k must not change when the tokens from k on do: no peeking at targets.

    Compares each early position's mean absolute logit change, which tolerates rare last-bit
    differences of a reduced-precision kernel but not a model that reads the next token.
    """
    k = idx.size(1) // 2
    generator = torch.Generator().manual_seed(0)
    altered = idx.clone()
    noise = torch.randint(0, VOCAB_SIZE - len(SPECIAL_TOKENS), altered[:, k:].shape, generator=generator)
    altered[:, k:] = noise.to(idx.device)
    change = (_logits(model, altered)[:, :k] - logits[:, :k]).abs().mean(dim=-1).max().item()
    if not change <= tol:
        raise RuntimeError(
            f"model is not causal: logits before position {k} depend on later tokens ({change:.3g})"
        )


def validation_batches(
    batch_size: int, device: torch.device | str, workers: int = LOADER_WORKERS
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The EVAL_ROWS validation rows, the same ones whatever `batch_size` is, `batch_size` at a time
    (the last batch holds the rest). They are read in batches of EVAL_READ_ROWS: which rows loader
    workers taking turns deliver depends on the batch they are asked for."""
    loader = make_dataloader("val", EVAL_READ_ROWS, device, workers=workers)
    reads = EVAL_ROWS // EVAL_READ_ROWS
    x = y = None  # the rows read and not yet given out
    try:
        for read in range(reads):
            more_x, more_y = next(loader)
            x, y = (more_x, more_y) if x is None else (torch.cat([x, more_x]), torch.cat([y, more_y]))
            last = read == reads - 1
            while len(x) >= batch_size or (last and len(x)):
                yield x[:batch_size], y[:batch_size]
                x, y = x[batch_size:], y[batch_size:]
    finally:
        loader.close()


def _pad_rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    """`x` with its rows repeated up to `rows`: the model always sees the batch size it was asked
    for, so a compiled model does not compile again for a last, smaller batch (the extra rows'
    logits are dropped)."""
    return x if len(x) == rows else x.repeat(-(-rows // len(x)), 1)[:rows]


@torch.no_grad()
def evaluate_bpb(model: torch.nn.Module, batch_size: int) -> float:
    """Bits per byte on the EVAL_ROWS validation rows: the harness's own cross-entropy, specials excluded.

    val_bpb = sum_t [bytes(y_t) > 0] * CE_t / (ln 2 * sum_t bytes(y_t)). The model is only asked
    for logits (batch_size, MAX_SEQ_LEN, VOCAB_SIZE); whatever else it computes is ignored. The
    rows scored do not depend on `batch_size`, only how many go through the model at once.
    """
    verify_harness()
    _evaluations.append(_clock())  # the end of the training this figure scores
    device = next(model.parameters()).device
    nbytes_of = token_bytes(load_tokenizer(), device)
    total_nats = torch.zeros((), dtype=torch.float64, device=device)
    total_bytes = torch.zeros((), dtype=torch.int64, device=device)
    for step, (x, y) in enumerate(validation_batches(batch_size, device)):
        padded = _pad_rows(x, batch_size)
        logits = _logits(model, padded)
        if step == 0:
            check_causal(model, padded, logits)
        logits = logits[: len(x)]
        ce = _cross_entropy(logits.reshape(-1, logits.size(-1)), y.view(-1), reduction="none")
        del logits  # before the next forward: at the gpt2 scale a batch of logits is 8.6 GB
        nbytes = nbytes_of[y.view(-1)]
        total_nats += (ce * (nbytes > 0)).sum(dtype=torch.float64)
        total_bytes += nbytes.sum()
    verify_harness()  # the model ran train.py's code in between
    _record_val_bpb((total_nats / (math.log(2) * total_bytes)).item())
    return _last_val_bpb


# ---------------------------------------------------------------------------------------------
# Integrity: train.py runs in this interpreter, so the harness checks it was not changed


class HarnessModified(RuntimeError):
    """train.py (or something it ran) changed the harness or what it computes with."""


_cross_entropy = F.cross_entropy  # bound at import: a later patch of torch's does not reach the metric

# What the metric looks up in torch as it runs: checked to be torch's own and unchanged. (Its
# cross-entropy is `_cross_entropy`, bound at import: train.py may wrap F.cross_entropy for its own
# loss without reaching the metric.)
_TORCH_ENTRY_POINTS = (
    (torch._C._nn, "cross_entropy_loss"),
    (torch.Tensor, "float"),
    (torch.Tensor, "sum"),
    (torch.Tensor, "__getitem__"),
    (torch.Tensor, "__mul__"),
    (torch.Tensor, "__gt__"),
    (torch.Tensor, "item"),
    (torch, "cat"),
    (torch, "zeros"),
)


def _is_torchs_own(obj: object) -> bool:
    """A builtin, or a Python function defined in torch's own files (not a replacement from train.py)."""
    code = getattr(obj, "__code__", None)
    if code is None:
        return callable(obj)
    return Path(code.co_filename).resolve().is_relative_to(Path(torch.__file__).resolve().parent)


def _fingerprint(name: str, value: object) -> tuple:
    """What must stay the same of a global: a public constant its value (a copy, so changing a
    table in place shows), anything else its identity, and a function also its code and defaults."""
    if name.isupper() and not name.startswith("_") and not (callable(value) or inspect.ismodule(value)):
        return ("value", type(value), copy.deepcopy(value))
    if inspect.isfunction(value):
        return ("same", value, value.__code__, value.__defaults__, value.__kwdefaults__)
    return ("same", value)


def _unchanged(current: tuple, sealed: tuple) -> bool:
    if sealed[0] == "value":
        return current == sealed
    return len(current) == len(sealed) and all(a is b for a, b in zip(current[1:], sealed[1:], strict=True))


def _seal() -> dict[str, object]:
    return {
        "globals": {name: _fingerprint(name, value) for name, value in globals().items()},
        "torch": [getattr(owner, attr) for owner, attr in _TORCH_ENTRY_POINTS],
    }


def verify_harness() -> None:
    """Raise HarnessModified unless every global of this module and every torch entry point of the
    metric is as it was at import (or as evaluate_bpb last left `_last_val_bpb`)."""
    now = globals()
    for name, sealed in _SEALED["globals"].items():
        if name not in now:
            raise HarnessModified(f"prepare.{name} was deleted after import")
        if not _unchanged(_fingerprint(name, now[name]), sealed):
            raise HarnessModified(
                f"prepare.{name} was changed after import (train.py may not modify the harness)"
            )
    shadows = sorted(set(now) - set(_SEALED["globals"]) & set(dir(builtins)))
    if shadows:
        raise HarnessModified(f"prepare.{shadows[0]} was added, shadowing the builtin the harness uses")
    if not _is_torchs_own(_cross_entropy):  # replaced before the harness was imported
        raise HarnessModified("the cross_entropy the metric bound at import is not torch's own")
    for (owner, attr), sealed in zip(_TORCH_ENTRY_POINTS, _SEALED["torch"], strict=True):
        if getattr(owner, attr, None) is not sealed or not _is_torchs_own(sealed):
            raise HarnessModified(
                f"{getattr(owner, '__name__', owner)}.{attr}, which the metric uses, is not torch's own"
            )
    if torch_optimizer._global_optimizer_post_hooks.get(_OPTIMIZER_HOOK.id) is not _note_optimizer_step:
        raise HarnessModified("the harness's hook on torch's optimizer steps, which counts them, was removed")


def _record_val_bpb(value: float | None) -> None:
    """Store the figure write_result reports and re-seal it: a later write to it is caught."""
    global _last_val_bpb
    _last_val_bpb = value
    _SEALED["globals"]["_last_val_bpb"] = _fingerprint("_last_val_bpb", value)


# ---------------------------------------------------------------------------------------------
# Hardware and results


def device_name(device: torch.device | str | None = None) -> str:
    if torch.cuda.is_available() and torch.device(device or "cuda").type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.machine()})"


def gpu_peak_flops(device: torch.device | str | None = None) -> float | None:
    """Dense bf16 peak of the GPU in use, or None on CPU, an unlisted GPU or a MIG instance (MFU
    is then 0). A MIG instance's name is its GPU's and its profile ('NVIDIA A100-SXM4-40GB MIG
    1g.5gb'): the whole GPU's peak would understate its MFU several times, and a slice's own
    peak, its share of the GPU's SMs, is in no table here, so it is not guessed."""
    if not (torch.cuda.is_available() and torch.device(device or "cuda").type == "cuda"):
        return None
    name = torch.cuda.get_device_name(device)
    if " MIG " in name:
        return None
    return next((flops for key, flops in PEAK_BF16_FLOPS if key in name), None)


def prepare_sha256() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def write_result(summary: dict) -> Path:
    """Write train.py's summary plus harness facts as JSON to AUTORESEARCH_RESULT, atomically.

    val_bpb is always the figure evaluate_bpb computed, whatever the summary says, and the harness
    must be as it was at import (HarnessModified otherwise). A run that drew no training batch from
    make_dataloader is refused: it trained on batches of its own, which the harness could not count;
    so is one whose time outside the count, from the first training batch to the evaluation, is
    over UNCOUNTED_MAX of the budget (_uncounted), and one whose summary lacks training_seconds or
    gives more than that over the count (_unreported).
    """
    verify_harness()
    if _last_val_bpb is None or not _evaluations:
        raise RuntimeError("write_result called before evaluate_bpb")
    if not _training_stamps:
        raise RuntimeError("write_result called before any training batch from make_dataloader")
    counted = training_count()
    overrun = _overrun(counted, summary.get("num_steps"))
    if overrun:
        raise OverBudget(f"{overrun}: its val_bpb {_last_val_bpb:.6f} is not a result")
    uncounted = _uncounted_parts(counted)
    for refusal in (_uncounted(uncounted), _unreported(counted, summary.get("training_seconds"))):
        if refusal:
            raise RuntimeError(f"{refusal}: its val_bpb {_last_val_bpb:.6f} is not a result")
    path = Path(os.environ.get("AUTORESEARCH_RESULT") or "result.json")
    result = {
        **summary,
        "val_bpb": _last_val_bpb,
        "scale": SCALE_NAME,
        "seed": SEED,
        "data": DATA_SOURCE,
        "time_budget": TIME_BUDGET,
        "max_seq_len": MAX_SEQ_LEN,
        "vocab_size": VOCAB_SIZE,
        "eval_tokens": EVAL_TOKENS,
        "device": device_name(),
        "peak_flops": gpu_peak_flops(),
        "torch": torch.__version__,
        "prepare_sha256": prepare_sha256(),
        "harness_train_seconds": counted[0] if counted else None,
        "harness_num_steps": len(_optimizer_steps),
        "harness_uncounted_seconds": sum(uncounted),
    }
    _write_atomic(path, json.dumps(result, indent=1).encode())
    return path


# ---------------------------------------------------------------------------------------------
# The data step checked: `prepare.py --check`, what `autoresearch check` asks before a campaign


def check_data_step(source: str, vocab_size: int, num_shards: int | None) -> str:
    """What `prepare.py` with these arguments would do, in one line, writing, downloading and
    locking nothing: a campaign's start runs that step, and a cache it cannot write failed it only
    then. Raises as the step would fail: OSError for a cache that cannot be made or written,
    ValueError for a data URL that is none, RuntimeError for a damaged shard record."""
    data = data_dir(source)
    if source == "climbmix":
        num_shards = _prepared_shards(data) if num_shards is None else num_shards
        indices = [*range(num_shards), VAL_SHARD]
        missing = [i for i in indices if not _kept_shard(data / _shard_name(i), quiet=True)]
        work = []
        if missing:
            work.append(f"download {len(missing)} of {len(indices)} climbmix shards from {_data_url()}")
            _check_can_prepare(data, "climbmix shards")
        elif not _shards_recorded(data, num_shards):
            _check_can_write(data, "climbmix shards")
    else:
        work = [] if _offline_corpus_whole(data) else ["build the offline corpus"]
        if work:
            _check_can_prepare(data, "the offline corpus")
    tokenizer = tokenizer_dir(source, vocab_size)
    unused: list[str] = []  # why a saved tokenizer is not used: said in the line, as nothing is trained
    if _cached_tokenizer(tokenizer / TOKENIZER_FILE, vocab_size, unused.append) is None:
        work.append(f"train the {vocab_size}-token tokenizer")
        _check_can_prepare(tokenizer, "the tokenizer")
    if not work:
        return f"ready: the {source} data and the {vocab_size}-token tokenizer are prepared in {cache_dir()}"
    return "; ".join([f"would {' and '.join(work)} in {cache_dir()}", *unused])


def _check_can_write(folder: Path, what: str) -> None:
    """Raise OSError where `folder` could not be made and written, judged by the nearest folder on
    its path that exists, by its permissions (and a read-only mount), without a write. A link on
    the path to what is not there (a scratch space not mounted here) is no place to make it in:
    the step's mkdir fails on it, "File exists"."""
    existing = folder
    while not existing.exists() and existing != existing.parent:  # (exists: False under a file)
        if existing.is_symlink():
            raise OSError(
                f"{existing} is a link to {os.readlink(existing)}, which is not there, so {folder} "
                f"cannot be made for {what}"
            )
        existing = existing.parent
    if not existing.is_dir():
        raise OSError(f"{existing} is not a folder, so {folder} cannot be made for {what}")
    if why := _unwritable(existing):
        raise OSError(f"{existing} {why}, so {what} cannot be written in {folder}")


def _check_can_prepare(folder: Path, what: str) -> None:
    """`_check_can_write`, and raise OSError where the step could not lock `folder` (`_preparing`):
    its lock file lies beside it, in its parent, which a folder writable itself may sit in
    read-only (a scratch folder made for the user in a shared cache)."""
    _check_can_write(folder, what)
    lock = folder.with_name(f"{folder.name}.lock")
    if not folder.exists():  # (its parent is made with it, where the write check looked)
        return
    if not lock.exists():
        if why := _unwritable(folder.parent):
            raise OSError(f"{folder.parent} {why}, so {lock.name}, the lock of {what}, cannot be made in it")
    elif os.statvfs(lock).f_flag & os.ST_RDONLY:  # (`_open_lock` opens it for writing first)
        raise OSError(f"{lock} is on a read-only file system, so {what} cannot be locked with it")
    elif not os.access(lock, os.R_OK):  # (opened for reading where it cannot be for writing)
        raise OSError(f"{lock} cannot be read by this user, so {what} cannot be locked with it")


def _unwritable(folder: Path) -> str | None:
    """Why files cannot be made in `folder`, an existing folder, or None; by its permissions and
    its mount, without a write."""
    if os.access(folder, os.W_OK | os.X_OK):
        return None
    read_only = os.statvfs(folder).f_flag & os.ST_RDONLY  # (no permission mends that: say it)
    return "is on a read-only file system" if read_only else "cannot be written by this user"


def _shard_count(text: str) -> int:
    """--num-shards, checked before anything is downloaded or recorded."""
    value = int(text) if text.strip().isdecimal() else None  # (isdigit takes ², which int refuses)
    if not _valid_shard_count(value):
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {VAL_SHARD}, not {text}")
    return value


# What an interrupted preparation says: a shard's part is resumed by the next download (_take_over_parts).
INTERRUPTED = (
    "interrupted: finished files, and the parts of shards under way that the server lets resume, are kept; "
    "run the same command again to resume"
)


def _interrupted(signum: int, frame: object) -> None:
    """SIGTERM as Ctrl-C during a download: a campaign's stop ends its data step so, as do scancel
    and preemption, and by default it killed the step at once, saying nothing of what it kept.
    (Not while the tokenizer trains, where it writes nothing until done and a native step could
    hold the interrupt for minutes.)"""
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Download data and train the tokenizer for a scale.", allow_abbrev=False
    )
    parser.add_argument("--scale", choices=sorted(SCALES), default=SCALE_NAME)
    parser.add_argument("--data", choices=("offline", "climbmix"), default=None, help="default: the scale's")
    parser.add_argument(
        "--num-shards",
        type=_shard_count,
        default=None,
        help="climbmix training shards (default: as last prepared, else 10)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="say what this command would do, or why it would fail; write nothing",
    )
    args = parser.parse_args()
    scale = SCALES[args.scale]
    source = args.data or (os.environ.get("AUTORESEARCH_DATA") or scale.data)
    try:
        if args.check:
            print(check_data_step(source, scale.vocab_size, args.num_shards))
            return
        log(f"preparing scale {args.scale}: data {source}, vocab {scale.vocab_size}, cache {cache_dir()}")
        if source == "climbmix":
            signal.signal(signal.SIGTERM, _interrupted)
            download_climbmix(args.num_shards)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        else:
            build_offline_corpus()
        train_tokenizer(source, scale.vocab_size)
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED)
    except DownloadFailed as err:
        if err.answered:
            why = "the server answered: AUTORESEARCH_DATA_URL chooses another;"
        elif err.too_slow:
            why = f"a server trickling under {DOWNLOAD_MIN_RATE / 1000:g} kB/s per download, or a link that slow;"
        else:
            why = "no network?"
        sys.exit(
            f"error: {err}\n({why} the offline corpus needs none: --data offline here, campaign.data=offline in a campaign)"
        )
    except OSError as err:  # a read-only cache, a full disk
        sys.exit(f"error: {err} (the cache is {cache_dir()}; AUTORESEARCH_CACHE chooses another)")
    except (RuntimeError, ValueError) as err:  # a corpus too small, a damaged record
        sys.exit(f"error: {err}")
    log("ready")


_SEALED = _seal()  # last: every global above is part of it

if __name__ == "__main__":
    main()
