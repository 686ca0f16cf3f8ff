"""Reading tar streams: USTAR, PAX and GNU long names, one member at a time, with hard limits.

A layer is untrusted, so the reader checks every header's checksum, caps the
size of metadata it buffers (PAX records, GNU long names), refuses sparse
files and exotic entry types, and hands large file content out as a bounded
stream rather than reading it into memory. Written here rather than using
``tarfile`` because extracting trees of small files is header-parsing bound:
the common header (plain USTAR numbers, ASCII) is decoded with a handful of C
calls, anything unusual takes the careful path.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Iterator

from builder.image.errors import LayerError

BLOCK = 512
MAX_META_BYTES = 1 << 20   # PAX records or a GNU long name larger than this is hostile
INLINE_LIMIT = 1 << 20     # content up to this size comes with its member, as bytes
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

_ZERO_BLOCK = bytes(BLOCK)
# mode uid gid size mtime checksum, without their terminators (see _numbers)
_COMMON_FIELDS = struct.Struct("7sx7sx7sx11sx11sx6s")
_TERMINATORS = b"\0\0\0\0\0\0 "


@dataclass(slots=True)
class TarMember:
    """One entry's metadata; ``data`` holds its content when that is at most ``INLINE_LIMIT``."""

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
    data: bytes | None = None   # None: stream it with ``TarReader.copy_content``


class TarReader:
    """The members of a tar stream, in order; content left unread is skipped.

    Iterate for the members. A member with ``data is None`` (a large regular
    file) has its content streamed by ``copy_content`` before the next one.
    """

    def __init__(self, raw: BinaryIO, inline_limit: int = INLINE_LIMIT) -> None:
        self._raw = raw
        self._inline = inline_limit
        self._buf = b""
        self._pos = 0
        self._spill: bytes | None = None  # a chunk partly copied into _buf, used from _spill_pos
        self._spill_pos = 0
        self._left = 0        # content of the current streamed member not yet read
        self._name = ""

    # -- buffer

    def _next_chunk(self) -> tuple[bytes, int]:
        """The next piece of the stream and where its unread part starts."""
        if self._spill is not None:
            chunk, self._spill = self._spill, None
            return chunk, self._spill_pos
        return self._raw.read(_READ_SIZE), 0

    def _refill(self, buf, pos: int, need: int, name: str):
        """``_fill`` from the (buffer, position) a reading loop keeps in locals, and the pair to
        go on with; a stream that ends first is a truncated layer."""
        self._buf, self._pos = buf, pos
        if not self._fill(need):
            raise LayerError(f"layer tar is truncated inside {name!r}")
        return self._buf, self._pos

    def _fill(self, need: int) -> bool:
        """Make ``need`` bytes available from ``_pos``; False when the stream ends first.

        A chunk is used in place when the buffer is used up; only a record that
        straddles two chunks is copied (what is left, plus just enough of the next).
        """
        buf, pos = self._buf, self._pos
        have = len(buf) - pos
        if have >= need:
            return True
        if have <= 0:
            chunk, off = self._next_chunk()
            if not chunk:
                self._buf, self._pos = b"", 0
                return False
            buf, pos, have = chunk, off, len(chunk) - off
            if have >= need:
                self._buf, self._pos = buf, pos
                return True
        parts = [buf[pos:]]
        while have < need:
            chunk, off = self._next_chunk()
            if not chunk:
                break
            take = min(need - have, len(chunk) - off)
            parts.append(chunk[off:off + take])
            have += take
            if off + take < len(chunk):
                self._spill, self._spill_pos = chunk, off + take
        self._buf, self._pos = b"".join(parts), 0
        return have >= need

    def _read(self, n: int) -> bytes:
        """Exactly ``n`` bytes, or fewer only at the end of the stream."""
        if len(self._buf) - self._pos < n:
            self._fill(n)
        out = self._buf[self._pos:self._pos + n]
        self._pos += len(out)
        return out

    def _skip(self, n: int) -> int:
        """Drop up to ``n`` bytes without holding them all; returns how many there were."""
        done = 0
        while done < n:
            if self._pos >= len(self._buf) and not self._fill(1):
                break
            take = min(n - done, len(self._buf) - self._pos)
            self._pos += take
            done += take
        return done

    def copy_content(self, write: Callable[[memoryview], object]) -> None:
        """Pass the current streamed member's content to ``write`` in chunks."""
        while self._left:
            if self._pos >= len(self._buf) and not self._fill(1):
                raise LayerError(f"layer tar is truncated inside {self._name!r}")
            take = min(self._left, len(self._buf) - self._pos)
            write(memoryview(self._buf)[self._pos:self._pos + take])
            self._pos += take
            self._left -= take

    # -- members

    def __iter__(self) -> Iterator[TarMember]:
        for m in self.entries():
            yield m if m.__class__ is TarMember else plain_member(m)

    def entries(self) -> Iterator[TarMember | PlainFile]:
        """Like iterating, but plain regular files come as ``PlainFile`` tuples (cheaper)."""
        # The buffer lives in locals between fills (attribute access per entry shows in
        # profiles); it is handed back to self around fills and streamed members.
        buf, pos = self._buf, self._pos
        pax_global: dict[str, bytes] = {}
        pax: dict[str, bytes] = {}
        long_name: str | None = None
        long_link: str | None = None
        extended = False  # any of the four above applies to the next member
        inline = self._inline
        while True:
            if len(buf) - pos < BLOCK:
                self._buf, self._pos = buf, pos
                full = self._fill(BLOCK)
                buf, pos = self._buf, self._pos
                if not full:
                    if pos == len(buf):
                        return  # no end-of-archive marker; tolerated, as GNU tar does
                    raise LayerError("layer tar is truncated inside a header")
            block = buf[pos:pos + BLOCK]
            pos += BLOCK
            if block == _ZERO_BLOCK:
                self._buf, self._pos = buf, pos
                return  # end of archive
            mode, uid, gid, size, mtime = _numbers(block)
            flag = block[156]

            if (flag == 48 or flag == 0) and not extended and size <= inline:
                # The common case: a plain regular file whose content fits in memory.
                end = block.find(0, 0, 100)
                name = block[:end if end >= 0 else 100].decode("utf-8", "surrogateescape")
                if block[345] and block[257:262] == b"ustar":
                    name = _text(block[345:500]) + "/" + name
                if name[-1:] != "/":
                    padded = (size + BLOCK - 1) & -BLOCK
                    if len(buf) - pos < padded:
                        buf, pos = self._refill(buf, pos, padded, name)
                    yield (name, mode, uid, gid, size, mtime, buf[pos:pos + size])
                    pos += padded
                    continue
                yield TarMember(name, DIRECTORY, mode, uid, gid, 0, mtime)  # pre-POSIX: no data
                continue

            typeflag = chr(flag)
            if typeflag in ("x", "g", "L", "K"):
                if size > MAX_META_BYTES:
                    raise LayerError(f"layer tar has an extended header of {size} bytes (limit {MAX_META_BYTES})")
                self._buf, self._pos = buf, pos
                data = self._read(size)
                if len(data) < size:
                    raise LayerError("layer tar is truncated inside an extended header")
                self._skip(-size % BLOCK)
                buf, pos = self._buf, self._pos
                if typeflag == "x":
                    pax.update(_parse_pax(data))
                elif typeflag == "g":
                    pax_global.update(_parse_pax(data))
                elif typeflag == "L":
                    long_name = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                else:
                    long_link = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                extended = True
                continue

            member = _member(block, typeflag, mode, uid, gid, size, mtime)
            if extended:
                if long_name is not None:
                    member.name = long_name
                if long_link is not None:
                    member.linkname = long_link
                records = {**pax_global, **pax} if pax_global else pax
                if records:
                    _apply_pax(member, records)
                    if any(k.startswith("GNU.sparse.") for k in records):
                        raise LayerError(f"refusing layer entry {member.name!r}: sparse files are not supported")
                pax, long_name, long_link = {}, None, None
                extended = bool(pax_global)
            _check_type(member, typeflag, block)
            size = member.size
            if size <= inline:
                padded = size + (-size % BLOCK)
                if len(buf) - pos < padded:
                    buf, pos = self._refill(buf, pos, padded, member.name)
                if member.type == REGULAR:
                    member.data = buf[pos:pos + size]
                pos += padded
                yield member
                continue
            # Large content is streamed by the consumer; what it leaves unread is skipped.
            self._buf, self._pos = buf, pos
            self._left, self._name = size, member.name
            yield member
            rest = self._left + (-size % BLOCK)
            self._left = 0
            if rest and self._skip(rest) < rest:
                raise LayerError(f"layer tar is truncated inside {member.name!r}")
            buf, pos = self._buf, self._pos


def _member(block: bytes, typeflag: str, mode: int, uid: int, gid: int, size: int, mtime: int) -> TarMember:
    """The member a header block describes, before extended headers apply."""
    name = _text(block[0:100])
    if block[345] and block[257:262] == b"ustar":
        name = _text(block[345:500]) + "/" + name
    return TarMember(name, _REGULAR_ALIASES.get(typeflag, typeflag), mode, uid, gid, size, mtime,
                     _text(block[157:257]) if block[157] else "")


def _check_type(member: TarMember, typeflag: str, block: bytes) -> None:
    """Refuse sparse and unknown types; header-only types carry no data, whatever the header says."""
    if member.type == REGULAR:
        if member.name.endswith("/"):
            member.type, member.size = DIRECTORY, 0  # pre-POSIX tars mark directories so
        return
    if typeflag in (CHARDEV, BLOCKDEV):
        member.devmajor = _number(block[329:337], "devmajor")
        member.devminor = _number(block[337:345], "devminor")
    if typeflag == "S":
        raise LayerError(f"refusing layer entry {member.name!r}: sparse files are not supported")
    if member.type not in _KNOWN:
        raise LayerError(f"refusing layer entry {member.name!r}: unsupported tar entry type {typeflag!r}")
    member.size = 0


# A plain regular file (no extended headers, content inline) as the reader's fast path yields it:
# (name, mode, uid, gid, size, mtime, data).
PlainFile = tuple[str, int, int, int, int, int, bytes]


def plain_member(entry: PlainFile) -> TarMember:
    """The ``TarMember`` of a ``PlainFile`` tuple."""
    name, mode, uid, gid, size, mtime, data = entry
    return TarMember(name, REGULAR, mode, uid, gid, size, mtime, "", data=data)


def read_members(raw: BinaryIO) -> Iterator[TarMember]:
    """The members of the tar stream ``raw`` (content of small ones in ``data``)."""
    return iter(TarReader(raw))


def _numbers(block: bytes) -> tuple[int, int, int, int, int]:
    """(mode, uid, gid, size, mtime) of a header block, once its checksum is verified."""
    # The common layout (GNU tar, Go, Python): each number all octal digits up to a NUL at
    # the field's end, the checksum "dddddd\0 ". Then the non-digits of bytes 100-155 are
    # exactly those seven terminators, and a field that is shifted would put a NUL among
    # the digits int() is given, which it refuses. Anything else takes the careful parser.
    if block[100:156].translate(None, b"01234567") != _TERMINATORS:
        return _numbers_slow(block)
    mode, uid, gid, size, mtime, stored = _COMMON_FIELDS.unpack_from(block, 100)
    try:
        mode, size, mtime, stored = int(mode, 8), int(size, 8), int(mtime, 8), int(stored, 8)
        uid = 0 if uid == b"0000000" else int(uid, 8)
        gid = 0 if gid == b"0000000" else int(gid, 8)
    except ValueError:
        return _numbers_slow(block)
    if block.isascii():
        # An ASCII block sums to at most 127 * 512 < 65521: Adler-32's low half is the sum + 1.
        total = (zlib.adler32(block) & 0xFFFF) - 1
    else:
        total = sum(block)
    if stored != total - sum(block[148:156]) + 256:  # the field itself counts as spaces
        raise LayerError("layer tar header checksum mismatch: not a tar stream, or corrupt")
    return mode, uid, gid, size, mtime


def _numbers_slow(block: bytes) -> tuple[int, int, int, int, int]:
    try:
        stored = _number(block[148:156], "checksum")
    except LayerError:
        stored = -1
    if stored != sum(block) - sum(block[148:156]) + 256:
        raise LayerError("layer tar header checksum mismatch: not a tar stream, or corrupt")
    size = _number(block[124:136], "size")
    if size < 0:
        raise LayerError("layer tar header has a negative size")
    uid, gid = _number(block[108:116], "uid"), _number(block[116:124], "gid")
    if uid < 0 or gid < 0:
        raise LayerError("layer tar header has a negative owner")
    return _number(block[100:108], "mode"), uid, gid, size, _number(block[136:148], "mtime")


def _number(field_: bytes, what: str) -> int:
    if field_[0] & 0x80:  # GNU base-256 for values octal cannot hold
        value = int.from_bytes(field_[1:], "big")
        return -((1 << (8 * len(field_) - 1)) - value) if field_[0] & 0x40 else value
    text = field_.split(b"\0", 1)[0].strip(b" ")
    if not text.isdigit() and text:
        raise LayerError(f"layer tar header has a malformed {what} field {text[:20]!r}")
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


def _apply_pax(member: TarMember, records: dict[str, bytes]) -> None:
    for key, value in records.items():
        if key == "path":
            member.name = value.decode("utf-8", "surrogateescape")
            if "\0" in member.name:
                raise LayerError(f"refusing layer entry {member.name!r}: NUL in name")
        elif key == "linkpath":
            member.linkname = value.decode("utf-8", "surrogateescape")
            if "\0" in member.linkname:
                raise LayerError(f"refusing layer entry {member.name!r}: NUL in link target {member.linkname!r}")
        elif key in ("size", "uid", "gid"):
            try:
                number = int(value)
            except ValueError:
                number = -1
            if number < 0:
                raise LayerError(f"layer tar has a malformed PAX {key!r} record")
            setattr(member, key, number)
        elif key == "mtime":
            try:
                member.mtime = int(float(value))
            except (ValueError, OverflowError):
                raise LayerError("layer tar has a malformed PAX 'mtime' record") from None
        elif key.startswith("SCHILY.xattr."):
            member.xattrs[key[len("SCHILY.xattr."):]] = value
