/**
 * The compiled bundles (scripts/build.ts), the files the image runs: built into a temporary folder, started
 * with plain `node` (on PostgreSQL and Redis when they are given, as in CI; on PGlite otherwise), they serve
 * a basic chat, and they run on production dependencies alone. How they stop on signals, as PID 1, is
 * stop-signals.integration.test.ts.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import jwt from "jsonwebtoken";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ServiceName } from "../../../scripts/build.ts";
import { databaseTargets } from "../../listings-chat/test/support/databases.ts";
import { redisNamespace, redisUrl } from "../../listings-chat/test/support/redis.ts";
import { buildBundlesForSuite, gatewayEnv, healthy, repoRoot } from "./support/bundle-processes.ts";
import { describeOutcome, freePort, http, pollUntil, tryUpgrade } from "./support/e2e.ts";
import { type ServiceProcess, startChatProcess, startGatewayProcess } from "./support/processes.ts";

const secret = () => randomBytes(24).toString("hex");
const built = buildBundlesForSuite();

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
        const migrate = spawnSync(process.execPath, [join(built.paths()["listings-chat"], "../migrate.js")], {
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
      chat = await startChatProcess({ ...env, ...shared }, { bundle: built.paths()["listings-chat"] });
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
        { bundle: built.paths().gateway },
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
    cpSync(built.outDir(), join(runtime, "dist"), { recursive: true });
  }, 300_000);

  afterAll(() => {
    rmSync(runtime, { recursive: true, force: true });
  });

  it("has none of the development tools, and both services start and are ready on it", async () => {
    for (const tool of [
      "node",
      "tsx",
      "vitest",
      "@biomejs/biome",
      "turbo",
      "esbuild",
      "playwright-core",
      "drizzle-kit",
    ]) {
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
