"""Checkpoints of a recording: the partial sums and the position reached, written atomically.

A checkpoint is an ordinary artefact (``tensors.safetensors`` + ``meta.json`` with a SHA-256 of the
tensors, see :mod:`langneurons.sets.artefacts`) in ``<directory>/rank-<r>/step-<n>/``, where ``n`` is the
number of batches its sums hold; the tensor ``done_batches`` lists their indices in the run's batch
schedule. Progress is thus kept per batch index, not per rank: a run resumes with any number of ranks
(every rank continues the checkpoint of its own ``rank-<r>`` folder, rank 0 also takes over the folders of
ranks the new run does not have; only the batches no checkpoint holds are run). Each one is written into a
staging directory and renamed into place, so a process killed at any moment leaves either the previous
checkpoint or the new one, never a torn one; the two newest are kept. Loading verifies the checksum,
that the tensors agree with the recorded position and that the run (model, corpus files, window
length, batch size, sharding, reduction) is the same, and reports any mismatch instead of
using it. Resuming restores the float64 sums exactly, so a resumed run equals an uninterrupted one (bit
for bit with the same number of ranks; to the order of the float64 additions with another).
"""

from __future__ import annotations

import json
import shutil
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from langneurons.recording import distributed
from langneurons.sets.artefacts import read_artefact, write_artefact
from langneurons.errors import LangNeuronsError

KIND = "record_checkpoint"
SCHEMA_VERSION = 1
#: fingerprint keys a resumed run may change (progress is per batch index)
RANK_KEYS = ("world_size", "rank")
DONE = "done_batches"
STEP_PREFIX = "step-"
KEEP = 2


@dataclass
class RecordPosition:
    """How far one rank got: the batch indices its sums hold, the next batch index it reached, windows and
    tokens; ``lineage`` names the sequence of checkpoints it continues, ``absorbed`` the ones it took over."""

    next_batch: int = 0
    windows_done: int = 0
    tokens_done: int = 0
    done: list[int] = field(default_factory=list)
    lineage: str = field(default_factory=lambda: uuid.uuid4().hex)
    absorbed: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {"next_batch": self.next_batch, "windows_done": self.windows_done, "tokens_done": self.tokens_done}


@dataclass
class Checkpoint:
    """A verified checkpoint: accumulator state (CPU tensors), position and the interval it was written at."""

    state: dict[str, torch.Tensor]
    position: RecordPosition
    every: int | None
    path: Path


def default_checkpoint_dir(out: str | Path) -> Path:
    """``OUT.checkpoint`` next to the output directory ``OUT``."""
    out = Path(out)
    return out.with_name(out.name + ".checkpoint")


def _normalised(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


class CheckpointStore:
    """The checkpoints of one rank of a recording under ``directory``."""

    def __init__(self, directory: str | Path, rank: int = 0) -> None:
        self.directory = Path(directory)
        self.root = self.directory / f"rank-{rank}"

    def _steps(self) -> list[tuple[int, Path]]:
        if not self.root.is_dir():
            return []
        steps = []
        for path in self.root.iterdir():
            if path.name.startswith(STEP_PREFIX) and path.is_dir():
                try:
                    steps.append((int(path.name[len(STEP_PREFIX):]), path))
                except ValueError:
                    continue
        return sorted(steps)

    def _remove_staging(self) -> None:
        """Staging directories left by a process killed while writing (never a valid checkpoint)."""
        if self.root.is_dir():
            for path in self.root.iterdir():
                if path.name.startswith(".") and path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)

    def exists(self) -> bool:
        """Any checkpoint of any rank under the directory."""
        return self.directory.is_dir() and any(
            rank.is_dir() and any(p.name.startswith(STEP_PREFIX) for p in rank.iterdir())
            for rank in self.directory.glob("rank-*"))

    def load(self, fingerprint: dict[str, Any]) -> Checkpoint | None:
        """The newest checkpoint of this rank, verified against ``fingerprint``; ``None`` if there is none."""
        self._remove_staging()
        steps = self._steps()
        if not steps:
            return None
        number, path = steps[-1]
        hint = f"; delete {str(path)!r} to resume from the checkpoint before it" if len(steps) > 1 else \
            f"; delete {str(self.directory)!r} to start over"
        try:
            tensors, meta = read_artefact(path, KIND, SCHEMA_VERSION)
        except LangNeuronsError as exc:
            raise LangNeuronsError(f"checkpoint {str(path)!r} cannot be used: {exc}{hint}") from None
        recorded, current = meta.get("run", {}), _normalised(fingerprint)
        counts = {key: int(value) for key, value in meta.get("position", {}).items()
                  if key in ("next_batch", "windows_done", "tokens_done")}
        if DONE in tensors:
            done = [int(i) for i in tensors.pop(DONE).tolist()]
            count = len(done)
        else:  # written before progress was kept per batch: rank r of W ran the batches g % W == r before next
            world, rank = int(recorded.get("world_size", 1)), int(recorded.get("rank", 0))
            done = [g for g in range(counts.get("next_batch", 0)) if g % world == rank]
            count = counts.get("next_batch", 0)
        position = RecordPosition(**counts, done=done, lineage=str(meta.get("lineage") or self.root.name),
                                  absorbed=[str(a) for a in meta.get("absorbed", [])])
        if count != number:
            raise LangNeuronsError(f"checkpoint {str(path)!r} is inconsistent: its meta.json says batch "
                                   f"{count}{hint}")
        tokens = int(tensors["token_count"].sum()) if "token_count" in tensors else -1
        if tokens != position.tokens_done:
            raise LangNeuronsError(f"checkpoint {str(path)!r} is inconsistent: {tokens} tokens in the tensors, "
                                   f"{position.tokens_done} in meta.json{hint}")
        for key in sorted(set(recorded) | set(current)):
            if key in RANK_KEYS:
                continue
            if recorded.get(key) != current.get(key):
                raise LangNeuronsError(
                    f"checkpoint {str(self.directory)!r} belongs to a different run ({key}: "
                    f"{_short(recorded.get(key))} there, {_short(current.get(key))} now); "
                    "use another --checkpoint-dir or delete it")
        return Checkpoint(tensors, position, meta.get("checkpoint_every"), path)

    def other_ranks(self, world_size: int) -> list["CheckpointStore"]:
        """The stores of ranks ``>= world_size`` an earlier, larger run left in the directory."""
        found = []
        if self.directory.is_dir():
            for path in sorted(self.directory.glob("rank-*")):
                try:
                    rank = int(path.name[len("rank-"):])
                except ValueError:
                    continue
                if rank >= world_size and path.is_dir():
                    found.append(CheckpointStore(self.directory, rank))
        return found

    def save(self, state: dict[str, torch.Tensor], position: RecordPosition, fingerprint: dict[str, Any],
             every: int | None) -> Path:
        """Write a checkpoint atomically, then drop all but the :data:`KEEP` newest."""
        path = self.root / f"{STEP_PREFIX}{len(position.done):012d}"
        if path.exists():  # the same position again (e.g. the final checkpoint): nothing new
            return path
        meta = {"position": position.counts(), "run": _normalised(fingerprint), "checkpoint_every": every,
                "lineage": position.lineage, "absorbed": position.absorbed}
        tensors = {**state, DONE: torch.tensor(sorted(position.done), dtype=torch.int64)}
        write_artefact(path, KIND, SCHEMA_VERSION, tensors, meta)
        for _, old in self._steps()[:-KEEP]:
            shutil.rmtree(old, ignore_errors=True)
        return path

    def clear(self) -> None:
        """Remove this rank's checkpoints (and the directory once no rank has any left)."""
        for _, path in self._steps():
            shutil.rmtree(path, ignore_errors=True)
        self._remove_staging()
        for directory in (self.root, self.directory):
            try:
                directory.rmdir()  # only when empty
            except OSError:
                pass


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Checkpointer:
    """Writes the accumulator (anything with ``state_dict()``) every ``every`` windows of this rank, and tracks
    the position reached (``after_batch`` is the recorder's hook)."""

    def __init__(self, store: CheckpointStore | None, every: int | None, fingerprint: dict[str, Any],
                 accumulator: Any, position: RecordPosition) -> None:
        self.store, self.every, self.fingerprint = store, every, fingerprint
        self.accumulator, self.position = accumulator, position
        self.since = 0

    def after_batch(self, batch: Any) -> None:
        windows = int(batch.input_ids.shape[0])
        self.position.next_batch = int(batch.index) + 1
        self.position.done.append(int(batch.index))
        self.position.windows_done += windows
        self.position.tokens_done += batch.info.num_tokens(*batch.input_ids.shape)
        self.since += windows
        if self.store is not None and self.every and self.since >= self.every:
            self.save()

    def save(self) -> None:
        if self.store is not None:
            self.store.save(self.accumulator.state_dict(), self.position, self.fingerprint, self.every)
            self.since = 0


def resume_position(store: CheckpointStore, context: Any, fingerprint: dict[str, Any], accumulator: Any,
                    every: int | None) -> tuple[RecordPosition, int | None, set[int]]:
    """Continue the checkpoints of a recording: each rank its own folder's (its sums loaded into ``accumulator``),
    rank 0 also those of ranks this run does not have (summed in, their folders then removed).

    Returns this rank's position, the checkpoint interval and the batch indices every checkpoint holds (skipped).
    """
    found = store.load(fingerprint)
    extras = [c for c in (other.load(fingerprint) for other in store.other_ranks(context.world_size))
              if c is not None] if context.is_main else []
    mine = [found] if found is not None else []
    shared = distributed.all_gather_objects(context, [(c.position.lineage, c.position.absorbed, c.position.done,
                                                       c.every) for c in mine + extras])
    entries = [entry for part in shared for entry in part]
    absorbed = {lineage for _, taken, _, _ in entries for lineage in taken}
    every = every or next((interval for *_, interval in entries if interval), None)
    done: set[int] = set()
    for lineage, _, batches, _ in entries:
        if lineage in absorbed:
            continue  # already summed into another checkpoint (its folder was not yet removed)
        overlap = done.intersection(batches)
        if overlap:
            raise LangNeuronsError(f"checkpoints in {str(store.directory)!r} hold batch {min(overlap)} twice; "
                                   "delete the folder to start over")
        done.update(batches)
    if not entries:
        if context.is_main:
            print(f"no checkpoint in {str(store.directory)!r}; starting from the beginning", file=sys.stderr)
        return RecordPosition(), every, done
    position = RecordPosition()
    if found is not None and found.position.lineage not in absorbed:
        accumulator.load_state_dict(found.state)
        position, every = found.position, every or found.every
    taken = [c for c in extras if c.position.lineage not in absorbed]
    if taken:  # rank 0 takes over the ranks the earlier, larger run had
        state = accumulator.state_dict()
        for extra in taken:
            state = {key: value + extra.state[key] for key, value in state.items()}
            position.done += extra.position.done
            position.windows_done += extra.position.windows_done
            position.tokens_done += extra.position.tokens_done
            position.absorbed.append(extra.position.lineage)
            every = every or extra.every
        accumulator.load_state_dict(state)
        store.save(accumulator.state_dict(), position, fingerprint, every)
        for other in store.other_ranks(context.world_size):
            other.clear()
    return position, every, done
