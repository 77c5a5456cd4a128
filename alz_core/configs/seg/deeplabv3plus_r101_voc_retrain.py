# Re-training with the searched loss (AutoLoss-Zero appendix A.1): DeepLabV3+ R101-D8 on
# PASCAL VOC 2012 + SBD (train-aug, 10582 images), 512x512 crops, 30 epochs, evaluated on the
# VOC 2012 validation set. Otherwise DeepLabV3+'s own setting (mmseg's 20k-iteration VOC-aug
# schedule: 4 GPUs x 4 images, SGD lr 0.01, momentum 0.9, weight decay 5e-4, poly decay, SyncBN).
# The model, data layout, pipelines and runtime are the proxy config's; this file changes the
# depth, the crops, the norm layers, the batch, the optimiser and schedule, and the checkpoints.
#
# Data (mmseg's VOC+SBD layout):
#   data/VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,SegmentationClassAug}
#   ImageSets/Segmentation/{train,aug,val}.txt (aug.txt: tools/dataset_converters/voc_aug.py)
# Put the searched formula into every ALZLoss below (`--cfg-options` or SegProxyTask).
#
# A variable of the proxy config used inside one of its dicts (crop_size, scale, max_epochs,
# norm_cfg, the pipelines) was evaluated there: setting it here changes only the top-level key,
# so every place that uses it is set again below. Lists (pipelines, datasets, schedulers) replace
# the proxy's whole.
_base_ = ['./deeplabv3plus_r50_voc_proxy.py']

crop_size = (512, 512)
scale = (2048, 512)
max_epochs = 30

# distributed over several GPUs (tools/dist_train.sh); on one GPU use BN instead
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        depth=101,
        norm_cfg=norm_cfg,
        init_cfg=dict(type='Pretrained', checkpoint='open-mmlab://resnet101_v1c')),
    decode_head=dict(norm_cfg=norm_cfg),
    auxiliary_head=dict(norm_cfg=norm_cfg))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=scale, ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]

# the proxy's VOC train and SBD aug datasets (train-aug) with this file's pipeline
dataset_train = dict(_base_.dataset_train, pipeline=train_pipeline)
dataset_aug = dict(_base_.dataset_aug, pipeline=train_pipeline)
train_dataloader = dict(
    batch_size=4,
    num_workers=4,
    dataset=dict(datasets=[dataset_train, dataset_aug]))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# no head lr multiplier here (mmseg's own schedule): the proxy's paramwise_cfg is dropped
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=5e-4),
    clip_grad=None)
param_scheduler = [
    dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=max_epochs, by_epoch=True,
         convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=5)

# replaced whole (_delete_) to keep the keys in the order of the hook's arguments
default_hooks = dict(
    checkpoint=dict(_delete_=True, type='CheckpointHook', by_epoch=True, interval=5,
                    max_keep_ckpts=2, save_last=True))
