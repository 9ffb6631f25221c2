"""The reference classifier: trains on digits, caches, reloads identically."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from condgen_jax.evaluation import classifier
from condgen_jax.data import datasets as data

STEPS = 300  # ~99% on digits in a few seconds of CPU


@pytest.fixture(scope="module")
def digits():
  return data.load_dataset("digits")


def test_cnn_shapes_for_8x8_and_28x28():
  for hw in (8, 28):
    model = classifier.CNN(num_classes=10)
    x = jnp.zeros((3, hw, hw, 1))
    params = model.init(jax.random.key(0), x)
    logits, features = model.apply(params, x)
    assert logits.shape == (3, 10)
    assert features.shape == (3, classifier.FEATURE_DIM)


def test_random_shift_moves_pixels_and_keeps_shape():
  image = jnp.zeros((1, 5, 5, 1)).at[0, 2, 2, 0].set(1.0)
  images = jnp.repeat(image, 64, axis=0)
  shifted = classifier.random_shift(jax.random.key(0), images, 1)
  assert shifted.shape == images.shape
  assert np.allclose(shifted.sum((1, 2, 3)), 1.0)  # centre pixel stays inside
  positions = {tuple(np.argwhere(np.asarray(s[..., 0]))[0]) for s in shifted}
  assert positions <= {(i, j) for i in (1, 2, 3) for j in (1, 2, 3)}
  assert len(positions) > 1
  assert classifier.random_shift(jax.random.key(0), images, 0) is images


def test_train_load_and_reuse(digits, tmp_path, monkeypatch):
  clf = classifier.load_or_train_classifier(digits, tmp_path, num_steps=STEPS,
                                            verbose=False)
  assert clf.test_accuracy > 0.9
  assert clf.num_classes == 10

  info = json.loads((tmp_path / "digits" / classifier.INFO_FILE).read_text())
  assert info["dataset"] == "digits" and info["seed"] == 0
  assert info["num_steps"] == STEPS
  assert info["test_accuracy"] == pytest.approx(clf.test_accuracy)

  x = data.to_float(digits.test_images, digits.max_value)
  logits, features = clf.logits(x), clf.features(x)
  assert logits.shape == (len(x), 10)
  assert features.shape == (len(x), classifier.FEATURE_DIM)
  accuracy = np.mean(np.argmax(logits, -1) == digits.test_labels)
  assert accuracy == pytest.approx(clf.test_accuracy, abs=1e-6)

  # Batching (and last-batch padding) does not change the outputs.
  small = classifier.ReferenceClassifier(clf.params, 10, clf.image_shape,
                                         clf.test_accuracy, batch_size=64)
  np.testing.assert_allclose(small.logits(x), logits, rtol=1e-5, atol=1e-5)

  # Second call: loaded from the cache (training would fail here), same net.
  def no_training(*args, **kwargs):
    raise AssertionError("load_or_train_classifier retrained")

  monkeypatch.setattr(classifier, "train_classifier", no_training)
  again = classifier.load_or_train_classifier("digits", tmp_path,
                                              num_steps=STEPS, verbose=False)
  assert again.test_accuracy == clf.test_accuracy
  np.testing.assert_array_equal(again.logits(x), logits)
  np.testing.assert_array_equal(again.features(x), features)


def test_rejects_bad_inputs(digits):
  clf = classifier.ReferenceClassifier(
      classifier.CNN().init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))[
          "params"], 10, (8, 8, 1), 0.0)
  with pytest.raises(ValueError, match=r"\[N, 8, 8, 1\]"):
    clf.logits(np.zeros((2, 28, 28, 1), np.float32))
  with pytest.raises(ValueError, match="Unknown dataset 'cifar10'"):
    classifier.load_or_train_classifier("cifar10")


def test_attribute_classifiers_of_a_colored_dataset(tmp_path, monkeypatch):
  """One classifier per attribute, each trained on every combination even
  when the run's dataset holds some out."""
  ds = data.load_dataset("colored_digits", held_out=((7, 0), (3, 2)))
  color = classifier.load_or_train_classifier(ds, tmp_path, num_steps=STEPS,
                                              verbose=False, attribute="color")
  digit = classifier.load_or_train_classifier(ds, tmp_path, num_steps=STEPS,
                                              verbose=False)
  assert color.num_classes == 6 and digit.num_classes == 10
  info = json.loads((tmp_path / "colored_digits.color" /
                     classifier.INFO_FILE).read_text())
  assert info["attribute"] == "color"
  x = data.to_float(ds.test_images, ds.max_value)
  colors = ds.attributes.test[:, 1]
  assert np.mean(np.argmax(color.logits(x), -1) == colors) > 0.99
  assert np.mean(np.argmax(digit.logits(x), -1) == ds.test_labels) > 0.9
  red7 = (ds.test_labels == 7) & (colors == 0)  # held out of ds's training
  assert red7.sum() > 0
  assert np.all(np.argmax(color.logits(x[red7]), -1) == 0)
  # the data each classifier trained on holds every combination
  trained_on = []

  def capture(dataset, **kw):
    trained_on.append(dataset)
    return original(dataset, **kw)

  original = classifier.train_classifier
  monkeypatch.setattr(classifier, "train_classifier", capture)
  classifier.load_or_train_classifier(ds, tmp_path / "again", num_steps=2,
                                      verbose=False, attribute="color")
  combos = set(map(tuple, trained_on[0].attributes.train.tolist()))
  assert (7, 0) in combos and (3, 2) in combos and len(combos) == 60
  np.testing.assert_array_equal(trained_on[0].train_labels,
                                trained_on[0].attributes.train[:, 1])
  with pytest.raises(ValueError, match="no attribute 'size'"):
    classifier.load_or_train_classifier(ds, tmp_path, attribute="size")
