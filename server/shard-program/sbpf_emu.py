#!/usr/bin/env python3
"""Tiny SBPF v0 emulator for shard_program.so (stdlib only; used by selfcheck.py).

Models what the Solana runtime does for this program: the loader's view of the
ELF (text/rodata mapped at 0x1_0000_0000 + file offset, syscalls by .rel.dyn),
the aligned input serialization, the heap/stack regions, the syscalls the
program uses, and sol_invoke_signed_c with the C ABI, checking the account-info
pointers like direct mapping does and the signer/writable privileges.  Compute
units are approximated (1 per instruction + agave's syscall costs).
"""
import base64
import hashlib
import struct

MM_PROGRAM = 0x1_0000_0000
MM_STACK = 0x2_0000_0000
MM_HEAP = 0x3_0000_0000
MM_INPUT = 0x4_0000_0000
FRAME = 4096
MAX_FRAMES = 64
HEAP_SIZE = 32 * 1024
MAX_PERMITTED_DATA_INCREASE = 10240
U64 = (1 << 64) - 1


class VmError(Exception):
    pass


class ProgramFailed(Exception):
    def __init__(self, code):
        super().__init__(f"program returned {code}")
        self.code = code


# ---------------- ed25519 on-curve test (for PDAs) ----------------
P = 2**255 - 19
D = (-121665 * pow(121666, P - 2, P)) % P


def on_curve(b):
    y = int.from_bytes(b, "little") & ((1 << 255) - 1)
    y %= P
    u = (y * y - 1) % P
    v = (D * y * y + 1) % P
    w = u * pow(v, P - 2, P) % P
    return w == 0 or pow(w, (P - 1) // 2, P) == 1


def create_program_address(seeds, program_id):
    if len(seeds) > 16 or any(len(s) > 32 for s in seeds):
        raise VmError("bad seeds")
    h = hashlib.sha256(b"".join(seeds) + program_id + b"ProgramDerivedAddress").digest()
    if on_curve(h):
        return None
    return h


def find_program_address(seeds, program_id):
    tries = 0
    for bump in range(255, 0, -1):
        tries += 1
        a = create_program_address(seeds + [bytes([bump])], program_id)
        if a is not None:
            return a, bump, tries
    return None, None, tries


# ---------------- ELF ----------------
class Program:
    def __init__(self, path):
        self.image = open(path, "rb").read()
        img = self.image
        self.entry, = struct.unpack_from("<Q", img, 24)
        shoff, = struct.unpack_from("<Q", img, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", img, 0x3A)
        secs = [struct.unpack_from("<IIQQQQIIQQ", img, shoff + i * shentsize) for i in range(shnum)]
        shstr = secs[shstrndx]
        names = img[shstr[4]:shstr[4] + shstr[5]]

        def nm(off):
            return names[off:names.index(b"\0", off)].decode()

        self.sections = {nm(s[0]): s for s in secs}
        text = self.sections[".text"]
        self.text_lo, self.text_hi = text[4], text[4] + text[5]
        dynsym = self.sections[".dynsym"]
        dynstr = self.sections[".dynstr"]
        strtab = img[dynstr[4]:dynstr[4] + dynstr[5]]
        syms = []
        for off in range(dynsym[4], dynsym[4] + dynsym[5], 24):
            n, = struct.unpack_from("<I", img, off)
            syms.append(strtab[n:strtab.index(b"\0", n)].decode())
        rel = self.sections[".rel.dyn"]
        self.syscall_at = {}
        for off in range(rel[4], rel[4] + rel[5], 16):
            r_off, r_info = struct.unpack_from("<QQ", img, off)
            assert r_info & 0xFFFFFFFF == 10
            self.syscall_at[r_off] = syms[r_info >> 32]


# ---------------- memory ----------------
class Region:
    def __init__(self, start, buf, writable):
        self.start, self.buf, self.writable = start, buf, writable


class Memory:
    def __init__(self, regions):
        self.regions = regions

    def _find(self, addr, n, write):
        for r in self.regions:
            if r.start <= addr and addr + n <= r.start + len(r.buf):
                if write and not r.writable:
                    raise VmError(f"write to read-only memory {addr:#x}")
                return r, addr - r.start
        raise VmError(f"access violation at {addr:#x} ({n} bytes, {'w' if write else 'r'})")

    def read(self, addr, n):
        if n == 0:
            return b""
        r, o = self._find(addr, n, False)
        return bytes(r.buf[o:o + n])

    def write(self, addr, data):
        if not data:
            return
        r, o = self._find(addr, len(data), True)
        r.buf[o:o + len(data)] = data

    def u64(self, addr, align=True):
        if align and addr % 8:
            raise VmError(f"unaligned u64 pointer {addr:#x}")
        return struct.unpack("<Q", self.read(addr, 8))[0]

    def slices(self, addr, count):
        """SolBytes[count] -> list of bytes"""
        if addr % 8:
            raise VmError("unaligned slice array")
        out = []
        for i in range(count):
            p, n = struct.unpack("<QQ", self.read(addr + 16 * i, 16))
            out.append(self.read(p, n))
        return out


# ---------------- accounts / input ----------------
class Account:
    def __init__(self, lamports=0, data=b"", owner=bytes(32), executable=False, rent_epoch=0):
        self.lamports, self.data, self.owner = lamports, bytearray(data), owner
        self.executable, self.rent_epoch = executable, rent_epoch

    def clone(self):
        return Account(self.lamports, bytes(self.data), self.owner, self.executable, self.rent_epoch)


def serialize(metas, accounts, data, program_id):
    """metas: list of (key, is_signer, is_writable).  Returns buffer and per-index
    metadata {key, owner, lamports, data, len} VM addresses (first occurrence for dups)."""
    b = bytearray(struct.pack("<Q", len(metas)))
    meta_addrs = []
    seen = {}
    for i, (key, signer, writable) in enumerate(metas):
        if key in seen:
            b += bytes([seen[key]]) + bytes(7)
            meta_addrs.append(meta_addrs[seen[key]])
            continue
        seen[key] = i
        a = accounts[key]
        start = len(b)
        b += bytes([0xFF, int(signer), int(writable), int(a.executable)]) + bytes(4)
        b += key + a.owner + struct.pack("<QQ", a.lamports, len(a.data)) + bytes(a.data)
        b += bytes(MAX_PERMITTED_DATA_INCREASE)
        while len(b) % 8:
            b.append(0)
        b += struct.pack("<Q", a.rent_epoch)
        meta_addrs.append(dict(start=start, key=MM_INPUT + start + 8, owner=MM_INPUT + start + 40,
                               lamports=MM_INPUT + start + 72, data=MM_INPUT + start + 88,
                               len=len(a.data), orig=start))
    b += struct.pack("<Q", len(data)) + data + program_id
    return b, meta_addrs


# ---------------- the machine ----------------
class Runtime:
    def __init__(self, programs, unix_timestamp=1_700_000_000, budget=1_400_000):
        self.programs = programs  # program id -> Program
        self.accounts = {}
        self.unix_timestamp = unix_timestamp
        self.budget = budget

    def transaction(self, instructions, signers=()):
        """Runs instructions atomically: [(program_id, [(key, signer, writable)], data)].
        Returns dict(ok, err, logs, inner, cu)."""
        snapshot = {k: v.clone() for k, v in self.accounts.items()}
        self.logs, self.inner, self.cu_used = [], [], 0
        self.remaining = self.budget
        self.stack = []
        self.trace = len(instructions)  # the instruction trace: top-level + inner, at most 64
        err = None
        try:
            for pid, metas, data in instructions:
                for key, signer, _ in metas:
                    if signer and key not in signers:
                        raise VmError("missing signature")
                    self.accounts.setdefault(key, Account())
                self.invoke(pid, metas, data)
        except ProgramFailed as e:
            err = e.code
        except VmError as e:
            err = str(e)
        if err is not None:
            self.accounts = snapshot
        return dict(ok=err is None, err=err, logs=self.logs, inner=self.inner,
                    cu=self.budget - self.remaining)

    def consume(self, n):
        self.remaining -= n
        if self.remaining < 0:
            raise VmError("exceeded CUs")

    def log(self, s):
        self.logs.append(s)

    def invoke(self, pid, metas, data):
        depth = len(self.stack) + 1
        if depth > 5:
            raise VmError("call depth")
        if pid in self.stack and self.stack[-1] != pid:
            raise VmError("reentrancy")
        self.log(f"Program {pid.hex()[:8]} invoke [{depth}]")
        prog = self.programs[pid]
        buf, meta_addrs = serialize(metas, self.accounts, data, pid)
        before = self.remaining
        self.stack.append(pid)
        try:
            frame = Frame(self, prog, pid, metas, buf, meta_addrs)
            code = frame.run()
        finally:
            self.stack.pop()
        if code != 0:
            self.log(f"Program {pid.hex()[:8]} failed: {code}")
            raise ProgramFailed(code)
        frame.deserialize()
        self.log(f"Program {pid.hex()[:8]} consumed {before - self.remaining}")
        self.log(f"Program {pid.hex()[:8]} success")


class Frame:
    def __init__(self, rt, prog, pid, metas, buf, meta_addrs):
        self.rt, self.prog, self.pid, self.metas = rt, prog, pid, metas
        self.input = buf
        self.meta_addrs = meta_addrs
        self.mem = Memory([
            Region(MM_PROGRAM, bytearray(prog.image), False),
            Region(MM_STACK, bytearray(FRAME * MAX_FRAMES), True),
            Region(MM_HEAP, bytearray(HEAP_SIZE), True),
            Region(MM_INPUT, buf, True),
        ])

    # after a successful run: write accounts back, enforcing the runtime's rules
    def deserialize(self):
        seen = set()
        for i, (key, signer, writable) in enumerate(self.metas):
            if key in seen:
                continue
            seen.add(key)
            m = self.meta_addrs[i]
            o = m["orig"]
            a = self.rt.accounts[key]
            owner = bytes(self.input[o + 40:o + 72])
            lamports, dlen = struct.unpack_from("<QQ", self.input, o + 72)
            data = bytes(self.input[o + 88:o + 88 + dlen])
            if dlen != len(a.data):
                raise VmError("resize not modelled")
            changed = data != bytes(a.data)
            if changed and (not writable or a.owner != self.pid):
                raise VmError(f"instruction modified data of an account it may not ({key.hex()[:8]})")
            if owner != a.owner or lamports != a.lamports:
                raise VmError("owner/lamports change not modelled")
            # any writable account of the CPI stack may have been changed by a callee;
            # a caller's stale copy is only written back if it changed it itself
            if changed:
                a.data[:] = data

    def run(self):
        img = self.prog.image
        reg = [0] * 11
        reg[1] = MM_INPUT
        reg[10] = MM_STACK + FRAME
        pc = self.prog.entry
        calls = []
        mem = self.mem
        rt = self.rt
        while True:
            rt.consume(1)
            if not (self.prog.text_lo <= pc < self.prog.text_hi):
                raise VmError(f"pc out of text {pc:#x}")
            op, regs, off, imm = struct.unpack_from("<BBhi", img, pc)
            dst, src = regs & 0xF, regs >> 4
            cls = op & 7
            npc = pc + 8
            if op == 0x18:
                hi, = struct.unpack_from("<i", img, pc + 12)
                reg[dst] = ((imm & 0xFFFFFFFF) | ((hi & 0xFFFFFFFF) << 32)) & U64
                npc = pc + 16
            elif cls in (1, 2, 3):  # LDX / ST / STX
                size = {0: 4, 1: 2, 2: 1, 3: 8}[(op >> 3) & 3]
                if (op & 0xE0) != 0x60:
                    raise VmError(f"unsupported mem op {op:#x}")
                if cls == 1:
                    addr = (reg[src] + off) & U64
                    reg[dst] = int.from_bytes(mem.read(addr, size), "little")
                else:
                    addr = (reg[dst] + off) & U64
                    v = (imm & U64) if cls == 2 else reg[src]
                    mem.write(addr, (v & ((1 << (8 * size)) - 1)).to_bytes(size, "little"))
            elif cls in (4, 7):  # ALU32 / ALU64
                is64 = cls == 7
                mask = U64 if is64 else 0xFFFFFFFF
                bits = 64 if is64 else 32
                a = reg[dst] & mask
                b = (reg[src] if op & 8 else imm & U64) & mask
                code = op >> 4
                if code == 0:
                    r = a + b
                elif code == 1:
                    r = a - b
                elif code == 2:
                    r = a * b
                elif code == 3:
                    if b == 0:
                        raise VmError("div by zero")
                    r = a // b
                elif code == 4:
                    r = a | b
                elif code == 5:
                    r = a & b
                elif code == 6:
                    r = a << (b & (bits - 1))
                elif code == 7:
                    r = a >> (b & (bits - 1))
                elif code == 8:
                    r = -a
                elif code == 9:
                    if b == 0:
                        raise VmError("mod by zero")
                    r = a % b
                elif code == 0xA:
                    r = a ^ b
                elif code == 0xB:
                    r = b
                elif code == 0xC:
                    sa = a - (1 << bits) if a >> (bits - 1) else a
                    r = sa >> (b & (bits - 1))
                elif code == 0xD:
                    w = imm
                    v = reg[dst] & ((1 << w) - 1)
                    if op & 8:  # be
                        v = int.from_bytes(v.to_bytes(w // 8, "little"), "big")
                    reg[dst] = v
                    pc = npc
                    continue
                else:
                    raise VmError(f"bad alu {op:#x}")
                reg[dst] = r & mask  # v0: 32-bit results zero-extended
            elif cls == 5:
                code = op >> 4
                if code == 8:  # call
                    if pc in self.prog.syscall_at:
                        reg[0] = self.syscall(self.prog.syscall_at[pc], reg)
                    else:
                        if len(calls) + 1 >= MAX_FRAMES:
                            raise VmError("call depth exceeded")
                        calls.append((npc, reg[6], reg[7], reg[8], reg[9], reg[10]))
                        reg[10] += FRAME
                        npc = pc + 8 + imm * 8
                elif code == 9:  # exit
                    if not calls:
                        return reg[0]
                    npc, reg[6], reg[7], reg[8], reg[9], reg[10] = calls.pop()
                elif code == 0:
                    npc = pc + 8 + off * 8
                else:
                    a = reg[dst]
                    b = reg[src] if op & 8 else imm & U64
                    sa = a - (1 << 64) if a >> 63 else a
                    sb = b - (1 << 64) if b >> 63 else b
                    t = {1: a == b, 2: a > b, 3: a >= b, 4: (a & b) != 0, 5: a != b,
                         6: sa > sb, 7: sa >= sb, 0xA: a < b, 0xB: a <= b,
                         0xC: sa < sb, 0xD: sa <= sb}.get(code)
                    if t is None:
                        raise VmError(f"bad jmp {op:#x}")
                    if t:
                        npc = pc + 8 + off * 8
            else:
                raise VmError(f"unsupported opcode {op:#x}")
            pc = npc

    # ---------------- syscalls ----------------
    def syscall(self, name, r):
        mem, rt = self.mem, self.rt
        if name == "sol_log_":
            rt.consume(max(100, r[2]))
            s = mem.read(r[1], r[2])
            rt.log("Program log: " + s.decode("utf-8"))  # raises on invalid UTF-8 like the runtime
            return 0
        if name == "sol_log_64_":
            rt.consume(100)
            rt.log("Program log: " + " ".join(hex(x) for x in r[1:6]))
            return 0
        if name == "sol_log_data":
            parts = mem.slices(r[1], r[2])
            rt.consume(100 + 100 * len(parts) + sum(len(p) for p in parts))
            rt.log("Program data: " + " ".join(base64.b64encode(p).decode() for p in parts))
            return 0
        if name == "sol_sha256":
            parts = mem.slices(r[1], r[2])
            rt.consume(85 + sum(max(len(p) // 2, 10) for p in parts))
            mem.write(r[3], hashlib.sha256(b"".join(parts)).digest())
            return 0
        if name in ("sol_memcpy_", "sol_memmove_"):
            n = r[3]
            rt.consume(max(10, n // 250))
            if name == "sol_memcpy_" and n and not (r[1] + n <= r[2] or r[2] + n <= r[1]):
                raise VmError("CopyOverlapping")
            mem.write(r[1], mem.read(r[2], n))
            return 0
        if name == "sol_get_clock_sysvar":
            rt.consume(100 + 40)
            if r[1] % 8:
                raise VmError("unaligned clock")
            mem.write(r[1], struct.pack("<QqQQq", 1000, rt.unix_timestamp - 100, 1, 2,
                                        rt.unix_timestamp))
            return 0
        if name == "sol_try_find_program_address":
            seeds = mem.slices(r[1], r[2])
            pid = mem.read(r[3], 32)
            addr, bump, tries = find_program_address(seeds, pid)
            rt.consume(1500 * tries)
            if addr is None:
                return 1
            mem.write(r[4], addr)
            mem.write(r[5], bytes([bump]))
            return 0
        if name == "sol_create_program_address":
            rt.consume(1500)
            seeds = mem.slices(r[1], r[2])
            pid = mem.read(r[3], 32)
            addr = create_program_address(seeds, pid)
            if addr is None:
                return 1
            mem.write(r[4], addr)
            return 0
        if name == "sol_invoke_signed_c":
            return self.invoke_c(r)
        raise VmError(f"syscall {name} not modelled")

    def invoke_c(self, r):
        mem, rt = self.mem, self.rt
        rt.consume(1000)
        ix = r[1]
        if ix % 8:
            raise VmError("unaligned SolInstruction")
        pid_p, metas_p, n_metas, data_p, data_len = struct.unpack("<QQQQQ", mem.read(ix, 40))
        program_id = mem.read(pid_p, 32)
        if metas_p % 8:
            raise VmError("unaligned SolAccountMeta")
        if data_len > 10240:
            raise VmError("MaxInstructionDataLenExceeded")
        data = mem.read(data_p, data_len)
        rt.consume(data_len // 250)
        metas = []
        for i in range(n_metas):
            pk_p, w, s = struct.unpack("<QBB", mem.read(metas_p + 16 * i, 10))
            if w > 1 or s > 1:
                raise VmError("InvalidArgument (meta bool)")
            metas.append((mem.read(pk_p, 32), bool(s), bool(w)))
        # signers
        pdas = set()
        if r[5]:
            if r[4] % 8:
                raise VmError("unaligned signer seeds")
            for i in range(r[5]):
                sp, sl = struct.unpack("<QQ", mem.read(r[4] + 16 * i, 16))
                seeds = mem.slices(sp, sl)
                a = create_program_address(seeds, self.pid)
                if a is None:
                    raise VmError("BadSeeds")
                pdas.add(a)
        # privileges against the caller's instruction accounts
        caller = {}
        for key, s, w in self.metas:
            cs, cw = caller.get(key, (False, False))
            caller[key] = (cs or s, cw or w)
        for key, s, w in metas:
            if key not in caller:
                raise VmError(f"Unknown account {key.hex()[:8]}")
            cs, cw = caller[key]
            if w and not cw:
                raise VmError("writable privilege escalated")
            if s and not (cs or key in pdas):
                raise VmError("signer privilege escalated")
        if program_id not in caller:
            raise VmError("Unknown program")
        if not rt.accounts[program_id].executable:
            raise VmError("program not executable")
        # account infos
        infos_p, n_infos = r[2], r[3]
        if infos_p % 8:
            raise VmError("unaligned SolAccountInfo")
        infos = {}
        for i in range(n_infos):
            raw = mem.read(infos_p + 56 * i, 56)
            key_p, lam_p, dlen, dat_p, own_p, rent = struct.unpack_from("<QQQQQQ", raw)
            infos.setdefault(mem.read(key_p, 32), (key_p, lam_p, dlen, dat_p, own_p))
        caller_index = {}
        for i, (key, _, _) in enumerate(self.metas):
            caller_index.setdefault(key, i)
        for key, s, w in metas:
            if rt.accounts[key].executable:
                continue
            if key not in infos:
                raise VmError(f"Instruction references an unknown account {key.hex()[:8]}")
            key_p, lam_p, dlen, dat_p, own_p = infos[key]
            m = self.meta_addrs[caller_index[key]]
            for field, got in (("key", key_p), ("owner", own_p), ("lamports", lam_p), ("data", dat_p)):
                if got != m[field]:
                    raise VmError(f"Invalid account info pointer `{field}`: {got:#x} != {m[field]:#x}")
            if lam_p % 8:
                raise VmError("unaligned lamports")
            if dlen != m["len"]:
                raise VmError("data_len changed")
            # caller -> callee sync of the account (data as the caller sees it)
            cur = bytes(self.input[m["data"] - MM_INPUT:m["data"] - MM_INPUT + dlen])
            if cur != bytes(rt.accounts[key].data):
                if not w:
                    raise VmError("caller modified a read-only CPI account")
                rt.accounts[key].data[:] = cur
        if rt.trace + 1 > 64:
            raise VmError("MaxInstructionTraceLengthExceeded")
        rt.trace += 1
        rt.inner.append((len(rt.stack), program_id, [k for k, _, _ in metas], data,
                         [(k, s, w) for k, s, w in metas]))
        rt.invoke(program_id, metas, data)
        # callee -> caller sync for writable accounts
        for key, s, w in metas:
            if w:
                m = self.meta_addrs[caller_index[key]]
                o = m["data"] - MM_INPUT
                self.input[o:o + m["len"]] = rt.accounts[key].data
        return 0
