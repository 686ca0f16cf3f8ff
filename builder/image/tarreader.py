"""Reading tar streams: USTAR, PAX and GNU long names, one member at a time, with hard limits.

A layer is untrusted, so the reader checks every header's checksum, caps the
size of metadata it buffers (PAX records, GNU long names), refuses sparse
files and exotic entry types, and hands file content out as a bounded stream
rather than reading it into memory. Written here rather than using
``tarfile`` because extraction of small-file trees is header-parsing bound.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Iterator

from builder.image.errors import LayerError

BLOCK = 512
MAX_META_BYTES = 1 << 20   # PAX records or a GNU long name larger than this is hostile
_READ_SIZE = 1 << 20

REGULAR = "0"
HARDLINK = "1"
SYMLINK = "2"
CHARDEV = "3"
BLOCKDEV = "4"
DIRECTORY = "5"
FIFO = "6"
_REGULAR_ALIASES = {"\0": REGULAR, "7": REGULAR}  # old tars: NUL type; "contiguous" file
_KNOWN = {REGULAR, HARDLINK, SYMLINK, CHARDEV, BLOCKDEV, DIRECTORY, FIFO}


@dataclass
class TarMember:
    """One entry's metadata; the content (``size`` bytes) follows it in the stream."""

    name: str
    type: str
    mode: int
    uid: int
    gid: int
    size: int
    mtime: int
    linkname: str = ""
    devmajor: int = 0
    devminor: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)


class _Stream:
    """Block-aligned reads from a byte stream without quadratic copying."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.buf = b""
        self.pos = 0

    def _fill(self) -> bool:
        data = self.raw.read(_READ_SIZE)
        if not data:
            return False
        self.buf = self.buf[self.pos:] + data if self.pos < len(self.buf) else data
        self.pos = 0
        return True

    def read(self, n: int) -> bytes:
        """Exactly ``n`` bytes, or fewer only at the end of the stream."""
        while len(self.buf) - self.pos < n:
            if not self._fill():
                break
        out = self.buf[self.pos:self.pos + n]
        self.pos += len(out)
        return out

    def copy(self, n: int, write: Callable[[memoryview], object]) -> int:
        """Pass ``n`` bytes to ``write`` in chunks; returns how many there were."""
        done = 0
        while done < n:
            if self.pos >= len(self.buf) and not self._fill():
                break
            take = min(n - done, len(self.buf) - self.pos)
            write(memoryview(self.buf)[self.pos:self.pos + take])
            self.pos += take
            done += take
        return done


    def skip(self, n: int) -> int:
        """Drop ``n`` bytes; returns how many there were."""
        done = 0
        while done < n:
            if self.pos >= len(self.buf) and not self._fill():
                break
            take = min(n - done, len(self.buf) - self.pos)
            self.pos += take
            done += take
        return done


class MemberContent:
    """The content of the current member: at most ``size`` bytes, read once."""

    def __init__(self, stream: _Stream, name: str, size: int) -> None:
        self._stream = stream
        self._name = name
        self.left = size

    def read_all(self) -> bytes:
        """The rest of the content as bytes (for small files)."""
        data = self._stream.read(self.left)
        self.left -= len(data)
        if self.left:
            raise LayerError(f"layer tar is truncated inside {self._name!r}")
        return data

    def copy_to(self, write: Callable[[memoryview], object]) -> None:
        self.left -= self._stream.copy(self.left, write)
        if self.left:
            raise LayerError(f"layer tar is truncated inside {self._name!r}")


def _number(field_: bytes, what: str) -> int:
    if field_[0] & 0x80:  # GNU base-256 for values octal cannot hold
        value = int.from_bytes(field_[1:], "big")
        return -((1 << (8 * len(field_) - 1)) - value) if field_[0] & 0x40 else value
    try:
        return int(field_.rstrip(b"\0 ") or b"0", 8)  # the common case: digits, NUL
    except ValueError:
        pass
    text = field_.split(b"\0", 1)[0].strip(b" ")
    try:
        return int(text or b"0", 8)
    except ValueError:
        raise LayerError(f"layer tar header has a malformed {what} field {text[:20]!r}") from None


def _text(field_: bytes) -> str:
    return field_.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _parse_pax(data: bytes) -> dict[str, bytes]:
    records: dict[str, bytes] = {}
    pos = 0
    while pos < len(data):
        if data[pos] == 0:  # some writers pad the record block with NULs
            break
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            raise LayerError("layer tar has a malformed PAX record") from None
        record = data[space + 1:pos + length]
        if length <= 0 or space < 0 or pos + length > len(data) or not record.endswith(b"\n") or b"=" not in record:
            raise LayerError("layer tar has a malformed PAX record")
        key, _, value = record[:-1].partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value
        pos += length
    return records


def read_members(raw: BinaryIO) -> Iterator[tuple[TarMember, MemberContent]]:
    """Yield each member with its content; content left unread is skipped."""
    stream = _Stream(raw)
    pax_global: dict[str, bytes] = {}
    pax: dict[str, bytes] = {}
    long_name: str | None = None
    long_link: str | None = None
    while True:
        block = stream.read(BLOCK)
        if len(block) < BLOCK:
            if not block:
                return  # no end-of-archive marker; tolerated, as GNU tar does
            raise LayerError("layer tar is truncated inside a header")
        if block.count(0) == BLOCK:
            return  # end of archive
        try:
            stored = _number(block[148:156], "checksum")
        except LayerError:
            stored = -1
        if stored != sum(block) - sum(block[148:156]) + 256:  # the field counts as 8 spaces
            raise LayerError("layer tar header checksum mismatch: not a tar stream, or corrupt")
        typeflag = chr(block[156])
        size = _number(block[124:136], "size")
        if size < 0:
            raise LayerError("layer tar header has a negative size")

        if typeflag in ("x", "g", "L", "K"):
            if size > MAX_META_BYTES:
                raise LayerError(f"layer tar has an extended header of {size} bytes (limit {MAX_META_BYTES})")
            data = stream.read(size)
            if len(data) < size:
                raise LayerError("layer tar is truncated inside an extended header")
            stream.read(-size % BLOCK)
            if typeflag == "x":
                pax.update(_parse_pax(data))
            elif typeflag == "g":
                pax_global.update(_parse_pax(data))
            elif typeflag == "L":
                long_name = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            else:
                long_link = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            continue

        records = {**pax_global, **pax} if pax_global else pax
        name = _text(block[0:100])
        if block[257:262] == b"ustar" and block[345]:
            name = _text(block[345:500]) + "/" + name
        if long_name is not None:
            name = long_name
        if long_link is not None:
            linkname = long_link
        else:
            linkname = _text(block[157:257]) if block[157] else ""
        member = TarMember(
            name=name,
            type=_REGULAR_ALIASES.get(typeflag, typeflag),
            mode=_number(block[100:108], "mode"),
            uid=_number(block[108:116], "uid"),
            gid=_number(block[116:124], "gid"),
            size=size,
            mtime=_number(block[136:148], "mtime"),
            linkname=linkname,
        )
        if typeflag in (CHARDEV, BLOCKDEV):
            member.devmajor = _number(block[329:337], "devmajor")
            member.devminor = _number(block[337:345], "devminor")
        if records:
            _apply_pax(member, records)
        pax, long_name, long_link = {}, None, None

        if typeflag == "S" or (records and any(k.startswith("GNU.sparse.") for k in records)):
            raise LayerError(f"refusing layer entry {member.name!r}: sparse files are not supported")
        if member.type == REGULAR and member.name.endswith("/"):
            member.type = DIRECTORY  # pre-POSIX tars mark directories by a trailing slash
        if member.type not in _KNOWN:
            raise LayerError(f"refusing layer entry {member.name!r}: unsupported tar entry type {typeflag!r}")
        if member.type != REGULAR:
            member.size = 0  # header-only types carry no data, whatever the header says

        content = MemberContent(stream, member.name, member.size)
        yield member, content
        # Skip what the consumer left unread, and the padding to the next header.
        rest = content.left + (-member.size % BLOCK)
        if rest and stream.skip(rest) < rest:
            raise LayerError(f"layer tar is truncated inside {member.name!r}")


def _apply_pax(member: TarMember, records: dict[str, bytes]) -> None:
    for key, value in records.items():
        if key == "path":
            member.name = value.decode("utf-8", "surrogateescape")
        elif key == "linkpath":
            member.linkname = value.decode("utf-8", "surrogateescape")
        elif key in ("size", "uid", "gid"):
            try:
                setattr(member, key, int(value))
            except ValueError:
                raise LayerError(f"layer tar has a malformed PAX {key!r} record") from None
        elif key == "mtime":
            try:
                member.mtime = int(float(value))
            except (ValueError, OverflowError):
                raise LayerError("layer tar has a malformed PAX 'mtime' record") from None
        elif key.startswith("SCHILY.xattr."):
            member.xattrs[key[len("SCHILY.xattr."):]] = value
