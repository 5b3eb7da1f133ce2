"""The ``unfreeze`` console script.

- ``unfreeze check``: validate params.yaml (and the data source folder), without TensorFlow.
- ``unfreeze retrain``: run the Prefect retrain flow once in this working copy, print a summary.
- ``unfreeze serve --cron "0 3 * * *"``: serve the retrain flow on a schedule against the
  Prefect server at ``PREFECT_API_URL``, one run at a time per working copy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from unfreeze import __version__
from unfreeze.runtime import EXIT_USER_ERROR, quiet_environment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="unfreeze", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"unfreeze {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate params.yaml and print the resolved values")
    check.add_argument("--params", default="params.yaml")
    retrain = sub.add_parser("retrain", help="run the retrain flow once in this working copy")
    retrain.add_argument("--project", default=".", help="project root (with dvc.yaml)")
    serve = sub.add_parser("serve", help="serve the retrain flow on a cron schedule")
    serve.add_argument("--project", default=".", help="project root (with dvc.yaml)")
    serve.add_argument("--cron", required=True, help='cron schedule, e.g. "0 3 * * *"')
    serve.add_argument("--name", default=None, help="deployment name (default: from the path)")
    args = parser.parse_args(argv)
    if args.command == "check":
        return _check(args.params)
    quiet_environment()
    if args.command == "retrain":
        return _retrain(Path(args.project))
    return _serve(Path(args.project), args.cron, args.name)


def check_server(url: str | None, timeout: float = 5.0) -> str | None:
    """None when no server is configured or it answers; else a message saying what to do."""
    if not url:
        return None
    import httpx

    try:
        httpx.get(url.rstrip("/") + "/health", timeout=timeout).raise_for_status()
    except httpx.HTTPError as exc:
        return (f"PREFECT_API_URL is set to {url} but no Prefect server answers there ({exc}). "
                "Start one with `prefect server start --host 127.0.0.1`, or unset "
                "PREFECT_API_URL to run with a temporary local server.")
    return None


def _check(path: str) -> int:
    from unfreeze.data import DataError, resolve_root
    from unfreeze.params import ParamsError, load_params

    try:
        params = load_params(path)
        root = resolve_root(params.data.source)
    except (ParamsError, DataError) as exc:
        print(f"unfreeze: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(json.dumps({"params": asdict(params), "data_root": str(root)}, indent=2))
    return 0


def _retrain(project: Path) -> int:
    problem = check_server(os.environ.get("PREFECT_API_URL"))
    if problem:
        print(f"unfreeze: error: {problem}", file=sys.stderr)
        return EXIT_USER_ERROR
    from unfreeze.retrain import retrain_flow

    state = retrain_flow(project=str(project), return_state=True)
    if not state.is_completed():
        print(f"unfreeze: retrain failed: {state.message}", file=sys.stderr)
        return 1
    print(format_summary(state.result()))
    return 0


def format_summary(result: dict) -> str:
    """One line per stage (ran / up to date, seconds), then the promotion decision."""
    lines = [f"retrain of {result['project']}"
             + (" (data source changed)" if result["source_changed"] else "")]
    for s in result["stages"]:
        lines.append(f"  {s['stage']:<12} {'ran' if s['ran'] else 'up to date':<11} "
                     f"{s['seconds']:8.1f} s")
    p = result["promotion"]
    lines.append(f"promotion: {p['decision']} — {p['reason']}")
    return "\n".join(lines)


def _serve(project: Path, cron: str, name: str | None) -> int:
    url = os.environ.get("PREFECT_API_URL")
    if not url:
        print("unfreeze: error: serving needs a Prefect server: start one with `prefect server "
              "start --host 127.0.0.1` and set PREFECT_API_URL=http://127.0.0.1:4200/api",
              file=sys.stderr)
        return EXIT_USER_ERROR
    problem = check_server(url)
    if problem:
        print(f"unfreeze: error: {problem}", file=sys.stderr)
        return EXIT_USER_ERROR
    from prefect.deployments.runner import EntrypointType

    from unfreeze.retrain import retrain_flow

    root = project.resolve()
    retrain_flow.serve(name=name or deployment_name(root), cron=cron, global_limit=1,
                       parameters={"project": str(root)},
                       entrypoint_type=EntrypointType.MODULE_PATH)
    return 0


def deployment_name(root: Path) -> str:
    """A stable deployment name per working copy: folder name plus a short path hash."""
    import hashlib

    return f"{root.name}-{hashlib.sha256(str(root).encode()).hexdigest()[:8]}"


if __name__ == "__main__":
    sys.exit(main())
