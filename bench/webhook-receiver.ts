/**
 * A webhook receiver (CONTRACT §9) for the benchmarks and the soak: a node:http server on 127.0.0.1 that reads
 * each POST, checks its Standard Webhooks signature with the `standardwebhooks` package (every request, or one
 * in `verifyEvery`: verifying costs CPU a fast monolith would spend on its own cores) and answers 204; a bad
 * signature is answered 400 and counted. It can misbehave on demand: answer 500, or hang (read the request
 * and never answer, until the sender gives up or the receiver closes).
 *
 * In-process: `startWebhookReceiver()` (the soak keeps every request to compare with the database). As a
 * process of its own: `node bench/webhook-receiver.ts` with BENCH_WEBHOOK_SECRET and BENCH_WEBHOOK_VERIFY_EVERY
 * (100) prints `{"port": N}` once it listens; `GET /stats` answers its counts (bench:chat's BENCH_WEBHOOKS).
 */
import { createServer, type IncomingHttpHeaders, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import { Webhook } from "standardwebhooks";

/** One request as it reached the receiver (kept only with `keep`). */
export interface ReceivedWebhook {
  webhookId: string;
  /** `webhook-timestamp`: seconds, of this attempt. */
  attemptTimestamp: string;
  body: string;
  /** The status answered (0: hung, never answered). */
  status: number;
  /** Whether the signature was checked, and whether it held. */
  verified: "yes" | "no" | "unchecked";
}

export type ReceiverBehaviour = "ok" | "fail" | "hang";

export interface ReceiverStats {
  /** POSTs read. */
  requests: number;
  /** Answered 2xx. */
  answered2xx: number;
  /** Distinct webhook-ids answered 2xx. */
  deliveredIds: number;
  /** Answered 500 or left hanging on purpose. */
  refused: number;
  /** Signatures checked, and of those the ones that failed. */
  verified: number;
  badSignatures: number;
  byType: Record<string, number>;
}

export interface WebhookReceiver {
  port: number;
  url: string;
  /** What the receiver does with the next requests. */
  behaviour: ReceiverBehaviour;
  /** Every request, in arrival order (empty unless `keep`). */
  received: ReceivedWebhook[];
  stats(): ReceiverStats;
  close(): Promise<void>;
}

const header = (headers: IncomingHttpHeaders, name: string) => {
  const value = headers[name];
  return Array.isArray(value) ? (value[0] ?? "") : (value ?? "");
};

/** Reads the type without parsing the whole body when it is not checked (the sender writes `type` first). */
const typeOf = (body: string) => /^\{"type":"([^"]*)"/.exec(body)?.[1] ?? "?";

export async function startWebhookReceiver(options: {
  secret: string;
  /** Check the signature of one request in this many (1: every request). */
  verifyEvery?: number;
  /** Keep every request in `received`. */
  keep?: boolean;
}): Promise<WebhookReceiver> {
  const webhook = new Webhook(options.secret);
  const verifyEvery = Math.max(1, options.verifyEvery ?? 1);
  const stats: ReceiverStats = {
    requests: 0,
    answered2xx: 0,
    deliveredIds: 0,
    refused: 0,
    verified: 0,
    badSignatures: 0,
    byType: {},
  };
  const delivered = new Set<string>();
  const hanging = new Set<ServerResponse>();
  const receiver: WebhookReceiver = {
    port: 0,
    url: "",
    behaviour: "ok",
    received: [],
    stats: () => ({ ...stats, deliveredIds: delivered.size, byType: { ...stats.byType } }),
    close: () =>
      new Promise<void>((resolve) => {
        for (const res of hanging) res.destroy();
        hanging.clear();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
  const server = createServer((req, res) => {
    if (req.method === "GET" && req.url === "/stats") {
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(receiver.stats()));
      return;
    }
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString("utf8");
      const webhookId = header(req.headers, "webhook-id");
      const attemptTimestamp = header(req.headers, "webhook-timestamp");
      stats.requests++;
      let verified: ReceivedWebhook["verified"] = "unchecked";
      if (stats.requests % verifyEvery === 0 || verifyEvery === 1) {
        stats.verified++;
        try {
          webhook.verify(body, {
            "webhook-id": webhookId,
            "webhook-timestamp": attemptTimestamp,
            "webhook-signature": header(req.headers, "webhook-signature"),
          });
          verified = "yes";
        } catch {
          verified = "no";
          stats.badSignatures++;
        }
      }
      const behaviour = receiver.behaviour;
      let status = 204;
      if (verified === "no") status = 400;
      else if (behaviour === "fail") status = 500;
      else if (behaviour === "hang") status = 0;
      if (options.keep) receiver.received.push({ webhookId, attemptTimestamp, body, status, verified });
      if (status === 0) {
        stats.refused++;
        hanging.add(res);
        res.once("close", () => hanging.delete(res));
        return;
      }
      if (status === 204) {
        stats.answered2xx++;
        delivered.add(webhookId);
        const type = typeOf(body);
        stats.byType[type] = (stats.byType[type] ?? 0) + 1;
      } else if (status === 500) stats.refused++;
      res.writeHead(status).end();
    });
  });
  // A sender keeps its connections alive between deliveries; the defaults (5 s) would make it reconnect often.
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  receiver.port = (server.address() as AddressInfo).port;
  receiver.url = `http://127.0.0.1:${receiver.port}/webhooks`;
  return receiver;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const secret = process.env.BENCH_WEBHOOK_SECRET;
  if (!secret) throw new Error("BENCH_WEBHOOK_SECRET is required");
  const receiver = await startWebhookReceiver({
    secret,
    verifyEvery: Number(process.env.BENCH_WEBHOOK_VERIFY_EVERY ?? 100),
  });
  console.log(JSON.stringify({ port: receiver.port }));
  process.once("SIGTERM", () => receiver.close().then(() => process.exit(0)));
}
