"""Deploy: a trained model used on new files (``predict``: probabilities and Grad-CAM at the
stored operating point) and shipped in other formats (``export``: SavedModel and TFLite,
each checked against the Keras model). Not to be confused with ``unfreeze serve``, which
serves the retrain flow (:mod:`unfreeze.ops`).
"""
