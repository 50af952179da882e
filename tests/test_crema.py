"""CREMA-D names, codes, the on-disk index (with and without data/), LFS stubs, perceived labels."""
import pytest

from edge_ladder import EMOTIONS, crema

LFS_STUB = (b"version https://git-lfs.github.com/spec/v1\n"
            b"oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n")


@pytest.mark.parametrize("name, expected", [
    ("1001_DFA_ANG_XX", ("1001", "DFA", "ANG", "XX")),
    ("1091_IEO_HAP_HI.wav", ("1091", "IEO", "HAP", "HI")),
    ("1045_IEO_NEU_XX.flv", ("1045", "IEO", "NEU", "XX")),
    ("1064_IEO_DIS_MD", ("1064", "IEO", "DIS", "MD")),
    ("1076_WSI_SAD_XX", ("1076", "WSI", "SAD", "XX")),
])
def test_parse_name_reads_every_field(name, expected):
    parsed = crema.parse_name(name)
    assert (parsed.actor, parsed.sentence, parsed.emotion, parsed.level) == expected
    assert parsed.label == EMOTIONS.index(expected[2])
    assert parsed.id == name.split(".")[0]


@pytest.mark.parametrize("name, reason", [
    ("1001_XYZ_ANG_XX", "unknown sentence code 'XYZ'"),
    ("1001_DFA_JOY_XX", "unknown emotion code 'JOY'"),
    ("1001_DFA_ANG_ZZ", "unknown level code 'ZZ'"),
    ("1001_DFA_ANG_HI", "only IEO uses LO/MD/HI"),
    ("101_DFA_ANG_XX", "not a CREMA-D clip name"),
    ("1001_DFA_ANG", "not a CREMA-D clip name"),
    ("notes", "not a CREMA-D clip name"),
])
def test_parse_name_rejects_with_the_reason(name, reason):
    with pytest.raises(crema.CremaError, match=reason.replace("(", r"\(")):
        crema.parse_name(name)


def test_code_tables_match_crema_d():
    assert len(crema.SENTENCES) == 12 and len(set(crema.SENTENCES)) == 12
    assert set(crema.VOTE_LETTERS.values()) == set(EMOTIONS)
    assert crema.clip_name(1002, "IEO", "FEA", "LO") == "1002_IEO_FEA_LO"


def test_lfs_pointer_detection(tmp_path):
    stub = tmp_path / "1001_DFA_ANG_XX.wav"
    stub.write_bytes(LFS_STUB)
    real = tmp_path / "real.wav"
    real.write_bytes(b"RIFF" + bytes(300))
    assert crema.is_lfs_pointer(stub)
    assert not crema.is_lfs_pointer(real)
    assert not crema.is_lfs_pointer(tmp_path / "missing.wav")


@pytest.mark.parametrize("prefix", ["", "data"])
def test_index_files_from_disk_with_optional_data_prefix(tmp_path, prefix):
    root = tmp_path / prefix if prefix else tmp_path
    (root / "AudioWAV").mkdir(parents=True)
    (root / "VideoFlash").mkdir()
    for stem in ("1001_DFA_ANG_XX", "1002_IEO_HAP_HI"):
        (root / "AudioWAV" / f"{stem}.wav").write_bytes(b"x")
        (root / "VideoFlash" / f"{stem}.flv").write_bytes(b"x")
    (root / "AudioWAV" / "1003_TIE_SAD_XX.wav").write_bytes(b"x")      # no video
    (root / "AudioWAV" / ".1004_TIE_SAD_XX.wav.tmp").write_bytes(b"x")  # temp file: ignored
    (root / "AudioWAV" / "readme.txt").write_text("ignored")
    index = crema.index_files(tmp_path)
    assert list(index) == ["1001_DFA_ANG_XX", "1002_IEO_HAP_HI", "1003_TIE_SAD_XX"]
    assert index["1002_IEO_HAP_HI"].flv == root / "VideoFlash" / "1002_IEO_HAP_HI.flv"
    assert index["1003_TIE_SAD_XX"].flv is None and index["1003_TIE_SAD_XX"].wav is not None
    assert crema.find_root(tmp_path) == root


def test_find_root_says_what_a_crema_d_directory_looks_like(tmp_path):
    (tmp_path / "photos").mkdir()
    with pytest.raises(crema.CremaError, match="AudioWAV/ and VideoFlash/"):
        crema.find_root(tmp_path)
    with pytest.raises(crema.CremaError, match="does not exist"):
        crema.find_root(tmp_path / "nowhere")


def test_summary_table_perceived_labels_and_ties(tmp_path):
    path = tmp_path / "summaryTable.csv"
    path.write_text(",FileName,VoiceVote,VoiceLevel,FaceVote,FaceLevel,MultiModalVote,MultiModalLevel\n"
                    "1,1001_DFA_ANG_XX,A,60,D,50,A,75\n"
                    "2,1001_DFA_DIS_XX,A:D,50,D,80,N,40\n"
                    "3,1001_DFA_FEA_XX,X,50,F,80,F,40\n")
    table = crema.read_summary_table(path)
    assert crema.perceived_label(table, "1001_DFA_ANG_XX", "voice") == "ANG"
    assert crema.perceived_label(table, "1001_DFA_ANG_XX", "face") == "DIS"
    assert crema.perceived_label(table, "1001_DFA_DIS_XX", "multimodal") == "NEU"
    assert table["1001_DFA_DIS_XX"]["voice"] == ("ANG", "DIS")
    with pytest.raises(crema.CremaError, match="tie"):
        crema.perceived_label(table, "1001_DFA_DIS_XX", "voice")
    with pytest.raises(crema.CremaError, match="unknown vote 'X'"):
        crema.perceived_label(table, "1001_DFA_FEA_XX", "voice")
    with pytest.raises(crema.CremaError, match="not in summaryTable"):
        crema.perceived_label(table, "1002_DFA_FEA_XX", "voice")
    with pytest.raises(crema.CremaError, match="label source"):
        crema.perceived_label(table, "1001_DFA_ANG_XX", "smell")


def test_summary_table_errors(tmp_path):
    with pytest.raises(crema.CremaError, match="--labels filename"):
        crema.read_summary_table(tmp_path / "missing.csv")
    stub = tmp_path / "stub.csv"
    stub.write_bytes(LFS_STUB)
    with pytest.raises(crema.LfsPointerError, match="git lfs pull"):
        crema.read_summary_table(stub)
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("FileName,Vote\n1001_DFA_ANG_XX,A\n")
    with pytest.raises(crema.CremaError, match="missing columns"):
        crema.read_summary_table(wrong)
