/**
 * `npm run bench:runtimes`: the benchmarks on two Node.js runtimes, back to back on this machine: the machine's
 * own Node (BENCH_OTHER_NODE, /usr/bin/node: 20 here) and the one the project pins and the image ships
 * (node_modules/.bin/node, 26). Each benchmark runs whole on one runtime, load generator and services alike:
 * `npm run bench` (the pipe, upgrades and sockets, fan-out), `bench:chat` (BENCH_RUNS, 2 and 4 by default) and
 * `bench:storm`. A runtime without type stripping (Node 20) loads the TypeScript with tsx.
 *
 * Writes each runtime's results under bench/results/runtimes/node-<version>/ and the comparison
 * bench/results/runtimes.md: each figure on both runtimes, and the ratio. Compare ratios to the baselines of
 * the same run too (nginx, the direct socket): this machine is noisy. `--report` writes runtimes.md again from
 * the stored results; BENCH_RUNTIMES_ONLY=bench,chat,storm picks benchmarks. Needs DATABASE_URL and REDIS_URL.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { root } from "./support.ts";

interface Runtime {
  label: string;
  node: string;
  version: string;
  /** Whether it runs .ts files itself (Node 22.18+ / 23.6+ strip types). */
  stripsTypes: boolean;
}

const resultsRoot = join(root, "bench/results/runtimes");
const benches = {
  bench: "bench/run.ts",
  chat: "bench/chat-write.ts",
  storm: "bench/storm.ts",
} as const;
type BenchName = keyof typeof benches;

function runtimeOf(node: string): Runtime {
  const probe = spawnSync(node, ["-p", "JSON.stringify([process.version, Boolean(process.features.typescript)])"], {
    encoding: "utf8",
  });
  if (probe.status !== 0) throw new Error(`cannot run ${node}: ${probe.stderr}`);
  const [version, stripsTypes] = JSON.parse(probe.stdout) as [string, boolean];
  return { label: `node-${version.slice(1)}`, node, version, stripsTypes };
}

function runBench(runtime: Runtime, name: BenchName): void {
  const dir = join(resultsRoot, runtime.label);
  mkdirSync(dir, { recursive: true });
  const loader = runtime.stripsTypes ? [] : ["--import", "tsx"];
  console.error(`bench:runtimes: ${name} on ${runtime.version}`);
  const run = spawnSync(runtime.node, [...loader, join(root, benches[name])], {
    cwd: root,
    stdio: "inherit",
    // The machine's Node first on PATH for this run, so that whatever the bench starts by name runs on it too.
    env: {
      ...process.env,
      PATH: `${join(runtime.node, "..")}:${process.env.PATH ?? ""}`,
      BENCH_RESULTS_DIR: dir,
      BENCH_RUNS: process.env.BENCH_RUNS ?? "2,4",
    },
  });
  if (run.status !== 0) throw new Error(`${name} on ${runtime.version} exited ${run.status}`);
}

// ---------------------------------------------------------------------------------------------------
// The comparison

type Json = Record<string, any>;

function readResults(label: string): { version: string; bench?: Json; chat?: Json; storm?: Json } {
  const dir = join(resultsRoot, label);
  const read = (file: string) =>
    existsSync(join(dir, file)) ? (JSON.parse(readFileSync(join(dir, file), "utf8")) as Json) : undefined;
  return {
    version: label.replace(/^node-/, "v"),
    bench: read("latest.json"),
    chat: read("chat-write.json"),
    storm: read("storm.json"),
  };
}

interface Row {
  figure: string;
  /** Lower is better (CPU, latency, time): the ratio reads as "26 costs this much of 20". */
  lowerIsBetter: boolean;
  values: Array<number | undefined>;
}

function rows(results: Json[]): Row[] {
  const out: Row[] = [];
  const add = (figure: string, lowerIsBetter: boolean, pick: (r: Json) => number | undefined) => {
    const values = results.map((r) => {
      try {
        const value = pick(r);
        return typeof value === "number" && Number.isFinite(value) ? value : undefined;
      } catch {
        return undefined;
      }
    });
    if (values.some((v) => v !== undefined)) out.push({ figure, lowerIsBetter, values });
  };
  const pipe = (r: Json, key: string) => r.bench?.pipe?.median?.[key];
  for (const path of ["direct", "gateway", "nginx"]) {
    add(`pipe, closed loop, ${path}: messages/s`, false, (r) => pipe(r, `closed/${path}`)?.messagesPerSecond);
  }
  add("pipe, closed loop: gateway / nginx throughput", false, (r) => {
    const [g, n] = [pipe(r, "closed/gateway")?.messagesPerSecond, pipe(r, "closed/nginx")?.messagesPerSecond];
    return g / n;
  });
  add("pipe, closed loop, gateway: p99 ms", true, (r) => pipe(r, "closed/gateway")?.latency?.p99Ms);
  add("pipe, open loop, gateway: p99 ms", true, (r) => pipe(r, "open/gateway")?.latency?.p99Ms);
  add("pipe, open loop, nginx: p99 ms", true, (r) => pipe(r, "open/nginx")?.latency?.p99Ms);
  add("pipe, gateway: CPU µs per message (gateway)", true, (r) => pipe(r, "closed/gateway")?.cpuUsPerMessage?.proxy);
  add("pipe, direct: CPU µs per message (listings-chat)", true, (r) => pipe(r, "closed/direct")?.cpuUsPerMessage?.chat);
  add("pipe, nginx: CPU µs per message (nginx)", true, (r) => pipe(r, "closed/nginx")?.cpuUsPerMessage?.proxy);
  const bare = (r: Json, proxy: string) => {
    const all = (r.bench?.pipe?.bare ?? []).filter((b: Json) => b.proxy === proxy);
    return all.length ? all.reduce((s: number, b: Json) => s + b.cpuUsPerMessage, 0) / all.length : undefined;
  };
  add("bare relay: CPU µs per message, the gateway's relay alone", true, (r) => bare(r, "node relay"));
  add("bare relay: CPU µs per message, nginx alone", true, (r) => bare(r, "nginx"));
  const upgrade = (r: Json, path: string) => r.bench?.upgrades?.median?.[path];
  add("upgrades: CPU ms per upgrade, gateway", true, (r) => upgrade(r, "gateway")?.cpuMsPerUpgrade?.proxy);
  add("upgrades: CPU ms per upgrade, listings-chat", true, (r) => upgrade(r, "direct")?.cpuMsPerUpgrade?.chat);
  add("upgrades through the gateway: connect p99 ms", true, (r) => upgrade(r, "gateway")?.connectP99Ms);
  const held = (r: Json) => r.bench?.sockets?.levels?.at(-1);
  add("held sockets (most): RSS KiB per socket, listings-chat", true, (r) => held(r)?.rssKiBPerSocket?.chat);
  add("held sockets (most): RSS KiB per socket, gateway", true, (r) => held(r)?.rssKiBPerSocket?.gateway);
  add("held sockets (most): JS heap KiB per socket, listings-chat", true, (r) => held(r)?.heapKiBPerSocket?.chat);
  add("held sockets (most): JS heap KiB per socket, gateway", true, (r) => held(r)?.heapKiBPerSocket?.gateway);
  add("RSS before any socket, listings-chat (KiB)", true, (r) => r.bench?.sockets?.before?.rss?.chat);
  add("RSS before any socket, gateway (KiB)", true, (r) => r.bench?.sockets?.before?.rss?.gateway);
  add(
    "storm after the held sockets: all connected after (ms)",
    true,
    (r) => r.bench?.sockets?.storm?.allConnectedAfterMs,
  );
  for (const level of [0, 1, 2]) {
    add(
      `fan-out, level ${level + 1}: deliveries/s`,
      false,
      (r) => r.bench?.fanout?.levels?.[level]?.deliveriesPerSecond,
    );
    add(`fan-out, level ${level + 1}: listings-chat CPU µs per delivery`, true, (r) => {
      return r.bench?.fanout?.levels?.[level]?.chatCpuUsPerDelivery;
    });
  }
  // PostgreSQL alone, measured at the start of each bench:chat: how fast the machine's database was during it.
  add("bench:chat baseline: pgbench raw INSERTs/s, 1 client", false, (r) => r.chat?.pgbench?.[0]?.insertsPerSecond);
  add("bench:chat baseline: pgbench raw INSERTs/s, 10 clients", false, (r) => r.chat?.pgbench?.[1]?.insertsPerSecond);
  const chatRuns = new Set<string>();
  for (const r of results) for (const run of r.chat?.chat ?? []) chatRuns.add(run.label);
  for (const label of chatRuns) {
    const run = (r: Json) => (r.chat?.chat ?? []).find((c: Json) => c.label === label);
    add(`bench:chat, ${label}: messages/s`, false, (r) => run(r)?.messagesPerSecond);
    add(`bench:chat, ${label}: messages/s per pgbench INSERT/s (10 clients)`, false, (r) => {
      return run(r)?.messagesPerSecond / r.chat?.pgbench?.[1]?.insertsPerSecond;
    });
    add(`bench:chat, ${label}: p99 ms`, true, (r) => run(r)?.p99Ms);
    add(`bench:chat, ${label}: CPU ms per message, listings-chat`, true, (r) => run(r)?.cpuMsPerMessage?.chat);
  }
  add("bench:storm: all connected after (ms)", true, (r) => r.storm?.allConnectedAfterMs);
  add("bench:storm: accepted at the first attempt", false, (r) => r.storm?.acceptedAtFirstAttempt);
  add("bench:storm: connect p99 ms", true, (r) => r.storm?.connectP99Ms);
  add("bench:storm: CPU ms per accepted socket, gateway", true, (r) => r.storm?.cpuMsPerAcceptedSocket?.gateway);
  add("bench:storm: CPU ms per accepted socket, listings-chat", true, (r) => r.storm?.cpuMsPerAcceptedSocket?.chat);
  add("bench:storm: CPU ms per proxied socket, nginx (baseline)", true, (r) => r.storm?.nginx?.cpuMsPerSocket);
  return out;
}

const format = (value: number | undefined) =>
  value === undefined ? "–" : Math.abs(value) >= 100 ? Math.round(value).toLocaleString("en-US") : value.toFixed(2);

export function comparison(labels: string[]): string {
  const results = labels.map(readResults);
  const head = ["figure", ...results.map((r) => `Node ${r.version}`), "last / first"];
  const lines = [
    "# The benchmarks on two runtimes",
    "",
    `Written by \`npm run bench:runtimes\` (bench/runtimes.ts) on ${new Date().toISOString().slice(0, 10)}: each benchmark run whole`,
    "on each runtime, back to back on one machine. The ratio is the last column's figure over the first's; for",
    "CPU, latency and time lower is better, for throughput higher. This 2-core machine is noisy: compare ratios to",
    "the baselines of the same run (nginx, the direct socket) before reading a runtime's effect into them.",
    "",
    `| ${head.join(" | ")} |`,
    `| ${head.map((_, i) => (i === 0 ? "---" : "---:")).join(" | ")} |`,
  ];
  for (const row of rows(results)) {
    const [first, last] = [row.values[0], row.values.at(-1)];
    const ratio = first !== undefined && last !== undefined && first !== 0 ? `${(last / first).toFixed(2)}×` : "–";
    lines.push(`| ${row.figure} | ${row.values.map(format).join(" | ")} | ${ratio} |`);
  }
  return `${lines.join("\n")}\n`;
}

function writeComparison(labels: string[]) {
  const file = join(root, "bench/results/runtimes.md");
  writeFileSync(file, comparison(labels));
  console.error(`bench:runtimes: wrote ${file}`);
}

const byVersion = (a: string, b: string) => {
  const parts = (label: string) =>
    label
      .replace(/^node-/, "")
      .split(".")
      .map(Number);
  const [x, y] = [parts(a), parts(b)];
  for (let i = 0; i < 3; i++) if (x[i] !== y[i]) return (x[i] ?? 0) - (y[i] ?? 0);
  return 0;
};

if (process.argv.includes("--report")) {
  writeComparison(
    readdirSync(resultsRoot)
      .filter((d) => d.startsWith("node-"))
      .sort(byVersion),
  );
} else {
  const other = runtimeOf(process.env.BENCH_OTHER_NODE ?? "/usr/bin/node");
  const pinned = runtimeOf(join(root, "node_modules/.bin/node"));
  if (other.version === pinned.version) throw new Error(`both runtimes are ${pinned.version}: set BENCH_OTHER_NODE`);
  const only = (process.env.BENCH_RUNTIMES_ONLY ?? "bench,chat,storm").split(",") as BenchName[];
  // One benchmark on both runtimes, then the next, so that a noisy stretch of the machine falls on both alike;
  // BENCH_RUNTIMES_REVERSE=1 runs the pinned one first (a second go, to see what the order did).
  const order = process.env.BENCH_RUNTIMES_REVERSE === "1" ? [pinned, other] : [other, pinned];
  for (const name of only) {
    if (!(name in benches)) throw new Error(`BENCH_RUNTIMES_ONLY: no benchmark ${name} (bench, chat, storm)`);
    for (const runtime of order) runBench(runtime, name);
  }
  writeComparison([other.label, pinned.label].sort(byVersion));
}
