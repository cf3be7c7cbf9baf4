"""Shared test settings: one intra-op thread, so small forward passes are not slowed by thread
oversubscription on a loaded 2-core CI host (runs that need more set run.threads themselves)."""

import torch

torch.set_num_threads(1)
