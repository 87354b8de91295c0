"""Student/teacher pair for DINO + iBOT + KoLeo self-distillation, with the EMA teacher update.

State-dict keys (``student.backbone.*``, ``teacher.backbone.*``, ``teacher.dino_head.*``, centres) follow
the reference training checkpoint, so ``load_backbone_file`` can read a training checkpoint directly.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math

import torch
from torch import nn

from ..model import BackboneConfig, VoxelFMBackbone
from ..model.checkpoint import load_backbone_file
from .config import PretrainConfig, ProjectionHeadConfig, StudentConfig
from .heads import DINOHead
from .losses import CenteredTeacher, dino_loss, ibot_patch_loss, koleo_loss, sinkhorn_knopp

log = logging.getLogger(__name__)


def backbone_config(st: StudentConfig, drop_path: float | None = None) -> BackboneConfig:
    return BackboneConfig.from_student(
        dataclasses.asdict(st), st.drop_path_rate if drop_path is None else drop_path
    )


def projection_head(embed_dim: int, h: ProjectionHeadConfig) -> DINOHead:
    """The DINO or iBOT projection head its config section describes."""
    return DINOHead(embed_dim, h.head_n_prototypes, h.head_nlayers, h.head_hidden_dim, h.head_bottleneck_dim)


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * torch.log(p.clamp_min(1e-12))).sum(-1)


class Student(nn.Module):
    """Backbone + heads with one ``forward`` for all crops (what DDP wraps: one forward per backward)."""

    def __init__(self, backbone: VoxelFMBackbone, dino_head: DINOHead, ibot_head: DINOHead | None) -> None:
        super().__init__()
        self.backbone = backbone
        self.dino_head = dino_head
        if ibot_head is not None:
            self.ibot_head = ibot_head

    @property
    def patch_head(self) -> DINOHead:
        return getattr(self, "ibot_head", self.dino_head)

    def forward(
        self, global_crops: torch.Tensor, local_crops: torch.Tensor | None, masks: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        g = self.backbone.forward_features(
            global_crops, masks
        )  # masks always given: mask token stays in the graph
        cls = [g["cls"]]
        if local_crops is not None:
            cls.append(self.backbone.forward_features(local_crops)["cls"])
        dino_logits = self.dino_head(torch.cat(cls))
        ibot_logits = self.patch_head(g["patch_tokens"][masks])
        return {"cls_global": g["cls"], "dino_logits": dino_logits, "ibot_logits": ibot_logits}


class SSLMetaArch(nn.Module):
    def __init__(self, cfg: PretrainConfig) -> None:
        super().__init__()
        self.cfg = cfg
        st, d, ib = cfg.student, cfg.dino, cfg.ibot
        backbone = VoxelFMBackbone(backbone_config(st))
        if not st.drop_path_uniform and st.depth > 1:  # linearly increasing stochastic depth
            for i, blk in enumerate(backbone.blocks):
                blk.drop_path.p = st.drop_path_rate * i / (st.depth - 1)
        if st.pretrained_weights:
            pre = load_backbone_file(st.pretrained_weights)
            backbone.load_state_dict(pre.state_dict(), strict=True)
            log.info("Student initialised from %s", st.pretrained_weights)
        dino_head = projection_head(st.embed_dim, d)
        ibot_head = projection_head(st.embed_dim, ib) if ib.separate_head else None
        self.student = Student(backbone, dino_head, ibot_head)
        self.teacher = copy.deepcopy(self.student)
        self.teacher.backbone.cfg = backbone_config(st, drop_path=0.0)
        for blk in self.teacher.backbone.blocks:
            blk.drop_path.p = 0.0
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self.dino_center = CenteredTeacher(d.head_n_prototypes, d.center_momentum)
        n_ibot = ib.head_n_prototypes if ib.separate_head else d.head_n_prototypes
        self.ibot_center = CenteredTeacher(n_ibot, d.center_momentum)

    def train(self, mode: bool = True) -> SSLMetaArch:
        super().train(mode)
        self.teacher.eval()  # the teacher never uses stochastic depth
        return self

    @torch.no_grad()
    def teacher_targets(
        self, global_crops: torch.Tensor, masks: torch.Tensor, temp: float
    ) -> dict[str, torch.Tensor]:
        out = self.teacher.backbone.forward_features(global_crops)
        dino_logits = self.teacher.dino_head(out["cls"])
        ibot_logits = self.teacher.patch_head(out["patch_tokens"][masks])
        if self.cfg.train.centering == "sinkhorn_knopp":
            return {"dino": sinkhorn_knopp(dino_logits, temp), "ibot": sinkhorn_knopp(ibot_logits, temp)}
        targets = {
            "dino": self.dino_center.softmax(dino_logits, temp),
            "ibot": self.ibot_center.softmax(ibot_logits, temp),
        }
        self.dino_center.update(dino_logits)
        self.ibot_center.update(ibot_logits)  # collective: called even with no masked tokens
        return targets

    def losses(
        self, batch: dict[str, torch.Tensor], teacher_temp: float, student: nn.Module | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss (for backward) and its parts. ``student`` may be the DDP-wrapped ``self.student``."""
        d, ib = self.cfg.dino, self.cfg.ibot
        g, masks = batch["global_crops"], batch["masks"]
        local = batch.get("local_crops")
        n_g = 2
        b = g.shape[0] // n_g
        targets = self.teacher_targets(g, masks, teacher_temp)
        out = (student or self.student)(g, local, masks)
        s_chunks = list(out["dino_logits"].split(b))
        t_chunks = list(targets["dino"].split(b))
        loss_dino = dino_loss(s_chunks, t_chunks, d.student_temp)
        sample_index = masks.nonzero()[:, 0]
        loss_ibot = ibot_patch_loss(
            out["ibot_logits"], targets["ibot"], sample_index, masks.shape[0], d.student_temp
        )
        loss_koleo = sum(koleo_loss(c) for c in out["cls_global"].split(b))
        total = d.loss_weight * loss_dino + ib.loss_weight * loss_ibot + d.koleo_loss_weight * loss_koleo
        t = targets["dino"]
        parts = {
            "dino": float(loss_dino.detach()),
            "ibot": float(loss_ibot.detach()),
            "koleo": float(torch.as_tensor(loss_koleo).detach()),
            # Collapse monitor, as fractions of log(K): per-sample teacher entropy near 1 = uniform collapse,
            # entropy of the batch-mean near 0 = every image mapped to the same prototype.
            "teacher_entropy": _entropy(t).mean().item() / math.log(t.shape[-1]),
            "teacher_mean_entropy": _entropy(t.mean(0, keepdim=True)).item() / math.log(t.shape[-1]),
        }
        ti = targets["ibot"]
        if ti.shape[0]:  # the patch-level targets: what the patch features (probes, segmentation) learn from
            parts["ibot_teacher_entropy"] = _entropy(ti).mean().item() / math.log(ti.shape[-1])
        return total, parts

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """teacher <- m * teacher + (1 - m) * student, parameter by parameter."""
        t = [p for p in self.teacher.parameters()]
        s = [p.detach() for p in self.student.parameters()]
        torch._foreach_mul_(t, momentum)
        torch._foreach_add_(t, s, alpha=1.0 - momentum)
