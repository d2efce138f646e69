"""configs/profile/gpu.yaml's worker settings on a CUDA rank (gpu_profile_scenarios.py): optimizer offload keeps
AdamW's state in CPU memory between updates without changing a number, and survives a checkpoint round trip;
bf16 compute with fp32 reduction, gradient checkpointing, padding-free forwards and flash-attention (where
installed) take the fp32 step within bf16's rounding. The CPU-side logic is tested in test_fsdp_workers.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytestmark = [
    pytest.mark.slow,
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

SCRIPT = Path(__file__).with_name("gpu_profile_scenarios.py")


@pytest.fixture(scope="module")
def on_gpu(scenario_runner, tiny_model_dir, tmp_path_factory):
    return scenario_runner(
        1, Path(tiny_model_dir), tmp_path_factory.mktemp("gpu-profile"), script=SCRIPT, cuda=True
    )


def test_optimizer_offload_moves_the_state_out_and_changes_no_number(on_gpu):
    fp32, offload = on_gpu["fp32"], on_gpu["offload"]
    assert fp32["state_devices"] == ["cuda"] and offload["state_devices"] == ["cpu"]
    assert offload["allocated_after_update"] < fp32["allocated_after_update"]
    for key in ("actor/pg_loss", "actor/grad_norm"):
        assert offload["metrics"][key] == pytest.approx(fp32["metrics"][key], rel=1e-6, abs=1e-7)
    for name, weight in fp32["weights"].items():
        torch.testing.assert_close(offload["weights"][name], weight, atol=1e-7, rtol=0, msg=name)


def test_optimizer_offload_resumes_exactly(on_gpu):
    offload = on_gpu["offload"]
    assert offload["resumed_state_devices"] == ["cpu"]
    for key, value in offload["second"].items():
        if not key.startswith("timing"):
            assert offload["resumed_second"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_the_profile_takes_the_fp32_step_within_bf16_rounding(on_gpu):
    fp32, profile = on_gpu["fp32"], on_gpu["profile"]
    assert profile["state_devices"] == ["cpu"]
    assert profile["metrics"]["actor/pg_loss"] == pytest.approx(fp32["metrics"]["actor/pg_loss"], abs=2e-2)
    assert profile["metrics"]["actor/grad_norm"] == pytest.approx(
        fp32["metrics"]["actor/grad_norm"], rel=5e-2
    )
    for name, weight in fp32["weights"].items():
        assert profile["weights"][name].dtype == torch.float32  # fp32 master weights
        torch.testing.assert_close(profile["weights"][name], weight, atol=5e-3, rtol=0, msg=name)
