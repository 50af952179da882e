"""Messages that point the right way: a directory that holds the expected file is accepted or named
(`did you mean RUN_DIR/checkpoint.pt?`), and every command a hint names exists with its flags."""
from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from edge_ladder.cli import SUBCOMMANDS, build_parser, main


def assert_commands_exist(text: str) -> None:
    """Every `edge-ladder SUB ...` in `text` names a subcommand that exists and only its flags."""
    commands = re.findall(r"`edge-ladder ([a-z-]+)([^`]*)`", text)
    for sub, rest in commands:
        assert sub in SUBCOMMANDS, f"{sub!r} in {text!r}"
        options = {o for action in build_parser(sub)._subparsers._group_actions[0].choices[sub]._actions
                   for o in action.option_strings}
        for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", rest):
            assert flag in options, f"`edge-ladder {sub}` has no {flag} (hint: {text!r})"
    flags = re.findall(r"(?<![\w`-])(--[a-z][a-z0-9-]*)", re.sub(r"`[^`]*`", "", text))
    assert not [f for f in flags if f in ("--n-mels",)], text


def err_of(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "IsADirectoryError" not in err
    assert_commands_exist(err)
    return err


def test_the_64_mel_band_hint_names_a_command_that_exists(tiny_export):
    from edge_ladder import runtime
    from edge_ladder.runtime.base import FIX_HINTS
    model = runtime.load(tiny_export / "model.onnx")
    rng = np.random.default_rng(0)
    with pytest.raises(runtime.RuntimeInputError) as caught:
        model.predict_clip(rng.standard_normal((97, 64)).astype(np.float32),
                           rng.standard_normal((9, 48, 48)).astype(np.float32), np.ones(9, bool))
    text = str(caught.value)
    assert "axis 2 (n_mels) is 64, expected 80" in text and "`edge-ladder prepare`" in text
    assert "--n-mels" not in text                        # was: "Re-run prepare with --n-mels 80?"
    for hint in FIX_HINTS.values():
        assert_commands_exist(hint)


def test_export_of_an_onnx_file_names_the_checkpoint_it_came_from(tiny_export, tiny_run, tmp_path, capsys):
    err = err_of(["export", str(tiny_export / "model.onnx"), "--out", str(tmp_path / "x")], capsys)
    assert "is already an exported model (.onnx); `edge-ladder export` takes RUN_DIR/checkpoint.pt" in err
    assert f"Did you mean {(tiny_run / 'checkpoint.pt').resolve()}?" in err
    assert "evaluate takes" not in err                   # was: "evaluate takes RUN_DIR/checkpoint.pt"
    assert f"`edge-ladder build-engine {tiny_export / 'model.onnx'} --out MODEL.engine`" in err


def test_export_and_evaluate_accept_a_run_directory(tiny_run, tiny_features, tmp_path, capsys):
    assert main(["export", str(tiny_run), "--out", str(tmp_path / "export"), "--no-int8"]) == 0   # was: "does not exist"
    assert (tmp_path / "export" / "model.onnx").is_file()
    capsys.readouterr()
    assert main(["evaluate", str(tiny_run), str(tiny_features)]) == 0                          # was: IsADirectoryError
    assert "macro" in capsys.readouterr().out


def test_evaluate_of_an_export_directory_says_did_you_mean(tiny_export, tiny_run, tiny_features, capsys):
    err = err_of(["evaluate", str(tiny_export), str(tiny_features)], capsys)
    assert f"{tiny_export} is an export directory (it holds export.json, model.onnx" in err
    assert f"Did you mean {(tiny_run / 'checkpoint.pt').resolve()}?" in err


def test_an_export_directory_without_export_json_points_at_the_sibling_run(tiny_run, tmp_path, capsys):
    demo = tmp_path / "demo_out"
    (demo / "export").mkdir(parents=True)
    (demo / "run").mkdir()
    shutil.copy(tiny_run / "checkpoint.pt", demo / "run" / "checkpoint.pt")
    (demo / "export" / "model.onnx").write_bytes(b"onnx")
    err = err_of(["evaluate", str(demo / "export"), str(demo)], capsys)
    assert f"Did you mean {(demo / 'run' / 'checkpoint.pt').resolve()}?" in err
    err = err_of(["evaluate", str(tmp_path / "nothing_here"), str(demo)], capsys)
    assert "does not exist" in err


def test_infer_of_an_export_directory_names_the_model_or_takes_the_only_one(tiny_export, tiny_run, tiny_features,
                                                                            tmp_path, capsys):
    from edge_ladder.corpus import make_corpus
    from edge_ladder.export import int8
    corpus = make_corpus(tmp_path / "corpus", actors=1, clips_per_actor=1, seed=2, workers=1)
    wav = str(next((corpus / "AudioWAV").glob("*.wav")))
    export = tmp_path / "export"                 # all three files (export writes int8 only if it passes)
    shutil.copytree(tiny_export, export)
    int8.quantize_file(export / "model.onnx", export / "model.int8.onnx", int8.calibration_batches(tiny_features))
    err = err_of(["infer", str(export), "--audio", wav], capsys)
    assert "(model.fp16.onnx, model.int8.onnx, model.onnx); MODEL is one file" in err   # was: "suffix '(none)'"
    assert f"Did you mean {export / 'model.onnx'}?" in err
    only = tmp_path / "robot_models"
    only.mkdir()
    shutil.copy(tiny_export / "model.onnx", only / "model.onnx")
    assert main(["infer", str(only), "--audio", wav, "--json"]) == 0
    capsys.readouterr()
    err = err_of(["infer", str(tiny_run), "--audio", wav], capsys)
    assert f"`edge-ladder export {tiny_run / 'checkpoint.pt'} --out EXPORT_DIR`" in err


def test_train_on_a_corpus_says_to_prepare_it_elsewhere(tmp_path, capsys):
    from edge_ladder.corpus import make_corpus
    corpus = make_corpus(tmp_path / "corpus", actors=3, clips_per_actor=1, seed=0, workers=1)
    err = err_of(["train", str(corpus), "--out", str(tmp_path / "run")], capsys)
    assert f"{corpus} is a corpus (AudioWAV/, VideoFlash/), not a features directory" in err
    assert f"`edge-ladder prepare {corpus} --out {corpus}-features`" in err
    assert f"--out {corpus}`" not in err                 # was: `edge-ladder prepare CREMA_D_DIR --out CORPUS_DIR`
