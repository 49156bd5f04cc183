"""The MLLP decoder: frames split anywhere, many per chunk, garbage skipped, memory bounded."""

from __future__ import annotations

from fhir_sched.hl7v2.mllp import Decoder, Frame, Restarted, Skipped, TooLarge, encode

MSG = "MSH|^~\\&|A|B|C|D|20240101||SIU^S12|1|P|2.5.1|||||FR|UNICODE UTF-8\rSCH|1|Élysées\r".encode()


def frames(events: list[object]) -> list[bytes]:
    return [e.payload for e in events if isinstance(e, Frame)]


def test_encode_wraps_in_vt_fs_cr() -> None:
    assert encode(b"x") == b"\x0bx\x1c\x0d"


def test_frame_fed_byte_by_byte_including_inside_utf8_character_is_whole() -> None:
    d = Decoder()
    out: list[object] = []
    for b in encode(MSG):
        out += d.feed(bytes([b]))
    assert frames(out) == [MSG]
    assert frames(out)[0].decode() == MSG.decode()


def test_two_and_ten_frames_in_one_chunk_come_out_in_order() -> None:
    for count in (2, 10):
        msgs = [MSG + str(i).encode() for i in range(count)]
        d = Decoder()
        assert frames(d.feed(b"".join(encode(m) for m in msgs))) == msgs


def test_garbage_before_start_block_is_skipped_and_counted() -> None:
    d = Decoder()
    out = d.feed(b"hello" + encode(MSG))
    assert out == [Skipped(5), Frame(MSG)]


def test_fs_without_cr_ends_the_frame() -> None:
    d = Decoder()
    assert frames(d.feed(b"\x0bA\x1c\x0bB\x1c")) == [b"A", b"B"]


def test_lf_after_fs_is_ignored_silently() -> None:
    d = Decoder()
    out = d.feed(encode(b"A") + b"\n" + encode(b"B") + b"\r\n")
    assert out == [Frame(b"A"), Frame(b"B")]


def test_stray_fs_outside_a_frame_is_ignored() -> None:
    d = Decoder()
    assert d.feed(b"\x1c\x0d\x1c" + encode(b"A")) == [Frame(b"A")]


def test_empty_frame_is_a_frame() -> None:
    assert Decoder().feed(b"\x0b\x1c\x0d") == [Frame(b"")]


def test_vt_inside_an_unterminated_frame_restarts_it() -> None:
    d = Decoder()
    assert d.feed(b"\x0bpartial\x0bA\x1c\x0d") == [Restarted(7), Frame(b"A")]


def test_oversize_frame_is_reported_once_and_the_next_frame_still_decodes() -> None:
    d = Decoder(max_frame_bytes=100)
    out: list[object] = []
    out += d.feed(b"\x0b" + b"x" * 60)
    out += d.feed(b"x" * 10_000)
    assert d.buffered <= 100
    out += d.feed(b"\x1c\x0d" + encode(b"A"))
    assert isinstance(out[0], TooLarge)
    assert out[0].size == 10_060
    assert out[1:] == [Frame(b"A")]


def test_fifty_megabytes_without_a_start_byte_keep_the_buffer_empty() -> None:
    d = Decoder(max_frame_bytes=1024)
    chunk = b"g" * (1024 * 1024)
    for _ in range(50):
        assert d.feed(chunk) == []
        assert d.buffered == 0
    assert d.flush_skipped() == [Skipped(50 * 1024 * 1024)]


def test_fifty_megabytes_inside_one_frame_keep_the_buffer_bounded() -> None:
    d = Decoder(max_frame_bytes=1024)
    d.feed(b"\x0b")
    chunk = b"g" * (1024 * 1024)
    for _ in range(50):
        d.feed(chunk)
        assert d.buffered <= 1024
    (event,) = d.feed(b"\x1c")
    assert isinstance(event, TooLarge)
    assert event.size == 50 * 1024 * 1024
