"""InceptionV3 base + classification head; weights resolution; unfreezing for phase two;
optimizer, compile and precision policy.

The saved model takes raw pixels (0–255, RGB): InceptionV3's ``preprocess_input`` (scale to
[-1, 1]) is a ``Rescaling`` layer inside the model, and the base is always called with
``training=False`` so its BatchNormalization layers stay in inference mode in both phases.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import keras
from keras import layers

from unfreeze.config.errors import ParamsError, WeightsError
from unfreeze.config.params import INCEPTION_BLOCKS, FinetuneParams, ModelParams, PhaseParams
from unfreeze.training import layerwise, losses, schedules

BASE_NAME = "inception_v3"
PREPROCESS = "preprocess"
# The head's layers, in order; the one definition (feature caching and Grad-CAM call them)
POOL, DROPOUT, HIDDEN, OUTPUT = "pool", "dropout", "hidden", "predictions"
HEAD_LAYERS = (POOL, DROPOUT, HIDDEN, OUTPUT)
WEIGHT_OPTIONS = (
    "set model.weights to one of: `imagenet` (downloaded once by Keras into $KERAS_HOME, needs "
    "network), a path to a local InceptionV3 no-top weights file "
    "(inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5, for air-gapped machines), or "
    "`null` (random initialisation: tests and offline demos)"
)


def build_base(image_size: int, weights: str | None) -> keras.Model:
    """InceptionV3 without its top, with ``weights`` resolved (fails fast, never falls back)."""
    shape = (image_size, image_size, 3)
    if weights is None:
        return keras.applications.InceptionV3(include_top=False, weights=None, input_shape=shape)
    if weights == "imagenet":
        try:
            return keras.applications.InceptionV3(include_top=False, weights="imagenet",
                                                  input_shape=shape)
        except Exception as exc:  # Keras raises a bare Exception on a failed fetch
            raise WeightsError(
                f"model.weights: could not download or verify the ImageNet weights ({exc}). "
                + WEIGHT_OPTIONS
            ) from exc
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsError(f"model.weights: file {weights!r} does not exist. " + WEIGHT_OPTIONS)
    base = keras.applications.InceptionV3(include_top=False, weights=None, input_shape=shape)
    try:
        base.load_weights(str(path))
    except (OSError, ValueError, KeyError) as exc:  # not an HDF5 file, or other layers
        raise WeightsError(
            f"model.weights: {weights!r} is not an InceptionV3 no-top weights file ({exc}). "
            + WEIGHT_OPTIONS
        ) from exc
    return base


def build(params: ModelParams, n_classes: int, multilabel: bool = False) -> keras.Model:
    """The full model: raw pixels → preprocess → frozen base (training=False) → head.

    Head: GlobalAveragePooling2D → Dropout → Dense(hidden, relu) → Dense(n_classes, softmax);
    ``multilabel``: one sigmoid per label instead of the softmax.
    """
    if n_classes < (1 if multilabel else 2):
        raise ValueError(f"n_classes must be >= {1 if multilabel else 2}, got {n_classes}")
    base = build_base(params.image_size, params.weights)
    base.trainable = False
    inputs = keras.Input((params.image_size, params.image_size, 3), name="image")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name=PREPROCESS)(inputs)
    x = base(x, training=False)
    x = layers.GlobalAveragePooling2D(name=POOL)(x)
    x = layers.Dropout(params.dropout, name=DROPOUT)(x)
    x = layers.Dense(params.hidden_units, activation="relu", name=HIDDEN)(x)
    outputs = layers.Dense(n_classes, activation="sigmoid" if multilabel else "softmax",
                           dtype="float32", name=OUTPUT)(x)
    return keras.Model(inputs, outputs, name="unfreeze_inception_v3")


def is_multilabel(model: keras.Model) -> bool:
    """Whether ``model`` (built by :func:`build`, or its part above a cut) ends in sigmoids:
    its last layer's activation."""
    activation = getattr(model.layers[-1], "activation", None)
    return getattr(activation, "__name__", "") == "sigmoid"


def base_of(model: keras.Model) -> keras.Model:
    """The nested InceptionV3 base of a model built by :func:`build`."""
    return model.get_layer(BASE_NAME)


def block_start(base: keras.Model, block: str) -> int:
    """Index of the first layer of inception block ``block`` (e.g. ``mixed9``) in ``base``."""
    names = [layer.name for layer in base.layers]
    if block not in INCEPTION_BLOCKS or block not in names:
        raise ParamsError(
            f"finetune.unfreeze_from: unknown block {block!r}; valid blocks: "
            f"{', '.join(INCEPTION_BLOCKS)} (or a number of top layers)"
        )
    k = INCEPTION_BLOCKS.index(block)
    if k > 0:
        return names.index(INCEPTION_BLOCKS[k - 1]) + 1
    # mixed0 starts right after the stem, whose last layer is the second max-pooling layer
    pools = [i for i, layer in enumerate(base.layers[: names.index(block)])
             if isinstance(layer, layers.MaxPooling2D)]
    return pools[-1] + 1


def unfreeze_start(base: keras.Model, unfreeze_from: str | int) -> int:
    """Index of the first base layer that phase two trains (a block start or top N layers)."""
    if isinstance(unfreeze_from, int):
        if not 1 <= unfreeze_from <= len(base.layers):
            raise ParamsError(f"finetune.unfreeze_from: {unfreeze_from} layers requested, the "
                             f"base has {len(base.layers)}")
        return len(base.layers) - unfreeze_from
    return block_start(base, unfreeze_from)


def unfreeze(model: keras.Model, unfreeze_from: str | int) -> int:
    """Make the base trainable from a block name or for its top N layers; BatchNorm stays frozen.

    Returns the number of base layers that hold trainable weights afterwards.
    """
    base = base_of(model)
    start = unfreeze_start(base, unfreeze_from)
    base.trainable = True
    for i, layer in enumerate(base.layers):
        layer.trainable = i >= start and not isinstance(layer, layers.BatchNormalization)
    return unfrozen_count(model)


def unfrozen_count(model: keras.Model) -> int:
    """The number of base layers that hold trainable weights."""
    return sum(1 for layer in base_of(model).layers if layer.trainable and layer.weights)


def make_optimizer(params: PhaseParams, steps_per_epoch: int | None = None,
                   multipliers: dict[str, float] | None = None) -> keras.optimizers.Optimizer:
    """The phase's optimizer (SGD with Nesterov-free momentum 0.9) at its learning rate or
    schedule (:func:`unfreeze.training.schedules.for_phase`); with ``multipliers``
    (variable path → factor, :func:`layer_multipliers`), per-variable learning rates."""
    learning_rate = schedules.for_phase(params, steps_per_epoch)
    kind = {"sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop,
            "adam": keras.optimizers.Adam}[params.optimizer]
    extra = {"momentum": 0.9} if params.optimizer == "sgd" else {}
    if multipliers:
        return layerwise.LAYERWISE[kind](learning_rate, lr_multipliers=multipliers, **extra)
    return kind(learning_rate, **extra)


def layer_multipliers(model: keras.Model, params: FinetuneParams) -> dict[str, float]:
    """Phase two's learning-rate factor of each trainable variable (by path): 1 for the top
    unfrozen inception block, ``layer_lr_decay ** depth`` for the block ``depth`` below it
    (the stem below mixed0 counts as one block), ``head_lr_mult`` for the head. Empty when
    both are 1 (one rate). Call after :func:`unfreeze`."""
    if params.layer_lr_decay == 1.0 and params.head_lr_mult == 1.0:
        return {}
    base = base_of(model)
    names = [layer.name for layer in base.layers]
    ends = [names.index(b) for b in INCEPTION_BLOCKS if b in names]
    stem_end = block_start(base, INCEPTION_BLOCKS[0]) - 1

    def block(i: int) -> int:
        return -1 if i <= stem_end else next(k for k, end in enumerate(ends) if i <= end)

    trained = [(block(i), layer) for i, layer in enumerate(base.layers)
               if layer.trainable_weights]
    top = max((k for k, _ in trained), default=0)
    out = {v.path: params.layer_lr_decay ** (top - k)
           for k, layer in trained for v in layer.trainable_weights}
    for name in HEAD_LAYERS:
        out.update({v.path: params.head_lr_mult
                    for v in model.get_layer(name).trainable_weights})
    return out


def compile_for(model: keras.Model, params: PhaseParams, jit_compile: bool | str = "auto",
                steps_per_epoch: int | None = None, multipliers: dict[str, float] | None = None,
                soft: bool = False, pos_weight: list[float] | None = None) -> None:
    """Compile for one phase; ``jit_compile``: XLA on, off, or Keras' ``auto``. ``soft``:
    the inputs carry soft targets (:mod:`unfreeze.training.mixing`), the loss is categorical
    cross-entropy with ``label_smoothing``; else integer labels, as the classic recipe.
    A multi-label model (:func:`is_multilabel`) gets binary cross-entropy on multi-hot
    targets, positives weighted per label by ``pos_weight`` (:mod:`~.losses`), and
    ``accuracy`` is then the per-label binary accuracy."""
    if is_multilabel(model):
        loss = losses.multilabel_loss(params.label_smoothing, pos_weight)
        metric = keras.metrics.BinaryAccuracy(name="accuracy")
    else:
        loss = (keras.losses.CategoricalCrossentropy(label_smoothing=params.label_smoothing)
                if soft else "sparse_categorical_crossentropy")
        metric = "accuracy"
    model.compile(optimizer=make_optimizer(params, steps_per_epoch, multipliers), loss=loss,
                  metrics=[metric], jit_compile=jit_compile)


@contextlib.contextmanager
def precision(policy: str) -> Iterator[None]:
    """Build layers under dtype ``policy`` (see :func:`set_precision`), then restore."""
    previous = keras.mixed_precision.global_policy().name
    set_precision(policy)
    try:
        yield
    finally:
        set_precision(previous)


def set_precision(policy: str) -> None:
    """Set Keras' global dtype policy (``float32``, ``mixed_bfloat16``, ``mixed_float16``).

    Layers built afterwards compute in the policy's dtype and keep float32 variables; the
    output layer stays float32 (see :func:`build`), and Keras scales the loss under
    ``mixed_float16``. Saved models carry their layers' policies.
    """
    keras.mixed_precision.set_global_policy(policy)
