"""sha256 of files, with a sidecar memo so multi-hundred-MB checkpoints are hashed once."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def sha256_file(path: str | Path, chunk: int = 1 << 22, memo: bool = True) -> str:
    path = Path(path)
    st = path.stat()
    key = f"{st.st_size}:{st.st_mtime_ns}"
    side = path.with_name(f".{path.name}.sha256")
    if memo and side.is_file():
        try:
            data = json.loads(side.read_text())
            if data.get("key") == key:
                return str(data["sha256"])
        except (OSError, ValueError, KeyError):
            pass
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    digest = h.hexdigest()
    if memo:
        try:
            tmp = side.with_name(side.name + f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"key": key, "sha256": digest}))
            os.replace(tmp, side)
        except OSError:  # read-only location: just don't memoise
            pass
    return digest
