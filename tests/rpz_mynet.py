"""A tiny MyNet configuration the mynet tests share (seconds per epoch on 600 images)."""

TINY = {
    "stages": 1,
    "channels": 8,
    "convs_per_stage": 1,
    "kernel_size": 3,
    "head": "flatten",
    "fc_layers": 0,
    "dropout": 0.0,
    "optimizer": "sgd",
    "sgd_lr": 0.05,
    "sgd_weight_decay": 1e-4,
    "batch_size": 64,
    "label_smoothing": 0.0,
    "epochs": 4,
    "schedule": "onecycle",
    "augment_shift": 1,
    "augment_flip": False,
    "augment_erase": 0.1,
}
