/**
 * A stop signal at any moment of a service's life stops it: while its modules load, while its start-up waits
 * for PostgreSQL, for another instance's migrations or for Redis, at a spread of moments across a whole
 * start-up, and once serving. The bundles the image runs, each as PID 1 of a PID namespace (as in a container
 * without an init, where a signal with no handler is ignored). A start-up that a signal stopped never opens its
 * port (startup.ts); it exits 0 at once, having served nothing.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { describe, expect, it } from "vitest";
import { MIGRATION_LOCK_KEY } from "../../listings-chat/src/db/client.ts";
import { databaseTargets } from "../../listings-chat/test/support/databases.ts";
import {
  buildBundlesForSuite,
  EXIT_WITHIN_MS,
  frozenServer,
  gatewayEnv,
  healthy,
  type Pid1Process,
  sigterm,
  sigtermUntilExit,
  startAsPid1,
} from "./support/bundle-processes.ts";
import { freePort, http, pollUntil, randomSecret as secret } from "./support/e2e.ts";

const bundles = buildBundlesForSuite();

function chatEnv(port: number): Record<string, string> {
  return {
    NODE_ENV: "production",
    CHAT_HOST: "127.0.0.1",
    CHAT_PORT: String(port),
    INTERNAL_TOKEN: secret(),
    LOG_LEVEL: "info",
  };
}

function databaseUrl(database: { options: object }): string {
  if (!("url" in database.options)) throw new Error("a PostgreSQL database");
  return String(database.options.url);
}

/** The first of `needles` in `text`, or -1. */
function firstIndex(text: string, needles: string[]): number {
  const found = needles.map((needle) => text.indexOf(needle)).filter((at) => at >= 0);
  return found.length ? Math.min(...found) : -1;
}

/** The service never said it listened, and its port refuses connections. */
async function expectNeverListened(service: Pid1Process, port: number) {
  expect(service.output()).not.toMatch(/listening/);
  const refused = await new Promise<boolean>((resolve) => {
    const socket = connect({ port, host: "127.0.0.1" });
    socket.once("connect", () => {
      socket.destroy();
      resolve(false);
    });
    socket.once("error", () => resolve(true));
  });
  expect(refused).toBe(true);
}

describe("a signal at each moment of start-up, to the bundles as PID 1", () => {
  it.each([
    ["gateway", false],
    ["listings-chat", true],
  ] as const)(
    "%s catches SIGTERM from its first line: one that comes while its modules load ends it before anything starts, exit 0",
    async (name, isChat) => {
      const port = await freePort();
      const env = isChat
        ? { NODE_ENV: "test", CHAT_HOST: "127.0.0.1", CHAT_PORT: String(port), LOG_LEVEL: "info" }
        : gatewayEnv(port, await freePort(), secret());
      const service = await startAsPid1(bundles.paths()[name], env);
      const code = await sigtermUntilExit(service);
      expect({ code, output: service.output() }).toMatchObject({ code: 0 });
      // The signal came while the service's modules were still loading: nothing started.
      expect(service.output()).toContain(`${name}: SIGTERM before start-up: exiting`);
    },
  );

  it("listings-chat stops at once on SIGTERM while its start-up waits for a PostgreSQL that does not answer", async () => {
    const database = await frozenServer();
    try {
      const port = await freePort();
      const chat = await startAsPid1(bundles.paths()["listings-chat"], {
        ...chatEnv(port),
        DATABASE_URL: `postgres://chat@127.0.0.1:${database.port}/chat`,
      });
      // Loaded, started, and waiting for a database that never answers.
      expect(await pollUntil(() => database.connections() > 0, 15_000), chat.output()).toBe(true);
      const { code, ms } = await sigterm(chat);
      expect({ code, output: chat.output() }).toMatchObject({ code: 0 });
      expect(chat.output()).toMatch(/listings-chat stopped during start-up \(database\): exiting/);
      expect(chat.output()).not.toMatch(/still starting/);
      expect(ms).toBeLessThan(2_000);
      await expectNeverListened(chat, port);
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
      const chat = await startAsPid1(bundles.paths()["listings-chat"], chatEnv, { readOnlyRoot: Boolean(database) });
      expect(await healthy(`http://127.0.0.1:${chatPort}`), chat.output()).toBe(true);

      const port = await freePort();
      const gateway = await startAsPid1(bundles.paths().gateway, gatewayEnv(port, chatPort, internalToken), {
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

  // The tests below need PostgreSQL (the migration lock, a real start-up): CI sets DATABASE_URL.
  const postgres = databaseTargets().find((t) => t.name === "postgres");

  it("listings-chat stops at once on SIGTERM while it waits for another instance's migrations", async () => {
    if (!postgres) return expect(process.env.CI, "CI runs this on PostgreSQL").toBeFalsy();
    const database = await postgres.create();
    const otherInstance = new pg.Client({ connectionString: databaseUrl(database) });
    await otherInstance.connect();
    try {
      await otherInstance.query("select pg_advisory_lock($1)", [MIGRATION_LOCK_KEY]);
      const port = await freePort();
      const chat = await startAsPid1(bundles.paths()["listings-chat"], {
        ...chatEnv(port),
        DATABASE_URL: databaseUrl(database),
      });
      // The runner tries the lock every 200 ms (it never waits inside a statement: see takeMigrationLock): its
      // session shows that try as its query while it waits.
      const waiting = async () =>
        (
          await otherInstance.query(
            `select count(*)::int as n from pg_stat_activity
              where datname = current_database() and pid <> pg_backend_pid() and query like '%pg_try_advisory_lock%'`,
          )
        ).rows[0].n as number;
      expect(await pollUntil(async () => (await waiting()) === 1, 15_000), chat.output()).toBe(true);
      const { code, ms } = await sigterm(chat);
      expect({ code, output: chat.output() }).toMatchObject({ code: 0 });
      expect(chat.output()).toMatch(/listings-chat stopped during start-up \(database\): exiting/);
      expect(ms).toBeLessThan(2_000);
      await expectNeverListened(chat, port);
      // Its session is gone with it: nothing waits for the lock any more.
      expect(await pollUntil(async () => (await waiting()) === 0, 5_000)).toBe(true);
    } finally {
      await otherInstance.end();
      await database.drop();
    }
  });

  it("listings-chat stops at once on SIGTERM while its start-up waits for a Redis that does not answer", async () => {
    if (!postgres) return expect(process.env.CI, "CI runs this on PostgreSQL").toBeFalsy();
    const database = await postgres.create();
    const redis = await frozenServer();
    try {
      const port = await freePort();
      const chat = await startAsPid1(bundles.paths()["listings-chat"], {
        ...chatEnv(port),
        DATABASE_URL: databaseUrl(database),
        REDIS_URL: `redis://127.0.0.1:${redis.port}`,
      });
      // Migrated, and waiting for the bus's connections to a Redis that never answers.
      expect(await pollUntil(() => redis.connections() >= 2, 30_000), chat.output()).toBe(true);
      const { code, ms } = await sigterm(chat);
      expect({ code, output: chat.output() }).toMatchObject({ code: 0 });
      expect(chat.output()).toMatch(/listings-chat stopped during start-up \(redis\): exiting/);
      expect(ms).toBeLessThan(2_000);
      await expectNeverListened(chat, port);
    } finally {
      await redis.close();
      await database.drop();
    }
  });

  // Any moment: SIGTERM from a spread of delays after the process starts, across its whole start-up (measured
  // first). Whatever step it lands in, the service exits 0 within 10 s, and it never listens after the signal.
  it.each(["listings-chat", "gateway"] as const)(
    "%s: a SIGTERM at any moment of start-up stops it, and it never listens after the signal",
    async (name) => {
      if (name === "listings-chat" && !postgres) return expect(process.env.CI).toBeFalsy();
      const start = async () => {
        const database = name === "listings-chat" ? await postgres?.create() : undefined;
        const port = await freePort();
        const env =
          name === "listings-chat"
            ? { ...chatEnv(port), DATABASE_URL: database ? databaseUrl(database) : "" }
            : gatewayEnv(port, await freePort(), secret());
        const spawnedAt = Date.now();
        const service = await startAsPid1(bundles.paths()[name], env);
        return { service, port, spawnedAt, drop: async () => database?.drop() };
      };
      // How long a whole start-up takes here, on a fresh database.
      const first = await start();
      try {
        expect(await pollUntil(() => first.service.output().includes(`${name} listening`), 30_000)).toBe(true);
      } finally {
        await sigterm(first.service);
        await first.drop();
      }
      const startUpMs = Date.now() - first.spawnedAt;
      const moments = [0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 1].map((share) => Math.round(share * startUpMs));
      const outcomes: string[] = [];
      for (const delay of moments) {
        const run = await start();
        try {
          await new Promise((resolve) => setTimeout(resolve, Math.max(0, run.spawnedAt + delay - Date.now())));
          const code = await sigtermUntilExit(run.service);
          const output = run.service.output();
          expect({ delay, code, output }).toMatchObject({ code: 0 });
          const stoppedAt = firstIndex(output, [`${name}: SIGTERM before start-up`, "shutting down"]);
          const listenedAt = output.indexOf(`${name} listening`);
          expect(stoppedAt, output).toBeGreaterThanOrEqual(0);
          // Listening is allowed only before the signal was handled.
          if (listenedAt >= 0) expect(listenedAt, output).toBeLessThan(stoppedAt);
          outcomes.push(
            listenedAt >= 0 ? "served" : (/stopped during start-up \((\w[\w ]*)\)/.exec(output)?.[1] ?? "load"),
          );
        } finally {
          await run.drop();
        }
      }
      // The spread reached into start-up, not only before or after it.
      expect(outcomes.filter((o) => o !== "served").length, outcomes.join(", ")).toBeGreaterThan(0);
    },
    180_000,
  );
});
