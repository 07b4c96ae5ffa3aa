import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { freePort } from "./support/harness.ts";

const repoRoot = fileURLToPath(new URL("../../../", import.meta.url));
const main = join(repoRoot, "services/listings-chat/src/main.ts");

function run(env: Record<string, string>) {
  const child = spawn(process.execPath, [main], {
    cwd: repoRoot,
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout.on("data", (d) => (output += d));
  child.stderr.on("data", (d) => (output += d));
  const exited = new Promise<{ code: number | null; output: string }>((resolve) =>
    child.on("exit", (code) => resolve({ code, output })),
  );
  return { child, exited, output: () => output };
}

async function waitForHealth(port: number, child: ChildProcess, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error("the service exited before it was healthy");
    const ok = await fetch(`http://127.0.0.1:${port}/health`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error("the service did not become healthy");
}

/** The service as `npm run start:chat` runs it: configuration from the environment, signals, exit codes. */
describe("the listings-chat process", () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  it("stops start-up with one line naming a bad variable", async () => {
    const { exited } = run({ CHAT_PORT: "not-a-port", LOG_LEVEL: "silent" });
    const { code, output } = await exited;
    expect(code).toBe(1);
    expect(output.trim().split("\n")).toHaveLength(1);
    expect(output).toContain("CHAT_PORT");
  });

  it("refuses production without DATABASE_URL", async () => {
    const { exited } = run({ NODE_ENV: "production", INTERNAL_TOKEN: "x".repeat(40) });
    const { code, output } = await exited;
    expect(code).toBe(1);
    expect(output).toContain("DATABASE_URL");
  });

  it("starts on PGlite in DATA_DIR, and on SIGTERM closes sockets with 1001 and exits 0 within 10 s", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "lc-process-"));
    dirs.push(dataDir);
    const port = await freePort();
    const token = "process-test-internal-token";
    const service = run({
      CHAT_PORT: String(port),
      CHAT_HOST: "127.0.0.1",
      DATA_DIR: dataDir,
      INTERNAL_TOKEN: token,
      NODE_ENV: "test",
      LOG_LEVEL: "warn",
    });
    await waitForHealth(port, service.child);

    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws/chat`, {
      headers: { "x-internal-token": token, "x-user-id": "1" },
    });
    const closed = new Promise<number>((resolve) => ws.on("close", (code) => resolve(code)));
    await new Promise((resolve, reject) => {
      ws.on("message", resolve);
      ws.on("error", reject);
    });
    const sentAt = Date.now();
    service.child.kill("SIGTERM");
    expect(await closed).toBe(1001);
    const { code } = await service.exited;
    expect(code).toBe(0);
    expect(Date.now() - sentAt).toBeLessThan(10_000);
  });
});
