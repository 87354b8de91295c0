"""Turn a model id, registry entry or local path into verified files on disk.

Hub models go through ``huggingface_hub`` into the standard Hugging Face cache, so weights downloaded by
other tools (or copied from another machine) are reused. Everything is verified before its path is handed
out: size first (a truncated download is refused, never loaded), then sha256 where the registry knows it.
Offline (HF_HUB_OFFLINE=1) or with the Hub unreachable, the user gets one message saying what to fetch,
from where, where to put it, and which bundled model works without it.
"""

from __future__ import annotations

import inspect
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import CancelledError, InputError, ModelNotAvailableError, VoxelFMError
from ..files.integrity import sha256_of, verify_file
from ..progress import CancelFlag, ProgressFn, check_cancel, no_progress
from .registry import ModelEntry, Registry, bundled_dir, default_model_id, load_registry

log = logging.getLogger(__name__)

FALLBACK_MODEL = "voxelfm-tiny"
_TRUE = ("1", "true", "yes", "on")
_warned: set[tuple[str, str]] = set()
PROBE_TIMEOUT_S = 3.0  # one TCP connect to the Hub (or the proxy) before any download
PROBE_MEMO_S = 60.0  # a probe result is reused this long (the default policy may ask several times)
DOWNLOAD_SHARE = 0.9  # of a download's progress bar; sha256 verification takes the rest
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
_probe_memo: dict[tuple[str, int], tuple[float, str]] = {}


@dataclass
class ResolvedModel:
    """Verified local files of one model and where they came from (recorded with features and probes)."""

    id: str
    files: dict[str, Path]
    revision: str | None
    sha256s: dict[str, str]  # actual sha256 of each file in use
    format: str
    source: str  # "hub-cache" | "hub-download" | "bundled" | "local-path"
    verified: bool = False  # every file matched a sha256 from the registry
    warnings: list[str] = field(default_factory=list)

    @property
    def weights(self) -> Path:
        return self.files.get("checkpoint") or self.files["weights"]

    @property
    def config(self) -> Path | None:
        return self.files.get("config")

    def model_info(self) -> dict[str, Any]:
        role = "checkpoint" if "checkpoint" in self.files else "weights"
        return {
            "id": self.id,
            "revision": self.revision,
            "sha256": self.sha256s.get(role),
            "source": self.source,
        }


@dataclass
class CacheState:
    """Whether a registry model's files are on this machine (for `voxelfm models` and the default policy)."""

    present: bool  # all files are on disk
    available: bool  # present, or downloadable now (hub and not offline)
    status: str  # short human-readable state
    files: dict[str, Path | None]


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or VOXELFM_OFFLINE) read at call time, not at huggingface_hub import time."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "VOXELFM_OFFLINE"))


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, resolved like huggingface_hub does but at call time (HF_HUB_CACHE, HF_HOME)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def hub_endpoint() -> str:
    """The Hub URL huggingface_hub would use (HF_ENDPOINT read at call time)."""
    endpoint = os.environ.get("HF_ENDPOINT", "").strip()
    if endpoint:
        return endpoint.rstrip("/")
    from huggingface_hub import constants  # huggingface_hub (~0.3 s) only when the hub is used

    return str(constants.ENDPOINT).rstrip("/")


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def connect_probe(host: str, port: int, timeout: float) -> str:
    """ "" if ``host:port`` accepts a TCP connection within ``timeout`` s, else what went wrong."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return ""
    except OSError as exc:
        what = "timed out" if isinstance(exc, socket.timeout) else (exc.strerror or type(exc).__name__)
        return what.lower()


probe = connect_probe  # tests replace this one name (they never reach the network)


def hub_unreachable_reason(endpoint: str | None = None, timeout: float = PROBE_TIMEOUT_S) -> str:
    """ "" if the Hub (or the HTTPS proxy) accepts a TCP connection within ``timeout`` s, else why not (one line).

    WHY: huggingface_hub retries a refused or timed-out request five times with backoff (about 25 s and a
    warning per retry and per file); one short connect first lets an offline machine say so at once.
    """
    endpoint = endpoint or hub_endpoint()
    proxy = next((os.environ[v] for v in _PROXY_VARS if os.environ.get(v, "").strip()), "")
    host, port = _host_port(proxy or endpoint)
    now = time.monotonic()
    memo = _probe_memo.get((host, port))
    if memo is not None and now - memo[0] < PROBE_MEMO_S:
        return memo[1]
    failure = probe(host, port, timeout)
    via = f" (through the proxy {host}:{port})" if proxy else ""
    reason = (
        f"the Hugging Face Hub {endpoint}{via} is unreachable ({failure} within {timeout:g} s)"
        if failure
        else ""
    )
    _probe_memo[(host, port)] = (now, reason)
    return reason


def repo_cache_folder(repo_id: str) -> Path:
    return hf_cache_dir() / ("models--" + repo_id.replace("/", "--"))


def _cached_path(entry: ModelEntry, filename: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache  # as above: hub only when used

    found = try_to_load_from_cache(
        entry.hub_repo, filename, cache_dir=hf_cache_dir(), revision=entry.revision
    )
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


def _commit_of(path: Path, entry: ModelEntry) -> str | None:
    """The snapshot folder name (= the commit actually in use, even when the registry says "main")."""
    snaps = repo_cache_folder(entry.hub_repo or "") / "snapshots"
    try:
        return path.relative_to(snaps).parts[0]
    except ValueError:
        return entry.revision


def cache_state(entry: ModelEntry, registry: Registry | None = None, verify: bool = False) -> CacheState:
    """Cheap presence check; with ``verify`` also size/sha256 (memoised) of present files."""
    files: dict[str, Path | None] = {}
    if entry.source == "bundled":
        folder = bundled_dir(entry, registry)
        for role, f in entry.files.items():
            files[role] = folder / f.path if (folder / f.path).is_file() else None
    else:
        for role, f in entry.files.items():
            files[role] = _cached_path(entry, f.path)
    present = all(p is not None for p in files.values())
    kind = "bundled" if entry.source == "bundled" else "cached"
    if present:
        status = f"{kind}, hash unknown" if not entry.verified else kind
        if verify:
            try:
                for role, f in entry.files.items():
                    verify_file(files[role], f.sha256, f.size, f"{entry.id} {role}", "")  # type: ignore[arg-type]
                status = f"{kind} & verified" if entry.verified else f"{kind}, hash unknown"
            except VoxelFMError:
                status = f"{kind}, FAILED integrity check"
        return CacheState(present=True, available=True, status=status, files=files)
    if entry.source == "bundled":
        return CacheState(present=False, available=False, status="bundled, missing", files=files)
    offline = hub_offline()
    return CacheState(
        present=False,
        available=not offline,
        status="not cached (offline)" if offline else "not cached (downloads on first use)",
        files=files,
    )


def not_available_message(entry: ModelEntry, missing: list[str], cause: str) -> str:
    """One message: what to download, from where, where to put it, and the offline fallback."""
    cache = repo_cache_folder(entry.hub_repo or "")
    rev = entry.revision or "main"
    pinned = "" if entry.revision_pinned else " (revision not pinned: no commit is recorded in models.json)"
    lines = [
        f"Model {entry.id!r} ({entry.name}) is not available: {', '.join(missing)} not in the Hugging Face cache "
        f"and {cause}.",
        f"Get it from the Hugging Face Hub repo {entry.hub_repo}, revision {rev}{pinned}, files: "
        + ", ".join(f.path for f in entry.files.values())
        + ".",
        f"  On a machine with internet: hf download {entry.hub_repo} "
        + " ".join(f.path for f in entry.files.values())
        + f" --revision {rev}",
        f"  then copy its cache folder to {cache} on this machine (files end up under "
        f"{cache}/snapshots/<commit>/<file>, with refs/{rev} naming the commit; HF_HOME / HF_HUB_CACHE move it);",
        f"  or save the files into one folder (keep the repo layout, e.g. {entry.files[entry.weights_role].path}) "
        "and pass that folder: --model /path/to/folder.",
        f"Without it, use the bundled offline model: --model {FALLBACK_MODEL}.",
    ]
    return "\n".join(lines)


def _fix_hint_hub(entry: ModelEntry, path: Path) -> str:
    real = path.resolve()
    hint = f"Delete {path} and {real} from the Hugging Face cache and run again to download it afresh."
    if not entry.revision_pinned:
        hint += (
            f" If {entry.hub_repo} was updated since models.json was written (revision {entry.revision!r} is not "
            "pinned), update the sha256/size in models.json or pass the older file with --model PATH."
        )
    return hint


def _warn_unverified(entry_id: str, filename: str, digest: str, why: str) -> str:
    msg = (
        f"{entry_id}: {filename} is UNVERIFIED ({why}); using it anyway. sha256 of the file in use: {digest} "
        "(recorded with features and probes)."
    )
    if (entry_id, filename) not in _warned:
        _warned.add((entry_id, filename))
        log.warning(msg)
    return msg


def _resolve_hub(entry: ModelEntry, progress: ProgressFn, cancel: CancelFlag | None = None) -> ResolvedModel:
    files: dict[str, Path] = {}
    downloaded = False
    missing = [f.path for f in entry.files.values() if _cached_path(entry, f.path) is None]
    if missing and hub_offline():
        raise ModelNotAvailableError(
            not_available_message(entry, missing, "HF_HUB_OFFLINE=1 forbids downloading")
        )
    unreachable = hub_unreachable_reason() if missing else ""
    if unreachable:
        raise ModelNotAvailableError(not_available_message(entry, missing, unreachable))
    n = len(entry.files)
    for i, (role, f) in enumerate(entry.files.items()):
        cached = _cached_path(entry, f.path)
        if cached is not None:
            files[role] = cached
            continue
        check_cancel(cancel)
        progress(DOWNLOAD_SHARE * i / n, f"downloading {f.path} from {entry.hub_repo}")
        files[role] = _download(entry, f.path, missing, _file_progress(progress, i, n, f.path), cancel)
        downloaded = True
    if downloaded:  # downloads took [0, DOWNLOAD_SHARE] of the bar; verification takes the rest
        progress = _scaled(progress, DOWNLOAD_SHARE, 1.0)
    return _verify(entry, files, "hub-download" if downloaded else "hub-cache", progress, _fix_hint_hub)


def _scaled(progress: ProgressFn, low: float, high: float) -> ProgressFn:
    return lambda fraction, message="": progress(low + (high - low) * fraction, message)


def _file_progress(progress: ProgressFn, index: int, count: int, name: str) -> ProgressFn:
    """Progress of one file's download as its share of the download part of the bar."""
    scaled = _scaled(progress, DOWNLOAD_SHARE * index / count, DOWNLOAD_SHARE * (index + 1) / count)
    return lambda fraction, message="": scaled(fraction, message or f"downloading {name}")


def _tqdm_reporting(progress: ProgressFn, cancel: CancelFlag | None):
    """A tqdm class for huggingface_hub that reports bytes as progress and stops when ``cancel`` is set."""
    from tqdm.auto import tqdm  # a download bar only for headless downloads (the model panel has its own)

    class Reporting(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = False
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            check_cancel(
                cancel
            )  # raises CancelledError inside the download; the partial file is kept to resume
            out = super().update(n)
            if self.total:
                progress(
                    min(1.0, self.n / self.total),
                    f"downloaded {self.n / 1e6:.0f} of {self.total / 1e6:.0f} MB",
                )
            return out

    return Reporting


def _download(
    entry: ModelEntry,
    filename: str,
    missing: list[str],
    progress: ProgressFn = no_progress,
    cancel: CancelFlag | None = None,
) -> Path:
    from huggingface_hub import hf_hub_download  # as above: hub only when used

    extra = {}
    if "tqdm_class" in inspect.signature(hf_hub_download).parameters:  # huggingface_hub >= 0.25
        extra["tqdm_class"] = _tqdm_reporting(progress, cancel)
    try:
        path = hf_hub_download(
            entry.hub_repo,
            filename,
            revision=entry.revision,
            cache_dir=hf_cache_dir(),
            local_files_only=hub_offline(),
            **extra,
        )
    except (KeyboardInterrupt, CancelledError):
        raise
    except Exception as exc:  # connection, DNS, proxy, 401/404, gated repo...: all mean "not available here"
        detail = (str(exc).strip().splitlines() or ["no details"])[0][:300]
        cause = f"downloading it failed ({type(exc).__name__}: {detail})"
        raise ModelNotAvailableError(not_available_message(entry, missing, cause)) from exc
    return Path(path)


def _verify(
    entry: ModelEntry, files: dict[str, Path], source: str, progress: ProgressFn, fix_hint
) -> ResolvedModel:
    sha256s: dict[str, str] = {}
    warnings: list[str] = []
    n = len(files)
    for i, (role, path) in enumerate(files.items()):
        f = entry.files[role]
        progress((i + 0.5) / n, f"verifying {f.path}")
        sha256s[role] = verify_file(
            path, f.sha256, f.size, f"{entry.id} {role} {f.path}", fix_hint(entry, path)
        )
        if f.sha256 is None:
            why = "models.json records no sha256 for it"
            if entry.source == "hub" and not entry.revision_pinned:
                why += f" and revision {entry.revision!r} is not pinned"
            warnings.append(_warn_unverified(entry.id, f.path, sha256s[role], why))
    progress(1.0, f"{entry.id} ready")
    revision = _commit_of(next(iter(files.values())), entry) if entry.source == "hub" else entry.revision
    return ResolvedModel(
        id=entry.id,
        files=files,
        revision=revision,
        sha256s=sha256s,
        format=entry.format,
        source=source,
        verified=entry.verified,
        warnings=warnings,
    )


def _resolve_bundled(entry: ModelEntry, registry: Registry, progress: ProgressFn) -> ResolvedModel:
    folder = bundled_dir(entry, registry)
    missing = [f.path for f in entry.files.values() if not (folder / f.path).is_file()]
    if missing:
        raise ModelNotAvailableError(
            f"Bundled model {entry.id!r} is incomplete: {', '.join(missing)} missing in {folder}. Reinstall the "
            "extension (or, from a source checkout, recreate it with `voxelfm pretrain`), or pass another model "
            "with --model ID|PATH."
        )
    files = {role: folder / f.path for role, f in entry.files.items()}

    def fix(_entry: ModelEntry, path: Path) -> str:
        return "The bundled model files were modified or damaged: reinstall the extension."

    return _verify(entry, files, "bundled", progress, fix)


def _find_local_files(path: Path) -> tuple[dict[str, Path], str]:
    """Roles and format of a user-supplied checkpoint file or model folder."""
    if path.is_file():
        if path.suffix == ".safetensors":
            cfg = path.with_name("config.json")
            return {"weights": path, **({"config": cfg} if cfg.is_file() else {})}, "voxelfm-safetensors"
        if path.suffix in (".pth", ".pt"):
            # official layout: <run>/config.yaml beside <run>/checkpoints/<iter>.pth, or config.yaml beside the file
            for cfg in (path.with_name("config.yaml"), path.parent.parent / "config.yaml"):
                if cfg.is_file():
                    return {"checkpoint": path, "config": cfg}, "official-pth"
            return {"checkpoint": path}, "official-pth"
        raise InputError(
            f"{path}: unknown checkpoint type {path.suffix!r}; expected .pth (official) or .safetensors."
        )
    if path.is_dir():
        st = path / "model.safetensors"
        if not st.is_file():
            cands = sorted(path.glob("*.safetensors"))
            st = cands[0] if len(cands) == 1 else st
        if st.is_file():
            return _find_local_files(st)
        pths = sorted(path.glob("*.pth")) + sorted((path / "checkpoints").glob("*.pth"))
        pths += sorted(
            path.glob("*/checkpoints/*.pth")
        )  # a downloaded repo folder: vitb_3d/checkpoints/99999.pth
        if pths:
            best = max(pths, key=lambda p: (int(p.stem) if p.stem.isdigit() else -1, p.name))
            files, fmt = _find_local_files(best)
            if "config" not in files and (path / "config.yaml").is_file():
                files["config"] = path / "config.yaml"
            return files, fmt
        raise InputError(
            f"{path}: no model found (expected model.safetensors + config.json, or a .pth checkpoint with "
            "config.yaml, e.g. the repo layout vitb_3d/config.yaml + vitb_3d/checkpoints/99999.pth)."
        )
    raise InputError(f"{path} does not exist.")


def _resolve_local(path: Path, progress: ProgressFn) -> ResolvedModel:
    files, fmt = _find_local_files(path)
    sha256s = {}
    for i, (role, p) in enumerate(files.items()):
        progress(i / len(files), f"hashing {p.name}")
        sha256s[role] = sha256_of(p)
    progress(1.0, "model files found")
    return ResolvedModel(
        id=str(path.resolve()), files=files, revision=None, sha256s=sha256s, format=fmt, source="local-path"
    )


def resolve_model_files(
    model: str | Path | ModelEntry,
    progress: ProgressFn | None = None,
    registry: Registry | None = None,
    cancel: CancelFlag | None = None,
) -> ResolvedModel:
    """Local, verified files for a registry id / entry, or for a checkpoint file or model folder path.

    Raises ModelNotAvailableError (offline / not downloadable, with instructions), IntegrityError (size or
    sha256 mismatch: the file is never handed to a loader), InputError (unknown id, unusable path).
    """
    progress = progress or no_progress
    if isinstance(model, ModelEntry):
        entry, reg = model, registry or load_registry()
    else:
        path = Path(model).expanduser()
        if path.exists():
            return _resolve_local(path, progress)
        reg = registry or load_registry()
        entry = reg.get(str(model))
    if entry.source == "bundled":
        return _resolve_bundled(entry, reg, progress)
    return _resolve_hub(entry, progress, cancel)


def resolve_default_model(
    progress: ProgressFn | None = None, registry: Registry | None = None
) -> tuple[ResolvedModel, str]:
    """Resolve the default model, falling back along ``default_preference`` when one is not available.

    Integrity errors are never swallowed: a corrupt or replaced file must be seen, not silently replaced.
    """
    reg = registry or load_registry()
    mid, reason = default_model_id(reg)
    if mid not in reg.models:  # VOXELFM_MODEL names a path
        return resolve_model_files(mid, progress, reg), reason
    pref = list(reg.default_preference)
    i = pref.index(mid) if mid in pref else len(pref)
    # the chosen one, then later fallbacks; the ones skipped before it last, only so the final error
    # (nothing available at all) carries their download instructions too
    order = [mid] + pref[i + 1 :] + pref[:i]
    failures: list[ModelNotAvailableError] = []
    for m in order:
        try:
            resolved = resolve_model_files(reg.models[m], progress, reg)
        except ModelNotAvailableError as exc:
            failures.append(exc)
            continue
        if failures:
            reason = f"{'; '.join(str(e).splitlines()[0] for e in failures)} -> using {m}"
            # debug only: the caller says the choice once (the feature service logs it when it loads the
            # model; `voxelfm models` prints it), so a command shows this line once, not once per layer
            log.debug("default model: %s", reason)
        return resolved, reason
    raise ModelNotAvailableError("No model is available.\n" + "\n\n".join(str(e) for e in failures))
