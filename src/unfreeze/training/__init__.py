"""Training: a model trained by the two-phase recipe and saved with its meta.json.

The tf.data input pipeline (``inputs``) and its decoded-image cache (``cache``, no
TensorFlow: `unfreeze cache` reads it), the InceptionV3 model and
unfreezing (``model``), feature caching (``features``) and the on-disk store of the
activations both phases share (``activations``), the fit loop with dvclive (``fit``),
per-epoch backups (``backup``), distribution strategies (``distribute``), the precision,
XLA and tf.data autotuning decisions for the machine at hand (``hardware``),
learning-rate schedules per step (``schedules``), per-variable learning rates on Keras'
optimizers (``layerwise``), soft targets: label smoothing, MixUp and CutMix (``mixing``),
the multi-label loss with per-label positive weights (``losses``), the two phases
(``recipe``), model files (``artifacts``) and the learning-rate range test of a
phase (``lr_find``). Imports config, io and dataset only.
"""
