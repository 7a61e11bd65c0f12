"""Pack a CIFAR-10 JPEG folder into one file that is quick to copy to a GPU machine, and unpack it.

The 60,000 JPEGs hold 52.7 MiB of bytes but cost far more as files (tar: 512 B of header each), so this
stores the raw bytes once, uncompressed (JPEG does not compress further), with each file's path:

    python bench/cifar_pack.py pack PATH/cifar10-jpeg .carry/cifar10-jpeg.npz
    python bench/cifar_pack.py unpack .carry/cifar10-jpeg.npz /tmp/cifar10-jpeg    # on the GPU machine

``unpack`` recreates the files byte for byte and checks the SHA-256 of every file against the one
recorded when packing, so a damaged transfer fails loudly instead of training on broken images.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

from unlearnx.atomic import save_npz, write_bytes


def pack(source: Path, target: Path) -> None:
    files = sorted(p for p in source.rglob("*.jpg") if p.is_file())
    if not files:
        raise SystemExit(f"cifar_pack: no .jpg files under {source}")
    blobs = [p.read_bytes() for p in files]
    names = "\n".join(str(p.relative_to(source)) for p in files).encode()
    offsets = np.cumsum([0] + [len(b) for b in blobs], dtype=np.int64)
    digests = np.frombuffer(b"".join(hashlib.sha256(b).digest() for b in blobs), dtype=np.uint8).reshape(-1, 32)
    save_npz(target, data=np.frombuffer(b"".join(blobs), dtype=np.uint8), offsets=offsets,
             names=np.frombuffer(names, dtype=np.uint8), sha256=digests)
    print(f"packed {len(files)} files, {offsets[-1] / 2**20:.1f} MiB of JPEG bytes -> {target} "
          f"({target.stat().st_size / 2**20:.1f} MiB)")


def unpack(source: Path, target: Path) -> None:
    with np.load(source) as archive:
        data, offsets = archive["data"], archive["offsets"]
        names = archive["names"].tobytes().decode().split("\n")
        digests = archive["sha256"]
    if len(names) + 1 != len(offsets) or len(digests) != len(names):
        raise SystemExit(f"cifar_pack: {source} is inconsistent ({len(names)} names, {len(offsets) - 1} blobs)")
    for i, name in enumerate(names):
        blob = data[offsets[i]:offsets[i + 1]].tobytes()
        if hashlib.sha256(blob).digest() != digests[i].tobytes():
            raise SystemExit(f"cifar_pack: {name} does not match its recorded SHA-256: the pack is damaged")
        path = target / name
        write_bytes(path, blob)
    print(f"unpacked {len(names)} files into {target}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["pack", "unpack"])
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    args = parser.parse_args(argv)
    (pack if args.action == "pack" else unpack)(args.source, args.target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
