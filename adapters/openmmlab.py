"""OpenMMLab bridge: any zoo backbone as the backbone of an mmdet, mmpose or mmseg config.

SOLIDER's own detection and pose code are mmdet/mmpose forks; this keeps such configs and
swaps in an hcbench backbone::

    custom_imports = dict(imports=["adapters.openmmlab"], allow_failed_imports=False)
    model = dict(
        type="TopdownPoseEstimator",
        backbone=dict(type="hcbench.Backbone", name="solider_swin_s", semantic_weight=0.8,
                      checkpoint="swin_small.pth", out_indices=(3,)),
        ...)

``hcbench.Backbone`` is :class:`HCBenchBackbone` in an mmengine child registry with scope
``hcbench``, so the name resolves from mmdet's, mmpose's and mmseg's ``MODELS`` alike (as
``mmpretrain.ResNet`` does); it is also registered as ``HCBenchBackbone`` in each of those
registries.  Its forward is ``tuple(model.forward_intermediates(x))``: the multi-scale NCHW
maps of the ``out_indices`` stages, each after its norm, which is what their necks and heads
take.  The core never imports OpenMMLab: this module imports without it, and registers
only when mmengine is installed (``adapters/openmmlab_install.sh``; README, "OpenMMLab").

Example configs live in ``adapters/openmmlab_configs/``; :func:`run_config` (also
``python -m adapters.openmmlab CONFIG``) builds one, trains it for a few iterations and
evaluates it on the synthetic world's COCO / LIP / CityPersons files.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import torch.nn as nn
from torch import Tensor

from backbones import create_backbone
from bench.io import atomic_write_text

CONFIG_DIR = Path(__file__).resolve().parent / "openmmlab_configs"
SCOPE = "hcbench"
# OpenMMLab packages whose MODELS registry gets the backbone, when installed.
DOWNSTREAM = ("mmdet", "mmpose", "mmseg")


def available() -> bool:
    """Whether mmengine (the base of every OpenMMLab framework) is installed."""
    return importlib.util.find_spec("mmengine") is not None


class HCBenchBackbone(nn.Module):
    """A zoo backbone as an OpenMMLab backbone: forward returns a tuple of NCHW maps.

    Args:
        name: a zoo entry (``bench list backbones``), e.g. ``solider_swin_s``.
        semantic_weight: SOLIDER's λ (entries with the semantic controller only).
        checkpoint: weights, any file ``backbones.checkpoint.load_checkpoint`` reads
            (official SOLIDER, Microsoft/timm Swin, ours); None keeps the random init.
        out_indices: the stages whose normed maps are returned (default all four).
        task: the PC-MoE prompt of a ``clasp_*`` backbone (e.g. ``"pose"``).
        frozen_stages: -1 trains everything; 0 freezes the patch embedding; k > 0 also
            freezes stages 0..k-1 and their norms (mmdet's Swin rule).
        **overrides: further factory options (``strides``, ``drop_path_rate``, ...).

    The wrapped model is ``self.model``, so its state dict keys are ``model.<our keys>``.
    Its weights come from ``checkpoint`` at construction; ``init_weights`` leaves them be.
    """

    def __init__(self, name: str, semantic_weight: float | None = None,
                 checkpoint: str | None = None, out_indices: Sequence[int] | None = None,
                 task: str | None = None, frozen_stages: int = -1, init_cfg: Any = None,
                 **overrides: Any):
        super().__init__()
        if out_indices is not None:
            overrides["out_indices"] = tuple(out_indices)
        self.name, self.task, self.frozen_stages = name, task, int(frozen_stages)
        self.model = create_backbone(name, checkpoint=checkpoint,
                                     semantic_weight=semantic_weight, **overrides)
        self.out_indices = tuple(self.model.out_indices)
        self.feature_channels = tuple(self.model.feature_channels)
        self.feature_strides = tuple(self.model.feature_strides)
        self.is_init = True  # weights are set: mmengine's init_weights skips this module
        self._freeze()

    def init_weights(self) -> None:
        """Weights come from ``checkpoint`` (or the zoo's random init) at construction."""

    def _freeze(self) -> None:
        if self.frozen_stages < 0:
            return
        frozen: list[nn.Module] = [self.model.patch_embed]
        for i in range(min(self.frozen_stages, len(self.model.stages))):
            frozen.append(self.model.stages[i])
            if i in self.out_indices:
                frozen.append(getattr(self.model, f"norm{i}"))
        for m in frozen:
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> "HCBenchBackbone":
        super().train(mode)
        self._freeze()
        return self

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return tuple(self.model.forward_intermediates(x, task=self.task))


# --------------------------------------------------------------------------------------
# registration (only with OpenMMLab installed)
# --------------------------------------------------------------------------------------
MODELS = None  # the ``hcbench`` child registry of mmengine's MODELS, once registered


def register() -> list[str]:
    """Register ``hcbench.Backbone`` (and ``HCBenchBackbone`` in each installed downstream
    registry); returns the scopes that hold it.  Idempotent; a no-op without mmengine."""
    global MODELS
    if not available():
        return []
    from mmengine.registry import MODELS as ROOT, Registry
    if MODELS is None:
        MODELS = ROOT._children.get(SCOPE)
        if MODELS is None:
            MODELS = Registry("model", parent=ROOT, scope=SCOPE, locations=[__name__])
        MODELS.register_module("Backbone", module=HCBenchBackbone, force=True)
    scopes = [SCOPE]
    for pkg in DOWNSTREAM:
        if importlib.util.find_spec(pkg) is None:
            continue
        registry = importlib.import_module(f"{pkg}.registry").MODELS
        registry.register_module("HCBenchBackbone", module=HCBenchBackbone, force=True)
        scopes.append(pkg)
    return scopes


# --------------------------------------------------------------------------------------
# the synthetic world's files as the example configs read them
# --------------------------------------------------------------------------------------
def citypersons_to_coco(root: str | Path, split: str, out: str | Path) -> Path:
    """Write one CityPersons split as a COCO detection file for mmdet's ``CocoDataset``.

    One category, ``pedestrian`` (id 1); ``file_name`` is relative to
    ``leftImg8bit/<split>/``; non-pedestrian boxes (riders, groups, ignore regions) get
    ``iscrowd=1``, which mmdet turns into ignored boxes.
    """
    from bench.data.citypersons import read_citypersons
    images, anns = [], []
    for i, img in enumerate(read_citypersons(root, split), start=1):
        rel = Path(img.image_path).relative_to(Path(root).resolve() / "leftImg8bit" / split)
        images.append({"id": i, "file_name": rel.as_posix(), "width": img.width,
                       "height": img.height})
        for o in img.objects:
            x, y, w, h = (float(v) for v in o.bbox)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 1,
                         "bbox": [x, y, w, h], "area": w * h, "iscrowd": int(o.ignore)})
    return atomic_write_text(out, json.dumps({"images": images, "annotations": anns,
                                              "categories": [{"id": 1, "name": "pedestrian"}]}))


def synthetic_roots(cache_dir: str | Path | None = None) -> dict[str, Path]:
    """The smoke synthetic world's COCO, LIP and CityPersons roots (the world is made if
    missing; ``cache_dir`` defaults to bench.toml's ``paths.cache_dir``).  The CityPersons
    root is ``<cache>/openmmlab/<world>/CityPersons``: the world's ``leftImg8bit`` (a link)
    and ``coco_annotations/{train,val}.json`` from :func:`citypersons_to_coco`, so the
    world's own folder is left as it was written."""
    from bench import config
    from bench.data.synth.world import default_dir, make
    cache = Path(cache_dir) if cache_dir else config.load().cache_dir
    world = default_dir(cache, "smoke", 0)
    make(world, "smoke", 0, formats=("coco", "lip", "citypersons"))
    cp = cache / "openmmlab" / world.name / "CityPersons"
    cp.mkdir(parents=True, exist_ok=True)
    if not (cp / "leftImg8bit").exists():
        (cp / "leftImg8bit").symlink_to((world / "CityPersons" / "leftImg8bit").resolve())
    for split in ("train", "val"):
        out = cp / "coco_annotations" / f"{split}.json"
        if not out.exists():
            citypersons_to_coco(world / "CityPersons", split, out)
    return {"coco": world / "coco", "LIP": world / "LIP", "CityPersons": cp}


# --------------------------------------------------------------------------------------
# running a config
# --------------------------------------------------------------------------------------
def load_config(path: str | Path, data_root: str | Path | None = None,
                backbone: dict | None = None, work_dir: str | Path | None = None,
                max_iters: int = 1, val_samples: int | None = None,
                options: dict | None = None):
    """An mmengine ``Config`` from ``path`` (a file, or a name in
    ``adapters/openmmlab_configs/``) for a short check run: every path under the config's
    ``data_root`` moved under ``data_root``, ``backbone`` merged into the model's backbone,
    ``max_iters`` training iterations with no validation during training, no checkpoints,
    loaders without worker processes, the first ``val_samples`` evaluation items if given,
    and last ``options``: ``{"model.head.in_channels": 256, ...}`` as mmengine's
    ``--cfg-options`` (list items by index: ``"train_pipeline.2.scale"``)."""
    from mmengine.config import Config
    cfg = Config.fromfile(str(resolve_config(path)))
    if data_root is not None:
        old, new = str(cfg.data_root), str(data_root).rstrip("/") + "/"

        def move(v):
            if isinstance(v, str) and v.startswith(old):
                return new + v[len(old):]
            if isinstance(v, dict):
                return type(v)({k: move(x) for k, x in v.items()})
            if isinstance(v, (list, tuple)):
                return type(v)(move(x) for x in v)
            return v
        for key in list(cfg.keys()):
            cfg[key] = move(cfg[key])
    if backbone:
        cfg.model.backbone.update(backbone)
    if work_dir is not None:
        cfg.work_dir = str(work_dir)
    cfg.train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters,
                         val_interval=max_iters + 1)
    cfg.param_scheduler = []
    cfg.default_hooks.checkpoint = dict(type="CheckpointHook", interval=-1, save_last=False)
    cfg.default_hooks.logger = dict(type="LoggerHook", interval=1)
    cfg.log_processor = dict(type="LogProcessor", window_size=1, by_epoch=False)
    for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
        loader = cfg.get(key)
        if loader is None:
            continue
        loader.num_workers = 0
        loader.persistent_workers = False
        if val_samples is not None and key != "train_dataloader":
            loader.dataset.indices = int(val_samples)
    if options:
        cfg.merge_from_dict(dict(options), allow_list_keys=True)
    return cfg


def resolve_config(path: str | Path) -> Path:
    """``path`` itself if it exists, else the example config of that name."""
    path = Path(path)
    if not path.exists() and (CONFIG_DIR / path.name).exists():
        return CONFIG_DIR / path.name
    return path


def _data_root(cfg, roots: dict[str, Path]) -> Path:
    """The synthetic root a config reads: its ``hcbench_dataset`` key names it."""
    name = cfg.get("hcbench_dataset")
    if name not in roots:
        raise ValueError(f"config has no hcbench_dataset among {sorted(roots)}: "
                         f"pass data_root explicitly")
    return roots[name]


def run_config(path: str | Path, work_dir: str | Path, data_root: str | Path | None = None,
               backbone: dict | None = None, max_iters: int = 1,
               val_samples: int | None = None, options: dict | None = None) -> dict[str, Any]:
    """Build the config's runner, train ``max_iters`` iterations, evaluate; return
    ``{"loss": last training losses, "metrics": the evaluator's dict}``.

    ``data_root`` defaults to the synthetic world's root for the config's
    ``hcbench_dataset`` (``coco``, ``LIP`` or ``CityPersons``).
    """
    register()
    from mmengine.config import Config
    from mmengine.runner import Runner
    if data_root is None:
        probe = Config.fromfile(str(resolve_config(path)))
        data_root = _data_root(probe, synthetic_roots())
    cfg = load_config(path, data_root, backbone, work_dir, max_iters, val_samples, options)
    runner = Runner.from_cfg(cfg)
    losses: dict[str, float] = {}

    from mmengine.hooks import Hook

    class _Losses(Hook):
        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            losses.update({k: float(v.detach()) if hasattr(v, "detach") else float(v)
                           for k, v in (outputs or {}).items()})

    runner.register_hook(_Losses(), priority="LOWEST")
    runner.train()
    metrics = runner.val()
    return {"loss": losses,
            "metrics": {k: float(v) for k, v in metrics.items() if _is_number(v)}}


def _is_number(v: Any) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m adapters.openmmlab",
        description="Train an OpenMMLab config a few iterations and evaluate it, on the "
                    "synthetic world unless --data-root is given.")
    parser.add_argument("config", help="a file, or a name in adapters/openmmlab_configs/")
    parser.add_argument("--work-dir", help="default: <cache>/openmmlab/work/<config name>")
    parser.add_argument("--data-root")
    parser.add_argument("--backbone", help="a zoo name replacing the config's backbone")
    parser.add_argument("--checkpoint")
    parser.add_argument("--max-iters", type=int, default=1)
    parser.add_argument("--val-samples", type=int)
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                        help="config overrides, values as Python literals")
    args = parser.parse_args(argv)
    if not available():
        print("error: OpenMMLab is not installed; run adapters/openmmlab_install.sh",
              file=sys.stderr)
        return 2
    bb = {k: v for k, v in (("name", args.backbone), ("checkpoint", args.checkpoint)) if v}
    options = {}
    for item in args.cfg_options:
        key, _, value = item.partition("=")
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key] = value
    work_dir = args.work_dir
    if work_dir is None:
        from bench import config
        work_dir = config.load().cache_dir / "openmmlab" / "work" / resolve_config(args.config).stem
    out = run_config(args.config, work_dir, args.data_root, bb or None,
                     args.max_iters, args.val_samples, options)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    # run the imported module, so that configs' custom_imports see the same classes
    from adapters.openmmlab import main as _main
    sys.exit(_main())
else:
    register()
