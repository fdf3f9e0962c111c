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
extern void sol_memmove_(void *dst, const void *src, u64 n);

/* Cross-program invocation, C ABI (the Solana C SDK's sol/cpi.h, sol/pubkey.h
 * and sol/entrypoint.h; LP64, natural C alignment).  A seed
 * (SolSignerSeed = {const u8 *addr; u64 len}) has SolBytes' layout. */
typedef struct {
    const u8 *pubkey;
    u8 is_writable; /* bool */
    u8 is_signer;   /* bool */
} SolAccountMeta;   /* 16 bytes */

typedef struct {
    const u8 *program_id;
    const SolAccountMeta *accounts;
    u64 account_len;
    const u8 *data;
    u64 data_len;
} SolInstruction;   /* 40 bytes */

typedef struct {
    const u8 *key;
    u64 *lamports;
    u64 data_len;
    u8 *data;
    const u8 *owner;
    u64 rent_epoch;
    u8 is_signer;   /* bool */
    u8 is_writable; /* bool */
    u8 executable;  /* bool */
} SolAccountInfo;   /* 56 bytes */

typedef struct {
    const SolBytes *addr; /* the signer's seeds */
    u64 len;
} SolSignerSeeds;   /* 16 bytes */

_Static_assert(sizeof(SolAccountMeta) == 16, "SolAccountMeta layout");
_Static_assert(sizeof(SolInstruction) == 40, "SolInstruction layout");
_Static_assert(sizeof(SolAccountInfo) == 56 && __builtin_offsetof(SolAccountInfo, rent_epoch) == 40 &&
                   __builtin_offsetof(SolAccountInfo, is_signer) == 48 &&
                   __builtin_offsetof(SolAccountInfo, executable) == 50,
               "SolAccountInfo layout");
_Static_assert(sizeof(SolSignerSeeds) == 16 && sizeof(SolBytes) == 16, "seed layout");

extern u64 sol_invoke_signed_c(const SolInstruction *ix, const SolAccountInfo *infos, u64 n_infos,
                               const SolSignerSeeds *signers, u64 n_signers);
extern u64 sol_try_find_program_address(const SolBytes *seeds, u64 n_seeds, const u8 *program_id,
                                        u8 *address, u8 *bump);

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
    E_RESERVATION_EXPIRED,
    E_QUEUE_MISMATCH,
    E_INVALID_SESSION_STATE,
    E_INVALID_EVENT_AUTHORITY,
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
    "ReservationExpired",       "QueueMismatch",          "InvalidSessionState",
    "InvalidEventAuthority",
};
_Static_assert(sizeof(ERROR_NAMES) / sizeof(ERROR_NAMES[0]) == E_LAST - E_UNKNOWN_INSTRUCTION,
               "one name per error code");

/* Out-of-line helpers: keeps .text small and every frame well under clang's
 * 512-byte stack cap (BPF frames are not shared between calls). */
#define NOINLINE __attribute__((noinline))

/* ---- memory map ---- */
#define HEAP_START ((u8 *)0x300000000ULL)
#define MAX_ACCOUNTS 128
/* Heap layout: the account table at the start (128 x 40 bytes), the CPI
 * scratch in the last KiB of the first 8 KiB, the event buffer after them. */
#define CPI_SCRATCH (HEAP_START + 7168)
#define EVENT_BUF (HEAP_START + 8192)
#define EVENT_CAP (32768 - 8192)
#define MAX_PERMITTED_DATA_INCREASE 10240
/* the runtime refuses CPI instruction data over 10 KiB */
#define MAX_CPI_DATA 10240

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

_Static_assert(MAX_ACCOUNTS * sizeof(Acct) <= 7168, "account table overlaps the CPI scratch");

/* What one event self-CPI needs, built in the heap's CPI scratch. */
typedef struct {
    SolInstruction ix;
    SolAccountMeta meta;
    SolAccountInfo info;
    SolBytes seeds[2]; /* "__event_authority", [bump] */
    SolSignerSeeds signer;
    u8 bump;
} CpiScratch;
_Static_assert(sizeof(CpiScratch) <= 1024, "CPI scratch is 1 KiB");

/* Where process_queue's events go: a self-CPI signed by the event authority. */
typedef struct {
    const Ctx *c;
    const Acct *authority; /* account 1 of process_queue, in the input region */
    u8 bump;
} EvCpi;

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
static inline void st64(u8 *p, u64 v) { __builtin_memcpy(p, &v, 8); }
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

/* The event authority: the PDA of seeds [b"__event_authority"] (Anchor's). */
static const char EVENT_AUTHORITY_SEED[] = "__event_authority";

NOINLINE static u64 find_event_authority(const u8 *program_id, u8 *key, u8 *bump) {
    SolBytes seed = {(const u8 *)EVENT_AUTHORITY_SEED, sizeof(EVENT_AUTHORITY_SEED) - 1};
    return sol_try_find_program_address(&seed, 1, program_id, key, bump);
}

/* Whether key is sha256("__event_authority" ++ [bump] ++ program_id ++
 * "ProgramDerivedAddress") for a bump 255..1, i.e. the address
 * create_program_address would give, without its curve test (1,500 CU per
 * bump; a sha256 here is ~150).  For a SIGNER that is as good as the PDA check:
 * an off-curve such key can only be signed for by this program (which signs
 * only for the canonical bump), and nobody has the private key of an
 * on-curve sha256 output.  Used by the event-CPI handler, run once per event. */
NOINLINE static int is_event_authority(const u8 *program_id, const u8 *key) {
    static const char PDA_MARKER[] = "ProgramDerivedAddress";
    u8 bump, h[32];
    SolBytes parts[4] = {
        {(const u8 *)EVENT_AUTHORITY_SEED, sizeof(EVENT_AUTHORITY_SEED) - 1},
        {&bump, 1},
        {program_id, 32},
        {(const u8 *)PDA_MARKER, sizeof(PDA_MARKER) - 1},
    };
    for (u32 b = 255; b >= 1; b--) {
        bump = (u8)b;
        sol_sha256(parts, 4, h);
        if (key_eq(h, key))
            return 1;
    }
    return 0;
}

/* One event as a self-CPI (Anchor's emit_cpi!): invoke this program with
 * data = EVENT_IX_TAG_LE ++ event, one account meta = the event authority
 * (signer, read-only), signed with [b"__event_authority", [bump]].  The
 * account info points into the serialized input, where the runtime expects it. */
NOINLINE static u64 ev_invoke(const EvCpi *e, const u8 *data, u64 len) {
    CpiScratch *s = (CpiScratch *)CPI_SCRATCH;
    const Acct *a = e->authority;
    s->meta.pubkey = a->key;
    s->meta.is_writable = 0;
    s->meta.is_signer = 1;
    s->ix.program_id = e->c->program_id;
    s->ix.accounts = &s->meta;
    s->ix.account_len = 1;
    s->ix.data = data;
    s->ix.data_len = len;
    /* serialized account: key, owner, lamports (key + 64), data_len, data,
     * 10 KiB spare, padding to 8, rent_epoch; executable is 5 bytes before key */
    s->info.key = a->key;
    s->info.lamports = (u64 *)(a->key + 64);
    s->info.data_len = a->data_len;
    s->info.data = a->data;
    s->info.owner = a->owner;
    s->info.rent_epoch =
        ld64((const u8 *)(((u64)(a->data + a->data_len + MAX_PERMITTED_DATA_INCREASE) + 7) & ~7ULL));
    s->info.is_signer = (a->flags & F_SIGNER) ? 1 : 0;
    s->info.is_writable = (a->flags & F_WRITABLE) ? 1 : 0;
    s->info.executable = a->key[-5] ? 1 : 0;
    s->bump = e->bump;
    s->seeds[0].addr = (const u8 *)EVENT_AUTHORITY_SEED;
    s->seeds[0].len = sizeof(EVENT_AUTHORITY_SEED) - 1;
    s->seeds[1].addr = &s->bump;
    s->seeds[1].len = 1;
    s->signer.addr = s->seeds;
    s->signer.len = 2;
    return sol_invoke_signed_c(&s->ix, &s->info, 1, &s->signer, 1);
}

/* Events are built in heap scratch, then logged as ONE slice so the runtime
 * prints exactly one base64 blob per "Program data:" line, as Anchor does.
 * With cpi set, the same bytes (after EVENT_IX_TAG_LE) go out as a self-CPI
 * instead and nothing is logged. */
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
static void ev_start(Wr *w, u64 disc, const EvCpi *cpi) {
    if (!cpi) {
        ev_begin(w, disc);
        return;
    }
    wr_init(w, EVENT_BUF, EVENT_CAP);
    w_u64(w, EVENT_IX_TAG);
    w_u64(w, disc);
}
static u64 ev_finish(Wr *w, const EvCpi *cpi) {
    if (!cpi)
        return ev_emit(w);
    if (!w->ok || w->pos > MAX_CPI_DATA)
        return E_EVENT_TOO_LARGE;
    return ev_invoke(cpi, w->p, w->pos);
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

/* The same two events for the session-factory instructions, in log form
 * (cpi == 0) or as self-CPIs (process_queue). */
NOINLINE static u64 emit_session_events_to(const Acct *a, const EvCpi *cpi) {
    SessionView s;
    Wr w;
    u64 err;
    if (!parse_session(a, &s))
        return E_INVALID_RECORD;
    ev_start(&w, EV_SESSION_CREATED, cpi);
    w_bytes(&w, a->key, 32);
    w_bytes(&w, s.owner, 32);
    w_bytes(&w, s.accounts_span, s.accounts_span_len);
    w_bytes(&w, s.ns_span, s.ns_span_len);
    w_u64(&w, s.nonce);
    w_u64(&w, (u64)s.created_at);
    if ((err = ev_finish(&w, cpi)))
        return err;
    ev_start(&w, EV_SESSION_ACTIVATED, cpi);
    w_bytes(&w, a->key, 32);
    w_bytes(&w, s.owner, 32);
    w_u64(&w, (u64)s.created_at);
    return ev_finish(&w, cpi);
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

/* ===================== session factory (queue) instructions ===================== */

/* SessionQueue: disc, authority Pubkey, next_position u64, pending u64, processed u64 */
#define SQ_AUTHORITY 8
#define SQ_NEXT 40
#define SQ_PENDING 48
#define SQ_PROCESSED 56
#define SQ_SIZE 64

/* SessionReservation: disc, session Pubkey, owner Pubkey, queue Pubkey,
 * namespace String, status u8, expires_at i64, queue_position u64, deadline i64 */
#define SR_OWNER 40
#define SR_QUEUE 72
#define SR_NAMESPACE 104
#define SR_FIXED 133 /* size = 133 + namespace length */
#define RES_RESERVED 1
#define RES_QUEUED 2
#define RES_RESET 3

/* The Session written over a reservation: disc, id, owner, accounts (empty),
 * namespace, is_consumed, nonce, created_at, metadata (empty) */
#define SESSION_FROM_RES_NAMESPACE 76 /* 8 + 32 + 32 + 4 */

#define MAX_RESET_REASON 256
#define MAX_PAD_LOGS 65536
#define PAD_LINE 100

typedef struct {
    u64 ns_span;    /* borsh namespace incl. length prefix: 4 + len */
    u64 status_off; /* offset of status in the account data */
    u8 status;
    i64 expires_at;
    u64 queue_position;
    i64 deadline;
} ResView;

NOINLINE static int parse_reservation(const Acct *a, ResView *v) {
    u64 e, q, d;
    if (a->data_len < SR_NAMESPACE)
        return 0;
    Rd r = {a->data, a->data_len, SR_NAMESPACE};
    if (!rd_string(&r))
        return 0;
    v->ns_span = r.pos - SR_NAMESPACE;
    v->status_off = r.pos;
    if (!rd_u8(&r, &v->status) || !rd_u64(&r, &e) || !rd_u64(&r, &q) || !rd_u64(&r, &d))
        return 0;
    v->expires_at = (i64)e;
    v->queue_position = q;
    v->deadline = (i64)d;
    return 1;
}

/* A SessionReservation record of this program, passed writable. */
NOINLINE static u64 load_reservation(const Ctx *c, const Acct *a, ResView *v) {
    u64 err;
    if (!(a->flags & F_WRITABLE))
        return E_ACCOUNT_NOT_WRITABLE;
    if ((err = check_record(c, a, ACC_SESSION_RESERVATION)))
        return err;
    return parse_reservation(a, v) ? 0 : E_INVALID_RECORD;
}

/* A SessionQueue record of this program (writable when the caller changes it). */
NOINLINE static u64 load_queue(const Ctx *c, const Acct *q, int writable) {
    u64 err;
    if (writable && !(q->flags & F_WRITABLE))
        return E_ACCOUNT_NOT_WRITABLE;
    if ((err = check_record(c, q, ACC_SESSION_QUEUE)))
        return err;
    return q->data_len < SQ_SIZE ? E_INVALID_RECORD : 0;
}

/* now + delta, refusing i64 overflow */
static int add_time(i64 now, i64 delta, i64 *out) {
    if (delta > 0 ? now > 0x7fffffffffffffffLL - delta : now < (-0x7fffffffffffffffLL - 1) - delta)
        return 0;
    *out = now + delta;
    return 1;
}

static u64 queue_add(const Acct *q, u64 off, u64 delta) {
    u64 v = ld64(q->data + off) + delta;
    st64(q->data + off, v);
    return v;
}

/* pending -= 1 (a queued reservation leaves the queue) */
static u64 queue_leave(const Acct *q) {
    if (ld64(q->data + SQ_PENDING) == 0)
        return E_INVALID_RECORD; /* cannot happen: each queued reservation counted once */
    queue_add(q, SQ_PENDING, (u64)-1);
    return 0;
}

/* Replaces the reservation in account a by
 * Session { id: key, owner, accounts: [], namespace, is_consumed: false, nonce: 0,
 *           created_at: now, metadata: [] }
 * (101 + len bytes) and zeroes the 32 bytes the reservation used after it. */
NOINLINE static void write_session_over_reservation(const Acct *a, const ResView *v, i64 now) {
    u8 *d = a->data;
    u64 old_end = v->status_off + 1 + 8 + 8 + 8;
    /* id (8..40) = the reservation's session field = the key (rewritten all
     * the same); owner (40..72) is already in place */
    copy(d + 8, a->key, 32);
    d[72] = d[73] = d[74] = d[75] = 0; /* accounts: Vec len 0 */
    /* namespace moves down from 104 to 76: overlapping, hence memmove */
    sol_memmove_(d + SESSION_FROM_RES_NAMESPACE, d + SR_NAMESPACE, v->ns_span);
    Wr w;
    wr_init(&w, d, old_end);
    w.pos = SESSION_FROM_RES_NAMESPACE + v->ns_span;
    w_u8(&w, 0);           /* is_consumed */
    w_u64(&w, 0);          /* nonce */
    w_u64(&w, (u64)now);   /* created_at */
    w_u32(&w, 0);          /* metadata: Vec len 0 */
    w_zero(&w, old_end - w.pos);
    st64(d, ACC_SESSION);
}

/* init_queue()
 * accounts: [0] queue record (writable, program-owned, zeroed, >= 64), [1] authority (signer) */
NOINLINE static u64 ix_init_queue(const Ctx *c, Rd *r) {
    u64 err;
    if (r->pos != r->len)
        return E_INVALID_INSTRUCTION_DATA;
    if (c->n < 2)
        return E_NOT_ENOUGH_ACCOUNTS;
    const Acct *q = &c->acc[0];
    const Acct *auth = &c->acc[1];
    if (!(auth->flags & F_SIGNER))
        return E_MISSING_SIGNER;
    if ((err = check_target(c, q, SQ_SIZE)))
        return err;
    Wr w;
    wr_init(&w, q->data, q->data_len);
    w_u64(&w, ACC_SESSION_QUEUE);
    w_bytes(&w, auth->key, 32);
    w_zero(&w, 24); /* next_position, pending, processed */
    return w.ok ? 0 : E_ACCOUNT_TOO_SMALL;
}

/* reserve_session(owner: Pubkey, namespace: String, ttl_seconds: i64)
 * accounts: [0] reservation record (writable, program-owned, zeroed), [1] queue (read-only ok) */
NOINLINE static u64 ix_reserve_session(const Ctx *c, Rd *r) {
    const u8 *owner, *ns;
    u64 ns_len, ttl, err;
    if (!rd_take(r, 32, &owner))
        return E_INVALID_INSTRUCTION_DATA;
    ns = rd_cur(r);
    if (!rd_string(r))
        return E_INVALID_INSTRUCTION_DATA;
    ns_len = (u64)(rd_cur(r) - ns);
    if (!rd_u64(r, &ttl) || r->pos != r->len || (i64)ttl <= 0)
        return E_INVALID_INSTRUCTION_DATA;
    if (c->n < 2)
        return E_NOT_ENOUGH_ACCOUNTS;
    const Acct *t = &c->acc[0];
    const Acct *q = &c->acc[1];
    if ((err = load_queue(c, q, 0)))
        return err;
    if ((err = check_target(c, t, SR_FIXED - 4 + ns_len)))
        return err;
    i64 expires_at;
    if (!add_time(unix_now(), (i64)ttl, &expires_at))
        return E_INVALID_INSTRUCTION_DATA;

    Wr w;
    wr_init(&w, t->data, t->data_len);
    w_u64(&w, ACC_SESSION_RESERVATION);
    w_bytes(&w, t->key, 32);
    w_bytes(&w, owner, 32);
    w_bytes(&w, q->key, 32);
    w_bytes(&w, ns, ns_len);
    w_u8(&w, RES_RESERVED);
    w_u64(&w, (u64)expires_at);
    w_u64(&w, 0); /* queue_position */
    w_u64(&w, 0); /* deadline */
    if (!w.ok)
        return E_ACCOUNT_TOO_SMALL;

    ev_begin(&w, EV_SESSION_RESERVED);
    w_bytes(&w, t->key, 32);
    w_bytes(&w, owner, 32);
    w_u64(&w, (u64)expires_at);
    return ev_emit(&w);
}

/* queue_session(deadline_seconds: i64)
 * accounts: [0] reservation (writable), [1] its queue (writable) */
NOINLINE static u64 ix_queue_session(const Ctx *c, Rd *r) {
    u64 dl, err;
    if (!rd_u64(r, &dl) || r->pos != r->len)
        return E_INVALID_INSTRUCTION_DATA;
    if (c->n < 2)
        return E_NOT_ENOUGH_ACCOUNTS;
    const Acct *a = &c->acc[0];
    const Acct *q = &c->acc[1];
    ResView v;
    if ((err = load_reservation(c, a, &v)))
        return err;
    if ((err = load_queue(c, q, 1)))
        return err;
    if (v.status != RES_RESERVED)
        return E_INVALID_SESSION_STATE;
    i64 now = unix_now();
    if (now >= v.expires_at)
        return E_RESERVATION_EXPIRED;
    if (!key_eq(a->data + SR_QUEUE, q->key))
        return E_QUEUE_MISMATCH;
    i64 deadline;
    if (!add_time(now, (i64)dl, &deadline))
        return E_INVALID_INSTRUCTION_DATA;

    u64 position = ld64(q->data + SQ_NEXT);
    queue_add(q, SQ_NEXT, 1);
    queue_add(q, SQ_PENDING, 1);
    a->data[v.status_off] = RES_QUEUED;
    st64(a->data + v.status_off + 9, position);
    st64(a->data + v.status_off + 17, (u64)deadline);

    Wr w;
    ev_begin(&w, EV_SESSION_QUEUED);
    w_bytes(&w, a->key, 32);
    w_u64(&w, position);
    w_u64(&w, (u64)deadline);
    return ev_emit(&w);
}

/* A queued reservation becomes its Session: the queue counts it processed, then
 * SessionInitializedFromQueue, SessionCreated, SessionActivated (log or CPI). */
NOINLINE static u64 initialize_queued(const Acct *a, const Acct *q, const ResView *v, i64 now,
                                      const EvCpi *cpi) {
    u64 err;
    if ((err = queue_leave(q)))
        return err;
    queue_add(q, SQ_PROCESSED, 1);
    write_session_over_reservation(a, v, now);
    Wr w;
    ev_start(&w, EV_SESSION_INITIALIZED_FROM_QUEUE, cpi);
    w_bytes(&w, a->key, 32);
    w_u64(&w, v->queue_position);
    if ((err = ev_finish(&w, cpi)))
        return err;
    return emit_session_events_to(a, cpi);
}

/* initialize_from_queue()
 * accounts: [0] reservation (writable, queued), [1] its queue (writable) */
NOINLINE static u64 ix_initialize_from_queue(const Ctx *c, Rd *r) {
    u64 err;
    if (r->pos != r->len)
        return E_INVALID_INSTRUCTION_DATA;
    if (c->n < 2)
        return E_NOT_ENOUGH_ACCOUNTS;
    const Acct *a = &c->acc[0];
    const Acct *q = &c->acc[1];
    ResView v;
    if ((err = load_reservation(c, a, &v)))
        return err;
    if ((err = load_queue(c, q, 1)))
        return err;
    if (v.status != RES_QUEUED)
        return E_INVALID_SESSION_STATE;
    if (!key_eq(a->data + SR_QUEUE, q->key))
        return E_QUEUE_MISMATCH;
    return initialize_queued(a, q, &v, unix_now(), 0);
}

/* process_queue()
 * accounts: [0] queue (writable), [1] event authority PDA, [2] this program,
 * [3..] reservations (writable).  All events go out as self-CPIs. */
NOINLINE static u64 ix_process_queue(const Ctx *c, Rd *r) {
    u64 err;
    if (r->pos != r->len)
        return E_INVALID_INSTRUCTION_DATA;
    if (c->n < 3)
        return E_NOT_ENOUGH_ACCOUNTS;
    const Acct *q = &c->acc[0];
    if ((err = load_queue(c, q, 1)))
        return err;
    EvCpi e;
    u8 pda[32];
    if (find_event_authority(c->program_id, pda, &e.bump) || !key_eq(c->acc[1].key, pda))
        return E_INVALID_EVENT_AUTHORITY;
    if (!key_eq(c->acc[2].key, c->program_id))
        return E_INVALID_EVENT_AUTHORITY;
    e.c = c;
    e.authority = &c->acc[1];

    i64 now = unix_now();
    u32 succeeded = 0, failed = 0;
    for (u64 i = 3; i < c->n; i++) {
        const Acct *a = &c->acc[i];
        ResView v;
        /* anything but a queued reservation of this queue is skipped untouched */
        if (load_reservation(c, a, &v) || v.status != RES_QUEUED ||
            !key_eq(a->data + SR_QUEUE, q->key)) {
            failed++;
            continue;
        }
        if ((err = initialize_queued(a, q, &v, now, &e)))
            return err;
        succeeded++;
    }

    Wr w;
    ev_start(&w, EV_QUEUE_PROCESSED, &e);
    w_u32(&w, (u32)(c->n - 3));
    w_u32(&w, succeeded);
    w_u32(&w, failed);
    w_u64(&w, ld64(q->data + SQ_PENDING));
    return ev_finish(&w, &e);
}

/* Instruction data starting with EVENT_IX_TAG_LE: an event self-CPI.  Does
 * nothing, but only the program itself (signing for its event authority) may
 * send it, so events in its inner instructions are its own. */
NOINLINE static u64 ix_event_cpi(const Ctx *c) {
    if (c->n < 1 || !(c->acc[0].flags & F_SIGNER) || !is_event_authority(c->program_id, c->acc[0].key))
        return E_INVALID_EVENT_AUTHORITY;
    return 0;
}

/* Shared checks of manual_initialize_session / emergency_reset_session:
 * [0] reservation (writable, reserved or queued), [1] its queue (writable),
 * [2] the queue's authority (signer). */
NOINLINE static u64 load_for_authority(const Ctx *c, ResView *v) {
    u64 err;
    if (c->n < 3)
        return E_NOT_ENOUGH_ACCOUNTS;
    const Acct *a = &c->acc[0];
    const Acct *q = &c->acc[1];
    const Acct *auth = &c->acc[2];
    if ((err = load_reservation(c, a, v)))
        return err;
    if ((err = load_queue(c, q, 1)))
        return err;
    if (v->status != RES_RESERVED && v->status != RES_QUEUED)
        return E_INVALID_SESSION_STATE;
    if (!key_eq(a->data + SR_QUEUE, q->key))
        return E_QUEUE_MISMATCH;
    if (!(auth->flags & F_SIGNER))
        return E_MISSING_SIGNER;
    if (!key_eq(auth->key, q->data + SQ_AUTHORITY))
        return E_UNAUTHORIZED;
    if (v->status == RES_QUEUED)
        return queue_leave(q);
    return 0;
}

/* manual_initialize_session()
 * accounts: [0] reservation (writable), [1] its queue (writable), [2] queue authority (signer) */
NOINLINE static u64 ix_manual_initialize_session(const Ctx *c, Rd *r) {
    u64 err;
    ResView v;
    if (r->pos != r->len)
        return E_INVALID_INSTRUCTION_DATA;
    if ((err = load_for_authority(c, &v)))
        return err;
    const Acct *a = &c->acc[0];
    write_session_over_reservation(a, &v, unix_now());
    Wr w;
    ev_begin(&w, EV_MANUAL_SESSION_INITIALIZED);
    w_bytes(&w, a->key, 32);
    w_bytes(&w, c->acc[2].key, 32);
    if ((err = ev_emit(&w)))
        return err;
    return emit_session_events_to(a, 0);
}

/* emergency_reset_session(reason: String)
 * accounts: [0] reservation (writable), [1] its queue (writable), [2] queue authority (signer) */
NOINLINE static u64 ix_emergency_reset_session(const Ctx *c, Rd *r) {
    u64 err;
    ResView v;
    const u8 *reason = rd_cur(r);
    if (!rd_string(r) || r->pos != r->len || ld32(reason) > MAX_RESET_REASON)
        return E_INVALID_INSTRUCTION_DATA;
    if ((err = load_for_authority(c, &v)))
        return err;
    const Acct *a = &c->acc[0];
    a->data[v.status_off] = RES_RESET;
    Wr w;
    ev_begin(&w, EV_EMERGENCY_SESSION_RESET);
    w_bytes(&w, a->key, 32);
    w_bytes(&w, c->acc[2].key, 32);
    w_bytes(&w, reason, 4 + (u64)ld32(reason));
    return ev_emit(&w);
}

/* pad_logs(bytes: u32): `bytes` filler characters as "Program log:" lines of at
 * most 100 characters.  No accounts. */
NOINLINE static u64 ix_pad_logs(Rd *r) {
    u32 n;
    if (!rd_u32(r, &n) || r->pos != r->len || n > MAX_PAD_LOGS)
        return E_INVALID_INSTRUCTION_DATA;
    u8 *line = EVENT_BUF;
    for (u64 i = 0; i < PAD_LINE; i++)
        line[i] = 'x';
    while (n) {
        u32 k = n < PAD_LINE ? n : PAD_LINE;
        sol_log_((const char *)line, k);
        n -= k;
    }
    return 0;
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
    case IX_INIT_QUEUE:
        LOG("Instruction: InitQueue");
        return ix_init_queue(c, &r);
    case IX_RESERVE_SESSION:
        LOG("Instruction: ReserveSession");
        return ix_reserve_session(c, &r);
    case IX_QUEUE_SESSION:
        LOG("Instruction: QueueSession");
        return ix_queue_session(c, &r);
    case IX_INITIALIZE_FROM_QUEUE:
        LOG("Instruction: InitializeFromQueue");
        return ix_initialize_from_queue(c, &r);
    case IX_PROCESS_QUEUE:
        LOG("Instruction: ProcessQueue");
        return ix_process_queue(c, &r);
    case IX_MANUAL_INITIALIZE_SESSION:
        LOG("Instruction: ManualInitializeSession");
        return ix_manual_initialize_session(c, &r);
    case IX_EMERGENCY_RESET_SESSION:
        LOG("Instruction: EmergencyResetSession");
        return ix_emergency_reset_session(c, &r);
    case IX_PAD_LOGS:
        LOG("Instruction: PadLogs");
        return ix_pad_logs(&r);
    case EVENT_IX_TAG:
        /* an event self-CPI: no log line, it only carries data */
        return ix_event_cpi(c);
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
