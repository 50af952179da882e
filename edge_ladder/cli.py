"""`edge-ladder`: one command, one subcommand per pipeline stage.

Each subcommand lives in its own module, which defines
    add_arguments(parser: argparse.ArgumentParser) -> None
    run(args: argparse.Namespace) -> int
and is imported only when that subcommand runs, so `edge-ladder infer` never imports torch.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from ._deps import MissingDependencyError
from .argtypes import OneLineParser, UsageError
from .errors import EdgeLadderError

# name -> (module, one-line help). Order is the pipeline's order.
SUBCOMMANDS = {
    "make-corpus": ("edge_ladder.corpus", "generate a small corpus in CREMA-D layout (WAV + FLV + CSVs)"),
    "make-features": ("edge_ladder.synthetic", "write synthetic prepared features (fast, no corpus)"),
    "prepare": ("edge_ladder.prepare", "CREMA-D directory (or, --unlabelled, your own recordings) -> features "
                                       "directory (log-mel + face crops)"),
    "train": ("edge_ladder.train", "train the cross-modal ladder network"),
    "evaluate": ("edge_ladder.evaluate", "evaluate a checkpoint on a split"),
    "ablate": ("edge_ladder.ablate", "train ladder modes x labelled fractions x seeds x folds, compare them paired"),
    "export": ("edge_ladder.export.cli", "checkpoint -> pruned ONNX fp32 + fp16 + int8 (+ export.json)"),
    "build-engine": ("edge_ladder.export.cli_engine", "ONNX -> TensorRT engine (+ sidecar JSON)"),
    "infer": ("edge_ladder.runtime.cli", "run a model on clips (WAV + FLV), print JSON or write CSV"),
    "bench": ("edge_ladder.bench", "latency benchmark (trtexec-style statistics)"),
    "demo": ("edge_ladder.demo", "run the whole chain on generated data (CPU)"),
}

# these pick up where an interrupted run stopped when the same command runs again
RESUMABLE = ("make-corpus", "prepare", "demo", "ablate")


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    parser = OneLineParser(prog="edge-ladder", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"edge-ladder {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == selected:
            importlib.import_module(module_name).add_arguments(sub_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    selected = next((a for a in argv if not a.startswith("-")), None)
    if selected not in SUBCOMMANDS:
        selected = None
    try:
        parser = build_parser(selected)
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        module = importlib.import_module(SUBCOMMANDS[args.command][0])
        return int(module.run(args) or 0)
    except UsageError as error:
        print(error, file=sys.stderr)
        return 2
    except MissingDependencyError as error:
        print(f"edge-ladder {selected}: {error}", file=sys.stderr)
        return 3
    except EdgeLadderError as error:
        print(f"edge-ladder {selected}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # `train` says what was saved and the --resume command itself
        again = " (files already written are complete: re-run the same command to continue)" \
            if selected in RESUMABLE else ""
        print(f"edge-ladder {selected}: interrupted{again}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
