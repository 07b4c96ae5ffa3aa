import { createHmac, generateKeyPairSync } from "node:crypto";
import { Redis } from "ioredis";
import jwt from "jsonwebtoken";
import { afterAll, describe, expect, it } from "vitest";
import { createAccessTokenVerifier, presentedAccessToken } from "../src/auth/access-token.ts";
import { AuthError } from "../src/auth/errors.ts";
import { createMemoryReplayStore, createRedisReplayStore } from "../src/auth/replay-store.ts";
import { createWsTokens, WS_TOKEN_AUDIENCE, WS_TOKEN_ISSUER } from "../src/auth/ws-token.ts";

const secret = "a-test-secret-that-is-long-enough-for-hs256";
const wsSecret = "another-secret-only-for-ws-tokens-0123456789";
const nowSeconds = () => Math.floor(Date.now() / 1000);
const inAMinute = () => nowSeconds() + 60;
/** JWT_MAX_AGE_SECONDS's default. */
const maxAgeSeconds = 86_400;
const b64 = (value: object) => Buffer.from(JSON.stringify(value)).toString("base64url");

async function refusal(run: () => unknown): Promise<string> {
  try {
    await run();
  } catch (error) {
    expect(error).toBeInstanceOf(AuthError);
    return (error as Error).message;
  }
  throw new Error("the token was accepted");
}

describe("access tokens", async () => {
  const verify = createAccessTokenVerifier({ key: { kind: "secret", secret }, maxAgeSeconds });

  it("accepts HS256 with exp and returns the user id from sub (number or digits)", async () => {
    expect(await verify(jwt.sign({ sub: "42", exp: inAMinute() }, secret))).toBe(42);
    expect(await verify(jwt.sign({ sub: 43, exp: inAMinute() }, secret))).toBe(43);
  });

  it("refuses a missing exp, an expired token, a bad sub and a forged signature", async () => {
    expect(await refusal(() => verify(jwt.sign({ sub: "1" }, secret)))).toMatch(/exp/);
    expect(
      await refusal(() => verify(jwt.sign({ sub: "1", exp: Math.floor(Date.now() / 1000) - 60 }, secret))),
    ).toMatch(/expired/);
    for (const sub of ["0", "-1", "abc", "1.5", ""])
      await refusal(() => verify(jwt.sign({ sub, exp: inAMinute() }, secret)));
    await refusal(() => verify(jwt.sign({ sub: "1", exp: inAMinute() }, "some-other-secret-of-enough-length!!")));
  });

  it("refuses a token older than JWT_MAX_AGE_SECONDS from its iat, even with exp 100 years out", async () => {
    const now = nowSeconds();
    const centuryExp = now + 100 * 365 * 86_400;
    // A day and a minute old, valid for a century: refused by its age alone.
    const old = jwt.sign({ sub: "21", iat: now - maxAgeSeconds - 60, exp: centuryExp }, secret);
    expect(await refusal(() => verify(old))).toBe(
      "the access token is older than 86400 s (JWT_MAX_AGE_SECONDS, counted from iat): sign in again",
    );
    // Just under the age, the same century of exp passes: the age is what decides, not the exp.
    expect(await verify(jwt.sign({ sub: "21", iat: now - maxAgeSeconds + 60, exp: centuryExp }, secret))).toBe(21);
    // The age is the verifier's own: a short one refuses what the default accepts.
    const hourly = createAccessTokenVerifier({ key: { kind: "secret", secret }, maxAgeSeconds: 3_600 });
    expect(await refusal(() => hourly(jwt.sign({ sub: "21", iat: now - 3_700, exp: now + 600 }, secret)))).toMatch(
      /older than 3600 s/,
    );
  });

  it("refuses a token without iat, or issued in the future (which would make any age look young)", async () => {
    const now = nowSeconds();
    const noIat = jwt.sign({ sub: "22", exp: now + 600 }, secret, { noTimestamp: true });
    expect(jwt.decode(noIat)).not.toHaveProperty("iat");
    expect(await refusal(() => verify(noIat))).toBe(
      "the access token has no issue time (iat): the monolith must set one",
    );
    const future = jwt.sign({ sub: "22", iat: now + 3_600, exp: now + 100 * 365 * 86_400 }, secret);
    expect(await refusal(() => verify(future))).toMatch(/issued in the future/);
    // Within the 5 s of clock tolerance, a monolith a little ahead is not refused.
    expect(await verify(jwt.sign({ sub: "22", iat: now + 3, exp: now + 600 }, secret))).toBe(22);
  });

  it('refuses alg "none" and algorithms other than the pinned one', async () => {
    const none = `${b64({ alg: "none", typ: "JWT" })}.${b64({ sub: "1", exp: inAMinute() })}.`;
    await refusal(() => verify(none));
    await refusal(() => verify(jwt.sign({ sub: "1", exp: inAMinute() }, secret, { algorithm: "HS512" })));
  });

  it("checks iss and aud when configured", async () => {
    const strict = createAccessTokenVerifier({
      key: { kind: "secret", secret },
      issuer: "monolith",
      audience: "chat",
      maxAgeSeconds,
    });
    expect(await strict(jwt.sign({ sub: "5", exp: inAMinute(), iss: "monolith", aud: "chat" }, secret))).toBe(5);
    expect(
      await refusal(() => strict(jwt.sign({ sub: "5", exp: inAMinute(), iss: "elsewhere", aud: "chat" }, secret))),
    ).toBe("the token's iss (JWT_ISSUER) is not that of an access token for this service");
    expect(
      await refusal(() => strict(jwt.sign({ sub: "5", exp: inAMinute(), iss: "monolith", aud: "other" }, secret))),
    ).toBe("the token's aud (JWT_AUDIENCE) is not that of an access token for this service");
    await refusal(() => strict(jwt.sign({ sub: "5", exp: inAMinute() }, secret)));
  });

  it("verifies RS256 and ES256 with a public key, and refuses the HS256-with-public-key confusion", async () => {
    const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 });
    const rsaPem = rsa.publicKey.export({ type: "spki", format: "pem" }).toString();
    const rs = createAccessTokenVerifier({ key: { kind: "public-key", pem: rsaPem }, maxAgeSeconds });
    expect(await rs(jwt.sign({ sub: "7", exp: inAMinute() }, rsa.privateKey, { algorithm: "RS256" }))).toBe(7);
    // The classic attack: an HS256 token "signed" with the public key as the secret.
    const confused = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub: "7", exp: inAMinute() })}`;
    const forged = `${confused}.${createHmac("sha256", rsaPem).update(confused).digest("base64url")}`;
    await refusal(() => rs(forged));

    const ec = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const es = createAccessTokenVerifier({
      key: { kind: "public-key", pem: ec.publicKey.export({ type: "spki", format: "pem" }).toString() },
      maxAgeSeconds,
    });
    expect(await es(jwt.sign({ sub: "8", exp: inAMinute() }, ec.privateKey, { algorithm: "ES256" }))).toBe(8);
    await refusal(() => es(jwt.sign({ sub: "8", exp: inAMinute() }, rsa.privateKey, { algorithm: "RS256" })));
  });

  it("takes the token from the Bearer header, else from the access_token cookie", async () => {
    expect(presentedAccessToken("Bearer abc.def.ghi", undefined)).toEqual({ token: "abc.def.ghi", fromCookie: false });
    expect(presentedAccessToken(undefined, "theme=dark; access_token=xyz.1.2; other=1")).toEqual({
      token: "xyz.1.2",
      fromCookie: true,
    });
    // A Basic header is not an access token: the cookie's is, and the cookie rule applies to it.
    expect(presentedAccessToken("Basic Zm9vOmJhcg==", "access_token=c.o.o")).toEqual({
      token: "c.o.o",
      fromCookie: true,
    });
    expect(presentedAccessToken(undefined, "access_tokenx=1")).toBeUndefined();
    expect(presentedAccessToken(undefined, undefined)).toBeUndefined();
  });
});

describe("ws-tokens", () => {
  const fresh = () => createWsTokens({ secret: wsSecret, ttlSeconds: 60, replay: createMemoryReplayStore() });

  it("are single-use", async () => {
    const tokens = fresh();
    const { token, expiresIn } = tokens.issue(9);
    expect(expiresIn).toBe(60);
    expect(await tokens.redeem(token)).toBe(9);
    await expect(tokens.redeem(token)).rejects.toThrow(/already used/);
  });

  it("each have their own id", async () => {
    const tokens = fresh();
    const ids = new Set(Array.from({ length: 20 }, () => (jwt.decode(tokens.issue(1).token) as jwt.JwtPayload).jti));
    expect(ids.size).toBe(20);
  });

  it("are not access tokens, and access tokens are not ws-tokens", async () => {
    const tokens = fresh();
    const { token } = tokens.issue(3);
    // Even a verifier that (wrongly) shared the ws secret refuses a ws-token as an access token.
    const sharing = createAccessTokenVerifier({ key: { kind: "secret", secret: wsSecret }, maxAgeSeconds });
    expect(await refusal(() => sharing(token))).toMatch(/ws-token/);
    const access = jwt.sign({ sub: "3", exp: inAMinute() }, wsSecret);
    await expect(tokens.redeem(access)).rejects.toBeInstanceOf(AuthError);
  });

  it("refuse an expired token, a wrong audience and a forged one", async () => {
    const tokens = fresh();
    const claims = { sub: "4", token_use: "ws", jti: "j-1" };
    const expired = jwt.sign({ ...claims, exp: Math.floor(Date.now() / 1000) - 5 }, wsSecret, {
      audience: WS_TOKEN_AUDIENCE,
      issuer: WS_TOKEN_ISSUER,
    });
    await expect(tokens.redeem(expired)).rejects.toThrow(/expired/);
    const wrongAudience = jwt.sign(claims, wsSecret, { audience: "elsewhere", issuer: WS_TOKEN_ISSUER, expiresIn: 60 });
    await expect(tokens.redeem(wrongAudience)).rejects.toBeInstanceOf(AuthError);
    const forged = jwt.sign(claims, "not-the-ws-secret-but-long-enough-000000", {
      audience: WS_TOKEN_AUDIENCE,
      issuer: WS_TOKEN_ISSUER,
      expiresIn: 60,
    });
    await expect(tokens.redeem(forged)).rejects.toBeInstanceOf(AuthError);
  });
});

const redisUrl = process.env.REDIS_URL;
if (!redisUrl && process.env.CI) throw new Error("CI must set REDIS_URL: the shared replay store is tested on Redis");

describe.runIf(redisUrl)("the Redis replay store", () => {
  const prefix = `lc-test:${process.pid}:${Date.now()}:`;
  const clients = [new Redis(redisUrl ?? ""), new Redis(redisUrl ?? "")];
  afterAll(async () => {
    const keys = await clients[0]!.keys(`${prefix}*`);
    if (keys.length > 0) await clients[0]!.del(...keys);
    await Promise.all(clients.map((c) => c.quit()));
  });

  it("refuses at one gateway a token used at another, and only one of two racing gateways wins", async () => {
    const [a, b] = clients.map((redis) =>
      createWsTokens({ secret: wsSecret, ttlSeconds: 60, replay: createRedisReplayStore(redis, prefix) }),
    );
    const { token } = a!.issue(11);
    expect(await a!.redeem(token)).toBe(11);
    await expect(b!.redeem(token)).rejects.toThrow(/already used/);

    const raced = a!.issue(12).token;
    const outcomes = await Promise.allSettled([a!.redeem(raced), b!.redeem(raced), a!.redeem(raced), b!.redeem(raced)]);
    expect(outcomes.filter((o) => o.status === "fulfilled")).toHaveLength(1);
    const ttl = await clients[0]!.pttl(`${prefix}ws-token:${(jwt.decode(raced) as jwt.JwtPayload).jti}`);
    expect(ttl).toBeGreaterThan(50_000);
    expect(ttl).toBeLessThanOrEqual(66_000);
  });
});
