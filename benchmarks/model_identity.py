"""Time ``utils.outputs.model_identity`` (the cheap identity a ``--resume`` checks) against a full SHA-256 of every
byte, on a model folder of large safetensors files made here, with the page cache of those files dropped first
(``posix_fadvise(DONTNEED)``: a cold read, as on the first resume after a reboot or on another node), and warm.

    PYTHONPATH=src python benchmarks/model_identity.py --files 3 --gb 1.5 --dir /tmp/identity-bench

Prints per-folder times side by side, the bytes each method read, and the extrapolation to Wan2.2-A14B's 57 GB
(by the bytes each reads: the identity reads a fixed ~2 MiB per large file, the full hash every byte).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from shiftvdm.utils import outputs


def make_model(folder: Path, files: int, size: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    block = np.random.default_rng(0).bytes(64 << 20)
    for i in range(files):
        header = json.dumps({"w": {"dtype": "U8", "shape": [size], "data_offsets": [0, size]}}).encode()
        header += b" " * (-len(header) % 8)
        with open(folder / f"model-{i:05d}-of-{files:05d}.safetensors", "wb") as fh:
            fh.write(len(header).to_bytes(8, "little") + header)
            left = size
            while left:
                n = min(left, len(block))
                fh.write(block[:n])
                left -= n
    (folder / "config.json").write_text('{"_class_name": "Bench"}\n')


def drop_cache(folder: Path) -> None:
    for p in folder.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def full_sha256(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            with open(p, "rb") as fh:
                for block in iter(lambda: fh.read(8 << 20), b""):
                    h.update(block)
    return h.hexdigest()


def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=3)
    parser.add_argument("--gb", type=float, default=1.5, help="size of each large file in GB")
    parser.add_argument("--dir", default="/tmp/identity-bench")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    folder = Path(args.dir)
    size = int(args.gb * 1e9)
    make_model(folder, args.files, size)
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    big = args.files
    per_file = outputs._SAMPLES * outputs._SAMPLE_BYTES + 8 + 100  # sampled ranges + the header
    rows = []
    for label, cold in (("cold", True), ("warm", False)):
        if cold:
            drop_cache(folder)
        t_id = timed(outputs.model_identity, folder)
        if cold:
            drop_cache(folder)
        t_full = timed(full_sha256, folder)
        rows.append((label, t_id, t_full))
    print(f"model folder: {args.files} safetensors files of {size / 1e9:.2f} GB + config.json = {total / 1e9:.2f} GB")
    print(f"{'cache':<6} {'identity s':>11} {'full sha256 s':>14} {'ratio':>7}")
    for label, t_id, t_full in rows:
        print(f"{label:<6} {t_id:>11.3f} {t_full:>14.2f} {t_full / t_id:>7.0f}x")
    cold_id, cold_full = rows[0][1], rows[0][2]
    a14b_bytes, a14b_files = 57e9, 24  # Wan2.2-I2V-A14B diffusers: 2 transformers + umt5-xxl shards + VAE (about 24)
    print(f"identity reads {per_file * big / 1e6:.1f} MB of {total / 1e9:.2f} GB "
          f"({per_file / 1e6:.2f} MB per large file); full hash reads all")
    print(f"A14B (57 GB, ~{a14b_files} large files) extrapolated from the cold figures: identity "
          f"~{cold_id / big * a14b_files:.2f} s (per-file cost x files), full SHA-256 "
          f"~{cold_full / total * a14b_bytes:.0f} s (per-byte cost x bytes)")
    if not args.keep:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
