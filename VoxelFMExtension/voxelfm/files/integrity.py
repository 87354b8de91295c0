"""Size + sha256 checks for downloaded or bundled files, hashing each file only once.

Checkpoints are hundreds of MB, and every load would otherwise re-hash them. A verified hash is memoised in
a small JSON record keyed on the file's resolved path, size and mtime, kept in our own cache folder rather
than beside the file (the Hugging Face cache and the extension's Resources folder are not ours to litter,
and may be read-only). Any change to size or mtime forces a re-hash, so a replaced or truncated file is
never trusted on the strength of an old record.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..errors import IntegrityError
from .locations import cache_root


def _memo_path(real: Path) -> Path:
    key = hashlib.sha1(str(real).encode("utf-8")).hexdigest()
    return cache_root() / "hash_memo" / f"{key}.json"


def sha256_of(path: str | Path, memo: bool = True, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's content (symlinks followed), memoised on (path, size, mtime)."""
    real = Path(path).resolve()
    st = real.stat()
    stamp = {"path": str(real), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    record = _memo_path(real)
    if memo and record.is_file():
        try:
            data = json.loads(record.read_text())
            if all(data.get(k) == v for k, v in stamp.items()) and len(str(data.get("sha256", ""))) == 64:
                return str(data["sha256"])
        except (OSError, ValueError):
            pass
    h = hashlib.sha256()
    with open(real, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    digest = h.hexdigest()
    if memo:
        try:
            record.parent.mkdir(parents=True, exist_ok=True)
            tmp = record.with_name(f"{record.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({**stamp, "sha256": digest}))
            os.replace(tmp, record)
        except OSError:  # read-only cache: just don't memoise
            pass
    return digest


def verify_file(
    path: str | Path,
    sha256: str | None,
    size: int | None,
    what: str,
    fix: str,
) -> str:
    """Refuse a file whose size or sha256 differs from the expected values; return its actual sha256.

    ``what`` names the file for the user (e.g. "voxelfm-vitb checkpoint vitb_3d/checkpoints/99999.pth");
    ``fix`` says what to do (e.g. "delete it and run the command again to re-download").
    The size is checked first: it is free, and catches truncated downloads before hashing them.
    """
    path = Path(path)
    if not path.is_file():
        raise IntegrityError(f"{what}: {path} is missing or not a file. {fix}")
    actual_size = path.stat().st_size
    if size is not None and actual_size != int(size):
        raise IntegrityError(
            f"{what}: {path} is {actual_size} bytes but {int(size)} were expected (truncated or incomplete "
            f"download, or a different file). It was not loaded. {fix}"
        )
    digest = sha256_of(path)
    if sha256 is not None and digest.lower() != sha256.lower():
        raise IntegrityError(
            f"{what}: {path} failed its sha256 check: expected {sha256.lower()}, got {digest}. The file is "
            f"corrupt or was replaced; it was not loaded. {fix}"
        )
    return digest
