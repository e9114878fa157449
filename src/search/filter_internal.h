#ifndef JVDB_SEARCH_FILTER_INTERNAL_H
#define JVDB_SEARCH_FILTER_INTERNAL_H
/*
 * The compiled form of a filter, shared by filter.c (which builds and matches it) and payload.c
 * (which answers the parts it can from payload indexes and must agree with filter.c exactly).
 */
#include <jansson.h>
#include <stddef.h>

/* Nesting bound: a filter is a user's request body, and matching recurses once per level. */
#define FILTER_MAX_DEPTH 32
/* Path segments: enough for any real document, small enough to live on the stack. */
#define FILTER_MAX_SEGS  16

enum filter_op { OP_EQ, OP_NE, OP_IN, OP_NIN, OP_GT, OP_GTE, OP_LT, OP_LTE, OP_EXISTS, OP_CONTAINS };
enum node_kind { NODE_AND, NODE_OR, NODE_NOT, NODE_COND };

struct filter_node {
    enum node_kind kind;
    struct filter_node **kids; /* AND / OR: n kids; NOT: one */
    size_t n;
    /* NODE_COND */
    char *path;  /* as written, for messages */
    char **segs; /* path split at dots */
    size_t nsegs;
    enum filter_op op;
    json_t *value; /* operand; for $in/$nin an array */
};

struct jvdb_filter {
    struct filter_node *root; /* an AND node */
};

/* Rule (3) of filter.c: the number a value stands for in a range comparison (a JSON number, or a
 * string that is exactly a finite JSON number); 0 when it stands for none. */
int filter_numeric(const json_t *v, double *out);
#endif
