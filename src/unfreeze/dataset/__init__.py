"""From a data source to checked rows: ``sources`` (the ELPV demo package, class folders),
``labelfile`` (CSV / Parquet label files, one row per image),
``scan`` (every image checked: the ``prepare`` stage), ``rows`` (usable rows with safe
absolute paths), ``splits`` (the stratified, grouped train/val/test split), ``multisplit``
(its multi-label form: iterative stratification, also for folds) and ``folds``
(cross-validation folds of the non-test pool).

Uses pyarrow, Pillow, NumPy, scikit-learn and iterative-stratification only: never
TensorFlow, Keras or Prefect.
"""
