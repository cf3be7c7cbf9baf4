"""Resolution freedom: carry the token-mixing layers to another patch grid, so that a model trained at
one input size runs (or keeps training) at another.

ResMLP's A (`blocks.i.linear_tokens`, N x N, tokens row-major: n = row * w + col as in `PatchStem`;
row = output patch, column = input patch) is seen as a 4-D kernel (h_out, w_out, h_in, w_in) and its bias
as an (h, w) map. Methods, for a grid (h, w) -> (H, W):

  "offset"  A = K + R. K[di, dj] is the mean of A over every (out, in) pair with in - out = (di, dj): the
            translation-invariant, conv-like part the paper's Fig. 2 shows. R = A - K is what depends on
            the position. K is carried over by offset (in patches), R is interpolated over the output
            positions for each offset; offsets the old grid did not have get 0.
  "kernel"  K alone (R dropped): a purely translation-invariant A on the new grid.
  "interp"  bilinear interpolation of the 4-D kernel (output and input positions in image coordinates, as
            ViT interpolates position embeddings), then every row rescaled so that it keeps its sum.

The bias is interpolated bilinearly by every method. The default is "interp" (`DEFAULT_METHOD`): on CIFAR-10
it kept the most accuracy at every other size (docs/benchmarks.md). Mixer's token MLP (`mlp_tokens.fc1`: N -> hidden,
`fc2`: hidden -> N) has no offset structure, so its N axes are interpolated by every method (fc1's
input axis keeping each hidden unit's sum, fc2's output axis and bias). On the same grid every method
is the identity.
A model resampled (`set_input_size`) starts from its weights as trained, not from its last resampling, so
another size and back gives the model back bit for bit (`resample_model_`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterator, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .layers import to_pair

METHODS = ("offset", "kernel", "interp")
DEFAULT_METHOD = "interp"  # the best zero-shot and fine-tuning start measured (docs/benchmarks.md, issue 12)
Grid = tuple[int, int]

# Which tensors have a token axis, and which: "matrix" (N, N), "in" (hidden, N), "out" (N, hidden), "bias" (N,),
# "class_row" (1, 1 + N): class-MLP pooling's token weights, the class token's column first (its bias has no
# token axis). The first pattern that matches decides. Conv token mixing has no token axis (TokenConv.grid).
_TOKEN_TENSORS = (
    (re.compile(r"(^|\.)class_blocks\.\d+\.linear_tokens\.weight$"), "class_row"),
    (re.compile(r"(^|\.)class_blocks\.\d+\.linear_tokens\.bias$"), None),
    (re.compile(r"(^|\.)linear_tokens\.weight$"), "matrix"),
    (re.compile(r"(^|\.)linear_tokens\.bias$"), "bias"),
    (re.compile(r"(^|\.)mlp_tokens\.fc1\.weight$"), "in"),
    (re.compile(r"(^|\.)mlp_tokens\.fc2\.weight$"), "out"),
    (re.compile(r"(^|\.)mlp_tokens\.fc2\.bias$"), "bias"),
)


def token_axis_kind(name: str) -> Optional[str]:
    """ "matrix", "in", "out" or "bias" for a parameter/state-dict key with a token axis, else None."""
    return next((kind for pattern, kind in _TOKEN_TENSORS if pattern.search(name)), None)


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown resampling method {method!r}; choose one of: {', '.join(METHODS)}")


def _interp_map(x: torch.Tensor, size: Grid) -> torch.Tensor:
    """(..., h, w) -> (..., H, W), bilinear over patch centres (align_corners=False); a copy on the same grid."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x.clone()
    lead = x.shape[:-2]
    y = F.interpolate(x.reshape(1, -1, *x.shape[-2:]).float(), size=size, mode="bilinear", align_corners=False)
    return y.reshape(*lead, *size).to(x.dtype)


def _keep_sums(new: torch.Tensor, target: torch.Tensor, area_ratio: float) -> torch.Tensor:
    """Rescale the rows of `new` (..., n) so they sum to `target` (...); a row whose sum is ~0 relative to
    its magnitude (a difference-like row) gets the area ratio instead of a blown-up factor."""
    current = new.sum(-1)
    scale = torch.full_like(current, area_ratio)
    ok = current.abs() > 1e-3 * new.abs().sum(-1)
    scale[ok] = target[ok] / current[ok]
    return new * scale.unsqueeze(-1)


def _offsets(grid: Grid) -> torch.Tensor:
    """(N, N) index of the offset in - out of every (out, in) pair into the flattened (2h-1, 2w-1) offsets."""
    h, w = grid
    rows = torch.arange(h).repeat_interleave(w)  # (N,) row of each token
    cols = torch.arange(w).repeat(h)
    di = rows[None, :] - rows[:, None] + h - 1  # (N_out, N_in), shifted to be >= 0
    dj = cols[None, :] - cols[:, None] + w - 1
    return di * (2 * w - 1) + dj


def offset_decomposition(a: torch.Tensor, grid: Grid) -> tuple[torch.Tensor, torch.Tensor]:
    """A (N, N) -> (K, R): K (2h-1, 2w-1) the mean of A per offset (centre = offset 0), R (h, w, 2h-1, 2w-1)
    the residual per output position and offset (0 where out + offset leaves the grid)."""
    h, w = grid
    idx = _offsets(grid)
    count = torch.bincount(idx.flatten(), minlength=(2 * h - 1) * (2 * w - 1))
    kernel = torch.zeros(count.numel(), dtype=a.dtype).index_add_(0, idx.flatten(), a.flatten()) / count
    residual = torch.zeros(h * w, count.numel(), dtype=a.dtype).scatter_(1, idx, a - kernel[idx])
    return kernel.view(2 * h - 1, 2 * w - 1), residual.view(h, w, 2 * h - 1, 2 * w - 1)


def _recentre(t: torch.Tensor, size: Grid) -> torch.Tensor:
    """Crop or zero-pad the last two (offset) axes around their centre to `size` (both odd)."""
    out = t.new_zeros(*t.shape[:-2], *size)
    (a, b), (c, d) = t.shape[-2:], size
    ka, kb = min(a, c) // 2, min(b, d) // 2  # radius kept on each axis
    out[..., c // 2 - ka : c // 2 + ka + 1, d // 2 - kb : d // 2 + kb + 1] = t[
        ..., a // 2 - ka : a // 2 + ka + 1, b // 2 - kb : b // 2 + kb + 1
    ]
    return out


def _resample_matrix(a: torch.Tensor, old: Grid, new: Grid, method: str, keep_sum: bool) -> torch.Tensor:
    (h, w), (hh, ww) = old, new
    if method == "interp":
        x = _interp_map(a.t().reshape(h * w, h, w), new)  # (N_in, h_out, w_out) -> (N_in, H, W)
        x = _interp_map(x.reshape(h, w, hh * ww).permute(2, 0, 1), new)  # -> (N_out', H_in, W_in)
        x = x.reshape(hh * ww, hh * ww)
        if not keep_sum:
            return x
        target = _interp_map(a.sum(1).reshape(h, w), new).flatten()
        return _keep_sums(x, target, (h * w) / (hh * ww))
    kernel, residual = offset_decomposition(a, old)
    shape = (2 * hh - 1, 2 * ww - 1)
    full = _recentre(kernel, shape).expand(hh, ww, *shape)  # (H, W, 2H-1, 2W-1)
    if method == "offset":
        moved = _interp_map(residual.permute(2, 3, 0, 1), new).permute(2, 3, 0, 1)  # positions -> (H, W)
        full = full + _recentre(moved, shape)
    idx = _offsets(new)
    return full.reshape(hh * ww, -1).gather(1, idx)  # (N', N'): A'[out, in] = full[out, offset(out, in)]


def resample_tensor(
    t: torch.Tensor, kind: str, old: Grid, new: Grid, *, method: str = DEFAULT_METHOD, keep_sum: bool = True
) -> torch.Tensor:
    """One token-axis tensor of `kind` ("matrix", "in", "out", "bias"; see `token_axis_kind`) from grid
    `old` to grid `new`. `keep_sum=False` skips the row-sum rescaling (optimizer moments)."""
    _check_method(method)
    old, new = to_pair(old), to_pair(new)
    n_old = old[0] * old[1]
    token_axes = {"matrix": (0, 1), "in": (1,), "out": (0,), "bias": (0,), "class_row": (1,)}
    if kind not in token_axes:
        raise ValueError(f"unknown token-axis kind {kind!r}; expected one of {', '.join(token_axes)}")
    if kind == "class_row":  # the class token's own weight stays; its weights over the patches are an "in" row
        if t.ndim != 2 or t.shape[1] != n_old + 1:
            raise ValueError(
                f"a class_row tensor of shape {tuple(t.shape)} does not have 1 + {n_old} tokens "
                f"(a {old[0]}x{old[1]} patch grid)"
            )
        patches = resample_tensor(t[:, 1:], "in", old, new, method=method, keep_sum=keep_sum)
        return torch.cat([t[:, :1].detach().clone(), patches], dim=1).contiguous()
    axes = token_axes[kind]
    if any(t.shape[ax] != n_old for ax in axes):
        raise ValueError(
            f"a {kind} tensor of shape {tuple(t.shape)} does not have {n_old} tokens "
            f"(a {old[0]}x{old[1]} patch grid) on its token axis"
        )
    if old == new:
        return t.clone()
    with torch.no_grad():
        src = t.detach().float()
        if kind == "matrix":
            out = _resample_matrix(src, old, new, method, keep_sum)
        elif kind == "in":  # (hidden, N): each hidden unit reads the grid; keep what it sums to
            out = _interp_map(src.reshape(-1, *old), new).flatten(1)
            if keep_sum:
                out = _keep_sums(out, src.sum(1), n_old / (new[0] * new[1]))
        elif kind == "out":  # (N, hidden): one row per output patch
            out = _interp_map(src.t().reshape(-1, *old), new).flatten(1).t()
        else:
            out = _interp_map(src.reshape(old), new).flatten()
    return out.to(t.dtype).contiguous()


def grid_of(num_tokens: int) -> Grid:
    """The square grid of `num_tokens` tokens; ValueError when N is not a square."""
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ValueError(f"{num_tokens} tokens is not a square grid; pass old_grid=(h, w)")
    return side, side


def token_parameters(model: nn.Module) -> Iterator[tuple[str, nn.Parameter, str]]:
    """(name, parameter, kind) of every parameter with a token axis."""
    for name, p in model.named_parameters():
        kind = token_axis_kind(name)
        if kind is not None:
            yield name, p, kind


def resample_state_dict(
    sd: Mapping[str, torch.Tensor],
    grid: Union[int, Sequence[int]],
    *,
    old_grid: Union[int, Sequence[int], None] = None,
    method: str = DEFAULT_METHOD,
) -> dict[str, torch.Tensor]:
    """A copy of state dict `sd` with every token-axis tensor carried to patch grid `grid` (h, w). The old
    grid is `old_grid`, or the square grid of A's (or fc1's) size when not given."""
    _check_method(method)
    keyed = [(k, token_axis_kind(k)) for k in sd]
    keyed = [(k, kind) for k, kind in keyed if kind is not None]
    if not keyed:
        raise ValueError("no token-mixing tensors (linear_tokens / mlp_tokens) in the state dict")
    if old_grid is None:
        k, kind = next((k, kind) for k, kind in keyed if kind in ("matrix", "in", "bias", "class_row"))
        tokens = {"bias": sd[k].shape[0], "class_row": sd[k].shape[-1] - 1}.get(kind, sd[k].shape[-1])
        old_grid = grid_of(tokens)
    old, new = to_pair(old_grid), to_pair(grid)
    out = dict(sd)
    for k, kind in keyed:
        out[k] = resample_tensor(sd[k], kind, old, new, method=method)
    return out


@dataclass(frozen=True)
class _Source:
    """What a token-mixing parameter was last resampled from (`weights` on `grid`), and how the parameter
    stood right after (`version`, `data_ptr`): while both still hold, it has not been changed since."""

    weights: torch.Tensor
    grid: Grid
    version: int
    data_ptr: int


SOURCES_ATTR = "_resampled_from"  # a plain attribute of the layer owning the parameter: no state-dict key


def _source_of(owner: nn.Module, key: str, p: nn.Parameter, grid: Grid) -> tuple[torch.Tensor, Grid]:
    """The weights to resample `p` (on `grid`) from: those it was last resampled from while it is unchanged
    since (so 32 -> 48 -> 32 px gives the model back instead of resampling a resampled A), else its own
    (trained since, e.g. between two switches of progressive resizing; or loaded, moved, copied)."""
    source = getattr(owner, SOURCES_ATTR, {}).get(key)
    if source is not None and source.version == p._version and source.data_ptr == p.data_ptr():
        return source.weights, source.grid
    return p.data, grid


def resample_model_(model: nn.Module, grid: Union[int, Sequence[int]], *, method: str = DEFAULT_METHOD) -> nn.Module:
    """Carry a model's token-mixing parameters to patch grid `grid`, in place. The Parameter objects are
    kept (their data is replaced), so an optimizer built on the model still holds them; see
    `resample_optimizer_state` for its moments. Only the blocks change: `set_input_size` also updates the stem.

    Each resampling starts from the weights as trained: a parameter unchanged since its last resampling is
    resampled again from what that one started from (see `_source_of`), so sizes can be tried and undone."""
    _check_method(method)
    old, new = _model_grid(model), to_pair(grid)
    for name, p, kind in token_parameters(model):
        owner_name, _, key = name.rpartition(".")
        owner = model.get_submodule(owner_name)
        weights, source_grid = _source_of(owner, key, p, old)
        p.data = resample_tensor(weights, kind, source_grid, new, method=method)
        p.grad = None  # a gradient of the old shape cannot be accumulated into
        sources = owner.__dict__.setdefault(SOURCES_ATTR, {})
        sources[key] = _Source(weights, source_grid, p._version, p.data_ptr())
    for m in model.modules():  # keep nn.Linear's attributes true to its weight
        if isinstance(m, nn.Linear):
            m.out_features, m.in_features = m.weight.shape
        elif isinstance(getattr(m, "grid", None), tuple):  # a conv in place of A (TokenConv): only its grid
            m.grid = new
    return model


def resample_optimizer_state(
    optimizer: torch.optim.Optimizer,
    model: nn.Module,
    old: Union[int, Sequence[int]],
    new: Union[int, Sequence[int]],
    *,
    method: str = DEFAULT_METHOD,
) -> None:
    """After `set_input_size`, carry the optimizer's per-parameter tensors of the token-mixing parameters
    (Adam/LAMB exp_avg and exp_avg_sq, SGD momentum) from grid `old` to `new` with the same method, without
    the row-sum rescaling (moments are not operators); second moments are clamped at >= 0."""
    old, new = to_pair(old), to_pair(new)
    for _, p, kind in token_parameters(model):
        state = _state_of(optimizer, p)
        for key, value in list(state.items()):
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != p.shape:
                moved = resample_tensor(value, kind, old, new, method=method, keep_sum=False)
                state[key] = moved.clamp_min(0) if key.endswith("_sq") else moved


def _state_of(optimizer: torch.optim.Optimizer, p: nn.Parameter) -> dict:
    """The state dict of `p` in `optimizer`, or in one of the optimizers a composite one wraps (Muon + AdamW)."""
    if p in optimizer.state:
        return optimizer.state[p]
    for inner in vars(optimizer).values():
        if isinstance(inner, torch.optim.Optimizer) and p in inner.state:
            return inner.state[p]
    return {}


def _model_grid(model: nn.Module) -> Grid:
    stem = getattr(model, "stem", None)
    if stem is None or not hasattr(stem, "grid_size"):
        raise ValueError(
            f"{type(model).__name__} has no patch grid (stem.grid_size): only patch models "
            f"(ResMLP, Mixer) have token-mixing layers to resample"
        )
    return to_pair(stem.grid_size)


def resample_token_mixing(
    model_or_state_dict: Union[nn.Module, Mapping[str, torch.Tensor]],
    grid: Union[int, Sequence[int]],
    *,
    method: str = DEFAULT_METHOD,
    old_grid: Union[int, Sequence[int], None] = None,
):
    """Carry ResMLP's A (and Mixer's token MLP) to patch grid `grid` = (h, w) (or an int for h = w).

    A model is changed in place (stem included: it then takes images of grid * patch_size pixels) and
    returned; a state dict is copied (`old_grid` when it is not square). Methods: see the module docstring.
    """
    if isinstance(model_or_state_dict, nn.Module):
        patch = model_or_state_dict.stem.patch_size
        h, w = to_pair(grid)
        return model_or_state_dict.set_input_size((h * patch, w * patch), method=method)
    return resample_state_dict(model_or_state_dict, grid, old_grid=old_grid, method=method)
