/*
 * filter.c — metadata filters (docs/ARCHITECTURE.md 4; the rules users read are in docs/API.md "Filters").
 *
 * A filter is a JSON object; its keys are ANDed.  A key is a field path or a logical operator:
 *
 *   {"genre": "jazz"}                      equality (string, number, boolean or null)
 *   {"tags": "legal"}                      on a list field: the list contains "legal"
 *   {"m.lang": "en"}                       dotted path into nested objects (lists of objects too)
 *   {"genre": {"$in": ["jazz", "soul"]}}   any of; "$nin" none of
 *   {"genre": {"$ne": "pop"}}              not equal (a missing field is unequal to anything)
 *   {"year": {"$gte": 1990, "$lt": 2000}}  ranges $gt $gte $lt $lte; several operators on a field AND
 *   {"m.lang": {"$exists": true}}          the path is present (a null value counts as present)
 *   {"title": {"$contains": "tax"}}        a string value holding the substring, or a list
 *                                          holding the element
 *   {"$and": [f, ...]}  {"$or": [f, ...]}  {"$not": f}   f being filters of this same form
 *
 * Invariants the matcher keeps (each is a documented rule, tested against a brute-force reference):
 *  (1) A path resolves to a set of values: descending through a list visits each element, and a leaf
 *      list contributes its elements as well as itself.  A positive condition ($eq $in $gt.. $contains
 *      $exists true) holds when some value satisfies it; its negation ($ne $nin $exists false) is
 *      exactly the complement, so {"f": {"$ne": x}} == {"$not": {"f": x}}.
 *  (2) Equality and $in are exact in type: "5" never equals 5 (numbers compare by value: 3 == 3.0).
 *  (3) Range operands are numbers; a string value that is exactly a JSON number ("5", "-2.5e3")
 *      compares as that number, so metadata written as strings by the original client still ranges.
 *      Any other value never satisfies a range.
 *  (4) Compilation checks every operator and operand and says what is wrong; nothing partial escapes.
 */
#include "search/filter.h"
#include "search/filter_internal.h"

#include "core/err.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *name;
    enum filter_op op;
} filter_ops[] = {
    { "$eq", OP_EQ },   { "$ne", OP_NE }, { "$in", OP_IN },   { "$nin", OP_NIN },       { "$gt", OP_GT },
    { "$gte", OP_GTE }, { "$lt", OP_LT }, { "$lte", OP_LTE }, { "$exists", OP_EXISTS }, { "$contains", OP_CONTAINS }
};

#define FILTER_OP_LIST "$eq $ne $in $nin $gt $gte $lt $lte $exists $contains"

/* Frees a node and everything below it. */
static void node_free(struct filter_node *n)
{
    if (!n) return;
    for (size_t i = 0; i < n->n; i++) node_free(n->kids[i]);
    free(n->kids);
    for (size_t i = 0; i < n->nsegs; i++) free(n->segs[i]);
    free(n->segs);
    free(n->path);
    json_decref(n->value);
    free(n);
}

void jvdb_filter_free(jvdb_filter *f)
{
    if (!f) return;
    node_free(f->root);
    free(f);
}

/* Appends kid to a logical node (takes it, frees it on failure). */
static int node_push(struct filter_node *n, struct filter_node *kid)
{
    struct filter_node **k = realloc(n->kids, (n->n + 1) * sizeof *k);
    if (!k) {
        node_free(kid);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    n->kids = k;
    k[n->n++] = kid;
    return JVDB_OK;
}

/* A zeroed filter node of the given kind, or NULL. */
static struct filter_node *node_new(enum node_kind kind)
{
    struct filter_node *n = calloc(1, sizeof *n);
    if (n) n->kind = kind;
    return n;
}

/* Whether v is a value a comparison accepts (string, number, boolean or null; not an array or object). */
static int filter_scalar(const json_t *v)
{
    return json_is_string(v) || json_is_number(v) || json_is_boolean(v) || json_is_null(v);
}

/* Splits a dotted path; refuses empty segments ("a..b", ".a", "a."). */
static int cond_set_path(struct filter_node *c, const char *path)
{
    if (!path[0]) return err_set(JVDB_EINVAL, "filter: a field name is empty");
    if (!(c->path = strdup(path))) return err_set(JVDB_ENOMEM, "out of memory");
    const char *p = path;
    for (;;) {
        const char *dot = strchr(p, '.');
        size_t len = dot ? (size_t)(dot - p) : strlen(p);
        if (len == 0)
            return err_set(JVDB_EINVAL, "filter: field path '%s' has an empty part (dots separate nested fields)",
                           path);
        if (c->nsegs == FILTER_MAX_SEGS)
            return err_set(JVDB_EINVAL, "filter: field path '%s' is deeper than %d parts", path, FILTER_MAX_SEGS);
        char **s = realloc(c->segs, (c->nsegs + 1) * sizeof *s);
        if (!s) return err_set(JVDB_ENOMEM, "out of memory");
        c->segs = s;
        if (!(s[c->nsegs] = strndup(p, len))) return err_set(JVDB_ENOMEM, "out of memory");
        c->nsegs++;
        if (!dot) return JVDB_OK;
        p = dot + 1;
    }
}

/* Checks an operator's operand. */
static int cond_check(const char *field, enum filter_op op, const json_t *value, const char *opname)
{
    switch (op) {
    case OP_IN:
    case OP_NIN: {
        if (!json_is_array(value)) return err_set(JVDB_EINVAL, "filter on '%s': %s needs an array", field, opname);
        size_t i;
        json_t *x;
        json_array_foreach(value, i, x) if (!filter_scalar(x)) return err_set(
            JVDB_EINVAL, "filter on '%s': %s values must be strings, numbers, booleans or null", field, opname);
        return JVDB_OK;
    }
    case OP_GT:
    case OP_GTE:
    case OP_LT:
    case OP_LTE:
        if (!json_is_number(value)) return err_set(JVDB_EINVAL, "filter on '%s': %s needs a number", field, opname);
        return JVDB_OK;
    case OP_EXISTS:
        if (!json_is_boolean(value)) return err_set(JVDB_EINVAL, "filter on '%s': $exists needs true or false", field);
        return JVDB_OK;
    default:
        if (json_is_object(value) || json_is_array(value))
            return err_set(JVDB_EINVAL, "filter on '%s': %s needs a string, number, boolean or null", field, opname);
        return JVDB_OK;
    }
}

/* Adds one condition on `field` to the AND node `and`. */
static int filter_add(struct filter_node *and, const char *field, enum filter_op op, json_t *value, const char *opname)
{
    int rc = cond_check(field, op, value, opname);
    if (rc) return rc;
    struct filter_node *c = node_new(NODE_COND);
    if (!c) return err_set(JVDB_ENOMEM, "out of memory");
    c->op = op;
    c->value = json_incref(value);
    if ((rc = cond_set_path(c, field))) {
        node_free(c);
        return rc;
    }
    return node_push(and, c);
}

static int filter_compile(const json_t *doc, int depth, struct filter_node **out);

/* Adds a field's conditions: a scalar (equality) or an object of operators. */
static int filter_field(struct filter_node *and, const char *field, json_t *cond)
{
    if (!json_is_object(cond)) {
        if (json_is_array(cond))
            return err_set(JVDB_EINVAL,
                           "filter on '%s': a list is not a value to match (use {\"$in\": [...]} for any of several)",
                           field);
        return filter_add(and, field, OP_EQ, cond, "equality");
    }
    if (json_object_size(cond) == 0) return err_set(JVDB_EINVAL, "filter on '%s': empty condition object", field);
    const char *opname;
    json_t *operand;
    json_object_foreach(cond, opname, operand)
    {
        if (opname[0] != '$')
            return err_set(JVDB_EINVAL, "filter on '%s': '%s' is not an operator (a nested field is written \"%s.%s\")",
                           field, opname, field, opname);
        if (!strcmp(opname, "$and") || !strcmp(opname, "$or") || !strcmp(opname, "$not"))
            return err_set(JVDB_EINVAL, "filter on '%s': %s goes at the level of fields, not inside one", field,
                           opname);
        size_t k = 0, nops = sizeof filter_ops / sizeof filter_ops[0];
        while (k < nops && strcmp(filter_ops[k].name, opname) != 0) k++;
        if (k == nops)
            return err_set(JVDB_EINVAL, "filter on '%s': unknown operator '%s' (use " FILTER_OP_LIST ")", field,
                           opname);
        int rc = filter_add(and, field, filter_ops[k].op, operand, opname);
        if (rc) return rc;
    }
    return JVDB_OK;
}

/* Adds a $and / $or (array of filters) or $not (one filter) under `and`. */
static int filter_logical(struct filter_node *and, const char *opname, json_t *arg, int depth)
{
    struct filter_node *sub;
    int rc;
    if (!strcmp(opname, "$not")) {
        if (!json_is_object(arg)) return err_set(JVDB_EINVAL, "filter: $not needs a filter object");
        if ((rc = filter_compile(arg, depth + 1, &sub))) return rc;
        struct filter_node *not = node_new(NODE_NOT);
        if (!not ) {
            node_free(sub);
            return err_set(JVDB_ENOMEM, "out of memory");
        }
        if ((rc = node_push(not, sub))) {
            node_free(not );
            return rc;
        }
        return node_push(and, not );
    }
    enum node_kind kind = !strcmp(opname, "$and") ? NODE_AND : NODE_OR;
    if (!json_is_array(arg) || json_array_size(arg) == 0)
        return err_set(JVDB_EINVAL, "filter: %s needs a non-empty array of filter objects", opname);
    struct filter_node *n = node_new(kind);
    if (!n) return err_set(JVDB_ENOMEM, "out of memory");
    size_t i;
    json_t *x;
    json_array_foreach(arg, i, x)
    {
        if (!json_is_object(x)) {
            node_free(n);
            return err_set(JVDB_EINVAL, "filter: %s item %zu is not a filter object", opname, i);
        }
        if ((rc = filter_compile(x, depth + 1, &sub)) || (rc = node_push(n, sub))) {
            node_free(n);
            return rc;
        }
    }
    return node_push(and, n);
}

/* Compiles one filter object into an AND node. */
static int filter_compile(const json_t *doc, int depth, struct filter_node **out)
{
    *out = NULL;
    if (depth > FILTER_MAX_DEPTH) return err_set(JVDB_EINVAL, "filter: nested deeper than %d levels", FILTER_MAX_DEPTH);
    if (!json_is_object(doc)) return err_set(JVDB_EINVAL, "filter must be a JSON object of field conditions");
    struct filter_node *and = node_new(NODE_AND);
    if (!and) return err_set(JVDB_ENOMEM, "out of memory");
    const char *key;
    json_t *val;
    int rc = JVDB_OK;
    json_object_foreach((json_t *)doc, key, val)
    {
        if (key[0] != '$') rc = filter_field(and, key, val);
        else if (!strcmp(key, "$and") || !strcmp(key, "$or") || !strcmp(key, "$not"))
            rc = filter_logical(and, key, val, depth);
        else
            rc = err_set(JVDB_EINVAL,
                         "filter: '%s' is not a field or $and/$or/$not (field operators go inside a field's object)",
                         key);
        if (rc) break;
    }
    if (rc) {
        node_free(and);
        return rc;
    }
    *out = and;
    return JVDB_OK;
}

int filter_from_json(const json_t *doc, jvdb_filter **out)
{
    *out = NULL;
    jvdb_filter *f = calloc(1, sizeof *f);
    if (!f) return err_set(JVDB_ENOMEM, "out of memory");
    int rc = filter_compile(doc, 0, &f->root);
    if (rc) {
        free(f);
        return rc;
    }
    *out = f;
    return JVDB_OK;
}

int jvdb_filter_parse(const char *json, jvdb_filter **out)
{
    err_clear();
    if (!out) return err_set(JVDB_EINVAL, "output is NULL");
    *out = NULL;
    if (!json) return err_set(JVDB_EINVAL, "filter is missing");
    json_error_t jerr;
    json_t *doc = json_loads(json, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
    if (!doc)
        return err_set(JVDB_EINVAL, "filter is not valid JSON (line %d, column %d): %s", jerr.line, jerr.column,
                       jerr.text);
    int rc = filter_from_json(doc, out);
    json_decref(doc);
    return rc;
}

/* ---------------------------------------------------------------- matching */

/* JSON equality where integers and reals compare by value (1 equals 1.0, as clients expect). */
static int filter_equal(const json_t *a, const json_t *b)
{
    if (json_is_number(a) && json_is_number(b)) return json_number_value(a) == json_number_value(b);
    return json_equal((json_t *)a, (json_t *)b);
}

/* Rule (3): the number a value stands for in a range comparison (payload.c shares it). */
int filter_numeric(const json_t *v, double *out)
{
    if (json_is_number(v)) {
        *out = json_number_value(v);
        return 1;
    }
    if (!json_is_string(v)) return 0;
    const char *s = json_string_value(v);
    size_t len = strlen(s);
    if (!len || !(s[0] == '-' || (s[0] >= '0' && s[0] <= '9')) || !(s[len - 1] >= '0' && s[len - 1] <= '9')) return 0;
    /* Strictly a JSON number: what the original client wrote with str(n); not " 5", "0x10", "inf". */
    json_t *n = json_loads(s, JSON_DECODE_ANY, NULL);
    int ok = json_is_number(n);
    if (ok) *out = json_number_value(n);
    json_decref(n);
    return ok && isfinite(*out);
}

/* Whether one resolved value satisfies a positive operator (not counting list elements). */
static int filter_value_holds(const struct filter_node *c, const json_t *v)
{
    switch (c->op) {
    case OP_EQ:
    case OP_NE: return filter_equal(v, c->value);
    case OP_IN:
    case OP_NIN: {
        size_t i;
        json_t *x;
        json_array_foreach(c->value, i, x) if (filter_equal(v, x)) return 1;
        return 0;
    }
    case OP_EXISTS: return 1;
    case OP_CONTAINS:
        if (json_is_string(v) && json_is_string(c->value))
            return strstr(json_string_value(v), json_string_value(c->value)) != NULL;
        return 0;
    default: {
        double a, b = json_number_value(c->value);
        if (!filter_numeric(v, &a)) return 0;
        if (c->op == OP_GT) return a > b;
        if (c->op == OP_GTE) return a >= b;
        if (c->op == OP_LT) return a < b;
        return a <= b;
    }
    }
}

/* Rule (1): some value at segs[i..] under v satisfies c's positive form. */
static int filter_path_any(const struct filter_node *c, const json_t *v, size_t i)
{
    if (i == c->nsegs) {
        if (c->op == OP_EXISTS) return 1;
        if (filter_value_holds(c, v)) return 1;
        if (json_is_array(v)) {
            size_t k;
            json_t *x;
            /* A list holds its elements: equality and $in become "contains", as in Qdrant. */
            json_array_foreach(v, k, x)
            {
                if (c->op == OP_CONTAINS) {
                    if (filter_equal(x, c->value)) return 1;
                } else if (!json_is_array(x) && filter_value_holds(c, x)) {
                    return 1;
                }
            }
        }
        return 0;
    }
    if (json_is_object(v)) {
        const json_t *next = json_object_get(v, c->segs[i]);
        return next && filter_path_any(c, next, i + 1);
    }
    if (json_is_array(v)) {
        size_t k;
        json_t *x;
        json_array_foreach(v, k, x) if (json_is_object(x) && filter_path_any(c, x, i)) return 1;
    }
    return 0;
}

/* Evaluates a filter tree on one metadata document; a negated comparison holds when no value at the path matches. */
static int node_holds(const struct filter_node *n, const json_t *doc)
{
    switch (n->kind) {
    case NODE_AND:
        for (size_t i = 0; i < n->n; i++)
            if (!node_holds(n->kids[i], doc)) return 0;
        return 1;
    case NODE_OR:
        for (size_t i = 0; i < n->n; i++)
            if (node_holds(n->kids[i], doc)) return 1;
        return 0;
    case NODE_NOT: return !node_holds(n->kids[0], doc);
    default: {
        int any = doc && filter_path_any(n, doc, 0);
        int negated = n->op == OP_NE || n->op == OP_NIN || (n->op == OP_EXISTS && json_is_false(n->value));
        return negated ? !any : any;
    }
    }
}

int filter_match(const jvdb_filter *f, const char *meta, size_t meta_len)
{
    if (!f || !f->root || f->root->n == 0) return 1;
    json_t *doc = meta_len ? json_loadb(meta, meta_len, 0, NULL) : NULL;
    int ok = node_holds(f->root, json_is_object(doc) ? doc : NULL);
    json_decref(doc);
    return ok;
}
