"""DVC stage `source`: fingerprint the images of ``data.source``, wherever they live.

Runs on every `dvc repro` (``always_changed``) and costs a stat per file: a file is read
again only when its size or mtime changed. ``data/source.json`` changes only when the
content does, so `prepare` and what follows rerun after images are added, removed or
changed, in a folder inside or outside the project or in the demo package, and never for a
mere touch.
"""

from __future__ import annotations

import sys
from argparse import Namespace

from unfreeze.runtime import stage_cli

ARGS = [("--out", "output JSON: files, bytes and the content fingerprint"),
        ("--hashes", "content hashes kept between runs (outside the DVC outputs)")]


def run(args: Namespace) -> None:
    from pathlib import Path

    from unfreeze.dataset.sources import fingerprint, resolve_root
    from unfreeze.io import read_json, write_json

    root = resolve_root(args.params.data.source)
    hashes = Path(args.hashes)
    kept = read_json(hashes) if hashes.is_file() else {}
    known = kept.get("files") if kept.get("root") == str(root) else None
    summary, table = fingerprint(root, known)
    if table != known:
        write_json(hashes, {"root": str(root), "files": table})
    write_json(args.out, {"source": args.params.data.source} | summary)
    print(f"source: {summary['files']} files, {summary['bytes']} bytes, "
          f"fingerprint {summary['fingerprint'][:12]}")


def main(argv: list[str] | None = None) -> int:
    return stage_cli("source", __doc__, ARGS, run, argv, tensorflow=False)


if __name__ == "__main__":
    sys.exit(main())
