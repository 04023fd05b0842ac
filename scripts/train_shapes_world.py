"""Train the shapes-world models into shapes_world/weights/ (or --out), deterministically.

    .venv-0.33.0/bin/python scripts/train_shapes_world.py                 # everything (see shapes_world/weights/training.json for times)
    .venv-0.33.0/bin/python scripts/train_shapes_world.py --stages sd3    # one stage (needs the earlier stages' files in --out)
    .venv-0.33.0/bin/python scripts/train_shapes_world.py --scale 0.01 --out /tmp/sw   # a quick smoke run
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from _pack import boot


def main(argv=None) -> int:
    boot()
    from negguide.shapes_world import models, train

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=models.WEIGHTS_DIR)
    parser.add_argument("--stages", nargs="+", choices=train.STAGES, default=list(train.STAGES))
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every step/dataset budget")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (weights are reproducible per thread count)")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", force=True)
    train.run(args.out, tuple(args.stages), train.Budget().scaled(args.scale))
    return 0


if __name__ == "__main__":
    sys.exit(main())
