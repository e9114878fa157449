// The type declarations (index.d.ts, langchain.d.ts) compile under `tsc --strict` against how the
// client is used, and reject misuse (test/types.ts).
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const PKG = join(dirname(fileURLToPath(import.meta.url)), "..");

test("type declarations compile with tsc --strict", () => {
  const tsc = join(PKG, "node_modules", "typescript", "bin", "tsc");
  assert.ok(existsSync(tsc), "typescript is installed by scripts/install-deps");
  execFileSync(process.execPath, [tsc, "--noEmit", "--strict", "--target", "es2022", "--lib", "esnext,dom", "--module", "nodenext",
    "--moduleResolution", "nodenext", "--skipLibCheck", "false", join(PKG, "test", "types.ts")],
    { cwd: PKG, stdio: "inherit" });
});
