import json

import jax
import numpy as np
import pytest

from condgen_jax.evaluation import classifier as classifier_lib
from condgen_jax.evaluation import evaluate as evaluation
from condgen_jax.evaluation import metrics
from condgen_jax.evaluation import sampling
from condgen_jax.runner import train
from conftest import tiny_cvae_config


@pytest.fixture(scope="module")
def digits_classifier(digits, tmp_path_factory):
  return classifier_lib.load_or_train_classifier(
      digits, tmp_path_factory.mktemp("cache"), num_steps=300, verbose=False)


def test_metric_mode():
  assert evaluation.metric_mode("fid") == "min"
  assert evaluation.metric_mode("class_accuracy") == "max"
  assert evaluation.metric_mode("kid") == "min"
  for name in ("density", "coverage", "cas"):
    assert evaluation.metric_mode(name) == "max", name
  with pytest.raises(ValueError, match="'sharpness'"):
    evaluation.metric_mode("sharpness")
  assert evaluation.metric_mode("sharpness", {"sharpness": "max"}) == "max"


def test_evaluate_state_reports_every_metric_with_counts(digits,
                                                         digits_classifier):
  run = train.setup(tiny_cvae_config(), digits)
  out = evaluation.evaluate_state(run, run.state, num_per_class=20,
                                  classifier=digits_classifier, parzen=True)
  for key in ("class_accuracy", "fid", "intra_fid", "inception_score",
              "precision", "recall", "kid", "kid_std", "density", "coverage",
              "cas", "parzen_log_likelihood", "test_neg_elbo"):
    assert np.isfinite(out[key]), key
  assert out["num_fake"] == 200 and out["num_real"] == 360
  assert out["sample_counts"]["kid"] == {"fake": 200, "real": 360,
                                         "subsets": 100, "subset_size": 200}
  assert out["sample_counts"]["density"] == {"fake": 200, "real": 360, "k": 5}
  assert out["cas_counts"] == {"train": 200, "test": 360,
                               "steps": metrics.CAS_STEPS}
  assert 0 <= out["cas"] <= 1
  assert len(out["per_class_accuracy"]) == 10
  assert out["parzen_counts"]["samples"] == 200
  assert out["parzen_sigma"] in evaluation.PARZEN_SIGMAS
  json.dumps(out)  # serialisable as is


def test_training_keeps_the_best_checkpoint(tmp_path, digits,
                                            digits_classifier, monkeypatch):
  config = tiny_cvae_config(num_steps=60, eval_every=20, checkpoint_every=20,
                            eval_num_per_class=10, best_metric="fid")
  real = evaluation.evaluate_state
  # CAS (a classifier training, ~3 s) is left out: the choice is by FID.
  monkeypatch.setattr(
      evaluation, "evaluate_state",
      lambda *a, **k: real(*a, **dict(k, classifier=digits_classifier,
                                      cas=False)))
  train.train_and_evaluate(config, tmp_path, digits)
  records = [json.loads(l) for l in
             (tmp_path / "eval_metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records] == [20, 40, 60]
  best_step = min(records, key=lambda r: r["eval/fid"])["step"]
  _, state, step = train.restore_run(tmp_path, best=True, dataset=digits)
  assert step == best_step == int(state.step)


def test_attribute_run_is_scored_per_attribute_on_seen_and_held_out(
    tmp_path_factory):
  config = tiny_cvae_config(dataset="colored_digits",
                            condition_kind="attributes",
                            held_out="7:red,3:blue")
  run = train.setup(config)
  assert run.dataset.num_classes == (10, 6)
  cache = tmp_path_factory.mktemp("cache")
  clfs = {a: classifier_lib.load_or_train_classifier(
      run.dataset, cache, num_steps=300, verbose=False, attribute=a)
          for a in ("digit", "color")}
  out = evaluation.evaluate_state(run, run.state, num_per_class=2,
                                  classifier=clfs["digit"], cas=False,
                                  attribute_classifiers=clfs)
  assert out["num_held_out"] == 2 * 2 and out["num_seen"] == 58 * 2
  assert out["held_out"] == [[7, 0], [3, 2]]
  assert out["attributes"] == ["digit", "color"]
  # the same numbers from the samples, by numpy
  fake, requested = sampling.sample_per_class(run, run.state, 2, seed=0)
  pred = np.stack([np.argmax(clfs[a].logits(fake), -1)
                   for a in ("digit", "color")], 1)
  held = np.array([tuple(r) in {(7, 0), (3, 2)} for r in requested])
  np.testing.assert_allclose(
      out["color_accuracy_held_out"],
      np.mean(pred[held, 1] == requested[held, 1]))
  np.testing.assert_allclose(
      out["joint_accuracy_seen"],
      np.mean(np.all(pred[~held] == requested[~held], 1)))
  # the class metrics take the digit as the class
  np.testing.assert_allclose(out["class_accuracy"],
                             np.mean(pred[:, 0] == requested[:, 0]))
  assert len(out["per_class_accuracy"]) == 10
