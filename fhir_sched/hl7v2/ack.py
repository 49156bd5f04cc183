"""ACK messages as bytes, from the inbound MSH values and an outcome.

MSA-2 echoes MSH-10 verbatim (a leading space included: senders match on it). The ERR segment
follows the message's version: ERR-1 (ELD, code as a CE in its fourth component) before 2.5,
ERR-3 (table 0357) with ERR-4 severity from 2.5. MSA-3 text is sent only before 2.4, where
receivers read it. The ACK uses the message's own delimiters, version and character set.
"""

from __future__ import annotations

import codecs
from enum import StrEnum

from fhir_sched.hl7v2.er7 import CHARSETS
from fhir_sched.hl7v2.header import Header


class AckCode(StrEnum):
    AA = "AA"
    AE = "AE"
    AR = "AR"
    CA = "CA"
    CE = "CE"
    CR = "CR"


# HL7 table 0357, the codes this door sends.
ERROR_TEXT = {
    0: "Message accepted",
    100: "Segment sequence error",
    101: "Required field missing",
    102: "Data type error",
    103: "Table value not found",
    200: "Unsupported message type",
    201: "Unsupported event code",
    202: "Unsupported processing id",
    203: "Unsupported version id",
    204: "Unknown key identifier",
    205: "Duplicate key identifier",
    206: "Application record locked",
    207: "Application internal error",
}

def codec_for(character_set: str) -> str:
    """The Python codec for an MSH-18 value (the parser's table, so both read it alike); an
    unknown or empty value is UTF-8."""
    value = character_set.strip()
    if not value:
        return "utf-8"
    codec = CHARSETS.get(value.upper())
    if codec is not None:
        return codec
    try:
        name = codecs.lookup(value).name
        # Only text codecs that keep ASCII as ASCII: "base64", "rot13" or UTF-16 would turn
        # the reply into something no MLLP peer reads.
        if "MSH|^~\\&".encode(name) == b"MSH|^~\\&":
            return name
    except (LookupError, TypeError, ValueError, UnicodeError):
        pass
    return "utf-8"


def version_tuple(version: str) -> tuple[int, ...]:
    parts: list[int] = []
    for part in version.strip().split("."):
        if not (part.isascii() and part.isdigit()):  # "1¹".isdigit() is True; int() refuses
            break
        parts.append(int(part))
    return tuple(parts) or (2, 5)


def escape(text: str, field_separator: str, encoding_characters: str) -> str:
    """Delimiters in free text become HL7 escape sequences; the escape character first."""
    enc = encoding_characters if len(encoding_characters) >= 4 else "^~\\&"
    component, repetition, esc, subcomponent = enc[0], enc[1], enc[2], enc[3]
    text = text.replace(esc, f"{esc}E{esc}")
    for char, name in (
        (field_separator, "F"),
        (component, "S"),
        (repetition, "R"),
        (subcomponent, "T"),
    ):
        text = text.replace(char, f"{esc}{name}{esc}")
    return text.replace("\r", f"{esc}X0D{esc}").replace("\n", f"{esc}X0A{esc}")


def build_ack(
    header: Header,
    code: AckCode,
    *,
    control_id: str,
    timestamp: str,
    text: str = "",
    error_code: int | None = None,
    severity: str = "E",
) -> bytes:
    """One ACK message (no MLLP framing), CR after each segment."""
    fs, enc = header.field_separator or "|", header.encoding_characters or "^~\\&"
    comp, sub = enc[0], enc[3] if len(enc) > 3 else "&"
    version = header.version or "2.5.1"
    vt = version_tuple(version)
    ack_type = comp.join(["ACK", header.trigger_event, "ACK"]) if vt >= (2, 3, 1) else "ACK"
    msh = [
        "MSH",
        enc,
        header.receiving_application,
        header.receiving_facility,
        header.sending_application,
        header.sending_facility,
        timestamp,
        "",
        ack_type,
        control_id,
        header.processing_id or "P",
        version,
    ]
    if header.character_set:
        msh += ["", "", "", "", "", header.character_set]
    safe = escape(text, fs, enc)
    msa = ["MSA", str(code), header.control_id]
    if vt < (2, 4) and safe:
        msa.append(safe)
    segments = [fs.join(msh[:1]) + fs + fs.join(msh[1:]), fs.join(msa)]
    if code not in (AckCode.AA, AckCode.CA) and error_code is not None:
        meaning = ERROR_TEXT.get(error_code, "")
        if vt >= (2, 5):
            err = ["ERR", "", "", comp.join([str(error_code), meaning, "HL70357"]), severity]
            if safe:
                err += ["", "", "", safe]
            segments.append(fs.join(err))
        else:
            ce = sub.join([str(error_code), meaning, "HL70357"])
            segments.append(fs.join(["ERR", comp.join(["", "", "", ce])]))
    message = "\r".join(segments) + "\r"
    return message.encode(codec_for(header.character_set), errors="replace")


def _msh_line(raw: bytes) -> bytes:
    data = raw.lstrip(b"\x00\r\n\t \xef\xbb\xbf")
    return data.replace(b"\n", b"\r").split(b"\r", 1)[0][:_MSH_LIMIT]


_MSH_LIMIT = 8192  # an MSH longer than this is not worth reading for an AR


def _usable_char(ch: str) -> bool:
    return ch.isprintable() and not ch.isalnum() and not ch.isspace() and ch.isascii()


def _usable(separator: bytes) -> bool:
    return _usable_char(separator.decode("latin-1"))


def recover_header(raw: bytes) -> Header:
    """What can be read of an MSH that the parser refused: enough to address an AR.

    MSH-18 is read from the bytes first (the header is ASCII in every charset allowed), the
    line is then decoded by it, so the AR goes back in the sender's own charset and MSA-2 is
    MSH-10 as sent. Undeclared: UTF-8 when the bytes are, else Latin-1 (which never fails)."""
    line = _msh_line(raw)
    # A separator no reader could use (a letter, a digit, white space) means nothing after
    # "MSH" can be trusted: answer with the standard delimiters and no echoed fields.
    is_msh = line.startswith(b"MSH") and len(line) > 3 and _usable(line[3:4])
    fs_byte = line[3:4] if is_msh else b"|"
    parts = line.split(fs_byte) if is_msh else [b"MSH"]
    enc_raw = parts[1] if len(parts) > 1 else b""
    rep = enc_raw[1:2] if len(enc_raw) >= 2 else b"~"
    comp_b = enc_raw[0:1] if enc_raw else b"^"
    charset = ""
    if len(parts) > 17:
        charset = parts[17].split(rep, 1)[0].split(comp_b, 1)[0].decode("ascii", "replace").strip()
    codec = codec_for(charset) if charset else "utf-8"
    try:
        text = line.decode(codec)
    except UnicodeDecodeError:
        text = line.decode("latin-1")
    fs = text[3] if is_msh else "|"
    fields = text.split(fs) if is_msh else ["MSH"]

    def at(n: int) -> str:  # MSH-n; MSH-1 is the separator itself, so MSH-n is fields[n-1]
        return fields[n - 1] if 1 < n <= len(fields) else ""

    chars = at(2)
    distinct = len(set(chars + fs)) == len(chars) + 1
    enc = chars if 4 <= len(chars) <= 5 and distinct and all(map(_usable_char, chars)) else "^~\\&"
    msg_type = at(9).split(enc[0])
    return Header(
        field_separator=fs,
        encoding_characters=enc,
        sending_application=at(3),
        sending_facility=at(4),
        receiving_application=at(5),
        receiving_facility=at(6),
        timestamp=at(7),
        message_code=msg_type[0],
        trigger_event=msg_type[1] if len(msg_type) > 1 else "",
        message_structure=msg_type[2] if len(msg_type) > 2 else "",
        control_id=at(10),
        processing_id=at(11).split(enc[0])[0],
        version=at(12).split(enc[0])[0] or "2.5.1",
        sequence_number=at(13),
        accept_ack_type=at(15).strip(),
        application_ack_type=at(16).strip(),
        character_set=charset,
    )


def reject_unparseable(
    raw: bytes, *, control_id: str, timestamp: str, text: str, error_code: int = 200
) -> bytes:
    """A minimal AR for a frame whose MSH could not be parsed, echoing what could be recovered."""
    header = recover_header(raw)
    return build_ack(
        header,
        AckCode.AR,
        control_id=control_id,
        timestamp=timestamp,
        text=text,
        error_code=error_code,
    )
