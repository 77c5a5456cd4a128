# Re-training with the searched loss (AutoLoss-Zero appendix A.4): SimpleBaseline ResNet-50 on
# COCO train2017 for 210 epochs with MMPose's default settings (its
# td-hm_res50_8xb64-210e_coco-256x192: 8 GPUs x 64, Adam lr 5e-4, 500-iteration linear warm-up,
# steps at epochs 170 and 200), 256x192 inputs, 64x48 heatmaps, evaluated on val2017 with the
# SimpleBaseline person detections (COCO_val2017_detections_AP_H_56_person.json).
# The model, codec and pipelines are the proxy config's; this file changes the data, the
# schedule and the checkpoints.
#
# Data (mmpose's COCO layout): data/coco/{train2017,val2017}/*.jpg,
# data/coco/annotations/person_keypoints_{train,val}2017.json,
# data/coco/person_detection_results/COCO_val2017_detections_AP_H_56_person.json.
# Put the searched formula into the ALZLoss below (`--cfg-options` or PoseProxyTask).
_base_ = ['./simplebaseline_r50_coco_proxy.py']

data_root = 'data/coco'
max_epochs = 210

train_dataloader = dict(
    batch_size=64,
    num_workers=2,
    dataset=dict(ann_file='annotations/person_keypoints_train2017.json'))
val_dataloader = dict(
    batch_size=32,
    num_workers=2,
    dataset=dict(
        ann_file='annotations/person_keypoints_val2017.json',
        bbox_file='data/coco/person_detection_results/'
        'COCO_val2017_detections_AP_H_56_person.json',
        data_prefix=dict(img='val2017/')))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + '/annotations/person_keypoints_val2017.json')
test_evaluator = val_evaluator

optim_wrapper = dict(optimizer=dict(type='Adam', lr=5e-4))
param_scheduler = [
    dict(type='LinearLR', begin=0, end=500, start_factor=0.001, by_epoch=False),
    dict(type='MultiStepLR', begin=0, end=max_epochs, milestones=[170, 200], gamma=0.1,
         by_epoch=True),
]
# 8 GPUs x 64 images; the learning rate is scaled for other totals (`--auto-scale-lr`)
auto_scale_lr = dict(base_batch_size=512)
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=10)

default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=10, save_best='coco/AP', rule='greater',
                    save_last=True))
