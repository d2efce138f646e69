"""Load torch.distributed.checkpoint (DCP) folders without running code hidden in them.

Why: a checkpoint is a file people hand to each other (``trainer.resume_mode=/shared/run/global_step_200``),
and stock DCP reads two parts of it with plain pickle: the ``.metadata`` index (``pickle.load``) and the
non-tensor state entries such as the optimizer's param groups (``torch.load(weights_only=False)``). A crafted
checkpoint could run any code on load. Here the index goes through an unpickler that builds only the
handful of DCP metadata types and the entries through ``torch.load(weights_only=True)``, which accepts
tensors and plain containers only. Anything else is refused with :class:`UnsafeCheckpointError`.

The tensor shards themselves are already read with ``weights_only=True`` by DCP.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import StorageMeta

# What a DCP index written by torch.distributed.checkpoint.save refers to (found by listing the globals of
# real .metadata files): the metadata dataclasses, torch.Size, dtypes (checked below), the layout decoder
# and the path type of the storage info.
_ALLOWED_GLOBALS = {
    ("torch.distributed.checkpoint.metadata", name)
    for name in (
        "Metadata",
        "MetadataIndex",
        "StorageMeta",
        "TensorStorageMetadata",
        "BytesStorageMetadata",
        "ChunkStorageMetadata",
        "TensorProperties",
        "_MEM_FORMAT_ENCODING",
    )
} | {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch.serialization", "_get_layout"),
    ("torch", "Size"),
    ("pathlib", "PosixPath"),
    ("pathlib", "PurePosixPath"),
    ("collections", "OrderedDict"),
}


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint file refers to something other than checkpoint data (it could run code on load)."""


class _MetadataUnpickler(pickle.Unpickler):
    def __init__(self, file, source: Path):
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise UnsafeCheckpointError(
            f"{self.source}: refers to {module}.{name}, which is not part of a checkpoint index; refusing to "
            "load it (a crafted checkpoint can run code this way). Use checkpoints written by this trainer."
        )


class SafeFileSystemReader(FileSystemReader):
    """FileSystemReader whose index is read by the restricted unpickler."""

    def read_metadata(self, *args: Any, **kwargs: Any):
        path = Path(self._get_metadata_path(kwargs.get("rank")))
        with self.fs.create_stream(path, "rb") as stream:
            metadata = _MetadataUnpickler(stream, path).load()
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class SafeLoadPlanner(DefaultLoadPlanner):
    """DefaultLoadPlanner that reads non-tensor entries with ``torch.load(weights_only=True)``."""

    def load_bytes(self, read_item, value: io.BytesIO) -> None:
        try:
            loaded = torch.load(value, weights_only=True)
        except pickle.UnpicklingError as e:
            raise UnsafeCheckpointError(
                f"checkpoint entry {read_item.dest_index.fqn!r} holds more than plain data; refusing it ({e})"
            ) from e
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], loaded)
        else:
            self.state_dict[read_item.dest_index.fqn] = loaded


def load(state_dict: dict[str, Any], folder: str | Path) -> None:
    """``dcp.load(state_dict, checkpoint_id=folder)`` in place, through the safe reader and planner.

    DCP turns errors into CheckpointException or AssertionError texts; a refusal is raised as itself (the
    index is checked up front for that)."""
    reader = SafeFileSystemReader(str(folder))
    reader.read_metadata()
    try:
        dcp.load(state_dict, storage_reader=reader, planner=SafeLoadPlanner())
    except CheckpointException as e:
        for exc, _trace in e.failures.values():
            if isinstance(exc, UnsafeCheckpointError):
                raise exc from None
        raise
