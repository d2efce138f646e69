"""Loading DCP checkpoints without pickle: real checkpoints load, crafted ones are refused before any code runs."""

import pickle
from dataclasses import dataclass

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

from verl.utils import safe_dcp


def _model_and_optimizer():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.8, 0.9))
    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    return model, optimizer


def test_a_real_checkpoint_loads_exactly(tmp_path):
    model, optimizer = _model_and_optimizer()
    saved = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
    dcp.save(saved, checkpoint_id=str(tmp_path))

    fresh = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=5.0)
    fresh(torch.randn(5, 4)).sum().backward()
    fresh_opt.step()
    target = {"model": fresh.state_dict(), "optimizer": fresh_opt.state_dict()}
    safe_dcp.load(target, tmp_path)

    for name, weight in saved["model"].items():
        torch.testing.assert_close(target["model"][name], weight, atol=0, rtol=0)
    assert target["optimizer"]["param_groups"][0]["lr"] == 1e-3
    assert tuple(target["optimizer"]["param_groups"][0]["betas"]) == (0.8, 0.9)
    torch.testing.assert_close(
        target["optimizer"]["state"][0]["exp_avg"], saved["optimizer"]["state"][0]["exp_avg"], atol=0, rtol=0
    )


class _OpensAFile:
    """Unpickling this creates a file: a stand-in for any code a crafted checkpoint could run."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_a_crafted_index_is_refused_before_it_runs(tmp_path):
    model, _ = _model_and_optimizer()
    dcp.save({"model": model.state_dict()}, checkpoint_id=str(tmp_path))
    marker = tmp_path / "pwned"
    (tmp_path / ".metadata").write_bytes(pickle.dumps(_OpensAFile(marker)))

    with pytest.raises(safe_dcp.UnsafeCheckpointError, match=r"io\.open"):
        safe_dcp.load({"model": model.state_dict()}, tmp_path)
    assert not marker.exists()
    with pytest.raises(CheckpointException):  # stock DCP unpickles it: the file appears, which is the danger
        dcp.load({"model": model.state_dict()}, checkpoint_id=str(tmp_path))
    assert marker.exists()


@dataclass
class _Custom:
    value: int


def test_a_non_tensor_entry_that_is_not_plain_data_is_refused(tmp_path):
    model, _ = _model_and_optimizer()
    dcp.save({"model": model.state_dict(), "extra": _Custom(3)}, checkpoint_id=str(tmp_path))
    with pytest.raises(safe_dcp.UnsafeCheckpointError, match="extra"):
        safe_dcp.load({"model": model.state_dict(), "extra": _Custom(0)}, tmp_path)
