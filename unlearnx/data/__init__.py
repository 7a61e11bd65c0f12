"""Data sources, splits and batching.

``load(source)`` detects the source from the path's content (or takes a name):

- ``None`` / ``"digits"``: scikit-learn's bundled digits, the embedded default;
- a competition-layout folder (``retain.csv``, ``forget.csv``, ``validation.csv``, ``images/``);
- an ImageFolder tree with ``train/`` and ``test/`` (e.g. CIFAR-10 as JPEGs);
- torchvision's CIFAR-10 python-pickle folder (``cifar-10-batches-py``);
- ``"torchvision:NAME:ROOT"``: CIFAR-10, CIFAR-100, SVHN, Fashion-MNIST or MNIST read by torchvision's own
  dataset classes from files already under ROOT (see :mod:`unlearnx.data.torchvision_source`).
"""
from __future__ import annotations

from pathlib import Path

from .batches import Batches, LoaderBatches, TensorBatches, as_batches
from .forget import ForgetSpec, select_forget
from .splits import Normalization, Split, Splits

__all__ = ["load", "detect_source", "Splits", "Split", "Normalization", "ForgetSpec", "select_forget",
           "Batches", "TensorBatches", "LoaderBatches", "as_batches", "save_split", "apply_split_file",
           "competition_checkpoint"]


def save_split(splits: Splits, path):
    """Write the forget choice of ``splits`` to a split file (see :mod:`unlearnx.data.split_file`)."""
    from .split_file import save_split as _save

    return _save(splits, path)


def apply_split_file(splits: Splits, path) -> Splits:
    """``splits`` with the forget set of a split file; a clear error if the data differ."""
    from .split_file import apply_split_file as _apply

    return _apply(splits, path)


def competition_checkpoint(path):
    """``original_model.pth`` of a competition folder, or None (also ``Splits.checkpoint``)."""
    from .competition import competition_checkpoint as _checkpoint

    return _checkpoint(path)


def detect_source(source) -> str:
    """Name the kind of ``source``: digits, competition, imagefolder, cifar-pickle or torchvision."""
    if source is None or str(source) == "digits":
        return "digits"
    from .torchvision_source import is_torchvision_source, parse_source

    if is_torchvision_source(str(source)):
        parse_source(str(source))  # a bad name is an error here, before any work
        return "torchvision"
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"data source {str(source)!r} does not exist (use 'digits' for the embedded default)")
    if path.is_dir():
        if (path / "retain.csv").exists() or (path / "forget.csv").exists():
            return "competition"
        if (path / "data_batch_1").exists() or (path / "cifar-10-batches-py" / "data_batch_1").exists():
            return "cifar-pickle"
        if (path / "train").is_dir():
            return "imagefolder"
    raise ValueError(f"cannot tell what kind of data {str(source)!r} is: expected 'digits', a competition folder "
                     "(retain.csv, forget.csv, validation.csv, images/), an ImageFolder tree with train/ and test/, "
                     "a cifar-10-batches-py folder, or torchvision:NAME:ROOT")


def load(source=None, *, forget: ForgetSpec | str | None = None, seed: int = 0, split_file=None,
         cache_dir=None, checkpoint=None) -> Splits:
    """Load ``source`` into :class:`Splits` (deterministic: the same arguments give the same split).

    ``forget`` chooses the forget set, drawn with ``seed``: for sources without one the default is a
    random 10% of train; a competition folder uses its ``forget.csv`` unless ``forget`` is given
    (then it is re-drawn from retain + forget, e.g. ``"groups:15"`` over person_id). ``split_file``
    (a JSON file written by :func:`save_split`) reloads an earlier split exactly and overrides
    ``forget``/``seed``. ``cache_dir`` holds decoded images (default ``$UNLEARNX_CACHE`` or
    ``~/.cache/unlearnx``; ``False`` = no cache). ``checkpoint``, the original model when one is given,
    sets a competition folder's number of classes (default: its ``original_model.pth``; see
    :mod:`unlearnx.data.competition`).
    """
    if forget is not None and not isinstance(forget, ForgetSpec):
        forget = ForgetSpec.parse(forget) if str(forget).strip() else None
    if split_file is not None:
        forget = None  # the file decides; don't let an unrelated spec fail first
    kind = detect_source(source)
    if kind == "digits":
        from .digits import load_digits_splits

        splits = load_digits_splits(forget, seed=seed)
    elif kind == "competition":
        from .competition import load_competition

        splits = load_competition(Path(source), forget=forget, seed=seed, cache_dir=cache_dir, checkpoint=checkpoint)
    elif kind == "imagefolder":
        from .imagefolder import load_imagefolder

        splits = load_imagefolder(Path(source), forget=forget, seed=seed, cache_dir=cache_dir)
    elif kind == "torchvision":
        from .torchvision_source import load_torchvision

        splits = load_torchvision(str(source), forget=forget, seed=seed)
    else:
        from .cifar_pickle import load_cifar_pickle

        splits = load_cifar_pickle(Path(source), forget=forget, seed=seed)
    if split_file is not None:
        from .split_file import apply_split_file

        splits = apply_split_file(splits, split_file)
    return splits
