"""Fine-tune (FT): cross-entropy on the retain set only; the forget set is never read.

Default = the organisers' Kaggle template and ``main.py::do_unlearning`` baseline: 1 epoch, SGD lr 1e-3,
momentum 0.9, wd 5e-4, CosineAnnealingLR(T_max=epochs) stepped per epoch, unweighted CE, batch 64.

Other published settings, as presets (``FineTuneRecipe.preset(name)`` in Python, or the same values
with ``--set`` / a recipe file):

- ``starting-kit`` (organisers' CIFAR-10 notebook): ``epochs=5 lr=0.1 retain_batch_size=128`` (cosine, momentum
  0.9, wd 5e-4).
- ``salun`` (SalUn / Unlearn-Sparse ``FT``): ``epochs=10 lr=0.01 retain_batch_size=256 schedule=constant``
  (their MultiStepLR milestones 91/136 never fire within 10 epochs; momentum 0.9, wd 5e-4).
- ``scrub`` (SCRUB repo ``finetune``): ``epochs=10 lr=0.01 momentum=0 schedule=constant``.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..training import class_weights, cosine, cross_entropy, run_epoch, sgd
from .base import Recipe, one_of, register

PRESETS = {
    "kaggle": {},
    "starting-kit": dict(epochs=5, lr=0.1, retain_batch_size=128),
    "salun": dict(epochs=10, lr=0.01, retain_batch_size=256, schedule="constant"),
    "scrub": dict(epochs=10, lr=0.01, momentum=0.0, schedule="constant"),
}


@dataclass
class FineTuneRecipe(Recipe):
    source = ("organisers' Kaggle template (kaggle.com/code/eleni30fillou/run-unlearn-finetune) and "
              "google-deepmind/unlearning_evaluation main.py::do_unlearning")
    uncertain = "nothing: the organisers' code is public (class_weighted is an option, off in every baseline)"
    deviations = ()
    limits = {"schedule": one_of("cosine", "constant")}

    # Organisers' Kaggle template / main.py::do_unlearning.
    epochs: int = 1
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"           # "cosine" (T_max = epochs, stepped per epoch) or "constant"
    class_weighted: bool = False       # CE weighted 1/N_c by retain counts (not in any baseline; an option)
    retain_batch_size: int = 64        # 0 keeps the batches as given

    @classmethod
    def preset(cls, name: str, **overrides) -> "FineTuneRecipe":
        if name not in PRESETS:
            raise ValueError(f"unknown finetune preset {name!r}; choose one of {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})


def _finetune(model: nn.Module, ctx, r: FineTuneRecipe) -> None:
    size = r.retain_batch_size  # 0: keep the batches as given
    retain = ctx.retain if size in (0, ctx.retain.batch_size) else ctx.retain.rebatch(size, shuffle=True)
    optimizer = sgd(model.parameters(), r.lr, r.momentum, r.weight_decay)
    scheduler = cosine(optimizer, r.epochs) if r.schedule == "cosine" else None
    loss = cross_entropy(class_weights(ctx.class_counts()) if r.class_weighted else None)
    for epoch in range(r.epochs):
        run_epoch(model, retain, optimizer, loss, progress=ctx.progress,
                  description=f"finetune epoch {epoch + 1}/{r.epochs}", amp_dtype=ctx.amp_dtype)
        if scheduler is not None:
            scheduler.step()  # per epoch, as the template does


register("finetune", origin="baseline (organisers' Kaggle template)",
         summary="cross-entropy on the retain set only (1 epoch, SGD 1e-3, cosine)",
         recipe=FineTuneRecipe)(_finetune)
