"""Fold every Aff and LayerScale into the neighbouring linear layers for inference (paper, section 2:
"Aff ... can be absorbed in the adjacent linear layer at inference time").

The fused model keeps its tokens in a tokens-first (N, B, D) layout, so both mixing steps are one plain
GEMM with no transpose: cross-patch A @ x.view(N, B*D) and cross-channel x.view(N*B, D) @ W^T.

With x the (N, B, D) token tensor, one ResMLP block becomes, per channel d:
    cross-patch   x + ls1 * (A (alpha1 x + beta1) + b_A)
                = x + g * (A x) + c              g = ls1 * alpha1 (D,), c = ls1 * (rowsum(A) beta1 + b_A) (N, D)
    cross-channel x + ls2 * C GELU(B (alpha2 x + beta2))
                = x + C' GELU(B' x)              B' = B diag(alpha2), b_B' = b_B + B beta2, C' = diag(ls2) C
and the final Aff moves through the average pool into the head: W_h' = W_h diag(alpha), b_h' = b_h + W_h beta.

MLP-Mixer's LayerNorm depends on token statistics, so only its affine part (gamma, beta) folds; the
normalisation itself stays (layer_norm without weights). Before the token MLP it becomes a per-channel
scale and an (H, D) bias on the hidden layer, before the channel MLP and the head it folds into fc1 / head.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..models import MixerBlock, MlpMixer, ResMLP, ResMLPBlock
from ..models.layers import to_pair


def _linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], device=weight.device, dtype=weight.dtype)
    layer.weight.data.copy_(weight)
    layer.bias.data.copy_(bias)
    return layer


def _frozen(t: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(t.detach().clone(), requires_grad=False)


class FusedStem(nn.Module):
    """Patch projection straight into the tokens-first layout: (B, C, H, W) -> (N, B, D)."""

    def __init__(self, proj: nn.Conv2d, img_size: int | tuple[int, int], in_chans: int) -> None:
        super().__init__()
        self.proj = copy.deepcopy(proj)
        self.expected = (in_chans, *to_pair(img_size))  # (C, H, W); H != W for non-square models

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing() and tuple(x.shape[1:]) != self.expected:
            raise ValueError(f"input of shape {tuple(x.shape)} does not match the model, which expects "
                             f"(B, {', '.join(map(str, self.expected))})")
        x = self.proj(x).flatten(2)  # (B, C, H, W) -> (B, D, N)
        return x.permute(2, 0, 1).contiguous()  # (B, D, N) -> (N, B, D)


class FusedResMLPBlock(nn.Module):
    """One ResMLP block with Aff_1, Aff_2, LayerScale_1 and LayerScale_2 folded away (see module doc)."""

    def __init__(self, block: ResMLPBlock) -> None:
        super().__init__()
        with torch.no_grad():
            a, b_a = block.linear_tokens.weight, block.linear_tokens.bias  # (N, N), (N,)
            alpha1, beta1 = block.norm1.alpha.reshape(-1), block.norm1.beta.reshape(-1)
            self.token_scale = _frozen(block.ls1 * alpha1)  # g: (D,)
            self.token_bias = _frozen(block.ls1 * (a.sum(1)[:, None] * beta1 + b_a[:, None]))  # c: (N, D)
            self.token_weight = _frozen(a)  # A: (N, N)
            fc1, fc2 = block.mlp_channels.fc1, block.mlp_channels.fc2
            alpha2, beta2 = block.norm2.alpha.reshape(-1), block.norm2.beta.reshape(-1)
            self.fc1 = _linear(fc1.weight * alpha2, fc1.bias + fc1.weight @ beta2)  # B'
            self.fc2 = _linear(block.ls2[:, None] * fc2.weight, block.ls2 * fc2.bias)  # C'

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, b, d = x.shape
        mixed = (self.token_weight @ x.reshape(n, b * d)).view(n, b, d)  # A over N: (N, N) @ (N, B*D)
        x = torch.addcmul(x + self.token_bias[:, None, :], mixed, self.token_scale)
        return x + self.fc2(F.gelu(self.fc1(x)))


class FusedMixerBlock(nn.Module):
    """One Mixer block: LayerNorm statistics kept, their affine parts folded (see module doc)."""

    def __init__(self, block: MixerBlock) -> None:
        super().__init__()
        self.eps, self.norm_shape = block.norm1.eps, tuple(block.norm1.normalized_shape)  # static for tracing
        with torch.no_grad():
            t1, t2 = block.mlp_tokens.fc1, block.mlp_tokens.fc2  # (H, N), (N, H)
            gamma1, beta1 = block.norm1.weight, block.norm1.bias
            self.token_fc1_weight = _frozen(t1.weight)  # (H, N)
            self.token_fc1_scale = _frozen(gamma1)  # (D,)
            self.token_fc1_bias = _frozen(t1.weight.sum(1)[:, None] * beta1 + t1.bias[:, None])  # (H, D)
            self.token_fc2_weight = _frozen(t2.weight)  # (N, H)
            self.token_fc2_bias = _frozen(t2.bias[:, None, None].clone())  # (N, 1, 1)
            fc1, fc2 = block.mlp_channels.fc1, block.mlp_channels.fc2
            gamma2, beta2 = block.norm2.weight, block.norm2.bias
            self.fc1 = _linear(fc1.weight * gamma2, fc1.bias + fc1.weight @ beta2)
            self.fc2 = _linear(fc2.weight, fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, b, d = x.shape
        y = F.layer_norm(x, self.norm_shape, eps=self.eps)
        h = (self.token_fc1_weight @ y.reshape(n, b * d)).view(-1, b, d)  # (H, N) @ (N, B*D) -> (H, B, D)
        h = F.gelu(torch.addcmul(self.token_fc1_bias[:, None, :], h, self.token_fc1_scale))
        y = (self.token_fc2_weight @ h.reshape(h.shape[0], b * d)).view(n, b, d)  # (N, H) @ (H, B*D)
        x = x + y + self.token_fc2_bias
        return x + self.fc2(F.gelu(self.fc1(F.layer_norm(x, self.norm_shape, eps=self.eps))))


class FusedClassifier(nn.Module):
    """Eval-only ResMLP / Mixer: stem -> fused blocks -> (LayerNorm statistics for Mixer) -> mean -> head."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.stem = FusedStem(model.stem.proj, model.stem.img_size, model.stem.in_chans)
        if isinstance(model, ResMLP):
            self.blocks = nn.ModuleList(FusedResMLPBlock(b) for b in model.blocks)
            alpha, beta, self.final_eps = model.norm.alpha.reshape(-1), model.norm.beta.reshape(-1), None
        else:
            self.blocks = nn.ModuleList(FusedMixerBlock(b) for b in model.blocks)
            alpha, beta, self.final_eps = model.norm.weight, model.norm.bias, model.norm.eps
        self.num_classes = model.num_classes
        self.embed_dim = model.embed_dim
        with torch.no_grad():
            if isinstance(model.head, nn.Linear):
                w, b = model.head.weight, model.head.bias
                self.head = _linear(w * alpha, b + w @ beta)  # mean(alpha x + beta) = alpha mean(x) + beta
            else:  # a headless model returns the pooled features, still with the final affine applied
                self.head = _linear(torch.diag(alpha), beta.clone())
        if hasattr(model, "spec"):  # the fused model is still described by (and exports as) the original's spec
            self.spec = model.spec
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B, C, H, W) -> (N, B, D)
        for block in self.blocks:
            x = block(x)
        if self.final_eps is not None:
            x = F.layer_norm(x, (self.embed_dim,), eps=self.final_eps)
        return self.head(x.mean(0))  # average pool over N: (N, B, D) -> (B, D)

    def train(self, mode: bool = True) -> "FusedClassifier":
        if mode:
            raise RuntimeError("a fused model is inference-only (its Aff/LayerScale are folded); "
                               "train the original model and call resmlp.fuse() again")
        return super().train(False)


def fusable(model: nn.Module) -> bool:
    """ResMLP and MLP-Mixer fold; other registered models (the CIFAR ResNet teachers) run as they are."""
    return isinstance(model, (ResMLP, MlpMixer, FusedClassifier))


def fuse(model: nn.Module) -> FusedClassifier:
    """An eval-only copy of a ResMLP or MLP-Mixer with every affine map folded into the linear layers.

    Returns float32 logits equal to `model.eval()(x)` up to float rounding; the original is not modified.
    """
    if isinstance(model, FusedClassifier):
        return model
    if not isinstance(model, (ResMLP, MlpMixer)):
        raise ValueError(f"fuse() takes a ResMLP or MlpMixer, got {type(model).__name__}")
    return FusedClassifier(model)
