"""Read an offline W&B run (`run-<id>.wandb`) with W&B's own protobuf messages.

The file is W&B's transaction log: a 7-byte header (`:W&B`, a 2-byte magic, a version byte), then
LevelDB-log framing in 32 KiB blocks; each record carries a 4-byte CRC, a 2-byte length and a
1-byte type (full, first, middle, last), and its payload is a serialized `wandb_internal_pb2.Record`.
wandb >= 0.18 writes and reads it in Go, so the framing is decoded here and the payload by W&B's
Python protobufs.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: str | Path) -> Iterator[pb.Record]:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    pos, parts = HEADER, b""
    while pos + HEADER <= len(data):
        space = BLOCK - pos % BLOCK
        if space < HEADER:
            pos += space
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if kind == 0:  # zero padding to the end of the block
            pos += space
            continue
        parts += data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind in (FULL, LAST):
            yield pb.Record.FromString(parts)
            parts = b""


class OfflineRun:
    """What an offline run logged: config, history rows, summary, artifacts, run metadata."""

    def __init__(self, run_dir: str | Path):
        (self.file,) = Path(run_dir).glob("run-*.wandb")
        self.config: dict = {}
        self.history: list[dict] = []
        self.summary: dict = {}
        self.artifacts: list[pb.ArtifactRecord] = []
        self.run: pb.RunRecord | None = None
        for r in records(self.file):
            kind = r.WhichOneof("record_type")
            if kind == "run":
                self.run = r.run
                self._update(self.config, r.run.config.update)
            elif kind == "config":
                self._update(self.config, r.config.update)
            elif kind == "history":
                self.history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item})
            elif kind == "summary":
                self._update(self.summary, r.summary.update)
            elif kind == "artifact":
                self.artifacts.append(r.artifact)

    @staticmethod
    def _update(target: dict, items) -> None:
        for i in items:
            target[i.key or "/".join(i.nested_key)] = json.loads(i.value_json)


def ended_stopped_with_its_model(run_dir: Path, epochs: int) -> None:
    """A run that a signal ended mid-run: `stopped` before its last epoch, its best model kept, and
    its W&B log saying so."""
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["epochs_run"] < epochs, summary
    assert (run_dir / "model.safetensors").exists()
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    assert OfflineRun(offline).summary["status"] == "stopped"
