"""Integrations with tools tokenprune users already run (optional extras).

- :mod:`tokenprune.integrations.lmms_eval`: an lmms-eval model (``--model tokenprune``), registered through
  lmms-eval's ``lmms_eval.models`` entry-point group by :func:`lmms_eval_manifest`.
"""

LMMS_EVAL_MODEL_ID = "tokenprune"
LMMS_EVAL_CLASS_PATH = "tokenprune.integrations.lmms_eval.TokenPruneLMMS"


def lmms_eval_manifest():
    """The entry-point payload lmms-eval (0.7+) loads from the ``lmms_eval.models`` group."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=LMMS_EVAL_MODEL_ID, simple_class_path=LMMS_EVAL_CLASS_PATH,
                         aliases=("tokenprune_hf",))
