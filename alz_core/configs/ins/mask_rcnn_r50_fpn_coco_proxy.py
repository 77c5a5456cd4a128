# The paper's instance-segmentation proxy task (AutoLoss-Zero appendix A.3): Mask R-CNN R50-FPN,
# "the proxy task is the same as for object detection" (1/4 of COCO train, 1 epoch, the last
# three FPN levels, half the head channels, lr 0.04 at batch 32, warm-up 250 iterations), with
# the mask branch as a fifth searched loss (per-pixel softmax over background / foreground).
# The target metric is mask mAP on the 5000 held-out training images.
_base_ = ['../det/faster_rcnn_r50_fpn_coco_proxy.py']

head_channels = 128
model = dict(
    type='MaskRCNN',
    data_preprocessor=dict(pad_mask=True),
    roi_head=dict(
        mask_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=14, sampling_ratio=0),
            out_channels=head_channels,
            featmap_strides=[16, 32, 64]),
        mask_head=dict(
            type='FCNMaskHead',
            num_convs=4,
            in_channels=head_channels,
            conv_out_channels=head_channels,
            num_classes=80,
            loss_mask=dict(type='ALZMaskLoss', formula='-y*log(yhat)', loss_weight=1.0))),
    train_cfg=dict(rcnn=dict(mask_size=28)),
    test_cfg=dict(rcnn=dict(mask_thr_binary=0.5)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(metric=['bbox', 'segm'])
test_evaluator = val_evaluator
