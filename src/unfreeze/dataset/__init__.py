"""From a data source to checked rows: ``sources`` (the ELPV demo package, class folders),
``scan`` (every image checked: the ``prepare`` stage), ``rows`` (usable rows with safe
absolute paths), ``splits`` (the stratified, grouped train/val/test split) and ``folds``
(cross-validation folds of the non-test pool).

Uses pyarrow, Pillow, NumPy and scikit-learn only: never TensorFlow, Keras or Prefect.
"""
