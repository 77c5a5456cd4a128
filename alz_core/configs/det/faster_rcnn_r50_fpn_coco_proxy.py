# The paper's detection proxy task (AutoLoss-Zero appendix A.2): Faster R-CNN R50-FPN on COCO 2017,
# trained on 1/4 of the training images (the 5000 held-out images excluded) for 1 epoch, using
# only the last three FPN levels and half the head channels, lr 0.04 at batch 32 with a linear
# warm-up of 250 iterations. Otherwise mmdet's Faster R-CNN R50-FPN 1x setting.
#
# Data (COCO 2017 layout): data/coco/{train2017,val2017}/*.jpg and annotations/instances_*.json.
# A search trains on its search split of instances_train2017.json (`alz data prepare data/coco
# --task det`: 5000 seeded train images held out for evaluation, the proxy trains on 1/4 of the
# rest); the validation set is never used by a search.
#
# Batch 32 on one GPU (a search worker trains on one GPU): 8 images per step, gradients
# accumulated over 4 steps (optim_wrapper.accumulative_counts). The schedulers count steps, so
# the 250-iteration warm-up ends after 250 * 4 steps.
#
# Branches (the paper, A.2): RPN cls/reg and R-CNN cls/reg are ALZ losses, weights 1.0 / 10.0;
# `DetProxyTask` puts the candidate's formulas in. Regression losses act on decoded boxes
# (reg_decoded_bbox=True), classification losses on softmax probabilities (a 2-way RPN softmax).
custom_imports = dict(imports=['alz_core.mm'], allow_failed_imports=False)
default_scope = 'mmdet'

dataset_type = 'CocoDataset'
data_root = 'data/coco/'
batch_size = 32
images_per_step = 8
accumulate = batch_size // images_per_step
warmup_iters = 250
max_epochs = 1
head_channels = 128  # mmdet's 256, halved (the paper, A.2)

model = dict(
    type='FasterRCNN',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=32),
    backbone=dict(
        type='ResNet',
        depth=50,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')),
    # the last three FPN levels: laterals from C4 and C5 plus the max-pooled P6 (strides 16-64)
    neck=dict(
        type='FPN',
        in_channels=[256, 512, 1024, 2048],
        out_channels=head_channels,
        start_level=2,
        num_outs=3),
    rpn_head=dict(
        type='RPNHead',
        in_channels=head_channels,
        feat_channels=head_channels,
        anchor_generator=dict(
            type='AnchorGenerator', scales=[8], ratios=[0.5, 1.0, 2.0], strides=[16, 32, 64]),
        bbox_coder=dict(
            type='DeltaXYWHBBoxCoder',
            target_means=[.0, .0, .0, .0],
            target_stds=[1.0, 1.0, 1.0, 1.0]),
        reg_decoded_bbox=True,
        loss_cls=dict(type='ALZClsLoss', formula='-y*log(yhat)', loss_weight=1.0),
        loss_bbox=dict(type='ALZBoxLoss', formula='-log(i/e)', loss_weight=10.0)),
    roi_head=dict(
        type='StandardRoIHead',
        bbox_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
            out_channels=head_channels,
            featmap_strides=[16, 32, 64]),
        bbox_head=dict(
            type='Shared2FCBBoxHead',
            in_channels=head_channels,
            fc_out_channels=512,  # mmdet's 1024, halved
            roi_feat_size=7,
            num_classes=80,
            bbox_coder=dict(
                type='DeltaXYWHBBoxCoder',
                target_means=[0., 0., 0., 0.],
                target_stds=[0.1, 0.1, 0.2, 0.2]),
            reg_class_agnostic=False,
            reg_decoded_bbox=True,
            loss_cls=dict(type='ALZClsLoss', formula='-y*log(yhat)', loss_weight=1.0),
            loss_bbox=dict(type='ALZBoxLoss', formula='-log(i/e)', loss_weight=10.0))),
    train_cfg=dict(
        rpn=dict(
            assigner=dict(
                type='MaxIoUAssigner',
                pos_iou_thr=0.7,
                neg_iou_thr=0.3,
                min_pos_iou=0.3,
                match_low_quality=True,
                ignore_iof_thr=-1),
            sampler=dict(
                type='RandomSampler', num=256, pos_fraction=0.5, neg_pos_ub=-1,
                add_gt_as_proposals=False),
            allowed_border=-1,
            pos_weight=-1,
            debug=False),
        rpn_proposal=dict(
            nms_pre=2000, max_per_img=1000, nms=dict(type='nms', iou_threshold=0.7),
            min_bbox_size=0),
        rcnn=dict(
            assigner=dict(
                type='MaxIoUAssigner',
                pos_iou_thr=0.5,
                neg_iou_thr=0.5,
                min_pos_iou=0.5,
                match_low_quality=False,
                ignore_iof_thr=-1),
            sampler=dict(
                type='RandomSampler', num=512, pos_fraction=0.25, neg_pos_ub=-1,
                add_gt_as_proposals=True),
            pos_weight=-1,
            debug=False)),
    test_cfg=dict(
        rpn=dict(
            nms_pre=1000, max_per_img=1000, nms=dict(type='nms', iou_threshold=0.7),
            min_bbox_size=0),
        rcnn=dict(score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5), max_per_img=100)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=images_per_step,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=32),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/instances_val2017.json',
        data_prefix=dict(img='val2017/'),
        test_mode=True,
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(
    type='CocoMetric',
    ann_file=data_root + 'annotations/instances_val2017.json',
    metric='bbox',
    format_only=False)
test_evaluator = val_evaluator

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.04, momentum=0.9, weight_decay=1e-4),
    accumulative_counts=accumulate,
    clip_grad=None)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
         end=warmup_iters * accumulate),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=1, save_last=False),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='DetVisualizationHook'))
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='DetLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=True)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
