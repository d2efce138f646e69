"""Shaping the tiny test model: fitting it to a few token sequences (a policy that already searches and
answers, without the SFT trainer's machinery) or sharpening its random weights (varied greedy outputs)."""

from __future__ import annotations

from pathlib import Path

import torch


def fit_tiny_model(
    model_dir: Path, examples: list[tuple[list[int], list[int]]], passes: int, out: Path
) -> Path:
    """Train the model in model_dir on (ids, labels) pairs (-100 = no loss) with AdamW 3e-3, one optimizer step
    per pass over all examples, seeded; save it with its tokenizer to out and return out."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(passes):
        for ids, labels in examples:
            model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(model_dir)).save_pretrained(out)
    return out


def sharpen(model: torch.nn.Module, seed: int, std: float = 0.15) -> torch.nn.Module:
    """Redraw every matrix with a larger spread: the untrained tiny model repeats one token under greedy
    decoding, which would hide errors; with these weights greedy outputs vary token by token."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.normal_(0.0, std, generator=gen)
    return model
