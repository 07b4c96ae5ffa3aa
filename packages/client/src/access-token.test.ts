import { describe, expect, it } from "vitest";
import { type AccessTokenProvider, AccessTokens, expiryOf } from "./access-token.ts";

/** A JWT-shaped token (unsigned: only its claims are read here). */
const jwtWith = (claims: object) =>
  `${btoa('{"alg":"HS256"}')}.${btoa(JSON.stringify(claims)).replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_")}.sig`;

describe("expiryOf", () => {
  it("reads exp and the lifetime from a JWT, base64url with or without padding", () => {
    expect(expiryOf(jwtWith({ sub: "1", iat: 1_000, exp: 1_900 }))).toEqual({
      expiresAt: 1_900_000,
      lifetimeMs: 900_000,
    });
    // Characters that base64url writes as - and _.
    expect(expiryOf(jwtWith({ sub: "~~~~??>>", exp: 2_000 }))).toEqual({ expiresAt: 2_000_000, lifetimeMs: undefined });
  });

  it("is undefined for what is not a JWT with exp", () => {
    expect(expiryOf("access-1")).toBeUndefined();
    expect(expiryOf("a.not-base64!.c")).toBeUndefined();
    expect(expiryOf(jwtWith({ sub: "1" }))).toBeUndefined();
    expect(expiryOf(jwtWith({ exp: "soon" }))).toBeUndefined();
  });
});

describe("AccessTokens", () => {
  /** A provider that numbers its tokens: `t1`, then a new one each time it is asked to refresh. */
  function numbered(make: (n: number) => string = (n) => `t${n}`) {
    const calls: boolean[] = [];
    let n = 1;
    let token: string | undefined;
    const provider: AccessTokenProvider = async ({ refresh }) => {
      calls.push(refresh);
      if (refresh || token === undefined) {
        if (token !== undefined) n += 1;
        token = make(n);
      }
      return token;
    };
    return { provider, calls };
  }

  it("asks the provider once for every refresh of the same token, however many ask at once", async () => {
    const { provider, calls } = numbered();
    const tokens = new AccessTokens(provider);
    expect(await tokens.current()).toBe("t1");
    const fresh = await Promise.all([tokens.refresh("t1"), tokens.refresh("t1"), tokens.refresh("t1")]);
    expect(fresh).toEqual(["t2", "t2", "t2"]);
    expect(calls).toEqual([false, true]);
    // While the provider still answers the old one, the new one is used.
    expect(await tokens.current()).toBe("t2");
    // A refusal of the new one asks again.
    expect(await tokens.refresh("t2")).toBe("t3");
  });

  it("refreshes a JWT a quarter of its life before exp (30 s at most), not before", async () => {
    let now = 1_000_000_000;
    const { provider, calls } = numbered((n) => jwtWith({ n, iat: now / 1000, exp: now / 1000 + 8 }));
    const tokens = new AccessTokens(provider, () => now);
    await tokens.current();
    expect(calls).toEqual([false]);
    now += 5_900; // 2.1 s left of 8: more than a quarter.
    await tokens.current();
    expect(calls).toEqual([false, false]);
    now += 200; // 1.9 s left: refreshed.
    await tokens.current();
    expect(calls).toEqual([false, false, false, true]);
    // An hour-long token: 30 s ahead, not 15 minutes.
    const hour = jwtWith({ iat: now / 1000, exp: now / 1000 + 3_600 });
    const long = new AccessTokens(
      async () => hour,
      () => now,
    );
    const first = await long.current();
    now += (3_600 - 31) * 1000;
    expect(await long.current()).toBe(first);
  });

  it("asks again after a refresh that failed, and after one that gave the same token back", async () => {
    let attempt = 0;
    const tokens = new AccessTokens(async ({ refresh }) => {
      if (!refresh) return "old";
      attempt += 1;
      if (attempt === 1) throw new TypeError("Failed to fetch");
      if (attempt === 2) return "old";
      return "new";
    });
    await expect(tokens.refresh("old")).rejects.toThrow("Failed to fetch");
    expect(await tokens.refresh("old")).toBe("old");
    expect(await tokens.refresh("old")).toBe("new");
    expect(attempt).toBe(3);
  });
});
