"""Run benchmark cases: ``python bench/run.py <case>[,<case>...|all] [options]`` (see --help).

Every case compares variants with a baseline on one "real width, reduced depth" model (see
bench/models.py) in this process and prints a markdown table; --json saves all reports.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python bench/run.py`: bench/ is on sys.path, the pack is not
    import _pack
else:  # imported as negguide.bench.run
    from . import _pack


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Time negative-guidance methods against plain sampling on real-width, "
        "reduced-depth ComfyUI models. Prints medians, ratios to the baseline and peak memory.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("case", nargs="?", help="case name, comma-separated names, or 'all' (see --list)")
    p.add_argument("--list", action="store_true", help="list the cases and architectures, then exit")
    p.add_argument("--show", type=Path, metavar="JSON", help="print the reports saved in JSON by --json, then exit")
    p.add_argument("--arch", default="flux",
                   help="flux | flux-schnell | sd3 (= sd35-large) | sd35-medium | sdxl; "
                        "comma-separated to run several in turn")
    p.add_argument("--resolution", type=int, default=1024,
                   help="square image size in pixels (latent = resolution/8; 1024 -> 4096 image tokens "
                        "for Flux/SD3). Use 256 or 512 on CPU")
    p.add_argument("--depth", default=None,
                   help="blocks to build, per arch: flux 'DOUBLE,SINGLE' (default 1,1; real 19,38), "
                        "sd3 'N' joint blocks (default 2; real 38 / 24), sdxl 'D,R' transformer depth at "
                        "1280 ch and res blocks per level (default 2,1; real 10,2)")
    p.add_argument("--text-tokens", type=int, default=None,
                   help="conditioning length (default: flux 512, flux-schnell 256, sd3 333, sdxl 77)")
    p.add_argument("--cfg", type=float, default=None,
                   help="CFG scale (default: flux 1.0 -> no uncond pass, sd3 4.5, sdxl 6.0 -> cond+uncond batch)")
    p.add_argument("--steps", type=int, default=4, help="sampling steps per run")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds (each runs every variant once)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds before timing")
    p.add_argument("--seed", type=int, default=0, help="noise seed and weight seed")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cpu boots ComfyUI with --cpu; cuda lets ComfyUI take the GPU")
    p.add_argument("--dtype", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                   help="weight dtype (auto: what ComfyUI picks for the device: fp32 on CPU)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on CPU (default: torch's)")
    p.add_argument("--quiet-wait", type=float, default=0.0, metavar="SECONDS",
                   help="CPU only: before each timed run, wait up to SECONDS (untimed) until other "
                        "processes leave this process's threads their cores free (they use less than "
                        "CPUs - threads + 0.25 cores); for shared machines")
    p.add_argument("--json", type=Path, default=None, help="save every report (JSON) to this path")
    p.add_argument("--quiet", action="store_true", help="no per-run log lines on stderr")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.show:
        return show(args.show)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("--device cuda: torch sees no CUDA device", file=sys.stderr)
            return 2
    _pack.boot(args.device)

    import torch
    import comfy.model_management as mm

    from negguide.bench import cases as cases_mod
    from negguide.bench import cases_dng, cases_negtome, cases_vsf  # noqa: F401  (register their cases)
    from negguide.bench import models, timing

    if args.list or not args.case:
        print("cases:")
        for c in cases_mod.CASES.values():
            print(f"  {c.name:20s} {c.help}")
        print("archs:")
        for name, spec in models.ARCHS.items():
            print(f"  {name:20s} {spec['about']} (default depth {spec['depth']}, real {spec['full_depth']})")
        return 0 if args.list else 2

    names = list(cases_mod.CASES) if args.case == "all" else args.case.split(",")
    unknown = [n for n in names if n not in cases_mod.CASES]
    if unknown:
        print(f"unknown case(s) {unknown}; known: {', '.join(cases_mod.CASES)}", file=sys.stderr)
        return 2
    archs = args.arch.split(",")
    unknown = [a for a in archs if a not in models.ARCHS]
    if unknown:
        print(f"unknown arch(s) {unknown}; known: {', '.join(models.ARCHS)}", file=sys.stderr)
        return 2
    if args.threads and args.device == "cpu":
        torch.set_num_threads(args.threads)

    def log(line: str) -> None:
        if not args.quiet:
            print(f"  {line}", file=sys.stderr, flush=True)

    reports = []

    def save() -> None:  # after every report, so a later failure keeps the earlier ones
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            payload = {"argv": sys.argv, "options": {k: str(v) for k, v in vars(args).items()},
                       "reports": [r.as_dict() for r in reports]}
            args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")

    for arch in archs:
        t0 = time.perf_counter()
        model = models.build(
            arch,
            resolution=args.resolution,
            depth=args.depth,
            dtype=args.dtype,
            text_tokens=args.text_tokens,
            cfg=args.cfg,
            seed=args.seed,
        )
        build_s = time.perf_counter() - t0
        log(f"built {arch} in {build_s:.1f} s: {model.info['blocks']}, {model.info['params'] / 1e6:.0f}M params")
        for name in names:
            ctx = cases_mod.CaseContext(model, args.steps, args.seed, vars(args))
            baseline, variants = cases_mod.CASES[name].build(ctx)
            info = model.info
            meta = {
                "title": f"{name} on {arch} at {args.resolution}px",
                "case": name,
                "arch": arch,
                "blocks": info["blocks"],
                "params_M": round(info["params"] / 1e6, 1),
                "dtype": info["weight_dtype"],
                "image_tokens": info["image_tokens"],
                "text_tokens": info["text_tokens"],
                "cfg": info["cfg"],
                "batch": info["batch_per_model_call"],
                "attn_calls_per_step": info["attention_calls_per_model_call"],
                "steps": args.steps,
                "sampler": f"{model.sampler_name}/{model.scheduler}",
                **({"threads": torch.get_num_threads()} if args.device == "cpu" else {}),
                "build_s": round(build_s, 1),
            }
            log(f"case {name} on {arch}")
            report = timing.compare(
                baseline, variants, repeats=args.repeats, warmup=args.warmup, steps=args.steps,
                device=mm.get_torch_device(), meta=meta, log=log, quiet_wait_s=args.quiet_wait,
                quiet_threshold_cores=max(0.25, (os.cpu_count() or 1) - torch.get_num_threads() + 0.25),
            )
            derive(report, info["attention_calls_per_model_call"])
            report.print()
            reports.append(report)
            save()
        del model, ctx, baseline, variants
        mm.unload_all_models()
        gc.collect()
        mm.soft_empty_cache()

    if args.json:
        print(f"saved {args.json}", file=sys.stderr)
    return 0


def show(path: Path) -> int:
    _pack.load_pack()  # no ComfyUI needed
    from negguide.bench.timing import Report

    payload = json.loads(path.read_text())
    for d in payload.get("reports", [payload]):
        Report.from_dict(d).print()
    return 0


def derive(report, attn_calls_per_step: int) -> None:
    """Note the per-step and per-attention-call cost of each variant over the baseline: what one
    extrapolates to a full-depth model, which has more attention calls, not costlier ones. Wall
    time, and CPU time (core-seconds; the steadier of the two on a shared CPU machine)."""
    base = report.variants[0]
    for v in report.variants[1:]:
        per_step = (v.median_s - base.median_s) / report.steps
        cpu_step = (v.cpu_median_s - base.cpu_median_s) / report.steps
        report.extra.setdefault("delta_vs_baseline", {})[v.name] = {
            "per_step_ms": per_step * 1e3,
            "per_attention_call_ms": per_step / attn_calls_per_step * 1e3,
            "cpu_per_step_ms": cpu_step * 1e3,
            "cpu_per_attention_call_ms": cpu_step / attn_calls_per_step * 1e3,
        }
        report.notes.append(
            f"{v.name} minus baseline ({attn_calls_per_step} attention calls per step): wall "
            f"{per_step * 1e3:+.1f} ms per step = {per_step / attn_calls_per_step * 1e3:+.2f} ms per call; "
            f"CPU {cpu_step * 1e3:+.1f} ms per step = {cpu_step / attn_calls_per_step * 1e3:+.2f} ms per call"
        )


if __name__ == "__main__":
    sys.exit(main())
