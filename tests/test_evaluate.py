"""edge_ladder.evaluate: held-out checks against the checkpoint's recorded data, and what --json
records (issue 14 items 2 and 5)."""
import json

import pytest

pytest.importorskip("torch")

from edge_ladder.cli import main as cli_main  # noqa: E402
from edge_ladder.errors import EdgeLadderError  # noqa: E402
from edge_ladder.evaluate import evaluate  # noqa: E402
from edge_ladder.features import read_splits  # noqa: E402


@pytest.fixture(scope="module")
def other_features(tiny_features, tmp_path_factory):
    """Features of the same actor IDs folded differently: their test split holds actors the tiny run trained on."""
    from edge_ladder.synthetic import make_features
    out = make_features(tmp_path_factory.mktemp("other"), actors=12, clips_per_actor=3, seed=0, fold=2)
    trained_on = set(read_splits(tiny_features)["train"])
    assert set(read_splits(out)["test"]) & trained_on
    return out


def test_evaluate_refuses_a_test_split_holding_training_actors(tiny_run, tiny_features, other_features, tmp_path,
                                                               capsys):
    """`evaluate RUN/checkpoint.pt OTHER_FEATURES` used to score such a split as if it were held out."""
    checkpoint = tiny_run / "checkpoint.pt"
    trained_on = sorted(set(read_splits(other_features)["test"]) & set(read_splits(tiny_features)["train"]))
    assert cli_main(["evaluate", str(checkpoint), str(other_features)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"trained on: {', '.join(trained_on)}" in error
    assert "--allow-overlap" in error and "--split test" in error and str(tiny_features.resolve()) in error
    with pytest.raises(EdgeLadderError, match="would not be held out"):
        evaluate(checkpoint, other_features, "test")
    # --allow-overlap scores it, and the report says so, on screen and in the JSON
    out = tmp_path / "overlap.json"
    assert cli_main(["evaluate", str(checkpoint), str(other_features), "--allow-overlap", "--json", str(out)]) == 0
    assert f"NOT A HELD-OUT SCORE (scored with --allow-overlap): the checkpoint trained on actors " \
           f"{', '.join(trained_on)}" in capsys.readouterr().out
    held_out = json.loads(out.read_text())["held_out"]
    assert held_out["held_out"] is False and held_out["allow_overlap"] is True
    assert held_out["overlap"]["train"] == trained_on and held_out["same_features"] is False
    # its own test split is held out; its own dev split, asked for by name, is scored and marked
    assert cli_main(["evaluate", str(checkpoint), str(tiny_features), "--split", "dev"]) == 0
    assert "NOT A HELD-OUT SCORE (its own split): the checkpoint picked its best epoch on actors" in \
        capsys.readouterr().out
    with pytest.raises(EdgeLadderError, match="would not be held out"):
        evaluate(checkpoint, tiny_features, "all")


def test_evaluate_json_records_what_was_evaluated(tiny_run, tiny_features, tmp_path):
    from edge_ladder.runtime.sidecar import sha256_file
    from edge_ladder.train import features_identity
    out = tmp_path / "report.json"
    assert cli_main(["evaluate", str(tiny_run / "checkpoint.pt"), str(tiny_features), "--split", "test",
                     "--presence", "audio", "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["checkpoint"]["path"] == str((tiny_run / "checkpoint.pt").resolve())
    assert record["checkpoint"]["sha256"] == sha256_file(tiny_run / "checkpoint.pt")
    assert record["features"] == features_identity(tiny_features)
    assert record["split"] == "test" and record["actors"] == sorted(read_splits(tiny_features)["test"])
    assert record["presence"] == "audio" and record["presence_flags"] == {"audio": 1.0, "face": 0.0}
    assert record["held_out"]["held_out"] is True and record["held_out"]["same_features"] is True
    assert record["macro_f1"] == evaluate(tiny_run / "checkpoint.pt", tiny_features, "test", presence="audio")["macro_f1"]


def test_a_checkpoint_without_a_data_record_is_scored_with_a_note(tiny_run, tiny_features, tmp_path, capsys):
    import torch
    state = torch.load(tiny_run / "checkpoint.pt", weights_only=True)
    del state["data"]                                       # as an older edge-ladder wrote it
    torch.save(state, tmp_path / "old.pt")
    assert cli_main(["evaluate", str(tmp_path / "old.pt"), str(tiny_features)]) == 0
    assert "note: the checkpoint does not record its train/dev actors" in capsys.readouterr().out
