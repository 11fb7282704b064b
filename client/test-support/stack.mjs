// What every JavaScript suite that runs against the local stack shares: starting it (the Rust
// binary of target/<profile>, under infra/herald_local), stopping it, and waiting with a deadline.
// Used by the client's tests (client/test/), the demo page's browser tests (client/browser-test/)
// and the chaos suite (chaos/). Not part of the published package.

import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");

const pause = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` until it returns a truthy value, or fails with `what` after `timeoutMs`. */
export async function until(fn, what, timeoutMs, intervalMs = 50) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await pause(intervalMs);
  }
}

/**
 * The stack's warnings and failures among `output` (the lines `startStack` keeps), for a failing
 * test's message: a wait that ran out on a loaded machine then says whether something failed.
 */
export function trouble(output, max = 30) {
  const marks = ['"level":"WARN', '"level":"ERROR', " WARNING ", " ERROR ", "Status: error", "Status: timeout"];
  const lines = output.filter((l) => marks.some((m) => l.includes(m)));
  if (lines.length === 0) return "\n(the stack logged no warnings or failures)";
  return `\n--- the stack's last ${Math.min(max, lines.length)} of ${lines.length} warnings and failures:\n` +
    lines.slice(-max).map((l) => l.slice(0, 400)).join("\n");
}

/**
 * Starts the local stack with the functions of target/`profile`. It exits by itself if this
 * process dies (`--parent-pid`). Returns `{ ready, stop, output }`: `ready` resolves to the
 * stack's ready file (its URLs), or rejects with the stack's last output if it exits or is not
 * ready in time; `output` keeps its last lines (unless `verbose` relays them); `stop()` ends it.
 *
 * `visibilityTimeout`: every queue's, in seconds (the template's 360 s would make a retry after
 * a failure take minutes); `timeoutScale`: multiplies every function's Timeout (`make test`
 * runs several stacks on two cores, where a function's duration includes its wait for the CPU);
 * `maxInstances`: how many instances a function may run at once (the stack's default if unset);
 * `env`: extra `NAME=value` settings for the functions.
 */
export function startStack({ profile = "debug", verbose = false, visibilityTimeout = 10, timeoutScale = 3, maxInstances = null, env = [], readyTimeoutMs = 90_000, keepLines = 400 } = {}) {
  const file = path.join(repo, "target", profile, "herald");
  if (!existsSync(file)) {
    const build = profile === "release" ? "cargo build --release -p herald-lambda" : "make build";
    const missing = Promise.reject(new Error(`${file} is missing: build the functions (${build}) or set HERALD_PROFILE`));
    return { ready: missing, stop: async () => {}, output: [] };
  }
  const tmp = mkdtempSync(path.join(tmpdir(), "herald-stack-"));
  const readyFile = path.join(tmp, "ready.json");
  const args = [
    "-m", "herald_local", "--profile", profile, "--ready-file", readyFile,
    "--parent-pid", String(process.pid), "--visibility-timeout", String(visibilityTimeout),
    "--timeout-scale", String(timeoutScale),
    ...(maxInstances ? ["--max-instances", String(maxInstances)] : []),
    // Verbose relays everything, REPORT lines too (each invocation's duration and status).
    ...(verbose ? [] : ["--quiet"]),
    ...env.flatMap((e) => ["--env", e]),
  ];
  const proc = spawn(path.join(repo, ".venv", "bin", "python"), args, {
    cwd: repo,
    env: { ...process.env, PYTHONPATH: "infra" },
    stdio: ["ignore", verbose ? "inherit" : "pipe", verbose ? "inherit" : "pipe"],
  });
  const output = [];
  const keep = (chunk) => {
    for (const line of String(chunk).split("\n")) if (line) output.push(line);
    if (output.length > keepLines) output.splice(0, output.length - keepLines);
  };
  proc.stdout?.on("data", keep);
  proc.stderr?.on("data", keep);
  let spawnError = null;
  proc.on("error", (e) => (spawnError = e));
  const exited = new Promise((r) => proc.once("exit", r));
  const ready = until(
    () => {
      if (spawnError) throw spawnError;
      if (proc.exitCode !== null || proc.signalCode !== null) {
        throw new Error(`local stack exited (${proc.exitCode ?? proc.signalCode}) before it was ready:\n${output.join("\n")}`);
      }
      if (!existsSync(readyFile)) return null;
      try {
        return JSON.parse(readFileSync(readyFile, "utf8")); // written atomically
      } catch {
        return null;
      }
    },
    "the local stack to be ready",
    readyTimeoutMs,
    100,
  ).catch((e) => {
    throw e.message.startsWith("timed out") ? new Error(`${e.message}:\n${output.join("\n")}`) : e;
  });
  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill("SIGTERM");
      const timer = setTimeout(() => proc.kill("SIGKILL"), 15_000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(tmp, { recursive: true, force: true });
  };
  return { ready, stop, output };
}
