"""Parameter and multiply-add counts of a torch module at a reference input.

Convention: one MAC = one multiply and one add (a fused multiply-add). We count the MACs of the
matrix products and convolutions that torch actually runs (aten mm/addmm/bmm/convolution, via
torch.utils.flop_counter, which reports 2 FLOPs per MAC) during one forward pass at the reference
input. Element-wise ops, activations, normalisation and pooling are NOT counted: they are
memory-bound and below 1 % of the products here. FLOPs = 2 x MACs.

Reference input: a 2 s window, batch 1, both modalities present: T_a = 198 audio frames
(100 frames/s, 25 ms window) and T_v = 20 face frames (10 frames/s).
"""
from __future__ import annotations

from ..features import INPUT_NAMES

REFERENCE_AUDIO_FRAMES = 198
REFERENCE_VIDEO_FRAMES = 20


def reference_inputs(batch: int = 1, audio_frames: int = REFERENCE_AUDIO_FRAMES,
                     video_frames: int = REFERENCE_VIDEO_FRAMES, n_mels: int = 80, face_size: int = 48,
                     seed: int = 0) -> dict:
    """Random (never zero) float32 numpy inputs of the reference size, all frames valid."""
    import numpy as np
    rng = np.random.default_rng(seed)
    return {
        "audio": rng.normal(-4.0, 3.0, (batch, audio_frames, n_mels)).astype(np.float32),
        "audio_mask": np.ones((batch, audio_frames), np.float32),
        "face": rng.normal(0.0, 1.0, (batch, video_frames, 1, face_size, face_size)).astype(np.float32),
        "face_mask": np.ones((batch, video_frames), np.float32),
        "presence": np.ones((batch, 2), np.float32),
    }


def count_params(module) -> int:
    """Number of parameters (learned weights), buffers excluded."""
    return int(sum(p.numel() for p in module.parameters()))


def count_macs(forward, inputs: dict) -> int:
    """MACs of one call `forward(**torch_inputs)` (see the module docstring for the convention).
    `forward` is any callable taking the five named inputs as torch tensors."""
    from .._deps import require
    torch = require("torch")
    from torch.utils.flop_counter import FlopCounterMode
    tensors = {n: torch.as_tensor(inputs[n]) for n in INPUT_NAMES}
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        forward(**tensors)
    return int(counter.get_total_flops()) // 2
