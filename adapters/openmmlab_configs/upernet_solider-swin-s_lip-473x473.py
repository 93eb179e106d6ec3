# mmsegmentation human parsing on LIP (20 classes) with an hcbench backbone: EncoderDecoder
# with UPerNet over the four stage maps, 473x473 crops as SCHP trains LIP.
# Self-contained on purpose (no _base_): every setting is here.
#   python -m adapters.openmmlab upernet_solider-swin-s_lip-473x473.py   # synthetic LIP
custom_imports = dict(imports=["adapters.openmmlab"], allow_failed_imports=False)
default_scope = "mmseg"
hcbench_dataset = "LIP"

# -- model -------------------------------------------------------------------------------
crop_size = (473, 473)
norm_cfg = dict(type="BN", requires_grad=True)  # SyncBN on several GPUs
model = dict(
    type="EncoderDecoder",
    data_preprocessor=dict(type="SegDataPreProcessor", mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0,
                           seg_pad_val=255, size=crop_size),
    backbone=dict(type="hcbench.Backbone", name="solider_swin_s", semantic_weight=0.8,
                  checkpoint=None, out_indices=(0, 1, 2, 3)),
    decode_head=dict(type="UPerHead", in_channels=[96, 192, 384, 768], in_index=[0, 1, 2, 3],
                     pool_scales=(1, 2, 3, 6), channels=512, dropout_ratio=0.1, num_classes=20,
                     norm_cfg=norm_cfg, align_corners=False,
                     loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False,
                                      loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode="whole"))

# -- data: LIP as it ships (TrainVal_images/, TrainVal_parsing_annotations/) -------------
dataset_type = "LIPDataset"
data_root = "data/LIP/"
train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations"),
    dict(type="RandomResize", scale=crop_size, ratio_range=(0.75, 1.25), keep_ratio=True),
    dict(type="RandomCrop", crop_size=crop_size, cat_max_ratio=0.75),
    dict(type="RandomFlip", prob=0.5),
    dict(type="PackSegInputs"),
]
val_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="Resize", scale=crop_size, keep_ratio=True),
    dict(type="LoadAnnotations"),
    dict(type="PackSegInputs"),
]
train_dataloader = dict(
    batch_size=8, num_workers=2, persistent_workers=True,
    sampler=dict(type="InfiniteSampler", shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root,
                 data_prefix=dict(img_path="TrainVal_images/train_images",
                                  seg_map_path="TrainVal_parsing_annotations/train_segmentations"),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=2, persistent_workers=True,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root,
                 data_prefix=dict(img_path="TrainVal_images/val_images",
                                  seg_map_path="TrainVal_parsing_annotations/val_segmentations"),
                 pipeline=val_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type="IoUMetric", iou_metrics=["mIoU"])
test_evaluator = val_evaluator

# -- schedule and runtime ----------------------------------------------------------------
train_cfg = dict(type="IterBasedTrainLoop", max_iters=80000, val_interval=8000)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
optim_wrapper = dict(type="OptimWrapper",
                     optimizer=dict(type="AdamW", lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01))
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type="PolyLR", eta_min=0.0, power=1.0, begin=1500, end=80000, by_epoch=False),
]
default_hooks = dict(
    timer=dict(type="IterTimerHook"),
    logger=dict(type="LoggerHook", interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type="ParamSchedulerHook"),
    checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=8000),
    sampler_seed=dict(type="DistSamplerSeedHook"),
)
env_cfg = dict(cudnn_benchmark=True, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
               dist_cfg=dict(backend="nccl"))
log_processor = dict(by_epoch=False)
log_level = "INFO"
load_from = None
resume = False
