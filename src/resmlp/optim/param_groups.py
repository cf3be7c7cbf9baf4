"""Weight-decay parameter groups and the optimizer factory for the training recipe.

Only the weights of linear maps (the paper's A, B, C and the patch projection / head) are decayed.
Biases, normalisation parameters, the Aff operator's ``alpha``/``beta`` and the LayerScale vectors
``ls1``/``ls2`` (and class-MLP pooling's ``cls_token``, as timm does for class tokens) are not:
they are scales and offsets, and shrinking them towards 0 fights the
residual design (ResMLP Sec. 3, Eq. 1-2). Note the Aff parameters have shape [1, 1, D], so the
common "ndim <= 1" rule alone would wrongly decay them.
"""

from __future__ import annotations

import typing
from typing import Iterable

import torch
from torch import nn

from ..config import OptimizerName
from .lamb import Lamb
from .muon import MuonAdamW, MuonSGD, conv_kernel_names, muon_param_names

NO_DECAY_LEAF_NAMES = frozenset({"alpha", "beta", "bias", "cls_token"})  # cls_token: class-MLP pooling
NORM_LAYERS: tuple[type[nn.Module], ...] = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())
OPTIMIZER_NAMES = typing.get_args(OptimizerName)  # the config's optim.name choices


def _norm_param_names(model: nn.Module) -> set[str]:
    """Full names of every parameter owned directly by a normalisation layer."""
    return {
        f"{mod_name}.{p_name}" if mod_name else p_name
        for mod_name, module in model.named_modules()
        if isinstance(module, NORM_LAYERS)
        for p_name, _ in module.named_parameters(recurse=False)
    }


def _is_skipped(name: str, skip: frozenset[str]) -> bool:
    """True if ``name`` or one of its parent module paths is listed in ``skip``."""
    parts = name.split(".")
    return any(".".join(parts[:i]) in skip for i in range(1, len(parts) + 1))


def _decays(name: str, param: nn.Parameter, norm_names: set[str], skip: frozenset[str]) -> bool:
    """The no-decay rule of the module docstring, for one named parameter."""
    leaf = name.rsplit(".", 1)[-1]
    return not (
        param.ndim <= 1
        or leaf in NO_DECAY_LEAF_NAMES
        or leaf.startswith("ls")
        or name in norm_names
        or _is_skipped(name, skip)
    )


def split_decay_names(model: nn.Module, *, skip: Iterable[str] = ()) -> tuple[list[str], list[str]]:
    """Names of the trainable parameters of ``model`` as ``(decay, no_decay)``, in model order.

    ``skip`` holds full parameter names (``"pos_embed"``) or module paths (``"stem"``), whose
    parameters are then all exempt from decay. Frozen parameters appear in neither list.
    """
    skip_set = frozenset(skip)
    norm_names = _norm_param_names(model)
    decay: list[str] = []
    no_decay: list[str] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (decay if _decays(name, param, norm_names, skip_set) else no_decay).append(name)
    return decay, no_decay


def param_groups(
    model: nn.Module,
    weight_decay: float,
    *,
    skip: Iterable[str] = (),
    lr: float | None = None,
    norm_lr_scale: float = 1.0,
) -> list[dict]:
    """Optimizer parameter groups ``[{"name": "decay", ...}, {"name": "no_decay", ...}]``.

    The ``decay`` group has ``weight_decay``; the ``no_decay`` group has 0. No decay for: 1-D
    parameters, leaf names ``alpha``/``beta``/``bias`` or starting with ``ls``, parameters of
    LayerNorm/BatchNorm/GroupNorm layers and anything in ``skip`` (see :func:`split_decay_names`).
    Frozen parameters are left out and empty groups are omitted. With ``norm_lr_scale`` != 1 the
    normalisation layers' parameters form a third group, ``norms`` (no decay), whose ``lr`` is
    ``lr * norm_lr_scale``; every group then carries its own ``lr``.
    """
    decay_names, no_decay_names = split_decay_names(model, skip=skip)
    params = dict(model.named_parameters())
    norm_names = _norm_param_names(model) if norm_lr_scale != 1.0 else set()
    groups = [
        {"name": "decay", "params": [params[n] for n in decay_names], "weight_decay": weight_decay},
        {
            "name": "no_decay",
            "params": [params[n] for n in no_decay_names if n not in norm_names],
            "weight_decay": 0.0,
        },
    ]
    if norm_names:
        if lr is None:
            raise ValueError("param_groups: norm_lr_scale needs the base lr")
        groups = [{**g, "lr": lr} for g in groups]
        norms = [params[n] for n in no_decay_names if n in norm_names]
        groups.append({"name": "norms", "params": norms, "weight_decay": 0.0, "lr": lr * norm_lr_scale})
    return [g for g in groups if g["params"]]


def build_optimizer(
    model: nn.Module,
    *,
    name: str,
    lr: float,
    weight_decay: float,
    momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float | None = None,
    max_grad_norm: float | None = 1.0,
    skip: Iterable[str] = (),
    muon_token_mixing: bool = True,
    norm_lr_scale: float = 1.0,
    muon_lr: float = 0.24,
) -> torch.optim.Optimizer:
    """Build ``name`` in {"lamb", "adamw", "sgd", "muon", "muon_sgd"} over :func:`param_groups` of ``model``
    ("muon": Muon on the blocks' weight matrices, AdamW on the rest; "muon_sgd": normalised Muon at ``muon_lr``
    on the blocks' conv kernels, Nesterov SGD at ``lr`` on the rest; see :mod:`resmlp.optim.muon`).

    ``eps`` defaults to 1e-6 for LAMB (the recipe's value) and 1e-8 for AdamW; SGD uses Nesterov
    ``momentum``. ``max_grad_norm`` is used only by LAMB, which clips the global gradient norm
    inside its step as in the paper's recipe; with AdamW or SGD clipping is the caller's job
    (``torch.nn.utils.clip_grad_norm_`` before ``optimizer.step()``, see :func:`clips_internally`).
    ``skip`` is passed on to :func:`param_groups`. ``muon_token_mixing=False`` leaves the cross-patch
    matrices (A) to AdamW under "muon". ``norm_lr_scale`` multiplies the lr of normalisation layers'
    parameters (their own group, see :func:`param_groups`; not with "muon").
    """
    if name == "muon":
        if norm_lr_scale != 1.0:
            raise ValueError("norm_lr_scale: not with the muon optimizer")
        params = dict(model.named_parameters())
        matrices = [params[n] for n in muon_param_names(model, token_mixing=muon_token_mixing)]
        ids = {id(p) for p in matrices}
        rest = [
            {**g, "params": [p for p in g["params"] if id(p) not in ids]}
            for g in param_groups(model, weight_decay, skip=skip)
        ]
        return MuonAdamW(
            [{"params": matrices, "weight_decay": weight_decay}],
            [g for g in rest if g["params"]],
            lr=lr,
            weight_decay=weight_decay,
            betas=betas,
            eps=1e-8 if eps is None else eps,
        )
    groups = param_groups(model, weight_decay, skip=skip, lr=lr, norm_lr_scale=norm_lr_scale)
    if name == "muon_sgd":
        params = dict(model.named_parameters())
        kernels = [params[n] for n in conv_kernel_names(model)]
        if not kernels:
            raise ValueError(f"optim.name=muon_sgd: {type(model).__name__} has no conv kernels in its blocks")
        ids = {id(p) for p in kernels}
        rest = [{**g, "params": [p for p in g["params"] if id(p) not in ids]} for g in groups]
        sgd_groups = [{"lr": lr, **g} for g in rest if g["params"]]
        return MuonSGD(kernels, sgd_groups, lr=lr, muon_lr=muon_lr, momentum=momentum, weight_decay=weight_decay)
    if name == "lamb":
        return Lamb(
            groups,
            lr=lr,
            betas=betas,
            eps=1e-6 if eps is None else eps,
            weight_decay=weight_decay,
            max_grad_norm=max_grad_norm,
        )
    if name == "adamw":
        return torch.optim.AdamW(
            groups, lr=lr, betas=betas, eps=1e-8 if eps is None else eps, weight_decay=weight_decay
        )
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer name {name!r}; valid names: {', '.join(OPTIMIZER_NAMES)}")


def clips_internally(optimizer: torch.optim.Optimizer) -> bool:
    """True when ``optimizer`` clips the global gradient norm inside its step (LAMB with a
    ``max_grad_norm``): the caller must then not clip again."""
    return isinstance(optimizer, Lamb) and optimizer.defaults["max_grad_norm"] is not None
