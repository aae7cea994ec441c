"""A multi-process trial for the local runner's tests: rendezvous and one all-reduce with gloo.

    python ddp_stub_trial.py [--crash-rank R] [--x VALUE]

Each process checks the environment an Indexed Job's pod gets (NNODES, NODE_RANK, NPROC_PER_NODE,
WORLD_SIZE, RANK, MASTER_ADDR, MASTER_PORT), joins the group with a plain
``init_process_group("env://")``, and all-reduces its rank + 1. Rank 0 alone reports the result,
which carries the sum (so the test sees that every rank took part). With ``--crash-rank R``, rank
R fails after the rendezvous while the others wait in a second all-reduce.
"""

from __future__ import annotations

import argparse
import os
import sys

import kubenas_trial
import torch
import torch.distributed as dist


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--crash-rank", type=int, default=-1)
    parser.add_argument("--x", type=float, default=0.5)
    args = parser.parse_args()
    env = os.environ
    nnodes, node_rank = int(env["NNODES"]), int(env["NODE_RANK"])
    if env["NPROC_PER_NODE"] != "1" or env["RANK"] != env["NODE_RANK"] or int(env["WORLD_SIZE"]) != nnodes:
        print(f"unexpected environment: {dict(env)}", file=sys.stderr)
        return 5
    dist.init_process_group("gloo", init_method="env://")
    rank, world = dist.get_rank(), dist.get_world_size()
    assert (rank, world) == (node_rank, nnodes), (rank, world)
    total = torch.tensor([float(rank + 1)])
    dist.all_reduce(total)
    print(f"rank {rank}/{world} at {env['MASTER_ADDR']}:{env['MASTER_PORT']}: sum {total.item()}", flush=True)
    if rank == args.crash_rank:
        raise RuntimeError(f"rank {rank} crashed on purpose")
    dist.all_reduce(torch.ones(1))  # the others wait here for a rank that crashed
    if rank == 0:
        kubenas_trial.finish(accuracy=args.x, ranks_sum=total.item(), world_size=float(world))
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
