"""Configuration: the typed, validated params of params.yaml and the errors users can cause.

The bottom layer: imported by every other package, imports none of them, and never imports
TensorFlow, Keras or Prefect (``unfreeze check`` validates params in well under a second).
"""
