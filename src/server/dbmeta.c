/*
 * dbmeta.c — what the REST API shows about a database that the library does not store: its
 * description and its created/updated times.  One small JSON file per database,
 * <data>/server/<name>.json, owned by the server (the library's MANIFEST is not touched).
 *
 * Files are replaced atomically through core/fs (write <file>.tmp, fsync, rename, fsync the
 * directory), so a crash leaves the old or the new file, never a torn one.  The file is written
 * after the library has created the database; a database without a file (created by the CLI, or a
 * crash between the two steps) gets an empty description and the time of its directory.
 */
#include "server/srv.h"

#include "core/clock.h"
#include "core/err.h"
#include "core/fs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

int dbmeta_init(struct server *s)
{
    s->meta_dir = fs_join(s->cfg.data_dir, "server");
    if (!s->meta_dir) return -1;
    return fs_mkdir(s->meta_dir) == JVDB_OK ? 0 : -1;
}

/* The path of a database's REST metadata file, meta_dir/NAME.json. */
static char *dbmeta_path(struct server *s, const char *name)
{
    char file[JVDB_MAX_NAME_LEN + 8];
    snprintf(file, sizeof file, "%s.json", name);
    return fs_join(s->meta_dir, file);
}

/* The modification time of a database's directory in ns (0 when missing): the best creation time for a database
 * made before its metadata file. */
static int64_t dbmeta_dir_time(struct server *s, const char *name)
{
    char rel[JVDB_MAX_NAME_LEN + 16];
    snprintf(rel, sizeof rel, "databases/%s", name);
    char *dir = fs_join(s->cfg.data_dir, rel);
    struct stat st;
    int64_t t = 0;
    if (dir && stat(dir, &st) == 0) t = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    free(dir);
    return t;
}

/* Metadata of a database without a metadata file: no description, times from its directory. */
static void dbmeta_defaults(struct server *s, const char *name, struct dbmeta *m)
{
    memset(m, 0, sizeof *m);
    m->created_ns = m->updated_ns = dbmeta_dir_time(s, name);
}

int dbmeta_load(struct server *s, const char *name, struct dbmeta *out)
{
    dbmeta_defaults(s, name, out);
    char *path = dbmeta_path(s, name);
    if (!path) return -1;
    json_error_t je;
    json_t *doc = fs_exists(path) ? json_load_file(path, 0, &je) : NULL;
    free(path);
    if (doc && json_is_object(doc)) {
        json_t *d = json_object_get(doc, "description");
        if (json_is_string(d)) out->description = strdup(json_string_value(d));
        json_t *c = json_object_get(doc, "created_ns"), *u = json_object_get(doc, "updated_ns");
        if (json_is_integer(c)) out->created_ns = json_integer_value(c);
        if (json_is_integer(u)) out->updated_ns = json_integer_value(u);
    }
    json_decref(doc);
    if (!out->description) out->description = strdup("");
    return out->description ? 0 : -1;
}

int dbmeta_save(struct server *s, const char *name, const struct dbmeta *m)
{
    json_t *doc = json_pack("{s:s, s:I, s:I}", "description", m->description ? m->description : "", "created_ns",
                            (json_int_t)m->created_ns, "updated_ns", (json_int_t)m->updated_ns);
    char *text = doc ? json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
    json_decref(doc);
    char *path = dbmeta_path(s, name);
    int rc = JVDB_ENOMEM;
    if (text && path) rc = fs_replace_file(path, text, strlen(text), "server.dbmeta");
    free(text);
    free(path);
    return rc;
}

void dbmeta_remove(struct server *s, const char *name)
{
    char *path = dbmeta_path(s, name);
    if (path) unlink(path);
    free(path);
}

void dbmeta_free(struct dbmeta *m)
{
    free(m->description);
    m->description = NULL;
}

void dbmeta_prune(struct server *s)
{
    char **names = NULL;
    size_t n = 0;
    if (jvdb_db_list(s->env, &names, &n) != JVDB_OK) return;
    json_t *keep = json_object();
    for (size_t i = 0; i < n; i++) json_object_set_new(keep, names[i], json_true());
    jvdb_free_names(names, n);
    DIR *d = opendir(s->meta_dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 5, ".json") != 0) continue;
        char name[JVDB_MAX_NAME_LEN + 1];
        if (len - 5 > JVDB_MAX_NAME_LEN) continue;
        memcpy(name, e->d_name, len - 5);
        name[len - 5] = 0;
        if (!json_object_get(keep, name)) dbmeta_remove(s, name);
    }
    if (d) closedir(d);
    json_decref(keep);
}

void dbmeta_restored(struct server *s, jvdb_restore_result *res)
{
    pthread_mutex_lock(&s->meta_mu);
    struct dbmeta m;
    dbmeta_load(s, res->database, &m);
    m.updated_ns = clock_wall_ns();
    if (!res->replaced) m.created_ns = m.updated_ns;
    if (res->database_description) {
        /* The description travels with the backup (format 2); older backups keep the current one. */
        free(m.description);
        m.description = res->database_description;
        res->database_description = NULL;
    } else if (!res->replaced && m.description) {
        m.description[0] = '\0';
    }
    dbmeta_save(s, res->database, &m);
    dbmeta_free(&m);
    pthread_mutex_unlock(&s->meta_mu);
}
