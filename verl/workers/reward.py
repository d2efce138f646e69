"""Rule-based rewards: score each response's text and place the score on its last policy token.

The scoring function is the domain's (ZeroSearch's F1 lives in `zerosearch.reward`), given to the trainer as
an import path in the config, so the engine never imports the domain. The text scored (`reward_texts`) is what
the environment accepted when the rollout says so: a multi-turn agent loop puts it in the non-tensor column
`reward_text` (llm_agent: the accepted answer action, "" when none), so an answer the environment rejected is
never paid. Without that column, the policy's own tokens are decoded: never a retrieved document (a simulator
may well write `<answer>` inside its documents) nor the prompt.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from verl.protocol import DataProto


def import_callable(path: str) -> Callable:
    """`package.module.name` -> the object; errors name the path."""
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise ValueError(f"{path!r} is not an import path of the form package.module.name")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"cannot import {module_name!r} (from {path!r}): {e}") from e
    if not hasattr(module, attr):
        raise ValueError(f"{module_name!r} has no attribute {attr!r} (from {path!r})")
    return getattr(module, attr)


def decode_tokens(tokenizer, ids: list[int]) -> str:
    """Text of `ids` with special tokens KEPT except EOS and padding: tokenizers may make the action tags
    (`<answer>`, ...) special tokens, and skipping special tokens would erase them from the text."""
    dropped = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    return tokenizer.decode([t for t in ids if t not in dropped], skip_special_tokens=False)


def policy_texts(data: DataProto, tokenizer) -> list[str]:
    """Each row's policy tokens (response_mask == 1), decoded."""
    responses, mask = data.batch["responses"], data.batch["response_mask"].bool()
    return [decode_tokens(tokenizer, row[m].tolist()) for row, m in zip(responses, mask, strict=True)]


def reward_texts(data: DataProto, tokenizer) -> list[str]:
    """What the reward scores for each row: the rollout's `reward_text` column where it has one (the
    environment's accepted final output), else the decoded policy tokens."""
    if "reward_text" in data.non_tensor_batch:
        return [str(text) for text in data.non_tensor_batch["reward_text"]]
    return policy_texts(data, tokenizer)


@dataclass
class RewardConfig:
    """reward: the domain's scoring functions as import paths (the engine never imports the domain):
    score_fn(response_text, ground_truth, metric=...) -> float and metrics_fn(response_text, golden) -> dict."""

    score_fn: str = "zerosearch.reward.compute_score"
    metric: str = "f1"
    metrics_fn: str | None = "zerosearch.reward.answer_metrics"


class RewardManager:
    """score_fn(response_text, ground_truth, metric=...) -> float; metrics_fn(response_text, golden) -> dict."""

    def __init__(self, tokenizer, score_fn: Callable, metric: str, metrics_fn: Callable | None = None):
        self.tokenizer = tokenizer
        self.score_fn = score_fn
        self.metric = metric
        self.metrics_fn = metrics_fn

    @classmethod
    def from_config(cls, tokenizer, config: RewardConfig) -> RewardManager:
        return cls(
            tokenizer,
            import_callable(config.score_fn),
            config.metric,
            import_callable(config.metrics_fn) if config.metrics_fn else None,
        )

    def __call__(self, data: DataProto) -> tuple[torch.Tensor, list[str]]:
        """token_level_scores [B, R] (the score on each row's last policy token) and the scored texts."""
        texts = reward_texts(data, self.tokenizer)
        truths = data.non_tensor_batch["ground_truth"]
        mask = data.batch["response_mask"]
        scores = torch.zeros(mask.shape, dtype=torch.float32)
        for i, (text, truth) in enumerate(zip(texts, truths, strict=True)):
            positions = mask[i].nonzero()
            if len(positions):
                scores[i, positions[-1, 0]] = float(self.score_fn(text, truth, metric=self.metric))
        return scores, texts

    def answer_metrics(self, texts: list[str], data: DataProto) -> dict[str, np.ndarray]:
        """Per-row evaluation metrics (e.g. em, cover_em, f1) as arrays, for validation logging."""
        if self.metrics_fn is None:
            return {}
        rows = [
            self.metrics_fn(t, g) for t, g in zip(texts, data.non_tensor_batch["golden_answers"], strict=True)
        ]
        return {key: np.array([r[key] for r in rows], dtype=np.float64) for key in rows[0]} if rows else {}
