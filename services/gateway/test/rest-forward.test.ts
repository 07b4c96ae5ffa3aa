import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRestForwarder } from "../src/proxy/rest-forward.ts";
import { createUpstreams } from "../src/proxy/upstreams.ts";

/** An instance whose answer the test writes by hand. */
let handler: (req: IncomingMessage, res: ServerResponse) => void = (_req, res) => res.end();
let server: Server;
let base: string;
const seen: Array<{ path: string; headers: IncomingMessage["headers"]; body: string }> = [];

beforeAll(async () => {
  server = createServer((req, res) => {
    let body = "";
    req.on("data", (c) => {
      body += c;
    });
    req.on("end", () => {
      seen.push({ path: req.url ?? "", headers: req.headers, body });
      handler(req, res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

function forwarder(overrides: { requestTimeoutMs?: number; maxRequestsPerUser?: number } = {}) {
  const upstreams = createUpstreams({
    urls: [base],
    connectTimeoutMs: 500,
    requestTimeoutMs: 5_000,
    upgradeAdmission: { inFlightMax: 1, queueMax: 0, maxWaitMs: 0 },
  });
  return createRestForwarder({
    upstreams,
    internalToken: "internal",
    log: pino({ level: "silent" }),
    requestTimeoutMs: overrides.requestTimeoutMs ?? 2_000,
    bodyTimeoutMs: 500,
    maxRequestsPerUser: overrides.maxRequestsPerUser ?? 4,
  });
}

describe("REST forwarding", () => {
  it("drops hop-by-hop headers, including those the instance names in Connection", async () => {
    handler = (_req, res) => {
      res.writeHead(200, {
        connection: "keep-alive, x-hop-secret",
        "x-hop-secret": "only for this connection",
        "keep-alive": "timeout=5",
        "x-end-to-end": "kept",
        "content-type": "application/json",
      });
      res.end("{}");
    };
    const res = await forwarder().handle(new Request("http://gw/api/v1/chats"), 5);
    expect(res.status).toBe(200);
    expect(res.headers.get("x-end-to-end")).toBe("kept");
    expect(res.headers.get("x-hop-secret")).toBeNull();
    expect(res.headers.get("keep-alive")).toBeNull();
  });

  it("sets identity on the internal hop and passes no client cookie or authorization", async () => {
    handler = (_req, res) => res.end("{}");
    await forwarder().handle(
      new Request("http://gw/api/v1/chats?limit=2", {
        headers: { cookie: "access_token=x", authorization: "Bearer y", "x-user-id": "1", "x-request-id": "r1" },
      }),
      5,
    );
    const last = seen.at(-1)!;
    expect(last.path).toBe("/api/v1/chats?limit=2");
    expect(last.headers["x-user-id"]).toBe("5");
    expect(last.headers["x-internal-token"]).toBe("internal");
    expect(last.headers["x-request-id"]).toBe("r1");
    expect(last.headers.cookie).toBeUndefined();
    expect(last.headers.authorization).toBeUndefined();
  });

  it("answers an instance's 401 as 502 upstream_misconfigured", async () => {
    handler = (_req, res) => {
      res.writeHead(401, { "content-type": "application/json" });
      res.end('{"error":{"code":"unauthorized","message":"missing or wrong X-Internal-Token"}}');
    };
    const res = await forwarder().handle(new Request("http://gw/api/v1/chats"), 5);
    expect(res.status).toBe(502);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("upstream_misconfigured");
  });

  it("refuses paths it does not forward: encoded, dotted, or outside the chat API", async () => {
    handler = (_req, res) => res.end("{}");
    const before = seen.length;
    for (const path of [
      "/api/v1/chats/%2e%2e%2fx",
      "/api/v1/chats/..%2finternal",
      "/api/v1/x%00",
      "/api/v1/chats/a.b",
      "/api/v2/ws-token",
    ]) {
      const res = await forwarder().handle(new Request(`http://gw${path}`), 5);
      expect(res.status, path).toBe(404);
    }
    expect(seen.length).toBe(before);
  });

  it("gives 504 when the instance does not answer within the total deadline, and 413 and 429 before any upstream work", async () => {
    handler = (_req, res) => setTimeout(() => res.end("{}"), 1_000);
    const slow = forwarder({ requestTimeoutMs: 200, maxRequestsPerUser: 1 });
    const pending = slow.handle(new Request("http://gw/api/v1/chats"), 6);
    const crowded = await slow.handle(new Request("http://gw/api/v1/chats"), 6);
    expect(crowded.status).toBe(429);
    expect(crowded.headers.get("retry-after")).toBe("1");
    expect((await pending).status).toBe(504);
    const before = seen.length;
    const big = await slow.handle(
      new Request("http://gw/api/v1/chats", { method: "POST", body: "x".repeat(64 * 1024 + 1) }),
      7,
    );
    expect(big.status).toBe(413);
    const exact = await forwarder().handle(
      new Request("http://gw/api/v1/chats", { method: "POST", body: "x".repeat(64 * 1024) }),
      7,
    );
    expect(exact.status).not.toBe(413);
    await new Promise((r) => setTimeout(r, 1_100));
    expect(seen.length - before).toBe(1);
    expect(seen.at(-1)!.body.length).toBe(64 * 1024);
  });

  it("cancels the upstream request when the client leaves", async () => {
    let upstreamClosed = false;
    let arrived = false;
    handler = (req, res) => {
      arrived = true;
      // Never answers; notices when the gateway gives up the request.
      res.on("close", () => {
        upstreamClosed = true;
      });
      void req;
    };
    const client = new AbortController();
    const answer = forwarder({ requestTimeoutMs: 10_000 }).handle(
      new Request("http://gw/api/v1/chats", { signal: client.signal }),
      8,
    );
    const until = async (check: () => boolean) => {
      const deadline = Date.now() + 2_000;
      while (!check() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      return check();
    };
    expect(await until(() => arrived)).toBe(true);
    client.abort();
    expect((await answer).status).toBe(499);
    expect(await until(() => upstreamClosed)).toBe(true);
  });
});
