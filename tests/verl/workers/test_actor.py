"""DataParallelPPOActor in one process on a plain tiny model: micro-batch accumulation, the KL term's
direction, and skipped optimizer steps."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from verl.algorithms import (
    FixedKLController,
    apply_kl_penalty,
    compute_advantage,
    kl_penalty,
    masked_mean,
)
from verl.protocol import DataProto
from verl.utils.optim import build_adamw
from verl.workers.actor import DataParallelPPOActor, trim_padding
from verl.workers.config import ActorConfig, OptimConfig


def _model(model_dir) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)


def _actor(model, lr=1e-3, weight_decay=0.01, **config) -> DataParallelPPOActor:
    actor_config = ActorConfig(optim=OptimConfig(lr=lr, weight_decay=weight_decay), **config)
    optimizer = build_adamw(model.parameters(), lr, weight_decay=weight_decay)
    return DataParallelPPOActor(
        actor_config, model, optimizer, mini_batch_size=12, log_prob_micro_batch_size=5
    )


def _data(scenarios, model, actor):
    data = scenarios.make_batch(model.config.vocab_size, seed=0)
    old_log_probs, _ = actor.compute_log_prob(data)
    data.batch["old_log_probs"] = old_log_probs + data.batch["log_prob_noise"]
    data.batch["ref_log_prob"] = old_log_probs
    return data


@pytest.mark.parametrize("loss_agg_mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_uneven_micro_batches_give_the_full_batch_gradient(scenarios, tiny_model_dir, loss_agg_mode):
    grads = []
    for micro in (12, 5):  # one micro-batch vs 5 + 5 + 2 samples
        model = _model(tiny_model_dir)
        actor = _actor(
            model,
            ppo_micro_batch_size_per_gpu=micro,
            loss_agg_mode=loss_agg_mode,
            loss_scale_factor=32,  # seq-mean-token-sum-norm's constant (the others ignore it)
            use_kl_loss=True,
            kl_loss_coef=0.1,
            entropy_coeff=0.01,
        )
        actor.update_policy(_data(scenarios, model, actor))
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=1e-6, rtol=1e-5, msg=name)


def _padded_wider(data, left: int, right: int):
    """The same rows with `left` more padding columns before the prompts and `right` after the responses."""
    b = dict(data.batch)

    def pad(x, lo, hi):
        return torch.nn.functional.pad(x, (lo, hi))

    wider = {
        **b,
        "input_ids": pad(b["input_ids"], left, right),
        "attention_mask": pad(b["attention_mask"], left, right),
        "position_ids": pad(b["position_ids"], left, right),
        "prompts": pad(b["prompts"], left, 0),
        "responses": pad(b["responses"], 0, right),
        "response_mask": pad(b["response_mask"], 0, right),
    }
    return DataProto.from_dict(tensors=wider, meta_info=data.meta_info)


def test_seq_mean_token_sum_norm_divides_by_the_configured_constant_not_the_batch_width(
    scenarios, tiny_model_dir
):
    """The same rows in a batch whose responses are 9 columns wider (as when another step's longest response
    is longer) give the same gradient: the normaliser is loss_scale_factor, not the batch's response width."""
    grads = []
    for right in (0, 9):
        model = _model(tiny_model_dir)
        # No clipping: it would rescale any gradient to the same norm and hide the normaliser.
        actor = _actor(model, loss_agg_mode="seq-mean-token-sum-norm", loss_scale_factor=40, grad_clip=1e9)
        data = _data(scenarios, model, actor)
        if right:
            width = data.batch["responses"].shape[1]
            wide = _padded_wider(data, left=0, right=right)
            # The response-shaped columns _padded_wider left as they were (advantages, log-probs, ...).
            for key in [k for k, v in wide.batch.items() if v.dim() == 2 and v.shape[1] == width]:
                wide.batch[key] = torch.nn.functional.pad(wide.batch[key], (0, right))
            data = wide
        actor.update_policy(data)
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=1e-7, rtol=1e-5, msg=name)
    with pytest.raises(ValueError, match="actor.loss_scale_factor is required with loss_agg_mode=seq-mean"):
        ActorConfig(loss_agg_mode="seq-mean-token-sum-norm")


def test_padding_columns_no_row_uses_are_cut_and_change_nothing(scenarios, tiny_model_dir):
    model = _model(tiny_model_dir)
    actor = _actor(model)
    data = scenarios.make_batch(model.config.vocab_size, seed=0)
    wide = _padded_wider(data, left=7, right=9)
    trimmed = trim_padding(wide)
    assert trimmed.input_ids.shape[1] <= data.batch["input_ids"].shape[1]
    assert (
        trimmed.pad_responses(torch.zeros(len(wide), trimmed.response_len)).shape
        == wide.batch["responses"].shape
    )
    tight, _ = actor.compute_log_prob(data, calculate_entropy=False)
    loose, _ = actor.compute_log_prob(wide, calculate_entropy=False)
    real = data.batch["attention_mask"][:, data.batch["prompts"].shape[1] :].bool()
    torch.testing.assert_close(loose[:, : tight.shape[1]][real], tight[real], atol=1e-5, rtol=0)
    assert (loose[:, tight.shape[1] :] == 0).all()


def _kl_to_reference(actor, data) -> float:
    log_probs, _ = actor.compute_log_prob(data)
    return masked_mean(
        kl_penalty(log_probs, data.batch["ref_log_prob"], "low_var_kl"), data.batch["response_mask"]
    ).item()


def _drifted_actor(scenarios, model_dir, **config):
    """An actor on a randomly perturbed copy of the model, and a batch holding the unperturbed reference's
    log-probs."""
    reference = _model(model_dir)
    policy = _model(model_dir)
    torch.manual_seed(0)
    with torch.no_grad():
        for param in policy.parameters():
            param.add_(0.05 * torch.randn_like(param))
    ref_actor = DataParallelPPOActor(ActorConfig(), reference, log_prob_micro_batch_size=12)
    actor = _actor(policy, weight_decay=0.0, **config)
    data = scenarios.make_batch(policy.config.vocab_size, seed=0)
    data.batch["ref_log_prob"], _ = ref_actor.compute_log_prob(data)
    return actor, data


def test_kl_loss_pulls_the_policy_towards_the_reference(scenarios, tiny_model_dir):
    actor, data = _drifted_actor(scenarios, tiny_model_dir, use_kl_loss=True, kl_loss_coef=1.0)
    data.batch["old_log_probs"], _ = actor.compute_log_prob(data)
    data.batch["advantages"] = torch.zeros_like(data.batch["advantages"])  # the KL term is the only signal
    kls = [_kl_to_reference(actor, data)]
    for _ in range(3):
        actor.update_policy(data)
        kls.append(_kl_to_reference(actor, data))
    assert kls[0] > 0
    assert all(later < earlier for earlier, later in zip(kls, kls[1:], strict=False)), kls


def _kl_after_drift(scenarios, model_dir, placement: str, coef: float) -> float:
    """Four updates of a perturbed policy pushed by fixed random sequence scores, with KL to the reference
    either as the loss term (GRPO/REINFORCE) or as a per-token reward penalty (PPO/Reinforce++)."""
    in_loss = placement == "loss"
    actor, data = _drifted_actor(
        scenarios, model_dir, use_kl_loss=in_loss, kl_loss_coef=coef if in_loss else 0.0
    )
    mask = data.batch["response_mask"]
    last = mask * (mask.cumsum(-1) == mask.sum(-1, keepdim=True))
    scores = torch.randn(len(data), 1, generator=torch.Generator().manual_seed(1)) * last
    for _ in range(4):
        data.batch["old_log_probs"], _ = actor.compute_log_prob(data)
        rewards = scores
        if not in_loss:
            rewards, _ = apply_kl_penalty(
                scores, data.batch["old_log_probs"], data.batch["ref_log_prob"], mask, FixedKLController(coef)
            )
        data.batch["advantages"], _ = compute_advantage("reinforce_plus_plus", rewards, mask, gamma=1.0)
        actor.update_policy(data)
    return _kl_to_reference(actor, data)


# As a loss term the pull grows with the coefficient. In the reward, Reinforce++ whitens the advantages over
# the batch, so once the penalty dominates the scores a larger coefficient no longer changes their scale:
# there the test compares no penalty with a moderate one.
@pytest.mark.parametrize(("placement", "coefs"), [("loss", (0.0, 0.2, 1.0, 5.0)), ("reward", (0.0, 0.2))])
def test_raising_kl_coef_keeps_the_policy_closer_to_the_reference(
    scenarios, tiny_model_dir, placement, coefs
):
    kls = [_kl_after_drift(scenarios, tiny_model_dir, placement, coef) for coef in coefs]
    assert all(later < earlier for earlier, later in zip(kls, kls[1:], strict=False)), kls


def test_non_finite_gradient_norm_skips_the_step(scenarios, tiny_model_dir):
    model = _model(tiny_model_dir)
    actor = _actor(model)
    data = _data(scenarios, model, actor)
    row, col = torch.nonzero(data.batch["response_mask"])[0].tolist()
    data.batch["advantages"][row, col] = float("nan")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    metrics = actor.update_policy(data)
    assert not math.isfinite(metrics["actor/grad_norm"])
    assert metrics["actor/step_skipped"] == 1.0
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, before[name], atol=0, rtol=0, msg=name)


def test_zero_gradient_skips_the_step_so_weight_decay_and_momentum_do_not_move_weights(
    scenarios, tiny_model_dir
):
    model = _model(tiny_model_dir)
    actor = _actor(model, weight_decay=0.1)
    data = _data(scenarios, model, actor)
    data.batch["advantages"] = torch.zeros_like(data.batch["advantages"])  # every GRPO group tied
    before = {k: v.clone() for k, v in model.state_dict().items()}
    metrics = actor.update_policy(data)
    assert metrics["actor/grad_norm"] == 0.0
    assert metrics["actor/step_skipped"] == 1.0
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, before[name], atol=0, rtol=0, msg=name)


def test_observation_tokens_carry_no_gradient(scenarios, tiny_model_dir):
    """Changing advantages and old log-probs on response_mask == 0 positions changes nothing."""
    grads = []
    for poison in (False, True):
        model = _model(tiny_model_dir)
        actor = _actor(model, use_kl_loss=True, kl_loss_coef=0.1)
        data = _data(scenarios, model, actor)
        if poison:
            holes = data.batch["response_mask"] == 0
            data.batch["advantages"][holes] = 1e3
            data.batch["old_log_probs"][holes] = -50.0
            data.batch["ref_log_prob"][holes] = -50.0
        actor.update_policy(data)
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=0, rtol=0, msg=name)


def test_update_names_missing_columns_and_bad_mini_batches(scenarios, tiny_model_dir):
    model = _model(tiny_model_dir)
    actor = _actor(model, use_kl_loss=True)
    data = _data(scenarios, model, actor)
    data.pop(batch_keys=["ref_log_prob"])
    with pytest.raises(KeyError, match="ref_log_prob"):
        actor.update_policy(data)
    actor.mini_batch_size = 5
    with pytest.raises(ValueError, match="ppo_mini_batch_size"):
        actor.update_policy(_data(scenarios, model, actor))


def test_the_padding_free_packed_forward_equals_the_padded_one(scenarios, sharp_model_dir):
    """use_remove_padding: a micro-batch packed into one row (positions restarting per sequence) gives the
    padded forward's log-probs, entropies and update gradients at every real response token."""
    results = []
    for remove_padding in (False, True):
        model = _model(sharp_model_dir)
        actor = _actor(model, ppo_micro_batch_size_per_gpu=5, entropy_coeff=0.01)
        actor.remove_padding = remove_padding
        data = _data(scenarios, model, actor)
        log_probs, entropy = actor.compute_log_prob(data, calculate_entropy=True)
        actor.update_policy(data)
        grads = {name: p.grad.clone() for name, p in model.named_parameters()}
        results.append((log_probs, entropy, grads, data))
    (lp, ent, grads, data), (lp_packed, ent_packed, grads_packed, _) = results
    real = data.batch["attention_mask"][:, data.batch["prompts"].shape[1] :].bool()
    assert real.sum() < real.numel()  # the batch really has padding to drop
    torch.testing.assert_close(lp_packed[real], lp[real], atol=1e-5, rtol=0)
    torch.testing.assert_close(ent_packed[real], ent[real], atol=1e-5, rtol=0)
    assert (lp_packed[~real] == 0).all()
    for name, grad in grads.items():
        torch.testing.assert_close(grads_packed[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_an_on_policy_update_without_old_log_probs_equals_one_with_them(scenarios, tiny_model_dir):
    """One epoch over one mini-batch: the detached log-probs of the update's own forwards are the old ones,
    so skipping the old-log-prob pass changes neither the gradient nor the step."""
    states, metrics = [], []
    for recompute in (True, False):
        model = _model(tiny_model_dir)
        actor = _actor(model, ppo_micro_batch_size_per_gpu=5, ppo_epochs=1)
        data = scenarios.make_batch(model.config.vocab_size, seed=0)
        if recompute:
            data.batch["old_log_probs"], _ = actor.compute_log_prob(data)
        metrics.append(actor.update_policy(data))
        states.append({name: p.detach().clone() for name, p in model.named_parameters()})
    for name, weight in states[0].items():
        torch.testing.assert_close(states[1][name], weight, atol=1e-6, rtol=1e-5, msg=name)
    for key in ("actor/pg_loss", "actor/grad_norm", "actor/ppo_kl", "actor/pg_clipfrac"):
        assert metrics[1][key] == pytest.approx(metrics[0][key], abs=1e-6), key
    assert metrics[1]["actor/grad_norm"] > 0 and metrics[1]["actor/ppo_kl"] == 0.0


@pytest.mark.parametrize(("epochs", "mini_batch"), [(2, 12), (1, 6)])
def test_an_update_that_is_not_on_policy_needs_old_log_probs(scenarios, tiny_model_dir, epochs, mini_batch):
    model = _model(tiny_model_dir)
    actor = _actor(model, ppo_epochs=epochs)
    actor.mini_batch_size = mini_batch
    data = scenarios.make_batch(model.config.vocab_size, seed=0)
    with pytest.raises(ValueError, match="has no old_log_probs, which only an on-policy update"):
        actor.update_policy(data)
