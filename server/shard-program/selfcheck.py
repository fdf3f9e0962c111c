#!/usr/bin/env python3
"""Self-check of shard_program.so on sbpf_emu.py (stdlib only, no Solana toolchain).

    python3 selfcheck.py [OLD.so]

Runs the session-factory instructions (init_queue ... pad_logs, process_queue's
event self-CPIs, the event-CPI handler) through scenarios and checks records,
events, error codes and inner instructions against README.md.  With OLD.so
(e.g. `git show HEAD:server/shard-program/shard_program.so > /tmp/old.so`) it
also runs the older instructions on both builds and requires identical
results, logs and records (compute units may differ a little).  Prints compute
units as the emulator counts them (1 per instruction + agave's syscall costs):
estimates, not the runtime's figures.  The authoritative test is on Surfnet.
"""
import base64
import hashlib
import os
import struct
import sys

from sbpf_emu import Account, Program, Runtime, find_program_address

HERE = os.path.dirname(os.path.abspath(__file__))
NEW = os.path.join(HERE, "shard_program.so")
OLD = sys.argv[1] if len(sys.argv) > 1 else None


def d(ns, name):
    return hashlib.sha256(f"{ns}:{name}".encode()).digest()[:8]


def ix(name):
    return d("global", name)


def ev(name):
    return d("event", name)


def rec(name):
    return d("account", name)


def key(name):
    return hashlib.sha256(name.encode()).digest()


def u32(v):
    return struct.pack("<I", v)


def u64(v):
    return struct.pack("<Q", v & (2**64 - 1))


def i64(v):
    return struct.pack("<q", v)


def s(v):
    b = v.encode() if isinstance(v, str) else v
    return u32(len(b)) + b


def vec(items, enc=lambda x: x):
    return u32(len(items)) + b"".join(enc(i) for i in items)


PID = key("program")
LOADER = key("loader")
EVENT_IX_TAG_LE = bytes.fromhex("e445a52e51cb9a1d")
NOW = 1_700_000_000
FAILS = []


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("FAIL:", what)


def setup(path):
    rt = Runtime({PID: Program(path)}, unix_timestamp=NOW)
    rt.accounts[PID] = Account(1, b"\x02" + bytes(35), LOADER, executable=True)
    return rt


def fresh(rt, name, size, owner=PID):
    k = key(name)
    rt.accounts[k] = Account(10**9, bytes(size), owner)
    return k


def run(rt, metas, data, signers=()):
    return rt.transaction([(PID, metas, data)], signers=set(signers))


def events(res):
    out = []
    for line in res["logs"]:
        if line.startswith("Program data: "):
            out.append(base64.b64decode(line[len("Program data: "):]))
    return out


def logs(res):
    return [l for l in res["logs"] if l.startswith("Program log: ")]


W, R = True, False


def m(k, signer=False, writable=False):
    return (k, signer, writable)


# ======================= regression: existing instructions =======================
def existing_suite(path):
    """Runs the pre-existing instructions, returns a comparable transcript."""
    rt = setup(path)
    out = []
    cus = []

    def go(metas, data, signers=()):
        res = run(rt, metas, data, signers)
        out.append((res["ok"], res["err"], [l for l in res["logs"] if " consumed " not in l]))
        cus.append(res["cu"])
        return res

    req = fresh(rt, "req", 400)
    caps = vec(["a", "bc"], s)
    init_hash = hashlib.sha256(b"init").digest()
    go([m(req, writable=W)], ix("request_account") + key("owner") + caps + init_hash)
    go([m(req, writable=W)], ix("request_account") + key("owner") + caps + init_hash)  # already init
    acc = fresh(rt, "acc", 300)
    go([m(acc, writable=W), m(req, writable=W)], ix("initialize_account") + req + s(b"nope"))
    go([m(acc, writable=W), m(req, writable=W)], ix("initialize_account") + req + s(b"init"))
    acc2 = fresh(rt, "acc2", 300)
    go([m(acc2, writable=W), m(req, writable=W)], ix("initialize_account") + req + s(b"init"))
    sess = fresh(rt, "sess", 400)
    go([m(sess, writable=W)], ix("create_session") + key("o") + vec([key("x"), key("y")]) + s("ns") + u64(7) + s(b"meta"))
    rec_ = fresh(rt, "cons", 300)
    n1, n2 = fresh(rt, "n1", 300), fresh(rt, "n2", 300)
    tmpl = vec([(bytes([1]), "a", b"m1"), (bytes([0, 1]), "bb", b"")],
               lambda t: vec(list(t[0]), lambda b: bytes([b])) + s(t[1]) + s(t[2]))
    go([m(sess, writable=W), m(rec_, writable=W), m(n1, writable=W), m(n2, writable=W)], ix("consume_session") + tmpl)
    go([m(sess, writable=W), m(rec_, writable=W), m(n1, writable=W), m(n2, writable=W)], ix("consume_session") + tmpl)
    go([m(n1)], ix("execute_sync_bundle") + vec([(key("f"), b"args"), (key("g"), b"")], lambda o: o[0] + s(o[1])))
    go([m(sess)], ix("execute_sync_bundle") + u32(0))
    st = fresh(rt, "st", 200)
    auth = key("auth")
    go([m(st, writable=W), m(auth, signer=True)], ix("initialize") + bytes([2]) + s(b"cfg"), [auth])
    go([m(st, writable=W), m(auth, signer=True)], ix("pause"), [auth])
    go([m(st, writable=W), m(auth, signer=True)], ix("pause"), [auth])
    go([m(st, writable=W), m(auth, signer=True)], ix("resume"), [auth])
    go([m(st, writable=W), m(auth, signer=True)], ix("update_config") + s(b"c"), [auth])
    go([m(st, writable=W), m(auth)], ix("update_config") + s(b"c"))
    go([], b"\x01\x02")
    go([], b"\x01\x02\x03\x04\x05\x06\x07\x08")
    go([m(sess)], ix("create_session") + b"\x00")
    state = sorted((k.hex(), bytes(a.data).hex()) for k, a in rt.accounts.items())
    return out, state, cus


def regression():
    new = existing_suite(NEW)
    old = existing_suite(OLD)
    check(new[0] == old[0], "existing instructions: same results/logs on old and new .so")
    check(new[1] == old[1], "existing instructions: same account states on old and new .so")
    for a, b in zip(new[0], old[0]):
        if a != b:
            print("  new:", a)
            print("  old:", b)
    print("regression:", len(new[0]), "transactions compared; CU new-old:",
          [a - b for a, b in zip(new[2], old[2])])


# ======================= new instructions =======================
def queue_rec(data):
    disc, auth, nxt, pend, proc = struct.unpack_from("<8s32sQQQ", data)
    return dict(disc=disc, authority=auth, next_position=nxt, pending=pend, processed=proc)


def reservation(data):
    disc, sess, owner, queue, n = struct.unpack_from("<8s32s32s32sI", data)
    ns = bytes(data[108:108 + n]).decode()
    status, exp, pos, dl = struct.unpack_from("<BqQq", data, 108 + n)
    return dict(disc=disc, session=sess, owner=owner, queue=queue, namespace=ns,
                status=status, expires_at=exp, queue_position=pos, deadline=dl, size=133 + n)


def session_rec(data):
    o = 8
    sid = data[o:o + 32]; o += 32
    owner = data[o:o + 32]; o += 32
    n, = struct.unpack_from("<I", data, o); o += 4 + 32 * n
    ln, = struct.unpack_from("<I", data, o); ns = bytes(data[o + 4:o + 4 + ln]).decode(); o += 4 + ln
    cons = data[o]; o += 1
    nonce, created = struct.unpack_from("<Qq", data, o); o += 16
    ml, = struct.unpack_from("<I", data, o); o += 4 + ml
    return dict(disc=bytes(data[:8]), id=bytes(sid), owner=bytes(owner), n_accounts=n, namespace=ns,
                is_consumed=cons, nonce=nonce, created_at=created, metadata_len=ml, size=o)


def err_code(res):
    return res["err"]


def new_suite():
    rt = setup(NEW)
    auth = key("qauth")
    other = key("other")
    owner = key("sowner")
    q = fresh(rt, "queue", 64)
    # ---- init_queue ----
    r = run(rt, [m(q, writable=W), m(auth)], ix("init_queue"))
    check(err_code(r) == 6014, "init_queue without signer -> 6014")
    r = run(rt, [m(q, writable=W), m(auth, True)], ix("init_queue") + b"\x00", [auth])
    check(err_code(r) == 6001, "init_queue trailing bytes -> 6001")
    small = fresh(rt, "small", 63)
    r = run(rt, [m(small, writable=W), m(auth, True)], ix("init_queue"), [auth])
    check(err_code(r) == 6006, "init_queue on 63 bytes -> 6006")
    r = run(rt, [m(q, writable=W), m(auth, True)], ix("init_queue"), [auth])
    check(r["ok"], f"init_queue ok {r['err']}")
    check(logs(r) == ["Program log: Instruction: InitQueue"], f"init_queue logs {logs(r)}")
    check(events(r) == [], "init_queue no event")
    qr = queue_rec(rt.accounts[q].data)
    check(qr == dict(disc=rec("SessionQueue"), authority=auth, next_position=0, pending=0, processed=0), "queue record")
    r = run(rt, [m(q, writable=W), m(auth, True)], ix("init_queue"), [auth])
    check(err_code(r) == 6007, "init_queue twice -> 6007")

    # ---- reserve_session ----
    def reserve(name, ns="alpha", ttl=60, size=None, queue=q):
        k = fresh(rt, name, size if size is not None else 133 + len(ns.encode()))
        res = run(rt, [m(k, writable=W), m(queue)], ix("reserve_session") + owner + s(ns) + i64(ttl))
        return k, res

    r0, r = reserve("r0", ttl=0)
    check(err_code(r) == 6001, "ttl 0 -> 6001")
    _, r = reserve("rneg", ttl=-5)
    check(err_code(r) == 6001, "ttl < 0 -> 6001")
    _, r = reserve("rbig", ttl=2**63 - 1)
    check(err_code(r) == 6001, "ttl overflow -> 6001")
    _, r = reserve("rsmall", size=133 + 4)
    check(err_code(r) == 6006, "reservation too small -> 6006")
    _, r = reserve("rnotq", queue=key("sess-not-queue"))
    check(err_code(r) == 6005, f"queue not owned -> 6005 ({r['err']})")
    r1, r = reserve("r1")
    check(r["ok"], f"reserve ok {r['err']}")
    check(logs(r) == ["Program log: Instruction: ReserveSession"], "reserve logs")
    check(events(r) == [ev("SessionReserved") + r1 + owner + i64(NOW + 60)], "SessionReserved event")
    rv = reservation(rt.accounts[r1].data)
    check(rv == dict(disc=rec("SessionReservation"), session=r1, owner=owner, queue=q, namespace="alpha",
                     status=1, expires_at=NOW + 60, queue_position=0, deadline=0, size=138), f"reservation {rv}")
    print("reserve_session CU:", r["cu"])

    # ---- queue_session ----
    r = run(rt, [m(r1, writable=W), m(q, writable=R)], ix("queue_session") + i64(300))
    check(err_code(r) == 6004, "queue_session read-only queue -> 6004")
    q2 = fresh(rt, "queue2", 64)
    run(rt, [m(q2, writable=W), m(other, True)], ix("init_queue"), [other])
    r = run(rt, [m(r1, writable=W), m(q2, writable=W)], ix("queue_session") + i64(300))
    check(err_code(r) == 6022, "queue_session wrong queue -> 6022")
    rt.unix_timestamp = NOW + 60
    r = run(rt, [m(r1, writable=W), m(q, writable=W)], ix("queue_session") + i64(300))
    check(err_code(r) == 6021, "queue_session at expires_at -> 6021")
    rt.unix_timestamp = NOW + 59
    r = run(rt, [m(r1, writable=W), m(q, writable=W)], ix("queue_session") + i64(300))
    check(r["ok"], f"queue_session ok {r['err']}")
    check(events(r) == [ev("SessionQueued") + r1 + u64(0) + i64(NOW + 59 + 300)], "SessionQueued")
    print("queue_session CU:", r["cu"])
    rv = reservation(rt.accounts[r1].data)
    check(rv["status"] == 2 and rv["queue_position"] == 0 and rv["deadline"] == NOW + 359, f"queued {rv}")
    check(queue_rec(rt.accounts[q].data)["next_position"] == 1 and queue_rec(rt.accounts[q].data)["pending"] == 1, "queue counters")
    r = run(rt, [m(r1, writable=W), m(q, writable=W)], ix("queue_session") + i64(300))
    check(err_code(r) == 6023, "queue twice -> 6023")
    rt.unix_timestamp = NOW

    # ---- initialize_from_queue ----
    r2, _ = reserve("r2", ns="beta-namespace-long-enough-to-overlap-the-move")
    r = run(rt, [m(r2, writable=W), m(q, writable=W)], ix("initialize_from_queue"))
    check(err_code(r) == 6023, "initialize_from_queue of reserved -> 6023")
    run(rt, [m(r2, writable=W), m(q, writable=W)], ix("queue_session") + i64(10))
    r = run(rt, [m(r2, writable=W), m(q2, writable=W)], ix("initialize_from_queue"))
    check(err_code(r) == 6022, "initialize_from_queue wrong queue -> 6022")
    rt.unix_timestamp = NOW + 5
    r = run(rt, [m(r2, writable=W), m(q, writable=W)], ix("initialize_from_queue"))
    check(r["ok"], f"initialize_from_queue ok {r['err']}")
    print("initialize_from_queue CU:", r["cu"])
    ns = "beta-namespace-long-enough-to-overlap-the-move"
    check(events(r) == [
        ev("SessionInitializedFromQueue") + r2 + u64(1),
        ev("SessionCreated") + r2 + owner + u32(0) + s(ns) + u64(0) + i64(NOW + 5),
        ev("SessionActivated") + r2 + owner + i64(NOW + 5),
    ], "initialize_from_queue events")
    data = rt.accounts[r2].data
    sr = session_rec(data)
    check(sr == dict(disc=rec("Session"), id=r2, owner=owner, n_accounts=0, namespace=ns, is_consumed=0,
                     nonce=0, created_at=NOW + 5, metadata_len=0, size=101 + len(ns)), f"session over reservation {sr}")
    check(bytes(data[sr["size"]:]) == bytes(len(data) - sr["size"]), "bytes after the Session are zero")
    qr = queue_rec(rt.accounts[q].data)
    check((qr["next_position"], qr["pending"], qr["processed"]) == (2, 1, 1), f"queue after init {qr}")
    # the new Session works with the existing instructions
    r = run(rt, [m(r2)], ix("execute_sync_bundle") + u32(0))
    check(r["ok"], "execute_sync_bundle on a session made from a reservation")
    r = run(rt, [m(r2, writable=W), m(q, writable=W)], ix("initialize_from_queue"))
    check(err_code(r) == 6008, "initialize_from_queue on a Session -> 6008")
    rt.unix_timestamp = NOW

    # ---- manual_initialize_session ----
    r3, _ = reserve("r3", ns="gamma")
    r = run(rt, [m(r3, writable=W), m(q, writable=W), m(auth)], ix("manual_initialize_session"))
    check(err_code(r) == 6014, "manual without signer -> 6014")
    r = run(rt, [m(r3, writable=W), m(q, writable=W), m(other, True)], ix("manual_initialize_session"), [other])
    check(err_code(r) == 6015, "manual by non-authority -> 6015")
    r = run(rt, [m(r3, writable=W), m(q2, writable=W), m(auth, True)], ix("manual_initialize_session"), [auth])
    check(err_code(r) == 6022, "manual wrong queue -> 6022")
    before = queue_rec(rt.accounts[q].data)
    r = run(rt, [m(r3, writable=W), m(q, writable=W), m(auth, True)], ix("manual_initialize_session"), [auth])
    check(r["ok"], f"manual (reserved) ok {r['err']}")
    check(events(r) == [
        ev("ManualSessionInitialized") + r3 + auth,
        ev("SessionCreated") + r3 + owner + u32(0) + s("gamma") + u64(0) + i64(NOW),
        ev("SessionActivated") + r3 + owner + i64(NOW),
    ], "manual events")
    check(queue_rec(rt.accounts[q].data) == before, "manual of a reserved one leaves the queue")
    r4, _ = reserve("r4", ns="delta")
    run(rt, [m(r4, writable=W), m(q, writable=W)], ix("queue_session") + i64(10))
    before = queue_rec(rt.accounts[q].data)
    r = run(rt, [m(r4, writable=W), m(q, writable=W), m(auth, True)], ix("manual_initialize_session"), [auth])
    check(r["ok"], "manual (queued) ok")
    after = queue_rec(rt.accounts[q].data)
    check(after["pending"] == before["pending"] - 1 and after["processed"] == before["processed"], f"manual of queued: pending-1 {before} {after}")
    print("manual_initialize_session CU:", r["cu"])

    # ---- emergency_reset_session ----
    r5, _ = reserve("r5", ns="eps")
    run(rt, [m(r5, writable=W), m(q, writable=W)], ix("queue_session") + i64(10))
    r = run(rt, [m(r5, writable=W), m(q, writable=W), m(auth, True)], ix("emergency_reset_session") + s("x" * 257), [auth])
    check(err_code(r) == 6001, "reason 257 bytes -> 6001")
    r = run(rt, [m(r5, writable=W), m(q, writable=W), m(auth, True)], ix("emergency_reset_session") + s(b"\xff"), [auth])
    check(err_code(r) == 6001, "reason invalid utf-8 -> 6001")
    before = queue_rec(rt.accounts[q].data)
    old = bytes(rt.accounts[r5].data)
    r = run(rt, [m(r5, writable=W), m(q, writable=W), m(auth, True)], ix("emergency_reset_session") + s("y" * 256), [auth])
    check(r["ok"], f"reset ok {r['err']}")
    check(events(r) == [ev("EmergencySessionReset") + r5 + auth + s("y" * 256)], "reset event")
    rv = reservation(rt.accounts[r5].data)
    check(rv["status"] == 3, "status 3")
    new = bytes(rt.accounts[r5].data)
    diff = [i for i in range(len(new)) if new[i] != old[i]]
    check(diff == [108 + 3], f"reset changes only status {diff}")
    check(queue_rec(rt.accounts[q].data)["pending"] == before["pending"] - 1, "reset of queued: pending-1")
    for name, metas, data, sg in [
        ("queue_session", [m(r5, writable=W), m(q, writable=W)], ix("queue_session") + i64(1), []),
        ("initialize_from_queue", [m(r5, writable=W), m(q, writable=W)], ix("initialize_from_queue"), []),
        ("manual", [m(r5, writable=W), m(q, writable=W), m(auth, True)], ix("manual_initialize_session"), [auth]),
        ("reset", [m(r5, writable=W), m(q, writable=W), m(auth, True)], ix("emergency_reset_session") + s(""), [auth]),
    ]:
        r = run(rt, metas, data, sg)
        check(err_code(r) == 6023, f"reset reservation refuses {name} -> 6023 ({r['err']})")

    # ---- process_queue ----
    pda, bump, tries = find_program_address([b"__event_authority"], PID)
    print(f"event authority bump {bump} ({tries} tries)")
    items = []
    for i in range(3):
        k, _ = reserve(f"pq{i}", ns=f"pq-{i}")
        run(rt, [m(k, writable=W), m(q, writable=W)], ix("queue_session") + i64(10))
        items.append(k)
    other_q_item, _ = reserve("pq-other", ns="o", queue=q2)
    run(rt, [m(other_q_item, writable=W), m(q2, writable=W)], ix("queue_session") + i64(10))
    reserved_only, _ = reserve("pq-reserved", ns="r")
    base = [m(q, writable=W), m(pda), m(PID)]
    r = run(rt, [m(q, writable=W), m(key("not-pda")), m(PID)], ix("process_queue"))
    check(err_code(r) == 6024, "process_queue wrong authority -> 6024")
    r = run(rt, [m(q, writable=W), m(pda), m(key("not-program"))], ix("process_queue"))
    check(err_code(r) == 6024, f"process_queue wrong program account -> 6024 ({r['err']})")
    r = run(rt, [m(q, writable=W), m(pda)], ix("process_queue"))
    check(err_code(r) == 6002, "process_queue 2 accounts -> 6002")
    before = queue_rec(rt.accounts[q].data)
    snap = {k: bytes(rt.accounts[k].data) for k in (other_q_item, reserved_only, r5)}
    metas = base + [m(items[0], writable=W), m(other_q_item, writable=W), m(items[1], writable=W),
                    m(reserved_only, writable=W), m(items[2], writable=R), m(r5, writable=W),
                    m(items[0], writable=W), m(q, writable=W), m(r2, writable=W)]
    rt.unix_timestamp = NOW + 7
    r = run(rt, metas, ix("process_queue"))
    check(r["ok"], f"process_queue ok {r['err']}")
    print("process_queue (2 initialized, 7 skipped) CU:", r["cu"])
    check(events(r) == [], "process_queue: no Program data lines")
    check(logs(r) == ["Program log: Instruction: ProcessQueue"], f"process_queue logs {logs(r)}")
    inner = r["inner"]
    check(all(p == PID and accs == [pda] and flags == [(pda, True, False)] and depth == 1
              for depth, p, accs, _, flags in inner), "every inner ix: program self, [authority signer ro]")
    datas = [x[3] for x in inner]
    check(all(x.startswith(EVENT_IX_TAG_LE) for x in datas), "inner data starts with EVENT_IX_TAG_LE")
    evs = [x[8:] for x in datas]
    exp = []
    for k, nsn, pos in ((items[0], "pq-0", 4), (items[1], "pq-1", 5)):
        exp += [ev("SessionInitializedFromQueue") + k + u64(pos),
                ev("SessionCreated") + k + owner + u32(0) + s(nsn) + u64(0) + i64(NOW + 7),
                ev("SessionActivated") + k + owner + i64(NOW + 7)]
    after = queue_rec(rt.accounts[q].data)
    exp.append(ev("QueueProcessed") + u32(9) + u32(2) + u32(7) + u64(after["pending"]))
    check(evs == exp, "process_queue CPI events")
    if evs != exp:
        for a in evs:
            print("  got", a.hex())
        for a in exp:
            print("  exp", a.hex())
    check(after["pending"] == before["pending"] - 2 and after["processed"] == before["processed"] + 2,
          f"process_queue counters {before} {after}")
    check(all(bytes(rt.accounts[k].data) == v for k, v in snap.items()), "skipped reservations untouched")
    check(reservation(rt.accounts[items[2]].data)["status"] == 2, "read-only queued item untouched")
    check(session_rec(rt.accounts[items[0]].data)["namespace"] == "pq-0", "item 0 is a Session")
    # empty run
    r = run(rt, base, ix("process_queue"))
    check(r["ok"] and [x[3][8:] for x in r["inner"]] == [ev("QueueProcessed") + u32(0) * 3 + u64(after["pending"])],
          "process_queue with no reservations")
    print("process_queue (empty) CU:", r["cu"])
    # CU per item
    many = []
    for i in range(10):
        k, _ = reserve(f"many{i}", ns=f"ns{i}")
        run(rt, [m(k, writable=W), m(q, writable=W)], ix("queue_session") + i64(10))
        many.append(k)
    r = run(rt, base + [m(k, writable=W) for k in many], ix("process_queue"))
    check(r["ok"] and len(r["inner"]) == 31, f"process_queue 10 items {r['err']}")
    print("process_queue (10 initialized) CU:", r["cu"])

    # the instruction trace holds 64 entries: 1 top-level + 3 per item + 1
    for count, ok in ((20, True), (21, False)):
        ks = []
        for i in range(count):
            k, _ = reserve(f"cap{count}-{i}", ns=f"c{i}")
            run(rt, [m(k, writable=W), m(q, writable=W)], ix("queue_session") + i64(10))
            ks.append(k)
        r = run(rt, base + [m(k, writable=W) for k in ks], ix("process_queue"))
        check(r["ok"] == ok, f"process_queue {count} items ok={ok} ({r['err']})")
        print(f"process_queue ({count} initialized) CU:", r["cu"], r["err"])
        if not ok:
            for k in ks:
                run(rt, [m(k, writable=W), m(q, writable=W)], ix("initialize_from_queue"))
    # an event over the CPI data limit (10 KiB): EventTooLarge; the log form has 24 KiB
    nsbig = "n" * 10200
    big, r = reserve("big", ns=nsbig)
    run(rt, [m(big, writable=W), m(q, writable=W)], ix("queue_session") + i64(10))
    r = run(rt, base + [m(big, writable=W)], ix("process_queue"))
    check(err_code(r) == 6019, f"process_queue big namespace -> 6019 ({r['err']})")
    r = run(rt, [m(big, writable=W), m(q, writable=W)], ix("initialize_from_queue"))
    check(r["ok"], "initialize_from_queue big namespace ok")

    # ---- event tag handler ----
    tag = EVENT_IX_TAG_LE + ev("QueueProcessed") + bytes(20)
    r = run(rt, [m(pda)], tag)
    check(err_code(r) == 6024, "event ix with unsigned authority -> 6024")
    fake = key("fake")
    r = run(rt, [m(fake, True)], tag, [fake])
    check(err_code(r) == 6024, "event ix signed by a non-PDA -> 6024")
    r = run(rt, [], tag)
    check(err_code(r) == 6024, "event ix without accounts -> 6024")
    check(all("Instruction:" not in l for l in logs(r)), "event ix logs no Instruction line")

    # ---- pad_logs ----
    for n, lines in ((0, 0), (1, 1), (100, 1), (101, 2), (65536, 656)):
        r = run(rt, [], ix("pad_logs") + u32(n))
        pads = logs(r)[1:]
        check(r["ok"] and len(pads) == lines and sum(len(l) - 13 for l in pads) == n and
              all(len(l) - 13 <= 100 for l in pads), f"pad_logs {n}")
        if n == 65536:
            print("pad_logs 65536 CU:", r["cu"])
    r = run(rt, [], ix("pad_logs") + u32(65537))
    check(err_code(r) == 6001, "pad_logs 65537 -> 6001")
    r = run(rt, [], ix("pad_logs") + u32(1) + b"\x00")
    check(err_code(r) == 6001, "pad_logs trailing -> 6001")
    r = run(rt, [m(r1)], ix("pad_logs") + u32(5))
    check(r["ok"], "pad_logs ignores accounts")
    # error log line
    r = run(rt, [m(q, writable=W), m(key("not-pda")), m(PID)], ix("process_queue"))
    check(logs(r)[-1] == "Program log: Error: InvalidEventAuthority (6024)", f"error line {logs(r)[-1:]}")


if OLD:
    regression()
new_suite()
print("FAILED" if FAILS else "ALL OK", len(FAILS))
sys.exit(1 if FAILS else 0)
