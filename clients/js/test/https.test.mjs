// The JavaScript client over TLS (issue 14): a certificate made by `openssl` at test time, the
// server started with --tls-cert/--tls-key, and the client in a node process that trusts the
// certificate through NODE_EXTRA_CA_CERTS (as README.md says), with an API key.  A client that does
// not trust it gets a CONNECTION error naming the certificate problem, never an answer.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { Client, JvdbError } from "jvdb";
import { startServer } from "./server.mjs";

const here = dirname(fileURLToPath(import.meta.url));
let dir;
let server;
const KEY = "https-test-key-0123456789";

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "jvdb-js-tls-"));
  execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
    "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem"), "-days", "2", "-subj", "/CN=127.0.0.1",
    "-addext", "subjectAltName=IP:127.0.0.1"], { stdio: "ignore" });
  server = await startServer(["--tls-cert", join(dir, "cert.pem"), "--tls-key", join(dir, "key.pem"), "--api-key", KEY]);
});
after(async () => {
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("the server announces an https URL", () => {
  assert.match(server.url, /^https:\/\/127\.0\.0\.1:\d+$/);
});

test("a client trusting the certificate works over TLS with a key", () => {
  const script = `
    import { Client } from "jvdb";
    const c = new Client(process.argv[1], { apiKey: process.argv[2] });
    await c.createDatabase("tls", 3, { metric: "euclidean" });
    await c.upsert("tls", [{ id: "a", values: [1, 2, 3], metadata: { k: "v" } }, ["b", [3, 2, 1]]]);
    const hits = await c.search("tls", [1, 2, 3], { k: 2 });
    console.log(JSON.stringify({ count: await c.count("tls"), hits, health: await c.health() }));`;
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", script, server.url, KEY],
    { cwd: join(here, ".."), env: { ...process.env, NODE_EXTRA_CA_CERTS: join(dir, "cert.pem") }, encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.equal(out.count, 2);
  assert.deepEqual(out.hits.map((h) => h.id), ["a", "b"]);
  assert.deepEqual(out.hits[0].metadata, { k: "v" });
});

test("a client not trusting the certificate gets a CONNECTION error", async () => {
  const c = new Client(server.url, { apiKey: KEY, timeout: 10000 });
  await assert.rejects(c.count("tls"), (e) => {
    assert.ok(e instanceof JvdbError, String(e));
    assert.equal(e.code, "CONNECTION");
    assert.match(e.message, /CERT|certificate|SELF_SIGNED|VERIFY/i);
    return true;
  });
});

test("plain HTTP to the TLS port is refused, never answered", async () => {
  const c = new Client(server.url.replace("https:", "http:"), { apiKey: KEY, timeout: 10000, retries: 0 });
  await assert.rejects(c.count("tls"), (e) => e instanceof JvdbError && ["CONNECTION", "BAD_ANSWER"].includes(e.code));
});
