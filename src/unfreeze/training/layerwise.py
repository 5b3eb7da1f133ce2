"""Per-variable learning rates on Keras 3's own optimizers (``finetune.layer_lr_decay``).

Keras 3 applies an optimizer to each variable through ``update_step(gradient, variable,
learning_rate)`` (also inside a distribution strategy's per-replica update, under XLA, and
through the ``LossScaleOptimizer`` of ``mixed_float16``, which wraps the inner optimizer).
:class:`LayerwiseMixin` scales ``learning_rate`` there by the variable's factor, so momentum,
Adam's moments and any schedule behave as for a model with one rate, each variable moving at
its own. Scaling the gradient instead would do nothing under Adam (it is scale-invariant).
"""

from __future__ import annotations

import keras


class LayerwiseMixin:
    """Learning-rate factors per variable path (``lr_multipliers``); others train at 1."""

    def __init__(self, *args, lr_multipliers: dict[str, float] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lr_multipliers = {str(k): float(v) for k, v in (lr_multipliers or {}).items()}
        self._lr_scales: list[float] = []

    def build(self, variables) -> None:
        super().build(variables)
        unknown = set(self.lr_multipliers) - {v.path for v in variables}
        if unknown:  # a factor that would silently not apply is a bug, never ignored
            raise ValueError(f"learning-rate factors for variables this optimizer does not "
                             f"train: {sorted(unknown)[:5]} ({len(unknown)} in all)")
        self._lr_scales = [self.lr_multipliers.get(v.path, 1.0) for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        scale = self._lr_scales[self._get_variable_index(variable)]
        if scale != 1.0:
            learning_rate = keras.ops.multiply(learning_rate, scale)
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self) -> dict:
        return {**super().get_config(), "lr_multipliers": self.lr_multipliers}


@keras.saving.register_keras_serializable(package="unfreeze")
class LayerwiseAdam(LayerwiseMixin, keras.optimizers.Adam):
    """Adam with per-variable learning-rate factors."""


@keras.saving.register_keras_serializable(package="unfreeze")
class LayerwiseSGD(LayerwiseMixin, keras.optimizers.SGD):
    """SGD with per-variable learning-rate factors."""


@keras.saving.register_keras_serializable(package="unfreeze")
class LayerwiseRMSprop(LayerwiseMixin, keras.optimizers.RMSprop):
    """RMSprop with per-variable learning-rate factors."""


LAYERWISE = {keras.optimizers.Adam: LayerwiseAdam, keras.optimizers.SGD: LayerwiseSGD,
             keras.optimizers.RMSprop: LayerwiseRMSprop}
