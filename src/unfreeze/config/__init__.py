"""Configuration: the typed, validated params of params.yaml (``params``, checked by ``typed``)
and the errors users can cause (``errors``).

The bottom layer: imported by every other package, imports none of them, and never imports
TensorFlow, Keras or Prefect (``unfreeze check`` validates params in well under a second).
"""
