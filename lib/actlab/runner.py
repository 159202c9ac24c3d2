"""Execute a paper notebook with papermill, record its run metadata, and read back its claims."""

from __future__ import annotations

import ast
import datetime as _dt
import hashlib
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat

from . import __version__
from .claims import CLAIM_FIELDS, claims_from_notebook
from .errors import ActlabError, UnknownParameterError
from .models import DEFAULT_MODEL, check_model_name
from .seeding import THREADS_ENV, _usable_cores

REPO_ROOT = Path(__file__).resolve().parents[2]
PROFILES = ("smoke", "default")
KERNEL_NAME = "actlab-python"
# Smoke-run times measured by the test session, read by the cost model, `make bench` and the book.
SMOKE_TIMES_ENV = "ACTLAB_SMOKE_TIMES"


def smoke_times_path() -> Path:
    """Where the test session keeps the smoke-run times it measured (``runs/smoke-times.json``)."""
    return Path(os.environ.get(SMOKE_TIMES_ENV, REPO_ROOT / "runs" / "smoke-times.json"))


def load_smoke_times(path: Path | None = None) -> dict:
    """The last recorded smoke-run report, or an empty dict when none was measured here.

    Layout: ``{"date", "commit", "runs": [{"slug", "model", "runtime_s", "repeat"}], ...}``.
    """
    path = Path(path) if path else smoke_times_path()
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def smoke_seconds_by_notebook(report: dict | None = None, model: str = DEFAULT_MODEL) -> dict[str, float]:
    """Slug -> the fastest recorded smoke run on ``model`` (seconds), from a smoke-times report."""
    report = load_smoke_times() if report is None else report
    best: dict[str, float] = {}
    for entry in report.get("runs", []):
        if entry.get("model") == model:
            best[entry["slug"]] = min(best.get(entry["slug"], float("inf")), float(entry["runtime_s"]))
    return best


def source_hash(notebook: dict) -> str:
    """sha256 of a notebook's source: the type and text of every cell, outputs and metadata left out.

    Papermill's injected-parameters cell is skipped, so the hash of an executed
    notebook equals the hash of the source it was executed from.
    """
    digest = hashlib.sha256()
    for cell in notebook.get("cells", []):
        if "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else source
        digest.update(json.dumps([cell.get("cell_type"), source]).encode("utf-8"))
    return digest.hexdigest()


def source_status(notebook: dict) -> str:
    """``current`` when the committed outputs come from the committed source, ``stale`` when the source
    changed after the run, ``not_recorded`` for a run made before source hashes were recorded."""
    recorded = notebook.get("metadata", {}).get("actlab", {}).get("source_sha256")
    if not recorded:
        return "not_recorded"
    return "current" if recorded == source_hash(notebook) else "stale"


def notebooks_dir() -> Path:
    return Path(os.environ.get("ACTLAB_NOTEBOOKS", REPO_ROOT / "notebooks"))


def list_notebooks() -> dict[str, Path]:
    """Slug -> path of every paper notebook."""
    return {p.stem: p for p in sorted(notebooks_dir().glob("*.ipynb"))}


def notebook_path(slug: str) -> Path:
    notebooks = list_notebooks()
    if slug not in notebooks:
        raise ActlabError(f"unknown paper '{slug}': choose one of {', '.join(notebooks) or '(none found)'}")
    return notebooks[slug]


def notebook_title(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return path.stem


def notebook_parameters(path: Path) -> dict[str, object]:
    """Names and default values of the notebook's ``parameters`` cell (literals only)."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if "parameters" in cell.metadata.get("tags", []):
            values: dict[str, object] = {}
            for node in ast.parse(cell.source).body:
                if isinstance(node, ast.Assign):
                    for target in node.targets:
                        if isinstance(target, ast.Name):
                            try:
                                values[target.id] = ast.literal_eval(node.value)
                            except ValueError:
                                values[target.id] = ast.unparse(node.value)
            return values
    raise ActlabError(f"{path.name} has no cell tagged 'parameters'")


def parse_value(text: str) -> object:
    """``-p KEY=VALUE``: a Python literal when it parses as one, else the string itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_assignments(pairs: list[str]) -> dict[str, object]:
    params: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UnknownParameterError(f"parameter '{pair}' is not KEY=VALUE")
        params[key.strip()] = parse_value(value.strip())
    return params


@dataclass
class RunResult:
    slug: str
    notebook: Path
    claims_path: Path | None
    record: dict
    error: str | None = None


def _ensure_kernel() -> str:
    """A kernelspec in this environment that runs this interpreter, so runs never pick a foreign Python."""
    spec_dir = Path(sys.prefix) / "share" / "jupyter" / "kernels" / KERNEL_NAME
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python (actlab)", "language": "python"}
    spec_file = spec_dir / "kernel.json"
    if not spec_file.exists() or json.loads(spec_file.read_text()) != spec:
        spec_dir.mkdir(parents=True, exist_ok=True)
        spec_file.write_text(json.dumps(spec, indent=1))
    return KERNEL_NAME


def _section_names(cells: list) -> list[str]:
    """Per cell, the last Markdown heading at or above it: what the progress bar says is running."""
    names, current = [], "start"
    for cell in cells:
        if cell.get("cell_type") == "markdown":
            for line in str(cell.get("source", "")).splitlines():
                if line.startswith("#"):
                    current = line.lstrip("#").strip()
        names.append(current)
    return names


def _engine_class():
    """Papermill's nbclient engine, with the progress bar naming the notebook section being executed."""
    from papermill.engines import NBClientEngine

    class SectionNamingEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, **kwargs):  # noqa: ANN001, ANN206
            names = _section_names(nb_man.nb.cells)
            plain_start = nb_man.cell_start

            def cell_start(cell, cell_index=None, **more):  # noqa: ANN001, ANN202
                plain_start(cell, cell_index, **more)
                pbar = getattr(nb_man, "pbar", None)
                if pbar and cell_index is not None:
                    pbar.set_description(names[cell_index][:40])

            nb_man.cell_start = cell_start
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    return SectionNamingEngine


def _ipc_kernel_manager(socket_dir: str):
    """A kernel manager whose kernel talks over Unix sockets in ``socket_dir``.

    Over TCP, ipykernel warns at every start that the traffic is unencrypted;
    local sockets in a private folder keep the traffic on this machine and the
    terminal quiet.
    """
    from jupyter_client.manager import AsyncKernelManager

    class IPCKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):  # noqa: ANN003
            super().__init__(**kwargs)
            self.transport = "ipc"
            self.ip = os.path.join(socket_dir, "kernel")

    return IPCKernelManager


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _versions() -> dict[str, str]:
    import numpy
    import torch
    import transformers

    return {"actlab": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "numpy": numpy.__version__, "python": platform.python_version()}


def run(
    slug: str,
    profile: str = "smoke",
    model: str = DEFAULT_MODEL,
    params: dict[str, object] | None = None,
    out_dir: str | Path = "runs",
    in_place: bool = False,
    progress: bool = True,
    cell_timeout_s: float | None = None,
) -> RunResult:
    """Execute ``notebooks/<slug>.ipynb`` and write ``<slug>.ipynb`` and ``<slug>.claims.json`` to ``out_dir``.

    Parameters are checked against the notebook's parameters cell and the model
    name is checked before anything runs. ``in_place`` writes the executed
    notebook back over the source (how the committed outputs are refreshed).
    ``cell_timeout_s`` fails the run when one cell runs longer (a guard against hangs).
    """
    import logging

    import papermill

    # papermill reads the parameters cell line by line and warns about lines it cannot parse
    # (comments with '=' in them); the runner reads the cell with ast instead.
    logging.getLogger("papermill.translators").setLevel(logging.ERROR)
    source = notebook_path(slug)
    if profile not in PROFILES:
        raise UnknownParameterError(f"unknown profile '{profile}': use one of {', '.join(PROFILES)}")
    defaults = notebook_parameters(source)
    params = dict(params or {})
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise UnknownParameterError(
            f"unknown parameter(s) {', '.join(unknown)} for {slug}; its parameters are {', '.join(defaults)}")
    check_model_name(model)
    from .artifacts import announce_build

    notice = announce_build(source.read_text(), model, profile)
    if notice and progress:
        print(f"actlab: {notice}", flush=True)
    resolved = {**defaults, **params, "profile": profile, "model": model}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = source if in_place else out / f"{slug}.ipynb"
    threads = int(os.environ.get(THREADS_ENV, "0")) or _usable_cores()
    env_overrides = {THREADS_ENV: str(threads), "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1",
                     "TOKENIZERS_PARALLELISM": "false", "PYTHONHASHSEED": "0"}
    saved_env = {k: os.environ.get(k) for k in env_overrides}
    os.environ.update(env_overrides)
    source_sha256 = source_hash(nbformat.read(source, as_version=4))
    started = time.perf_counter()
    error = None
    from papermill.engines import papermill_engines

    papermill_engines.register("actlab", _engine_class())
    socket_dir = tempfile.mkdtemp(prefix="actlab-kernel-")
    try:
        papermill.execute_notebook(
            str(source), str(target), parameters={**params, "profile": profile, "model": model},
            engine_name="actlab", kernel_name=_ensure_kernel(), progress_bar=progress, cwd=str(source.parent),
            log_output=False, execution_timeout=cell_timeout_s,
            kernel_manager_class=_ipc_kernel_manager(socket_dir),
        )
    except papermill.PapermillExecutionError as exc:
        error = f"{exc.ename}: {exc.evalue}".strip().splitlines()[0]
    except TimeoutError as exc:  # nbclient's CellTimeoutError
        error = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    runtime = round(time.perf_counter() - started, 1)
    record = {
        "library_version": __version__, "git_commit": _git_commit(), "profile": profile, "model": model,
        "parameters": resolved, "runtime_s": runtime, "date": _dt.datetime.now(_dt.timezone.utc).isoformat(
            timespec="seconds"), "cpu_threads": threads, "versions": _versions(), "source_sha256": source_sha256,
        "status": "ok" if error is None else "failed",
    }
    nb = nbformat.read(target, as_version=4)
    nb.metadata["actlab"] = record
    # papermill records absolute paths of this machine; keep only the file names.
    for key in ("input_path", "output_path"):
        if nb.metadata.get("papermill", {}).get(key):
            nb.metadata["papermill"][key] = Path(nb.metadata["papermill"][key]).name
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, target)
    if error is not None:
        return RunResult(slug, target, None, record, error)
    table = claims_from_notebook(nb)
    claims_path = out / f"{slug}.claims.json"
    payload = {"slug": slug, "model": model, "profile": profile, "params": resolved, "runtime_s": runtime,
               "claims": [{key: c.get(key) for key in CLAIM_FIELDS} for c in (table or {}).get("claims", [])]}
    claims_path.write_text(json.dumps(payload, indent=1) + "\n")
    return RunResult(slug, target, claims_path, record)


def format_claims(payload: dict) -> str:
    """A plain-text claims table for the terminal."""
    rows = [("id", "verdict", "paper", "measured", "claim")]
    rows += [(c["id"], c["verdict"], c["paper"], c["measured"], c["claim"]) for c in payload["claims"]]
    widths = [min(max(len(str(r[i])) for r in rows), cap) for i, cap in enumerate((4, 14, 28, 36, 60))]

    def fit(text: str, width: int) -> str:
        text = str(text)
        return text if len(text) <= width else text[:width - 1] + "…"

    lines = ["  ".join(fit(cell, w).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def sweep_grid(grid: dict[str, list[object]]) -> list[dict[str, object]]:
    """The Cartesian product of a parameter grid, in a stable order."""
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]
