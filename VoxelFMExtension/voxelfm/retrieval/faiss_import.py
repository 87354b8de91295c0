"""Import faiss without its loader's chatter in the user's terminal.

faiss's loader logs, at INFO, each CPU-specific library it tries and fails to load ("Could not load library
with AVX2 support due to: ModuleNotFoundError ..."): noise for a user, whose terminal the CLI sets to INFO.
Those lines are shown only when debug logging is on (`voxelfm -v`).
"""

from __future__ import annotations

import logging
from types import ModuleType

from ..errors import InputError

log = logging.getLogger(__name__)


def import_faiss() -> ModuleType:
    """The faiss module (imported on first use: it is large), or one message saying how to install it."""
    loader_log = logging.getLogger("faiss.loader")
    quiet = loader_log.level == logging.NOTSET and not log.isEnabledFor(logging.DEBUG)
    if quiet:
        loader_log.setLevel(logging.WARNING)
    try:
        import faiss  # imported here, not at the top: the import costs ~0.5 s and retrieval is optional work
    except ImportError as exc:
        raise InputError(
            "Similar-case retrieval needs the 'faiss-cpu' package, a dependency of voxelfm that is missing "
            "here: pip install faiss-cpu"
        ) from exc
    finally:
        if quiet:
            loader_log.setLevel(logging.NOTSET)
    return faiss
