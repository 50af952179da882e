"""Checked values for command-line flags (argparse `type=`) and the configs behind them.

Every numeric flag names its range once, here or beside its config field, and the same object
checks the command line (while argparse parses, so a bad value stops the command before any
work) and the Python API (`TrainConfig(lr=-1)`):

    LEARNING_RATE = Range(float, above=0)
    parser.add_argument("--lr", type=LEARNING_RATE)     # edge-ladder train: error: argument --lr:
                                                        #   expected a number > 0; got '-1'
    LEARNING_RATE.check("--lr", config.lr)              # EdgeLadderError with the same text

No numpy or torch: the runtime's CLI (Python 3.8, no torch) uses it too.
"""
from __future__ import annotations

import argparse
import math
import re

from .errors import EdgeLadderError


class Range:
    """An int or float within optional bounds: minimum/maximum inclusive, above/below exclusive;
    `why` is said with the range ('an integer >= 2 (batch normalisation needs two clips)')."""

    def __init__(self, kind=float, minimum=None, maximum=None, above=None, below=None, why: str = ""):
        self.kind, self.minimum, self.maximum, self.above, self.below = kind, minimum, maximum, above, below
        self.why = why
        self.__name__ = "integer" if kind is int else "number"     # argparse names the type by it

    def describe(self) -> str:
        """'an integer >= 1', 'a number > 0', 'a number in [0, 0.5)' (+ ' (why)')."""
        text = self._bounds()
        return f"{text} ({self.why})" if self.why else text

    def _bounds(self) -> str:
        what = "an integer" if self.kind is int else "a number"
        low = (f"[{self.minimum:g}" if self.minimum is not None else f"({self.above:g}"
               if self.above is not None else None)
        high = (f"{self.maximum:g}]" if self.maximum is not None else f"{self.below:g})"
                if self.below is not None else None)
        if low and high:
            return f"{what} in {low}, {high}"
        if low:
            return f"{what} {'>=' if self.minimum is not None else '>'} {low[1:]}"
        if high:
            return f"{what} {'<=' if self.maximum is not None else '<'} {high[:-1]}"
        return what

    def problem(self, value):
        """None when `value` is within the range, else 'expected ...; got ...'."""
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and self.kind is int:
            ok = float(value).is_integer()
        if ok and self.kind is float:
            ok = math.isfinite(value)
        if ok:
            ok = ((self.minimum is None or value >= self.minimum) and (self.maximum is None or value <= self.maximum)
                  and (self.above is None or value > self.above) and (self.below is None or value < self.below))
        return None if ok else f"expected {self.describe()}; got {value!r}"

    def check(self, flag: str, value):
        """`value`, or EdgeLadderError('--flag: expected ...; got ...')."""
        problem = self.problem(value)
        if problem:
            raise EdgeLadderError(f"{flag}: {problem}")
        return value

    def __call__(self, text: str):
        """argparse `type=`: the parsed value, or ArgumentTypeError naming the range."""
        try:
            value = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {self.describe()}; got {text!r}") from None
        problem = self.problem(value)
        if problem:
            raise argparse.ArgumentTypeError(f"expected {self.describe()}; got {text!r}")
        return value


POSITIVE_INT = Range(int, minimum=1)          # counts: workers, threads, iterations, actors, epochs
NON_NEGATIVE_INT = Range(int, minimum=0)      # seeds (numpy refuses negative ones), indices
POSITIVE = Range(float, above=0)              # durations, learning rates
NON_NEGATIVE = Range(float, minimum=0)
FOLDS = Range(int, minimum=3, why="a test fold, a dev fold and at least one train fold")

TORCH_DEVICES = "auto, cpu, cuda or cuda:N"
_TORCH_DEVICE = re.compile(r"(auto|cpu|cuda(:\d+)?)")


def torch_device(text: str) -> str:
    """argparse `type=` of a training/evaluation device: auto | cpu | cuda | cuda:N."""
    if not isinstance(text, str) or not _TORCH_DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"expected {TORCH_DEVICES}; got {text!r}")
    return text


torch_device.__name__ = "device"


def check_torch_device(flag: str, value: str) -> str:
    try:
        return torch_device(value)
    except argparse.ArgumentTypeError as error:
        raise EdgeLadderError(f"{flag}: {error}") from None


class UsageError(EdgeLadderError):
    """A command line argparse refused; str() is the whole line to print."""


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line that names the flag and where the full usage is, instead of the
    whole usage block (subcommand parsers inherit the class). Raises UsageError, so
    `edge_ladder.cli.main([...])` returns 2 instead of exiting."""

    def error(self, message):
        raise UsageError(f"{self.prog}: error: {message} (see `{self.prog} --help`)")
