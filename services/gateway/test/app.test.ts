import { spawn } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { stripVTControlCharacters } from "node:util";
import { DevDefaults, MIN_SECRET_LENGTH } from "@listings-chat/shared";
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createGatewayApp, type GatewayAppParts, INSTANCE_READY_PATH, isInternalPath } from "../src/app.ts";
import { createMemoryReplayStore } from "../src/auth/replay-store.ts";
import { createWsTokens } from "../src/auth/ws-token.ts";
import { ConfigError, loadGatewayConfig } from "../src/env.ts";

/** The app with parts that must not be reached by these tests (probes, /internal, config). */
function appWith(parts: Partial<GatewayAppParts> & Pick<GatewayAppParts, "chatUpstreams">) {
  return createGatewayApp({
    verifyAccessToken: () => {
      throw new Error("no access token expected here");
    },
    wsTokens: createWsTokens({ secret: "test-ws-secret", ttlSeconds: 60, replay: createMemoryReplayStore() }),
    forward: async () => {
      throw new Error("no forwarding expected here");
    },
    metrics: new Registry(),
    checkInternalToken: () => false,
    internalToken: "test-internal-token",
    ...parts,
  });
}

/**
 * A tiny stand-in for a chat instance on 127.0.0.1, port 0, answering its readiness path with `status` when
 * asked with the internal token of `appWith`, and 401 otherwise.
 */
async function startUpstream(
  status = 200,
  delayMs = 0,
): Promise<{ url: string; hits: string[]; close(): Promise<void> }> {
  const hits: string[] = [];
  const server: Server = createServer((req, res) => {
    hits.push(req.url ?? "");
    setTimeout(() => {
      const answer =
        req.url !== INSTANCE_READY_PATH
          ? 404
          : req.headers["x-internal-token"] === "test-internal-token"
            ? status
            : 401;
      res.writeHead(answer, { "content-type": "application/json" });
      res.end(JSON.stringify({ status: "ok" }));
    }, delayMs);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    hits,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A URL nothing listens on: a port that was free a moment ago. */
async function unreachableUrl(): Promise<string> {
  const upstream = await startUpstream();
  await upstream.close();
  return upstream.url;
}

describe("gateway probes", () => {
  it("GET /health answers 200 {status: ok} without touching any upstream", async () => {
    const app = appWith({ chatUpstreams: [await unreachableUrl()] });
    const res = await app.request("/health");
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: "ok" });
  });

  describe("GET /ready", () => {
    let healthy: Awaited<ReturnType<typeof startUpstream>>;
    let failing: Awaited<ReturnType<typeof startUpstream>>;
    let slow: Awaited<ReturnType<typeof startUpstream>>;
    let down: string;

    beforeAll(async () => {
      healthy = await startUpstream(200);
      failing = await startUpstream(503);
      // A healthy answer that comes too late: only a timeout turns it into a 503.
      slow = await startUpstream(200, 3_000);
      down = await unreachableUrl();
    });
    afterAll(async () => {
      await Promise.all([healthy.close(), failing.close(), slow.close()]);
    });

    it("is 200 when a chat upstream says it is ready to a request with the internal token", async () => {
      const app = appWith({ chatUpstreams: [healthy.url] });
      const res = await app.request("/ready");
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual({ status: "ready", upstreams: { reachable: 1, total: 1 } });
      expect(healthy.hits).toContain(INSTANCE_READY_PATH);
    });

    it("is 200 when at least one of several upstreams answers", async () => {
      const app = appWith({ chatUpstreams: [down, failing.url, healthy.url] });
      const res = await app.request("/ready");
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual({ status: "ready", upstreams: { reachable: 1, total: 3 } });
    });

    it("is 503 with the contract's error body when no upstream is reachable", async () => {
      const app = appWith({ chatUpstreams: [down] });
      const res = await app.request("/ready");
      expect(res.status).toBe(503);
      const body = (await res.json()) as { error: { code: string; message: string } };
      expect(Object.keys(body)).toEqual(["error"]);
      expect(body.error.code).toBe("upstream_unavailable");
      expect(body.error.message).toMatch(/no chat instance/);
    });

    it("is 503 upstream_misconfigured when the instances refuse the gateway's internal token", async () => {
      const app = appWith({ chatUpstreams: [healthy.url], internalToken: "another-token" });
      const res = await app.request("/ready");
      expect(res.status).toBe(503);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe("upstream_misconfigured");
    });

    it("is 503 redis_unavailable when Redis does not answer, even with a ready instance", async () => {
      const app = appWith({ chatUpstreams: [healthy.url], redisReady: async () => false });
      const res = await app.request("/ready");
      expect(res.status).toBe(503);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe("redis_unavailable");
      const withRedis = appWith({ chatUpstreams: [healthy.url], redisReady: async () => true });
      expect((await withRedis.request("/ready")).status).toBe(200);
    });

    it("is 503 when the only upstream says it is not ready", async () => {
      const app = appWith({ chatUpstreams: [failing.url] });
      expect((await app.request("/ready")).status).toBe(503);
    });

    it("gives up on an upstream that takes longer than 1 s", async () => {
      const app = appWith({ chatUpstreams: [slow.url] });
      const started = Date.now();
      const res = await app.request("/ready");
      expect(res.status).toBe(503);
      expect(Date.now() - started).toBeLessThan(2_500);
    });

    it("is 503 shutting_down once shutdown has begun", async () => {
      const app = appWith({ chatUpstreams: [healthy.url], isShuttingDown: () => true });
      const res = await app.request("/ready");
      expect(res.status).toBe(503);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe("shutting_down");
    });
  });
});

describe("gateway routes without credentials", () => {
  const app = appWith({ chatUpstreams: ["http://127.0.0.1:9"] });

  it.each([
    ["GET", "/internal/chat/ws/stats"],
    ["GET", "/internal"],
    ["POST", "/internal/anything"],
    // The platform's voice (CONTRACT §8): registering a listing is for the monolith, on the chat port only.
    ["PUT", "/internal/chat/listings/1"],
    ["GET", "/%69nternal/chat/ws/stats"],
    ["GET", "//internal/chat/ws/stats"],
    ["GET", "/INTERNAL/chat/ws/stats"],
  ])("%s %s is 404", async (method, path) => {
    const res = await app.request(path, { method, headers: { "x-internal-token": DevDefaults.internalToken } });
    expect(res.status).toBe(404);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("not_found");
  });

  it("recognises internal paths but not look-alikes", () => {
    expect(isInternalPath("/internal/chat/ws/stats")).toBe(true);
    expect(isInternalPath("/internals")).toBe(false);
    expect(isInternalPath("/api/v1/internal")).toBe(false);
  });

  it.each([
    ["GET", "/api/v1/chats"],
    ["POST", "/api/v1/chats"],
    ["POST", "/api/v2/ws-token"],
    ["GET", "/api/v2/ws-token"],
    ["GET", "/api/v1/events"],
    ["POST", "/api/v1/users/5/block"],
    ["DELETE", "/api/v1/users/5/block"],
    ["GET", "/api/v1/blocks"],
    ["POST", "/api/v1/reports"],
  ])("%s %s without an access token is 401", async (method, path) => {
    const res = await app.request(path, { method });
    expect(res.status).toBe(401);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("unauthorized");
  });

  it("has no dev token route without DEV_AUTH", async () => {
    const res = await app.request("/api/dev/token", { method: "POST", body: JSON.stringify({ user_id: 1 }) });
    expect(res.status).toBe(404);
  });

  it("guards /metrics with the internal token", async () => {
    expect((await app.request("/metrics")).status).toBe(401);
    const open = appWith({ chatUpstreams: ["http://127.0.0.1:9"], checkInternalToken: (t) => t === "ok" });
    const res = await open.request("/metrics", { headers: { "x-internal-token": "ok" } });
    expect(res.status).toBe(200);
  });
});

const pemOf = (curve: string) =>
  generateKeyPairSync("ec", { namedCurve: curve }).publicKey.export({ type: "spki", format: "pem" }).toString();
const p256Pem = pemOf("P-256");
const p384Pem = pemOf("P-384");

describe("gateway configuration", () => {
  it("reads every secret from a file when <NAME>_FILE is set (mounted secrets), and refuses both at once", () => {
    const dir = mkdtempSync(join(tmpdir(), "lc-gateway-secrets-"));
    try {
      const file = (name: string, content: string) => {
        writeFileSync(join(dir, name), content);
        return join(dir, name);
      };
      const strong = (c: string) => c.repeat(MIN_SECRET_LENGTH);
      const config = loadGatewayConfig({
        NODE_ENV: "production",
        JWT_AUDIENCE: "listings-chat",
        INTERNAL_TOKEN_FILE: file("internal", `${strong("i")}\n`),
        JWT_PUBLIC_KEY_FILE: file("jwt.pem", p256Pem),
        WS_TOKEN_SECRET_FILE: file("ws", strong("w")),
        REDIS_URL_FILE: file("redis", "redis://:pw@redis.internal:6379\n"),
      });
      expect(config.internalToken).toBe(strong("i"));
      expect(config.accessTokens.key).toEqual({ kind: "public-key", pem: p256Pem.replace(/\n$/, "") });
      expect(config.wsTokens.secret).toBe(strong("w"));
      expect(config.redis?.url).toBe("redis://:pw@redis.internal:6379");
      expect(loadGatewayConfig({ JWT_SECRET_FILE: file("jwt", strong("j")) }).accessTokens.key).toEqual({
        kind: "secret",
        secret: strong("j"),
      });
      expect(() => loadGatewayConfig({ JWT_SECRET: strong("j"), JWT_SECRET_FILE: join(dir, "jwt") })).toThrow(
        new ConfigError("set JWT_SECRET or JWT_SECRET_FILE, not both"),
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("accepts a P-256 or RSA public key, also written with \\n escapes", () => {
    const rsaPem = generateKeyPairSync("rsa", { modulusLength: 2048 })
      .publicKey.export({ type: "spki", format: "pem" })
      .toString();
    expect(loadGatewayConfig({ JWT_PUBLIC_KEY: p256Pem }).accessTokens.key).toEqual({
      kind: "public-key",
      pem: p256Pem,
    });
    const escaped = rsaPem.replace(/\n/g, "\\n");
    expect(loadGatewayConfig({ JWT_PUBLIC_KEY: escaped }).accessTokens.key).toEqual({
      kind: "public-key",
      pem: rsaPem,
    });
  });

  it("has development defaults and a warning about the internal token", () => {
    const config = loadGatewayConfig({});
    expect(config).toMatchObject({
      production: false,
      port: 3000,
      host: "0.0.0.0",
      chatUpstreams: ["http://127.0.0.1:8086"],
      internalToken: DevDefaults.internalToken,
      devAuth: false,
      logLevel: "info",
    });
    expect(config.accessTokens.maxAgeSeconds).toBe(86_400);
    expect(config.warnings.join(" ")).toMatch(/INTERNAL_TOKEN/);
    expect(config.warnings.join(" ")).toMatch(/JWT_SECRET/);
    expect(config.warnings.join(" ")).toMatch(/WS_TOKEN_SECRET/);
  });

  it("listens on 127.0.0.1 with DEV_AUTH=1 (dev tokens sign in as anyone) unless GATEWAY_HOST says otherwise", () => {
    expect(loadGatewayConfig({}).host).toBe("0.0.0.0");
    expect(loadGatewayConfig({ DEV_AUTH: "0" }).host).toBe("0.0.0.0");
    expect(loadGatewayConfig({ DEV_AUTH: "1" }).host).toBe("127.0.0.1");
    expect(loadGatewayConfig({ DEV_AUTH: "1", GATEWAY_HOST: "0.0.0.0" }).host).toBe("0.0.0.0");
    expect(loadGatewayConfig({ GATEWAY_HOST: "10.0.0.5" }).host).toBe("10.0.0.5");
  });

  it.each(["0", "1", "65535", " 8080 "])("accepts GATEWAY_PORT=%j", (value) => {
    expect(loadGatewayConfig({ GATEWAY_PORT: value }).port).toBe(Number(value));
  });

  it("reads every variable", () => {
    const config = loadGatewayConfig({
      GATEWAY_PORT: "3100",
      GATEWAY_HOST: "127.0.0.1",
      CHAT_UPSTREAMS: " http://chat-1:8086/ , https://chat-2.internal:8443",
      INTERNAL_TOKEN: "t".repeat(40),
      JWT_SECRET: "j".repeat(40),
      JWT_ISSUER: "monolith",
      JWT_AUDIENCE: "chat",
      JWT_MAX_AGE_SECONDS: "3600",
      WS_TOKEN_SECRET: "w".repeat(40),
      WS_TOKEN_TTL_SECONDS: "30",
      REDIS_URL: "redis://127.0.0.1:6379",
      MAX_SOCKETS_PER_USER: "4",
      DEV_AUTH: "1",
      LOG_LEVEL: "debug",
      NODE_ENV: "test",
    });
    expect(config).toMatchObject({
      port: 3100,
      host: "127.0.0.1",
      chatUpstreams: ["http://chat-1:8086", "https://chat-2.internal:8443"],
      internalToken: "t".repeat(40),
      devAuth: true,
      logLevel: "debug",
      accessTokens: {
        key: { kind: "secret", secret: "j".repeat(40) },
        issuer: "monolith",
        audience: "chat",
        maxAgeSeconds: 3_600,
      },
      wsTokens: { secret: "w".repeat(40), ttlSeconds: 30 },
      redis: { url: "redis://127.0.0.1:6379", keyPrefix: "listings-chat:" },
      maxSocketsPerUser: 4,
      warnings: [],
    });
  });

  it.each([
    [{ GATEWAY_PORT: "abc" }, "GATEWAY_PORT"],
    [{ GATEWAY_PORT: "70000" }, "GATEWAY_PORT"],
    [{ GATEWAY_PORT: "" }, "GATEWAY_PORT"],
    [{ GATEWAY_PORT: "   " }, "GATEWAY_PORT"],
    [{ GATEWAY_PORT: "80.5" }, "GATEWAY_PORT"],
    [{ GATEWAY_PORT: "0x10" }, "GATEWAY_PORT"],
    [{ GATEWAY_PORT: "-1" }, "GATEWAY_PORT"],
    [{ GATEWAY_HOST: "" }, "GATEWAY_HOST"],
    [{ CHAT_UPSTREAMS: "" }, "CHAT_UPSTREAMS"],
    [{ CHAT_UPSTREAMS: " , " }, "CHAT_UPSTREAMS"],
    [{ CHAT_UPSTREAMS: "http://ok:8086,chat-2:8086" }, "CHAT_UPSTREAMS"],
    [{ CHAT_UPSTREAMS: "ftp://chat:8086" }, "CHAT_UPSTREAMS"],
    [{ LOG_LEVEL: "loud" }, "LOG_LEVEL"],
    [{ NODE_ENV: "prod" }, "NODE_ENV"],
    [{ DEV_AUTH: "yes" }, "DEV_AUTH"],
    [{ INTERNAL_TOKEN: "" }, "INTERNAL_TOKEN"],
    [{ WS_TOKEN_TTL_SECONDS: "0" }, "WS_TOKEN_TTL_SECONDS"],
    [{ WS_TOKEN_TTL_SECONDS: "" }, "WS_TOKEN_TTL_SECONDS"],
    [{ MAX_SOCKETS_PER_USER: "0" }, "MAX_SOCKETS_PER_USER"],
    [{ JWT_MAX_AGE_SECONDS: "0" }, "JWT_MAX_AGE_SECONDS"],
    [{ JWT_MAX_AGE_SECONDS: "59" }, "JWT_MAX_AGE_SECONDS"],
    [{ JWT_MAX_AGE_SECONDS: "2592001" }, "JWT_MAX_AGE_SECONDS"],
    [{ JWT_MAX_AGE_SECONDS: "1d" }, "JWT_MAX_AGE_SECONDS"],
    [{ JWT_PUBLIC_KEY: "not a pem" }, "JWT_PUBLIC_KEY"],
    [{ REDIS_URL: "http://redis" }, "REDIS_URL"],
    [{ JWT_SECRET: "a".repeat(40), JWT_PUBLIC_KEY: "-----BEGIN PUBLIC KEY-----x" }, "JWT_PUBLIC_KEY"],
    [{ JWT_SECRET: "same-secret", WS_TOKEN_SECRET: "same-secret" }, "WS_TOKEN_SECRET"],
    [{ DEV_AUTH: "1", JWT_PUBLIC_KEY: p256Pem }, "DEV_AUTH"],
    [{ JWT_PUBLIC_KEY: "-----BEGIN PUBLIC KEY-----\\nnot a key\\n-----END PUBLIC KEY-----" }, "JWT_PUBLIC_KEY"],
    [{ JWT_PUBLIC_KEY: p384Pem }, "JWT_PUBLIC_KEY"],
  ])("refuses %o with a one-line error naming %s", (env, variable) => {
    let caught: unknown;
    try {
      loadGatewayConfig(env);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(ConfigError);
    const message = (caught as Error).message;
    expect(message).toContain(variable);
    expect(message).not.toContain("\n");
  });

  describe("in production", () => {
    const strong = "s".repeat(MIN_SECRET_LENGTH);
    const secrets = {
      INTERNAL_TOKEN: strong,
      JWT_SECRET: "j".repeat(40),
      WS_TOKEN_SECRET: "w".repeat(40),
      JWT_AUDIENCE: "listings-chat",
    };

    it("requires INTERNAL_TOKEN", () => {
      expect(() => loadGatewayConfig({ NODE_ENV: "production" })).toThrow(/INTERNAL_TOKEN is required/);
    });

    it("refuses a short INTERNAL_TOKEN or the development default", () => {
      const short = "s".repeat(MIN_SECRET_LENGTH - 1);
      expect(() => loadGatewayConfig({ ...secrets, NODE_ENV: "production", INTERNAL_TOKEN: short })).toThrow(
        /INTERNAL_TOKEN is too weak/,
      );
      expect(() =>
        loadGatewayConfig({ ...secrets, NODE_ENV: "production", INTERNAL_TOKEN: DevDefaults.internalToken }),
      ).toThrow(ConfigError);
    });

    it("requires a JWT key and a strong WS_TOKEN_SECRET", () => {
      const { JWT_SECRET: _jwt, ...noJwt } = secrets;
      expect(() => loadGatewayConfig({ ...noJwt, NODE_ENV: "production" })).toThrow(
        /JWT_SECRET, JWT_PUBLIC_KEY or JWT_JWKS_URL is required/,
      );
      expect(() => loadGatewayConfig({ ...secrets, NODE_ENV: "production", JWT_SECRET: "short" })).toThrow(
        /JWT_SECRET is too weak/,
      );
      const { WS_TOKEN_SECRET: _ws, ...noWs } = secrets;
      expect(() => loadGatewayConfig({ ...noWs, NODE_ENV: "production" })).toThrow(/WS_TOKEN_SECRET is required/);
      expect(() =>
        loadGatewayConfig({ ...secrets, NODE_ENV: "production", WS_TOKEN_SECRET: DevDefaults.wsTokenSecret }),
      ).toThrow(/WS_TOKEN_SECRET is too weak/);
    });

    it("requires JWT_AUDIENCE or JWT_ISSUER, so that no other token the monolith signs passes for an access token", () => {
      const { JWT_AUDIENCE: _aud, ...neither } = secrets;
      let caught: unknown;
      try {
        loadGatewayConfig({ ...neither, NODE_ENV: "production" });
      } catch (error) {
        caught = error;
      }
      expect(caught).toBeInstanceOf(ConfigError);
      expect((caught as Error).message).toMatch(/^JWT_AUDIENCE or JWT_ISSUER is required in production: /);
      expect((caught as Error).message).not.toContain("\n");
      expect(
        loadGatewayConfig({ ...neither, NODE_ENV: "production", JWT_ISSUER: "monolith" }).accessTokens,
      ).toMatchObject({ issuer: "monolith", audience: undefined });
      expect(loadGatewayConfig({ ...secrets, NODE_ENV: "production" }).accessTokens).toMatchObject({
        audience: "listings-chat",
      });
      // Outside production neither is required.
      expect(loadGatewayConfig({ ...neither, NODE_ENV: "test" }).accessTokens.audience).toBeUndefined();
    });

    it("refuses DEV_AUTH=1", () => {
      expect(() => loadGatewayConfig({ ...secrets, NODE_ENV: "production", DEV_AUTH: "1" })).toThrow(/DEV_AUTH/);
    });

    it("accepts strong secrets, without warnings", () => {
      const config = loadGatewayConfig({ ...secrets, NODE_ENV: "production" });
      expect(config.production).toBe(true);
      expect(config.warnings).toEqual([]);
    });
  });
});

describe("gateway process (src/main.ts)", () => {
  const mainTs = fileURLToPath(new URL("../src/main.ts", import.meta.url));

  function run(env: Record<string, string>) {
    const child = spawn(process.execPath, [mainTs], {
      env: { PATH: process.env.PATH ?? "", NODE_ENV: "test", LOG_LEVEL: "info", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (chunk) => {
      output += chunk;
    });
    child.stderr.on("data", (chunk) => {
      output += chunk;
    });
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    return { child, exited, output: () => output };
  }

  it("stops with exit code 1 and one line naming a bad variable", async () => {
    const { exited, output } = run({ GATEWAY_PORT: "not-a-port" });
    expect(await exited).toBe(1);
    expect(output().trim()).toMatch(/^gateway: invalid GATEWAY_PORT: /);
    expect(output().trim().split("\n")).toHaveLength(1);
  });

  it("serves /health and exits 0 on SIGTERM", async () => {
    // Production mode: JSON log lines, from which the port is read.
    const { child, exited, output } = run({
      NODE_ENV: "production",
      INTERNAL_TOKEN: "p".repeat(MIN_SECRET_LENGTH),
      JWT_SECRET: "j".repeat(MIN_SECRET_LENGTH),
      JWT_ISSUER: "monolith",
      WS_TOKEN_SECRET: "w".repeat(MIN_SECRET_LENGTH),
      GATEWAY_PORT: "0",
      GATEWAY_HOST: "127.0.0.1",
      CHAT_UPSTREAMS: "http://127.0.0.1:9",
    });
    const deadline = Date.now() + 20_000;
    let port: number | undefined;
    while (port === undefined && Date.now() < deadline) {
      const match = /"port":(\d+)/.exec(output());
      if (match) port = Number(match[1]);
      else await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(port, output()).toBeDefined();
    const res = await fetch(`http://127.0.0.1:${port}/health`);
    expect(await res.json()).toEqual({ status: "ok" });
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
  });

  it("stops in production without JWT_AUDIENCE or JWT_ISSUER, with one line naming both", async () => {
    const { exited, output } = run({
      NODE_ENV: "production",
      INTERNAL_TOKEN: "p".repeat(MIN_SECRET_LENGTH),
      JWT_SECRET: "j".repeat(MIN_SECRET_LENGTH),
      WS_TOKEN_SECRET: "w".repeat(MIN_SECRET_LENGTH),
      GATEWAY_PORT: "0",
    });
    expect(await exited).toBe(1);
    expect(output().trim()).toMatch(/^gateway: JWT_AUDIENCE or JWT_ISSUER is required in production: /);
    expect(output().trim().split("\n")).toHaveLength(1);
  });

  it("listens on 127.0.0.1 with DEV_AUTH=1 and no GATEWAY_HOST", async () => {
    const { child, exited, output } = run({ DEV_AUTH: "1", GATEWAY_PORT: "0", CHAT_UPSTREAMS: "http://127.0.0.1:9" });
    const deadline = Date.now() + 20_000;
    let listening: { host: string; port: number } | undefined;
    while (listening === undefined && Date.now() < deadline) {
      // The development log is pretty and coloured: its colours dropped, the listening line's fields read.
      const plain = stripVTControlCharacters(output());
      const match = /gateway listening\s+host: "([^"]+)"\s+port: (\d+)/.exec(plain);
      if (match) listening = { host: match[1]!, port: Number(match[2]) };
      else await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(listening, output()).toMatchObject({ host: "127.0.0.1" });
    const res = await fetch(`http://127.0.0.1:${listening?.port}/health`);
    expect(res.status).toBe(200);
    // Bound to loopback only: every other address of this machine refuses the connection.
    const { networkInterfaces } = await import("node:os");
    const others = Object.values(networkInterfaces())
      .flat()
      .filter((a) => a && a.family === "IPv4" && !a.internal)
      .map((a) => a!.address);
    for (const address of others) {
      await expect(fetch(`http://${address}:${listening?.port}/health`)).rejects.toThrow();
    }
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
  });

  it("stops with one line naming GATEWAY_PORT when the port is taken, not a stack trace", async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
    const { port } = taken.address() as AddressInfo;
    try {
      const { exited, output } = run({ GATEWAY_PORT: String(port), GATEWAY_HOST: "127.0.0.1", LOG_LEVEL: "silent" });
      expect(await exited).toBe(1);
      expect(output().trim()).toMatch(
        new RegExp(`^gateway: cannot listen on 127\\.0\\.0\\.1:${port}: the address is in use`),
      );
      expect(output()).toContain("GATEWAY_PORT");
      expect(output().trim().split("\n")).toHaveLength(1);
    } finally {
      await new Promise((resolve) => taken.close(resolve));
    }
  });

  it("stops cleanly on a SIGTERM that comes during start-up", async () => {
    const { child, exited, output } = run({ GATEWAY_PORT: "0", GATEWAY_HOST: "127.0.0.1", LOG_LEVEL: "info" });
    // As soon as the process prints anything (its warnings come before start-up work), signal it.
    const deadline = Date.now() + 20_000;
    while (output() === "" && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
  });
});
