"""make-corpus --difficulty crema (edge_ladder.corpus_crema), demo --difficulty and train --fold."""
import argparse
import json

import numpy as np
import pytest

from edge_ladder import EMOTIONS, corpus, corpus_crema, demo
from edge_ladder.crema import clip_name
from edge_ladder.errors import EdgeLadderError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One actor, two clips, generated once (a few seconds)."""
    out = tmp_path_factory.mktemp("crema")
    corpus_crema.make_corpus(out, actors=1, clips_per_actor=2, seed=3, workers=1)
    return out


def many_cues(n_actors=30, clips=40, seed=0):
    """(plan, [clip_cues]) of a corpus, without rendering anything."""
    plan = corpus_crema.plan_clips(range(1001, 1001 + n_actors), clips, seed)
    return plan, [corpus_crema.clip_cues(seed, *clip) for clip in plan]


def test_480x360_at_30_fps_and_16_khz(tiny):
    import wave
    cv2 = pytest.importorskip("cv2")
    flvs = sorted((tiny / "VideoFlash").glob("*.flv"))
    assert len(flvs) == 2
    capture = cv2.VideoCapture(str(flvs[0]))
    assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (480, 360)
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(30.0)
    ok, frame = capture.read()
    assert ok and frame.shape == (360, 480, 3)
    with wave.open(str(tiny / "AudioWAV" / (flvs[0].stem + ".wav"))) as handle:
        assert handle.getframerate() == 16000 and handle.getnchannels() == 1
    record = json.loads((tiny / "corpus.json").read_text())
    assert record["settings"]["version"] == corpus_crema.CORPUS_VERSION and record["done"]


def test_the_haar_detector_finds_the_faces(tiny):
    from edge_ladder import media
    from edge_ladder.faces import FaceDetector
    flv = sorted((tiny / "VideoFlash").glob("*.flv"))[0]
    frames, _ = media.read_video(flv, 10.0)
    boxes = FaceDetector().track(frames)
    assert np.mean([box is not None for box in boxes]) >= 0.9


def test_deterministic_by_seed(tiny, tmp_path):
    clip = corpus_crema.plan_clips([1001], 1, 3)[0]
    assert corpus_crema.clip_cues(3, *clip) == corpus_crema.clip_cues(3, *clip)
    assert corpus_crema.clip_cues(3, *clip)["cues"] != corpus_crema.clip_cues(4, *clip)["cues"]
    corpus_crema.make_clip((str(tmp_path), 3, *clip))
    wav = sorted((tmp_path / "AudioWAV").glob("*.wav"))[0].name
    assert (tmp_path / "AudioWAV" / wav).read_bytes() == (tiny / "AudioWAV" / wav).read_bytes()
    # the tables come from the rendered cues, also deterministic
    again = tmp_path / "again"
    corpus_crema.make_corpus(again, actors=1, clips_per_actor=2, seed=3, workers=1)     # resumes nothing: new dir
    for table in ("summaryTable.csv", "tabulatedVotes.csv"):
        assert (again / "processedResults" / table).read_text() == (tiny / "processedResults" / table).read_text()


def test_lo_is_much_weaker_than_hi_in_the_rendered_cues():
    plan, rendered = many_cues()
    spread = corpus_crema.cue_spread()

    def deviation(level):
        rows = [r for clip, r in zip(plan, rendered) if clip[3] == level]
        emotions = [clip[2] for clip in plan if clip[3] == level]
        # distance of the cues from the neutral prototype, along the emotion's own direction
        out = []
        for r, emotion in zip(rows, emotions):
            proto = corpus_crema.prototype(emotion)
            direction = np.array([(proto[n] - corpus_crema.CUES[n].neutral) / spread[n] for n in corpus_crema.CUES])
            seen = np.array([(r["cues"][n] - corpus_crema.CUES[n].neutral) / spread[n] for n in corpus_crema.CUES])
            out.append(seen @ direction / (direction @ direction))
        return np.mean(out)
    lo, hi = deviation("LO"), deviation("HI")
    assert lo < 0.6 * hi, (lo, hi)
    # and in the audio itself: ANG at HI is louder than at LO for the same actors, on average (single
    # pairs may not be: weak portrayals and per-clip noise, as in CREMA-D)
    louder_db = []
    for actor in range(1001, 1011):
        rms = {}
        for level in ("LO", "HI"):
            cues = corpus_crema.clip_cues(0, actor, "IEO", "ANG", level)["cues"]
            pcm = corpus_crema.render_audio(0, actor, "IEO", "ANG", level, cues)[0]
            rms[level] = np.sqrt(np.mean(pcm.astype(np.float64) ** 2))
        louder_db.append(20 * np.log10(rms["HI"] / rms["LO"]))
    assert np.mean(louder_db) > 1.0, louder_db


def test_about_a_quarter_weak_portrayals_keep_their_label(tiny):
    plan, rendered = many_cues()
    weak = np.mean([r["weak"] for r in rendered])
    assert 0.18 < weak < 0.32
    clips = json.loads((tiny / "corpus.json").read_text())["clips"]
    for name, clip in clips.items():          # the file name keeps the intended emotion
        assert name.split("_")[2] == clip["emotion"]


def test_votes_depend_on_the_rendered_signal_not_the_label():
    name = "1001_DFA_ANG_XX"
    happy = corpus_crema.prototype("HAP", 1.0)
    sad = corpus_crema.prototype("SAD", 1.0)
    for modality in ("voice", "face", "multimodal"):
        assert corpus_crema.rater_votes(name, happy, 0)[modality][0].argmax() == EMOTIONS.index("HAP")
        assert corpus_crema.rater_votes(name, sad, 0)[modality][0].argmax() == EMOTIONS.index("SAD")
    # weak portrayals are recognised less often than strong ones
    plan, rendered = many_cues(20, 30)
    right = {True: [], False: []}
    for clip, r in zip(plan, rendered):
        counts = corpus_crema.rater_votes(clip_name(*clip), r["cues"], 0)["multimodal"][0]
        right[r["weak"]].append(counts[EMOTIONS.index(clip[2])] / counts.sum())
    assert np.mean(right[True]) < np.mean(right[False]) - 0.1


def test_summary_table_is_readable_by_the_loader(tiny):
    from edge_ladder import crema
    table = crema.read_summary_table(crema.summary_table_path(tiny))
    assert len(table) == 2
    for votes in table.values():
        assert set(votes) == {"voice", "face", "multimodal"}
        assert all(set(v) <= set(EMOTIONS) for v in votes.values())


def test_both_modalities_carry_arousal_and_valence():
    plan, rendered = many_cues()
    pad = np.array([corpus_crema.PAD[clip[2]] for clip in plan])          # (N, 3) valence, arousal, dominance

    def r2(names, target):
        x = np.array([[r["cues"][n] for n in names] for r in rendered])
        x = np.column_stack([x, np.ones(len(x))])
        fit = np.linalg.lstsq(x, target, rcond=None)[0]
        return 1 - np.var(target - x @ fit) / np.var(target)
    voice, face = corpus_crema.VOICE_CUES, corpus_crema.FACE_CUES
    assert r2(voice, pad[:, 1]) > r2(voice, pad[:, 0]) > 0.15     # voice: arousal first, valence too
    assert r2(face, pad[:, 0]) > r2(face, pad[:, 1]) > 0.15       # face: valence first, arousal too
    # confusable pairs are close, not identical, in every modality
    for a, b in (("ANG", "DIS"), ("FEA", "SAD"), ("ANG", "HAP")):
        pa, pb = corpus_crema.prototype(a), corpus_crema.prototype(b)
        for names in (voice, face):
            assert any(abs(pa[n] - pb[n]) > 1e-3 for n in names)


def test_scales_to_crema_d_and_validates_the_flags(tmp_path):
    plan = corpus_crema.plan_clips(range(1001, 1092), 82, 0)
    assert len(plan) == 91 * 82 == len(set(plan))
    with pytest.raises(EdgeLadderError, match="--clips-per-actor must be in 1..82"):
        corpus_crema.plan_clips([1001], 83, 0)
    with pytest.raises(EdgeLadderError, match="--actors must be in 1..91"):
        corpus_crema.make_corpus(tmp_path / "x", actors=92, clips_per_actor=1)
    counts = {e: sum(c[2] == e for c in corpus_crema.plan_clips([1001], 36, 0)) for e in EMOTIONS}
    assert set(counts.values()) == {6}
    parser = argparse.ArgumentParser()
    corpus.add_arguments(parser)
    assert parser.parse_args(["d"]).difficulty == "easy"
    assert parser.parse_args(["d", "--difficulty", "crema"]).difficulty == "crema"
    with pytest.raises(SystemExit):
        parser.parse_args(["d", "--difficulty", "hard"])
    assert corpus.generator("crema") is corpus_crema.make_corpus
    assert corpus.generator("easy") is corpus.make_corpus


def test_a_directory_of_other_settings_is_refused(tiny):
    with pytest.raises(EdgeLadderError, match="Use another OUT_DIR"):
        corpus_crema.make_corpus(tiny, actors=1, clips_per_actor=2, seed=4, workers=1)


class Sentinel(Exception):
    pass


@pytest.mark.parametrize("difficulty,module", [("crema", corpus_crema), ("easy", corpus)])
def test_demo_difficulty_picks_the_generator(difficulty, module, tmp_path, monkeypatch):
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    assert parser.parse_args([]).difficulty == "easy"
    assert parser.parse_args(["--difficulty", difficulty]).difficulty == difficulty

    def fake(out_dir, **kwargs):
        raise Sentinel(kwargs)
    monkeypatch.setattr(module, "make_corpus", fake)
    with pytest.raises(Sentinel):
        demo.run_demo(tmp_path / "demo", actors=5, clips_per_actor=2, difficulty=difficulty)
    settings = json.loads((tmp_path / "demo" / "stages.json").read_text())["corpus"]["key"]["settings"]
    assert settings.get("difficulty") == (difficulty if difficulty == "crema" else None)


def test_train_fold_recomputes_the_splits(tmp_path):
    from edge_ladder import train
    from edge_ladder.features import actor_folds
    from edge_ladder.synthetic import make_features
    features = make_features(tmp_path / "f", actors=6, clips_per_actor=2, k=3, fold=0, seed=5)
    prepared = json.loads((features / "splits.json").read_text())
    splits = lambda fold: train.load_splits(train.TrainConfig(features_dir=str(features), fold=fold), features)[3]  # noqa: E731
    assert splits(-1) == prepared
    actors = sorted({str(1001 + a) for a in range(6)})
    assert splits(2) == actor_folds(actors, k=3, fold=2, seed=5)
    with pytest.raises(EdgeLadderError, match="--fold 0 to 2"):
        splits(3)
    with pytest.raises(EdgeLadderError, match="--fold"):
        train.TrainConfig(features_dir=str(features), fold=-2)
    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    args = parser.parse_args([str(features), "--out", "r", "--fold", "1"])
    assert train.config_from_args(args).fold == 1
    assert train.config_from_args(parser.parse_args([str(features), "--out", "r"])).fold == -1


def _ceiling_module():
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "corpus_ceiling.py"
    spec = importlib.util.spec_from_file_location("corpus_ceiling", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_speaker_blind_cues_are_what_the_waveform_carries():
    """benchmarks/corpus_ceiling.py: the media carry pitch x the actor's f0 (and rate, gain, formants
    likewise), not the actor-relative value corpus.json records; the other cues pass through."""
    ceiling = _ceiling_module()
    actor = corpus.make_actor(1004, 0)
    cues = corpus_crema.clip_cues(0, 1004, "IEO", "ANG", "HI")["cues"]
    absolute = ceiling.absolute_cues(cues, actor)
    assert absolute["pitch"] == pytest.approx(np.log(cues["pitch"] * actor.f0))
    assert absolute["rate"] == pytest.approx(np.log(cues["rate"] * actor.rate))
    assert absolute["gain_db"] == pytest.approx(cues["gain_db"] + 20 * np.log10(actor.gain))
    assert absolute["formant"] == pytest.approx(np.log(cues["formant"] * actor.formant_scale))
    assert absolute["jitter"] == cues["jitter"] and absolute["smile"] == cues["smile"]


def test_corpus_ceiling_renders_the_planned_audio_and_reports_every_voice_cue(tmp_path):
    """The audio-only re-render is make-corpus' own audio (same plan, seed, renderer, front-end), and
    the report has an R^2 per voice cue and the three observers."""
    from edge_ladder.frontend import log_mel
    ceiling = _ceiling_module()
    (tmp_path / "corpus.json").write_text(json.dumps({"settings": {"version": corpus_crema.CORPUS_VERSION,
                                                                   "actors": 6, "clips_per_actor": 12, "seed": 0}}))
    name, cues, stats = ceiling._render_statistics((0, 1002, "IEO", "SAD", "LO"))
    pcm = corpus_crema.render_clip(0, 1002, "IEO", "SAD", "LO", cues["cues"])[0]
    np.testing.assert_array_equal(stats, ceiling.audio_statistics(log_mel(pcm)))
    out = tmp_path / "ceiling.json"
    assert ceiling.main(["--corpus", str(tmp_path), "--render-actors", "6", "--clips-per-actor", "12",
                         "--workers", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    audio = report["modalities"]["audio"]
    voice = [n for n, cue in corpus_crema.CUES.items() if cue.modality == "voice"]
    assert report["clips"] == 72 and report["actors"] == 6 and sorted(audio["readout_r2"]) == sorted(voice)
    for key in ("cue_observer", "speaker_blind_observer"):
        assert 0.0 <= audio[key]["mean"] <= 1.0 and len(audio[key]["folds"]) == 5
    assert set(audio["visible_cues"]) == {n for n, r2 in audio["readout_r2"].items() if r2 >= 0.5}
    assert "face" not in report["modalities"]
