# Tiny SimpleBaseline on the synthetic COCO-keypoint dataset: the CPU proxy task of the pose
# search.
#
# ResNet-18 with 16 base channels and a 3-layer, 32-channel deconvolution head (SimpleBaseline's
# shape, scaled down): 96x128 inputs, 24x32 heatmaps, 17 COCO joints. No pretrained weights:
# nothing is downloaded. Data: `alz_core.tasks.pose.ensure_synthetic_coco_pose(data_root)`
# writes it (COCO layout, search split included). The searched loss is the only loss:
# `PoseProxyTask` replaces `formula` below. The metric is mmpose's own CocoMetric (OKS keypoint
# AP) on the search-eval split, with ground-truth person boxes.
custom_imports = dict(imports=['alz_core.mm'], allow_failed_imports=False)
default_scope = 'mmpose'

dataset_type = 'CocoDataset'
data_mode = 'topdown'
data_root = 'data/synthetic_coco_pose'
max_iters = 120
warmup_iters = 10

codec = dict(type='MSRAHeatmap', input_size=(96, 128), heatmap_size=(24, 32), sigma=1.5)

model = dict(
    type='TopdownPoseEstimator',
    data_preprocessor=dict(
        type='PoseDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True),
    backbone=dict(type='ResNet', depth=18, stem_channels=16, base_channels=16),
    head=dict(
        type='HeatmapHead',
        in_channels=128,
        out_channels=17,
        deconv_out_channels=(32, 32, 32),
        deconv_kernel_sizes=(4, 4, 4),
        loss=dict(type='ALZLoss', formula='(yhat - y)^2', use_target_weight=True),
        decoder=codec),
    # no flip test: each synthetic joint has its own colour, a mirrored person is another one
    test_cfg=dict(flip_test=False))

train_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale'),
    dict(type='RandomBBoxTransform', rotate_factor=20.0),
    dict(type='TopdownAffine', input_size=codec['input_size']),
    dict(type='GenerateTarget', encoder=codec),
    dict(type='PackPoseInputs'),
]
val_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale'),
    dict(type='TopdownAffine', input_size=codec['input_size']),
    dict(type='PackPoseInputs'),
]
# num_workers=0: the images are tiny, worker processes would cost more than loading them
train_dataloader = dict(
    batch_size=16,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_mode=data_mode,
        ann_file='annotations/person_keypoints_train2017.json',
        data_prefix=dict(img='train2017/'),
        serialize_data=False,
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=32,
    num_workers=0,
    persistent_workers=False,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False, round_up=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_mode=data_mode,
        ann_file='annotations/person_keypoints_val2017.json',
        data_prefix=dict(img='train2017/'),
        serialize_data=False,
        test_mode=True,
        pipeline=val_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(
    type='CocoMetric', ann_file=data_root + '/annotations/person_keypoints_val2017.json')
test_evaluator = val_evaluator

optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=2e-3), clip_grad=None)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='CosineAnnealingLR', T_max=max_iters, eta_min=0.0, by_epoch=False, begin=0,
         end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, save_last=False),
    sampler_seed=dict(type='DistSamplerSeedHook'))
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='PoseLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
