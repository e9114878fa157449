// Runs the ```js blocks of README.md, in order and as one module, against a real server.  The module
// is written inside the package so that `import ... from "jvdb"` resolves to this package.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, writeFileSync, rmSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Client } from "jvdb";
import { startServer } from "./server.mjs";

const PKG = join(dirname(fileURLToPath(import.meta.url)), "..");

let server;
before(async () => { server = await startServer(); });
after(async () => { await server?.stop(); });

test("README examples run", async () => {
  const md = readFileSync(join(PKG, "README.md"), "utf8");
  const blocks = [...md.matchAll(/^```js\n([\s\S]*?)^```$/gm)].map((m) => m[1]);
  assert.ok(blocks.length >= 3, "README has its examples");
  // imports first (a module's imports must be at the top level, which they are in each block)
  const file = join(PKG, `.readme-example-${process.pid}.mjs`);
  writeFileSync(file, blocks.join("\n"));
  let out;
  try {
    out = execFileSync(process.execPath, [file], { env: { ...process.env, JVDB_URL: server.url }, encoding: "utf8" });
  } finally { rmSync(file, { force: true }); }
  assert.match(out, /\[ 'a1', 'a3' \]/);
  assert.match(out, /400 INVALID_ARGUMENT 1/);
  assert.match(out, /the cat sat on the mat \{ topic: 'pets' \}/);
  const c = new Client(server.url);
  assert.equal(await c.count("articles"), 2);          // a1 and a3: the bad batch stored nothing
  assert.equal(await c.count("langchain_docs"), 2);
});
