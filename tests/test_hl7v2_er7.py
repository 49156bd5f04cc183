"""The ER7 parser: normalisation, charsets, encoding characters, escapes, nulls, Z-segments and
loose order; every real fixture parses as its manifest says and as python-hl7 reads it."""

from __future__ import annotations

import csv
from pathlib import Path

import hl7
import pytest

from fhir_sched.hl7v2 import er7

FIXTURES = Path(__file__).parent / "fixtures" / "siu"
VENDOR = Path(__file__).parent / "fixtures" / "siu-vendor"
MANIFEST = list(csv.DictReader((FIXTURES / "manifest.tsv").open(encoding="utf-8"), delimiter="\t"))
ALL_FILES = sorted(FIXTURES.glob("*.hl7")) + sorted(VENDOR.glob("*.hl7"))

MSH = r"MSH|^~\&|APP|FAC|RCV|RFAC|20260101120000||SIU^S12^SIU_S12|CTRL1|P|2.5.1"
BODY = ["SCH|P1|F1||||||||||||||||||||||||Booked", "PID|1||123^^^H^MR||Doe^Jane", "RGS|1"]


def frame(*segments: str, sep: str = "\r", charset: str = "utf-8") -> bytes:
    return (sep.join(segments) + sep).encode(charset)


@pytest.mark.parametrize("sep", ["\r", "\n", "\r\n"], ids=["CR", "LF", "CRLF"])
def test_every_segment_separator_gives_the_same_segments(sep: str) -> None:
    msg = er7.parse(frame(MSH, *BODY, sep=sep))
    assert [s.name for s in msg.segments()] == ["MSH", "SCH", "PID", "RGS"]
    assert msg.segment("PID").get(5, 2) == "Jane"  # type: ignore[union-attr]


def test_blank_lines_mixed_separators_and_a_bom_are_dropped() -> None:
    raw = b"\xef\xbb\xbf" + frame(MSH) + b"\n\n" + frame(BODY[0], sep="\r\n") + b"\r\r"
    msg = er7.parse(raw)
    assert [s.name for s in msg.segments()] == ["MSH", "SCH"]


def test_undeclared_charset_reads_utf8() -> None:
    msg = er7.parse(frame(MSH, "PID|1||1||Müller^Zoë"))
    assert msg.charset == "utf-8"
    assert msg.segment("PID").get(5) == "Müller"  # type: ignore[union-attr]


def test_undeclared_charset_falls_back_to_latin1_when_not_utf8() -> None:
    msg = er7.parse(frame(MSH, "PID|1||1||Müller^Zoë", charset="latin-1"))
    assert msg.charset == "iso8859-1"
    assert msg.segment("PID").get(5, 2) == "Zoë"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("declared", "codec", "text"),
    [
        ("8859/1", "latin-1", "Hélène"),
        ("UNICODE UTF-8", "utf-8", "Hélène 日本"),
        ("UTF-8", "utf-8", "Champs-Élysées"),
        ("WINDOWS-1252", "cp1252", "Patient\u2019s \u201cnote\u201d €5"),
        ("ASCII", "ascii", "plain"),
    ],
)
def test_msh18_decides_the_charset(declared: str, codec: str, text: str) -> None:
    msh = MSH + f"||||||{declared}"
    msg = er7.parse(frame(msh, f"NTE|1||{text}", charset=codec))
    assert msg.header.character_set == declared
    assert msg.segment("NTE").get(3) == text  # type: ignore[union-attr]
    assert msg.warnings == ()


def test_windows_1252_bytes_read_as_latin1_would_be_wrong() -> None:
    """0x92 is a right quote in Windows-1252 and a C1 control in Latin-1: MSH-18 must win."""
    msg = er7.parse(frame(MSH + "||||||WINDOWS-1252", "NTE|1||it\x92s", charset="latin-1"))
    assert msg.segment("NTE").get(3) == "it\u2019s"  # type: ignore[union-attr]


def test_a_charset_the_bytes_contradict_falls_back_with_a_warning() -> None:
    msg = er7.parse(frame(MSH + "||||||ASCII", "NTE|1||café"))
    assert msg.segment("NTE").get(3) == "café"  # type: ignore[union-attr]
    assert any("ASCII" in w for w in msg.warnings)


def test_french_fixtures_declare_utf8_and_keep_their_accents() -> None:
    msg = er7.parse((FIXTURES / "hl7-object-parser_S12_1.hl7").read_bytes())
    assert msg.header.character_set == "UTF-8"
    assert msg.segment("PID").get(11) == "Avenue des Champs-Élysées"  # type: ignore[union-attr]


def test_five_encoding_characters_are_read_and_the_truncation_char_is_data() -> None:
    msh = r"MSH|^~\&#|APP|FAC|RCV|RFAC|20260101120000||SIU^S12^SIU_S12|C5|P|2.7"
    msg = er7.parse(frame(msh, r"NTE|1||see #3 \P\ here^x"))
    assert msg.encoding.truncation == "#"
    assert msg.header.encoding_characters == "^~\\&#"
    assert msg.segment("NTE").get(3) == "see #3 # here"  # type: ignore[union-attr]
    assert msg.segment("NTE").get(3, 2) == "x"  # type: ignore[union-attr]


def test_nonstandard_separators_are_honoured() -> None:
    msh = "MSH*%$!@*APP*FAC*RCV*RFAC*20260101**SIU%S14*C9*P*2.4"
    msg = er7.parse(frame(msh, "PID*1**7%%%H**Roe%Ann$x@y"))
    pid = msg.segment("PID")
    assert msg.header.trigger_event == "S14"
    assert pid is not None and pid.get(5, 2, 0) == "Ann" and pid.get(5, 1, 1) == "x"
    assert pid.get(5, 1, 1, sub=2) == "y"


@pytest.mark.parametrize(
    ("escaped", "plain"),
    [
        (r"a\F\b", "a|b"),
        (r"a\S\b", "a^b"),
        (r"a\T\b", "a&b"),
        (r"a\R\b", "a~b"),
        (r"a\E\b", "a\\b"),
        (r"line1\.br\line2", "line1\nline2"),
        (r"x\.sp2\y", "x\n\ny"),
        ("\\H\\bold\\N\\", "bold"),
        ("\\X4869\\", "Hi"),
        ("caf\\XC3A9\\", "café"),
        (r"\Zlocal\x", "x"),
        (r"C:\Temp\file", r"C:\Temp\file"),  # not an escape: kept
        ("trailing \\", "trailing \\"),
    ],
)
def test_escape_sequences_are_unescaped(escaped: str, plain: str) -> None:
    msg = er7.parse(frame(MSH, f"NTE|1||{escaped}"))
    assert msg.segment("NTE").get(3) == plain  # type: ignore[union-attr]


def test_a_huge_line_skip_is_capped() -> None:
    msg = er7.parse(frame(MSH, r"NTE|1||a\.sp999999999\b"))
    assert msg.segment("NTE").get(3) == "a" + "\n" * 10 + "b"  # type: ignore[union-attr]


def test_escaped_separators_do_not_split() -> None:
    msg = er7.parse(frame(MSH, r"PID|1||1||Smith\S\Jones^Anne"))
    pid = msg.segment("PID")
    assert pid is not None and pid.get(5, 1) == "Smith^Jones" and pid.get(5, 2) == "Anne"
    assert pid.text(5) == r"Smith\S\Jones^Anne"


def test_explicit_null_is_distinct_from_empty() -> None:
    msg = er7.parse(frame(MSH, 'PV1|1|O|""||""^BUSINESS'))
    pv1 = msg.segment("PV1")
    assert pv1 is not None
    assert pv1.is_null(3) and pv1.get(3) == ""
    assert not pv1.is_null(4) and pv1.get(4) == ""
    assert pv1.is_null(5, 1) and pv1.get(5, 2) == "BUSINESS"
    assert pv1.has(3) and not pv1.has(4)


def test_z_segments_are_kept_in_place() -> None:
    msg = er7.parse(frame(MSH, BODY[0], "ZCS|1|custom^value", *BODY[1:]))
    assert [s.name for s in msg.segments()] == ["MSH", "SCH", "ZCS", "PID", "RGS"]
    assert msg.segment("ZCS").get(2, 2) == "value"  # type: ignore[union-attr]


def test_loose_segment_order_is_kept_not_refused() -> None:
    msg = er7.parse(frame(MSH, "AIP|1||9^Who", "PID|1||1", "SCH|P1|F1"))
    assert [s.name for s in msg.segments()] == ["MSH", "AIP", "PID", "SCH"]
    assert msg.segments("SCH")[0].get(2) == "F1"


def test_missing_msh_9_3_is_an_empty_structure() -> None:
    msg = er7.parse(frame(r"MSH|^~\&|A|F|R|RF|2026||SIU^S15|C2|P|2.3", *BODY))
    assert (msg.header.message_code, msg.header.trigger_event) == ("SIU", "S15")
    assert msg.header.message_structure == ""


def test_header_values_are_as_sent() -> None:
    msh = r"MSH|^~\&|APP^1.2^ISO|FAC|RCV|RFAC|20260101120000+0100||SIU^S12| 38762|T|2.5.1|7||AL|NE"
    h = er7.parse(frame(msh)).header
    assert h.sending_application == "APP^1.2^ISO"
    assert h.control_id == " 38762"  # verbatim: MSA-2 echoes it
    assert (h.processing_id, h.version, h.sequence_number) == ("T", "2.5.1", "7")
    assert (h.accept_ack_type, h.application_ack_type) == ("AL", "NE")
    assert h.enhanced_mode and h.sender == ("APP^1.2^ISO", "FAC")


@pytest.mark.parametrize(
    ("raw", "code", "fld"),
    [
        (b"", 100, None),
        (b"PID|1||1\r", 100, None),
        (b"MSH|^~\r", 102, 2),
        (b"MSH|^^\\&|A\r", 102, 2),
        (b"MSHA^~\\&|A\r", 102, 2),
        (b"MSH|^~\\&|A|F|R|RF|2026||SIU|C1|P|2.5\r", 101, 9),
        (b"MSH|^~\\&|A|F|R|RF|2026||SIU^S12||P|2.5\r", 101, 10),
        (b"MSH|^~\\&|A|F|R|RF|2026||SIU^S12|C1|P\r", 101, 12),
    ],
    ids=[
        "empty",
        "no-msh",
        "short-msh2",
        "repeated-char",
        "alnum-fs",
        "no-trigger",
        "no-id",
        "no-ver",
    ],
)
def test_unreadable_msh_raises_with_a_table_0357_code(
    raw: bytes, code: int, fld: int | None
) -> None:
    with pytest.raises(er7.Er7Error) as caught:
        er7.parse(raw)
    assert caught.value.code == code
    assert caught.value.segment == "MSH"
    assert caught.value.field == fld


def test_an_error_after_msh_is_read_carries_the_header_for_the_ack() -> None:
    with pytest.raises(er7.Er7Error) as caught:
        er7.parse(b"MSH|^~\\&|A|F|R|RF|2026||SIU|C77|P|2.5\r")
    assert caught.value.header is not None and caught.value.header.control_id == "C77"


@pytest.mark.parametrize("row", MANIFEST, ids=[r["file"] for r in MANIFEST])
def test_every_fixture_parses_as_its_manifest_says(row: dict[str, str]) -> None:
    msg = er7.parse((FIXTURES / row["file"]).read_bytes())
    h = msg.header
    typ = "^".join(p for p in (h.message_code, h.trigger_event, h.message_structure) if p)
    assert typ == row["MSH-9"]
    assert h.version == row["MSH-12"]
    assert len(msg.segments()) == int(row["segments"])
    assert msg.warnings == ()


def test_fixture_set_matches_the_manifest() -> None:
    assert sorted(p.name for p in FIXTURES.glob("*.hl7")) == sorted(r["file"] for r in MANIFEST)


@pytest.mark.parametrize("path", ALL_FILES, ids=[p.name for p in ALL_FILES])
def test_every_value_matches_python_hl7(path: Path) -> None:
    """python-hl7 splits on CR only and does not decode or unescape: feed it the same text and
    unescape its values, then every subcomponent of every field must agree (python-hl7 renders
    \\.br\\ as CR, we as LF: the one difference)."""
    raw = path.read_bytes()
    ours = er7.parse(raw)
    theirs = hl7.parse(raw.decode(ours.charset))
    assert len(theirs) == len(ours.segments())
    seen: dict[str, int] = {}
    compared = 0
    for seg, their_seg in zip(ours.segments(), theirs, strict=True):
        seen[seg.name] = seen.get(seg.name, 0) + 1
        assert str(their_seg[0]) == seg.name
        for f in range(3 if seg.name == "MSH" else 1, len(seg.fields)):
            assert seg.text(f) == str(their_seg[f])
            for r, rep in enumerate(seg.fields[f]):
                for c, comp in enumerate(rep):
                    for s in range(len(comp)):
                        value = theirs.extract_field(
                            seg.name, seen[seg.name], f, r + 1, c + 1, s + 1
                        )
                        expected = "" if value == '""' else theirs.unescape(value)
                        expected = expected.replace("\r", "\n")  # its \.br\ is CR, ours LF
                        assert seg.get(f, c + 1, r, s + 1) == expected, (seg.name, f, r, c, s)
                        compared += 1
    assert compared > 20


@pytest.mark.parametrize("charset", ["base64", "rot13", "zlib", "UTF-16", "hex"])
def test_msh18_naming_a_non_text_codec_falls_back_instead_of_failing(charset: str) -> None:
    raw = f"MSH|^~\\&|A|B|C|D|20370101||SIU^S12|1|P|2.5||||||{charset}\rSCH|1\r".encode()
    message = er7.parse(raw)
    assert message.header.control_id == "1"
    assert any(charset in w for w in message.warnings)
