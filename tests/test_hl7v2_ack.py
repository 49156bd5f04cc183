"""ACK shapes per version and mode, checked with a third-party parser (python-hl7)."""

from __future__ import annotations

import hl7

from fhir_sched.hl7v2.ack import AckCode, build_ack, codec_for, recover_header, reject_unparseable
from fhir_sched.hl7v2.header import Header


def header(version: str, control_id: str = "MSG1", **kw: str) -> Header:
    return Header(
        field_separator="|",
        encoding_characters="^~\\&",
        sending_application="EHR",
        sending_facility="CLINIC",
        receiving_application="SCHED",
        receiving_facility="HOSP",
        timestamp="20240101120000",
        message_code="SIU",
        trigger_event="S12",
        message_structure="SIU_S12",
        control_id=control_id,
        processing_id="P",
        version=version,
        **kw,
    )


def parse(ack: bytes) -> hl7.Message:
    return hl7.parse(ack.decode("utf-8"))


def test_aa_swaps_sender_and_receiver_and_echoes_version() -> None:
    msg = parse(build_ack(header("2.5.1"), AckCode.AA, control_id="A1", timestamp="20240101"))
    assert str(msg["MSH.F3"]) == "SCHED" and str(msg["MSH.F5"]) == "EHR"
    assert str(msg["MSH.F4"]) == "HOSP" and str(msg["MSH.F6"]) == "CLINIC"
    assert str(msg.segment("MSH")[9]) == "ACK^S12^ACK"
    assert str(msg["MSH.F10"]) == "A1"
    assert str(msg["MSH.F12"]) == "2.5.1"
    assert str(msg["MSA.F1"]) == "AA" and str(msg["MSA.F2"]) == "MSG1"
    assert len(msg) == 2


def test_msa2_echoes_control_id_verbatim_with_spaces() -> None:
    ack = build_ack(header("2.4", control_id=" 38762 x"), AckCode.AA, control_id="A", timestamp="")
    assert b"\rMSA|AA| 38762 x\r" in ack


def test_v25_error_uses_err3_table_0357_and_severity() -> None:
    ack = build_ack(
        header("2.5.1"), AckCode.AE, control_id="A", timestamp="", text="no appt|x", error_code=204
    )
    msg = parse(ack)
    err = msg.segment("ERR")
    assert str(err[3]) == "204^Unknown key identifier^HL70357"
    assert str(err[4]) == "E"
    assert str(err[8]) == "no appt\\F\\x"


def test_v23_error_uses_err1_eld_and_msa3_text() -> None:
    ack = build_ack(
        header("2.3"), AckCode.AR, control_id="A", timestamp="", text="bad", error_code=200
    )
    msg = parse(ack)
    assert str(msg["MSA.F3"]) == "bad"
    assert str(msg.segment("ERR")[1]) == "^^^200&Unsupported message type&HL70357"


def test_v24_error_uses_err1_and_no_msa3() -> None:
    ack = build_ack(
        header("2.4"), AckCode.AE, control_id="A", timestamp="", text="bad", error_code=207
    )
    assert b"MSA|AE|MSG1\r" in ack
    assert b"ERR|^^^207&Application internal error&HL70357\r" in ack


def test_v28_enhanced_commit_reject_echoes_msh18_and_encodes_charset() -> None:
    h = header("2.8", accept_ack_type="AL", character_set="8859/1")
    ack = build_ack(h, AckCode.CR, control_id="A", timestamp="", text="é", error_code=207)
    msg = hl7.parse(ack.decode("latin-1"))
    assert str(msg["MSH.F18"]) == "8859/1"
    assert str(msg["MSA.F1"]) == "CR"
    assert str(msg.segment("ERR")[8]) == "é"
    assert "é".encode("latin-1") in ack


def test_unparseable_frame_gets_minimal_ar_with_recovered_control_id() -> None:
    ack = reject_unparseable(
        b"MSH|^~\\&|EHR|CL|S|H|2024||GARBAGE|C-9|P|2.3", control_id="A", timestamp="", text="x"
    )
    msg = parse(ack)
    assert str(msg["MSA.F1"]) == "AR" and str(msg["MSA.F2"]) == "C-9"
    assert str(msg["MSH.F5"]) == "EHR"


def test_no_msh_at_all_still_gets_an_ar() -> None:
    msg = parse(reject_unparseable(b"\xff\xfe junk", control_id="A", timestamp="", text="x"))
    assert str(msg["MSA.F1"]) == "AR"
    assert str(msg["MSA.F2"]) == ""


def test_recover_header_reads_msh18_and_the_ar_is_in_that_charset() -> None:
    raw = "MSH|^~\\&|EHR|CLINIC|SCHED|HOSP|2024||SIU^S12|Ü1|P|2.5.1|||||DE|8859/1\rSCH|ü\r"
    header = recover_header(raw.encode("latin-1"))
    assert (header.control_id, header.character_set) == ("Ü1", "8859/1")
    ack = reject_unparseable(raw.encode("latin-1"), control_id="A", timestamp="", text="é")
    assert b"MSA|AR|\xdc1\r" in ack
    assert ack.split(b"\r")[0].endswith(b"|8859/1")
    assert b"\xe9" in ack  # the text too, in Latin-1


def test_recover_header_undeclared_utf8_control_id_comes_back_as_sent() -> None:
    raw = "MSH|^~\\&|EHR|CLINIC|SCHED|HOSP|2024||SIU^S12|Ü2|P|2.5.1\r".encode()
    ack = reject_unparseable(raw, control_id="A", timestamp="", text="x")
    assert "MSA|AR|Ü2\r".encode() in ack


def test_a_non_text_or_non_ascii_msh18_codec_gives_a_utf8_reply() -> None:
    for charset in ("base64", "rot13", "UTF-16", "no-such-charset"):
        assert codec_for(charset) == "utf-8"
    assert codec_for("8859/15") == "iso8859-15"
    assert codec_for("windows-1252") == "cp1252"
