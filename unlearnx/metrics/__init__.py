"""Evaluation metrics: per-split loss/accuracy, membership-inference attacks, the competition score.

See ``docs/metric.md`` for the definitions. Every MIA variant is named, with its direction and ideal
value, in :data:`MIA_INFO`.
"""
from .competition import (  # noqa: F401
    DELTA,
    EPSILON_CAP,
    competition_score,
    epsilon_table,
    forget_epsilons,
    forget_score,
    logit_scaled_confidence,
    max_epsilon,
    points,
)
from .evaluation import evaluate_splits, loss_accuracy, per_example_losses, predict  # noqa: F401,E402
from .mia import MIA_INFO, SVC_FEATURES, entropy_lr_mia, simple_mia, svc_mia, svc_mia_all  # noqa: F401,E402
