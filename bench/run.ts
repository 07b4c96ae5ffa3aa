/**
 * `npm run bench`: the pipe, upgrades and sockets, and fan-out (issue 12), against one listings-chat
 * instance (production mode, PostgreSQL of DATABASE_URL in a fresh database, Redis of REDIS_URL), the
 * gateway and Debian's nginx in front of it (stack.ts). Prints progress, writes bench/results/latest.json
 * and the report bench/results/latest.md with its latency chart (report.ts). BENCH_ONLY=pipe,upgrades,
 * fanout,sockets picks sections; the other BENCH_* variables are in the README's Performance section.
 * Not a test: a measurement to read, in ratios to the baselines measured in the same run.
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { join } from "node:path";
import { fanoutBench } from "./fanout.ts";
import { pipeBench } from "./pipe.ts";
import { type BenchResults, writeReport } from "./report.ts";
import { heldSockets, upgradeCost } from "./sockets.ts";
import { startStack } from "./stack.ts";
import { root, withDatabase } from "./support.ts";

// `npm run bench -- --report`: the report again from the last run's latest.json (after changing report.ts).
if (process.argv.includes("--report")) {
  const dir = process.env.BENCH_RESULTS_DIR ?? join(root, "bench/results");
  writeReport(JSON.parse(readFileSync(join(dir, "latest.json"), "utf8")) as BenchResults, dir);
  console.error(`bench: wrote ${join(dir, "latest.md")} from ${join(dir, "latest.json")}`);
  process.exit(0);
}

const env = (name: string, fallback: number) => Number(process.env[name] ?? fallback);
const list = (name: string, fallback: string) => (process.env[name] ?? fallback).split(",").map(Number);
const only = new Set((process.env.BENCH_ONLY ?? "pipe,upgrades,fanout,sockets").split(","));

const results = await withDatabase(async (url): Promise<BenchResults> => {
  const stack = await startStack(url);
  const out: BenchResults = {
    at: new Date().toISOString(),
    machine: {
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model,
      memoryGiB: Math.round(totalmem() / 2 ** 30),
      node: process.version,
    },
  };
  try {
    // User ids of their own for each section, so that none meets another's state.
    if (only.has("pipe")) {
      out.pipe = await pipeBench(
        stack,
        {
          clients: env("BENCH_PIPE_CLIENTS", 50),
          seconds: env("BENCH_PIPE_SECONDS", 5),
          openRate: env("BENCH_OPEN_RATE", 5_000),
          rounds: env("BENCH_ROUNDS", 5),
          perf: process.env.BENCH_PERF === "1",
        },
        90_000_000,
      );
    }
    if (only.has("upgrades")) {
      out.upgrades = await upgradeCost(
        stack,
        {
          sockets: env("BENCH_UPGRADES", 1_000),
          perSecond: env("BENCH_UPGRADE_RATE", 200),
          rounds: env("BENCH_UPGRADE_ROUNDS", 3),
        },
        91_000_000,
      );
    }
    if (only.has("fanout")) {
      out.fanout = await fanoutBench(
        stack,
        {
          socketsPerEvent: list("BENCH_FANOUT_SOCKETS", "10,100,1000"),
          senders: env("BENCH_FANOUT_SENDERS", 10),
          seconds: env("BENCH_FANOUT_SECONDS", 5),
        },
        92_000_000,
      );
    }
  } finally {
    await stack.stop();
  }
  if (only.has("sockets")) {
    // On fresh processes: what the sockets hold, not what the parts before left in the heaps.
    const fresh = await startStack(url, {}, { inspect: true });
    try {
      out.sockets = await heldSockets(
        fresh,
        {
          counts: list("BENCH_HELD_SOCKETS", "5000,9500"),
          openPerSecond: env("BENCH_HELD_RATE", 500),
          stormSockets: env("BENCH_STORM_SOCKETS", 5_000),
          stormSpreadMs: env("BENCH_STORM_SPREAD_MS", 3_000),
        },
        93_000_000,
      );
    } finally {
      await fresh.stop();
    }
  }
  return out;
});

// BENCH_RESULTS_DIR: elsewhere than bench/results (the bench's own test writes there, not over the record).
const dir = process.env.BENCH_RESULTS_DIR ?? join(root, "bench/results");
mkdirSync(dir, { recursive: true });
writeFileSync(join(dir, "latest.json"), `${JSON.stringify(results, null, 2)}\n`);
writeReport(results, dir);
console.error(`bench: wrote ${join(dir, "latest.json")} and ${join(dir, "latest.md")}`);
process.exit(0);
