/**
 * `node bench/startup.ts [rounds]`: what starting the services from their TypeScript sources costs with each
 * way of loading TypeScript: Node's own type stripping (`node main.ts`), tsx as a loader (`node --import tsx
 * main.ts`, what scripts/start.ts and the test helpers did) and the tsx CLI (`tsx main.ts`, what the npm
 * scripts did: a tsx process that spawns node). Measured: the time from spawn to the service's "listening"
 * log line, and the resident memory of the process tree at that moment; then the time scripts/build.ts takes
 * (`npm run build` without npm's own start-up), each way. listings-chat runs on a fresh PostgreSQL database
 * (DATABASE_URL's server), the gateway in front of nothing (it listens without its upstreams). Each round
 * starts every variant once, in an order that rotates from round to round, after one round not counted
 * (migrations, tsx's cache, the file cache), so that a busy machine slows all of them alike.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { medianBy, redisUrl, root, serviceRssKiB, token, trackChild, withDatabase } from "./support.ts";

const rounds = Number(process.argv[2] ?? 5);
if (!Number.isInteger(rounds) || rounds < 1)
  throw new Error(`rounds must be a whole number ≥ 1, not ${process.argv[2]}`);

/** tsx, for the comparison, while it is installed; without it only `node` is measured. */
function tsxCliPath(): string | undefined {
  try {
    return fileURLToPath(import.meta.resolve("tsx/cli"));
  } catch {
    console.log("tsx is not installed: measuring plain node only");
    return undefined;
  }
}
const tsxCli = tsxCliPath();

/** The ways of running a TypeScript file, as the arguments of `node` before and including the file. */
const loaders = {
  "node (strip types)": (file: string) => [file],
  "node --import tsx": (file: string) => ["--import", "tsx", file],
  "tsx CLI": (file: string) => [tsxCli as string, file],
} as const;
type Loader = keyof typeof loaders;
const loaderNames = (Object.keys(loaders) as Loader[]).filter((l) => tsxCli !== undefined || !l.includes("tsx"));

interface Sample {
  ms: number;
  rssMiB: number;
}

/** Resident memory of `pid` and its descendants (the tsx CLI runs the file in a child of its own), in MiB. */
const treeRssMiB = (pid: number) => serviceRssKiB(pid) / 1024;

function exitOf(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve(child.exitCode);
    else child.once("exit", (code) => resolve(code));
  });
}

/** Starts `file` with `loader`, waits for its "listening" line, reads its memory, then stops it. */
async function startOnce(loader: Loader, file: string, env: Record<string, string>): Promise<Sample> {
  const started = performance.now();
  const child = trackChild(
    spawn(process.execPath, loaders[loader](join(root, file)), {
      cwd: root,
      env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    }),
  );
  let output = "";
  child.stderr?.on("data", (d) => {
    output += d;
  });
  const exited = exitOf(child);
  const listening = new Promise<Sample>((resolve, reject) => {
    const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
    lines.on("line", (line) => {
      output += `${line}\n`;
      if (!line.includes('listening"')) return;
      resolve({ ms: performance.now() - started, rssMiB: treeRssMiB(child.pid as number) });
      lines.close();
    });
    void exited.then((code) => reject(new Error(`${loader} ${file} exited (${code}) before listening:\n${output}`)));
  });
  const timeout = setTimeout(() => child.kill("SIGKILL"), 60_000);
  try {
    return await listening;
  } finally {
    clearTimeout(timeout);
    child.kill("SIGTERM");
    await exited;
  }
}

/** Runs scripts/build.ts with `loader` into a directory of its own; the time until it exited. */
async function buildOnce(loader: Loader): Promise<Sample> {
  const outDir = mkdtempSync(join(tmpdir(), "lc-startup-build-"));
  try {
    const started = performance.now();
    const child = trackChild(
      spawn(process.execPath, [...loaders[loader](join(root, "scripts/build.ts")), outDir], {
        cwd: root,
        stdio: ["ignore", "ignore", "inherit"],
      }),
    );
    let peakMiB = 0;
    const watch = setInterval(() => {
      peakMiB = Math.max(peakMiB, treeRssMiB(child.pid as number));
    }, 20);
    const code = await exitOf(child);
    clearInterval(watch);
    if (code !== 0) throw new Error(`scripts/build.ts with ${loader} exited with ${code}`);
    return { ms: performance.now() - started, rssMiB: peakMiB };
  } finally {
    rmSync(outDir, { recursive: true, force: true });
  }
}

type Task = (loader: Loader) => Promise<Sample>;

/** Every loader once per round, the order rotated each round; the first round is a warm-up, not counted. */
async function measure(name: string, task: Task): Promise<Record<Loader, Sample[]>> {
  const samples = Object.fromEntries(loaderNames.map((l) => [l, [] as Sample[]])) as Record<Loader, Sample[]>;
  for (let round = 0; round <= rounds; round++) {
    const order = loaderNames.map((_, i) => loaderNames[(i + round) % loaderNames.length] as Loader);
    for (const loader of order) {
      const sample = await task(loader);
      if (round > 0) samples[loader].push(sample);
    }
    process.stderr.write(`${name}: round ${round}/${rounds}${round === 0 ? " (warm-up)" : ""} done\n`);
  }
  return samples;
}

function report(name: string, what: string, samples: Record<Loader, Sample[]>) {
  console.log(`\n${name} (${rounds} runs each; median [min–max])`);
  for (const loader of loaderNames) {
    const runs = samples[loader];
    const ms = runs.map((s) => s.ms).sort((a, b) => a - b);
    const rss = runs.map((s) => s.rssMiB).sort((a, b) => a - b);
    const median = (sorted: number[]) => medianBy(sorted, (x) => x) ?? 0;
    console.log(
      `  ${loader.padEnd(20)} ${what} ${median(ms).toFixed(0).padStart(5)} ms [${ms[0]?.toFixed(0)}–${ms.at(-1)?.toFixed(0)}]` +
        `   RSS ${median(rss).toFixed(0).padStart(4)} MiB [${rss[0]?.toFixed(0)}–${rss.at(-1)?.toFixed(0)}]`,
    );
  }
}

const production = { NODE_ENV: "production", LOG_LEVEL: "info", INTERNAL_TOKEN: token };

await withDatabase(async (databaseUrl) => {
  const chat = await measure("listings-chat", (loader) =>
    startOnce(loader, "services/listings-chat/src/main.ts", {
      ...production,
      CHAT_PORT: "0",
      CHAT_HOST: "127.0.0.1",
      DATABASE_URL: databaseUrl,
    }),
  );
  report("listings-chat, spawn → listening (PostgreSQL, in-memory bus)", "listening after", chat);
}, "lc_startup");

const gateway = await measure("gateway", (loader) =>
  startOnce(loader, "services/gateway/src/main.ts", {
    ...production,
    GATEWAY_PORT: "0",
    GATEWAY_HOST: "127.0.0.1",
    CHAT_UPSTREAMS: "http://127.0.0.1:9",
    REDIS_URL: redisUrl,
    JWT_SECRET: randomBytes(32).toString("hex"),
    WS_TOKEN_SECRET: randomBytes(32).toString("hex"),
    JWT_AUDIENCE: "listings-chat-bench",
  }),
);
report("gateway, spawn → listening (Redis)", "listening after", gateway);

const build = await measure("build", buildOnce);
report("scripts/build.ts (npm run build without npm), RSS = peak", "done after", build);
