/*
 * Valence stand-in shard program (freestanding C for SBPF v0).
 *
 * Plays the Valence shard program (and, deployed under three more program ids,
 * the processor / scheduler / diff singletons) on a local Surfnet or any
 * Solana cluster.  It writes Anchor-layout records and emits Anchor events
 * ("Program data: <base64>") so the lifecycle server's codecs, monitor and
 * logsSubscribe path are exercised against a real runtime.
 *
 * README.md in this folder is the reference for every instruction, account
 * list, record and event layout and error code.  Build with ./build.sh.
 *
 * Constraints that shape this file:
 *  - no libc: syscalls are plain extern functions resolved by the loader;
 *    variable-length copies go through sol_memcpy_;
 *  - no writable .data/.bss: all scratch memory is the SBPF heap region
 *    (0x300000000, 32 KiB, zeroed per instruction) or the stack;
 *  - clang-16 caps every stack frame at 512 bytes and BPF calls at 5 args;
 *  - all multi-byte fields are read/written byte-wise (little-endian), since
 *    borsh data has no alignment.
 */
#include "discriminators.h"

typedef unsigned char u8;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;

typedef struct {
    const u8 *addr;
    u64 len;
} SolBytes;

/* ---- syscalls (the linker turns each call into a loader relocation) ---- */
extern void sol_log_(const char *msg, u64 len);
extern void sol_log_64_(u64 a, u64 b, u64 c, u64 d, u64 e);
extern void sol_log_data(const SolBytes *slices, u64 count);
extern u64 sol_sha256(const SolBytes *slices, u64 count, u8 *out);
extern void sol_memcpy_(void *dst, const void *src, u64 n);
extern u64 sol_get_clock_sysvar(void *out);

#define LOG(s) sol_log_((s), sizeof(s) - 1)

/* ---- custom error codes (Anchor-style numbering from 6000) ---- */
enum {
    E_UNKNOWN_INSTRUCTION = 6000,
    E_INVALID_INSTRUCTION_DATA,
    E_NOT_ENOUGH_ACCOUNTS,
    E_TOO_MANY_ACCOUNTS,
    E_ACCOUNT_NOT_WRITABLE,
    E_INVALID_ACCOUNT_OWNER,
    E_ACCOUNT_TOO_SMALL,
    E_ACCOUNT_ALREADY_INITIALIZED,
    E_INVALID_RECORD,
    E_REQUEST_MISMATCH,
    E_STATE_HASH_MISMATCH,
    E_SESSION_ALREADY_CONSUMED,
    E_INVALID_ACCOUNT_INDEX,
    E_SESSION_COUNT_MISMATCH,
    E_MISSING_SIGNER,
    E_UNAUTHORIZED,
    E_ALREADY_PAUSED,
    E_NOT_PAUSED,
    E_INVALID_SINGLETON_KIND,
    E_EVENT_TOO_LARGE,
    E_REQUEST_ALREADY_INITIALIZED,
    E_LAST
};

/* Names for the "Program log: Error: <Name> (<code>)" line.  A pointer table
 * lands in .data.rel.ro, which the linker resolves with 64-bit relocations. */
static const char *const ERROR_NAMES[] = {
    "UnknownInstruction",       "InvalidInstructionData", "NotEnoughAccounts",
    "TooManyAccounts",          "AccountNotWritable",     "InvalidAccountOwner",
    "AccountTooSmall",          "AccountAlreadyInitialized", "InvalidRecord",
    "RequestMismatch",          "StateHashMismatch",      "SessionAlreadyConsumed",
    "InvalidAccountIndex",      "SessionCountMismatch",   "MissingSigner",
    "Unauthorized",             "AlreadyPaused",          "NotPaused",
    "InvalidSingletonKind",     "EventTooLarge",          "RequestAlreadyInitialized",
};

/* Out-of-line helpers: keeps .text small and every frame well under clang's
 * 512-byte stack cap (BPF frames are not shared between calls). */
#define NOINLINE __attribute__((noinline))

/* ---- memory map ---- */
#define HEAP_START ((u8 *)0x300000000ULL)
#define MAX_ACCOUNTS 128
/* account table lives at the start of the heap, event scratch after it */
#define EVENT_BUF (HEAP_START + 8192)
#define EVENT_CAP (32768 - 8192)
#define MAX_PERMITTED_DATA_INCREASE 10240

#define F_SIGNER 1
#define F_WRITABLE 2

typedef struct {
    const u8 *key;
    const u8 *owner;
    u8 *data;
    u64 data_len;
    u64 flags;
} Acct;

typedef struct {
    Acct *acc;
    u64 n;
    const u8 *program_id;
} Ctx;

/* ---- little-endian helpers ---- */
static inline u64 ld64(const u8 *p) {
    u64 v;
    __builtin_memcpy(&v, p, 8);
    return v;
}
static inline u32 ld32(const u8 *p) {
    u32 v;
    __builtin_memcpy(&v, p, 4);
    return v;
}
static inline void copy(u8 *dst, const u8 *src, u64 n) {
    if (n)
        sol_memcpy_(dst, src, n);
}
static int key_eq(const u8 *a, const u8 *b) {
    for (int i = 0; i < 32; i += 8)
        if (ld64(a + i) != ld64(b + i))
            return 0;
    return 1;
}
static int is_zero32(const u8 *a) {
    for (int i = 0; i < 32; i += 8)
        if (ld64(a + i) != 0)
            return 0;
    return 1;
}

/* ---- borsh reader: every accessor bounds-checks, 0 means malformed ---- */
typedef struct {
    const u8 *p;
    u64 len;
    u64 pos;
} Rd;

static inline const u8 *rd_cur(const Rd *r) { return r->p + r->pos; }

static int rd_take(Rd *r, u64 n, const u8 **out) {
    if (n > r->len - r->pos)
        return 0;
    *out = r->p + r->pos;
    r->pos += n;
    return 1;
}
static int rd_u8(Rd *r, u8 *v) {
    const u8 *p;
    if (!rd_take(r, 1, &p))
        return 0;
    *v = p[0];
    return 1;
}
static int rd_u32(Rd *r, u32 *v) {
    const u8 *p;
    if (!rd_take(r, 4, &p))
        return 0;
    *v = ld32(p);
    return 1;
}
static int rd_u64(Rd *r, u64 *v) {
    const u8 *p;
    if (!rd_take(r, 8, &p))
        return 0;
    *v = ld64(p);
    return 1;
}

/* Rust's String must be valid UTF-8 or borsh decoding fails downstream, so
 * reject what str::from_utf8 would (overlongs, surrogates, > U+10FFFF). */
NOINLINE static int utf8_ok(const u8 *s, u64 n) {
    u64 i = 0;
    while (i < n) {
        u8 c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        u64 more;
        u32 cp, min;
        if ((c & 0xE0) == 0xC0) {
            more = 1; cp = c & 0x1F; min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            more = 2; cp = c & 0x0F; min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            more = 3; cp = c & 0x07; min = 0x10000;
        } else {
            return 0;
        }
        if (more > n - i - 1)
            return 0;
        for (u64 j = 1; j <= more; j++) {
            u8 d = s[i + j];
            if ((d & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (d & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += more + 1;
    }
    return 1;
}

/* String = u32 len + UTF-8 bytes */
static int rd_string(Rd *r) {
    u32 n;
    const u8 *s;
    return rd_u32(r, &n) && rd_take(r, n, &s) && utf8_ok(s, n);
}
/* Vec<String> */
static int rd_vec_string(Rd *r) {
    u32 n;
    if (!rd_u32(r, &n))
        return 0;
    for (u32 i = 0; i < n; i++)
        if (!rd_string(r))
            return 0;
    return 1;
}
/* Vec<u8> (count) and Vec<Pubkey>; *items points at the first element */
static int rd_vec(Rd *r, u64 elem, u32 *count, const u8 **items) {
    u32 n;
    if (!rd_u32(r, &n))
        return 0;
    /* divide rather than multiply so a huge count cannot overflow */
    if (n > (r->len - r->pos) / elem)
        return 0;
    *count = n;
    return rd_take(r, (u64)n * elem, items);
}

/* ---- sticky writer: overflow turns into one error at the end ---- */
typedef struct {
    u8 *p;
    u64 cap;
    u64 pos;
    u64 ok;
} Wr;

NOINLINE static void w_bytes(Wr *w, const u8 *src, u64 n) {
    if (!w->ok || n > w->cap - w->pos) {
        w->ok = 0;
        return;
    }
    copy(w->p + w->pos, src, n);
    w->pos += n;
}
static void w_u8(Wr *w, u8 v) { w_bytes(w, &v, 1); }
static void w_u32(Wr *w, u32 v) { w_bytes(w, (const u8 *)&v, 4); }
static void w_u64(Wr *w, u64 v) { w_bytes(w, (const u8 *)&v, 8); }
static void w_zero(Wr *w, u64 n) {
    if (!w->ok || n > w->cap - w->pos) {
        w->ok = 0;
        return;
    }
    for (u64 i = 0; i < n; i++)
        w->p[w->pos + i] = 0;
    w->pos += n;
}

static void wr_init(Wr *w, u8 *p, u64 cap) {
    w->p = p;
    w->cap = cap;
    w->pos = 0;
    w->ok = 1;
}

/* Events are built in heap scratch, then logged as ONE slice so the runtime
 * prints exactly one base64 blob per "Program data:" line, as Anchor does. */
static void ev_begin(Wr *w, u64 disc) {
    wr_init(w, EVENT_BUF, EVENT_CAP);
    w_u64(w, disc);
}
static u64 ev_emit(Wr *w) {
    if (!w->ok)
        return E_EVENT_TOO_LARGE;
    SolBytes s = {w->p, w->pos};
    sol_log_data(&s, 1);
    return 0;
}

static i64 unix_now(void) {
    /* Clock: slot, epoch_start_timestamp, epoch, leader_schedule_epoch, unix_timestamp */
    u64 clock[5];
    sol_get_clock_sysvar(clock);
    return (i64)clock[4];
}

/* ---- account checks ---- */

/* A fresh record target: writable, owned by this program, big enough, and still
 * zero where the discriminator goes (never overwrite an existing record). */
static u64 check_target(const Ctx *c, const Acct *a, u64 need) {
    if (!(a->flags & F_WRITABLE))
        return E_ACCOUNT_NOT_WRITABLE;
    if (!key_eq(a->owner, c->program_id))
        return E_INVALID_ACCOUNT_OWNER;
    if (a->data_len < need || a->data_len < 8)
        return E_ACCOUNT_TOO_SMALL;
    if (ld64(a->data) != 0)
        return E_ACCOUNT_ALREADY_INITIALIZED;
    return 0;
}

/* An existing record of the given kind owned by this program. */
static u64 check_record(const Ctx *c, const Acct *a, u64 disc) {
    if (!key_eq(a->owner, c->program_id))
        return E_INVALID_ACCOUNT_OWNER;
    if (a->data_len < 8 || ld64(a->data) != disc)
        return E_INVALID_RECORD;
    return 0;
}

/* ---- Session record parsing (shared by several instructions) ---- */
typedef struct {
    const u8 *owner;
    const u8 *keys; /* accounts: n_keys * 32 bytes */
    u32 n_keys;
    u64 consumed_off; /* offset of is_consumed inside the account data */
    u8 is_consumed;
    u64 nonce;
    i64 created_at;
    const u8 *accounts_span; /* borsh Vec<Pubkey> incl. length prefix */
    u64 accounts_span_len;
    const u8 *ns_span; /* borsh String incl. length prefix */
    u64 ns_span_len;
} SessionView;

NOINLINE static int parse_session(const Acct *a, SessionView *s) {
    Rd r = {a->data, a->data_len, 8};
    const u8 *id, *tmp;
    u64 ts;
    if (!rd_take(&r, 32, &id) || !rd_take(&r, 32, &s->owner))
        return 0;
    s->accounts_span = rd_cur(&r);
    if (!rd_vec(&r, 32, &s->n_keys, &s->keys))
        return 0;
    s->accounts_span_len = (u64)(rd_cur(&r) - s->accounts_span);
    s->ns_span = rd_cur(&r);
    if (!rd_string(&r))
        return 0;
    s->ns_span_len = (u64)(rd_cur(&r) - s->ns_span);
    s->consumed_off = r.pos;
    if (!rd_u8(&r, &s->is_consumed) || !rd_u64(&r, &s->nonce) || !rd_u64(&r, &ts))
        return 0;
    s->created_at = (i64)ts;
    u32 mlen;
    if (!rd_vec(&r, 1, &mlen, &tmp))
        return 0;
    return 1;
}

/* SessionCreated + SessionActivated, read back from the record just written so
 * create_session and consume_session report exactly what is on chain. */
NOINLINE static u64 emit_session_events(const Acct *a) {
    SessionView s;
    Wr w;
    u64 err;
    if (!parse_session(a, &s))
        return E_INVALID_RECORD;
    ev_begin(&w, EV_SESSION_CREATED);
    w_bytes(&w, a->key, 32);
    w_bytes(&w, s.owner, 32);
    w_bytes(&w, s.accounts_span, s.accounts_span_len);
    w_bytes(&w, s.ns_span, s.ns_span_len);
    w_u64(&w, s.nonce);
    w_u64(&w, (u64)s.created_at);
    if ((err = ev_emit(&w)))
        return err;
    ev_begin(&w, EV_SESSION_ACTIVATED);
    w_bytes(&w, a->key, 32);
    w_bytes(&w, s.owner, 32);
    w_u64(&w, (u64)s.created_at);
    return ev_emit(&w);
}

/* ===================== shard instructions ===================== */

/* request_account(owner: Pubkey, capabilities: Vec<String>, init_state_hash: [u8;32])
 * accounts: [0] request record (writable, program-owned, zeroed) */
static u64 ix_request_account(const Ctx *c, Rd *r) {
    const u8 *owner, *hash, *caps;
    u64 caps_len, err;
    if (!rd_take(r, 32, &owner))
        return E_INVALID_INSTRUCTION_DATA;
    caps = rd_cur(r);
    if (!rd_vec_string(r))
        return E_INVALID_INSTRUCTION_DATA;
    caps_len = (u64)(rd_cur(r) - caps);
    if (!rd_take(r, 32, &hash) || r->pos != r->len)
        return E_INVALID_INSTRUCTION_DATA;
    if (c->n < 1)
        return E_NOT_ENOUGH_ACCOUNTS;
    const Acct *t = &c->acc[0];
    if ((err = check_target(c, t, 8 + 32 + 32 + caps_len + 32 + 8 + 32)))
        return err;

    i64 now = unix_now();
    Wr w;
    wr_init(&w, t->data, t->data_len);
    w_u64(&w, ACC_ACCOUNT_REQUEST);
    w_bytes(&w, t->key, 32);
    w_bytes(&w, owner, 32);
    w_bytes(&w, caps, caps_len);
    w_bytes(&w, hash, 32);
    w_u64(&w, (u64)now);
    w_zero(&w, 32); /* account: none yet (initialize_account fills it in) */
    if (!w.ok)
        return E_ACCOUNT_TOO_SMALL;

    ev_begin(&w, EV_ACCOUNT_REQUESTED);
    w_bytes(&w, t->key, 32);
    w_bytes(&w, owner, 32);
    w_bytes(&w, caps, caps_len);
    w_bytes(&w, hash, 32);
    w_u64(&w, (u64)now);
    if ((err = ev_emit(&w)))
        return err;

    /* PDAComputed tells the builder what to create: any fresh program-owned
     * account with at least account_space bytes (the stand-in derives no PDA). */
    ev_begin(&w, EV_PDA_COMPUTED);
    w_bytes(&w, t->key, 32);
    w_bytes(&w, owner, 32);
    w_u64(&w, 8 + 32 + 32 + caps_len + 32 + 1 + 8);
    w_bytes(&w, hash, 32);
    return ev_emit(&w);
}

/* initialize_account(request_id: Pubkey, init_state_data: Vec<u8>)
 * accounts: [0] new account (writable, program-owned, zeroed), [1] request record (writable)
 * The request record remembers its account, so a request is initialized once
 * whoever asks (another wallet, a deployment with a fresh database). */
static u64 ix_initialize_account(const Ctx *c, Rd *r) {
    const u8 *request_id, *init_data;
    u32 init_len;
    u64 err;
    if (!rd_take(r, 32, &request_id) || !rd_vec(r, 1, &init_len, &init_data) ||
        r->pos != r->len)
        return E_INVALID_INSTRUCTION_DATA;
    if (c->n < 2)
        return E_NOT_ENOUGH_ACCOUNTS;
    const Acct *t = &c->acc[0];
    const Acct *q = &c->acc[1];
    if (!key_eq(q->key, request_id))
        return E_REQUEST_MISMATCH;
    if ((err = check_record(c, q, ACC_ACCOUNT_REQUEST)))
        return err;
    if (!(q->flags & F_WRITABLE))
        return E_ACCOUNT_NOT_WRITABLE;

    /* AccountRequest: disc, id, owner, capabilities, init_state_hash, created_at, account */
    Rd rq = {q->data, q->data_len, 8};
    const u8 *rid, *owner, *caps, *want_hash, *ts, *linked;
    if (!rd_take(&rq, 32, &rid) || !rd_take(&rq, 32, &owner))
        return E_INVALID_RECORD;
    caps = rd_cur(&rq);
    if (!rd_vec_string(&rq))
        return E_INVALID_RECORD;
    u64 caps_len = (u64)(rd_cur(&rq) - caps);
    if (!rd_take(&rq, 32, &want_hash) || !rd_take(&rq, 8, &ts))
        return E_INVALID_RECORD;
    u64 link_off = rq.pos;
    if (!rd_take(&rq, 32, &linked))
        return E_INVALID_RECORD;
    if (!is_zero32(linked))
        return E_REQUEST_ALREADY_INITIALIZED;

    if ((err = check_target(c, t, 8 + 32 + 32 + caps_len + 32 + 1 + 8)))
        return err;

    u8 state_hash[32];
    SolBytes in = {init_data, init_len};
    sol_sha256(&in, 1, state_hash);
    /* an all-zero init_state_hash in the request means "no expectation" */
    if (!is_zero32(want_hash) && !key_eq(want_hash, state_hash))
        return E_STATE_HASH_MISMATCH;

    i64 now = unix_now();
    Wr w;
    wr_init(&w, t->data, t->data_len);
    w_u64(&w, ACC_ACCOUNT);
    w_bytes(&w, t->key, 32);
    w_bytes(&w, owner, 32);
    w_bytes(&w, caps, caps_len);
    w_bytes(&w, state_hash, 32);
    w_u8(&w, 1);
    w_u64(&w, (u64)now);
    if (!w.ok)
        return E_ACCOUNT_TOO_SMALL;
    copy(q->data + link_off, t->key, 32);

    ev_begin(&w, EV_ACCOUNT_INITIALIZED);
    w_bytes(&w, t->key, 32);
    w_bytes(&w, request_id, 32);
    w_bytes(&w, owner, 32);
    w_bytes(&w, caps, caps_len);
    w_bytes(&w, state_hash, 32);
    w_u64(&w, (u64)now);
    return ev_emit(&w);
}

/* create_session(owner: Pubkey, accounts: Vec<Pubkey>, namespace: String,
 *                nonce: u64, metadata: Vec<u8>)
 * accounts: [0] session record (writable, program-owned, zeroed) */
static u64 ix_create_session(const Ctx *c, Rd *r) {
    const u8 *owner, *accs, *keys, *ns, *meta, *mitems;
    u64 accs_len, ns_len, meta_len, nonce, err;
    u32 nkeys, mlen;
    if (!rd_take(r, 32, &owner))
        return E_INVALID_INSTRUCTION_DATA;
    accs = rd_cur(r);
    if (!rd_vec(r, 32, &nkeys, &keys))
        return E_INVALID_INSTRUCTION_DATA;
    accs_len = (u64)(rd_cur(r) - accs);
    ns = rd_cur(r);
    if (!rd_string(r))
        return E_INVALID_INSTRUCTION_DATA;
    ns_len = (u64)(rd_cur(r) - ns);
    if (!rd_u64(r, &nonce))
        return E_INVALID_INSTRUCTION_DATA;
    meta = rd_cur(r);
    if (!rd_vec(r, 1, &mlen, &mitems) || r->pos != r->len)
        return E_INVALID_INSTRUCTION_DATA;
    meta_len = (u64)(rd_cur(r) - meta);
    if (c->n < 1)
        return E_NOT_ENOUGH_ACCOUNTS;
    const Acct *t = &c->acc[0];
    if ((err = check_target(c, t, 8 + 32 + 32 + accs_len + ns_len + 1 + 8 + 8 + meta_len)))
        return err;

    Wr w;
    wr_init(&w, t->data, t->data_len);
    w_u64(&w, ACC_SESSION);
    w_bytes(&w, t->key, 32);
    w_bytes(&w, owner, 32);
    w_bytes(&w, accs, accs_len);
    w_bytes(&w, ns, ns_len);
    w_u8(&w, 0);
    w_u64(&w, nonce);
    w_u64(&w, (u64)unix_now());
    w_bytes(&w, meta, meta_len);
    if (!w.ok)
        return E_ACCOUNT_TOO_SMALL;
    return emit_session_events(t);
}

/* Writes one new Session record from a template
 * { account_indices: Vec<u8>, namespace: String, metadata: Vec<u8> }
 * read from r, taking owner/accounts from the consumed session. */
NOINLINE static u64 write_session_from_template(const Ctx *c, Rd *r, const Acct *t,
                                       const SessionView *parent, i64 now) {
    const u8 *idx, *ns, *meta, *mitems;
    u32 nidx, mlen;
    u64 ns_len, meta_len, err;
    if (!rd_vec(r, 1, &nidx, &idx))
        return E_INVALID_INSTRUCTION_DATA;
    ns = rd_cur(r);
    if (!rd_string(r))
        return E_INVALID_INSTRUCTION_DATA;
    ns_len = (u64)(rd_cur(r) - ns);
    meta = rd_cur(r);
    if (!rd_vec(r, 1, &mlen, &mitems))
        return E_INVALID_INSTRUCTION_DATA;
    meta_len = (u64)(rd_cur(r) - meta);
    for (u32 i = 0; i < nidx; i++)
        if (idx[i] >= parent->n_keys)
            return E_INVALID_ACCOUNT_INDEX;
    if ((err = check_target(c, t, 8 + 32 + 32 + 4 + 32 * (u64)nidx + ns_len + 1 + 8 + 8 + meta_len)))
        return err;

    Wr w;
    wr_init(&w, t->data, t->data_len);
    w_u64(&w, ACC_SESSION);
    w_bytes(&w, t->key, 32);
    w_bytes(&w, parent->owner, 32);
    w_u32(&w, nidx);
    for (u32 i = 0; i < nidx; i++)
        w_bytes(&w, parent->keys + 32 * (u64)idx[i], 32);
    w_bytes(&w, ns, ns_len);
    w_u8(&w, 0);
    w_u64(&w, parent->nonce + 1);
    w_u64(&w, (u64)now);
    w_bytes(&w, meta, meta_len);
    return w.ok ? 0 : E_ACCOUNT_TOO_SMALL;
}

/* consume_session(new_sessions: Vec<SessionTemplate>)
 * accounts: [0] session to consume (writable), [1] SessionConsumption record
 * (writable, zeroed), [2..2+k] one fresh account per template (writable, zeroed) */
static u64 ix_consume_session(const Ctx *c, Rd *r) {
    u32 k;
    u64 err;
    if (!rd_u32(r, &k))
        return E_INVALID_INSTRUCTION_DATA;
    if (c->n < 2)
        return E_NOT_ENOUGH_ACCOUNTS;
    if (c->n - 2 != k)
        return E_SESSION_COUNT_MISMATCH;
    const Acct *s = &c->acc[0];
    const Acct *rec = &c->acc[1];
    if (!(s->flags & F_WRITABLE))
        return E_ACCOUNT_NOT_WRITABLE;
    if ((err = check_record(c, s, ACC_SESSION)))
        return err;
    SessionView parent;
    if (!parse_session(s, &parent))
        return E_INVALID_RECORD;
    if (parent.is_consumed)
        return E_SESSION_ALREADY_CONSUMED;

    /* The consumption record goes first so that passing it again as a new
     * session account fails as AccountAlreadyInitialized. */
    if ((err = check_target(c, rec, 8 + 32 + 4 + 32 * (u64)k + 64 + 8)))
        return err;
    i64 now = unix_now();
    Wr w;
    wr_init(&w, rec->data, rec->data_len);
    w_u64(&w, ACC_SESSION_CONSUMPTION);
    w_bytes(&w, s->key, 32);
    w_u32(&w, k);
    for (u32 i = 0; i < k; i++)
        w_bytes(&w, c->acc[2 + i].key, 32);
    /* a program cannot see its own transaction signature: stays zero */
    w_zero(&w, 64);
    w_u64(&w, (u64)now);
    if (!w.ok)
        return E_ACCOUNT_TOO_SMALL;

    for (u32 i = 0; i < k; i++)
        if ((err = write_session_from_template(c, r, &c->acc[2 + i], &parent, now)))
            return err;
    if (r->pos != r->len)
        return E_INVALID_INSTRUCTION_DATA;

    s->data[parent.consumed_off] = 1;

    ev_begin(&w, EV_SESSION_CONSUMED);
    w_bytes(&w, s->key, 32);
    w_bytes(&w, rec->key, 32);
    w_u32(&w, k);
    for (u32 i = 0; i < k; i++)
        w_bytes(&w, c->acc[2 + i].key, 32);
    w_u64(&w, (u64)now);
    if ((err = ev_emit(&w)))
        return err;
    for (u32 i = 0; i < k; i++)
        if ((err = emit_session_events(&c->acc[2 + i])))
            return err;
    return 0;
}

/* execute_sync_bundle(operations: Vec<{function_hash: [u8;32], args: Vec<u8>}>)
 * accounts: [0] session record (read-only is enough) */
static u64 ix_execute_sync_bundle(const Ctx *c, Rd *r) {
    u32 n;
    u64 err;
    if (c->n < 1)
        return E_NOT_ENOUGH_ACCOUNTS;
    const Acct *s = &c->acc[0];
    if ((err = check_record(c, s, ACC_SESSION)))
        return err;
    SessionView sv;
    if (!parse_session(s, &sv))
        return E_INVALID_RECORD;
    if (sv.is_consumed)
        return E_SESSION_ALREADY_CONSUMED;
    if (!rd_u32(r, &n))
        return E_INVALID_INSTRUCTION_DATA;
    Wr w;
    for (u32 i = 0; i < n; i++) {
        const u8 *hash, *args, *items;
        u32 alen;
        if (!rd_take(r, 32, &hash))
            return E_INVALID_INSTRUCTION_DATA;
        args = rd_cur(r);
        if (!rd_vec(r, 1, &alen, &items))
            return E_INVALID_INSTRUCTION_DATA;
        ev_begin(&w, EV_BUNDLE_OPERATION_EXECUTED);
        w_bytes(&w, s->key, 32);
        w_u32(&w, i);
        w_bytes(&w, hash, 32);
        w_bytes(&w, args, 4 + (u64)alen);
        if ((err = ev_emit(&w)))
            return err;
    }
    if (r->pos != r->len)
        return E_INVALID_INSTRUCTION_DATA;
    ev_begin(&w, EV_SYNC_BUNDLE_EXECUTED);
    w_bytes(&w, s->key, 32);
    w_u32(&w, n);
    w_u64(&w, (u64)unix_now());
    return ev_emit(&w);
}

/* ===================== singleton instructions ===================== */

/* SingletonState: disc, kind u8, status u8, version u32, authority Pubkey, config Vec<u8> */
#define SS_KIND 8
#define SS_STATUS 9
#define SS_VERSION 10
#define SS_AUTHORITY 14
#define SS_CONFIG 46
#define STATUS_ACTIVE 1
#define STATUS_PAUSED 2

NOINLINE static u64 emit_singleton_event(const Ctx *c, u64 disc, const Acct *st) {
    Wr w;
    u32 cfg_len = ld32(st->data + SS_CONFIG);
    ev_begin(&w, disc);
    w_bytes(&w, c->program_id, 32);
    w_bytes(&w, st->key, 32);
    w_bytes(&w, st->data + SS_KIND, SS_CONFIG - SS_KIND); /* kind, status, version, authority */
    w_bytes(&w, st->data + SS_CONFIG, 4 + (u64)cfg_len);
    w_u64(&w, (u64)unix_now());
    return ev_emit(&w);
}

/* Loads an initialized state record and checks the authority signer. */
static u64 load_singleton(const Ctx *c, const Acct **st_out) {
    u64 err;
    if (c->n < 2)
        return E_NOT_ENOUGH_ACCOUNTS;
    const Acct *st = &c->acc[0];
    const Acct *auth = &c->acc[1];
    if (!(st->flags & F_WRITABLE))
        return E_ACCOUNT_NOT_WRITABLE;
    if ((err = check_record(c, st, ACC_SINGLETON_STATE)))
        return err;
    if (st->data_len < SS_CONFIG + 4 ||
        ld32(st->data + SS_CONFIG) > st->data_len - SS_CONFIG - 4)
        return E_INVALID_RECORD;
    if (!(auth->flags & F_SIGNER))
        return E_MISSING_SIGNER;
    if (!key_eq(auth->key, st->data + SS_AUTHORITY))
        return E_UNAUTHORIZED;
    *st_out = st;
    return 0;
}

/* initialize(kind: u8, config: Vec<u8>)
 * accounts: [0] state record (writable, program-owned, zeroed), [1] authority (signer) */
static u64 ix_singleton_initialize(const Ctx *c, Rd *r) {
    u8 kind;
    u32 cfg_len;
    const u8 *cfg;
    u64 err;
    if (!rd_u8(r, &kind) || !rd_vec(r, 1, &cfg_len, &cfg) || r->pos != r->len)
        return E_INVALID_INSTRUCTION_DATA;
    if (kind < 1 || kind > 3)
        return E_INVALID_SINGLETON_KIND;
    if (c->n < 2)
        return E_NOT_ENOUGH_ACCOUNTS;
    const Acct *st = &c->acc[0];
    const Acct *auth = &c->acc[1];
    if (!(auth->flags & F_SIGNER))
        return E_MISSING_SIGNER;
    if ((err = check_target(c, st, SS_CONFIG + 4 + (u64)cfg_len)))
        return err;
    Wr w;
    wr_init(&w, st->data, st->data_len);
    w_u64(&w, ACC_SINGLETON_STATE);
    w_u8(&w, kind);
    w_u8(&w, STATUS_ACTIVE);
    w_u32(&w, 1);
    w_bytes(&w, auth->key, 32);
    w_u32(&w, cfg_len);
    w_bytes(&w, cfg, cfg_len);
    if (!w.ok)
        return E_ACCOUNT_TOO_SMALL;
    return emit_singleton_event(c, EV_SINGLETON_INITIALIZED, st);
}

/* pause() / resume(): accounts [0] state (writable), [1] authority (signer) */
static u64 ix_singleton_set_status(const Ctx *c, Rd *r, u8 to) {
    const Acct *st;
    u64 err;
    if (r->pos != r->len)
        return E_INVALID_INSTRUCTION_DATA;
    if ((err = load_singleton(c, &st)))
        return err;
    if (st->data[SS_STATUS] == to)
        return to == STATUS_PAUSED ? E_ALREADY_PAUSED : E_NOT_PAUSED;
    st->data[SS_STATUS] = to;
    return emit_singleton_event(c, to == STATUS_PAUSED ? EV_SINGLETON_PAUSED : EV_SINGLETON_RESUMED, st);
}

/* update_config(config: Vec<u8>): replaces config, version += 1 */
static u64 ix_singleton_update_config(const Ctx *c, Rd *r) {
    const Acct *st;
    const u8 *cfg;
    u32 cfg_len;
    u64 err;
    if (!rd_vec(r, 1, &cfg_len, &cfg) || r->pos != r->len)
        return E_INVALID_INSTRUCTION_DATA;
    if ((err = load_singleton(c, &st)))
        return err;
    if (st->data_len < SS_CONFIG + 4 + (u64)cfg_len)
        return E_ACCOUNT_TOO_SMALL;
    u64 old_end = SS_CONFIG + 4 + (u64)ld32(st->data + SS_CONFIG);
    u32 version = ld32(st->data + SS_VERSION) + 1;
    Wr w;
    wr_init(&w, st->data, st->data_len);
    w.pos = SS_VERSION;
    w_u32(&w, version);
    w.pos = SS_CONFIG;
    w_u32(&w, cfg_len);
    w_bytes(&w, cfg, cfg_len);
    /* a shorter config must not leave stale bytes behind the record */
    if (w.pos < old_end)
        w_zero(&w, old_end - w.pos);
    if (!w.ok)
        return E_ACCOUNT_TOO_SMALL;
    return emit_singleton_event(c, EV_SINGLETON_CONFIG_UPDATED, st);
}

/* ===================== entrypoint ===================== */

NOINLINE static void log_error(u64 code) {
    /* "Error: <Name> (<code>)" assembled in heap scratch: one log line */
    u8 *b = EVENT_BUF;
    u64 n = 0;
    const char *prefix = "Error: ";
    for (const char *p = prefix; *p; p++)
        b[n++] = (u8)*p;
    if (code >= E_UNKNOWN_INSTRUCTION && code < E_LAST) {
        for (const char *p = ERROR_NAMES[code - E_UNKNOWN_INSTRUCTION]; *p; p++)
            b[n++] = (u8)*p;
        b[n++] = ' ';
        b[n++] = '(';
        u8 digits[20];
        u64 d = 0, v = code;
        do {
            digits[d++] = (u8)('0' + v % 10);
            v /= 10;
        } while (v);
        while (d)
            b[n++] = digits[--d];
        b[n++] = ')';
    }
    sol_log_((const char *)b, n);
}

static u64 dispatch(const Ctx *c, const u8 *ix, u64 ix_len) {
    if (ix_len < 8) {
        LOG("Instruction data shorter than a discriminator");
        return E_UNKNOWN_INSTRUCTION;
    }
    Rd r = {ix, ix_len, 8};
    switch (ld64(ix)) {
    case IX_REQUEST_ACCOUNT:
        LOG("Instruction: RequestAccount");
        return ix_request_account(c, &r);
    case IX_INITIALIZE_ACCOUNT:
        LOG("Instruction: InitializeAccount");
        return ix_initialize_account(c, &r);
    case IX_CREATE_SESSION:
        LOG("Instruction: CreateSession");
        return ix_create_session(c, &r);
    case IX_CONSUME_SESSION:
        LOG("Instruction: ConsumeSession");
        return ix_consume_session(c, &r);
    case IX_EXECUTE_SYNC_BUNDLE:
        LOG("Instruction: ExecuteSyncBundle");
        return ix_execute_sync_bundle(c, &r);
    case IX_INITIALIZE:
        LOG("Instruction: Initialize");
        return ix_singleton_initialize(c, &r);
    case IX_PAUSE:
        LOG("Instruction: Pause");
        return ix_singleton_set_status(c, &r, STATUS_PAUSED);
    case IX_RESUME:
        LOG("Instruction: Resume");
        return ix_singleton_set_status(c, &r, STATUS_ACTIVE);
    case IX_UPDATE_CONFIG:
        LOG("Instruction: UpdateConfig");
        return ix_singleton_update_config(c, &r);
    default:
        LOG("Unknown instruction discriminator");
        return E_UNKNOWN_INSTRUCTION;
    }
}

/* The loader calls this with r1 = the serialized input (aligned layout):
 *   u64 n; n x account; u64 ix_len; ix bytes; 32-byte program id.
 * A non-duplicate account is: u8 0xff, is_signer, is_writable, executable,
 * 4 pad, key[32], owner[32], lamports u64, data_len u64, data, 10240 spare
 * bytes, padding to 8, rent_epoch u64.  A duplicate is: u8 index + 7 pad. */
u64 entrypoint(const u8 *input) {
    Acct *acc = (Acct *)HEAP_START;
    const u8 *p = input;
    u64 n = ld64(p);
    p += 8;
    if (n > MAX_ACCOUNTS) {
        log_error(E_TOO_MANY_ACCOUNTS);
        return E_TOO_MANY_ACCOUNTS;
    }
    for (u64 i = 0; i < n; i++) {
        u8 dup = p[0];
        if (dup != 0xff) {
            acc[i] = acc[dup];
            p += 8;
            continue;
        }
        acc[i].flags = (p[1] ? F_SIGNER : 0) | (p[2] ? F_WRITABLE : 0);
        p += 8;
        acc[i].key = p;
        acc[i].owner = p + 32;
        acc[i].data_len = ld64(p + 72);
        acc[i].data = (u8 *)(p + 80);
        p += 80 + acc[i].data_len + MAX_PERMITTED_DATA_INCREASE;
        p = (const u8 *)(((u64)p + 7) & ~7ULL);
        p += 8; /* rent_epoch */
    }
    u64 ix_len = ld64(p);
    const u8 *ix = p + 8;
    Ctx c = {acc, n, ix + ix_len};
    u64 err = dispatch(&c, ix, ix_len);
    if (err)
        log_error(err);
    return err;
}
