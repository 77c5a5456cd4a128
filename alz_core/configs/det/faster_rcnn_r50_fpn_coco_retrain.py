# Re-training with the searched losses (AutoLoss-Zero appendix A.2): Faster R-CNN R50-FPN on the
# whole COCO 2017 train set for 12 epochs, evaluated on val2017, with mmdet's default 1x
# hyper-parameters (8 GPUs x 2 images, SGD lr 0.02, warm-up 500 iterations, steps at epochs 8
# and 11): the full model (5 FPN levels, 256 channels), the four branches being ALZ losses
# (weights 1.0 / 10.0; regression on decoded boxes). Put the searched formulas into the four
# ALZ losses (`alz retrain` does, or `--cfg-options model.rpn_head.loss_cls.formula=...`).
_base_ = ['./faster_rcnn_r50_fpn_coco_proxy.py']

head_channels = 256
model = dict(
    neck=dict(out_channels=head_channels, start_level=0, num_outs=5),
    rpn_head=dict(
        in_channels=head_channels,
        feat_channels=head_channels,
        anchor_generator=dict(strides=[4, 8, 16, 32, 64])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=head_channels, featmap_strides=[4, 8, 16, 32]),
        bbox_head=dict(in_channels=head_channels, fc_out_channels=1024)))

train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    dataset=dict(ann_file='annotations/instances_train2017.json',
                 data_prefix=dict(img='train2017/')))
val_dataloader = dict(
    dataset=dict(ann_file='annotations/instances_val2017.json', data_prefix=dict(img='val2017/')))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file='data/coco/annotations/instances_val2017.json')
test_evaluator = val_evaluator

max_epochs = 12
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=1e-4),
    accumulative_counts=1)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11],
         gamma=0.1),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=2))
auto_scale_lr = dict(enable=False, base_batch_size=16)
