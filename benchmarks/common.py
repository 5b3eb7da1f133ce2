"""What several benchmarks share: the ELPV demo split, as the stages make it."""

from __future__ import annotations


def demo_split():
    """``(splits table, training data, test rows, data root)`` of ELPV with default params."""
    from unfreeze.config.params import params_from_dict
    from unfreeze.dataset.rows import rows_of, training_rows
    from unfreeze.dataset.scan import scan
    from unfreeze.dataset.sources import resolve_root
    from unfreeze.dataset.splits import split_table

    defaults = params_from_dict({})
    manifest, _ = scan(defaults.data, progress=False)
    splits = split_table(manifest, defaults.split, defaults.seed)
    root = resolve_root(defaults.data.source)
    tdata = training_rows(splits, root)
    test = splits.filter([s == "test" for s in splits["split"].to_pylist()])
    return splits, tdata, rows_of(test, root, tdata.classes), root


def demo_rows(limit: int | None = None):
    """``(usable ELPV manifest rows as dicts, at most limit, data root)``."""
    from unfreeze.config.params import DataParams
    from unfreeze.dataset.rows import ok_rows
    from unfreeze.dataset.scan import scan
    from unfreeze.dataset.sources import resolve_root

    manifest, _ = scan(DataParams(), progress=False)
    return ok_rows(manifest).to_pylist()[:limit], resolve_root("elpv")
