"""CREMA-D on disk: file names, codes, the file index and the perceived labels (stdlib only).

    CREMA_D_DIR/[data/]AudioWAV/1001_DFA_ANG_XX.wav       16 kHz mono int16
    CREMA_D_DIR/[data/]VideoFlash/1001_DFA_ANG_XX.flv     fps and size read from the file
    CREMA_D_DIR/[data/]processedResults/summaryTable.csv  perceived labels (VoiceVote, ...)
    CREMA_D_DIR/[data/]VideoDemographics.csv, SentenceFilenames.csv

A name is {ActorID}_{Sentence}_{Emotion}_{Level}. The index is built from the files on disk,
never from the CSVs (some listed clips are broken or missing). The CREMA-D git repository keeps
media in Git LFS: a clone without `git lfs pull` holds ~130-byte pointer text files instead.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from . import EMOTIONS
from .errors import EdgeLadderError

SENTENCES = ("IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS", "TSI", "WSI")
SENTENCE_TEXT = {
    "IEO": "It's eleven o'clock", "TIE": "That is exactly what happened",
    "IOM": "I'm on my way to the meeting", "IWW": "I wonder what this is about",
    "TAI": "The airplane is almost full", "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock", "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket", "ITS": "I think I've seen this before",
    "TSI": "The surface is slick", "WSI": "We'll stop in a couple of minutes",
}
LEVELS = ("LO", "MD", "HI", "XX")
LEVEL_SENTENCE = "IEO"          # the only sentence recorded at three intensity levels
ACTOR_RANGE = (1001, 1091)      # CREMA-D's actor IDs; generated corpora may go past 1091
# summaryTable.csv vote letters -> emotion codes
VOTE_LETTERS = {"A": "ANG", "D": "DIS", "F": "FEA", "H": "HAP", "N": "NEU", "S": "SAD"}
LABEL_SOURCES = {"voice": "VoiceVote", "face": "FaceVote", "multimodal": "MultiModalVote"}

LFS_MAGIC = b"version https://git-lfs"
LFS_HINT = ("The CREMA-D repository stores media in Git LFS; fetch the real files with "
            "`git lfs install && git lfs pull` inside the clone.")

_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")


class CremaError(EdgeLadderError, ValueError):
    """A CREMA-D directory, file name or table is not what CREMA-D looks like."""


class LfsPointerError(CremaError):
    """The file is a Git LFS pointer stub, not the media it points to."""


@dataclass(frozen=True)
class ClipName:
    id: str          # "1001_DFA_ANG_XX"
    actor: str       # "1001"
    sentence: str    # "DFA"
    emotion: str     # "ANG"
    level: str       # "XX"

    @property
    def label(self) -> int:
        """Index of the emotion in edge_ladder.EMOTIONS (the model's output order)."""
        return EMOTIONS.index(self.emotion)


def parse_name(name: str) -> ClipName:
    """'1001_DFA_ANG_XX' (a stem or a file name with extension) -> ClipName; CremaError naming the
    bad part otherwise."""
    stem = Path(name).name.split(".")[0]
    match = _NAME.match(stem)
    if not match:
        raise CremaError(f"{name!r} is not a CREMA-D clip name: expected ActorID_Sentence_Emotion_Level "
                         f"like 1001_DFA_ANG_XX (4 digits, then three upper-case codes).")
    actor, sentence, emotion, level = match.groups()
    if sentence not in SENTENCES:
        raise CremaError(f"{stem}: unknown sentence code {sentence!r}; expected one of {', '.join(SENTENCES)}.")
    if emotion not in EMOTIONS:
        raise CremaError(f"{stem}: unknown emotion code {emotion!r}; expected one of {', '.join(EMOTIONS)}.")
    if level not in LEVELS:
        raise CremaError(f"{stem}: unknown level code {level!r}; expected one of {', '.join(LEVELS)}.")
    if level != "XX" and sentence != LEVEL_SENTENCE:
        raise CremaError(f"{stem}: level {level!r} does not fit sentence {sentence!r}; only {LEVEL_SENTENCE} "
                         f"uses LO/MD/HI (and may use XX), every other sentence uses XX.")
    return ClipName(stem, actor, sentence, emotion, level)


def clip_name(actor: int | str, sentence: str, emotion: str, level: str = "XX") -> str:
    """Build (and validate) a clip id, e.g. clip_name(1001, 'DFA', 'ANG') -> '1001_DFA_ANG_XX'."""
    return parse_name(f"{int(actor):04d}_{sentence}_{emotion}_{level}").id


def is_lfs_pointer(path: Path) -> bool:
    """True when the file is a Git LFS pointer stub (small text starting 'version https://git-lfs')."""
    path = Path(path)
    try:
        if path.stat().st_size > 1024:
            return False
        with open(path, "rb") as handle:
            return handle.read(len(LFS_MAGIC)) == LFS_MAGIC
    except OSError:
        return False


def find_root(crema_dir: Path) -> Path:
    """The folder that holds AudioWAV/ and VideoFlash/: CREMA_D_DIR itself or CREMA_D_DIR/data."""
    crema_dir = Path(crema_dir)
    if not crema_dir.is_dir():
        raise CremaError(f"CREMA-D directory {crema_dir} does not exist. Clone it with "
                         f"`git clone https://github.com/CheyneyComputerScience/CREMA-D` and run `git lfs pull`, "
                         f"or generate a small one with `edge-ladder make-corpus DIR`.")
    for root in (crema_dir, crema_dir / "data"):
        if (root / "AudioWAV").is_dir() or (root / "VideoFlash").is_dir():
            return root
    raise CremaError(f"{crema_dir} does not look like CREMA-D: expected AudioWAV/ and VideoFlash/ there or "
                     f"under data/; found {sorted(p.name for p in crema_dir.iterdir())[:10]}.")


@dataclass
class ClipFiles:
    id: str
    wav: Path | None
    flv: Path | None


def index_files(crema_dir: Path) -> dict[str, ClipFiles]:
    """Clip id (file stem) -> its WAV and FLV paths, from the files on disk (None where missing).
    Names are not validated here: parse_name does that per clip so bad names can be reported."""
    root = find_root(crema_dir)
    index: dict[str, ClipFiles] = {}
    for folder, suffix, field in (("AudioWAV", ".wav", "wav"), ("VideoFlash", ".flv", "flv")):
        if not (root / folder).is_dir():
            continue
        for path in sorted((root / folder).iterdir()):
            if path.suffix.lower() != suffix or path.name.startswith("."):
                continue
            entry = index.setdefault(path.stem, ClipFiles(path.stem, None, None))
            setattr(entry, field, path)
    return dict(sorted(index.items()))


def summary_table_path(crema_dir: Path) -> Path:
    return find_root(crema_dir) / "processedResults" / "summaryTable.csv"


def read_summary_table(path: Path) -> dict[str, dict[str, tuple[str, ...]]]:
    """summaryTable.csv -> {clip id: {"voice": ("ANG",), "face": ("ANG", "DIS"), "multimodal": ...}}.
    Ties (votes joined with ':') keep every tied emotion; a clip's label is unambiguous only when
    the tuple has one element."""
    path = Path(path)
    if not path.exists():
        raise CremaError(f"perceived labels need {path}, which does not exist. Use --labels filename, or copy "
                         f"processedResults/ from the CREMA-D repository.")
    if is_lfs_pointer(path):
        raise LfsPointerError(f"{path} is a Git LFS pointer stub. {LFS_HINT}")
    table = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"FileName", *LABEL_SOURCES.values()} - set(reader.fieldnames or ())
        if missing:
            raise CremaError(f"{path}: missing columns {sorted(missing)}; expected FileName, VoiceVote, FaceVote, "
                             f"MultiModalVote (got {reader.fieldnames}).")
        for row in reader:
            votes = {}
            for source, column in LABEL_SOURCES.items():
                letters = [v.strip() for v in (row[column] or "").split(":") if v.strip()]
                votes[source] = tuple(VOTE_LETTERS.get(v, f"?{v}") for v in letters)
            table[row["FileName"].strip()] = votes
    return table


def perceived_label(table: dict, clip_id: str, source: str) -> str:
    """The perceived emotion of one clip from read_summary_table's dict; CremaError with the reason
    (not in table, tie, unknown letter) when there is no single label."""
    if source not in LABEL_SOURCES:
        raise CremaError(f"label source must be one of {', '.join(LABEL_SOURCES)}; got {source!r}")
    if clip_id not in table:
        raise CremaError(f"{clip_id}: not in summaryTable.csv, so it has no {LABEL_SOURCES[source]}.")
    votes = table[clip_id][source]
    if len(votes) != 1:
        raise CremaError(f"{clip_id}: {LABEL_SOURCES[source]} is a tie or empty ({':'.join(votes) or 'empty'}).")
    if votes[0] not in EMOTIONS:
        raise CremaError(f"{clip_id}: {LABEL_SOURCES[source]} has unknown vote {votes[0][1:]!r}; "
                         f"expected one of {', '.join(VOTE_LETTERS)}.")
    return votes[0]
