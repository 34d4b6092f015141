"""``prefect-conformance matrix``: the suite over a grid of Prefect releases, as servers and as clients.

Each column is one ``prefect-conformance run`` in a child process: a server (the bundled reference of a release,
or the user's ``--target``) and the release its real clients come from. The matrix reads each column's
``results.json`` and writes ``matrix.json`` and a self-contained ``matrix.html``: checks, grouped by feature, by
columns, each cell passed / failed / unsupported / error / n/a with the message one click away.

Releases are installed once, before any column starts (``harness.reference.releases``), so columns that run side
by side (``--jobs``) never race to create one.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.processes import ManagedProcess, live_processes, spawn
from harness.reference.releases import pinned, release

#: Client releases run against one server by default: Prefect supports older clients against a newer server.
DEFAULT_CLIENTS = ("3.0.11", "3.4.25", "3.6.29", "3.8.8")
#: Server releases run, each with the clients of its own release (newer clients against an older server are not
#: supported by Prefect).
DEFAULT_SERVERS = ("3.0.11", "3.2.15", "3.4.25", "3.6.29", "3.8.8")
TARGET = "target"
EXIT_PASSED, EXIT_FAILED, EXIT_NO_VERDICT = 0, 1, 2


@dataclass(frozen=True)
class Column:
    """One run of the suite: a server (a release, or ``target``) and the release of its clients."""

    server: str
    client: str

    @property
    def id(self) -> str:
        return f"server-{self.server}_clients-{self.client}"

    @property
    def label(self) -> str:
        return f"server {self.server} · clients {self.client}"


@dataclass
class ColumnResult:
    column: Column
    exit_code: int
    duration: float
    summary: dict[str, int] = field(default_factory=dict)
    target_version: str = ""
    report_dir: str = ""
    #: Why the column has no results, when it has none (its run's last line).
    problem: str = ""


def default_grid(target: str | None, clients: list[str] | None, servers: list[str] | None) -> list[Column]:
    """The columns: ``clients`` against the target (or the pinned reference), then each of ``servers`` with the
    clients of its own release."""
    pinned_version = pinned().version
    clients = clients if clients is not None else [*DEFAULT_CLIENTS, pinned_version]
    columns = [Column(TARGET if target else pinned_version, c) for c in clients]
    if not target:
        chosen = servers if servers is not None else list(DEFAULT_SERVERS)
        columns += [Column(s, s) for s in chosen if Column(s, s) not in columns]
    return columns


def run_column(column: Column, args: argparse.Namespace, report_dir: Path) -> ColumnResult:
    """One ``prefect-conformance run`` of the column, its output in ``REPORT_DIR/<column>.log``."""
    argv = [
        sys.executable,
        "-m",
        "harness.commands.cli",
        "run",
        "--report-dir",
        str(report_dir),
        "--client-version",
        column.client,
        "-n",
        str(args.parallel),
    ]
    if column.server == TARGET:
        argv += ["--target", args.target]
    else:
        argv += ["--reference-version", column.server]
        if args.reference:
            argv += ["--reference", args.reference]
    for option, value in (
        ("-m", args.markers),
        ("-k", args.keyword),
        ("--timeout-scale", args.timeout_scale),
        ("--scheduler-interval", args.scheduler_interval),
        ("--scheduler-limits", args.scheduler_limits),
        ("--service-loops", args.service_loops),
    ):
        if value:
            argv += [option, str(value)]
    started = time.monotonic()
    log = report_dir.parent / f"{report_dir.name}.log"  # not with_suffix: the name ends in ".11"
    process = spawn(column.id, argv, log_path=log)  # registered: Ctrl-C or SIGTERM stops every column's run
    try:
        code = process.popen.wait()
    finally:
        process.stop(sigint_wait=0.0, sigterm_wait=30.0)  # at once if it ended; else it stops what it started
    result = ColumnResult(column, code, round(time.monotonic() - started, 1), report_dir=str(report_dir / "latest"))
    results = report_dir / "latest" / "results.json"
    if results.exists():
        document = json.loads(results.read_text())
        result.summary = document.get("summary", {})
        result.target_version = document.get("run", {}).get("target_version", "")
    else:
        lines = [line for line in log.read_text().splitlines() if line.strip()]
        result.problem = lines[-1] if lines else f"exit {code}, no output"
    return result


def stop_columns(processes: list[ManagedProcess], patience: float = 60.0) -> None:
    """Stop the columns' runs together: one SIGTERM each (a run turns it into its own orderly stop of its reference
    and clients; SIGINT may be ignored, as a background job's is, and a second signal would cut that stop short),
    then a bounded wait for all, then the hard way for any still running."""
    for process in processes:
        if process.is_running():
            process.popen.terminate()
    deadline = time.monotonic() + patience
    for process in processes:
        try:
            process.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        process.stop(sigint_wait=0.0, sigterm_wait=5.0)


def collect(results: list[ColumnResult]) -> dict[str, dict[str, Any]]:
    """check id -> feature, description and one cell per column (status and message; ``n/a`` where absent)."""
    checks: dict[str, dict[str, Any]] = {}
    for result in results:
        path = Path(result.report_dir) / "results.json"
        if not path.exists():
            continue
        for check in json.loads(path.read_text())["checks"]:
            row = checks.setdefault(
                check["id"], {"feature": check["feature"], "description": check.get("description", ""), "cells": {}}
            )
            row["cells"][result.column.id] = {"status": check["status"], "message": check.get("message", "")}
    for row in checks.values():
        for result in results:
            row["cells"].setdefault(
                result.column.id, {"status": "n/a", "message": result.problem or "not run in this column"}
            )
    return dict(sorted(checks.items(), key=lambda item: (item[1]["feature"], item[0])))


def works_with(results: list[ColumnResult]) -> list[str]:
    """The client releases that passed against the first server (the target, or the pinned reference): the
    matrix's summary, "works with clients ..."."""
    first = results[0].column.server if results else ""
    return [r.column.client for r in results if r.column.server == first and r.exit_code == EXIT_PASSED]


def render_html(results: list[ColumnResult], checks: dict[str, dict[str, Any]]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(r.column.label)}<br><small>{e(verdict_of(r))}</small></th>" for r in results)
    rows, feature = [], None
    for check_id, row in checks.items():
        if row["feature"] != feature:
            feature = row["feature"]
            rows.append(f"<tr class=feature><th colspan={len(results) + 1}>{e(feature)}</th></tr>")
        cells = []
        for r in results:
            cell = row["cells"][r.column.id]
            status = cell["status"]
            body = (
                f"<details><summary>{e(status)}</summary><pre>{e(cell['message'])}</pre></details>"
                if cell["message"] and status != "passed"
                else e(status)
            )
            cells.append(f"<td class='{e(status.replace('/', ''))}'>{body}</td>")
        rows.append(f"<tr><td title='{e(row['description'])}'><code>{e(check_id)}</code></td>{''.join(cells)}</tr>")
    style = (
        "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:2px 6px;vertical-align:top}td.passed{background:#dfd}td.failed,td.error{background:#fdd}"
        "td.unsupported{background:#ffd}td.na{background:#eee;color:#777}tr.feature th{text-align:left;"
        "background:#f4f4f4}pre{white-space:pre-wrap;max-width:40em}"
    )
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>prefect-conformance matrix</title>"
        f"<style>{style}</style></head><body><h1>prefect-conformance matrix</h1>"
        f"<p>Server {e(results[0].column.server if results else '')} works with clients: "
        f"{e(', '.join(works_with(results)) or 'none')}</p>"
        f"<table><tr><th>check</th>{head}</tr>{''.join(rows)}</table></body></html>\n"
    )


def verdict_of(result: ColumnResult) -> str:
    if result.problem:
        return f"no verdict: {result.problem}"
    counts = ", ".join(f"{n} {status}" for status, n in result.summary.items() if n)
    return f"{counts} in {result.duration:.0f} s"


def matrix(args: argparse.Namespace) -> int:
    columns = default_grid(args.target, args.clients, args.servers)
    for version in sorted({c.client for c in columns} | {c.server for c in columns if c.server != TARGET}):
        release(version)  # each release installed once, before columns run side by side
    report_root = args.report_dir / "matrix"
    report_root.mkdir(parents=True, exist_ok=True)
    print(
        f"prefect-conformance matrix: {len(columns)} columns, {args.jobs} at a time; reports in {report_root}",
        flush=True,
    )
    started = time.monotonic()

    stopping = threading.Event()

    def one(column: Column) -> ColumnResult:
        if stopping.is_set():  # interrupted while this column waited for a free slot
            return ColumnResult(column, EXIT_NO_VERDICT, 0.0, problem="not run: the matrix was interrupted")
        result = run_column(column, args, report_root / column.id)
        print(f"prefect-conformance matrix: {column.label}: {verdict_of(result)}", flush=True)
        return result

    pool = ThreadPoolExecutor(max_workers=args.jobs)
    futures = [pool.submit(one, column) for column in columns]
    try:
        # Waited on in short slices: a main thread blocked in one long wait would not see Ctrl-C or SIGTERM
        # until every column had finished.
        while wait(futures, timeout=0.5).not_done:
            pass
        results = [future.result() for future in futures]
    finally:  # interrupted: no queued column may start, and the running ones stop before the threads are joined
        stopping.set()
        for future in futures:
            future.cancel()
        stop_columns(live_processes())
        pool.shutdown(wait=True, cancel_futures=True)
    checks = collect(results)
    document = {
        "columns": [{**asdict(r), "id": r.column.id} for r in results],
        "works_with_clients": works_with(results),
        "duration": round(time.monotonic() - started, 1),
        "checks": checks,
    }
    (report_root / "matrix.json").write_text(json.dumps(document, indent=2) + "\n")
    (report_root / "matrix.html").write_text(render_html(results, checks))
    print(
        f"prefect-conformance matrix: {len(columns)} columns in {document['duration']:.0f} s; works with clients "
        f"{', '.join(document['works_with_clients']) or 'none'}; {report_root / 'matrix.html'}",
        flush=True,
    )
    if any(r.problem or r.exit_code not in (EXIT_PASSED, EXIT_FAILED) for r in results):
        return EXIT_NO_VERDICT
    return EXIT_FAILED if any(r.exit_code == EXIT_FAILED for r in results) else EXIT_PASSED


def add_parser(commands: Any, absolute_path: Any) -> None:
    """The ``matrix`` subcommand's options (called by :mod:`harness.commands.cli`)."""
    cmd = commands.add_parser(
        "matrix",
        help="run the suite over a grid of Prefect releases, as servers and as clients",
        description="Run the suite once per column (a server and the Prefect release of its real clients) and "
        "write REPORT_DIR/matrix/{matrix.json,matrix.html}. Default grid: the pinned reference with clients "
        f"{', '.join(DEFAULT_CLIENTS)} and its own, then servers {', '.join(DEFAULT_SERVERS)}, each with its own "
        "clients; with --target, that target with each client release. Exit 0 all columns passed, 1 a column "
        "failed, 2 a column gave no verdict.",
    )
    cmd.add_argument(
        "--target",
        metavar="URL",
        default=os.environ.get("PREFECT_CONFORMANCE_TARGET") or None,
        help="run the client columns against this server instead of the bundled reference",
    )
    cmd.add_argument(
        "--clients",
        type=_versions,
        default=None,
        metavar="X.Y.Z,...",
        help="client releases run against the target or the pinned reference",
    )
    cmd.add_argument(
        "--servers",
        type=_versions,
        default=None,
        metavar="X.Y.Z,...",
        help="reference releases run, each with its own clients (ignored with --target; '' for none)",
    )
    cmd.add_argument(
        "--reference",
        choices=("local", "docker", "docker-postgres"),
        default=None,
        help="how the reference columns run (default local, SQLite); docker-postgres spares the old "
        "releases SQLite's locking under load (3.2.15 stalls there)",
    )
    cmd.add_argument(
        "--jobs",
        type=int,
        default=max(2, (os.cpu_count() or 2) // 2),
        metavar="N",
        help="columns run side by side (default: half the cores, at least 2: a column mostly waits)",
    )
    cmd.add_argument("-n", "--parallel", default="1", metavar="N", help="pytest workers per column (default 1)")
    cmd.add_argument("-m", dest="markers", metavar="EXPR", help="only these feature areas")
    cmd.add_argument("-k", dest="keyword", metavar="EXPR", help="only checks whose id matches")
    cmd.add_argument("--timeout-scale", type=float, default=None, metavar="F")
    cmd.add_argument("--scheduler-interval", type=float, default=None, metavar="S")
    cmd.add_argument("--scheduler-limits", default=None, metavar="LIMITS", help="as for run (with --target)")
    cmd.add_argument("--service-loops", default=None, metavar="LOOPS", help="as for run (with --target)")
    cmd.add_argument("--report-dir", type=absolute_path, default=None, help="where REPORT_DIR/matrix/ goes")


def _versions(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]
