/*
 * readpath.c — reclamation for lock-free readers: a process-wide table of reader epochs and a
 * per-database list of deferred frees.  Invariant: an object handed to rp_defer is freed only
 * after every read section that was open when it was unpublished has closed.
 *
 * Design notes (issue 10, "Readers never wait").
 *
 * What readers read.  Gets, exact scans, HNSW result resolution, iteration, the compaction's
 * listing and backup snapshots read published, immutable versions: keydir entries are never
 * changed in place once readers can see them (a write makes a new version that points at the one
 * it supersedes), bucket arrays, slot arrays and the segment list are replaced whole and the old
 * one is deferred, and each database has a `visible` LSN.  A reader takes S = visible when it
 * enters and sees, per id, the newest version with LSN <= S: a batch is published by one release
 * store of `visible` after it is applied (and, with sync=always, after the fdatasync that makes it
 * durable), so no reader sees half of one.  Versions a reader could still need stay linked until a
 * grace period after `visible` passed their successor (keydir.c, "trims").
 *
 * Why our own epochs rather than liburcu.  liburcu (userspace RCU: urcu-memb, QSBR, cds_lfht) was
 * the candidate the original design named.  We did not take it because:
 *   - it gives grace periods and a hash table, but the hard part here is snapshot reads of a
 *     batch (versions + a visible LSN), which cds_lfht does not give: we would still write the
 *     versioning, and lose the open-addressing table with the hash beside the entry;
 *   - urcu-memb needs every reader thread registered and QSBR needs the application to announce
 *     quiescent states; our readers are threads of whoever embeds libjvdb (server workers, a
 *     user's threads), so registration would leak into the public API or hide in a TLS hook —
 *     which is all our reader table is;
 *   - ThreadSanitizer must understand the publication: liburcu's rcu_dereference and barriers
 *     are volatile accesses and hand-written fences that TSan does not model (false reports
 *     unless the library is rebuilt with atomic builtins), while C11 atomics here are checked;
 *   - the writer side needs no synchronize_rcu (writers never wait for readers): deferred frees
 *     polled by the writer that already holds write_mu are all we need, and fit in this file;
 *   - it is not installed on the build machines (a new dependency for ~150 lines).
 *
 * The scheme (classic epoch-based reclamation, Fraser 2004).  A global epoch G only grows.  A
 * reader's slot holds the G it saw when it entered (0 = outside); entering is a seq_cst exchange
 * on the reader's own cache line and one more load of G, leaving a release store: nothing
 * shared is written, nothing waits.  (No standalone fences: ThreadSanitizer does not model them.)
 * rp_defer tags an object with t = G++ (seq_cst) after it was unpublished; rp_poll frees it once
 * every active slot holds an epoch > t (seq_cst loads).  If the reader's second load of G sees a
 * value past t, it synchronises with that increment and so sees the unpublishing; if not, its
 * exchange precedes the increment in the single total order, so the poll sees its slot (<= t).
 * A stalled reader holds memory back, never a writer.
 *
 * Slots: one per thread, claimed on first use and given back at thread exit (pthread key
 * destructor).  RP_MAX_THREADS concurrent reader threads at most; more wait for a slot to free up.
 */
#include "store/readpath.h"

#include "core/log.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#define RP_MAX_THREADS 4096

struct rp_slot {
    _Atomic uint64_t epoch; /* 0: not in a read section */
    atomic_int used;
    unsigned nest; /* the owning thread's only */
    char pad[64 - sizeof(uint64_t) - sizeof(int) - sizeof(unsigned)];
};
_Static_assert(sizeof(struct rp_slot) == 64, "one reader slot per cache line");

struct rp_item {
    struct rp_item *next;
    uint64_t tag;
    rp_fn fn;
    void *ctx, *arg;
};

static struct rp_slot rp_slots[RP_MAX_THREADS];
static atomic_uint rp_high; /* slots ever claimed: polls scan [0, rp_high) */
static _Atomic uint64_t rp_global = 1;
static _Thread_local struct rp_slot *rp_self;
static pthread_key_t rp_key;
static pthread_once_t rp_once = PTHREAD_ONCE_INIT;

/* Thread-exit destructor: frees the thread's reader slot for another thread. */
static void rp_release_slot(void *arg)
{
    struct rp_slot *s = arg;
    atomic_store_explicit(&s->epoch, 0, memory_order_release);
    s->nest = 0;
    atomic_store_explicit(&s->used, 0, memory_order_release);
}

static void rp_init(void) { pthread_key_create(&rp_key, rp_release_slot); }

/* Claims a free reader slot for this thread (raising the high-water mark readers are scanned up to); yields until
 * one is free. */
static struct rp_slot *rp_claim(void)
{
    pthread_once(&rp_once, rp_init);
    for (;;) {
        for (unsigned i = 0; i < RP_MAX_THREADS; i++) {
            int zero = 0;
            if (atomic_load_explicit(&rp_slots[i].used, memory_order_relaxed) ||
                !atomic_compare_exchange_strong(&rp_slots[i].used, &zero, 1))
                continue;
            unsigned high = atomic_load(&rp_high);
            while (high < i + 1 && !atomic_compare_exchange_weak(&rp_high, &high, i + 1)) {
            }
            rp_slots[i].nest = 0;
            rp_self = &rp_slots[i];
            pthread_setspecific(rp_key, rp_self);
            return rp_self;
        }
        sched_yield(); /* every slot taken: wait for a thread to exit */
    }
}

void rp_enter(void)
{
    struct rp_slot *s = rp_self ? rp_self : rp_claim();
    if (s->nest++) return;
    uint64_t e = atomic_load_explicit(&rp_global, memory_order_acquire);
    atomic_exchange_explicit(&s->epoch, e, memory_order_seq_cst);
    /* Read again after announcing: a value past e synchronises with the rp_defer that moved it
     * (so the unpublishing is visible to us); an unchanged one means any later poll sees us. */
    (void)atomic_load_explicit(&rp_global, memory_order_seq_cst);
}

void rp_exit(void)
{
    struct rp_slot *s = rp_self;
    if (--s->nest == 0) atomic_store_explicit(&s->epoch, 0, memory_order_release);
}

int rp_inside(void) { return rp_self && rp_self->nest > 0; }

/* The smallest epoch of any reader inside a read section (UINT64_MAX when none is). */
static uint64_t rp_min_active(void)
{
    uint64_t min = UINT64_MAX;
    unsigned high = atomic_load(&rp_high);
    for (unsigned i = 0; i < high; i++) {
        uint64_t e = atomic_load_explicit(&rp_slots[i].epoch, memory_order_seq_cst);
        if (e && e < min) min = e;
    }
    return min;
}

void rp_domain_init(struct rp_domain *d)
{
    d->head = d->tail = NULL;
    d->n = 0;
}

void rp_defer(struct rp_domain *d, rp_fn fn, void *ctx, void *arg)
{
    struct rp_item *it = malloc(sizeof *it);
    if (!it) {
        log_error("out of memory deferring a free: %p is leaked rather than freed under a reader", arg);
        return;
    }
    it->next = NULL;
    it->tag = atomic_fetch_add(&rp_global, 1);
    it->fn = fn;
    it->ctx = ctx;
    it->arg = arg;
    if (d->tail) d->tail->next = it;
    else d->head = it;
    d->tail = it;
    d->n++;
}

size_t rp_poll(struct rp_domain *d)
{
    if (!d->head) return 0;
    uint64_t min = rp_min_active();
    /* Detach the due prefix first: the work may defer more, which appends to the live list. */
    struct rp_item *due = NULL, **end = &due;
    while (d->head && d->head->tag < min) {
        struct rp_item *it = d->head;
        d->head = it->next;
        if (!d->head) d->tail = NULL;
        d->n--;
        it->next = NULL;
        *end = it;
        end = &it->next;
    }
    while (due) {
        struct rp_item *it = due;
        due = it->next;
        it->fn(it->ctx, it->arg);
        free(it);
    }
    return d->n;
}

void rp_drain(struct rp_domain *d)
{
    while (d->head) {
        struct rp_item *it = d->head;
        d->head = it->next;
        if (!d->head) d->tail = NULL;
        d->n--;
        it->fn(it->ctx, it->arg);
        free(it);
    }
}

void rp_free_fn(void *ctx, void *arg)
{
    (void)ctx;
    free(arg);
}
