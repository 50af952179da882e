"""`edge-ladder make-corpus`: a small generated corpus in the exact CREMA-D layout (numpy + cv2).

    OUT_DIR/AudioWAV/1001_DFA_ANG_XX.wav            16 kHz mono int16 (stdlib wave)
    OUT_DIR/VideoFlash/1001_DFA_ANG_XX.flv          FLV1 (Sorenson H.263), VIDEO_SIZE, CORPUS_FPS
    OUT_DIR/VideoDemographics.csv                   ActorID, Age, Sex, Race, Ethnicity
    OUT_DIR/SentenceFilenames.csv                   Stimulus_Number, Filename (sentence codes)
    OUT_DIR/processedResults/summaryTable.csv       simulated perceived labels (Voice/Face/MultiModal)

It exists so the whole chain (prepare -> train -> export -> infer) runs on real files without
the 20 GB CREMA-D download. Emotion is split between the modalities like in people, so that
neither modality alone is enough (the reason for a cross-modal model):

    audio carries AROUSAL (pitch level and range, speaking rate, loudness, spectral tilt, breath)
        high: ANG, HAP, FEA (FEA higher and shakier)   mid: NEU   low: SAD, DIS
    face carries VALENCE (mouth curvature, brow height and slant, eye opening)
        frown: ANG, DIS     worried: SAD, FEA     smile: HAP     relaxed: NEU

so audio alone confuses ANG/HAP and SAD/DIS, the face alone confuses ANG/DIS and SAD/FEA, and
the pair identifies all six. Every actor has its own voice (pitch, formants, rate, loudness) and
face (size, shape, skin, hair, background); clips add head motion, lighting drift, sensor and
background noise, and a mouth that opens with the speech envelope.
"""
from __future__ import annotations

import argparse
import csv
import functools
import io
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import EMOTIONS
from .atomic import atomic_path, atomic_write_bytes
from .crema import LEVEL_SENTENCE, SENTENCES, clip_name
from .argtypes import NON_NEGATIVE_INT, POSITIVE_INT
from .errors import EdgeLadderError
from .parallel import run_parallel

SAMPLE_RATE = 16000
CORPUS_FPS = 15.0            # CREMA-D is 30 fps; 15 keeps generation fast and still tests resampling
VIDEO_SIZE = (160, 120)      # (W, H): small for speed; the Haar detector finds 60-90 px faces well
FLV1 = 2                     # fourcc of FFmpeg's FLV1 encoder ('FLV1' itself makes OpenCV warn and fall back)
FIRST_ACTOR = 1001
SYLLABLES = {"IEO": 5, "TIE": 7, "IOM": 8, "IWW": 7, "TAI": 8, "MTI": 9, "IWL": 8, "ITH": 9,
             "DFA": 5, "ITS": 6, "TSI": 5, "WSI": 8}
CONTROL_STEP = 64           # samples between updates of the harmonic amplitudes (4 ms)
LEVEL_INTENSITY = {"LO": 0.6, "MD": 0.85, "HI": 1.15, "XX": 1.0}
BACKDROP_CONTRAST = 50.0    # grey levels the backdrop stays below the skin (face outline for the detector)


@dataclass(frozen=True)
class Voice:
    """Per-emotion audio cues (arousal). Multipliers are relative to the actor's neutral voice."""
    pitch: float      # x actor f0
    range: float      # pitch excursion, fraction of f0
    rate: float       # x actor syllables per second
    gain_db: float    # loudness
    tilt: float       # harmonic roll-off exponent (low = bright, tense; high = soft)
    breath: float     # aspiration noise, fraction of voiced amplitude
    jitter: float     # fast random pitch wobble, fraction of f0


@dataclass(frozen=True)
class Face:
    """Per-emotion face cues (valence), in units of the actor's face size."""
    smile: float      # mouth corners up (+) / down (-)
    brow: float       # brow height, raised (+) / lowered (-)
    slant: float      # inner brow ends down (+, anger) / up (-, worry)
    eyes: float       # eye opening, x neutral


VOICES = {   # ANG and HAP share a voice, as do SAD and DIS: audio alone confuses them
    "ANG": Voice(pitch=1.30, range=0.30, rate=1.25, gain_db=6.0, tilt=1.1, breath=0.02, jitter=0.010),
    "HAP": Voice(pitch=1.30, range=0.30, rate=1.25, gain_db=6.0, tilt=1.1, breath=0.02, jitter=0.010),
    "FEA": Voice(pitch=1.55, range=0.20, rate=1.40, gain_db=2.0, tilt=1.4, breath=0.10, jitter=0.035),
    "NEU": Voice(pitch=1.00, range=0.12, rate=1.00, gain_db=0.0, tilt=1.5, breath=0.04, jitter=0.008),
    "SAD": Voice(pitch=0.85, range=0.06, rate=0.75, gain_db=-5.0, tilt=2.0, breath=0.15, jitter=0.008),
    "DIS": Voice(pitch=0.85, range=0.06, rate=0.75, gain_db=-5.0, tilt=2.0, breath=0.15, jitter=0.008),
}
FACES = {    # ANG and DIS share a face, as do SAD and FEA: the face alone confuses them
    # (SAD/FEA brows rise at most ~0.3 face half-widths: higher, they leave the eye band empty and
    # the Haar cascade loses the face in up to half the frames of expressive actors)
    "ANG": Face(smile=-0.5, brow=-0.8, slant=1.0, eyes=0.75),
    "DIS": Face(smile=-0.5, brow=-0.8, slant=1.0, eyes=0.75),
    "SAD": Face(smile=-0.9, brow=0.4, slant=-0.8, eyes=1.25),
    "FEA": Face(smile=-0.9, brow=0.4, slant=-0.8, eyes=1.25),
    "HAP": Face(smile=1.0, brow=0.2, slant=0.0, eyes=0.85),
    "NEU": Face(smile=0.0, brow=0.0, slant=0.0, eyes=1.0),
}


@dataclass
class Actor:
    id: int
    sex: str
    age: int
    f0: float                 # Hz, neutral speaking pitch
    formant_scale: float      # vocal-tract length (female ~1.15)
    rate: float               # syllables per second, neutral
    gain: float               # linear loudness
    skin: tuple               # BGR
    hair: tuple               # BGR
    background: tuple         # BGR
    head: tuple               # (half width, half height) in pixels
    eye_spacing: float
    expressiveness: float     # scales every emotion cue of this actor


def luminance(bgr) -> float:
    """Grey level of a BGR colour, as cv2.cvtColor(BGR2GRAY) weighs it."""
    return float(np.dot(bgr, (0.114, 0.587, 0.299)))


def make_actor(actor_id: int, seed: int) -> Actor:
    rng = np.random.default_rng([seed, actor_id, 1])
    sex = "Female" if rng.random() < 0.47 else "Male"
    female = sex == "Female"
    half_w = rng.uniform(26, 32)
    skin = np.array([0.55, 0.68, 0.85]) * rng.uniform(140, 255) + rng.normal(0, 8, 3)
    hair = rng.uniform(15, 90) * np.array([0.7, 0.8, 1.0])
    backdrop = rng.uniform(50, 130, 3)
    # The backdrop is kept at least BACKDROP_CONTRAST grey levels darker than the skin: a face the
    # colour of the wall has no outline, and the Haar cascade (like a person) then misses it.
    backdrop *= min(1.0, (luminance(skin) - BACKDROP_CONTRAST) / luminance(backdrop))
    return Actor(
        id=actor_id, sex=sex, age=int(rng.integers(20, 75)),
        f0=rng.uniform(175, 235) if female else rng.uniform(95, 140),
        formant_scale=rng.uniform(1.08, 1.2) if female else rng.uniform(0.92, 1.04),
        rate=rng.uniform(3.6, 4.8), gain=10 ** (rng.uniform(-4, 4) / 20),
        skin=tuple(float(v) for v in skin), hair=tuple(float(v) for v in hair),
        background=tuple(float(v) for v in backdrop),
        head=(half_w, half_w * rng.uniform(1.2, 1.4)), eye_spacing=rng.uniform(0.38, 0.46),
        expressiveness=rng.uniform(0.7, 1.1),
    )


# ------------------------------------------------------------------------------------------------
# Audio: additive harmonic voice with a syllable envelope and moving formants


VOWELS = np.array([[730, 1090, 2440], [270, 2290, 3010], [530, 1840, 2480], [570, 840, 2410],
                   [440, 1020, 2240], [660, 1720, 2410], [300, 870, 2240]], np.float64)  # F1-F3, Hz


def syllable_envelope(times: np.ndarray, onsets: np.ndarray, length: float) -> np.ndarray:
    """Sum of raised-cosine syllable pulses (onset, `length` seconds) at `times` -> (n,) in [0, 1]."""
    env = np.zeros_like(times)
    for onset in onsets:
        phase = (times - onset) / length
        inside = (phase >= 0) & (phase < 1)
        env[inside] = np.maximum(env[inside], np.sin(np.pi * phase[inside]) ** 1.5)
    return env


def synth_audio(actor: Actor, voice: Voice, intensity: float, n_syllables: int, rng) -> tuple:
    """-> (pcm int16 (n,), syllable onsets (s), syllable length (s), duration (s))."""
    k = intensity * actor.expressiveness
    rate = actor.rate * (1 + (voice.rate - 1) * k) * rng.uniform(0.9, 1.1)
    length = 0.8 / rate
    lead = rng.uniform(0.15, 0.3)
    onsets = lead + np.arange(n_syllables) / rate + rng.normal(0, 0.04 / rate, n_syllables)
    duration = float(np.clip(onsets[-1] + length + rng.uniform(0.15, 0.3), 1.5, 3.0))
    onsets = onsets[onsets + 0.5 * length < duration]
    n = int(duration * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    env = syllable_envelope(t, onsets, length)

    # pitch: declining phrase contour + an accent per syllable + jitter
    f0 = actor.f0 * (1 + (voice.pitch - 1) * k) * rng.uniform(0.95, 1.05)
    accents = syllable_envelope(t, onsets - 0.02, length * 1.1) * rng.choice([-1, 1, 1], 1)
    knots = np.arange(0.0, duration + 0.04, 0.02)                                # 50 Hz wobble
    wobble = np.interp(t, knots, rng.normal(0, 1, knots.size))
    contour = 1 + voice.range * k * (0.6 * accents + 0.4 * (1 - 2 * t / duration)) + voice.jitter * k * wobble
    f0_t = np.maximum(f0 * contour, 60.0)                                        # (n,) Hz
    phase = 2 * np.pi * np.cumsum(f0_t) / SAMPLE_RATE

    # formants: one vowel per syllable, interpolated between syllable centres
    vowel_ids = rng.integers(0, len(VOWELS), max(1, len(onsets)))
    centres = onsets + length / 2 if len(onsets) else np.array([duration / 2])
    control = np.arange(0, n + CONTROL_STEP, CONTROL_STEP)                       # 250 Hz control grid
    formants = np.stack([np.interp(control / SAMPLE_RATE, centres, VOWELS[vowel_ids, j]) for j in range(3)])
    formants *= actor.formant_scale                                                 # (3, n_control) Hz
    f0_control = f0_t[np.minimum(control, n - 1)]                                   # (n_control,)
    tilt = voice.tilt + (1.0 - k) * 0.3
    harmonics = np.arange(1, int(7000 / f0_t.min()) + 1)[:, None]                  # (H, 1)
    freq = harmonics * f0_control                                                   # (H, n_control)
    resonance = sum(np.exp(-0.5 * ((freq - formants[j]) / (80 + 40 * j)) ** 2) * (1.0, 0.6, 0.3)[j]
                    for j in range(3))
    amps = (0.15 + resonance) / harmonics ** tilt * (freq < 7500)                 # (H, n_control)
    # sum_h amp_h(t) sin(h phase(t)), with e^{i h phase} built by repeated multiplication
    rotor = np.exp(1j * phase)
    power = np.ones(n, np.complex128)
    voiced = np.zeros(n)
    for h in range(amps.shape[0]):
        power *= rotor
        voiced += np.interp(np.arange(n), control, amps[h]) * power.imag
    voiced /= np.abs(voiced).max() + 1e-9
    breath = rng.normal(0, 1, n) * voice.breath * 2.0
    speech = env * (voiced + breath)
    gain = actor.gain * 10 ** (voice.gain_db * k / 20) * 0.25
    room = rng.normal(0, 1, n) * 10 ** (rng.uniform(-52, -42) / 20)              # background noise
    signal = np.clip(gain * speech + room, -1, 1)
    return (signal * 32767).astype(np.int16), onsets, length, duration


# ------------------------------------------------------------------------------------------------
# Video: a drawn face whose mouth follows the speech envelope


def draw_face(actor: Actor, face: Face, k: float, mouth_open: float, offset: tuple, light: float,
              rng, size: tuple = VIDEO_SIZE, scale: float = 1.0, noise=None) -> np.ndarray:
    """One BGR frame (H, W, 3) uint8 of `size` (W, H); `scale` multiplies the actor's head size and
    line widths (corpus_crema draws 480x360 frames at scale 2.25; offsets are in frame pixels).
    noise: (H, W, 3) float32 unit sensor noise to use instead of drawing it from rng (at 480x360,
    drawing it is most of a frame's cost)."""
    cv2 = _cv2()
    width, height = size
    img = _background(actor.background, size).copy()
    cx, cy = width / 2 + offset[0], height / 2 + 6 * scale + offset[1]
    ax, ay = actor.head[0] * scale, actor.head[1] * scale
    thick = {n: max(1, int(round(n * scale))) for n in (1, 2, 3)}    # line widths at this scale
    skin = actor.skin

    def pt(x, y):
        return (int(round(x * 16)), int(round(y * 16)))      # 4 fractional bits: smooth sub-pixel motion

    aa, shift = cv2.LINE_AA, 4
    cv2.ellipse(img, pt(cx, cy - 0.2 * ay), pt(ax + 4, ay * 0.95), 0, 180, 360, actor.hair, -1, aa, shift)
    cv2.ellipse(img, pt(cx, cy), pt(ax, ay), 0, 0, 360, skin, -1, aa, shift)
    eye_y, eye_x = cy - 0.18 * ay, actor.eye_spacing * ax
    socket = tuple(0.72 * c for c in skin)
    for side in (-1, 1):
        opening = max(0.15, 1 + (face.eyes - 1) * k)
        centre = pt(cx + side * eye_x, eye_y)
        # the eye socket's shadow and the dark lash line make the eye band darker than the cheeks,
        # as in real faces under top light; the Haar cascade keys on exactly that band
        cv2.ellipse(img, pt(cx + side * eye_x, eye_y - 0.04 * ax), pt(0.3 * ax, 0.2 * ax), 0, 0, 360, socket, -1,
                    aa, shift)
        lid = pt(0.22 * ax, max(1.0, 0.11 * ax * opening))
        cv2.ellipse(img, centre, lid, 0, 0, 360, (200, 200, 205), -1, aa, shift)
        cv2.circle(img, centre, int(0.1 * ax * 16), (40, 30, 30), -1, aa, shift)
        cv2.ellipse(img, centre, lid, 0, 180, 360, (30, 25, 25), thick[1], aa, shift)
        brow_y = eye_y - 0.28 * ax - face.brow * k * 0.14 * ax
        inner = (cx + side * 0.14 * ax, brow_y + face.slant * k * 0.14 * ax)
        outer = (cx + side * 0.62 * ax, brow_y - face.slant * k * 0.06 * ax)
        cv2.line(img, pt(*inner), pt(*outer), actor.hair, thick[3], aa, shift)
    shade = tuple(0.7 * c for c in skin)
    cv2.line(img, pt(cx, eye_y + 4 * scale), pt(cx - 3 * scale, cy + 0.2 * ay), shade, thick[2], aa, shift)
    mouth_y, mouth_w = cy + 0.45 * ay, 0.45 * ax
    xs = np.linspace(-1, 1, 21)
    smile = face.smile * k
    top = mouth_y - smile * 0.18 * ax * (xs ** 2 - 0.5)
    bottom = top + mouth_open * 0.28 * ax * (1 - xs ** 2)
    lips = np.concatenate([np.stack([cx + xs * mouth_w, top], 1), np.stack([cx + xs * mouth_w, bottom], 1)[::-1]])
    cv2.fillPoly(img, [np.round(lips * 16).astype(np.int32)], (50, 40, 110), aa, shift)
    cv2.polylines(img, [np.round(np.stack([cx + xs * mouth_w, top], 1) * 16).astype(np.int32)], False,
                  (40, 30, 90), thick[2], aa, shift)
    img *= light                                                                 # lighting drift
    if noise is None:
        noise = rng.standard_normal(img.shape, dtype=np.float32)
    img += noise * 5.0                                                           # sensor noise
    return np.clip(img, 0, 255, out=img).astype(np.uint8)


@functools.lru_cache(maxsize=8)
def _background(colour: tuple, size: tuple = VIDEO_SIZE) -> np.ndarray:
    """(H, W, 3) float32 vertical gradient of the actor's backdrop colour; size (W, H)."""
    width, height = size
    gradient = np.linspace(0.8, 1.15, height, dtype=np.float32)[:, None, None]
    return np.broadcast_to(gradient * np.array(colour, np.float32), (height, width, 3)).copy()


def render_video(actor: Actor, face: Face, intensity: float, onsets, length: float, duration: float, rng):
    """-> frames (N, H, W, 3) uint8 BGR at CORPUS_FPS covering `duration` seconds."""
    n_frames = max(1, int(round(duration * CORPUS_FPS)))
    times = np.arange(n_frames) / CORPUS_FPS
    mouth = syllable_envelope(times, np.asarray(onsets), length)
    k = intensity * actor.expressiveness
    sway = rng.uniform(0, 2 * np.pi, 3)
    amp = rng.uniform(2, 8, 2)
    speed = rng.uniform(0.3, 1.0, 3)
    frames = []
    for i, t in enumerate(times):
        offset = (amp[0] * np.sin(2 * np.pi * speed[0] * t + sway[0]), amp[1] * np.sin(2 * np.pi * speed[1] * t + sway[1]))
        light = 1 + 0.12 * np.sin(2 * np.pi * speed[2] * t + sway[2])
        frames.append(draw_face(actor, face, k, mouth[i], offset, light, rng))
    return np.stack(frames)


# ------------------------------------------------------------------------------------------------
# Files


def wav_bytes(pcm: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(sample_rate)
        handle.writeframes(np.asarray(pcm, "<i2").tobytes())
    return buffer.getvalue()


def write_flv(path: Path, frames: np.ndarray, fps: float = CORPUS_FPS) -> None:
    """Frames (N, H, W, 3) uint8 BGR -> FLV1 video, written atomically (edge_ladder.atomic)."""
    cv2 = _cv2()
    with atomic_path(path) as tmp:
        writer = cv2.VideoWriter(str(tmp), FLV1, fps, (frames.shape[2], frames.shape[1]))
        if not writer.isOpened():
            raise EdgeLadderError(f"OpenCV cannot write FLV1 video to {tmp}: this OpenCV build lacks FFmpeg's flv "
                                  f"encoder. Install opencv-python-headless<4.13 from PyPI (it bundles FFmpeg).")
        try:
            for frame in frames:
                writer.write(frame)
        finally:
            writer.release()


def _cv2():
    from ._deps import require
    return require("cv2")


def plan_clips(actors, clips_per_actor: int, seed: int) -> list:
    """(actor id, sentence, emotion, level) per clip: emotions balanced per actor, sentences and
    IEO levels drawn at random, no name repeated."""
    plan = []
    for actor_id in actors:
        rng = np.random.default_rng([seed, actor_id, 2])
        used = set()
        emotions = [EMOTIONS[(i + actor_id) % len(EMOTIONS)] for i in range(clips_per_actor)]
        for emotion in emotions:
            for _ in range(100):
                sentence = SENTENCES[rng.integers(len(SENTENCES))]
                level = "XX"
                if sentence == LEVEL_SENTENCE and emotion != "NEU":
                    level = ("LO", "MD", "HI")[rng.integers(3)]
                if (sentence, emotion, level) not in used:
                    break
            else:
                raise EdgeLadderError(f"cannot draw {clips_per_actor} distinct clips per actor; CREMA-D has at most "
                                      f"82 per actor. Use --clips-per-actor <= 72.")
            used.add((sentence, emotion, level))
            plan.append((actor_id, sentence, emotion, level))
    return plan


def write_clip_files(task, render, fps: float = CORPUS_FPS) -> str:
    """One clip's WAV and FLV in the CREMA-D layout, skipped when both already exist (resume).
    task = (out_dir, seed, actor_id, sentence, emotion, level); render(*task[1:]) -> (pcm int16,
    frames (T, H, W, 3) uint8). -> clip id."""
    out_dir, seed, actor_id, sentence, emotion, level = task
    name = clip_name(actor_id, sentence, emotion, level)
    wav_path = Path(out_dir) / "AudioWAV" / f"{name}.wav"
    flv_path = Path(out_dir) / "VideoFlash" / f"{name}.flv"
    if wav_path.exists() and flv_path.exists():
        return name
    pcm, frames = render(seed, actor_id, sentence, emotion, level)
    atomic_write_bytes(wav_path, wav_bytes(pcm))
    write_flv(flv_path, frames, fps)
    return name


def make_clip(task) -> str:
    """Worker: one clip of the easy corpus (write_clip_files). -> clip id."""
    return write_clip_files(task, render_clip)


def render_clip(seed: int, actor_id: int, sentence: str, emotion: str, level: str) -> tuple:
    """The easy corpus's clip -> (pcm, frames)."""
    actor = make_actor(actor_id, seed)
    rng = np.random.default_rng([seed, actor_id, SENTENCES.index(sentence), EMOTIONS.index(emotion),
                                 ("LO", "MD", "HI", "XX").index(level), 3])
    intensity = LEVEL_INTENSITY[level] * rng.uniform(0.8, 1.2)
    pcm, onsets, length, duration = synth_audio(actor, VOICES[emotion], intensity, SYLLABLES[sentence], rng)
    frames = render_video(actor, FACES[emotion], intensity, onsets, length, duration, rng)
    return pcm, frames


def simulated_votes(name: str, emotion: str, seed: int) -> list:
    """Perceived labels like CREMA-D's raters: each modality right most of the time, wrong within
    the pair it cannot tell apart, sometimes a tie ('A:D'). -> row of summaryTable.csv."""
    letter = {e: e[0] for e in EMOTIONS}
    confusable_voice = {"ANG": "HAP", "HAP": "ANG", "SAD": "DIS", "DIS": "SAD", "FEA": "ANG", "NEU": "SAD"}
    confusable_face = {"ANG": "DIS", "DIS": "ANG", "SAD": "FEA", "FEA": "SAD", "HAP": "NEU", "NEU": "HAP"}
    rng = np.random.default_rng([seed, sum(map(ord, name)), len(name), 4])
    row = [name]
    for right, other in ((0.55, confusable_voice), (0.7, confusable_face), (0.8, confusable_face)):
        draw = rng.random()
        if draw < right:
            vote = letter[emotion]
        elif draw < right + 0.08:
            vote = ":".join(sorted((letter[emotion], letter[other[emotion]])))
        else:
            vote = letter[other[emotion]]
        row += [vote, int(rng.integers(40, 100))]
    return row


def csv_bytes(rows) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue().encode()


def write_metadata(out_dir: Path, actor_ids, seed: int) -> None:
    """CREMA-D's VideoDemographics.csv and SentenceFilenames.csv for these actors."""
    people = [make_actor(a, seed) for a in actor_ids]
    atomic_write_bytes(out_dir / "VideoDemographics.csv", csv_bytes(
        [("ActorID", "Age", "Sex", "Race", "Ethnicity")]
        + [(p.id, p.age, p.sex, "Unknown", "Not Hispanic") for p in people]))
    atomic_write_bytes(out_dir / "SentenceFilenames.csv", csv_bytes(
        [("Stimulus_Number", "Filename")] + [(i + 1, s) for i, s in enumerate(SENTENCES)]))


def make_corpus(out_dir, actors: int = 16, clips_per_actor: int = 24, seed: int = 0, workers: int | None = None,
                progress: bool = False) -> Path:
    """Generate a CREMA-D-layout corpus in out_dir (see module docstring) -> out_dir.
    Deterministic for a seed (independent of `workers`); clips already on disk are kept."""
    out_dir = Path(out_dir)
    if actors < 1 or clips_per_actor < 1:
        raise EdgeLadderError(f"need at least 1 actor and 1 clip per actor; got actors={actors}, "
                              f"clips_per_actor={clips_per_actor}.")
    actor_ids = list(range(FIRST_ACTOR, FIRST_ACTOR + actors))
    plan = plan_clips(actor_ids, clips_per_actor, seed)
    (out_dir / "AudioWAV").mkdir(parents=True, exist_ok=True)
    (out_dir / "VideoFlash").mkdir(parents=True, exist_ok=True)
    tasks = [(str(out_dir), seed, *clip) for clip in plan]
    names = run_parallel(make_clip, tasks, workers, progress, "make-corpus")

    write_metadata(out_dir, actor_ids, seed)
    rows = [simulated_votes(name, clip[2], seed) for name, clip in zip(names, plan)]
    atomic_write_bytes(out_dir / "processedResults" / "summaryTable.csv", csv_bytes(
        [("", "FileName", "VoiceVote", "VoiceLevel", "FaceVote", "FaceLevel", "MultiModalVote", "MultiModalLevel")]
        + [(i + 1, *row) for i, row in enumerate(rows)]))
    return out_dir


# ------------------------------------------------------------------------------------------------
# CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", metavar="OUT_DIR", help="where to write the corpus (CREMA-D layout)")
    parser.add_argument("--actors", type=POSITIVE_INT, default=16, help="number of actors, IDs from 1001 (default 16)")
    parser.add_argument("--clips-per-actor", type=POSITIVE_INT, default=24,
                        help="clips per actor, emotions balanced (default 24; CREMA-D has 82)")
    parser.add_argument("--seed", type=NON_NEGATIVE_INT, default=0, help="random seed (default 0)")
    parser.add_argument("--workers", type=POSITIVE_INT, default=None, help="processes (default: all cores)")
    parser.add_argument("--difficulty", choices=DIFFICULTIES, default="easy",
                        help="easy: this module's fast corpus (default); crema: built from what is known of "
                             "CREMA-D, 480x360@30 fps, both modalities carry arousal and valence "
                             "(edge_ladder.corpus_crema)")


DIFFICULTIES = ("easy", "crema")


def generator(difficulty: str):
    """The make_corpus function of a --difficulty."""
    if difficulty not in DIFFICULTIES:
        raise EdgeLadderError(f"--difficulty must be one of {', '.join(DIFFICULTIES)}; got {difficulty!r}.")
    if difficulty == "crema":
        from . import corpus_crema
        return corpus_crema.make_corpus
    return make_corpus


def run(args: argparse.Namespace) -> int:
    import time
    from .features import MIN_SPLIT_ACTORS
    if 1 <= args.actors < MIN_SPLIT_ACTORS:
        print(f"note: {args.actors} actor{'s' if args.actors > 1 else ''}: a corpus for `edge-ladder infer MODEL "
              f"--input {args.out_dir}`, not for training: `edge-ladder prepare` splits train/dev/test by actor and "
              f"needs at least {MIN_SPLIT_ACTORS} (--actors {MIN_SPLIT_ACTORS} or more).")
    start = time.perf_counter()
    difficulty = getattr(args, "difficulty", "easy")
    out = generator(difficulty)(args.out_dir, actors=args.actors, clips_per_actor=args.clips_per_actor,
                                seed=args.seed, workers=args.workers, progress=True)
    print(f"wrote {args.actors * args.clips_per_actor} clips ({args.actors} actors, --difficulty {difficulty}) in "
          f"CREMA-D layout to {out} "
          f"in {time.perf_counter() - start:.1f} s")
    return 0
