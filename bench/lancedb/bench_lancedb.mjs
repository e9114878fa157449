// bench_lancedb.mjs — owns LanceDB's side of bench/run-compact: the same rows as bench_compact
// (bench_datagen's .fvecs, ids `v<row>`), the same rows deleted (bench_compact.h's hash, ported
// below bit for bit), then `table.optimize()` timed, with the bytes on disk before and after.
//
// LanceDB is embedded (npm @lancedb/lancedb, pinned in package.json / package-lock.json and
// installed by scripts/install-deps --bench).  A delete only writes deletion files; optimize()
// rewrites the fragments that have them and, with cleanupOlderThan = now, prunes the versions
// (and so the files) nothing refers to any more — without that the bytes would only grow.
// LanceDB writes through its object store without fsync, so the time is reported both alone and
// with a `sync -f` of the table's file system after it (jvdb's compaction includes its fdatasync).
//
// Output: one JSON object on stdout, like the C programs.
import * as lancedb from "@lancedb/lancedb";
import { execFileSync } from "node:child_process";
import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";

// Arrow through require(): @lancedb/lancedb is CommonJS and checks `instanceof` against the
// CommonJS build of apache-arrow; batches made by its ES-module build would be taken apart and
// rebuilt, and lose their rows.
const { Field, FixedSizeList, Float32, Schema, Utf8, makeData, makeVector, RecordBatch, Struct,
        Table: ArrowTable } = createRequire(import.meta.url)("apache-arrow");

function die(msg) {
  process.stderr.write(`bench_lancedb: ${msg}\n`);
  process.exit(1);
}

function parseArgs(argv) {
  const o = { fvecs: null, dir: null, deleteFrac: 0.4, seed: 42n, batch: 100000, deleteChunk: 20000 };
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i], v = argv[i + 1];
    if (v === undefined) die(`${a} needs a value`);
    i++;
    if (a === "--fvecs") o.fvecs = v;
    else if (a === "--dir") o.dir = v;
    else if (a === "--delete-frac") o.deleteFrac = Number(v);
    else if (a === "--seed") o.seed = BigInt(v);
    else if (a === "--batch") o.batch = Number(v);
    else die(`unknown option ${a}`);
  }
  if (!o.fvecs || !o.dir) die("usage: node bench_lancedb.mjs --fvecs FILE --dir DIR [--delete-frac F] [--seed S]");
  if (!(o.deleteFrac >= 0 && o.deleteFrac <= 1)) die("--delete-frac must be within 0..1");
  return o;
}

// bench_compact.h: SplitMix64's finaliser and the row's fate, in 64-bit unsigned arithmetic.
const M64 = (1n << 64n) - 1n;
function mix(x) {
  x = (x + 0x9e3779b97f4a7c15n) & M64;
  x = ((x ^ (x >> 30n)) * 0xbf58476d1ce4e5b9n) & M64;
  x = ((x ^ (x >> 27n)) * 0x94d049bb133111ebn) & M64;
  return x ^ (x >> 31n);
}
function deletedRows(seed, n, frac) {
  const base = mix(seed ^ 0x636f6d70616374n);
  const out = [];
  for (let r = 0; r < n; r++) {
    const h = mix((base + BigInt(r)) & M64);
    if (Number(h >> 11n) * 2 ** -53 < frac) out.push(r);
  }
  return out;
}

function readFvecs(file) {
  const buf = fs.readFileSync(file);
  if (buf.length < 4) die(`${file} is empty`);
  const dim = buf.readInt32LE(0);
  const rowBytes = 4 + 4 * dim;
  if (dim <= 0 || buf.length % rowBytes) die(`${file} is not an .fvecs file of one dimension`);
  const n = buf.length / rowBytes;
  const vecs = new Float32Array(n * dim);
  for (let r = 0; r < n; r++) {
    if (buf.readInt32LE(r * rowBytes) !== dim) die(`${file}: row ${r} has another dimension`);
    const src = new Float32Array(buf.buffer, buf.byteOffset + r * rowBytes + 4, dim);
    vecs.set(src, r * dim);
  }
  return { n, dim, vecs };
}

function dirBytes(dir) {
  let total = 0, files = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) {
      const s = dirBytes(p);
      total += s.bytes;
      files += s.files;
    } else {
      total += fs.statSync(p).size;
      files++;
    }
  }
  return { bytes: total, files };
}

function batchOf(schema, d, first, end) {
  const count = end - first;
  // The ids as one Utf8 array (vectorFromArray would cut a large batch into several chunks).
  const text = Buffer.from(Array.from({ length: count }, (_, k) => `v${first + k}`).join(""), "latin1");
  const offsets = new Int32Array(count + 1);
  for (let k = 0; k < count; k++) offsets[k + 1] = offsets[k] + String(first + k).length + 1;
  const ids = makeData({ type: new Utf8(), length: count, nullCount: 0, valueOffsets: offsets,
                         data: new Uint8Array(text.buffer, text.byteOffset, text.length) });
  const listType = schema.fields[1].type;
  const values = makeData({ type: new Float32(), length: count * d.dim,
                            data: d.vecs.subarray(first * d.dim, end * d.dim) });
  const vec = makeVector(makeData({ type: listType, length: count, nullCount: 0, child: values }));
  const struct = makeData({ type: new Struct(schema.fields), length: count, nullCount: 0,
                            children: [ids, vec.data[0]] });
  return new RecordBatch(schema, struct);
}

const now = () => Number(process.hrtime.bigint()) / 1e9;
const cpu = () => { const u = process.cpuUsage(); return { user: u.user / 1e6, sys: u.system / 1e6 }; };

async function main() {
  const o = parseArgs(process.argv);
  const d = readFvecs(o.fvecs);
  fs.rmSync(o.dir, { recursive: true, force: true });
  fs.mkdirSync(o.dir, { recursive: true });
  const db = await lancedb.connect(o.dir);
  const schema = new Schema([
    new Field("id", new Utf8(), true),
    new Field("vector", new FixedSizeList(d.dim, new Field("item", new Float32(), true)), true),
  ]);

  // Load: one add per batch (a fragment each), as the other engines load in batches.
  let t0 = now();
  let table = null;
  for (let first = 0; first < d.n; first += o.batch) {
    const end = Math.min(first + o.batch, d.n);
    const t = new ArrowTable([batchOf(schema, d, first, end)]);
    if (!table) table = await db.createTable("bench", t);
    else await table.add(t);
  }
  const loadS = now() - t0;

  // The same rows deleted, in chunks of ids (one predicate each).
  const del = deletedRows(o.seed, d.n, o.deleteFrac);
  t0 = now();
  for (let i = 0; i < del.length; i += o.deleteChunk) {
    const ids = del.slice(i, i + o.deleteChunk).map((r) => `'v${r}'`).join(",");
    await table.delete(`id IN (${ids})`);
  }
  const deleteS = now() - t0;
  execFileSync("sync", ["-f", o.dir]);
  const tableDir = path.join(o.dir, "bench.lance");
  const before = dirBytes(fs.existsSync(tableDir) ? tableDir : o.dir);
  const versionsBefore = (await table.listVersions()).length;

  const c0 = cpu();
  t0 = now();
  const stats = await table.optimize({ cleanupOlderThan: new Date(), deleteUnverified: true });
  const optimizeS = now() - t0;
  const c1 = cpu();
  execFileSync("sync", ["-f", o.dir]);
  const optimizeSyncS = now() - t0;
  const after = dirBytes(fs.existsSync(tableDir) ? tableDir : o.dir);

  // Check: live count, deleted rows absent, a sample of live vectors byte-identical.
  const live = d.n - del.length;
  let ok = (await table.countRows()) === live;
  if (del.length) {
    const some = del.slice(0, 1000).map((r) => `'v${r}'`).join(",");
    ok = ok && (await table.countRows(`id IN (${some})`)) === 0;
  }
  const delSet = new Set(del);
  const sample = [];
  for (let r = 0; r < d.n && sample.length < 200; r += 997) if (!delSet.has(r)) sample.push(r);
  if (sample.length) {
    const rows = await table.query().where(`id IN (${sample.map((r) => `'v${r}'`).join(",")})`).toArray();
    ok = ok && rows.length === sample.length;
    for (const row of rows) {
      const r = Number(row.id.slice(1));
      const got = Float32Array.from(row.vector.toArray ? row.vector.toArray() : row.vector);
      const want = d.vecs.subarray(r * d.dim, (r + 1) * d.dim);
      for (let k = 0; k < d.dim; k++) if (got[k] !== want[k]) { ok = false; break; }
    }
  }

  const pkg = JSON.parse(fs.readFileSync(new URL("./node_modules/@lancedb/lancedb/package.json", import.meta.url)));
  process.stdout.write(JSON.stringify({
    engine: "lancedb", lancedb_version: pkg.version, node_version: process.version,
    n: d.n, dim: d.dim, delete_frac: o.deleteFrac, live, deleted: del.length,
    load_s: loadS, delete_s: deleteS, delete_calls: Math.ceil(del.length / o.deleteChunk),
    versions_before: versionsBefore,
    bytes_before: before.bytes, files_before: before.files, bytes_after: after.bytes, files_after: after.files,
    bytes_reclaimed: before.bytes - after.bytes,
    optimize_s: optimizeS, optimize_sync_s: optimizeSyncS,
    optimize_user_s: c1.user - c0.user, optimize_sys_s: c1.sys - c0.sys,
    fragments_removed: stats.compaction.fragmentsRemoved, fragments_added: stats.compaction.fragmentsAdded,
    files_removed: stats.compaction.filesRemoved, files_added: stats.compaction.filesAdded,
    prune_bytes_removed: stats.prune.bytesRemoved, prune_old_versions: stats.prune.oldVersionsRemoved,
    verify: ok ? "ok" : "FAILED",
  }) + "\n");
  if (!ok) process.exit(1);
}

main().catch((e) => die(e && e.stack ? e.stack : String(e)));
