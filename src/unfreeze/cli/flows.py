"""`unfreeze check` (params and data root, no Prefect), then the Prefect flows: `retrain`
(once), `serve` (on a schedule), and the scale-out commands (`deploy-folds`, `worker`,
`remote-cv`: folds spread over workers)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from unfreeze.config.errors import UnfreezeError


def add_commands(sub) -> dict[str, Callable]:
    """`check`, `retrain`, `serve` and the scale-out commands; their handlers by name."""
    check = sub.add_parser("check", help="validate params.yaml and print the resolved values")
    check.add_argument("--params", default="params.yaml")
    retrain = sub.add_parser("retrain", help="run the retrain flow once in this working copy")
    retrain.add_argument("--project", default=".", help="project root (with dvc.yaml)")
    serve = sub.add_parser("serve", help="serve the retrain flow on a cron schedule")
    serve.add_argument("--project", default=".", help="project root (with dvc.yaml)")
    serve.add_argument("--cron", required=True, help='cron schedule, e.g. "0 3 * * *"')
    serve.add_argument("--name", default=None, help="deployment name (default: from the path)")
    return {"check": _check, "retrain": _retrain, "serve": _serve}


def add_scaleout_commands(sub) -> dict[str, Callable]:
    """Sub-commands that spread cross-validation folds over Prefect workers; their
    handler."""
    deploy = sub.add_parser("deploy-folds", help="deploy the per-fold flow to a work pool "
                            "(created as a process pool if missing)")
    deploy.add_argument("--pool", required=True, help="Prefect work pool name")
    deploy.add_argument("--name", default="folds", help="deployment name (default: folds)")
    worker = sub.add_parser("worker", help="start a Prefect worker for fold runs in a clone")
    worker.add_argument("--pool", required=True, help="Prefect work pool name")
    worker.add_argument("--project", default=".", help="this worker's clone of the project")
    worker.add_argument("--limit", type=int, default=1, help="fold runs at once (default 1)")
    remote = sub.add_parser("remote-cv", help="cross-validate with folds run by the workers")
    remote.add_argument("--deployment", required=True, help="e.g. unfreeze-fold/folds")
    remote.add_argument("--project", default=".", help="project root (with dvc.yaml)")
    remote.add_argument("--timeout", type=float, default=24 * 3600,
                        help="seconds to wait for the fold runs (default 24 h)")
    return {"deploy-folds": _scaleout, "worker": _scaleout, "remote-cv": _scaleout}


def _scaleout(args: argparse.Namespace) -> int:
    """`deploy-folds`, `worker`, `remote-cv`: need a shared Prefect server."""
    url = os.environ.get("PREFECT_API_URL")
    problem = check_server(url) if url else (
        "the workers, the deployment and the coordinator must share one Prefect server: "
        "start one (`prefect server start --host 0.0.0.0`) and set PREFECT_API_URL, e.g. "
        "http://SERVER:4200/api, on every machine")
    if problem:
        raise UnfreezeError(problem)
    from unfreeze.ops import scaleout

    if args.command == "worker":
        clone = Path(args.project).resolve()
        os.environ[scaleout.WORKDIR_ENV] = str(clone)
        scaleout.worker_clone()  # fails fast outside a clone
        prefect = str(Path(sys.executable).parent / "prefect")
        os.execv(prefect, [prefect, "worker", "start", "--pool", args.pool, "--type",
                           "process", "--limit", str(args.limit)])
    if args.command == "deploy-folds":
        print(scaleout.deploy_folds(args.pool, args.name))
        return 0
    state = scaleout.remote_cv_flow(project=str(Path(args.project)),
                                    deployment=args.deployment, timeout=args.timeout,
                                    return_state=True)
    if not state.is_completed():
        print(f"unfreeze: remote-cv failed: {state.message}", file=sys.stderr)
        return 1
    result = state.result()
    for fold in result["folds"]:
        print(f"  cv@{fold['fold']}: {fold['worker']} "
              f"({'ran' if fold['ran'] else 'up to date'}, {fold['seconds']:.1f} s)")
    print(f"ran here: {', '.join(result['stages_here']) or 'nothing'}")
    return 0


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


def _check(args: argparse.Namespace) -> int:
    """`check`: the resolved params and data root as JSON (no TensorFlow, no Prefect)."""
    from unfreeze.config.params import load_params
    from unfreeze.dataset.sources import resolve_root

    params = load_params(args.params)
    root = resolve_root(params.data.source, root=params.data.root)
    print(json.dumps({"params": asdict(params), "data_root": str(root)}, indent=2))
    return 0


def _retrain(args: argparse.Namespace) -> int:
    """`retrain`: the retrain flow once, then its summary."""
    problem = check_server(os.environ.get("PREFECT_API_URL"))
    if problem:
        raise UnfreezeError(problem)
    from unfreeze.ops.retrain import retrain_flow

    state = retrain_flow(project=str(Path(args.project)), return_state=True)
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
    lines += [f"warning: {w}" for w in result.get("warnings", [])]
    p = result["promotion"]
    lines.append(f"promotion: {p['decision']} — {p['reason']}")
    return "\n".join(lines)


def _serve(args: argparse.Namespace) -> int:
    """`serve`: the retrain flow on a cron schedule against PREFECT_API_URL."""
    url = os.environ.get("PREFECT_API_URL")
    if not url:
        raise UnfreezeError("serving needs a Prefect server: start one with `prefect server "
                            "start --host 127.0.0.1` and set "
                            "PREFECT_API_URL=http://127.0.0.1:4200/api")
    problem = check_server(url)
    if problem:
        raise UnfreezeError(problem)
    from prefect.deployments.runner import EntrypointType

    from unfreeze.ops.retrain import retrain_flow

    root = Path(args.project).resolve()
    retrain_flow.serve(name=args.name or deployment_name(root), cron=args.cron, global_limit=1,
                       parameters={"project": str(root)},
                       entrypoint_type=EntrypointType.MODULE_PATH)
    return 0


def deployment_name(root: Path) -> str:
    """A stable deployment name per working copy: folder name plus a short path hash."""
    import hashlib

    return f"{root.name}-{hashlib.sha256(str(root).encode()).hexdigest()[:8]}"
