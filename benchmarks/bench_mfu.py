"""MFU of the actor update: model FLOPs of its forwards and backwards over the machine's measured matmul peak.

Both figures come from this run, on one CPU thread (`torch.set_num_threads(1)`: each of the demo's two
trainer ranks runs with OMP_NUM_THREADS=1, verl/trainer/main_ppo.py), in float32 (the demo's dtype):

* peak: the best of a few 2048 x 2048 x 2048 fp32 matmuls (2 * 2048^3 FLOPs each);
* the actor update: `DataParallelPPOActor.update_policy` (verl/workers/actor.py, the code the trainer's
  update_actor runs on each rank, here on one process without FSDP: no gather or reduce-scatter), with the
  demo's loss (GRPO's clipped policy loss, low-variance KL to a reference at 0.05, entropy computed) and
  batch shape per rank (configs/preset/toyworld.yaml: micro- and mini-batches of 8 trajectories per rank),
  rows of the demo's mean lengths (outputs/toyworld_demo, 40 steps: prompt 208 tokens, response 172, of
  which about a third are policy tokens), timed over whole mini-batches (forward, loss, backward, gradient
  clipping and the AdamW step) after a warm-up one.

Models: the demo's policy (Qwen2-style, hidden 128, 2 layers, 4 heads / 2 KV heads, MLP 512, a 2048-token
vocabulary, tied embeddings: 0.75M parameters) and one about 10x larger (hidden 384, 3 layers, 6 heads of 64 /
2 KV heads, MLP 1536, the same vocabulary: 7.3M parameters, 9.6x; width and depth both grow).

FLOPs of one micro-batch of B rows of T = P + R tokens, forward + backward (backward = 2x forward):

    6 * N_layers * B * T                 every matmul weight of the decoder layers (q, k, v, o, gate, up,
                                         down; biases and norms not counted), at every token
  + 6 * V * H * B * (R + 1)              the LM head (tied to the embedding), at the R + 1 positions the
                                         actor computes logits for (`logits_to_keep`); the embedding lookup
                                         is not a matmul and counts 0
  + 6 * L * H_attn * B * T^2             attention scores and their use on values (2 * 2 * T^2 * H_attn per
                                         layer forward for the whole T x T matrix), counted over its causal
                                         half, H_attn = heads x head dim; counting the whole matrix (the PaLM
                                         paper's convention) would double this term and raise the MFU

The first two terms are checked in the run against torch's own FLOP counter (torch.utils.flop_counter, which
counts every matmul of one forward + backward of the same micro-batch; it does not count the CPU attention
kernel, hence the third term is ours alone): main() fails if they differ by more than 0.1%.
No padding: every row has the same lengths, so every token counted is real (the demo's micro-batches are
padded to their longest row, which costs time this count would not credit). The softmax, log-probs, entropy,
norms, activations and the optimizer are not counted (they are time, not model FLOPs).

No target: MFU is reported. main() fails only on an impossible figure (MFU above 100% or not positive),
which would mean the FLOP count or the peak is wrong. Timings on a shared machine are noisy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

THREADS = 1
PEAK_N, PEAK_REPEATS = 2048, 4
ROWS, PROMPT_LEN, RESPONSE_LEN = 8, 208, 172  # per micro-batch (= mini-batch) on one rank
VOCAB = 2048


@dataclass(frozen=True)
class Shape:
    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    timed_mini_batches: int


DEMO = Shape("demo policy", 128, 2, 4, 2, 512, timed_mini_batches=3)
LARGER = Shape("10x larger", 384, 3, 6, 2, 1536, timed_mini_batches=1)


def matmul_peak(n: int = PEAK_N, repeats: int = PEAK_REPEATS) -> float:
    """FLOP/s of the best of `repeats` fp32 n x n x n matmuls (after one warm-up)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def build_model(shape: Shape):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        attn_implementation="sdpa",  # what from_pretrained picks for the demo's actor
    )
    torch.manual_seed(0)
    return Qwen2ForCausalLM(config).float()


def layer_matmul_params(model) -> int:
    """Weights of the decoder layers' linear maps (biases excluded)."""
    return sum(m.weight.numel() for m in model.model.layers.modules() if isinstance(m, torch.nn.Linear))


def update_flops(model, rows: int, prompt_len: int, response_len: int, with_attention: bool = True) -> float:
    """Forward + backward FLOPs of one micro-batch (the module docstring's formula; without its attention
    term, the FLOPs of the matmuls with weights alone)."""
    config = model.config
    tokens = rows * (prompt_len + response_len)
    head_dim = config.hidden_size // config.num_attention_heads
    attn_width = config.num_attention_heads * head_dim
    layers = 6 * layer_matmul_params(model) * tokens
    lm_head = 6 * config.vocab_size * config.hidden_size * rows * (response_len + 1)
    attention = 6 * config.num_hidden_layers * attn_width * rows * (prompt_len + response_len) ** 2
    return float(layers + lm_head + attention) if with_attention else float(layers + lm_head)


def counted_matmul_flops(model, rows: int, prompt_len: int, response_len: int) -> float:
    """torch's FLOP counter over one forward (as the actor runs it: logits at the last R + 1 positions) and
    backward of a micro-batch; it counts the matmuls (mm, addmm, bmm), not the CPU attention kernel."""
    from torch.utils.flop_counter import FlopCounterMode

    batch = demo_batch(rows, prompt_len, response_len, seed=0).batch
    with FlopCounterMode(display=False) as counter:
        output = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            position_ids=batch["position_ids"],
            use_cache=False,
            logits_to_keep=response_len + 1,
        )
        output.logits.float().log_softmax(-1).mean().backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def demo_batch(rows: int, prompt_len: int, response_len: int, seed: int):
    """A DataProto in the trainer's layout: prompt, then a policy turn, an observation (mask 0), a policy turn."""
    from verl.protocol import DataProto

    g = torch.Generator().manual_seed(seed)
    total = prompt_len + response_len
    input_ids = torch.randint(0, VOCAB, (rows, total), generator=g)
    mask = torch.zeros(rows, response_len, dtype=torch.long)
    policy = response_len // 3
    mask[:, : policy // 2] = 1
    mask[:, response_len - (policy - policy // 2) :] = 1
    return DataProto.from_dict(
        {
            "input_ids": input_ids,
            "attention_mask": torch.ones(rows, total, dtype=torch.long),
            "position_ids": torch.arange(total).expand(rows, total).clone(),
            "responses": input_ids[:, prompt_len:].clone(),
            "response_mask": mask,
            "advantages": torch.randn(rows, 1, generator=g).expand(rows, response_len) * mask,
        },
        meta_info={"temperature": 1.0},
    )


def time_update(shape: Shape) -> dict[str, float]:
    """Seconds and FLOPs per mini-batch of the real actor update on `shape`, its parameters, and the matmul
    FLOPs of one micro-batch as counted by this module and by torch."""
    from verl.utils.optim import build_adamw
    from verl.workers.actor import DataParallelPPOActor
    from verl.workers.config import ActorConfig, OptimConfig

    model = build_model(shape)
    counted = counted_matmul_flops(model, ROWS, PROMPT_LEN, RESPONSE_LEN)
    config = ActorConfig(
        optim=OptimConfig(lr=1e-4),
        ppo_micro_batch_size_per_gpu=ROWS,
        use_kl_loss=True,
        kl_loss_coef=0.05,
        kl_loss_type="low_var_kl",
    )
    actor = DataParallelPPOActor(
        config,
        model,
        build_adamw(model.parameters(), 1e-4, weight_decay=0.01),
        mini_batch_size=ROWS,
        log_prob_micro_batch_size=ROWS,
    )

    def batch(mini_batches: int, seed: int):
        data = demo_batch(ROWS * mini_batches, PROMPT_LEN, RESPONSE_LEN, seed)
        old, _ = actor.compute_log_prob(data)
        data.batch["old_log_probs"] = old
        data.batch["ref_log_prob"] = old - 0.01 * torch.rand(
            old.shape, generator=torch.Generator().manual_seed(seed)
        )
        return data

    actor.update_policy(batch(1, seed=1))  # warm-up: allocations, first-call paths
    data = batch(shape.timed_mini_batches, seed=2)
    start = time.perf_counter()
    actor.update_policy(data)
    seconds = (time.perf_counter() - start) / shape.timed_mini_batches
    return {
        "seconds": seconds,
        "flops": update_flops(model, ROWS, PROMPT_LEN, RESPONSE_LEN),
        "params": sum(p.numel() for p in model.parameters()),
        "matmul_flops": update_flops(model, ROWS, PROMPT_LEN, RESPONSE_LEN, with_attention=False),
        "matmul_flops_torch": counted,
    }


def main() -> bool:
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        peak = matmul_peak()
        results = [(shape, time_update(shape)) for shape in (DEMO, LARGER)]
        peak_after = matmul_peak()
    finally:
        torch.set_num_threads(threads)
    print(
        f"{THREADS} thread, fp32; matmul peak (best of {PEAK_REPEATS} {PEAK_N}^3 matmuls): "
        f"{peak / 1e9:.1f} GFLOP/s before the updates, {peak_after / 1e9:.1f} after"
    )
    peak = max(peak, peak_after)
    print(
        f"actor update (update_policy, demo shape): mini-batches of {ROWS} rows x "
        f"({PROMPT_LEN} prompt + {RESPONSE_LEN} response) tokens, no padding"
    )
    ok = True
    base_params = results[0][1]["params"]
    for shape, r in results:
        mfu = r["flops"] / r["seconds"] / peak
        agrees = abs(r["matmul_flops"] - r["matmul_flops_torch"]) <= 1e-3 * r["matmul_flops_torch"]
        ok &= 0 < mfu <= 1 and agrees
        print(
            f"  {shape.name:12} {r['params'] / 1e6:5.2f}M params ({r['params'] / base_params:4.1f}x): "
            f"{r['flops'] / 1e9:6.1f} GFLOP per mini-batch in {r['seconds']:6.3f} s = "
            f"{r['flops'] / r['seconds'] / 1e9:5.1f} GFLOP/s, MFU {mfu:.1%}"
        )
        print(
            f"  {'':12} matmul FLOPs per micro-batch: {r['matmul_flops'] / 1e9:.3f} G counted here, "
            f"{r['matmul_flops_torch'] / 1e9:.3f} G by torch.utils.flop_counter"
            + ("" if agrees else "  <- MISMATCH")
        )
    print(
        "report only: no MFU target (fails only on an impossible figure, MFU above 100% or not positive, or "
        "a FLOP count torch's counter disagrees with)"
    )
    return ok
