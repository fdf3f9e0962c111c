#!/usr/bin/env python3
"""Minimal static linker: one clang BPF relocatable object (.o) -> SBPF v0 program (.so).

Why this exists: no stock linker produces what the Solana loader (solana-sbpf,
SBPF v0, e_flags 0) accepts from Debian's clang output -- lld 16 rejects the BPF
relocations and newer lld rejects the target.  The loader's needs are small and
well defined, so we write the shared object ourselves.

What the loader needs (see ../../../shared/DESIGN.md, "Toolchain facts", and
solana-sbpf's elf.rs / elf_parser):
  * ELF64 little-endian, ET_DYN, e_machine 247 (EM_BPF), e_flags 0 (= SBPF v0).
  * Each section's file offset equals its address.  The loader maps read-only
    sections at 0x1_0000_0000 + sh_addr and, with reject_broken_elfs, refuses
    any .text/.rodata whose sh_addr != sh_offset.
  * Exactly one ".text"; read-only data only in sections named exactly
    ".rodata" or ".data.rel.ro" (other names are silently not mapped), so every
    input .rodata* / .data.rel.ro* is merged into one ".rodata".
  * Syscalls stay symbolic: each call site gets a .rel.dyn entry of type 10
    (R_BPF_64_32) naming an undefined .dynsym symbol, with the call's imm left
    at -1.  The loader replaces imm with murmur3(name) and, in a real deploy,
    rejects names it does not know -- hence the KNOWN_SYSCALLS check below.
  * Everything else is resolved here, so no other relocation reaches the loader:
    lddw / 64-bit data pointers get their final virtual address, and calls to
    our own functions get a pc-relative imm (the loader turns those into its
    function registry keys).

Usage: link.py INPUT.o OUTPUT.so        (stdlib only, deterministic output)
"""
import struct
import sys

# ---- ELF constants used below ------------------------------------------------
SHT_NULL, SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB = 0, 1, 2, 3
SHT_DYNAMIC, SHT_NOBITS, SHT_REL, SHT_DYNSYM = 6, 8, 9, 11
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 1, 2, 4
STT_NOTYPE, STT_FUNC, STT_SECTION = 0, 2, 3
STB_GLOBAL = 1
SHN_UNDEF = 0
PT_LOAD, PT_DYNAMIC = 1, 2
PF_X, PF_R = 1, 4
DT_NULL, DT_STRTAB, DT_SYMTAB, DT_STRSZ, DT_SYMENT = 0, 5, 6, 10, 11
DT_REL, DT_RELSZ, DT_RELENT, DT_TEXTREL, DT_FLAGS = 17, 18, 19, 22, 30
DF_TEXTREL = 0x4
EM_BPF = 247

R_BPF_64_64 = 1      # lddw: 64-bit immediate split over two instruction slots
R_BPF_64_ABS64 = 2   # 64-bit data word (pointer tables in .data.rel.ro)
R_BPF_64_ABS32 = 3   # 32-bit data word: refused, see below
R_BPF_64_32 = 10     # call imm: internal call, or syscall left for the loader

OP_LDDW = 0x18
OP_CALL = 0x85

# Programs are mapped at this virtual address (ebpf::MM_RODATA_START).  Because
# offsets equal addresses, a byte at file offset X lives at VM_BASE + X.
VM_BASE = 0x1_0000_0000

# Syscalls the runtime registers (agave's program-runtime).  A name outside this
# list would only fail later, at deploy time, so fail at link time instead --
# this also catches clang silently emitting a libc call (memcpy, memset).
KNOWN_SYSCALLS = {
    "abort", "sol_panic_", "sol_log_", "sol_log_64_", "sol_log_compute_units_",
    "sol_log_pubkey", "sol_log_data", "sol_create_program_address",
    "sol_try_find_program_address", "sol_sha256", "sol_keccak256",
    "sol_secp256k1_recover", "sol_blake3", "sol_get_clock_sysvar",
    "sol_get_epoch_schedule_sysvar", "sol_get_fees_sysvar", "sol_get_rent_sysvar",
    "sol_get_last_restart_slot", "sol_get_epoch_rewards_sysvar", "sol_memcpy_",
    "sol_memmove_", "sol_memcmp_", "sol_memset_", "sol_invoke_signed_c",
    "sol_invoke_signed_rust", "sol_set_return_data", "sol_get_return_data",
    "sol_get_stack_height", "sol_get_processed_sibling_instruction",
    "sol_curve_validate_point", "sol_curve_group_op", "sol_curve_multiscalar_mul",
    "sol_alt_bn128_group_op", "sol_alt_bn128_compression", "sol_big_mod_exp",
    "sol_poseidon", "sol_remaining_compute_units", "sol_get_sysvar",
    "sol_get_epoch_stake",
}


def die(msg):
    sys.exit(f"link.py: error: {msg}")


def align(x, a):
    return (x + a - 1) // a * a if a > 1 else x


# ---- reading the relocatable object --------------------------------------------
class Section:
    def __init__(self, idx, name, hdr, data):
        (self.name_off, self.type, self.flags, self.addr, self.offset, self.size,
         self.link, self.info, self.addralign, self.entsize) = hdr
        self.idx, self.name, self.data = idx, name, data
        self.out_addr = None  # final address, set for sections we keep


def read_object(path):
    blob = open(path, "rb").read()
    if blob[:4] != b"\x7fELF" or blob[4] != 2 or blob[5] != 1:
        die(f"{path}: not a 64-bit little-endian ELF")
    (e_type, e_machine) = struct.unpack_from("<HH", blob, 16)
    if e_type != 1 or e_machine != EM_BPF:
        die(f"{path}: expected a BPF relocatable object (ET_REL, EM_BPF)")
    e_shoff, = struct.unpack_from("<Q", blob, 0x28)
    e_shentsize, e_shnum, e_shstrndx = struct.unpack_from("<HHH", blob, 0x3A)
    hdrs = [struct.unpack_from("<IIQQQQIIQQ", blob, e_shoff + i * e_shentsize)
            for i in range(e_shnum)]
    shstr_hdr = hdrs[e_shstrndx]
    shstr = blob[shstr_hdr[4]:shstr_hdr[4] + shstr_hdr[5]]

    def cstr(table, off):
        return table[off:table.index(b"\0", off)].decode()

    sections = []
    for i, h in enumerate(hdrs):
        data = b"" if h[1] == SHT_NOBITS else blob[h[4]:h[4] + h[5]]
        sections.append(Section(i, cstr(shstr, h[0]), h, data))

    symtab = next((s for s in sections if s.type == SHT_SYMTAB), None)
    if symtab is None:
        die(f"{path}: no symbol table")
    strtab = sections[symtab.link].data
    symbols = []
    for off in range(0, len(symtab.data), 24):
        st_name, st_info, _other, st_shndx, st_value, st_size = struct.unpack_from(
            "<IBBHQQ", symtab.data, off)
        symbols.append(dict(name=cstr(strtab, st_name), bind=st_info >> 4,
                            type=st_info & 0xF, shndx=st_shndx, value=st_value,
                            size=st_size))
    return sections, symbols


# ---- linking --------------------------------------------------------------------
def classify(sections):
    """Split allocated input sections into the two output groups, refusing
    anything the loader cannot map (writable data, unknown allocated sections)."""
    text, rodata = [], []
    for s in sections:
        if not s.flags & SHF_ALLOC or s.size == 0:
            continue
        if s.name == ".text" or s.name.startswith(".text."):
            text.append(s)
        elif s.name.startswith(".rodata") or s.name.startswith(".data.rel.ro"):
            rodata.append(s)
        elif s.flags & SHF_WRITE:
            die(f"writable section {s.name} ({s.size} bytes): SBPF v0 programs "
                "cannot have mutable globals; use the stack or the heap region")
        else:
            die(f"unsupported allocated section {s.name}")
    if not text:
        die("no .text in the object")
    return text, rodata


def place(group, start):
    """Lay input sections out back to back from `start`, honouring each one's
    alignment; returns the end address."""
    addr = start
    for s in group:
        addr = align(addr, max(s.addralign, 1))
        s.out_addr = addr
        addr += s.size
    return addr


def link(obj_path, out_path):
    sections, symbols = read_object(obj_path)
    text_in, rodata_in = classify(sections)

    # -- layout: header, 4 program headers, .text, .rodata, dynamic tables --
    EHDR, PHDR, NPHDR = 64, 56, 4
    text_off = align(EHDR + PHDR * NPHDR, 8)
    text_end = place(text_in, text_off)
    rodata_align = max([8] + [s.addralign for s in rodata_in])
    rodata_off = align(text_end, rodata_align)
    rodata_end = place(rodata_in, rodata_off)

    image = bytearray(rodata_end)
    for s in text_in + rodata_in:
        image[s.out_addr:s.out_addr + s.size] = s.data

    def sym_addr(sym):
        sec = sections[sym["shndx"]]
        if sec.out_addr is None:
            die(f"symbol {sym['name'] or sec.name} lives in dropped section {sec.name}")
        return sec.out_addr + sym["value"]

    def in_text(addr):
        return text_off <= addr < text_end

    # -- resolve the object's relocations --
    syscall_sites = []  # (call address, syscall name)
    for rel in sections:
        if rel.type != SHT_REL:
            continue
        target = sections[rel.info]
        if target.out_addr is None:
            continue  # relocations for sections we drop (debug info etc.)
        for off in range(0, len(rel.data), 16):
            r_offset, r_info = struct.unpack_from("<QQ", rel.data, off)
            rtype, sym = r_info & 0xFFFFFFFF, symbols[r_info >> 32]
            p = target.out_addr + r_offset

            if sym["shndx"] == SHN_UNDEF:
                # Only syscalls may stay undefined, and only as call targets.
                if rtype != R_BPF_64_32 or image[p] != OP_CALL:
                    die(f"undefined symbol {sym['name']} used by relocation type {rtype}")
                if sym["name"] not in KNOWN_SYSCALLS:
                    die(f"call to unknown external function {sym['name']!r} "
                        "(not a Solana syscall; did clang emit a libc call?)")
                # imm must stay -1: the loader's first pass treats any other
                # value as a pc-relative internal call.
                struct.pack_into("<i", image, p + 4, -1)
                syscall_sites.append((p, sym["name"]))
                continue

            s_addr = sym_addr(sym)
            if rtype == R_BPF_64_64:
                if image[p] != OP_LDDW:
                    die(f"R_BPF_64_64 at {p:#x} is not on an lddw")
                # REL format: the addend is the immediate already in place,
                # low half in this slot and high half in the next one.
                lo, = struct.unpack_from("<I", image, p + 4)
                hi, = struct.unpack_from("<I", image, p + 12)
                value = VM_BASE + s_addr + (lo | hi << 32)
                struct.pack_into("<I", image, p + 4, value & 0xFFFFFFFF)
                struct.pack_into("<I", image, p + 12, value >> 32)
            elif rtype == R_BPF_64_ABS64:
                addend, = struct.unpack_from("<Q", image, p)
                struct.pack_into("<Q", image, p, VM_BASE + s_addr + addend)
            elif rtype == R_BPF_64_32:
                if image[p] != OP_CALL:
                    die(f"R_BPF_64_32 at {p:#x} is not on a call")
                # LLVM (like libbpf reads it) encodes the callee as
                # symbol + (imm + 1) instructions: imm is -1 against a function
                # symbol, or the callee's index - 1 against a section symbol.
                imm, = struct.unpack_from("<i", image, p + 4)
                callee = s_addr + (imm + 1) * 8
                if not in_text(callee) or (callee - text_off) % 8:
                    die(f"call at {p:#x} targets {callee:#x}, outside .text")
                # SBPF v0 calls are pc-relative in instructions, from the next one.
                struct.pack_into("<i", image, p + 4, (callee - (p + 8)) // 8)
            elif rtype == R_BPF_64_ABS32:
                # clang -fPIC turns small constant tables of string pointers into
                # "relative lookup tables" (.long sym - table); the BPF backend
                # has no pc-relative data relocation and writes an ABS32 whose
                # meaning is not recoverable.  Refuse rather than guess.
                die(f"R_BPF_64_ABS32 in {rel.name} at {p:#x}: likely an LLVM relative "
                    "lookup table; use a switch or a table the code iterates instead")
            else:
                die(f"unsupported relocation type {rtype} in {rel.name} at {p:#x}")

    entry = next((s for s in symbols if s["name"] == "entrypoint"
                  and s["bind"] == STB_GLOBAL and s["type"] == STT_FUNC
                  and s["shndx"] != SHN_UNDEF), None)
    if entry is None:
        die("no global function named 'entrypoint'")
    entry_addr = sym_addr(entry)
    if not in_text(entry_addr):
        die("entrypoint is not in .text")

    # -- dynamic symbols: null, one undefined GLOBAL NOTYPE per syscall, entrypoint --
    syscalls = sorted({name for _, name in syscall_sites})
    dynstr = bytearray(b"\0")
    name_off = {}
    for name in syscalls + ["entrypoint"]:
        name_off[name] = len(dynstr)
        dynstr += name.encode() + b"\0"
    dynsym = bytearray(24)  # null symbol
    for name in syscalls:
        dynsym += struct.pack("<IBBHQQ", name_off[name], STB_GLOBAL << 4 | STT_NOTYPE,
                              0, SHN_UNDEF, 0, 0)
    TEXT_SHNDX = 1
    dynsym += struct.pack("<IBBHQQ", name_off["entrypoint"], STB_GLOBAL << 4 | STT_FUNC,
                          0, TEXT_SHNDX, entry_addr, entry["size"])
    sym_index = {name: i + 1 for i, name in enumerate(syscalls)}

    # -- .rel.dyn: one R_BPF_64_32 per syscall call site, r_offset = file offset --
    reldyn = bytearray()
    for p, name in sorted(syscall_sites):
        reldyn += struct.pack("<QQ", p, sym_index[name] << 32 | R_BPF_64_32)

    # -- place the dynamic tables after .rodata; .dynamic's contents depend on
    #    the others' addresses, but its size does not, so size it first --
    n_dyn = 6 + (3 if reldyn else 0) + 1
    dynamic_off = align(rodata_end, 8)
    dynsym_off = dynamic_off + 16 * n_dyn
    dynstr_off = dynsym_off + len(dynsym)
    reldyn_off = align(dynstr_off + len(dynstr), 8)
    dyn_end = reldyn_off + len(reldyn)

    tags = [(DT_FLAGS, DF_TEXTREL), (DT_TEXTREL, 0), (DT_SYMTAB, dynsym_off),
            (DT_SYMENT, 24), (DT_STRTAB, dynstr_off), (DT_STRSZ, len(dynstr))]
    if reldyn:
        tags += [(DT_REL, reldyn_off), (DT_RELSZ, len(reldyn)), (DT_RELENT, 16)]
    tags.append((DT_NULL, 0))
    dynamic = b"".join(struct.pack("<QQ", t, v) for t, v in tags)
    assert len(dynamic) == 16 * n_dyn

    names = [".text", ".rodata", ".dynamic", ".dynsym", ".dynstr", ".rel.dyn", ".shstrtab"]
    shstrtab = bytearray(b"\0")
    sh_name = {}
    for n in names:
        sh_name[n] = len(shstrtab)
        shstrtab += n.encode() + b"\0"
    shstrtab_off = dyn_end
    shoff = align(shstrtab_off + len(shstrtab), 8)

    out = bytearray(shoff)
    out[:rodata_end] = image
    out[dynamic_off:dynamic_off + len(dynamic)] = dynamic
    out[dynsym_off:dynsym_off + len(dynsym)] = dynsym
    out[dynstr_off:dynstr_off + len(dynstr)] = dynstr
    out[reldyn_off:reldyn_off + len(reldyn)] = reldyn
    out[shstrtab_off:shstrtab_off + len(shstrtab)] = shstrtab

    # -- section headers (index order is fixed: .text is 1, .dynstr is 5) --
    def shdr(name, typ, flags, off, size, link=0, info=0, addralign=1, entsize=0):
        # sh_addr == sh_offset for every section, loaded or not, as required.
        return struct.pack("<IIQQQQIIQQ", sh_name[name] if name else 0, typ, flags,
                           off, off, size, link, info, addralign, entsize)

    DYNSTR_SHNDX, DYNSYM_SHNDX, SHSTRTAB_SHNDX = 5, 4, 7
    shdrs = [
        struct.pack("<IIQQQQIIQQ", 0, SHT_NULL, 0, 0, 0, 0, 0, 0, 0, 0),
        shdr(".text", SHT_PROGBITS, SHF_ALLOC | SHF_EXECINSTR, text_off,
             text_end - text_off, addralign=8),
        shdr(".rodata", SHT_PROGBITS, SHF_ALLOC, rodata_off, rodata_end - rodata_off,
             addralign=rodata_align),
        shdr(".dynamic", SHT_DYNAMIC, SHF_ALLOC, dynamic_off, len(dynamic),
             link=DYNSTR_SHNDX, addralign=8, entsize=16),
        # info = index of the first non-local symbol (all but the null one)
        shdr(".dynsym", SHT_DYNSYM, SHF_ALLOC, dynsym_off, len(dynsym),
             link=DYNSTR_SHNDX, info=1, addralign=8, entsize=24),
        shdr(".dynstr", SHT_STRTAB, SHF_ALLOC, dynstr_off, len(dynstr)),
        shdr(".rel.dyn", SHT_REL, SHF_ALLOC, reldyn_off, len(reldyn),
             link=DYNSYM_SHNDX, addralign=8, entsize=16),
        shdr(".shstrtab", SHT_STRTAB, 0, shstrtab_off, len(shstrtab)),
    ]
    out += b"".join(shdrs)

    # -- program headers: text (R+X), rodata (R), dynamic tables (R), PT_DYNAMIC --
    def phdr(typ, flags, off, size):
        return struct.pack("<IIQQQQQQ", typ, flags, off, off, off, size, size, 0x1000)

    phdrs = (phdr(PT_LOAD, PF_R | PF_X, text_off, text_end - text_off)
             + phdr(PT_LOAD, PF_R, rodata_off, rodata_end - rodata_off)
             + phdr(PT_LOAD, PF_R, dynamic_off, dyn_end - dynamic_off)
             + struct.pack("<IIQQQQQQ", PT_DYNAMIC, PF_R, dynamic_off, dynamic_off,
                           dynamic_off, len(dynamic), len(dynamic), 8))
    out[EHDR:EHDR + len(phdrs)] = phdrs

    ident = b"\x7fELF" + bytes([2, 1, 1, 0, 0]) + bytes(7)  # 64-bit, LE, v1, SysV ABI
    out[:EHDR] = ident + struct.pack(
        "<HHIQQQIHHHHHH", 3, EM_BPF, 1, entry_addr, EHDR, shoff, 0,  # ET_DYN, e_flags 0
        EHDR, PHDR, NPHDR, 64, len(shdrs), SHSTRTAB_SHNDX)

    with open(out_path, "wb") as f:
        f.write(out)
    print(f"link.py: {out_path}: {len(out)} bytes, .text {text_end - text_off} B, "
          f".rodata {rodata_end - rodata_off} B, syscalls {', '.join(syscalls)} "
          f"({len(syscall_sites)} call sites)")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    link(sys.argv[1], sys.argv[2])
