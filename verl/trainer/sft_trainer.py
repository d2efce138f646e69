"""Supervised fine-tuning on FSDP2, with the loss on response tokens only (see sft_data.py for the data).

Used for simulation tuning (query -> documents), warm starts of the policy, and pretraining a tiny base model
on plain text. Run it as one process or under torchrun (gloo on CPU, nccl on GPU):

    python -m verl.trainer.sft_trainer model.path=M data.train_files=F trainer.total_training_steps=100 \
        trainer.default_local_dir=ckpt trainer.output_dir=final_model
    torchrun --nproc_per_node 2 -m verl.trainer.sft_trainer ...

Exact gradient accumulation. One optimizer step consumes `data.train_batch_size` examples (all ranks
together); each rank takes every world_size-th of them and cuts its share into micro-batches of
`data.micro_batch_size_per_gpu` (the last may be smaller). The step's loss is the mean negative
log-likelihood over every training target of the *global* batch: each micro-batch contributes
sum(nll) / N, where N counts the targets of the whole global batch. Every rank knows N without
communication, because every rank holds the whole pre-tokenized dataset and draws the same seeded order.
FSDP2 averages gradients over ranks, so each rank scales its loss by world_size before backward. The result
is the gradient of one full-batch step on one process, whatever the micro-batch size or the world size.

Checkpoints: `trainer.default_local_dir/global_step_N/` written atomically (verl/utils/checkpoint.py) every
`save_freq` steps and at the end: `huggingface/` (model + tokenizer, loadable with transformers), and the
training state for an exact resume: `dist/` (model and optimizer shards, reshardable), `lr_scheduler.json`,
`rng_rank<r>.pt`, `trainer_state.json` (step, data position, and the run's fingerprint: model and training
files, so a folder never resumes another run). `trainer.resume_mode=auto` (the default) continues from the
latest one; `trainer.output_dir`, when set, receives a copy of the final model.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.tensor import DTensor

from verl.trainer.sft_config import SFT_DEPRECATED_KEYS, SFTConfig, require
from verl.trainer.sft_data import SFTDataset, collate
from verl.utils.checkpoint import (
    begin_checkpoint,
    cleanup_checkpoints,
    commit_checkpoint,
    find_latest_checkpoint,
    fingerprint_changes,
    remove_stale_staging,
    step_dir,
)
from verl.utils.config import ConfigError, check_overrides
from verl.utils.dataset import StatefulBatchLoader
from verl.utils.fsdp import (
    device_type,
    init_distributed,
    load_training_state,
    parse_dtype,
    save_huggingface,
    save_training_state,
    shard_model,
)
from verl.utils.hub import resolve_model
from verl.utils.optim import build_optimizer
from verl.utils.seed import load_rng_state, save_rng_state, set_seed
from verl.utils.tracking import Tracking

logger = logging.getLogger(__name__)

# The repository's configs folder. The package is installed editable (pip install -e .), so the folder is
# found next to the package rather than inside site-packages.
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def _all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    if dist.get_world_size() > 1:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


class SFTTrainer:
    """Loads the data and the sharded model, then `fit()` trains, validates, saves and returns the final
    model folder. Every rank runs the same code; only rank 0 logs and writes files."""

    def __init__(self, config: SFTConfig) -> None:
        self.config = config
        self._owns_process_group = not dist.is_initialized()
        self.rank, self.world_size = init_distributed()
        try:
            self._setup(config)
        except BaseException:
            self.close()  # a failed start leaves no process group behind
            raise

    def _setup(self, config: SFTConfig) -> None:
        data = config.data
        config.check_world_size(self.world_size)
        model_path = Path(resolve_model(config.model.path, "model.path"))
        set_seed(config.trainer.seed)
        on_gpu = device_type() == "cuda"
        self.device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else torch.device("cpu")
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(config.model.tokenizer_path or str(model_path))
        pad = self.tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else self.tokenizer.eos_token_id
        self.train_data = self._dataset(data.train_files)
        self.val_data = self._dataset(data.val_files) if data.val_files else None
        require(
            len(self.train_data) >= data.train_batch_size,
            "data.train_batch_size",
            f"{data.train_batch_size} is larger than the {len(self.train_data)} training examples",
        )
        self.loader = StatefulBatchLoader(
            range(len(self.train_data)),
            data.train_batch_size,
            shuffle=data.shuffle,
            seed=config.trainer.seed,
            drop_last=True,
            collate_fn=list,
        )
        trainer = config.trainer
        self.total_steps = trainer.total_training_steps or trainer.total_epochs * len(self.loader)
        self.model = self._load_model(model_path)
        self.optimizer, self.lr_scheduler = build_optimizer(
            self.model.parameters(), config.optim, self.total_steps
        )
        self.global_step = 0
        self.resumed_from: Path | None = None

    def _dataset(self, files: list[str]) -> SFTDataset:
        data = self.config.data
        return SFTDataset(
            files, self.tokenizer, data.max_length, data.truncation, data.keys, data.use_chat_template
        )

    def _load_model(self, path: Path) -> torch.nn.Module:
        from transformers import AutoModelForCausalLM

        model_config = self.config.model
        model = AutoModelForCausalLM.from_pretrained(
            str(path), dtype=parse_dtype(model_config.dtype, "model.dtype")
        )
        if model_config.enable_gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.to(self.device)
        fsdp = model_config.fsdp_config
        return shard_model(
            model,
            param_dtype=parse_dtype(fsdp.param_dtype) if fsdp.param_dtype else None,
            reduce_dtype=parse_dtype(fsdp.reduce_dtype) if fsdp.reduce_dtype else None,
            offload=fsdp.param_offload,
        )

    def _nll_sum(self, dataset: SFTDataset, indices: list[int]) -> tuple[torch.Tensor, int]:
        """(sum of the negative log-likelihood over the targets, number of real tokens) of one micro-batch."""
        batch = collate([dataset[i] for i in indices], self.pad_token_id)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        # The logit at position t predicts token t+1. Only positions predicting a trained token in some row
        # are projected onto the vocabulary: prompts and observations carry no loss, and their logits would
        # be most of the work. (One position is always kept so an all-masked micro-batch still backpropagates.)
        targets, mask = batch["input_ids"][:, 1:], batch["loss_mask"][:, 1:]
        keep = torch.nonzero(mask.any(0)).flatten()
        if keep.numel() == 0:
            keep = torch.zeros(1, dtype=torch.long, device=mask.device)
        logits = self.model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            use_cache=False,
            logits_to_keep=keep,
        ).logits
        nll = F.cross_entropy(logits.float().flatten(0, 1), targets[:, keep].flatten(), reduction="none")
        return (nll * mask[:, keep].flatten()).sum(), int(batch["attention_mask"].sum())

    def _micro_batches(self, indices: list[int], rank: int) -> list[list[int]]:
        """Rank `rank`'s share of `indices` (every world_size-th one), cut into micro-batches."""
        mine = indices[rank :: self.world_size]
        size = self.config.data.micro_batch_size_per_gpu
        return [mine[i : i + size] for i in range(0, len(mine), size)]

    def train_step(self, indices: list[int]) -> dict[str, float]:
        """One optimizer step on the global batch `indices` (the same list on every rank)."""
        self.model.train()
        global_targets = self.train_data.loss_tokens(indices)
        start = time.perf_counter()
        loss_sum, tokens = 0.0, 0
        self.optimizer.zero_grad(set_to_none=True)
        for micro in self._micro_batches(indices, self.rank):
            nll_sum, micro_tokens = self._nll_sum(self.train_data, micro)
            loss = nll_sum / global_targets
            (loss * self.world_size).backward()
            loss_sum += loss.item()
            tokens += micro_tokens
        params = [p for p in self.model.parameters() if p.requires_grad]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm=self.config.optim.clip_grad)
        if isinstance(grad_norm, DTensor):
            grad_norm = grad_norm.full_tensor()
        grad_norm = float(grad_norm)
        lr = self.lr_scheduler.get_last_lr()[0]
        skipped = not math.isfinite(grad_norm)
        if skipped:  # one bad batch must not poison the weights; the norm is global, so every rank agrees
            logger.warning(
                "step %d: gradient norm is %s; optimizer step skipped", self.global_step + 1, grad_norm
            )
            self.optimizer.zero_grad(set_to_none=True)
        else:
            self.optimizer.step()
        self.lr_scheduler.step()
        self.global_step += 1
        loss_total, token_total = _all_reduce_sum(
            torch.tensor([loss_sum, tokens], dtype=torch.float64)
        ).tolist()
        return {
            "train/loss": loss_total,
            "train/lr": lr,
            "train/grad_norm": grad_norm,
            "train/step_skipped": float(skipped),
            "train/tokens_per_s": token_total / max(time.perf_counter() - start, 1e-9),
        }

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Token-mean loss over every validation target (each rank scores every world_size-th example)."""
        if self.val_data is None:
            return {}
        self.model.eval()
        indices = list(range(len(self.val_data)))
        mine = self._micro_batches(indices, self.rank)
        # FSDP2 gathers weights collectively in every forward, so all ranks must run as many forwards as
        # rank 0 (which holds the most examples); a rank that ran out repeats example 0 and ignores it.
        rounds = len(self._micro_batches(indices, 0))
        nll_total, targets = 0.0, 0
        for round_index in range(rounds):
            if round_index < len(mine):
                nll_total += self._nll_sum(self.val_data, mine[round_index])[0].item()
                targets += self.val_data.loss_tokens(mine[round_index])
            else:
                self._nll_sum(self.val_data, [0])
        nll_total, targets = _all_reduce_sum(torch.tensor([nll_total, targets], dtype=torch.float64)).tolist()
        return {"val/loss": nll_total / max(targets, 1)}

    def fingerprint(self) -> dict[str, Any]:
        """What defines this run: a checkpoint made with other values is not resumed."""
        return {"model.path": self.config.model.path, "data.train_files": list(self.config.data.train_files)}

    def save(self) -> Path:
        """Write global_step_N (the model in Hugging Face format and the training state) atomically: every
        rank writes into one staging folder that rank 0 commits once all are done. Returns the model folder."""
        from transformers import AutoModelForCausalLM

        root = Path(self.config.trainer.default_local_dir)
        staging = [str(begin_checkpoint(root, self.global_step)) if self.rank == 0 else None]
        if self.world_size > 1:
            dist.broadcast_object_list(staging, src=0)
        folder = Path(staging[0])
        try:
            save_huggingface(
                self.model,
                AutoModelForCausalLM,
                self.config.model.dtype,
                self.tokenizer,
                folder / "huggingface",
            )
            save_training_state(folder, self.model, self.optimizer, self.lr_scheduler)
            save_rng_state(folder / f"rng_rank{self.rank}.pt")
            if self.rank == 0:
                state = {
                    "global_step": self.global_step,
                    "dataloader": self.loader.state_dict(),
                    "fingerprint": self.fingerprint(),
                }
                (folder / "trainer_state.json").write_text(json.dumps(state, indent=2))
            _barrier()
        except BaseException:
            if self.rank == 0:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        if self.rank == 0:
            commit_checkpoint(folder, root, self.global_step)
            cleanup_checkpoints(root, self.config.trainer.max_ckpt_to_keep)
        _barrier()
        return step_dir(root, self.global_step) / "huggingface"

    def resume_path(self) -> Path | None:
        """The checkpoint trainer.resume_mode names: auto = the latest in default_local_dir (or None), disable =
        None, else the given folder (a checkpoint, or a root whose latest checkpoint is used)."""
        mode, root = self.config.trainer.resume_mode, Path(self.config.trainer.default_local_dir)
        if mode == "disable":
            return None
        if mode == "auto":
            return find_latest_checkpoint(root)
        path = Path(mode)
        return path if (path / "trainer_state.json").is_file() else find_latest_checkpoint(path) or path

    def maybe_resume(self) -> None:
        """Restore weights, optimizer, schedule, data position, RNG and step from the resume checkpoint."""
        if self.rank == 0:
            remove_stale_staging(self.config.trainer.default_local_dir)
        _barrier()
        path = self.resume_path()
        if path is None:
            return
        state_file = path / "trainer_state.json"
        if not state_file.is_file():
            raise FileNotFoundError(
                f"{path} holds no training state (trainer_state.json), so it cannot be resumed: give this run "
                "its own trainer.default_local_dir, or trainer.resume_mode=disable to train from the start here"
            )
        state = json.loads(state_file.read_text())
        changes = fingerprint_changes(state.get("fingerprint", {}), self.fingerprint())
        if changes:
            raise ConfigError(
                f"{path} was saved by a run with other settings, so this run does not resume it:\n  "
                + "\n  ".join(changes)
                + "\nGive this run its own trainer.default_local_dir, or trainer.resume_mode=disable to train "
                "from the start in this folder."
            )
        load_training_state(path, self.model, self.optimizer, self.lr_scheduler)
        rng_file = path / f"rng_rank{self.rank}.pt"
        if rng_file.is_file():
            load_rng_state(rng_file)
        self.global_step = int(state["global_step"])
        self.loader.load_state_dict(state["dataloader"])
        self.resumed_from = path
        logger.info("resumed from %s at step %d", path, self.global_step)

    def _publish(self, folder: Path) -> Path:
        """Copy the final model to trainer.output_dir, replacing what is there only once the copy is done."""
        target = Path(self.config.trainer.output_dir)
        if self.rank == 0:
            staging = target.with_name(f"{target.name}.tmp-{os.getpid()}")
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(folder, staging)
            if target.exists():
                old = target.with_name(f"{target.name}.old-{os.getpid()}")
                os.replace(target, old)
                os.replace(staging, target)
                shutil.rmtree(old)
            else:
                os.replace(staging, target)
        _barrier()
        return target

    def fit(self) -> Path:
        """Train for total_steps steps; returns the folder holding the final model."""
        from tqdm import tqdm

        trainer = self.config.trainer
        tracking = None
        if self.rank == 0:
            tracking = Tracking(
                trainer.project_name,
                trainer.experiment_name,
                trainer.logger,
                trainer.default_local_dir,
                dataclasses.asdict(self.config),
            )
            logger.info("SFT: %d steps; train data %s", self.total_steps, self.train_data.stats)
        self.maybe_resume()
        final = None
        if self.resumed_from is not None and self.global_step >= self.total_steps:
            final = self.resumed_from / "huggingface"
            if self.rank == 0:
                print(
                    f"SFT already finished: {self.resumed_from} is step {self.global_step} of {self.total_steps}; "
                    "raise trainer.total_training_steps to train on",
                    file=sys.stderr,
                    flush=True,
                )
        try:
            with tqdm(
                total=self.total_steps,
                initial=min(self.global_step, self.total_steps),
                disable=self.rank != 0,
                desc="sft",
            ) as bar:
                while self.global_step < self.total_steps:
                    metrics = self.train_step(self.loader.next_batch())
                    last = self.global_step == self.total_steps
                    if last or (trainer.test_freq > 0 and self.global_step % trainer.test_freq == 0):
                        metrics.update(self.validate())
                    if last or (trainer.save_freq > 0 and self.global_step % trainer.save_freq == 0):
                        final = self.save()
                    if tracking is not None:
                        tracking.log(metrics, step=self.global_step)
                    bar.set_postfix(loss=f"{metrics['train/loss']:.4f}")
                    bar.update(1)
        finally:
            if tracking is not None:
                tracking.finish()
        if trainer.output_dir:
            final = self._publish(final)
        return final

    def close(self) -> None:
        """Leave the process group if this trainer created it (so a caller can build another one)."""
        if self._owns_process_group and dist.is_initialized():
            dist.destroy_process_group()


def _barrier() -> None:
    if dist.get_world_size() > 1:
        dist.barrier()


def run_sft(config: SFTConfig | dict[str, Any]) -> Path:
    """Validate `config`, train, and return the folder of the final model (trainer.output_dir if set)."""
    config = config if isinstance(config, SFTConfig) else SFTConfig.from_dict(config)
    trainer = SFTTrainer(config)
    try:
        return trainer.fit()
    finally:
        trainer.close()


def _hydra_main() -> None:
    import hydra
    from omegaconf import DictConfig, OmegaConf

    custom_path = any(arg.startswith(("--config-path", "-cp")) for arg in sys.argv[1:])
    if not custom_path and not (CONFIG_DIR / "sft_trainer.yaml").is_file():
        raise FileNotFoundError(
            f"{CONFIG_DIR / 'sft_trainer.yaml'} not found: run from a source checkout installed with "
            "pip install -e . (or pass --config-path)"
        )

    @hydra.main(config_path=str(CONFIG_DIR), config_name="sft_trainer", version_base=None)
    def main(cfg: DictConfig) -> None:
        final = run_sft(OmegaConf.to_container(cfg, resolve=True))
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"SFT finished: final model at {final}", flush=True)

    try:
        sys.argv[1:] = check_overrides(sys.argv[1:], str(CONFIG_DIR), "sft_trainer", SFT_DEPRECATED_KEYS)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    main()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _hydra_main()
