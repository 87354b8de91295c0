"""FSDP2 (``fully_shard``) for the student/teacher pair, and full single-file state dicts for checkpoints.

Why: DDP keeps a full replica of student, teacher and the AdamW moments on every rank; FSDP2 splits all
of them over the ranks. Student and teacher are sharded the same way (every parameter on dim 0 over one
mesh), so the EMA update in ``SSLMetaArch.update_teacher`` runs on the local shards with no communication.
Checkpoints keep the format DDP writes: rank 0 gathers the full CPU state and the optimizer state is
re-keyed to the integer ids of ``Optimizer.state_dict()``, so DDP and FSDP2 runs resume each other's files.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard, register_fsdp_forward_method

from .meta_arch import SSLMetaArch, Student

_GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True)
_LOAD = StateDictOptions(full_state_dict=True, strict=True)


def _shard_tree(tree: Student, mesh: DeviceMesh) -> None:
    """Blocks one by one (only one block's full weights live at a time), then backbone, heads and root.

    The backbone and heads get their own units because the teacher calls ``backbone.forward_features`` and
    the heads directly, never ``Student.forward``; ``forward_features`` is registered so that calling it
    gathers the backbone's own parameters (patch embed, tokens, final norm).
    """
    for blk in tree.backbone.blocks:
        fully_shard(blk, mesh=mesh)
    fully_shard(tree.backbone, mesh=mesh)
    register_fsdp_forward_method(tree.backbone, "forward_features")
    for name in ("dino_head", "ibot_head"):
        if hasattr(tree, name):
            fully_shard(getattr(tree, name), mesh=mesh)
    fully_shard(tree, mesh=mesh)


def shard_meta(meta: SSLMetaArch, device: torch.device, world_size: int) -> None:
    """Apply FSDP2 to ``meta.student`` and ``meta.teacher`` in place (before the optimizer is built).

    The DINO/iBOT centres stay plain replicated buffers (they are all-reduced every step anyway).
    """
    mesh = init_device_mesh(device.type, (world_size,))
    _shard_tree(meta.student, mesh)
    _shard_tree(meta.teacher, mesh)


def is_sharded(module: nn.Module) -> bool:
    return isinstance(module, FSDPModule)


def reshard(module: nn.Module) -> None:
    """Free gathered full weights left after forward. The teacher needs it: it is run through
    ``backbone.forward_features`` and the heads, never through its root, so those units act as FSDP roots,
    and roots keep their weights gathered after forward; the EMA update needs every teacher weight sharded.
    """
    for m in module.modules():
        if isinstance(m, FSDPModule):
            m.reshard()


def _param_names(model: nn.Module, opt: torch.optim.Optimizer) -> list[list[str]]:
    """Names of the optimizer's parameters, group by group, in ``Optimizer.state_dict()`` id order."""
    name_of = {id(p): n for n, p in model.named_parameters()}
    return [[name_of[id(p)] for p in g["params"]] for g in opt.param_groups]


def full_state(meta: SSLMetaArch, opt: torch.optim.Optimizer) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model, optimizer) state as full CPU tensors, in the format of ``meta.state_dict()`` and
    ``opt.state_dict()``. A collective: every rank must call it; only rank 0 gets non-empty dicts.
    """
    model_sd = get_model_state_dict(meta, options=_GATHER)
    optim_sd = get_optimizer_state_dict(meta, opt, options=_GATHER)
    if not model_sd:  # not rank 0
        return {}, {}
    names = _param_names(meta, opt)
    state: dict[int, Any] = {}
    groups = []
    next_id = 0
    for group_names, group in zip(names, optim_sd["param_groups"], strict=True):
        ids = list(range(next_id, next_id + len(group_names)))
        next_id += len(group_names)
        for i, name in zip(ids, group_names, strict=True):
            if name in optim_sd["state"]:
                state[i] = optim_sd["state"][name]
        groups.append({**group, "params": ids})
    return model_sd, {"state": state, "param_groups": groups}


def load_full_state(
    meta: SSLMetaArch, opt: torch.optim.Optimizer, model_sd: dict[str, Any], optim_sd: dict[str, Any]
) -> None:
    """Load a full (single-file checkpoint) state into the sharded ``meta`` and ``opt``; every rank calls
    it with the full dicts and keeps its own shards. Raises like ``load_state_dict`` on a mismatch.
    """
    set_model_state_dict(meta, model_sd, options=_LOAD)
    names = _param_names(meta, opt)
    if len(names) != len(optim_sd["param_groups"]):
        raise ValueError(
            f"optimizer has {len(names)} parameter groups, the checkpoint {len(optim_sd['param_groups'])}"
        )
    state: dict[str, Any] = {}
    groups = []
    for group_names, group in zip(names, optim_sd["param_groups"], strict=True):
        if len(group_names) != len(group["params"]):
            raise ValueError("a parameter group's size differs from the checkpoint's")
        for name, i in zip(group_names, group["params"], strict=True):
            if i in optim_sd["state"]:
                state[name] = optim_sd["state"][i]
        groups.append({**group, "params": group_names})
    set_optimizer_state_dict(meta, opt, {"state": state, "param_groups": groups}, options=_LOAD)
