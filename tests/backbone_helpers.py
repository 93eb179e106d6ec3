"""Test oracles for the backbone zoo.

:func:`reference_swin_forward` runs SOLIDER's Swin algorithm the slow, literal way, straight
from a state dict in the official key layout: tokens as (B, L, C) with an (H, W) shape,
``nn.Unfold`` patch merging after "corner" padding, zero padding to whole windows after
``norm1``, ``torch.roll`` then a region mask built by slicing an image of region ids
(``-100`` across regions), explicit ``softmax(q*scale @ k^T + bias + mask)``, and the λ FiLM
after every stage (the last one unused).  It shares no code with ``backbones.swin``, so the
fast model (SDPA, channels-last, fused window batches) is checked against an independent
reading of the official ``SwinTransformer.forward``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _ln(x, sd, name):
    return F.layer_norm(x, x.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], eps=1e-5)


def _lin(x, sd, name):
    return F.linear(x, sd[f"{name}.weight"], sd.get(f"{name}.bias"))


def _corner_pad(x, kernel, stride):
    """AdaptivePadding('corner') for a (B, C, H, W) map."""
    H, W = x.shape[-2:]
    pad_h = max((math.ceil(H / stride) - 1) * stride + kernel - H, 0)
    pad_w = max((math.ceil(W / stride) - 1) * stride + kernel - W, 0)
    return F.pad(x, [0, pad_w, 0, pad_h])


def _merge(x, hw, sd, name, stride):
    B, L, C = x.shape
    H, W = hw
    x = _corner_pad(x.view(B, H, W, C).permute(0, 3, 1, 2), 2, stride)
    Hp, Wp = x.shape[-2:]
    x = F.unfold(x, kernel_size=2, stride=stride)  # B, 4C, L'
    out_hw = ((Hp - 2) // stride + 1, (Wp - 2) // stride + 1)
    x = x.transpose(1, 2)
    x = _ln(x, sd, f"{name}.norm")
    return F.linear(x, sd[f"{name}.reduction.weight"]), out_hw


def _partition(x, ws):  # B, H, W, C -> nW*B, ws, ws, C
    B, H, W, C = x.shape
    x = x.view(B, H // ws, ws, W // ws, ws, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws, ws, C)


def _reverse(w, ws, H, W):
    B = w.shape[0] // ((H // ws) * (W // ws))
    x = w.view(B, H // ws, W // ws, ws, ws, -1).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, H, W, -1)


def _rel_index(ws):
    idx = torch.empty(ws * ws, ws * ws, dtype=torch.long)
    for a in range(ws * ws):
        for b in range(ws * ws):
            dy = a // ws - b // ws + ws - 1
            dx = a % ws - b % ws + ws - 1
            idx[a, b] = dy * (2 * ws - 1) + dx
    return idx


def _window_attention(xw, sd, name, heads, ws, mask):
    Bw, N, C = xw.shape
    qkv = _lin(xw, sd, f"{name}.qkv").reshape(Bw, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    q = q * (C // heads) ** -0.5
    attn = q @ k.transpose(-2, -1)
    table = sd[f"{name}.relative_position_bias_table"]
    bias = table[_rel_index(ws).view(-1)].view(N, N, -1).permute(2, 0, 1)
    attn = attn + bias.unsqueeze(0)
    if mask is not None:
        nW = mask.shape[0]
        attn = attn.view(Bw // nW, nW, heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, heads, N, N)
    attn = attn.softmax(-1)
    x = (attn @ v).transpose(1, 2).reshape(Bw, N, C)
    return _lin(x, sd, f"{name}.proj")


def _shift_window_msa(x, hw, sd, name, heads, ws, shift):
    B, L, C = x.shape
    H, W = hw
    x = x.view(B, H, W, C)
    pad_r, pad_b = (ws - W % ws) % ws, (ws - H % ws) % ws
    x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    Hp, Wp = x.shape[1:3]
    mask = None
    if shift:
        x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        img = torch.zeros(1, Hp, Wp, 1)
        cnt = 0
        for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
                img[:, hs, wsl, :] = cnt
                cnt += 1
        mw = _partition(img, ws).view(-1, ws * ws)
        mask = mw.unsqueeze(1) - mw.unsqueeze(2)
        mask = mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)
    xw = _partition(x, ws).view(-1, ws * ws, C)
    y = _window_attention(xw, sd, name, heads, ws, mask)
    x = _reverse(y.view(-1, ws, ws, C), ws, Hp, Wp)
    if shift:
        x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
    return x[:, :H, :W, :].reshape(B, H * W, C)


def reference_swin_forward(sd, x, depths, num_heads, strides=(4, 2, 2, 2),
                           out_indices=(0, 1, 2, 3), window_size=7, semantic_weight=None,
                           norm=True):
    """(pooled, [NCHW maps]) of the official algorithm on state dict ``sd``.

    ``semantic_weight``: None (no controller) or a (B, 2) tensor [λ, 1-λ].
    """
    sd = dict(sd)
    p = strides[0]
    x = _corner_pad(x, p, p)
    x = F.conv2d(x, sd["patch_embed.projection.weight"], sd["patch_embed.projection.bias"],
                 stride=p)
    hw = x.shape[-2:]
    x = _ln(x.flatten(2).transpose(1, 2), sd, "patch_embed.norm")
    outs = []
    for i, depth in enumerate(depths):
        for j in range(depth):
            name = f"stages.{i}.blocks.{j}"
            shift = window_size // 2 if j % 2 else 0
            h = _ln(x, sd, f"{name}.norm1")
            x = x + _shift_window_msa(h, hw, sd, f"{name}.attn.w_msa", num_heads[i],
                                      window_size, shift)
            h = _ln(x, sd, f"{name}.norm2")
            h = _lin(F.gelu(_lin(h, sd, f"{name}.ffn.layers.0.0")), sd, f"{name}.ffn.layers.1")
            x = x + h
        out, out_hw = x, hw
        if i < len(depths) - 1:
            x, hw = _merge(x, hw, sd, f"stages.{i}.downsample", strides[i + 1])
        if semantic_weight is not None:
            sw = F.linear(semantic_weight, sd[f"semantic_embed_w.{i}.weight"],
                          sd[f"semantic_embed_w.{i}.bias"]).unsqueeze(1)
            sb = F.linear(semantic_weight, sd[f"semantic_embed_b.{i}.weight"],
                          sd[f"semantic_embed_b.{i}.bias"]).unsqueeze(1)
            x = x * F.softplus(sw) + sb
        if i in out_indices:
            if norm:
                out = _ln(out, sd, f"norm{i}")
            outs.append(out.view(-1, *out_hw, out.shape[-1]).permute(0, 3, 1, 2).contiguous())
    pooled = F.adaptive_avg_pool2d(outs[-1], 1).flatten(1)
    return pooled, outs


def lam_input(lam, batch):
    """The official controller input [λ, 1-λ] for a float λ, shape (batch, 2)."""
    w = torch.full((batch, 1), float(lam))
    return torch.cat([w, 1 - w], dim=1)
