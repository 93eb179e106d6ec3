"""Swin Transformer as SOLIDER ships it, with the semantic controller (λ).

Papers: Swin Transformer (Liu et al., ICCV 2021); SOLIDER, "Beyond Appearance: a Semantic
Controllable Self-Supervised Learning Framework for Human-Centric Visual Tasks" (Chen et
al., CVPR 2023).  Reference code: ``SwinTransformer`` in tinyvision/SOLIDER
``swin_transformer.py``, an mmdet-style Swin.  This is our own code written to give the same
features from the same state dict:

* state-dict keys are the official ones (``patch_embed.projection``,
  ``stages.{i}.blocks.{j}.attn.w_msa.*``, ``ffn.layers.0.0`` / ``ffn.layers.1``,
  ``stages.{0,1,2}.downsample.{norm,reduction}``, ``norm{i}`` for each output stage,
  ``semantic_embed_{w,b}.{0..3}``), so a SOLIDER ``teacher`` loads strictly;
* PatchMerging concatenates each 2x2 neighbourhood in ``nn.Unfold`` (channel-major) order,
  after "corner" zero padding (bottom/right) so the kernel-2 window covers the map; a stride-1
  merge is a kernel-2 stride-1 unfold on the map padded by one row and column, as the
  official ``AdaptivePadding`` + ``nn.Unfold`` do (strides (4,2,2,1) for detection/parsing,
  (4,2,1,1) for pose);
* windows: after ``norm1`` the map is zero-padded right/bottom to multiples of the window
  (7), odd blocks roll it by window//2 and mask cross-region pairs with -100; padded tokens
  are *not* masked otherwise (they are zeros that still yield keys, as in the official code);
  there is no window shrinking for small maps: a 256x128 input gives an 8x4 last stage that
  is padded to 14x7 and still shifted;
* exact (erf) GELU, LayerNorm eps 1e-5, qkv bias, ``q * head_dim**-0.5`` plus the relative
  position bias; attention runs through ``F.scaled_dot_product_attention`` with
  (bias + shift mask) as ``attn_mask``, over all windows of the batch at once;
* the controller maps ``[λ, 1-λ]`` through ``semantic_embed_w[i]`` / ``semantic_embed_b[i]``
  (``Linear(2, C_{min(i+1,3)})``) to a per-channel FiLM ``x * softplus(w) + b`` of the
  *post-merge* tokens after stages 0-2.  Stage outputs are taken (and normed) before the
  modulation, so ``outs[0]`` never depends on λ.

Deviations, none of which changes an output:

* the official code also modulates after the last stage, where the result is never used;
  we skip that product and freeze ``semantic_embed_{w,b}.3`` (``requires_grad=False``), so
  they stay in the state dict for key compatibility but need no ``find_unused_parameters``;
* stages after the last ``out_indices`` entry are not run;
* λ never forces a device (the official forward calls ``.cuda()``): it is a float, or a
  tensor of shape (B,) or (B, 1) for per-sample λ, moved to the input's device;
* random init: trunc-normal(std .02) for every Linear and the relative-position tables
  (the official leaves the tables at zero; MS Swin and timm use trunc-normal), LayerNorm
  1/0.  Checkpoints overwrite all of it.

``shift_single_window=False`` reproduces Microsoft's / timm's rule for a map that fits in
exactly one window (7x7 at stage 3 of a 224x224 input): no shift there.  It exists so the
ImageNet weights can be checked against timm at 224; SOLIDER's code never uses it.

The contract every zoo backbone keeps: ``model(x, semantic_weight=None, task=None)`` is the
pooled embedding (average of the last output map, norm3 by default), shape (B,
``num_features``); ``model.forward_intermediates(x, ...)`` is the list of NCHW maps, one per
entry of ``out_indices`` after its norm, with ``feature_channels`` and ``feature_strides``.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from backbones import register_backbone
from backbones._cfg import SWIN_ARCHS, BackboneCfg, swin_channels
from bench.errors import BenchError

Tensor = torch.Tensor


# --------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------
class DropPath(nn.Module):
    """Per-sample stochastic depth (identity at eval or rate 0)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


def pad_to(x: Tensor, mult_h: int, mult_w: int) -> Tensor:
    """Zero-pad a (B, H, W, C) map at the bottom/right to multiples of (mult_h, mult_w)."""
    pad_b = (-x.shape[1]) % mult_h
    pad_r = (-x.shape[2]) % mult_w
    if pad_b or pad_r:
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    return x


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection (``projection``) + LayerNorm; (B,3,H,W) -> (B,h,w,C).

    Like the official ``AdaptivePadding('corner')``, an input whose side is not a multiple of
    the patch is zero-padded at the bottom/right first.
    """

    def __init__(self, in_channels: int, embed_dims: int, patch_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.projection = nn.Conv2d(in_channels, embed_dims, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dims)

    def forward(self, x: Tensor) -> Tensor:
        p = self.patch_size
        pad_b, pad_r = (-x.shape[2]) % p, (-x.shape[3]) % p
        if pad_b or pad_r:
            x = F.pad(x, (0, pad_r, 0, pad_b))
        return self.norm(self.projection(x).permute(0, 2, 3, 1))


class PatchMerging(nn.Module):
    """Merge each 2x2 neighbourhood (stride 2 or 1), LayerNorm(4C), ``Linear(4C, 2C)`` no bias.

    Channel order is ``nn.Unfold``'s: merged channel ``c * 4 + 2 * dy + dx`` holds channel
    ``c`` of the token at offset (dy, dx).  The map is first zero-padded at the bottom/right
    so that kernel 2 at this stride covers it: one row/column for stride 1, up to an even
    size for stride 2 (official ``AdaptivePadding(padding='corner')``).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 2):
        super().__init__()
        if stride not in (1, 2):
            raise BenchError(f"Swin strides after the first must be 1 or 2, got {stride}")
        self.stride = stride
        self.norm = nn.LayerNorm(4 * in_channels)
        self.reduction = nn.Linear(4 * in_channels, out_channels, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        B, H, W, C = x.shape
        s = self.stride
        out_h, out_w = math.ceil(H / s), math.ceil(W / s)
        pad_b = max((out_h - 1) * s + 2 - H, 0)
        pad_r = max((out_w - 1) * s + 2 - W, 0)
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        span_h, span_w = (out_h - 1) * s + 1, (out_w - 1) * s + 1
        parts = [x[:, dy:dy + span_h:s, dx:dx + span_w:s] for dy in (0, 1) for dx in (0, 1)]
        x = torch.stack(parts, dim=-1).reshape(B, out_h, out_w, 4 * C)
        return self.reduction(self.norm(x))


def relative_position_index(window: int) -> Tensor:
    """(N, N) index into the (2w-1)^2 bias table for every pair of tokens of a window."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window),
                                        indexing="ij")).flatten(1)  # 2, N
    rel = coords[:, :, None] - coords[:, None, :] + (window - 1)  # 2, N, N
    return rel[0] * (2 * window - 1) + rel[1]


def window_partition(x: Tensor, window: int) -> Tensor:
    """(B, Hp, Wp, C) -> (B, nW, window*window, C), windows in row-major order."""
    B, H, W, C = x.shape
    x = x.view(B, H // window, window, W // window, window, C).transpose(2, 3)
    return x.reshape(B, (H // window) * (W // window), window * window, C)


def window_reverse(windows: Tensor, window: int, H: int, W: int) -> Tensor:
    """Inverse of :func:`window_partition`: (B, nW, window*window, C) -> (B, H, W, C)."""
    B, _, _, C = windows.shape
    x = windows.view(B, H // window, W // window, window, window, C).transpose(2, 3)
    return x.reshape(B, H, W, C)


def shifted_window_mask(H: int, W: int, window: int, shift: int, device=None) -> Tensor:
    """(nW, N, N) additive mask of a padded (H, W) map rolled by ``shift``: 0 within a
    region, -100 across regions (regions as sliced in the official ``ShiftWindowMSA``)."""
    def regions(n: int) -> Tensor:
        i = torch.arange(n, device=device)
        return (i >= n - window).long() + (i >= n - shift).long()

    ids = regions(H)[:, None] * 3 + regions(W)[None, :]
    ids = window_partition(ids[None, :, :, None], window)[0, :, :, 0]  # nW, N
    cross = ids[:, None, :] != ids[:, :, None]
    return torch.zeros(cross.shape, device=device).masked_fill(cross, -100.0)


class WindowMSA(nn.Module):
    """Multi-head self-attention inside windows with a relative position bias."""

    def __init__(self, embed_dims: int, num_heads: int, window_size: int, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.scale = (embed_dims // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = nn.Linear(embed_dims, embed_dims * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop)

    def relative_position_bias(self) -> Tensor:
        n = self.window_size ** 2
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(n, n, self.num_heads).permute(2, 0, 1)  # heads, N, N

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x: (B, nW, N, C) windows; mask: (nW, N, N) additive shift mask or None."""
        B, nW, N, C = x.shape
        h = self.num_heads
        q, k, v = self.qkv(x).view(B, nW, N, 3, h, C // h).permute(3, 0, 1, 4, 2, 5).unbind(0)
        bias = self.relative_position_bias()
        if mask is None:  # one (heads, N, N) bias for every window
            q, k, v = (t.reshape(B * nW, h, N, C // h) for t in (q, k, v))
            attn_mask = bias
        else:  # per-window masks: windows and heads share a dimension
            q, k, v = (t.reshape(B, nW * h, N, C // h) for t in (q, k, v))
            attn_mask = (bias.unsqueeze(0) + mask.unsqueeze(1)).reshape(nW * h, N, N)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask.to(q.dtype), scale=self.scale,
            dropout_p=self.attn_drop if self.training else 0.0)
        y = y.reshape(B, nW, h, N, C // h).transpose(2, 3).reshape(B, nW, N, C)
        return self.proj_drop(self.proj(y))


class ShiftWindowMSA(nn.Module):
    """Pad to whole windows, optionally roll, attend within windows, undo both."""

    def __init__(self, embed_dims: int, num_heads: int, window_size: int, **kw: Any):
        super().__init__()
        self.window_size = window_size
        self.w_msa = WindowMSA(embed_dims, num_heads, window_size, **kw)

    def forward(self, x: Tensor, shift: int = 0, mask: Tensor | None = None) -> Tensor:
        B, H, W, C = x.shape
        ws = self.window_size
        x = pad_to(x, ws, ws)
        Hp, Wp = x.shape[1], x.shape[2]
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        x = window_reverse(self.w_msa(window_partition(x, ws), mask), ws, Hp, Wp)
        if shift:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        return x[:, :H, :W, :]


class FFN(nn.Module):
    """fc1 -> GELU -> dropout -> fc2 -> dropout, keyed ``layers.0.0`` / ``layers.1`` (mmcv)."""

    def __init__(self, embed_dims: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Sequential(nn.Linear(embed_dims, hidden), nn.GELU(), nn.Dropout(drop)),
            nn.Linear(hidden, embed_dims), nn.Dropout(drop))

    def forward(self, x: Tensor, prompt: Tensor | None = None) -> Tensor:
        return self.layers(x)


class SwinBlock(nn.Module):
    """Pre-norm (shifted) window attention and FFN, each with a residual and drop path."""

    def __init__(self, embed_dims: int, num_heads: int, window_size: int, ffn: nn.Module,
                 qkv_bias: bool = True, drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dims)
        self.attn = ShiftWindowMSA(embed_dims, num_heads, window_size, qkv_bias=qkv_bias,
                                   attn_drop=attn_drop, proj_drop=drop)
        self.norm2 = nn.LayerNorm(embed_dims)
        self.ffn = ffn
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, shift: int = 0, mask: Tensor | None = None,
                prompt: Tensor | None = None) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), shift, mask))
        return x + self.drop_path(self.ffn(self.norm2(x), prompt))


class SwinStage(nn.Module):
    """``depth`` blocks (odd ones shifted), then the PatchMerging into the next stage."""

    def __init__(self, blocks: Sequence[SwinBlock], window_size: int,
                 downsample: PatchMerging | None, shift_single_window: bool = True):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample
        self.window_size = window_size
        self.shift_single_window = shift_single_window

    def forward(self, x: Tensor, prompt: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(B, H, W, C) -> (input of the next stage, this stage's output before any norm)."""
        ws = self.window_size
        H, W = x.shape[1], x.shape[2]
        shift = ws // 2
        if not self.shift_single_window and H <= ws and W <= ws:
            shift = 0
        mask = None
        if shift and len(self.blocks) > 1:
            mask = shifted_window_mask(H + (-H) % ws, W + (-W) % ws, ws, shift, x.device)
        for j, blk in enumerate(self.blocks):
            odd = j % 2 == 1
            x = blk(x, shift if odd else 0, mask if odd else None, prompt)
        return (self.downsample(x) if self.downsample is not None else x), x


# --------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------
FfnFactory = Callable[[int, int, int, float], nn.Module]  # (stage, dims, hidden, drop)


class SwinTransformer(nn.Module):
    """SOLIDER's Swin: hierarchical windowed transformer with an optional λ controller.

    Args:
        embed_dims, depths, num_heads: the size (Swin-T: 96, (2,2,6,2), (3,6,12,24)).
        window_size: attention window (7 for every released checkpoint).
        mlp_ratio: FFN hidden size / width.
        strides: patch size, then the stride of each PatchMerging (1 or 2).
        out_indices: stages whose normed maps ``forward_intermediates`` returns; only these
            stages get a ``norm{i}``, as in the official code.
        drop_rate, attn_drop_rate, drop_path_rate: regularisation (drop path grows linearly
            over all blocks from 0 to ``drop_path_rate``).
        semantic_weight: None for no controller; a float builds the controller and is the
            λ used when a call gives none.
        shift_single_window: False to skip the shift where the map fits in one window
            (Microsoft/timm behaviour at 224x224); SOLIDER always shifts.
        ffn_layer: builds the FFN of each block (CLASP swaps in PC-MoE); default :class:`FFN`.
    """

    def __init__(self, embed_dims: int = 96, depths: Sequence[int] = (2, 2, 6, 2),
                 num_heads: Sequence[int] = (3, 6, 12, 24), window_size: int = 7,
                 mlp_ratio: float = 4.0, strides: Sequence[int] = (4, 2, 2, 2),
                 out_indices: Sequence[int] = (0, 1, 2, 3), in_channels: int = 3,
                 qkv_bias: bool = True, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, semantic_weight: float | None = None,
                 shift_single_window: bool = True, ffn_layer: FfnFactory | None = None):
        super().__init__()
        num_stages = len(depths)
        if len(num_heads) != num_stages or len(strides) != num_stages:
            raise BenchError(f"Swin: depths, num_heads and strides need one entry per stage, "
                             f"got {tuple(depths)}, {tuple(num_heads)}, {tuple(strides)}")
        out_indices = tuple(sorted(set(int(i) for i in out_indices)))
        if not out_indices or out_indices[0] < 0 or out_indices[-1] >= num_stages:
            raise BenchError(f"Swin: out_indices must lie in 0..{num_stages - 1}, "
                             f"got {out_indices}")
        self.depths, self.strides, self.out_indices = tuple(depths), tuple(strides), out_indices
        self.window_size = window_size
        channels = [int(embed_dims * 2 ** i) for i in range(num_stages)]
        ffn_layer = ffn_layer or (lambda stage, dims, hidden, drop: FFN(dims, hidden, drop))

        self.patch_embed = PatchEmbed(in_channels, embed_dims, strides[0])
        self.drop_after_pos = nn.Dropout(drop_rate)
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.stages = nn.ModuleList()
        for i, depth in enumerate(depths):
            dim = channels[i]
            blocks = [SwinBlock(dim, num_heads[i], window_size,
                                ffn_layer(i, dim, int(mlp_ratio * dim), drop_rate),
                                qkv_bias=qkv_bias, drop=drop_rate, attn_drop=attn_drop_rate,
                                drop_path=dpr[sum(depths[:i]) + j]) for j in range(depth)]
            down = (PatchMerging(dim, channels[i + 1], strides[i + 1])
                    if i < num_stages - 1 else None)
            self.stages.append(SwinStage(blocks, window_size, down, shift_single_window))
        for i in out_indices:
            self.add_module(f"norm{i}", nn.LayerNorm(channels[i]))

        self.semantic_weight = None if semantic_weight is None else float(semantic_weight)
        if self.semantic_weight is not None:
            dims = [channels[min(i + 1, num_stages - 1)] for i in range(num_stages)]
            self.semantic_embed_w = nn.ModuleList(nn.Linear(2, d) for d in dims)
            self.semantic_embed_b = nn.ModuleList(nn.Linear(2, d) for d in dims)

        self.feature_channels = [channels[i] for i in out_indices]
        cumulative = [math.prod(strides[:i + 1]) for i in range(num_stages)]
        self.feature_strides = [cumulative[i] for i in out_indices]
        self.num_features = self.feature_channels[-1]
        self.apply(_init_weights)
        if self.semantic_weight is not None:  # the last stage's FiLM never reaches an output
            for m in (self.semantic_embed_w[-1], self.semantic_embed_b[-1]):
                m.requires_grad_(False)

    @property
    def has_controller(self) -> bool:
        return self.semantic_weight is not None

    # -- conditioning ---------------------------------------------------------------
    def _controller_input(self, semantic_weight: float | Tensor | None,
                          x: Tensor) -> Tensor | None:
        """[λ, 1-λ] per sample, (B, 2), on the input's device; None without a controller."""
        if not self.has_controller:
            if semantic_weight is not None:
                raise BenchError(
                    f"{self._name()} has no semantic controller; semantic_weight="
                    f"{_short(semantic_weight)} applies only to backbones built with one "
                    f"(solider_*, or semantic_weight=<float> at construction)")
            return None
        lam = self.semantic_weight if semantic_weight is None else semantic_weight
        B = x.shape[0]
        dtype = self.semantic_embed_w[0].weight.dtype
        if isinstance(lam, Tensor):
            if lam.ndim == 0 or tuple(lam.shape) in ((B,), (B, 1)):
                w = lam.to(device=x.device, dtype=dtype).reshape(-1, 1).expand(B, 1)
            else:
                raise BenchError(f"{self._name()}: a per-sample semantic_weight must have "
                                 f"shape ({B},) or ({B}, 1) for a batch of {B}, "
                                 f"got {tuple(lam.shape)}")
        else:
            w = torch.full((B, 1), float(lam), device=x.device, dtype=dtype)
        return torch.cat([w, 1 - w], dim=1)

    def _prompt(self, task: str | None, x: Tensor) -> Tensor | None:
        """Task prompt for PC-MoE blocks; plain Swin has none (see ``backbones.clasp``)."""
        if task is not None:
            raise BenchError(f"{self._name()} has no task prompts (PC-MoE); task={task!r} "
                             f"applies only to clasp_* backbones")
        return None

    def _name(self) -> str:
        name = getattr(self, "backbone_name", None)
        return f"backbone {name!r}" if name else f"this {type(self).__name__}"

    # -- forward --------------------------------------------------------------------
    def _forward(self, x: Tensor, semantic_weight, task, norm: bool,
                 last_only: bool) -> list[Tensor]:
        cond = self._controller_input(semantic_weight, x)
        prompt = self._prompt(task, x)
        x = self.drop_after_pos(self.patch_embed(x))
        outs = []
        last = self.out_indices[-1]
        for i in range(last + 1):
            x, out = self.stages[i](x, prompt)
            if cond is not None and i < last:
                scale = F.softplus(self.semantic_embed_w[i](cond))[:, None, None, :]
                x = x * scale + self.semantic_embed_b[i](cond)[:, None, None, :]
            if i in self.out_indices and (i == last or not last_only):
                if norm:
                    out = getattr(self, f"norm{i}")(out)
                outs.append(out.permute(0, 3, 1, 2).contiguous())
        return outs

    def forward_intermediates(self, x: Tensor, semantic_weight: float | Tensor | None = None,
                              task: str | None = None, norm: bool = True) -> list[Tensor]:
        """NCHW maps of the ``out_indices`` stages, each after its ``norm{i}`` (``norm=False``:
        the raw stage outputs, for equivalence tests)."""
        return self._forward(x, semantic_weight, task, norm, last_only=False)

    def forward_features(self, x: Tensor, semantic_weight: float | Tensor | None = None,
                         task: str | None = None) -> Tensor:
        """The last output map (NCHW, normed)."""
        return self._forward(x, semantic_weight, task, True, last_only=True)[0]

    def forward(self, x: Tensor, semantic_weight: float | Tensor | None = None,
                task: str | None = None) -> Tensor:
        """Pooled embedding: the spatial mean of the last output map, (B, num_features)."""
        return self.forward_features(x, semantic_weight, task).mean(dim=(2, 3))


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, WindowMSA):
        nn.init.trunc_normal_(m.relative_position_bias_table, std=0.02)


def _short(v: Any) -> str:
    return f"<tensor {tuple(v.shape)}>" if isinstance(v, Tensor) else repr(v)


# --------------------------------------------------------------------------------------
# the zoo entries
# --------------------------------------------------------------------------------------
SWIN_OVERRIDES = frozenset({"window_size", "mlp_ratio", "strides", "out_indices", "drop_rate",
                            "attn_drop_rate", "drop_path_rate", "shift_single_window",
                            "in_channels"})

# (short paper name for tables, the full reference for the cfg's notes)
_PAPERS = {
    "sup": ("Swin (ICCV 2021)", "Swin Transformer (Liu et al., ICCV 2021), ImageNet-1k "
            "supervised: SOLIDER's 'Sup' baseline.  Runs SOLIDER's always-shift windows, as "
            "SOLIDER's downstream code does with these weights; shift_single_window=False "
            "gives timm's / Microsoft's features at 224x224"),
    "dino": ("DINO (ICCV 2021)", "DINO (Caron et al., ICCV 2021) on LUPerson with SOLIDER's "
             "code: SOLIDER's 'DINO' row"),
    "dinoclust": ("SOLIDER ablation", "SOLIDER (Chen et al., CVPR 2023) ablation "
                  "'DINO+Clustering': semantic clustering, no controller"),
    "solider": ("SOLIDER (CVPR 2023)", "Beyond Appearance: a Semantic Controllable "
                "Self-Supervised Learning Framework for Human-Centric Visual Tasks (Chen et al., "
                "CVPR 2023)"),
    "valpat": ("VAL-PAT", "Learning Transferable Pedestrian Representation from Multimodal "
               "Information Supervision (Bao et al.)"),
    "random": ("test model", "a tiny randomly initialised Swin for CPU tests"),
}
_SIZE_NAME = {"swin_t": "tiny", "swin_s": "small", "swin_b": "base"}


def _source(arch: str, method: str) -> str:
    size = _SIZE_NAME.get(arch, "")
    if method == "sup":
        return (f"Microsoft Swin ImageNet-1k release swin_{size}_patch4_window7_224.pth, or timm "
                f"swin_{size}_patch4_window7_224.ms_in1k (converted on load)")
    if method == "solider":
        return (f"SOLIDER release swin_{size}.pth (tinyvision/SOLIDER README, Google Drive): the "
                f"full training dict, its 'teacher' backbone is loaded; or `bench pretrain`")
    if method == "valpat":
        return ("VAL-PAT authors' checkpoint if you have one (its layout is unchecked here; "
                "SOLIDER/mmdet, Microsoft and timm Swin layouts all load); otherwise "
                "`bench pretrain --method valpat`")
    return f"`bench pretrain --method {method}` (no official release)"


def swin_cfg(arch: str, method: str, **kw: Any) -> BackboneCfg:
    """The cfg of a Swin zoo entry with default strides (4,2,2,2) and all four outputs."""
    controller = kw.pop("semantic_controller", method == "solider")
    kw.setdefault("semantic_weight", 1.0 if controller else None)
    paper, notes = _PAPERS.get(method, (method, ""))
    kw.setdefault("paper", paper)
    kw.setdefault("notes", notes)
    kw.setdefault("source", _source(arch, method))
    channels = swin_channels(arch)
    return BackboneCfg(
        arch=arch, pretrain_method=method, semantic_controller=controller,
        pretrain_input_size=(224, 224) if method == "sup" else (256, 128),
        feature_channels=channels, feature_strides=(4, 8, 16, 32), num_features=channels[-1],
        **kw)


def build_swin(factory: Callable, checkpoint: str | None = None,
               semantic_weight: float | None = None, model_cls: type = None,
               allowed: frozenset = SWIN_OVERRIDES, extra: dict | None = None,
               **overrides: Any) -> SwinTransformer:
    """Build the entry ``factory`` (its ``cfg`` and name), apply overrides, load weights.

    ``semantic_weight`` sets the controller's default λ (entries with a controller only);
    ``checkpoint`` is any file :func:`backbones.checkpoint.load_checkpoint` reads.  Weights
    are never downloaded: without a checkpoint the model is randomly initialised.
    """
    name, cfg = factory.__name__, factory.cfg
    if semantic_weight is not None and not cfg.semantic_controller:
        raise BenchError(f"backbone {name!r} has no semantic controller; semantic_weight="
                         f"{semantic_weight!r} applies only to backbones with one (solider_*)")
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise BenchError(f"backbone {name!r}: unknown option(s) {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(allowed))})")
    embed, depths, heads = SWIN_ARCHS[cfg.arch]
    lam = None
    if cfg.semantic_controller:
        lam = cfg.semantic_weight if semantic_weight is None else float(semantic_weight)
    model = (model_cls or SwinTransformer)(
        embed_dims=embed, depths=depths, num_heads=heads, semantic_weight=lam,
        **(extra or {}), **overrides)
    model.backbone_name, model.backbone_cfg = name, cfg
    if checkpoint is not None:
        from backbones.checkpoint import load_checkpoint
        load_checkpoint(model, checkpoint)
    return model


def _entry(arch: str, method: str, **kw: Any) -> Callable[[Callable], Callable]:
    """Decorator: give the factory its cfg and register it under its own name."""
    def deco(fn: Callable) -> Callable:
        fn.cfg = swin_cfg(arch, method, **kw)
        return register_backbone(**fn.cfg.as_meta())(fn)
    return deco


# ImageNet-supervised Swin (SOLIDER's "Sup" baseline): no controller.
@_entry("swin_t", "sup")
def sup_swin_t(checkpoint=None, semantic_weight=None, **overrides):
    """Swin-T, ImageNet-1k supervised."""
    return build_swin(sup_swin_t, checkpoint, semantic_weight, **overrides)


@_entry("swin_s", "sup")
def sup_swin_s(checkpoint=None, semantic_weight=None, **overrides):
    """Swin-S, ImageNet-1k supervised."""
    return build_swin(sup_swin_s, checkpoint, semantic_weight, **overrides)


@_entry("swin_b", "sup")
def sup_swin_b(checkpoint=None, semantic_weight=None, **overrides):
    """Swin-B, ImageNet-1k supervised."""
    return build_swin(sup_swin_b, checkpoint, semantic_weight, **overrides)


# DINO on LUPerson (SOLIDER's first stage): no controller.
@_entry("swin_t", "dino")
def dino_swin_t(checkpoint=None, semantic_weight=None, **overrides):
    """Swin-T, DINO on LUPerson."""
    return build_swin(dino_swin_t, checkpoint, semantic_weight, **overrides)


@_entry("swin_s", "dino")
def dino_swin_s(checkpoint=None, semantic_weight=None, **overrides):
    """Swin-S, DINO on LUPerson."""
    return build_swin(dino_swin_s, checkpoint, semantic_weight, **overrides)


@_entry("swin_b", "dino")
def dino_swin_b(checkpoint=None, semantic_weight=None, **overrides):
    """Swin-B, DINO on LUPerson."""
    return build_swin(dino_swin_b, checkpoint, semantic_weight, **overrides)


# DINO + semantic clustering (SOLIDER ablation): no controller.
@_entry("swin_t", "dinoclust")
def dinoclust_swin_t(checkpoint=None, semantic_weight=None, **overrides):
    """Swin-T, DINO + semantic clustering, no controller."""
    return build_swin(dinoclust_swin_t, checkpoint, semantic_weight, **overrides)


@_entry("swin_s", "dinoclust")
def dinoclust_swin_s(checkpoint=None, semantic_weight=None, **overrides):
    """Swin-S, DINO + semantic clustering, no controller."""
    return build_swin(dinoclust_swin_s, checkpoint, semantic_weight, **overrides)


@_entry("swin_b", "dinoclust")
def dinoclust_swin_b(checkpoint=None, semantic_weight=None, **overrides):
    """Swin-B, DINO + semantic clustering, no controller."""
    return build_swin(dinoclust_swin_b, checkpoint, semantic_weight, **overrides)


# SOLIDER: with the semantic controller (default λ 1.0, as SOLIDER's demo and the downstream
# config defaults; each task passes its own official λ).
@_entry("swin_t", "solider")
def solider_swin_t(checkpoint=None, semantic_weight=None, **overrides):
    """Swin-T, SOLIDER, with the λ controller."""
    return build_swin(solider_swin_t, checkpoint, semantic_weight, **overrides)


@_entry("swin_s", "solider")
def solider_swin_s(checkpoint=None, semantic_weight=None, **overrides):
    """Swin-S, SOLIDER, with the λ controller."""
    return build_swin(solider_swin_s, checkpoint, semantic_weight, **overrides)


@_entry("swin_b", "solider")
def solider_swin_b(checkpoint=None, semantic_weight=None, **overrides):
    """Swin-B, SOLIDER, with the λ controller."""
    return build_swin(solider_swin_b, checkpoint, semantic_weight, **overrides)


# VAL-PAT: no controller.
@_entry("swin_t", "valpat")
def valpat_swin_t(checkpoint=None, semantic_weight=None, **overrides):
    """Swin-T, VAL-PAT (self-supervised + image-text + attributes)."""
    return build_swin(valpat_swin_t, checkpoint, semantic_weight, **overrides)


@_entry("swin_s", "valpat")
def valpat_swin_s(checkpoint=None, semantic_weight=None, **overrides):
    """Swin-S, VAL-PAT."""
    return build_swin(valpat_swin_s, checkpoint, semantic_weight, **overrides)


@_entry("swin_b", "valpat")
def valpat_swin_b(checkpoint=None, semantic_weight=None, **overrides):
    """Swin-B, VAL-PAT."""
    return build_swin(valpat_swin_b, checkpoint, semantic_weight, **overrides)


# Tiny CPU variants for the tests (embed 32, depths (1,1,2,1), heads (1,2,4,8)).
@_entry("test", "random", source="random init only (a test model)")
def test_sup_swin(checkpoint=None, semantic_weight=None, **overrides):
    """A tiny Swin without controller, for CPU tests."""
    return build_swin(test_sup_swin, checkpoint, semantic_weight, **overrides)


@_entry("test", "random", semantic_controller=True, source="random init only (a test model)")
def test_solider_swin(checkpoint=None, semantic_weight=None, **overrides):
    """A tiny Swin with the λ controller, for CPU tests."""
    return build_swin(test_solider_swin, checkpoint, semantic_weight, **overrides)
