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

The ablation variants (models.resmlp) fold the same way. BatchNorm at inference is a per-channel affine map
(alpha = gamma / sqrt(var + eps), beta = bias - mean * alpha), so it folds like Aff; LayerNorm depends on each
token's statistics and does not. Every affine cross-patch map f (A, the 3x3 convs, none) folds through
ls1 * f(alpha x + beta) = L(x) + ls1 * f(beta), L linear: the (N, D) bias is f applied to the constant beta map
(which gets the zero padding of the convs right at the borders). The token MLP folds alpha and beta into its
fc1 as Mixer's does. Class-MLP pooling keeps the tokens-first layout: its token weights form a (1, N + 1) row.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..models import Affine, ClassMlpBlock, MixerBlock, MlpMixer, ResMLP, ResMLPBlock, TokenBatchNorm
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
            raise ValueError(
                f"input of shape {tuple(x.shape)} does not match the model, which expects "
                f"(B, {', '.join(map(str, self.expected))})"
            )
        x = self.proj(x).flatten(2)  # (B, C, H, W) -> (B, D, N)
        return x.permute(2, 0, 1).contiguous()  # (B, D, N) -> (N, B, D)


def norm_affine(norm: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha, beta), each (D,), of a normalisation that is a fixed per-channel affine map at inference."""
    if isinstance(norm, Affine):
        return norm.alpha.reshape(-1), norm.beta.reshape(-1)
    if isinstance(norm, TokenBatchNorm):
        alpha = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        return alpha, norm.bias - norm.running_mean * alpha
    raise ValueError(
        f"fuse() folds Aff and BatchNorm, which are fixed per-channel maps at inference; "
        f"{type(norm).__name__} normalises each token by its own statistics and does not fold "
        f"(run or export this model unfused)"
    )


def _scaled_conv(conv: nn.Conv2d, out_scale: torch.Tensor, in_scale: torch.Tensor | None) -> nn.Conv2d:
    """A bias-free copy of `conv` computing out_scale * conv_W(in_scale * x) (the input scale per channel)."""
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        padding=conv.padding,
        groups=conv.groups,
        bias=False,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    w = conv.weight * out_scale[:, None, None, None]
    if in_scale is not None:  # full conv: per input channel; depthwise: input channel = output channel
        w = w * (in_scale[None, :, None, None] if conv.groups == 1 else in_scale[:, None, None, None])
    fused.weight.data.copy_(w)
    return fused


class FusedResMLPBlock(nn.Module):
    """One ResMLP block with its norms, LayerScale_1 and LayerScale_2 folded away (see module doc).
    Tokens-first: (N, B, D) -> (N, B, D)."""

    def __init__(self, block: ResMLPBlock, num_patches: int) -> None:
        super().__init__()
        self.kind = block.token_mixing
        with torch.no_grad():
            alpha1, beta1 = norm_affine(block.norm1)
            if self.kind == "mlp":
                t1, t2 = block.mlp_tokens.fc1, block.mlp_tokens.fc2  # (H, N), (N, H)
                self.token_fc1_weight = _frozen(t1.weight)
                self.token_fc1_scale = _frozen(alpha1)  # (D,)
                self.token_fc1_bias = _frozen(t1.weight.sum(1)[:, None] * beta1 + t1.bias[:, None])  # (H, D)
                self.token_fc2_weight = _frozen(t2.weight)
                self.token_act = copy.deepcopy(block.mlp_tokens.act)
                self.token_scale = _frozen(block.ls1)
                self.token_bias = _frozen(block.ls1 * t2.bias[:, None])  # (N, D)
            else:
                # The (N, D) bias: ls1 * f(beta) for the affine map f, evaluated on the constant beta map.
                beta_map = beta1.expand(1, num_patches, beta1.shape[0])  # (1, N, D)
                self.token_bias = _frozen(block.ls1 * block.mix_tokens(beta_map)[0])
                if self.kind in ("linear", "none"):
                    self.token_scale = _frozen(block.ls1 * alpha1)  # g: (D,)
                    if self.kind == "linear":
                        self.token_weight = _frozen(block.linear_tokens.weight)  # A: (N, N)
                else:
                    self.grid = block.conv_tokens.grid
                    conv, pointwise = block.conv_tokens.conv, block.conv_tokens.pointwise
                    if pointwise is None:
                        self.conv = _scaled_conv(conv, block.ls1, alpha1)
                        self.pointwise = None
                    else:
                        self.conv = _scaled_conv(conv, alpha1, None)
                        self.pointwise = _scaled_conv(pointwise, block.ls1, None)
            fc1, fc2 = block.mlp_channels.fc1, block.mlp_channels.fc2
            alpha2, beta2 = norm_affine(block.norm2)
            self.fc1 = _linear(fc1.weight * alpha2, fc1.bias + fc1.weight @ beta2)  # B'
            self.fc2 = _linear(block.ls2[:, None] * fc2.weight, block.ls2 * fc2.bias)  # C'
            self.act = copy.deepcopy(block.mlp_channels.act)

    def mix_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The folded cross-patch sublayer's output (without the residual), (N, B, D)."""
        n, b, d = x.shape
        if self.kind == "linear":
            mixed = (self.token_weight @ x.reshape(n, b * d)).view(n, b, d)  # A over N: (N, N) @ (N, B*D)
            return torch.addcmul(self.token_bias[:, None, :], mixed, self.token_scale)
        if self.kind == "none":
            return torch.addcmul(self.token_bias[:, None, :], x, self.token_scale)
        if self.kind == "mlp":
            h = (self.token_fc1_weight @ x.reshape(n, b * d)).view(-1, b, d)  # (H, N) @ (N, B*D) -> (H, B, D)
            h = self.token_act(torch.addcmul(self.token_fc1_bias[:, None, :], h, self.token_fc1_scale))
            y = (self.token_fc2_weight @ h.reshape(h.shape[0], b * d)).view(n, b, d)  # (N, H) @ (H, B*D)
            return torch.addcmul(self.token_bias[:, None, :], y, self.token_scale)
        y = self.conv(x.permute(1, 2, 0).reshape(b, d, *self.grid))  # (N, B, D) -> (B, D, h, w)
        if self.pointwise is not None:
            y = self.pointwise(y)
        return y.flatten(2).permute(2, 0, 1) + self.token_bias[:, None, :]  # (B, D, h, w) -> (N, B, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mix_tokens(x)
        return x + self.fc2(self.act(self.fc1(x)))


class FusedClassMlpBlock(nn.Module):
    """One class-MLP pooling block, tokens-first: the class token (1, B, D) reads the (N, B, D) patches."""

    def __init__(self, block: ClassMlpBlock) -> None:
        super().__init__()
        with torch.no_grad():
            alpha1, beta1 = norm_affine(block.norm1)
            w, b = block.linear_tokens.weight, block.linear_tokens.bias  # (1, N + 1), (1,)
            self.token_weight = _frozen(w)
            self.token_scale = _frozen(block.ls1 * alpha1)
            self.token_bias = _frozen(block.ls1 * (w.sum() * beta1 + b))  # (D,)
            fc1, fc2 = block.mlp_channels.fc1, block.mlp_channels.fc2
            alpha2, beta2 = norm_affine(block.norm2)
            self.fc1 = _linear(fc1.weight * alpha2, fc1.bias + fc1.weight @ beta2)
            self.fc2 = _linear(block.ls2[:, None] * fc2.weight, block.ls2 * fc2.bias)
            self.act = copy.deepcopy(block.mlp_channels.act)

    def forward(self, cls: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        tokens = torch.cat([cls, patches], dim=0)  # (1 + N, B, D)
        n, b, d = tokens.shape
        y = (self.token_weight @ tokens.reshape(n, b * d)).view(1, b, d)  # (1, N+1) @ (N+1, B*D)
        cls = cls + torch.addcmul(self.token_bias, y, self.token_scale)
        return cls + self.fc2(self.act(self.fc1(cls)))


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
        self.class_blocks, self.cls_token = None, None
        if isinstance(model, ResMLP):
            self.blocks = nn.ModuleList(FusedResMLPBlock(b, model.num_patches) for b in model.blocks)
            if model.pooling == "class_mlp":
                self.class_blocks = nn.ModuleList(FusedClassMlpBlock(b) for b in model.class_blocks)
                self.cls_token = _frozen(model.cls_token.reshape(1, 1, -1))
            with torch.no_grad():
                alpha, beta = norm_affine(model.norm)
            self.final_eps = None
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
        if self.class_blocks is not None:
            cls = self.cls_token.expand(1, x.shape[1], -1)  # (1, B, D)
            for block in self.class_blocks:
                cls = block(cls, x)
            return self.head(cls[0])  # the final affine is folded into the head: (B, D)
        if self.final_eps is not None:
            x = F.layer_norm(x, (self.embed_dim,), eps=self.final_eps)
        return self.head(x.mean(0))  # average pool over N: (N, B, D) -> (B, D)

    def train(self, mode: bool = True) -> "FusedClassifier":
        if mode:
            raise RuntimeError(
                "a fused model is inference-only (its Aff/LayerScale are folded); "
                "train the original model and call resmlp.fuse() again"
            )
        return super().train(False)


def why_not_fusable(model: nn.Module) -> str | None:
    """None when `fuse(model)` works, else the one-line reason it does not."""
    if isinstance(model, FusedClassifier):
        return None
    if not isinstance(model, (ResMLP, MlpMixer)):
        return f"fuse() takes a ResMLP or MlpMixer, got {type(model).__name__}"
    if isinstance(model, ResMLP) and isinstance(model.norm, nn.LayerNorm):
        return (
            "fuse() folds Aff and BatchNorm, which are fixed per-channel maps at inference; a norm='layernorm' "
            "ResMLP normalises each token by its own statistics and does not fold (run or export it unfused)"
        )
    return None


def fusable(model: nn.Module) -> bool:
    """ResMLP (Aff or BatchNorm) and MLP-Mixer fold; the others (the CIFAR ResNet teachers, LayerNorm ResMLPs)
    run as they are."""
    return why_not_fusable(model) is None


def fuse(model: nn.Module) -> FusedClassifier:
    """An eval-only copy of a ResMLP or MLP-Mixer with every affine map folded into the linear layers.

    Returns float32 logits equal to `model.eval()(x)` up to float rounding; the original is not modified.
    """
    if isinstance(model, FusedClassifier):
        return model
    reason = why_not_fusable(model)
    if reason is not None:
        raise ValueError(reason)
    return FusedClassifier(model)
