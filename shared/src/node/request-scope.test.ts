/**
 * Request ids and the request scope: a sane X-Request-Id is kept, anything else replaced by a new id; the
 * answer carries it; every line logged while the request is handled has it (req_id), and none after; the
 * observer gets the route's pattern, not the path.
 */
import { Writable } from "node:stream";
import { Hono } from "hono";
import { describe, expect, it } from "vitest";
import { createLogger } from "./logger.ts";
import { currentRequestId, requestIdFrom, withRequestId } from "./request-id.ts";
import { requestScope } from "./request-scope.ts";

function capturedLogger() {
  const lines: Array<Record<string, unknown>> = [];
  const destination = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split("\n").filter(Boolean)) lines.push(JSON.parse(line));
      done();
    },
  });
  return { lines, log: createLogger({ name: "test", level: "debug", pretty: false, destination }) };
}

describe("request ids", () => {
  it("keeps a sane id and replaces anything else", () => {
    expect(requestIdFrom("edge-7f3a.1:2")).toBe("edge-7f3a.1:2");
    expect(requestIdFrom(["from-nginx", "second"])).toBe("from-nginx");
    const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
    for (const bad of [undefined, null, "", "has space", "x".repeat(65), "line\nbreak", '{"json":1}']) {
      expect(requestIdFrom(bad), String(bad)).toMatch(uuid);
    }
  });

  it("follows the work it is given through awaits, and no further", async () => {
    expect(currentRequestId()).toBeUndefined();
    const seen = await withRequestId("r-1", async () => {
      await new Promise((r) => setTimeout(r, 5));
      return currentRequestId();
    });
    expect(seen).toBe("r-1");
    expect(currentRequestId()).toBeUndefined();
  });
});

describe("requestScope", () => {
  const { lines, log } = capturedLogger();
  const observed: Array<{ route: string; method: string; status: number }> = [];
  const app = new Hono();
  app.use(requestScope({ log, observe: ({ route, method, status }) => observed.push({ route, method, status }) }));
  app.get("/items/:id", async (c) => {
    await new Promise((r) => setTimeout(r, 2));
    log.info({ item: c.req.param("id") }, "inside the handler");
    return c.json({ ok: true });
  });

  it("answers with the id, writes it in every line of the request, and observes the route's pattern", async () => {
    const kept = await app.request("/items/7", { headers: { "x-request-id": "trace-123" } });
    expect(kept.headers.get("x-request-id")).toBe("trace-123");
    const made = await app.request("/items/8", { headers: { "x-request-id": "no good" } });
    const madeId = made.headers.get("x-request-id");
    expect(madeId).toMatch(/^[0-9a-f-]{36}$/);

    const inside = lines.filter((l) => l.msg === "inside the handler");
    expect(inside.map((l) => [l.item, l.req_id])).toEqual([
      ["7", "trace-123"],
      ["8", madeId],
    ]);
    const requestLines = lines.filter((l) => l.msg === "request");
    expect(requestLines.map((l) => l.req_id)).toEqual(["trace-123", madeId]);
    expect(observed).toEqual([
      { route: "/items/:id", method: "GET", status: 200 },
      { route: "/items/:id", method: "GET", status: 200 },
    ]);
    log.info("outside any request");
    expect(lines.at(-1)).not.toHaveProperty("req_id");
  });
});
