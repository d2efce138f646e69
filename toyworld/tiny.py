"""Tiny tokenizer and tiny Qwen2-style model folders, built locally in seconds.

These stand in for real pretrained checkpoints everywhere a test, the demo or CI needs a model: no hub
download is ever needed. The tokenizer is a byte-level BPE (like Qwen's) with a ChatML chat template, so
chat prompts render the way they do for Qwen2.5 instruct models.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"
SPECIAL_TOKENS = [PAD_TOKEN, "<|im_start|>", EOS_TOKEN]
# The toy tokenizer may make the action tags single tokens (it helps a 0.7M-parameter model); the agent
# code never relies on it, because real tokenizers split them.
TAG_TOKENS = [
    "<think>",
    "</think>",
    "<search>",
    "</search>",
    "<answer>",
    "</answer>",
    "<information>",
    "</information>",
]


def train_tokenizer(
    texts: Iterable[str],
    out_dir: str | Path,
    vocab_size: int = 2048,
    tag_tokens: bool = True,
    whole_words: Iterable[str] = (),
) -> Path:
    """Train a byte-level BPE tokenizer on `texts` and save it in Hugging Face format to `out_dir`.

    Each of `whole_words` becomes one token, with and without the leading space (a name starts a line or
    follows a space), on top of the `vocab_size` learnt ones; other text is split by the BPE merges as
    usual. Training is deterministic for the same texts in the same order.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = SPECIAL_TOKENS + (TAG_TOKENS if tag_tokens else [])
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok = _with_whole_words(tok, whole_words)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
        model_max_length=4096,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(out)
    return out


def _with_whole_words(tok, words: Iterable[str]):
    """`tok` with each word (and its space-prefixed form) as one vocabulary entry.

    BPE's `ignore_merges` makes a pre-token found whole in the vocabulary one token, so no merge chain is
    needed. The toy world can use it for entity names (`--whole-word-names`): copying a name is then
    copying one token per word instead of three or four pieces (docs/toyworld.md).
    """
    import json

    from tokenizers import Tokenizer, pre_tokenizers

    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    # Without the split regex, ByteLevel only maps bytes to its alphabet (" " -> "Ġ"): one piece per form.
    to_bytes = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    next_id, added = max(vocab.values()) + 1, 0
    for word in sorted(set(words)):
        for form in (word, " " + word):
            ((piece, _),) = to_bytes.pre_tokenize_str(form)
            if piece not in vocab:
                vocab[piece] = next_id + added
                added += 1
    if not added:
        return tok
    spec["model"]["ignore_merges"] = True
    return Tokenizer.from_str(json.dumps(spec))


def build_tiny_model(
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 512,
    max_positions: int = 4096,
    seed: int = 0,
) -> Path:
    """Write an untrained Qwen2-style causal LM (and a copy of the tokenizer) to `out_dir`.

    The default size (hidden 128, 2 layers, ~0.7M parameters with a 2k vocabulary) is the practical
    size on 2 CPU cores; docs/design.md §8 has the measurements.
    """
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids(PAD_TOKEN),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
