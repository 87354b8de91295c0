"""`voxelfm models`: the model registry with cache state and the current default model.
`voxelfm sample-data`: fetch the sample chest CT (+ nodule label) and print where it is.
"""

from __future__ import annotations

import argparse

from .common import command, deferred
from .outputs import add_overwrite_arg


@command("models", deferred("models_run", "run_models"))
def models_arguments(p: argparse.ArgumentParser) -> None:
    """list known models, whether their files are here, and the default model

    List the models in Resources/models.json with their cache state (Hugging Face cache or bundled folder)
    and the model used when none is named.
    """
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="skip size/sha256 checks of present files (hashes are memoised, so checks are cheap after the first)",
    )


@command("sample-data", deferred("models_run", "run_sample_data"))
def sample_data_arguments(p: argparse.ArgumentParser) -> None:
    """fetch the sample chest CT with a nodule label (pyradiomics 3.0.1 archive from PyPI)

    Download (once) the pyradiomics 3.0.1 source archive from PyPI, extract its lung CT cases and their
    nodule labels, verify their sha256, and print the file paths.
    """
    p.add_argument(
        "--out", default=None, help="folder for the files (default: VOXELFM_CACHE_DIR/sample_data)"
    )
    p.add_argument(
        "--case", default="lung1", choices=("lung1", "lung2", "all"), help="lung1 (default), lung2, or all"
    )
    p.add_argument("--archive", default=None, help="a local copy of pyradiomics-3.0.1.tar.gz (offline use)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    add_overwrite_arg(p)
