"""Deploy: a trained model used on new files (``predict``: probabilities at the stored
operating point, and Grad-CAM grids) and shipped in other formats (``export``: SavedModel
and TFLite, each checked against the Keras model, with the model card written from the
run's reports: ``card``). Not to be confused with ``unfreeze
serve``, which serves the retrain flow (:mod:`unfreeze.ops`).
"""
