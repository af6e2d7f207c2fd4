"""Moving files through ``device`` calls within the device tool's limits (scripts/GPU.md
quotes them): what a call carries beside the checkout, tar parts that fit it, and the run
bundles a call brings back from ``$OUT``. Used by scripts/train_zoo_gpu.py."""

from __future__ import annotations

import hashlib
import io
import math
import shutil
import subprocess
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CALL_LIMIT_BYTES = 64 * 2**20
CALL_MARGIN_BYTES = 2 * 2**20
TAR_BLOCK = 512
TAR_END_BYTES = 20 * TAR_BLOCK
RETURN_FILES, RETURN_BYTES = 7, 60 * 2**20  # under the limit of files and bytes $OUT brings back (scripts/GPU.md), train.log the last file


def checkout_bytes(repo: Path = REPO) -> int:
    """What every device call sends besides its carried paths: the tracked files and the
    untracked files git does not ignore."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo, capture_output=True, check=True).stdout
    paths = (repo / name for name in listed.decode().split("\0") if name)
    return sum(path.stat().st_size for path in paths if path.is_file())


def tar_bytes(sizes: list[int]) -> int:
    """Size of an uncompressed tar of members of ``sizes`` bytes (a header block each, data
    padded to blocks, and the end-of-archive record)."""
    return sum(TAR_BLOCK + math.ceil(size / TAR_BLOCK) * TAR_BLOCK for size in sizes) + TAR_END_BYTES


def split_into_parts(groups: list[list[tuple[str, bytes]]], limit: int) -> list[list[tuple[str, bytes]]]:
    """Greedy: fill a part until the next group would take its tar over ``limit`` bytes."""
    parts: list[list[tuple[str, bytes]]] = [[]]
    for group in groups:
        if tar_bytes([len(data) for _, data in group]) > limit:
            raise ValueError(f"{group[0][0]} alone needs more than the {limit / 2**20:.1f} MiB a part may take; give a larger --part-mib")
        candidate = parts[-1] + group
        if parts[-1] and tar_bytes([len(data) for _, data in candidate]) > limit:
            parts.append(list(group))
        else:
            parts[-1] = candidate
    return parts


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))


def sha256_bytes(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def bundle(out: Path, names: list[str], folder: Path) -> list[str]:
    """One tar per run folder (``best.pt``, ``card.json``, ``history.jsonl``; ``last.pt`` stays
    on the device) in ``out/bundles``, copied into ``folder`` while a call can bring them back
    (:data:`RETURN_FILES` files, :data:`RETURN_BYTES` bytes). Returns the names left behind,
    for the next call on the warm machine to copy (it prints the command)."""
    kept = out / "bundles"
    kept.mkdir(parents=True, exist_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    left, count, total = [], 0, 0
    for name in names:
        tar = kept / f"{name}.tar"
        with tarfile.open(tar, "w") as archive:
            for file_name in ("best.pt", "card.json", "history.jsonl"):
                archive.add(out / name / file_name, arcname=f"{name}/{file_name}")
        size = tar.stat().st_size
        if count < RETURN_FILES and total + size <= RETURN_BYTES:
            shutil.copyfile(tar, folder / tar.name)
            count, total = count + 1, total + size
        else:
            left.append(name)
    if left:
        print(f"not brought back by this call: {', '.join(left)}; next call on the warm machine: "
              f"cp {' '.join(str(kept / f'{name}.tar') for name in left)} $OUT/")
    return left
