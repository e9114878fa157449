// jvdb — the JavaScript client of JadeVectorDB's REST API (docs/API.md).
//
// fetch-based (Node 18+, Deno, Bun, browsers), no runtime dependencies.  Every server error becomes
// a JvdbError carrying the server's `code` and `message`, the HTTP `status` and, for a rejected
// batch, `index` (its position in the caller's input when upsert splits the input into batches).
// Vectors are plain objects: { id: string, values: number[], metadata?: object | null }.

export class JvdbError extends Error {
  constructor(code, message, status = undefined, index = undefined) {
    super(status === undefined ? `${code}: ${message}` : `${status} ${code}: ${message}`);
    this.name = "JvdbError";
    this.code = code;
    this.status = status;
    this.index = index;
    this.serverMessage = message;
  }
}

// The server lacks the route (an older server): 404 "no route for ..." or 405 where the path is
// taken by another route (POST .../vectors/count reads as the vector named "count").
export class UnsupportedError extends JvdbError {
  constructor(...a) { super(...a); this.name = "UnsupportedError"; }
}

function makeError(status, body) {
  const code = body && typeof body.error === "string" ? body.error : `HTTP_${status}`;
  const message = body && typeof body.message === "string" ? body.message : `status ${status}`;
  const index = body && Number.isInteger(body.index) ? body.index : undefined;
  if (status === 405 || (status === 404 && message.startsWith("no route for "))) {
    return new UnsupportedError(code, message, status, index);
  }
  return new JvdbError(code, message, status, index);
}

const enc = encodeURIComponent;

function normalize(item) {
  if (Array.isArray(item)) {
    const [id, values, metadata] = item;
    item = { id, values, metadata };
  }
  if (item === null || typeof item !== "object") {
    throw new JvdbError("INVALID_ARGUMENT", "a vector is {id, values, metadata?} or [id, values, metadata?]");
  }
  for (const k of Object.keys(item)) {
    if (k !== "id" && k !== "values" && k !== "metadata") {
      throw new JvdbError("INVALID_ARGUMENT", `vector has unknown field '${k}' (known: id, values, metadata)`);
    }
  }
  const out = { id: item.id, values: Array.from(item.values ?? []) };
  if (item.metadata !== undefined && item.metadata !== null) out.metadata = item.metadata;
  return out;
}

export class Client {
  /**
   * @param {string} url  e.g. "http://127.0.0.1:8080"
   * @param {{apiKey?: string, timeout?: number, retries?: number, fetch?: typeof fetch}} [options]
   */
  constructor(url = "http://127.0.0.1:8080", options = {}) {
    const u = new URL(url);
    if (u.protocol !== "http:" && u.protocol !== "https:") {
      throw new TypeError(`url must be http(s)://HOST[:PORT], not ${url}`);
    }
    this.url = url.replace(/\/+$/, "");
    this.apiKey = options.apiKey;
    this.timeout = options.timeout ?? 30000;
    this.retries = options.retries ?? 3;
    this._fetch = options.fetch ?? globalThis.fetch;
    if (typeof this._fetch !== "function") throw new TypeError("no fetch: pass options.fetch");
  }

  /** One API call: the decoded JSON answer, or a JvdbError. */
  async request(method, path, body = undefined, query = undefined) {
    let target = this.url + path;
    if (query) {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null) q.set(k, String(v));
      const s = q.toString();
      if (s) target += "?" + s;
    }
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (this.apiKey !== undefined && this.apiKey !== null) headers["X-API-Key"] = this.apiKey;
    const payload = body === undefined ? undefined : JSON.stringify(body, (k, v) => {
      if (typeof v === "number" && !Number.isFinite(v)) throw new JvdbError("INVALID_ARGUMENT", `${k || "value"} is not a finite number`);
      return v;
    });
    for (let attempt = 0; ; attempt++) {
      let res, text;
      try {
        res = await this._fetch(target, { method, headers, body: payload, signal: AbortSignal.timeout(this.timeout) });
        text = await res.text();
      } catch (e) {
        throw new JvdbError("CONNECTION", `${method} ${path}: ${e?.cause?.code ?? e?.message ?? e}`);
      }
      let doc = null;
      if (text) {
        try { doc = JSON.parse(text); } catch {
          throw new JvdbError("BAD_ANSWER", `answer to ${method} ${path} is not JSON (status ${res.status})`, res.status);
        }
      }
      if (res.status < 400) return doc;
      if (res.status === 503 && doc?.error === "SERVER_BUSY" && attempt < this.retries) {
        const after = Math.min(Number(res.headers.get("Retry-After") ?? 1) || 1, 10);
        await new Promise((r) => setTimeout(r, after * 1000));
        continue;
      }
      throw makeError(res.status, doc);
    }
  }

  health() { return this.request("GET", "/health"); }
  status() { return this.request("GET", "/status"); }
  /** true once every database is open and its index usable (GET /readyz 200), false while it is 503. */
  async ready() {
    try {
      await this.request("GET", "/readyz");
      return true;
    } catch (e) {
      if (e instanceof JvdbError && e.status === 503 && e.code !== "SHUTTING_DOWN") return false;
      throw e;
    }
  }

  // ---- databases ----

  createDatabase(name, dimension, options = {}) {
    const { metric = "cosine", indexType, description, ...rest } = options;
    const body = { name, vectorDimension: dimension, distanceMetric: metric, ...rest };
    if (indexType !== undefined) body.indexType = indexType;
    if (description !== undefined) body.description = description;
    return this.request("POST", "/v1/databases", body);
  }
  getDatabase(name) { return this.request("GET", `/v1/databases/${enc(name)}`); }
  async listDatabases() {
    const out = [];
    for (;;) {
      const page = await this.request("GET", "/v1/databases", undefined, { offset: out.length, limit: 1000 });
      out.push(...page.databases);
      if (page.databases.length === 0 || out.length >= page.total) return out;
    }
  }
  updateDatabase(name, fields) { return this.request("PUT", `/v1/databases/${enc(name)}`, fields); }
  dropDatabase(name) { return this.request("DELETE", `/v1/databases/${enc(name)}`); }
  stats(db) { return this.request("GET", `/v1/databases/${enc(db)}/stats`); }

  // ---- vectors ----

  /** Stores vectors batchSize per request; resolves to how many were stored. */
  async upsert(db, items, { batchSize = 1000 } = {}) {
    if (!(batchSize >= 1)) throw new RangeError("batchSize must be at least 1");
    let done = 0;
    let batch = [];
    const flush = async () => {
      try {
        const r = await this.request("POST", `/v1/databases/${enc(db)}/vectors/batch`, { vectors: batch });
        done += r.count;
      } catch (e) {
        if (e instanceof JvdbError && e.index !== undefined) e.index += done;
        throw e;
      }
      batch = [];
    };
    for await (const item of items) {
      batch.push(normalize(item));
      if (batch.length === batchSize) await flush();
    }
    if (batch.length) await flush();
    return done;
  }

  /** The vector, or null when there is none. */
  async get(db, id) {
    try {
      return await this.request("GET", `/v1/databases/${enc(db)}/vectors/${enc(id)}`);
    } catch (e) {
      if (e instanceof JvdbError && e.status === 404 && e.serverMessage.startsWith("vector ")) return null;
      throw e;
    }
  }
  async getMany(db, ids) {
    return (await this.request("POST", `/v1/databases/${enc(db)}/vectors/batch-get`, { ids: Array.from(ids) })).vectors;
  }

  /** Deletes by ids or by filters; resolves to how many were deleted. */
  async delete(db, { ids, filters } = {}) {
    if ((ids === undefined) === (filters === undefined)) throw new TypeError("give exactly one of ids and filters");
    const body = ids !== undefined ? { ids: Array.from(ids) } : { filters };
    try {
      return (await this.request("POST", `/v1/databases/${enc(db)}/vectors/delete`, body)).deleted;
    } catch (e) {
      if (!(e instanceof UnsupportedError) || ids === undefined) throw e;
    }
    // A server without the bulk route: one DELETE per id (ids that are not there count 0).
    let n = 0;
    for (const id of body.ids) {
      try {
        await this.request("DELETE", `/v1/databases/${enc(db)}/vectors/${enc(id)}`);
        n++;
      } catch (e) {
        if (!(e instanceof JvdbError && e.status === 404 && e.serverMessage.startsWith("vector "))) throw e;
      }
    }
    return n;
  }

  async count(db, { filters } = {}) {
    try {
      return (await this.request("POST", `/v1/databases/${enc(db)}/vectors/count`, filters === undefined ? {} : { filters })).count;
    } catch (e) {
      if (!(e instanceof UnsupportedError) || filters !== undefined) throw e;
    }
    return (await this.stats(db)).vectorCount;
  }

  /** Every vector (matching filters), fetched a page at a time: `for await (const v of client.scroll(db))`. */
  async *scroll(db, { filters, batchSize = 1000, includeValues = true, includeMetadata = true } = {}) {
    let cursor;
    for (;;) {
      const body = { limit: batchSize, includeValues, includeMetadata };
      if (cursor !== undefined) body.cursor = cursor;
      if (filters !== undefined) body.filters = filters;
      const page = await this.request("POST", `/v1/databases/${enc(db)}/vectors/scroll`, body);
      yield* page.vectors;
      cursor = page.nextCursor;
      if (!cursor) return;
    }
  }

  /** The k nearest vectors, best first: [{id, score, metadata?, values?}]. */
  async search(db, vector, { k = 10, filters, includeMetadata = true, includeValues = false, threshold, ef, exact } = {}) {
    const body = { queryVector: Array.from(vector), topK: k, includeMetadata, includeVectorData: includeValues };
    if (filters !== undefined) body.filters = filters;
    if (threshold !== undefined) body.threshold = threshold;
    if (ef !== undefined) body.ef = ef;
    if (exact) body.exact = true;
    const r = await this.request("POST", `/v1/databases/${enc(db)}/search`, body);
    return r.results.map((x) => {
      const hit = { id: x.vectorId, score: x.score };
      if (includeMetadata) hit.metadata = x.vector?.metadata ?? null;
      if (includeValues) hit.values = x.vector?.values ?? null;
      return hit;
    });
  }

  // ---- compaction and backups ----

  compact(db, { force = false, full = false } = {}) {
    return this.request("POST", `/v1/databases/${enc(db)}/compact`, { force, full });
  }
  backup(db, { type = "full", description, compressionLevel } = {}) {
    const body = { type };
    if (description !== undefined) body.description = description;
    if (compressionLevel !== undefined) body.compressionLevel = compressionLevel;
    return this.request("POST", `/v1/databases/${enc(db)}/backups`, body);
  }
  async listBackups(db) { return (await this.request("GET", `/v1/databases/${enc(db)}/backups`)).backups; }
  getBackup(id) { return this.request("GET", `/v1/backups/${enc(id)}`); }
  verifyBackup(id) { return this.request("POST", `/v1/backups/${enc(id)}/verify`); }
  restore(id, { target, force = false } = {}) {
    const body = {};
    if (target !== undefined) body.targetDatabase = target;
    if (force) body.force = true;
    return this.request("POST", `/v1/backups/${enc(id)}/restore`, body);
  }
  deleteBackup(id, { cascade = false } = {}) {
    return this.request("DELETE", `/v1/backups/${enc(id)}`, undefined, { cascade: cascade ? "true" : undefined });
  }

  // ---- jobs (issue 12: long operations run with "async": true answer 202 {jobId}) ----

  async jobs() {
    const doc = await this.request("GET", "/v1/jobs");
    return Array.isArray(doc) ? doc : doc.jobs;
  }
  getJob(id) { return this.request("GET", `/v1/jobs/${enc(id)}`); }
  cancelJob(id) { return this.request("DELETE", `/v1/jobs/${enc(id)}`); }
  /** Polls until the job ends: its record when it succeeded, a JvdbError when it failed or was cancelled. */
  async waitJob(id, { timeout, poll = 200 } = {}) {
    const deadline = timeout === undefined ? Infinity : Date.now() + timeout;
    for (;;) {
      const job = await this.getJob(id);
      if (job.status === "succeeded") return job;
      if (job.status === "failed" || job.status === "cancelled") {
        const e = job.error;
        if (e && typeof e === "object") throw new JvdbError(e.error ?? e.code ?? "JOB_FAILED", e.message ?? "");
        throw new JvdbError(`JOB_${job.status.toUpperCase()}`, `job ${id} ${job.status}: ${e ?? ""}`);
      }
      if (Date.now() >= deadline) throw new JvdbError("TIMEOUT", `job ${id} still ${job.status} after ${timeout} ms`);
      await new Promise((r) => setTimeout(r, poll));
    }
  }
}
