"""A tiny trial for the local runner's tests: the trial contract through the real SDK, no torch.

    python stub_trial.py [--mode ok|crash|hang|no-objective|latency|garbage|hostile-output|surrogate-result]
                         [--epochs N] [--sleep S] [--x VALUE] [--announce-final-step] [--linger S]
                         [--hold-dir DIR] [--ignore-sigterm] [--model-from DIR]

Its accuracy is a smooth function of the parameters ``x`` (float) and ``layers`` (int),
so a search has something to find; each epoch reports a fraction of it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import kubenas_trial


def accuracy(params: dict) -> float:
    x = float(params.get("x", 0.5))
    layers = int(params.get("layers", 1))
    return round(0.95 - (x - 0.3) ** 2 - 0.01 * abs(layers - 2), 6)


def leave_hostile_output(output: Path) -> None:
    """What a careless or hostile trial may leave for the runner to copy: link loops, links out, a FIFO."""
    os.symlink("loop-b", output / "loop-a")
    os.symlink("loop-a", output / "loop-b")
    os.symlink("/", output / "root")
    os.symlink("../../..", output / "up")
    os.mkfifo(output / "pipe")
    (output / "model.pt").write_bytes(b"weights")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", default="ok")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--sleep", type=float, default=0.05)
    parser.add_argument("--x", default=None, help="echo of ${parameters.x}, checked against the env")
    parser.add_argument(
        "--hold-dir",
        default=None,
        help="wait while DIR/<pid> or DIR/<trial name> exists (a test's way to keep a trial alive)",
    )
    parser.add_argument(
        "--ignore-sigterm", action="store_true", help="carry on when asked to stop (e.g. to finish the epoch)"
    )
    parser.add_argument("--announce-final-step", action="store_true", help="kubenas_trial.final_step(epochs)")
    parser.add_argument("--linger", type=float, default=0.0, help="seconds between the last report and the result")
    parser.add_argument("--model-from", default=None, help="copy this trained trial's artifacts to the output dir")
    args = parser.parse_args()
    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    params = kubenas_trial.parameters()
    if args.x is not None and float(args.x) != float(params["x"]):
        print(f"--x {args.x} disagrees with KUBENAS_PARAMETERS {params}", file=sys.stderr)
        return 4
    mode = params.get("mode", args.mode)
    final = accuracy(params) + (0.01 if mode == "hostile-output" else 0)  # the best: its output is exported
    print(f"trial {os.environ.get('KUBENAS_TRIAL')} params={params} threads={os.environ.get('OMP_NUM_THREADS')}")

    def hold() -> None:
        names = (str(os.getpid()), os.environ.get("KUBENAS_TRIAL", "-"))
        while args.hold_dir and any(Path(args.hold_dir, name).exists() for name in names):
            time.sleep(0.05)

    if args.announce_final_step:
        kubenas_trial.final_step(args.epochs)
    kubenas_trial.report(0, params=1000 * int(params.get("layers", 1)))  # known before training
    for epoch in range(1, args.epochs + 1):
        kubenas_trial.report(epoch, accuracy=final * epoch / args.epochs)
        time.sleep(args.sleep)
        hold()
        if mode == "crash" and epoch == 1:
            raise RuntimeError("boom: the stub trial crashed on purpose")
    if mode == "hang":
        time.sleep(3600)
    time.sleep(args.linger)  # a real trainer's test evaluation, latency measurement, export
    hold()
    output = os.environ.get("KUBENAS_OUTPUT_DIR")
    if output:
        Path(output, "architecture.json").write_text('{"stub": true}')
    if output and args.model_from:
        shutil.copytree(args.model_from, output, dirs_exist_ok=True)
    if output and mode == "hostile-output":
        leave_hostile_output(Path(output))
    if mode == "garbage":
        Path(os.environ["KUBENAS_TERMINATION_LOG"]).write_text("this is not JSON")
        return 0
    if mode == "surrogate-result":
        Path(os.environ["KUBENAS_TERMINATION_LOG"]).write_text('{"\\ud800": 2, "accuracy": 0.5}')
        return 0
    if mode == "no-objective":
        kubenas_trial.finish(loss=0.5)
        return 0
    if mode == "latency":  # odd layers: a latency measurement disturbed by neighbours, flagged noisy
        layers = int(params.get("layers", 1))
        kubenas_trial.finish(accuracy=final, latency_ms=float(layers), latency_noisy=layers % 2)
        return 0
    kubenas_trial.finish(accuracy=final, params=1000 * int(params.get("layers", 1)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
