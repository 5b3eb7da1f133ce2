"""Ops: running the pipeline. The DVC command runner (``dvc_runner``), metric snapshots and
summaries (``snapshot``), the Prefect retrain flow (``retrain``), the promoted model scored on
the new test images (``champion``), promotion into releases (``promote``) and their TensorFlow
Serving versions (``serving_layout``), CV folds on Prefect workers through a DVC remote
(``scaleout``), and ``unfreeze sweep``: the search over params (``sweep``), its space, metric
and budget (``sweep_space``), its state and next trial (``sweep_plan``), each trial a DVC
experiment (``sweep_dvc``) and the ranking (``sweep_rank``).

Prefect and DVC subprocesses live here and nowhere below; stages run as subprocesses, so
nothing here imports TensorFlow (a contract in pyproject.toml checks it).
"""
