/**
 * `npm run bench:photos`: photo messages (issue 26, CONTRACT §11) as users send them, against the same sends as
 * text. BENCH_PHOTO_CHATS chats (10), each a buyer and a seller who both send BENCH_PHOTOS_PER_USER photos (10)
 * of about BENCH_PHOTO_BYTES (3 MB: test/support/images.ts's phone-like 4000×3000 JPEG with GPS EXIF): 200
 * photos from 20 users. Each user sends one photo after the other (the next upload starts when the send is
 * answered), the 20 users in parallel. A photo is: `POST /api/v1/uploads` → PUT of the bytes to the presigned
 * URL, straight to the S3 server → `POST /api/v1/chats/:id/messages` with the upload → the peer's `new_message`
 * carrying that attachment on its socket.
 *
 * Processes, each its own: the S3 server (`.ci/s3-server.mjs`: @20minutes/s3rver, which checks SigV4, as CI
 * runs it; objects in a temporary folder), one listings-chat instance in production mode (STORAGE=s3 on that
 * server; PHOTO_CONCURRENCY is BENCH_PHOTO_CONCURRENCY when set, else the service's default of 2) on a fresh
 * database of DATABASE_URL's server as the other benchmarks (BENCH_PGLITE=1: PGlite under a temporary DATA_DIR
 * instead, in development mode), a live-socket probe (live-probe.ts), and this load generator. REST and sockets go
 * straight to the instance with the internal hop's headers, as in bench:chat and bench:big: the gateway only
 * forwards these requests, and the photo's bytes never pass through it nor through the instance on their way in.
 *
 * Two phases in one go on the same instance and users, text first (the baseline: the same 200 sends without
 * photos), then photos; each reports per send the time from its start (the upload's POST for a photo) to the
 * recipient's `new_message` (p50/p99/max) and its parts' p50 (upload grant, PUT, the send's answer, delivery
 * after that answer: negative when the frame came first); photos a second; the instance's event-loop delay
 * (loop-delay.ts, preloaded in the instance, sampled every 1 ms: p99 and max, and per second); a third user's
 * ping → pong round trip every 50 ms (p99); the instance's peak RSS (polled VmRSS, and VmHWM); CPU of each
 * process. Prints a table and writes bench/results/photos.json (photos-concurrency-N.json when
 * BENCH_PHOTO_CONCURRENCY is set to another N). BENCH_CPU_PROF=dir writes the instance's V8 CPU profile there;
 * BENCH_CHAT_ENV (a JSON object) gives the instance more variables, to compare settings.
 * Not a test: it asserts nothing.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism, loadavg, setPriority, tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface, type Interface } from "node:readline";
import { pathToFileURL } from "node:url";
import { CreateBucketCommand } from "@aws-sdk/client-s3";
import type WebSocket from "ws";
import { photoOfAbout } from "../services/listings-chat/test/support/images.ts";
import { testS3Client } from "../services/listings-chat/test/support/s3.ts";
import {
  cpuSeconds,
  cpuSince,
  cpuSnapshot,
  freePort,
  open,
  percentile,
  redisUrl,
  root,
  rssKiB,
  startChat,
  startService,
  stopChats,
  token,
  trackChild,
  typeScriptLoader,
  withDatabase,
} from "./support.ts";

const chatsCount = Number(process.env.BENCH_PHOTO_CHATS ?? 10);
const perUser = Number(process.env.BENCH_PHOTOS_PER_USER ?? 10);
const photoBytes = Number(process.env.BENCH_PHOTO_BYTES ?? 3_000_000);
/** The instance's PHOTO_CONCURRENCY: BENCH_PHOTO_CONCURRENCY when set, else the service's default (2). */
const photoConcurrency = process.env.BENCH_PHOTO_CONCURRENCY;
const pglite = process.env.BENCH_PGLITE === "1";
/** BENCH_CHAT_ENV: a JSON object of more variables for the instance, to compare settings (as STORM_GATEWAY_ENV). */
const extraChatEnv = JSON.parse(process.env.BENCH_CHAT_ENV ?? "{}") as Record<string, string>;
/** How long a phase may wait for its last deliveries. */
const deliveryTimeoutMs = 60_000;
const S3_KEY = "S3RVER"; // s3rver's one built-in account
const base = 700_000 + Math.floor(Math.random() * 1000) * 1000;
const probeUser = base + 999;

/** One send, its moments (performance.now() of this process) and the user who must receive it. */
interface Send {
  kind: "text" | "photo";
  from: number;
  to: number;
  clientMsgId: string;
  uploadId?: string;
  startedAt: number;
  grantedAt?: number;
  putAt?: number;
  answeredAt?: number;
  deliveredAt?: number;
  error?: string;
  delivered: Promise<void>;
  deliver: () => void;
}

interface Pair {
  chatId: number;
  buyer: number;
  seller: number;
}

const ms = (value: number) => Number(value.toFixed(1));
const summary = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return null;
  return {
    p50Ms: ms(percentile(sorted, 0.5)),
    p99Ms: ms(percentile(sorted, 0.99)),
    maxMs: ms(sorted.at(-1) ?? 0),
  };
};

/** VmHWM (the peak resident memory since the process started) of a process, in KiB. */
const hwmKiB = (pid: number) => Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0);

/** User + system CPU of a process's main thread (its event loop, and the garbage collector's pauses), in seconds. */
function mainThreadCpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/task/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    return (Number(stat[11]) + Number(stat[12])) / 100;
  } catch {
    return 0;
  }
}

/** A child whose stdout is JSON lines: the next line parsed, in order. */
function jsonLines(child: ChildProcess) {
  const lines: Interface = createInterface({ input: child.stdout! });
  const queued: string[] = [];
  const waiting: ((line: string) => void)[] = [];
  lines.on("line", (line) => {
    const next = waiting.shift();
    if (next) next(line);
    else queued.push(line);
  });
  return <T>() =>
    new Promise<T>((resolve, reject) => {
      const take = (line: string) => resolve(JSON.parse(line) as T);
      const line = queued.shift();
      if (line !== undefined) return take(line);
      waiting.push(take);
      child.once("exit", (code) => reject(new Error(`the child exited (${code}) before it answered`)));
    });
}

/** `.ci/s3-server.mjs` (s3rver, as CI runs it) in a process of its own, with a bucket for the photos. */
async function startS3() {
  const directory = mkdtempSync(join(tmpdir(), "lc-bench-s3-"));
  const port = await freePort();
  const child = trackChild(
    spawn(process.execPath, [join(root, ".ci/s3-server.mjs"), directory, String(port)], {
      cwd: root,
      env: { PATH: process.env.PATH ?? "" },
      stdio: ["ignore", "pipe", "inherit"],
    }),
  );
  // Its first line says it listens; the rest (a line per request) is read and dropped.
  await new Promise<void>((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! });
    lines.on("line", (line) => {
      if (line.includes("listening")) resolve();
    });
    child.once("exit", (code) => reject(new Error(`the S3 server exited (${code}) before it listened`)));
  });
  const config = {
    endpoint: `http://127.0.0.1:${port}`,
    bucket: `lc-bench-${randomBytes(4).toString("hex")}`,
    region: "us-east-1",
    accessKeyId: S3_KEY,
    secretAccessKey: S3_KEY,
    forcePathStyle: true as const,
  };
  const client = testS3Client(config);
  await client.send(new CreateBucketCommand({ Bucket: config.bucket }));
  client.destroy();
  return {
    child,
    config,
    stop() {
      child.kill("SIGKILL");
      rmSync(directory, { recursive: true, force: true });
    },
  };
}

/** live-probe.ts in a process of its own: a third user's socket, pinged every 50 ms during each phase. */
async function startProbe(port: number) {
  const child = trackChild(
    spawn(process.execPath, [...typeScriptLoader, join(root, "bench/live-probe.ts")], {
      cwd: root,
      env: {
        PATH: process.env.PATH ?? "",
        BENCH_PROBE_PORT: String(port),
        BENCH_PROBE_USER_ID: String(probeUser),
        BENCH_PROBE_TOKEN: token,
      },
      stdio: ["pipe", "pipe", "inherit"],
    }),
  );
  // Ahead of everything else on the machine when this user may ask for it (root): its round trips are then the
  // instance's, not the wait of a probe that the machine's other processes kept from a core.
  let nice = 0;
  try {
    setPriority(child.pid ?? 0, -10);
    nice = -10;
  } catch {
    // Not allowed: the probe runs at the default priority, and its own event-loop delay says how late it was.
  }
  const next = jsonLines(child);
  await next();
  return {
    child,
    nice,
    start: () => child.stdin!.write("start\n"),
    stop: () => {
      child.stdin!.write("stop\n");
      return next<{
        count: number;
        lost: number;
        p50Ms: number;
        p99Ms: number;
        maxMs: number;
        probeLoopDelayMaxMs: number;
      }>();
    },
    end: () => child.stdin!.end("exit\n"),
  };
}

/** The instance's event-loop delay since the last read (loop-delay.ts writes it on SIGUSR2). */
async function readLoopDelay(pid: number, file: string) {
  const before = existsSync(file) ? (JSON.parse(readFileSync(file, "utf8")) as { sequence: number }).sequence : 0;
  process.kill(pid, "SIGUSR2");
  for (let i = 0; i < 200; i++) {
    await new Promise((r) => setTimeout(r, 10));
    if (!existsSync(file)) continue;
    const report = JSON.parse(readFileSync(file, "utf8")) as { sequence: number } & Record<string, unknown>;
    if (report.sequence > before) return report;
  }
  throw new Error("the instance did not write its event-loop delay (is bench/loop-delay.ts preloaded?)");
}

/** The chat instance: on a fresh PostgreSQL database (as the other benchmarks), or on PGlite with BENCH_PGLITE=1. */
async function withInstance<T>(
  env: Record<string, string>,
  work: (chat: { port: number; child: ChildProcess; database: string }) => Promise<T>,
): Promise<T> {
  const prefix = `lc-bench-photos:${randomBytes(3).toString("hex")}:`;
  if (!pglite) {
    return withDatabase(async (url) => {
      const chat = await startChat(url, prefix, "bench-photos", env);
      try {
        return await work({ ...chat, database: "postgresql" });
      } finally {
        await stopChats([chat.child]);
      }
    });
  }
  // PGlite serves development only: the same settings as startChat's, in development mode, without DATABASE_URL.
  const dataDir = mkdtempSync(join(tmpdir(), "lc-bench-pglite-"));
  const port = await freePort();
  const child = await startService("services/listings-chat/src/main.ts", port, {
    NODE_ENV: "development",
    CHAT_PORT: String(port),
    CHAT_HOST: "127.0.0.1",
    DATA_DIR: dataDir,
    REDIS_URL: redisUrl,
    REDIS_KEY_PREFIX: prefix,
    INTERNAL_TOKEN: token,
    INSTANCE_ID: "bench-photos",
    LOG_LEVEL: "warn",
    SEND_LIMIT_PER_MINUTE: "1000000",
    LISTINGS_REQUIRED: "0",
    ...env,
  });
  try {
    return await work({ port, child, database: "pglite" });
  } finally {
    await stopChats([child]);
    rmSync(dataDir, { recursive: true, force: true });
  }
}

const headersOf = (userId: number) => ({
  "x-internal-token": token,
  "x-user-id": String(userId),
  "content-type": "application/json",
});

async function post<T>(port: number, userId: number, path: string, body: unknown): Promise<T> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, {
    method: "POST",
    headers: headersOf(userId),
    body: JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${path}: ${res.status} ${text.slice(0, 200)}`);
  return JSON.parse(text) as T;
}

function newSend(kind: Send["kind"], from: number, to: number): Send {
  let deliver = () => {};
  const delivered = new Promise<void>((resolve) => {
    deliver = resolve;
  });
  return { kind, from, to, clientMsgId: randomUUID(), startedAt: performance.now(), delivered, deliver };
}

/** Sends in flight by client_msg_id, until their recipient's socket hears them. */
const pending = new Map<string, Send>();

/** The recipient's side: a send counts as delivered when its peer's socket gets its `new_message`. */
function listen(ws: WebSocket, userId: number) {
  ws.on("message", (data) => {
    const frame = JSON.parse(String(data)) as {
      type: string;
      message?: { client_msg_id?: string; attachments?: { id: string }[] };
    };
    if (frame.type !== "new_message") return;
    const send = pending.get(frame.message?.client_msg_id ?? "");
    if (!send || send.to !== userId) return;
    if (send.kind === "photo" && frame.message?.attachments?.[0]?.id !== send.uploadId) {
      send.error ??= "delivered without its attachment";
    }
    send.deliveredAt = performance.now();
    pending.delete(send.clientMsgId);
    send.deliver();
  });
}

/** One user's sends, one after the other: the next starts when the send before was answered. */
async function userLoop(port: number, kind: Send["kind"], pair: Pair, from: number, photo: Buffer, sends: Send[]) {
  const to = from === pair.buyer ? pair.seller : pair.buyer;
  for (let k = 0; k < perUser; k++) {
    const send = newSend(kind, from, to);
    sends.push(send);
    pending.set(send.clientMsgId, send);
    try {
      const attachments: string[] = [];
      if (kind === "photo") {
        const grant = await post<{ upload_id: string; url: string; headers: Record<string, string> }>(
          port,
          from,
          "/api/v1/uploads",
          { content_type: "image/jpeg", size: photo.length },
        );
        send.uploadId = grant.upload_id;
        send.grantedAt = performance.now();
        // Straight to the storage, with the grant's headers and no credentials, as the browser does.
        const put = await fetch(grant.url, { method: "PUT", headers: grant.headers, body: photo });
        const answer = await put.text();
        if (!put.ok) throw new Error(`PUT: ${put.status} ${answer.slice(0, 200)}`);
        send.putAt = performance.now();
        attachments.push(grant.upload_id);
      }
      await post(port, from, `/api/v1/chats/${pair.chatId}/messages`, {
        content: kind === "photo" ? "" : `the text of send ${k + 1}`,
        ...(kind === "photo" ? { attachments } : {}),
        client_msg_id: send.clientMsgId,
      });
      send.answeredAt = performance.now();
    } catch (error) {
      send.error = (error as Error).message;
      pending.delete(send.clientMsgId);
      send.deliver();
    }
  }
}

/**
 * One phase: every user's sends of `kind`, the 20 users in parallel, measured from the first send's start to
 * the last delivery; the instance's event-loop delay, RSS and CPU, the probe's round trips over the same window.
 */
async function phase(
  kind: Send["kind"],
  ctx: {
    port: number;
    pid: number;
    s3Pid: number;
    probe: Awaited<ReturnType<typeof startProbe>>;
    loopFile: string;
    pairs: Pair[];
    photo: Buffer;
  },
) {
  const { port, pid, probe, pairs, photo } = ctx;
  await readLoopDelay(pid, ctx.loopFile); // starts the instance's window here
  const rssAtStart = rssKiB(pid);
  let rssPeak = rssAtStart;
  const rssPoll = setInterval(() => {
    rssPeak = Math.max(rssPeak, rssKiB(pid));
  }, 100);
  const cpuBefore = cpuSnapshot([pid]);
  const cpuFrom = performance.now();
  const s3CpuBefore = cpuSeconds(ctx.s3Pid);
  const mainCpuBefore = mainThreadCpuSeconds(pid);
  const probeCpuBefore = cpuSeconds(probe.child.pid ?? 0);
  const loadAverage = loadavg()[0]!;
  probe.start();
  const sends: Send[] = [];
  const t0 = performance.now();
  await Promise.all(
    pairs.flatMap((pair) => [pair.buyer, pair.seller].map((from) => userLoop(port, kind, pair, from, photo, sends))),
  );
  const answered = performance.now();
  await Promise.race([
    Promise.all(sends.map((s) => s.delivered)),
    new Promise((r) => setTimeout(r, deliveryTimeoutMs)),
  ]);
  const lastDelivery = Math.max(t0, ...sends.map((s) => s.deliveredAt ?? 0));
  const round = await probe.stop();
  const loopDelay = await readLoopDelay(pid, ctx.loopFile);
  clearInterval(rssPoll);
  rssPeak = Math.max(rssPeak, rssKiB(pid));
  const cpu = cpuSince(cpuBefore);
  const cpuWindowSeconds = (performance.now() - cpuFrom) / 1000;
  const s3Cpu = cpuSeconds(ctx.s3Pid) - s3CpuBefore;
  const mainCpu = mainThreadCpuSeconds(pid) - mainCpuBefore;
  const probeCpu = cpuSeconds(probe.child.pid ?? 0) - probeCpuBefore;
  for (const send of sends) {
    if (send.deliveredAt === undefined) {
      send.error ??= "never delivered";
      pending.delete(send.clientMsgId);
    }
  }
  const ok = sends.filter((s) => !s.error && s.deliveredAt !== undefined);
  const wallSeconds = (lastDelivery - t0) / 1000;
  const part = (values: (number | undefined)[]) => summary(values.filter((v): v is number => v !== undefined));
  const perSend = (seconds: number) => Number(((seconds * 1000) / Math.max(1, ok.length)).toFixed(1));
  return {
    kind,
    sends: sends.length,
    failures: sends.length - ok.length,
    errors: [...new Set(sends.flatMap((s) => (s.error ? [s.error] : [])))].slice(0, 5),
    /** From the first send's start to the last delivery; and to the last send's answer. */
    wallSeconds: Number(wallSeconds.toFixed(2)),
    answeredAfterSeconds: Number(((answered - t0) / 1000).toFixed(2)),
    sendsPerSecond: Number((ok.length / wallSeconds).toFixed(2)),
    /** From the send's start (a photo: its upload's POST) to the recipient's `new_message`. */
    endToEnd: summary(ok.map((s) => s.deliveredAt! - s.startedAt)) ?? { p50Ms: 0, p99Ms: 0, maxMs: 0 },
    parts: {
      grant: part(ok.map((s) => (s.grantedAt === undefined ? undefined : s.grantedAt - s.startedAt))),
      put: part(ok.map((s) => (s.putAt === undefined ? undefined : s.putAt - s.grantedAt!))),
      send: summary(ok.map((s) => s.answeredAt! - (s.putAt ?? s.startedAt))),
      /** From the send's answer to the recipient's frame: negative when the frame came first. */
      delivery: summary(ok.map((s) => s.deliveredAt! - s.answeredAt!)),
    },
    instanceLoopDelay: loopDelay,
    liveSocket: round,
    instanceRssKiB: { atStart: rssAtStart, peakPolled: rssPeak, hwm: hwmKiB(pid) },
    cpuSeconds: {
      chat: Number(cpu.chat.toFixed(2)),
      /** Of the chat's: its main thread (the event loop); the rest is libvips's and libuv's threads, and V8's helpers. */
      chatMainThread: Number(mainCpu.toFixed(2)),
      postgres: Number(cpu.postgres.toFixed(2)),
      redis: Number(cpu.redis.toFixed(2)),
      s3: Number(s3Cpu.toFixed(2)),
      loadGenerator: Number(cpu.self.toFixed(2)),
      probe: Number(probeCpu.toFixed(2)),
    },
    cpuMsPerSend: {
      chat: perSend(cpu.chat),
      chatMainThread: perSend(mainCpu),
      s3: perSend(s3Cpu),
      postgres: perSend(cpu.postgres),
    },
    machineBusy: Number(cpu.machineBusy.toFixed(2)),
    /**
     * The machine's noise: CPU seconds of every other process meanwhile (its busy time less this bench's
     * processes'), and the 1-minute load average as the phase started.
     */
    otherCpuSeconds: Number(
      Math.max(
        0,
        cpu.machineBusy * cpuWindowSeconds * availableParallelism() -
          (cpu.chat + cpu.postgres + cpu.redis + s3Cpu + cpu.self + probeCpu),
      ).toFixed(1),
    ),
    loadAverage: Number(loadAverage.toFixed(1)),
  };
}

/** What was measured: the commit, and the chat service's sources that differ from it (uncommitted work). */
function codeVersion() {
  const git = (...args: string[]) => execFileSync("git", args, { cwd: root, encoding: "utf8" });
  try {
    return {
      commit: git("rev-parse", "--short", "HEAD").trim(),
      uncommitted: git("diff", "--name-only", "HEAD", "--", "services/listings-chat/src").split("\n").filter(Boolean),
    };
  } catch {
    return { commit: "unknown", uncommitted: [] };
  }
}
const code = codeVersion();

const builtAt = performance.now();
const photo = await photoOfAbout(photoBytes);
console.error(`bench: a ${photo.length}-byte photo built in ${Math.round(performance.now() - builtAt)} ms`);
const s3 = await startS3();
const loopFile = join(mkdtempSync(join(tmpdir(), "lc-bench-loop-")), "loop-delay.json");
const chatEnv: Record<string, string> = {
  STORAGE: "s3",
  S3_ENDPOINT: s3.config.endpoint,
  S3_BUCKET: s3.config.bucket,
  S3_REGION: s3.config.region,
  S3_ACCESS_KEY_ID: S3_KEY,
  S3_SECRET_ACCESS_KEY: S3_KEY,
  S3_FORCE_PATH_STYLE: "1",
  UPLOAD_LIMIT_PER_HOUR: "1000000",
  NODE_OPTIONS: `--import=${pathToFileURL(join(root, "bench/loop-delay.ts")).href}`,
  BENCH_LOOP_DELAY_FILE: loopFile,
  ...(photoConcurrency ? { PHOTO_CONCURRENCY: photoConcurrency } : {}),
  ...extraChatEnv,
};

let result: Record<string, unknown>;
try {
  result = await withInstance(chatEnv, async ({ port, child, database }) => {
    const pid = child.pid ?? 0;
    console.error(`bench: chat ${pid} (${database}), S3 server ${s3.child.pid} at ${s3.config.endpoint}`);
    const pairs: Pair[] = [];
    for (let i = 0; i < chatsCount; i++) {
      const buyer = base + 2 * i;
      const seller = buyer + 1;
      const chat = await post<{ id: number }>(port, buyer, "/api/v1/chats", { listing_id: i + 1, seller_id: seller });
      pairs.push({ chatId: chat.id, buyer, seller });
    }
    const sockets = await Promise.all(
      pairs.flatMap((pair) =>
        [pair.buyer, pair.seller].map(async (userId) => {
          const ws = await open(port, userId);
          listen(ws, userId);
          return ws;
        }),
      ),
    );
    const probe = await startProbe(port);
    try {
      // Warm-up, not measured: a text from every user, and two photos (the S3 client's connections, sharp's first image).
      const warm: Send[] = [];
      await Promise.all(pairs.map((pair) => userLoopOnce(port, pair, warm)));
      for (const pair of pairs.slice(0, 2)) await warmPhoto(port, pair, photo, warm);
      await Promise.all(warm.map((s) => s.delivered));
      const warmErrors = warm.filter((s) => s.error);
      if (warmErrors.length > 0) throw new Error(`the warm-up failed: ${warmErrors[0]!.error}`);
      const ctx = { port, pid, s3Pid: s3.child.pid ?? 0, probe, loopFile, pairs, photo };
      const text = await phase("text", ctx);
      console.error(`bench: text: ${text.sends} sends in ${text.wallSeconds} s`);
      const photos = await phase("photo", ctx);
      console.error(`bench: photos: ${photos.sends} in ${photos.wallSeconds} s`);
      return {
        at: new Date().toISOString(),
        machine: { cores: availableParallelism(), node: process.version },
        code,
        settings: {
          chats: chatsCount,
          users: chatsCount * 2,
          photosPerUser: perUser,
          photoBytes: photo.length,
          photoConcurrency: Number(photoConcurrency ?? 2),
          chatEnv: extraChatEnv,
          probeNice: probe.nice,
          database,
          path: "REST and sockets straight to the instance (internal headers); PUTs straight to the S3 server",
          storage: "s3: @20minutes/s3rver in a process of its own (.ci/s3-server.mjs)",
        },
        text,
        photos,
        /** Photos against text, this go. */
        ratio: {
          endToEndP50: Number((photos.endToEnd.p50Ms / Math.max(0.1, text.endToEnd.p50Ms)).toFixed(1)),
          endToEndP99: Number((photos.endToEnd.p99Ms / Math.max(0.1, text.endToEnd.p99Ms)).toFixed(1)),
          wall: Number((photos.wallSeconds / Math.max(0.01, text.wallSeconds)).toFixed(1)),
        },
      };
    } finally {
      probe.end();
      for (const ws of sockets) ws.terminate();
    }
  });
} finally {
  s3.stop();
  rmSync(join(loopFile, ".."), { recursive: true, force: true });
}

/** A warm-up text from the pair's buyer. */
async function userLoopOnce(port: number, pair: Pair, sends: Send[]) {
  const send = newSend("text", pair.buyer, pair.seller);
  sends.push(send);
  pending.set(send.clientMsgId, send);
  try {
    await post(port, pair.buyer, `/api/v1/chats/${pair.chatId}/messages`, {
      content: "warm-up",
      client_msg_id: send.clientMsgId,
    });
  } catch (error) {
    send.error = (error as Error).message;
    pending.delete(send.clientMsgId);
    send.deliver();
  }
}

/** A warm-up photo from the pair's seller. */
async function warmPhoto(port: number, pair: Pair, photo: Buffer, sends: Send[]) {
  const send = newSend("photo", pair.seller, pair.buyer);
  sends.push(send);
  pending.set(send.clientMsgId, send);
  try {
    const grant = await post<{ upload_id: string; url: string; headers: Record<string, string> }>(
      port,
      pair.seller,
      "/api/v1/uploads",
      { content_type: "image/jpeg", size: photo.length },
    );
    send.uploadId = grant.upload_id;
    const put = await fetch(grant.url, { method: "PUT", headers: grant.headers, body: photo });
    if (!put.ok) throw new Error(`PUT: ${put.status} ${(await put.text()).slice(0, 200)}`);
    await put.arrayBuffer();
    await post(port, pair.seller, `/api/v1/chats/${pair.chatId}/messages`, {
      content: "",
      attachments: [grant.upload_id],
      client_msg_id: send.clientMsgId,
    });
  } catch (error) {
    send.error = (error as Error).message;
    pending.delete(send.clientMsgId);
    send.deliver();
  }
}

const resultsDir = process.env.BENCH_RESULTS_DIR ?? join(root, "bench/results");
mkdirSync(resultsDir, { recursive: true });
const resultsFile =
  photoConcurrency && photoConcurrency !== "2" ? `photos-concurrency-${photoConcurrency}.json` : "photos.json";
writeFileSync(join(resultsDir, resultsFile), `${JSON.stringify(result, null, 2)}\n`);

type Phase = Awaited<ReturnType<typeof phase>>;
const text = result.text as Phase;
const photos = result.photos as Phase;
const settings = result.settings as { users: number; photoConcurrency: number; database: string; photoBytes: number };
const mib = (kib: number) => (kib / 1024).toFixed(0);
const loop = (p: Phase) => p.instanceLoopDelay as unknown as { p99Ms: number; maxMs: number; utilization: number };
const row = (name: string, of: (p: Phase) => string | number) => console.log(`${name} | ${of(text)} | ${of(photos)}`);
console.log(
  `${photos.sends} photos of ${settings.photoBytes} bytes from ${settings.users} users, PHOTO_CONCURRENCY=${settings.photoConcurrency}, ${settings.database}, ${availableParallelism()} cores; written to ${join(resultsDir, resultsFile)}`,
);
console.log("measure | text (baseline) | photos");
row("sends (failed)", (p) => `${p.sends} (${p.failures})`);
row("end to end p50 / p99 / max ms", (p) => `${p.endToEnd.p50Ms} / ${p.endToEnd.p99Ms} / ${p.endToEnd.maxMs}`);
row("parts p50 ms: grant, PUT, send answer, delivery after it", (p) =>
  [p.parts.grant, p.parts.put, p.parts.send, p.parts.delivery].map((part) => part?.p50Ms ?? "-").join(", "),
);
row("throughput: sends/s (wall s)", (p) => `${p.sendsPerSecond} (${p.wallSeconds})`);
row("instance event-loop delay p99 / max ms", (p) => `${loop(p).p99Ms} / ${loop(p).maxMs}`);
row("instance event-loop utilization", (p) => loop(p).utilization);
row(
  "live socket ping→pong every 50 ms: p50 / p99 / max ms (the probe's own loop delay max)",
  (p) => `${p.liveSocket.p50Ms} / ${p.liveSocket.p99Ms} / ${p.liveSocket.maxMs} (${p.liveSocket.probeLoopDelayMaxMs})`,
);
row(
  "instance RSS MiB: start, peak (polled), VmHWM",
  (p) => `${mib(p.instanceRssKiB.atStart)}, ${mib(p.instanceRssKiB.peakPolled)}, ${mib(p.instanceRssKiB.hwm)}`,
);
row(
  "CPU s: chat (its main thread), S3, PostgreSQL, load generator",
  (p) =>
    `${p.cpuSeconds.chat} (${p.cpuSeconds.chatMainThread}), ${p.cpuSeconds.s3}, ${p.cpuSeconds.postgres}, ${p.cpuSeconds.loadGenerator}`,
);
row("CPU ms per send: chat (its main thread)", (p) => `${p.cpuMsPerSend.chat} (${p.cpuMsPerSend.chatMainThread})`);
row("instance GC pauses: major count, total / longest ms", (p) => {
  const major = (
    p.instanceLoopDelay as unknown as { gc: Record<string, { count: number; totalMs: number; maxMs: number }> }
  ).gc.major;
  return major ? `${major.count}, ${major.totalMs} / ${major.maxMs}` : "none";
});
row(
  "machine busy; other processes' CPU s, load average",
  (p) => `${p.machineBusy}; ${p.otherCpuSeconds}, ${p.loadAverage}`,
);
const ratio = result.ratio as { endToEndP50: number; endToEndP99: number; wall: number };
console.log(
  `photos / text: end to end p50 ${ratio.endToEndP50}×, p99 ${ratio.endToEndP99}×, wall ${ratio.wall}×; the instance's event-loop delay with photos p99 ${loop(photos).p99Ms} ms (target ≤ 20 ms: ${loop(photos).p99Ms <= 20 ? "met" : "missed"}), max ${loop(photos).maxMs} ms; the live socket's round trip p99 ${photos.liveSocket.p99Ms} ms`,
);
process.exit(0);
