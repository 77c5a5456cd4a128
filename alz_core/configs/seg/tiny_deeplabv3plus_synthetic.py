# Tiny DeepLabV3+ on the synthetic VOC-layout dataset: the CPU proxy task of the seg search.
#
# Built for a fitness signal above its noise (docs/proxy.md has the measurements): cross-entropy
# reaches mIoU 0.76 with a spread of about 0.01 over training seeds, predicting background
# everywhere 0.02, in about 8 s per proxy run on one CPU thread.
# Model: mmseg's EncoderDecoder with a DeepLabV3+ head (DepthwiseSeparableASPPHead) on a
# ResNetV1c-18 cut after its first stage (deep stem + layer1, 32 channels, output stride 4: 8x8
# features for a 32x32 input; the head's low-level c1 branch reads the same stage). About
# 0.09 M parameters, no pretrained weights (nothing is downloaded), no dropout, BN.
# Schedule: AdamW lr 3e-2 without warm-up, linear decay to 0, 300 iterations of batch 8
# (measured: a warm-up or high-lr SGD lengthens the initial "predict the prior" plateau, whose
# length varies from seed to seed and was the main source of run-to-run variance; fewer
# iterations raise the spread again). At batch 8 the loss tensors (8x21x32x32) stay in cache,
# so complicated searched losses cost little more than cross-entropy.
# Data: `alz_core.tasks.seg.ensure_synthetic_voc(data_root)` writes it. The searched loss is the
# only loss (no auxiliary head): `SegProxyTask` replaces `formula` below. The dataloaders name
# the dataset's own train/val splits; a search's proxy runs train on its search split instead
# (`alz_core.tasks.seg.adapt_config`: 1600 training and 240 evaluation scenes).
custom_imports = dict(imports=['alz_core.mm'], allow_failed_imports=False)
default_scope = 'mmseg'

dataset_type = 'PascalVOCDataset'
data_root = 'data/synthetic_voc'
num_classes = 21
crop_size = (32, 32)
max_iters = 300

norm_cfg = dict(type='BN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=crop_size)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        type='ResNetV1c',
        depth=18,
        base_channels=32,
        stem_channels=32,
        num_stages=1,
        out_indices=(0, ),
        dilations=(1, ),
        strides=(1, ),
        norm_cfg=norm_cfg,
        norm_eval=False,
        style='pytorch',
        contract_dilation=True),
    decode_head=dict(
        type='DepthwiseSeparableASPPHead',
        in_channels=32,
        in_index=0,
        channels=32,
        # 8x8 features: the usual rates (1, 12, 24, 36) would see only padding
        dilations=(1, 2, 3),
        c1_in_channels=32,
        c1_channels=8,
        dropout_ratio=0.0,
        num_classes=num_classes,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='ALZLoss', formula='-y*log(yhat)', loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
# num_workers=0: 32x32 images load in microseconds, worker processes would cost more than that;
# serialize_data=False: serialising only helps sharing with workers and costs a gc.collect()
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
        ann_file='ImageSets/Segmentation/train.txt',
        serialize_data=False,
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=48,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
        ann_file='ImageSets/Segmentation/val.txt',
        serialize_data=False,
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='ALZSegMetric')
test_evaluator = val_evaluator

# foreach: one multi-tensor update for all parameters (a few ms less per step, identical numbers)
optimizer = dict(type='AdamW', lr=3e-2, betas=(0.9, 0.999), weight_decay=1e-4, foreach=True)
optim_wrapper = dict(type='OptimWrapper', optimizer=optimizer, clip_grad=None)
param_scheduler = [
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=0, end=max_iters, by_epoch=False),
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
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
