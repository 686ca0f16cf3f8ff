"""Device access rules on cgroup v2: a small eBPF program attached to the container's cgroup.

cgroup v2 has no devices controller; the kernel instead asks a
BPF_PROG_TYPE_CGROUP_DEVICE program for each device open or mknod. We emit
one block of instructions per rule, last rule first (later rules win, as
with the v1 allow/deny files), each ending in "return allow/deny"; if no
rule matches the access is denied. The context the kernel passes is
``struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }``
with ``access_type = access << 16 | type``.
"""
from __future__ import annotations

import ctypes
import os
import struct
from dataclasses import dataclass

from .config import DeviceRule
from .errors import RuntimeFailure

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_NR_BPF = {"x86_64": 321, "aarch64": 280}.get(os.uname().machine, 321)

BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2

DEV_BLOCK, DEV_CHAR = 1, 2
ACC_MKNOD, ACC_READ, ACC_WRITE = 1, 2, 4

# instruction classes / ops used below
_LDX_W = 0x61        # r_dst = *(u32 *)(r_src + off)
_MOV32_REG = 0xBC    # w_dst = w_src
_AND32_IMM = 0x54
_RSH32_IMM = 0x74
_MOV64_IMM = 0xB7
_JNE_IMM = 0x55
_EXIT = 0x95


@dataclass(frozen=True)
class Insn:
    code: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0

    def encode(self) -> bytes:
        return struct.pack("<BBhi", self.code, (self.src << 4) | self.dst, self.off, self.imm)


def _access_mask(access: str) -> int:
    return (ACC_MKNOD if "m" in access else 0) | (ACC_READ if "r" in access else 0) | (ACC_WRITE if "w" in access else 0)


def _rule_block(rule: DeviceRule) -> list[Insn]:
    """Instructions for one rule: fall through to the next block when it does not match."""
    checks: list[list[Insn]] = []
    if rule.type in ("c", "b"):
        checks.append([Insn(_JNE_IMM, dst=3, imm=DEV_CHAR if rule.type == "c" else DEV_BLOCK)])
    mask = _access_mask(rule.access or "rwm")
    if mask != 7:
        # requested access bits outside the rule's mask: no match
        checks.append([Insn(_MOV32_REG, dst=7, src=4), Insn(_AND32_IMM, dst=7, imm=~mask & 0xFFFF),
                       Insn(_JNE_IMM, dst=7, imm=0)])
    if rule.type != "a" and rule.major is not None and rule.major >= 0:
        checks.append([Insn(_JNE_IMM, dst=5, imm=rule.major)])
    if rule.type != "a" and rule.minor is not None and rule.minor >= 0:
        checks.append([Insn(_JNE_IMM, dst=6, imm=rule.minor)])
    tail = [Insn(_MOV64_IMM, dst=0, imm=1 if rule.allow else 0), Insn(_EXIT)]
    flat: list[Insn] = [i for c in checks for i in c] + tail
    # Patch each jump to skip to the end of this block.
    out = []
    for pos, insn in enumerate(flat):
        if insn.code == _JNE_IMM:
            insn = Insn(insn.code, insn.dst, insn.src, len(flat) - pos - 1, insn.imm)
        out.append(insn)
    return out


def program(rules: list[DeviceRule]) -> list[Insn]:
    """The whole filter: load the context, then the rules (last first), then deny."""
    prologue = [
        Insn(_LDX_W, dst=2, src=1, off=0),          # r2 = access_type
        Insn(_MOV32_REG, dst=3, src=2), Insn(_AND32_IMM, dst=3, imm=0xFFFF),   # r3 = type
        Insn(_MOV32_REG, dst=4, src=2), Insn(_RSH32_IMM, dst=4, imm=16),       # r4 = access
        Insn(_LDX_W, dst=5, src=1, off=4),          # r5 = major
        Insn(_LDX_W, dst=6, src=1, off=8),          # r6 = minor
    ]
    body: list[Insn] = []
    for rule in reversed(rules):
        block = _rule_block(rule)
        body += block
        if len(block) == 2:
            return prologue + body    # matches everything: what comes after would be unreachable
    return prologue + body + [Insn(_MOV64_IMM, dst=0, imm=0), Insn(_EXIT)]


def _bpf(cmd: int, attr: bytes) -> int:
    buf = ctypes.create_string_buffer(attr, len(attr))
    res = _libc.syscall(ctypes.c_long(_NR_BPF), ctypes.c_int(cmd), buf, ctypes.c_uint(len(attr)))
    if res < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return res


def attach(cgroup_dir: str, rules: list[DeviceRule]) -> None:
    """Load the filter for ``rules`` and attach it to the v2 cgroup at ``cgroup_dir``."""
    code = b"".join(i.encode() for i in program(rules))
    insns = ctypes.create_string_buffer(code, len(code))
    license_ = ctypes.create_string_buffer(b"Apache")
    log = ctypes.create_string_buffer(65536)
    # union bpf_attr for BPF_PROG_LOAD: prog_type, insn_cnt, insns, license, log_level, log_size, log_buf
    attr = struct.pack("<IIQQIIQ", BPF_PROG_TYPE_CGROUP_DEVICE, len(code) // 8, ctypes.addressof(insns),
                       ctypes.addressof(license_), 1, len(log), ctypes.addressof(log)).ljust(128, b"\0")
    try:
        prog_fd = _bpf(BPF_PROG_LOAD, attr)
    except OSError as e:
        detail = log.value.decode(errors="replace").strip().splitlines()
        raise RuntimeFailure(f"device cgroup filter rejected by the kernel: {e.strerror}"
                             + (f" ({'; '.join(detail[-3:])})" if detail else "")) from None
    try:
        cg_fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            attach_attr = struct.pack("<IIII", cg_fd, prog_fd, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI).ljust(128, b"\0")
            try:
                _bpf(BPF_PROG_ATTACH, attach_attr)
            except OSError as e:
                raise RuntimeFailure(f"attaching the device filter to {cgroup_dir}: {e.strerror}") from None
        finally:
            os.close(cg_fd)
    finally:
        os.close(prog_fd)
