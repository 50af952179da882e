"""Every numeric and choice flag of every subcommand is checked when the command line is parsed:
one line naming the flag, what was expected and what arrived, exit 2, before any work (issue 14
item 11: `train --lr -1` and `--device tpu` were tracebacks; `--noise-std -1`, 7 --lambdas on a
3-layer ladder and `infer --threads 0` were accepted)."""
import pytest

from edge_ladder.argtypes import POSITIVE, Range
from edge_ladder.cli import main as cli_main
from edge_ladder.errors import EdgeLadderError

T = ["train", "FEATURES", "--out", "RUN"]
CASES = [  # argv, what the one line must say
    (T + ["--lr", "-1"], "argument --lr: expected a number > 0; got '-1'"),
    (T + ["--lr", "nan"], "argument --lr: expected a number > 0; got 'nan'"),
    (T + ["--device", "tpu"], "argument --device: expected auto, cpu, cuda or cuda:N; got 'tpu'"),
    (T + ["--noise-std", "-1"], "argument --noise-std: expected a number >= 0; got '-1'"),
    (T + ["--epochs", "0"], "argument --epochs: expected an integer >= 1; got '0'"),
    (T + ["--epochs", "2.5"], "argument --epochs: expected an integer >= 1; got '2.5'"),
    (T + ["--batch-size", "1"], "argument --batch-size: expected an integer >= 2 (batch normalisation"),
    (T + ["--modality-dropout", "0.5"], "argument --modality-dropout: expected a number in [0, 0.5); got '0.5'"),
    (T + ["--lambdas", "1", "-0.1"], "argument --lambdas: expected a number >= 0; got '-0.1'"),
    (T + ["--seed", "-3"], "argument --seed: expected an integer >= 0; got '-3'"),
    (T + ["--ladder", "sideways"], "argument --ladder: invalid choice: 'sideways'"),
    (T + ["--model-size", "huge"], "argument --model-size: invalid choice: 'huge'"),
    (["evaluate", "CHECKPOINT", "F", "--device", "tpu"], "argument --device: expected auto, cpu, cuda or cuda:N"),
    (["evaluate", "CHECKPOINT", "F", "--split", "val"], "argument --split: invalid choice: 'val'"),
    (["infer", "m.onnx", "--threads", "0"], "argument --threads: expected an integer >= 1; got '0'"),
    (["infer", "m.onnx", "--device", "-1"], "argument --device: expected an integer >= 0; got '-1'"),
    (["infer", "m.onnx", "--backend", "cuda"], "argument --backend: invalid choice: 'cuda'"),
    (["bench", "m.onnx", "--batch", "0"], "argument --batch: expected an integer >= 1"),
    (["bench", "m.onnx", "--iterations", "0"], "argument --iterations: expected an integer >= 1"),
    (["bench", "m.onnx", "--duration", "-2"], "argument --duration: expected a number >= 0"),
    (["bench", "m.onnx", "--warmup", "-1"], "argument --warmup: expected a number >= 0"),
    (["bench", "m.onnx", "--threads", "0"], "argument --threads: expected an integer >= 1"),
    (["bench", "m.onnx", "--seed", "-1"], "argument --seed: expected an integer >= 0"),
    (["bench", "m.onnx", "--tegrastats-interval", "0"], "argument --tegrastats-interval: expected an integer >= 1"),
    (["export", "CHECKPOINT", "--out", "E", "--opset", "18"], "argument --opset: expected an integer in [13, 17]"),
    (["export", "CHECKPOINT", "--out", "E", "--split", "val"], "argument --split: invalid choice"),
    (["build-engine", "m.onnx", "--out", "m.engine", "--workspace", "0"], "argument --workspace: expected an integer >= 1"),
    (["build-engine", "m.onnx", "--out", "m.engine", "--opt-level", "7"], "argument --opt-level: invalid choice"),
    (["build-engine", "m.onnx", "--out", "m.engine", "--contexts", "0"], "argument --contexts: expected an integer >= 1 "
                                                                         "(threads that may run the engine at once)"),
    (["prepare", "C", "--out", "F", "--workers", "0"], "argument --workers: expected an integer >= 1"),
    (["prepare", "C", "--out", "F", "--folds", "2"], "argument --folds: expected an integer >= 3"),
    (["prepare", "C", "--out", "F", "--fold", "-1"], "argument --fold: expected an integer >= 0"),
    (["prepare", "C", "--out", "F", "--max-seconds", "0"], "argument --max-seconds: expected a number > 0"),
    (["prepare", "C", "--out", "F", "--seed", "-1"], "argument --seed: expected an integer >= 0"),
    (["prepare", "C", "--out", "F", "--labels", "vibes"], "argument --labels: invalid choice"),
    (["make-corpus", "C", "--actors", "0"], "argument --actors: expected an integer >= 1"),
    (["make-corpus", "C", "--clips-per-actor", "0"], "argument --clips-per-actor: expected an integer >= 1"),
    (["make-corpus", "C", "--seed", "-1"], "argument --seed: expected an integer >= 0"),
    (["make-corpus", "C", "--workers", "0"], "argument --workers: expected an integer >= 1"),
    (["make-features", "F", "--actors", "0"], "argument --actors: expected an integer >= 1"),
    (["make-features", "F", "--clips-per-actor", "0"], "argument --clips-per-actor: expected an integer >= 1"),
    (["make-features", "F", "--k", "2"], "argument --k: expected an integer >= 3"),
    (["make-features", "F", "--fold", "-1"], "argument --fold: expected an integer >= 0"),
    (["make-features", "F", "--seed", "-1"], "argument --seed: expected an integer >= 0"),
    (["demo", "--actors", "4"], "argument --actors: expected an integer >= 5"),
    (["demo", "--clips-per-actor", "0"], "argument --clips-per-actor: expected an integer >= 1"),
    (["demo", "--epochs", "0"], "argument --epochs: expected an integer >= 1"),
    (["demo", "--bench-seconds", "0"], "argument --bench-seconds: expected a number > 0"),
    (["demo", "--workers", "0"], "argument --workers: expected an integer >= 1"),
    (["demo", "--seed", "-1"], "argument --seed: expected an integer >= 0"),
]


@pytest.mark.parametrize("argv, expected", CASES, ids=[" ".join(argv) for argv, _ in CASES])
def test_bad_flag_values_are_one_line_errors(argv, expected, capsys, tmp_path):
    checkpoint = tmp_path / "checkpoint.pt"          # evaluate/export check that their CHECKPOINT exists
    checkpoint.write_bytes(b"not read: the flag is refused first")
    argv = [str(checkpoint) if arg == "CHECKPOINT" else arg for arg in argv]
    assert cli_main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1, captured.err
    assert expected in captured.err and f"(see `edge-ladder {argv[0]} --help`)" in captured.err


def test_lambdas_beyond_the_ladders_layers_are_refused(capsys):
    """7 values on a 5-level (tiny) ladder: refused before any data is read; the message says
    what each value weighs (data level first, as Rasmus et al.'s input layer)."""
    pytest.importorskip("torch")
    argv = T + ["--model-size", "tiny", "--lambdas", *["1"] * 7]
    assert cli_main(argv) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--lambdas: got 7 value(s)" in error
    assert "a --model-size tiny ladder has 5 levels (data, layer 0, 1 hidden, joint, top): give 1 to 5 values" in error
    assert "the first weighs the data-space targets, the second layer 0" in error
    assert cli_main(T + ["--lambdas", *["1"] * 7]) == 2                  # small: 6 levels
    assert "give 1 to 6 values" in capsys.readouterr().err


def test_the_python_api_checks_the_same_ranges():
    pytest.importorskip("torch")
    from edge_ladder.train import TrainConfig
    for overrides, text in (({"lr": -1.0}, "--lr: expected a number > 0; got -1.0"),
                            ({"noise_std": -1.0}, "--noise-std: expected a number >= 0"),
                            ({"device": "tpu"}, "--device: expected auto, cpu, cuda or cuda:N; got 'tpu'"),
                            ({"lambdas": (1.0, float("inf"))}, "--lambdas: expected a number >= 0; got inf"),
                            ({"seed": -1}, "--seed: expected an integer >= 0"),
                            ({"labelled_fraction": 0.0}, "--labelled-fraction: expected a number in (0, 1]"),
                            ({"labelled_fraction": 1.5}, "--labelled-fraction: expected a number in (0, 1]"),
                            ({"cross_lambda": -1.0}, "--cross-lambda: expected a number >= 0"),
                            ({"fold": -2}, "--fold: expected an integer >= -1"),
                            ({"select": "best"}, "--select must be one of dev-loss, last"),
                            ({"model_size": "tiny", "lambdas": (1.0,) * 6}, "has 5 levels")):
        with pytest.raises(EdgeLadderError, match=__import__("re").escape(text)):
            TrainConfig(**overrides)


def test_range_describes_itself():
    assert Range(float, minimum=0, below=0.5).describe() == "a number in [0, 0.5)"
    assert Range(int, minimum=13, maximum=17).describe() == "an integer in [13, 17]"
    assert POSITIVE.problem(True) and POSITIVE.problem(float("nan")) and POSITIVE.problem(1e-9) is None
    assert Range(int, minimum=1).problem(2.0) is None and Range(int, minimum=1).problem(2.5)
