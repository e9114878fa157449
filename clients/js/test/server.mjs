// Starts a real `jvdb serve` ($JVDB_BIN) on a temporary data directory and a free port, like
// tests/e2e/jvdbtest.py: the port is read from the first line of stdout, the log (stderr) goes to a
// file that is checked for sanitizer reports when the server stops.
import { spawn } from "node:child_process";
import { mkdtempSync, openSync, readFileSync, rmSync, closeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const MARKERS = ["AddressSanitizer", "LeakSanitizer", "runtime error:", "UndefinedBehaviorSanitizer", "ThreadSanitizer"];

export async function startServer(args = []) {
  const bin = process.env.JVDB_BIN;
  if (!bin) throw new Error("set JVDB_BIN to the jvdb binary");
  const root = mkdtempSync(join(tmpdir(), "jvdb-js-"));
  const logPath = join(root, "server.log");
  const log = openSync(logPath, "w");
  const env = { ...process.env, ASAN_OPTIONS: process.env.ASAN_OPTIONS ?? "detect_leaks=1:abort_on_error=0" };
  const proc = spawn(bin, ["--data", join(root, "data"), "serve", "--listen", "127.0.0.1:0", ...args],
    { stdio: ["ignore", "pipe", log], env });
  const url = await new Promise((resolve, reject) => {
    let buf = "";
    const timer = setTimeout(() => reject(new Error("server did not start:\n" + readFileSync(logPath, "utf8"))), 30000);
    proc.stdout.on("data", (d) => {
      buf += d;
      const nl = buf.indexOf("\n");
      if (nl >= 0) {
        clearTimeout(timer);
        const m = /listening on (https?:\/\/127\.0\.0\.1:\d+)/.exec(buf.slice(0, nl));
        m ? resolve(m[1]) : reject(new Error("unexpected first line: " + buf));
      }
    });
    proc.on("exit", (code) => { clearTimeout(timer); reject(new Error(`server exited ${code}:\n` + readFileSync(logPath, "utf8"))); });
  });
  proc.removeAllListeners("exit");
  proc.stdout.resume();
  return {
    url,
    root,
    async stop() {
      const code = await new Promise((resolve) => { proc.on("exit", (c) => resolve(c)); proc.kill("SIGTERM"); });
      closeSync(log);
      const text = readFileSync(logPath, "utf8");
      for (const m of MARKERS) if (text.includes(m)) throw new Error("sanitizer report in the server log:\n" + text.slice(-8000));
      if (code !== 0) throw new Error(`server exit status ${code}:\n` + text.slice(-4000));
      rmSync(root, { recursive: true, force: true });
    },
  };
}

/** Runs fn; a route the server does not have yet (issue 12) skips the test with the reason. */
export async function needRoute(t, fn) {
  const { UnsupportedError } = await import("../index.js");
  try {
    return await fn();
  } catch (e) {
    if (e instanceof UnsupportedError) {
      t.skip(`server has no such route yet (issue 12 or 14 adds it): ${e.serverMessage}`);
      return undefined;
    }
    throw e;
  }
}
