"""CriticWorker on 2 FSDP2 ranks over gloo, checked against one plain (unsharded) process.

One 2-rank run (critic_scenarios.py) serves every test here: values, one critic step on a batch with
observation holes and uneven micro-batches, a checkpoint, and a fresh worker resumed from it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from verl.protocol import DataProto
from verl.utils.optim import build_adamw, build_lr_scheduler
from verl.workers.config import CriticConfig
from verl.workers.critic import DataParallelPPOCritic, load_value_model

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).with_name("critic_scenarios.py")


@pytest.fixture(scope="module")
def critic_scenarios():
    spec = importlib.util.spec_from_file_location("verl_critic_scenarios", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def two_ranks(scenario_runner, tiny_model_dir, tmp_path_factory):
    return scenario_runner(2, Path(tiny_model_dir), tmp_path_factory.mktemp("critic-2-ranks"), script=SCRIPT)


def _single_process_step(critic_scenarios, scenarios, model_dir):
    """The same step on one plain value model: no process group, no FSDP, micro-batches 4/4/4."""
    config = CriticConfig.from_dict(
        critic_scenarios.config(str(model_dir)), total_training_steps=critic_scenarios.STEPS
    )
    model = load_value_model(str(model_dir))
    optim = config.optim
    optimizer = build_adamw(model.parameters(), optim.lr, optim.betas, optim.weight_decay, optim.eps)
    scheduler = build_lr_scheduler(
        optimizer,
        optim.total_training_steps,
        optim.lr_warmup_steps,
        optim.lr_warmup_steps_ratio,
        optim.lr_scheduler,
        optim.min_lr_ratio,
    )
    critic = DataParallelPPOCritic(config, model, optimizer)
    data = critic_scenarios.add_returns(scenarios.make_batch(model.config.vocab_size, seed=0), seed=0)
    data.batch["values"] = critic.compute_values(data)
    metrics = critic.update_critic(data)
    scheduler.step()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    return data.batch["values"], metrics, grads, model.state_dict()


def test_two_rank_critic_update_equals_single_process_update(
    two_ranks, critic_scenarios, scenarios, tiny_model_dir
):
    values, metrics, grads, weights = _single_process_step(critic_scenarios, scenarios, tiny_model_dir)
    torch.testing.assert_close(two_ranks["values"], values, atol=1e-5, rtol=0)
    for key in ("critic/vf_loss", "critic/vf_clipfrac", "critic/vpred_mean", "critic/grad_norm", "critic/lr"):
        assert two_ranks["metrics"][key] == pytest.approx(metrics[key], abs=1e-5), key
    assert metrics["critic/step_skipped"] == two_ranks["metrics"]["critic/step_skipped"] == 0.0
    assert set(two_ranks["grads"]) == set(grads)
    for name, grad in grads.items():
        torch.testing.assert_close(two_ranks["grads"][name], grad, atol=1e-5, rtol=0, msg=name)
    for name, weight in weights.items():
        torch.testing.assert_close(two_ranks["weights"][name], weight, atol=1e-5, rtol=0, msg=name)


def test_resumed_critic_has_the_trained_weights_and_schedule(two_ranks):
    torch.testing.assert_close(two_ranks["values_resumed"], two_ranks["values_after"], atol=0, rtol=0)
    assert two_ranks["critic_state"] == {"global_step": 1}
    assert two_ranks["lr_after_resume"] == two_ranks["lr_after_step"]


def test_huggingface_checkpoint_reloads_with_the_same_values(two_ranks):
    folder = Path(two_ranks["checkpoint"])
    assert folder.name == "critic"
    hf_dir = folder / "huggingface"
    assert (hf_dir / "model.safetensors").is_file() and (hf_dir / "tokenizer_config.json").is_file()
    model = load_value_model(str(hf_dir))
    for name, weight in model.state_dict().items():
        torch.testing.assert_close(weight, two_ranks["weights"][name], atol=0, rtol=0, msg=name)
    config = CriticConfig.from_dict({"model": {"path": str(hf_dir)}})
    data_values = DataParallelPPOCritic(config, model).compute_values(
        DataProto.from_dict(tensors=two_ranks["batch"])
    )
    torch.testing.assert_close(data_values, two_ranks["values_after"], atol=1e-5, rtol=0)
