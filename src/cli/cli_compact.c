/*
 * cli_compact.c — the `jvdb compact` command and the "is compaction due, and why" part of `stats`
 * and `db info`.
 *
 * The command runs one compaction in the foreground through jvdb_compact() with the database's own
 * policy and prints what it did (jvdb_compact_stats).  When the policy says there is nothing worth
 * doing it says why and exits 0: "not needed" is an answer, not a failure, so cron jobs can run it
 * unconditionally.  A run that does not finish (time limit, Ctrl-C, a concurrent compaction) exits 1
 * and has changed nothing: the library removes its temporary files.
 */
#include "cli/cli.h"
#include "cli/cli_remote.h"

#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

const struct cli_cmd cli_cmd_compact = {
    "compact",
    "Usage: jvdb [--data DIR] compact NAME [--force] [--full] [--max-seconds S] [--json]\n"
    "\n"
    "Reclaims the space of deleted and overwritten vectors of database NAME by rewriting its\n"
    "segment files, if its compaction policy says it is due (see 'jvdb stats NAME').\n"
    "\n"
    "  --force          compact even when the policy does not ask for it\n"
    "  --full           take every sealed segment, not only those with enough dead space\n"
    "  --max-seconds S  give up after S seconds, changing nothing (default: no limit)\n"
    "  --json           print the statistics as one JSON object\n"
    "\n"
    "Prints the trigger, segments in and out, bytes before/after/reclaimed, records copied and\n"
    "dropped, tombstones dropped and the time taken.  Ctrl-C abandons the run cleanly.\n",
    1, 1
};

/* Set from the signal handler; the library polls it (opts.cancel) between records and before the
 * commit point.  sig_atomic_t is int on every platform this builds on, and the option is an int. */
static volatile int cli_compact_cancel;
_Static_assert(sizeof(sig_atomic_t) == sizeof(int), "the cancel flag is written from a signal handler");

/* SIGINT/SIGTERM during `compact`: asks the running compaction to stop at its next check, leaving the database as
 * it was. */
static void cli_compact_on_signal(int sig)
{
    (void)sig;
    cli_compact_cancel = 1;
}

/* The policy's verdict in one call, so `stats`, `db info` and `compact` word it identically. */
struct cli_due {
    int due;
    jvdb_compact_trigger trigger;
    char reason[200];
};

/* Fills d with whether the database needs compaction now, which trigger says so and why. */
static void cli_due_get(jvdb_db *db, struct cli_due *d)
{
    d->due = jvdb_needs_compaction(db, NULL, &d->trigger, d->reason, sizeof d->reason);
}

json_t *cli_compaction_json(jvdb_db *db)
{
    struct cli_due d;
    cli_due_get(db, &d);
    return json_pack("{sbssss}", "due", d.due, "trigger", jvdb_compact_trigger_name(d.trigger), "reason", d.reason);
}

void cli_compaction_print(jvdb_db *db)
{
    struct cli_due d;
    cli_due_get(db, &d);
    if (d.due) printf("compaction:      due (%s: %s)\n", jvdb_compact_trigger_name(d.trigger), d.reason);
    else printf("compaction:      not due (%s)\n", d.reason);
}

/* The JSON report of one database's compaction (camelCase keys, with the deprecated ones marked). */
static json_t *cli_compact_json(const char *name, const jvdb_compact_stats *st, int compacted, const char *reason)
{
    json_t *doc = json_pack("{sssbsssssbsIsI}", "database", name, "compacted", compacted, "trigger",
                            jvdb_compact_trigger_name(st->trigger), "reason", reason, "full", st->full, "segmentsIn",
                            (json_int_t)st->segments_in, "segmentsOut", (json_int_t)st->segments_out);
    if (!doc) return NULL;
    /* json_pack has no unsigned 64-bit format; byte counts of a real database fit in json_int_t. */
    const struct {
        const char *key;
        uint64_t v;
    } nums[] = {
        { "bytesBefore", st->bytes_before },       { "bytesAfter", st->bytes_after },
        { "bytesReclaimed", st->bytes_reclaimed }, { "recordsCopied", st->records_copied },
        { "recordsDropped", st->records_dropped }, { "tombstonesDropped", st->tombstones_dropped },
    };
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++)
        json_object_set_new(doc, nums[i].key, json_integer((json_int_t)nums[i].v));
    json_object_set_new(doc, "seconds", json_real(st->seconds));
    cli_json_add_deprecated(doc, (const char *const[]){ "segmentsIn", "segmentsOut", "bytesBefore", "bytesAfter",
                                                        "bytesReclaimed", "recordsCopied", "recordsDropped",
                                                        "tombstonesDropped", NULL });
    return doc;
}

/* "1.5 MiB" beside a byte count: operators read sizes, scripts read the --json integers. */
static const char *cli_human_bytes(uint64_t b, char *buf, size_t size)
{
    static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
    double v = (double)b;
    size_t u = 0;
    while (v >= 1024 && u + 1 < sizeof units / sizeof units[0]) v /= 1024, u++;
    snprintf(buf, size, u ? "%.1f %s" : "%.0f %s", v, units[u]);
    return buf;
}

/* Prints one database's compaction report as aligned lines with human-readable byte counts. */
static void cli_compact_print(const char *name, const jvdb_compact_stats *st, const char *reason)
{
    char h1[32], h2[32], h3[32];
    printf("compacted '%s': %s\n", name, reason);
    printf("trigger:            %s\n", jvdb_compact_trigger_name(st->trigger));
    printf("full:               %s\n", st->full ? "yes" : "no");
    printf("segments:           %u in, %u out\n", st->segments_in, st->segments_out);
    printf("bytes_before:       %llu (%s)\n", (unsigned long long)st->bytes_before,
           cli_human_bytes(st->bytes_before, h1, sizeof h1));
    printf("bytes_after:        %llu (%s)\n", (unsigned long long)st->bytes_after,
           cli_human_bytes(st->bytes_after, h2, sizeof h2));
    printf("bytes_reclaimed:    %llu (%s)\n", (unsigned long long)st->bytes_reclaimed,
           cli_human_bytes(st->bytes_reclaimed, h3, sizeof h3));
    printf("records_copied:     %llu\n", (unsigned long long)st->records_copied);
    printf("records_dropped:    %llu\n", (unsigned long long)st->records_dropped);
    printf("tombstones_dropped: %llu\n", (unsigned long long)st->tombstones_dropped);
    printf("seconds:            %.3f\n", st->seconds);
}

int cli_compact_main(struct cli_ctx *ctx, int argc, char **argv)
{
    const struct cli_cmd *cmd = &cli_cmd_compact;
    struct cli_opt opts[] = {
        { "force", false, NULL }, { "full", false, NULL }, { "max-seconds", true, NULL }, { NULL, false, NULL }
    };
    enum { FORCE, FULL, MAXSEC };
    char *pos[argc];
    int npos, rc = cli_parse(ctx, cmd, argc, argv, opts, pos, &npos);
    if (rc) return rc;
    double max_seconds = 0;
    if (opts[MAXSEC].value) {
        float secs = 0;
        cli_float_problem(opts[MAXSEC].value, strlen(opts[MAXSEC].value), &secs); /* decimal only, like every number */
        max_seconds = secs;
        if (!(max_seconds > 0))
            return cli_usage_error(cmd->name, "--max-seconds '%s' is not a positive number of seconds",
                                   opts[MAXSEC].value);
    }
    if (ctx->remote) {
        if (opts[MAXSEC].value)
            return cli_fail("--max-seconds cannot be given through a server (its REST API does not take it)");
        jvdb_compact_stats rst;
        char rreason[600];
        if ((rc = cli_remote_compact(ctx, pos[0], opts[FORCE].value, opts[FULL].value, &rst, rreason, sizeof rreason)))
            return rc;
        int done = rst.trigger != JVDB_TRIGGER_NONE;
        if (ctx->json) return cli_print_json(cli_compact_json(pos[0], &rst, done, rreason));
        if (!done) printf("compaction of '%s' not needed: %s (--force compacts anyway)\n", pos[0], rreason);
        else cli_compact_print(pos[0], &rst, rreason);
        return CLI_EXIT_OK;
    }
    jvdb_db *db;
    if ((rc = cli_open_db(ctx, pos[0], &db))) return rc;

    /* Asked before the run so the output can say why it ran (or why not): jvdb_compact_stats has the
     * trigger but not the sentence. */
    struct cli_due due;
    cli_due_get(db, &due);
    char reason[sizeof due.reason + 16];
    if (!due.due && opts[FORCE].value) snprintf(reason, sizeof reason, "forced; %s", due.reason);
    else snprintf(reason, sizeof reason, "%s", due.reason);

    jvdb_compact_policy policy;
    jvdb_db_get_compact_policy(db, &policy);
    if (opts[MAXSEC].value) policy.max_seconds = max_seconds;
    jvdb_compact_options co = { .full = opts[FULL].value != NULL,
                                .force = opts[FORCE].value != NULL,
                                .policy = &policy,
                                .cancel = &cli_compact_cancel };

    /* Ctrl-C or a service manager's SIGTERM abandons the copy, so no temporary file is left until
     * the next open; SA_RESETHAND makes a second Ctrl-C kill at once, which recovery also survives. */
    struct sigaction sa = { .sa_handler = cli_compact_on_signal, .sa_flags = SA_RESETHAND }, old_int, old_term;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    jvdb_compact_stats st;
    rc = jvdb_compact(db, &co, &st);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    if (rc) return cli_lib_error(rc);

    int compacted = st.trigger != JVDB_TRIGGER_NONE;
    if (ctx->json) return cli_print_json(cli_compact_json(pos[0], &st, compacted, reason));
    if (!compacted) printf("compaction of '%s' not needed: %s (--force compacts anyway)\n", pos[0], reason);
    else cli_compact_print(pos[0], &st, reason);
    return CLI_EXIT_OK;
}
