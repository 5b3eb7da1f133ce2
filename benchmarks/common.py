"""What several benchmarks share: the ELPV demo split, as the stages make it."""

from __future__ import annotations


def demo_split():
    """``(splits table, training data, test rows, data root)`` of ELPV with default params."""
    from unfreeze import data as data_lib
    from unfreeze import train
    from unfreeze.params import params_from_dict
    from unfreeze.scan import scan
    from unfreeze.splits import split_table

    defaults = params_from_dict({})
    manifest, _ = scan(defaults.data, progress=False)
    splits = split_table(manifest, defaults.split, defaults.seed)
    root = data_lib.resolve_root(defaults.data.source)
    tdata = train.training_rows(splits, root)
    test = splits.filter([s == "test" for s in splits["split"].to_pylist()])
    return splits, tdata, train.rows_of(test, root, tdata.classes), root


def demo_rows(limit: int | None = None):
    """``(usable ELPV manifest rows as dicts, at most limit, data root)``."""
    from unfreeze import data as data_lib
    from unfreeze.params import DataParams
    from unfreeze.scan import scan

    manifest, _ = scan(DataParams(), progress=False)
    return data_lib.ok_rows(manifest).to_pylist()[:limit], data_lib.resolve_root("elpv")
