"""A fitted segmentation probe: linear weights on patch features + intensity tables, and its prediction."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..features.identity import check_backbone
from ..imaging.volume import Volume
from .classes import SegmentClass
from .config import SegmentationConfig
from .context import SegmentationContext, patch_array
from .postprocess import PostprocessConfig, postprocess_labelmap
from .result import SegmentationResult

SLAB = 4  # slices per prediction slab


@dataclass
class SegmentationProbe:
    classes: list[SegmentClass]  # K structures; probability/weight row k+1 is classes[k]
    config: SegmentationConfig
    patch_weight: np.ndarray | None  # [K+1, C] on standardised features
    feat_mean: np.ndarray | None  # [C]
    feat_std: np.ndarray | None  # [C]
    intensity_coef: np.ndarray | None  # [K+1, sum(n_knots)]
    bias: np.ndarray  # [K+1]
    backbone: dict[str, Any] = field(default_factory=dict)  # features.identity.backbone_record
    preprocess: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def class_values(self) -> list[int]:
        return [c.value for c in self.classes]

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    def _check_features(self, features: Any) -> None:
        if self.patch_weight is None:
            return
        c = patch_array(features).shape[-1]
        if c != self.patch_weight.shape[1]:
            raise InputError(
                f"Features have {c} channels but this probe was fitted on {self.patch_weight.shape[1]}; extract "
                f"features with the probe's model ({self.backbone.get('id', 'unknown')})."
            )
        check_backbone(
            self.backbone,
            getattr(features, "model", None),
            "This probe was fitted on features of model",
            "re-extract features with the probe's model.",
        )

    def delta_slabs(self, volume: Volume, features: Any, context: SegmentationContext | None = None):
        """A function (k0, k1) -> logits minus the background logit, classes 1..K: [K, k1-k0, j, i] float32."""
        ctx = context or SegmentationContext(volume, features)
        k = self.num_classes
        shape = tuple(volume.array.shape)
        if self.patch_weight is not None:
            self._check_features(features)
            w = self.patch_weight / self.feat_std[None, :]
            b = self.bias - w @ self.feat_mean
            dw = torch.from_numpy((w[1:] - w[0:1]).astype(np.float32))
            db = torch.from_numpy((b[1:] - b[0]).astype(np.float32))
            grid = torch.einsum("kc,cdhw->kdhw", dw, ctx.patch_cdhw()) + db[:, None, None, None]
            base = ctx.upsampler().slabs(grid)
        else:
            const = (self.bias[1:] - self.bias[0]).astype(np.float32)[:, None, None, None]

            def base(k0: int, k1: int) -> np.ndarray:
                return np.broadcast_to(const, (k, k1 - k0, *shape[1:])).copy()

        if self.intensity_coef is None:
            return base
        maps = ctx.intensity(self.config.intensity)
        tables = [maps.tables(self.intensity_coef[c + 1] - self.intensity_coef[0]) for c in range(k)]

        def slab(k0: int, k1: int) -> np.ndarray:
            d = base(k0, k1)
            for c in range(k):
                maps.add_to(d[c], tables[c], k0)
            return d

        return slab

    @staticmethod
    def _argmax_into(
        delta: np.ndarray, out: np.ndarray, mask: np.ndarray, values: np.ndarray
    ) -> np.ndarray | None:
        """out = value of the arg max over {background: 0, class c: delta[c]} (ties: the lower class wins).

        Returns the running max (>= 0) for K > 1, None for K = 1 (a threshold, no max needed).
        """
        if len(delta) == 1:
            np.greater(delta[0], 0.0, out=out.view(bool))
            if values[1] != 1:
                out *= values[1]
            return None
        best = np.zeros(delta.shape[1:], dtype=np.float32)
        out[...] = values[0]
        for c in range(len(delta)):
            np.greater(delta[c], best, out=mask)
            np.copyto(out, values[c + 1], where=mask)
            np.maximum(best, delta[c], out=best)
        return best

    def predict(
        self,
        volume: Volume,
        features: Any,
        context: SegmentationContext | None = None,
        with_probabilities: bool = True,
        postprocess: PostprocessConfig | None = None,
    ) -> SegmentationResult:
        slabs = self.delta_slabs(volume, features, context)
        shape = tuple(volume.array.shape)
        k = self.num_classes
        labelmap = np.empty(shape, dtype=np.uint8)
        probs = np.empty((k + 1, *shape), dtype=np.float16) if with_probabilities else None
        values = np.array([0, *self.class_values], dtype=np.uint8)
        mask = np.empty((min(SLAB, shape[0]), *shape[1:]), dtype=bool)
        for k0 in range(0, shape[0], SLAB):  # slab by slab: the working set stays in cache
            k1 = min(shape[0], k0 + SLAB)
            delta = slabs(k0, k1)
            best = self._argmax_into(delta, labelmap[k0:k1], mask[: k1 - k0], values)
            if probs is not None:
                if best is None:
                    best = np.maximum(delta[0], 0.0)
                e = np.exp(delta - best[None])  # classes 1..K, stabilised by the max (>= 0)
                e0 = np.exp(-best)
                z = e.sum(axis=0) + e0
                probs[0, k0:k1] = e0 / z
                probs[1:, k0:k1] = e / z[None]
        pp = postprocess if postprocess is not None else self.config.postprocess
        labelmap = postprocess_labelmap(labelmap, pp)
        return SegmentationResult(
            labelmap=labelmap,
            ijk_to_ras=np.asarray(volume.ijk_to_ras, dtype=np.float64).copy(),
            classes=list(self.classes),
            probabilities=probs,
            probe=self,
        )
