"""ActorRolloutRefWorker on 2 FSDP2 ranks over gloo, checked against one plain (unsharded) process.

One 2-rank run (see dist_scenarios.py) serves every test here: it takes a training step on a batch with
observation holes in the response mask and uneven micro-batches (each rank holds 6 samples, micro-batch 4),
generates with the synced rollout, checkpoints, takes a second step, and resumes a fresh worker from the
checkpoint to repeat that second step.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from verl.utils.optim import build_adamw, build_lr_scheduler
from verl.workers.actor import DataParallelPPOActor
from verl.workers.config import ActorRolloutRefConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_ranks(scenario_runner, tiny_model_dir, tmp_path_factory):
    return scenario_runner(2, Path(tiny_model_dir), tmp_path_factory.mktemp("fsdp-2-ranks"))


def _load(model_dir) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)


def _response_log_probs(model, batch, temperature):
    prompt_len = batch["prompts"].shape[1]
    response_len = batch["responses"].shape[1]
    with torch.no_grad():
        logits = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            position_ids=batch["position_ids"],
        ).logits
    logits = logits[:, prompt_len - 1 : prompt_len - 1 + response_len] / temperature
    return F.log_softmax(logits, -1).gather(-1, batch["responses"].unsqueeze(-1)).squeeze(-1)


def _single_process_step(scenarios, model_dir):
    """The same step as the 2-rank run on one plain model: no process group, no FSDP, micro-batches 4/4/4."""
    config = ActorRolloutRefConfig.from_dict(
        scenarios.config(str(model_dir)), total_training_steps=scenarios.STEPS
    )
    model = _load(model_dir)
    optim = config.actor.optim
    optimizer = build_adamw(model.parameters(), optim.lr, optim.betas, optim.weight_decay, optim.eps)
    scheduler = build_lr_scheduler(
        optimizer,
        optim.total_training_steps,
        optim.lr_warmup_steps,
        optim.lr_warmup_steps_ratio,
        optim.lr_scheduler,
        optim.min_lr_ratio,
    )
    actor = DataParallelPPOActor(config.actor, model, optimizer, log_prob_micro_batch_size=5)
    data = scenarios.make_batch(model.config.vocab_size, seed=0)
    old_log_probs, _ = actor.compute_log_prob(data)
    data.batch["ref_log_prob"] = old_log_probs  # the reference is the initial model
    data.batch["old_log_probs"] = old_log_probs + data.batch["log_prob_noise"]
    metrics = actor.update_policy(data)
    scheduler.step()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    return metrics, grads, model.state_dict()


def test_two_rank_update_equals_single_process_update(two_ranks, scenarios, tiny_model_dir):
    metrics, grads, weights = _single_process_step(scenarios, tiny_model_dir)
    assert two_ranks["metrics"]["actor/grad_norm"] == pytest.approx(metrics["actor/grad_norm"], abs=1e-5)
    for key in (
        "actor/pg_loss",
        "actor/kl_loss",
        "actor/entropy",
        "actor/pg_clipfrac",
        "actor/ppo_kl",
        "actor/lr",
    ):
        assert two_ranks["metrics"][key] == pytest.approx(metrics[key], abs=1e-5), key
    assert set(two_ranks["grads"]) == set(grads)
    for name, grad in grads.items():
        torch.testing.assert_close(two_ranks["grads"][name], grad, atol=1e-5, rtol=0, msg=name)
    assert set(two_ranks["weights"]) == set(weights)
    for name, weight in weights.items():
        torch.testing.assert_close(two_ranks["weights"][name], weight, atol=1e-5, rtol=0, msg=name)


def test_compute_log_prob_equals_full_model_forward(two_ranks, tiny_model_dir):
    batch = two_ranks["batch"]
    expected = _response_log_probs(_load(tiny_model_dir), batch, temperature=0.7)
    real = batch["attention_mask"][:, batch["prompts"].shape[1] :].bool()  # padding columns mean nothing
    torch.testing.assert_close(two_ranks["old_log_probs"][real], expected[real], atol=1e-5, rtol=0)
    # The reference model is the initial model: its log-probs are the same.
    torch.testing.assert_close(two_ranks["ref_log_prob"][real], expected[real], atol=1e-5, rtol=0)


def test_rollout_holds_the_actor_weights_after_update_and_after_resume(two_ranks):
    assert two_ranks["rollout_max_diff"] == 0.0
    assert two_ranks["resumed_rollout_diff"] == 0.0


def test_generate_sequences_samples_with_the_updated_weights(two_ranks, tiny_model_dir):
    model = _load(tiny_model_dir)
    model.load_state_dict(two_ranks["weights"])
    prompts = [p for rank_prompts in two_ranks["prompt_token_ids"] for p in rank_prompts]
    generated = {
        key: [v for part in two_ranks["generated"] for v in part[key]]
        for key in ("response_token_ids", "finish_reason", "response_logprobs")
    }
    assert len(generated["response_token_ids"]) == 2 * len(prompts)
    for i, prompt in enumerate(prompts):
        ids = torch.tensor([prompt])
        with torch.no_grad():
            for _ in range(4):
                ids = torch.cat([ids, model(ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        greedy = ids[0, len(prompt) :].tolist()
        for row in (2 * i, 2 * i + 1):  # n=2 samples of prompt i, next to each other
            assert generated["response_token_ids"][row] == greedy
            assert generated["finish_reason"][row] == "length"
            assert len(generated["response_logprobs"][row]) == 4


def test_generate_sequences_takes_each_prompts_own_params(two_ranks):
    """The per-row `sampling_params` column: row k of each rank's share may take 1 + k % 3 greedy tokens,
    the start of what n=2 shared-params sampling gave that prompt."""
    for rank, (mine, generated) in enumerate(
        zip(two_ranks["prompt_token_ids"], two_ranks["generated"], strict=True)
    ):
        own = two_ranks["generated_own"][rank]
        assert len(own) == len(mine)
        for k, ids in enumerate(own):
            assert ids == generated["response_token_ids"][2 * k][: 1 + k % 3]


def test_resume_from_checkpoint_repeats_the_next_step_exactly(two_ranks):
    metrics_a, metrics_b = two_ranks["resume_metrics"]
    measured = ("timing_s/", "perf/")  # seconds and memory: the same step, not the same clock
    assert {k: v for k, v in metrics_a.items() if not k.startswith(measured)} == {
        k: v for k, v in metrics_b.items() if not k.startswith(measured)
    }
    for key in ("timing_s/actor/forward_backward", "timing_s/actor/optimizer", "timing_s/actor/weight_sync"):
        assert 0.0 < metrics_a[key] < 60.0, key
    assert metrics_a["perf/peak_rss_mib"] > 100.0  # a process holding torch and a model
    weights_a, weights_b = two_ranks["resume_weights"]
    for name in weights_a:
        torch.testing.assert_close(weights_b[name], weights_a[name], atol=0, rtol=0, msg=name)
    draw_after_save, draw_after_load = two_ranks["draws"]
    torch.testing.assert_close(draw_after_load, draw_after_save, atol=0, rtol=0)
    assert two_ranks["trainer_state"] == {"global_step": 1, "extra_state": {"data_position": 3}}


def test_checkpoint_huggingface_folder_reloads_and_generates(two_ranks):
    checkpoint = Path(two_ranks["checkpoint"])
    hf_dir = checkpoint / "actor" / "huggingface"
    assert (hf_dir / "model.safetensors").is_file()
    model = AutoModelForCausalLM.from_pretrained(str(hf_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(hf_dir))
    for name, weight in model.state_dict().items():
        torch.testing.assert_close(weight, two_ranks["weights"][name], atol=0, rtol=0, msg=name)
    prompt = tokenizer("Question: Where was Alice Smith born?", return_tensors="pt")
    output = model.generate(**prompt, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert output.shape[1] == prompt["input_ids"].shape[1] + 3


def test_param_offload_on_a_cpu_rank_is_refused_naming_the_key(tiny_model_dir):
    from verl.workers.config import FSDPConfig
    from verl.workers.fsdp_workers import shard_on_device

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    with pytest.raises(ValueError, match="fsdp_config.param_offload"):
        shard_on_device(model, torch.device("cpu"), FSDPConfig(param_offload=True), trainable=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_one_nccl_rank_on_cuda_matches_the_cpu_step_and_resumes(
    scenario_runner, scenarios, tiny_model_dir, tmp_path
):
    """The same worker code on a GPU: FSDP2 over nccl takes the plain CPU process's step (up to the rounding
    of CUDA kernels), syncs the rollout, and resumes from its checkpoint to repeat the next step."""
    on_gpu = scenario_runner(1, Path(tiny_model_dir), tmp_path, cuda=True)
    metrics, grads, weights = _single_process_step(scenarios, tiny_model_dir)
    assert on_gpu["metrics"]["actor/grad_norm"] == pytest.approx(metrics["actor/grad_norm"], rel=1e-4)
    assert on_gpu["metrics"]["actor/pg_loss"] == pytest.approx(metrics["actor/pg_loss"], abs=1e-5)
    for name, grad in grads.items():
        torch.testing.assert_close(on_gpu["grads"][name], grad, atol=1e-5, rtol=1e-3, msg=name)
    for name, weight in weights.items():
        torch.testing.assert_close(on_gpu["weights"][name], weight, atol=2e-5, rtol=0, msg=name)
    assert on_gpu["rollout_max_diff"] == 0.0 and on_gpu["resumed_rollout_diff"] == 0.0
    weights_a, weights_b = on_gpu["resume_weights"]
    for name in weights_a:
        torch.testing.assert_close(weights_b[name], weights_a[name], atol=1e-6, rtol=0, msg=name)
    assert on_gpu["trainer_state"] == {"global_step": 1, "extra_state": {"data_position": 3}}


def test_optimizer_offload_on_a_cpu_rank_is_refused_naming_the_key(tiny_model_dir):
    from verl.workers.config import FSDPConfig
    from verl.workers.fsdp_workers import shard_on_device

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    with pytest.raises(ValueError, match="fsdp_config.optimizer_offload moves the optimizer's state"):
        shard_on_device(model, torch.device("cpu"), FSDPConfig(optimizer_offload=True), trainable=True)


def test_flash_attention_on_a_cpu_rank_is_refused_naming_the_key():
    from verl.workers.fsdp_workers import check_attention

    with pytest.raises(ValueError, match="critic.model.attn_implementation=flash_attention_2 needs a CUDA"):
        check_attention("flash_attention_2", torch.device("cpu"), "critic.model")
    check_attention("sdpa", torch.device("cpu"), "critic.model")


def test_offloaded_optimizer_state_comes_back_beside_each_parameter_and_leaves_the_step_counter():
    """The movement logic on the devices at hand: state in CPU memory returns to its parameter's device (here
    `meta`, a real second device on any machine); `step` stays where AdamW keeps it. On CUDA:
    tests/verl/workers/test_gpu_profile.py."""
    from verl.utils.fsdp import offload_optimizer_state, reload_optimizer_state

    model = torch.nn.Linear(4, 3)
    optimizer = build_adamw(model.parameters(), lr=1e-3)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    offload_optimizer_state(optimizer)
    state = optimizer.state[model.weight]
    assert state["exp_avg"].device.type == "cpu" and state["exp_avg_sq"].device.type == "cpu"
    with torch.device("meta"):
        on_meta = torch.nn.Parameter(torch.empty(3, 4))
    optimizer.state[on_meta] = dict(state)
    optimizer.param_groups[0]["params"].append(on_meta)
    reload_optimizer_state(optimizer)
    moved = optimizer.state[on_meta]
    assert moved["exp_avg"].device.type == "meta" and moved["exp_avg_sq"].device.type == "meta"
    assert moved["step"].device.type == "cpu"
    assert optimizer.state[model.weight]["exp_avg"].device.type == "cpu"  # its parameter is on the CPU
