"""Ops: running the pipeline. The DVC command runner (``dvc_runner``), metric snapshots and
summaries (``snapshot``), the Prefect retrain flow (``retrain``), the promoted model scored on
the new test images (``champion``), promotion into releases (``promote``) and CV folds on
Prefect workers through a DVC remote (``scaleout``).

Prefect and DVC subprocesses live here and nowhere below; stages run as subprocesses, so
nothing here imports TensorFlow (a contract in pyproject.toml checks it).
"""
