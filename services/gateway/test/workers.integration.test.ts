/**
 * GATEWAY_WORKERS=2: a supervisor and two gateway processes on one port (SO_REUSEPORT), as real processes
 * in front of a real listings-chat instance, on the real Redis of REDIS_URL. Which worker holds a
 * connection is read from /proc (support/process-tree.ts), so that a test can speak to each on purpose.
 */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { connect as netConnect, type Socket } from "node:net";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { redisNamespace, redisUrl } from "../../listings-chat/test/support/redis.ts";
import { type E2EChat, freePort, pollUntil, randomSecret, startE2EChat, upgradeHead } from "./support/e2e.ts";
import { acceptedBy, commandLine, descendants, hasExited } from "./support/process-tree.ts";
import { type ServiceProcess, startGatewayProcess } from "./support/processes.ts";

const redis = redisUrl();
const gatewayMain = fileURLToPath(new URL("../src/main.ts", import.meta.url));

/** The gateway's workers: worker number → pid. */
function workerPids(gateway: ServiceProcess): Map<number, number> {
  const workers = new Map<number, number>();
  for (const pid of descendants(gateway.pid)) {
    const number = /--gateway-worker=(\d+)/.exec(commandLine(pid))?.[1];
    if (number) workers.set(Number(number), pid);
  }
  return workers;
}

/** One HTTP/1.1 connection of our own, to send requests on and read their answers from. */
interface Connection {
  socket: Socket;
  /** Sends a request head (and body) and reads one answer: by Content-Length, or until close. */
  exchange(request: string): Promise<{ status: number; headers: Record<string, string>; body: Buffer }>;
  /** The head of an upgrade's answer, and what follows on the socket as WebSocket frames. */
  upgrade(path: string): Promise<{ status: number; closeCode: () => Promise<number | undefined> }>;
}

async function openConnection(port: number): Promise<Connection> {
  const socket = netConnect({ port, host: "127.0.0.1" });
  socket.on("error", () => {});
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", () => resolve());
    socket.once("error", reject);
  });
  let buffered = Buffer.alloc(0);
  let wake: (() => void) | undefined;
  let closed = false;
  socket.on("data", (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    wake?.();
  });
  socket.once("close", () => {
    closed = true;
    wake?.();
  });
  const waitFor = async <T>(take: () => T | undefined, timeoutMs = 5_000): Promise<T> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const taken = take();
      if (taken !== undefined) return taken;
      if (closed) throw new Error(`the connection closed; it had: ${buffered.toString()}`);
      if (Date.now() > deadline) throw new Error(`no answer within ${timeoutMs} ms; so far: ${buffered.toString()}`);
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, 50);
      });
    }
  };
  const head = () => {
    const end = buffered.indexOf("\r\n\r\n");
    if (end === -1) return undefined;
    const [statusLine = "", ...lines] = buffered.subarray(0, end).toString().split("\r\n");
    const headers: Record<string, string> = {};
    for (const line of lines) {
      const colon = line.indexOf(":");
      headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
    return { status: Number(statusLine.split(" ")[1]), headers, bodyAt: end + 4 };
  };
  return {
    socket,
    async exchange(request) {
      socket.write(request);
      const { status, headers, bodyAt } = await waitFor(head);
      const length = Number(headers["content-length"] ?? Number.NaN);
      const body = await waitFor(() => {
        if (Number.isFinite(length)) {
          return buffered.length >= bodyAt + length ? buffered.subarray(bodyAt, bodyAt + length) : undefined;
        }
        return closed ? buffered.subarray(bodyAt) : undefined;
      });
      buffered = buffered.subarray(bodyAt + body.length);
      return { status, headers, body };
    },
    async upgrade(path) {
      socket.write(`${upgradeHead(path)}\r\n`);
      const { status, bodyAt } = await waitFor(head);
      const closeCode = async () => {
        await waitFor(() => (closed ? true : undefined), 10_000).catch(() => {});
        // Server frames are unmasked: opcode 8 is a close, its first two payload bytes the code.
        let at = bodyAt;
        while (at + 2 <= buffered.length) {
          const opcode = buffered[at]! & 0x0f;
          let length = buffered[at + 1]! & 0x7f;
          let payload = at + 2;
          if (length === 126) {
            length = buffered.readUInt16BE(at + 2);
            payload = at + 4;
          }
          if (opcode === 8) return length >= 2 ? buffered.readUInt16BE(payload) : undefined;
          at = payload + length;
        }
        return undefined;
      };
      return { status, closeCode };
    },
  };
}

/** A connection that worker `pid` accepted: connections are opened until the kernel gives one to it. */
async function connectionTo(port: number, pid: number, pids: number[]): Promise<Connection> {
  const others: Connection[] = [];
  try {
    for (let i = 0; i < 200; i++) {
      const connection = await openConnection(port);
      let owner: number | undefined;
      await pollUntil(() => {
        owner = acceptedBy(pids, port, connection.socket.localPort ?? 0);
        return owner !== undefined;
      }, 2_000);
      if (owner === pid) return connection;
      others.push(connection);
    }
    throw new Error(`no connection of 200 went to worker ${pid}`);
  } finally {
    for (const other of others) other.socket.destroy();
  }
}

/** GET /health on a connection of its own (no keep-alive pool that could hold one to a dead worker). */
function healthOnce(port: number): Promise<number> {
  return new Promise((resolve) => {
    const req = httpRequest({ host: "127.0.0.1", port, path: "/health", agent: false }, (res) => {
      res.resume();
      res.once("end", () => resolve(res.statusCode ?? 0));
    });
    req.once("error", () => resolve(-1));
    req.end();
  });
}

/** The value of the series `name{labels}` in Prometheus text, or undefined. */
function series(text: string, name: string, labels = ""): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${name}${labels} `));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(" ") + 1));
}

describe.skipIf(!redis)("GATEWAY_WORKERS=2: two gateway processes on one port", () => {
  const internalToken = randomSecret();
  const namespace = redisNamespace(redis ?? "");
  let chat: E2EChat;
  let gateway: ServiceProcess;
  let workers: Map<number, number>;
  const pids = () => [...workers.values()];

  const metrics = async () => {
    const res = await fetch(`${gateway.baseUrl}/metrics`, { headers: { "x-internal-token": internalToken } });
    expect(res.status).toBe(200);
    return res.text();
  };
  const wsToken = async (userId: number) => {
    const dev = await fetch(`${gateway.baseUrl}/api/dev/token`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ user_id: userId }),
    });
    const { access_token } = (await dev.json()) as { access_token: string };
    const res = await fetch(`${gateway.baseUrl}/api/v2/ws-token`, {
      method: "POST",
      headers: { authorization: `Bearer ${access_token}` },
    });
    return ((await res.json()) as { token: string }).token;
  };
  /** Until both workers listen, and their pids. */
  const bothServing = async () => {
    const serving = await pollUntil(async () => {
      workers = workerPids(gateway);
      return workers.size === 2 && series(await metrics(), "listings_chat_gateway_workers_reporting") === 2;
    }, 30_000);
    expect(serving, gateway.output()).toBe(true);
  };

  beforeAll(async () => {
    chat = await startE2EChat({ database: { inMemory: true }, internalToken });
    gateway = await startGatewayProcess({
      GATEWAY_WORKERS: "2",
      CHAT_UPSTREAMS: chat.baseUrl,
      INTERNAL_TOKEN: internalToken,
      REDIS_URL: redis ?? "",
      REDIS_KEY_PREFIX: namespace.keyPrefix,
      SHUTDOWN_DRAIN_MS: "2000",
    });
    await bothServing();
  }, 60_000);

  afterAll(async () => {
    await gateway?.stop("SIGKILL");
    for (const pid of workers?.values() ?? []) {
      if (existsSync(`/proc/${pid}`)) process.kill(pid, "SIGKILL");
    }
    await chat?.stop();
    await namespace.drop();
  });

  it("both workers take connections on the one port", async () => {
    const connections = await Promise.all(Array.from({ length: 40 }, () => openConnection(gateway.port)));
    try {
      // Each of ours, by its client port (the test's keep-alive fetches hold connections there too).
      let owners: Array<number | undefined> = [];
      await pollUntil(() => {
        owners = connections.map((c) => acceptedBy(pids(), gateway.port, c.socket.localPort ?? 0));
        return owners.every((owner) => owner !== undefined);
      });
      const perWorker = pids().map((pid) => owners.filter((owner) => owner === pid).length);
      expect(perWorker.reduce((a, b) => a + b, 0)).toBe(40);
      // Both, not one: all 40 on one worker happens with probability 2^-39 when the kernel spreads them.
      for (const count of perWorker) expect(count).toBeGreaterThan(0);
    } finally {
      for (const connection of connections) connection.socket.destroy();
    }
  });

  it("a ws-token used at one worker is refused at the other (the replay store is Redis)", async () => {
    const [first, second] = pids() as [number, number];
    const atFirst = await connectionTo(gateway.port, first, pids());
    const atSecond = await connectionTo(gateway.port, second, pids());
    try {
      const token = await wsToken(4_101);
      expect((await atFirst.upgrade(`/ws/chat?token=${token}`)).status).toBe(101);
      const replay = await atSecond.exchange(`${upgradeHead(`/ws/chat?token=${token}`)}\r\n`);
      expect(replay.status).toBe(401);
      expect(JSON.parse(replay.body.toString())).toMatchObject({ error: { code: "unauthorized" } });
      expect(replay.body.toString()).toMatch(/already used/);
    } finally {
      atFirst.socket.destroy();
      atSecond.socket.destroy();
    }
  });

  it("/metrics, whichever worker answers it, counts the requests of both", async () => {
    const health = (text: string) =>
      series(
        text,
        "listings_chat_gateway_http_request_duration_seconds_count",
        '{route="/health",method="GET",status="200"}',
      ) ?? 0;
    const [first, second] = pids() as [number, number];
    const atFirst = await connectionTo(gateway.port, first, pids());
    const atSecond = await connectionTo(gateway.port, second, pids());
    try {
      const before = health(await metrics());
      const get = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
      for (let i = 0; i < 3; i++) expect((await atFirst.exchange(get)).status).toBe(200);
      for (let i = 0; i < 5; i++) expect((await atSecond.exchange(get)).status).toBe(200);
      // Scraped on each worker in turn: each answers the sum, 3 + 5, not its own 3 or 5.
      for (const connection of [atFirst, atSecond]) {
        const scrape = await connection.exchange(
          `GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Internal-Token: ${internalToken}\r\n\r\n`,
        );
        expect(scrape.status).toBe(200);
        const text = scrape.body.toString();
        expect(health(text) - before).toBe(8);
        expect(series(text, "listings_chat_gateway_workers")).toBe(2);
        expect(series(text, "listings_chat_gateway_workers_reporting")).toBe(2);
      }
    } finally {
      atFirst.socket.destroy();
      atSecond.socket.destroy();
    }
  });

  it("a killed worker is started again, and the port answers all along", async () => {
    const [number, pid] = [...workers.entries()][1]!;
    process.kill(pid, "SIGKILL");
    // Gone, reaped by the supervisor: not merely a zombie. A killed process's main thread shows "Z" while its
    // other threads still exit, and its listening socket lives as long as the last of them: a connection the
    // kernel gave it meanwhile was reset (seen once in CI, under load).
    expect(await pollUntil(() => !existsSync(`/proc/${pid}`), 5_000)).toBe(true);
    // While it is down and while it starts again, the other worker takes every new connection (what the
    // killed one had accepted, or had waiting in its accept queue, was reset with it).
    const statuses: number[] = [];
    let replaced = false;
    const deadline = Date.now() + 30_000;
    while (!replaced && Date.now() < deadline) {
      statuses.push(await healthOnce(gateway.port));
      const again = workerPids(gateway).get(number);
      replaced = again !== undefined && again !== pid;
    }
    expect(replaced, gateway.output()).toBe(true);
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
    await bothServing();
    expect(series(await metrics(), "listings_chat_gateway_worker_restarts_total")).toBe(1);
    // The worker killed: the second of the map, whichever number it has (the map is filled as workers report).
    expect(gateway.output()).toContain(`worker ${number} exited while serving: starting it again in 250 ms`);
  }, 60_000);

  it("SIGTERM: each worker's pipes are closed with 1001, and all exit 0 within 10 s, leaving no process", async () => {
    const [first, second] = pids() as [number, number];
    const atFirst = await connectionTo(gateway.port, first, pids());
    const atSecond = await connectionTo(gateway.port, second, pids());
    const sockets = [
      await atFirst.upgrade(`/ws/chat?token=${await wsToken(4_201)}`),
      await atSecond.upgrade(`/ws/chat?token=${await wsToken(4_202)}`),
    ];
    expect(sockets.map((s) => s.status)).toEqual([101, 101]);
    const everyone = [gateway.pid, ...descendants(gateway.pid)];
    const started = Date.now();
    const code = await gateway.stop("SIGTERM");
    expect(code, gateway.output()).toBe(0);
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(await Promise.all(sockets.map((s) => s.closeCode()))).toEqual([1001, 1001]);
    // The supervisor waited for its workers: none is left, nor anything they started.
    expect(everyone.filter((pid) => !hasExited(pid))).toEqual([]);
  }, 30_000);
});

/** Runs the gateway until it exits by itself (within 30 s): its exit code and everything it printed. */
async function runUntilExit(env: Record<string, string>) {
  const child = spawn(process.execPath, [gatewayMain], {
    // Secrets of its own and LOG_LEVEL=warn: nothing else to print than why it stops.
    env: {
      PATH: process.env.PATH ?? "",
      GATEWAY_HOST: "127.0.0.1",
      NODE_ENV: "test",
      LOG_LEVEL: "warn",
      INTERNAL_TOKEN: randomSecret(),
      JWT_SECRET: randomSecret(),
      WS_TOKEN_SECRET: randomSecret(),
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout.on("data", (d) => {
    output += d;
  });
  child.stderr.on("data", (d) => {
    output += d;
  });
  const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
  clearTimeout(timer);
  return { code, lines: output.trim().split("\n"), pid: child.pid ?? 0 };
}

describe("GATEWAY_WORKERS: a gateway that cannot start says why once, and exits 1", () => {
  it("more than one worker without REDIS_URL", async () => {
    const { code, lines } = await runUntilExit({ GATEWAY_WORKERS: "3", GATEWAY_PORT: String(await freePort()) });
    expect(code).toBe(1);
    expect(lines).toEqual([
      expect.stringMatching(/^gateway: GATEWAY_WORKERS=3 needs REDIS_URL: .*MAX_SOCKETS_PER_USER.*GATEWAY_WORKERS=1$/),
    ]);
  });

  it("a bad variable, with Redis", async () => {
    const { code, lines } = await runUntilExit({
      GATEWAY_WORKERS: "3",
      REDIS_URL: redis ?? "redis://127.0.0.1:6379",
      GATEWAY_PORT: String(await freePort()),
      MAX_SOCKETS_PER_USER: "0",
    });
    expect(code).toBe(1);
    expect(lines).toEqual([expect.stringMatching(/^gateway: invalid MAX_SOCKETS_PER_USER: /)]);
  });

  it("GATEWAY_WORKERS that is not a whole number from 1 to 256", async () => {
    for (const value of ["0", "two", "257"]) {
      const { code, lines } = await runUntilExit({ GATEWAY_WORKERS: value, GATEWAY_PORT: String(await freePort()) });
      expect(code, value).toBe(1);
      expect(lines, value).toEqual([
        expect.stringMatching(/^gateway: invalid GATEWAY_WORKERS: must be a whole number/),
      ]);
    }
  });

  it.skipIf(!redis)("a port another process holds (without SO_REUSEPORT)", async () => {
    const holder = (await import("node:net")).createServer();
    await new Promise<void>((resolve) => holder.listen(0, "127.0.0.1", resolve));
    const port = (holder.address() as { port: number }).port;
    try {
      const { code, lines } = await runUntilExit({
        GATEWAY_WORKERS: "3",
        REDIS_URL: redis ?? "",
        GATEWAY_PORT: String(port),
      });
      expect(code).toBe(1);
      expect(lines).toEqual([
        expect.stringMatching(new RegExp(`^gateway: cannot listen on 127.0.0.1:${port}: the address is in use`)),
      ]);
    } finally {
      holder.close();
    }
  });
});

describe.skipIf(!redis)("GATEWAY_WORKERS=2 when the supervisor is killed", () => {
  it("the workers stop by themselves (their pipes drained, as at SIGTERM), leaving no process", async () => {
    const namespace = redisNamespace(redis ?? "");
    const gateway = await startGatewayProcess({
      GATEWAY_WORKERS: "2",
      REDIS_URL: redis ?? "",
      REDIS_KEY_PREFIX: namespace.keyPrefix,
      SHUTDOWN_DRAIN_MS: "500",
    });
    try {
      let workers: number[] = [];
      const bothStarted = () => {
        workers = [...workerPids(gateway).values()];
        return workers.length === 2;
      };
      expect(await pollUntil(bothStarted, 30_000)).toBe(true);
      await gateway.stop("SIGKILL");
      const gone = await pollUntil(() => workers.every(hasExited), 10_000);
      expect(gone, workers.map((pid) => `${pid}: ${commandLine(pid)}`).join("\n")).toBe(true);
    } finally {
      await namespace.drop();
    }
  }, 60_000);
});
