"""Every row of the README's results table: its config and its commands.

  python -m experiments.report --commands [--only=NAME,...] > rows.sh
  CONDGEN_DATA_DIR=../shared/data bash rows.sh       # trains and evaluates
  python -m experiments.report --readme=README.md    # rewrites the table

Each row runs a config's defaults (the overrides pick a variant or the
dataset) in `<root>/<name>` and is evaluated with `experiments.evaluate`
(1,000 samples per class; the attribute rows 100 per (digit, color)
combination, 6,000 in all; the image rows complete the test split's
images); `report.train_command` / `evaluate_command` are
the exact commands. Published anchors stand beside their rows.
"""

from condgen_jax.families import diffusion as diffusion_training
from condgen_jax.tools.report import Anchor, Row

NO_PARZEN = (("parzen", False),)
FASHION = (("dataset", "fashion_mnist"),)
COLORED = (("dataset", "colored_mnist"), ("condition_kind", "attributes"))
COLORED_EVAL = NO_PARZEN + (("num_per_class", 100),)  # per combination
COLORED_V = COLORED + (("objective", "v"),)

PARZEN_CGAN = Anchor("Parzen 132 ± 1.8 (Mirza & Osindero 2014)",
                     key="parzen_log_likelihood", stderr_key="parzen_stderr")
INFOGAN_ERROR = Anchor("5 % error, i.e. 0.95 matched (Chen et al. 2016)")

# The diffusion rows' label, from the family's defaults (diffusion.py keeps
# them): objective, sampler, its evaluations and the guidance scale.
_D = diffusion_training.OPTIONS
_OBJECTIVE = {"eps": "ε", "v": "v", "flow_matching": "flow matching",
              "edm": "EDM"}


def _diffusion(overrides=()) -> str:
  objective = dict(overrides).get("objective", _D["objective"].default)
  return (f"diffusion ({_OBJECTIVE[objective]}, "
          f"{_D['sampler'].default.upper()} {_D['nfe'].default}, "
          f"w = {_D['guidance_scale'].default:g})")


DIFFUSION = _diffusion()

# MNIST quadrant prediction, test negative CLL in nats, by quadrants given:
# Sohn et al. 2015, Table 1 (NN baseline, CVAE; importance sampling, 100
# samples) and Pyro's reproduction in its CVAE tutorial (NN, CVAE Monte
# Carlo estimate).
SOP_PUBLISHED = {1: {"baseline": (100.03, 100.4), "cvae": (71.18, 71.8)},
                 2: {"baseline": (62.14, 61.9), "cvae": (44.96, 51.0)},
                 3: {"baseline": (20.97, 25.4), "cvae": (20.92, 24.2)}}


def _sop(quadrants_given: int, network: str) -> Row:
  sohn, pyro = SOP_PUBLISHED[quadrants_given][network]
  label = ("CVAE (Sohn et al.'s networks)" if network == "cvae" else
           "deterministic baseline, same widths")
  overrides = (("quadrants_given", quadrants_given),)
  if network != "cvae":
    overrides += (("network", network),)
  return Row(f"mnist_sop_{network}_q{quadrants_given}", label, "cvae_sop.py",
             overrides=overrides, eval_flags=NO_PARZEN,
             anchor=Anchor(f"{sohn} (Sohn et al. 2015); {pyro} (Pyro)"),
             grid=network == "cvae")


def _dcgan(dataset_name: str, conditioning: str, overrides=()) -> Row:
  return Row(f"{dataset_name}_cgan_conv_{conditioning}",
             f"cond. DCGAN, {conditioning} D", "cgan_conv.py",
             overrides=overrides + (("d_conditioning", conditioning),),
             eval_flags=NO_PARZEN)


ROWS = (
    Row("mnist_cvae_learned", "conv CVAE, learned prior", "cvae_conv.py",
        eval_flags=NO_PARZEN),
    Row("mnist_cvae_standard", "conv CVAE, standard prior", "cvae_conv.py",
        overrides=(("prior", "standard"),), eval_flags=NO_PARZEN),
    Row("mnist_cgan_mlp", "CGAN-MLP (Mirza & Osindero)", "cgan_mlp.py",
        anchor=PARZEN_CGAN),
    *(_dcgan("mnist", c) for c in ("projection", "vectorize", "film",
                                   "embed_channel")),
    Row("mnist_acgan", "AC-GAN", "acgan.py", eval_flags=NO_PARZEN),
    Row("mnist_tacgan", "TAC-GAN", "tacgan.py", eval_flags=NO_PARZEN),
    Row("mnist_infogan", "InfoGAN (no labels)", "infogan.py",
        eval_flags=NO_PARZEN, anchor=INFOGAN_ERROR,
        accuracy_key="matched_class_accuracy"),
    Row("mnist_infogan_style", "InfoGAN-style AC-GAN (Shu et al.)",
        "infogan_style.py", eval_flags=NO_PARZEN,
        accuracy_key="matched_class_accuracy"),
    Row("mnist_diffusion", DIFFUSION, "diffusion.py",
        eval_flags=NO_PARZEN),
    # gray levels kept: dynamic binarisation erases what tells shirts,
    # coats and pullovers apart; FiLM in the encoder's and decoder's convs:
    # class accuracy 0.890 against 0.871 with the default vectorize, at a
    # higher FID (docs/cvae_quality.md)
    Row("fashion_mnist_cvae_learned",
        "conv CVAE, learned prior, gray levels, FiLM", "cvae_conv.py",
        overrides=FASHION + (("binarize", False), ("conditioning", "film")),
        eval_flags=NO_PARZEN),
    _dcgan("fashion_mnist", "projection", FASHION),
    Row("fashion_mnist_acgan", "AC-GAN", "acgan.py", overrides=FASHION,
        eval_flags=NO_PARZEN),
    Row("fashion_mnist_diffusion", DIFFUSION,
        "diffusion.py", overrides=FASHION, eval_flags=NO_PARZEN),
    # conditioned on (digit, color) with the default ten combinations held
    # out; the table shows accuracy on seen and on held-out combinations
    Row("colored_mnist_cvae", "conv CVAE, learned prior", "cvae_conv.py",
        overrides=COLORED, eval_flags=COLORED_EVAL),
    Row("colored_mnist_acgan", "AC-GAN, a class head per attribute",
        "acgan.py", overrides=COLORED, eval_flags=COLORED_EVAL),
    # v-prediction: the default eps-prediction drew blotted colored digits,
    # digit accuracy 0.70 against 0.997 (docs/diffusion.md)
    Row("colored_mnist_diffusion", _diffusion(COLORED_V), "diffusion.py",
        overrides=COLORED_V, eval_flags=COLORED_EVAL),
    # conditioned on images: the quadrants of a test digit that are given
    *(_sop(q, n) for q in (1, 2, 3) for n in ("baseline", "cvae")),
    Row("mnist_pix2pix_q1", "pix2pix (U-Net G, PatchGAN D)", "pix2pix.py",
        eval_flags=NO_PARZEN),
)
