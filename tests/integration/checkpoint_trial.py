"""A trial that checkpoints every epoch to ``KUBENAS_CHECKPOINT_DIR`` and resumes from it (no torch).

    python checkpoint_trial.py [--epochs N] [--sleep S] [--grace S]

What the trial contract asks of any training script: at start, continue after the last epoch
saved; report the steps that follow; save after each epoch. Its final result says which epoch
this process started from (``start_epoch``). On SIGTERM it takes ``--grace`` seconds to stop, as
a trainer finishing a save in its pod's grace period does.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

import kubenas_trial


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--sleep", type=float, default=0.4)
    parser.add_argument("--grace", type=float, default=0.0)
    args = parser.parse_args()

    def stop(signum: int, _: object) -> None:
        time.sleep(args.grace)
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    params = kubenas_trial.parameters()
    final = float(params.get("width", 50)) / 100
    directory = os.environ.get("KUBENAS_CHECKPOINT_DIR")
    state = Path(directory, "state.json") if directory else None
    done = json.loads(state.read_text())["epoch"] if state is not None and state.exists() else 0
    for epoch in range(done + 1, args.epochs + 1):
        time.sleep(args.sleep)
        kubenas_trial.report(epoch, accuracy=final * epoch / args.epochs)
        if state is not None:
            state.parent.mkdir(parents=True, exist_ok=True)
            partial = state.with_suffix(".tmp")
            partial.write_text(json.dumps({"epoch": epoch}))
            os.replace(partial, state)  # a kill mid-save leaves the previous checkpoint whole
    kubenas_trial.finish(accuracy=final, start_epoch=done + 1)


if __name__ == "__main__":
    main()
