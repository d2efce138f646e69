"""SFT trainer: loss masks from real parquet/jsonl files and the real tiny tokenizer, config errors, exact
accumulation (1 process vs 2 torchrun ranks, uneven micro-batches), and memorisation with an HF reload."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from verl.trainer.sft_data import SFTDataError, SFTDataset, SFTKeys, collate
from verl.trainer.sft_trainer import SFTConfig, run_sft
from zerosearch.utils.serving import find_free_port


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def _parquet(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _ids(tokenizer, text: str, special: bool = False) -> list[int]:
    return tokenizer(text, add_special_tokens=special)["input_ids"]


def test_loss_mask_covers_exactly_the_response_and_eos(tokenizer, tmp_path):
    messages = [{"role": "user", "content": "Where was Alice Smith born?"}]
    path = _parquet(tmp_path / "pairs.parquet", [{"prompt": messages, "response": "Doc 1: Paris."}])
    example = SFTDataset(path, tokenizer, max_length=128)[0]
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt, response = _ids(tokenizer, rendered), _ids(tokenizer, "Doc 1: Paris.")
    assert example.input_ids.tolist() == prompt + response + [tokenizer.eos_token_id]
    assert example.loss_mask.tolist() == [0] * len(prompt) + [1] * (len(response) + 1)
    assert example.num_loss_tokens == len(response) + 1


def test_untrained_segments_stay_in_context_without_loss(tokenizer, tmp_path):
    segments = [
        {"text": "<search> Alice Smith </search>", "train": True},
        {"text": "\n\n<information>Doc 1: Alice Smith was born in Paris.</information>\n\n", "train": False},
        {"text": "<answer> Paris </answer>", "train": True},
    ]
    row = {"prompt": "Question: Where was Alice Smith born?", "response_segments": segments}
    example = SFTDataset(_jsonl(tmp_path / "demo.jsonl", [row]), tokenizer, max_length=256)[0]
    # Each piece tokenized on its own, as the rollout builds a trajectory; a plain-string prompt is used as is.
    pieces = [_ids(tokenizer, row["prompt"], special=True)] + [_ids(tokenizer, s["text"]) for s in segments]
    assert example.input_ids.tolist() == sum(pieces, []) + [tokenizer.eos_token_id]
    expected = [0] * len(pieces[0])
    for piece, segment in zip(pieces[1:], segments, strict=True):
        expected += [int(segment["train"])] * len(piece)
    assert example.loss_mask.tolist() == expected + [1]


def test_text_rows_train_every_token_but_the_first(tokenizer, tmp_path):
    path = _jsonl(tmp_path / "pretrain.jsonl", [{"text": "Bob Jones lives in Rome."}])
    example = SFTDataset(path, tokenizer, max_length=64)[0]
    assert example.input_ids.tolist() == _ids(tokenizer, "Bob Jones lives in Rome.", True) + [
        tokenizer.eos_token_id
    ]
    assert example.loss_mask.tolist() == [0] + [1] * (len(example.input_ids) - 1)


def test_custom_column_names(tokenizer, tmp_path):
    row = {"query": [{"role": "user", "content": "hi"}], "docs": "Doc 1: x"}
    path = _parquet(tmp_path / "custom.parquet", [row])
    example = SFTDataset(path, tokenizer, 64, keys=SFTKeys(prompt="query", response="docs"))[0]
    assert example.num_loss_tokens == len(_ids(tokenizer, "Doc 1: x")) + 1


def test_overlong_rows_error_naming_the_row_or_truncate_and_count(tokenizer, tmp_path):
    rows = [
        {"prompt": "short", "response": "Rome"},
        {"prompt": "Alice Smith was born in Paris. " * 2, "response": "Paris " * 40},
        {"prompt": "Alice Smith was born in Paris. " * 20, "response": "Paris"},
    ]
    path = _parquet(tmp_path / "long.parquet", rows)
    with pytest.raises(SFTDataError, match=r"long\.parquet: row 1: .*data\.max_length=40"):
        SFTDataset(path, tokenizer, max_length=40)
    data = SFTDataset(path, tokenizer, max_length=40, truncation="right")
    # Row 2's prompt alone fills max_length: nothing is left to train, so it is dropped and counted.
    assert (data.stats.rows, data.stats.truncated, data.stats.dropped_no_loss) == (3, 2, 1)
    assert len(data) == 2 and all(len(e.input_ids) <= 40 for e in data)


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"prompt": [{"role": "user"}], "response": "x"}, r"prompt\[0\]"),
        ({"prompt": "q", "response": 3}, "response"),
        (
            {"prompt": "q", "response_segments": [{"text": "a", "train": "yes"}]},
            r"response_segments\[0\]\.train",
        ),
        ({"question": "q"}, "no field 'response'"),
    ],
)
def test_bad_rows_name_file_row_and_field(tokenizer, tmp_path, row, field):
    path = _jsonl(tmp_path / "bad.jsonl", [{"text": "fine"}, row])
    with pytest.raises(SFTDataError, match=rf"bad\.jsonl: row 1: .*{field}"):
        SFTDataset(path, tokenizer, max_length=64)


def test_collate_right_pads(tokenizer, tmp_path):
    data = SFTDataset(_jsonl(tmp_path / "t.jsonl", [{"text": "a"}, {"text": "Alice Smith"}]), tokenizer, 32)
    batch = collate([data[0], data[1]], pad_token_id=tokenizer.pad_token_id)
    short = len(data[0].input_ids)
    assert batch["attention_mask"][0].tolist() == [1] * short + [0] * (batch["input_ids"].shape[1] - short)
    assert batch["input_ids"][0, short:].eq(tokenizer.pad_token_id).all()
    assert batch["loss_mask"][0, short:].eq(0).all()


def _config(**sections) -> dict:
    config = {"model": {"path": "m"}, "data": {"train_files": "f.parquet"}}
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    return config


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"data": {"train_files": "f.parquet"}}, "model.path"),
        (_config(optim={"lr_scheduler": "linear"}), "optim.lr_scheduler"),
        (_config(optim={"lr": 0}), "optim.lr"),
        (_config(optim={"clip_grad": 0}), "optim.clip_grad"),
        (_config(optim={"total_training_steps": 5}), "trainer.total_training_steps"),
        (_config(data={"micro_batch_size_per_gpu": 0}), "data.micro_batch_size_per_gpu"),
        (_config(data={"truncation": "left"}), "data.truncation"),
        (_config(trainer={"total_training_steps": 0}), "trainer.total_training_steps"),
        (_config(trainer={"save_every": 5}), "trainer.save_every"),
        (_config(model={"fsdp_config": {"param_dtype": "int8"}}), "model.fsdp_config.param_dtype"),
    ],
)
def test_config_errors_name_the_key(config, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        SFTConfig.from_dict(config)


def test_batch_that_does_not_split_over_ranks_names_the_key():
    config = SFTConfig.from_dict(_config(data={"train_batch_size": 5}))
    config.check_world_size(1)
    with pytest.raises(ValueError, match=r"data\.train_batch_size: 5 is not divisible by the 2"):
        config.check_world_size(2)


# ---- training ------------------------------------------------------------------------------------------

PAIRS = [
    ("Where was Alice Smith born?", "Paris"),
    ("Where does Bob Jones live?", "Rome"),
    ("Who employs Alice Smith?", "Acme Corporation"),
    ("What does the user answer?", "Doc 1: Bob Jones"),
]


def _pairs_file(tmp_path: Path, pairs) -> Path:
    rows = [{"prompt": [{"role": "user", "content": q}], "response": a} for q, a in pairs]
    return _parquet(tmp_path / "pairs.parquet", rows)


def _greedy(model, tokenizer, question: str) -> str:
    messages = [{"role": "user", "content": question}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    prompt = torch.tensor([ids["input_ids"]])
    out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12, do_sample=False)
    return tokenizer.decode(out[0, prompt.shape[1] :], skip_special_tokens=True)


@pytest.fixture
def one_thread():
    """Tiny steps run fastest on one intra-op thread (and a second thread stalls them when cores are shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_memorises_pairs_and_the_saved_model_reloads_and_generates(tiny_model_dir, tmp_path, one_thread):
    ckpt, final = tmp_path / "ckpt", tmp_path / "final"
    config = {
        "model": {"path": str(tiny_model_dir)},
        "data": {"train_files": str(_pairs_file(tmp_path, PAIRS)), "train_batch_size": 4},
        "optim": {"lr": 5e-3, "lr_warmup_steps": 2, "lr_scheduler": "constant"},
        "trainer": {
            "total_training_steps": 40,
            "default_local_dir": str(ckpt),
            "output_dir": str(final),
            "save_freq": 20,
            "logger": ["jsonl"],
        },
    }
    assert run_sft(config) == final
    losses = [json.loads(line)["train/loss"] for line in (ckpt / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 40 and losses[-1] < 0.1 * losses[0]
    assert sorted(p.name for p in ckpt.glob("global_step_*")) == ["global_step_20", "global_step_40"]
    tokenizer = AutoTokenizer.from_pretrained(str(final))
    model = AutoModelForCausalLM.from_pretrained(str(final)).eval()
    for question, answer in PAIRS:
        assert _greedy(model, tokenizer, question) == answer


def _cli(
    nproc: int, model_dir: Path, train_file: Path, val_file: Path, out: Path, cuda: bool = False
) -> Path:
    """2 SFT steps through the Hydra CLI: a plain process, or torchrun with nproc gloo ranks; on the CPU
    unless cuda=True (then the GPU, over nccl)."""
    overrides = [
        f"model.path={model_dir}",
        f"data.train_files={train_file}",
        f"data.val_files=[{val_file}]",
        "data.train_batch_size=6",
        "data.micro_batch_size_per_gpu=4",  # 1 process: 4 + 2; 2 ranks: 3 each
        "data.shuffle=false",
        "optim.lr=1e-3",
        "optim.clip_grad=100.0",
        "trainer.total_training_steps=2",
        f"trainer.default_local_dir={out}",
        "trainer.logger=[jsonl]",
    ]
    launcher = [sys.executable]
    if nproc > 1:
        launcher += [
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={nproc}",
            f"--master_port={find_free_port()}",
        ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if not cuda:
        env["CUDA_VISIBLE_DEVICES"] = ""
    # An empty working folder, so the test also shows that Hydra writes nothing into the cwd.
    cwd = out.with_name(out.name + "-cwd")
    cwd.mkdir()
    proc = subprocess.run(
        [*launcher, "-m", "verl.trainer.sft_trainer", *overrides],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "SFT finished" in proc.stdout
    return out


@pytest.mark.slow
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_cli_on_cuda_takes_the_cpu_steps(tiny_model_dir, tmp_path):
    pairs = [(f"question {i}", " ".join(["Paris"] * (1 + 4 * i))) for i in range(6)]
    train_file = _pairs_file(tmp_path, pairs)
    val_file = _jsonl(tmp_path / "val.jsonl", [{"text": "Alice Smith " * (1 + i)} for i in range(9)])
    runs = [
        _cli(1, tiny_model_dir, train_file, val_file, tmp_path / name, cuda=name == "gpu")
        for name in ("cpu", "gpu")
    ]
    cpu, gpu = (
        [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()] for run in runs
    )
    for step_cpu, step_gpu in zip(cpu, gpu, strict=True):
        assert step_gpu["train/loss"] == pytest.approx(step_cpu["train/loss"], rel=1e-4)
        assert step_gpu["train/grad_norm"] == pytest.approx(step_cpu["train/grad_norm"], rel=1e-4)
    weights = [load_file(run / "global_step_2" / "huggingface" / "model.safetensors") for run in runs]
    # Adam divides each gradient element by its own scale, so where that element is near zero the kernels'
    # rounding moves the update by a visible part of the step: weights agree to 5% of one step (lr 1e-3).
    for key, value in weights[0].items():
        torch.testing.assert_close(weights[1][key], value, rtol=0, atol=5e-5)


@pytest.mark.slow
def test_two_ranks_equal_one_process_and_the_loss_is_the_global_token_mean(tiny_model_dir, tmp_path):
    # Responses of very different lengths: a per-micro-batch mean would weight tokens unevenly.
    pairs = [(f"question {i}", " ".join(["Paris"] * (1 + 4 * i))) for i in range(6)]
    train_file = _pairs_file(tmp_path, pairs)
    # 9 validation rows: with micro-batches of 4, rank 0 runs 2 forwards (5 rows) and rank 1 one (4 rows).
    val_file = _jsonl(tmp_path / "val.jsonl", [{"text": "Alice Smith " * (1 + i)} for i in range(9)])
    one = _cli(1, tiny_model_dir, train_file, val_file, tmp_path / "one")
    two = _cli(2, tiny_model_dir, train_file, val_file, tmp_path / "two")
    assert list((tmp_path / "one-cwd").iterdir()) == []
    metrics = [
        [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()] for run in (one, two)
    ]
    for step_one, step_two in zip(*metrics, strict=True):
        assert step_two["train/loss"] == pytest.approx(step_one["train/loss"], rel=1e-5)
        assert step_two["train/grad_norm"] == pytest.approx(step_one["train/grad_norm"], rel=1e-5)
    assert metrics[1][-1]["val/loss"] == pytest.approx(metrics[0][-1]["val/loss"], rel=1e-5)
    weights = [load_file(run / "global_step_2" / "huggingface" / "model.safetensors") for run in (one, two)]
    initial = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).state_dict()
    for key, value in weights[0].items():
        torch.testing.assert_close(weights[1][key], value, rtol=0, atol=1e-5)
    assert any((weights[0][k] - initial[k]).abs().max() > 1e-4 for k in weights[0])
    # Step 1's loss is the token mean over all 6 examples, computed here by a plain, unsharded model.
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    data = SFTDataset(train_file, tokenizer, max_length=1024)
    batch = collate(list(data), tokenizer.pad_token_id)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    nll = F.cross_entropy(logits[:, :-1].flatten(0, 1), batch["input_ids"][:, 1:].flatten(), reduction="none")
    mask = batch["loss_mask"][:, 1:].flatten()
    expected = float((nll * mask).sum() / mask.sum())
    assert metrics[0][0]["train/loss"] == pytest.approx(expected, rel=1e-5)


# ---- resume --------------------------------------------------------------------------------------------


def _resume_config(tiny_model_dir, data: Path, ckpt: Path, steps: int, **trainer) -> dict:
    return {
        "model": {"path": str(tiny_model_dir)},
        "data": {"train_files": str(data), "train_batch_size": 2, "micro_batch_size_per_gpu": 1},
        "optim": {"lr": 5e-3, "lr_scheduler": "constant"},
        "trainer": {"total_training_steps": steps, "default_local_dir": str(ckpt), "save_freq": 2,
                    "logger": ["jsonl"], **trainer},
    }  # fmt: skip


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(
    tiny_model_dir, tmp_path, one_thread, capsys
):
    """4 steps in one go, against 2 steps then the same run raised to 4: the second half resumes the
    optimizer's moments, the schedule, the data position (4 pairs, batches of 2: the epoch turns at step 2)
    and the RNG, so every weight is identical."""
    data = _pairs_file(tmp_path, PAIRS)
    whole = run_sft(_resume_config(tiny_model_dir, data, tmp_path / "whole", 4))
    run_sft(_resume_config(tiny_model_dir, data, tmp_path / "parts", 2))
    parts = run_sft(_resume_config(tiny_model_dir, data, tmp_path / "parts", 4))
    assert sorted(p.name for p in (tmp_path / "parts").glob("global_step_*")) == [
        "global_step_2",
        "global_step_4",
    ]
    state = json.loads((tmp_path / "parts" / "global_step_4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and state["fingerprint"]["model.path"] == str(tiny_model_dir)
    a, b = load_file(whole / "model.safetensors"), load_file(parts / "model.safetensors")
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=0, rtol=0, msg=name)
    # The finished run, rerun: nothing is trained, the final model is where it was.
    assert run_sft(_resume_config(tiny_model_dir, data, tmp_path / "parts", 4)) == parts
    assert "SFT already finished" in capsys.readouterr().err
    steps = [json.loads(x)["step"] for x in (tmp_path / "parts" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_a_folder_of_another_run_or_without_training_state_is_not_resumed(
    tiny_model_dir, tmp_path, one_thread
):
    from verl.utils.config import ConfigError

    data = _pairs_file(tmp_path, PAIRS)
    run_sft(_resume_config(tiny_model_dir, data, tmp_path / "ckpt", 2))
    other = _parquet(tmp_path / "other.parquet", [{"prompt": "q", "response": "a"}] * 4)
    with pytest.raises(
        ConfigError, match=r"data\.train_files: \[.*pairs\.parquet'\] -> \[.*other\.parquet'\]"
    ):
        run_sft(_resume_config(tiny_model_dir, other, tmp_path / "ckpt", 4))
    (tmp_path / "ckpt" / "global_step_2" / "trainer_state.json").unlink()  # a model-only checkpoint
    with pytest.raises(FileNotFoundError, match="holds no training state"):
        run_sft(_resume_config(tiny_model_dir, data, tmp_path / "ckpt", 4))
    fresh = run_sft(_resume_config(tiny_model_dir, data, tmp_path / "ckpt", 2, resume_mode="disable"))
    assert (fresh.parent / "trainer_state.json").is_file()


def test_param_offload_on_the_cpu_is_refused_naming_the_key(tiny_model_dir, tmp_path):
    config = _resume_config(tiny_model_dir, _pairs_file(tmp_path, PAIRS), tmp_path / "ckpt", 2)
    config["model"]["fsdp_config"] = {"param_offload": True}
    with pytest.raises(ValueError, match="fsdp_config.param_offload"):
        run_sft(config)
    import torch.distributed as dist

    assert not dist.is_initialized()  # the failed start left no process group behind


@pytest.mark.parametrize("name", ["qwen2.5-3b-instruct", "qwen2.5-7b-instruct", "qwen2.5-14b-instruct"])
def test_the_simulator_presets_compose_to_the_papers_settings(name):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from verl.trainer.sft_trainer import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose("sft_trainer", overrides=[f"simtune={name}", "data.train_files=train.parquet"])
    config = SFTConfig.from_dict(OmegaConf.to_container(cfg, resolve=True))
    assert (config.optim.lr, config.data.train_batch_size, config.trainer.total_training_steps) == (
        1e-6,
        2,
        1000,
    )
    assert config.model.dtype == "float32" and config.model.fsdp_config.param_dtype == "bfloat16"
    assert config.model.enable_gradient_checkpointing and config.model.path.lower().endswith(name)
    assert config.model.fsdp_config.param_offload == (name == "qwen2.5-14b-instruct")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_simulator_recipe_on_cuda_offloads_checkpoints_and_resumes(tiny_model_dir, tmp_path):
    """What the presets turn on for a multi-hour run: fp32 master weights computed in bfloat16, gradient
    checkpointing, parameter offload to CPU memory; 2 steps, then resumed to 4 with the same weights as 4 in one go
    (up to CUDA's rounding)."""

    def config(folder: str, steps: int) -> dict:
        base = _resume_config(tiny_model_dir, _pairs_file(tmp_path, PAIRS), tmp_path / folder, steps)
        base["model"].update(
            enable_gradient_checkpointing=True,
            fsdp_config={"param_dtype": "bfloat16", "reduce_dtype": "float32", "param_offload": True},
        )
        return base

    whole = run_sft(config("whole", 4))
    run_sft(config("parts", 2))
    parts = run_sft(config("parts", 4))
    a, b = load_file(whole / "model.safetensors"), load_file(parts / "model.safetensors")
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-4, rtol=0, msg=name)
