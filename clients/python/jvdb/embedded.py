"""Embedded mode: the same methods as jvdb.Client, over libjvdb.so in this process (ctypes).

jvdb.open(path) opens (creating if needed) a data directory; while it is open no server or other
process can open it (the library's lock).  The library is found from `library=`, else $JVDB_LIBRARY,
else the system's (ctypes.util.find_library("jvdb")).  Errors are the HTTP client's classes with the
server's codes (INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, ...) and the library's message.
Filters on search go to the library, and so do count and delete by filter when the library has
issue 12's bulk calls (jvdb_count_filtered, jvdb_delete_filtered, jvdb_delete_ids).  Otherwise (an
older library, and scroll, which the library has no call for) the filter is checked by the library
(jvdb_filter_parse) and evaluated here over one consistent snapshot, with the base rules only
(equality, $eq $ne $in $nin, ranges on numbers); a filter using more ($and, $or, $not, $exists,
$contains, dotted paths) raises UnsupportedError there rather than being evaluated differently.
"""
import ctypes
import ctypes.util
import json
import os
import threading
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence

from .client import DEFAULT_BATCH, Filters, Vector, VectorLike, normalize_item
from .errors import JvdbError, UnsupportedError, make_error

_CODES = {-1: "INVALID_ARGUMENT", -2: "NOT_FOUND", -3: "ALREADY_EXISTS", -4: "LOCKED", -5: "IO_ERROR",
          -6: "NO_SPACE", -7: "CORRUPT", -8: "OUT_OF_MEMORY", -9: "BUSY", -10: "DATABASE_FAILED",
          -11: "READ_ONLY"}
_METRICS = {"euclidean": 0, "l2": 0, "cosine": 1, "dot": 2}
_METRIC_NAMES = {0: "euclidean", 1: "cosine", 2: "dot"}
_INDEX = {"HNSW": 0, "FLAT": 1}

c_float_p = ctypes.POINTER(ctypes.c_float)


class _DbOptions(ctypes.Structure):
    _fields_ = [("dim", ctypes.c_uint32), ("metric", ctypes.c_int), ("sync", ctypes.c_int),
                ("sync_interval_ms", ctypes.c_uint32), ("segment_max_bytes", ctypes.c_uint64)]


class _Record(ctypes.Structure):
    _fields_ = [("id", ctypes.c_char_p), ("vector", c_float_p), ("dim", ctypes.c_uint32),
                ("meta_json", ctypes.c_char_p)]


class _IndexOptions(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("m", ctypes.c_uint32), ("ef_construction", ctypes.c_uint32),
                ("ef_search", ctypes.c_uint32)]


class _SearchParams(ctypes.Structure):
    _fields_ = [("k", ctypes.c_uint32), ("ef", ctypes.c_uint32), ("exact", ctypes.c_int),
                ("has_threshold", ctypes.c_int), ("threshold", ctypes.c_float), ("filter", ctypes.c_void_p),
                ("threads", ctypes.c_uint32), ("include_vectors", ctypes.c_int), ("include_metadata", ctypes.c_int)]


class _Result(ctypes.Structure):
    _fields_ = [("id", ctypes.c_void_p), ("score", ctypes.c_float), ("vector", c_float_p),
                ("meta_json", ctypes.c_void_p)]


_ITER_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, c_float_p,
                            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint64)


def _load(library: Optional[str]) -> ctypes.CDLL:
    path = library or os.environ.get("JVDB_LIBRARY") or ctypes.util.find_library("jvdb")
    if not path:
        raise OSError("libjvdb.so not found: pass jvdb.open(path, library=...) or set JVDB_LIBRARY")
    lib = ctypes.CDLL(path)
    P, I, U32, U64, S = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_size_t
    PP = ctypes.POINTER(ctypes.c_void_p)
    sigs = {
        "jvdb_errmsg": ([], ctypes.c_char_p), "jvdb_strerror": ([I], ctypes.c_char_p),
        "jvdb_env_open": ([ctypes.c_char_p, PP], I), "jvdb_env_close": ([P], None),
        "jvdb_db_options_init": ([ctypes.POINTER(_DbOptions), U32], None),
        "jvdb_db_create": ([P, ctypes.c_char_p, ctypes.POINTER(_DbOptions), PP], I),
        "jvdb_db_open": ([P, ctypes.c_char_p, PP], I), "jvdb_db_drop": ([P, ctypes.c_char_p], I),
        "jvdb_db_list": ([P, ctypes.POINTER(ctypes.POINTER(ctypes.c_char_p)), ctypes.POINTER(S)], I),
        "jvdb_free_names": ([ctypes.POINTER(ctypes.c_char_p), S], None),
        "jvdb_sync_parse": ([ctypes.c_char_p, ctypes.POINTER(I), ctypes.POINTER(U32)], I),
        "jvdb_db_index_wait": ([P, U32], I),
        "jvdb_db_dim": ([P], U32), "jvdb_db_metric": ([P], I),
        "jvdb_index_options_init": ([ctypes.POINTER(_IndexOptions)], None),
        "jvdb_db_set_index": ([P, ctypes.POINTER(_IndexOptions)], I),
        "jvdb_put_batch": ([P, ctypes.POINTER(_Record), S, ctypes.POINTER(U64)], I),
        "jvdb_get": ([P, ctypes.c_char_p, c_float_p, PP], I),
        "jvdb_delete": ([P, ctypes.c_char_p, ctypes.POINTER(U64)], I),
        "jvdb_count": ([P], U64), "jvdb_iterate": ([P, _ITER_FN, P], I), "jvdb_free": ([P], None),
        "jvdb_filter_parse": ([ctypes.c_char_p, PP], I), "jvdb_filter_free": ([P], None),
        "jvdb_search_params_init": ([ctypes.POINTER(_SearchParams)], None),
        "jvdb_search": ([P, c_float_p, U32, ctypes.POINTER(_SearchParams), ctypes.POINTER(ctypes.POINTER(_Result)),
                         ctypes.POINTER(S)], I),
        "jvdb_results_free": ([ctypes.POINTER(_Result), S], None),
    }
    for name, (args, res) in sigs.items():
        fn = getattr(lib, name)
        fn.argtypes = args
        fn.restype = res
    # issue 12's bulk calls, used when the library has them
    optional = {
        "jvdb_delete_ids": ([P, ctypes.POINTER(ctypes.c_char_p), S, ctypes.POINTER(U64), ctypes.POINTER(U64)], I),
        "jvdb_count_filtered": ([P, P, ctypes.POINTER(U64)], I),
        "jvdb_delete_filtered": ([P, P, ctypes.POINTER(U64)], I),
    }
    for name, (args, res) in optional.items():
        try:
            fn = getattr(lib, name)
        except AttributeError:
            continue
        fn.argtypes = args
        fn.restype = res
    return lib


def _filter_holds(cond: Any, present: bool, value: Any) -> bool:
    """One field's condition, with the rules of src/search/filter.c."""
    def num(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    def eq(a: Any, b: Any) -> bool:
        if num(a) and num(b):
            return a == b
        return type(a) is type(b) and a == b

    if not isinstance(cond, dict):
        cond = {"$eq": cond}
    for op, arg in cond.items():
        if op == "$eq":
            ok = present and eq(value, arg)
        elif op == "$ne":
            ok = not (present and eq(value, arg))
        elif op == "$in":
            ok = present and any(eq(value, a) for a in arg)
        elif op == "$nin":
            ok = not (present and any(eq(value, a) for a in arg))
        else:
            if not (present and num(value)):
                return False
            ok = {"$gt": value > arg, "$gte": value >= arg, "$lt": value < arg, "$lte": value <= arg}[op]
        if not ok:
            return False
    return True


_BASE_OPS = {"$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte"}


def _check_base(filters: Filters) -> None:
    for field, cond in filters.items():
        ops = set(cond) if isinstance(cond, dict) else set()
        if field.startswith("$") or "." in field or not ops <= _BASE_OPS:
            raise UnsupportedError("UNSUPPORTED", "embedded mode evaluates only equality, $eq $ne $in $nin and ranges "
                                   "here (not '%s'); count and delete by filter take every rule with a library "
                                   "that has jvdb_count_filtered" % field)


def _matches(filters: Filters, meta: Optional[Dict[str, Any]]) -> bool:
    m = meta if isinstance(meta, dict) else {}
    return all(_filter_holds(c, f in m, m.get(f)) for f, c in filters.items())


class Embedded:
    """A data directory opened in this process; see jvdb.open."""

    def __init__(self, path: str, library: Optional[str] = None):
        self._lib = _load(library)
        self._lock = threading.Lock()
        self._dbs: Dict[str, ctypes.c_void_p] = {}
        env = ctypes.c_void_p()
        self._check(self._lib.jvdb_env_open(os.fsencode(path), ctypes.byref(env)))
        self._env: Optional[ctypes.c_void_p] = env
        self.path = path

    def _check(self, rc: int, index: Optional[int] = None) -> None:
        if rc:
            msg = (self._lib.jvdb_errmsg() or b"").decode(errors="replace") or \
                  self._lib.jvdb_strerror(rc).decode(errors="replace")
            raise make_error(_CODES.get(rc, "INTERNAL"), msg, None, index)

    def close(self) -> None:
        """Syncs and closes every database and releases the data directory."""
        if self._env is not None:
            self._lib.jvdb_env_close(self._env)
            self._env = None
            self._dbs.clear()

    def __enter__(self) -> "Embedded":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def _db(self, name: str) -> ctypes.c_void_p:
        if self._env is None:
            raise make_error("INVALID_ARGUMENT", "the data directory is closed")
        with self._lock:
            h = self._dbs.get(name)
            if h is None:
                h = ctypes.c_void_p()
                self._check(self._lib.jvdb_db_open(self._env, name.encode(), ctypes.byref(h)))
                self._dbs[name] = h
            return h

    # ---- databases ----

    def create_database(self, name: str, dimension: int, metric: str = "cosine", index_type: Optional[str] = None,
                        description: Optional[str] = None, **options: Any) -> Dict[str, Any]:
        if metric not in _METRICS:
            raise make_error("INVALID_ARGUMENT", "distanceMetric '%s' is not one of cosine, euclidean, l2, dot" % metric)
        if index_type is not None and index_type not in _INDEX:
            raise make_error("INVALID_ARGUMENT", "indexType '%s' is not HNSW or FLAT" % index_type)
        sync = options.pop("sync", None)
        if description is not None or options:
            raise make_error("INVALID_ARGUMENT", "embedded mode supports name, dimension, metric, index_type and sync "
                             "only, not %s" % ", ".join(sorted(options) or ["description"]))
        if self._env is None:
            raise make_error("INVALID_ARGUMENT", "the data directory is closed")
        opts = _DbOptions()
        self._lib.jvdb_db_options_init(ctypes.byref(opts), dimension)
        opts.metric = _METRICS[metric]
        if sync is not None:
            mode, ms = ctypes.c_int(), ctypes.c_uint32()
            self._check(self._lib.jvdb_sync_parse(str(sync).encode(), ctypes.byref(mode), ctypes.byref(ms)))
            opts.sync, opts.sync_interval_ms = mode.value, (ms.value or opts.sync_interval_ms)
        h = ctypes.c_void_p()
        with self._lock:
            self._check(self._lib.jvdb_db_create(self._env, name.encode(), ctypes.byref(opts), ctypes.byref(h)))
            self._dbs[name] = h
        if index_type is not None:
            io = _IndexOptions()
            self._lib.jvdb_index_options_init(ctypes.byref(io))
            io.type = _INDEX[index_type]
            self._check(self._lib.jvdb_db_set_index(h, ctypes.byref(io)))
        return self.get_database(name)

    def get_database(self, name: str) -> Dict[str, Any]:
        h = self._db(name)
        return {"databaseId": name, "name": name, "vectorDimension": self._lib.jvdb_db_dim(h),
                "distanceMetric": _METRIC_NAMES[self._lib.jvdb_db_metric(h)], "vectorCount": self._lib.jvdb_count(h)}

    def list_databases(self) -> List[Dict[str, Any]]:
        names = ctypes.POINTER(ctypes.c_char_p)()
        n = ctypes.c_size_t()
        self._check(self._lib.jvdb_db_list(self._env, ctypes.byref(names), ctypes.byref(n)))
        try:
            out = [names[i].decode() for i in range(n.value)]
        finally:
            self._lib.jvdb_free_names(names, n)
        return [self.get_database(x) for x in out]

    def drop_database(self, name: str) -> Dict[str, Any]:
        self._db(name)
        with self._lock:
            self._check(self._lib.jvdb_db_drop(self._env, name.encode()))
            self._dbs.pop(name, None)
        return {"databaseId": name, "deleted": True}

    # ---- vectors ----

    def upsert(self, db: str, items: Iterable[VectorLike], batch_size: int = DEFAULT_BATCH) -> int:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        h = self._db(db)
        done = 0
        batch: List[Vector] = []
        for item in items:
            batch.append(normalize_item(item))
            if len(batch) == batch_size:
                done += self._put_batch(h, batch, done)
                batch = []
        if batch:
            done += self._put_batch(h, batch, done)
        return done

    def _put_batch(self, h: ctypes.c_void_p, batch: List[Vector], base: int) -> int:
        recs = (_Record * len(batch))()
        keep = []
        dim = self._lib.jvdb_db_dim(h)
        for i, v in enumerate(batch):
            if not isinstance(v["id"], str):
                raise make_error("INVALID_ARGUMENT", "record %d: id must be a string" % (base + i), None, base + i)
            if len(v["values"]) != dim:
                raise make_error("INVALID_ARGUMENT", "record %d: vector has %d values but the database has dimension %d"
                                 % (base + i, len(v["values"]), dim), None, base + i)
            vals = (ctypes.c_float * len(v["values"]))(*v["values"])
            meta = v.get("metadata")
            if meta is not None and not isinstance(meta, dict):
                raise make_error("INVALID_ARGUMENT", "record %d: metadata must be an object" % i, None, base + i)
            mj = None if meta is None else json.dumps(meta, allow_nan=False).encode()
            idb = v["id"].encode()
            keep.append((vals, mj, idb))
            recs[i].id = idb
            recs[i].vector = ctypes.cast(vals, c_float_p)
            recs[i].dim = len(v["values"])
            recs[i].meta_json = mj
        lsn = ctypes.c_uint64()
        rc = self._lib.jvdb_put_batch(h, recs, len(batch), ctypes.byref(lsn))
        if rc:
            msg = (self._lib.jvdb_errmsg() or b"").decode(errors="replace")
            idx = None
            if msg.startswith("record "):
                try:
                    idx = base + int(msg.split()[1].rstrip(":"))
                except ValueError:
                    pass
            raise make_error(_CODES.get(rc, "INTERNAL"), msg, None, idx)
        return len(batch)

    def get(self, db: str, id: str) -> Optional[Vector]:
        h = self._db(db)
        vals = (ctypes.c_float * self._lib.jvdb_db_dim(h))()
        meta = ctypes.c_void_p()
        rc = self._lib.jvdb_get(h, id.encode(), vals, ctypes.byref(meta))
        if rc == -2:
            return None
        self._check(rc)
        m = None
        if meta.value:
            m = json.loads(ctypes.string_at(meta.value).decode())
            self._lib.jvdb_free(meta)
        return {"id": id, "values": list(vals), "metadata": m}

    def get_many(self, db: str, ids: Sequence[str]) -> List[Vector]:
        return [v for v in (self.get(db, i) for i in ids) if v is not None]

    def _filter(self, filters: Filters) -> ctypes.c_void_p:
        """The library's compiled filter (a bad one gets the library's message); free with jvdb_filter_free."""
        f = ctypes.c_void_p()
        self._check(self._lib.jvdb_filter_parse(json.dumps(filters).encode(), ctypes.byref(f)))
        return f

    def _has(self, name: str) -> bool:
        return hasattr(self._lib, name)

    def _snapshot(self, db: str, filters: Optional[Filters], values: bool = True) -> List[Vector]:
        h = self._db(db)
        if filters is not None:
            self._lib.jvdb_filter_free(self._filter(filters))
            _check_base(filters)
        dim = self._lib.jvdb_db_dim(h)
        out: List[Vector] = []

        def each(arg: Any, idp: Any, idlen: int, vec: Any, meta: Any, metalen: int, lsn: int) -> int:
            try:
                m = json.loads(ctypes.string_at(meta, metalen)) if metalen else None
                if filters is None or _matches(filters, m):
                    out.append({"id": ctypes.string_at(idp, idlen).decode(),
                                "values": vec[:dim] if values else None, "metadata": m})
                return 0
            except Exception:
                return 1
        cb = _ITER_FN(each)
        rc = self._lib.jvdb_iterate(h, cb, None)
        if rc == 1:
            raise make_error("INTERNAL", "reading a stored vector failed")
        self._check(rc)
        return out

    def delete(self, db: str, ids: Optional[Sequence[str]] = None, filters: Optional[Filters] = None) -> int:
        if (ids is None) == (filters is None):
            raise ValueError("give exactly one of ids and filters")
        h = self._db(db)
        if ids is None and self._has("jvdb_delete_filtered"):
            assert filters is not None
            f = self._filter(filters)
            out = ctypes.c_uint64()
            try:
                self._check(self._lib.jvdb_delete_filtered(h, f, ctypes.byref(out)))
            finally:
                self._lib.jvdb_filter_free(f)
            return int(out.value)
        if ids is None:
            ids = [v["id"] for v in self._snapshot(db, filters, values=False)]
        elif self._has("jvdb_delete_ids"):
            arr = (ctypes.c_char_p * max(len(ids), 1))(*[i.encode() for i in ids])
            out, lsn = ctypes.c_uint64(), ctypes.c_uint64()
            self._check(self._lib.jvdb_delete_ids(h, arr, len(ids), ctypes.byref(out), ctypes.byref(lsn)))
            return int(out.value)
        n = 0
        for i in ids:
            rc = self._lib.jvdb_delete(h, i.encode(), None)
            if rc != -2:
                self._check(rc)
                n += 1
        return n

    def count(self, db: str, filters: Optional[Filters] = None) -> int:
        if filters is None:
            return int(self._lib.jvdb_count(self._db(db)))
        if self._has("jvdb_count_filtered"):
            h = self._db(db)
            f = self._filter(filters)
            out = ctypes.c_uint64()
            try:
                self._check(self._lib.jvdb_count_filtered(h, f, ctypes.byref(out)))
            finally:
                self._lib.jvdb_filter_free(f)
            return int(out.value)
        return len(self._snapshot(db, filters, values=False))

    def scroll(self, db: str, filters: Optional[Filters] = None, batch_size: int = 1000,
               include_values: bool = True, include_metadata: bool = True) -> Iterator[Vector]:
        for v in self._snapshot(db, filters, values=include_values):
            if not include_values:
                v.pop("values")
            if not include_metadata:
                v.pop("metadata")
            yield v

    def search(self, db: str, vector: Sequence[float], k: int = 10, filters: Optional[Filters] = None,
               include_metadata: bool = True, include_values: bool = False, threshold: Optional[float] = None,
               ef: Optional[int] = None, exact: bool = False) -> List[Dict[str, Any]]:
        h = self._db(db)
        p = _SearchParams()
        self._lib.jvdb_search_params_init(ctypes.byref(p))
        p.k = k
        p.exact = int(exact)
        p.ef = ef or 0
        if threshold is not None:
            p.has_threshold, p.threshold = 1, threshold
        p.include_vectors = int(include_values)
        p.include_metadata = int(include_metadata)
        f = ctypes.c_void_p()
        if filters is not None:
            self._check(self._lib.jvdb_filter_parse(json.dumps(filters).encode(), ctypes.byref(f)))
            p.filter = f
        q = (ctypes.c_float * len(vector))(*vector)
        res = ctypes.POINTER(_Result)()
        n = ctypes.c_size_t()
        try:
            self._check(self._lib.jvdb_search(h, q, len(vector), ctypes.byref(p), ctypes.byref(res), ctypes.byref(n)))
        finally:
            if f.value:
                self._lib.jvdb_filter_free(f)
        dim = self._lib.jvdb_db_dim(h)
        out = []
        try:
            for i in range(n.value):
                r = res[i]
                hit: Dict[str, Any] = {"id": ctypes.string_at(r.id).decode(), "score": r.score}
                if include_metadata:
                    hit["metadata"] = json.loads(ctypes.string_at(r.meta_json)) if r.meta_json else None
                if include_values:
                    hit["values"] = r.vector[:dim] if r.vector else None
                out.append(hit)
        finally:
            self._lib.jvdb_results_free(res, n)
        return out


def open(path: str, library: Optional[str] = None) -> Embedded:  # noqa: A001 (jvdb.open, like dbm.open)
    """Opens the data directory `path` in this process (embedded mode, no server)."""
    return Embedded(path, library)


__all__ = ["Embedded", "open", "JvdbError"]
