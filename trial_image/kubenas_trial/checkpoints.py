"""Resuming the built-in trainer: one checkpoint per trial, rewritten after every epoch, read at start.

The checkpoint lives in :func:`kubenas_trial.checkpoint_dir` (``KUBENAS_CHECKPOINT_DIR``), which
outlives the pod. Only rank 0 reads and writes it; the other ranks get its content from rank 0.
A checkpoint that cannot be read, is not ours, or was written for other parameters is ignored
with a warning: the trial then trains from the start, as it would have without one.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kubenas_trial import compress, distributed, sdk
from kubenas_trial.distributed import Topology
from kubenas_trial.train import Restart, SaveCallback, Trainer, TrainResult, make_optimizer

FORMAT = "kubenas-trainer-checkpoint/1"
FILE_NAME = "trainer.pt"
# Parameters that change where or how fast a trial runs, not what it learns: a checkpoint stays
# valid when they change (a preempted trial may come back on another node type).
RUNTIME_PARAMETERS = frozenset({
    "device", "num_threads", "compile", "eval_batch_size", "latency_repeats", "latency_warmup", "latency_threads",
    "dist_timeout",
})
_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "phase": str, "epoch": int, "model": dict, "optimizer": dict, "rng": list, "history": list, "extra": dict,
    "samples": int, "seconds": float,
}


def parameters_hash(config: dict[str, Any]) -> str:
    """A digest of the parameters that decide what the trainer learns (not :data:`RUNTIME_PARAMETERS`)."""
    relevant = {name: value for name, value in config.items() if name not in RUNTIME_PARAMETERS}
    text = json.dumps(relevant, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def warn(message: str) -> None:
    print(f"kubenas-trial: warning: {message}", file=sys.stderr, flush=True)


def load(directory: Path, digest: str, last_epoch: int) -> dict[str, Any] | None:
    """The checkpoint in ``directory`` when it is usable for a run with parameters ``digest``, else None.

    Usable: loads with ``weights_only=True``, has our format and every field, was written for
    the same parameters, and its epoch is within ``1..last_epoch``. Anything else is ignored
    with a warning, never raised.
    """
    file = directory / FILE_NAME
    if not file.is_file():
        return None
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file raises many types
        warn(f"ignoring checkpoint {file}: cannot load it ({type(exc).__name__}: {str(exc)[:200]}); "
             "training from the start")
        return None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        warn(f"ignoring checkpoint {file}: not a {FORMAT} checkpoint; training from the start")
        return None
    if state.get("parameters_hash") != digest:
        warn(f"ignoring checkpoint {file}: it was written for other parameters; training from the start")
        return None
    wrong = [name for name, kind in _REQUIRED.items() if not isinstance(state.get(name), kind)]
    if wrong or not 1 <= state["epoch"] <= last_epoch:
        what = f"missing or malformed {', '.join(wrong)}" if wrong else f"epoch {state['epoch']} out of range"
        warn(f"ignoring checkpoint {file}: {what}; training from the start")
        return None
    return state


def save(directory: Path, state: dict[str, Any], digest: str) -> Path | None:
    """Write ``state`` as the checkpoint in ``directory`` atomically (temporary file, fsync, rename).

    A reader, or a run restarted after a crash at any moment, sees the previous checkpoint or
    this one, never part of one. Returns the file, or None (with a warning) when it could not be
    written: checkpointing is an insurance, and its failure does not fail the trial.
    """
    file = directory / FILE_NAME
    tmp = directory / f".{FILE_NAME}.tmp"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as handle:
            torch.save({"format": FORMAT, "parameters_hash": digest, **state}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, file)
    except (OSError, RuntimeError) as exc:
        warn(f"cannot write checkpoint {file}: {exc}; the trial continues without it")
        return None
    return file


def _fits(model: nn.Module, state: dict[str, Any], config: dict[str, Any]) -> str | None:
    """Why ``state`` cannot be loaded into ``model`` and its optimizer, or None when it can."""
    mine = model.state_dict()
    theirs = state["model"]
    if set(mine) != set(theirs):
        return "its model has other layers"
    if any(not isinstance(theirs[k], torch.Tensor) or theirs[k].shape != v.shape for k, v in mine.items()):
        return "its model has other shapes"
    try:
        make_optimizer(model, config).load_state_dict(state["optimizer"])
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        return f"its optimizer state does not fit ({exc})"
    return None


class Resume:
    """The checkpoint of one run of the built-in trainer: what it resumes from, and saving after each epoch.

    Every rank builds one (collectively). Rank 0 reads ``KUBENAS_CHECKPOINT_DIR`` and sends what it
    found to the others, so ranks agree on whether and where to resume even when only rank 0
    can see the directory. Phases are ``train`` (epochs 1..epochs) and ``finetune`` (the epochs
    after pruning); the saved epoch is the last step reported.
    """

    def __init__(self, config: dict[str, Any], topo: Topology, last_epoch: int) -> None:
        self.config = config
        self.topo = topo
        self.digest = parameters_hash(config)
        self.directory = sdk.checkpoint_dir() if topo.is_main else None
        found = load(self.directory, self.digest, last_epoch) if self.directory is not None else None
        self.enabled, self.state = distributed.broadcast_object((self.directory is not None, found))
        self._adopt(self.state)

    def _adopt(self, state: dict[str, Any] | None) -> None:
        self.state = state
        self.history: list[dict[str, Any]] = list(state["history"]) if state else []
        self.extra: dict[str, float] = dict(state["extra"]) if state else {}
        self.result = TrainResult(samples=state["samples"], seconds=state["seconds"]) if state else TrainResult()

    @property
    def phase(self) -> str | None:
        """The phase the checkpoint was saved in, or None without one."""
        return self.state["phase"] if self.state else None

    @property
    def epoch(self) -> int:
        """The last epoch (step) the checkpoint covers; 0 without one."""
        return self.state["epoch"] if self.state else 0

    def restore_model(self, model: nn.Module) -> None:
        """Give ``model`` the checkpoint's weights (pruned first when it was saved while fine-tuning).

        A checkpoint that does not fit the model is dropped with a warning, before ``model`` is touched.
        """
        if self.state is None:
            return
        pruning = self.state["phase"] == "finetune"
        probe = copy.deepcopy(model) if pruning else model
        if pruning:
            compress.apply_pruning(probe, self.config["prune"], self.config["prune_amount"])
        problem = _fits(probe, self.state, self.config)
        if problem is not None:
            if self.topo.is_main:
                warn(f"ignoring checkpoint {self.directory / FILE_NAME if self.directory else ''}: {problem}; "
                     "training from the start")
            self._adopt(None)
            return
        if pruning:  # the same structure as the probe's: the pruning decisions come from the checkpoint's masks
            compress.apply_pruning(model, self.config["prune"], self.config["prune_amount"])
        model.load_state_dict(self.state["model"])

    def restore_rng(self, trainer: Trainer) -> None:
        """Continue the trainer's random streams where the checkpoint left them (with as many ranks as then)."""
        if self.state is not None and len(self.state["rng"]) == self.topo.world_size:
            trainer.set_rng_state(self.state["rng"][self.topo.rank])

    def restart(self, phase: str, first_epoch: int) -> Restart | None:
        """Where ``phase`` (whose first epoch is ``first_epoch``) continues, or None to run it from its start."""
        if self.state is None or self.state["phase"] != phase:
            return None
        return Restart(self.state["epoch"] - first_epoch + 1, self.state["optimizer"], self.state.get("scaler"))

    def saver(self, phase: str, trainer: Trainer) -> SaveCallback | None:
        """A ``Trainer.fit`` ``after_epoch`` that saves the run after every epoch of ``phase``; None when not wanted."""
        if not self.enabled:
            return None

        def save_epoch(epoch: int, optimizer: torch.optim.Optimizer, metrics: dict[str, float]) -> None:
            rng = distributed.gather_objects(trainer.rng_state())  # every rank's streams, for an exact resume
            if self.directory is None:
                return
            save(self.directory, {
                "phase": phase, "epoch": epoch, "model": trainer.model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": trainer.scaler.state_dict() if trainer.scaler is not None else None,
                "rng": rng, "history": [*self.history, {"epoch": epoch, **metrics}], "extra": self.extra,
                "samples": int(self.result.samples), "seconds": float(self.result.seconds),
                "world_size": self.topo.world_size,
            }, self.digest)

        return save_epoch
