/**
 * Access tokens verified against the monolith's key set (JWT_JWKS_URL): served by a real HTTP server on
 * loopback that the test changes as a monolith rotates its keys, and stops as an outage would.
 */
import { generateKeyPairSync, type KeyObject } from "node:crypto";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import jwt from "jsonwebtoken";
import { Registry } from "prom-client";
import { afterEach, describe, expect, it } from "vitest";
import { createGatewayApp } from "../src/app.ts";
import { type AccessTokenVerifier, createAccessTokenVerifier } from "../src/auth/access-token.ts";
import { AuthError, KeySetUnavailableError } from "../src/auth/errors.ts";
import { createMemoryReplayStore } from "../src/auth/replay-store.ts";
import { createWsTokens } from "../src/auth/ws-token.ts";
import { loadGatewayConfig } from "../src/env.ts";

const maxAgeSeconds = 86_400;

interface SigningKey {
  kid: string;
  algorithm: "RS256" | "ES256";
  privateKey: KeyObject;
  jwk: Record<string, unknown>;
}

function signingKey(kid: string, algorithm: "RS256" | "ES256"): SigningKey {
  const pair =
    algorithm === "RS256"
      ? generateKeyPairSync("rsa", { modulusLength: 2048 })
      : generateKeyPairSync("ec", { namedCurve: "P-256" });
  return {
    kid,
    algorithm,
    privateKey: pair.privateKey,
    jwk: { ...pair.publicKey.export({ format: "jwk" }), kid, alg: algorithm, use: "sig" },
  };
}

const sign = (key: SigningKey, userId: number, claims: object = {}) =>
  jwt.sign({ sub: String(userId), ...claims }, key.privateKey, {
    algorithm: key.algorithm,
    keyid: key.kid,
    expiresIn: 600,
  });

/** The monolith's `/.well-known/jwks.json`: the keys it publishes now, and how often it was asked. */
class KeySetServer {
  keys: SigningKey[] = [];
  requests = 0;
  answer: "keys" | "error" | "garbage" = "keys";
  private server: Server | undefined;
  url = "";

  async start(): Promise<this> {
    const server = createServer((_req, res) => {
      this.requests += 1;
      if (this.answer === "error") return res.writeHead(503).end("down for maintenance");
      res.setHeader("content-type", "application/json");
      res.end(this.answer === "garbage" ? "<html>" : JSON.stringify({ keys: this.keys.map((k) => k.jwk) }));
    });
    this.server = server;
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    this.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/.well-known/jwks.json`;
    return this;
  }

  /** Gone: the port refuses connections. */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

const servers: KeySetServer[] = [];
afterEach(async () => {
  for (const server of servers.splice(0)) await server.stop();
});

async function keySetServer(...keys: SigningKey[]) {
  const server = await new KeySetServer().start();
  server.keys = keys;
  servers.push(server);
  return server;
}

function verifierFor(
  server: KeySetServer,
  timings = { cacheMaxAgeMs: 60_000, maxStaleMs: 3_600_000, cooldownMs: 0, timeoutMs: 2_000 },
) {
  const warnings: string[] = [];
  const verify = createAccessTokenVerifier({
    key: { kind: "jwks", url: server.url },
    maxAgeSeconds,
    keySetTimings: timings,
    warn: (message) => warnings.push(message),
  });
  return { verify, warnings };
}

async function refusal(verify: AccessTokenVerifier, token: string): Promise<Error> {
  try {
    await verify(token);
  } catch (error) {
    return error as Error;
  }
  throw new Error("the token was accepted");
}

describe("access tokens verified with the monolith's key set (JWT_JWKS_URL)", () => {
  it("picks the key by kid (RS256 and ES256 side by side) and reads the set once for many tokens", async () => {
    const rsa = signingKey("2026-11-rsa", "RS256");
    const ec = signingKey("2026-11-ec", "ES256");
    const server = await keySetServer(rsa, ec);
    const { verify } = verifierFor(server);
    expect(await verify(sign(rsa, 41))).toBe(41);
    expect(await verify(sign(ec, 42))).toBe(42);
    for (let i = 0; i < 20; i++) expect(await verify(sign(i % 2 ? rsa : ec, 100 + i))).toBe(100 + i);
    expect(server.requests).toBe(1);
  });

  it("follows a rotation: a token of a key published after the set was read is verified after one more read", async () => {
    const old = signingKey("old", "RS256");
    const next = signingKey("next", "ES256");
    const server = await keySetServer(old);
    const { verify } = verifierFor(server);
    expect(await verify(sign(old, 1))).toBe(1);
    server.keys = [old, next]; // the monolith publishes its next key, then signs with it
    expect(await verify(sign(next, 2))).toBe(2);
    expect(server.requests).toBe(2);
    server.keys = [next]; // and retires the old one
    expect(await verify(sign(next, 3))).toBe(3);
  });

  it("refuses a kid the set does not have, a key that is not the published one, and alg confusion", async () => {
    const published = signingKey("k1", "RS256");
    const server = await keySetServer(published);
    const { verify } = verifierFor(server);
    const unknown = await refusal(verify, sign(signingKey("k9", "RS256"), 1));
    expect(unknown).toBeInstanceOf(AuthError);
    expect(unknown.message).toBe("the access token's key (its kid) is not in the monolith's key set (JWT_JWKS_URL)");
    // The published kid, another private key: the signature does not verify.
    const impostor = { ...signingKey("k1", "RS256"), kid: "k1" };
    expect(await refusal(verify, sign(impostor, 1))).toBeInstanceOf(AuthError);
    // HS256 "signed" with the public key's JSON as the secret, under the published kid.
    const hs = jwt.sign({ sub: "1" }, JSON.stringify(published.jwk), {
      algorithm: "HS256",
      keyid: "k1",
      expiresIn: 60,
    });
    expect(await refusal(verify, hs)).toBeInstanceOf(AuthError);
    // The claims rules are the same as with a secret or a PEM.
    const hourAgo = Math.floor(Date.now() / 1000) - 3_600;
    const expired = jwt.sign({ sub: "1", iat: hourAgo, exp: hourAgo + 60 }, published.privateKey, {
      algorithm: "RS256",
      keyid: "k1",
    });
    expect((await refusal(verify, expired)).message).toBe("the access token has expired: sign in again");
  });

  it("answers 503-worthy KeySetUnavailableError while no set was ever read, and recovers when it can be", async () => {
    const key = signingKey("k1", "ES256");
    const server = await keySetServer(key);
    server.answer = "error";
    const { verify } = verifierFor(server);
    const down = await refusal(verify, sign(key, 5));
    expect(down).toBeInstanceOf(KeySetUnavailableError);
    expect(down.message).toMatch(/JWT_JWKS_URL\) cannot be read .*try again shortly/);
    server.answer = "garbage";
    expect(await refusal(verify, sign(key, 5))).toBeInstanceOf(KeySetUnavailableError);
    server.answer = "keys";
    expect(await verify(sign(key, 5))).toBe(5);
  });

  it("keeps verifying with the set read before while the monolith's endpoint is down, and says so once", async () => {
    const key = signingKey("k1", "RS256");
    const server = await keySetServer(key);
    // The set goes stale at once: every verification tries to read it again.
    const { verify, warnings } = verifierFor(server, {
      cacheMaxAgeMs: 1,
      maxStaleMs: 3_600_000,
      cooldownMs: 0,
      timeoutMs: 1_000,
    });
    expect(await verify(sign(key, 7))).toBe(7);
    await server.stop();
    await new Promise((resolve) => setTimeout(resolve, 5));
    for (let i = 0; i < 5; i++) expect(await verify(sign(key, 8 + i))).toBe(8 + i);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/JWT_JWKS_URL cannot be read .*verifying with the key set read before/);
    // A kid it never had is still refused, not waved through.
    expect(await refusal(verify, sign(signingKey("k2", "RS256"), 1))).toBeInstanceOf(AuthError);
  });
});

/** The gateway's app with `verify` and nothing else it could reach. */
function appVerifyingWith(verify: AccessTokenVerifier) {
  return createGatewayApp({
    chatUpstreams: () => [],
    verifyAccessToken: verify,
    wsTokens: createWsTokens({
      secret: "test-ws-secret-0123456789",
      ttlSeconds: 60,
      replay: createMemoryReplayStore(),
    }),
    forward: async () => new Response(null, { status: 500 }),
    metrics: new Registry(),
    checkInternalToken: () => false,
    internalToken: "test-internal-token",
  });
}

describe("the key set read before, while the monolith's endpoint is down", () => {
  it("is used only while it is younger than maxStaleMs, then 503; and a failed read is not retried per request", async () => {
    const key = signingKey("k1", "ES256");
    const server = await keySetServer(key);
    const { verify } = verifierFor(server, { cacheMaxAgeMs: 1, maxStaleMs: 300, cooldownMs: 200, timeoutMs: 1_000 });
    expect(await verify(sign(key, 1))).toBe(1);
    expect(server.requests).toBe(1);
    server.answer = "error";
    await new Promise((resolve) => setTimeout(resolve, 5));
    expect(await verify(sign(key, 2))).toBe(2); // read again: failed; the set of a moment ago serves
    const afterFailure = server.requests;
    for (let i = 0; i < 10; i++) expect(await verify(sign(key, 3))).toBe(3);
    expect(server.requests).toBe(afterFailure); // within the cooldown: no read per request
    await new Promise((resolve) => setTimeout(resolve, 350));
    // Older than maxStaleMs: a retired key must not verify for as long as the endpoint is down.
    expect(await refusal(verify, sign(key, 4))).toBeInstanceOf(KeySetUnavailableError);
    server.answer = "keys";
    await new Promise((resolve) => setTimeout(resolve, 220));
    expect(await verify(sign(key, 5))).toBe(5);
  });
});

describe("the gateway with a key set", () => {
  it("issues a ws-token for a token of the set, 401s a stranger's, and 503s with Retry-After while no set can be read", async () => {
    const key = signingKey("k1", "ES256");
    const server = await keySetServer(key);
    const { verify } = verifierFor(server);
    const app = appVerifyingWith(verify);
    const wsToken = (token: string) =>
      app.request("/api/v2/ws-token", { method: "POST", headers: { authorization: `Bearer ${token}` } });
    expect((await wsToken(sign(key, 3))).status).toBe(200);
    const stranger = await wsToken(sign(signingKey("k2", "ES256"), 3));
    expect(stranger.status).toBe(401);

    server.answer = "error";
    const fresh = verifierFor(server).verify;
    const unavailable = await appVerifyingWith(fresh).request("/api/v2/ws-token", {
      method: "POST",
      headers: { authorization: `Bearer ${sign(key, 3)}` },
    });
    expect(unavailable.status).toBe(503);
    expect(unavailable.headers.get("retry-after")).toBe("5");
    expect(((await unavailable.json()) as { error: { code: string } }).error.code).toBe("key_set_unavailable");
  });
});

describe("JWT_JWKS_URL in the gateway's configuration", () => {
  it("is one of three ways to verify, never together with another, and https in production", () => {
    expect(
      loadGatewayConfig({ JWT_JWKS_URL: "https://monolith.example/.well-known/jwks.json" }).accessTokens.key,
    ).toEqual({
      kind: "jwks",
      url: "https://monolith.example/.well-known/jwks.json",
    });
    expect(() =>
      loadGatewayConfig({ JWT_JWKS_URL: "https://monolith.example/jwks.json", JWT_SECRET: "x".repeat(40) }),
    ).toThrow("set one of JWT_SECRET, JWT_PUBLIC_KEY and JWT_JWKS_URL, not JWT_SECRET and JWT_JWKS_URL");
    expect(() => loadGatewayConfig({ JWT_JWKS_URL: "ftp://monolith.example/jwks.json" })).toThrow(/JWT_JWKS_URL/);
    const production = {
      NODE_ENV: "production",
      INTERNAL_TOKEN: "i".repeat(40),
      WS_TOKEN_SECRET: "w".repeat(40),
      JWT_AUDIENCE: "listings-chat",
    };
    expect(() => loadGatewayConfig({ ...production, JWT_JWKS_URL: "http://monolith.internal/jwks.json" })).toThrow(
      "JWT_JWKS_URL must be an https:// URL in production",
    );
    expect(
      loadGatewayConfig({ ...production, JWT_JWKS_URL: "https://monolith.example/jwks.json" }).accessTokens.key.kind,
    ).toBe("jwks");
  });

  it("takes any of the three from a mounted Secret (SECRETS_DIR), whichever key it holds, and only one", () => {
    const dir = mkdtempSync(join(tmpdir(), "gateway-secrets-"));
    try {
      const secretFile = (name: string, value: string) => writeFileSync(join(dir, name), `${value}\n`);
      const keyOf = () => loadGatewayConfig({ SECRETS_DIR: dir }).accessTokens.key;
      const pem = generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({ type: "spki", format: "pem" });
      secretFile("JWT_JWKS_URL", "https://monolith.example/.well-known/jwks.json");
      expect(keyOf()).toEqual({ kind: "jwks", url: "https://monolith.example/.well-known/jwks.json" });
      rmSync(join(dir, "JWT_JWKS_URL"));
      secretFile("JWT_PUBLIC_KEY", pem.toString());
      const fromPem = keyOf();
      expect(fromPem.kind === "public-key" && fromPem.pem.trim()).toBe(pem.toString().trim());
      rmSync(join(dir, "JWT_PUBLIC_KEY"));
      secretFile("JWT_SECRET", "s".repeat(40));
      expect(keyOf()).toEqual({ kind: "secret", secret: "s".repeat(40) });
      // Two of them is the same mistake as two variables.
      secretFile("JWT_JWKS_URL", "https://monolith.example/jwks.json");
      expect(keyOf).toThrow("not JWT_SECRET and JWT_JWKS_URL");
      rmSync(join(dir, "JWT_JWKS_URL"));
      // A variable set directly wins over its file in the folder.
      expect(loadGatewayConfig({ SECRETS_DIR: dir, JWT_SECRET: "d".repeat(40) }).accessTokens.key).toEqual({
        kind: "secret",
        secret: "d".repeat(40),
      });
      // An empty file, or one that cannot be read, stops start-up.
      secretFile("JWT_JWKS_URL", "");
      expect(keyOf).toThrow(/SECRETS_DIR: .*JWT_JWKS_URL is empty/);
      rmSync(join(dir, "JWT_JWKS_URL"));
      // A folder that is not there stops start-up (a typo would otherwise leave the development secrets in use).
      expect(() => loadGatewayConfig({ SECRETS_DIR: join(dir, "missing") })).toThrow(/SECRETS_DIR: .* is not a folder/);
      if (process.getuid?.() !== 0) {
        chmodSync(join(dir, "JWT_SECRET"), 0);
        expect(keyOf).toThrow(/SECRETS_DIR: cannot read .*JWT_SECRET \(EACCES\)/);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
