"""``actlab``: list, run and sweep the paper notebooks, and build the book."""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
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
    from .runner import notebook_path, notebook_parameters, parse_value, sweep_grid
    from .errors import UnknownParameterError

    grid: dict[str, list[object]] = {}
    for pair in args.param or []:
        key, sep, values = pair.partition("=")
        if not sep:
            raise UnknownParameterError(f"sweep parameter '{pair}' is not KEY=V1,V2,...")
        grid[key.strip()] = [parse_value(v.strip()) for v in values.split(",")]
    known = notebook_parameters(notebook_path(args.slug))
    unknown = sorted(set(grid) - set(known))
    if unknown:
        raise UnknownParameterError(
            f"unknown parameter(s) {', '.join(unknown)} for {args.slug}; its parameters are {', '.join(known)}")
    points = sweep_grid(grid)
    base = Path(args.out or f"runs/{args.slug}-sweep")
    jobs = []
    for point in points:
        name = "-".join(f"{k}={v}" for k, v in point.items()) or "base"
        jobs.append((args.slug, args.profile, args.model, point, str(base / name), False, False))
    print(f"sweep: {len(jobs)} runs of {args.slug} ({args.profile}) with {args.jobs} process(es)")
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(_run_one, *zip(*jobs)))
    failed = 0
    for result in results:
        if result["error"]:
            failed += 1
            print(f"{result['params']}: FAILED {result['error']}")
            continue
        verdicts = {c["id"]: c["verdict"] for c in json.loads(Path(result["claims_path"]).read_text())["claims"]}
        print(f"{result['params']}: " + ", ".join(f"{k} {v}" for k, v in verdicts.items()))
    return 1 if failed else 0


def _cmd_book(args: argparse.Namespace) -> int:
    from .book import build_book

    index = build_book(args.book_dir)
    print(f"book: {index}")
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

    sweep = sub.add_parser("sweep", help="run one notebook over a grid of parameters")
    sweep.add_argument("slug")
    sweep.add_argument("--profile", default="smoke", choices=["smoke", "default"])
    sweep.add_argument("--model", default=DEFAULT_MODEL)
    sweep.add_argument("-p", "--param", action="append", metavar="KEY=V1,V2", help="values to sweep")
    sweep.add_argument("--jobs", type=int, default=1, help="local processes (each uses all threads it is given)")
    sweep.add_argument("--out")
    sweep.set_defaults(func=_cmd_sweep)

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
