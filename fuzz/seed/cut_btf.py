#!/usr/bin/env python3
"""Cuts a small, valid BTF blob out of a kernel's raw BTF (/sys/kernel/btf/vmlinux, ~5 MB).

Keeps the named roots (functions, structs, typedefs) and the types they reference up to
--depth references away; references beyond that point at one placeholder `int`. Type ids are
renumbered and the string section holds only the names kept.

    cut_btf.py /sys/kernel/btf/vmlinux out.btf cap_capable user_namespace btf_trace_cap_capable
"""
import argparse
import struct

INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT = range(1, 12)
FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = range(12, 20)
REF_KINDS = {PTR, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FUNC_PROTO, VAR, DECL_TAG, TYPE_TAG}


def extra_len(kind, vlen):
    return {INT: 4, ARRAY: 12, STRUCT: 12 * vlen, UNION: 12 * vlen, ENUM: 8 * vlen,
            FUNC_PROTO: 8 * vlen, VAR: 4, DATASEC: 12 * vlen, DECL_TAG: 4,
            ENUM64: 12 * vlen}.get(kind, 0)


def parse(data):
    magic, version, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
        "<HBBIIIII", data)
    assert magic == 0xEB9F and version == 1
    types = data[hdr_len + type_off:hdr_len + type_off + type_len]
    strings = data[hdr_len + str_off:hdr_len + str_off + str_len]
    out = [None]  # id 0 is void
    off = 0
    while off < len(types):
        name_off, info, size_or_type = struct.unpack_from("<III", types, off)
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        n = extra_len(kind, vlen)
        out.append(dict(name_off=name_off, info=info, kind=kind, vlen=vlen, st=size_or_type,
                        extra=bytearray(types[off + 12:off + 12 + n])))
        off += 12 + n
    return out, strings


def name(strings, off):
    return strings[off:strings.index(b"\0", off)].decode()


def refs(t):
    """(position, type id) of every type reference: position None is size_or_type."""
    k, e = t["kind"], t["extra"]
    if k in REF_KINDS:
        yield None, t["st"]
    if k == ARRAY:
        yield 0, struct.unpack_from("<I", e, 0)[0]
        yield 4, struct.unpack_from("<I", e, 4)[0]
    elif k in (STRUCT, UNION):
        for i in range(t["vlen"]):
            yield 12 * i + 4, struct.unpack_from("<I", e, 12 * i + 4)[0]
    elif k == FUNC_PROTO:
        for i in range(t["vlen"]):
            yield 8 * i + 4, struct.unpack_from("<I", e, 8 * i + 4)[0]
    elif k == DATASEC:
        for i in range(t["vlen"]):
            yield 12 * i, struct.unpack_from("<I", e, 12 * i)[0]


def name_offsets(t):
    """Positions in extra of string offsets (member, param, enumerator names)."""
    k = t["kind"]
    step = {STRUCT: 12, UNION: 12, ENUM: 8, FUNC_PROTO: 8, ENUM64: 12}.get(k)
    return [step * i for i in range(t["vlen"])] if step else []


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("vmlinux")
    ap.add_argument("out")
    ap.add_argument("roots", nargs="+")
    ap.add_argument("--depth", type=int, default=2)
    a = ap.parse_args()
    types, strings = parse(open(a.vmlinux, "rb").read())

    wanted = set(a.roots)
    roots = []
    for i, t in enumerate(types[1:], 1):
        if t["name_off"] and name(strings, t["name_off"]) in wanted:
            # Structs: the definition, not a declaration.
            if t["kind"] in (STRUCT, UNION) and t["vlen"] == 0:
                continue
            if t["kind"] in (FUNC, STRUCT, UNION, TYPEDEF):
                roots.append(i)
    keep, frontier = {}, [(r, 0) for r in roots]
    while frontier:
        tid, d = frontier.pop()
        if tid == 0 or (tid in keep and keep[tid] <= d):
            continue
        keep[tid] = d
        if d < a.depth:
            frontier.extend((r, d + 1) for _, r in refs(types[tid]))

    order = sorted(keep)
    new_id = {old: i + 2 for i, old in enumerate(order)}  # id 1 is the placeholder int
    new_strings = bytearray(b"\0")
    str_map = {0: 0}

    def s(off):
        if off not in str_map:
            str_map[off] = len(new_strings)
            new_strings.extend(strings[off:strings.index(b"\0", off) + 1])
        return str_map[off]

    out = bytearray()
    # Placeholder: int, 4 bytes, signed.
    at = strings.find(b"\0int\0")
    out += struct.pack("<IIII", s(at + 1) if at >= 0 else 0, INT << 24, 4, (1 << 24) | 32)
    for old in order:
        t = types[old]
        st, e = t["st"], bytearray(t["extra"])
        for pos, r in refs(t):
            nr = 0 if r == 0 else new_id.get(r, 1)
            if pos is None:
                st = nr
            else:
                struct.pack_into("<I", e, pos, nr)
        for pos in name_offsets(t):
            struct.pack_into("<I", e, pos, s(struct.unpack_from("<I", e, pos)[0]))
        out += struct.pack("<III", s(t["name_off"]), t["info"], st) + e
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(out), len(out), len(new_strings))
    open(a.out, "wb").write(hdr + out + new_strings)
    print(f"{a.out}: {len(order) + 1} types, {len(hdr + out + new_strings)} bytes")


if __name__ == "__main__":
    main()
