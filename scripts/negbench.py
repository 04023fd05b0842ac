"""NegBench v2 (`make negbench`): every method on the shapes-world models, against its same-cfg
baseline, with related, unrelated and neutral negatives and 95% intervals.

    .venv-0.33.0/bin/python scripts/negbench.py                          # all families, the default prompt file
    .venv-0.33.0/bin/python scripts/negbench.py --family sd3 --methods vsf cfg --batch 16 --seeds 0 1 2

Writes out/negbench/results.md (a table per family and the verdict on each paper's claim),
results.csv and one picture sheet per family and method (baseline | method, same seeds). Metrics:
see shapes_world/negbench.py.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from _pack import ROOT, boot


def main(argv=None) -> int:
    boot()
    from negguide.shapes_world import judge as judge_module
    from negguide.shapes_world import models, negbench, sheets

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", nargs="+", choices=models.FAMILIES, default=list(models.FAMILIES))
    parser.add_argument("--methods", nargs="+", choices=list(negbench.METHODS), default=list(negbench.METHODS))
    parser.add_argument("--prompts", type=Path, default=negbench.DEFAULT_PROMPTS, help="prompt file (JSON, see the default)")
    parser.add_argument("--batch", type=int, default=32, help="images per prompt, negative and seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--weights", type=Path, default=None, help="a folder of shapes-world weights (default: the bundled ones)")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "negbench")
    parser.add_argument("--acceptance", action="store_true",
                        help="only the models' own acceptance figures (no negative, every coloured shape in every scene)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(1)  # tiny models: one thread is several times faster on a small CPU
    prompts = negbench.load_prompts(args.prompts)
    args.out.mkdir(parents=True, exist_ok=True)
    csv_path = args.out / f"results-{'-'.join(args.family)}.csv"
    csv_path.unlink(missing_ok=True)
    images = args.batch * len(args.seeds)
    acceptance = negbench.acceptance_table({family: negbench.acceptance(family, tuple(args.seeds), 8, args.weights)
                                            for family in args.family})
    print(acceptance, flush=True)
    if args.acceptance:
        (args.out / f"acceptance-{'-'.join(args.family)}.md").write_text(acceptance)
        return 0
    report = [f"# NegBench v2\n\nprompts: {args.prompts.name}, {len(prompts)} prompts x 3 negatives, "
              f"{images} images per prompt and negative (seeds {', '.join(map(str, args.seeds))})\n", acceptance]
    for family in args.family:
        print(f"[negbench] {family}: {len(args.methods)} methods, {len(prompts)} prompts, {images} images each", flush=True)
        cells = negbench.run(family, tuple(args.methods), prompts, tuple(args.seeds), args.batch, args.weights,
                             progress=lambda line: print(f"[negbench] {line}", flush=True))
        table = negbench.markdown_table(family, cells, negbench.SETTINGS[family], images)
        check = negbench.judge_agreement(judge_module.load(args.weights / models.JUDGE_FILE if args.weights else None),
                                          negbench.generated_images(cells))
        table += (f"\nJudge vs the rule-based labeller on {check['images']} generated images: scene {check['scene']:.3f}, "
                  f"per concept min {check['min']:.3f} ({', '.join(f'{c} {a:.2f}' for c, a in check['concepts'].items())})\n")
        print(table, flush=True)
        report.append(table)
        negbench.write_csv(csv_path, family, cells)
        for cell in cells:
            sheets.comparison_sheet(cell, args.out / f"sheet_{family}_{cell.method}_{cell.kind}.png")
    report_path = args.out / f"results-{'-'.join(args.family)}.md"
    report_path.write_text("\n".join(report))
    print(f"[negbench] wrote {report_path}, {csv_path.name} and the picture sheets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
