"""NegBench-mini (`make negbench`): every method on the shapes-world models, judged.

    .venv-0.33.0/bin/python scripts/negbench.py                          # all families, the default prompt file
    .venv-0.33.0/bin/python scripts/negbench.py --family sd3 --prompts my_prompts.json --batch 16

Writes out/negbench/results.md (tables), results.csv and one picture sheet per family
(rows = prompts, columns = methods). Metrics: see shapes_world/negbench.py.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from _pack import ROOT, boot


def main(argv=None) -> int:
    boot()
    from negguide.shapes_world import models, negbench

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", nargs="+", choices=models.FAMILIES, default=list(models.FAMILIES))
    parser.add_argument("--methods", nargs="+", choices=negbench.METHODS, default=list(negbench.METHODS))
    parser.add_argument("--prompts", type=Path, default=negbench.DEFAULT_PROMPTS, help="prompt file (JSON, see the default)")
    parser.add_argument("--batch", type=int, default=8, help="images per prompt and method")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", type=Path, default=None, help="a folder of shapes-world weights (default: the bundled ones)")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "negbench")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(1)  # tiny models: one thread is several times faster on a small CPU
    items = negbench.load_prompts(args.prompts)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.csv").unlink(missing_ok=True)
    report = [f"# NegBench-mini\n\nprompts: {args.prompts.name}, {len(items)} items, seed {args.seed}\n"]
    for family in args.family:
        print(f"[negbench] {family}: {len(args.methods)} methods x {len(items)} prompts, batch {args.batch}", flush=True)
        results, summaries = negbench.run(family, tuple(args.methods), items, args.seed, args.batch, args.weights)
        table = negbench.markdown_table(family, summaries, negbench.SETTINGS[family], args.batch)
        print(table, flush=True)
        report.append(table)
        negbench.write_csv(args.out / "results.csv", family, summaries)
        negbench.picture_sheet(results, args.out / f"sheet_{family}.png")
    (args.out / "results.md").write_text("\n".join(report))
    print(f"[negbench] wrote {args.out}/results.md, results.csv and the picture sheets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
