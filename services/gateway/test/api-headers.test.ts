/**
 * Every gateway answer under /api/ carries `X-Content-Type-Options: nosniff` and `Cache-Control: no-store`
 * (CONTRACT §10): its own answers, its refusals (400, 401, 403, 404, 408, 413, 429, 500, 502, 504) and the
 * answers it forwards from a chat instance, even one that asked for caching. A real gateway on port 0 in
 * front of a stand-in instance whose answer each path chooses.
 */
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createGatewayApp } from "../src/app.ts";
import { createMemoryReplayStore } from "../src/auth/replay-store.ts";
import { createWsTokens } from "../src/auth/ws-token.ts";
import {
  type E2EGateway,
  type HttpAnswer,
  http,
  pollUntil,
  randomSecret,
  rawConnection,
  startE2EGateway,
} from "./support/e2e.ts";

/** A stand-in instance: `/api/v1/chats` 200 with caching headers, `/api/v1/chats/401` 401, `/api/v1/events` hangs. */
async function startStandIn(): Promise<{ url: string; seen: string[]; close(): Promise<void> }> {
  const seen: string[] = [];
  const server: Server = createServer((req: IncomingMessage, res) => {
    seen.push(`${req.method} ${req.url}`);
    req.resume();
    if (req.url?.startsWith("/api/v1/events")) return; // never answers: the gateway's deadline does
    if (req.url === "/api/v1/chats/401") {
      res.writeHead(401, { "content-type": "application/json" });
      return res.end(JSON.stringify({ error: { code: "unauthorized", message: "wrong internal token" } }));
    }
    if (req.url === "/api/v1/chats/404") {
      res.writeHead(404, { "content-type": "application/json" });
      return res.end(JSON.stringify({ error: { code: "not_found", message: "no such chat" } }));
    }
    // What a careless instance (or a future route) might say: the gateway's headers win.
    res.writeHead(200, {
      "content-type": "application/json",
      "cache-control": "public, max-age=3600",
      "x-content-type-options": "sniff-away",
    });
    res.end(JSON.stringify({ chats: [] }));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function expectApiHeaders(answer: HttpAnswer, status: number) {
  expect(answer.status, answer.text).toBe(status);
  expect(answer.headers["x-content-type-options"]).toBe("nosniff");
  expect(answer.headers["cache-control"]).toBe("no-store");
}

describe("the gateway's answers under /api/", () => {
  const internalToken = randomSecret();
  let standIn: Awaited<ReturnType<typeof startStandIn>>;
  let gw: E2EGateway;
  let unreachable: E2EGateway;
  let token: string;

  beforeAll(async () => {
    standIn = await startStandIn();
    gw = await startE2EGateway({
      chatUpstreams: [standIn.url],
      internalToken,
      config: { maxRequestsPerUser: 1, upstreamRequestTimeoutMs: 1_000, bodyTimeoutMs: 500 },
    });
    // Port 9 (discard) is closed on loopback: no instance is reachable.
    unreachable = await startE2EGateway({ chatUpstreams: ["http://127.0.0.1:9"], internalToken });
    token = await gw.devToken(5);
  });

  afterAll(async () => {
    await gw?.stop();
    await unreachable?.stop();
    await standIn?.close();
  });

  it("on its own answers: ws-token, dev token and the API description", async () => {
    expectApiHeaders(await gw.api(token, "POST", "/api/v2/ws-token"), 200);
    expectApiHeaders(await gw.api(token, "GET", "/api/v2/ws-token"), 200);
    expectApiHeaders(await http(gw.baseUrl, "POST", "/api/dev/token", { body: { user_id: 5 } }), 200);
    expectApiHeaders(await http(gw.baseUrl, "POST", "/api/dev/token", { body: { user_id: "x" } }), 400);
    expectApiHeaders(await http(gw.baseUrl, "GET", "/api/docs"), 200);
  });

  it("on refusals: 401 without a token or with a bad one, 403 a cross-site cookie change, 404, 413", async () => {
    expectApiHeaders(await gw.api(undefined, "GET", "/api/v1/chats"), 401);
    expectApiHeaders(await gw.api("not.a.token", "POST", "/api/v2/ws-token"), 401);
    expectApiHeaders(
      await http(gw.baseUrl, "POST", "/api/v1/chats", {
        headers: { cookie: `access_token=${token}`, "sec-fetch-site": "cross-site" },
        body: { listing_id: 1, seller_id: 2 },
      }),
      403,
    );
    expectApiHeaders(await gw.api(token, "GET", "/api/nothing-here"), 404);
    expectApiHeaders(await gw.api(token, "GET", "/api/v1/chats/%2e%2e"), 404);
    expectApiHeaders(await gw.api(token, "POST", "/api/v1/chats", { pad: "x".repeat(70 * 1024) }), 413);
    // None of these reached the instance.
    expect(standIn.seen).toEqual([]);
  });

  it("on forwarded answers, whatever the instance said about caching or sniffing", async () => {
    const ok = await gw.api(token, "GET", "/api/v1/chats");
    expectApiHeaders(ok, 200);
    expect(ok.body).toEqual({ chats: [] });
    expectApiHeaders(await gw.api(token, "GET", "/api/v1/chats/404"), 404);
  });

  it("on 429, 502 and 504", async () => {
    // One request in flight (it hangs until the 1 s deadline): the user's next is 429, then the first is 504.
    const hanging = gw.api(token, "GET", "/api/v1/events?after=0");
    expect(await pollUntil(() => standIn.seen.some((line) => line.startsWith("GET /api/v1/events")))).toBe(true);
    expectApiHeaders(await gw.api(token, "GET", "/api/v1/chats"), 429);
    expectApiHeaders(await hanging, 504);
    // The instance refuses the internal token: 502 upstream_misconfigured.
    expectApiHeaders(await gw.api(token, "GET", "/api/v1/chats/401"), 502);
    // No instance reachable: 502 upstream_unavailable.
    expectApiHeaders(await unreachable.api(await unreachable.devToken(5), "GET", "/api/v1/chats"), 502);
  });

  it("on a 500 from an error nothing else answered", async () => {
    const app = createGatewayApp({
      chatUpstreams: [],
      verifyAccessToken: () => {
        throw new Error("a bug, not a refusal");
      },
      wsTokens: createWsTokens({ secret: randomSecret(), ttlSeconds: 60, replay: createMemoryReplayStore() }),
      forward: async () => new Response(null, { status: 204 }),
      metrics: new Registry(),
      checkInternalToken: () => false,
      internalToken: internalToken,
    });
    const res = await app.request("/api/v1/chats", { headers: { authorization: "Bearer x.y.z" } });
    expect(res.status).toBe(500);
    expect(res.headers.get("x-content-type-options")).toBe("nosniff");
    expect(res.headers.get("cache-control")).toBe("no-store");
  });

  it("on a 408 when the body does not arrive in time", async () => {
    const slow = await rawConnection(gw.gateway.port);
    await slow.write(
      `POST /api/v1/chats HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{`,
    );
    const answer = await slow.answer(10_000);
    expect(answer.status).toBe(408);
    expect(answer.headers["x-content-type-options"]).toBe("nosniff");
    expect(answer.headers["cache-control"]).toBe("no-store");
  });

  it("but not on answers outside /api/", async () => {
    const health = await http(gw.baseUrl, "GET", "/health");
    expect(health.status).toBe(200);
    expect(health.headers["cache-control"]).toBeUndefined();
  });
});
