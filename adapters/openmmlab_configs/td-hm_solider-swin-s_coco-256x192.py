# mmpose top-down heatmap pose estimation on COCO keypoints with an hcbench backbone
# (SOLIDER's pose code is an mmpose fork: TopdownPoseEstimator + HeatmapHead, 256x192 crops).
# Self-contained on purpose (no _base_): every setting is here.
#   python -m adapters.openmmlab td-hm_solider-swin-s_coco-256x192.py   # synthetic COCO
#   mmpose's tools/train.py works unchanged: custom_imports pulls in the bridge.
custom_imports = dict(imports=["adapters.openmmlab"], allow_failed_imports=False)
default_scope = "mmpose"
hcbench_dataset = "coco"  # the synthetic world's root `python -m adapters.openmmlab` uses

# -- model -------------------------------------------------------------------------------
codec = dict(type="MSRAHeatmap", input_size=(192, 256), heatmap_size=(48, 64), sigma=2)
model = dict(
    type="TopdownPoseEstimator",
    data_preprocessor=dict(type="PoseDataPreprocessor", mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True),
    # any zoo entry (`bench list backbones`); checkpoint: official SOLIDER swin_small.pth,
    # Microsoft/timm Swin or a `bench pretrain` output (None: random init)
    backbone=dict(type="hcbench.Backbone", name="solider_swin_s", semantic_weight=0.8,
                  checkpoint=None, out_indices=(3,)),
    head=dict(type="HeatmapHead", in_channels=768, out_channels=17,
              loss=dict(type="KeypointMSELoss", use_target_weight=True), decoder=codec),
    test_cfg=dict(flip_test=True, flip_mode="heatmap", shift_heatmap=True))

# -- data --------------------------------------------------------------------------------
dataset_type = "CocoDataset"
data_mode = "topdown"
data_root = "data/coco/"
train_pipeline = [
    dict(type="LoadImage"),
    dict(type="GetBBoxCenterScale"),
    dict(type="RandomFlip", direction="horizontal"),
    dict(type="RandomHalfBody"),
    dict(type="RandomBBoxTransform"),
    dict(type="TopdownAffine", input_size=codec["input_size"]),
    dict(type="GenerateTarget", encoder=codec),
    dict(type="PackPoseInputs"),
]
val_pipeline = [
    dict(type="LoadImage"),
    dict(type="GetBBoxCenterScale"),
    dict(type="TopdownAffine", input_size=codec["input_size"]),
    dict(type="PackPoseInputs"),
]
train_dataloader = dict(
    batch_size=32, num_workers=2, persistent_workers=True,
    sampler=dict(type="DefaultSampler", shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, data_mode=data_mode,
                 ann_file="annotations/person_keypoints_train2017.json",
                 data_prefix=dict(img="train2017/"), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=32, num_workers=2, persistent_workers=True, drop_last=False,
    sampler=dict(type="DefaultSampler", shuffle=False, round_up=False),
    # ground-truth boxes; mmpose's usual bbox_file=data_root +
    # "person_detection_results/COCO_val2017_detections_AP_H_56_person.json" also works
    dataset=dict(type=dataset_type, data_root=data_root, data_mode=data_mode,
                 ann_file="annotations/person_keypoints_val2017.json",
                 data_prefix=dict(img="val2017/"), test_mode=True, pipeline=val_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type="CocoMetric", ann_file=data_root + "annotations/person_keypoints_val2017.json")
test_evaluator = val_evaluator

# -- schedule and runtime ----------------------------------------------------------------
train_cfg = dict(by_epoch=True, max_epochs=210, val_interval=10)
val_cfg = dict()
test_cfg = dict()
optim_wrapper = dict(optimizer=dict(type="AdamW", lr=5e-4, weight_decay=0.05))
param_scheduler = [
    dict(type="LinearLR", begin=0, end=500, start_factor=0.001, by_epoch=False),
    dict(type="MultiStepLR", begin=0, end=210, milestones=[170, 200], gamma=0.1, by_epoch=True),
]
auto_scale_lr = dict(base_batch_size=256)
default_hooks = dict(
    timer=dict(type="IterTimerHook"),
    logger=dict(type="LoggerHook", interval=50),
    param_scheduler=dict(type="ParamSchedulerHook"),
    checkpoint=dict(type="CheckpointHook", interval=10, save_best="coco/AP", rule="greater"),
    sampler_seed=dict(type="DistSamplerSeedHook"),
)
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
               dist_cfg=dict(backend="nccl"))
log_processor = dict(type="LogProcessor", window_size=50, by_epoch=True)
log_level = "INFO"
load_from = None
resume = False
