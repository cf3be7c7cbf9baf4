"""Shared test settings: one intra-op thread, so small forward passes are not slowed by thread
oversubscription on a loaded 2-core CI host (runs that need more set run.threads themselves); and test data
more than one test module writes."""

import torch

torch.set_num_threads(1)

# The evaluation settings of timm's ImageNet-1k ResMLP weights, as their config.json's pretrained_cfg holds them.
TIMM_IN1K_EVAL = {
    "fixed_input_size": True,
    "interpolation": "bicubic",
    "crop_pct": 0.875,
    "crop_mode": "center",
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
}
