// The JavaScript client against a real `jvdb serve` (node --test; JVDB_BIN names the binary).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Client, JvdbError, UnsupportedError } from "jvdb";
import { startServer, needRoute } from "./server.mjs";

const f32 = (x) => Math.fround(x);
function* items(n, dim = 8, start = 0) {
  for (let i = start; i < start + n; i++) {
    let s = i * 2654435761 % 4294967296;
    const values = [];
    for (let j = 0; j < dim; j++) { s = (s * 1103515245 + 12345) % 2147483648; values.push(s / 2147483648 - 0.5); }
    yield { id: `v${String(i).padStart(5, "0")}`, values, metadata: { i, parity: i % 2 ? "odd" : "even" } };
  }
}
async function rejects(p, code, status) {
  try { await p; } catch (e) {
    assert.ok(e instanceof JvdbError, String(e));
    assert.equal(e.code, code, e.message);
    if (status !== undefined) assert.equal(e.status, status);
    assert.ok(e.serverMessage.length > 0);
    return e;
  }
  assert.fail(`no ${code}`);
}

let server;
let backupServer;
before(async () => {
  server = await startServer();
  backupServer = await startServer(["--backup-repo", join(mkdtempSync(join(tmpdir(), "jvdb-js-repo-")), "r")]);
});
after(async () => { await server?.stop(); await backupServer?.stop(); });

test("databases, vectors and search", async () => {
  const c = new Client(server.url + "/");
  const db = await c.createDatabase("t", 8, { metric: "euclidean", indexType: "FLAT", description: "d" });
  assert.equal(db.distanceMetric, "euclidean");
  assert.equal(db.indexType, "FLAT");
  assert.equal(await c.upsert("t", items(2500), { batchSize: 1000 }), 2500);     // a generator, 3 batches
  assert.equal(await c.count("t"), 2500);
  const want = [...items(1, 8, 1234)][0];
  const got = await c.get("t", "v01234");
  assert.deepEqual(got.values.map(f32), want.values.map(f32));
  assert.deepEqual(got.metadata, want.metadata);
  assert.equal(await c.get("t", "nope"), null);
  assert.deepEqual((await c.getMany("t", ["v00001", "nope", "v00002"])).map((v) => v.id), ["v00001", "v00002"]);
  let hits = await c.search("t", want.values, { k: 3 });
  assert.equal(hits[0].id, "v01234");
  assert.equal(hits[0].score, 0);
  assert.deepEqual(hits[0].metadata, want.metadata);
  hits = await c.search("t", want.values, { k: 5, filters: { parity: "odd" }, includeValues: true, includeMetadata: false, exact: true });
  assert.equal(hits.length, 5);
  assert.ok(hits.every((h) => h.id !== "v01234" && h.values.length === 8 && !("metadata" in h)));
  assert.equal(await c.upsert("t", [["v01234", new Float32Array(8)], ["x/y z", [1, 1, 1, 1, 1, 1, 1, 1], { k: "ü" }]]), 2);
  assert.deepEqual(await c.get("t", "v01234"), { id: "v01234", values: [0, 0, 0, 0, 0, 0, 0, 0], metadata: null });
  assert.deepEqual((await c.get("t", "x/y z")).metadata, { k: "ü" });
  assert.equal(await c.delete("t", { ids: ["x/y z", "v00000", "never"] }), 2);
  assert.equal(await c.count("t"), 2499);
  assert.equal((await c.updateDatabase("t", { description: "e" })).description, "e");
  await c.createDatabase("u", 2);
  assert.deepEqual((await c.listDatabases()).map((d) => d.name), ["t", "u"]);
  assert.equal((await c.dropDatabase("u")).deleted, true);
  assert.equal((await c.status()).version, (await c.health()).version);
});

test("errors carry the server's code, message, status and batch index", async () => {
  const c = new Client(server.url);
  await c.createDatabase("e", 4);
  await rejects(c.createDatabase("e", 4), "ALREADY_EXISTS", 409);
  const nf = await rejects(c.getDatabase("missing"), "NOT_FOUND", 404);
  assert.match(nf.serverMessage, /missing/);
  await rejects(c.createDatabase("f", 4, { metric: "manhattan" }), "INVALID_ARGUMENT", 400);
  const bad = [...items(1503, 4), { id: "bad", values: [1, 2] }, ...items(10, 4, 5000)];
  const e = await rejects(c.upsert("e", bad, { batchSize: 1000 }), "INVALID_ARGUMENT", 400);
  assert.equal(e.index, 1503);
  assert.equal(await c.count("e"), 1000);
  await rejects(c.upsert("e", [{ id: "a", values: [1, 2, 3, 4], meta: {} }]), "INVALID_ARGUMENT");
  await rejects(c.search("e", [NaN, 0, 0, 0]), "INVALID_ARGUMENT");
  await rejects(new Client("http://127.0.0.1:1", { timeout: 5000 }).health(), "CONNECTION");
  assert.throws(() => new Client("ftp://x"), TypeError);
});

test("API key", async () => {
  const s = await startServer(["--api-key", "s3cret"]);
  try {
    await rejects(new Client(s.url).listDatabases(), "UNAUTHORIZED", 401);
    await rejects(new Client(s.url, { apiKey: "wrong" }).listDatabases(), "UNAUTHORIZED", 401);
    assert.deepEqual(await new Client(s.url, { apiKey: "s3cret" }).listDatabases(), []);
    assert.equal((await new Client(s.url).health()).status, "healthy");
  } finally { await s.stop(); }
});

test("backup helpers", async () => {
  const c = new Client(backupServer.url);
  await c.createDatabase("b", 8);
  await c.upsert("b", items(100));
  const full = await c.backup("b", { description: "first" });
  assert.equal(full.putCount, 100);
  await c.upsert("b", items(10, 8, 100));
  const inc = await c.backup("b", { type: "incremental" });
  assert.equal(inc.parent, full.backupId);
  assert.deepEqual((await c.listBackups("b")).map((b) => b.backupId), [full.backupId, inc.backupId]);
  assert.equal((await c.getBackup(inc.backupId)).backupId, inc.backupId);
  assert.equal((await c.verifyBackup(inc.backupId)).valid, true);
  assert.equal((await c.restore(inc.backupId, { target: "b2" })).databaseId, "b2");
  assert.equal(await c.count("b2"), 110);
  await rejects(c.restore(full.backupId, { target: "b2" }), "ALREADY_EXISTS", 409);
  assert.equal((await c.restore(full.backupId, { target: "b2", force: true })).replaced, true);
  await rejects(c.deleteBackup(full.backupId), "BUSY", 409);
  assert.equal((await c.deleteBackup(full.backupId, { cascade: true })).count, 2);
  assert.equal((await c.compact("b", { force: true })).compacted, true);
  await rejects(new Client(server.url).backup("t"), "NO_BACKUP_REPOSITORY", 409);
});

test("readiness", async (t) => {
  const ready = await needRoute(t, () => new Client(server.url).ready());
  if (ready === undefined) return;
  assert.equal(ready, true);
});

test("jobs helpers", async (t) => {
  const c = new Client(backupServer.url);
  if ((await needRoute(t, () => c.jobs())) === undefined) return;
  await c.createDatabase("j", 8);
  await c.upsert("j", items(50));
  const started = await c.request("POST", "/v1/databases/j/backups", { type: "full", async: true });
  const job = await c.waitJob(started.jobId, { timeout: 120000 });
  assert.equal(job.status, "succeeded");
  assert.ok((await c.jobs()).some((j) => j.jobId === started.jobId));
  await rejects(c.getJob("no-such-job"), "NOT_FOUND", 404);
});

test("count with filters", async (t) => {
  const c = new Client(server.url);
  await c.createDatabase("c", 8);
  await c.upsert("c", items(301));
  const n = await needRoute(t, () => c.count("c", { filters: { parity: "even" } }));
  if (n === undefined) return;
  assert.equal(n, 151);
  assert.equal(await c.count("c", { filters: { i: { $gte: 300 } } }), 1);
});

test("scroll iterates every vector", async (t) => {
  const c = new Client(server.url);
  await c.createDatabase("s", 8);
  await c.upsert("s", items(2345));
  const ids = await needRoute(t, async () => {
    const out = [];
    for await (const v of c.scroll("s", { batchSize: 1000 })) out.push(v.id);
    return out;
  });
  if (ids === undefined) return;
  assert.deepEqual(ids.sort(), [...items(2345)].map((v) => v.id));
  const odd = [];
  for await (const v of c.scroll("s", { filters: { parity: "odd" }, batchSize: 100, includeValues: false })) odd.push(v);
  assert.equal(odd.length, 1172);
  assert.ok(odd.every((v) => v.metadata.parity === "odd" && v.values == null));
});

test("delete by filter", async (t) => {
  const c = new Client(server.url);
  await c.createDatabase("d", 8);
  await c.upsert("d", items(100));
  const n = await needRoute(t, () => c.delete("d", { filters: { parity: "odd" } }));
  if (n === undefined) return;
  assert.equal(n, 50);
  assert.equal(await c.count("d"), 50);
});

test("UnsupportedError is a JvdbError", () => {
  assert.ok(new UnsupportedError("NOT_FOUND", "no route for POST /x", 404) instanceof JvdbError);
});
