"""Run one notebook over a grid of parameters and models, then collect one table and one figure.

A sweep has three steps, each usable on its own::

    plan = plan_sweep("repe-reasoning", {"seed": [0, 1], "model": ["smollm2-135m", "gemma3-270m"]})
    results = run_sweep(plan, executor="local")        # or "slurm", "submitit-local"
    table = collect(plan, results)                     # writes OUT/sweep.csv
    plot(plan, table)                                  # writes OUT/sweep.png

:func:`plan_sweep` checks every parameter name against the notebook's
parameters cell and every model name before anything runs. Each grid point
runs :func:`actlab.runner.run` into its own folder ``OUT/<point>/``. The
executors are a local process pool, or `submitit <https://github.com/facebookincubator/submitit>`_
submitting one Slurm job array; ``submitit-local`` runs that same submitit
path with submitit's local executor, so it can be tested without a cluster.

``sweep.csv`` is in long ("tidy") form: one row per (grid point, claim), with
the point's parameters as columns, so ``df.pivot(index="claim_id",
columns="point", values="verdict")`` or ``df.groupby(["model", "claim_id"])``
need no reshaping. A point that failed has a single row with an empty
``claim_id``, ``status`` ``failed`` and its ``error``.
"""

from __future__ import annotations

import concurrent.futures
import csv
import os
import re
import shutil
import textwrap
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Sequence

from .errors import ActlabError, UnknownParameterError

if TYPE_CHECKING:
    import pandas as pd

Executor = Literal["local", "slurm", "submitit-local"]
EXECUTORS: tuple[Executor, ...] = ("local", "slurm", "submitit-local")
CSV_NAME = "sweep.csv"
FIGURE_NAME = "sweep.png"
LOG_DIR = "logs"
#: Columns before and after the parameter columns of ``sweep.csv``; parameters sit in between.
LEADING_COLUMNS = ("point", "model", "profile")
CLAIM_COLUMNS = ("claim_id", "claim", "paper", "measured", "criterion", "verdict")
TRAILING_COLUMNS = ("status", "error", "runtime_s", "cpu_threads")
#: Columns that change from run to run even when the results do not.
RUNTIME_COLUMNS = ("runtime_s",)
# Environment a point needs to find notebooks, data and models; forwarded explicitly because a Slurm
# cluster may be configured not to export the submitting shell's environment to the job.
FORWARDED_ENV_PREFIXES = ("ACTLAB_", "HF_", "TRANSFORMERS_")


@dataclass(frozen=True)
class SlurmOptions:
    """Resources asked for each grid point (one task of the job array)."""

    partition: str | None = None
    time_min: int = 120
    mem_gb: int = 16
    cpus_per_task: int = 4
    array_parallelism: int | None = None  # None: as many at once as the scheduler allows


@dataclass(frozen=True)
class PointTask:
    """Everything one grid point needs, picklable so a pool worker or a Slurm job can run it."""

    slug: str
    profile: str
    model: str
    params: dict[str, object]
    name: str
    out_dir: str
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PointResult:
    """What came back from one grid point; ``error`` is one line, None when the notebook ran through."""

    name: str
    status: Literal["ok", "failed"]
    error: str | None
    runtime_s: float
    claims_path: str | None
    notebook: str | None
    cpu_threads: int | None = None


@dataclass(frozen=True)
class SweepPlan:
    """A validated sweep: the notebook, the grid and one task per grid point, in grid order."""

    slug: str
    profile: str
    grid: dict[str, list[object]]
    out_dir: Path
    tasks: list[PointTask]

    @property
    def parameter_columns(self) -> list[str]:
        """The swept keys other than ``model`` (which always has its own column), in grid order."""
        return [key for key in self.grid if key != "model"]


def split_values(text: str) -> list[str]:
    """``"1,[2,3],'a,b'"`` -> ``["1", "[2,3]", "'a,b'"]``: commas inside brackets or quotes do not split."""
    values: list[str] = []
    depth, quote, start = 0, "", 0
    for i, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            values.append(text[start:i].strip())
            start = i + 1
    values.append(text[start:].strip())
    return values


def parse_grid(pairs: Sequence[str]) -> dict[str, list[object]]:
    """``["seed=0,1", "model=smollm2-135m,gemma3-270m"]`` -> ``{"seed": [0, 1], "model": [...]}``."""
    from .runner import parse_value

    grid: dict[str, list[object]] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UnknownParameterError(f"sweep parameter '{pair}' is not KEY=V1,V2,...")
        if key in grid:
            raise UnknownParameterError(f"sweep parameter '{key}' is given twice; list its values once: {key}=V1,V2")
        values = split_values(text)
        if any(not value for value in values):
            raise UnknownParameterError(f"sweep parameter '{pair}' has an empty value; write {key}=V1,V2,...")
        # Model names are names, never literals: `-p model=gpt2` must not become anything but a string.
        grid[key] = values if key == "model" else [parse_value(value) for value in values]
    return grid


def point_name(point: dict[str, object]) -> str:
    """A folder name for one grid point, e.g. ``model=gemma3-270m,seed=1`` (``base`` for an empty grid)."""
    if not point:
        return "base"
    # Values can be paths or Hub ids (`owner/name`); keep the name one safe path component.
    return ",".join(f"{key}={re.sub(r'[^A-Za-z0-9._=+-]+', '_', str(value)).strip('_')}"
                    for key, value in point.items())


def forwarded_env() -> dict[str, str]:
    """The environment variables a point needs wherever it runs (notebooks, data, Hub cache, threads)."""
    return {key: value for key, value in os.environ.items() if key.startswith(FORWARDED_ENV_PREFIXES)}


def plan_sweep(
    slug: str,
    grid: dict[str, list[object]],
    profile: str = "smoke",
    model: str | None = None,
    out_dir: str | Path | None = None,
) -> SweepPlan:
    """Check a sweep completely and lay out one task per grid point; nothing runs yet.

    ``grid`` may hold ``model`` (a list of model names), which then replaces
    ``model``; every other key must be a parameter of the notebook. ``out_dir``
    defaults to ``runs/<slug>-sweep``.
    """
    from .models import DEFAULT_MODEL, check_model_name
    from .runner import PROFILES, notebook_parameters, notebook_path, sweep_grid

    known = notebook_parameters(notebook_path(slug))
    if profile not in PROFILES:
        raise UnknownParameterError(f"unknown profile '{profile}': use one of {', '.join(PROFILES)}")
    if "profile" in grid:
        raise UnknownParameterError(
            f"profile is not a sweep key: pass --profile {'|'.join(PROFILES)} and run one sweep per profile")
    if "model" in grid and model is not None:
        raise UnknownParameterError("models are given twice: use either --model NAME or -p model=NAME1,NAME2")
    reserved = sorted(set(grid) & set(LEADING_COLUMNS + CLAIM_COLUMNS + TRAILING_COLUMNS) - {"model"})
    if reserved:
        raise UnknownParameterError(
            f"sweep parameter(s) {', '.join(reserved)} clash with columns of {CSV_NAME}; rename them in the notebook")
    unknown = sorted(set(grid) - set(known) - {"model"})
    if unknown:
        raise UnknownParameterError(
            f"unknown parameter(s) {', '.join(unknown)} for {slug}; its parameters are {', '.join(known)}")
    models = [str(name) for name in grid.get("model", [model or DEFAULT_MODEL])]
    for name in dict.fromkeys(models):
        check_model_name(name)

    out = Path(out_dir or f"runs/{slug}-sweep").resolve()
    env = forwarded_env()
    tasks: list[PointTask] = []
    seen: dict[str, int] = {}
    for point in sweep_grid(grid):
        name = point_name(point)
        # Two values that clean up to the same name (`a/b` and `a_b`) still get their own folders.
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            name = f"{name}-{seen[name]}"
        params = {key: value for key, value in point.items() if key != "model"}
        tasks.append(PointTask(slug=slug, profile=profile, model=str(point.get("model", models[0])),
                               params=params, name=name, out_dir=str(out / name), env=env))
    return SweepPlan(slug=slug, profile=profile, grid=dict(grid), out_dir=out, tasks=tasks)


def _first_line(text: str) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[0] if lines else "no message"


def run_point(task: PointTask) -> PointResult:
    """Run one grid point; every failure comes back as a result, so one bad point never stops the others.

    Runs inside a pool worker or a submitit job, never in the submitting process.
    """
    os.environ.update(task.env)
    started = time.perf_counter()
    try:
        from .runner import run

        result = run(task.slug, profile=task.profile, model=task.model, params=task.params,
                     out_dir=task.out_dir, progress=False)
    except Exception as exc:  # noqa: BLE001 - recorded in the table, not raised
        return PointResult(task.name, "failed", f"{type(exc).__name__}: {_first_line(str(exc))}",
                           round(time.perf_counter() - started, 1), None, None)
    return PointResult(
        name=task.name, status="failed" if result.error else "ok", error=result.error,
        runtime_s=float(result.record.get("runtime_s", round(time.perf_counter() - started, 1))),
        claims_path=str(result.claims_path) if result.claims_path else None, notebook=str(result.notebook),
        cpu_threads=result.record.get("cpu_threads"),
    )


def _failed(task: PointTask, error: str) -> PointResult:
    return PointResult(task.name, "failed", error, 0.0, None, None)


def _report(done: int, total: int, result: PointResult) -> None:
    state = "ok" if result.status == "ok" else f"FAILED {result.error}"
    print(f"[{done}/{total}] {result.name}: {state} ({result.runtime_s:.0f} s)", flush=True)


def _run_local(plan: SweepPlan, jobs: int) -> list[PointResult]:
    if jobs < 1:
        raise ActlabError(f"--jobs must be at least 1, not {jobs}")
    results: dict[str, PointResult] = {}
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(run_point, task): task for task in plan.tasks}
        for future in concurrent.futures.as_completed(futures):
            task = futures[future]
            try:
                result = future.result()
            except Exception as exc:  # noqa: BLE001 - a worker that died (killed, out of memory)
                result = _failed(task, f"{type(exc).__name__}: {_first_line(str(exc)) if str(exc) else 'worker died'}")
            results[task.name] = result
            _report(len(results), len(plan.tasks), result)
    return [results[task.name] for task in plan.tasks]


def check_slurm() -> None:
    """Fail with one line, before anything is submitted, on a machine without Slurm."""
    # submitit submits with sbatch and refuses to start without srun, so both must be here.
    missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
    if missing:
        raise ActlabError(f"--executor slurm needs Slurm, but {' and '.join(missing)} is not on PATH here; "
                          "run on the cluster's login node, or use --executor submitit-local to run "
                          "the same submitit path on this machine")


def submitit_parameters(executor: Executor, options: SlurmOptions, n_points: int) -> dict[str, Any]:
    """``update_parameters`` arguments for submitit's AutoExecutor (``slurm_`` ones are dropped locally)."""
    parameters: dict[str, Any] = {"timeout_min": options.time_min, "mem_gb": options.mem_gb,
                                  "cpus_per_task": options.cpus_per_task, "name": "actlab-sweep"}
    if executor == "slurm":
        parameters["slurm_array_parallelism"] = options.array_parallelism or n_points
        if options.partition:
            parameters["slurm_partition"] = options.partition
    return parameters


def make_submitit_executor(plan: SweepPlan, executor: Executor, options: SlurmOptions):  # noqa: ANN201
    """The submitit executor for a sweep, logging into ``OUT/logs``: Slurm, or submitit's local one."""
    import submitit

    if executor == "slurm":
        check_slurm()
    cluster = "slurm" if executor == "slurm" else "local"
    # One flat folder: submitit names each point's files <job id>_<task>_log.out / .err inside it.
    auto = submitit.AutoExecutor(folder=plan.out_dir / LOG_DIR, cluster=cluster)
    auto.update_parameters(**submitit_parameters(executor, options, len(plan.tasks)))
    return auto


def submit_points(auto: Any, plan: SweepPlan) -> list[Any]:  # noqa: ANN401 - submitit types
    """Submit every grid point at once: one Slurm job array (``map_array``), or one local job each."""
    return auto.map_array(run_point, plan.tasks)


def wait_for_points(jobs: Sequence[Any], plan: SweepPlan, poll_s: float) -> list[PointResult]:
    """Wait for the submitted points and turn crashed jobs (timeout, out of memory) into failed results."""
    from submitit.helpers import as_completed

    by_job = {id(job): task for job, task in zip(jobs, plan.tasks)}
    results: dict[str, PointResult] = {}
    for job in as_completed(list(jobs), poll_frequency=poll_s):
        task = by_job[id(job)]
        try:
            result = job.result()
        except Exception as exc:  # noqa: BLE001 - submitit raises for a job that crashed or was cancelled
            # submitit's message is a traceback; its last line names the error, the logs hold the rest.
            lines = [line.strip() for line in str(exc).splitlines() if line.strip() and not line.startswith("-")]
            traceback_end = next((line for line in reversed(lines) if "Error" in line or "Exception" in line), None)
            result = _failed(task, f"job {job.job_id} failed: {traceback_end or type(exc).__name__} "
                                   f"(logs: {LOG_DIR}/)")
        results[task.name] = result
        _report(len(results), len(plan.tasks), result)
    return [results[task.name] for task in plan.tasks]


def run_sweep(
    plan: SweepPlan,
    executor: Executor = "local",
    jobs: int = 1,
    slurm: SlurmOptions | None = None,
) -> list[PointResult]:
    """Run every point of ``plan`` and return their results in grid order.

    ``local`` runs ``jobs`` points at a time in a process pool. ``slurm``
    submits one job array through submitit with the resources in ``slurm``;
    ``submitit-local`` takes exactly that path with submitit's local executor,
    which starts every point at once. Failed points are results with an
    error, never exceptions.
    """
    if executor not in EXECUTORS:
        raise ActlabError(f"unknown executor '{executor}': use one of {', '.join(EXECUTORS)}")
    options = slurm or SlurmOptions()
    if executor == "slurm":
        check_slurm()
    if executor == "slurm" and "ACTLAB_THREADS" not in os.environ:
        # The thread count changes floating-point results; pin it to what each job is given.
        plan = _with_env(plan, {"ACTLAB_THREADS": str(options.cpus_per_task)})
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    if executor == "local":
        return _run_local(plan, jobs)
    auto = make_submitit_executor(plan, executor, options)
    submitted = submit_points(auto, plan)
    where = f"job array {submitted[0].job_id.split('_')[0]}" if executor == "slurm" else "local submitit jobs"
    print(f"submitted {len(submitted)} points as {where}; logs in {plan.out_dir / LOG_DIR}", flush=True)
    return wait_for_points(submitted, plan, poll_s=30.0 if executor == "slurm" else 1.0)


def _with_env(plan: SweepPlan, extra: dict[str, str]) -> SweepPlan:
    return replace(plan, tasks=[replace(task, env={**task.env, **extra}) for task in plan.tasks])


def collect(plan: SweepPlan, results: Sequence[PointResult]) -> pd.DataFrame:
    """Read every point's claims into one long table and write it to ``OUT/sweep.csv``.

    One row per (point, claim); a failed point gives one row with its error.
    Columns: ``point, model, profile, <swept parameters>, claim_id, claim,
    paper, measured, criterion, verdict, status, error, runtime_s, cpu_threads``.
    ``runtime_s`` is the notebook's execution time as the runner records it
    (queueing and process start-up left out); ``cpu_threads`` is torch's
    thread count in that run, part of what makes two points comparable.
    """
    import json

    import pandas as pd

    columns = [*LEADING_COLUMNS, *plan.parameter_columns, *CLAIM_COLUMNS, *TRAILING_COLUMNS]
    rows: list[dict[str, object]] = []
    for task, result in zip(plan.tasks, results):
        base = {"point": task.name, "model": task.model, "profile": task.profile,
                **{key: _cell(task.params[key]) for key in plan.parameter_columns}}
        tail = {"status": result.status, "error": result.error or "", "runtime_s": result.runtime_s,
                "cpu_threads": result.cpu_threads if result.cpu_threads is not None else ""}
        claims = json.loads(Path(result.claims_path).read_text())["claims"] if result.claims_path else []
        if not claims:
            rows.append({**base, **dict.fromkeys(CLAIM_COLUMNS, ""), **tail})
        for claim in claims:
            rows.append({**base, "claim_id": claim["id"],
                         **{key: claim.get(key) or "" for key in CLAIM_COLUMNS[1:]}, **tail})
    table = pd.DataFrame(rows, columns=columns)
    table.to_csv(plan.out_dir / CSV_NAME, index=False, quoting=csv.QUOTE_MINIMAL)
    return table


def _cell(value: object) -> object:
    """Lists and dicts as their Python literal, so the CSV cell reads back with ``ast.literal_eval``."""
    return repr(value) if isinstance(value, (list, tuple, dict)) else value


def plot(plan: SweepPlan, table: pd.DataFrame) -> Path:
    """A heatmap of claims (rows) by grid points (columns), each cell coloured and labelled by its verdict.

    Written to ``OUT/sweep.png`` with matplotlib's Agg canvas (no pyplot, so no global backend change).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from .claims import _COLOURS, _MARKS, VERDICTS

    states = [*VERDICTS, "failed", "missing"]
    colours = [*(_COLOURS[v] for v in VERDICTS), "#24292f", "#ffffff"]
    labels = {**_MARKS, "failed": "point failed", "missing": "not reported"}
    points = [task.name for task in plan.tasks]
    claimed = table[table["claim_id"].astype(str) != ""]
    claim_ids = list(dict.fromkeys(claimed["claim_id"].astype(str)))
    claim_text = dict(zip(claimed["claim_id"].astype(str), claimed["claim"].astype(str)))
    failed = set(table.loc[table["status"] == "failed", "point"])
    verdict = {(str(row.claim_id), row.point): row.verdict for row in claimed.itertuples()}

    grid = [[states.index("failed" if point in failed else verdict.get((cid, point), "missing"))
             for point in points] for cid in claim_ids] or [[states.index("failed" if p in failed else "missing")
                                                             for p in points]]
    rows = claim_ids or ["(no claims)"]
    # Room for the claim labels on the left and for the legend, however few points there are.
    width = min(max(7.5, 4.0 + 1.25 * len(points)), 40.0)
    height = 1.6 + 0.45 * len(rows)
    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.imshow(grid, cmap=ListedColormap(colours), vmin=-0.5, vmax=len(states) - 0.5, aspect="auto")
    for r, row in enumerate(grid):
        for c, state in enumerate(row):
            text = "\n".join(textwrap.wrap(labels[states[state]], 12))
            ax.text(c, r, text, ha="center", va="center", fontsize=7,
                    color="#24292f" if states[state] == "missing" else "white")
    ax.set_xticks(range(len(points)), [name.replace(",", "\n") for name in points], fontsize=8)
    ax.set_yticks(range(len(rows)), [f"{cid}  {textwrap.shorten(claim_text.get(cid, ''), 40, placeholder='…')}"
                                     for cid in rows], fontsize=8)
    ax.set_xticks([x - 0.5 for x in range(1, len(points))], minor=True)
    ax.set_yticks([y - 0.5 for y in range(1, len(rows))], minor=True)
    ax.grid(which="minor", color="white", linewidth=2)
    ax.tick_params(which="both", length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.suptitle(f"{plan.slug} ({plan.profile}): verdict of each claim across the sweep", fontsize=10)
    used = sorted({state for row in grid for state in row})
    fig.legend(handles=[Patch(facecolor=colours[s], edgecolor="#8c959f", label=labels[states[s]]) for s in used],
               loc="outside lower center", ncol=len(used), fontsize=8, frameon=False)
    fig.set_layout_engine("constrained")
    path = plan.out_dir / FIGURE_NAME
    fig.savefig(path, metadata={"Software": None})
    return path


def summary_lines(plan: SweepPlan, table: pd.DataFrame) -> list[str]:
    """One line per point: its verdicts claim by claim, or its error."""
    lines = []
    for task in plan.tasks:
        rows = table[table["point"] == task.name]
        first = rows.iloc[0]
        if first["status"] == "failed":
            lines.append(f"{task.name}: FAILED {first['error']}")
            continue
        verdicts = ", ".join(f"{row.claim_id} {row.verdict}" for row in rows.itertuples() if row.claim_id != "")
        lines.append(f"{task.name}: {verdicts or 'no claims'} ({float(first['runtime_s']):.0f} s)")
    return lines


def sweep(
    slug: str,
    grid: dict[str, list[object]],
    profile: str = "smoke",
    model: str | None = None,
    out_dir: str | Path | None = None,
    executor: Executor = "local",
    jobs: int = 1,
    slurm: SlurmOptions | None = None,
) -> tuple[SweepPlan, pd.DataFrame, Path]:
    """Plan, run, collect and plot in one call; returns the plan, the table and the figure's path."""
    plan = plan_sweep(slug, grid, profile=profile, model=model, out_dir=out_dir)
    if executor == "slurm":
        check_slurm()  # before the first line of output, so the failure is the only line
    where = {"local": f"{jobs} local process(es)", "slurm": "a Slurm job array",
             "submitit-local": "submitit's local executor"}.get(executor, executor)
    print(f"sweep: {len(plan.tasks)} runs of {slug} ({profile}) with {where}", flush=True)
    results = run_sweep(plan, executor=executor, jobs=jobs, slurm=slurm)
    table = collect(plan, results)
    return plan, table, plot(plan, table)
