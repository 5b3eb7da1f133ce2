"""From a data source to checked rows: sources (the ELPV demo package, class folders), the scan
that checks every image (``prepare``), rows with safe absolute paths, the stratified and
grouped train/val/test split, and cross-validation folds.

Uses pyarrow, Pillow, NumPy and scikit-learn only: never TensorFlow, Keras or Prefect.
"""
