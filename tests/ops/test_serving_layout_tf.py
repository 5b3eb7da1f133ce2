"""A real SavedModel, promoted, loads from TF Serving's version folder and predicts as the
Keras model does."""

import json

import keras
import numpy as np
import tensorflow as tf

from unfreeze.ops import promote


def test_the_promoted_saved_model_serves_from_the_version_folder(tmp_path):
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(2, activation="softmax")])

    @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 3], tf.uint8, name="images")])
    def serve(images):
        return {"probabilities": model(tf.cast(images, tf.float32), training=False)}

    bundle = tmp_path / "export"
    bundle.mkdir()
    model.save(bundle / "model.keras")
    (bundle / "meta.json").write_text('{"classes": ["a", "b"]}')
    (bundle / "metrics.json").write_text(json.dumps({"roc_auc": 0.8}))
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve)
    archive.write_out(str(bundle / "saved_model"), verbose=False)

    prod = tmp_path / "production"
    d = promote.promote(bundle, bundle / "metrics.json", prod, promote.Rule("roc_auc", 0.0,
                                                                           "point"))
    assert d.decision == "promoted"
    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    loaded = tf.saved_model.load(str(prod / "serving/unfreeze/1"))
    out = loaded.signatures["serving_default"](images=tf.constant(images))["probabilities"]
    expected = model.predict_on_batch(images.astype(np.float32))
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-6)
    assert out.shape == (4, 2)
