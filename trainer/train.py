"""Train a small GPT for a fixed time budget and report val_bpb. This is the file the agent edits.

Read top to bottom: hyperparameters, model, optimizer, training loop, summary. The harness
(prepare.py, read-only) owns the data, the tokenizer, the time budget and the metric; this file
owns everything about the model and how it learns. Run: python train.py
"""

import contextlib
import math
import os
import resource
import sys
import time
from dataclasses import dataclass

import prepare
import torch
import torch.nn as nn
import torch.nn.functional as F
from prepare import MAX_SEQ_LEN, SCALE_NAME, SEED, TIME_BUDGET, VOCAB_SIZE
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

# ---------------------------------------------------------------------------------------------
# Hyperparameters: one assignment per line, rewritten by the search engine.

DEPTH = 8 if SCALE_NAME == "gpt2" else 2  # transformer blocks
ASPECT_RATIO = 64  # model width = DEPTH * ASPECT_RATIO, rounded up to whole heads
HEAD_DIM = 128 if SCALE_NAME == "gpt2" else 32
WINDOW_PATTERN = "SSSL"  # per layer, repeated: S = short sliding window, L = full context
SHORT_WINDOW = MAX_SEQ_LEN // 2
SOFTCAP = 15.0  # logits = SOFTCAP * tanh(logits / SOFTCAP)
VE_GATE_CHANNELS = 32  # input channels that decide how much value embedding each head mixes in
TOTAL_BATCH_SIZE = 2**19 if SCALE_NAME == "gpt2" else 2**11  # tokens per optimizer step
DEVICE_BATCH_SIZE = 128 if SCALE_NAME == "gpt2" else 8  # rows per forward pass
EMBEDDING_LR = 0.6
UNEMBEDDING_LR = 0.004
MATRIX_LR = 0.04
SCALAR_LR = 0.5
WEIGHT_DECAY = 0.2  # Muon, decays linearly to zero over training
ADAM_BETAS = (0.8, 0.95)
MUON_MOMENTUM_START = 0.85
MUON_MOMENTUM_END = 0.95
MUON_MOMENTUM_WARMUP = 0.3  # fraction of the budget over which the momentum ramps up
NS_STEPS = 5  # Polar Express iterations that orthogonalise each Muon update
WARMDOWN_RATIO = 0.5  # learning rates decay linearly over this final fraction of the budget
FINAL_LR_FRAC = 0.0

# ---------------------------------------------------------------------------------------------
# Model


@dataclass
class GPTConfig:
    vocab_size: int
    seq_len: int
    n_layer: int
    n_embd: int
    head_dim: int
    window_pattern: str
    short_window: int
    use_flex: bool  # FlexAttention block masks for sliding windows (CUDA); else SDPA with a dense mask
    stream_dtype: torch.dtype  # of the embedding and rotary tables, and so of the residual stream


def norm(x: torch.Tensor) -> torch.Tensor:
    """RMSNorm that keeps x's dtype (newer PyTorch autocasts rms_norm to fp32 on GPUs)."""
    return F.rms_norm(x, (x.size(-1),)).to(x.dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1)


def has_value_embedding(layer: int, n_layer: int) -> bool:
    """Alternating layers, always including the last."""
    return layer % 2 == (n_layer - 1) % 2


def layer_windows(config: GPTConfig) -> list[int]:
    """Attention window of each layer from the pattern; the last layer always sees the full context."""
    pattern = config.window_pattern.upper()
    windows = [
        config.short_window if pattern[i % len(pattern)] == "S" else config.seq_len
        for i in range(config.n_layer)
    ]
    windows[-1] = config.seq_len
    return windows


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer: int) -> None:
        super().__init__()
        assert config.n_embd % config.head_dim == 0, "the width must be a multiple of HEAD_DIM"
        self.n_head = config.n_embd // config.head_dim
        self.head_dim = config.head_dim
        self.c_q = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.c_k = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.c_v = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)
        has_ve = has_value_embedding(layer, config.n_layer)
        self.ve_gate = nn.Linear(VE_GATE_CHANNELS, self.n_head, bias=False) if has_ve else None

    def forward(self, x, ve, cos, sin, mask):
        B, T, C = x.shape
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_head, self.head_dim)
        if ve is not None:  # value embedding, mixed in per head through an input-dependent gate in (0, 2)
            gate = 2 * torch.sigmoid(self.ve_gate(x[..., :VE_GATE_CHANNELS]))
            v = v + gate.unsqueeze(-1) * ve.view(B, T, self.n_head, self.head_dim)
        q, k = norm(apply_rotary(q, cos, sin)), norm(apply_rotary(k, cos, sin))
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif isinstance(mask, torch.Tensor):
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:T, :T])
        else:
            y = flex_attention(q, k, v, block_mask=mask)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)

    def forward(self, x):
        return self.c_proj(F.relu(self.c_fc(x)).square())


class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer: int) -> None:
        super().__init__()
        self.attn = CausalSelfAttention(config, layer)
        self.mlp = MLP(config)

    def forward(self, x, ve, cos, sin, mask):
        x = x + self.attn(norm(x), ve, cos, sin, mask)
        return x + self.mlp(norm(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        V, C, L = config.vocab_size, config.n_embd, config.n_layer
        # bf16 tables on a GPU make the residual stream bf16, as in the reference: the elementwise
        # work (norms, rotary, residual mixing) then moves half the bytes.
        dtype = config.stream_dtype
        self.wte = nn.Embedding(V, C, dtype=dtype)
        self.value_embeds = nn.ModuleDict(
            {str(i): nn.Embedding(V, C, dtype=dtype) for i in range(L) if has_value_embedding(i, L)}
        )
        self.blocks = nn.ModuleList([Block(config, i) for i in range(L)])
        self.resid_lambdas = nn.Parameter(torch.ones(L))  # learned scale of the residual stream per layer
        self.x0_lambdas = nn.Parameter(torch.full((L,), 0.1))  # and of the input embedding mixed back in
        self.lm_head = nn.Linear(C, V, bias=False)
        inv_freq = 1.0 / (
            10000 ** (torch.arange(0, config.head_dim, 2, dtype=torch.float32) / config.head_dim)
        )
        angles = torch.outer(torch.arange(config.seq_len, dtype=torch.float32), inv_freq)[None, :, None, :]
        self.register_buffer("cos", angles.cos().to(dtype), persistent=False)
        self.register_buffer("sin", angles.sin().to(dtype), persistent=False)
        self.masks = [self._mask(w) for w in layer_windows(config)]

    def _mask(self, window: int):
        """None for full causal attention (the fast kernel); otherwise a sliding-window causal mask."""
        if window >= self.config.seq_len:
            return None
        if self.config.use_flex:
            return create_block_mask(
                lambda b, h, q, kv: (q >= kv) & (q - kv < window),
                B=None,
                H=None,
                Q_LEN=self.config.seq_len,
                KV_LEN=self.config.seq_len,
                device=self.cos.device,
            )
        i = torch.arange(self.config.seq_len, device=self.cos.device)
        return (i[:, None] >= i[None, :]) & (i[:, None] - i[None, :] < window)

    @torch.no_grad()
    def init_weights(self) -> None:
        bound = 3**0.5 * self.config.n_embd**-0.5  # uniform with std 1/sqrt(width)
        nn.init.normal_(self.wte.weight, std=1.0)
        nn.init.normal_(self.lm_head.weight, std=0.001)
        for emb in self.value_embeds.values():
            nn.init.uniform_(emb.weight, -bound, bound)
        for block in self.blocks:
            for linear in (block.attn.c_q, block.attn.c_k, block.attn.c_v, block.mlp.c_fc):
                nn.init.uniform_(linear.weight, -bound, bound)
            nn.init.zeros_(block.attn.c_proj.weight)  # each block starts as the identity
            nn.init.zeros_(block.mlp.c_proj.weight)
            if block.attn.ve_gate is not None:
                nn.init.zeros_(block.attn.ve_gate.weight)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, vocab) in fp32, which the harness scores; with targets, the training loss.

        The loss is computed inside forward so that torch.compile fuses the soft-cap and the
        cross-entropy instead of writing the full fp32 logits out and reading them back.
        """
        T = idx.size(1)
        cos, sin = self.cos[:, :T], self.sin[:, :T]
        x = x0 = norm(self.wte(idx))
        for i, block in enumerate(self.blocks):
            x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            ve = self.value_embeds[str(i)](idx) if str(i) in self.value_embeds else None
            x = block(x, ve, cos, sin, self.masks[i])
        logits = self.lm_head(norm(x)).float()
        logits = SOFTCAP * torch.tanh(logits / SOFTCAP)
        if targets is None:
            return logits
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def default_config(device: torch.device) -> GPTConfig:
    """The model the hyperparameters at the top describe, as it runs on this device."""
    on_gpu = device.type == "cuda"
    heads = math.ceil(DEPTH * ASPECT_RATIO / HEAD_DIM)  # so every DEPTH and ASPECT_RATIO builds a model
    return GPTConfig(
        vocab_size=VOCAB_SIZE,
        seq_len=MAX_SEQ_LEN,
        n_layer=DEPTH,
        n_embd=heads * HEAD_DIM,
        head_dim=HEAD_DIM,
        window_pattern=WINDOW_PATTERN,
        short_window=SHORT_WINDOW,
        use_flex=on_gpu,
        stream_dtype=torch.bfloat16 if on_gpu else torch.float32,
    )


def matmul_flops_per_token(model: GPT) -> float:
    """Forward + backward FLOPs per token: 6 per weight used in a matmul, plus attention scores."""
    embeddings = model.wte.weight.numel() + sum(e.weight.numel() for e in model.value_embeds.values())
    matmul_params = sum(p.numel() for p in model.parameters()) - embeddings
    attention = sum(12 * model.config.n_embd * w for w in layer_windows(model.config))
    return 6 * matmul_params + attention


# ---------------------------------------------------------------------------------------------
# Optimizer: Muon for the 2-D matrices of the blocks, AdamW for everything else


def orthogonalize(g: torch.Tensor, steps: int) -> torch.Tensor:
    """Approximate U V^T of each matrix g = U S V^T (batched over leading dims): Muon's update,
    by the Polar Express iteration (Amsel et al., 2025), as in the reference: a quintic iteration
    whose coefficients are optimal, step by step, for the spectrum the steps before leave."""
    coefficients = (  # the last one repeats beyond five steps
        (8.156554524902461, -22.48329292557795, 15.878769915207462),
        (4.042929935166739, -2.808917465908714, 0.5000178451051316),
        (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
        (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
        (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
    )
    x = g.bfloat16() if g.is_cuda else g.float()
    tall = x.size(-2) > x.size(-1)
    if tall:
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) * 1.02 + 1e-6)  # spectrum inside (0, 1) in bf16
    for step in range(steps):
        a, b, c = coefficients[min(step, len(coefficients) - 1)]
        s = x @ x.mT
        x = a * x + (b * s + c * s @ s) @ x
    return (x.mT if tall else x).to(g.dtype)


class Muon(torch.optim.Optimizer):
    """SGD with Nesterov momentum whose update is orthogonalised, plus cautious weight decay.

    Matrices of one shape form one group and are updated as a stack, so a step launches a few
    batched kernels per shape instead of an orthogonalisation loop per matrix.
    """

    def __init__(self, params, lr: float, momentum: float, weight_decay: float, ns_steps: int) -> None:
        params = list(params)
        shapes = sorted({tuple(p.shape) for p in params})
        groups = [dict(params=[p for p in params if tuple(p.shape) == shape]) for shape in shapes]
        super().__init__(groups, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, ns_steps=ns_steps))

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            params = group["params"]
            grads = torch.stack([p.grad for p in params])
            state = self.state[params[0]]  # the group's stacked momentum lives with its first matrix
            if "momentum" not in state:
                state["momentum"] = torch.zeros_like(grads)
            buf = state["momentum"]
            buf.lerp_(grads, 1 - group["momentum"])
            update = orthogonalize(grads.lerp(buf, group["momentum"]), group["ns_steps"])
            update *= max(1.0, params[0].size(0) / params[0].size(1)) ** 0.5
            weights = torch.stack(params)
            # Cautious decay: shrink only the weights the update is also pushing towards zero.
            weights.sub_(group["lr"] * group["weight_decay"] * weights * (update * weights >= 0))
            weights.sub_(group["lr"] * update)
            for p, w in zip(params, weights, strict=True):
                p.copy_(w)


def build_optimizers(model: GPT) -> list[torch.optim.Optimizer]:
    width_scale = (model.config.n_embd / 768) ** -0.5  # AdamW rates were tuned at width 768
    matrices = [p for p in model.blocks.parameters() if p.ndim == 2]
    adam_groups = [
        dict(params=[model.wte.weight, *model.value_embeds.parameters()], lr=EMBEDDING_LR * width_scale),
        dict(params=[model.lm_head.weight], lr=UNEMBEDDING_LR * width_scale),
        dict(params=[model.x0_lambdas], lr=SCALAR_LR),
        dict(params=[model.resid_lambdas], lr=SCALAR_LR * 0.01),  # the residual scale is touchier
    ]
    adamw = torch.optim.AdamW(
        adam_groups, betas=ADAM_BETAS, eps=1e-10, weight_decay=0.0, fused=model.cos.is_cuda
    )
    muon = Muon(
        matrices, lr=MATRIX_LR, momentum=MUON_MOMENTUM_START, weight_decay=WEIGHT_DECAY, ns_steps=NS_STEPS
    )
    for opt in (adamw, muon):
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"]
    return [adamw, muon]


def lr_multiplier(progress: float) -> float:
    if progress < 1 - WARMDOWN_RATIO:
        return 1.0
    left = (1 - progress) / WARMDOWN_RATIO
    return left + (1 - left) * FINAL_LR_FRAC


def muon_momentum(progress: float) -> float:
    ramp = min(progress / MUON_MOMENTUM_WARMUP, 1.0)
    return MUON_MOMENTUM_START + ramp * (MUON_MOMENTUM_END - MUON_MOMENTUM_START)


# ---------------------------------------------------------------------------------------------
# Training: runs until TIME_BUDGET seconds of timed steps; every schedule follows the elapsed fraction.


def budget_clock(device: torch.device) -> float:
    """Seconds counted against TIME_BUDGET. On a GPU: wall time after a synchronisation. On a CPU:
    this process's CPU time, so other work on a shared machine does not change how much training a
    run gets, and experiments stay comparable (a two-thread run gets half the wall time)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        return time.time()
    return time.process_time()


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA allocation; on CPU the process's peak resident memory stands in (getrusage reports
    it in KiB on Linux, in bytes on macOS)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 1024**2
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024**2 if sys.platform == "darwin" else rss / 1024


def main() -> None:
    t_start = time.time()
    if os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    torch.manual_seed(SEED)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        autocast = torch.autocast("cuda", dtype=torch.bfloat16)
    else:
        autocast = contextlib.nullcontext()

    config = default_config(device)
    with device:
        raw_model = GPT(config)
    raw_model.init_weights()
    model = torch.compile(raw_model, dynamic=False) if device.type == "cuda" else raw_model
    optimizers = build_optimizers(raw_model)
    num_params = sum(p.numel() for p in raw_model.parameters())
    flops_per_token = matmul_flops_per_token(raw_model)
    peak_flops = prepare.gpu_peak_flops(device)
    tokens_per_micro_step = DEVICE_BATCH_SIZE * MAX_SEQ_LEN
    assert TOTAL_BATCH_SIZE % tokens_per_micro_step == 0, (
        "TOTAL_BATCH_SIZE must be a multiple of a micro step"
    )
    grad_accum_steps = TOTAL_BATCH_SIZE // tokens_per_micro_step
    print(
        f"device: {prepare.device_name(device)} | scale: {SCALE_NAME} | seed: {SEED} | budget: {TIME_BUDGET:.0f} s"
    )
    print(
        f"params: {num_params / 1e6:.2f}M | width: {config.n_embd} | depth: {DEPTH} | grad accum: {grad_accum_steps}"
    )
    train_loader = prepare.make_dataloader("train", DEVICE_BATCH_SIZE, device)
    x, y = next(train_loader)

    warmup_steps = 10 if device.type == "cuda" else 1  # untimed first steps: compilation, allocation
    step = 0
    training_time = 0.0
    last_log = 0.0
    while True:
        t0 = budget_clock(device)
        progress = min(training_time / TIME_BUDGET, 1.0)
        for _ in range(grad_accum_steps):
            with autocast:
                loss = model(x, y)
            (loss / grad_accum_steps).backward()
            x, y = next(train_loader)  # prepared while the device works through the backward pass
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] * lr_multiplier(progress)
        for group in optimizers[1].param_groups:
            group["momentum"] = muon_momentum(progress)
            group["weight_decay"] = WEIGHT_DECAY * (1 - progress)
        for opt in optimizers:
            opt.step()
        raw_model.zero_grad(set_to_none=True)
        train_loss = loss.item()
        if not math.isfinite(train_loss) or train_loss > 100:
            print(f"FAIL: loss {train_loss} at step {step}")
            sys.exit(1)
        dt = budget_clock(device) - t0
        if step >= warmup_steps:
            training_time += dt
        step += 1
        if time.time() - last_log >= 1.0 or step <= warmup_steps:
            last_log = time.time()
            mfu = 100 * flops_per_token * TOTAL_BATCH_SIZE / dt / peak_flops if peak_flops else 0.0
            print(
                f"step {step:05d} ({100 * progress:.1f}%) | loss {train_loss:.4f} | lrm {lr_multiplier(progress):.2f} "
                f"| dt {1000 * dt:.0f} ms | tok/s {TOTAL_BATCH_SIZE / dt:,.0f} | mfu {mfu:.1f}%",
                flush=True,
            )
        if step > warmup_steps and training_time >= TIME_BUDGET:
            break

    # Evaluation is the harness's, after the loop and untimed.
    with autocast:
        val_bpb = prepare.evaluate_bpb(model, DEVICE_BATCH_SIZE)
    timed_tokens = (step - warmup_steps) * TOTAL_BATCH_SIZE
    mfu_percent = 100 * flops_per_token * timed_tokens / training_time / peak_flops if peak_flops else 0.0
    summary = {
        "val_bpb": val_bpb,
        "training_seconds": training_time,
        "total_seconds": time.time() - t_start,
        "peak_vram_mb": peak_memory_mb(device),
        "mfu_percent": mfu_percent,
        "total_tokens_M": step * TOTAL_BATCH_SIZE / 1e6,
        "num_steps": step,
        "num_params_M": num_params / 1e6,
        "depth": DEPTH,
    }
    formats = {"val_bpb": ".6f", "mfu_percent": ".2f", "num_steps": "d", "depth": "d"}
    print("---")
    for key, value in summary.items():
        print(f"{key + ':':<18}{value:{formats.get(key, '.1f')}}")
    prepare.write_result({**summary, "tokens_per_second": timed_tokens / training_time})


if __name__ == "__main__":
    main()
