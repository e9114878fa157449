#ifndef JVDB_STORE_READPATH_H
#define JVDB_STORE_READPATH_H
/*
 * Epoch-based reclamation for the read path (design notes in readpath.c).
 *
 * Readers bracket every access to published store state (keydir entries, bucket and slot arrays,
 * the segment list, mapped records) with rp_enter/rp_exit.  Neither takes a lock nor waits.
 * Writers unpublish an object (a release store of its replacement) and then hand it to rp_defer;
 * rp_poll runs the deferred work once every reader that was inside a read section at the time of
 * the rp_defer has left.  A domain (one per database) is guarded by its owner's writer lock.
 */
#include <stddef.h>
#include <stdint.h>

/* Enter / leave a read section; they nest (only the outermost pair counts). */
void rp_enter(void);
void rp_exit(void);
/* Whether the calling thread is inside a read section (assertions). */
int rp_inside(void);

typedef void (*rp_fn)(void *ctx, void *arg);

struct rp_item;
struct rp_domain {
    struct rp_item *head, *tail;
    size_t n;
};

void rp_domain_init(struct rp_domain *d);
/* Runs fn(ctx, arg) after a grace period.  On out of memory the object is leaked (never freed
 * early): safe, and logged. */
void rp_defer(struct rp_domain *d, rp_fn fn, void *ctx, void *arg);
/* Runs the deferred work whose grace period has passed, in the order it was deferred; work may
 * defer more (it runs at a later poll).  Returns how many items are still waiting. */
size_t rp_poll(struct rp_domain *d);
/* Runs everything: only when no reader can hold anything of this domain (the database closes). */
void rp_drain(struct rp_domain *d);
/* free(arg) as deferred work. */
void rp_free_fn(void *ctx, void *arg);
#endif
