"""ER7 (pipe-and-hat) bytes to a plain ``Message``: tolerant on what real senders do, precise about
what cannot be read.

Order matters, and it is data first: the bytes are normalised (CR, LF and CRLF all end a
segment; blank lines go), MSH-18 is read from the ASCII header *before* decoding (the header
itself is ASCII in every charset HL7 allows over MLLP), the frame is decoded by that charset (or,
undeclared, UTF-8 then Latin-1), then split into segments, fields, repetitions, components and
subcomponents, and each subcomponent unescaped. ``""`` (the explicit null: "delete this value")
is kept distinct from an empty value, because on an update they mean different things. Segment
order is not checked and Z-segments are kept: the SIU walk in ``siu`` asks for what it needs.

Only what makes the frame unreadable raises ``Er7Error``, which carries an HL7 table 0357 code
and the location so the ACK builder can answer AR with an ERR segment.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from fhir_sched.hl7v2.header import Header

# HL7 table 0211 (and the vendor spellings seen on the wire) -> Python codec.
CHARSETS: dict[str, str] = {
    "ASCII": "ascii",
    "8859/1": "latin-1",
    "8859/2": "iso8859-2",
    "8859/3": "iso8859-3",
    "8859/4": "iso8859-4",
    "8859/5": "iso8859-5",
    "8859/6": "iso8859-6",
    "8859/7": "iso8859-7",
    "8859/8": "iso8859-8",
    "8859/9": "iso8859-9",
    "8859/15": "iso8859-15",
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
    "UTF8": "utf-8",
    "WINDOWS-1252": "cp1252",
    "CP1252": "cp1252",
    "ISO-8859-1": "latin-1",
    "ISO_8859-1": "latin-1",
    "LATIN1": "latin-1",
    "ISO-8859-15": "iso8859-15",
}

# Formatting escapes (HL7 v2 2.7.4) that carry no text of their own in a FHIR string.
_DROPPED_ESCAPES = ("H", "N")
_FORMATTING = re.compile(r"^\.(sp|in|ti|sk|ce|fi|nf)([+-]?\d*)$")


class Er7Error(ValueError):
    """A frame that cannot be read. ``code`` is from HL7 table 0357 (100 segment sequence, 101
    required field missing, 102 data type error, 201 unsupported event...); ``segment`` and
    ``field`` locate it for ERR-2; ``header`` is whatever of MSH could be read, so the reply
    can still be addressed and MSA-2 can echo MSH-10."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        segment: str = "MSH",
        field: int | None = None,
        header: Header | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.segment = segment
        self.field = field
        self.header = header


@dataclass(frozen=True, slots=True)
class Encoding:
    """MSH-1 and MSH-2: the five separators, and the optional v2.7 truncation character."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    truncation: str = ""


Subcomponent = str | None  # None is the explicit null ``""``
Component = tuple[Subcomponent, ...]
Repetition = tuple[Component, ...]
Field = tuple[Repetition, ...]


@dataclass(frozen=True, slots=True)
class Segment:
    """One segment. Fields are numbered as in the standard (MSH-1 is the field separator)."""

    name: str
    fields: tuple[Field, ...]  # index 0 is unused so that fields[n] is field n
    raw: tuple[str, ...]  # each field's text as sent (escaped), same numbering

    def _sub(self, fld: int, component: int, repetition: int, sub: int) -> Subcomponent:
        try:
            return self.fields[fld][repetition][component - 1][sub - 1]
        except IndexError:
            return ""

    def get(self, fld: int, component: int = 1, repetition: int = 0, sub: int = 1) -> str:
        """The unescaped value; "" when absent, empty or explicitly null (see ``is_null``)."""
        if fld < 1 or component < 1 or sub < 1 or repetition < 0:
            raise ValueError("fields, components and subcomponents count from 1")
        return self._sub(fld, component, repetition, sub) or ""

    def is_null(self, fld: int, component: int = 1, repetition: int = 0, sub: int = 1) -> bool:
        """True when the sender sent ``""`` here: the value is to be deleted."""
        return self._sub(fld, component, repetition, sub) is None

    def has(self, fld: int) -> bool:
        """The field was sent with some content (a null counts)."""
        return fld < len(self.raw) and self.raw[fld] != ""

    def repetitions(self, fld: int) -> int:
        return len(self.fields[fld]) if fld < len(self.fields) else 0

    def components(self, fld: int, repetition: int = 0) -> list[str]:
        """Every component's first subcomponent, unescaped, nulls as ""."""
        try:
            rep = self.fields[fld][repetition]
        except IndexError:
            return []
        return [c[0] or "" for c in rep]

    def text(self, fld: int) -> str:
        """The field as sent, escapes and separators untouched (for lossless round trips)."""
        return self.raw[fld] if fld < len(self.raw) else ""


@dataclass(frozen=True, slots=True)
class Message:
    encoding: Encoding
    charset: str  # the Python codec the frame was decoded with
    all_segments: tuple[Segment, ...]
    header: Header
    warnings: tuple[str, ...] = field(default=())

    def segments(self, name: str | None = None) -> list[Segment]:
        if name is None:
            return list(self.all_segments)
        return [s for s in self.all_segments if s.name == name]

    def segment(self, name: str) -> Segment | None:
        return next((s for s in self.all_segments if s.name == name), None)

    def __iter__(self) -> Iterator[Segment]:
        return iter(self.all_segments)


# --- bytes -> text ----------------------------------------------------------------------------


def normalise(frame: bytes) -> bytes:
    """CR, LF and CRLF all end a segment; a BOM, leading whitespace and blank lines go."""
    if frame.startswith(codecs.BOM_UTF8):
        frame = frame[len(codecs.BOM_UTF8) :]
    frame = frame.replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    return b"\r".join(s for s in frame.split(b"\r") if s.strip()).lstrip() + b"\r"


def declared_charset(normalised: bytes) -> str:
    """MSH-18, first repetition, first component, read from the raw bytes (the MSH is ASCII)."""
    msh = normalised.split(b"\r", 1)[0]
    if len(msh) < 8 or not msh.startswith(b"MSH"):
        return ""
    fs, rep, comp = msh[3:4], msh[5:6], msh[4:5]
    parts = msh.split(fs)
    if len(parts) < 18:
        return ""
    value = parts[17].split(rep, 1)[0].split(comp, 1)[0]
    return value.decode("ascii", "replace").strip()


def _text_codec(name: str) -> str | None:
    """A Python codec for ``name`` only if it is a character set that keeps ASCII as ASCII:
    ``codecs`` also knows ``base64``, ``rot13``, ``zlib`` and UTF-16, none of which can be the
    charset of a message whose MSH segment we just read as ASCII."""
    try:
        info = codecs.lookup(name)
        if not getattr(info, "_is_text_encoding", True):
            return None
        if "MSH|^~\\&".encode(info.name) != b"MSH|^~\\&":
            return None
    except (LookupError, UnicodeError, TypeError, ValueError):
        return None
    return info.name


def decode(normalised: bytes, declared: str, default_charset: str) -> tuple[str, str, list[str]]:
    """(text, codec, warnings). A declared charset is honoured; one the bytes contradict, or
    one we do not know, falls back to ``default_charset`` then Latin-1 with a warning, because
    refusing a booking over one mis-declared byte helps nobody."""
    warnings: list[str] = []
    codec = CHARSETS.get(declared.upper()) if declared else None
    if declared and codec is None:
        codec = _text_codec(declared)
        if codec is None:
            warnings.append(f"MSH-18 {declared!r} is not a known character set")
    if codec is not None:
        try:
            return normalised.decode(codec), codec, warnings
        except (UnicodeDecodeError, LookupError, TypeError, ValueError):
            warnings.append(f"MSH-18 says {declared!r} but the bytes are not; decoded by fallback")
    for candidate in (default_charset, "latin-1"):
        try:
            return normalised.decode(candidate), codecs.lookup(candidate).name, warnings
        except UnicodeDecodeError:
            continue
    return normalised.decode("latin-1"), "iso8859-1", warnings  # pragma: no cover - latin-1 total


# --- text -> segments -------------------------------------------------------------------------


def _encoding(msh: str) -> Encoding:
    if len(msh) < 4 or not msh.startswith("MSH"):
        raise Er7Error(100, "the message does not start with an MSH segment", field=None)
    fs = msh[3]
    chars = msh[4:].split(fs, 1)[0]
    seps = [fs, *chars]
    bad = (
        fs.isalnum()
        or fs.isspace()
        or len(chars) not in (4, 5)
        or len(set(seps)) != len(seps)
        or any(c.isalnum() or c.isspace() for c in chars)
    )
    if bad:
        raise Er7Error(
            102, f"MSH-1/MSH-2 {msh[3:8]!r} are not 4 or 5 distinct encoding characters", field=2
        )
    return Encoding(fs, chars[0], chars[1], chars[2], chars[3], chars[4] if len(chars) == 5 else "")


def unescape(value: str, enc: Encoding, charset: str = "utf-8") -> str:
    """HL7 v2 escape sequences (2.7.4): separators, \\Xhh\\ bytes in the message charset,
    \\.br\\ and \\.sp\\ as line breaks; highlighting, charset switches and local \\Z..\\ go.
    An unterminated or unknown sequence is kept literally."""
    esc = enc.escape
    if esc not in value:
        return value
    simple = {
        "F": enc.field,
        "S": enc.component,
        "T": enc.subcomponent,
        "R": enc.repetition,
        "E": esc,
        "P": enc.truncation,
    }
    out: list[str] = []
    i = 0
    while i < len(value):
        ch = value[i]
        end = value.find(esc, i + 1) if ch == esc else -1
        if end == -1:
            out.append(ch)
            i += 1
            continue
        seq = value[i + 1 : end]
        replacement = _escape_text(seq, simple, charset)
        if replacement is None:
            out.append(ch)
            i += 1
            continue
        out.append(replacement)
        i = end + 1
    return "".join(out)


def _escape_text(seq: str, simple: dict[str, str], charset: str) -> str | None:
    if simple.get(seq):
        return simple[seq]
    if seq in _DROPPED_ESCAPES or (seq[:1] in ("C", "M", "Z") and len(seq) > 1):
        return ""
    if seq == ".br":
        return "\n"
    m = _FORMATTING.match(seq)
    if m:
        if m[1] == "sp":
            return "\n" * (min(int(m[2]), 10) if m[2].isdigit() else 1)  # no memory bombs
        return ""
    if seq[:1] == "X" and len(seq) > 1 and len(seq) % 2 == 1:
        try:
            return bytes.fromhex(seq[1:]).decode(charset, "replace")
        except ValueError:
            return None
    return None


def _split_field(text: str, enc: Encoding, charset: str) -> Field:
    def sub(value: str) -> Subcomponent:
        return None if value == '""' else unescape(value, enc, charset)

    return tuple(
        tuple(
            tuple(sub(s) for s in comp.split(enc.subcomponent)) for comp in rep.split(enc.component)
        )
        for rep in text.split(enc.repetition)
    )


def _segment(line: str, enc: Encoding, charset: str) -> Segment:
    parts = line.split(enc.field)
    name = parts[0].strip()
    if name == "MSH":
        chars = parts[1] if len(parts) > 1 else ""
        raw = ("", enc.field, chars, *parts[2:])
        fields: list[Field] = [(), (((enc.field,),),), (((chars,),),)]
        fields += [_split_field(p, enc, charset) for p in parts[2:]]
    else:
        raw = ("", *parts[1:])
        fields = [(), *(_split_field(p, enc, charset) for p in parts[1:])]
    return Segment(name, tuple(fields), raw)


def _header(msh: Segment, enc: Encoding) -> Header:
    return Header(
        field_separator=enc.field,
        encoding_characters=msh.text(2),
        sending_application=msh.text(3),
        sending_facility=msh.text(4),
        receiving_application=msh.text(5),
        receiving_facility=msh.text(6),
        timestamp=msh.get(7),
        message_code=msh.get(9, 1).strip(),
        trigger_event=msh.get(9, 2).strip(),
        message_structure=msh.get(9, 3).strip(),
        control_id=msh.text(10),
        processing_id=msh.get(11, 1),
        version=msh.get(12, 1).strip(),
        sequence_number=msh.get(13),
        accept_ack_type=msh.get(15).strip(),
        application_ack_type=msh.get(16).strip(),
        character_set=msh.get(18).strip(),
    )


def parse(frame: bytes, default_charset: str = "utf-8") -> Message:
    """One ER7 message (no MLLP framing) to a ``Message``. Raises ``Er7Error`` when the MSH
    cannot be read, or MSH-9 (type and trigger) or MSH-10 is missing."""
    data = normalise(frame)
    declared = declared_charset(data)
    text, codec, warnings = decode(data, declared, default_charset)
    lines = [line for line in text.split("\r") if line.strip()]
    if not lines:
        raise Er7Error(100, "the frame holds no segments")
    enc = _encoding(lines[0])
    segments = tuple(_segment(line, enc, codec) for line in lines)
    header = _header(segments[0], enc)
    for name, fld, value in (
        ("MSH-9.1 message type", 9, header.message_code),
        ("MSH-9.2 trigger event", 9, header.trigger_event),
        ("MSH-10 message control id", 10, header.control_id.strip()),
        ("MSH-12 version id", 12, header.version),
    ):
        if not value:
            raise Er7Error(101, f"{name} is missing", field=fld, header=header)
    bad_names = [s.name for s in segments if not re.fullmatch(r"[A-Z][A-Z0-9]{2}", s.name)]
    warnings += [f"segment name {n!r} is not three letters or digits" for n in bad_names]
    return Message(enc, codec, segments, header, tuple(warnings))
