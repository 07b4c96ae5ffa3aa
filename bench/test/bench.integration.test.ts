/**
 * `npm run bench` end to end, small: every part runs against real PostgreSQL (DATABASE_URL), Redis
 * (REDIS_URL) and Debian's nginx, writes its JSON and report into a directory of this test (never over
 * bench/results), leaves no database or process behind, and reports figures a run can actually produce.
 * In CI all three must be there (.ci/run provides them); elsewhere the test is skipped without them.
 */
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import type { BenchResults } from "../report.ts";

const root = fileURLToPath(new URL("../..", import.meta.url));
const ready = Boolean(process.env.DATABASE_URL && process.env.REDIS_URL && existsSync("/usr/sbin/nginx"));
if (process.env.CI && !ready) throw new Error("CI must set DATABASE_URL and REDIS_URL and install nginx (.ci/run)");

const dir = mkdtempSync(join(tmpdir(), "lc-bench-test-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Databases the bench made (lc_bench_<its pid>_…). */
async function benchDatabases(pid: number): Promise<string[]> {
  const client = new pg.Client({ connectionString: process.env.DATABASE_URL });
  await client.connect();
  try {
    const { rows } = await client.query<{ datname: string }>("select datname from pg_database where datname like $1", [
      `lc_bench_${pid}_%`,
    ]);
    return rows.map((r) => r.datname);
  } finally {
    await client.end();
  }
}

describe.skipIf(!ready)("npm run bench (small)", () => {
  it("runs every part, writes the report and its charts, and cleans up after itself", async () => {
    const child = spawn(process.execPath, ["bench/run.ts"], {
      cwd: root,
      env: {
        ...process.env,
        BENCH_RESULTS_DIR: dir,
        BENCH_ROUNDS: "1",
        BENCH_PIPE_CLIENTS: "10",
        BENCH_PIPE_SECONDS: "1",
        BENCH_OPEN_RATE: "500",
        BENCH_UPGRADES: "30",
        BENCH_FANOUT_SOCKETS: "5,20",
        BENCH_FANOUT_SENDERS: "3",
        BENCH_FANOUT_SECONDS: "1",
        BENCH_HELD_SOCKETS: "40,60",
        BENCH_HELD_RATE: "200",
        BENCH_STORM_SOCKETS: "40",
        BENCH_STORM_SPREAD_MS: "200",
      },
      stdio: ["ignore", "ignore", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (chunk) => {
      stderr += chunk;
    });
    const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
    expect(code, stderr).toBe(0);

    const results = JSON.parse(readFileSync(join(dir, "latest.json"), "utf8")) as BenchResults;
    // The pipe: every path answered every ping; the open loop kept its schedule.
    for (const path of ["direct", "gateway", "nginx"]) {
      expect(results.pipe?.median[`closed/${path}`]?.messagesPerSecond).toBeGreaterThan(100);
      expect(results.pipe?.median[`open/${path}`]?.messagesPerSecond).toBeGreaterThan(400);
      expect(results.pipe?.median[`open/${path}`]?.latency.p99Ms).toBeGreaterThan(0);
    }
    expect(results.pipe?.median["closed/gateway"]?.cpuUsPerMessage.proxy).toBeGreaterThan(0);
    expect(results.pipe?.median["closed/nginx"]?.cpuUsPerMessage.proxy).toBeGreaterThan(0);
    // Upgrades: all accepted by each path, with the proxies' CPU measured.
    for (const path of ["direct", "gateway", "nginx"] as const)
      expect(results.upgrades?.median[path]?.accepted).toBe(30);
    expect(results.upgrades?.median.gateway?.cpuMsPerUpgrade.proxy).toBeGreaterThan(0);
    expect(results.upgrades?.wsToken.gatewayCpuMsPerToken).toBeGreaterThan(0);
    // Fan-out: K + 1 sockets per event, each message delivered to all of them.
    expect(results.fanout?.levels.map((l) => l.socketsPerEvent)).toEqual([6, 21]);
    for (const level of results.fanout?.levels ?? []) {
      expect(level.messagesPerSecond).toBeGreaterThan(0);
      // Counted over the same window: deliveries are about K + 1 per message (a message's deliveries may
      // straddle the window's ends).
      const perMessage = level.deliveriesPerSecond / level.messagesPerSecond;
      expect(perMessage).toBeGreaterThan(level.socketsPerEvent * 0.8);
      expect(perMessage).toBeLessThan(level.socketsPerEvent * 1.2);
    }
    // Sockets held, and the storm: all in.
    expect(results.sockets?.levels.map((l) => l.sockets)).toEqual([40, 60]);
    expect(results.sockets?.storm?.connected).toBe(40);

    const report = readFileSync(join(dir, "latest.md"), "utf8");
    expect(report).toContain("## Targets (issue 12)");
    // Six targets, each with a verdict ("not measured" when a figure is noise: memory of 60 sockets can be).
    expect(report.match(/\| (yes|\*\*no\*\*|not measured) \|/g)).toHaveLength(6);
    for (const chart of ["latency-open.svg", "latency-closed.svg"]) {
      expect(report).toContain(`](${chart})`);
      expect(readFileSync(join(dir, chart), "utf8")).toMatch(/^<svg[\s\S]*<path d="M[\s\S]*<\/svg>\n$/);
    }
    // Nothing left behind: its database dropped, its services and nginx stopped.
    expect(await benchDatabases(child.pid!)).toEqual([]);
    // Every process it started, the bare relay's too (nginx's workers included), is gone.
    const pids = [
      ...stderr.matchAll(/started: chat (\d+), gateway (\d+), nginx (\d+), worker (\d+)/g),
      ...stderr.matchAll(/bare relay started: relay (\d+), nginx (\d+), worker (\d+)/g),
    ].flatMap((match) => match.slice(1).map(Number));
    // Two stacks (the first parts, then fresh processes for the held sockets) and the bare relay.
    expect(pids, stderr).toHaveLength(4 + 4 + 3);
    const alive = execFileSync("ps", ["-eo", "pid="]).toString().split("\n").map(Number);
    for (const pid of pids) expect(alive).not.toContain(pid);
  }, 180_000);

  it("stopped with SIGTERM midway, stops what it started and drops its database", async () => {
    const child = spawn(process.execPath, ["bench/run.ts"], {
      cwd: root,
      env: { ...process.env, BENCH_RESULTS_DIR: dir, BENCH_ONLY: "pipe", BENCH_PIPE_SECONDS: "30" },
      stdio: ["ignore", "ignore", "pipe"],
    });
    let stderr = "";
    const pids = await new Promise<number[]>((resolve, reject) => {
      child.stderr.on("data", (chunk) => {
        stderr += chunk;
        const started = /started: chat (\d+), gateway (\d+), nginx (\d+), worker (\d+)/.exec(stderr);
        if (started) resolve(started.slice(1).map(Number));
      });
      child.once("exit", () => reject(new Error(`the bench ended before it was interrupted: ${stderr}`)));
    });
    // Interrupted while the pipe's sockets are open and pinging.
    await new Promise((r) => setTimeout(r, 3_000));
    expect(child.exitCode).toBeNull();
    expect(await benchDatabases(child.pid!)).toHaveLength(1);
    child.kill("SIGTERM");
    const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
    expect(code, stderr).toBe(130);
    expect(await benchDatabases(child.pid!)).toEqual([]);
    // nginx's worker too: it goes with its master's fast shutdown.
    await new Promise((r) => setTimeout(r, 500));
    const alive = execFileSync("ps", ["-eo", "pid="]).toString().split("\n").map(Number);
    expect(pids).toHaveLength(4);
    for (const pid of pids) expect(alive).not.toContain(pid);
  }, 120_000);
});
