"""The HTTP client of `jvdb serve` (python3 standard library only).

One keep-alive HTTP/1.1 connection per thread (http.client), reopened once when the server has
closed an idle one; 503 SERVER_BUSY is retried after its Retry-After.  Every method maps to the
REST routes of docs/API.md; errors become JvdbError subclasses carrying the server's code and
message.  Vectors go in and come out as plain dicts: {"id": str, "values": [float], "metadata": dict|None}.
"""
import http.client
import json
import ssl
import threading
import time
import urllib.parse
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from .errors import JvdbError, TransportError, UnsupportedError, make_error

Vector = Dict[str, Any]
VectorLike = Union[Vector, Tuple[str, Sequence[float]], Tuple[str, Sequence[float], Optional[Dict[str, Any]]]]
Filters = Dict[str, Any]

DEFAULT_BATCH = 1000


def _q(part: str) -> str:
    return urllib.parse.quote(part, safe="")


def _floats(values: Sequence[float]) -> List[float]:
    """Plain floats (numpy or array.array values included), which is what JSON can carry."""
    try:
        return list(map(float, values))
    except (TypeError, ValueError):
        raise InvalidItem("vector values must be numbers") from None


def normalize_item(item: VectorLike) -> Vector:
    """A vector as the API wants it, from a dict or an (id, values[, metadata]) tuple."""
    if isinstance(item, dict):
        unknown = set(item) - {"id", "values", "metadata"}
        if unknown:
            raise InvalidItem("vector has unknown field(s) %s (known: id, values, metadata)" % sorted(unknown))
        if "id" not in item or "values" not in item:
            raise InvalidItem("vector needs 'id' and 'values'")
        out = {"id": item["id"], "values": _floats(item["values"])}
        if item.get("metadata") is not None:
            out["metadata"] = item["metadata"]
        return out
    if isinstance(item, (tuple, list)) and len(item) in (2, 3):
        seq: Sequence[Any] = item
        out = {"id": seq[0], "values": _floats(seq[1])}
        if len(seq) == 3 and seq[2] is not None:
            out["metadata"] = seq[2]
        return out
    raise InvalidItem("a vector is a dict {'id', 'values', 'metadata'} or a tuple (id, values[, metadata])")


def InvalidItem(message: str) -> JvdbError:  # noqa: N802 (reads as the exception it builds)
    return make_error("INVALID_ARGUMENT", message)


class _OneSend(http.client.HTTPConnection):
    """Sends a request's head and body in one write.  http.client writes them apart, so the server
    wakes up for the head, then again for the body: measurably slower per request on loopback
    (bench/results/clients.md)."""

    def _send_output(self, message_body: Any = None, encode_chunked: bool = False) -> None:
        # http.client's private state, which typeshed does not declare.
        buffer: List[bytes] = getattr(self, "_buffer")
        if isinstance(message_body, bytes) and not encode_chunked:
            buffer.extend((b"", b""))
            msg = b"\r\n".join(buffer) + message_body
            del buffer[:]
            self.send(msg)
            return
        getattr(super(), "_send_output")(message_body, encode_chunked)


class _HTTPConnection(_OneSend, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_OneSend, http.client.HTTPSConnection):
    pass


class Client:
    """A client of one `jvdb serve`.

    url:      "http://127.0.0.1:8080" (or https://...)
    api_key:  sent as X-API-Key on every request
    timeout:  seconds for connecting and for each read
    ssl_context: for https; default verifies against the system's certificates
    retries:  how many times a 503 SERVER_BUSY is retried (after its Retry-After) before raising
    """

    def __init__(self, url: str = "http://127.0.0.1:8080", api_key: Optional[str] = None, timeout: float = 30.0,
                 ssl_context: Optional[ssl.SSLContext] = None, retries: int = 3):
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError("url must be http://HOST[:PORT] or https://HOST[:PORT], not %r" % url)
        self.url = url.rstrip("/")
        self._scheme = u.scheme
        self._host = u.hostname
        self._port = u.port or (443 if u.scheme == "https" else 80)
        self._prefix = u.path.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.retries = retries
        self._ssl = ssl_context
        self._local = threading.local()

    # ---- transport ----

    def _conn(self, fresh: bool = False) -> http.client.HTTPConnection:
        c = getattr(self._local, "conn", None)
        if c is not None and not fresh:
            return c
        if c is not None:
            c.close()
        if self._scheme == "https":
            c = _HTTPSConnection(self._host, self._port, timeout=self.timeout,
                                            context=self._ssl or ssl.create_default_context())
        else:
            c = _HTTPConnection(self._host, self._port, timeout=self.timeout)
        self._local.conn = c
        return c

    def close(self) -> None:
        """Closes this thread's connection (others close when their threads end)."""
        c = getattr(self._local, "conn", None)
        if c is not None:
            c.close()
            self._local.conn = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def request(self, method: str, path: str, body: Any = None, query: Optional[Dict[str, Any]] = None) -> Any:
        """One API call: the decoded JSON answer, or a JvdbError."""
        target = self._prefix + path
        if query:
            target += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        try:
            data = None if body is None else json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
        except ValueError as e:   # NaN or an infinity: JSON has no spelling for them
            raise make_error("INVALID_ARGUMENT", "%s %s: %s" % (method, path, e)) from None
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self.api_key is not None:
            headers["X-API-Key"] = self.api_key
        attempt = 0
        while True:
            status, retry_after, raw = self._send(method, target, data, headers)
            try:
                doc = json.loads(raw) if raw else None
            except ValueError:
                raise TransportError("BAD_ANSWER", "answer to %s %s is not JSON (status %d): %r"
                                     % (method, path, status, raw[:200]), status)
            if status < 400:
                return doc
            if status == 503 and isinstance(doc, dict) and doc.get("error") == "SERVER_BUSY" and attempt < self.retries:
                attempt += 1
                time.sleep(min(float(retry_after or 1), 10.0))
                continue
            if isinstance(doc, dict) and "error" in doc:
                raise make_error(str(doc["error"]), str(doc.get("message", "")), status, doc.get("index"))
            raise make_error("HTTP_%d" % status, "%s %s answered %d" % (method, path, status), status)

    def _send(self, method: str, target: str, data: Optional[bytes],
              headers: Dict[str, str]) -> Tuple[int, Optional[str], bytes]:
        for fresh in (False, True):
            conn = self._conn(fresh)
            reused = getattr(conn, "sock", None) is not None
            try:
                conn.request(method, target, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
                return resp.status, resp.getheader("Retry-After"), raw
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
                conn.close()
                # A kept-alive connection the server has closed meanwhile: try once on a new one.
                if reused and not fresh:
                    continue
                raise TransportError("CONNECTION", "%s %s: %s" % (method, target, e)) from None
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                raise TransportError("CONNECTION", "%s %s: %s" % (method, target, e)) from None
        raise AssertionError("unreachable")

    # ---- server ----

    def health(self) -> Dict[str, Any]:
        return self.request("GET", "/health")

    def status(self) -> Dict[str, Any]:
        return self.request("GET", "/status")

    def ready(self) -> bool:
        """True once every database is open and its index usable (GET /readyz 200), False while it is
        503; UnsupportedError from a server without /readyz."""
        try:
            self.request("GET", "/readyz")
            return True
        except JvdbError as e:
            if e.status == 503 and e.code != "SHUTTING_DOWN":
                return False
            raise

    # ---- databases ----

    def create_database(self, name: str, dimension: int, metric: str = "cosine", index_type: Optional[str] = None,
                        description: Optional[str] = None, **options: Any) -> Dict[str, Any]:
        """Creates a database; options are the API's other fields (indexParameters, sync, compactionPolicy)."""
        body: Dict[str, Any] = {"name": name, "vectorDimension": dimension, "distanceMetric": metric}
        if index_type is not None:
            body["indexType"] = index_type
        if description is not None:
            body["description"] = description
        body.update(options)
        return self.request("POST", "/v1/databases", body)

    def get_database(self, name: str) -> Dict[str, Any]:
        return self.request("GET", "/v1/databases/" + _q(name))

    def list_databases(self) -> List[Dict[str, Any]]:
        out: List[Dict[str, Any]] = []
        while True:
            page = self.request("GET", "/v1/databases", query={"offset": len(out), "limit": 1000})
            out.extend(page["databases"])
            if not page["databases"] or len(out) >= page["total"]:
                return out

    def update_database(self, name: str, **fields: Any) -> Dict[str, Any]:
        return self.request("PUT", "/v1/databases/" + _q(name), fields)

    def drop_database(self, name: str) -> Dict[str, Any]:
        return self.request("DELETE", "/v1/databases/" + _q(name))

    def stats(self, db: str) -> Dict[str, Any]:
        return self.request("GET", "/v1/databases/%s/stats" % _q(db))

    # ---- vectors ----

    def upsert(self, db: str, items: Iterable[VectorLike], batch_size: int = DEFAULT_BATCH) -> int:
        """Stores (inserts or replaces) vectors, batch_size per request; returns how many were stored.

        Each batch is all or nothing; a bad vector raises with `index` set to its position in `items`
        (the batches before it are stored)."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        done = 0
        batch: List[Vector] = []
        for item in items:
            batch.append(normalize_item(item))
            if len(batch) == batch_size:
                done += self._put_batch(db, batch, done)
                batch = []
        if batch:
            done += self._put_batch(db, batch, done)
        return done

    def _put_batch(self, db: str, batch: List[Vector], base: int) -> int:
        try:
            return int(self.request("POST", "/v1/databases/%s/vectors/batch" % _q(db), {"vectors": batch})["count"])
        except JvdbError as e:
            if e.index is not None:
                e.index += base
            raise

    def get(self, db: str, id: str) -> Optional[Vector]:
        """The vector `id` ({"id", "values", "metadata"}), or None when there is none."""
        try:
            return self.request("GET", "/v1/databases/%s/vectors/%s" % (_q(db), _q(id)))
        except JvdbError as e:
            if e.status == 404 and e.message.startswith("vector "):
                return None
            raise

    def get_many(self, db: str, ids: Sequence[str]) -> List[Vector]:
        """The vectors of `ids` that exist, in the order asked."""
        return self.request("POST", "/v1/databases/%s/vectors/batch-get" % _q(db), {"ids": list(ids)})["vectors"]

    def delete(self, db: str, ids: Optional[Sequence[str]] = None, filters: Optional[Filters] = None) -> int:
        """Deletes the vectors of `ids`, or those matching `filters`; returns how many were deleted."""
        if (ids is None) == (filters is None):
            raise ValueError("give exactly one of ids and filters")
        body: Dict[str, Any] = {"ids": list(ids)} if ids is not None else {"filters": filters}
        try:
            return int(self.request("POST", "/v1/databases/%s/vectors/delete" % _q(db), body)["deleted"])
        except UnsupportedError:
            if ids is None:
                raise
        # A server without the bulk route: one DELETE per id (ids that are not there count 0).
        n = 0
        for i in ids:
            try:
                self.request("DELETE", "/v1/databases/%s/vectors/%s" % (_q(db), _q(i)))
                n += 1
            except JvdbError as e:
                if not (e.status == 404 and e.message.startswith("vector ")):
                    raise
        return n

    def count(self, db: str, filters: Optional[Filters] = None) -> int:
        """Live vectors in `db` (matching `filters` when given)."""
        body = {} if filters is None else {"filters": filters}
        try:
            return int(self.request("POST", "/v1/databases/%s/vectors/count" % _q(db), body)["count"])
        except UnsupportedError:
            if filters is not None:
                raise
        return int(self.stats(db)["vectorCount"])

    def scroll(self, db: str, filters: Optional[Filters] = None, batch_size: int = 1000,
               include_values: bool = True, include_metadata: bool = True) -> Iterator[Vector]:
        """Every vector of `db` (matching `filters`), fetched batch_size at a time as you iterate."""
        cursor: Optional[str] = None
        while True:
            body: Dict[str, Any] = {"limit": batch_size, "includeValues": include_values,
                                    "includeMetadata": include_metadata}
            if cursor is not None:
                body["cursor"] = cursor
            if filters is not None:
                body["filters"] = filters
            page = self.request("POST", "/v1/databases/%s/vectors/scroll" % _q(db), body)
            for v in page["vectors"]:
                yield v
            cursor = page.get("nextCursor")
            if not cursor:
                return

    def search(self, db: str, vector: Sequence[float], k: int = 10, filters: Optional[Filters] = None,
               include_metadata: bool = True, include_values: bool = False, threshold: Optional[float] = None,
               ef: Optional[int] = None, exact: bool = False) -> List[Dict[str, Any]]:
        """The k nearest vectors, best first: [{"id", "score", "metadata"?, "values"?}]."""
        body: Dict[str, Any] = {"queryVector": _floats(vector), "topK": k, "includeMetadata": include_metadata,
                                "includeVectorData": include_values}
        if filters is not None:
            body["filters"] = filters
        if threshold is not None:
            body["threshold"] = threshold
        if ef is not None:
            body["ef"] = ef
        if exact:
            body["exact"] = True
        out = []
        for r in self.request("POST", "/v1/databases/%s/search" % _q(db), body)["results"]:
            hit: Dict[str, Any] = {"id": r["vectorId"], "score": r["score"]}
            v = r.get("vector") or {}
            if include_metadata:
                hit["metadata"] = v.get("metadata")
            if include_values:
                hit["values"] = v.get("values")
            out.append(hit)
        return out

    # ---- compaction and backups ----

    def compact(self, db: str, force: bool = False, full: bool = False) -> Dict[str, Any]:
        return self.request("POST", "/v1/databases/%s/compact" % _q(db), {"force": force, "full": full})

    def backup(self, db: str, type: str = "full", description: Optional[str] = None,
               compression_level: Optional[int] = None) -> Dict[str, Any]:
        """Takes a backup (full, incremental or differential) and returns its metadata once complete."""
        body: Dict[str, Any] = {"type": type}
        if description is not None:
            body["description"] = description
        if compression_level is not None:
            body["compressionLevel"] = compression_level
        return self.request("POST", "/v1/databases/%s/backups" % _q(db), body)

    def list_backups(self, db: str) -> List[Dict[str, Any]]:
        return self.request("GET", "/v1/databases/%s/backups" % _q(db))["backups"]

    def get_backup(self, backup_id: str) -> Dict[str, Any]:
        return self.request("GET", "/v1/backups/" + _q(backup_id))

    def verify_backup(self, backup_id: str) -> Dict[str, Any]:
        return self.request("POST", "/v1/backups/%s/verify" % _q(backup_id))

    def restore(self, backup_id: str, target: Optional[str] = None, force: bool = False) -> Dict[str, Any]:
        """Restores a backup (and its chain) into `target` (default: the backed-up database)."""
        body: Dict[str, Any] = {}
        if target is not None:
            body["targetDatabase"] = target
        if force:
            body["force"] = True
        return self.request("POST", "/v1/backups/%s/restore" % _q(backup_id), body)

    def delete_backup(self, backup_id: str, cascade: bool = False) -> Dict[str, Any]:
        return self.request("DELETE", "/v1/backups/" + _q(backup_id), query={"cascade": "true" if cascade else None})

    # ---- jobs (issue 12: long operations run with "async": true answer 202 {"jobId"}) ----

    def jobs(self) -> List[Dict[str, Any]]:
        """Recent jobs (GET /v1/jobs); UnsupportedError from a server without jobs."""
        doc = self.request("GET", "/v1/jobs")
        return doc["jobs"] if isinstance(doc, dict) else doc

    def get_job(self, job_id: str) -> Dict[str, Any]:
        return self.request("GET", "/v1/jobs/" + _q(job_id))

    def cancel_job(self, job_id: str) -> Dict[str, Any]:
        return self.request("DELETE", "/v1/jobs/" + _q(job_id))

    def wait_job(self, job_id: str, timeout: Optional[float] = None, poll: float = 0.2) -> Dict[str, Any]:
        """Polls a job until it ends: its record when it succeeded; a JvdbError with the job's error
        when it failed or was cancelled; TransportError("TIMEOUT") after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get_job(job_id)
            status = job.get("status")
            if status == "succeeded":
                return job
            if status in ("failed", "cancelled"):
                err = job.get("error")
                if isinstance(err, dict):
                    raise make_error(str(err.get("error", err.get("code", "JOB_FAILED"))), str(err.get("message", "")))
                raise make_error("JOB_" + status.upper(), "job %s %s: %s" % (job_id, status, err or ""))
            if deadline is not None and time.monotonic() >= deadline:
                raise TransportError("TIMEOUT", "job %s still %s after %ss" % (job_id, status, timeout))
            time.sleep(poll)
