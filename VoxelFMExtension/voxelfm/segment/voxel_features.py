"""Bring frozen patch features to voxel resolution, plus cheap local intensity features.

WHY this shape: patch features live on a coarse grid (one vector per 14^3 patch). The probe is linear in them,
so for prediction we compute logits on the feature grid and interpolate the *logits* to the voxel grid
(identical to interpolating features, K channels instead of C). For fitting we sample features trilinearly
only at the labelled voxels (their RAS points mapped through ``grid_to_ras``).

Intensity features give sharp boundaries the coarse grid cannot: a few scalar maps (HU, local mean, local
std) whose per-class effect is a learned piecewise-linear function (hat basis over fixed knots). Maps are
quantised once per volume into a single combined index so a refit costs one table gather per class.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..errors import InputError

HU_KNOTS = (-1000, -600, -300, -150, -80, -30, 0, 30, 60, 100, 150, 250, 400, 700, 1000)
BLOB_KNOTS = (
    -400,
    -200,
    -100,
    -50,
    -25,
    0,
    25,
    50,
    100,
    200,
    400,
)  # sigma^2-normalised Hessian eigenvalue, HU
GROUP = 3  # channels per lookup table (levels**3 entries stay cache-friendly)
STD_KNOTS = (0, 10, 20, 35, 50, 75, 100, 150, 250, 400)


@dataclass
class IntensityChannel:
    kind: str  # "hu" (voxel value), "mean" / "std" (Gaussian local mean / std), "blob" (Hessian, see below)
    sigma_mm: float = 0.0
    knots: tuple[float, ...] = HU_KNOTS


def default_channels() -> list[IntensityChannel]:
    return [
        IntensityChannel("hu", 0.0, HU_KNOTS),
        IntensityChannel("mean", 3.0, HU_KNOTS),
        IntensityChannel("std", 3.0, STD_KNOTS),
        IntensityChannel("mean", 8.0, HU_KNOTS),
    ]


@dataclass
class IntensityConfig:
    """Local intensity features; ``levels`` quantisation steps per channel (levels**channels table entries)."""

    enabled: bool = True
    channels: list[IntensityChannel] = field(default_factory=default_channels)
    levels: int = 32

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IntensityConfig:
        chans = (
            [IntensityChannel(c["kind"], float(c["sigma_mm"]), tuple(c["knots"])) for c in d["channels"]]
            if "channels" in d
            else default_channels()
        )
        return cls(enabled=bool(d.get("enabled", True)), channels=chans, levels=int(d.get("levels", 32)))


def _channel_map(array: np.ndarray, spacing_kji: np.ndarray, ch: IntensityChannel) -> np.ndarray:
    x = array.astype(np.float32, copy=False)
    if ch.kind == "hu":
        return x
    sigma = np.maximum(ch.sigma_mm / spacing_kji, 0.5)
    mean = ndimage.gaussian_filter(x, sigma, mode="nearest", truncate=3.0)
    if ch.kind == "mean":
        return mean
    if ch.kind == "std":
        sq = ndimage.gaussian_filter(x * x, sigma, mode="nearest", truncate=3.0)
        return np.sqrt(np.maximum(sq - mean * mean, 0.0))
    if ch.kind == "blob":
        return _largest_hessian_eigenvalue(x, sigma, spacing_kji) * ch.sigma_mm**2
    raise InputError(f"Unknown intensity feature kind {ch.kind!r}; use 'hu', 'mean', 'std' or 'blob'.")


def _largest_hessian_eigenvalue(x: np.ndarray, sigma: np.ndarray, spacing_kji: np.ndarray) -> np.ndarray:
    """Largest eigenvalue of the Gaussian-smoothed Hessian (HU/mm^2): < 0 only inside bright blobs, ~0 along
    bright tubes (vessels) and sheets: the shape cue that separates a nodule from vessels of the same HU."""
    h = {}
    for a in range(3):
        for b in range(a, 3):
            order = [0, 0, 0]
            order[a] += 1
            order[b] += 1
            h[a, b] = ndimage.gaussian_filter(x, sigma, order=order, mode="nearest", truncate=3.0) / (
                spacing_kji[a] * spacing_kji[b]
            )
    out = np.empty(x.shape, dtype=np.float32)
    for k0 in range(0, x.shape[0], 8):
        sl = slice(k0, min(k0 + 8, x.shape[0]))
        m = np.empty((*out[sl].shape, 3, 3), dtype=np.float32)
        for (a, b), v in h.items():
            m[..., a, b] = m[..., b, a] = v[sl]
        out[sl] = np.linalg.eigvalsh(m)[..., -1]
    return out


def _knot_coordinate(x: np.ndarray, knots: tuple[float, ...]) -> np.ndarray:
    """Position in knot units (0 .. n_knots-1), piecewise linear, clamped."""
    return np.interp(x, np.asarray(knots, dtype=np.float64), np.arange(len(knots), dtype=np.float64)).astype(
        np.float32
    )


def hat_basis(t: np.ndarray, n_knots: int) -> np.ndarray:
    """Piecewise-linear hat functions at integer knot positions: [len(t), n_knots]."""
    t = np.asarray(t, dtype=np.float64)
    return np.clip(1.0 - np.abs(t[:, None] - np.arange(n_knots)[None, :]), 0.0, None)


class IntensityMaps:
    """Quantised intensity channels of one volume (cached per volume).

    Channels are combined in groups of up to three into one index per voxel and group; the group indices are
    then numbered compactly over the combinations that occur in the volume (``codes``, one int32 per voxel).
    The model is additive over channels, so a refit builds one small table per class over the occurring
    combinations (``tables``) and prediction costs one gather per class and voxel (``add_to``).
    """

    def __init__(self, array_kji: np.ndarray, spacing_kji: np.ndarray, cfg: IntensityConfig) -> None:
        self.cfg = cfg
        q = cfg.levels
        if q**GROUP > 2**31:
            raise InputError(f"Too many intensity levels ({q}) for a lookup table; use at most 1000.")
        self.level_t: list[np.ndarray] = []  # knot coordinate of each quantisation level, per channel
        self.groups: list[list[int]] = []  # channel ids of each group
        indices: list[np.ndarray] = []  # per group: combined level index [k,j,i] int32
        for n, ch in enumerate(cfg.channels):
            if n % GROUP == 0:
                self.groups.append([])
                indices.append(np.zeros(array_kji.shape, dtype=np.int32))
            ids = self.groups[-1]
            t = _knot_coordinate(_channel_map(array_kji, spacing_kji, ch), ch.knots)
            step = (len(ch.knots) - 1) / (q - 1)
            indices[-1] += np.rint(t / step).astype(np.int32) * (q ** len(ids))
            ids.append(n)
            self.level_t.append(np.arange(q) * step)
        self.codes, self.code_index = _compact_codes(indices, [q ** len(ids) for ids in self.groups])

    def basis_at(self, kji: np.ndarray) -> np.ndarray:
        """Hat-basis features of all channels at voxel indices [N,3] -> [N, sum(n_knots)]."""
        q = self.cfg.levels
        rows = self.code_index[self.codes[kji[:, 0], kji[:, 1], kji[:, 2]]]
        cols = []
        for g, ids in enumerate(self.groups):
            flat = rows[:, g].astype(np.int64)
            for pos, n in enumerate(ids):
                lev = (flat // (q**pos)) % q
                cols.append(hat_basis(self.level_t[n][lev], len(self.cfg.channels[n].knots)))
        return np.concatenate(cols, axis=1).astype(np.float32)

    def group_tables(self, coef: np.ndarray) -> list[np.ndarray]:
        """One lookup table per group (over its q**len(group) level combinations) from hat coefficients.

        Built as nested outer sums with the newest channel leading, so the flat position is
        sum(level_pos * q**pos), matching the group's index.
        """
        offsets = np.concatenate([[0], np.cumsum([len(c.knots) for c in self.cfg.channels])])
        out = []
        for ids in self.groups:
            total = None
            for n in ids:
                k = len(self.cfg.channels[n].knots)
                lut = (hat_basis(self.level_t[n], k) @ coef[offsets[n] : offsets[n] + k]).astype(np.float32)
                total = lut if total is None else (lut[:, None] + total[None, :]).reshape(-1)
            out.append(total)
        return out

    def tables(self, coef: np.ndarray) -> torch.Tensor:
        """The intensity term of every occurring code [n_codes] float32 (the group tables summed in order)."""
        total = None
        for g, table in enumerate(self.group_tables(coef)):
            part = table[self.code_index[:, g]]
            total = part if total is None else total + part
        return torch.from_numpy(np.ascontiguousarray(total, dtype=np.float32))

    def add_to(self, delta: np.ndarray, coef_or_table, k0: int = 0) -> None:
        """delta [n,j,i] (slices k0..k0+n) += the intensity term (hat coefficients or their ``tables``)."""
        table = self.tables(coef_or_table) if isinstance(coef_or_table, np.ndarray) else coef_or_table
        if not delta.flags.c_contiguous:
            raise ValueError("add_to needs a C-contiguous delta (it is updated in place)")
        codes = torch.from_numpy(self.codes[k0 : k0 + delta.shape[0]]).view(-1)
        torch.from_numpy(delta).view(-1).add_(torch.index_select(table, 0, codes))


def _compact_codes(indices: list[np.ndarray], sizes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Number the occurring combinations of the group indices: (codes [k,j,i] int32, group indices [n, groups]).

    A volume holds far fewer combinations than the q**channels possible ones (tens of thousands of a million),
    so per-class tables over them stay cache-sized and one gather replaces one per group.
    """
    total = int(np.prod(sizes, dtype=np.float64))
    combined = indices[0].astype(np.int64)
    stride = sizes[0]
    for index, size in zip(indices[1:], sizes[1:], strict=True):
        combined += index.astype(np.int64) * stride
        stride *= size
    if total <= 2**25:  # dense: a presence table beats sorting 10^7-10^8 voxels
        present = np.bincount(combined.ravel(), minlength=total) > 0
        values = np.flatnonzero(present)
        remap = np.cumsum(present, dtype=np.int64) - 1
        codes = remap[combined].astype(np.int32)
    else:
        values, inverse = np.unique(combined.ravel(), return_inverse=True)
        codes = inverse.reshape(combined.shape).astype(np.int32)
    code_index = np.empty((len(values), len(sizes)), dtype=np.int64)
    rest = values.astype(np.int64)
    for g, size in enumerate(sizes):
        code_index[:, g] = rest % size
        rest //= size
    return codes, code_index


# ---------------------------------------------------------------- patch features at points / on the voxel grid


def grid_index_of_ras(grid_to_ras: np.ndarray, ras: np.ndarray) -> np.ndarray:
    """Continuous feature-grid indices (i, j, k) of RAS points [N,3]."""
    inv = np.linalg.inv(np.asarray(grid_to_ras, dtype=np.float64))
    return ras @ inv[:3, :3].T + inv[:3, 3]


def sample_patch_features(rows: torch.Tensor, grid_shape_dhw, grid_ijk: np.ndarray) -> torch.Tensor:
    """Trilinear samples at continuous (i,j,k) grid indices [N,3], border-clamped -> [N,C].

    ``rows`` [d*h*w, C] holds the cells row-major (d, h, w). A gather of the 8 neighbouring cells: cheaper than
    grid_sample for many channels and a few thousand points.
    """
    d, h, w = (int(n) for n in grid_shape_dhw)
    size = np.array([w, h, d], dtype=np.float64)
    pos = np.clip(np.asarray(grid_ijk, dtype=np.float64), 0.0, size - 1)
    top = (size - 1).astype(np.int64)
    lo = np.minimum(np.floor(pos).astype(np.int64), top)
    hi = np.minimum(lo + 1, top)
    frac = pos - lo
    out = torch.zeros(len(pos), rows.shape[1], dtype=rows.dtype)
    for corner in range(8):
        pick = np.array([(corner >> a) & 1 for a in range(3)], dtype=bool)  # i, j, k
        idx = np.where(pick, hi, lo)
        wgt = np.prod(np.where(pick, frac, 1.0 - frac), axis=1)
        flat = (idx[:, 2] * h + idx[:, 1]) * w + idx[:, 0]
        out += rows[torch.from_numpy(flat)] * torch.from_numpy(wgt.astype(np.float32))[:, None]
    return out


@dataclass
class FitBasis:
    """Standardised (and, for wide features, PCA-whitened) patch features of one volume, for fitting.

    ``rows`` [cells, P]; a fitted weight ``v`` [P] on these rows equals ``proj @ v`` [C] on standardised features.
    """

    mean: np.ndarray  # [C]
    std: np.ndarray  # [C]
    proj: np.ndarray | None  # [C, P] (includes whitening) or None
    rows: torch.Tensor  # [cells, P]


def fit_basis(patch_cdhw: torch.Tensor, pca_dim: int | None) -> FitBasis:
    """WHY PCA: with 864-channel features an LBFGS fit is ~7x slower than needed for interactive refits; the top
    components of one volume keep what a linear probe uses. Deterministic (eigh of the covariance)."""
    c = patch_cdhw.shape[0]
    x = patch_cdhw.reshape(c, -1).T.double()
    mean = x.mean(0)
    std = x.std(0).clamp_min(1e-6)
    z = ((x - mean) / std).float()
    if pca_dim is None or c <= pca_dim:
        return FitBasis(mean.numpy(), std.numpy(), None, z.contiguous())
    cov = (z.T @ z).double() / max(len(z) - 1, 1)
    evals, evecs = torch.linalg.eigh(cov)
    order = torch.argsort(evals, descending=True)[:pca_dim]
    vecs = evecs[:, order]
    vecs = vecs * torch.sign(vecs[vecs.abs().argmax(0), torch.arange(vecs.shape[1])])[None, :]  # fixed signs
    proj = (vecs / evals[order].clamp_min(1e-8).sqrt()[None, :]).float()
    return FitBasis(mean.numpy(), std.numpy(), proj.numpy(), (z @ proj).contiguous())


def _grid_sample_points(grid_vals: torch.Tensor, grid_ijk: np.ndarray) -> torch.Tensor:
    """Trilinear samples via grid_sample (for many points, few channels). -> [N,C]."""
    c, d, h, w = grid_vals.shape
    sizes = np.array([w, h, d], dtype=np.float64)
    norm = np.where(sizes > 1, 2.0 * grid_ijk / np.maximum(sizes - 1, 1) - 1.0, 0.0)
    g = torch.from_numpy(norm.astype(np.float32)).view(1, 1, 1, -1, 3)
    out = F.grid_sample(grid_vals[None], g, mode="bilinear", padding_mode="border", align_corners=True)
    return out.view(c, -1).T


class LogitUpsampler:
    """Interpolates [K,d,h,w] feature-grid maps onto a volume grid [K,nk,nj,ni] (linear, border-clamped).

    Separable 2-tap interpolation when the grids' axes are parallel (the usual case: the prepared volume keeps
    the image direction, possibly permuted/flipped); a chunked grid_sample otherwise (oblique relation).
    """

    def __init__(self, grid_shape_dhw, grid_to_ras, volume_shape_kji, ijk_to_ras) -> None:
        self.grid_shape = tuple(int(s) for s in grid_shape_dhw)
        self.shape = tuple(int(s) for s in volume_shape_kji)
        self.vol_to_grid = np.linalg.inv(np.asarray(grid_to_ras, np.float64)) @ np.asarray(
            ijk_to_ras, np.float64
        )
        a = self.vol_to_grid[:3, :3]
        scale = np.abs(a).max()
        nz = np.abs(a) > 1e-6 * max(scale, 1e-12)
        self.separable = bool(np.all(nz.sum(axis=0) == 1) and np.all(nz.sum(axis=1) == 1))
        if self.separable:
            self._taps = []
            gsize_ijk = self.grid_shape[::-1]
            self._perm = []
            for vol_axis_kji in range(3):  # output axes k, j, i
                col = 2 - vol_axis_kji  # ijk column
                row = int(np.flatnonzero(nz[:, col])[0])  # grid axis in (i,j,k) order
                self._perm.append(2 - row)  # grid array axis (d,h,w)
                n = self.shape[vol_axis_kji]
                pos = a[row, col] * np.arange(n) + self.vol_to_grid[row, 3]
                pos = np.clip(pos, 0, gsize_ijk[row] - 1)
                i0 = np.floor(pos).astype(np.int64)
                i1 = np.minimum(i0 + 1, gsize_ijk[row] - 1)
                self._taps.append((i0, i1, (pos - i0).astype(np.float32)))
            # j and i as [n, grid] interpolation matrices (two taps a row): two matmuls upsample a whole
            # [K, d, h, w] grid to [K, d, nj, ni], several times faster than gathering both taps.
            self._mj, self._mi = (
                self._tap_matrix(self._taps[a], gsize_ijk[2 - self._perm[a]]) for a in (1, 2)
            )

    @staticmethod
    def _tap_matrix(taps, n_grid: int) -> torch.Tensor:
        i0, i1, w = taps
        m = np.zeros((len(i0), n_grid), dtype=np.float32)
        rows = np.arange(len(i0))
        np.add.at(m, (rows, i0), 1.0 - w)
        np.add.at(m, (rows, i1), w)
        return torch.from_numpy(m)

    def __call__(self, grid_vals: torch.Tensor) -> np.ndarray:
        """grid_vals [K,d,h,w] float32 -> numpy [K,nk,nj,ni] float32."""
        return self.slabs(grid_vals)(0, self.shape[0])

    def slabs(self, grid_vals: torch.Tensor):
        """A function (k0, k1) -> [K, k1-k0, nj, ni] float32: the result slab by slab (cache-friendly)."""
        grid_vals = grid_vals.float()
        if not self.separable:
            full = self._general(grid_vals)
            return lambda k0, k1: full[:, k0:k1].copy()
        v = grid_vals.permute(0, *(p + 1 for p in self._perm))  # axes now follow k, j, i
        k0s, k1s, kw = self._taps[0]
        v = torch.matmul(self._mj, torch.matmul(v, self._mi.T)).contiguous()  # [K, d', nj, ni]

        def slab(a: int, b: int) -> np.ndarray:
            out = torch.empty((v.shape[0], b - a, *self.shape[1:]), dtype=torch.float32)
            for k in range(a, b):
                lo, hi, w = int(k0s[k]), int(k1s[k]), float(kw[k])
                if lo == hi or w == 0.0:
                    out[:, k - a] = v[:, lo]
                else:
                    torch.lerp(v[:, lo], v[:, hi], w, out=out[:, k - a])
            return out.numpy()

        return slab

    def _general(self, grid_vals: torch.Tensor) -> np.ndarray:
        nk, nj, ni = self.shape
        jj, ii = np.meshgrid(np.arange(nj), np.arange(ni), indexing="ij")
        out = np.empty((grid_vals.shape[0], nk, nj, ni), dtype=np.float32)
        for k in range(nk):
            ijk = np.stack([ii.ravel(), jj.ravel(), np.full(ii.size, k)], axis=1).astype(np.float64)
            g = ijk @ self.vol_to_grid[:3, :3].T + self.vol_to_grid[:3, 3]
            out[:, k] = _grid_sample_points(grid_vals, g).T.reshape(-1, nj, ni).numpy()
        return out
