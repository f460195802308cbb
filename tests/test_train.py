"""train.py: the model's pieces, and real short runs at the cpu scale."""

from __future__ import annotations

import ast
import itertools
import json
import math
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import torch
import yaml
from trainer_helpers import TRAINER_DIR, ConstantLogits, gpt_config, random_gpt

from autoresearch.tracking import training_curve

SUMMARY_KEYS = [
    "val_bpb",
    "training_seconds",
    "total_seconds",
    "peak_vram_mb",
    "mfu_percent",
    "total_tokens_M",
    "num_steps",
    "num_params_M",
    "depth",
]


def test_hyperparameters_are_single_module_constants(train_mod: ModuleType) -> None:
    """The engine rewrites UPPER_CASE assignments by syntax tree: each must be assigned exactly once."""
    tree = ast.parse((TRAINER_DIR / "train.py").read_text())
    names = [
        node.targets[0].id
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and node.targets[0].id.isupper()
    ]
    assert len(names) == len(set(names)) >= 15
    assert {"DEPTH", "MATRIX_LR", "EMBEDDING_LR", "TOTAL_BATCH_SIZE", "WINDOW_PATTERN"} <= set(names)
    # All of them at the top, before the model: every UPPER_CASE constant is a knob the agent sees.
    first_definition = min(n.lineno for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef)))
    assert all(
        node.lineno < first_definition
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and node.targets[0].id.isupper()
    )


def test_gpt2_defaults_match_the_reference(train_mod: ModuleType) -> None:
    """depth 8, width 512, about 50.3M parameters; 1.65M tokens/s on an H100 is about 40% MFU."""
    config = gpt_config(
        train_mod, seq_len=2048, n_layer=8, n_embd=512, head_dim=128, short_window=1024, vocab_size=8192
    )
    with torch.device("meta"):
        model = train_mod.GPT(config)
    assert train_mod.layer_windows(config) == [1024, 1024, 1024, 2048, 1024, 1024, 1024, 2048]
    assert sorted(int(k) for k in model.value_embeds) == [1, 3, 5, 7]
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(50.3, abs=0.05)
    mfu = 1.65e6 * train_mod.matmul_flops_per_token(model) / 989.5e12
    assert mfu == pytest.approx(0.40, abs=0.01)


def test_width_rounds_up_to_whole_heads(train_mod: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """Any DEPTH and ASPECT_RATIO the search picks builds a model, as in the reference."""
    cpu = torch.device("cpu")
    assert train_mod.default_config(cpu).n_embd == train_mod.DEPTH * train_mod.ASPECT_RATIO
    monkeypatch.setattr(train_mod, "DEPTH", 3)
    monkeypatch.setattr(train_mod, "ASPECT_RATIO", 37)  # 111 wide: not whole heads
    config = train_mod.default_config(cpu)
    assert config.n_embd == 128 and config.n_embd % config.head_dim == 0 and config.head_dim == 32
    train_mod.GPT(config)


def test_logits_shape_and_softcap(train_mod: ModuleType) -> None:
    model = random_gpt(train_mod, std=2.0)  # weights large enough for raw logits far past the cap
    logits = model(torch.randint(0, 2048, (2, 64)))
    assert logits.shape == (2, 64, 2048) and logits.dtype == torch.float32
    assert 0.99 * train_mod.SOFTCAP < logits.abs().max() <= train_mod.SOFTCAP


def test_attention_is_causal_with_sliding_windows(train_mod: ModuleType) -> None:
    assert train_mod.layer_windows(gpt_config(train_mod, n_layer=1, window_pattern="S")) == [
        64
    ]  # last is long
    model = random_gpt(train_mod, n_layer=2, window_pattern="SS")
    assert model.masks[1] is None  # full causal attention takes the fast kernel
    i = torch.arange(64)
    assert torch.equal(model.masks[0], (i[:, None] - i[None, :] >= 0) & (i[:, None] - i[None, :] < 16))
    idx = torch.randint(0, 2048, (1, 64))
    altered = idx.clone()
    altered[0, 10] = (idx[0, 10] + 1) % 2048
    changed = (model(idx) - model(altered)).abs().amax(dim=-1)[0] > 1e-6
    assert not changed[:10].any() and changed[10:].all()


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_flex_attention_matches_dense_masks(train_mod: ModuleType) -> None:
    """The CUDA path (FlexAttention block masks) computes what the CPU path (SDPA + mask) does."""
    dense = random_gpt(train_mod)
    flex = train_mod.GPT(gpt_config(train_mod, use_flex=True))
    flex.load_state_dict(dense.state_dict())
    idx = torch.randint(0, 2048, (2, 64))
    with torch.no_grad():
        difference = (flex(idx) - dense(idx)).abs().max().item()
    assert difference < 1e-4


def test_bf16_tables_carry_a_bf16_residual_stream(train_mod: ModuleType) -> None:
    """The GPU configuration: bf16 embeddings and rotary tables keep every block's input, q and k in
    bf16 under autocast, logits stay fp32, and the loss is the fp32 model's to bf16 precision."""
    full = random_gpt(train_mod)
    half = train_mod.GPT(gpt_config(train_mod, stream_dtype=torch.bfloat16))
    half.load_state_dict(full.state_dict())  # copies cast to the tables' bf16
    assert half.wte.weight.dtype == half.cos.dtype == torch.bfloat16
    seen = []
    for block in half.blocks:
        block.register_forward_pre_hook(lambda module, args: seen.append(args[0].dtype))
    attention_inputs = []
    original_sdpa = torch.nn.functional.scaled_dot_product_attention

    def recording_sdpa(q, k, v, **kwargs):
        attention_inputs.extend([q.dtype, k.dtype, v.dtype])
        return original_sdpa(q, k, v, **kwargs)

    idx, targets = torch.randint(0, 2048, (2, 64)), torch.randint(0, 2048, (2, 64))
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording_sdpa)
        logits = half(idx)
        loss = half(idx, targets)
    assert set(seen) == set(attention_inputs) == {torch.bfloat16}
    assert logits.dtype == torch.float32
    assert loss.item() == pytest.approx(full(idx, targets).item(), rel=0.02)
    loss.backward()
    assert half.wte.weight.grad.dtype == torch.bfloat16 and half.wte.weight.grad.abs().sum() > 0


def test_orthogonalize_flattens_the_spectrum(train_mod: ModuleType) -> None:
    g = torch.randn(64, 256) * torch.logspace(-2, 1, 256)  # badly conditioned
    singular = torch.linalg.svdvals(train_mod.orthogonalize(g, steps=5))
    assert singular.min() > 0.8 and singular.max() < 1.2  # Polar Express; classic quintic NS: 0.68
    assert train_mod.orthogonalize(g.T, steps=5).shape == (256, 64)
    stacked = train_mod.orthogonalize(torch.stack([g, 2 * g]), steps=5)  # each matrix on its own
    assert torch.allclose(stacked[0], stacked[1], atol=1e-5)
    assert torch.allclose(stacked[0], train_mod.orthogonalize(g, steps=5), atol=1e-5)


def test_forward_with_targets_returns_the_training_loss(train_mod: ModuleType) -> None:
    model = random_gpt(train_mod)
    idx, targets = torch.randint(0, 2048, (2, 64)), torch.randint(0, 2048, (2, 64))
    expected = torch.nn.functional.cross_entropy(model(idx).flatten(0, 1), targets.flatten())
    assert model(idx, targets).item() == pytest.approx(expected.item(), rel=1e-6)


def test_muon_updates_each_shape_as_one_batch(train_mod: ModuleType) -> None:
    """A batched step equals the per-matrix rule: momentum, orthogonalisation, cautious decay, step."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(*shape)) for shape in [(8, 32), (32, 8), (8, 32), (4, 4)]]
    before = [p.detach().clone() for p in params]
    for p in params:
        p.grad = torch.randn_like(p)
    lr, momentum, decay = 0.1, 0.9, 0.5
    muon = train_mod.Muon(params, lr=lr, momentum=momentum, weight_decay=decay, ns_steps=5)
    assert sorted(len(g["params"]) for g in muon.param_groups) == [1, 1, 2]
    muon.step()
    for p, w in zip(params, before, strict=True):
        nesterov = p.grad.lerp((1 - momentum) * p.grad, momentum)
        update = train_mod.orthogonalize(nesterov, 5) * max(1.0, p.size(0) / p.size(1)) ** 0.5
        expected = w - lr * decay * w * (update * w >= 0) - lr * update
        assert torch.allclose(p.detach(), expected, atol=1e-5)


def test_schedules(train_mod: ModuleType) -> None:
    assert train_mod.lr_multiplier(0.0) == train_mod.lr_multiplier(0.49) == 1.0
    assert train_mod.lr_multiplier(0.75) == pytest.approx(0.5) and train_mod.lr_multiplier(1.0) == 0.0
    assert train_mod.muon_momentum(0.0) == 0.85 and train_mod.muon_momentum(0.5) == pytest.approx(0.95)


def test_harness_accepts_the_model(
    train_mod: ModuleType, prepare_mod: ModuleType, use_offline_cache: Path
) -> None:
    model = random_gpt(train_mod, seq_len=prepare_mod.MAX_SEQ_LEN, short_window=prepare_mod.MAX_SEQ_LEN // 2)
    bpb = prepare_mod.evaluate_bpb(model, 8)
    assert math.isfinite(bpb) and bpb > 0


def test_train_runs_on_cpu_and_reports(
    run_trainer, prepare_mod: ModuleType, use_offline_cache: Path, tmp_path: Path
) -> None:
    proc, result_path = run_trainer(budget=5.0)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    block = proc.stdout[proc.stdout.rindex("\n---\n") + 5 :].splitlines()
    assert [line.split(":")[0] for line in block] == SUMMARY_KEYS
    assert all(re.fullmatch(r"[a-z_M]+: +\d+(\.\d+)?", line) and line[18] != " " for line in block)
    assert re.search(r"^val_bpb:          \d\.\d{6}$", proc.stdout, re.M)

    result = json.loads(result_path.read_text())
    assert set(SUMMARY_KEYS) <= set(result) and result["scale"] == "cpu" and result["time_budget"] == 5.0
    assert result["training_seconds"] >= 5.0 and result["num_steps"] > 5 and result["depth"] == 2
    assert result["prepare_sha256"] == prepare_mod.prepare_sha256()
    # The harness's own count of the training time (which OverBudget holds to the budget) agrees.
    assert result["harness_train_seconds"] == pytest.approx(result["training_seconds"], rel=0.1, abs=1.0)
    assert result["harness_num_steps"] == result["num_steps"]  # its own count of the optimizer steps
    uniform = ConstantLogits(prepare_mod.VOCAB_SIZE)
    assert result["val_bpb"] < 0.85 * prepare_mod.evaluate_bpb(uniform, 8)  # log2(V) bits per token
    # Its progress lines are what W&B tracking reads as the training curve.
    (tmp_path / "run.log").write_text(proc.stdout)
    curve = training_curve(tmp_path / "run.log")
    assert len(curve) >= 2 and [p["step"] for p in curve] == sorted({p["step"] for p in curve})
    assert all(set(p) == {"step", "train/loss", "train/tok/s", "train/mfu"} for p in curve)
    assert curve[-1]["train/loss"] < curve[0]["train/loss"]


def test_nan_fails_fast(run_trainer) -> None:
    """At the first step that sees it, not when the budget runs out."""
    proc, result_path = run_trainer(budget=20.0, edit={"MATRIX_LR = 0.04": 'MATRIX_LR = float("nan")'})
    assert proc.returncode == 1 and re.search(r"^FAIL: loss nan at step [0-2]$", proc.stdout, re.M), (
        proc.stdout
    )
    assert not result_path.exists()


def test_a_train_py_that_overwrites_the_stored_val_bpb_crashes(run_trainer) -> None:
    """An alias escapes the runner's static check; the harness's own check at write_result does not."""
    proc, result_path = run_trainer(
        budget=1.0,
        edit={
            "    prepare.write_result({": "    p = prepare\n    p._last_val_bpb = 0.0\n    prepare.write_result({"
        },
    )
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "HarnessModified: prepare._last_val_bpb was changed after import" in proc.stderr
    assert not result_path.exists()


def test_a_train_py_that_trains_past_its_budget_is_not_a_result(run_trainer) -> None:
    """train.py keeps the budget itself: an edit to its stopping rule trained three times as long and
    reported it honestly, and the harness wrote the better val_bpb as a result."""
    proc, result_path = run_trainer(
        budget=3.0,
        edit={"training_time >= TIME_BUDGET:": "training_time >= 3 * TIME_BUDGET:"},
    )
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    over = re.search(
        r"OverBudget: train\.py trained for ([\d.]+) s by the harness's count .* over the 3 s budget",
        proc.stderr,
    )
    assert over and float(over[1]) >= 8, proc.stderr[-2000:]
    assert "is not a result" in proc.stderr
    assert not result_path.exists()


def test_a_train_py_that_reports_fewer_steps_than_it_took_gets_no_more_slack(run_trainer) -> None:
    """The slack for untimed steps is 12 steps, each the count over the steps: a train.py that trained
    1.4 budgets of short steps (256 tokens) and reported 1 step got half a budget of slack, and its
    val_bpb was a result. The harness counts the optimizer steps itself."""
    proc, result_path = run_trainer(
        budget=4.0,
        edit={
            "else 2**11  # tokens per optimizer step": "else 2**8  # tokens per optimizer step",
            'DEVICE_BATCH_SIZE = 128 if SCALE_NAME == "gpt2" else 8': 'DEVICE_BATCH_SIZE = 128 if SCALE_NAME == "gpt2" else 1',
            "training_time >= TIME_BUDGET:": "training_time >= 1.4 * TIME_BUDGET:",
            '"num_steps": step,': '"num_steps": 1,',
        },
    )
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    over = re.search(
        r"OverBudget: train\.py trained for ([\d.]+) s by the harness's count \((\d+) training batches in "
        r"(\d+) steps, .* over the 4 s budget \(at most ([\d.]+) s is allowed\)",
        proc.stderr,
    )
    assert over and int(over[3]) == int(over[2]) - 1 > 50, proc.stderr[-2000:]
    assert float(over[1]) > float(over[4]) and float(over[4]) < 4 * 1.1 + 4 / 2, proc.stderr[-2000:]
    assert not result_path.exists()


def test_a_train_py_that_skips_the_harness_loader_is_not_a_result(run_trainer) -> None:
    """Batches of its own are not counted against the budget: this one even trained on the
    validation split, and the harness once wrote its val_bpb as a result."""
    proc, result_path = run_trainer(
        budget=1.0,
        edit={'make_dataloader("train", DEVICE_BATCH_SIZE': 'make_dataloader("val", DEVICE_BATCH_SIZE'},
    )
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "write_result called before any training batch from make_dataloader" in proc.stderr
    assert not result_path.exists()


def test_a_train_py_that_trains_on_batches_of_its_own_after_a_few_is_not_a_result(run_trainer) -> None:
    """One that draws two batches from the harness and then trains on the last one for the rest of
    its budget: the harness's count, which runs only while train.py asks for batches, saw two steps
    of it, and once wrote its val_bpb as a result. Its own clock says so, but the harness's clock
    alone refuses it: this one reports a training_seconds of 0.1."""
    proc, result_path = run_trainer(
        budget=4.0,
        edit={
            "x, y = next(train_loader)  # prepared": "x, y = next(train_loader) if step < 2 else (x, y)  #",
            '"training_seconds": training_time,': '"training_seconds": 0.1,',
        },
    )
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    uncounted = re.search(
        r"train\.py spent ([\d.]+) s that the harness's count of training did not see \(0\.0 s in stalls "
        r"between its 3 training batches, ([\d.]+) s after its last, until the evaluation\), over the 2\.0 s allowed",
        proc.stderr,
    )
    assert uncounted and float(uncounted[2]) >= 3, proc.stderr[-2000:]
    assert "is not a result" in proc.stderr
    assert not result_path.exists()


# train.py's lines that train on the batch it holds for a budget by its own clock, untimed, drawing no batch.
UNTIMED_BUDGET_OF_TRAINING = """extra = budget_clock(device)
while budget_clock(device) - extra < TIME_BUDGET:
    model(x, y).backward()
    for opt in optimizers:
        opt.step()
    raw_model.zero_grad(set_to_none=True)
"""


def _indented(lines: str, indent: str) -> str:
    return "".join(indent + line for line in lines.splitlines(keepends=True))


@pytest.mark.parametrize("where", ["between", "after"])
def test_a_train_py_that_trains_untimed_between_or_after_its_batches_is_not_a_result(
    run_trainer, where: str
) -> None:
    """A train.py that draws its batches honestly and keeps its budget by its own clock, but trains
    a budget more, untimed, in one gap between two batches (at step 3) or after its last batch:
    the gap was a stall to the count, the time after the last batch outside it, and train.py's own
    training_seconds did not show it, so its val_bpb was written as a result."""
    if where == "between":
        anchor = "        t0 = budget_clock(device)\n"
        untimed = "        if step == 3:\n" + _indented(UNTIMED_BUDGET_OF_TRAINING, " " * 12)
        part = r"\(([\d.]+) s in stalls between"
    else:
        anchor = "    # Evaluation is the harness's"
        untimed = _indented(UNTIMED_BUDGET_OF_TRAINING, " " * 4)
        part = r"training batches, ([\d.]+) s after its last"
    proc, result_path = run_trainer(budget=3.0, edit={anchor: untimed + anchor})
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    refused = re.search(
        r"train\.py spent [\d.]+ s that the harness's count of training did not see .*", proc.stderr
    )
    assert refused and float(re.search(part, refused[0])[1]) >= 3, proc.stderr[-2000:]
    assert "over the 1.5 s allowed" in refused[0] and "is not a result" in refused[0]
    assert not result_path.exists()


def test_a_train_py_whose_summary_lacks_training_seconds_is_not_a_result(run_trainer) -> None:
    """write_result checks train.py's own training_seconds against the harness's count (training before
    the first batch is outside the harness's clocks): a summary without it once skipped the check."""
    proc, result_path = run_trainer(budget=1.0, edit={'"training_seconds": training_time,': ""})
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert re.search(
        r"^RuntimeError: train\.py's summary has no training_seconds \(a number of seconds, not None\), which "
        r"write_result checks against the harness's count: its val_bpb [\d.]+ is not a result$",
        proc.stderr,
        re.M,
    ), proc.stderr[-2000:]
    assert not result_path.exists()


@pytest.mark.parametrize(("platform", "ru_maxrss"), [("linux", 512 * 1024), ("darwin", 512 * 1024**2)])
def test_peak_memory_on_cpu_is_in_mib(
    train_mod: ModuleType, monkeypatch: pytest.MonkeyPatch, platform: str, ru_maxrss: int
) -> None:
    """getrusage's peak resident memory is in KiB on Linux and in bytes on macOS."""
    monkeypatch.setattr(train_mod.sys, "platform", platform)
    monkeypatch.setattr(train_mod.resource, "getrusage", lambda who: SimpleNamespace(ru_maxrss=ru_maxrss))
    assert train_mod.peak_memory_mb(torch.device("cpu")) == 512.0


# Builds, on the meta device (no memory, no compute), the model of each knob setting given as JSON.
_BUILD_SETTINGS = """
import json, sys, types
import torch
from autoresearch.knobs import set_knobs
source = open(sys.argv[1]).read()
failures = []
for settings in json.loads(sys.argv[2]):
    module = types.ModuleType("train")
    exec(compile(set_knobs(source, settings), "train.py", "exec"), module.__dict__)
    try:
        assert module.TOTAL_BATCH_SIZE % (module.DEVICE_BATCH_SIZE * module.MAX_SEQ_LEN) == 0, "batch"
        with torch.device("meta"):
            model = module.GPT(module.default_config(torch.device("cpu")))
            idx = torch.zeros(1, module.MAX_SEQ_LEN, dtype=torch.long)
            model(idx, idx).backward()
        module.build_optimizers(model)
    except Exception as err:
        failures.append(f"{settings}: {type(err).__name__}: {err}")
print(json.dumps(failures))
"""


def _drawable_settings(knobs: dict, draws: int) -> list[dict]:
    """Every corner of the integer and categorical knobs (the floats cannot change a shape), then
    random draws inside them."""
    discrete = {
        name: spec["choices"] if spec["kind"] == "categorical" else list(range(spec["low"], spec["high"] + 1))
        for name, spec in knobs.items()
        if spec["kind"] != "float"
    }
    ends = [[values[0], values[-1]] for values in discrete.values()]
    corners = [dict(zip(discrete, combo, strict=True)) for combo in itertools.product(*ends)]
    rng = random.Random(0)
    return corners + [{name: rng.choice(values) for name, values in discrete.items()} for _ in range(draws)]


@pytest.mark.parametrize("campaign", ["demo", "gpt2"])
def test_every_knob_setting_a_campaign_can_draw_builds_a_model(campaign: str, harness_env) -> None:
    """Exploration trials draw knobs at random: at the campaign's own scale, every corner and a
    sample of the rest must build, run forward and backward, and get their optimizers."""
    conf = yaml.safe_load((TRAINER_DIR.parent / "conf" / "campaign" / f"{campaign}.yaml").read_text())
    settings = _drawable_settings(conf["knobs"], draws=30)
    env = harness_env(scale=conf["scale"]) | {
        "PYTHONPATH": os.pathsep.join(map(str, (TRAINER_DIR, TRAINER_DIR.parent)))
    }
    proc = subprocess.run(
        [sys.executable, "-c", _BUILD_SETTINGS, str(TRAINER_DIR / "train.py"), json.dumps(settings)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout) == []
