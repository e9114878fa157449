/*
 * cli_progress.c — the one-line progress bar that import and export draw on stderr.
 *
 * It is drawn only when stderr is a terminal: redirected output and test harnesses get nothing, so
 * logs stay clean.  Redraws are limited to ten a second because a terminal that cannot keep up
 * would otherwise slow the import itself.  Progress is measured in whatever unit the caller knows
 * the total of (bytes of the input file, or vectors), while the rate is always vectors per second.
 */
#include "cli/cli.h"
#include "core/clock.h"

#include <time.h>
#include <unistd.h>

#define CLI_PROGRESS_INTERVAL_NS 100000000LL
#define CLI_PROGRESS_BAR         24

/* Items per second with a k or M suffix. */
static void cli_format_rate(double rate, char *buf, size_t size)
{
    if (rate >= 1e6) snprintf(buf, size, "%.1fM/s", rate / 1e6);
    else if (rate >= 1e4) snprintf(buf, size, "%.1fk/s", rate / 1e3);
    else snprintf(buf, size, "%.0f/s", rate);
}

/* Seconds left as M:SS or H:MM:SS (capped at 99:59:59). */
static void cli_format_eta(double seconds, char *buf, size_t size)
{
    long s = seconds < 0 ? 0 : seconds > 359999 ? 359999 : (long)(seconds + 0.5);
    if (s >= 3600) snprintf(buf, size, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
    else snprintf(buf, size, "%ld:%02ld", s / 60, s % 60);
}

/* Redraws the bar on stderr in place: percentage, rate and ETA when the total is known, else a count and rate. */
static void cli_progress_draw(struct cli_progress *p, uint64_t done, uint64_t items, int64_t now)
{
    double elapsed = (double)(now - p->start_ns) / 1e9;
    char rate[32], eta[32];
    cli_format_rate(elapsed > 0 ? (double)items / elapsed : 0, rate, sizeof rate);
    if (p->total) {
        double frac = done >= p->total ? 1.0 : (double)done / (double)p->total;
        char bar[CLI_PROGRESS_BAR + 1];
        int fill = (int)(frac * CLI_PROGRESS_BAR);
        for (int i = 0; i < CLI_PROGRESS_BAR; i++) bar[i] = i < fill ? '#' : '.';
        bar[CLI_PROGRESS_BAR] = '\0';
        if (frac > 0) cli_format_eta(elapsed / frac - elapsed, eta, sizeof eta);
        else snprintf(eta, sizeof eta, "?");
        fprintf(stderr, "\r[%s] %3d%%  %llu %s  %s  ETA %s\033[K", bar, (int)(frac * 100), (unsigned long long)items,
                p->what, rate, eta);
    } else {
        fprintf(stderr, "\r%llu %s  %s\033[K", (unsigned long long)items, p->what, rate);
    }
    fflush(stderr);
    p->last_draw_ns = now;
}

void cli_progress_start(struct cli_progress *p, const char *what, uint64_t total)
{
    p->enabled = isatty(STDERR_FILENO);
    p->what = what;
    p->total = total;
    p->start_ns = clock_mono_ns();
    p->last_draw_ns = 0;
}

void cli_progress_update(struct cli_progress *p, uint64_t done, uint64_t items)
{
    if (!p->enabled) return;
    int64_t now = clock_mono_ns();
    if (now - p->last_draw_ns < CLI_PROGRESS_INTERVAL_NS) return;
    cli_progress_draw(p, done, items, now);
}

void cli_progress_finish(struct cli_progress *p, uint64_t done, uint64_t items)
{
    if (!p->enabled) return;
    /* Leave the final state visible on its own line, so a message that follows starts clean. */
    cli_progress_draw(p, done, items, clock_mono_ns());
    fputc('\n', stderr);
    p->enabled = false;
}
