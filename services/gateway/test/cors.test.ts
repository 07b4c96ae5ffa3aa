/**
 * CORS_ORIGINS (src/http/cors.ts): a page on a listed origin may call the API with its Bearer token, its
 * preflight answered before authentication; any other origin gets no Access-Control-Allow-* header, and its
 * preflight a 403 that says why; the cookie rule of CONTRACT §2 still refuses a cross-site change.
 */
import { Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { createGatewayApp } from "../src/app.ts";
import { AuthError } from "../src/auth/errors.ts";
import { createMemoryReplayStore } from "../src/auth/replay-store.ts";
import { createWsTokens } from "../src/auth/ws-token.ts";
import { ConfigError, loadGatewayConfig } from "../src/env.ts";
import { normalizeOrigin } from "../src/http/cors.ts";

const LISTED = "https://www.market.example";
const OTHER = "https://evil.example";

/** The app with CORS_ORIGINS = LISTED; the token "good" is user 7, anything else is refused. */
function app(corsOrigins: string[] = [LISTED]) {
  const forwarded: Array<{ path: string; userId: number }> = [];
  const gateway = createGatewayApp({
    chatUpstreams: [],
    verifyAccessToken: (token) => {
      if (token !== "good") throw new AuthError("the access token is refused");
      return 7;
    },
    wsTokens: createWsTokens({ secret: "test-ws-secret", ttlSeconds: 60, replay: createMemoryReplayStore() }),
    forward: async (request, userId) => {
      forwarded.push({ path: new URL(request.url).pathname, userId });
      return Response.json({ chats: [] });
    },
    metrics: new Registry(),
    checkInternalToken: () => false,
    internalToken: "test-internal-token",
    corsOrigins,
  });
  return { gateway, forwarded };
}

const preflight = (origin: string, method = "POST") => ({
  method: "OPTIONS",
  headers: {
    origin,
    "access-control-request-method": method,
    "access-control-request-headers": "authorization,content-type",
  },
});

describe("CORS_ORIGINS", () => {
  it("answers a listed origin's preflight before authentication, credentials allowed, Authorization allowed", async () => {
    const { gateway, forwarded } = app();
    const res = await gateway.request("/api/v2/ws-token", preflight(LISTED));
    expect(res.status).toBe(204);
    expect(res.headers.get("access-control-allow-origin")).toBe(LISTED);
    expect(res.headers.get("access-control-allow-credentials")).toBe("true");
    expect(res.headers.get("access-control-allow-headers")?.toLowerCase()).toContain("authorization");
    expect(res.headers.get("access-control-allow-methods")).toContain("POST");
    expect(res.headers.get("access-control-max-age")).toBe("600");
    expect(res.headers.get("vary")).toContain("Origin");
    expect(forwarded).toEqual([]);
  });

  it("lets a listed origin read the answers (its own, errors and Retry-After too)", async () => {
    const { gateway } = app();
    const ok = await gateway.request("/api/v1/chats", { headers: { origin: LISTED, authorization: "Bearer good" } });
    expect(ok.status).toBe(200);
    expect(ok.headers.get("access-control-allow-origin")).toBe(LISTED);
    expect(ok.headers.get("access-control-expose-headers")).toContain("Retry-After");
    const ticket = await gateway.request("/api/v2/ws-token", {
      method: "POST",
      headers: { origin: LISTED, authorization: "Bearer good" },
    });
    expect(ticket.status).toBe(200);
    expect(ticket.headers.get("access-control-allow-origin")).toBe(LISTED);
    // A 401 is readable too: the client then asks its provider for a new token instead of seeing a network error.
    const refused = await gateway.request("/api/v1/chats", {
      headers: { origin: LISTED, authorization: "Bearer bad" },
    });
    expect(refused.status).toBe(401);
    expect(refused.headers.get("access-control-allow-origin")).toBe(LISTED);
  });

  it("gives any other origin no CORS header, and refuses its preflight with a reason", async () => {
    const { gateway, forwarded } = app();
    const res = await gateway.request("/api/v2/ws-token", preflight(OTHER));
    expect(res.status).toBe(403);
    expect(((await res.json()) as { error: { message: string } }).error.message).toContain("CORS_ORIGINS");
    expect(res.headers.get("access-control-allow-origin")).toBeNull();
    expect(res.headers.get("access-control-allow-credentials")).toBeNull();
    const read = await gateway.request("/api/v1/chats", { headers: { origin: OTHER, authorization: "Bearer good" } });
    expect(read.headers.get("access-control-allow-origin")).toBeNull();
    expect(read.headers.get("access-control-allow-credentials")).toBeNull();
    // A look-alike of the listed origin is another origin.
    for (const lookalike of [`${LISTED}.evil.example`, "http://www.market.example", `${LISTED}:8443`]) {
      const answer = await gateway.request("/api/v1/chats", preflight(lookalike, "GET"));
      expect(answer.status).toBe(403);
      expect(answer.headers.get("access-control-allow-origin")).toBeNull();
    }
    // The plain GET was answered as without CORS (the browser keeps its answer from the page); no preflight was.
    expect(forwarded).toEqual([{ path: "/api/v1/chats", userId: 7 }]);
  });

  it("keeps the cookie rule: a cookie-authenticated change from another site is refused, listed or not", async () => {
    const { gateway, forwarded } = app();
    const res = await gateway.request("/api/v2/ws-token", {
      method: "POST",
      headers: { origin: LISTED, cookie: "access_token=good", "sec-fetch-site": "cross-site" },
    });
    expect(res.status).toBe(403);
    expect(forwarded).toEqual([]);
  });

  it("adds nothing without CORS_ORIGINS: same origin only, as before", async () => {
    const { gateway } = app([]);
    const res = await gateway.request("/api/v1/chats", { headers: { origin: LISTED, authorization: "Bearer good" } });
    expect(res.status).toBe(200);
    expect(res.headers.get("access-control-allow-origin")).toBeNull();
  });

  it("reads CORS_ORIGINS as exact origins and refuses anything else with the entry named", () => {
    expect(normalizeOrigin("https://www.market.example/")).toBe(LISTED);
    expect(normalizeOrigin("HTTPS://WWW.Market.Example")).toBe(LISTED);
    expect(normalizeOrigin("http://localhost:5173")).toBe("http://localhost:5173");
    for (const bad of [
      "*",
      "https://*.market.example",
      "https://a.example/app",
      "ftp://a.example",
      "a.example",
      "https://u:p@a.example",
    ]) {
      expect(normalizeOrigin(bad), bad).toBeUndefined();
    }
    const base = { NODE_ENV: "development" };
    expect(loadGatewayConfig({ ...base, CORS_ORIGINS: ` ${LISTED}, http://localhost:5173 ` }).corsOrigins).toEqual([
      LISTED,
      "http://localhost:5173",
    ]);
    expect(loadGatewayConfig(base).corsOrigins).toEqual([]);
    expect(() => loadGatewayConfig({ ...base, CORS_ORIGINS: "https://*.market.example" })).toThrow(ConfigError);
    expect(() => loadGatewayConfig({ ...base, CORS_ORIGINS: "https://*.market.example" })).toThrow(/CORS_ORIGINS/);
  });
});
