"""bench_trl's logic without its timing: the task and reward both sides share, the step and run arithmetic,
the TRL harness's report, the trainer configuration of the project's side and its single-turn agent loop."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import bench_trl
from benchmarks.peer_task import (
    FIRST_MEASURED_STEP,
    median_over_runs,
    parse_result,
    result_line,
    run_median,
    score,
    task_rows,
    token_f1,
)


def test_token_f1_counts_the_code_words_in_the_completion():
    assert token_f1("amber falcon", "amber falcon") == 1.0
    assert token_f1(" The AMBER, falcon!", "amber falcon") == pytest.approx(0.8)  # 2 of 3 words, both codes
    assert token_f1("amber amber", "amber falcon") == pytest.approx(
        0.5
    )  # a word counts as often as in the code
    assert token_f1("nothing here", "amber falcon") == 0.0
    assert token_f1("", "amber falcon") == 0.0
    assert score("falcon", "amber falcon") == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="token F1 only"):
        score("amber falcon", "amber falcon", metric="em")


def test_the_rows_are_the_same_in_every_environment_and_their_codes_have_two_words():
    rows = task_rows(96)
    assert rows == task_rows(96) and rows != task_rows(96, seed=1)
    assert all(r["question"].startswith("Question: what is the code word for ") for r in rows)
    assert all(r["question"].endswith("? Answer:") and len(r["code"].split()) == 2 for r in rows)
    assert len({r["question"] for r in rows}) == 96


def test_a_run_is_the_median_of_its_steps_from_the_third_and_the_bench_the_median_of_runs():
    assert FIRST_MEASURED_STEP == 3
    assert run_median([100.0, 50.0, 1.0, 2.0, 3.0]) == 2.0  # the two warm-up steps never count
    assert run_median([9.0, 9.0, 4.0, 1.0]) == 2.5
    with pytest.raises(ValueError, match="at least 3 steps"):
        run_median([1.0, 2.0])
    assert median_over_runs([{"s": 3.0}, {"s": 1.0}, {"s": 10.0}], "s") == 3.0


def test_the_harness_report_is_read_back_from_its_last_result_line():
    first, last = {"side": "trl", "step_s": 0.5}, {"side": "trl", "step_s": 0.25}
    output = f"step 1 ...\n{result_line(first)}\nnoise\n{result_line(last)}\n"
    assert parse_result(output) == last
    with pytest.raises(ValueError, match="no result line"):
        parse_result("step 1 wall 300 ms\n")


def _step_record(step: int, seconds: float) -> dict:
    return {
        "step": step,
        "timing_s/step": seconds,
        "timing_s/gen": seconds / 2,
        "timing_s/old_log_prob": 0.1,
        "timing_s/update_actor": seconds / 3,
        "timing_s/actor/forward_backward": seconds / 4,
        "timing_s/actor/optimizer": 0.002,
        "response_tokens/total": 1200.0 + step,
        "prompt_length/mean": 28.0,
        "perf/peak_rss_mib": 500.0 + step,
    }


def test_a_project_run_is_read_from_the_trainer_s_metrics():
    seconds = [5.0, 4.0] + [0.3 + 0.01 * i for i in range(10)]  # steps 3-12: 0.30 .. 0.39
    records = [_step_record(i, s) for i, s in enumerate(seconds, 1)]
    records.insert(3, {"step": 3, "val/score": 0.0})  # a record without timings is not a step
    run = bench_trl.project_result(list(reversed(records)), driver_peak_mib=400.0)
    assert run["step_s"] == pytest.approx(0.345) and run["generate_s"] == pytest.approx(0.1725)
    assert run["old_log_prob_s"] == pytest.approx(0.1) and run["optimizer_s"] == 0.002
    assert run["tokens_per_step"] == pytest.approx(1207.5)
    assert run["tokens_per_s"] == pytest.approx(sum(1200 + i for i in range(3, 13)) / sum(seconds[2:]))
    assert run["peak_rss_mib"] == 400.0 + 512.0 and run["prompt_tokens_per_step"] == 28.0 * 40
    with pytest.raises(RuntimeError, match="logged 11 steps, expected 12"):
        bench_trl.project_result([r for r in records if r["step"] != 12], driver_peak_mib=400.0)


def test_the_ratios_with_and_without_the_old_log_prob_pass():
    project = [{"step_s": 0.4, "old_log_prob_s": 0.05}, {"step_s": 0.3, "old_log_prob_s": 0.1}]
    project.append({"step_s": 0.5, "old_log_prob_s": 0.05})
    trl = [{"step_s": 0.2}, {"step_s": 0.25}, {"step_s": 0.5}]
    with_old, without = bench_trl.ratios(project, trl)
    assert with_old == pytest.approx(0.4 / 0.25)
    assert without == pytest.approx(0.35 / 0.25)  # median of 0.35, 0.2, 0.45


def test_the_project_side_is_one_rank_one_update_per_generation_without_reference(tmp_path, tiny_model_dir):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from verl.trainer.config import DEPRECATED_KEYS, PPOTrainerConfig
    from verl.trainer.main_ppo import CONFIG_DIR
    from verl.utils.config import check_overrides

    prompts = bench_trl.write_prompts(tmp_path / "prompts.parquet")
    overrides = check_overrides(
        bench_trl.project_overrides(tiny_model_dir, prompts, tmp_path / "run"),
        CONFIG_DIR,
        "ppo_trainer",
        DEPRECATED_KEYS,
    )
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        raw = OmegaConf.to_container(compose(config_name="ppo_trainer", overrides=overrides), resolve=True)
    cfg = PPOTrainerConfig.from_dict(raw)
    trainer, actor, rollout = cfg.trainer, cfg.actor_rollout_ref.actor, cfg.actor_rollout_ref.rollout
    assert trainer.world_size == 1 and trainer.device == "cpu" and trainer.cpu_threads_per_rank == 2
    assert trainer.total_training_steps == 12 and trainer.test_freq == -1 and not trainer.val_before_train
    assert cfg.data.train_batch_size == 8 and rollout.n == 5 and rollout.temperature == 1.0
    assert rollout.top_p == 1.0 and rollout.name == "hf"
    assert cfg.agent["max_tokens_per_turn"] == 32 == cfg.agent["max_response_length"]
    # The whole batch is one mini-batch (one optimizer step) and one micro-batch, over one epoch.
    assert actor.mini_batch_samples == 40 == actor.ppo_micro_batch_size_per_gpu and actor.ppo_epochs == 1
    assert not cfg.needs_reference and cfg.critic is None and not cfg.algorithm.skip_step_without_signal
    assert actor.loss_agg_mode == "token-mean" and actor.entropy_coeff == 0.0
    assert actor.optim.lr_scheduler == "constant" and actor.optim.lr_warmup_steps_ratio == 0.0
    model = cfg.actor_rollout_ref.model
    assert model.dtype == "float32" == rollout.dtype and not model.enable_gradient_checkpointing
    assert cfg.reward.score_fn == "benchmarks.peer_task.score"


class _FixedEngine:
    """A rollout engine that answers every prompt with the same tokens (the test's completion)."""

    def __init__(self, completion: list[int]):
        self.completion, self.calls = completion, []

    def generate(self, prompts, params):
        from verl.workers.rollout.base import RolloutOutput

        self.calls.append(params)
        return [[RolloutOutput(list(self.completion), "length")] for _ in prompts]


def test_the_single_turn_loop_generates_once_and_the_reward_scores_the_completion(tiny_model_dir):
    from transformers import AutoTokenizer

    from benchmarks.peer_agent import SingleTurnAgentLoop
    from verl.protocol import DataProto
    from verl.workers.reward import RewardManager
    from verl.workers.rollout.base import RolloutSamplingParams

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    loop = SingleTurnAgentLoop(
        tokenizer, total_training_steps=12, max_prompt_length=128, max_tokens_per_turn=32, topk=5
    )
    completion = tokenizer(" Paris is it", add_special_tokens=False)["input_ids"]
    engine = _FixedEngine(completion)
    batch = DataProto.from_dict(
        non_tensors={
            "prompt_token_ids": [[1, 2, 3], [4, 5]],
            "ground_truth": np.array(["paris", "rome"], dtype=object),
        }
    )
    data, metrics = loop.rollout(batch, engine, RolloutSamplingParams(seed=3), global_step=1, validate=False)
    assert len(engine.calls) == 1 and len(engine.calls[0]) == 2  # one call, each prompt with its own params
    assert all(p.max_tokens == 32 and p.stop == () for p in engine.calls[0])
    assert metrics["env/turns/mean"] == 1.0 and metrics["response_tokens/total"] == 2 * len(completion)
    assert "reward_text" not in data.non_tensor_batch
    assert data.batch["response_mask"].sum().item() == 2 * len(completion)
    scores, texts = RewardManager(tokenizer, score, "f1")(data.union(batch))
    assert texts == [" Paris is it"] * 2
    assert scores.sum(-1).tolist() == pytest.approx([0.5, 0.0])  # 1 of 3 words right, and none
    assert json.dumps(metrics)  # plain floats, loggable
