"""The harness: constants, data (offline and climbmix), tokenizer, packing, and the metric."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import gc
import hashlib
import http.server
import io
import itertools
import json
import math
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import tmpfs_at
from trainer_helpers import TRAINER_DIR, ConstantLogits, random_gpt

# ---------------------------------------------------------------------------------------------
# Constants and environment


def test_scales_match_the_reference(prepare_mod: ModuleType) -> None:
    gpt2 = prepare_mod.SCALES["gpt2"]
    assert (gpt2.max_seq_len, gpt2.time_budget, gpt2.eval_tokens, gpt2.vocab_size) == (
        2048,
        300,
        40 * 524288,
        8192,
    )
    assert prepare_mod.SCALE_NAME == "cpu"
    assert (prepare_mod.MAX_SEQ_LEN, prepare_mod.VOCAB_SIZE, prepare_mod.DATA_SOURCE) == (
        256,
        2048,
        "offline",
    )


def _harness_constants(env: dict[str, str]) -> dict:
    code = (
        "import json, prepare as p; print(json.dumps([p.SCALE_NAME, p.MAX_SEQ_LEN, p.TIME_BUDGET, "
        "p.EVAL_TOKENS, p.VOCAB_SIZE, p.SEED, p.DATA_SOURCE]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=TRAINER_DIR, env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def test_environment_overrides_are_read_at_import(harness_env) -> None:
    env = harness_env(scale="gpt2", time_budget="3.5", seed="7", data="offline")
    assert _harness_constants(env) == ["gpt2", 2048, 3.5, 40 * 524288, 8192, 7, "offline"]
    assert _harness_constants(harness_env(scale="cpu")) == ["cpu", 256, 20.0, 128 * 256, 2048, 42, "offline"]


@pytest.mark.parametrize(
    ("setting", "value", "takes"),
    [
        ("scale", "tiny", "one of cpu, gpt2"),
        ("data", "web", "one of offline, climbmix"),
        ("time_budget", "5min", "a number of seconds above 0"),
        ("time_budget", "-5", "a number of seconds above 0"),
        ("time_budget", "nan", "a number of seconds above 0"),
        ("seed", "x", "a whole number from -2**63 to 2**64 - 1"),
        ("seed", str(2**64), "a whole number from -2**63 to 2**64 - 1"),
        ("seed", str(-(2**63) - 1), "a whole number from -2**63 to 2**64 - 1"),
    ],
)
def test_a_setting_out_of_range_is_refused_in_one_line(
    harness_env, tmp_path: Path, setting: str, value: str, takes: str
) -> None:
    """A value that did not parse ended the import in a traceback whose last line, a run's crash
    reason, named no variable ("could not convert string to float: '5min'"); a budget of -5 or nan
    was taken. Both the harness under train.py and prepare.py's command say it in one line."""
    env = harness_env(**{setting: value})
    for proc in (
        subprocess.run(
            [sys.executable, "-c", "import prepare"], cwd=TRAINER_DIR, env=env, capture_output=True, text=True
        ),
        _run_prepare(env, tmp_path),
    ):
        name = f"AUTORESEARCH_{setting.upper()}"
        assert (proc.returncode, proc.stderr) == (2, f"error: {name} must be {takes}, not {value!r}\n")


def test_the_seed_range_is_torchs(prepare_mod: ModuleType) -> None:
    """AUTORESEARCH_SEED takes every seed torch.manual_seed does, and refuses the first it would not."""
    with torch.random.fork_rng():  # (the other tests' random state left as it was)
        for seed in (prepare_mod.SEED_RANGE[0], prepare_mod.SEED_RANGE[-1]):
            torch.manual_seed(seed)
        for seed in (prepare_mod.SEED_RANGE[0] - 1, prepare_mod.SEED_RANGE[-1] + 1):
            with pytest.raises(ValueError, match="Overflow"):
                torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# Offline corpus and tokenizer


def test_offline_split_is_deterministic(
    prepare_mod: ModuleType, use_offline_cache: Path, harness_env
) -> None:
    docs = prepare_mod.offline_documents()
    digest = hashlib.sha256("\x00".join(docs).encode()).hexdigest()
    code = "import hashlib, prepare as p; print(hashlib.sha256('\\x00'.join(p.offline_documents()).encode()).hexdigest())"
    other_run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=TRAINER_DIR,
        env=harness_env(scale="cpu", cache=str(use_offline_cache)),
        capture_output=True,
        text=True,
        check=True,
    )
    assert other_run.stdout.strip() == digest

    folder = prepare_mod.data_dir("offline")
    train = pq.read_table(folder / "train.parquet").column("text").to_pylist()
    val = pq.read_table(folder / "val.parquet").column("text").to_pylist()
    assert train + val and not set(train) & set(val)
    assert sorted(train + val) == sorted(docs)
    assert all(prepare_mod.is_offline_val(d) for d in val)
    assert 0.08 < len(val) / len(docs) < 0.18


def test_tokenizer_is_cached_and_deterministic(
    prepare_mod: ModuleType, use_offline_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = prepare_mod.train_tokenizer("offline", 2048)
    stamp = path.stat().st_mtime_ns
    assert prepare_mod.train_tokenizer("offline", 2048) == path and path.stat().st_mtime_ns == stamp

    enc = prepare_mod.load_tokenizer()
    assert enc.n_vocab == prepare_mod.VOCAB_SIZE == 2048
    text = "def main() -> None:\n    return 42  # naïve ünïcode"
    assert enc.decode(enc.encode_ordinary(text)) == text
    specials = sorted(enc.encode_single_token(t) for t in prepare_mod.SPECIAL_TOKENS)
    assert specials == [2044, 2045, 2046, 2047]

    nbytes = prepare_mod.token_bytes(enc)
    assert nbytes[specials].tolist() == [0, 0, 0, 0]
    assert all(nbytes[i] == len(enc.decode_single_token_bytes(i)) > 0 for i in range(0, 2044, 97))

    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path))  # an independent build gives the same BPE
    prepare_mod.build_offline_corpus()
    again = prepare_mod.train_tokenizer("offline", 2048)
    assert again != path and again.read_bytes() == path.read_bytes()


def test_a_damaged_offline_cache_is_rebuilt(
    prepare_mod: ModuleType, offline_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A tokenizer or corpus file cut short was trusted: prepare.py said "ready" and every run
    died reading it or in pyarrow."""
    cache = tmp_path / "cache"
    shutil.copytree(offline_cache, cache)
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(cache))
    tokenizer = prepare_mod.tokenizer_dir() / "tokenizer.json"
    val = prepare_mod.data_dir() / "val.parquet"
    whole_tokenizer, whole_val = tokenizer.read_bytes(), pq.read_table(val)
    tokenizer.write_bytes(whole_tokenizer[:1000])
    val.write_bytes(val.read_bytes()[:5000])
    # What the kill that damaged them could leave too: writes' temporaries, one of them a live one.
    killed = [val.with_name("val.parquet.9-killed.tmp"), tokenizer.with_name("tokenizer.json.9-killed.tmp")]
    live = val.with_name("train.parquet.7-live.tmp")
    for tmp in [*killed, live]:
        tmp.write_bytes(b"half a file")
    for tmp in killed:
        os.utime(tmp, (0, time.time() - prepare_mod.STALE_TMP_S - 60))
    enc = prepare_mod.load_tokenizer()
    assert enc.n_vocab == prepare_mod.VOCAB_SIZE and tokenizer.read_bytes() == whole_tokenizer
    assert pq.read_table(prepare_mod.split_files("val")[0]).equals(whole_val)
    assert not any(tmp.exists() for tmp in killed) and live.exists()


def test_the_tokenizer_file_holds_the_trained_bpe_exactly(
    prepare_mod: ModuleType, use_offline_cache: Path
) -> None:
    """Stored as data (base64 token bytes in rank order), it reads back as the BPE rustbpe trains
    on the same text, rank for rank, and encodes the validation text as that BPE does."""
    import rustbpe
    import tiktoken

    texts = [t for batch in prepare_mod.iter_texts("train", passes=1) for t in batch]
    bpe = rustbpe.Tokenizer()
    bpe.train_from_iterator(iter(texts), prepare_mod.VOCAB_SIZE - len(prepare_mod.SPECIAL_TOKENS))
    ranks = {bytes(token): rank for token, rank in bpe.get_mergeable_ranks()}
    specials = {t: len(ranks) + i for i, t in enumerate(prepare_mod.SPECIAL_TOKENS)}
    trained = tiktoken.Encoding(
        name="t", pat_str=bpe.get_pattern(), mergeable_ranks=ranks, special_tokens=specials
    )

    path = prepare_mod.tokenizer_dir() / "tokenizer.json"
    loaded = prepare_mod._read_tokenizer(path, prepare_mod.VOCAB_SIZE)
    assert loaded._mergeable_ranks == ranks and loaded._special_tokens == specials
    assert any(not token.isascii() for token in ranks)  # (bytes that are not text round-trip too)
    val = "\n".join(t for batch in prepare_mod.iter_texts("val", passes=1) for t in batch)
    assert loaded.encode(val, allowed_special="all") == trained.encode(val, allowed_special="all")


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        ({"mergeable_ranks": lambda ranks: ranks[:300]}, "ValueError: 300 distinct tokens, not 2044"),
        (  # (tiktoken's encode panicked in Rust on the byte missing, in every run)
            {"mergeable_ranks": lambda ranks: ["/v79/A==", *ranks[1:]]},
            "ValueError: 1 of the 256 single bytes are not among its tokens",
        ),
        (
            {"name": "climbmix-v2048"},
            "ValueError: the tokenizer of 'climbmix-v2048', not of '{folder}'",
        ),
        (  # (planted in a shared cache: its encode backtracks for ever on a run of a's)
            {"pat_str": "(a+)+$|" + "'(?i:[sdmt]|ll|ve|re)"},
            "ValueError: its split pattern is not the harness's",
        ),
        ({"pat_str": None}, "ValueError: its split pattern is not the harness's"),
    ],
)
def test_a_tokenizer_file_of_another_vocabulary_or_folder_is_trained_again(
    prepare_mod: ModuleType,
    offline_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    edit: dict,
    why: str,
) -> None:
    """A tokenizer.json that reads as JSON but is not this vocabulary's, lacks a single byte, was
    copied from another folder (other data, another Python's offline corpus), or splits text by a
    pattern not the harness's, is not trusted: it is trained again, said in a line."""
    cache = tmp_path / "cache"
    shutil.copytree(offline_cache, cache)
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(cache))
    path = prepare_mod.tokenizer_dir() / "tokenizer.json"
    whole = path.read_bytes()
    spec = json.loads(whole)
    changed = {key: value(spec[key]) if callable(value) else value for key, value in edit.items()}
    path.write_text(json.dumps({**spec, **changed}))
    lines: list[str] = []
    monkeypatch.setattr(prepare_mod, "log", lines.append)
    monkeypatch.setattr(prepare_mod, "_TOKENIZERS", {})
    assert prepare_mod.load_tokenizer().n_vocab == 2048 and path.read_bytes() == whole
    assert (
        lines[0] == f"{path} is damaged ({why.format(folder=path.parent.name)}): training the tokenizer again"
    )


def test_a_tokenizer_this_user_may_not_read_is_named_in_one_line(
    harness_env, offline_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A tokenizer.json of mode 600, another user's in a cache shared by a group, ended every run
    in a PermissionError traceback. It now stops in one line naming the file and what to do."""
    shared = tmp_path_factory.mktemp("shared", numbered=True)
    cache = shared / "cache"
    shutil.copytree(offline_cache, cache)
    tokenizer = next((cache / "tokenizer").glob("*/tokenizer.json"))
    for folder in (cache, *cache.rglob("*")):  # (a group's cache: its folders writable to all)
        if folder.is_dir():
            folder.chmod(0o777)
    tokenizer.chmod(0o600)
    run = f"import sys; sys.path.insert(0, {str(TRAINER_DIR)!r}); import prepare; prepare.load_tokenizer()"
    command = [sys.executable, "-c", run]  # (as train.py loads it, in every run)
    modes = {folder: folder.stat().st_mode for folder in (shared, *shared.parents)}
    if os.geteuid() == 0:  # (root reads through a file's mode: run as nobody, who can reach the cache)
        for folder, mode in modes.items():
            folder.chmod(mode | 0o005)
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    try:
        proc = subprocess.run(
            command,
            cwd=shared,
            env=harness_env(cache=str(cache)),
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        for folder, mode in modes.items():
            folder.chmod(mode)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr  # (a refusal, not the node's)
    assert proc.stderr.splitlines()[-1] == (
        f"error: {tokenizer} cannot be read by this user: its owner makes it readable (chmod g+r)"
    )


class _Planted:
    """A pickle that, unpickled, makes the folder `marker`: what a writer of a shared cache could
    leave as tokenizer.pkl to run code in every experiment that reads it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.mkdir, (str(self.marker),))


def test_a_planted_pickle_in_the_cache_is_never_run(
    prepare_mod: ModuleType, offline_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The tokenizer was a pickle, read with pickle.loads from the cache, which on a cluster is a
    shared folder: anyone able to write there ran code in every run. A tokenizer.pkl (the old
    format, or a planted one) is now never read; the tokenizer is trained again, said in a line."""
    import pickle

    cache = tmp_path / "cache"
    shutil.copytree(offline_cache, cache)
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(cache))
    folder = prepare_mod.tokenizer_dir()
    for trained in folder.iterdir():
        trained.unlink()
    marker = tmp_path / "the-pickle-ran"
    (folder / "tokenizer.pkl").write_bytes(pickle.dumps(_Planted(marker)))
    lines: list[str] = []
    monkeypatch.setattr(prepare_mod, "log", lines.append)
    monkeypatch.setattr(prepare_mod, "_TOKENIZERS", {})

    enc = prepare_mod.load_tokenizer()
    assert not marker.exists()
    whole = (offline_cache / folder.relative_to(cache) / "tokenizer.json").read_bytes()
    assert enc.n_vocab == prepare_mod.VOCAB_SIZE and (folder / "tokenizer.json").read_bytes() == whole
    assert (
        lines[0]
        == f"{folder / 'tokenizer.pkl'} is a pickle, which is never read: training the tokenizer again"
    )


# ---------------------------------------------------------------------------------------------
# Packing and the dataloader


def _docs(n: int) -> list[list[int]]:
    """Documents starting with BOS (0) whose other tokens are unique, so each can be traced."""
    rng = random.Random(0)
    docs, token = [], 1
    for _ in range(n):
        length = rng.randint(1, 40)
        docs.append([0, *range(token, token + length)])
        token += length
    return docs


def _segments(row: list[int], bos: int = 0) -> list[list[int]]:
    """A packed row cut at each BOS."""
    segments: list[list[int]] = []
    for token in row:
        if token == bos:
            segments.append([])
        segments[-1].append(token)
    return segments


def test_pack_rows_best_fit_without_padding(prepare_mod: ModuleType) -> None:
    docs = _docs(300)
    rows = list(prepare_mod.pack_rows(docs, row_len=33, buffer_size=16))
    assert len(rows) > 100
    by_first_token = {doc[1]: doc for doc in docs}
    seen: set[int] = set()
    for row in rows:
        assert len(row) == 33 and row[0] == 0  # exact length, no padding, starts at a document's BOS
        segments = _segments(row)
        for i, segment in enumerate(segments):
            doc = by_first_token[segment[1]] if len(segment) > 1 else None
            if doc is None or len(segment) < len(doc):
                assert i == len(segments) - 1  # only the last document of a row is ever cropped
            if doc is not None:
                assert segment == doc[: len(segment)] and segment[1] not in seen  # each document used once
                seen.add(segment[1])
    assert rows == list(prepare_mod.pack_rows(docs, row_len=33, buffer_size=16))


def test_pack_rows_crops_when_nothing_fits(prepare_mod: ModuleType) -> None:
    long_docs = [[0, *range(100 * i + 1, 100 * i + 50)] for i in range(3)]
    rows = list(prepare_mod.pack_rows(long_docs, row_len=20))
    assert rows == [doc[:20] for doc in long_docs]


def test_dataloader_batches(prepare_mod: ModuleType, use_offline_cache: Path) -> None:
    bos = prepare_mod.load_tokenizer().encode_single_token(prepare_mod.BOS_TOKEN)

    def first_batches(split: str, seed: int, n: int = 3) -> list[torch.Tensor]:
        loader = prepare_mod.make_dataloader(split, 4, seq_len=64, seed=seed)
        return [torch.cat(next(loader)) for _ in range(n)]

    x, y = next(prepare_mod.make_dataloader("train", 4, seq_len=64))
    assert x.shape == y.shape == (4, 64) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1]) and (x[:, 0] == bos).all()
    same = first_batches("train", 1)
    assert all(torch.equal(a, b) for a, b in zip(same, first_batches("train", 1), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(same, first_batches("train", 2), strict=True))
    val = first_batches("val", 1)
    assert all(torch.equal(a, b) for a, b in zip(val, first_batches("val", 2), strict=True))


def test_worker_shares_split_every_document_once(prepare_mod: ModuleType, use_offline_cache: Path) -> None:
    whole = next(prepare_mod.iter_texts("train", seed=3))
    parts = [next(prepare_mod.iter_texts("train", seed=3, share=(k, 3))) for k in range(3)]
    assert sorted(t for part in parts for t in part) == sorted(whole)
    assert all(parts) and not set(parts[0]) & set(parts[1])


def test_worker_processes_feed_the_same_batches_every_time(
    prepare_mod: ModuleType, use_offline_cache: Path
) -> None:
    bos = prepare_mod.load_tokenizer().encode_single_token(prepare_mod.BOS_TOKEN)

    def first_batches(workers: int, n: int = 4) -> list[torch.Tensor]:
        loader = prepare_mod.make_dataloader("val", 4, seq_len=64, workers=workers)
        return [torch.cat(next(loader)) for _ in range(n)]

    with_workers = first_batches(2)
    assert all(torch.equal(a, b) for a, b in zip(with_workers, first_batches(2), strict=True))
    x, y = with_workers[0].chunk(2)
    assert x.dtype == torch.int64 and torch.equal(x[:, 1:], y[:, :-1]) and (x[:, 0] == bos).all()
    # Two workers interleave their halves of the documents: a different, equally fixed order.
    assert not all(torch.equal(a, b) for a, b in zip(with_workers, first_batches(0), strict=True))


def test_a_gpu_job_checks_once_and_its_loader_workers_do_not(
    offline_cache: Path, harness_env: Callable[..., dict[str, str]]
) -> None:
    """The training process checks for a GPU (faked present here, as on a GPU node); its CPU-only
    loader workers, fresh processes that see none, must not stop on the check."""
    code = (
        "import torch; torch.cuda.is_available = lambda: True\n"
        "import os, prepare\n"
        "assert 'AUTORESEARCH_REQUIRE_GPU' not in os.environ\n"
        "x, y = next(prepare.make_dataloader('val', 4, seq_len=64, workers=2))\n"
        "print(tuple(x.shape))\n"
    )
    env = harness_env(scale="cpu", cache=str(offline_cache), require_gpu="1")
    env |= {"CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(TRAINER_DIR)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "(4, 64)"


def test_the_loaders_thread_is_stopped_before_the_interpreter_exits(
    offline_cache: Path, harness_env: Callable[..., dict[str, str]]
) -> None:
    """A prefetch thread still in torch or pipe code at shutdown aborts the process (SIGABRT)
    after train.py wrote its result. The check below runs at exit after the harness's own
    handlers (atexit runs them last-registered first), and a closed loader stops its thread at once."""
    code = (
        "import atexit, threading\n"
        "atexit.register(lambda: print('alive at exit:', [t.name for t in threading.enumerate()"
        " if t.name == prepare.PREFETCH_THREAD]))\n"
        "import prepare\n"
        "closed = prepare.make_dataloader('val', 4, seq_len=64, workers=0)\n"
        "next(closed); closed.close()\n"
        "print('alive after close:', [t.name for t in threading.enumerate() if t.name == prepare.PREFETCH_THREAD])\n"
        "left_open = prepare.make_dataloader('val', 4, seq_len=64, workers=2)\n"
        "x, y = next(left_open)  # as train.py leaves its loader\n"
    )
    env = harness_env(scale="cpu", cache=str(offline_cache)) | {"PYTHONPATH": str(TRAINER_DIR)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == ["alive after close: []", "alive at exit: []"]


def test_a_failing_loader_worker_is_reported(prepare_mod: ModuleType, use_offline_cache: Path) -> None:
    batches = prepare_mod._worker_batches(("test", 2, 16, 1, "offline", prepare_mod.VOCAB_SIZE), 1)
    with pytest.raises(RuntimeError, match="test dataloader worker 0 exited with code 1"):
        next(batches)


# ---------------------------------------------------------------------------------------------
# The metric


def _counted(prepare_mod: ModuleType, batch_size: int) -> tuple[int, int]:
    """Target tokens with bytes, and their bytes, over the evaluation's validation batches."""
    nbytes_of = prepare_mod.token_bytes(prepare_mod.load_tokenizer())
    tokens = total = 0
    for _, y in prepare_mod.validation_batches(batch_size, "cpu"):
        nbytes = nbytes_of[y]
        tokens += int((nbytes > 0).sum())
        total += int(nbytes.sum())
    return tokens, total


@pytest.mark.parametrize("suppressed", [0, 4])
def test_uniform_model_scores_log2_vocab_per_token(
    prepare_mod: ModuleType, use_offline_cache: Path, suppressed: int
) -> None:
    """Uniform logits cost log2(V) bits per counted token. With the 4 special tokens at -1e9 (the
    rest uniform over V - 4), BOS targets would cost 1e9 nats each if they were counted."""
    vocab = prepare_mod.VOCAB_SIZE
    tokens, total = _counted(prepare_mod, 16)
    model = ConstantLogits(vocab, list(range(vocab - suppressed, vocab)))
    bpb = prepare_mod.evaluate_bpb(model, 16)
    assert bpb == pytest.approx(math.log2(vocab - suppressed) * tokens / total, rel=1e-6)


def test_val_bpb_does_not_depend_on_the_batch_size(
    train_mod: ModuleType, prepare_mod: ModuleType, use_offline_cache: Path
) -> None:
    """Batch sizes that do not divide the 128 rows (5, 48) or exceed them (256) score the same rows:
    once they scored fewer or wrapped around, and the same model moved by 0.03-0.04."""
    model = random_gpt(  # one small layer, weights that make every logit count
        train_mod,
        std=0.3,
        vocab_size=prepare_mod.VOCAB_SIZE,
        seq_len=prepare_mod.MAX_SEQ_LEN,
        n_layer=1,
        n_embd=32,
        window_pattern="L",
        short_window=prepare_mod.MAX_SEQ_LEN,
    )
    scores = {b: prepare_mod.evaluate_bpb(model, b) for b in (8, 5, 48, 128, 256)}
    assert all(v == pytest.approx(scores[8], rel=1e-6) for v in scores.values()), scores


class ShapeRecorder(ConstantLogits):
    def __init__(self, vocab: int) -> None:
        super().__init__(vocab)
        self.shapes: set[tuple[int, ...]] = set()

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        self.shapes.add(tuple(idx.shape))
        return super().forward(idx)


@pytest.mark.parametrize("batch_size", [48, 256])
def test_the_model_always_sees_the_batch_size_it_was_evaluated_with(
    prepare_mod: ModuleType, use_offline_cache: Path, batch_size: int
) -> None:
    """The last rows are padded to a full batch, so a compiled model never compiles a new shape."""
    model = ShapeRecorder(prepare_mod.VOCAB_SIZE)
    bpb = prepare_mod.evaluate_bpb(model, batch_size)
    assert model.shapes == {(batch_size, prepare_mod.MAX_SEQ_LEN)}
    assert bpb == pytest.approx(prepare_mod.evaluate_bpb(ConstantLogits(prepare_mod.VOCAB_SIZE), 8), rel=1e-9)


@pytest.mark.parametrize(("workers", "batch_sizes"), [(0, (8, 5, 48, 256)), (2, (8, 48))])
def test_validation_rows_do_not_depend_on_the_batch_size(
    prepare_mod: ModuleType, use_offline_cache: Path, workers: int, batch_sizes: tuple[int, ...]
) -> None:
    """With loader workers taking turns, the rows read would follow the batch asked for."""

    def rows(batch_size: int) -> torch.Tensor:
        batches = list(prepare_mod.validation_batches(batch_size, "cpu", workers=workers))
        assert all(len(x) == batch_size for x, _ in batches[:-1]) and 0 < len(batches[-1][0]) <= batch_size
        return torch.cat([_rows(x, y) for x, y in batches])

    first = rows(batch_sizes[0])
    assert first.shape == (prepare_mod.EVAL_ROWS, prepare_mod.MAX_SEQ_LEN + 1)
    assert all(torch.equal(rows(b), first) for b in batch_sizes[1:])


def _rows(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The packed rows of seq_len + 1 tokens a batch of inputs and targets was cut from."""
    return torch.cat([x, y[:, -1:]], dim=1)


def test_validation_scores_each_document_once(prepare_mod: ModuleType, use_offline_cache: Path) -> None:
    """One pass of the split is packed at a time: an endless stream packed with a buffer larger
    than the split put copies of a document side by side (scripts/eval_rows.py counts them)."""
    enc = prepare_mod.load_tokenizer()
    bos = enc.encode_single_token(prepare_mod.BOS_TOKEN)
    texts = pq.read_table(prepare_mod.split_files("val")[0]).column("text").to_pylist()
    docs = {(bos, *enc.encode_ordinary(t)) for t in texts}
    loader = prepare_mod.make_dataloader("val", 8)
    rows = [row for _ in range(60) for row in _rows(*next(loader)).tolist()]
    scored = [
        tuple(s)
        for row in rows[: prepare_mod.EVAL_TOKENS // prepare_mod.MAX_SEQ_LEN]
        for s in _segments(row, bos)
    ]
    whole = [s for s in scored if s in docs]  # the others are cropped at a row's end
    assert len(whole) == len(set(whole)) > 0.6 * len(docs)
    assert rows[0] in rows[1:]  # more rows than one pass holds: the pass starts again


class PeekingModel(torch.nn.Module):
    """Cheats by reading the next input token, which is the target: the harness must refuse it."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.scale = torch.nn.Parameter(torch.tensor(30.0))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.scale * torch.nn.functional.one_hot(idx.roll(-1, dims=1), self.vocab).float()


class SelfScoringModel(ConstantLogits):
    """Returns (logits, its own flattering loss): the harness accepts logits only."""

    def forward(self, idx: torch.Tensor):
        return super().forward(idx), torch.zeros(())


def test_metric_cannot_be_gamed_from_train_py(prepare_mod: ModuleType, use_offline_cache: Path) -> None:
    with pytest.raises(RuntimeError, match="not causal"):
        prepare_mod.evaluate_bpb(PeekingModel(prepare_mod.VOCAB_SIZE), 16)
    with pytest.raises(TypeError, match="must return logits"):
        prepare_mod.evaluate_bpb(SelfScoringModel(prepare_mod.VOCAB_SIZE), 16)


def _fake_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, **kwargs) -> torch.Tensor:
    return torch.zeros(targets.shape)


# Ways train.py could change the harness at run time that a static check of its source misses.
TAMPERING = {
    "vars(prepare)[...]": lambda p, mp: mp.setitem(vars(p), "EVAL_TOKENS", 256),
    "sys.modules['prepare']": lambda p, mp: mp.setattr(sys.modules["prepare"], "EVAL_ROWS", 1),
    "a table changed in place": lambda p, mp: mp.setitem(
        p.SCALES, "cpu", dataclasses.replace(p.SCALES["cpu"], eval_tokens=256)
    ),
    "a function replaced": lambda p, mp: mp.setattr(p, "token_bytes", lambda enc, device: None),
    "a function's code replaced": lambda p, mp: mp.setattr(
        p.check_causal, "__code__", (lambda *args: None).__code__
    ),
    "a builtin shadowed": lambda p, mp: mp.setattr(p, "sum", lambda *args: 0, raising=False),
    "the budget check replaced": lambda p, mp: mp.setattr(p, "_overrun", lambda *args: ""),
    "the training count's stamps replaced": lambda p, mp: mp.setattr(p, "_training_stamps", []),
    "the count of optimizer steps unhooked": lambda p, mp: mp.delitem(
        p.torch_optimizer._global_optimizer_post_hooks, p._OPTIMIZER_HOOK.id
    ),
    "torch's kernel": lambda p, mp: mp.setattr(torch._C._nn, "cross_entropy_loss", _fake_cross_entropy),
}


@pytest.mark.parametrize("how", TAMPERING)
def test_a_harness_changed_at_run_time_fails_the_evaluation(
    prepare_mod: ModuleType, use_offline_cache: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    TAMPERING[how](prepare_mod, monkeypatch)
    with pytest.raises(prepare_mod.HarnessModified, match="after import|not torch's own|shadowing|removed"):
        prepare_mod.evaluate_bpb(ConstantLogits(prepare_mod.VOCAB_SIZE), 32)


def test_train_py_may_wrap_torchs_cross_entropy_for_its_own_loss(
    prepare_mod: ModuleType, use_offline_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The metric's cross-entropy is bound at import: a later patch of F.cross_entropy (train.py's
    own loss, say) neither reaches the figure nor counts as an edit of the harness."""
    honest = prepare_mod.evaluate_bpb(ConstantLogits(prepare_mod.VOCAB_SIZE), 32)
    monkeypatch.setattr(torch.nn.functional, "cross_entropy", _fake_cross_entropy)
    assert prepare_mod.evaluate_bpb(ConstantLogits(prepare_mod.VOCAB_SIZE), 32) == honest


def test_the_stored_val_bpb_cannot_be_overwritten(
    prepare_mod: ModuleType, use_offline_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AUTORESEARCH_RESULT", str(tmp_path / "result.json"))
    prepare_mod.evaluate_bpb(ConstantLogits(prepare_mod.VOCAB_SIZE), 32)
    alias = prepare_mod  # `p = prepare; p._last_val_bpb = 0`: no write to the name `prepare`
    monkeypatch.setattr(alias, "_last_val_bpb", 0.0)
    with pytest.raises(prepare_mod.HarnessModified, match="_last_val_bpb was changed"):
        prepare_mod.write_result({})
    assert not (tmp_path / "result.json").exists()


def test_torch_patched_before_the_harness_is_imported_is_caught(harness_env, offline_cache: Path) -> None:
    """Bound at import, a replacement made before the import would be what the harness binds."""
    code = (
        "import torch, torch.nn.functional as F\n"
        "F.cross_entropy = lambda logits, targets, **kw: torch.zeros(targets.shape)\n"
        "import prepare\n"
        "from trainer_helpers import ConstantLogits\n"
        "prepare.evaluate_bpb(ConstantLogits(prepare.VOCAB_SIZE), 32)\n"
    )
    env = harness_env(scale="cpu", cache=str(offline_cache))
    env["PYTHONPATH"] = os.pathsep.join([str(TRAINER_DIR), str(Path(__file__).parent)])
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "HarnessModified" in proc.stderr and "not torch's own" in proc.stderr


# ---------------------------------------------------------------------------------------------
# Hardware facts and the result file


@pytest.mark.parametrize(
    ("name", "flops"),
    [
        ("NVIDIA H100 80GB HBM3", 989.5e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H200", 989.5e12),
        ("NVIDIA H200 NVL", 835e12),  # not the SXM part's peak, though its name holds "H200"
        ("NVIDIA GH200 480GB", 989.5e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA L40S", 362e12),
        ("NVIDIA L4", 121e12),
        ("NVIDIA GeForce RTX 4090", 165.2e12),
        ("Some Future GPU", None),
        ("NVIDIA A100-SXM4-40GB MIG 1g.5gb", None),  # a slice: not the whole A100's peak
        ("NVIDIA H100 80GB HBM3 MIG 1g.10gb", None),
    ],
)
def test_gpu_peak_flops(prepare_mod: ModuleType, monkeypatch: pytest.MonkeyPatch, name: str, flops) -> None:
    assert prepare_mod.gpu_peak_flops("cpu") is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert prepare_mod.gpu_peak_flops() == flops


@pytest.fixture
def stamps(
    prepare_mod: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, request: pytest.FixtureRequest
) -> list[float]:
    """The harness's list of training-batch stamps, for a test to fill, with a val_bpb recorded and
    a result path; all are put back after, and so are its evaluations' starts (`evaluated_after`)."""
    before, stamps = prepare_mod._last_val_bpb, prepare_mod._training_stamps
    request.addfinalizer(lambda: prepare_mod._record_val_bpb(before))
    for sealed in (stamps, prepare_mod._evaluations, prepare_mod._optimizer_steps):  # the session's, sealed
        kept = sealed.copy()
        request.addfinalizer(lambda sealed=sealed, kept=kept: sealed.__setitem__(slice(None), kept))
    prepare_mod._optimizer_steps.clear()  # other tests' optimizers stepped in this session's module
    monkeypatch.setenv("AUTORESEARCH_RESULT", str(tmp_path / "result.json"))
    prepare_mod._record_val_bpb(1.25)
    return stamps


def evaluated_after(prepare_mod: ModuleType, stamps: list[float], seconds: float = 0.0) -> None:
    """Record an evaluation that began `seconds` after the last training batch."""
    prepare_mod._evaluations[:] = [stamps[-1] + seconds]


def test_write_result(
    prepare_mod: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, stamps: list[float]
) -> None:
    stamps.clear()  # whatever batches earlier tests drew in this session's module are not a run
    path = tmp_path / "out" / "result.json"
    monkeypatch.setenv("AUTORESEARCH_RESULT", str(path))
    prepare_mod._record_val_bpb(None)
    with pytest.raises(RuntimeError, match="before evaluate_bpb"):
        prepare_mod.write_result({"val_bpb": 0.1})
    prepare_mod._record_val_bpb(1.25)
    prepare_mod._evaluations[:] = [0.0]
    with pytest.raises(RuntimeError, match="before any training batch"):  # it trained on batches of its own
        prepare_mod.write_result({"val_bpb": 0.1})
    stamps.append(0.0)  # one training batch: too few waits to count, but drawn from the harness
    evaluated_after(prepare_mod, stamps, 0.25)
    summary = {"val_bpb": 0.1, "num_steps": 3, "training_seconds": 0.2}
    assert prepare_mod.write_result(summary) == path
    result = json.loads(path.read_text())
    assert result["val_bpb"] == 1.25  # the harness's figure, not the caller's
    assert result["num_steps"] == 3 and result["scale"] == "cpu" and result["seed"] == 42
    assert result["harness_train_seconds"] is None and result["harness_uncounted_seconds"] == 0.25
    assert result["prepare_sha256"] == hashlib.sha256((TRAINER_DIR / "prepare.py").read_bytes()).hexdigest()
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]


def test_write_result_counts_training_time_itself(prepare_mod: ModuleType, stamps: list[float]) -> None:
    """The budget's 0.1 s steps after a compilation stall of 0.4 budgets (40 s is 0.13 of the gpt2
    scale's): the stall is not training, so a run of the budget is a result (with the harness's
    count in it), and one of 1.3 budgets is not; also when most waits are short launches."""
    budget = prepare_mod.TIME_BUDGET
    summary = {"training_seconds": budget}

    def run_of(seconds: float, step: list[float]) -> list[float]:
        """Stamps: one batch, a compilation, then steps of `step`'s waits for `seconds`."""
        waits = [0.4 * budget] + step * round(seconds / sum(step))
        return [0.0, *itertools.accumulate(waits)]

    # One batch a step; and, as on a GPU where the host runs ahead, a long wait and 3 launches.
    for step in ([0.1], [0.094, 0.002, 0.002, 0.002]):
        stamps[:] = run_of(budget, step)
        evaluated_after(prepare_mod, stamps)
        result = json.loads(prepare_mod.write_result(summary).read_text())
        assert result["harness_train_seconds"] == pytest.approx(budget)
        assert result["harness_uncounted_seconds"] == pytest.approx(0.4 * budget)
        stamps[:] = run_of(1.3 * budget, step)
        evaluated_after(prepare_mod, stamps)
        over = rf"trained for {1.3 * budget:.1f} s .* over the {budget:g} s budget"
        with pytest.raises(prepare_mod.OverBudget, match=over):
            prepare_mod.write_result(summary)


def test_write_result_allows_train_py_its_steps_not_batches(
    prepare_mod: ModuleType, stamps: list[float]
) -> None:
    """train.py's untimed warm-up step and the step that crosses the budget are steps: with 16
    micro-batches a step (measured on a CPU: TOTAL_BATCH_SIZE = 2**15 at the 15 s budget, steps of
    2.5 s, each batch an even wait) an unedited stopping rule trained 1.33 budgets and was refused
    as over 1.1 budgets + 12 waits; 4 budgets still is."""
    budget, micro_batches = prepare_mod.TIME_BUDGET, 16
    step = budget / 6

    def run_of(steps: int) -> list[float]:
        """Stamps: the first batch, then `steps` steps of `micro_batches` even waits."""
        return [i * step / micro_batches for i in range(steps * micro_batches + 1)]

    stamps[:] = run_of(8)  # the untimed step, then 7 to cross the budget
    evaluated_after(prepare_mod, stamps)
    result = json.loads(prepare_mod.write_result({"num_steps": 8, "training_seconds": 7 * step}).read_text())
    assert result["harness_train_seconds"] == pytest.approx(8 * step)
    stamps[:] = run_of(25)
    evaluated_after(prepare_mod, stamps)
    with pytest.raises(prepare_mod.OverBudget, match=r"in 25 steps"):
        prepare_mod.write_result({"num_steps": 25})
    # A train.py that says it took 1 step, and steps no torch optimizer the harness counts, would take
    # its whole count for slack: at most half a budget.
    most = budget * (1 + prepare_mod.BUDGET_OVERRUN + prepare_mod.BUDGET_SLACK_MAX)
    with pytest.raises(prepare_mod.OverBudget, match=rf"in 1 steps.*at most {most:.1f} s"):
        prepare_mod.write_result({"num_steps": 1})
    # Where its optimizers stepped, the harness counted its 25 steps itself.
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    drawn = stamps.copy()
    for step in range(25):
        stamps[:] = drawn[: (step + 1) * micro_batches + 1]
        optimizer.step()
        optimizer.step()  # a second optimizer of the same step is not another step
    assert prepare_mod._optimizer_steps == [(step + 1) * micro_batches + 1 for step in range(25)]
    with pytest.raises(prepare_mod.OverBudget, match=r"in 25 steps"):
        prepare_mod.write_result({"num_steps": 1})


def test_a_budget_too_short_for_the_untimed_warm_up_is_said_to_be_the_budget(
    prepare_mod: ModuleType, stamps: list[float]
) -> None:
    """A budget of 4 steps: a GPU run's 10 untimed warm-up steps and the 5 that cross it are over
    the half budget of slack such a budget gets, in every run, and the refusal blamed train.py for
    training past it; it now says the budget is too short and what would hold them. An overrun
    beyond the 12 steps of slack is still train.py's."""
    budget = prepare_mod.TIME_BUDGET
    step = budget / 4
    stamps[:] = [i * step for i in range(16)]  # the first batch, then 15 steps of one batch
    prepare_mod._optimizer_steps[:] = range(
        2, 17
    )  # the harness's count of them, as a torch optimizer's hook keeps it
    evaluated_after(prepare_mod, stamps)
    needed = prepare_mod.BUDGET_SLACK_STEPS * step / prepare_mod.BUDGET_SLACK_MAX
    short = (
        rf"^the {budget:g} s time budget is too short for train\.py's {step:.2f} s steps: its untimed warm-up "
        rf"and the step that crosses the budget took the harness's count to {15 * step:.1f} s, over the "
        rf"{1.6 * budget:.1f} s allowed; raise the time budget \(campaign\.time_budget\) to at least {needed:.1f} s: its val_bpb"
    )
    with pytest.raises(prepare_mod.OverBudget, match=short):
        prepare_mod.write_result({"num_steps": 15, "training_seconds": 5 * step})
    stamps[:] = [i * step for i in range(22)]  # 21 steps: over the budget and all 12 steps of slack
    prepare_mod._optimizer_steps[:] = range(2, 23)
    evaluated_after(prepare_mod, stamps)
    with pytest.raises(prepare_mod.OverBudget, match=r"^train\.py trained for .* in 21 steps"):
        prepare_mod.write_result({"num_steps": 21, "training_seconds": 11 * step})


def test_a_budget_that_holds_its_steps_is_not_said_to_be_too_short(
    prepare_mod: ModuleType, stamps: list[float]
) -> None:
    """A run 15% over a budget of 100 optimizer steps, whose train.py reports ten times as many
    (micro-steps): its slack is taken at the reported steps, the line of a too-short budget at the
    harness's; it said the budget was too short and named one below it."""
    budget = prepare_mod.TIME_BUDGET
    batch = budget * 1.15 / 1000
    stamps[:] = [i * batch for i in range(1001)]
    prepare_mod._optimizer_steps[:] = range(10, 1001, 10)
    evaluated_after(prepare_mod, stamps)
    with pytest.raises(prepare_mod.OverBudget, match=r"^train\.py trained for .* in 1000 steps"):
        prepare_mod.write_result({"num_steps": 1000, "training_seconds": budget})


def test_write_result_refuses_training_its_count_did_not_see(
    prepare_mod: ModuleType, stamps: list[float]
) -> None:
    """A train.py that trained on batches of its own for most of a budget by its own clock, before
    it drew 5 batches and was evaluated (outside the harness's clocks, which start at the first
    batch): the harness counted a twentieth of it. An honest run of the budget is counted a little
    more than its clock says (the untimed warm-up step) and is a result; one whose summary lacks
    the figure is not."""
    budget = prepare_mod.TIME_BUDGET
    summary = {"training_seconds": budget, "num_steps": 100}
    stamps[:] = [i * budget / 100 for i in range(6)]
    evaluated_after(prepare_mod, stamps)
    uncounted = rf"trained for {budget:.1f} s by its own clock, but .* during only {budget / 20:.1f} s of it \(6 batches\)"
    with pytest.raises(RuntimeError, match=uncounted):
        prepare_mod.write_result(summary)
    stamps[:] = stamps[:2]  # too few waits for the count: their span is what the harness saw
    evaluated_after(prepare_mod, stamps)
    with pytest.raises(RuntimeError, match=rf"during only {budget / 100:.1f} s of it \(2 batches\)"):
        prepare_mod.write_result(summary)
    stamps[:] = [i * budget / 100 for i in range(102)]
    evaluated_after(prepare_mod, stamps)
    assert json.loads(prepare_mod.write_result(summary).read_text())["training_seconds"] == budget
    for unreported in ({}, {"training_seconds": None}, {"training_seconds": "20"}):
        with pytest.raises(RuntimeError, match=r"^train\.py's summary has no training_seconds \(a number"):
            prepare_mod.write_result(unreported)


def test_write_result_bounds_what_its_count_did_not_see_by_its_own_clock(
    prepare_mod: ModuleType, stamps: list[float]
) -> None:
    """Whatever train.py reports: a stall between two batches (the count leaves it out) or time after
    the last batch, until the evaluation, of more than half the budget is training the count did not
    see; less is an honest run's compilation or last optimizer step. On a GPU a compilation takes
    as long at any budget: there at least UNCOUNTED_MIN_GPU seconds are allowed."""
    budget = prepare_mod.TIME_BUDGET
    summary = {"training_seconds": 0.0, "num_steps": 100}
    steady = [i * budget / 100 for i in range(101)]
    for stall, after in ((0.6 * budget, 0.0), (0.0, 0.6 * budget), (0.3 * budget, 0.3 * budget)):
        stamps[:] = [*steady[:50], *(t + stall for t in steady[50:])]
        evaluated_after(prepare_mod, stamps, after)
        stalled = stall + budget / 100 if stall else 0.0  # the step in the stalled wait is left out too
        refused = (
            rf"spent {stalled + after:.1f} s that the harness's count of training did not see \({stalled:.1f} s in "
            rf"stalls between its 101 training batches, {after:.1f} s after its last, until the evaluation\), "
            rf"over the {budget / 2:.1f} s allowed: .*is not a result"
        )
        with pytest.raises(RuntimeError, match=refused):
            prepare_mod.write_result(summary)
        assert (
            prepare_mod._uncounted((stall, after), on_gpu=True) == ""
        )  # 1.2 budgets of 20 s < UNCOUNTED_MIN_GPU
    stamps[:] = [*steady[:50], *(t + 0.4 * budget for t in steady[50:])]
    evaluated_after(prepare_mod, stamps, 0.05 * budget)
    result = json.loads(prepare_mod.write_result(summary).read_text())
    assert result["harness_uncounted_seconds"] == pytest.approx(0.46 * budget)


# ---------------------------------------------------------------------------------------------
# Climbmix: download from a local server, with a failure, then resume


class ShardServer:
    """Serves a folder on 127.0.0.1; fails chosen files once or always; records every request.

    A file in `rate_limited` (name -> seconds) is answered 429 with that Retry-After until that long
    after its first refusal. A file in `stall` is sent half, then a byte a second (so the client's read never times out)
    until `release` is set, which closes the connection: the file is never complete. A file in
    `silent` is sent half, then nothing until `release`. A file in `held` is answered nothing, not
    even its headers, until `release`, then as usual. `stalling` is set when such a send has begun.
    A file in `paced` (name -> bytes a second) is sent whole at that steady rate, a tenth a tenth of a second.
    A file in `cut_once` is sent half, then its connection closed, once. With `ranges` set, a Range
    request whose If-Range is the file's ETag is answered 206 with the rest (otherwise 200, whole,
    as without); `replace_after_cut` (name -> bytes) becomes the file once its cut is sent.
    `ranges_asked` records the Range header of each request for a file, `sent` the body bytes sent.
    A file in `trickled_headers` is answered with headers sent a byte a tenth of a second, without
    end, until `release`; one in `slow_headers` likewise, 200 bytes a tenth of a second (2 kB/s, a
    pace that passes). `odd_range` answers the next such Range request once as some servers do:
    "416" refuses it, "no Content-Range" sends the rest without saying where it begins.
    """

    def __init__(self, root: Path) -> None:
        self.requests: list[str] = []
        self.asked_at: dict[str, list[float]] = {}  # when each file was asked for, by time.monotonic
        self.rate_limited: dict[str, float] = {}
        limited_since: dict[str, float] = {}
        self.fail_once: set[str] = set()
        self.always_fail: set[str] = set()
        self.stall: set[str] = set()
        self.silent: set[str] = set()
        self.held: set[str] = set()
        self.paced: dict[str, int] = {}
        self.cut_once: set[str] = set()
        self.trickled_headers: set[str] = set()
        self.slow_headers: set[str] = set()
        self.ranges = False
        self.odd_range: str | None = None
        self.replace_after_cut: dict[str, bytes] = {}
        self.ranges_asked: dict[str, list[str | None]] = {}
        self.sent: dict[str, int] = {}
        self.stalling = threading.Event()
        self.release = threading.Event()
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs) -> None:
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self) -> None:
                name = self.path.rsplit("/", 1)[-1]
                server.requests.append(name)
                server.asked_at.setdefault(name, []).append(time.monotonic())
                if name in server.rate_limited:
                    since = limited_since.setdefault(name, time.monotonic())
                    if time.monotonic() - since < server.rate_limited[name]:
                        self.send_response(429)
                        self.send_header("Retry-After", f"{server.rate_limited[name]:.0f}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                if name in server.always_fail or name in server.fail_once:
                    server.fail_once.discard(name)
                    self.send_error(503)
                    return
                if name in server.held:
                    server.stalling.set()
                    server.release.wait()
                if name in server.trickled_headers or name in server.slow_headers:
                    self.trickle_headers(200 if name in server.slow_headers else 1)
                    return
                if name in server.stall or name in server.silent:
                    self.send_half_and_wait((root / name).read_bytes(), trickle=name in server.stall)
                    return
                if name in server.paced:
                    self.send_paced((root / name).read_bytes(), server.paced[name] // 10)
                    return
                server.ranges_asked.setdefault(name, []).append(self.headers.get("Range"))
                body = (root / name).read_bytes() if (root / name).is_file() else None
                if body is None:
                    super().do_GET()
                    return
                etag = _etag(body)
                start = 0
                if name in server.cut_once:
                    server.cut_once.discard(name)
                    self.send_body(body, etag, 0, end=len(body) // 2)
                    if name in server.replace_after_cut:
                        (root / name).write_bytes(server.replace_after_cut.pop(name))
                    return
                asked = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if server.ranges and asked and self.headers.get("If-Range") == etag:
                    start = int(asked[1])
                    odd, server.odd_range = server.odd_range, None
                    if odd == "416":
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    if odd == "no Content-Range":
                        self.send_body(body, etag, start, says_where=False)
                        return
                self.send_body(body, etag, start)

            def send_body(
                self, body: bytes, etag: str, start: int, end: int | None = None, says_where: bool = True
            ) -> None:
                """`body` from `start` (206 where not 0, with its Content-Range if `says_where`), its
                connection closed at `end`, if given."""
                self.send_response(206 if start else 200)
                self.send_header("ETag", etag)
                self.send_header("Content-Length", str(len(body) - start))
                if start and says_where:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.end_headers()
                sent, name = body[start:end], self.path.rsplit("/", 1)[-1]
                server.sent[name] = server.sent.get(name, 0) + len(
                    sent
                )  # (before: the client may be done after)
                self.wfile.write(sent)
                self.close_connection = end is not None

            def trickle_headers(self, every_tenth: int) -> None:
                """A status line, then a header whose value never ends."""
                self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Trickle: ")
                self.wfile.flush()
                while not server.release.wait(0.1):  # (the pace of the trickle, not a wait on the client)
                    self.wfile.write(b"a" * every_tenth)
                    self.wfile.flush()
                self.close_connection = True

            def send_paced(self, body: bytes, every_tenth: int) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                for start in range(0, len(body), every_tenth):
                    self.wfile.write(body[start : start + every_tenth])
                    self.wfile.flush()
                    if server.release.wait(0.1):  # (the pace of a slow link, not a wait on the client)
                        return

            def send_half_and_wait(self, body: bytes, trickle: bool) -> None:
                self.send_response(200)
                self.send_header("ETag", _etag(body))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                sent = len(body) // 2
                self.wfile.write(body[:sent])
                self.wfile.flush()
                server.stalling.set()
                while not server.release.wait(1.0) and sent < len(body) - 1:
                    if not trickle:
                        continue
                    self.wfile.write(body[sent : sent + 1])
                    self.wfile.flush()
                    sent += 1
                self.close_connection = True

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def _etag(body: bytes) -> str:
    """The ETag ShardServer gives a file."""
    return f'"{hashlib.sha256(body).hexdigest()[:16]}"'


def _write_shard(path: Path, seed: int) -> None:
    rng = random.Random(seed)
    words = [
        "the",
        "model",
        "learns",
        "from",
        "data",
        "and",
        "every",
        "shard",
        "holds",
        "text",
        "about",
        "training",
        "small",
        "networks",
    ]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(20, 120))) + "." for _ in range(60)]
    pq.write_table(pa.table({"text": texts}), path, row_group_size=20)


@pytest.fixture
def shard_server(
    prepare_mod: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[ShardServer, Path]]:
    remote = tmp_path / "remote"
    remote.mkdir()
    for index in (0, 1, 2, prepare_mod.VAL_SHARD):
        _write_shard(remote / f"shard_{index:05d}.parquet", index)
    server = ShardServer(remote)
    monkeypatch.setenv("AUTORESEARCH_DATA_URL", server.url)
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(prepare_mod, "DOWNLOAD_BACKOFF_S", 0.01)
    yield server, remote
    server.close()


def test_climbmix_download_retries_and_resumes(prepare_mod: ModuleType, shard_server) -> None:
    server, remote = shard_server
    server.fail_once.add("shard_00001.parquet")
    paths = prepare_mod.download_climbmix(num_shards=2)
    assert [p.name for p in paths] == ["shard_00000.parquet", "shard_00001.parquet", "shard_06542.parquet"]
    assert all(p.read_bytes() == (remote / p.name).read_bytes() for p in paths)
    assert server.requests.count("shard_00001.parquet") == 2  # failed once, then retried

    folder = paths[0].parent
    paths[1].unlink()
    killed = folder / "shard_00002.parquet.999.tmp"  # the file of a download killed an hour ago
    killed.write_bytes(b"partial")
    os.utime(killed, (killed.stat().st_atime, killed.stat().st_mtime - 3600))
    live = folder / "shard_00003.parquet.998.tmp"  # another process's download, under way
    live.write_bytes(b"partial")
    server.requests.clear()
    prepare_mod.download_climbmix(num_shards=3)
    assert sorted(server.requests) == ["shard_00001.parquet", "shard_00002.parquet"]
    assert not killed.exists() and live.exists()
    live.unlink()
    assert sorted(p.name for p in folder.glob("*.parquet")) == [
        "shard_00000.parquet",
        "shard_00001.parquet",
        "shard_00002.parquet",
        "shard_06542.parquet",
    ]
    assert [p.name for p in prepare_mod.split_files("val", "climbmix")] == ["shard_06542.parquet"]
    assert len(prepare_mod.split_files("train", "climbmix")) == 3
    prepare_mod.download_climbmix(num_shards=2)  # trains on the shards asked for, not all there are
    two = ["shard_00000.parquet", "shard_00001.parquet"]
    assert [p.name for p in prepare_mod.split_files("train", "climbmix")] == two
    prepare_mod.download_climbmix()  # as a campaign's start prepares: the choice made above stays
    assert [p.name for p in prepare_mod.split_files("train", "climbmix")] == two


def test_a_prepared_cache_is_not_written_to(prepare_mod: ModuleType, shard_server) -> None:
    """A cache prepared once may be shared read-only: the record of the shard count was
    rewritten by every preparation, which failed there with "Read-only file system"."""
    prepare_mod.download_climbmix(num_shards=2)
    folder = prepare_mod.data_dir("climbmix")
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir()}
    prepare_mod.download_climbmix()
    prepare_mod.download_climbmix(num_shards=2)
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir()} == before


def test_a_prepared_cache_with_a_killed_download_left_in_it_is_not_written_to(
    prepare_mod: ModuleType, shard_server
) -> None:
    """The .tmp file of a download killed while the cache was prepared is deleted by the next
    download, not by a run that downloads nothing: in a cache shared read-only, that deletion
    failed every campaign's start with "Permission denied"."""
    prepare_mod.download_climbmix(num_shards=2)
    folder = prepare_mod.data_dir("climbmix")
    killed = folder / "shard_00002.parquet.1234-0123456789ab.tmp"
    killed.write_bytes(b"the first megabyte of a killed download")
    an_hour_ago = time.time() - 3600
    os.utime(killed, (an_hour_ago, an_hour_ago))
    prepare_mod.download_climbmix()
    assert killed.exists()
    prepare_mod.download_climbmix(num_shards=3)  # a download: now it goes
    assert not killed.exists()


def test_a_download_waits_for_the_one_under_way_and_does_not_fetch_its_shards(
    prepare_mod: ModuleType, shard_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two preparations of one fresh cache (two campaigns started together) each downloaded every
    shard. The second now waits for the first, then finds its shards there."""
    server, remote = shard_server
    folder = prepare_mod.data_dir("climbmix")
    folder.mkdir(parents=True)
    waiting = threading.Event()
    monkeypatch.setattr(
        prepare_mod, "log", lambda line: waiting.set() if line.startswith("waiting") else None
    )
    with open(folder.with_name("climbmix.lock"), "w") as held:  # another's download, under way
        fcntl.flock(held, fcntl.LOCK_EX)
        thread = threading.Thread(target=prepare_mod.download_climbmix, args=(1,), daemon=True)
        thread.start()
        assert waiting.wait(timeout=60)
        for name in ("shard_00000.parquet", "shard_06542.parquet"):  # what that download makes
            shutil.copy(remote / name, folder / name)
    thread.join(timeout=60)
    assert not thread.is_alive() and server.requests == []


@pytest.mark.parametrize("record", ['{"num_sh', '{"num_shards": 0}'])
def test_a_damaged_shard_record_is_named(prepare_mod: ModuleType, shard_server, record: str) -> None:
    """train_shards.json cut short, or holding 0 (as --num-shards 0 once recorded): every run
    failed with a bare JSONDecodeError, or "no train data", naming neither the file nor the cure."""
    prepare_mod.download_climbmix(num_shards=2)
    path = prepare_mod.data_dir("climbmix") / prepare_mod.SHARDS_FILE
    path.write_text(record)
    for prepare in (lambda: prepare_mod.split_files("train", "climbmix"), prepare_mod.download_climbmix):
        with pytest.raises(
            RuntimeError, match=rf"{re.escape(str(path))} records no usable shard count: .*--num-shards N"
        ):
            prepare()
    prepare_mod.download_climbmix(num_shards=2)  # the cure
    assert len(prepare_mod.split_files("train", "climbmix")) == 2


def _part_sizes(prepare_mod: ModuleType, folder: Path, pattern: str) -> dict[Path, int]:
    """The sizes of the shards' parts `pattern` finds in `folder`; not a validator's temporary,
    which the same glob finds while it is written and which is gone by its stat."""
    sizes = {}
    for tmp in folder.glob(pattern):
        if prepare_mod.PART_NAME.fullmatch(tmp.name):
            with contextlib.suppress(FileNotFoundError):
                sizes[tmp] = tmp.stat().st_size
    return sizes


def _wait_for_half_a_part(prepare_mod: ModuleType, shard: Path, proc: subprocess.Popen) -> None:
    """Until the download in `proc` has written half of `shard` to its part, and its validator."""
    folder, half = prepare_mod.data_dir("climbmix"), shard.stat().st_size // 2
    deadline = time.monotonic() + 60
    while not any(
        size >= half and Path(f"{tmp}.validator.json").exists()
        for tmp, size in _part_sizes(prepare_mod, folder, f"{shard.name}.{proc.pid}-*.tmp").items()
    ):
        assert time.monotonic() < deadline and proc.poll() is None, "no half of the shard written"
        time.sleep(0.05)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_download_keeps_whole_shards_and_resumes(
    prepare_mod: ModuleType, shard_server, harness_env, tmp_path: Path, stop: signal.Signals
) -> None:
    """Ctrl-C in the middle of a shard: prepare.py stops at once, though the server is still
    sending (it waited for the read in progress: up to its 60 s timeout, and for ever from a
    server that sends a byte now and then), in one line, the finished shards kept and not
    downloaded again. SIGTERM, a campaign's stop of its data step, killed it at once. The part of
    the shard under way was deleted, though the line said the next run resumes, and that run
    asked for the shard from byte 0; the part is kept with its validator beside it, and the next
    download, another process, asks for the rest (Range, If-Range) and appends it."""
    server, remote = shard_server
    prepare_mod.download_climbmix(num_shards=1)
    server.stall.add("shard_00001.parquet")
    env = harness_env(cache=os.environ["AUTORESEARCH_CACHE"], data_url=server.url)
    proc = subprocess.Popen(
        [sys.executable, str(TRAINER_DIR / "prepare.py"), "--data", "climbmix", "--num-shards", "2"],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: tests started in the background by a shell without job control (a
        # CI runner's `cmd &`) inherit SIGINT ignored, and Python then takes no Ctrl-C at all.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert server.stalling.wait(timeout=120)
    _wait_for_half_a_part(prepare_mod, remote / "shard_00001.parquet", proc)
    proc.send_signal(stop)
    try:
        stderr = proc.communicate(timeout=120)[1]  # a guard: it ends at once or never
    finally:
        proc.kill()
        server.release.set()
    assert proc.returncode == 1 and stderr.splitlines()[-1] == (
        "interrupted: finished files, and the parts of shards under way that the server lets resume, are kept; "
        "run the same command again to resume"
    ), stderr
    folder = prepare_mod.data_dir("climbmix")
    name = "shard_00001.parquet"
    [part] = folder.glob(f"{name}.{proc.pid}-*.tmp")
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [
            "shard_00000.parquet",
            "shard_06542.parquet",
            "train_shards.json",
            part.name,
            part.name + ".validator.json",
        ]
    )
    received, size = part.stat().st_size, (remote / name).stat().st_size
    assert size // 2 <= received < size
    server.stall.clear()
    server.requests.clear()
    server.ranges = True
    prepare_mod.download_climbmix(num_shards=2)
    assert server.requests == [name]
    assert server.ranges_asked[name] == [f"bytes={received}-"] and server.sent[name] == size - received
    assert sorted(p.name for p in folder.iterdir()) == [
        "shard_00000.parquet",
        "shard_00001.parquet",
        "shard_06542.parquet",
        "train_shards.json",
    ]
    assert all(p.read_bytes() == (remote / p.name).read_bytes() for p in folder.glob("*.parquet"))


@pytest.mark.parametrize(
    "left", ["its validator", "no validator", "an unreadable validator", "another URL's", "another host's"]
)
def test_a_part_left_by_a_stopped_download_is_resumed_only_with_its_validator(
    prepare_mod: ModuleType, shard_server, left: str
) -> None:
    """A part whose validator beside it is missing, unreadable or of another data URL cannot be
    resumed (If-Range would ask for the rest of some other file): its shard starts over, and the
    part and its validator go, once its writer is known to have stopped (without a validator, which
    names its host, once it is untouched for STALE_TMP_S). With its validator, its writer's process
    gone from this host, it is resumed from where it ends; neither file is ever taken for a shard.
    A stopped download's part of a shard whole in the cache is deleted."""
    server, remote = shard_server
    server.ranges = True
    prepare_mod.download_climbmix(num_shards=1)
    folder = prepare_mod.data_dir("climbmix")
    name, body = "shard_00001.parquet", (remote / "shard_00001.parquet").read_bytes()
    gone = 99_999_999  # a pid no process has: above the kernel's largest
    part = folder / f"{name}.{gone}-0123456789ab.tmp"  # a stopped download's, 1000 bytes in
    done = folder / f"shard_00000.parquet.{gone}-0123456789ab.tmp"  # of a shard since downloaded whole
    for tmp, shard, data in ((part, name, body[:1000]), (done, "shard_00000.parquet", b"PAR1")):
        tmp.write_bytes(data)
        saved = {"url": f"{server.url}{shard}", "validator": _etag((remote / shard).read_bytes())}
        Path(f"{tmp}.validator.json").write_text(json.dumps({**saved, "host": platform.node()}))
    sidecar = Path(f"{part}.validator.json")
    if left == "no validator":
        sidecar.unlink()
    elif left == "an unreadable validator":
        sidecar.write_text('{"url": ')
    elif left == "another URL's":
        sidecar.write_text(
            json.dumps(
                {"url": f"https://elsewhere/{name}", "validator": _etag(body), "host": platform.node()}
            )
        )
    elif left == "another host's":  # under way there, maybe (an NFS mount with nolock): left alone
        saved = json.loads(sidecar.read_text())
        sidecar.write_text(json.dumps({**saved, "host": "another-node"}))
    if left in ("no validator", "an unreadable validator"):
        an_hour_ago = time.time() - 3600
        os.utime(part, (an_hour_ago, an_hour_ago))
    prepare_mod.download_climbmix(num_shards=2)
    resumed = left == "its validator"
    assert server.ranges_asked[name] == (["bytes=1000-"] if resumed else [None])
    assert server.sent[name] == len(body) - 1000 * resumed
    assert (folder / name).read_bytes() == body
    left_alone = [part.name, sidecar.name] if left == "another host's" else []
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [
            "shard_00000.parquet",
            "shard_00001.parquet",
            "shard_06542.parquet",
            "train_shards.json",
            *left_alone,
        ]
    )


def test_a_part_taken_over_is_not_taken_again_by_a_preparation_beside_it(
    prepare_mod: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A part taken over keeps, through its rename, the modification time its stopped writer
    left, an hour ago say: a preparation on another host of a cache it locks apart (an NFS mount
    with `nolock`) took it for a stopped download's too, as long as it waited for a worker, and
    renamed it from under the one that had it. Taking it over marks it live."""
    name, url = "shard_00001.parquet", "http://data.test"
    left = tmp_path / f"{name}.99999999-0123456789ab.tmp"  # a stopped download's, untouched for an hour
    left.write_bytes(b"PAR1" * 250)
    saved = {"url": f"{url}/{name}", "validator": '"v1"', "host": "a-node-gone"}
    Path(f"{left}.validator.json").write_text(json.dumps(saved))
    an_hour_ago = time.time() - 3600
    os.utime(left, (an_hour_ago, an_hour_ago))
    [mine] = [part.tmp for part in prepare_mod._take_over_parts(tmp_path, [1], url).values()]
    monkeypatch.setattr(prepare_mod.platform, "node", lambda: "another-node")
    monkeypatch.setattr(prepare_mod, "_PROCESS_TAG", "ba9876543210")
    assert prepare_mod._take_over_parts(tmp_path, [1], url) == {}
    assert mine.read_bytes() == b"PAR1" * 250


def _a_part_claimed_an_hour_ago(
    prepare_mod: ModuleType, server: ShardServer, remote: Path
) -> tuple[Path, str, bytes, str, Any]:
    """The folder, name, body, data URL and part of shard 1: a stopped download left it 1000 bytes
    in, and this process claimed it an hour ago, the shards queued before it taking that long."""
    server.ranges = True
    folder = prepare_mod.data_dir("climbmix")
    folder.mkdir(parents=True)
    name, url = "shard_00001.parquet", prepare_mod._data_url()
    body = (remote / name).read_bytes()
    left = folder / f"{name}.99999999-0123456789ab.tmp"
    left.write_bytes(body[:1000])
    saved = {"url": f"{url}/{name}", "validator": _etag(body), "host": platform.node()}
    Path(f"{left}.validator.json").write_text(json.dumps(saved))
    [part] = prepare_mod._take_over_parts(folder, [1], url).values()
    an_hour_ago = time.time() - 3600
    os.utime(part.tmp, (an_hour_ago, an_hour_ago))
    return folder, name, body, url, part


def test_a_part_waiting_for_its_first_byte_is_not_taken_by_a_preparation_beside_it(
    prepare_mod: ModuleType, shard_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A part is claimed (touched) as the download starts, but its worker reaches it only after the
    shards queued before it: after over STALE_TMP_S of them it looked stopped again, and a
    preparation on another host of a cache it locks apart (an NFS mount with `nolock`) renamed it
    from under the worker while it waited for the server's first byte. The worker touches its part
    as it starts it, before asking the server."""
    server, remote = shard_server
    folder, name, body, url, part = _a_part_claimed_an_hour_ago(prepare_mod, server, remote)
    server.held.add(name)  # asked for, and not a byte of it sent yet
    progress = prepare_mod.DownloadProgress(1, done=0)
    worker = threading.Thread(target=prepare_mod._download_shard, args=(1, url, folder, progress, part))
    worker.start()
    try:
        assert server.stalling.wait(timeout=60)
        with monkeypatch.context() as another_host:
            another_host.setattr(prepare_mod.platform, "node", lambda: "another-node")
            another_host.setattr(prepare_mod, "_PROCESS_TAG", "ba9876543210")
            assert prepare_mod._take_over_parts(folder, [1], url) == {}
    finally:
        server.release.set()
        worker.join(timeout=120)
    assert not worker.is_alive() and progress.failure is None
    assert server.ranges_asked[name] == ["bytes=1000-"] and (folder / name).read_bytes() == body
    assert sorted(p.name for p in folder.iterdir()) == [name]


def test_a_part_taken_over_while_queued_is_downloaded_again_with_its_validator(
    prepare_mod: ModuleType, shard_server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A part claimed as the download starts, its worker busy with the shards before it for over
    STALE_TMP_S, is taken over by a preparation on another host of a cache it locks apart. Its
    worker then downloaded the shard whole under the old claim without saving the validator again,
    so an interrupt deleted what it had received. It says so and starts a resumable part of its own."""
    server, remote = shard_server
    folder, name, body, url, part = _a_part_claimed_an_hour_ago(prepare_mod, server, remote)
    with monkeypatch.context() as another_host:
        another_host.setattr(prepare_mod.platform, "node", lambda: "another-node")
        another_host.setattr(prepare_mod, "_PROCESS_TAG", "ba9876543210")
        [theirs] = prepare_mod._take_over_parts(folder, [1], url).values()
    server.stall.add(name)  # half the shard, then a byte a second until the interrupt
    progress = prepare_mod.DownloadProgress(1, done=0)
    worker = threading.Thread(target=prepare_mod._download_shard, args=(1, url, folder, progress, part))
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while not part.tmp.exists() or part.tmp.stat().st_size < len(body) // 2:
            assert time.monotonic() < deadline and worker.is_alive(), "no half of the shard written"
            time.sleep(0.05)
        progress.halt()  # an interrupt
    finally:
        worker.join(timeout=120)
    assert not worker.is_alive() and progress.failure is None
    shard_url = f"{url}/{name}"
    assert part.tmp.stat().st_size >= len(body) // 2 and prepare_mod._saved_validator(part.tmp, shard_url)
    assert theirs.tmp.read_bytes() == body[:1000] and prepare_mod._saved_validator(theirs.tmp, shard_url)
    said = capsys.readouterr().err
    assert f"{name}: its part was taken over by another download; downloading it whole" in said


@pytest.mark.skipif(os.geteuid() != 0, reason="downloads as another user")
def test_another_users_stopped_part_is_left_to_them(
    prepare_mod: ModuleType, shard_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a cache a group shares, another member's stopped download left a part (its file, 0644):
    this user's download took it over, renamed it, and could not append to it, so the whole
    preparation failed, 'cannot be written (Permission denied)', where it downloaded the shard
    before. Only this user's parts are taken over; another's is left to its owner."""
    server, remote = shard_server
    server.ranges = True
    shared = Path(tempfile.mkdtemp(prefix="group-cache-"))  # (not under tmp_path: its parents are root's own)
    try:
        shared.chmod(0o777)
        monkeypatch.setenv("AUTORESEARCH_CACHE", str(shared))
        folder = prepare_mod.data_dir("climbmix")
        folder.mkdir(parents=True)
        for made in (shared, *folder.relative_to(shared).parents, folder.relative_to(shared)):
            (shared / made).chmod(0o777)
        name, body = "shard_00001.parquet", (remote / "shard_00001.parquet").read_bytes()
        theirs = folder / f"{name}.99999999-0123456789ab.tmp"  # root's: the other member here
        theirs.write_bytes(body[:1000])
        saved = {"url": f"{server.url}{name}", "validator": _etag(body), "host": platform.node()}
        Path(f"{theirs}.validator.json").write_text(json.dumps(saved))
        child = os.fork()
        if child == 0:  # this user: nobody
            code = 1
            try:
                os.setgid(65534)
                os.setuid(65534)
                prepare_mod.download_climbmix(num_shards=2)
                code = 0
            except BaseException as err:  # (said, and the test fails on the exit status)
                sys.stderr.write(f"{type(err).__name__}: {err}\n")
            finally:
                os._exit(code)
        assert os.waitpid(child, 0)[1] == 0
        assert (folder / name).read_bytes() == body
        assert theirs.read_bytes() == body[:1000]
    finally:
        shutil.rmtree(shared)


@pytest.mark.parametrize("skew", [+1, -1], ids=["host-ahead", "host-behind"])
def test_a_temporarys_age_is_told_by_the_clock_that_stamped_it(
    prepare_mod: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, skew: int
) -> None:
    """On an NFS cache a file's modification time is the file server's clock. A host whose clock
    ran ahead of it by over STALE_TMP_S took another node's live download for a killed one and
    deleted it; one behind kept a killed one's. Here this host's clock (time.time, which the
    age was measured by) is put off by twice STALE_TMP_S, the files' stamps left to the disk."""
    stamp = tmp_path / "stamp"  # what the file system's clock says now
    stamp.write_bytes(b"")
    now = stamp.stat().st_mtime
    stamp.unlink()
    live, killed = tmp_path / "shard_00000.parquet.7-live.tmp", tmp_path / "shard_00001.parquet.8-gone.tmp"
    for tmp, age in ((live, 60), (killed, prepare_mod.STALE_TMP_S + 60)):
        tmp.write_bytes(b"part of a shard")
        os.utime(tmp, (now - age, now - age))
    host_clock, off = time.time, skew * 2 * prepare_mod.STALE_TMP_S
    monkeypatch.setattr(prepare_mod.time, "time", lambda: host_clock() + off)
    prepare_mod._remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name]


def test_a_download_under_way_writes_what_it_has_received(prepare_mod: ModuleType, shard_server) -> None:
    """A download wrote nothing to its temporary file until it had a whole MB (or the end): on a
    link slower than 1.7 KB/s the file went untouched for over STALE_TMP_S, and another process's
    download deleted it as a killed one's, though a live one writes "at least every minute"."""
    server, remote = shard_server
    server.stall.add("shard_00000.parquet")  # half the shard, then a byte a second
    failures: list[Exception] = []

    def download() -> None:
        try:
            prepare_mod.download_climbmix(num_shards=1)
        except Exception as err:  # (reported below, not lost in the thread)
            failures.append(err)

    thread = threading.Thread(target=download)
    thread.start()
    assert server.stalling.wait(timeout=60)
    folder = prepare_mod.data_dir("climbmix")
    half = (remote / "shard_00000.parquet").stat().st_size // 2
    deadline = time.monotonic() + 30
    while (written := sum(_part_sizes(prepare_mod, folder, "shard_00000.parquet.*.tmp").values())) < half:
        assert time.monotonic() < deadline, f"{written} of the {half} bytes received are written"
        time.sleep(0.05)
    server.stall.clear()
    server.release.set()  # the connection closes: the next attempt gets the whole shard
    thread.join(timeout=120)
    assert not failures and not thread.is_alive()
    whole = prepare_mod.data_dir("climbmix") / "shard_00000.parquet"
    assert whole.read_bytes() == (remote / "shard_00000.parquet").read_bytes()


@pytest.mark.parametrize("tag", ["", "-0123456789ab"])
def test_a_download_of_another_host_with_the_same_pid_is_left_alone(
    prepare_mod: ModuleType, shard_server, tag: str
) -> None:
    """On a cache shared between hosts, another host's process may have this one's pid: its
    download, under way, was written over and renamed away when the temporary name was the pid;
    and deleted, as this process's own, when a download that named them by pid and a random
    part per file ended (the tag: another host's random part)."""
    folder = prepare_mod.data_dir("climbmix")
    folder.mkdir(parents=True)
    theirs = folder / f"shard_00000.parquet.{os.getpid()}{tag}.tmp"
    theirs.write_bytes(b"the first megabyte of another host's download")
    prepare_mod.download_climbmix(num_shards=1)
    assert theirs.read_bytes() == b"the first megabyte of another host's download"


def test_a_rate_limited_download_waits_as_long_as_the_server_asks(
    prepare_mod: ModuleType, shard_server, capsys: pytest.CaptureFixture
) -> None:
    """A 429 with Retry-After (a hub's rate limit, hit by many array tasks at once) was retried
    after the back-off alone: five attempts in well under the wait asked for, all refused, and the
    download failed, blamed on the network."""
    server, remote = shard_server
    server.rate_limited["shard_00000.parquet"] = 1
    paths = prepare_mod.download_climbmix(num_shards=1)
    assert paths[0].read_bytes() == (remote / "shard_00000.parquet").read_bytes()
    asked = server.asked_at["shard_00000.parquet"]
    assert len(asked) == 2 and asked[1] - asked[0] >= 1
    assert "retrying in 1.0 s, as the server asked (Retry-After)" in capsys.readouterr().err


def test_climbmix_download_gives_up(prepare_mod: ModuleType, shard_server) -> None:
    server, _ = shard_server
    server.always_fail.add("shard_00000.parquet")
    with pytest.raises(RuntimeError, match="failed 5 times"):
        prepare_mod.download_climbmix(num_shards=1)
    assert server.requests.count("shard_00000.parquet") == prepare_mod.DOWNLOAD_ATTEMPTS
    assert not list((prepare_mod.data_dir("climbmix")).glob("*.tmp"))


def test_climbmix_download_reports_progress(
    prepare_mod: ModuleType, shard_server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    _, remote = shard_server
    monkeypatch.setattr(prepare_mod, "PROGRESS_EVERY_S", 0.0)
    paths = prepare_mod.download_climbmix(num_shards=2)
    lines = capsys.readouterr().err.splitlines()
    total_mb = sum((remote / p.name).stat().st_size for p in paths) / 1e6
    assert lines[0].startswith("downloading 3 of 3 climbmix shards")
    assert sorted(line.split()[0] for line in lines if line.strip().startswith("[")) == [
        "[1/3]",
        "[2/3]",
        "[3/3]",
    ]
    received = [float(line.split()[0].replace(",", "")) for line in lines if "MB received" in line]
    assert len(received) >= 3 and received == sorted(received) and received[-1] == round(total_mb, 1)
    assert lines[-1].startswith(f"downloaded {total_mb:,.1f} MB in ")

    prepare_mod.download_climbmix(num_shards=2)  # all here: nothing to say
    assert capsys.readouterr().err == ""


def test_a_progress_line_is_written_whole(prepare_mod: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """The download threads log at once: a line written in two parts (text, then newline) let
    another thread's line land between them, two messages on one line and a blank one after."""
    writes: list[str] = []

    class Recorder(io.StringIO):
        def write(self, text: str) -> int:
            writes.append(text)
            return len(text)

    monkeypatch.setattr(sys, "stderr", Recorder())
    prepare_mod.log("shard_00001.parquet: connection refused; retrying in 2.0 s")
    assert writes == ["shard_00001.parquet: connection refused; retrying in 2.0 s\n"]


def _failures_of_a_download(prepare_mod: ModuleType, hung: str) -> list[str]:
    """The DownloadFailed messages of a one-shard download, run in a daemon thread so that a hang
    fails the test (saying `hung`), not the suite."""
    failed: list[str] = []

    def download() -> None:
        try:
            prepare_mod.download_climbmix(num_shards=1)
        except prepare_mod.DownloadFailed as err:
            failed.append(str(err))

    thread = threading.Thread(target=download, daemon=True)
    thread.start()
    thread.join(timeout=120)
    assert not thread.is_alive(), hung
    return failed


def test_a_server_that_stops_sending_times_out_and_is_retried(
    prepare_mod: ModuleType, shard_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that goes silent in the middle of a shard must not hold a download for ever: each
    attempt's read ends after DOWNLOAD_READ_TIMEOUT_S, and the attempts run out."""
    server, _ = shard_server
    server.silent.add("shard_00000.parquet")
    monkeypatch.setattr(prepare_mod, "DOWNLOAD_READ_TIMEOUT_S", 0.2)
    failed = _failures_of_a_download(prepare_mod, "the download still waits on a silent server")
    assert failed == [f"download of {server.url}shard_00000.parquet failed 5 times: timed out"]
    assert server.requests.count("shard_00000.parquet") == prepare_mod.DOWNLOAD_ATTEMPTS


@pytest.mark.parametrize(
    ("trickled", "min_rate"),
    [
        ("stall", 1_000_000),  # half the shard (under 1 MB), then a byte a second
        ("trickled_headers", 1_000),  # the headers a byte a tenth of a second, without end
    ],
)
def test_a_server_that_trickles_bytes_fails_the_attempt_and_is_retried(
    prepare_mod: ModuleType, shard_server, monkeypatch: pytest.MonkeyPatch, trickled: str, min_rate: int
) -> None:
    """A server that sends a byte every second never trips the read timeout: a download from it
    went on for hours. An attempt that averages under DOWNLOAD_MIN_RATE once past its grace fails,
    saying so, and the attempts run out. The pace covered the body only, and a server trickling its
    headers held urlopen, and the download, for ever: the headers are held to it too."""
    server, _ = shard_server
    getattr(server, trickled).add("shard_00000.parquet")
    monkeypatch.setattr(prepare_mod, "DOWNLOAD_PACE_GRACE_S", 0.5)
    monkeypatch.setattr(prepare_mod, "DOWNLOAD_MIN_RATE", min_rate)
    failed = _failures_of_a_download(prepare_mod, f"the download still takes a byte at a time ({trickled})")
    assert len(failed) == 1 and re.fullmatch(
        re.escape(f"download of {server.url}shard_00000.parquet failed 5 times: the server sent ")
        + rf"[\d,]+ bytes in \d+ s, under the {min_rate // 1000} kB/s a download needs",
        failed[0],
    ), failed
    assert server.requests.count("shard_00000.parquet") == prepare_mod.DOWNLOAD_ATTEMPTS


class ConnectProxy:
    """An https proxy on 127.0.0.1 (as https_proxy names one): it answers CONNECT host:port with
    200, then relays bytes both ways between the client and that host:port."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):  # (closed)
            while True:
                client, _ = self.listener.accept()
                threading.Thread(target=self._tunnel, args=(client,), daemon=True).start()

    def _tunnel(self, client: socket.socket) -> None:
        asked = b""
        while b"\r\n\r\n" not in asked:
            asked += client.recv(4096)
        host, _, port = asked.split()[1].decode().rpartition(":")
        origin = socket.create_connection((host, int(port)))
        client.sendall(b"HTTP/1.0 200 Connection established\r\n\r\n")
        threading.Thread(target=self._relay, args=(origin, client), daemon=True).start()
        self._relay(client, origin)

    @staticmethod
    def _relay(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize(
    "slow", ["headers", "TLS handshake", "TLS handshake through a proxy", "proxy's answer to CONNECT"]
)
def test_an_answer_that_does_not_begin_in_time_fails_the_attempt_and_is_retried(
    prepare_mod: ModuleType,
    shard_server,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    slow: str,
) -> None:
    """The pace and the read timeout look at bytes as they come: headers trickled at 2 kB/s, a TLS
    handshake a server never answers (or a slow DNS lookup, a connection) held an attempt, and its
    part untouched, past STALE_TMP_S, when a download beside it may take the part over. All that
    comes before the body has one deadline; the attempt fails naming the shard and the slow step,
    and is retried as other failures are. Behind an https proxy, a handshake with the origin that
    stalled was named the headers of the proxy's answer: it names the handshake, and the proxy."""
    server, _ = shard_server
    url, held_up = server.url, "the headers of the answer from 127.0.0.1"
    server.slow_headers.add("shard_00000.parquet")
    silent = socket.create_server(("127.0.0.1", 0))  # takes connections, and never says a word
    proxy = ConnectProxy()
    silent_port = silent.getsockname()[1]
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    if slow == "TLS handshake":
        url, held_up = f"https://127.0.0.1:{silent_port}", "the TLS handshake with 127.0.0.1"
    elif slow == "TLS handshake through a proxy":
        monkeypatch.setenv("https_proxy", proxy.url)
        url = f"https://localhost:{silent_port}"
        held_up = "the TLS handshake with localhost through the proxy 127.0.0.1"
    elif slow == "proxy's answer to CONNECT":
        monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{silent_port}")
        url = "https://localhost:1"
        held_up = "the answer of the proxy 127.0.0.1 to CONNECT localhost"
    monkeypatch.setattr(prepare_mod, "DOWNLOAD_ANSWER_TIMEOUT_S", 0.5)
    monkeypatch.setattr(prepare_mod, "DOWNLOAD_MIN_RATE", 1)  # (no pace fails them)
    monkeypatch.setattr(prepare_mod, "DOWNLOAD_ATTEMPTS", 2)
    folder = prepare_mod.data_dir("climbmix")
    folder.mkdir(parents=True)
    progress = prepare_mod.DownloadProgress(1, done=0)
    worker = threading.Thread(
        target=prepare_mod._download_shard, args=(0, url.rstrip("/"), folder, progress), daemon=True
    )
    worker.start()
    worker.join(timeout=120)
    silent.close()
    proxy.close()
    assert not worker.is_alive(), f"the download still waits for its answer ({slow})"
    why = f"no answer after 0.5 s, held up by {held_up}"
    assert str(progress.failure) == f"download of {url.rstrip('/')}/shard_00000.parquet failed 2 times: {why}"
    assert f"  shard_00000.parquet: {why}; retrying in" in capsys.readouterr().err
    assert not list(folder.iterdir())


_SILENT_RESOLVER = """
import fcntl, select, socket, struct, sys, urllib.request
sys.path.insert(0, sys.argv[1])
import prepare
silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
# the namespace's loopback up, as `ip link set lo up` would (iproute2 is not in minimal images)
flags = struct.unpack_from("16sh", fcntl.ioctl(silent, 0x8913, struct.pack("16s24x", b"lo")))[1]  # SIOCGIFFLAGS
fcntl.ioctl(silent, 0x8914, struct.pack("16sh22x", b"lo", flags | 1))  # SIOCSIFFLAGS, IFF_UP
silent.bind(("127.0.0.1", 53))  # the resolver resolv.conf names: it takes queries and answers none
prepare.DOWNLOAD_ANSWER_TIMEOUT_S = 0.5
try:
    prepare._opened(urllib.request.Request("http://shards.example/shard_00000.parquet"),
                    prepare._Part(prepare.Path("unused.tmp")), 0, prepare.DownloadProgress(1, done=0))
    said = "the lookup and the request went through"
except Exception as err:
    said = str(err)
# the query arrives as the lookup begins: none within 10 s, and names resolve here without this server
print(said if select.select([silent], [], [], 10)[0] else "not asked: " + said)
"""


def silent_resolver_lookup(tmp_path: Path, hosts: str | None = None) -> str:
    """What _SILENT_RESOLVER says of its lookup of shards.example, in a user, mount and network
    namespace of its own whose resolv.conf names a server on 127.0.0.1 that never answers (and
    whose /etc/hosts is `hosts`, where given); skips where those namespaces are not allowed."""
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions timeout:30 attempts:1\n")
    script = tmp_path / "silent_resolver.py"
    script.write_text(_SILENT_RESOLVER)
    mounts = f"mount --bind {resolv} /etc/resolv.conf"
    if hosts is not None:
        (tmp_path / "hosts").write_text(hosts)
        mounts += f" && mount --bind {tmp_path / 'hosts'} /etc/hosts"
    inside = f"{mounts} && AUTORESEARCH_SCALE=cpu {sys.executable} {script} {TRAINER_DIR}"
    if not shutil.which("unshare"):
        pytest.skip("no unshare to give the resolver a namespace")
    if subprocess.run(["unshare", "-rmn", "true"], capture_output=True).returncode:
        pytest.skip("user namespaces are not allowed here")
    ran = subprocess.run(["unshare", "-rmn", "sh", "-c", inside], capture_output=True, text=True, timeout=60)
    assert ran.stdout, ran.stderr
    return ran.stdout


def nsswitch_hosts() -> str:
    """The hosts line of /etc/nsswitch.conf, which says where names are looked up."""
    with contextlib.suppress(OSError):
        for line in Path("/etc/nsswitch.conf").read_text().splitlines():
            if line.split(":")[0].strip() == "hosts":
                return line.strip()
    return "no hosts line in /etc/nsswitch.conf"


def test_a_dns_lookup_that_does_not_end_in_time_is_named(prepare_mod: ModuleType, tmp_path: Path) -> None:
    """The lookup is the OS resolver's, with no timeout of its own: it is bounded by the answer
    timeout and named. The resolver is real (`silent_resolver_lookup`); skipped where names
    resolve without resolv.conf's server (systemd-resolved through nsswitch, a hosts entry)."""
    said = silent_resolver_lookup(tmp_path)
    if said.startswith("not asked: "):
        pytest.skip(f"names resolve here without resolv.conf ({nsswitch_hosts()}): {said.strip()}")
    assert said == "no answer after 0.5 s, held up by the DNS lookup of shards.example\n"


def test_the_dns_lookup_test_skips_where_names_resolve_without_resolv_conf(tmp_path: Path) -> None:
    """On a machine whose names resolve without resolv.conf's server (nsswitch's `resolve`, or a
    hosts entry), the lookup test failed, its lookup done before the answer timeout: the script
    says its server was 'not asked', which the test skips on. Here a hosts entry names the host."""
    said = silent_resolver_lookup(tmp_path, hosts="127.0.0.1 localhost shards.example\n")
    assert said.startswith("not asked: "), said


def test_a_refused_attempt_lets_go_of_its_connection_at_once(prepare_mod: ModuleType, shard_server) -> None:
    """The error of an attempt the server refused (a 503, a 429 as it limits a busy hub) held its
    connection in a reference cycle with the attempt's answer thread, so each refused attempt of
    each shard kept a socket open until Python's cycle collector happened by. It is let go as
    the error is, leaving the collector nothing to free."""
    server, _ = shard_server
    server.always_fail.add("shard_00000.parquet")
    request = prepare_mod.urllib.request.Request(f"{server.url}shard_00000.parquet")
    part = prepare_mod._Part(Path("unused.tmp"))
    collecting = gc.isenabled()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # (what the collector would free stays in gc.garbage to look at)
    try:
        for _ in range(3):
            with pytest.raises(prepare_mod.urllib.error.HTTPError):
                prepare_mod._opened(request, part, 0, prepare_mod.DownloadProgress(1, done=0))
        gc.collect()
        held = [thing for thing in gc.garbage if isinstance(thing, prepare_mod.urllib.error.HTTPError)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if collecting:
            gc.enable()
    assert held == [], (
        f"{len(held)} refused answer(s), each holding its connection, left to the cycle collector"
    )


def test_a_refusal_that_comes_after_its_attempt_gave_up_lets_go_of_its_connection(
    prepare_mod: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 503 whose last header came after its attempt had given up (past the answer timeout) was
    kept by the answer's thread, caught in a cycle with it, its connection open until Python's
    cycle collector came by. It is closed as it comes: the server sees the connection end."""
    server = socket.create_server(("127.0.0.1", 0))
    gave_up, ended = threading.Event(), []

    def refuse_late() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.0 503 Service Unavailable\r\nRetry-After: 0\r\n")  # (the client reads on)
            gave_up.wait()
            conn.sendall(b"Content-Length: 5\r\n\r\nbusy\n")
            conn.settimeout(30)
            try:
                ended.append(conn.recv(1) == b"")
            except TimeoutError:
                ended.append(False)

    refusing = threading.Thread(target=refuse_late, daemon=True)
    refusing.start()
    monkeypatch.setattr(prepare_mod, "DOWNLOAD_ANSWER_TIMEOUT_S", 1.0)
    request = prepare_mod.urllib.request.Request(f"http://127.0.0.1:{server.getsockname()[1]}/shard")
    collecting = gc.isenabled()
    gc.disable()
    try:
        with pytest.raises(TimeoutError, match="held up by the headers of the answer from 127.0.0.1"):
            prepare_mod._opened(
                request, prepare_mod._Part(Path("unused.tmp")), 0, prepare_mod.DownloadProgress(1, done=0)
            )
        gave_up.set()
        refusing.join(timeout=60)
    finally:
        if collecting:
            gc.enable()
        server.close()
    assert ended == [True], "the refusal that came late still holds its connection open"


def test_a_failed_download_ends_without_waiting_for_an_answer_to_another_shard(
    prepare_mod: ModuleType, shard_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shard refused for good (a 404) stops the others; one whose answer had not come, a server
    that said nothing yet, held the download's end until its answer timeout, 60 s, however soon
    the download had failed. Its wait watches the stop too: the end comes as the failure does."""
    server, remote = shard_server
    server.held.add("shard_00000.parquet")  # (answered only as the server closes)
    (remote / "shard_06542.parquet").unlink()
    monkeypatch.setattr(prepare_mod, "DOWNLOAD_ANSWER_TIMEOUT_S", 3600.0)
    monkeypatch.setattr(prepare_mod, "DOWNLOAD_READ_TIMEOUT_S", 3600.0)  # (nor a read's, its own)
    failed = _failures_of_a_download(prepare_mod, "the failed download waits for another shard's answer")
    assert failed == [f"download of {server.url}shard_06542.parquet failed: HTTP Error 404: File not found"]


def test_a_slow_but_steady_server_is_not_failed(
    prepare_mod: ModuleType, shard_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DOWNLOAD_MIN_RATE was 50 kB/s per thread: every attempt on a healthy link under 3.2 Mbit/s
    (a busy login node, a throttled proxy) failed, each from byte 0, and a download that used to
    finish slowly ended in "no network?". Only a trickle fails now: 8 kB/s is downloaded."""
    server, remote = shard_server
    server.paced["shard_00000.parquet"] = 8_000
    monkeypatch.setattr(prepare_mod, "DOWNLOAD_PACE_GRACE_S", 0.2)  # (the shard takes longer to send)
    assert (remote / "shard_00000.parquet").stat().st_size > 8_000 * 0.4
    prepare_mod.download_climbmix(num_shards=1)
    assert server.requests.count("shard_00000.parquet") == 1
    assert (prepare_mod.data_dir("climbmix") / "shard_00000.parquet").read_bytes() == (
        remote / "shard_00000.parquet"
    ).read_bytes()


def test_cli_names_the_pace_a_trickling_server_failed(
    prepare_mod: ModuleType, shard_server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A download failed for its pace ended in "(no network? ...)", though bytes came over it."""
    server, _ = shard_server
    server.stall.add("shard_00000.parquet")
    monkeypatch.setattr(prepare_mod, "DOWNLOAD_PACE_GRACE_S", 0.5)
    monkeypatch.setattr(prepare_mod, "DOWNLOAD_MIN_RATE", 1_000_000)
    monkeypatch.setattr(prepare_mod, "DOWNLOAD_ATTEMPTS", 1)
    monkeypatch.setattr(sys, "argv", ["prepare.py", "--data", "climbmix", "--num-shards", "1"])
    with pytest.raises(SystemExit) as ended:
        prepare_mod.main()
    said = str(ended.value.code)
    assert "network" not in said and said.splitlines()[-1].startswith(
        "(a server trickling under 1000 kB/s per download, or a link that slow; the offline corpus needs none"
    ), said


def test_a_retry_resumes_where_the_last_attempt_was_cut(prepare_mod: ModuleType, shard_server) -> None:
    """A failed attempt restarted its shard from byte 0: on a link that drops now and then, a
    100 MB shard was sent again whole at each drop. A retry asks for the rest (Range, If-Range),
    and a server that answers 206 sends only that."""
    server, remote = shard_server
    server.ranges = True
    name = "shard_00000.parquet"
    server.cut_once.add(name)
    size = (remote / name).stat().st_size
    prepare_mod.download_climbmix(num_shards=1)
    assert (prepare_mod.data_dir("climbmix") / name).read_bytes() == (remote / name).read_bytes()
    assert server.ranges_asked[name] == [None, f"bytes={size // 2}-"] and server.sent[name] == size


@pytest.mark.parametrize("why", ["the server ignores Range", "the file changed between attempts"])
def test_a_retry_the_server_answers_whole_starts_over(
    prepare_mod: ModuleType, shard_server, why: str
) -> None:
    """A 200 to a Range request (a server without ranges; If-Range no longer the file's) is the
    file from byte 0: written over the part, not appended to it, and no mix of two versions."""
    server, remote = shard_server
    name = "shard_00000.parquet"
    size = (remote / name).stat().st_size
    server.cut_once.add(name)
    server.ranges = why == "the file changed between attempts"
    if server.ranges:
        _write_shard(remote / "new.parquet", seed=99)
        server.replace_after_cut[name] = (remote / "new.parquet").read_bytes()
    prepare_mod.download_climbmix(num_shards=1)
    assert (prepare_mod.data_dir("climbmix") / name).read_bytes() == (remote / name).read_bytes()
    assert server.ranges_asked[name] == [None, f"bytes={size // 2}-"]
    assert server.sent[name] == size // 2 + (remote / name).stat().st_size
    assert not list(prepare_mod.data_dir("climbmix").glob("*.tmp"))


@pytest.mark.parametrize("answer", ["416", "no Content-Range"])
def test_a_range_answer_that_cannot_be_appended_starts_the_shard_over(
    prepare_mod: ModuleType, shard_server, answer: str
) -> None:
    """A 416 to the Range a retry asked (a part already whole, a file that shrank) failed the whole
    download as a refusal, and a 206 that did not say where it begins ended it in a TypeError: the
    part is dropped and the next attempt asks for the shard whole."""
    server, remote = shard_server
    name = "shard_00000.parquet"
    size = (remote / name).stat().st_size
    server.ranges, server.odd_range = True, answer
    server.cut_once.add(name)
    prepare_mod.download_climbmix(num_shards=1)
    assert (prepare_mod.data_dir("climbmix") / name).read_bytes() == (remote / name).read_bytes()
    assert server.ranges_asked[name] == [None, f"bytes={size // 2}-", None]
    assert not list(prepare_mod.data_dir("climbmix").glob("*.tmp"))


def test_a_body_cut_short_is_named_and_retried(prepare_mod: ModuleType, shard_server) -> None:
    """A connection closed in the middle of a shard failed as "Parquet magic bytes not found in
    footer ... this is not a parquet file", which sent users looking for a wrong URL."""
    server, remote = shard_server
    server.stall.add("shard_00000.parquet")
    server.release.set()  # each time: half the shard, then the connection closed
    size = (remote / "shard_00000.parquet").stat().st_size
    closed = rf"the connection closed after {size // 2:,} of {size:,} bytes"
    with pytest.raises(prepare_mod.DownloadFailed, match=rf"shard_00000.parquet failed 5 times: {closed}"):
        prepare_mod.download_climbmix(num_shards=1)
    assert not list(prepare_mod.data_dir("climbmix").glob("shard_00000.parquet*"))


def test_a_shard_the_server_does_not_have_is_not_retried(prepare_mod: ModuleType, shard_server) -> None:
    """A 404 is the same on every attempt: five of them only delayed the error by 30 s."""
    server, remote = shard_server
    (remote / "shard_00001.parquet").unlink()
    with pytest.raises(prepare_mod.DownloadFailed, match=r"shard_00001.parquet failed: HTTP Error 404"):
        prepare_mod.download_climbmix(num_shards=2)
    assert server.requests.count("shard_00001.parquet") == 1


def test_cli_does_not_blame_the_network_for_a_servers_answer(
    harness_env, shard_server, tmp_path: Path
) -> None:
    """A 404 (a data URL naming the wrong place) ended in "(no network? ...)", though the
    server's answer had come over it."""
    server, remote = shard_server
    (remote / "shard_00000.parquet").unlink()
    env = harness_env(cache=str(tmp_path / "cli-cache"), data_url=server.url)
    proc = _run_prepare(env, tmp_path, "--data", "climbmix", "--num-shards", "1")
    assert proc.returncode == 1 and "network" not in proc.stderr, proc.stderr
    assert proc.stderr.splitlines()[-2:] == [
        f"error: download of {server.url}shard_00000.parquet failed: HTTP Error 404: File not found",
        "(the server answered: AUTORESEARCH_DATA_URL chooses another; the offline corpus needs none: "
        "--data offline here, campaign.data=offline in a campaign)",
    ]


def test_a_shard_that_fails_for_good_stops_the_rest(
    prepare_mod: ModuleType, shard_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _ = shard_server
    monkeypatch.setattr(prepare_mod, "DOWNLOAD_WORKERS", 1)  # shards in turn: 0 fails, 1 and val wait
    server.always_fail.add("shard_00000.parquet")
    with pytest.raises(RuntimeError, match="shard_00000.parquet failed 5 times"):
        prepare_mod.download_climbmix(num_shards=2)
    assert set(server.requests) == {"shard_00000.parquet"}


def test_a_damaged_shard_in_the_cache_is_named_and_downloaded_again(
    prepare_mod: ModuleType, shard_server, capsys: pytest.CaptureFixture
) -> None:
    """A shard cut short (a disk fault, a copy interrupted) was taken for whole: prepare.py said
    "ready" and training died in pyarrow, naming no file."""
    server, remote = shard_server
    paths = prepare_mod.download_climbmix(num_shards=2)
    whole = paths[1].read_bytes()
    paths[1].write_bytes(whole[: len(whole) // 2])
    with pytest.raises(
        RuntimeError, match=r"damaged train data .*shard_00001.parquet .*run `python prepare.py`"
    ):
        prepare_mod.split_files("train", "climbmix")
    server.requests.clear()
    capsys.readouterr()
    prepare_mod.download_climbmix(num_shards=2)
    assert server.requests == ["shard_00001.parquet"] and paths[1].read_bytes() == whole
    assert capsys.readouterr().err.count("shard_00001.parquet in the cache is damaged") == 1
    assert len(prepare_mod.split_files("train", "climbmix")) == 2


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        (pa.table({"content": ["a document"]}), "no string column 'text' (columns: content)"),
        (pa.table({"text": pa.array([], pa.string())}), "no rows"),
    ],
)
def test_a_shard_that_is_not_documents_is_refused(
    prepare_mod: ModuleType, shard_server, table: pa.Table, problem: str
) -> None:
    server, remote = shard_server
    pq.write_table(table, remote / "shard_00000.parquet")
    with pytest.raises(prepare_mod.DownloadFailed, match=re.escape(problem)):
        prepare_mod.download_climbmix(num_shards=1)
    assert not (prepare_mod.data_dir("climbmix") / "shard_00000.parquet").exists()


def test_a_web_page_served_for_a_shard_is_named(prepare_mod: ModuleType, shard_server) -> None:
    """An HTML page served as 200 for a shard (a proxy's login page, a hub's error page) failed
    as "Parquet magic bytes not found in footer ... the file is corrupted", naming neither the
    page nor the server that sent it."""
    _, remote = shard_server
    (remote / "shard_00000.parquet").unlink()
    (remote / "shard_00000.parquet").mkdir()  # a folder: the server answers 200 with its listing
    with pytest.raises(
        prepare_mod.DownloadFailed,
        match=r"shard_00000.parquet failed 5 times: the server sent text/html; charset=utf-8, "
        r"not a parquet file, beginning '<!DOCTYPE HTML>",
    ):
        prepare_mod.download_climbmix(num_shards=1)
    assert not list(prepare_mod.data_dir("climbmix").glob("shard_00000.parquet*"))


def test_climbmix_tokenizer_and_batches(
    prepare_mod: ModuleType, shard_server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    prepare_mod.download_climbmix(num_shards=2)
    monkeypatch.setattr(prepare_mod, "TOKENIZER_REPORT_CHARS", 10_000)
    capsys.readouterr()
    enc = prepare_mod.load_tokenizer("climbmix", 300)
    reports = [line for line in capsys.readouterr().err.splitlines() if "characters read" in line]
    assert reports and len(reports) == len(set(reports))  # the training text, reported as it is read
    assert enc.n_vocab == 300
    loader = prepare_mod.make_dataloader("train", 2, seq_len=32, source="climbmix", vocab_size=300)
    x, y = next(loader)
    assert x.shape == (2, 32) and (x[:, 0] == enc.encode_single_token(prepare_mod.BOS_TOKEN)).all()

    val = prepare_mod.split_files("val", "climbmix")[0]
    val.write_bytes(val.read_bytes()[:100])  # damaged: training must not start only to fail at its end
    with pytest.raises(RuntimeError, match="damaged val data .*shard_06542.parquet"):
        next(prepare_mod.make_dataloader("train", 2, seq_len=32, source="climbmix", vocab_size=300))


def test_a_validation_shard_that_is_a_training_shard_is_refused(
    prepare_mod: ModuleType, shard_server
) -> None:
    """A mirror that serves one file for every name, or a shard copied by hand under the wrong
    name, made the validation shard a training shard: every val_bpb scored text the model had
    trained on, and nothing said so. The tokenizer's training (the data step) and a run's loader
    now refuse it, in one line."""
    server, remote = shard_server
    shutil.copy(remote / "shard_00001.parquet", remote / "shard_06542.parquet")
    prepare_mod.download_climbmix(num_shards=2)
    folder = prepare_mod.data_dir("climbmix")
    said = (
        f"the validation shard shard_06542.parquet in {folder} is the same file as the training "
        "shard shard_00001.parquet, so val_bpb would score text the model trained on: delete both, "
        "and check that AUTORESEARCH_DATA_URL serves each shard under its own name"
    )
    with pytest.raises(RuntimeError, match=f"^{re.escape(said)}$"):
        prepare_mod.train_tokenizer("climbmix", 300)
    with pytest.raises(RuntimeError, match=f"^{re.escape(said)}$"):
        prepare_mod.split_files("val", "climbmix")


def test_a_runs_start_takes_one_stat_per_shard(
    prepare_mod: ModuleType, shard_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """split_files looked whether each training shard was there, then took its size again for the
    check that none is the validation shard: two stats a training shard at every run's start, 4003
    with 2000 shards in the cache where 2003 tell the same. Counted on the real files, not timed."""
    prepare_mod.download_climbmix(num_shards=3)
    stats: list[str] = []
    real_stat = Path.stat

    def counted_stat(path: Path, *args, **kwargs) -> os.stat_result:
        stats.append(path.name)
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", counted_stat)
    for split in ("train", "val"):
        stats.clear()
        prepare_mod.split_files(split, "climbmix")
        training = [f"shard_{index:05d}.parquet" for index in range(3)]
        assert sorted(name for name in stats if name in training) == training, (split, stats)


def test_a_runs_start_reads_each_shards_footer_once(
    prepare_mod: ModuleType, shard_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run's start read every shard's footer four times in the training process: the loader's
    check of both splits, its reader's check and row-group listing, and evaluation's check again,
    8002 footer reads with 2000 shards, each a server round trip on NFS. Each is now read once; a
    shard replaced under the run is read again, and one cut short is still refused."""
    prepare_mod.download_climbmix(num_shards=3)
    reads: list[str] = []

    def counted(real_read):  # pyarrow's own readers, each call one footer read
        def read(where, *args, **kwargs):
            reads.append(Path(where).name)
            return real_read(where, *args, **kwargs)

        return read

    monkeypatch.setattr(pq, "read_metadata", counted(pq.read_metadata))
    monkeypatch.setattr(pq, "ParquetFile", counted(pq.ParquetFile))

    def runs_start() -> list[Path]:
        for split in ("train", "val"):  # make_dataloader's check, at the start and at evaluation
            prepare_mod.split_files(split, "climbmix")
        return prepare_mod.split_files("train", "climbmix")

    files = runs_start()
    prepare_mod._row_groups(files)  # what iter_texts lists before its first read
    runs_start()
    shards = [f"shard_{index:05d}.parquet" for index in (0, 1, 2, prepare_mod.VAL_SHARD)]
    assert sorted(reads) == shards

    reads.clear()
    replaced = files[1]
    pq.write_table(pa.table({"text": ["another text", "and more"]}), replaced)
    assert prepare_mod._row_groups(runs_start()) and reads == [replaced.name]

    replaced.write_bytes(replaced.read_bytes()[:-20])
    with pytest.raises(RuntimeError, match=f"damaged train data in .*: {replaced.name} \\("):
        runs_start()


def test_reading_a_row_group_reads_no_footer_again(
    prepare_mod: ModuleType, shard_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reader opened every row group with pq.ParquetFile(path), which reads the footer again
    each time, a server round trip on NFS per row group. It now reads a shard's footer once per
    process, and again only for a shard replaced under the run, whose new texts it reads."""
    prepare_mod.download_climbmix(num_shards=3)
    reads: list[str] = []
    real_read_metadata, real_parquet_file = pq.read_metadata, pq.ParquetFile

    def read_metadata(where, *args, **kwargs):
        reads.append(Path(getattr(where, "name", where)).name)
        return real_read_metadata(where, *args, **kwargs)

    def parquet_file(where, *args, metadata=None, **kwargs):  # given no footer, pyarrow reads it
        if metadata is None:
            reads.append(Path(getattr(where, "name", where)).name)
        return real_parquet_file(where, *args, metadata=metadata, **kwargs)

    monkeypatch.setattr(pq, "read_metadata", read_metadata)
    monkeypatch.setattr(pq, "ParquetFile", parquet_file)

    batches = list(prepare_mod.iter_texts("train", source="climbmix", passes=2))
    files = prepare_mod.split_files("train", "climbmix")
    assert len(batches) == 2 * 3 * 3  # two passes over three shards of three row groups
    assert sorted(reads) == [f.name for f in files]

    reads.clear()
    replaced = files[1]
    pq.write_table(pa.table({"text": ["another text", None, "and more"]}), replaced)
    assert prepare_mod._read_texts(replaced, 0) == ["another text", "and more"]
    assert prepare_mod._read_texts(replaced, 0) == ["another text", "and more"]
    assert reads == [replaced.name]


def test_documents_without_text_are_passed_over(
    prepare_mod: ModuleType, shard_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shard whose text column holds nulls (a string column, so it passes the download's check)
    ended the tokenizer's training in a TypeError traceback ("'NoneType' object cannot be cast as
    'str'"), and a run's loader alike; a null is no document, and is passed over."""
    server, remote = shard_server
    shard = remote / "shard_00000.parquet"
    texts = pq.read_table(shard).column("text").to_pylist()
    pq.write_table(pa.table({"text": pa.array([None, *texts[:30], None, *texts[30:]], pa.string())}), shard)
    prepare_mod.download_climbmix(num_shards=1)
    enc = prepare_mod.load_tokenizer("climbmix", 300)
    docs = list(prepare_mod.iter_token_docs("train", source="climbmix", vocab_size=300, passes=1))
    bos = enc.encode_single_token(prepare_mod.BOS_TOKEN)
    assert sorted(docs) == sorted([bos, *enc.encode_ordinary(text)] for text in texts)


def test_a_training_split_without_documents_is_named_not_waited_on(
    prepare_mod: ModuleType, use_offline_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Training data whose every text is null gave the loader nothing to pack, and it read the
    split again and again for ever: the run waited for its first batch until its deadline."""
    cache = tmp_path / "cache"
    shutil.copytree(use_offline_cache, cache)
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(cache))
    train = prepare_mod.data_dir() / "train.parquet"
    pq.write_table(pa.table({"text": pa.array([None] * 40, pa.string())}), train)
    with pytest.raises(
        RuntimeError, match=f"^the train split in {re.escape(str(train.parent))} holds no text"
    ):
        next(prepare_mod.iter_texts("train"))


def _run_prepare(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python prepare.py ARGS` as a user runs it."""
    return subprocess.run(
        [sys.executable, str(TRAINER_DIR / "prepare.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_prepares_the_cpu_scale(harness_env, tmp_path: Path) -> None:
    proc = _run_prepare(harness_env(cache=str(tmp_path)), tmp_path, "--scale", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.rstrip().endswith("ready")
    assert (tmp_path / "tokenizer" / f"offline-py{sys.version_info[0]}{sys.version_info[1]}-v2048").is_dir()


def test_the_commands_scale_and_data_win_over_bad_variables(
    harness_env, offline_cache: Path, tmp_path: Path
) -> None:
    """The command's --scale and --data choose what it prepares: a bad AUTORESEARCH_SCALE or
    AUTORESEARCH_DATA beside them, which it does not read, stopped it at import all the same."""
    env = harness_env(cache=str(offline_cache), scale="tiny", data="web")
    proc = _run_prepare(env, tmp_path, "--scale=cpu", "--data", "offline")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.rstrip().endswith("ready")
    assert "preparing scale cpu: data offline, vocab 2048" in proc.stderr


def test_preparations_of_one_cache_at_once_leave_it_whole(
    harness_env, offline_cache: Path, tmp_path: Path
) -> None:
    """Array tasks starting together on a shared file system each prepare the same cache: every
    one ends ready, none reads another's half-written file (it would call it damaged), one alone
    builds the corpus and trains the tokenizer (the others wait for it, then find them made), and
    the cache is the one a lone preparation makes."""
    cache = tmp_path / "shared-cache"
    env = harness_env(cache=str(cache))
    command = [sys.executable, str(TRAINER_DIR / "prepare.py"), "--scale", "cpu"]
    procs = [
        subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True) for _ in range(3)
    ]
    stderrs = [proc.communicate(timeout=300)[1] for proc in procs]
    for proc, stderr in zip(procs, stderrs, strict=True):
        assert proc.returncode == 0 and stderr.rstrip().endswith("ready") and "damaged" not in stderr, stderr
    assert sum("offline corpus:" in stderr for stderr in stderrs) == 1, stderrs
    assert sum("training a 2048-token BPE" in stderr for stderr in stderrs) == 1, stderrs
    assert not list(cache.rglob("*.tmp"))
    made = sorted(p.relative_to(cache) for p in cache.rglob("*") if p.is_file())
    assert made == sorted(p.relative_to(offline_cache) for p in offline_cache.rglob("*") if p.is_file())
    for name in made:
        if name.suffix == ".parquet":
            assert pq.read_table(cache / name).equals(pq.read_table(offline_cache / name))
        elif name.suffix != ".lock":  # (a lock holds its last holder's pid)
            assert (cache / name).read_bytes() == (offline_cache / name).read_bytes()


def _cache_without_its_tokenizer(offline_cache: Path, cache: Path) -> tuple[Path, bytes]:
    """A copy of the prepared cache whose tokenizer is gone; the tokenizer's path and bytes."""
    shutil.copytree(offline_cache, cache)
    tokenizer = next((cache / "tokenizer").glob("*/tokenizer.json"))
    whole = tokenizer.read_bytes()
    tokenizer.unlink()
    return tokenizer, whole


def test_a_preparation_waits_for_the_one_under_way_and_does_not_do_it_again(
    harness_env, offline_cache: Path, tmp_path: Path
) -> None:
    """Array tasks of a campaign that does not prepare its data (campaign.prepare_data=false), or
    two campaigns started on one fresh cache, each trained the tokenizer (at the gpt2 scale on 1B
    characters) and downloaded every shard. A preparation now waits for the one under way, saying
    whose, and finds its work done."""
    tokenizer, whole = _cache_without_its_tokenizer(offline_cache, tmp_path / "cache")
    folder = tokenizer.parent
    with open(folder.with_name(f"{folder.name}.lock"), "w") as held:  # another's preparation, under way
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("pid 7 on node-b")
        held.flush()
        proc = subprocess.Popen(
            [sys.executable, str(TRAINER_DIR / "prepare.py"), "--scale", "cpu"],
            cwd=tmp_path,
            env=harness_env(cache=str(tmp_path / "cache")),
            stderr=subprocess.PIPE,
            text=True,
        )
        said = [proc.stderr.readline(), proc.stderr.readline()]
        assert said[1] == f"waiting for another preparation of {folder} (pid 7 on node-b) to finish\n", said
        tokenizer.write_bytes(whole)  # what the preparation under way makes, before it lets go
    rest = proc.communicate(timeout=300)[1]
    assert proc.returncode == 0 and rest.rstrip().endswith("ready") and "training" not in rest, rest


def test_a_preparation_waiting_on_a_stuck_one_says_it_is_still_waiting(
    prepare_mod: ModuleType, offline_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A preparation waiting on a holder that is stuck (a prepare.py suspended with Ctrl-Z, a hung
    NFS mount) said one line and then nothing, for ever. It now says again, every
    LOCK_WAIT_REPORT_S, how long it has waited, on whom, and what to do."""
    tokenizer, whole = _cache_without_its_tokenizer(offline_cache, tmp_path / "cache")
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(prepare_mod, "LOCK_POLL_S", 0.01)
    monkeypatch.setattr(prepare_mod, "LOCK_WAIT_REPORT_S", 0.05)
    lines: list[str] = []
    again = threading.Event()

    def log(line: str) -> None:
        lines.append(line)
        if sum(said.startswith("still waiting") for said in lines) == 2:  # (said, and said again)
            again.set()

    monkeypatch.setattr(prepare_mod, "log", log)
    folder = tokenizer.parent
    waiter = threading.Thread(target=prepare_mod.train_tokenizer)
    with open(folder.with_name(f"{folder.name}.lock"), "w") as held:  # a stuck preparation's
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("pid 7 on node-b")
        held.flush()
        waiter.start()
        try:
            assert again.wait(timeout=60), lines
            tokenizer.write_bytes(whole)
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)
    waiter.join(timeout=120)
    assert not waiter.is_alive() and tokenizer.read_bytes() == whole
    assert lines[0] == f"waiting for another preparation of {folder} (pid 7 on node-b) to finish"
    still = rf"still waiting for another preparation of {re.escape(str(folder))} \(pid 7 on node-b\), 0 min so far; "
    assert re.fullmatch(
        still + r"if it is stuck \(suspended, on a hung mount\), kill it and this one goes on", lines[1]
    )


def test_caches_that_link_one_shared_folder_wait_for_each_others_preparation(
    prepare_mod: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Two users whose caches link their data folder to one shared folder locked each a file
    beside their own link, so both downloaded into it at once. A preparation now also locks the
    file beside the folder the link leads to, and the second waits for the first."""
    shared = tmp_path / "group" / "climbmix"
    shared.mkdir(parents=True)
    links = [tmp_path / user / "data" / "climbmix" for user in ("ana", "ben")]
    for link in links:
        link.parent.mkdir(parents=True)
        link.symlink_to(shared, target_is_directory=True)
    monkeypatch.setattr(prepare_mod, "LOCK_POLL_S", 0.01)
    lines: list[str] = []
    waited_or_entered = threading.Event()
    entered = threading.Event()

    def log(line: str) -> None:
        lines.append(line)
        waited_or_entered.set()

    def second_preparation() -> None:
        with prepare_mod._preparing(links[1]):
            entered.set()
            waited_or_entered.set()

    monkeypatch.setattr(prepare_mod, "log", log)
    with prepare_mod._preparing(links[0]):
        waiter = threading.Thread(target=second_preparation)
        waiter.start()
        assert waited_or_entered.wait(timeout=60)
        assert not entered.is_set()
    waiter.join(timeout=60)
    assert entered.is_set()
    assert lines == [
        f"waiting for another preparation of {links[1]} (pid {os.getpid()} on {platform.node()}) to finish"
    ]


@pytest.mark.parametrize("path", ["a link above", "a .. in it"])
def test_a_cache_reached_through_a_link_above_its_folder_is_locked_once(
    prepare_mod: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """A cache whose path has a link above the data folder (a home on scratch space) or a `..`
    resolves elsewhere though the folder is no link: its "shared" lock was its own lock file,
    flocked a second time on another handle, and every preparation waited for itself for ever."""
    (tmp_path / "scratch" / "cache" / "climbmix").mkdir(parents=True)
    (tmp_path / "home").symlink_to(tmp_path / "scratch", target_is_directory=True)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    folder = tmp_path / "home/cache/climbmix" if path == "a link above" else Path("../scratch/cache/climbmix")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import prepare; from pathlib import Path\n"
        "with prepare._preparing(Path(sys.argv[2])): print('prepared')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(Path(prepare_mod.__file__).parent), str(folder)],
        capture_output=True,
        text=True,
        timeout=60,  # (a bound on the hang this was: it waited for itself for ever)
    )
    assert (done.returncode, done.stdout.strip()) == (0, "prepared"), done.stderr


def test_a_lock_left_by_a_killed_preparation_is_no_lock(
    harness_env, offline_cache: Path, tmp_path: Path
) -> None:
    """A preparation killed while it held the lock (here SIGKILL; on NFS a host that died, whose
    locks the server drops) leaves the lock file, which holds nobody up."""
    tokenizer, whole = _cache_without_its_tokenizer(offline_cache, tmp_path / "cache")
    lock = tokenizer.parent.with_name(f"{tokenizer.parent.name}.lock")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys; f = open(sys.argv[1], 'w'); fcntl.flock(f, fcntl.LOCK_EX); "
            "f.write('pid 9 on gone-host'); f.flush(); print('held', flush=True); sys.stdin.read()",
            str(lock),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline() == "held\n"
    holder.kill()
    holder.wait()
    proc = _run_prepare(harness_env(cache=str(tmp_path / "cache")), tmp_path, "--scale", "cpu")
    assert proc.returncode == 0 and proc.stderr.rstrip().endswith("ready"), proc.stderr
    assert "waiting" not in proc.stderr and tokenizer.read_bytes() == whole


def test_a_lock_file_this_user_cannot_write_still_locks(
    harness_env, offline_cache: Path, tmp_path: Path
) -> None:
    """In a cache shared by a group the folders are writable to all and a lock file is its
    creator's: another user's preparation failed on it ("... .lock cannot be written"), where it
    could write every file it prepares. It now takes the lock through a read-only descriptor."""
    tokenizer, whole = _cache_without_its_tokenizer(offline_cache, tmp_path / "cache")
    lock = tokenizer.parent.with_name(f"{tokenizer.parent.name}.lock")
    with _unwritable(lock):  # (this user cannot write it, but may read it)
        proc = _run_prepare(harness_env(cache=str(tmp_path / "cache")), tmp_path, "--scale", "cpu")
    assert proc.returncode == 0 and proc.stderr.rstrip().endswith("ready"), proc.stderr
    assert "takes no lock" not in proc.stderr and "unlocked" not in proc.stderr, proc.stderr  # (locked)
    assert tokenizer.read_bytes() == whole


@pytest.mark.parametrize("folder_mode", [0o2775, 0o755], ids=["group-writable", "owners-only"])
def test_a_lock_file_beside_a_group_writable_folder_is_writable_to_the_group(
    prepare_mod: ModuleType, tmp_path: Path, folder_mode: int
) -> None:
    """A lock file was created with the umask, 0644 under the usual 022, even beside a folder its
    group shares: another member could open it only for reading, which NFS takes no flock
    through, so that member's preparation went on unlocked. It is now group-writable there, and
    only there."""
    shared = tmp_path / "group"
    shared.mkdir()
    shared.chmod(folder_mode)
    umask = os.umask(0o022)
    try:
        with prepare_mod._preparing(shared / "climbmix"):
            pass
    finally:
        os.umask(umask)
    expected = 0o664 if folder_mode & 0o020 else 0o644
    assert (shared / "climbmix.lock").stat().st_mode & 0o777 == expected


@pytest.mark.skipif(os.geteuid() != 0, reason="gives a file to another user")
def test_another_users_lock_file_keeps_its_mode(prepare_mod: ModuleType, tmp_path: Path) -> None:
    """Only its owner may change a file's mode: another member's lock file, beside a folder the
    group shares, is locked as it is, with no error and no change (root could change it)."""
    shared = tmp_path / "group"
    shared.mkdir()
    shared.chmod(0o2775)
    lock = shared / "climbmix.lock"
    lock.write_bytes(b"")
    lock.chmod(0o644)
    os.chown(lock, 65534, 65534)
    with prepare_mod._preparing(shared / "climbmix"):
        pass
    assert (lock.stat().st_mode & 0o777, lock.stat().st_uid) == (0o644, 65534)


@pytest.mark.parametrize("held_first", [False, True], ids=["at-once", "while-waiting"])
def test_a_cache_that_takes_no_lock_is_prepared_unlocked(
    prepare_mod: ModuleType,
    offline_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    held_first: bool,
) -> None:
    """Lustre mounted without `-o flock` refuses every flock (ENOLCK, EOPNOTSUPP, ENOSYS): a
    preparation there does the work itself, as before there was a lock, saying so. So does one
    whose lock is refused while it waits (an NFS lock daemon gone down), which ended in a traceback."""
    tokenizer, whole = _cache_without_its_tokenizer(offline_cache, tmp_path / "cache")
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(prepare_mod, "LOCK_POLL_S", 0.01)
    answers = [BlockingIOError(errno.EAGAIN, "held")] * held_first + [
        OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
    ]

    def flock(fd: int, operation: int) -> None:
        raise answers.pop(0) if answers else AssertionError("tried the lock after it was refused")

    monkeypatch.setattr(prepare_mod.fcntl, "flock", flock)
    lines: list[str] = []
    monkeypatch.setattr(prepare_mod, "log", lines.append)
    assert prepare_mod.train_tokenizer() == tokenizer and tokenizer.read_bytes() == whole
    lock = tokenizer.parent.with_name(f"{tokenizer.parent.name}.lock")
    unlocked = f"{lock} takes no lock (No locks available): preparing {tokenizer.parent} unlocked"
    assert lines[held_first] == unlocked


def test_cli_names_the_cache_when_it_cannot_write_there(harness_env, tmp_path: Path) -> None:
    """A cache that cannot be written (here a file where the folder should be; read-only or full
    alike) ended in a bare OSError, not saying which setting chooses the cache."""
    cache = tmp_path / "not-a-folder"
    cache.write_text("")
    proc = _run_prepare(harness_env(cache=str(cache)), tmp_path, "--scale", "cpu")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.splitlines()[-1]
    assert last.startswith("error: ") and last.endswith(
        f"(the cache is {cache}; AUTORESEARCH_CACHE chooses another)"
    )


@contextlib.contextmanager
def _unwritable(folder: Path) -> Iterator[None]:
    """The folder (or file) as a cache shared read-only looks to its users. Root writes through a
    folder's mode, so for root it is made immutable (chattr +i) instead."""
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True, check=False).returncode:
            pytest.skip("chattr +i is refused here, and root writes through a folder's mode")
        undo = ["chattr", "-i", str(folder)]
    else:
        folder.chmod(0o555)
        undo = ["chmod", "755", str(folder)]
    try:
        yield
    finally:
        subprocess.run(undo, check=True)


def test_cli_fails_at_once_on_a_shard_missing_from_a_read_only_cache(
    prepare_mod: ModuleType, harness_env, shard_server, tmp_path: Path
) -> None:
    """A cache shared read-only, asked for a shard it lacks: each shard's download failed 5 times,
    waiting 30 s in all, and the error blamed the network ("no network?")."""
    server, _ = shard_server
    prepare_mod.download_climbmix(num_shards=1)  # (the fixture's cache)
    folder, cache = prepare_mod.data_dir("climbmix"), prepare_mod.cache_dir()
    env = harness_env(cache=str(cache), data_url=server.url)
    asked_before = len(server.requests)
    with _unwritable(folder):
        proc = _run_prepare(env, tmp_path, "--data", "climbmix", "--num-shards", "2")
    assert proc.returncode == 1 and "retrying" not in proc.stderr, proc.stderr
    last = proc.stderr.splitlines()[-1]
    assert last.startswith(f"error: {folder} cannot be written (") and last.endswith(
        "and 1 of 3 climbmix shards are missing from it: prepare it as its owner "
        f"(the cache is {cache}; AUTORESEARCH_CACHE chooses another)"
    ), last
    assert server.requests[asked_before:] == []


def _file_size_limit(nbytes: int) -> Callable[[], None]:
    """A child's limit on the size of a file it writes (the kernel's RLIMIT_FSIZE): a cache that
    refuses writes as a full disk or a quota does, without privileges to fill a file system."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))

    return limit


@pytest.mark.parametrize(
    ("args", "written"),
    [
        (("--data", "climbmix", "--num-shards", "1"), r"shard_\d{5}\.parquet"),
        (("--data", "offline"), r"train\.parquet"),
    ],
)
def test_cli_names_the_file_a_cache_refuses_and_does_not_retry_it(
    prepare_mod: ModuleType, harness_env, shard_server, tmp_path: Path, args: tuple[str, ...], written: str
) -> None:
    """A shard the cache could not hold (a full disk: "No space left on device") was retried 5
    times with back-off, 30 s, and the error named the URL and asked "no network?"; the offline
    corpus's error named no file."""
    server, _ = shard_server
    cache = os.environ["AUTORESEARCH_CACHE"]
    proc = subprocess.run(
        [sys.executable, str(TRAINER_DIR / "prepare.py"), "--scale", "cpu", *args],
        cwd=tmp_path,
        env=harness_env(cache=cache, data_url=server.url),
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_file_size_limit(1000),  # (each test shard is larger, and so is the corpus)
    )
    folder = prepare_mod.data_dir(args[1])
    assert proc.returncode == 1 and "retrying" not in proc.stderr and "network" not in proc.stderr, (
        proc.stderr
    )
    assert re.fullmatch(
        rf"error: {re.escape(str(folder))}/{written} cannot be written \(.*File too large\) "
        rf"\(the cache is {re.escape(cache)}; AUTORESEARCH_CACHE chooses another\)",
        proc.stderr.splitlines()[-1],
    ), proc.stderr
    assert len(server.requests) <= 2 and len(set(server.requests)) == len(server.requests)  # none again
    assert not list(folder.glob("*.tmp"))


def test_cli_refuses_a_data_url_it_cannot_open_before_downloading(
    harness_env, shard_server, tmp_path: Path
) -> None:
    """A mirror's folder given as a path, not a file:// URL: each shard's five attempts failed on
    "unknown url type", 30 s in all, and the error asked "no network?"."""
    _, remote = shard_server
    cache = tmp_path / "cli-cache"
    proc = _run_prepare(harness_env(cache=str(cache), data_url=str(remote)), tmp_path, "--data", "climbmix")
    assert proc.returncode == 1 and "retrying" not in proc.stderr, proc.stderr
    assert proc.stderr.splitlines()[-1] == (
        f"error: AUTORESEARCH_DATA_URL must be an http://, https:// or file:// URL, not {str(remote)!r}"
    )
    assert not list(cache.rglob("*.parquet*"))
    file_url = harness_env(cache=str(cache), data_url=remote.as_uri())
    proc = _run_prepare(file_url, tmp_path, "--data", "climbmix", "--num-shards", "1")
    assert len(list(cache.rglob("shard_*.parquet"))) == 2, proc.stderr  # a file:// URL is taken


@pytest.mark.parametrize("num_shards", ["0", "6543", "ten", "²"])  # (² is a digit int() refuses)
def test_cli_refuses_a_shard_count_out_of_range_and_records_nothing(
    harness_env, shard_server, tmp_path: Path, num_shards: str
) -> None:
    """Recorded, 0 shards would be every later run's choice: all of them without training data.
    6543 shards would train on the validation shard, 6542."""
    server, _ = shard_server
    cache = tmp_path / "cli-cache"
    env = harness_env(cache=str(cache), data_url=server.url)
    proc = _run_prepare(env, tmp_path, "--data", "climbmix", "--num-shards", num_shards)
    refused = f"--num-shards: must be a whole number from 1 to 6542, not {num_shards}"
    assert proc.returncode == 2 and refused in proc.stderr
    assert not cache.exists() and not server.requests


@pytest.mark.parametrize("num_shards", [0, 6543])
def test_download_refuses_a_shard_count_out_of_range(
    prepare_mod: ModuleType, shard_server, num_shards: int
) -> None:
    server, _ = shard_server
    with pytest.raises(ValueError, match=f"num_shards must be 1 to 6542, not {num_shards}"):
        prepare_mod.download_climbmix(num_shards)
    assert not prepare_mod.data_dir("climbmix").exists() and not server.requests


def test_cli_reports_a_failed_step_in_one_line(harness_env, shard_server, tmp_path: Path) -> None:
    """The test shards are far too small for the cpu scale's 2048-token vocabulary."""
    server, _ = shard_server
    env = harness_env(cache=str(tmp_path / "cli-cache"), data_url=server.url)
    proc = _run_prepare(env, tmp_path, "--scale", "cpu", "--data", "climbmix", "--num-shards", "1")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("error: corpus too small for a 2048-token vocabulary")


class CausalMean(torch.nn.Module):
    """A causal model small enough to compile in seconds: each position sees the mean of the
    embeddings up to it."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, 16)
        self.head = torch.nn.Linear(16, vocab)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(1, idx.shape[1] + 1, device=idx.device).view(1, -1, 1)
        return self.head(torch.cumsum(self.embed(idx), 1) / positions)


@pytest.mark.filterwarnings(
    "ignore:.*torch.jit.script_method. is deprecated:DeprecationWarning"
)  # inductor's imports
def test_a_compiled_model_passes_the_self_check_and_scores_as_eager(
    prepare_mod: ModuleType, use_offline_cache: Path
) -> None:
    """torch.compile (dynamo and inductor) must not look like an edit of the harness to
    verify_harness: every GPU run compiles its model."""
    torch.manual_seed(0)
    eager = CausalMean(prepare_mod.VOCAB_SIZE)
    compiled = torch.compile(eager, dynamic=False)
    x, y = next(prepare_mod.make_dataloader("train", 4, workers=0))
    torch.nn.functional.cross_entropy(compiled(x).flatten(0, 1), y.flatten()).backward()  # as training does
    assert prepare_mod.evaluate_bpb(compiled, 48) == pytest.approx(
        prepare_mod.evaluate_bpb(eager, 48), rel=1e-5
    )
    prepare_mod.verify_harness()


def test_the_check_of_a_climbmix_step_names_its_downloads_and_refuses_a_data_url_that_is_none(
    harness_env, tmp_path: Path
) -> None:
    """`prepare.py --check`, which `autoresearch check` asks, writes nothing and answers in one line."""
    cache, mirror = tmp_path / "cache", (tmp_path / "mirror").as_uri()
    command = [
        sys.executable,
        str(TRAINER_DIR / "prepare.py"),
        "--scale",
        "gpt2",
        "--data",
        "climbmix",
        "--check",
    ]

    def checked(url: str) -> subprocess.CompletedProcess[str]:
        env = harness_env(cache=str(cache), data_url=url)
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)

    would = checked(mirror)
    assert would.returncode == 0 and would.stderr == "", would.stderr
    assert (
        would.stdout
        == f"would download 11 of 11 climbmix shards from {mirror} and train the 8192-token tokenizer in {cache}\n"
    )
    refused = checked("/srv/mirror")
    assert refused.returncode == 1 and refused.stdout == ""
    assert (
        refused.stderr
        == "error: AUTORESEARCH_DATA_URL must be an http://, https:// or file:// URL, not '/srv/mirror'\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_the_check_of_a_cache_on_a_read_only_file_system_says_so(harness_env, tmp_path: Path) -> None:
    """A cache on a file system mounted read-only (a tmpfs here): `prepare.py --check` said it
    "cannot be written by this user", sending the user to ask for a permission no owner can give,
    where the step itself fails on "Read-only file system"; the check now says the file system."""
    with tmpfs_at(tmp_path / "mount") as mount:
        (mount / "cache").mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        command = [sys.executable, str(TRAINER_DIR / "prepare.py"), "--scale", "cpu", "--data", "offline"]
        checked, started = _checked_and_started(command, harness_env(cache=str(mount / "cache")))
    cache = mount / "cache"
    _assert_refused(
        checked, started, cache, _no_corpus(cache, "is on a read-only file system"), "Read-only file system"
    )


def _assert_refused(
    checked: subprocess.CompletedProcess[str],
    started: subprocess.CompletedProcess[str],
    cache: Path,
    said: str,
    failed: str,
) -> None:
    """The check refused the cache in the one line `said`, and the step, `started`, failed on `failed`."""
    assert checked.returncode == 1 and checked.stdout == "", checked.stdout
    assert checked.stderr.splitlines() == [
        f"error: {said} (the cache is {cache}; AUTORESEARCH_CACHE chooses another)"
    ]
    assert started.returncode == 1 and failed in started.stderr.splitlines()[-1], started.stderr


def _offline_data(cache: Path) -> Path:
    return cache / "data" / f"offline-py{sys.version_info[0]}{sys.version_info[1]}"


def _no_corpus(cache: Path, why: str) -> str:
    """The check's refusal of `cache` itself for the offline corpus, `why` it cannot be written."""
    return f"{cache} {why}, so the offline corpus cannot be written in {_offline_data(cache)}"


def _no_lock(data: Path, why: str) -> str:
    """The check's refusal of the lock file beside the offline data's folder `data`."""
    return f"{data.parent} {why}, so {data.name}.lock, the lock of the offline corpus, cannot be made in it"


def test_the_check_of_a_cache_through_a_link_to_what_is_not_there_refuses_it(
    harness_env, tmp_path: Path
) -> None:
    """A cache that is a link to a scratch space not mounted here: `prepare.py --check` said it
    "would build the offline corpus", and the step then failed, "[Errno 17] File exists"; the
    check now refuses it, naming the link and where it leads."""
    gone = tmp_path / "scratch" / "cache"
    cache = tmp_path / "cache"
    cache.symlink_to(gone)
    command = [sys.executable, str(TRAINER_DIR / "prepare.py"), "--scale", "cpu", "--data", "offline"]
    env = harness_env(cache=str(cache))
    checked = subprocess.run([*command, "--check"], env=env, capture_output=True, text=True, timeout=300)
    assert checked.returncode == 1 and checked.stdout == "", checked.stdout
    assert checked.stderr.splitlines() == [
        f"error: {cache} is a link to {gone}, which is not there, so {cache / 'data'}/offline-py"
        f"{sys.version_info[0]}{sys.version_info[1]} cannot be made for the offline corpus "
        f"(the cache is {cache}; AUTORESEARCH_CACHE chooses another)"
    ]
    assert sorted(tmp_path.iterdir()) == [cache]
    started = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert started.returncode == 1 and "File exists" in started.stderr.splitlines()[-1]


@pytest.mark.parametrize("left", ["damaged", "pickle"])
def test_the_check_of_a_cache_whose_tokenizer_is_not_used_says_why_and_trains_nothing(
    harness_env, offline_cache: Path, tmp_path: Path, left: str
) -> None:
    """`prepare.py --check` of a cache whose tokenizer.json is damaged, or whose tokenizer is the
    old pickle, said on stderr 'training it again' while it trained nothing, and its line did not
    say why a cache the user took for prepared would be trained: the line now says it, stderr nothing."""
    cache = tmp_path / "cache"
    shutil.copytree(offline_cache, cache)
    folder = next(cache.glob("tokenizer/*/tokenizer.json")).parent
    if left == "damaged":
        (folder / "tokenizer.json").write_text("{")
        why = f"{folder / 'tokenizer.json'} is damaged (JSONDecodeError: "
    else:
        (folder / "tokenizer.json").unlink()
        (folder / "tokenizer.pkl").write_bytes(b"")
        why = f"{folder / 'tokenizer.pkl'} is a pickle, which is never read"
    before = sorted((path, path.stat().st_mtime_ns) for path in tmp_path.rglob("*"))
    command = [
        sys.executable,
        str(TRAINER_DIR / "prepare.py"),
        "--scale",
        "cpu",
        "--data",
        "offline",
        "--check",
    ]
    proc = subprocess.run(
        command, env=harness_env(cache=str(cache)), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.startswith(f"would train the 2048-token tokenizer in {cache}; {why}"), proc.stdout
    assert len(proc.stdout.splitlines()) == 1
    assert sorted((path, path.stat().st_mtime_ns) for path in tmp_path.rglob("*")) == before


def _checked_and_started(
    command: list[str], env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], ...]:
    """`command --check`, then `command` itself, the data step a campaign's start runs."""
    return tuple(
        subprocess.run(run, env=env, capture_output=True, text=True, timeout=300)
        for run in ([*command, "--check"], command)
    )


def test_the_check_of_a_cache_this_user_may_not_write_says_so_as_the_step_fails(
    harness_env, as_nobody
) -> None:
    """A cache folder another user owns (mode 755), checked and prepared as user nobody: the check
    refuses it as 'cannot be written by this user', where the step fails on 'Permission denied'."""
    run_as, shared = as_nobody
    cache = shared / "cache"
    cache.mkdir(mode=0o755)
    prepare = [sys.executable, str(TRAINER_DIR / "prepare.py"), "--scale", "cpu", "--data", "offline"]
    checked, started = _checked_and_started(run_as(prepare), harness_env(cache=str(cache)))
    _assert_refused(
        checked, started, cache, _no_corpus(cache, "cannot be written by this user"), "Permission denied"
    )
    assert list(cache.iterdir()) == []


def test_the_check_of_a_writable_cache_folder_in_a_parent_this_user_may_not_write_names_its_lock(
    harness_env, as_nobody
) -> None:
    """The offline data's folder writable to all (and the tokenizer's), inside a folder another
    user owns: the check said 'would build the offline corpus', and the step then failed making the
    lock file beside the folder, in that parent; the check now refuses it, naming the lock."""
    run_as, shared = as_nobody
    cache = shared / "cache"
    data = _offline_data(cache)
    for folder in (data, cache / "tokenizer"):
        folder.mkdir(parents=True)
        folder.chmod(0o777)
    prepare = [sys.executable, str(TRAINER_DIR / "prepare.py"), "--scale", "cpu", "--data", "offline"]
    checked, started = _checked_and_started(run_as(prepare), harness_env(cache=str(cache)))
    said = _no_lock(data, "cannot be written by this user")
    _assert_refused(checked, started, cache, said, f"{data}.lock cannot be written (Permission denied)")


def test_the_check_passes_a_writable_lock_file_in_a_parent_this_user_may_not_write(
    harness_env, as_nobody
) -> None:
    """The lock files already there and writable to all, in folders another user owns: the step
    needs no new file in those parents, so the check must not refuse what the step does."""
    run_as, shared = as_nobody
    cache = shared / "cache"
    data = _offline_data(cache)
    for folder in (data, cache / "tokenizer" / f"{data.name}-v2048"):
        folder.mkdir(parents=True)
        folder.chmod(0o777)
        lock = folder.with_name(f"{folder.name}.lock")
        lock.touch(mode=0o666)
        lock.chmod(0o666)
    prepare = [sys.executable, str(TRAINER_DIR / "prepare.py"), "--scale", "cpu", "--data", "offline"]
    checked, started = _checked_and_started(run_as(prepare), harness_env(cache=str(cache)))
    assert checked.stdout.startswith("would build the offline corpus and train"), checked.stderr
    assert started.returncode == 0 and started.stderr.splitlines()[-1] == "ready", started.stderr


def test_the_check_of_a_writable_cache_folder_on_a_read_only_mount_names_its_lock(
    harness_env, tmp_path: Path
) -> None:
    """The offline data's folder a writable mount of its own inside a cache mounted read-only
    (tmpfs both): the check passed it, and the step failed making the lock file beside it."""
    with tmpfs_at(tmp_path / "mount") as mount:
        cache = mount / "cache"
        data = _offline_data(cache)
        data.parent.mkdir(parents=True)
        (cache / "tokenizer").mkdir()
        with tmpfs_at(data), tmpfs_at(cache / "tokenizer" / f"{data.name}-v2048"):
            subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
            prepare = [sys.executable, str(TRAINER_DIR / "prepare.py"), "--scale", "cpu", "--data", "offline"]
            checked, started = _checked_and_started(prepare, harness_env(cache=str(cache)))
    said = _no_lock(data, "is on a read-only file system")
    _assert_refused(checked, started, cache, said, f"{data}.lock cannot be written (Read-only file system)")
