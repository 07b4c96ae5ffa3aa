import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DevDefaults, MIN_SECRET_LENGTH } from "@listings-chat/shared";
import { afterAll, afterEach, describe, expect, it, vi } from "vitest";
import { ConfigError, loadChatConfig } from "../src/env.ts";

/** Runs `load` and returns the ConfigError it must throw. */
function configError(load: () => unknown): ConfigError {
  try {
    load();
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).name).toBe("ConfigError");
    return error as ConfigError;
  }
  throw new Error("expected a ConfigError, but the configuration loaded");
}

const strongToken = "s".repeat(MIN_SECRET_LENGTH);
/** Photos' storage in production (CONTRACT §11): without it photos are off, with a warning. */
const productionStorage = {
  STORAGE: "s3",
  S3_BUCKET: "shop-chat-photos",
  S3_ACCESS_KEY_ID: "AKIAEXAMPLE",
  S3_SECRET_ACCESS_KEY: "secret-access-key-example",
};

const productionBase = {
  NODE_ENV: "production",
  DATABASE_URL: "postgres://chat:secret@db.internal:5432/chat",
  INTERNAL_TOKEN: strongToken,
  ...productionStorage,
};

describe("loadChatConfig: defaults", () => {
  afterEach(() => {
    vi.unstubAllEnvs();
  });

  it("uses port 8086, PGlite in ./.data, the memory bus and the development token with a warning", () => {
    const config = loadChatConfig({});
    expect(config.production).toBe(false);
    expect(config.port).toBe(8086);
    // The development token is public: the port is not offered beyond this machine unless CHAT_HOST says so.
    expect(config.host).toBe("127.0.0.1");
    expect(loadChatConfig({ INTERNAL_TOKEN: "a-token-of-our-own" }).host).toBe("0.0.0.0");
    expect(loadChatConfig({ CHAT_HOST: "0.0.0.0" }).host).toBe("0.0.0.0");
    expect(config.database).toEqual({ dataDir: "./.data" });
    // No Redis: the in-process (memory) bus is used.
    expect(config.redis).toBeUndefined();
    expect(config.internalToken).toBe(DevDefaults.internalToken);
    expect(config.logLevel).toBe("info");
    expect(config.shutdownTimeoutMs).toBe(8_000);
    expect(config.instanceId).toMatch(/.+-\d+$/);
    expect(config.warnings).toHaveLength(1);
    expect(config.warnings[0]).toMatch(/INTERNAL_TOKEN/);
  });

  it("reads only the object it is given, never process.env", () => {
    vi.stubEnv("CHAT_PORT", "9999");
    vi.stubEnv("DATABASE_URL", "postgres://elsewhere/db");
    vi.stubEnv("NODE_ENV", "production");
    const config = loadChatConfig({});
    expect(config.port).toBe(8086);
    expect(config.production).toBe(false);
    expect(config.database).toEqual({ dataDir: "./.data" });
  });

  it("gives no warning when an internal token is set outside production", () => {
    const config = loadChatConfig({ INTERNAL_TOKEN: "short-is-fine-in-dev" });
    expect(config.internalToken).toBe("short-is-fine-in-dev");
    expect(config.warnings).toEqual([]);
  });

  it("takes DATA_DIR, CHAT_PORT and CHAT_HOST when set", () => {
    const config = loadChatConfig({ DATA_DIR: "/var/lib/chat", CHAT_PORT: "9100", CHAT_HOST: "127.0.0.1" });
    expect(config.database).toEqual({ dataDir: "/var/lib/chat" });
    expect(config.port).toBe(9100);
    expect(config.host).toBe("127.0.0.1");
  });
});

describe("loadChatConfig: DATABASE_URL and REDIS_URL", () => {
  it.each(["postgres://chat:pw@127.0.0.1:5432/chat", "postgresql://chat@db:5432/chat?sslmode=require"])(
    "uses PostgreSQL for DATABASE_URL=%s",
    (url) => {
      const config = loadChatConfig({ DATABASE_URL: url });
      expect(config.database).toEqual({ url, poolSize: 10, readPool: { size: 2, statementMs: 5_000 } });
    },
  );

  it("reads DATABASE_POOL_SIZE, and refuses one that is not a whole number from 1 to 500", () => {
    expect(loadChatConfig({ DATABASE_URL: "postgres://db/chat", DATABASE_POOL_SIZE: "30" }).database).toEqual({
      url: "postgres://db/chat",
      poolSize: 30,
      readPool: { size: 2, statementMs: 5_000 },
    });
    for (const bad of ["0", "501", "ten", ""]) {
      expect(() => loadChatConfig({ DATABASE_URL: "postgres://db/chat", DATABASE_POOL_SIZE: bad })).toThrow(
        /DATABASE_POOL_SIZE/,
      );
    }
  });

  it("reads MIGRATION_DATABASE_URL as the URL migrations run on, refuses a bad one and one without DATABASE_URL", () => {
    const env = { DATABASE_URL: "postgres://pgbouncer:6432/chat", MIGRATION_DATABASE_URL: "postgres://db:5432/chat" };
    expect(loadChatConfig(env).database).toMatchObject({
      url: "postgres://pgbouncer:6432/chat",
      migrationUrl: "postgres://db:5432/chat",
    });
    expect(loadChatConfig({ DATABASE_URL: "postgres://db/chat" }).database).not.toHaveProperty("migrationUrl");
    expect(() => loadChatConfig({ ...env, MIGRATION_DATABASE_URL: "http://db/chat" })).toThrow(
      /MIGRATION_DATABASE_URL/,
    );
    expect(() => loadChatConfig({ MIGRATION_DATABASE_URL: "postgres://db:5432/chat" })).toThrow(
      /MIGRATION_DATABASE_URL is set without DATABASE_URL/,
    );
  });

  it("reads the page reads' pool size and statement timeout, and refuses bad ones", () => {
    const env = { DATABASE_URL: "postgres://db/chat", DATABASE_READ_POOL_SIZE: "3", DATABASE_READ_TIMEOUT_MS: "2500" };
    expect(loadChatConfig(env).database).toMatchObject({ readPool: { size: 3, statementMs: 2_500 } });
    for (const [name, bad] of [
      ["DATABASE_READ_POOL_SIZE", "0"],
      ["DATABASE_READ_TIMEOUT_MS", "50"],
      ["DATABASE_READ_TIMEOUT_MS", "soon"],
    ] as const) {
      expect(() => loadChatConfig({ ...env, [name]: bad })).toThrow(new RegExp(name));
    }
  });

  it("takes several comma-separated Redis URLs as the seed nodes of a cluster, and refuses a list with a bad one", () => {
    const nodes = "redis://127.0.0.1:7001, redis://127.0.0.1:7002,redis://127.0.0.1:7003";
    expect(loadChatConfig({ REDIS_URL: nodes }).redis?.url).toBe(nodes);
    expect(() => loadChatConfig({ REDIS_URL: "redis://127.0.0.1:7001,http://127.0.0.1:7002" })).toThrow(/REDIS_URL/);
    expect(() => loadChatConfig({ REDIS_URL: "," })).toThrow(/REDIS_URL/);
  });

  it("reads SEND_LIMIT_PER_MINUTE (60 by default)", () => {
    expect(loadChatConfig({}).sendLimitPerMinute).toBe(60);
    expect(loadChatConfig({ SEND_LIMIT_PER_MINUTE: "100000" }).sendLimitPerMinute).toBe(100_000);
    expect(() => loadChatConfig({ SEND_LIMIT_PER_MINUTE: "0" })).toThrow(/SEND_LIMIT_PER_MINUTE/);
  });

  it("reads the other writes' limits (CONTRACT §10's values by default) and refuses a bad one by name", () => {
    expect(loadChatConfig({}).writeLimits).toEqual({
      editsPerMinute: 30,
      chatOpensPerHour: 20,
      reportsPerHour: 10,
      uploadsPerHour: 30,
    });
    expect(
      loadChatConfig({
        EDIT_LIMIT_PER_MINUTE: "31",
        CHAT_OPEN_LIMIT_PER_HOUR: "21",
        REPORT_LIMIT_PER_HOUR: "11",
        UPLOAD_LIMIT_PER_HOUR: "1000000",
      }).writeLimits,
    ).toEqual({ editsPerMinute: 31, chatOpensPerHour: 21, reportsPerHour: 11, uploadsPerHour: 1_000_000 });
    for (const name of [
      "EDIT_LIMIT_PER_MINUTE",
      "CHAT_OPEN_LIMIT_PER_HOUR",
      "REPORT_LIMIT_PER_HOUR",
      "UPLOAD_LIMIT_PER_HOUR",
    ])
      for (const bad of ["0", "-1", "2.5", "many", "1000001"])
        expect(() => loadChatConfig({ [name]: bad }), `${name}=${bad}`).toThrow(new RegExp(name));
  });

  it("reads MESSAGE_RETENTION_DAYS (CONTRACT §12): unset or blank keeps messages forever, a bad value is refused by name", () => {
    expect(loadChatConfig({}).messageRetentionDays).toBeUndefined();
    expect(loadChatConfig({ MESSAGE_RETENTION_DAYS: "" }).messageRetentionDays).toBeUndefined();
    expect(loadChatConfig({ MESSAGE_RETENTION_DAYS: "  " }).messageRetentionDays).toBeUndefined();
    expect(loadChatConfig({ MESSAGE_RETENTION_DAYS: "30" }).messageRetentionDays).toBe(30);
    expect(loadChatConfig({ MESSAGE_RETENTION_DAYS: " 365 " }).messageRetentionDays).toBe(365);
    for (const bad of ["0", "-1", "2.5", "30d", "thirty", "36501"]) {
      const error = configError(() => loadChatConfig({ MESSAGE_RETENTION_DAYS: bad }));
      expect(error.message, bad).toBe(
        "invalid MESSAGE_RETENTION_DAYS: must be a whole number of days from 1 to 36500 (unset: messages are kept forever)",
      );
    }
  });

  it("ignores DATA_DIR when DATABASE_URL is set", () => {
    const config = loadChatConfig({ DATABASE_URL: "postgres://db/chat", DATA_DIR: "/tmp/unused" });
    expect(config.database).toEqual({
      url: "postgres://db/chat",
      poolSize: 10,
      readPool: { size: 2, statementMs: 5_000 },
    });
  });

  it.each(["redis://127.0.0.1:6379/0", "rediss://user:pw@cache.internal:6380"])(
    "uses Redis for REDIS_URL=%s",
    (url) => {
      const config = loadChatConfig({ REDIS_URL: url });
      expect(config.redis).toEqual({ url, keyPrefix: "listings-chat:" });
    },
  );

  it("takes the Redis key prefix from REDIS_KEY_PREFIX", () => {
    const config = loadChatConfig({ REDIS_URL: "redis://127.0.0.1:6379", REDIS_KEY_PREFIX: "staging:" });
    expect(config.redis).toEqual({ url: "redis://127.0.0.1:6379", keyPrefix: "staging:" });
  });

  it.each(["mysql://root@127.0.0.1/chat", "http://db/chat", "not a url", "127.0.0.1:5432"])(
    "refuses DATABASE_URL=%s and names the variable",
    (url) => {
      const error = configError(() => loadChatConfig({ DATABASE_URL: url }));
      expect(error.message).toMatch(/DATABASE_URL/);
    },
  );

  it.each(["http://cache:6379", "cache:6379"])("refuses REDIS_URL=%s and names the variable", (url) => {
    const error = configError(() => loadChatConfig({ REDIS_URL: url }));
    expect(error.message).toMatch(/REDIS_URL/);
  });
});

describe("loadChatConfig: CHAT_PORT", () => {
  it.each(["0", "1", "65535"])("accepts CHAT_PORT=%s", (value) => {
    expect(loadChatConfig({ CHAT_PORT: value }).port).toBe(Number(value));
  });

  it.each(["abc", "65536", "-1", "80.5", "8086x"])("refuses CHAT_PORT=%s and names the variable", (value) => {
    const error = configError(() => loadChatConfig({ CHAT_PORT: value }));
    expect(error.message).toMatch(/CHAT_PORT/);
  });

  // An empty variable (`CHAT_PORT=` in an .env file, `${CHAT_PORT:-}` in compose) must not become port 0,
  // which would make the service listen on a random port nobody knows: refuse it or use the default.
  it.each(["", "   "])("does not turn CHAT_PORT=%j into a random port", (value) => {
    let port: number | undefined;
    try {
      port = loadChatConfig({ CHAT_PORT: value }).port;
    } catch (error) {
      expect(error).toBeInstanceOf(ConfigError);
      expect((error as Error).message).toMatch(/CHAT_PORT/);
      return;
    }
    expect(port).toBe(8086);
  });

  // The same trap for the shutdown deadline: blank must not mean "no grace period at all".
  it.each(["", "   "])("does not turn SHUTDOWN_TIMEOUT_MS=%j into 0", (value) => {
    let timeout: number | undefined;
    try {
      timeout = loadChatConfig({ SHUTDOWN_TIMEOUT_MS: value }).shutdownTimeoutMs;
    } catch (error) {
      expect(error).toBeInstanceOf(ConfigError);
      expect((error as Error).message).toMatch(/SHUTDOWN_TIMEOUT_MS/);
      return;
    }
    expect(timeout).toBe(8_000);
  });

  it("names the variable for other bad values too", () => {
    expect(configError(() => loadChatConfig({ LOG_LEVEL: "loud" })).message).toMatch(/LOG_LEVEL/);
    expect(configError(() => loadChatConfig({ NODE_ENV: "staging" })).message).toMatch(/NODE_ENV/);
    expect(configError(() => loadChatConfig({ SHUTDOWN_TIMEOUT_MS: "600000" })).message).toMatch(/SHUTDOWN_TIMEOUT_MS/);
  });
});

describe("loadChatConfig: production", () => {
  it("starts with a PostgreSQL URL and a strong token, without warnings", () => {
    const config = loadChatConfig(productionBase);
    expect(config.production).toBe(true);
    expect(config.database).toEqual({
      url: productionBase.DATABASE_URL,
      poolSize: 10,
      readPool: { size: 2, statementMs: 5_000 },
    });
    expect(config.internalToken).toBe(strongToken);
    expect(config.warnings).toEqual([]);
  });

  it("refuses a missing DATABASE_URL (PGlite is for development only)", () => {
    const { DATABASE_URL: _omitted, ...env } = productionBase;
    const error = configError(() => loadChatConfig(env));
    expect(error.message).toMatch(/DATABASE_URL/);
  });

  it("refuses a missing INTERNAL_TOKEN", () => {
    const { INTERNAL_TOKEN: _omitted, ...env } = productionBase;
    const error = configError(() => loadChatConfig(env));
    expect(error.message).toMatch(/INTERNAL_TOKEN/);
  });

  it(`refuses an INTERNAL_TOKEN shorter than ${MIN_SECRET_LENGTH} characters`, () => {
    const error = configError(() =>
      loadChatConfig({ ...productionBase, INTERNAL_TOKEN: "s".repeat(MIN_SECRET_LENGTH - 1) }),
    );
    expect(error.message).toMatch(/INTERNAL_TOKEN/);
  });

  it("refuses the development default token even though it is long enough", () => {
    expect(DevDefaults.internalToken.length).toBeGreaterThanOrEqual(MIN_SECRET_LENGTH);
    const error = configError(() => loadChatConfig({ ...productionBase, INTERNAL_TOKEN: DevDefaults.internalToken }));
    expect(error.message).toMatch(/INTERNAL_TOKEN/);
  });
});

describe("loadChatConfig: secrets from files (<NAME>_FILE)", () => {
  const dir = mkdtempSync(join(tmpdir(), "lc-secrets-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const file = (name: string, content: string) => {
    const path = join(dir, name);
    writeFileSync(path, content);
    return path;
  };

  it("reads INTERNAL_TOKEN, DATABASE_URL and REDIS_URL from their files, without the final newline", () => {
    const config = loadChatConfig({
      NODE_ENV: "production",
      INTERNAL_TOKEN_FILE: file("token", `${strongToken}\n`),
      DATABASE_URL_FILE: file("database-url", "postgres://chat:from-a-file@db.internal:5432/chat\n"),
      REDIS_URL_FILE: file("redis-url", "redis://:pw@redis.internal:6379"),
    });
    expect(config.internalToken).toBe(strongToken);
    expect(config.database).toMatchObject({ url: "postgres://chat:from-a-file@db.internal:5432/chat" });
    expect(config.redis?.url).toBe("redis://:pw@redis.internal:6379");
  });

  it("refuses a variable set both ways, a file it cannot read and an empty file, naming the variable", () => {
    const token = file("both", strongToken);
    expect(configError(() => loadChatConfig({ ...productionBase, INTERNAL_TOKEN_FILE: token })).message).toBe(
      "set INTERNAL_TOKEN or INTERNAL_TOKEN_FILE, not both",
    );
    const missing = join(dir, "not-mounted");
    expect(
      configError(() =>
        loadChatConfig({ NODE_ENV: "production", DATABASE_URL_FILE: missing, INTERNAL_TOKEN: strongToken }),
      ).message,
    ).toBe(`DATABASE_URL_FILE: cannot read ${missing} (ENOENT): mount the secret there, or unset DATABASE_URL_FILE`);
    expect(configError(() => loadChatConfig({ ...productionBase, REDIS_URL_FILE: file("empty", "\n") })).message).toBe(
      `REDIS_URL_FILE: ${join(dir, "empty")} is empty`,
    );
  });
});

describe("loadChatConfig: LISTINGS_REQUIRED", () => {
  it("is on by default in production and off in development and test", () => {
    expect(loadChatConfig(productionBase).listingsRequired).toBe(true);
    expect(loadChatConfig({}).listingsRequired).toBe(false);
    expect(loadChatConfig({ NODE_ENV: "test" }).listingsRequired).toBe(false);
  });

  it("takes 0 or 1 in any mode", () => {
    expect(loadChatConfig({ ...productionBase, LISTINGS_REQUIRED: "0" }).listingsRequired).toBe(false);
    expect(loadChatConfig({ LISTINGS_REQUIRED: "1" }).listingsRequired).toBe(true);
  });

  it.each(["", "true", "yes", "2", " 1"])("refuses LISTINGS_REQUIRED=%j and names the variable", (value) => {
    const error = configError(() => loadChatConfig({ LISTINGS_REQUIRED: value }));
    expect(error.message).toMatch(/LISTINGS_REQUIRED: must be 0 or 1/);
  });
});

describe("loadChatConfig: photos' storage (CONTRACT §11)", () => {
  it("keeps photos under DATA_DIR by default outside production", () => {
    const config = loadChatConfig({ DATA_DIR: "/tmp/chat-data" });
    expect(config.storage).toEqual({ kind: "fs", dataDir: "/tmp/chat-data" });
    expect(config.photos).toEqual({ uploadMaxBytes: 10 * 1024 * 1024, concurrency: 2 });
  });

  it("reads an S3-compatible store: endpoint, public endpoint, region, path style, and the key from files", () => {
    const dir = mkdtempSync(join(tmpdir(), "lc-s3-"));
    try {
      writeFileSync(join(dir, "id"), "AKIAFROMFILE\n");
      writeFileSync(join(dir, "secret"), "secret-from-a-file\n");
      const config = loadChatConfig({
        ...productionBase,
        S3_ACCESS_KEY_ID: undefined,
        S3_SECRET_ACCESS_KEY: undefined,
        S3_ACCESS_KEY_ID_FILE: join(dir, "id"),
        S3_SECRET_ACCESS_KEY_FILE: join(dir, "secret"),
        S3_ENDPOINT: "http://minio:9000",
        S3_PUBLIC_ENDPOINT: "https://photos.shop.example",
        S3_REGION: "eu-central-1",
        S3_FORCE_PATH_STYLE: "1",
        UPLOAD_MAX_BYTES: "5242880",
        PHOTO_CONCURRENCY: "4",
      });
      expect(config.storage).toEqual({
        kind: "s3",
        endpoint: "http://minio:9000",
        publicEndpoint: "https://photos.shop.example",
        bucket: "shop-chat-photos",
        region: "eu-central-1",
        accessKeyId: "AKIAFROMFILE",
        secretAccessKey: "secret-from-a-file",
        forcePathStyle: true,
      });
      expect(config.photos).toEqual({ uploadMaxBytes: 5 * 1024 * 1024, concurrency: 4 });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("turns photos off in production without STORAGE, and says so", () => {
    const { STORAGE: _omitted, ...env } = productionBase;
    const config = loadChatConfig(env);
    expect(config.storage).toBeUndefined();
    expect(config.warnings.join("\n")).toMatch(/STORAGE is not set: photos are off/);
  });

  it("refuses the development storage in production, and an s3 store without its bucket or key", () => {
    expect(configError(() => loadChatConfig({ ...productionBase, STORAGE: "fs" })).message).toMatch(
      /STORAGE=fs serves development only/,
    );
    for (const name of ["S3_BUCKET", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"] as const) {
      const { [name]: _omitted, ...env } = productionBase;
      expect(configError(() => loadChatConfig(env)).message, name).toMatch(new RegExp(`STORAGE=s3 needs ${name}`));
    }
    expect(configError(() => loadChatConfig({ STORAGE: "ftp" })).message).toMatch(/STORAGE/);
    expect(configError(() => loadChatConfig({ UPLOAD_MAX_BYTES: "0" })).message).toMatch(/UPLOAD_MAX_BYTES/);
    expect(configError(() => loadChatConfig({ S3_FORCE_PATH_STYLE: "yes" })).message).toMatch(/S3_FORCE_PATH_STYLE/);
  });
});
