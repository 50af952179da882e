"""edge-ladder: audio-visual emotion recognition with a cross-modal ladder network.

Importing the package never imports torch, TensorRT or pycuda: training code lives in
`edge_ladder.model` / `edge_ladder.train`, deploy-time code in `edge_ladder.runtime`.
"""

__version__ = "0.1.0"

# CREMA-D's six emotion codes, in the order of the model's outputs.
EMOTIONS = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
EMOTION_NAMES = ("anger", "disgust", "fear", "happy", "neutral", "sad")
