/**
 * OpenTelemetry tracing across the hop, with both services as real processes sending OTLP/HTTP to a
 * stand-in collector: a REST request through the gateway is one trace, whose listings-chat span is the
 * child of the gateway's (the `traceparent` it passed on) and whose PostgreSQL queries (with DATABASE_URL,
 * as in CI) are children of listings-chat's. Without an endpoint nothing is sent.
 */
import { createServer, type Server } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { databaseTargets } from "../../listings-chat/test/support/databases.ts";
import { http, randomSecret } from "./support/e2e.ts";
import { type ServiceProcess, startChatProcess, startGatewayProcess } from "./support/processes.ts";

interface ReceivedSpan {
  service: string;
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
}

/** A collector that keeps every span of every OTLP/HTTP JSON export it receives. */
async function startCollector(): Promise<{ url: string; spans: ReceivedSpan[]; server: Server }> {
  const spans: ReceivedSpan[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      if (req.url === "/v1/traces") {
        const body = JSON.parse(Buffer.concat(chunks).toString());
        for (const resourceSpans of body.resourceSpans ?? []) {
          const service = resourceSpans.resource?.attributes?.find((a: any) => a.key === "service.name")?.value
            ?.stringValue;
          for (const scope of resourceSpans.scopeSpans ?? []) {
            for (const span of scope.spans ?? []) spans.push({ service, ...span });
          }
        }
      }
      res.writeHead(200, { "content-type": "application/json" }).end("{}");
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, spans, server };
}

describe("tracing gateway → listings-chat → PostgreSQL", () => {
  const postgres = databaseTargets().find((t) => t.name === "postgres");
  const internalToken = randomSecret();
  let collector: Awaited<ReturnType<typeof startCollector>>;
  let chat: ServiceProcess;
  let gateway: ServiceProcess;
  let drop = async () => {};

  beforeAll(async () => {
    collector = await startCollector();
    const database = postgres ? await postgres.create() : undefined;
    drop = database?.drop ?? drop;
    const tracing = { OTEL_EXPORTER_OTLP_ENDPOINT: collector.url };
    chat = await startChatProcess({
      ...tracing,
      INTERNAL_TOKEN: internalToken,
      ...(database && "url" in database.options ? { DATABASE_URL: database.options.url } : {}),
    });
    gateway = await startGatewayProcess({ ...tracing, INTERNAL_TOKEN: internalToken, CHAT_UPSTREAMS: chat.baseUrl });
  }, 60_000);

  afterAll(async () => {
    await gateway?.stop();
    await chat?.stop();
    await drop();
    collector?.server.close();
  });

  it("makes one trace of a REST request, the chat's span the child of the gateway's, the queries the chat's", async () => {
    const token = await http(gateway.baseUrl, "POST", "/api/dev/token", { body: { user_id: 8_101 } });
    const access = token.body.access_token as string;
    const created = await http(gateway.baseUrl, "POST", "/api/v1/chats", {
      headers: { authorization: `Bearer ${access}`, "x-request-id": "traced-1" },
      body: { listing_id: 81, seller_id: 8_102 },
    });
    expect(created.status, created.text).toBe(201);
    // Stopping flushes what is batched.
    expect(await gateway.stop()).toBe(0);
    expect(await chat.stop()).toBe(0);

    const gatewaySpan = collector.spans.find((s) => s.service === "gateway" && s.name.startsWith("POST /api/v1/chats"));
    expect(gatewaySpan, JSON.stringify(collector.spans.map((s) => [s.service, s.name]))).toBeDefined();
    const trace = collector.spans.filter((s) => s.traceId === gatewaySpan!.traceId);
    const chatSpan = trace.find((s) => s.service === "listings-chat" && s.name === "POST /api/v1/chats");
    expect(chatSpan?.parentSpanId).toBe(gatewaySpan!.spanId);
    if (postgres) {
      const queries = trace.filter((s) => s.service === "listings-chat" && s.name.startsWith("pg "));
      expect(queries.length).toBeGreaterThan(0);
      // Each query hangs under the chat's request span (directly, or under another of its children).
      const ids = new Set(trace.filter((s) => s.service === "listings-chat").map((s) => s.spanId));
      for (const query of queries) expect(ids.has(query.parentSpanId ?? "")).toBe(true);
      expect(queries.some((q) => q.parentSpanId === chatSpan!.spanId)).toBe(true);
    }
  });
});
