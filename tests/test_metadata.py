"""Metadata readers: real AudioSet files, the project's fixtures, and one-line errors."""

from __future__ import annotations

import re

import pytest

from audiosetflow import metadata as md


def test_real_files_parse(real_metadata):
    classes = md.read_class_labels(real_metadata / "class_labels_indices.csv")
    assert len(classes) == 527
    assert classes["index"].tolist() == list(range(527))
    bal = md.read_segments(real_metadata / "balanced_train_segments.csv", known_mids=classes["mid"])
    ev = md.read_segments(real_metadata / "eval_segments.csv", known_mids=classes["mid"])
    assert len(bal) == 22160 and len(ev) == 20371
    assert (bal["ytid"].str.startswith("-")).sum() == 459
    assert ((bal["end"] - bal["start"]) < 10).sum() == 345
    assert sum(len(s.split(",")) for s in bal["labels"]) == 52882
    assert sum(len(s.split(",")) for s in ev["labels"]) == 51804
    onto = md.read_ontology(real_metadata / "ontology.json")
    assert set(classes["mid"]) <= set(onto)


def test_fixture_segments(data_dir):
    classes = md.read_class_labels(data_dir / "class_labels_small.csv")
    seg = md.read_segments(data_dir / "segments_small.csv", known_mids=classes["mid"])
    assert seg["ytid"].iloc[0] == "--PJHxphWEs"
    assert seg["labels"].iloc[0] == "/m/09x0r,/m/04rlf"
    assert seg["start"].iloc[3] == 5.0 and seg["end"].iloc[3] == 12.5
    assert seg["line"].iloc[0] == 4


def test_qa_counts_fixture(data_dir):
    classes = md.read_class_labels(data_dir / "class_labels_small.csv")
    qa = md.read_qa_counts(data_dir / "qa_true_counts_small.csv", class_labels=classes)
    assert dict(zip(qa["mid"], qa["ratio"], strict=True)) == {
        "/m/09x0r": 0.92,
        "/m/04rlf": 0.95,
        "/m/07yv9": 0.70,
    }


HEADER = "# created\n# num_ytids=1\n# YTID, start_seconds, end_seconds, positive_labels\n"


@pytest.mark.parametrize(
    ("body", "line", "problem"),
    [
        ('abc, 0.0, 10.0, "/m/09x0r"\n', 4, "malformed YTID 'abc'"),
        ('../../etc/pa, 0.0, 10.0, "/m/09x0r"\n', 4, "malformed YTID"),
        ('abcdefghijk, 10.0, 10.0, "/m/09x0r"\n', 4, "start >= end"),
        ('abcdefghijk, 12.0, 10.0, "/m/09x0r"\n', 4, "start >= end"),
        ('abcdefghijk, x, 10.0, "/m/09x0r"\n', 4, "not numbers"),
        ('abcdefghijk, 0.0, 10.0, "/m/zzzzz"\n', 4, "unknown MID '/m/zzzzz'"),
        ('abcdefghijk, 0.0, 10.0, "music"\n', 4, "malformed MID 'music'"),
        ('abcdefghijk, 0.0, 10.0\n', 4, "expected 4 fields"),
        ('abcdefghijk, 0.0, 10.0, "/m/09x0r"\nabcdefghijk, 1.0, 11.0, "/m/09x0r"\n', 5,
         "listed twice (first on line 4)"),
    ],
)  # fmt: skip
def test_bad_segment_rows(tmp_path, body, line, problem):
    p = tmp_path / "bad.csv"
    p.write_text(HEADER + body)
    with pytest.raises(md.MetadataError) as err:
        md.read_segments(p, known_mids={"/m/09x0r"})
    msg = str(err.value)
    assert msg.startswith(f"{p}:{line}: "), msg
    assert problem in msg
    assert "\n" not in msg


@pytest.mark.parametrize(
    "text",
    [
        'abcdefghijk, 0.0, 10.0, "/m/09x0r"\n',
        "# YTID, start, end, labels\n",
        "ytid,start,end,labels\nabcdefghijk,0,10,/m/09x0r\n",
    ],
)
def test_bad_header(tmp_path, text):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(md.MetadataError, match="bad header"):
        md.read_segments(p)


def test_bad_class_list_and_qa(tmp_path, data_dir):
    p = tmp_path / "classes.csv"
    p.write_text('idx,mid,name\n0,/m/09x0r,"Speech"\n')
    with pytest.raises(md.MetadataError, match=r"classes.csv:1: bad header"):
        md.read_class_labels(p)
    classes = md.read_class_labels(data_dir / "class_labels_small.csv")
    q = tmp_path / "qa.csv"
    q.write_text("label_id,num_rated,num_true\n0,10,11\n")
    with pytest.raises(md.MetadataError, match=r"qa.csv:2: impossible counts"):
        md.read_qa_counts(q, class_labels=classes)
    q.write_text("label_id,num_rated,num_true\n999,10,1\n")
    with pytest.raises(md.MetadataError, match=r"qa.csv:2: unknown label index 999"):
        md.read_qa_counts(q, class_labels=classes)


def _read(kind, path, data_dir):
    if kind == "segments":
        return md.read_segments(path, known_mids={"/m/09x0r", "/m/04rlf", "/m/07yv9"})
    if kind == "classes":
        return md.read_class_labels(path)
    classes = md.read_class_labels(data_dir / "class_labels_small.csv")
    return md.read_qa_counts(path, class_labels=classes)


FIXTURES = {
    "segments": "segments_small.csv",
    "classes": "class_labels_small.csv",
    "qa": "qa_true_counts_small.csv",
}


@pytest.mark.parametrize("kind", list(FIXTURES))
def test_byte_order_mark_is_accepted(tmp_path, data_dir, kind):
    src = data_dir / FIXTURES[kind]
    p = tmp_path / src.name
    p.write_bytes(b"\xef\xbb\xbf" + src.read_bytes())
    got, want = _read(kind, p, data_dir), _read(kind, src, data_dir)
    assert got.equals(want)


def _with_bad_byte(lines: list[str], bad_line: int, newline: str) -> bytes:
    """The lines joined by ``newline``, with a Latin-1 "é" (not UTF-8) ending line ``bad_line``."""
    out = [ln.encode() for ln in lines]
    out[bad_line - 1] = out[bad_line - 1][:-1] + b"\xe9" + out[bad_line - 1][-1:]
    return newline.encode().join(out) + newline.encode()


@pytest.mark.parametrize("kind", list(FIXTURES))
@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_invalid_utf8_names_file_and_line(tmp_path, data_dir, kind, newline):
    lines = (data_dir / FIXTURES[kind]).read_text().splitlines()
    bad_line = 6 if kind == "segments" else 3
    p = tmp_path / "meta.csv"
    p.write_bytes(_with_bad_byte(lines, bad_line, newline))
    with pytest.raises(md.MetadataError) as err:
        _read(kind, p, data_dir)
    msg = str(err.value)
    assert msg.startswith(f"{p}:{bad_line}: not UTF-8 text: bytes b'\\xe9'"), msg
    assert "\n" not in msg and err.value.line == bad_line


def test_invalid_utf8_far_into_a_segment_file(tmp_path):
    # far past the text reader's first buffer: the line is that of the file, not of a chunk
    rows = [f'{i:011d}, 0.0, 10.0, "/m/09x0r"' for i in range(5000)]
    lines = HEADER.splitlines() + rows
    p = tmp_path / "big.csv"
    p.write_bytes(b"\xef\xbb\xbf" + _with_bad_byte(lines, 4321, "\n"))
    with pytest.raises(md.MetadataError, match=rf"^{re.escape(str(p))}:4321: not UTF-8 text"):
        md.read_segments(p)


def test_resolve_labels(data_dir):
    classes = md.read_class_labels(data_dir / "class_labels_small.csv")
    labs = md.resolve_labels(["music", "/m/09x0r"], class_labels=classes)
    assert [(lab.mid, lab.name, lab.slug) for lab in labs] == [
        ("/m/04rlf", "Music", "music"),
        ("/m/09x0r", "Speech", "speech"),
    ]
    with pytest.raises(ValueError, match="unknown label 'Musc'.*did you mean Music"):
        md.resolve_labels(["Musc"], class_labels=classes)


@pytest.mark.parametrize(
    ("name", "slug"),
    [("Music", "music"), ("Male speech, man speaking", "male_speech_man_speaking"),
     ("Rock and roll", "rock_and_roll"), ("Sound effect", "sound_effect")],
)  # fmt: skip
def test_label_slug(name, slug):
    assert md.label_slug(name) == slug


def test_write_segments_round_trip(tmp_path, data_dir):
    seg = md.read_segments(data_dir / "segments_small.csv")
    md.write_segments(tmp_path / "out.csv", seg)
    again = md.read_segments(tmp_path / "out.csv")
    assert again[["ytid", "start", "end", "labels"]].equals(seg[["ytid", "start", "end", "labels"]])
