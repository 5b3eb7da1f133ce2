"""DVC stage `source`: fingerprint the images of ``data.source``, wherever they live.

Runs on every `dvc repro` (``always_changed``) and costs a stat per file: a file is read
again only when its size or mtime changed. ``data/source.json`` changes only when the
content does, so `prepare` and what follows rerun after images are added, removed or
changed, in a folder inside or outside the project or in the demo package, and never for a
mere touch. A label file (``data.source: labels.csv``) is hashed as well, wherever it lies,
and only the images its rows name are fingerprinted (its folder may hold the pipeline's own
outputs, ``data/source.json`` among them).
"""

from __future__ import annotations

import sys
from argparse import Namespace

from unfreeze.runtime import stage_cli

ARGS = [("--out", "output JSON: files, bytes and the content fingerprint"),
        ("--hashes", "content hashes kept between runs (outside the DVC outputs)")]


def run(args: Namespace) -> None:
    from pathlib import Path

    from unfreeze.dataset.sources import fingerprint, is_label_file, label_file, resolve_root
    from unfreeze.io import read_json, sha256_file, write_json

    data = args.params.data
    root = resolve_root(data.source, root=data.root)
    hashes = Path(args.hashes)
    kept = read_json(hashes) if hashes.is_file() else {}
    known = kept.get("files") if kept.get("root") == str(root) else None
    only = None
    if is_label_file(data.source):  # the images its rows name, not all of its folder
        from unfreeze.dataset.labelfile import listed_paths

        only = listed_paths(label_file(data.source), root, data)
    summary, table = fingerprint(root, known, only)
    if table != known:
        write_json(hashes, {"root": str(root), "files": table})
    if is_label_file(data.source):  # it may lie outside the root it names
        summary["label_file_sha256"] = sha256_file(label_file(data.source))
    write_json(args.out, {"source": data.source, "root": data.root} | summary)
    print(f"source: {summary['files']} files, {summary['bytes']} bytes, "
          f"fingerprint {summary['fingerprint'][:12]}")


def main(argv: list[str] | None = None) -> int:
    return stage_cli("source", __doc__, ARGS, run, argv, tensorflow=False)


if __name__ == "__main__":
    sys.exit(main())
