/**
 * The compiled bundles (scripts/build.ts), the files the image runs: built into a temporary folder, started
 * with plain `node` (on PostgreSQL and Redis when they are given, as in CI; on PGlite otherwise), they serve
 * a basic chat. Started as PID 1 of a PID namespace, as in a container without an init (where a signal
 * with no handler is ignored), they stop on SIGTERM during start-up and once serving; and they run with a
 * read-only root filesystem.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import jwt from "jsonwebtoken";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildServices, type ServiceName } from "../../../scripts/build.ts";
import { databaseTargets } from "../../listings-chat/test/support/databases.ts";
import { redisNamespace, redisUrl } from "../../listings-chat/test/support/redis.ts";
import { describeOutcome, freePort, http, pollUntil, tryUpgrade } from "./support/e2e.ts";
import { type ServiceProcess, startChatProcess, startGatewayProcess } from "./support/processes.ts";

const repoRoot = fileURLToPath(new URL("../../../", import.meta.url));
const secret = () => randomBytes(24).toString("hex");
/** SIGTERM must end a service within this (CONTRACT §6: 10 s). */
const EXIT_WITHIN_MS = 10_000;

let outDir: string;
let bundles: Record<ServiceName, string>;

beforeAll(async () => {
  // Inside the repository (dist/ is ignored by git), so that the bundles find node_modules as in the image.
  mkdirSync(join(repoRoot, "dist"), { recursive: true });
  outDir = mkdtempSync(join(repoRoot, "dist", "test-"));
  bundles = await buildServices(outDir);
}, 60_000);

afterAll(() => {
  rmSync(outDir, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------------
// PID 1

interface Pid1Process {
  /** `unshare`, which waits for the namespace's PID 1 and exits with its code. */
  outer: ChildProcess;
  /** The service's pid as seen from here (1 inside its namespace). */
  pid: number;
  output(): string;
  exited: Promise<number | null>;
}

/** The pid `unshare` forked (the namespace's PID 1), once it runs node. */
async function namespaceInit(outer: ChildProcess): Promise<number> {
  let pid = 0;
  const found = await pollUntil(
    () => {
      try {
        pid = Number(readFileSync(`/proc/${outer.pid}/task/${outer.pid}/children`, "utf8").trim().split(" ")[0]);
        return pid > 0 && readFileSync(`/proc/${pid}/comm`, "utf8").trim() === "node";
      } catch {
        return false;
      }
    },
    10_000,
    2,
  );
  if (!found) throw new Error("unshare did not start node");
  return pid;
}

/**
 * Runs a bundle as PID 1 of a new PID namespace (`unshare --pid --fork`), with only `env`; with
 * `readOnlyRoot`, in a mount namespace whose root filesystem is remounted read-only first.
 */
async function startAsPid1(
  bundle: string,
  env: Record<string, string>,
  options: { readOnlyRoot?: boolean } = {},
): Promise<Pid1Process> {
  const readOnly = options.readOnlyRoot ? "mount --make-rprivate / && mount -o remount,bind,ro / && " : "";
  const outer = spawn(
    "unshare",
    [
      "--pid",
      "--fork",
      "--kill-child",
      "--mount",
      "sh",
      "-c",
      `${readOnly}exec "$@"`,
      "sh",
      process.execPath,
      "--enable-source-maps",
      bundle,
    ],
    { env: { PATH: process.env.PATH ?? "", ...env }, stdio: ["ignore", "pipe", "pipe"] },
  );
  let printed = "";
  outer.stdout?.on("data", (d) => {
    printed += d;
  });
  outer.stderr?.on("data", (d) => {
    printed += d;
  });
  const exited = new Promise<number | null>((resolve) => outer.once("exit", (code) => resolve(code)));
  const pid = await namespaceInit(outer);
  expect(readFileSync(`/proc/${pid}/status`, "utf8")).toMatch(/^NSpid:\s+\d+\s+1$/m);
  return { outer, pid, output: () => printed, exited };
}

/** Sends SIGTERM to the namespace's PID 1; its exit code and how long it took (SIGKILL after 15 s). */
async function sigterm(service: Pid1Process): Promise<{ code: number | null; ms: number }> {
  const sentAt = Date.now();
  process.kill(service.pid, "SIGTERM");
  const killer = setTimeout(() => service.outer.kill("SIGKILL"), 15_000);
  const code = await service.exited;
  clearTimeout(killer);
  return { code, ms: Date.now() - sentAt };
}

async function healthy(baseUrl: string, timeoutMs = 30_000) {
  return pollUntil(
    () =>
      fetch(`${baseUrl}/health`).then(
        (r) => r.ok,
        () => false,
      ),
    timeoutMs,
    50,
  );
}

/**
 * SIGTERM to the namespace's PID 1 every 10 ms from now until it exits (or 10 s): the signals that come
 * before it has a handler are ignored, as PID 1's are; the first one after lands. Sent by a shell loop of
 * its own, not from this process, whose event loop other test files may keep busy for longer than the
 * service takes to load.
 */
async function sigtermUntilExit(service: Pid1Process): Promise<number | null> {
  const sender = spawn(
    "sh",
    [
      "-c",
      `end=$(($(date +%s) + ${EXIT_WITHIN_MS / 1_000})); while kill -TERM ${service.pid} 2>/dev/null && [ $(date +%s) -lt $end ]; do sleep 0.01; done`,
    ],
    { stdio: "ignore" },
  );
  const killer = setTimeout(() => service.outer.kill("SIGKILL"), EXIT_WITHIN_MS + 2_000);
  const code = await service.exited;
  clearTimeout(killer);
  sender.kill("SIGKILL");
  return code;
}

/** A PostgreSQL that accepts connections and never answers, as a frozen server does. */
async function frozenPostgres(): Promise<{ url: string; connections(): number; close(): Promise<void> }> {
  const held = new Set<Socket>();
  const server: Server = createServer((socket) => {
    held.add(socket);
    socket.on("error", () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  return {
    url: `postgres://chat@127.0.0.1:${port}/chat`,
    connections: () => held.size,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of held) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

function gatewayEnv(port: number, chatPort: number, internalToken: string): Record<string, string> {
  return {
    NODE_ENV: "production",
    GATEWAY_HOST: "127.0.0.1",
    GATEWAY_PORT: String(port),
    CHAT_UPSTREAMS: `http://127.0.0.1:${chatPort}`,
    INTERNAL_TOKEN: internalToken,
    JWT_SECRET: secret(),
    JWT_AUDIENCE: "listings-chat",
    WS_TOKEN_SECRET: secret(),
    LOG_LEVEL: "info",
  };
}

describe("the bundles as PID 1", () => {
  it.each([
    ["gateway", false],
    ["listings-chat", true],
  ] as const)(
    "%s catches SIGTERM before it loads the service: one that comes while it loads ends it, exit 0",
    async (name, isChat) => {
      const port = await freePort();
      const env = isChat
        ? { NODE_ENV: "test", CHAT_HOST: "127.0.0.1", CHAT_PORT: String(port), LOG_LEVEL: "info" }
        : gatewayEnv(port, await freePort(), secret());
      const service = await startAsPid1(bundles[name], env);
      const code = await sigtermUntilExit(service);
      expect({ code, output: service.output() }).toMatchObject({ code: 0 });
      // The first signal that landed came while the service's modules were still loading, not after its start.
      expect(service.output()).toContain(`${name}: SIGTERM before start-up: exiting`);
    },
  );

  it("listings-chat stops on SIGTERM while its start-up waits for a PostgreSQL that does not answer", async () => {
    const database = await frozenPostgres();
    try {
      const port = await freePort();
      const chat = await startAsPid1(bundles["listings-chat"], {
        NODE_ENV: "production",
        CHAT_HOST: "127.0.0.1",
        CHAT_PORT: String(port),
        DATABASE_URL: database.url,
        INTERNAL_TOKEN: secret(),
        LOG_LEVEL: "info",
      });
      // Loaded, started, and waiting for a database that never answers.
      expect(await pollUntil(() => database.connections() > 0, 15_000), chat.output()).toBe(true);
      const { code, ms } = await sigterm(chat);
      expect({ code, output: chat.output() }).toMatchObject({ code: 0 });
      expect(chat.output()).toMatch(/still starting 2000 ms after SIGTERM: exiting/);
      expect(ms).toBeLessThan(5_000);
    } finally {
      await database.close();
    }
  });

  it("both stop with exit 0 on SIGTERM once serving, on a read-only root filesystem", async () => {
    const postgres = databaseTargets().find((t) => t.name === "postgres");
    const database = await postgres?.create();
    const internalToken = secret();
    try {
      const chatPort = await freePort();
      const chatEnv: Record<string, string> = {
        CHAT_HOST: "127.0.0.1",
        CHAT_PORT: String(chatPort),
        INTERNAL_TOKEN: internalToken,
        LOG_LEVEL: "info",
      };
      // Production needs PostgreSQL; PGlite (development) writes its data, so it gets a folder and no read-only root.
      const dataDir = mkdtempSync(join(tmpdir(), "lc-bundle-chat-"));
      if (database && "url" in database.options) {
        Object.assign(chatEnv, { NODE_ENV: "production", DATABASE_URL: database.options.url });
      } else Object.assign(chatEnv, { NODE_ENV: "test", DATA_DIR: dataDir });
      const chat = await startAsPid1(bundles["listings-chat"], chatEnv, { readOnlyRoot: Boolean(database) });
      expect(await healthy(`http://127.0.0.1:${chatPort}`), chat.output()).toBe(true);

      const port = await freePort();
      const gateway = await startAsPid1(bundles.gateway, gatewayEnv(port, chatPort, internalToken), {
        readOnlyRoot: true,
      });
      const baseUrl = `http://127.0.0.1:${port}`;
      expect(await healthy(baseUrl), gateway.output()).toBe(true);
      expect(await pollUntil(async () => (await http(baseUrl, "GET", "/ready")).status === 200, 15_000)).toBe(true);

      const stoppedGateway = await sigterm(gateway);
      expect({ code: stoppedGateway.code, output: gateway.output() }).toMatchObject({ code: 0 });
      expect(stoppedGateway.ms).toBeLessThan(EXIT_WITHIN_MS);
      const stoppedChat = await sigterm(chat);
      expect({ code: stoppedChat.code, output: chat.output() }).toMatchObject({ code: 0 });
      expect(stoppedChat.ms).toBeLessThan(EXIT_WITHIN_MS);
      rmSync(dataDir, { recursive: true, force: true });
    } finally {
      await database?.drop();
    }
  }, 60_000);
});

// ---------------------------------------------------------------------------------------------------
// A basic chat

/**
 * A database and a role made by the SQL of infra/postgres/10-chat-role.sh (what compose runs), with names of
 * this run's own: the services then connect as a role with no superuser, CREATEDB or CREATEROLE.
 */
function leastPrivilegedDatabase(adminUrl: string): { url: string; drop(): void } {
  const script = readFileSync(join(repoRoot, "infra/postgres/10-chat-role.sh"), "utf8");
  const sql = /<<'SQL'\n([\s\S]*?)\nSQL\n/.exec(script)?.[1];
  if (!sql) throw new Error("no SQL block in infra/postgres/10-chat-role.sh");
  const suffix = `${process.pid}_${randomBytes(3).toString("hex")}`;
  const [role, database] = [`lc_app_${suffix}`, `lc_lp_${suffix}`];
  const psql = (input: string, ...args: string[]) => {
    const run = spawnSync("psql", [adminUrl, "-v", "ON_ERROR_STOP=1", "-At", ...args], { input, encoding: "utf8" });
    if (run.status !== 0) throw new Error(`psql failed: ${run.stderr}`);
    return run.stdout.trim();
  };
  psql(sql.replaceAll("chat_app", role).replaceAll("DATABASE chat ", `DATABASE ${database} `), "--set=password=unused");
  expect(psql(`select rolsuper, rolcreatedb, rolcreaterole from pg_roles where rolname = '${role}'`)).toBe("f|f|f");
  const url = new URL(adminUrl);
  url.username = role;
  url.password = "unused"; // trust authentication on the test server
  url.pathname = `/${database}`;
  return {
    url: url.toString(),
    drop: () => {
      psql(`drop database if exists ${database} with (force); drop role if exists ${role};`);
    },
  };
}

describe.each(databaseTargets().map((t) => [t.name, t] as const))(
  "the bundles serve a basic chat (%s; PostgreSQL as the least-privileged role of compose)",
  (_, target) => {
    let chat: ServiceProcess | undefined;
    let gateway: ServiceProcess | undefined;
    let cleanups: Array<() => Promise<void>> = [];
    const internalToken = secret();
    const jwtSecret = secret();

    beforeAll(async () => {
      const env: Record<string, string> = { INTERNAL_TOKEN: internalToken };
      const adminUrl = process.env.DATABASE_URL;
      if (target.name === "postgres" && adminUrl) {
        const database = leastPrivilegedDatabase(adminUrl);
        cleanups.push(async () => database.drop());
        Object.assign(env, { NODE_ENV: "production", DATABASE_URL: database.url });
        // What the Kubernetes init container runs: the migrations alone, then exit 0.
        const migrate = spawnSync(process.execPath, [join(bundles["listings-chat"], "../migrate.js")], {
          env: { PATH: process.env.PATH ?? "", ...env },
          encoding: "utf8",
          timeout: 60_000,
        });
        expect(migrate.status, migrate.stderr).toBe(0);
        expect(migrate.stdout).toContain("migrations applied");
      }
      const redis = redisUrl();
      const shared: Record<string, string> = {};
      if (redis) {
        const namespace = redisNamespace(redis);
        cleanups.push(namespace.drop);
        Object.assign(shared, { REDIS_URL: redis, REDIS_KEY_PREFIX: namespace.keyPrefix });
      }
      chat = await startChatProcess({ ...env, ...shared }, { bundle: bundles["listings-chat"] });
      gateway = await startGatewayProcess(
        {
          ...shared,
          NODE_ENV: "production",
          DEV_AUTH: "0",
          INTERNAL_TOKEN: internalToken,
          JWT_SECRET: jwtSecret,
          JWT_AUDIENCE: "listings-chat",
          WS_TOKEN_SECRET: secret(),
          CHAT_UPSTREAMS: chat.baseUrl,
        },
        { bundle: bundles.gateway },
      );
    }, 60_000);

    afterAll(async () => {
      expect(await gateway?.stop()).toBe(0);
      expect(await chat?.stop()).toBe(0);
      for (const cleanup of cleanups) await cleanup();
      cleanups = [];
    }, 60_000);

    it("ws-tokens, sockets, a chat, a message sent on one socket and received on the other, and its history", async () => {
      const bearer = (userId: number) => ({
        authorization: `Bearer ${jwt.sign({ sub: String(userId) }, jwtSecret, { algorithm: "HS256", expiresIn: 600, audience: "listings-chat" })}`,
      });
      const base = gateway!.baseUrl;
      const connect = async (userId: number) => {
        const issued = await http(base, "POST", "/api/v2/ws-token", { headers: bearer(userId) });
        expect(issued.status, issued.text).toBe(200);
        const outcome = await tryUpgrade(`ws://127.0.0.1:${gateway!.port}/ws/chat?token=${issued.body.token}`);
        if (outcome.kind !== "open") throw new Error(`upgrade as ${userId}: ${describeOutcome(outcome)}`);
        await outcome.socket.waitFor((f) => f.type === "connected");
        return outcome.socket;
      };
      const [buyer, seller] = [7_001, 7_002];
      const buyerSocket = await connect(buyer);
      const sellerSocket = await connect(seller);

      // The platform registers the listing first: production requires it (LISTINGS_REQUIRED, CONTRACT §8).
      const registered = await http(chat!.baseUrl, "PUT", "/internal/chat/listings/77", {
        headers: { "x-internal-token": internalToken },
        body: {
          seller_id: seller,
          title: "A bike",
          price_minor: 12_000,
          currency: "EUR",
          image_url: null,
          url: "https://marketplace.example/listings/77",
          status: "active",
        },
      });
      expect(registered.status, registered.text).toBe(200);
      const created = await http(base, "POST", "/api/v1/chats", {
        headers: bearer(buyer),
        body: { listing_id: 77, seller_id: seller },
      });
      expect(created.status, created.text).toBe(201);
      const chatId: number = created.body.id;
      await sellerSocket.waitFor((f) => f.type === "chat_created" && f.chat.id === chatId);

      buyerSocket.send({
        type: "send_message",
        chat_id: chatId,
        content: "is it still for sale?",
        client_msg_id: "m-1",
      });
      await buyerSocket.waitFor((f) => f.type === "ack");
      const received = await sellerSocket.waitFor((f) => f.type === "new_message");
      expect(received.message).toMatchObject({ chat_id: chatId, sender_id: buyer, content: "is it still for sale?" });

      const history = await http(base, "GET", `/api/v1/chats/${chatId}/messages`, { headers: bearer(seller) });
      expect(history.status, history.text).toBe(200);
      expect(JSON.stringify(history.body)).toContain("is it still for sale?");
      buyerSocket.close();
      sellerSocket.close();
    });
  },
);

// ---------------------------------------------------------------------------------------------------
// The production install

describe("the bundles on production dependencies alone (npm ci --omit=dev, as the image installs them)", () => {
  let runtime: string;

  beforeAll(() => {
    // Outside the repository, so that nothing resolves from its node_modules: the image's /app, in small.
    runtime = mkdtempSync(join(tmpdir(), "lc-runtime-"));
    for (const file of [
      "package.json",
      "package-lock.json",
      "shared/package.json",
      "services/gateway/package.json",
      "services/listings-chat/package.json",
    ]) {
      mkdirSync(join(runtime, file, ".."), { recursive: true });
      cpSync(join(repoRoot, file), join(runtime, file));
    }
    const install = spawnSync("npm", ["ci", "--omit=dev", "--no-audit", "--no-fund"], {
      cwd: runtime,
      encoding: "utf8",
      timeout: 240_000,
    });
    expect(install.status, `${install.stdout}${install.stderr}`).toBe(0);
    expect(install.stderr).not.toMatch(/EBADENGINE/);
    cpSync(join(outDir), join(runtime, "dist"), { recursive: true });
  }, 300_000);

  afterAll(() => {
    rmSync(runtime, { recursive: true, force: true });
  });

  it("has none of the development tools, and both services start and are ready on it", async () => {
    for (const tool of ["tsx", "vitest", "@biomejs/biome", "turbo", "esbuild", "playwright-core", "drizzle-kit"]) {
      expect(existsSync(join(runtime, "node_modules", tool)), tool).toBe(false);
    }
    const internalToken = secret();
    const chatPort = await freePort();
    const postgres = databaseTargets().find((t) => t.name === "postgres");
    const database = await postgres?.create();
    const dataDir = mkdtempSync(join(tmpdir(), "lc-runtime-data-"));
    const started: ChildProcess[] = [];
    try {
      const start = (service: ServiceName, env: Record<string, string>) => {
        const child = spawn(process.execPath, [join(runtime, "dist", service, "main.js")], {
          cwd: runtime,
          env: { PATH: process.env.PATH ?? "", ...env },
          stdio: "ignore",
        });
        started.push(child);
      };
      start("listings-chat", {
        CHAT_HOST: "127.0.0.1",
        CHAT_PORT: String(chatPort),
        INTERNAL_TOKEN: internalToken,
        ...(database && "url" in database.options
          ? { NODE_ENV: "production", DATABASE_URL: database.options.url }
          : { NODE_ENV: "test", DATA_DIR: dataDir }),
      });
      expect(await healthy(`http://127.0.0.1:${chatPort}`)).toBe(true);
      const port = await freePort();
      start("gateway", gatewayEnv(port, chatPort, internalToken));
      const baseUrl = `http://127.0.0.1:${port}`;
      expect(await healthy(baseUrl)).toBe(true);
      expect(await pollUntil(async () => (await http(baseUrl, "GET", "/ready")).status === 200, 20_000)).toBe(true);
    } finally {
      for (const child of started) child.kill("SIGTERM");
      await Promise.all(started.map((child) => new Promise((resolve) => child.once("exit", resolve))));
      await database?.drop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  }, 60_000);
});
