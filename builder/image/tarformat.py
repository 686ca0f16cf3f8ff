"""Encoding tar headers: USTAR, with a PAX extended header only when a field needs one.

Written by hand rather than with ``tarfile`` because layer creation is
header-bound for trees of small files, and because the output must be
byte-for-byte deterministic: no user/group names, whole-second mtimes, PAX
records sorted by key, and a fixed name for extended headers.
"""
from __future__ import annotations

from dataclasses import dataclass, field

BLOCK = 512
END_OF_ARCHIVE = bytes(2 * BLOCK)

REGTYPE = b"0"
LNKTYPE = b"1"
SYMTYPE = b"2"
CHRTYPE = b"3"
BLKTYPE = b"4"
DIRTYPE = b"5"
FIFOTYPE = b"6"
PAXTYPE = b"x"

_MAX_OCTAL_8 = 0o7777777          # 7 digits + NUL
_MAX_OCTAL_12 = 0o77777777777     # 11 digits + NUL
_PAX_NAME = b"././@PaxHeader"


@dataclass
class TarEntry:
    """One archive member's header fields (content is written separately)."""

    name: str                       # relative, "/"-separated; directories end with "/"
    type: bytes = REGTYPE
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    size: int = 0
    mtime: int = 0
    linkname: str = ""
    devmajor: int = 0
    devminor: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)


_PADDINGS = [bytes(n) for n in range(BLOCK)]


def padding(size: int) -> bytes:
    """Zero bytes that round ``size`` up to a whole block."""
    return _PADDINGS[-size % BLOCK]


def encode_header(entry: TarEntry) -> bytes:
    """The header block(s) for ``entry``: an optional PAX header, then the USTAR block."""
    pax: dict[str, bytes] = {}
    name = entry.name.encode("utf-8", "surrogateescape")
    linkname = entry.linkname.encode("utf-8", "surrogateescape")
    if len(name) > 100 or not name.isascii():
        pax["path"] = name
        name = name[:100]
    if len(linkname) > 100 or not linkname.isascii():
        pax["linkpath"] = linkname
        linkname = linkname[:100]
    uid, gid, size, mtime = entry.uid, entry.gid, entry.size, entry.mtime
    if uid > _MAX_OCTAL_8:
        pax["uid"], uid = str(uid).encode(), 0
    if gid > _MAX_OCTAL_8:
        pax["gid"], gid = str(gid).encode(), 0
    if size > _MAX_OCTAL_12:
        pax["size"], size = str(size).encode(), 0
    if not 0 <= mtime <= _MAX_OCTAL_12:
        pax["mtime"], mtime = str(mtime).encode(), 0
    for key, value in entry.xattrs.items():
        pax["SCHILY.xattr." + key] = value

    out = b""
    if pax:
        records = _pax_records(pax)
        out = _ustar(_PAX_NAME, PAXTYPE, 0o644, 0, 0, len(records), 0, b"", 0, 0)
        out += records + padding(len(records))
    return out + _ustar(name, entry.type, entry.mode, uid, gid, size, mtime, linkname,
                        entry.devmajor, entry.devminor)


def _pax_records(pax: dict[str, bytes]) -> bytes:
    out = []
    for key in sorted(pax):
        body = b" " + key.encode("utf-8", "surrogateescape") + b"=" + pax[key] + b"\n"
        # The length prefix counts its own digits, so grow it until it is stable.
        length = len(body) + 1
        while len(str(length)) + len(body) != length:
            length = len(str(length)) + len(body)
        out.append(str(length).encode() + body)
    return b"".join(out)


def _ustar(name: bytes, typeflag: bytes, mode: int, uid: int, gid: int, size: int, mtime: int,
           linkname: bytes, devmajor: int, devminor: int) -> bytes:
    header = b"".join((
        name.ljust(100, b"\0"),
        b"%07o\0" % (mode & 0o7777),
        b"%07o\0" % uid,
        b"%07o\0" % gid,
        b"%011o\0" % size,
        b"%011o\0" % mtime,
        b"        ",               # checksum placeholder: eight spaces
        typeflag,
        linkname.ljust(100, b"\0"),
        b"ustar\x0000",
        bytes(64),                 # uname, gname: left empty for reproducibility
        b"%07o\0" % devmajor,
        b"%07o\0" % devminor,
        bytes(167),                # prefix (unused: long names go in PAX) + padding
    ))
    checksum = b"%06o\0 " % sum(header)
    return header[:148] + checksum + header[156:]
