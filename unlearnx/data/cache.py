"""Decode image files once into one uint8 tensor, and keep it on disk.

``cached_images(paths)`` returns ``[N, 3, H, W]`` uint8 for a list of image files. The first call decodes
(JPEGs in batches with ``torchvision.io.decode_jpeg``, other formats with ``decode_image``, Pillow as a
last resort) and writes the tensor under the cache folder; later calls with the same files (same
absolute paths, sizes and modification times) read it back without decoding anything.

Cache folder: the ``cache_dir`` argument, else ``$UNLEARNX_CACHE``, else ``~/.cache/unlearnx``.
``cache_dir=False`` turns the cache off.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import torch
from torch import Tensor

from ..atomic import torch_save

CACHE_FORMAT = 1  # bump when the decoded layout changes, so old entries are not reused
JPEG_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".jfif"}
_JPEG_BATCH = 2048


def default_cache_dir() -> Path:
    env = os.environ.get("UNLEARNX_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "unlearnx"


def resolve_cache_dir(cache_dir) -> Path | None:
    """``None`` -> the default folder; ``False`` -> no cache; anything else -> that folder."""
    if cache_dir is False:
        return None
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def files_key(paths: list[str], namespace: str) -> str:
    """A fingerprint of the file list: absolute paths, sizes and modification times (no reading)."""
    h = hashlib.sha256(f"{namespace}\0{CACHE_FORMAT}\0{len(paths)}\0".encode())
    parts = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError as exc:
            raise FileNotFoundError(f"cannot read image {path}: {exc.strerror or exc}") from None
        parts.append(f"{os.path.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}\n")
    h.update("".join(parts).encode())
    return h.hexdigest()[:32]


def _read_all(paths: list[str]) -> list[bytearray]:
    # A plain loop: with files in the page cache a thread pool costs 4x the CPU for no gain.
    return [_read_bytes(path) for path in paths]


def _read_bytes(path: str) -> bytearray:
    """The file's bytes in a writable buffer, so ``torch.frombuffer`` needs no copy."""
    try:
        with open(path, "rb", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            data = bytearray(size)
            if f.readinto(data) != size:
                raise OSError(f"file changed size while reading ({size} bytes expected)")
            return data
    except OSError as exc:
        raise FileNotFoundError(f"cannot read image {path}: {exc.strerror or exc}") from None


def _as_tensor(data: bytearray) -> Tensor:
    if not data:  # frombuffer rejects empty buffers; an empty file then fails to decode with its name
        return torch.empty(0, dtype=torch.uint8)
    return torch.frombuffer(data, dtype=torch.uint8)


def _torchvision_decoders():
    """``(decode_jpeg, decode_image, ImageReadMode)``, or None where torchvision no longer has them."""
    try:
        from torchvision.io import ImageReadMode, decode_image, decode_jpeg
    except ImportError:
        return None
    return decode_jpeg, decode_image, ImageReadMode


def _decode_one(data: bytearray, path: str) -> Tensor:
    decoders = _torchvision_decoders()
    if decoders is not None:
        _, decode_image, mode = decoders
        try:
            return decode_image(_as_tensor(data), mode=mode.RGB)
        except Exception:
            pass
    try:  # formats torchvision cannot decode (BMP, TIFF, ...)
        import io

        import numpy as np
        from PIL import Image

        with Image.open(io.BytesIO(bytes(data))) as img:
            array = np.asarray(img.convert("RGB"))
        return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()
    except Exception as exc:
        raise ValueError(f"cannot decode image {path}: {type(exc).__name__}: {exc}") from None


def decode_files(paths: list[str]) -> list[Tensor]:
    """Decode every file to a uint8 ``[3, H, W]`` tensor (RGB; grey and RGBA are converted)."""
    paths = [os.fspath(p) for p in paths]
    datas = _read_all(paths)
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its decoders (one warning per call); they are still the fastest here
        warnings.filterwarnings("ignore", message=".*decoding and encoding capabilities of TorchVision",
                                category=DeprecationWarning)
        return _decode_all(paths, datas)


def _decode_all(paths: list[str], datas: list[bytearray]) -> list[Tensor]:
    out: list[Tensor | None] = [None] * len(paths)
    decoders = _torchvision_decoders()
    jpegs = [i for i, p in enumerate(paths) if os.path.splitext(p)[1].lower() in JPEG_SUFFIXES]
    if decoders is None:
        jpegs = []  # Pillow for everything
    else:
        decode_jpeg, _, ImageReadMode = decoders
    for lo in range(0, len(jpegs), _JPEG_BATCH):  # batched: ~1.5x faster than one call per file
        chunk = jpegs[lo:lo + _JPEG_BATCH]
        tensors = [_as_tensor(datas[i]) for i in chunk]
        try:
            decoded = decode_jpeg(tensors, mode=ImageReadMode.RGB)
        except Exception:  # one bad file fails the batch; decode one by one to name it
            decoded = [_decode_one(datas[i], paths[i]) for i in chunk]
        for i, image in zip(chunk, decoded):
            out[i] = image
    for i, image in enumerate(out):
        if image is None:
            out[i] = _decode_one(datas[i], paths[i])
    return out  # type: ignore[return-value]


def stack_same_size(images: list[Tensor], paths: list[str]) -> Tensor:
    """One ``[N, 3, H, W]`` tensor; an image whose size differs from the first is named in the error."""
    if not images:
        return torch.empty((0, 3, 0, 0), dtype=torch.uint8)
    shape = images[0].shape
    for image, path in zip(images, paths):
        if image.shape != shape:
            raise ValueError(f"image {path} is {image.shape[2]}x{image.shape[1]} pixels but {paths[0]} is "
                             f"{shape[2]}x{shape[1]}: all images of a source must have the same size")
    return torch.stack(images)


def _decode_stack(paths: list[str]) -> Tensor:
    return stack_same_size(decode_files(paths), paths)


def cached_images(paths: list[str], *, namespace: str, cache_dir=None) -> Tensor:
    """Decoded ``[N, 3, H, W]`` uint8 images of ``paths``, from the cache when the files are unchanged."""
    paths = [os.fspath(p) for p in paths]
    folder = resolve_cache_dir(cache_dir)
    if folder is None:
        return _decode_stack(paths)
    from ..fingerprint import data_fingerprint

    key = files_key(paths, f"{namespace}\0{data_fingerprint()}")
    entry = folder / f"images-{key}.pt"
    if entry.exists():
        try:
            saved = torch.load(entry, map_location="cpu", weights_only=True)
            images = saved["images"]
            if saved.get("key") == key and images.dtype == torch.uint8 and images.shape[0] == len(paths):
                return images
        except Exception as exc:  # a truncated or foreign file: decode again and overwrite it
            warnings.warn(f"ignoring unreadable image cache {entry} ({type(exc).__name__}: {exc})", stacklevel=2)
    images = _decode_stack(paths)
    try:
        from ..cache_index import entry_meta, write_sidecar

        write_sidecar(entry, entry_meta("images", key, {"code": data_fingerprint(), "scope": "data",
                                                         "torch": torch.__version__}, namespace=namespace,
                                        count=len(paths)))
        torch_save({"key": key, "namespace": namespace, "images": images}, entry)
    except OSError as exc:  # a read-only cache folder must not stop loading
        warnings.warn(f"cannot write image cache {entry}: {exc}", stacklevel=2)
    return images

