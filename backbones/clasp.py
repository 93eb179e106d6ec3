"""CLASP's Prompt-Controlled Mixture-of-Experts (PC-MoE) on SOLIDER's Swin.

Paper: "CLIP-Guided Adaptable Self-Supervised Learning for Human-Centric Visual Tasks"
(CLASP).  What the paper fixes: a learnable prompt per downstream task; a PC-MoE module
whose experts are mixed by a *global* gate and a *channel-wise* gate, both driven by the
task prompt, so one backbone yields task-adapted features and gradient conflicts between
tasks are reduced.  No reference code is public; every other detail is our decision:

* **Where.**  The FFN of every block in stages 2 and 3 (``moe_stages=(2, 3)``) becomes a
  PC-MoE; stages 0-1 stay dense.  Low-level features are shared, the semantic stages adapt
  per task.  Attention, norms and patch merging are SOLIDER's Swin unchanged
  (:mod:`backbones.swin`), so all non-MoE keys keep the official layout.
* **Experts.**  ``E = num_experts = 4`` copies of Swin's FFN (``fc1 -> GELU -> fc2``, hidden
  ``4C``), stored stacked as ``ffn.experts.{w1,b1,w2,b2}`` with shapes (E, 4C, C), (E, 4C),
  (E, C, 4C), (E, C).
* **Prompts.**  ``task_prompts``: one learnable ``prompt_dims = 64`` vector per task, rows in
  the order of ``tasks = ('default', 'reid', 'attribute', 'search', 'detection', 'parsing',
  'pose')`` (the six SOLIDER tasks of ``adapters.SOLIDER_TASKS`` plus ``default``, used when
  a call names no task).  Shared by all MoE blocks; initialised N(0, 1) like an
  ``nn.Embedding`` so different tasks gate differently from the start.  The backbone holds
  only these vectors; how CLIP guides them is the pretraining objective's business.
* **Gates.**  Per MoE block, from the prompt ``p``: global gate ``g = softmax(W_g p + b_g)``
  over the E experts, channel gate ``c = sigmoid(W_c p + b_c)`` reshaped to (E, C).  The
  block's FFN output is ``sum_e g_e * c_e ⊙ FFN_e(x)`` (⊙ per channel), added to the residual
  as usual.  Gates depend on the task only, not on the token: every expert runs on every
  token (dense mixture, no routing, no load-balancing loss), and because the gate is
  constant over a call it is folded into ``fc2`` — one fused matmul for all experts' fc1 and
  one for the gated fc2, no Python loop over experts.
* **Init.**  Experts and gate projections trunc-normal(.02), biases 0 (as every Linear of
  the Swin), so at init g ≈ 1/E and c ≈ 1/2.
* **Interface.**  ``model(x, task='reid')`` / ``model.forward_intermediates(x, task=...)``;
  the task is chosen per call; a call without one uses ``default_task`` (a constructor
  option, ``'default'`` unless given: ``create_backbone('clasp_swin_t', default_task='reid')``
  lets task-agnostic code use the reID prompt); an unknown task is a :class:`BenchError`.
  ``model.task_gates(task)`` returns each MoE block's (g, c) for analysis.  No semantic
  controller (λ): CLASP's task adaptation is the prompt.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from adapters import SOLIDER_TASKS
from backbones import register_backbone
from backbones.swin import FFN, SWIN_OVERRIDES, SwinTransformer, build_swin, swin_cfg
from bench.errors import BenchError

Tensor = torch.Tensor
CLASP_TASKS = ("default",) + tuple(SOLIDER_TASKS)
CLASP_NOTES = ("CLIP-Guided Adaptable Self-Supervised Learning for Human-Centric Visual Tasks "
               "(CLASP): Swin with a Prompt-Controlled MoE in stages 2-3")


class Experts(nn.Module):
    """E stacked FFN experts: ``w1`` (E,H,C), ``b1`` (E,H), ``w2`` (E,C,H), ``b2`` (E,C)."""

    def __init__(self, num_experts: int, dims: int, hidden: int):
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(num_experts, hidden, dims))
        self.b1 = nn.Parameter(torch.zeros(num_experts, hidden))
        self.w2 = nn.Parameter(torch.empty(num_experts, dims, hidden))
        self.b2 = nn.Parameter(torch.zeros(num_experts, dims))
        nn.init.trunc_normal_(self.w1, std=0.02)
        nn.init.trunc_normal_(self.w2, std=0.02)


class PromptMoEFFN(nn.Module):
    """Prompt-controlled mixture of FFN experts (see the module docstring)."""

    def __init__(self, dims: int, hidden: int, num_experts: int = 4, prompt_dims: int = 64,
                 drop: float = 0.0):
        super().__init__()
        self.num_experts, self.dims, self.hidden = num_experts, dims, hidden
        self.experts = Experts(num_experts, dims, hidden)
        self.gate_global = nn.Linear(prompt_dims, num_experts)
        self.gate_channel = nn.Linear(prompt_dims, num_experts * dims)
        self.drop = nn.Dropout(drop)

    def gates(self, prompt: Tensor) -> tuple[Tensor, Tensor]:
        """Global gate (E,) summing to 1 and channel gate (E, C) in (0, 1) for one prompt."""
        g = F.softmax(self.gate_global(prompt), dim=-1)
        c = torch.sigmoid(self.gate_channel(prompt)).view(self.num_experts, self.dims)
        return g, c

    def forward(self, x: Tensor, prompt: Tensor | None = None) -> Tensor:
        if prompt is None:
            raise BenchError("a PC-MoE block needs a task prompt (call the CLASP backbone "
                             "with task=...)")
        E, C, H = self.num_experts, self.dims, self.hidden
        g, c = self.gates(prompt)
        scale = (g[:, None] * c).to(x.dtype)  # E, C
        ex = self.experts
        h = F.linear(x, ex.w1.reshape(E * H, C), ex.b1.reshape(E * H))  # all experts' fc1
        h = self.drop(F.gelu(h))
        w2 = (ex.w2 * scale[:, :, None]).permute(1, 0, 2).reshape(C, E * H)  # gated fc2
        b2 = (ex.b2 * scale).sum(0)
        return self.drop(F.linear(h, w2, b2))


class CLASPSwin(SwinTransformer):
    """SOLIDER's Swin with PC-MoE FFNs in ``moe_stages`` and one prompt per task."""

    def __init__(self, *, num_experts: int = 4, moe_stages: Sequence[int] = (2, 3),
                 prompt_dims: int = 64, tasks: Sequence[str] = CLASP_TASKS,
                 default_task: str = "default", **swin_kw: Any):
        moe_stages = tuple(moe_stages)
        if default_task not in tasks:
            raise BenchError(f"CLASP: default_task {default_task!r} is not one of the prompts "
                             f"({', '.join(tasks)})")

        def ffn_layer(stage: int, dims: int, hidden: int, drop: float) -> nn.Module:
            if stage in moe_stages:
                return PromptMoEFFN(dims, hidden, num_experts, prompt_dims, drop)
            return FFN(dims, hidden, drop)

        super().__init__(ffn_layer=ffn_layer, **swin_kw)
        self.tasks, self.default_task = tuple(tasks), default_task
        self.num_experts, self.moe_stages = num_experts, moe_stages
        self.task_prompts = nn.Parameter(torch.randn(len(self.tasks), prompt_dims))

    def _prompt(self, task: str | None, x: Tensor) -> Tensor:
        task = self.default_task if task is None else task
        if task not in self.tasks:
            raise BenchError(f"{self._name()}: unknown task {task!r} for the PC-MoE prompts "
                             f"(known: {', '.join(self.tasks)})")
        return self.task_prompts[self.tasks.index(task)]

    def moe_blocks(self) -> list[tuple[str, PromptMoEFFN]]:
        return [(n, m) for n, m in self.named_modules() if isinstance(m, PromptMoEFFN)]

    @torch.no_grad()
    def task_gates(self, task: str | None = None) -> dict[str, tuple[Tensor, Tensor]]:
        """``{block name: (global gate (E,), channel gate (E, C))}`` for ``task``."""
        prompt = self._prompt(task, self.task_prompts)
        return {n: m.gates(prompt) for n, m in self.moe_blocks()}


CLASP_OVERRIDES = SWIN_OVERRIDES | {"num_experts", "moe_stages", "prompt_dims", "default_task"}


def _entry(arch: str, **kw: Any):
    def deco(fn):
        kw.setdefault("paper", "CLASP")
        kw.setdefault("notes", CLASP_NOTES)
        fn.cfg = swin_cfg(arch, kw.pop("method", "clasp"), task_prompts=CLASP_TASKS, **kw)
        return register_backbone(**fn.cfg.as_meta())(fn)
    return deco


def _build(factory, checkpoint, semantic_weight, overrides):
    return build_swin(factory, checkpoint, semantic_weight, model_cls=CLASPSwin,
                      allowed=CLASP_OVERRIDES, **overrides)


@_entry("swin_t", source="`bench pretrain --method clasp` (no public release)")
def clasp_swin_t(checkpoint=None, semantic_weight=None, **overrides):
    """Swin-T with CLASP's PC-MoE in stages 2-3."""
    return _build(clasp_swin_t, checkpoint, semantic_weight, overrides)


@_entry("swin_s", source="`bench pretrain --method clasp` (no public release)")
def clasp_swin_s(checkpoint=None, semantic_weight=None, **overrides):
    """Swin-S with CLASP's PC-MoE in stages 2-3."""
    return _build(clasp_swin_s, checkpoint, semantic_weight, overrides)


@_entry("swin_b", source="`bench pretrain --method clasp` (no public release)")
def clasp_swin_b(checkpoint=None, semantic_weight=None, **overrides):
    """Swin-B with CLASP's PC-MoE in stages 2-3."""
    return _build(clasp_swin_b, checkpoint, semantic_weight, overrides)


@_entry("test", method="random", source="random init only (a test model)")
def test_clasp_swin(checkpoint=None, semantic_weight=None, **overrides):
    """A tiny CLASP Swin for CPU tests."""
    return _build(test_clasp_swin, checkpoint, semantic_weight, overrides)
