"""Splitting a body or file into HL7 v2 messages, and answering in the shape they came in."""

from __future__ import annotations

from pathlib import Path

from fhir_sched.hl7v2.batch import join_acks, split_messages
from fhir_sched.hl7v2.send import ack_code

FIXTURES = Path(__file__).parent / "fixtures" / "siu"
ONE = b"MSH|^~\\&|A|B|C|D|20370101||SIU^S12|1|P|2.5\rSCH|1\rPID|1\r"
TWO = b"MSH|^~\\&|A|B|C|D|20370101||SIU^S12|2|P|2.5\rSCH|2\r"


def test_one_message_is_one_message() -> None:
    assert split_messages(ONE) == [ONE]


def test_messages_back_to_back_split_at_each_msh() -> None:
    assert split_messages(ONE + TWO) == [ONE, TWO]


def test_blank_lines_and_any_line_endings_separate_nothing_but_messages() -> None:
    body = ONE.replace(b"\r", b"\r\n") + b"\r\n\r\n" + TWO.replace(b"\r", b"\n") + b"\n\n"
    assert split_messages(body) == [ONE, TWO]


def test_mllp_framed_body_is_read_frame_by_frame() -> None:
    body = b"\x0b" + ONE + b"\x1c\x0d" + b"\x0b" + TWO + b"\x1c\x0d"
    assert split_messages(body) == [ONE, TWO]


def test_batch_envelope_segments_are_dropped() -> None:
    body = b"FHS|^~\\&\rBHS|^~\\&\r" + ONE + TWO + b"BTS|2\rFTS|1\r"
    assert split_messages(body) == [ONE, TWO]


def test_body_without_message_gives_nothing() -> None:
    assert split_messages(b"\r\n  \n") == []


def test_every_fixture_file_is_one_message() -> None:
    files = sorted(FIXTURES.glob("*.hl7"))
    assert files
    for path in files:
        messages = split_messages(path.read_bytes())
        assert len(messages) == 1, path.name
        assert messages[0].startswith(b"MSH")


def test_acks_come_back_framed_for_framed_input_and_blank_line_separated_otherwise() -> None:
    acks = [b"MSH|a\rMSA|AA|1\r", b"MSH|b\rMSA|AE|2\r"]
    assert join_acks(acks, framed=True) == (
        b"\x0bMSH|a\rMSA|AA|1\r\x1c\x0d\x0bMSH|b\rMSA|AE|2\r\x1c\x0d")
    assert split_messages(join_acks(acks, framed=False)) == acks


def test_ack_code_reads_msa_1_with_any_field_separator() -> None:
    assert ack_code(b"MSH|^~\\&|X\rMSA|AE|123\r") == "AE"
    assert ack_code(b"MSH#^~\\&#X\nMSA#CA#9\n") == "CA"
    assert ack_code(b"MSH|^~\\&|X\r") == ""
