"""`edge-ladder make-corpus --difficulty crema`: a generated corpus built from what is known of CREMA-D.

Same layout, file names and renderers as `edge_ladder.corpus` (the easy corpus), but hard the way
CREMA-D is hard:

    OUT_DIR/AudioWAV/*.wav                          16 kHz mono int16
    OUT_DIR/VideoFlash/*.flv                        FLV1, 480x360 at 30 fps (as CREMA-D ships)
    OUT_DIR/VideoDemographics.csv, SentenceFilenames.csv
    OUT_DIR/processedResults/summaryTable.csv       votes of simulated raters who saw the rendered clip
    OUT_DIR/processedResults/tabulatedVotes.csv     the raters' tallies per clip
    OUT_DIR/corpus.json                             CORPUS_VERSION, settings, every clip's rendered cues

Emotion space. Each emotion is a point in Mehrabian & Russell's PAD space (pleasure = valence,
arousal, dominance; Mehrabian 1980 / Russell & Mehrabian 1977 ratings, as used in e.g. Gebhard's
ALMA): two axes (valence, arousal) would put ANG and FEA on the same spot (-0.51, 0.59 vs -0.64,
0.60), yet people tell them apart by dominance (anger's lowered brows and loud voice vs fear's
raised brows and shaky voice), so the third axis is kept:

    emotion   valence  arousal  dominance
    ANG        -0.51    0.59     0.25
    DIS        -0.60    0.35     0.11
    FEA        -0.64    0.60    -0.43
    HAP         0.81    0.51     0.46
    NEU         0.00    0.00     0.00
    SAD        -0.63   -0.27    -0.33

Cues. Every cue is neutral + strength * (w_v * valence + w_a * arousal + w_d * dominance), plus a
per-actor offset (style) and per-clip noise, then clipped to a physical range (CUES below). The
weights follow the directions of the literature:
- voice (Scherer 2003; Juslin & Laukka 2003 meta-analysis): arousal drives pitch level, pitch
  range, rate, loudness and spectral tilt (high arousal: higher, faster, louder, brighter);
  valence adds a smaller part: wider pitch range and raised formants with a smile ("smiled
  speech", Tartter 1980: +2-3 % formants), more breathiness in negative states; low dominance
  (fear, sadness) adds jitter (a shaky voice) and lowers loudness.
- face (Ekman & Friesen's FACS prototypes): valence drives mouth curvature (AU12 smile vs AU15
  lip-corner depressor); arousal widens the eyes (AU5) and opens the mouth more while speaking;
  dominance lowers the brows (AU4, anger and disgust) or raises them (AU1+2, fear); in negative
  states the inner brow ends knit down (dominant) or up (submissive, worry): slant =
  2.5 * max(-valence, 0) * dominance.
So the voice confuses ANG/HAP (both loud and high; only range, formants and jitter differ) and the
face confuses ANG/DIS and, less, FEA/SAD (both frown; fear's eyes and brows are wider); no pair
is identical in either modality.

Magnitudes: at full strength ANG/FEA raise pitch by ~25 % and loudness by ~5-6 dB over neutral,
SAD lowers pitch by ~12 % and loudness by ~4 dB (Banse & Scherer 1996 report hot anger several dB
and semitones above neutral); a first draft with 6 dB / 0.35 per unit arousal was below those
figures and was raised to 9 dB / 0.45 before the corpus was frozen.

Noise (the reasons): per-clip noise of each voice cue is about half the spread of that cue
across the six emotions, per-actor offsets about as large (speakers differ in habitual pitch
range and loudness as much as emotions move them). Face cues get about a third of their spread
(posed facial expressions are more consistent than voices: CREMA-D's raters recognise the face,
58 %, better than the voice, 41 %); a first draft with half the spread for the face too gave a
cue-level logistic regression face < voice, the opposite of CREMA-D. On top of that the easy
corpus' renderer adds its own per-clip variation (pitch +-5 %, rate +-10 %, head motion,
lighting drift, sensor and room noise).

Measured before freezing (30 actors x 40 clips, seed 0; logistic regression on the rendered cue
values themselves, 5 actor folds: an ideal observer of the cues, no media): voice 0.62, face
0.72, both 0.78 accuracy; the simulated raters' majority is the intended emotion in 47 % (voice),
45 % (face), 56 % (multimodal) of the ratings (CREMA-D's people: 41 / 58 / 64 %).

Strength of a portrayal = LEVEL_STRENGTH[level] (LO 0.35, MD 0.65, HI 1.0, XX 0.8: CREMA-D's LO
clips are rated far less intense than HI) x the actor's expressiveness (0.7-1.1) x per-clip
U(0.85, 1.15), separately jittered per modality (actors are not equally expressive in voice and
face); WEAK_FRACTION = 25 % of the clips are weak portrayals (strength x U(0.2, 0.5)) that keep
their intended label.

Perceived labels. RATERS raters per modality (CREMA-D: about 10 per clip and modality) see the
clip's rendered cues (normalised by each cue's spread across emotions; they do not know the
actor's offsets) plus perceptual noise of RATER_NOISE spreads, and vote for the emotion whose
prototype at XX strength is nearest; the majority is VoiceVote / FaceVote / MultiModalVote (ties
joined with ':'), the level their mean perceived intensity (0-100). So a weak portrayal is often
heard as NEU, as in CREMA-D, while its file name keeps the intended emotion.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import numpy as np

from . import EMOTIONS
from .atomic import atomic_write_bytes
from .corpus import (FIRST_ACTOR, SAMPLE_RATE, SYLLABLES, Face, Voice, csv_bytes, draw_face, make_actor,
                     syllable_envelope, synth_audio, write_clip_files, write_metadata)
from .crema import LEVEL_SENTENCE, SENTENCES
from .errors import EdgeLadderError
from .parallel import run_parallel

CORPUS_VERSION = "crema-1"      # bump when anything below changes what a seed generates
VIDEO_SIZE = (480, 360)          # (W, H) of CREMA-D's VideoFlash
CORPUS_FPS = 30.0                # CREMA-D's frame rate
FACE_SCALE = 2.25                # x the easy corpus' head: a ~130 x 170 px face in 480x360, as in CREMA-D
MAX_ACTORS = 91                  # CREMA-D: actors 1001-1091
LEVELS = ("LO", "MD", "HI", "XX")
LEVEL_STRENGTH = {"LO": 0.35, "MD": 0.65, "HI": 1.0, "XX": 0.8}
WEAK_FRACTION = 0.25             # weak portrayals that keep their intended label
WEAK_STRENGTH = (0.2, 0.5)       # their strength multiplier
RATERS = 10                      # simulated raters per clip and modality
NOISE_BANK = 1 << 23             # sensor-noise samples shared by the frames (32 MB, 16 frames' worth)
RATER_NOISE = 1.0                # perceptual noise, in units of each cue's spread across emotions

PAD = {   # (valence, arousal, dominance), Mehrabian 1980
    "ANG": (-0.51, 0.59, 0.25), "DIS": (-0.60, 0.35, 0.11), "FEA": (-0.64, 0.60, -0.43),
    "HAP": (0.81, 0.51, 0.46), "NEU": (0.0, 0.0, 0.0), "SAD": (-0.63, -0.27, -0.33),
}


@dataclasses.dataclass(frozen=True)
class Cue:
    modality: str     # "voice" | "face"
    neutral: float    # value of a neutral portrayal
    valence: float    # weight of the valence axis
    arousal: float
    dominance: float
    actor_sd: float   # per-actor offset (speaking / facial style)
    clip_sd: float    # per-clip noise
    low: float        # physical range
    high: float


CUES = {  # name: Cue(modality, neutral, w_valence, w_arousal, w_dominance, actor_sd, clip_sd, low, high)
    # voice: arousal first (Juslin & Laukka 2003), smaller valence and dominance parts
    "pitch":   Cue("voice", 1.00, 0.05, 0.45, -0.10, 0.05, 0.05, 0.70, 1.60),    # x the actor's f0
    "range":   Cue("voice", 0.12, 0.06, 0.10, 0.00, 0.025, 0.025, 0.03, 0.40),  # pitch excursion / f0
    "rate":    Cue("voice", 1.00, 0.00, 0.25, 0.05, 0.04, 0.04, 0.60, 1.60),    # x syllables per second
    "gain_db": Cue("voice", 0.00, 0.00, 9.00, 3.00, 1.2, 1.2, -10.0, 10.0),      # loudness
    "tilt":    Cue("voice", 1.50, -0.10, -0.50, -0.20, 0.10, 0.10, 0.80, 2.30),  # harmonic roll-off
    "breath":  Cue("voice", 0.05, -0.01, -0.02, -0.03, 0.01, 0.01, 0.005, 0.20),  # aspiration noise
    "jitter":  Cue("voice", 0.010, -0.004, 0.006, -0.015, 0.003, 0.003, 0.002, 0.05),  # pitch wobble / f0
    "formant": Cue("voice", 1.00, 0.03, 0.00, 0.00, 0.008, 0.008, 0.94, 1.06),   # x the actor's formants
    # face: valence first (mouth), arousal (eyes, mouth opening) and dominance (brows)
    "smile":   Cue("face", 0.00, 1.10, 0.00, 0.00, 0.15, 0.15, -1.2, 1.2),       # mouth corners up/down
    "brow":    Cue("face", 0.00, 0.30, 0.35, -1.20, 0.08, 0.08, -1.0, 0.35),     # (above 0.35 the Haar
                                                                                 # cascade loses the face)
    "slant":   Cue("face", 0.00, 0.0, 0.0, 0.0, 0.10, 0.10, -1.0, 1.0),          # 2.5 max(-v, 0) d, below
    "eyes":    Cue("face", 1.00, 0.00, 0.30, -0.30, 0.035, 0.035, 0.5, 1.5),       # eye opening
    "mouth":   Cue("face", 1.00, 0.00, 0.40, 0.00, 0.04, 0.04, 0.5, 1.6),        # opening while speaking
}
SLANT_KNIT = 2.5   # inner-brow knitting in negative states, direction by dominance
VOICE_CUES = tuple(n for n, c in CUES.items() if c.modality == "voice")
FACE_CUES = tuple(n for n, c in CUES.items() if c.modality == "face")


@functools.lru_cache(maxsize=64)
def _prototype(emotion: str, strength: float) -> tuple:
    return tuple(prototype_values(emotion, strength).items())


def prototype(emotion: str, strength: float = 1.0) -> dict:
    """Noise-free cue values of an emotion portrayed at `strength` -> {cue name: value} (cached)."""
    return dict(_prototype(emotion, float(strength)))


def prototype_values(emotion: str, strength: float = 1.0) -> dict:
    """Noise-free cue values of an emotion portrayed at `strength` -> {cue name: value}."""
    v, a, d = PAD[emotion]
    out = {}
    for name, cue in CUES.items():
        shift = SLANT_KNIT * max(-v, 0.0) * d if name == "slant" else cue.valence * v + cue.arousal * a + cue.dominance * d
        out[name] = float(np.clip(cue.neutral + strength * shift, cue.low, cue.high))
    return out


@functools.lru_cache(maxsize=1)
def _cue_spread() -> tuple:
    values = np.array([[prototype(e)[n] for n in CUES] for e in EMOTIONS])
    return tuple(zip(CUES, values.std(axis=0)))


def cue_spread() -> dict:
    """Standard deviation of each cue across the six full-strength prototypes (the rater's unit)."""
    return dict(_cue_spread())


@dataclasses.dataclass(frozen=True)
class ActorStyle:
    offsets: dict          # cue name -> per-actor offset
    voice_skill: float     # x strength in the voice
    face_skill: float      # x strength in the face


def actor_style(actor_id: int, seed: int) -> ActorStyle:
    rng = np.random.default_rng([seed, actor_id, 11])
    offsets = {name: float(rng.normal(0, cue.actor_sd)) for name, cue in CUES.items()}
    return ActorStyle(offsets, float(np.exp(rng.normal(0, 0.15))), float(np.exp(rng.normal(0, 0.15))))


def clip_cues(seed: int, actor_id: int, sentence: str, emotion: str, level: str) -> dict:
    """The cues a clip is rendered with (deterministic; cheap: no rendering) ->
    {"cues": {name: value}, "strength": {"voice": s, "face": s}, "weak": bool}."""
    actor = make_actor(actor_id, seed)
    style = actor_style(actor_id, seed)
    rng = np.random.default_rng([seed, actor_id, SENTENCES.index(sentence), EMOTIONS.index(emotion),
                                 LEVELS.index(level), 12])
    weak = bool(rng.random() < WEAK_FRACTION)
    base = LEVEL_STRENGTH[level] * actor.expressiveness * rng.uniform(0.85, 1.15)
    if weak:
        base *= rng.uniform(*WEAK_STRENGTH)
    strength = {"voice": base * style.voice_skill * rng.uniform(0.9, 1.1),
                "face": base * style.face_skill * rng.uniform(0.9, 1.1)}
    v, a, d = PAD[emotion]
    cues = {}
    for name, cue in CUES.items():
        shift = SLANT_KNIT * max(-v, 0.0) * d if name == "slant" else cue.valence * v + cue.arousal * a + cue.dominance * d
        value = cue.neutral + strength[cue.modality] * shift + style.offsets[name] + rng.normal(0, cue.clip_sd)
        cues[name] = float(np.clip(value, cue.low, cue.high))
    return {"cues": cues, "strength": strength, "weak": weak}


# ------------------------------------------------------------------------------------------------
# Rendering (the easy corpus' synthesiser and face, driven by the clip's cues)


def render_audio(seed: int, actor_id: int, sentence: str, emotion: str, level: str, cues: dict):
    """-> (pcm int16 (n,), syllable onsets (s), syllable length (s), duration (s), speaker, rng);
    render_clip goes on drawing the video from the same rng."""
    actor = make_actor(actor_id, seed)
    rng = np.random.default_rng([seed, actor_id, SENTENCES.index(sentence), EMOTIONS.index(emotion),
                                 LEVELS.index(level), 13])
    # the cues already hold strength and expressiveness: render them at intensity 1
    speaker = dataclasses.replace(actor, expressiveness=1.0, formant_scale=actor.formant_scale * cues["formant"])
    voice = Voice(pitch=cues["pitch"], range=cues["range"], rate=cues["rate"], gain_db=cues["gain_db"],
                  tilt=cues["tilt"], breath=cues["breath"], jitter=cues["jitter"])
    pcm, onsets, length, duration = synth_audio(speaker, voice, 1.0, SYLLABLES[sentence], rng)
    return pcm, onsets, length, duration, speaker, rng


def render_clip(seed: int, actor_id: int, sentence: str, emotion: str, level: str, cues: dict):
    """-> (pcm int16 (n,), frames (N, 360, 480, 3) uint8 BGR at CORPUS_FPS)."""
    pcm, onsets, length, duration, speaker, rng = render_audio(seed, actor_id, sentence, emotion, level, cues)
    face = Face(smile=cues["smile"], brow=cues["brow"], slant=cues["slant"], eyes=cues["eyes"])
    n_frames = max(1, int(round(duration * CORPUS_FPS)))
    times = np.arange(n_frames) / CORPUS_FPS
    mouth = np.clip(syllable_envelope(times, np.asarray(onsets), length) * cues["mouth"], 0, 1.6)  # (N,)
    sway, amp = rng.uniform(0, 2 * np.pi, 3), rng.uniform(2, 8, 2) * FACE_SCALE
    speed = rng.uniform(0.3, 1.0, 3)
    frames = np.empty((n_frames, VIDEO_SIZE[1], VIDEO_SIZE[0], 3), np.uint8)
    bank, pixels = noise_bank(), VIDEO_SIZE[0] * VIDEO_SIZE[1] * 3
    starts = rng.integers(0, bank.size - pixels, n_frames)        # each frame: a window at a random place
    for i, t in enumerate(times):
        offset = (amp[0] * np.sin(2 * np.pi * speed[0] * t + sway[0]), amp[1] * np.sin(2 * np.pi * speed[1] * t + sway[1]))
        light = 1 + 0.12 * np.sin(2 * np.pi * speed[2] * t + sway[2])
        noise = bank[starts[i]:starts[i] + pixels].reshape(VIDEO_SIZE[1], VIDEO_SIZE[0], 3)
        frames[i] = draw_face(speaker, face, 1.0, mouth[i], offset, light, rng, size=VIDEO_SIZE, scale=FACE_SCALE,
                              noise=noise)
    return pcm, frames


@functools.lru_cache(maxsize=1)
def noise_bank() -> np.ndarray:
    """(NOISE_BANK,) float32 unit Gaussian sensor noise, the same in every process; frames take
    windows of it at random offsets (drawing 518,400 fresh normals per 480x360 frame was 2/3 of the
    generation time)."""
    return np.random.default_rng(20260).standard_normal(NOISE_BANK, dtype=np.float32)


def make_clip(task) -> str:
    """Worker: one clip's WAV and FLV (corpus.write_clip_files: skipped when both exist) -> clip id."""
    return write_clip_files(task, render_planned_clip, CORPUS_FPS)


def render_planned_clip(seed: int, actor_id: int, sentence: str, emotion: str, level: str) -> tuple:
    """The clip's planned cues, rendered -> (pcm, frames)."""
    return render_clip(seed, actor_id, sentence, emotion, level, clip_cues(seed, actor_id, sentence, emotion, level)["cues"])


# ------------------------------------------------------------------------------------------------
# Simulated raters


def rater_votes(name: str, cues: dict, seed: int) -> dict:
    """RATERS raters per modality perceive the rendered cues + noise and pick the nearest XX-strength
    prototype. -> {"voice" | "face" | "multimodal": (counts (6,) int, mean perceived intensity 0-100)}."""
    spread = cue_spread()
    groups = {"voice": VOICE_CUES, "face": FACE_CUES, "multimodal": tuple(CUES)}
    rng = np.random.default_rng([seed, *name.encode(), 14])
    out = {}
    for modality, names in groups.items():
        unit = np.array([spread[n] for n in names])
        neutral = np.array([CUES[n].neutral for n in names])
        seen = (np.array([cues[n] for n in names]) - neutral) / unit                       # (C,)
        at_xx = [prototype(e, LEVEL_STRENGTH["XX"]) for e in EMOTIONS]
        protos = np.array([[p[n] for n in names] for p in at_xx])
        protos = (protos - neutral) / unit                                                  # (6, C)
        perceived = seen + rng.normal(0, RATER_NOISE, (RATERS, len(names)))                 # (R, C)
        votes = np.argmin(((perceived[:, None, :] - protos[None]) ** 2).sum(-1), axis=1)   # (R,)
        counts = np.bincount(votes, minlength=len(EMOTIONS))
        full = np.linalg.norm(protos, axis=1).mean() / LEVEL_STRENGTH["XX"]
        intensity = float(np.clip(100 * np.linalg.norm(perceived, axis=1).mean() / (2 * full), 0, 100))
        out[modality] = (counts, intensity)
    return out


def summary_row(name: str, votes: dict) -> list:
    """-> [FileName, VoiceVote, VoiceLevel, FaceVote, FaceLevel, MultiModalVote, MultiModalLevel]."""
    row = [name]
    for modality in ("voice", "face", "multimodal"):
        counts, intensity = votes[modality]
        top = np.flatnonzero(counts == counts.max())
        row += [":".join(sorted(EMOTIONS[i][0] for i in top)), round(intensity, 1)]
    return row


# ------------------------------------------------------------------------------------------------
# The corpus


def all_clips() -> list:
    """Every (sentence, emotion, level) CREMA-D has for one actor: 82 (IEO at LO/MD/HI for the five
    non-neutral emotions and XX for NEU; the other 11 sentences at XX)."""
    clips = []
    for sentence in SENTENCES:
        for emotion in EMOTIONS:
            levels = ("LO", "MD", "HI") if sentence == LEVEL_SENTENCE and emotion != "NEU" else ("XX",)
            clips += [(sentence, emotion, level) for level in levels]
    return clips


def plan_clips(actor_ids, clips_per_actor: int, seed: int) -> list:
    """(actor id, sentence, emotion, level) per clip: per actor, clips_per_actor of CREMA-D's 82
    names, emotions as balanced as the names allow (NEU has 12, the others 14), drawn by seed."""
    names = all_clips()
    if not 1 <= clips_per_actor <= len(names):
        raise EdgeLadderError(f"--clips-per-actor must be in 1..{len(names)} (CREMA-D has {len(names)} clips per "
                              f"actor); got {clips_per_actor}.")
    plan = []
    for actor_id in actor_ids:
        rng = np.random.default_rng([seed, actor_id, 2])
        pools = {e: [names[i] for i in rng.permutation(len(names)) if names[i][1] == e] for e in EMOTIONS}
        order = [EMOTIONS[(i + actor_id) % len(EMOTIONS)] for i in range(len(EMOTIONS))]
        chosen = []
        while len(chosen) < clips_per_actor:
            for emotion in order:
                if pools[emotion] and len(chosen) < clips_per_actor:
                    chosen.append(pools[emotion].pop())
        plan += [(actor_id, *clip) for clip in chosen]
    return plan


def make_corpus(out_dir, actors: int = 16, clips_per_actor: int = 24, seed: int = 0, workers: int | None = None,
                progress: bool = False) -> Path:
    """Generate the crema-difficulty corpus in out_dir (module docstring) -> out_dir. Deterministic
    for a seed (independent of `workers`); clips already on disk are kept (resumable)."""
    out_dir = Path(out_dir)
    if not 1 <= actors <= MAX_ACTORS:
        raise EdgeLadderError(f"--actors must be in 1..{MAX_ACTORS} (CREMA-D's actors 1001-1091); got {actors}.")
    actor_ids = list(range(FIRST_ACTOR, FIRST_ACTOR + actors))
    plan = plan_clips(actor_ids, clips_per_actor, seed)
    settings = {"version": CORPUS_VERSION, "actors": actors, "clips_per_actor": clips_per_actor, "seed": seed}
    record_path = out_dir / "corpus.json"
    if record_path.exists():
        old = json.loads(record_path.read_text()).get("settings")
        if old != settings:
            raise EdgeLadderError(f"{out_dir} holds a corpus made with {old}, not {settings}: its clips would mix. "
                                  f"Use another OUT_DIR, or delete {out_dir} first.")
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(record_path, json.dumps({"settings": settings, "done": False}).encode())
    (out_dir / "AudioWAV").mkdir(exist_ok=True)
    (out_dir / "VideoFlash").mkdir(exist_ok=True)
    names = run_parallel(make_clip, [(str(out_dir), seed, *clip) for clip in plan], workers, progress,
                         "make-corpus --difficulty crema")

    write_metadata(out_dir, actor_ids, seed)
    summary, tallies, clips = [], [], {}
    for name, clip in zip(names, plan):
        rendered = clip_cues(seed, *clip)
        votes = rater_votes(name, rendered["cues"], seed)
        summary.append(summary_row(name, votes))
        counts = sum(votes[m][0] for m in votes)
        tallies.append([*counts.tolist(), name, int(counts.sum()), round(float(counts.max() / counts.sum()), 3),
                        EMOTIONS[int(counts.argmax())][0]])
        clips[name] = {"emotion": clip[2], "level": clip[3], "weak": rendered["weak"],
                       "strength": {k: round(v, 4) for k, v in rendered["strength"].items()},
                       "cues": {k: round(v, 5) for k, v in rendered["cues"].items()}}
    atomic_write_bytes(out_dir / "processedResults" / "summaryTable.csv", csv_bytes(
        [("", "FileName", "VoiceVote", "VoiceLevel", "FaceVote", "FaceLevel", "MultiModalVote", "MultiModalLevel")]
        + [(i + 1, *row) for i, row in enumerate(summary)]))
    atomic_write_bytes(out_dir / "processedResults" / "tabulatedVotes.csv", csv_bytes(
        [("A", "D", "F", "H", "N", "S", "fileName", "numResponses", "agreement", "emoVote")] + tallies))
    atomic_write_bytes(record_path, json.dumps({
        "settings": settings, "done": True, "video": {"size": list(VIDEO_SIZE), "fps": CORPUS_FPS},
        "sample_rate": SAMPLE_RATE, "clips": clips}, indent=1).encode())
    return out_dir
