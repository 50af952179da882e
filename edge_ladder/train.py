"""Train the cross-modal ladder network: `edge-ladder train FEATURES_DIR --out RUN_DIR`.

Reads a features directory (edge_ladder.features), trains on its train split, keeps the best
checkpoint by dev loss (or the last: --select last), and writes

    RUN_DIR/checkpoint.pt    best weights + model config + train config + labels + normalisation
    RUN_DIR/last.pt          the latest epoch with optimizer state (for --resume)
    RUN_DIR/metrics.json     {"dev": report, "test": report, "best_epoch", "history", ...}
                             report = edge_ladder.metrics.classification_report of the best checkpoint
    RUN_DIR/confusion.png    test-split confusion matrix
    RUN_DIR/labelled.json    which train (and dev) clips kept their labels: ids, counts per emotion,
                             fraction, seed; the unlabelled pool's size and directories

Semi-supervised (issue 11): `--labelled-fraction F` keeps the labels of round(F * N) train clips,
stratified by emotion, then actor, and fixed by --seed (select_labelled); the other train clips and
every clip of the `--unlabelled FEATURES_DIR` directories form the unlabelled pool. Each step
runs ONE forward over concat(labelled batch, unlabelled batch): cross-entropy on the labelled
rows, batch statistics and denoising costs over all rows (--ladder none too: the lambda = 0
baseline sees the same unlabelled clips through batch normalisation). An epoch is one pass over
the larger pool, the smaller one cycling (epoch_batches); without unlabelled clips it is one pass
over the train split as before. `--epoch-steps N` fixes an epoch at N steps instead (both pools
drawn from fresh seeded permutations each epoch), so a run's budget and its dev-selection grain
stay the same however many recordings are added. Checkpoint selection uses no more labels than training had: the
dev labels are subsampled at the same fraction (stratified, same seed); metrics.json records
it under "selection", and "layer0_participation" (per epoch in "history", and of the selected
checkpoint) is the collapse signal: the participation ratio of the clean layer-0 codes on dev.

Every file is written atomically. A RUN_DIR that already holds a run is refused unless --resume
(continue) or --force (delete and start over). The loop reseeds the RNGs at the start of every
epoch from (seed, epoch), so `--resume` after an interruption gives the same weights as a run that
was never interrupted; resume refuses other settings or another features directory (last.pt
records the sha256 of manifest.json and splits.json). `--resume --epochs N` with more epochs than
planned extends the run: the learning rate follows the N-epoch schedule from there on (equal to an
uninterrupted N-epoch run unless the epochs done had already entered the old schedule's decay;
extension_note says which). `--init-from CHECKPOINT` starts a new run from a checkpoint's weights
and normalisation. checkpoint.pt also records its data ("data": features identity, train/dev/test
actors) for evaluate's held-out check, and "init_from" when it started from another checkpoint. Multi-process training: `torchrun --nproc-per-node N -m edge_ladder.train ...`
(gloo on CPU, nccl on CUDA); each process takes 1/N of every epoch, rank 0 writes the files.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from . import EMOTIONS
from .argtypes import (NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, TORCH_DEVICES, OneLineParser, Range,
                       UsageError, check_torch_device, torch_device)
from .errors import EdgeLadderError
from .features import (UNLABELLED, atomic_write_bytes, atomic_write_json, batch_clips, load_split, read_manifest,
                       read_splits)


# ranges of the numeric settings: checked when the command line is parsed and when a TrainConfig
# is made (edge_ladder.argtypes)
EPOCHS = POSITIVE_INT
EPOCH_STEPS = Range(int, minimum=0, why="0: one pass over the larger pool")
BATCH_SIZE = Range(int, minimum=2, why="batch normalisation needs two clips")
LEARNING_RATE = POSITIVE
MODALITY_DROPOUT = Range(float, minimum=0, below=0.5)   # per modality, never both: < 1/2
NOISE_STD = NON_NEGATIVE
LAMBDA = NON_NEGATIVE
LABELLED_FRACTION = Range(float, above=0, maximum=1)
FOLD = Range(int, minimum=-1, why="-1: splits.json as prepared")
SELECTIONS = ("dev-loss", "last")
SEED = NON_NEGATIVE_INT                       # numpy's generators refuse negative seeds


@dataclass
class TrainConfig:
    features_dir: str = ""
    out_dir: str = "run"
    epochs: int = 20
    epoch_steps: int = 0              # 0: an epoch is one pass over the larger pool; N: N steps (epoch_batches)
    model_size: str = "small"
    seed: int = 0
    progress: bool = True             # tqdm bar, on a terminal only; the per-epoch lines always print
    batch_size: int = 16              # AuxFormer uses 32; a few hundred clips need more steps. BN needs >= 2
    lr: float = 2e-3                  # ladder reference: Adam 2e-3, linear decay over the last third
    ladder: str = "cross"             # none (lambda = 0) | within (own modality) | cross (full)
    modalities: str = "av"            # av | audio | video: "audio" trains with faces flagged absent
    modality_dropout: float = 0.2     # per modality and sample (AuxFormer); never both at once
    noise_std: float = 0.3            # corrupted-path Gaussian noise (ladder reference)
    lambdas: tuple = (0.1, 0.1, 0.1)  # C_d weights bottom to top: the data level (data-space targets: Rasmus
                                      # et al.'s input layer), layer 0 (pooled backbone output), hidden,
                                      # joint, top (classifier); the last value repeats. 0.1 everywhere: chosen
                                      # on a dev fold (issue 11); the reference's 1000 / 10 / 0.1 still
                                      # collapses audio layer 0 on the test corpus (model.py docstring)
    cross_lambda: float = 0.1         # weight of every cross-modal reconstruction cost (--ladder cross)
    labelled_fraction: float = 1.0    # keep the labels of this fraction of the train clips (stratified by
                                      # emotion and actor, fixed by seed); the rest become unlabelled
    unlabelled: tuple = ()            # extra features directories whose clips are used without labels
    fold: int = -1                    # -1: splits.json as prepared; K >= 0: actor fold K of splits.json's k/seed
    select: str = "dev-loss"          # checkpoint selection: dev-loss (on dev labels subsampled at
                                      # labelled_fraction) | last (no labels used)
    weight_decay: float = 0.0
    device: str = "auto"              # auto | cpu | cuda | cuda:N
    amp: bool = False                 # float16 autocast + GradScaler, CUDA only
    resume: bool = False              # continue (or extend: more epochs) from out_dir/last.pt
    force: bool = False               # out_dir holds a run: delete it and start over
    init_from: str = ""               # a checkpoint.pt: new run starting from its weights + normalisation
    stop_after_epoch: int = 0         # >0: stop cleanly after this epoch (time-sliced jobs, tests)
    eval_batch_size: int = 64

    def __post_init__(self):
        if self.ladder not in ("none", "within", "cross"):
            raise EdgeLadderError(f"--ladder must be none, within or cross; got {self.ladder!r}")
        if self.modalities not in ("av", "audio", "video"):
            raise EdgeLadderError(f"--modalities must be av, audio or video; got {self.modalities!r}")
        EPOCHS.check("--epochs", self.epochs)
        EPOCH_STEPS.check("--epoch-steps", self.epoch_steps)
        BATCH_SIZE.check("--batch-size", self.batch_size)
        LEARNING_RATE.check("--lr", self.lr)
        MODALITY_DROPOUT.check("--modality-dropout", self.modality_dropout)
        NOISE_STD.check("--noise-std", self.noise_std)
        SEED.check("--seed", self.seed)
        NON_NEGATIVE.check("--weight-decay", self.weight_decay)
        NON_NEGATIVE_INT.check("stop_after_epoch", self.stop_after_epoch)
        POSITIVE_INT.check("eval_batch_size", self.eval_batch_size)
        check_torch_device("--device", self.device)
        self.lambdas = tuple(float(LAMBDA.check("--lambdas", x)) for x in self.lambdas)
        check_lambdas(self.lambdas, self.model_size)
        self.cross_lambda = float(LAMBDA.check("--cross-lambda", self.cross_lambda))
        self.labelled_fraction = float(LABELLED_FRACTION.check("--labelled-fraction", self.labelled_fraction))
        FOLD.check("--fold", self.fold)
        if isinstance(self.unlabelled, (str, Path)):
            self.unlabelled = (self.unlabelled,)
        self.unlabelled = tuple(str(path) for path in self.unlabelled)
        if self.select not in SELECTIONS:
            raise EdgeLadderError(f"--select must be one of {', '.join(SELECTIONS)}; got {self.select!r}")
        if self.resume and self.force:
            raise EdgeLadderError("--resume continues the run in --out, --force deletes it and starts over: "
                                  "pass one of them.")
        if self.resume and self.init_from:
            raise EdgeLadderError(f"--init-from starts a new run from {self.init_from}; --resume continues "
                                  f"{Path(self.out_dir) / 'last.pt'}, which already holds the weights it started "
                                  f"from: drop --init-from.")


def ladder_levels(model_size: str) -> int:
    """Denoising-cost levels of a model size, each weighed by one --lambdas value: the data level
    (fixed data-space targets), layer 0 (pooled backbone output), the hidden layers, the joint,
    the top (classifier) layer."""
    from .model import model_config
    return len(model_config(model_size).encoder_dims) + 4


def check_lambdas(lambdas: tuple, model_size: str) -> None:
    """lambdas[k] weighs level k (ladder_levels; LadderNet.training_losses); the last value repeats
    for the levels above, so more values than levels could only be a mistake."""
    levels = ladder_levels(model_size)
    if not 1 <= len(lambdas) <= levels:
        raise EdgeLadderError(
            f"--lambdas: got {len(lambdas)} value(s) ({' '.join(f'{x:g}' for x in lambdas)}); a --model-size "
            f"{model_size} ladder has {levels} levels (data, layer 0, {levels - 4} hidden, joint, top): give 1 "
            f"to {levels} values, the first weighs the data-space targets, the second layer 0 (the pooled "
            f"backbone output), and the last one repeats for the deeper layers, the joint and the top.")


# ---------------------------------------------------------------------------------------------
# helpers


def _torch():
    from ._deps import require
    return require("torch")


def resolve_device(name: str, amp: bool):
    torch = _torch()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EdgeLadderError(f"--device {name} asked for CUDA but torch sees no GPU "
                              f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}). Use --device cpu.")
    if amp and device.type != "cuda":
        raise EdgeLadderError(f"--amp needs a CUDA device (float16 autocast); the device is {device}. "
                              f"Drop --amp or use --device cuda.")
    return device


def to_tensors(batch: dict, device) -> dict:
    torch = _torch()
    return {k: torch.from_numpy(v).to(device) for k, v in batch.items()}


def apply_modalities(presence, modalities: str):
    """Flag the unused modality absent for audio-only / video-only training and evaluation."""
    if modalities == "audio":
        presence[:, 1] = 0.0
    elif modalities == "video":
        presence[:, 0] = 0.0
    return presence


def modality_dropout(presence, p: float):
    """Per sample: drop audio with prob p, else face with prob p/(1-p) (never both). (B, 2)."""
    torch = _torch()
    if p <= 0:
        return presence
    r = torch.rand(presence.shape[0], device=presence.device)
    drop_audio = (r < p) & (presence[:, 1] > 0)
    drop_face = (r >= p) & (r < 2 * p) & (presence[:, 0] > 0)
    presence = presence.clone()
    presence[drop_audio, 0] = 0.0
    presence[drop_face, 1] = 0.0
    return presence


def normalisation_stats(clips) -> dict:
    """Per-mel-bin mean/std of all train audio frames; one mean/std over valid face pixels."""
    audio = np.concatenate([c.audio for c in clips if c.audio.shape[0]], axis=0)          # (N, 80)
    faces = [c.face[c.face_valid] for c in clips if c.face_valid.any()]
    face = np.concatenate(faces, axis=0) if faces else np.zeros((1, 1, 1), np.float32)
    return {"audio_mean": audio.mean(0), "audio_std": np.maximum(audio.std(0), 1e-3),
            "face_mean": np.array([face.mean()]), "face_std": np.array([max(float(face.std()), 1e-3)])}


# ---------------------------------------------------------------------------------------------
# semi-supervised data: the labelled subset, the unlabelled pool, the batches of an epoch


def select_labelled(clips, fraction: float, seed: int) -> np.ndarray:
    """Indices (sorted) of the clips whose labels are kept: round(fraction * N) of them,
    stratified by emotion, then by actor within each emotion, fixed by `seed`.

    Each emotion of n_e clips gets floor(fraction * n_e) or that + 1 labels (the emotions that
    round up drawn, seeded, with probability proportional to the fractional part, until the
    total is round(fraction * N)); every emotion present keeps >= 1 label (the total is then at
    least the number of emotions: one taken from the emotion with the most). An emotion's c_e
    labels are shared out over its actors the same way (actor a of s_a clips: floor or ceil of
    c_e * s_a / n_e), and which clips of an (emotion, actor) group keep their label is a seeded
    permutation. fraction 1: every clip. (Before, the draw was over (emotion, actor) groups
    directly, which at 5 % left one emotion 1 label and another 12.)"""
    n = len(clips)
    if fraction >= 1.0:
        return np.arange(n)
    rng = np.random.default_rng([seed, 104_729, 2])        # its own stream: independent of the loop's
    groups = {}
    for i, clip in enumerate(clips):
        groups.setdefault(int(clip.label), {}).setdefault(str(clip.actor), []).append(i)
    emotions = sorted(groups)
    sizes = np.array([sum(map(len, groups[e].values())) for e in emotions])
    per_emotion = apportion(fraction * sizes, max(int(round(fraction * n)), len(emotions)), sizes, rng)
    for e in np.flatnonzero(per_emotion == 0):               # every emotion keeps >= 1 label
        per_emotion[e] = 1
        richest = int(np.argmax(per_emotion))
        if per_emotion.sum() > max(int(round(fraction * n)), len(emotions)) and per_emotion[richest] > 1:
            per_emotion[richest] -= 1
    keep = []
    for emotion, count in zip(emotions, per_emotion):
        actors = sorted(groups[emotion])
        members = [groups[emotion][a] for a in actors]
        actor_sizes = np.array([len(m) for m in members])
        counts = apportion(count * actor_sizes / actor_sizes.sum(), int(count), actor_sizes, rng)
        keep += [i for m, c in zip(members, counts) for i in rng.permutation(m)[:c]]
    return np.sort(np.array(keep, dtype=int))


def apportion(quota: np.ndarray, total: int, sizes: np.ndarray, rng) -> np.ndarray:
    """Integer counts, each floor(quota) or that + 1 (at most sizes), summing to `total`: the
    groups that round up drawn without replacement, with probability proportional to the
    fractional part of their quota."""
    counts = np.minimum(np.floor(quota).astype(int), sizes)
    extra = total - int(counts.sum())
    if extra > 0:
        room = counts < sizes
        weight = np.where(room, quota - counts + 1e-9, 0.0)
        chosen = rng.choice(len(quota), size=min(extra, int(room.sum())), replace=False, p=weight / weight.sum())
        counts[chosen] += 1
    return counts


# how select_labelled stratifies (labelled.json, metrics.json, last.pt): runs whose record says
# otherwise were trained on another labelled subset; --resume and ablate refuse to mix them
STRATIFIED_BY = ["emotion", "actor within emotion"]


def labelled_summary(clips, index) -> dict:
    """{"ids", "count", "of", "per_emotion"} of the clips at `index`."""
    per_emotion = {name: 0 for name in EMOTIONS}
    for i in index:
        per_emotion[EMOTIONS[clips[i].label]] += 1
    return {"ids": [clips[i].id for i in index], "count": int(len(index)), "of": len(clips),
            "per_emotion": per_emotion}


def unlabelled_copy(clip):
    """The clip with its label dropped (features.UNLABELLED)."""
    from dataclasses import replace
    from .features import UNLABELLED
    return replace(clip, label=UNLABELLED)


def load_unlabelled_dirs(config: TrainConfig, features_dir: Path, reference) -> tuple[list, list]:
    """--unlabelled directories -> (clips with label -1, [{"features_dir", "manifest_sha256",
    "clips"}]). Their front-end must match the labelled features' (n_mels, face size)."""
    from .features import load_unlabelled
    clips, record = [], []
    for path in config.unlabelled:
        path = Path(path)
        if path.resolve() == Path(features_dir).resolve():
            raise EdgeLadderError(f"--unlabelled {path} is FEATURES_DIR itself: its dev and test clips would enter "
                                  f"training. Use --labelled-fraction to train on its train clips without labels.")
        loaded = load_unlabelled(path)
        sample = loaded[0]
        if sample.audio.shape[1] != reference.audio.shape[1] or sample.face.shape[-1] != reference.face.shape[-1]:
            raise EdgeLadderError(
                f"--unlabelled {path}: clips of {sample.audio.shape[1]} mel bands and {sample.face.shape[-1]}-pixel "
                f"faces; {features_dir} has {reference.audio.shape[1]} and {reference.face.shape[-1]}. Prepare "
                f"both with the same front-end (edge-ladder prepare --unlabelled, same --n-mels/--face-size).")
        clips += loaded
        record.append({**features_identity(path), "clips": len(loaded)})
    return clips, record


def load_splits(config: TrainConfig, features_dir: Path):
    """(train, dev, test clips, splits dict) of the prepared splits (fold -1), or of actor fold K
    of all the manifest's actors with splits.json's k and seed (features.actor_folds)."""
    from .features import actor_folds
    splits = read_splits(features_dir)
    if config.fold < 0:
        return (load_split(features_dir, "train"), load_split(features_dir, "dev"),
                load_split(features_dir, "test"), splits)
    if "k" not in splits or "seed" not in splits:
        raise EdgeLadderError(f"--fold {config.fold}: {features_dir / 'splits.json'} does not record the folds' k "
                              f"and seed. Re-run prepare (it writes them), or train without --fold.")
    actors = [str(entry["actor"]) for entry in read_manifest(features_dir)["clips"]]
    k = min(int(splits["k"]), len(set(actors)))
    if config.fold >= k:
        raise EdgeLadderError(f"--fold {config.fold}: {features_dir} has {k} actor folds; pass --fold 0 to {k - 1}.")
    splits = actor_folds(actors, k=k, fold=config.fold, seed=int(splits["seed"]))
    clips = load_split(features_dir, "all")
    by_split = [[c for c in clips if c.actor in set(splits[name])] for name in ("train", "dev", "test")]
    return (*by_split, splits)


def steps_per_epoch(n_labelled: int, n_unlabelled: int, batch_size: int, world: int, fixed: int = 0) -> int:
    """Steps of one epoch (see `epoch_batches`); `fixed` > 0 (--epoch-steps): that many."""
    if fixed:
        return fixed
    if n_unlabelled == 0:
        return max(1, math.ceil((n_labelled // world) / batch_size))
    return max(1, math.ceil(max(n_labelled, n_unlabelled) / (world * batch_size)))


def epoch_plan(n_labelled: int, n_unlabelled: int, batch_size: int, world: int, fixed: int = 0) -> dict:
    """What one epoch is: its steps and how many times it goes over each pool (all ranks together).
    With many unlabelled clips an epoch is long and the labelled clips come round many times in it:
    `--epochs` counts passes over the larger pool, not over the labels, unless `fixed`
    (--epoch-steps) sets the steps."""
    steps = steps_per_epoch(n_labelled, n_unlabelled, batch_size, world, fixed)
    plan = {"steps": steps, "fixed": bool(fixed)}
    if n_unlabelled == 0 and not fixed:  # one pass; with world ranks the last n_labelled % world clips wait
        return {**plan, "labelled_passes": world * (n_labelled // world) / n_labelled, "unlabelled_passes": 0.0}
    per_step = world * min(batch_size, n_labelled), world * min(batch_size, n_unlabelled)
    return {**plan, "labelled_passes": steps * per_step[0] / n_labelled,
            "unlabelled_passes": steps * per_step[1] / n_unlabelled if n_unlabelled else 0.0}


def describe_epoch(plan: dict, n_labelled: int, n_unlabelled: int, own_steps: int = 0) -> str:
    """The line train prints before its first epoch (epoch_plan in words). `own_steps`: the steps
    of an epoch of the train split alone (without the --unlabelled directories), suggested as
    --epoch-steps when the recordings make epochs longer: measured on the hard corpus, 116-step
    epochs cost lambda = 0 3.7 points against the same 574 steps in 41-step epochs (README)."""
    fixed = " (--epoch-steps)" if plan.get("fixed") else ""
    if not n_unlabelled:
        if fixed:
            return (f"an epoch is {plan['steps']} steps{fixed}: the {n_labelled} labelled clips come round "
                    f"{plan['labelled_passes']:.1f} times")
        return f"an epoch is {plan['steps']} steps: one pass over the {n_labelled} labelled clips"
    line = (f"an epoch is {plan['steps']} steps{fixed} of labelled + unlabelled clips: the {n_labelled} labelled come "
            f"round {plan['labelled_passes']:.1f} times, the {n_unlabelled} unlabelled {plan['unlabelled_passes']:.1f}")
    if plan["labelled_passes"] >= 4 and not fixed:
        line += (" (--epochs counts passes over the larger pool, so each epoch goes over the labels many times "
                 "and the dev loss may pick an early one; --epoch-steps sets the steps of an epoch)")
    if own_steps and not fixed and plan["steps"] > own_steps:
        line += (f"; the --unlabelled recordings make epochs {plan['steps'] / own_steps:.1f}x longer than the train "
                 f"split's own {own_steps} steps, and the checkpoint is chosen once per epoch: --epoch-steps "
                 f"{own_steps} keeps that grain")
    return line


def epoch_batches(n_labelled: int, n_unlabelled: int, batch_size: int, seed: int, epoch: int,
                  rank: int = 0, world: int = 1, fixed: int = 0) -> list:
    """[(labelled indices, unlabelled indices)] of one epoch on one rank, seeded by (seed, epoch).

    Without unlabelled clips: one pass over the labelled set in batches of batch_size (each
    rank 1/world of it), as a fully supervised run always did.
    With unlabelled clips, an EPOCH is one pass over the larger pool (in practice the unlabelled
    one, whatever the labelled fraction: the step count stays that of a fully labelled run over
    the same clips): ceil(max(N_l, N_u) / (world * batch_size)) steps, each taking
    min(batch_size, N_l) labelled and min(batch_size, N_u) unlabelled clips from seeded
    permutations of each pool, concatenated and re-drawn when a pool runs out (the smaller pool
    cycles; a batch that straddles two permutations may hold a clip twice).
    `fixed` > 0 (--epoch-steps): `fixed` steps drawn the same way from both pools (with or without
    unlabelled clips), so an epoch may cover part of a pool or go round it several times; each
    epoch starts fresh permutations, so over epochs every clip is drawn about equally often."""
    if n_unlabelled == 0 and not fixed:
        per_rank = n_labelled // world
        order = np.random.default_rng([seed, epoch]).permutation(n_labelled)[rank::world][:per_rank]
        steps = steps_per_epoch(n_labelled, 0, batch_size, world)
        empty = np.zeros(0, dtype=int)
        return [(order[step * batch_size:(step + 1) * batch_size], empty) for step in range(steps)]
    steps = steps_per_epoch(n_labelled, n_unlabelled, batch_size, world, fixed)

    def stream(n, take, rng):                                 # permutations of range(n), end to end
        needed = steps * world * take
        if not needed:
            return np.zeros(0, dtype=int)
        return np.concatenate([rng.permutation(n) for _ in range(math.ceil(needed / n))])[:needed]
    b_l, b_u = min(batch_size, n_labelled), min(batch_size, n_unlabelled)
    labelled = stream(n_labelled, b_l, np.random.default_rng([seed, epoch, 1]))
    unlabelled = stream(n_unlabelled, b_u, np.random.default_rng([seed, epoch, 2]))
    return [(labelled[(step * world + rank) * b_l:(step * world + rank + 1) * b_l],
             unlabelled[(step * world + rank) * b_u:(step * world + rank + 1) * b_u]) for step in range(steps)]


def collapse_signal(model, clips, device, batch_size: int = 64, modalities: str = "av") -> dict:
    """{"audio": PR, "face": PR}: participation ratio (model.participation_ratio) of the clean
    layer-0 z (running statistics) over the clips where the modality is present; ~1 = collapsed,
    embed_dim = isotropic. None (null in metrics.json, which stays strict JSON) when fewer than 2
    clips have the modality, e.g. audio in a --modalities video run."""
    torch = _torch()
    from .model import MODALITIES, participation_ratio
    model.eval()
    codes = {m: [] for m in MODALITIES}
    with torch.no_grad():
        for start in range(0, len(clips), batch_size):
            tensors = to_tensors(batch_clips(clips[start:start + batch_size]), device)
            tensors["presence"] = apply_modalities(tensors["presence"], modalities)
            z = model.layer0_codes(**tensors)
            for i, m in enumerate(MODALITIES):
                codes[m].append(z[m][tensors["presence"][:, i] > 0].double().cpu())
    ratios = {m: participation_ratio(torch.cat(codes[m])) for m in MODALITIES}
    return {m: None if math.isnan(pr) else pr for m, pr in ratios.items()}


def features_identity(features_dir: Path) -> dict:
    """What `--resume` compares so a run never mixes two datasets: the resolved directory and the
    sha256 of its manifest.json (clip list, labels, frame counts, source) and splits.json (folds)."""
    from .runtime.sidecar import sha256_file
    features_dir = Path(features_dir).resolve()
    identity = {"features_dir": str(features_dir)}
    for name in ("manifest.json", "splits.json"):
        path = features_dir / name
        digest = sha256_file(path) if path.exists() else None
        identity[name.replace(".json", "_sha256")] = digest
    return identity


def check_resume_features(state: dict, identity: dict, last_path: Path) -> None:
    """Raise unless last.pt was trained on the same features (same manifest.json and splits.json)."""
    saved = state.get("features")
    if saved is None:
        raise EdgeLadderError(f"--resume: {last_path} does not record which features directory it was trained on "
                              f"(written by an older edge-ladder), so resuming on {identity['features_dir']} could "
                              f"mix datasets. Start again without --resume or use a new --out.")
    for key in ("manifest_sha256", "splits_sha256"):
        if saved.get(key) != identity[key]:
            name = key.replace("_sha256", ".json")
            raise EdgeLadderError(
                f"--resume: {last_path} was trained on features {saved.get('features_dir')} ({name} sha256 "
                f"{str(saved.get(key))[:12]}), this run reads {identity['features_dir']} ({name} sha256 "
                f"{str(identity[key])[:12]}): a different dataset. Resume with the original FEATURES_DIR, "
                f"or train into a new --out.")


RUN_FILES = ("checkpoint.pt", "last.pt", "metrics.json", "confusion.png", "labelled.json")   # what train writes into RUN_DIR


def check_run_dir(config: TrainConfig, run_dir: Path, is_main: bool = True) -> None:
    """A RUN_DIR that already holds a run is never overwritten silently: --resume continues (or
    extends) it, --force deletes its files and starts over; anything else is refused, naming both."""
    existing = [name for name in RUN_FILES if (run_dir / name).exists()]
    if config.resume:
        if not (run_dir / "last.pt").exists():
            raise EdgeLadderError(f"--resume: {run_dir / 'last.pt'} does not exist; run without --resume to start.")
        return
    if not existing:
        return
    if config.force:
        if is_main:
            for name in existing:
                (run_dir / name).unlink()
            print(f"--force: deleted {', '.join(existing)} in {run_dir}; starting over", flush=True)
        return
    state = run_state(run_dir)
    what = (f"a finished run ({state['epoch']} of {state['epochs']} epochs)" if (run_dir / "metrics.json").exists()
            else f"an unfinished run (epoch {state['epoch']} of {state['epochs']} saved)" if state
            else f"a run ({', '.join(existing)})")
    raise EdgeLadderError(f"{run_dir} already holds {what}: continue it with `{command_line(config, '--resume')}` "
                          f"(more --epochs extend it), start over with --force (deletes {', '.join(existing)}), "
                          f"or train into a new --out.")


def run_state(run_dir: Path) -> dict:
    """{"epoch": epochs done, "epochs": planned} from RUN_DIR/last.pt, or {} when there is none."""
    path = Path(run_dir) / "last.pt"
    if not path.exists():
        return {}
    state = _torch().load(path, map_location="cpu", weights_only=True)
    return {"epoch": int(state["epoch"]), "epochs": int(state["train_config"]["epochs"])}


# TrainConfig field -> its `edge-ladder train` flag (for the commands that messages print)
FLAGS = {"epochs": "--epochs", "epoch_steps": "--epoch-steps", "batch_size": "--batch-size", "lr": "--lr", "ladder": "--ladder",
         "modalities": "--modalities", "model_size": "--model-size", "modality_dropout": "--modality-dropout",
         "noise_std": "--noise-std", "lambdas": "--lambdas", "device": "--device", "amp": "--amp",
         "seed": "--seed", "progress": "--no-progress", "init_from": "--init-from",
         "cross_lambda": "--cross-lambda", "labelled_fraction": "--labelled-fraction", "unlabelled": "--unlabelled",
         "fold": "--fold", "select": "--select", "weight_decay": "--weight-decay"}


def command_line(config: TrainConfig, *extra: str) -> str:
    """The `edge-ladder train` command of `config` (flags that differ from the defaults) + extra."""
    import shlex
    defaults = TrainConfig()
    parts = ["edge-ladder", "train", shlex.quote(str(config.features_dir)), "--out", shlex.quote(str(config.out_dir))]
    for field, flag in FLAGS.items():
        value = getattr(config, field)
        if value == getattr(defaults, field) or (field == "init_from" and "--resume" in extra):
            continue
        if isinstance(value, bool):
            parts.append(flag)
        elif field == "unlabelled":                                     # repeatable: one flag per directory
            for path in value:
                parts += [flag, shlex.quote(path)]
        elif isinstance(value, tuple):
            parts += [flag, *(f"{x:g}" for x in value)]
        else:
            parts += [flag, shlex.quote(f"{value:g}" if isinstance(value, float) else str(value))]
    return " ".join(parts + list(extra))


def interrupted_message(config: TrainConfig) -> str:
    """What Ctrl-C leaves: the last finished epoch in last.pt and the command that continues, or
    that nothing was saved (interrupted before the first epoch ended)."""
    run_dir = Path(config.out_dir)
    state = run_state(run_dir)
    if not state:
        return (f"interrupted before the first epoch ended: nothing was saved ({run_dir} has no last.pt). "
                f"Start again with `{command_line(config)}`.")
    return (f"interrupted; epoch {state['epoch']} of {state['epochs']} is saved in {run_dir / 'last.pt'} (the epoch "
            f"in progress is lost). Continue with `{command_line(config, '--resume')}`.")


def init_from_checkpoint(model, path, device) -> dict:
    """--init-from: load a checkpoint's weights and normalisation into `model`, which must have the
    same ModelConfig (size, input widths); -> what the new checkpoint records about its start."""
    from .model import load_checkpoint
    from .runtime.sidecar import sha256_file
    source, saved = load_checkpoint(path, map_location=device)
    ours, theirs = asdict(model.config), asdict(source.config)
    differ = [key for key in ours if ours[key] != theirs.get(key)]
    if differ:
        size = saved.get("train_config", {}).get("model_size")
        if any(key not in ("audio_dim", "face_size") for key in differ):
            hint = f"train with --model-size {size}, as it was" if size else "train with its model size"
        else:
            hint = "these features have other input sizes (n_mels, face size) than the ones it was trained on"
        raise EdgeLadderError(f"--init-from {path}: its model differs from the one this run builds: " +
                              ", ".join(f"{key} {theirs.get(key)} (checkpoint) vs {ours[key]} (this run)"
                                        for key in differ) + f"; {hint}.")
    model.load_state_dict(source.state_dict())       # weights and the normalisation buffers
    return {"path": str(Path(path).resolve()), "sha256": sha256_file(path), "epoch": saved.get("epoch"),
            "train_config": saved.get("train_config", {})}


def data_record(features_dir: Path, identity: dict, splits: dict | None = None, fold: int = -1) -> dict:
    """What a checkpoint records about its data: the features' identity and the actors of each
    split (`splits`: the ones trained on, default splits.json), so evaluate can refuse a "test"
    split that holds actors it was trained or selected on; fold: --fold (-1: splits.json)."""
    splits = read_splits(features_dir) if splits is None else splits
    return {"features": identity, "fold": fold,
            "actors": {name: sorted(map(str, splits.get(name, []))) for name in ("train", "dev", "test")}}


def extension_note(config: TrainConfig, done: int, planned: int, steps_per_epoch: int) -> str:
    """--resume with other --epochs than last.pt planned: the schedule of the new total applies
    from here on; say whether the epochs done match it (then the result is the uninterrupted run's)."""
    old_total, new_total = planned * steps_per_epoch, config.epochs * steps_per_epoch
    same = all(learning_rate(config, step, old_total) == learning_rate(config, step, new_total)
               for step in range(done * steps_per_epoch))
    change = "extending" if config.epochs > planned else "shortening"
    head = (f"--resume: {change} {planned} -> {config.epochs} epochs (from epoch {done + 1}); the learning rate "
            f"follows the {config.epochs}-epoch schedule (constant {config.lr:g}, linear decay to 0 over the last "
            f"third)")
    if same:
        return head + f": epochs 1-{done} ran at the same rates, so this equals an uninterrupted {config.epochs}-epoch run."
    return (head + f". Epochs 1-{done} followed the {planned}-epoch schedule (already decaying), so the rate goes "
            f"back up to {learning_rate(config, done * steps_per_epoch, new_total):.3g}: not the same as an "
            f"uninterrupted {config.epochs}-epoch run (history records each epoch's lr).")


def learning_rate(config: TrainConfig, step: int, total_steps: int) -> float:
    """Constant, then linear decay to 0 over the last third of the steps (ladder reference)."""
    decay_start = total_steps * 2 // 3
    if step < decay_start:
        return config.lr
    return config.lr * max(0.0, (total_steps - step) / max(1, total_steps - decay_start))


def save_torch(obj, path: Path) -> None:
    torch = _torch()
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


POPULATION_CLIPS = 4096   # at most this many train clips (evenly spread) estimate the BN population statistics


def population_batches(clips, device, batch_size: int, modalities: str):
    """Batches (tensors, presence after --modalities, no modality dropout) of at most
    POPULATION_CLIPS of clips, evenly spread and in a fixed order, for
    `LadderNet.set_population_statistics` (the same on every rank, so DDP ranks agree)."""
    if len(clips) > POPULATION_CLIPS:
        clips = [clips[i] for i in np.linspace(0, len(clips) - 1, POPULATION_CLIPS).round().astype(int)]
    for start in range(0, len(clips), batch_size):
        batch = to_tensors(batch_clips(clips[start:start + batch_size]), device)
        batch["presence"] = apply_modalities(batch["presence"], modalities)
        yield batch


def predict(model, clips, device, batch_size: int = 64, presence=None, modalities: str = "av"):
    """Inference-path logits (N, 6) float32 numpy of a LadderNet for a list of Clip. presence:
    None (from the data), or (N, 2) array overriding it."""
    torch = _torch()
    model.eval()
    net = model.inference_module()
    out = []
    with torch.no_grad():
        for start in range(0, len(clips), batch_size):
            batch = batch_clips(clips[start:start + batch_size])
            if presence is not None:
                batch["presence"] = np.array(presence[start:start + batch_size], np.float32)
            tensors = to_tensors(batch, device)
            tensors["presence"] = apply_modalities(tensors["presence"], modalities)
            out.append(net(**tensors).float().cpu().numpy())
    return np.concatenate(out, axis=0) if out else np.zeros((0, len(EMOTIONS)), np.float32)


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())


def plot_confusion(report: dict, path: Path, title: str) -> None:
    from ._deps import require
    matplotlib = require("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    matrix = np.asarray(report["confusion"])
    labels = list(report["per_class"])
    fig, ax = plt.subplots(figsize=(5, 4.4))
    ax.imshow(matrix, cmap="Blues")
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center",
                    color="white" if matrix[i, j] > matrix.max() / 2 else "black")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}\nmacro-F1 {report['macro_f1']:.3f}, accuracy {report['accuracy']:.3f}")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


# ---------------------------------------------------------------------------------------------
# the loop


def train(config: TrainConfig) -> Path:
    """Train; write RUN_DIR/checkpoint.pt, last.pt, metrics.json, confusion.png -> RUN_DIR.
    On CUDA cuDNN runs deterministic kernels meanwhile; its global flags are restored after."""
    cudnn = _torch().backends.cudnn
    saved = cudnn.deterministic, cudnn.benchmark
    try:
        return _train(config)
    finally:
        cudnn.deterministic, cudnn.benchmark = saved


def _train(config: TrainConfig) -> Path:
    torch = _torch()
    from .metrics import classification_report
    from .model import LadderNet, checkpoint_dict, load_checkpoint, model_config

    # -- distributed setup (torchrun sets WORLD_SIZE / RANK / LOCAL_RANK) -----------------------
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = resolve_device(config.device, config.amp)
    if world > 1:
        import torch.distributed as dist
        if device.type == "cuda":
            local_rank, gpus = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
            if local_rank >= gpus:
                raise EdgeLadderError(f"process LOCAL_RANK={local_rank} needs CUDA device {local_rank}, but this "
                                      f"machine has {gpus}: start at most {gpus} process(es) per node "
                                      f"(torchrun --nproc-per-node {gpus}), or train on the CPU with --device cpu.")
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    is_main = rank == 0

    run_dir = Path(config.out_dir)
    features_dir = Path(config.features_dir)
    read_manifest(features_dir)
    check_run_dir(config, run_dir, is_main)
    train_clips, dev_clips, test_clips, splits = load_splits(config, features_dir)
    if len(train_clips) < 2 or not dev_clips:
        raise EdgeLadderError(f"{features_dir}: need >= 2 train clips and >= 1 dev clip; got "
                              f"{len(train_clips)} train, {len(dev_clips)} dev. Generate more actors.")
    # the labelled subset (stratified by emotion, then actor; fixed by seed); the rest of the train
    # split joins the unlabelled pool with the --unlabelled directories' clips
    keep = select_labelled(train_clips, config.labelled_fraction, config.seed)
    kept = set(keep.tolist())
    labelled_clips = [train_clips[i] for i in keep]
    extra_clips, extra_record = load_unlabelled_dirs(config, features_dir, train_clips[0])
    unlabelled_clips = [unlabelled_copy(c) for i, c in enumerate(train_clips) if i not in kept] + extra_clips
    train_labels = np.array([c.label for c in labelled_clips])
    # selection sees no more labels than training: dev labels subsampled at the same fraction
    dev_keep = select_labelled(dev_clips, config.labelled_fraction, config.seed)
    select_clips = [dev_clips[i] for i in dev_keep]
    select_labels = np.array([c.label for c in select_clips])
    labelled_record = {"fraction": config.labelled_fraction, "seed": config.seed,
                       "stratified_by": STRATIFIED_BY,
                       "train": labelled_summary(train_clips, keep), "dev": labelled_summary(dev_clips, dev_keep),
                       "unlabelled": {"train_clips": len(train_clips) - len(keep), "directories": extra_record,
                                      "total": len(unlabelled_clips)}}
    selection = {"criterion": config.select,
                 "dev_labels_used": len(select_clips) if config.select == "dev-loss" else 0,
                 "dev_clips": len(dev_clips), "labelled_fraction": config.labelled_fraction, "seed": config.seed,
                 "why": ("lowest cross-entropy on the dev clips whose labels are kept at the train split's "
                         "labelled fraction (stratified, same seed)" if config.select == "dev-loss"
                         else "the last epoch: no labels used for selection")}
    if is_main:
        atomic_write_json(run_dir / "labelled.json", labelled_record)

    if device.type == "cuda":
        # cuDNN's fastest convolution backward kernels accumulate with atomics, so two runs (or a
        # resumed and an uninterrupted one) would drift apart; this model is too small to notice
        # the deterministic ones
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    torch.manual_seed(config.seed)
    model = LadderNet(model_config(config.model_size, audio_dim=train_clips[0].audio.shape[1],
                                   face_size=train_clips[0].face.shape[-1])).to(device)
    # input normalisation: every train-split clip (labelled or not: no label is used), not the
    # --unlabelled directories, so runs with and without extra recordings deploy the same input
    # scaling and stay paired
    stats = normalisation_stats(train_clips)
    model.set_normalisation(**stats)
    init_from = init_from_checkpoint(model, config.init_from, device) if config.init_from else None
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=config.amp)

    plan = epoch_plan(len(labelled_clips), len(unlabelled_clips), config.batch_size, world, config.epoch_steps)
    n_steps = plan["steps"]
    total_steps = n_steps * config.epochs
    config_dict = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()}
    features = features_identity(features_dir)
    extensions = []      # --resume with more (or fewer) epochs than planned: [{after_epoch, from_epochs, to_epochs}]

    start_epoch, best_dev_loss, best_epoch, history = 1, math.inf, 0, []
    last_path = run_dir / "last.pt"
    if config.resume:
        state = torch.load(last_path, map_location=device, weights_only=True)
        for key in ("epoch_steps", "model_size", "ladder", "modalities", "batch_size", "seed", "lr", "lambdas",
                    "noise_std", "modality_dropout", "weight_decay", "cross_lambda", "labelled_fraction",
                    "unlabelled", "fold", "select"):
            saved_value = state["train_config"].get(key, getattr(TrainConfig(), key))
            saved_value = list(saved_value) if isinstance(saved_value, tuple) else saved_value
            if saved_value != config_dict[key]:
                raise EdgeLadderError(f"--resume: {last_path} was trained with {key}={saved_value!r}, "
                                      f"this run asks for {config_dict[key]!r}. Use the same settings or a new --out.")
        check_resume_features(state, features, last_path)
        if config.labelled_fraction < 1 and state.get("stratified_by") != STRATIFIED_BY:
            raise EdgeLadderError(f"--resume: {last_path} kept the labels of clips chosen by an earlier edge-ladder "
                                  f"(stratified by {' and '.join(state.get('stratified_by') or ['emotion', 'actor'])}"
                                  f"; now by {', then '.join(STRATIFIED_BY)}): other labelled clips. Start over "
                                  f"with --force or train into a new --out.")
        saved_extra = [d.get("manifest_sha256") for d in state.get("unlabelled_features", [])]
        if saved_extra != [d["manifest_sha256"] for d in extra_record]:
            raise EdgeLadderError(f"--resume: the --unlabelled directories' manifests differ from the ones {last_path} "
                                  f"was trained with: a different dataset. Resume with the original directories, "
                                  f"or train into a new --out.")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        start_epoch = state["epoch"] + 1
        best_dev_loss, best_epoch, history = state["best_dev_loss"], state["best_epoch"], list(state["history"])
        init_from, extensions = state.get("init_from"), list(state.get("extensions", []))
        planned = state["train_config"]["epochs"]
        if config.epochs < state["epoch"]:
            raise EdgeLadderError(f"--resume: {last_path} has {state['epoch']} epochs done; --epochs {config.epochs} "
                                  f"is fewer. Pass --epochs {state['epoch']} or more, or start a new run from its "
                                  f"best weights with --init-from {run_dir / 'checkpoint.pt'} --out NEW_RUN_DIR.")
        if config.epochs != planned:
            extensions.append({"after_epoch": state["epoch"], "from_epochs": planned, "to_epochs": config.epochs})
            if is_main:
                print(extension_note(config, state["epoch"], planned, n_steps), flush=True)
    record = {"data": data_record(features_dir, features, splits, config.fold), "init_from": init_from}
    if is_main:
        own_steps = steps_per_epoch(len(labelled_clips), len(unlabelled_clips) - len(extra_clips), config.batch_size,
                                    world) if extra_clips else 0
        print(describe_epoch(plan, len(labelled_clips), len(unlabelled_clips), own_steps), flush=True)

    step_model = _train_step_class()(model)
    if world > 1:  # decoders / cross heads get no gradient in the none / within ablations
        step_model = torch.nn.parallel.DistributedDataParallel(
            step_model, find_unused_parameters=config.ladder != "cross")

    progress = None
    if config.progress and is_main:  # a bar on a terminal only (disable=None): no \r updates in a log file
        from tqdm import tqdm
        progress = tqdm(total=total_steps, initial=(start_epoch - 1) * n_steps, unit="step",
                        desc="train", dynamic_ncols=True, disable=None)
    unlabelled_tags = np.full(config.batch_size, UNLABELLED, dtype=np.int64)
    for epoch in range(start_epoch, config.epochs + 1):
        started = time.perf_counter()
        # every epoch reseeds from (seed, epoch): resume gives the uninterrupted run's result
        torch.manual_seed(config.seed * 100_003 + epoch * 1_009 + rank)
        batches = epoch_batches(len(labelled_clips), len(unlabelled_clips), config.batch_size, config.seed,
                                epoch, rank, world, config.epoch_steps)
        model.train()
        sums = {"loss": 0.0, "ce": 0.0, "denoise": 0.0}
        for step, (index, unlabelled_index) in enumerate(batches):
            lr = learning_rate(config, (epoch - 1) * n_steps + step, total_steps)
            if len(index) + len(unlabelled_index) < 2:  # batch norm needs two samples (same on every rank)
                continue
            # one forward over concat(labelled, unlabelled): CE on the labelled rows only, batch
            # statistics and denoising costs over all of them (also in "none", for a fair baseline)
            clips = [labelled_clips[i] for i in index] + [unlabelled_clips[i] for i in unlabelled_index]
            batch = to_tensors(batch_clips(clips), device)
            labels = torch.from_numpy(np.concatenate([train_labels[index],
                                                      unlabelled_tags[:len(unlabelled_index)]])).to(device)
            presence = apply_modalities(batch.pop("presence"), config.modalities)
            batch["presence"] = modality_dropout(presence, config.modality_dropout)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with torch.autocast(device.type, dtype=torch.float16, enabled=config.amp):
                out = step_model(batch, labels, config.noise_std, config.lambdas, config.ladder, config.cross_lambda)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(out["loss"]).backward()
            scaler.step(optimizer)
            scaler.update()
            for key in sums:
                sums[key] += float(out[key].detach()) / n_steps
            if progress is not None:
                progress.update(1)
                progress.set_postfix(epoch=epoch, loss=f"{float(out['loss'].detach()):.3f}", ce=f"{float(out['ce'].detach()):.3f}")

        # the running BN statistics every later use folds (dev selection, checkpoints, export):
        # the population statistics of the train clips, not the clean pass' momentum average
        model.set_population_statistics(population_batches(labelled_clips + unlabelled_clips, device,
                                                           config.eval_batch_size, config.modalities))
        if is_main:
            dev_logits = predict(model, select_clips, device, config.eval_batch_size, modalities=config.modalities)
            dev_loss = cross_entropy(dev_logits, select_labels)
            dev_f1 = classification_report(select_labels, dev_logits.argmax(1))["macro_f1"]
            collapse = collapse_signal(model, dev_clips, device, config.eval_batch_size, config.modalities)
            history.append({"epoch": epoch, "lr": lr, "train_loss": sums["loss"], "train_ce": sums["ce"],
                            "train_denoise": sums["denoise"], "dev_loss": dev_loss, "dev_macro_f1": dev_f1,
                            "layer0_participation": collapse, "seconds": time.perf_counter() - started})
            if config.select == "last" or dev_loss < best_dev_loss:
                best_dev_loss, best_epoch = dev_loss, epoch      # "last": the dev loss of the last epoch
                save_torch(checkpoint_dict(model, config_dict, epoch=epoch, dev_loss=dev_loss, **record),
                           run_dir / "checkpoint.pt")
            save_torch({"model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                        "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch,
                        "best_dev_loss": best_dev_loss, "best_epoch": best_epoch, "history": history,
                        "train_config": config_dict, "features": features, "extensions": extensions,
                        "unlabelled_features": extra_record, "init_from": init_from,
                        "stratified_by": STRATIFIED_BY}, last_path)
            line = (f"epoch {epoch:3d}/{config.epochs}  train loss {sums['loss']:.3f} (ce {sums['ce']:.3f}, "
                    f"denoise {sums['denoise']:.3f})  dev loss {dev_loss:.3f}  dev macro-F1 {dev_f1:.3f}  "
                    "layer-0 PR " + "/".join("-" if collapse[m] is None else f"{collapse[m]:.1f}" for m in ("audio", "face")))
            if progress is not None:
                progress.write(line)      # above the bar
            else:
                print(line, flush=True)
        if world > 1:
            torch.distributed.barrier()
        if config.stop_after_epoch and epoch >= config.stop_after_epoch and epoch < config.epochs:
            if progress is not None:
                progress.close()
            return run_dir
    if progress is not None:
        progress.close()

    if is_main:
        best, _ = load_checkpoint(run_dir / "checkpoint.pt", map_location=device)
        metrics = {}
        for split, clips in (("dev", dev_clips), ("test", test_clips)):
            if not clips:
                continue
            logits = predict(best, clips, device, config.eval_batch_size, modalities=config.modalities)
            metrics[split] = classification_report([c.label for c in clips], logits.argmax(1))
        if "test" in metrics:
            plot_confusion(metrics["test"], run_dir / "confusion.png",
                           f"test split ({len(test_clips)} clips, held-out actors)")
        metrics.update({"best_epoch": best_epoch, "best_dev_loss": best_dev_loss, "selection": selection,
                        "labelled": labelled_record, "epoch_plan": plan,
                        "layer0_participation": collapse_signal(best, dev_clips, device, config.eval_batch_size,
                                                                config.modalities),
                        "train_seconds": sum(h["seconds"] for h in history), "history": history,
                        "train_config": config_dict, "extensions": extensions, **record})
        atomic_write_json(run_dir / "metrics.json", metrics)
    if world > 1:
        torch.distributed.barrier()
    return run_dir


def _train_step_class():
    torch = _torch()

    class TrainStep(torch.nn.Module):
        """Wraps LadderNet.training_losses as forward, so DistributedDataParallel hooks it."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, batch, labels, noise_std, lambdas, ladder, cross_lambda):
            return self.model.training_losses(**batch, labels=labels, noise_std=noise_std,
                                              lambdas=lambdas, ladder=ladder, cross_lambda=cross_lambda)
    return TrainStep


# ---------------------------------------------------------------------------------------------
# CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = TrainConfig()
    parser.add_argument("features_dir", metavar="FEATURES_DIR", help="prepared features (prepare / make-features)")
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="output run directory")
    parser.add_argument("--epochs", type=EPOCHS, default=defaults.epochs,
                        help="passes over the train split (default %(default)s); with --resume, more than "
                             "before extends the run")
    parser.add_argument("--epoch-steps", type=EPOCH_STEPS, default=defaults.epoch_steps, metavar="N",
                        help="steps per epoch (dev evaluation and checkpoint after each); default 0: one pass over "
                             "the larger of the labelled and unlabelled pools, which grows with --unlabelled")
    parser.add_argument("--batch-size", type=BATCH_SIZE, default=defaults.batch_size,
                        help="clips per step, >= 2 for batch norm (default %(default)s)")
    parser.add_argument("--lr", type=LEARNING_RATE, default=defaults.lr,
                        help="Adam learning rate, > 0, linear decay over the last third (default %(default)s)")
    parser.add_argument("--ladder", choices=("none", "within", "cross"), default=defaults.ladder,
                        help="none: lambda=0; within: own-modality reconstruction; cross: full (default)")
    parser.add_argument("--modalities", choices=("av", "audio", "video"), default=defaults.modalities,
                        help="train on both, or flag one modality absent throughout (default %(default)s)")
    parser.add_argument("--model-size", choices=("tiny", "small"), default=defaults.model_size,
                        help="tiny: tests; small: demo and default (default %(default)s)")
    parser.add_argument("--weight-decay", type=NON_NEGATIVE, default=defaults.weight_decay,
                        help="Adam's L2 penalty (torch.optim.Adam weight_decay), >= 0 (default %(default)s)")
    parser.add_argument("--modality-dropout", type=MODALITY_DROPOUT, default=defaults.modality_dropout,
                        help="per-sample probability of dropping one modality, in [0, 0.5) (default %(default)s)")
    parser.add_argument("--noise-std", type=NOISE_STD, default=defaults.noise_std,
                        help="Gaussian noise of the corrupted ladder path, >= 0 (default %(default)s)")
    parser.add_argument("--lambdas", type=LAMBDA, nargs="+", default=list(defaults.lambdas),
                        help="denoising weights >= 0, bottom to top: the data level (data-space targets, "
                             "Rasmus et al.'s input), layer 0, hidden, joint and top layers (last repeats); at "
                             "most one per level (tiny: 5, small: 6; default 0.1 0.1 0.1)")
    parser.add_argument("--cross-lambda", type=LAMBDA, default=defaults.cross_lambda,
                        help="weight >= 0 of each cross-modal reconstruction cost (--ladder cross; default "
                             "%(default)s)")
    parser.add_argument("--labelled-fraction", type=LABELLED_FRACTION, default=defaults.labelled_fraction,
                        metavar="F", help="keep the labels of this fraction of the train clips, in (0, 1], stratified "
                                          "by emotion and actor and fixed by --seed; the others train unlabelled "
                                          "(RUN_DIR/labelled.json lists them; default %(default)s)")
    parser.add_argument("--unlabelled", action="append", default=[], metavar="FEATURES_DIR",
                        help="features of clips without labels (prepare --unlabelled, or any features "
                             "directory: its labels are ignored); repeatable")
    parser.add_argument("--fold", type=FOLD, default=defaults.fold, metavar="K",
                        help="-1: the splits of splits.json (default); K >= 0: actor fold K (test fold K, dev fold "
                             "K+1) of all the manifest's actors with splits.json's k and seed")
    parser.add_argument("--select", choices=SELECTIONS, default=defaults.select,
                        help="checkpoint: dev-loss (lowest loss on the dev labels kept at --labelled-fraction, "
                             "default) or last (no labels used)")
    parser.add_argument("--resume", action="store_true",
                        help="continue RUN_DIR/last.pt; with more --epochs, extend it (the learning-rate schedule "
                             "is then the new total's; see the README)")
    parser.add_argument("--force", action="store_true", help="RUN_DIR holds a run: delete its files and start over")
    parser.add_argument("--init-from", metavar="CHECKPOINT", default="",
                        help="new run starting from a checkpoint.pt's weights and normalisation (same "
                             "--model-size and features format; fresh optimizer and schedule)")
    parser.add_argument("--device", type=torch_device, default=defaults.device, help=TORCH_DEVICES)
    parser.add_argument("--amp", action="store_true", help="float16 autocast (CUDA only)")
    parser.add_argument("--seed", type=SEED, default=defaults.seed, help="random seed, >= 0 (default %(default)s)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no tqdm bar (it only shows on a terminal; the per-epoch lines always print)")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(features_dir=args.features_dir, out_dir=args.out, epochs=args.epochs,
                       epoch_steps=args.epoch_steps,
                       batch_size=args.batch_size, lr=args.lr, ladder=args.ladder, modalities=args.modalities,
                       model_size=args.model_size, modality_dropout=args.modality_dropout,
                       weight_decay=args.weight_decay,
                       noise_std=args.noise_std, lambdas=tuple(args.lambdas), resume=args.resume,
                       force=args.force, init_from=args.init_from, device=args.device, amp=args.amp,
                       seed=args.seed, progress=not args.no_progress, cross_lambda=args.cross_lambda,
                       labelled_fraction=args.labelled_fraction, unlabelled=tuple(args.unlabelled), fold=args.fold,
                       select=args.select)


def run(args: argparse.Namespace) -> int:
    import sys
    config = config_from_args(args)
    try:
        run_dir = train(config)
    except KeyboardInterrupt:
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"edge-ladder train: {interrupted_message(config)}", file=sys.stderr)
        return 130
    metrics_path = run_dir / "metrics.json"
    if metrics_path.exists() and int(os.environ.get("RANK", "0")) == 0:
        metrics = json.loads(metrics_path.read_text())
        for split in ("dev", "test"):
            if split in metrics:
                m = metrics[split]
                print(f"{split:5s} macro-F1 {m['macro_f1']:.3f}  precision {m['macro_precision']:.3f}  "
                      f"recall {m['macro_recall']:.3f}  accuracy {m['accuracy']:.3f}")
        print(f"wrote {run_dir / 'checkpoint.pt'} (best epoch {metrics['best_epoch']}) and {metrics_path}")
        from .metrics import chance_level, chance_warning
        warning = chance_warning(chance_level(metrics["dev"]["confusion"]), "dev split")
        if warning:
            print(warning)
    return 0


def main(argv=None) -> int:  # `torchrun -m edge_ladder.train FEATURES_DIR --out RUN_DIR ...`
    import sys
    parser = OneLineParser(prog="edge_ladder.train", description="train (torchrun entry point)")
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except EdgeLadderError as error:
        print(error if isinstance(error, UsageError) else f"edge_ladder.train: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    import sys
    sys.exit(main())
