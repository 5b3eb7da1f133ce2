"""Deploy: a trained model used on new files (``predict``: probabilities at the stored
operating point, and Grad-CAM grids) and shipped in other formats (``export``: SavedModel
and TFLite, each checked against the Keras model, with the model card written from the
run's reports: ``card``), and served over HTTP (``api``: FastAPI routes and the web page in
``web/``; ``api_limits``: its settings, body and upload limits, bearer token; ``serving``:
the loaded release and hot reload; ``batching``: concurrent requests gathered into forward
passes on one model thread; ``api_metrics``: its Prometheus metrics). Not to be confused
with ``unfreeze serve``, which serves the retrain flow (:mod:`unfreeze.ops`).
"""
