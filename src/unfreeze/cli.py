"""The ``unfreeze`` console script.

``unfreeze check [--params params.yaml]`` validates params.yaml (and the data source folder)
in well under a second, without importing TensorFlow. More commands (predict, retrain, serve)
come with their issues.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from unfreeze import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="unfreeze", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"unfreeze {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate params.yaml and print the resolved values")
    check.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    if args.command == "check":
        return _check(args.params)
    return 2  # pragma: no cover - argparse rejects unknown commands


def _check(path: str) -> int:
    from unfreeze.data import DataError, resolve_root
    from unfreeze.params import ParamsError, load_params

    try:
        params = load_params(path)
        root = resolve_root(params.data.source)
    except (ParamsError, DataError) as exc:
        print(f"unfreeze: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"params": asdict(params), "data_root": str(root)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
