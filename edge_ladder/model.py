"""The cross-modal ladder network (train-time module; needs torch).

Formulas: /work/shared/reference/ladder-network.md (Rasmus et al. 2015 + our cross-modal
interpretation of Goncalves & Busso, ICASSP 2023). Structure, bottom to top:

    audio (B, T_a, 80) --normalise (buffers)--> AudioBackbone  --masked mean--> (B, E)
    face  (B, T_v, 1, 48, 48) --normalise-->    FaceBackbone   --masked mean--> (B, E)
    presence (B, 2): a modality flagged absent is replaced by a learned "absent" vector (E,)

    per modality m in {audio, face}: LadderEncoder
        layer 0 (input):  z0 = BN(pooled)                      h0 = z0
        layer l >= 1:     z  = BN(W_l h_{l-1})  [+ noise]      h  = relu(gamma_l * (z + beta_l))
    joint (cross-modal) layer over concat(h_audio_top, h_face_top): same ladder layer
    top (classifier) ladder layer: z = BN(W h_J), logits = gamma * (z + beta) (no ReLU), in
        EMOTIONS order; softmax(logits) is the ladder's top output h(top) (Rasmus et al.)

BN is always an explicit `nn.BatchNorm1d(affine=False)` followed by separate `gamma`/`beta`
parameters, and `W_l` has no bias, so an exporter folds `BN -> gamma*(. + beta)` into `W_l`:
    W' = diag(gamma / sqrt(running_var + eps)) W,  b' = gamma * (beta - running_mean / sqrt(running_var + eps)).

Training runs two encoder passes sharing all weights (the backbones are noise-free, so they run
once): a clean pass (batch statistics, which also update the running statistics; at the end of
every epoch train replaces those by the train clips' population statistics on the inference path,
`set_population_statistics`, which is what dev selection, evaluate and export use) and a corrupted
pass (its own batch statistics, Gaussian noise of std sigma added to every z, lateral skips).
The classifier's cross-entropy is taken on the corrupted pass, over the labelled rows only
(label UNLABELLED = -1: semi-supervised batches mix both; unlabelled rows still pass through
every batch normalisation and every denoising cost).

Decoders (training only), our cross-modal interpretation:
    top:     u_top = BN(h~_top) = BN(softmax(corrupted logits)); zhat_top = g_top(z~_top, u_top)
                                                                            reconstructs z_top
    joint:   u_J = BN(V_top zhat_top);  zhat_J = g_J(z~_J, u_J)               reconstructs z_J
    per modality m, top-down from zhat_J, lateral skips from m's corrupted encoder only:
             u_m(L) = BN(V_m,top zhat_J);  u_m(l) = BN(V_m,l+1 zhat_m(l+1))
             zhat_m(l) = g_m,l(z~_m(l), u_m(l))                              reconstructs z_m(l)
    cross:   zhat_{m->n}(l) = X_{m->n,l} zhat_m(l)                           reconstructs z_n(l)
             i.e. each decoder also reconstructs the *other* modality's clean layers, from its
             own lateral information plus the joint top-down signal (the cross-modal task).
    data:    dhat_m = D_m zhat_m(0)   (linear)   reconstructs FIXED data-space targets of m: audio
             = per-clip mean and std over valid frames of the normalised log-mel (2 x 80), face =
             mean over valid frames of the normalised crop average-pooled to 12 x 12 (144).
             Cost: mean squared error in input units over the samples where m is present.
    Weights, bottom to top (Rasmus et al.'s lambdas[0] weighs the INPUT data, so ours weighs the
    data level): lambdas[0] the data level, lambdas[1] layer 0 (a learned embedding), lambdas[2]
    the first hidden layer, ..., then the joint and the top layer, the last value repeating. The
    default 0.1 everywhere is the same model under either mapping. Why a data level: layer 0 is a
    learned embedding, so reconstructing only it lets the encoder move its own targets; with the
    reference lambdas 1000 / 10 / 0.1 weighing layer 0 itself it collapsed to ~1 dimension and the
    model predicted one class. Measured on the 12-actor test corpus (tiny model, 10 epochs, layer-0
    participation ratio audio/face on dev at epoch 10, classes the selected checkpoint predicts on
    test): default lambdas 1.9 / 2.0, 3 classes; reference lambdas with this mapping (data 1000,
    layer 0 10) 1.2 / 2.7, 1 class (train CE 1.9-2.1 every epoch, chance ln 6 = 1.8);
    data level alone (1000 0 0.1) 1.1 / 2.4, 2 classes; layer 0 alone (0 10 0.1) 1.2 / 5.5, 1 class.
    Probes NOT adopted (they change the default model too): a stop-gradient on layer 0's clean
    target 1.1 / 2.5, 4 classes (macro-F1 0.10); noise on the backbones' inputs instead of on layer 0
    1.0 / 2.1, 1 class. That setting (144 clips, 10 epochs, ~30 steps) trains nothing, though:
    lambda = 0 there also has train CE at chance and PR 1.8 / 1.9, and the synthetic face carries
    only 2 cue groups (a well-trained face code is near 1-D). Trained longer (12 actors x 36 clips,
    tiny model, 20 epochs; test macro-F1, classes predicted, last-epoch PR audio/face): lambda = 0
    0.883, 6, 1.9 / 1.5; default 0.893, 6, 2.1 / 1.1; reference lambdas 0.154, 4, 2.2 / 2.4 (train
    CE 2.03 -> 1.62): layer 0 does not collapse, but the data cost at weight 1000, which reaches
    the encoder through the laterals, swamps the cross-entropy. Probes there, NOT adopted (each
    changes the default model, whose corpus figures would have to be measured again): the data
    level as a true ladder level (its own noisy lateral, the batch-standardised targets + N(0,
    0.3^2), and a combinator with u = BN(D zhat(0))) gives the reference lambdas 0.318, 5 classes,
    PR 4.0 / 1.7, dev still rising at epoch 20 (default lambdas 0.886, 6 classes); at 60 epochs (seed 0) it gives the
    reference lambdas 0.643, 6 classes, PR 3.6 / 1.8 (this model: 0.275), but the default lambdas 0.868
    against this model's 0.935 (lambda = 0 0.888), and on training seeds 1 / 2 0.624 / 0.906 against
    0.877 / 0.962 (paired mean -12.5 points, 3/3 worse): a default-model regression, so not adopted
    (benchmarks/results/issue11/data_level_lateral.patch, data_level_lateral-seeds.json); standardised
    targets without a lateral 0.168, 4 classes. So the reference lambdas still fail: the strict
    xfail in tests/test_train.py. train logs the collapse signal (layer-0 participation ratio) per epoch.
    g is the Gaussian (vanilla) combinator with per-unit a1..a10 (a2, a7 start at 1).
    C_d = mean over batch and units of (z_clean - zhat_BN)^2, where zhat_BN normalises zhat with
    the clean pass's batch mean/variance of z_pre (as in Rasmus et al.'s implementation), eps 1e-10;
    layer 0 (the pooled input) is not re-normalised (mean 0, variance 1).
    Loss = CE(corrupted logits) + sum_l lambda_l C_d(l) + cross_lambda * sum(cross C_d).
    Ladder modes: "none" (lambda = 0, decoders not run), "within" (top, joint, own-modality and
    data costs), "cross" (plus the cross costs, each weighted by cross_lambda).

    Absent modalities (our interpretation): a modality flagged absent (presence[:, m] == 0, by
    --modalities audio/video or by modality dropout) enters its encoder as the learned constant
    "absent" vector. Its layers carry nothing to reconstruct, and a batch where it is absent
    everywhere has variance 0 in every layer of m, which broke two things:
    - the denoising cost: zhat_BN = (zhat - mu) / sqrt(0 + 1e-10) exploded and drowned the CE;
    - batch normalisation: in training BN(constant) = 0 exactly, while the running statistics
      (mean lagging the moving constant, variance -> 0) turned the same constant into large
      values at inference, so an audio-only or video-only model predicted one class.
    Hence, per modality m, "the batch" means the samples where m is present:
    - m's encoder layers normalise (clean and corrupted pass) with the batch statistics of
      those samples, and only they move the running statistics; absent samples are normalised
      with the same statistics. With fewer than 2 present samples the layer uses its running
      statistics (no update), exactly as inference does;
    - every cost whose TARGET is a layer of m (m's own decoder and the other decoder's cross
      reconstruction) is averaged over those samples and the units; the clean statistics mu,
      var of z_pre are theirs and the target is z_pre normalised with them (the encoder's clean
      z). With fewer than 2 such samples the cost is 0.
    The joint layer (normalisation and cost) stays over all samples. When every sample is present
    all of this is the reference maths. Selections are weights and torch.where, not boolean
    indexing or Python branches, so every step runs the same graph (DDP) with no host sync.

Inference (`LadderNet.inference_module()` / `LadderNet.forward`): clean backbones, encoders,
joint layer and the top layer with running BN statistics (the exporter folds the top layer's
BN + gamma/beta into one Gemm, as it does for the encoder layers: the same cost as a Linear). No decoder parameter, no noise, no
corrupted path. Only ops that ONNX opset 17 and TensorRT 8.5 take (Conv, MatMul, Relu,
ReduceMean/Sum, BatchNormalization, Slice with steps, Max for the masked-mean denominator,
AveragePool for the face grid).

Masking: padding never changes the output. Every conv input is multiplied by its validity mask,
stride-2 convs (kernel 5, padding 2) downsample the mask as mask[:, ::2] (the output length
ceil(T/2) matches), and masked means divide by max(sum(mask), 1).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ._deps import require
from .errors import EdgeLadderError

torch = require("torch")
nn = torch.nn
F = torch.nn.functional

from . import EMOTIONS  # noqa: E402

CHECKPOINT_FORMAT = "edge-ladder-checkpoint"
CHECKPOINT_VERSION = 2   # 2: the classifier is the top ladder layer, decoders have a data level (issue 11)
LADDER_MODES = ("none", "within", "cross")
MODALITIES = ("audio", "face")


@dataclass
class ModelConfig:
    n_classes: int = len(EMOTIONS)
    audio_input: str = "logmel"        # "logmel": (B, T_a, audio_dim) frames through the conv backbone;
                                       # "embedding": precomputed (B, T_a, audio_dim) features (wav2vec2-like)
    audio_dim: int = 80                # mel bins, or the embedding width
    face_input: str = "crops"          # "crops": (B, T_v, 1, S, S); "embedding": (B, T_v, face_dim)
    face_size: int = 48
    face_dim: int = 0                  # embedding width when face_input == "embedding"
    audio_channels: int = 32
    face_channels: tuple = (8, 16, 32)  # per-frame 2-D CNN, each conv stride 2: 48 -> 24 -> 12 -> 6
    face_grid: int = 1                 # per-frame spatial pooling of the last map: 1 = its mean (checkpoints
                                       # from before issue 11's grid have no field: they load as 1); G = the
                                       # means of G x G cells, flattened through a Linear, so a feature keeps
                                       # where on the face it is (brows vs mouth); the presets use 2
    embed_dim: int = 32                # pooled backbone width E = ladder layer 0
    encoder_dims: tuple = (32,)        # ladder encoder hidden layers per modality
    joint_dim: int = 32

    def __post_init__(self):
        self.face_channels = tuple(self.face_channels)
        self.encoder_dims = tuple(self.encoder_dims)
        if self.audio_input not in ("logmel", "embedding"):
            raise EdgeLadderError(f"audio_input must be 'logmel' or 'embedding'; got {self.audio_input!r}")
        if self.face_input not in ("crops", "embedding"):
            raise EdgeLadderError(f"face_input must be 'crops' or 'embedding'; got {self.face_input!r}")
        if self.face_input == "embedding" and self.face_dim <= 0:
            raise EdgeLadderError("face_input='embedding' needs face_dim > 0 (the embedding width)")
        side = face_map_size(self.face_size, len(self.face_channels))
        if self.face_input == "crops" and (self.face_grid < 1 or side % self.face_grid):
            raise EdgeLadderError(f"face_grid {self.face_grid} must be >= 1 and divide the face backbone's last map "
                                  f"({side} x {side} for {self.face_size} px crops and {len(self.face_channels)} "
                                  f"stride-2 convs); use face_grid 1 or a divisor.")

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# "tiny": tests (a few seconds per epoch on 2 cores); "small": the demo default.
PRESETS = {
    "tiny": dict(audio_channels=16, face_channels=(8, 16, 16), face_grid=2, embed_dim=24, encoder_dims=(24,),
                 joint_dim=24),
    "small": dict(audio_channels=48, face_channels=(12, 24, 32), face_grid=2, embed_dim=48, encoder_dims=(48, 32),
                  joint_dim=32),
}


def face_map_size(face_size: int, n_convs: int) -> int:
    """Side of the face backbone's last map: each conv3x3 stride 2 padding 1 maps S to ceil(S / 2)."""
    for _ in range(n_convs):
        face_size = (face_size + 1) // 2
    return face_size


def model_config(size: str = "small", **overrides) -> ModelConfig:
    if size not in PRESETS:
        raise EdgeLadderError(f"model size must be one of {', '.join(PRESETS)}; got {size!r}")
    return ModelConfig(**{**PRESETS[size], **overrides})


# ---------------------------------------------------------------------------------------------
# Backbones


def masked_mean(x, mask):
    """x (B, C, T), mask (B, T) 1/0 -> (B, C): mean over valid steps; 0 when none is valid."""
    total = (x * mask[:, None, :]).sum(dim=2)                             # (B, C)
    count = mask.sum(dim=1, keepdim=True).clamp(min=1.0)                 # (B, 1)
    return total / count


class AudioBackbone(nn.Module):
    """Temporal convs over normalised log-mel frames (or a per-frame projection of embeddings).

    logmel:    (B, T, D) -> conv k5 + relu -> conv k5 /2 + relu -> conv k5 /2 -> masked mean -> (B, E)
    embedding: (B, T, D) -> conv k1 (per-frame Linear) -> masked mean -> (B, E)
    The last conv has no ReLU (a dead unit there would be dead for good; layer 0's BN follows).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        c, e, d = config.audio_channels, config.embed_dim, config.audio_dim
        if config.audio_input == "logmel":
            self.convs = nn.ModuleList([nn.Conv1d(d, c, 5, padding=2), nn.Conv1d(c, c, 5, stride=2, padding=2),
                                        nn.Conv1d(c, e, 5, stride=2, padding=2)])
        else:
            self.convs = nn.ModuleList([nn.Conv1d(d, e, 1)])
        for conv in self.convs[:-1]:
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)

    def forward(self, frames, mask):
        """frames (B, T, D) normalised, mask (B, T) -> pooled (B, E)."""
        x = frames.transpose(1, 2)                                            # (B, D, T)
        for i, conv in enumerate(self.convs):
            x = conv(x * mask[:, None, :])                                    # (B, C, T')
            if i < len(self.convs) - 1:  # the last conv is linear: no unit can die before pooling
                x = F.relu(x)
            if conv.stride[0] == 2:
                mask = mask[:, ::2]                                           # (B, ceil(T/2))
        return masked_mean(x, mask)                                           # (B, E)


class FaceBackbone(nn.Module):
    """Per-frame 2-D CNN over face crops, then a temporal conv, then a masked mean.

    crops:     (B, T, 1, S, S) -> 3 x [conv3x3 /2 + relu] -> (B T, C, M, M), M = ceil(S / 8)
               -> face_grid 1: spatial mean -> (B, T, C)
                  face_grid G: mean of each of G x G cells (AveragePool M/G) -> flatten -> Linear -> (B, T, C)
               -> temporal conv k3 (linear) -> masked mean -> (B, E)
    The grid exists because the spatial mean throws away where a feature is: the receptive field of
    three 3x3 stride-2 convs is 15 px of 48, so a brow's frown and a mouth's down-turn look alike
    once averaged (issue 11, video, 5 actor folds: test accuracy 0.556 -> 0.583 with G = 2, paired
    +2.7 [-0.3, +5.8] points; README "The hard corpus").
    embedding: (B, T, D) -> temporal conv k3 (linear) -> masked mean -> (B, E)
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.face_input == "crops":
            channels = (1,) + config.face_channels
            self.frame_convs = nn.ModuleList([nn.Conv2d(channels[i], channels[i + 1], 3, stride=2, padding=1)
                                              for i in range(len(config.face_channels))])
            width = config.face_channels[-1]
            self.cell = face_map_size(config.face_size, len(config.face_channels)) // config.face_grid
            self.spatial = nn.Linear(width * config.face_grid ** 2, width) if config.face_grid > 1 else None
        else:
            self.cell, self.spatial = 0, None
            self.frame_convs = nn.ModuleList()
            width = config.face_dim
        self.temporal = nn.Conv1d(width, config.embed_dim, 3, padding=1)
        for conv in self.frame_convs:  # He init keeps the crops' variance through the ReLU stack
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)

    def forward(self, face, mask):
        """face (B, T, 1, S, S) or (B, T, D) normalised, mask (B, T) -> pooled (B, E)."""
        batch, steps = face.shape[0], face.shape[1]
        if len(self.frame_convs):
            x = face.reshape(batch * steps, 1, face.shape[-2], face.shape[-1])  # (B*T, 1, S, S)
            for conv in self.frame_convs:
                x = F.relu(conv(x))                                           # (B*T, C, S/2, S/2)
            if self.spatial is None:
                x = x.mean(dim=(2, 3))                                        # (B*T, C)
            else:
                x = F.avg_pool2d(x, self.cell).flatten(1)                     # (B*T, C G G)
                x = self.spatial(x)                                           # (B*T, C), linear
            x = x.reshape(batch, steps, -1)                                   # (B, T, C)
        else:
            x = face                                                          # (B, T, D)
        x = x.transpose(1, 2) * mask[:, None, :]                              # (B, C, T)
        x = self.temporal(x)                                                  # (B, E, T), linear
        return masked_mean(x, mask)                                           # (B, E)


# ---------------------------------------------------------------------------------------------
# Ladder pieces


def bn_running(bn, z):
    """Normalise z (B, N) with bn's running statistics, whatever bn.training says."""
    return F.batch_norm(z, bn.running_mean, bn.running_var, None, None, False, 0.0, bn.eps)


def bn_batch(z, eps: float):
    """Parameter-free batch normalisation with z's own batch statistics (no running update)."""
    return F.batch_norm(z, None, None, None, None, True, 0.0, eps)


def present_stats(z, present):
    """Mean and biased variance (N,) of z (B, N) over the samples with present (B,) == 1, their
    count, and whether there are >= 2 of them (a 0-d bool tensor; no host sync). Float32."""
    z, present = z.float(), present.float()
    count = present.sum()
    enough = count >= 2
    weight = present * enough                                                # (B,)
    n = weight.sum().clamp(min=1.0)
    mean = (weight[:, None] * z).sum(dim=0) / n                              # (N,)
    var = (weight[:, None] * (z - mean) ** 2).sum(dim=0) / n                 # (N,)
    return mean, var, count, enough


def bn_present(bn, z_pre, present, update: bool):
    """Parameter-free batch normalisation of z_pre (B, N) with the statistics of the PRESENT
    samples only (absent ones carry the constant "absent" vector and are normalised with the
    same statistics). Fewer than 2 present: bn's running statistics. update=True moves bn's
    running statistics (momentum, unbiased variance, as nn.BatchNorm1d) when >= 2 are present."""
    mean, var, count, enough = present_stats(z_pre, present)
    if update:
        with torch.no_grad():
            unbiased = var * count / (count - 1).clamp(min=1.0)
            m = bn.momentum
            bn.running_mean.copy_(torch.where(enough, (1 - m) * bn.running_mean + m * mean, bn.running_mean))
            bn.running_var.copy_(torch.where(enough, (1 - m) * bn.running_var + m * unbiased, bn.running_var))
            bn.num_batches_tracked += 1
    mean = torch.where(enough, mean, bn.running_mean)
    var = torch.where(enough, var, bn.running_var)
    return (z_pre.float() - mean) / torch.sqrt(var + bn.eps)                # (B, N)


class LadderLayer(nn.Module):
    """z = BN(W h) ; h' = act(gamma * (z + beta)).  W has no bias (BN removes it).

    `bn` is BatchNorm1d(affine=False): the clean training pass updates its running statistics;
    inference normalises with them. `input_layer=True` makes layer 0: z = BN(h) (no W), h' = z.
    act is ReLU, or the identity with `activation="linear"` (the top layer: h' are the logits,
    whose softmax is the ladder's top output).
    In training the batch statistics are those of the samples where the layer's modality is
    present (`present`, (B,) 1/0; all ones for the joint layer): see `bn_present`.
    """

    def __init__(self, in_dim: int, out_dim: int, input_layer: bool = False, activation: str = "relu"):
        super().__init__()
        if activation not in ("relu", "linear"):
            raise EdgeLadderError(f"LadderLayer activation must be 'relu' or 'linear'; got {activation!r}")
        self.input_layer = input_layer
        self.activation = activation
        self.linear = None if input_layer else nn.Linear(in_dim, out_dim, bias=False)
        self.bn = nn.BatchNorm1d(out_dim, affine=False)
        self.gamma = None if input_layer else nn.Parameter(torch.ones(out_dim))
        self.beta = None if input_layer else nn.Parameter(torch.zeros(out_dim))

    def pre(self, h):
        return h if self.input_layer else self.linear(h)                      # (B, N)

    def activate(self, z):
        if self.input_layer:
            return z
        h = self.gamma * (z + self.beta)
        return h if self.activation == "linear" else F.relu(h)

    def infer(self, h):
        """Inference: running statistics, no noise."""
        return self.activate(bn_running(self.bn, self.pre(h)))

    def clean(self, h, present):
        """Clean training pass: present samples' batch statistics (updating the running ones).
        Returns (h', z_pre); the denoising cost normalises z_pre itself (see `denoising_cost`)."""
        z_pre = self.pre(h)
        z = bn_present(self.bn, z_pre, present, update=True) if self.training else bn_running(self.bn, z_pre)
        return self.activate(z), z_pre

    def corrupted(self, h, present, noise_std: float):
        """Corrupted pass: its own (present samples') batch statistics, plus N(0, noise_std^2).
        Returns (h', z~)."""
        z = bn_present(self.bn, self.pre(h), present, update=False)
        z = z + noise_std * torch.randn_like(z)
        return self.activate(z), z


class Combinator(nn.Module):
    """Gaussian (vanilla) combinator, per unit: zhat = (z~ - mu(u)) * v(u) + mu(u)."""

    def __init__(self, dim: int):
        super().__init__()
        init = torch.zeros(10, dim)
        init[1] = 1.0   # a2
        init[6] = 1.0   # a7
        self.a = nn.Parameter(init)

    def forward(self, z_noisy, u):
        a = self.a
        mu = a[0] * torch.sigmoid(a[1] * u + a[2]) + a[3] * u + a[4]
        v = a[5] * torch.sigmoid(a[6] * u + a[7]) + a[8] * u + a[9]
        return (z_noisy - mu) * v + mu


def denoising_cost(z_pre, z_hat, present, bn_eps: float, input_layer: bool = False):
    """C_d of one layer over the samples where its modality is present.

    z_pre (B, N) clean pre-normalisation values, z_hat (B, N) reconstruction, present (B,) 1/0.
    With mean/var the (biased) statistics of z_pre over the present samples:
        z_clean = (z_pre - mean) / sqrt(var + bn_eps)       # the clean BN output when all are present
        z_hat_bn = (z_hat - mean) / sqrt(var + 1e-10)        # layer 0: z_hat itself (not re-normalised)
        C_d = sum_b present_b * mean_units (z_clean - z_hat_bn)^2 / sum_b present_b,  0 if sum < 2.
    Computed in float32 (under float16 autocast 1e-10 would round to 0).
    """
    z_pre, z_hat = z_pre.float(), z_hat.float()
    mean, var, _, enough = present_stats(z_pre, present)
    weight = present.float() * enough                                        # (B,) all 0 if < 2
    n = weight.sum().clamp(min=1.0)
    var = torch.where(enough, var, torch.ones_like(var))  # no tiny divisors in a skipped cost
    z_clean = (z_pre - mean) / torch.sqrt(var + bn_eps)                      # (B, N)
    z_hat_bn = z_hat if input_layer else (z_hat - mean) / torch.sqrt(var + 1e-10)
    per_sample = ((z_clean - z_hat_bn) ** 2).mean(dim=1)                     # (B,)
    return (weight * per_sample).sum() / n


def data_cost(target, prediction, present):
    """Mean squared error (B, D) -> () in input units over the samples with present (B,) == 1
    (no re-normalisation by batch statistics: the target is fixed data, not a learned layer).
    0 when nobody is present. Float32."""
    weight = present.float()                                                 # (B,)
    per_sample = ((target.float() - prediction.float()) ** 2).mean(dim=1)    # (B,)
    return (weight * per_sample).sum() / weight.sum().clamp(min=1.0)


def participation_ratio(z) -> float:
    """Effective dimensionality (sum eig)^2 / sum eig^2 of the covariance of z (N, D): D for
    isotropic codes, 1 for codes on a line (a collapsed layer). nan with fewer than 2 rows."""
    z = torch.as_tensor(z, dtype=torch.float64)
    if z.shape[0] < 2:
        return float("nan")
    eig = torch.linalg.eigvalsh(torch.cov(z.T)).clamp(min=0.0)               # (D,)
    total = float((eig ** 2).sum())
    return float(eig.sum() ** 2 / total) if total > 0 else float("nan")


DATA_FACE_POOL = 12    # face data-space target: the normalised crop average-pooled to 12 x 12


def data_target_dims(config: "ModelConfig") -> dict:
    """Widths of the fixed data-space targets below layer 0 (see `LadderNet.data_targets`)."""
    face = DATA_FACE_POOL * DATA_FACE_POOL if config.face_input == "crops" else config.face_dim
    return {"audio": 2 * config.audio_dim, "face": face}


class ModalityDecoder(nn.Module):
    """Top-down decoder of one modality: from zhat_J to layer 0, with lateral skips from this
    modality's corrupted encoder, plus cross heads reconstructing the other modality's layers,
    plus a linear data head: zhat(0) -> the modality's fixed data-space targets."""

    def __init__(self, dims: list, joint_dim: int, other_dims: list, data_dim: int):
        super().__init__()
        top = len(dims) - 1
        # V maps zhat(l+1) down to layer l; the top one maps the joint layer to layer L.
        self.down = nn.ModuleList([nn.Linear(dims[l + 1] if l < top else joint_dim, dims[l], bias=False)
                                   for l in range(len(dims))])
        self.combinators = nn.ModuleList([Combinator(d) for d in dims])
        self.cross = nn.ModuleList([nn.Linear(dims[l], other_dims[l]) for l in range(len(dims))])
        self.data = nn.Linear(dims[0], data_dim)

    def forward(self, z_hat_joint, z_noisy: list):
        """-> (own, cross, data): lists (per layer 0..L) of own reconstructions zhat(l) and cross
        reconstructions, and the data-space reconstruction (B, data_dim) from zhat(0)."""
        own = [None] * len(z_noisy)
        above = z_hat_joint
        for l in reversed(range(len(z_noisy))):
            u = bn_batch(self.down[l](above), 1e-5)                            # (B, N_l)
            own[l] = self.combinators[l](z_noisy[l], u)                       # (B, N_l)
            above = own[l]
        cross = [head(z) for head, z in zip(self.cross, own)]
        return own, cross, self.data(own[0])


# ---------------------------------------------------------------------------------------------
# The network


class LadderNet(nn.Module):
    """Cross-modal ladder network. `forward` is the inference path (see module docstring);
    `training_losses` runs the clean + corrupted passes and the decoders."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        # input normalisation (per-feature mean/std of the train split), part of inference
        self.register_buffer("audio_mean", torch.zeros(config.audio_dim))
        self.register_buffer("audio_std", torch.ones(config.audio_dim))
        face_width = 1 if config.face_input == "crops" else config.face_dim
        self.register_buffer("face_mean", torch.zeros(face_width))
        self.register_buffer("face_std", torch.ones(face_width))
        self.audio_backbone = AudioBackbone(config)
        self.face_backbone = FaceBackbone(config)
        self.absent = nn.ParameterDict({m: nn.Parameter(torch.zeros(config.embed_dim)) for m in MODALITIES})
        dims = [config.embed_dim, *config.encoder_dims]
        self.layer_dims = dims
        self.encoders = nn.ModuleDict({m: nn.ModuleList(
            [LadderLayer(dims[0], dims[0], input_layer=True)]
            + [LadderLayer(dims[i], dims[i + 1]) for i in range(len(dims) - 1)]) for m in MODALITIES})
        self.joint = LadderLayer(2 * dims[-1], config.joint_dim)
        # the top ladder layer: logits = gamma * (BN(W h_J) + beta); softmax(logits) is h(top)
        self.classifier = LadderLayer(config.joint_dim, config.n_classes, activation="linear")
        # training-only: decoders
        self.top_combinator = Combinator(config.n_classes)
        self.top_down = nn.Linear(config.n_classes, config.joint_dim, bias=False)   # V_top: zhat_top -> u_J
        self.joint_combinator = Combinator(config.joint_dim)
        data_dims = data_target_dims(config)
        self.decoders = nn.ModuleDict({m: ModalityDecoder(dims, config.joint_dim, dims, data_dims[m])
                                       for m in MODALITIES})

    # -- shared bottom ----------------------------------------------------------------------------
    def set_normalisation(self, audio_mean, audio_std, face_mean, face_std):
        for name, value in (("audio_mean", audio_mean), ("audio_std", audio_std),
                            ("face_mean", face_mean), ("face_std", face_std)):
            buffer = getattr(self, name)
            buffer.copy_(torch.as_tensor(value, dtype=buffer.dtype).reshape(buffer.shape))

    def normalise(self, audio, face):
        """Inputs in the units the backbones see: (audio - mean) / std per mel bin (B, T_a, D);
        face crops (B, T_v, 1, S, S) with one mean/std, or embeddings (B, T_v, D) per feature."""
        audio = (audio - self.audio_mean) / self.audio_std                    # (B, T_a, D)
        if self.config.face_input == "crops":
            face = (face - self.face_mean[0]) / self.face_std[0]              # (B, T_v, 1, S, S)
        else:
            face = (face - self.face_mean) / self.face_std                    # (B, T_v, D)
        return audio, face

    def data_targets(self, audio, audio_mask, face, face_mask) -> dict:
        """Fixed data-space targets below layer 0, from the NORMALISED inputs (`normalise`); the
        encoder cannot move them (issue 11: with the reference lambdas layer 0, a learned
        embedding, collapsed to ~1 dimension when only learned layers were reconstructed).
            audio (B, 2 D): per-clip mean and std over valid frames of the normalised log-mel
            face  (B, 144): mean over valid frames of the normalised crop average-pooled to 12 x 12
                  (embeddings: (B, D) mean over valid frames)
        Float32, no gradient."""
        with torch.no_grad():
            frames = audio.float().transpose(1, 2)                            # (B, D, T_a)
            mean = masked_mean(frames, audio_mask)                            # (B, D)
            var = masked_mean((frames - mean[:, :, None]) ** 2, audio_mask)  # (B, D)
            targets = {"audio": torch.cat([mean, torch.sqrt(var + 1e-5)], dim=1)}   # (B, 2 D)
            if self.config.face_input == "crops":
                batch, steps, size = face.shape[0], face.shape[1], face.shape[-1]
                pooled = F.adaptive_avg_pool2d(face.float().reshape(batch * steps, 1, size, size), DATA_FACE_POOL)
                per_frame = pooled.reshape(batch, steps, -1)                  # (B, T_v, 144)
            else:
                per_frame = face.float()                                      # (B, T_v, D)
            targets["face"] = masked_mean(per_frame.transpose(1, 2), face_mask)   # (B, 144)
        return targets

    def pooled(self, audio, audio_mask, face, face_mask, presence):
        """Backbones + presence substitution -> {"audio": (B, E), "face": (B, E)}."""
        audio, face = self.normalise(audio, face)
        embeddings = {"audio": self.audio_backbone(audio, audio_mask), "face": self.face_backbone(face, face_mask)}
        for i, m in enumerate(MODALITIES):
            present = presence[:, i:i + 1]                                    # (B, 1)
            embeddings[m] = present * embeddings[m] + (1.0 - present) * self.absent[m]
        return embeddings

    # -- inference --------------------------------------------------------------------------------
    def forward(self, audio, audio_mask, face, face_mask, presence):
        """Inference path -> logits (B, n_classes). Running BN statistics, no noise."""
        pooled = self.pooled(audio, audio_mask, face, face_mask, presence)
        tops = []
        for m in MODALITIES:
            h = pooled[m]
            for layer in self.encoders[m]:
                h = layer.infer(h)
            tops.append(h)
        h_joint = self.joint.infer(torch.cat(tops, dim=1))                   # (B, J)
        return self.classifier.infer(h_joint)                                 # (B, n_classes)

    def layer0_codes(self, audio, audio_mask, face, face_mask, presence) -> dict:
        """Clean layer-0 z per modality with running statistics (inference path) -> {m: (B, E)};
        the collapse signal (participation ratio) is computed on these."""
        pooled = self.pooled(audio, audio_mask, face, face_mask, presence)
        return {m: self.encoders[m][0].infer(pooled[m]) for m in MODALITIES}

    @torch.no_grad()
    def set_population_statistics(self, batches) -> int:
        """Replace every ladder layer's running BN statistics by the population statistics of the
        inference path over `batches` (an iterable of dicts audio, audio_mask, face, face_mask,
        presence, as `forward` takes), bottom to top: layer l gets the mean and unbiased variance
        of its z_pre over the samples where its modality is present (the joint and top layers:
        all samples), computed while the layers below already normalise with theirs, so the
        statistics are exactly those the deployed graph meets on these clips (Ioffe & Szegedy
        2015, Algorithm 2: inference normalises with population statistics, not a moving
        average). A modality present in < 2 samples keeps its layers' statistics. The momentum
        averages the clean pass leaves (momentum 0.1 over batches of 16) weigh the last ~10
        batches, whose class mix moves the top layer's mean logits, and so each class's bias in
        the folded Gemm, from epoch to epoch. Returns the number of samples."""
        pooled, presence = {m: [] for m in MODALITIES}, []
        for batch in batches:
            out = self.pooled(batch["audio"], batch["audio_mask"], batch["face"], batch["face_mask"],
                              batch["presence"])
            for m in MODALITIES:
                pooled[m].append(out[m].float())                              # (B, E)
            presence.append(batch["presence"].float())                        # (B, 2)
        if not presence:
            return 0
        presence = torch.cat(presence)                                        # (N, 2)

        def settle(layer, h, present):          # population statistics of layer, then its output
            z_pre = layer.pre(h)                                              # (N, n)
            if int(present.sum()) >= 2:
                chosen = z_pre[present > 0]
                layer.bn.running_mean.copy_(chosen.mean(dim=0))
                layer.bn.running_var.copy_(chosen.var(dim=0, unbiased=True))
            return layer.infer(h)

        tops = []
        for i, m in enumerate(MODALITIES):
            h = torch.cat(pooled[m])                                          # (N, E)
            for layer in self.encoders[m]:
                h = settle(layer, h, presence[:, i])
            tops.append(h)
        everyone = torch.ones_like(presence[:, 0])                            # (N,)
        settle(self.classifier, settle(self.joint, torch.cat(tops, dim=1), everyone), everyone)
        return len(presence)

    def inference_module(self) -> "InferenceModel":
        """The deployable sub-network (shares weights and buffers; build it after `.to(device)`)."""
        return InferenceModel(self)

    # -- training ---------------------------------------------------------------------------------
    def training_losses(self, audio, audio_mask, face, face_mask, presence, labels,
                        noise_std: float = 0.3, lambdas=(0.1, 0.1, 0.1), ladder: str = "cross",
                        cross_lambda: float = 0.1) -> dict:
        """Clean + corrupted passes and decoders.

        labels (B,) int: a class, or UNLABELLED (-1) for a row without a label: it gets no
        cross-entropy but passes through every batch normalisation and every denoising cost.
        lambdas weigh the levels bottom to top, as in Rasmus et al. (whose lambdas[0] weighs the
        input data): lambdas[0] the data level (each decoder's reconstruction of its modality's
        fixed data-space targets), lambdas[1] layer 0 (the pooled backbone output, a learned
        embedding), lambdas[2 ...] the hidden layers of each modality, then the joint layer, then
        the top (classifier) layer; the last value repeats for the levels above it. cross_lambda
        weighs every cross-modal reconstruction cost (ladder "cross").
        Returns {"loss", "ce", "denoise" (unweighted sum of C_d), "logits" (corrupted)}.
        """
        if ladder not in LADDER_MODES:
            raise EdgeLadderError(f"ladder must be one of {LADDER_MODES}; got {ladder!r}")
        pooled = self.pooled(audio, audio_mask, face, face_mask, presence)
        clean, noisy, tops_clean, tops_noisy = {}, {}, [], []
        for m in MODALITIES:
            h_c, h_n, clean[m], noisy[m] = pooled[m], pooled[m], [], []
            present = presence[:, MODALITIES.index(m)]                          # (B,)
            for layer in self.encoders[m]:
                h_c, z_pre = layer.clean(h_c, present)
                h_n, z_n = layer.corrupted(h_n, present, noise_std)
                clean[m].append(z_pre)                                        # (B, N_l)
                noisy[m].append(z_n)
            tops_clean.append(h_c)
            tops_noisy.append(h_n)
        everyone = torch.ones_like(presence[:, 0])                                # (B,)
        h_joint_clean, z_pre_joint = self.joint.clean(torch.cat(tops_clean, dim=1), everyone)
        h_joint_noisy, z_joint_noisy = self.joint.corrupted(torch.cat(tops_noisy, dim=1), everyone, noise_std)
        _, z_pre_top = self.classifier.clean(h_joint_clean, everyone)              # (B, C)
        logits, z_top_noisy = self.classifier.corrupted(h_joint_noisy, everyone, noise_std)   # (B, C)
        labelled = (labels >= 0).float()                                          # (B,)
        per_sample_ce = F.cross_entropy(logits.float(), labels.clamp(min=0), reduction="none")  # (B,)
        ce = (labelled * per_sample_ce).sum() / labelled.sum().clamp(min=1.0)
        denoise = logits.new_zeros((), dtype=torch.float32)
        loss = ce
        if ladder != "none":
            hidden = len(self.layer_dims)                       # modality layers 0..hidden-1
            # level 0 is the data level, level l + 1 modality layer l, then joint, then top
            weight = lambda level: lambdas[min(level, len(lambdas) - 1)]  # noqa: E731
            # top: u = BN(h~_top), h~_top = softmax of the corrupted logits (Rasmus et al.)
            u_top = bn_batch(torch.softmax(logits.float(), dim=1), 1e-5)          # (B, C)
            z_hat_top = self.top_combinator(z_top_noisy, u_top)                   # (B, C)
            # joint, under it: u_J = BN(V_top zhat_top)
            z_hat_joint = self.joint_combinator(z_joint_noisy, bn_batch(self.top_down(z_hat_top), 1e-5))
            for z_pre, z_hat, layer, level in ((z_pre_top, z_hat_top, self.classifier, hidden + 2),
                                               (z_pre_joint, z_hat_joint, self.joint, hidden + 1)):
                cost = denoising_cost(z_pre, z_hat, everyone, layer.bn.eps)
                denoise = denoise + cost
                loss = loss + weight(level) * cost
            # a layer of modality n is reconstructed only where n is present (module docstring)
            costs = []  # (target modality index, layer, z_hat, weight)
            audio_normalised, face_normalised = self.normalise(audio, face)
            targets = self.data_targets(audio_normalised, audio_mask, face_normalised, face_mask)
            for i, m in enumerate(MODALITIES):
                own, cross, data_hat = self.decoders[m](z_hat_joint, noisy[m])
                costs += [(i, l, z_hat, weight(l + 1)) for l, z_hat in enumerate(own)]
                if ladder == "cross":
                    costs += [(1 - i, l, z_hat, cross_lambda) for l, z_hat in enumerate(cross)]
                # the data level below layer 0, in input units, weight lambdas[0] (Rasmus et al.'s input)
                cost = data_cost(targets[m], data_hat, presence[:, i])
                denoise = denoise + cost
                loss = loss + weight(0) * cost
            for target, l, z_hat, w in costs:
                layer = self.encoders[MODALITIES[target]][l]
                cost = denoising_cost(clean[MODALITIES[target]][l], z_hat, presence[:, target],
                                      layer.bn.eps, input_layer=layer.input_layer)
                denoise = denoise + cost
                loss = loss + w * cost
        return {"loss": loss, "ce": ce, "denoise": denoise, "logits": logits}


class InferenceModel(nn.Module):
    """The deployable part of a LadderNet, sharing its weights (no copies):

        audio_mean/audio_std/face_mean/face_std (buffers) -> audio_backbone, face_backbone
        -> absent[m] substitution by presence -> encoders[m] (LadderLayer: linear (no bias),
        bn (BatchNorm1d affine=False, running stats), gamma, beta, relu; layer 0 is bn only)
        -> joint (LadderLayer) -> classifier (the top LadderLayer, no ReLU) -> logits (B, 6).

    forward(audio, audio_mask, face, face_mask, presence) -> logits. It always uses running BN
    statistics (deterministic in any mode) and never touches decoders, combinators or noise.
    """

    def __init__(self, net: LadderNet):
        super().__init__()
        self.config = net.config
        self.register_buffer("audio_mean", net.audio_mean)
        self.register_buffer("audio_std", net.audio_std)
        self.register_buffer("face_mean", net.face_mean)
        self.register_buffer("face_std", net.face_std)
        self.audio_backbone = net.audio_backbone
        self.face_backbone = net.face_backbone
        self.absent = net.absent
        self.encoders = net.encoders
        self.joint = net.joint
        self.classifier = net.classifier
        self.eval()

    normalise = LadderNet.normalise
    pooled = LadderNet.pooled
    forward = LadderNet.forward


# ---------------------------------------------------------------------------------------------
# Checkpoints


def build_model(config: ModelConfig) -> LadderNet:
    return LadderNet(config)


def load_error_text(error: Exception) -> str:
    """torch.load's error on one line. Its weights_only failure is a paragraph advising
    weights_only=False (unsafe, and wrong here: the file is simply not a checkpoint); keep only
    the unpickler's own reason from it."""
    text = " ".join(str(error).split())
    reason = text.partition("WeightsUnpickler error:")[2].partition("Check the documentation")[0].strip()
    return f"weights-only unpickler: {reason}" if reason else text


def load_checkpoint(path, map_location="cpu", command: str = "evaluate"):
    """-> (model in eval mode, checkpoint dict). The dict holds plain types and tensors only:
    format, version, model (state_dict), model_config, train_config, labels, normalisation.
    path: the checkpoint, or a RUN_DIR holding checkpoint.pt (paths.checkpoint_file; `command`
    names the command in its messages)."""
    from .paths import checkpoint_file
    path = checkpoint_file(path, command)
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # unpickling error, truncated file, not a torch file
        raise EdgeLadderError(f"{path} is not an edge-ladder checkpoint: torch.load failed ({type(error).__name__}: "
                              f"{load_error_text(error)}). Expected the RUN_DIR/checkpoint.pt written by `edge-ladder train`.") from error
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise EdgeLadderError(f"{path}: expected an {CHECKPOINT_FORMAT!r} file written by `edge-ladder train`; "
                              f"got {type(checkpoint).__name__} without that format tag.")
    if checkpoint.get("version") != CHECKPOINT_VERSION:
        older = (" Version 1 predates the top ladder layer (the classifier is now a ladder layer) and the "
                 "decoders' data level." if checkpoint.get("version") == 1 else "")
        raise EdgeLadderError(f"{path}: checkpoint version {checkpoint.get('version')} is not supported "
                              f"(this edge-ladder reads version {CHECKPOINT_VERSION}).{older} Retrain with "
                              f"`edge-ladder train FEATURES_DIR --out RUN_DIR`.")
    if tuple(checkpoint.get("labels", ())) != EMOTIONS:
        raise EdgeLadderError(f"{path}: label order {checkpoint.get('labels')} differs from {EMOTIONS}.")
    model = LadderNet(ModelConfig.from_dict(checkpoint["model_config"]))
    model.load_state_dict(checkpoint["model"])
    model.to(map_location if isinstance(map_location, (str, torch.device)) else "cpu")
    model.eval()
    return model, checkpoint


def checkpoint_dict(model: LadderNet, train_config: dict | None = None, **extra) -> dict:
    """Plain-type checkpoint (loads with torch.load(weights_only=True))."""
    config = asdict(model.config)
    config = {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "model": state,
            "model_config": config, "train_config": dict(train_config or {}), "labels": list(EMOTIONS),
            "normalisation": {k: state[k] for k in ("audio_mean", "audio_std", "face_mean", "face_std")},
            **extra}


__all__ = ["ModelConfig", "PRESETS", "model_config", "LadderNet", "InferenceModel", "build_model",
           "load_checkpoint", "checkpoint_dict", "LADDER_MODES", "masked_mean"]
