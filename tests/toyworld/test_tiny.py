import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from toyworld.tiny import EOS_TOKEN, PAD_TOKEN, train_tokenizer


def test_tiny_model_loads_and_generates_with_left_padding(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert tokenizer.padding_side == "left"
    assert (tokenizer.eos_token, tokenizer.pad_token) == (EOS_TOKEN, PAD_TOKEN)
    assert model.config.eos_token_id == tokenizer.eos_token_id
    batch = tokenizer(["Alice", "Question: Where was Alice Smith born?"], return_tensors="pt", padding=True)
    out = model.generate(**batch, max_new_tokens=4, do_sample=False)
    assert out.shape == (2, batch["input_ids"].shape[1] + 4)
    # Left padding keeps every prompt's last token at the same position, right before the new tokens.
    assert torch.equal(out[:, : batch["input_ids"].shape[1]], batch["input_ids"])


def test_chat_template_is_chatml(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = tokenizer.apply_chat_template(
        [{"role": "system", "content": ""}, {"role": "user", "content": "hi"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert text == "<|im_start|>system\n<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_tag_tokens_are_optional_single_tokens(tmp_path):
    texts = ["<search> Alice </search> <answer> Rome </answer>"] * 10
    with_tags = AutoTokenizer.from_pretrained(train_tokenizer(texts, tmp_path / "a", vocab_size=300))
    without = AutoTokenizer.from_pretrained(
        train_tokenizer(texts, tmp_path / "b", vocab_size=300, tag_tokens=False)
    )
    assert with_tags.tokenize("<search>") == ["<search>"]
    assert len(without.tokenize("<search>")) > 1
    # Either way, decoding gives the text back.
    for tok in (with_tags, without):
        assert tok.decode(tok("<answer> Rome </answer>")["input_ids"]) == "<answer> Rome </answer>"


def test_whole_words_become_single_tokens_with_or_without_a_space(tmp_path):
    texts = ["Kanim Zisai was born in Tawoton. Kanim moved away."] * 10
    plain = AutoTokenizer.from_pretrained(train_tokenizer(texts, tmp_path / "a", vocab_size=270))
    words = AutoTokenizer.from_pretrained(
        train_tokenizer(texts, tmp_path / "b", vocab_size=270, whole_words=["Kanim", "Zisai", "Tawoton"])
    )
    assert len(plain.tokenize(" Tawoton")) > 1
    assert words.tokenize("Kanim Zisai was born in Tawoton.")[:2] == ["Kanim", "ĠZisai"]
    assert words.tokenize(" Tawoton") == ["ĠTawoton"]
    # Other text still goes through the merges, unknown words included, and decodes back.
    assert len(words.tokenize(" Tawotonx")) > 1
    text = "Kanim Zisai moved to Tawotonx."
    assert words.decode(words(text)["input_ids"]) == text
    assert len(words) == len(plain) + 6
