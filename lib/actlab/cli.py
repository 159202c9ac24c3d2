"""``actlab``: list, run and sweep the paper notebooks, and build the book."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import ActlabError
from .models import DEFAULT_MODEL


def _cmd_list(args: argparse.Namespace) -> int:
    from .runner import list_notebooks, notebook_title

    for slug, path in list_notebooks().items():
        print(f"{slug:28s} {notebook_title(path)}")
    return 0


def _run_one(slug: str, profile: str, model: str, params: dict, out: str, in_place: bool, progress: bool) -> dict:
    from .runner import run

    result = run(slug, profile=profile, model=model, params=params, out_dir=out, in_place=in_place,
                 progress=progress)
    return {"slug": slug, "notebook": str(result.notebook), "error": result.error, "params": params,
            "claims_path": str(result.claims_path) if result.claims_path else None}


def _cmd_run(args: argparse.Namespace) -> int:
    from .runner import format_claims, parse_assignments

    params = parse_assignments(args.param or [])
    out = args.out or f"runs/{args.slug}"
    done = _run_one(args.slug, args.profile, args.model, params, out, args.in_place, not args.quiet)
    if done["error"]:
        print(f"error: {args.slug} failed: {done['error']} (executed notebook: {done['notebook']})",
              file=sys.stderr)
        return 1
    payload = json.loads(Path(done["claims_path"]).read_text())
    print(f"\n{args.slug} on {args.model} ({args.profile}), {payload['runtime_s']:.0f} s\n")
    print(format_claims(payload))
    print(f"\nnotebook: {done['notebook']}\nclaims:   {done['claims_path']}")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import CSV_NAME, SlurmOptions, parse_grid, summary_lines, sweep

    slurm = SlurmOptions(partition=args.partition, time_min=args.time, mem_gb=args.mem,
                         cpus_per_task=args.cpus_per_task, array_parallelism=args.array_parallelism)
    plan, table, figure = sweep(args.slug, parse_grid(args.param or []), profile=args.profile, model=args.model,
                                out_dir=args.out, executor=args.executor, jobs=args.jobs, slurm=slurm)
    print()
    print("\n".join(summary_lines(plan, table)))
    print(f"\ntable:  {plan.out_dir / CSV_NAME}\nfigure: {figure}")
    failed = table.loc[table["status"] == "failed", "point"].nunique()
    if failed:
        print(f"{failed} of {len(plan.tasks)} points failed; their errors are in the table", file=sys.stderr)
    return 1 if failed else 0


def _cmd_book(args: argparse.Namespace) -> int:
    from .book import build_book

    index = build_book(args.book_dir)
    print(f"book: {index}")
    return 0


def _cmd_artifacts(args: argparse.Namespace) -> int:
    from . import artifacts

    if args.action == "list":
        print(artifacts.format_cached(artifacts.cached()))
        return 0
    import time

    started = time.perf_counter()
    records = artifacts.build([args.model] if args.model else None, args.site, progress=not args.quiet)
    for record in records:
        core = record["core_metrics"]
        state = "from the cache" if record["cache_hit"] else "built"
        print(f"{record['model']} {record['site']}: {state}; explained variance "
              f"{core['reconstruction_quality']['explained_variance']:.3f}, CE loss score "
              f"{core['model_performance_preservation']['ce_loss_score']:.3f}, alive "
              f"{core['misc_metrics']['frac_alive']:.3f}, L0 {core['sparsity']['l0']:.1f}")
    print(f"{time.perf_counter() - started:.0f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="actlab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the paper notebooks").set_defaults(func=_cmd_list)

    run = sub.add_parser("run", help="execute one notebook and print its claims table")
    run.add_argument("slug")
    run.add_argument("--profile", default="smoke", choices=["smoke", "default"])
    run.add_argument("--model", default=DEFAULT_MODEL, help="smollm2-135m, gemma3-270m, a directory or a HF id")
    run.add_argument("-p", "--param", action="append", metavar="KEY=VALUE", help="override a notebook parameter")
    run.add_argument("--out", help="output directory (default runs/SLUG)")
    run.add_argument("--in-place", action="store_true", help="write the executed notebook over the source")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(func=_cmd_run)

    sweep = sub.add_parser("sweep", help="run one notebook over a grid of parameters and models",
                           description="Run one notebook over the Cartesian product of the -p values; write "
                                       "OUT/<point>/ per grid point, then OUT/sweep.csv and OUT/sweep.png.")
    sweep.add_argument("slug")
    sweep.add_argument("--profile", default="smoke", choices=["smoke", "default"])
    sweep.add_argument("--model", default=None,
                       help=f"one model for every point (default {DEFAULT_MODEL}); sweep models with -p model=A,B")
    sweep.add_argument("-p", "--param", action="append", metavar="KEY=V1,V2",
                       help="values to sweep (repeat for a grid); commas inside [] or quotes do not split")
    sweep.add_argument("--out", help="output directory (default runs/SLUG-sweep)")
    sweep.add_argument("--executor", default="local", choices=["local", "slurm", "submitit-local"],
                       help="local: a process pool; slurm: one job array through submitit; "
                            "submitit-local: the same submitit path on this machine, every point at once")
    sweep.add_argument("--jobs", type=int, default=1,
                       help="local: points at a time (each uses all threads it is given)")
    slurm = sweep.add_argument_group("slurm and submitit-local resources, per grid point")
    slurm.add_argument("--partition", help="Slurm partition (default: the cluster's)")
    slurm.add_argument("--time", type=int, default=120, metavar="MINUTES", help="time limit (default 120)")
    slurm.add_argument("--mem", type=int, default=16, metavar="GB", help="memory (default 16)")
    slurm.add_argument("--cpus-per-task", type=int, default=4,
                       help="CPUs, and the torch thread count on Slurm (default 4)")
    slurm.add_argument("--array-parallelism", type=int, default=None, metavar="N",
                       help="Slurm: at most N points at once (default: all)")
    sweep.set_defaults(func=_cmd_sweep)

    art = sub.add_parser("artifacts", help="build or list the shared artifacts (the standard SAEs)")
    art.add_argument("action", choices=["build", "list"])
    art.add_argument("--model", help="one model (default: every offline model)")
    art.add_argument("--site", help="one site (default: the middle layer's resid_post)")
    art.add_argument("--quiet", action="store_true", help="no progress bars")
    art.set_defaults(func=_cmd_artifacts)

    book = sub.add_parser("book", help="build the Jupyter Book from the committed notebooks")
    book.add_argument("--book-dir", default=None)
    book.set_defaults(func=_cmd_book)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ActlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
