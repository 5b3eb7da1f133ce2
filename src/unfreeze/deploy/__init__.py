"""Deploy: a trained model used on new files (``predict``: probabilities at the stored
operating point, and Grad-CAM grids) and shipped in other formats (``export``: SavedModel
and TFLite, each checked against the Keras model). Not to be confused with ``unfreeze
serve``, which serves the retrain flow (:mod:`unfreeze.ops`).
"""
