"""Evaluation of a trained state: are samples good *and* of the requested class?

`evaluate_state` combines
- the family's own metrics (VAEs: test negative ELBO and IWAE bound in nats);
- sample metrics under the dataset's reference classifier (domain-classifier
  protocol, as TF-GAN does for MNIST): class accuracy (overall and per class),
  FID and intra-class FID in the classifier's feature space against the test
  split, classifier Inception Score, precision and recall (k = 3), KID (100
  subsets of up to 1000), density and coverage (k = 5);
- the Classification Accuracy Score (Ravuri & Vinyals 2019): the reference
  CNN trained for `cas_steps` steps on the samples and their requested
  labels only, its accuracy on the test split (`cas=False` skips it);
- optionally the Parzen-window log-likelihood of Goodfellow et al. 2014 /
  Mirza & Osindero 2014 (sigma chosen on a validation split of 10,000
  training images, reported on the test split as mean and standard error).

For a model conditioned on attributes (`condition_kind='attributes'`), the
samples are drawn for every combination, seen and held out, and scored by
one reference classifier per attribute, each trained on all combinations:
each attribute's accuracy and the joint accuracy on seen and on held-out
combinations (`metrics.attribute_accuracy`); the metrics above are computed
with the first attribute (the digit) as the class.

For a model conditioned on images (`condition_kind='image'`), the family's
metrics are its own (the test negative conditional log-likelihood of
Sohn et al.'s CVAE and its baseline; pix2pix's L1 and patch metrics), and
the samples are its outputs for the conditions of the first
`num_per_class` test images of each class, scored against those images'
classes: class accuracy says whether an output keeps its input's digit
(`sampling.sample_per_class`).

A streaming dataset (`tfds:NAME`, `condgen_jax.data.streaming`) has no
reference classifier: one trained on a bounded subset would make FID and
class accuracy look comparable to the in-memory sets' while measuring
something weaker. Its evaluation is the family's own metrics on the first
`streaming.NUM_TEST_EXAMPLES` test examples, and `note` says what was
skipped.

`python -m experiments.evaluate` evaluates a run's latest (or best) checkpoint
with it and writes `workdir/eval.json`.
"""

from __future__ import annotations

import json

import jax
import numpy as np

from condgen_jax.core import checkpointing
from condgen_jax.evaluation import classifier as classifier_lib
from condgen_jax.data import datasets as data_lib
from condgen_jax.evaluation import metrics
from condgen_jax.evaluation import sampling
from condgen_jax.data import streaming

# The metrics every evaluation of samples reports, whatever the family, and
# whether smaller or larger is better (for choosing a best checkpoint). The
# Parzen estimate is computed by `experiments.evaluate` only.
SAMPLE_METRIC_MODES = {"fid": "min", "intra_fid": "min", "class_accuracy": "max",
                       "inception_score": "max", "precision": "max",
                       "recall": "max", "kid": "min", "density": "max",
                       "coverage": "max", "cas": "max"}
PARZEN_SIGMAS = tuple(np.geomspace(0.05, 0.5, 10).round(4).tolist())
PARZEN_VALIDATION = 10_000


def metric_modes(family_modes: dict | None = None) -> dict:
  """{metric: 'min' | 'max'} of the metrics a run may keep its best
  checkpoint by: the sample metrics and its family's
  (`family.metric_modes(config)`)."""
  return {**SAMPLE_METRIC_MODES, **(family_modes or {})}


def metric_mode(name: str, family_modes: dict | None = None) -> str:
  modes = metric_modes(family_modes)
  if name not in modes:
    raise ValueError(f"Unknown best_metric {name!r}; expected one of "
                     f"{tuple(modes)}.")
  return modes[name]


def parzen_metrics(samples, dataset: data_lib.Dataset,
                   sigmas=PARZEN_SIGMAS, num_validation=PARZEN_VALIDATION):
  """Parzen log-likelihood of the test split under a window on `samples`."""
  train_images, _ = dataset.split("train")
  test_images, _ = dataset.split("test")
  n_val = min(num_validation, len(train_images) // 6)
  validation = data_lib.to_float(train_images[-n_val:], dataset.max_value)
  test = data_lib.to_float(test_images, dataset.max_value)
  sigma, _ = metrics.select_parzen_sigma(samples, validation, sigmas)
  mean, stderr = metrics.parzen_log_likelihood(samples, test, sigma)
  return {"parzen_log_likelihood": float(mean),
          "parzen_stderr": float(stderr), "parzen_sigma": sigma,
          "parzen_counts": {"samples": len(samples), "validation": n_val,
                            "test": len(test)}}


def reference_classifier(ds: data_lib.Dataset, attribute: str | None = None,
                         data_dir: str | None = None):
  """The dataset's reference classifier: of its label, or of `attribute`
  (default: the first) when the labels are attributes. The first attribute
  is the dataset's label (colored_*: the digit): its classifier is the
  label's. `data_dir`: where a colored dataset's source is, to rebuild it
  with every combination (`classifier.load_or_train_classifier`). None
  for a streaming dataset, which has none (see the module docstring)."""
  if streaming.is_streaming(ds):
    return None
  if ds.attribute_names is not None:
    attribute = attribute or ds.attribute_names[0]
    if attribute == ds.attribute_names[0]:
      ds, attribute = data_lib.labelled_by(ds, attribute), None
  return classifier_lib.load_or_train_classifier(
      ds, verbose=jax.process_index() == 0, attribute=attribute,
      data_dir=data_dir or None)


def attribute_metrics(ds: data_lib.Dataset, fake, requested,
                      classifiers: dict | None = None,
                      data_dir: str | None = None) -> dict:
  """`metrics.attribute_accuracy` of samples `fake` generated for the
  attribute rows `requested` [N, A], by one classifier per attribute
  (`classifiers[name]`, else the reference one)."""
  predicted = []
  for name in ds.attribute_names:
    clf = ((classifiers or {}).get(name)
           or reference_classifier(ds, name, data_dir))
    predicted.append(np.argmax(np.asarray(clf.logits(fake)), -1))
  return metrics.attribute_accuracy(np.stack(predicted, 1), requested,
                                    ds.attribute_names,
                                    ds.attributes.held_out)


def evaluate_state(run, state, *, num_per_class: int, seed: int = 0,
                   classifier=None, parzen: bool = False,
                   family_metrics: bool = True, cas: bool = True,
                   cas_steps: int = metrics.CAS_STEPS,
                   attribute_classifiers: dict | None = None) -> dict:
  """All applicable metrics of `state` (see the module docstring).

  `classifier`: the reference classifier of the label (of the first
  attribute); `attribute_classifiers`: {attribute: classifier}, where
  the reference ones are not wanted.
  `seed` draws the samples, KID's subsets and CAS's classifier training;
  `cas_steps` is the number of training steps of CAS's classifier.
  """
  ds = run.dataset
  results = {}
  if family_metrics:
    results.update(run.family.evaluate(run.settings, state, ds,
                                       jax.random.key(seed)))
  if streaming.is_streaming(ds):
    results["note"] = (
        f"{ds.name} is streamed: no reference classifier, so no sample "
        "metrics (FID, class accuracy, CAS, Parzen ...); family metrics on "
        f"the first {len(ds.test_labels)} test examples.")
    return results
  data_dir = run.settings.data_dir
  classifier = classifier or reference_classifier(ds, data_dir=data_dir)
  fake, fake_labels = sampling.sample_per_class(run, state, num_per_class,
                                                seed)
  real, real_labels = ds.split("test")
  real = data_lib.to_float(real, ds.max_value)
  if ds.attribute_names is not None:
    results.update(attribute_metrics(
        ds, fake, fake_labels,
        {ds.attribute_names[0]: classifier, **(attribute_classifiers or {})},
        data_dir))
    results["attributes"] = list(ds.attribute_names)
    results["held_out"] = [list(c) for c in ds.attributes.held_out]
    # the metrics below treat the first attribute as the class
    fake_labels, real_labels = fake_labels[:, 0], real_labels[:, 0]
    ds = data_lib.labelled_by(ds, ds.attribute_names[0])
  results.update(metrics.evaluate_samples(
      classifier, fake, fake_labels, real, real_labels,
      num_classes=ds.num_classes, seed=seed))
  results["classifier_test_accuracy"] = float(classifier.test_accuracy)
  if cas:
    results["cas"] = metrics.classification_accuracy_score(
        fake, fake_labels, real, real_labels, num_classes=ds.num_classes,
        num_steps=cas_steps, seed=seed)
    results["cas_counts"] = {"train": len(fake), "test": len(real),
                             "steps": cas_steps}
  if parzen:
    results.update(parzen_metrics(fake, ds))
  return results


def scalars(results: dict) -> dict:
  """The float-valued entries of a results dict (for logs and best_fn)."""
  return {k: float(v) for k, v in results.items()
          if isinstance(v, (int, float)) and not isinstance(v, bool)}


def write_results(workdir, results: dict, name: str = "eval.json") -> None:
  """Writes `results` to `workdir/name` atomically (process 0 only)."""
  if jax.process_index() != 0:
    return
  checkpointing.write_text_atomic(checkpointing.as_path(workdir) / name,
                                  json.dumps(results, indent=2,
                                             sort_keys=True))
