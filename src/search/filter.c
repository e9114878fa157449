/*
 * filter.c — metadata filters (DESIGN.md 7): a JSON object of conditions on top-level fields of a
 * vector's metadata, all of which must hold.
 *
 *   {"genre": "jazz"}                     equality (string, number, boolean or null)
 *   {"genre": {"$in": ["jazz", "soul"]}}  membership; "$nin" the opposite
 *   {"genre": {"$ne": "pop"}}             inequality (a missing field is unequal to anything)
 *   {"year": {"$gte": 1990, "$lt": 2000}} numeric ranges: $gt $gte $lt $lte (non-numbers never match)
 *   {"$eq": ...} is equality spelled out.  Several operators on one field are ANDed too.
 *
 * A filter is compiled once per query (jvdb_filter_parse checks every operator and operand and says
 * precisely what is wrong); matching parses the candidate's metadata with jansson.  Numbers compare
 * by value, so 3 equals 3.0.
 */
#include "search/filter.h"

#include "core/err.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum filter_op { OP_EQ, OP_NE, OP_IN, OP_NIN, OP_GT, OP_GTE, OP_LT, OP_LTE };

struct filter_cond {
    char *field;
    enum filter_op op;
    json_t *value;             /* operand; for $in/$nin an array */
};

struct jvdb_filter {
    struct filter_cond *conds;
    size_t n;
};

static const struct {
    const char *name;
    enum filter_op op;
} filter_ops[] = {{"$eq", OP_EQ}, {"$ne", OP_NE}, {"$in", OP_IN}, {"$nin", OP_NIN},
                  {"$gt", OP_GT}, {"$gte", OP_GTE}, {"$lt", OP_LT}, {"$lte", OP_LTE}};

void jvdb_filter_free(jvdb_filter *f)
{
    if (!f) return;
    for (size_t i = 0; i < f->n; i++) {
        free(f->conds[i].field);
        json_decref(f->conds[i].value);
    }
    free(f->conds);
    free(f);
}

static int filter_scalar(const json_t *v) { return json_is_string(v) || json_is_number(v) || json_is_boolean(v) || json_is_null(v); }

static int filter_add(jvdb_filter *f, const char *field, enum filter_op op, json_t *value, const char *opname)
{
    if ((op == OP_IN || op == OP_NIN)) {
        if (!json_is_array(value)) return err_set(JVDB_EINVAL, "filter on '%s': %s needs an array", field, opname);
        size_t i;
        json_t *x;
        json_array_foreach(value, i, x) if (!filter_scalar(x))
            return err_set(JVDB_EINVAL, "filter on '%s': %s values must be strings, numbers, booleans or null", field, opname);
    } else if (op >= OP_GT) {
        if (!json_is_number(value)) return err_set(JVDB_EINVAL, "filter on '%s': %s needs a number", field, opname);
    } else if (!filter_scalar(value)) {
        return err_set(JVDB_EINVAL, "filter on '%s': %s needs a string, number, boolean or null", field, opname);
    }
    struct filter_cond *c = realloc(f->conds, (f->n + 1) * sizeof *c);
    if (!c) return err_set(JVDB_ENOMEM, "out of memory");
    f->conds = c;
    c[f->n].field = strdup(field);
    c[f->n].op = op;
    c[f->n].value = json_incref(value);
    if (!c[f->n].field) {
        json_decref(value);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    f->n++;
    return JVDB_OK;
}

int filter_from_json(const json_t *doc, jvdb_filter **out)
{
    *out = NULL;
    if (!json_is_object(doc)) return err_set(JVDB_EINVAL, "filter must be a JSON object of field conditions");
    jvdb_filter *f = calloc(1, sizeof *f);
    if (!f) return err_set(JVDB_ENOMEM, "out of memory");
    const char *field;
    json_t *cond;
    int rc = JVDB_OK;
    json_object_foreach((json_t *)doc, field, cond) {
        if (field[0] == '$') {
            rc = err_set(JVDB_EINVAL, "filter: '%s' is not a field (operators go inside a field's object)", field);
            break;
        }
        if (!json_is_object(cond)) {
            rc = filter_add(f, field, OP_EQ, cond, "equality");
            if (rc) break;
            continue;
        }
        if (json_object_size(cond) == 0) {
            rc = err_set(JVDB_EINVAL, "filter on '%s': empty condition object", field);
            break;
        }
        const char *opname;
        json_t *operand;
        json_object_foreach(cond, opname, operand) {
            size_t k = 0, nops = sizeof filter_ops / sizeof filter_ops[0];
            while (k < nops && strcmp(filter_ops[k].name, opname) != 0) k++;
            if (k == nops) {
                rc = err_set(JVDB_EINVAL, "filter on '%s': unknown operator '%s' (use $eq $ne $in $nin $gt $gte $lt $lte)", field, opname);
                break;
            }
            if ((rc = filter_add(f, field, filter_ops[k].op, operand, opname))) break;
        }
        if (rc) break;
    }
    if (rc) {
        jvdb_filter_free(f);
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
    if (!doc) return err_set(JVDB_EINVAL, "filter is not valid JSON (line %d, column %d): %s", jerr.line, jerr.column, jerr.text);
    int rc = filter_from_json(doc, out);
    json_decref(doc);
    return rc;
}

static int filter_equal(const json_t *a, const json_t *b)
{
    if (json_is_number(a) && json_is_number(b)) return json_number_value(a) == json_number_value(b);
    return json_equal((json_t *)a, (json_t *)b);
}

static int filter_cond_holds(const struct filter_cond *c, const json_t *v)
{
    switch (c->op) {
    case OP_EQ: return v && filter_equal(v, c->value);
    case OP_NE: return !v || !filter_equal(v, c->value);
    case OP_IN:
    case OP_NIN: {
        int found = 0;
        size_t i;
        json_t *x;
        if (v) json_array_foreach(c->value, i, x) found |= filter_equal(v, x);
        return c->op == OP_IN ? found : !found;
    }
    default: {
        if (!v || !json_is_number(v)) return 0;
        double a = json_number_value(v), b = json_number_value(c->value);
        if (c->op == OP_GT) return a > b;
        if (c->op == OP_GTE) return a >= b;
        if (c->op == OP_LT) return a < b;
        return a <= b;
    }
    }
}

int filter_match(const jvdb_filter *f, const char *meta, size_t meta_len)
{
    if (!f || f->n == 0) return 1;
    json_t *doc = meta_len ? json_loadb(meta, meta_len, 0, NULL) : NULL;
    int ok = 1;
    for (size_t i = 0; i < f->n && ok; i++) {
        json_t *v = json_is_object(doc) ? json_object_get(doc, f->conds[i].field) : NULL;
        ok = filter_cond_holds(&f->conds[i], v);
    }
    json_decref(doc);
    return ok;
}
