/**
 * A real HTTP receiver of the chat service's webhooks (CONTRACT §9), on 127.0.0.1: every request is checked with
 * the `standardwebhooks` package, recorded, and answered as the test says at that moment: 2xx, 500, never
 * (it hangs past the sender's timeout), a destroyed connection, or not at all because the server is down
 * (connection refused) until `up()` listens again on the same port. It counts its open sockets, so that a test
 * can check that nothing leaks, and closes cleanly.
 */
import { randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { Webhook } from "standardwebhooks";

/** What the receiver does with a request: answer 2xx, answer 500, never answer, or destroy the connection. */
export type Behaviour = "ok" | "fail" | "hang" | "destroy";

export interface Received {
  /** `webhook-id`, the same on every attempt of one delivery. */
  webhookId: string;
  /** `webhook-timestamp` (seconds, of this attempt). */
  webhookTimestamp: number;
  /** The body's `type`, `timestamp` and `data` (undefined when the body was not JSON). */
  type: string;
  timestamp: string;
  data: any;
  /** The raw body and the headers as they came, to verify again (or tamper with). */
  body: string;
  headers: Record<string, string>;
  /** When it arrived (Date.now()). */
  at: number;
  /** standardwebhooks' verify() passed; `error` says why not. */
  verified: boolean;
  error?: string;
  /** What the receiver did with it. */
  behaviour: Behaviour;
  /** A 2xx was written out whole (the sender may still have given up on it first: duplicates are allowed). */
  acked: boolean;
  /** When its connection closed (Date.now()), if it has. */
  closedAt?: number;
  /** An answer was written (or the connection destroyed on purpose). */
  answered: boolean;
}

export interface WebhookReceiver {
  url: string;
  port: number;
  /** `whsec_` + base64, as WEBHOOK_SECRET takes it. */
  secret: string;
  /** Every request, in arrival order. */
  readonly received: Received[];
  /** The first acknowledged (2xx) request of each webhook-id. */
  readonly acked: Map<string, Received>;
  /** How to answer from now on; `delayMs` delays a 2xx or 500 (a slow receiver). */
  behave(behaviour: Behaviour, options?: { delayMs?: number }): void;
  /** Requests for each webhook-id, whatever the answer. */
  attempts(webhookId: string): number;
  /** Acknowledged deliveries of `type` (first per id), optionally filtered by their data. */
  ofType(type: string, filter?: (data: any) => boolean): Received[];
  /** Ids whose attempts did not all carry the same body (should be none: a retry is the same delivery). */
  bodyMismatches(): string[];
  /** Ids acknowledged more than once. */
  duplicates(): string[];
  /** Requests waiting for their answer now (delayed or hung), their connection still open. */
  inFlight(): number;
  /** Sockets open now, and accepted in all. */
  openSockets(): number;
  socketsTotal(): number;
  /** Stops listening and destroys every connection: the sender gets "connection refused" until `up()`. */
  down(): Promise<void>;
  /** Listens again on the same port. */
  up(): Promise<void>;
  /** Polls `check` (every 20 ms) until it holds; throws after `timeoutMs` naming `what`. */
  until(check: () => boolean, timeoutMs: number, what: string | (() => string)): Promise<void>;
  /** Waits until every id in `ids` was acknowledged. */
  waitForIds(ids: Iterable<string>, timeoutMs: number): Promise<void>;
  /** Waits for an acknowledged delivery of `type` whose data passes `filter`, and returns it. */
  waitFor(type: string, filter: (data: any) => boolean, timeoutMs: number): Promise<Received>;
  close(): Promise<void>;
}

/** A fresh secret in the form WEBHOOK_SECRET takes. */
export const newWebhookSecret = () => `whsec_${randomBytes(32).toString("base64")}`;

/** Verifies a body and its headers as a monolith would; throws when they do not match. */
export function verifyWebhook(secret: string, body: string, headers: Record<string, string>): unknown {
  return new Webhook(secret).verify(body, headers);
}

export async function startWebhookReceiver(options: { secret?: string } = {}): Promise<WebhookReceiver> {
  const secret = options.secret ?? newWebhookSecret();
  const verifier = new Webhook(secret);
  let behaviour: Behaviour = "ok";
  let delayMs = 0;
  const received: Received[] = [];
  const acked = new Map<string, Received>();
  const attempts = new Map<string, number>();
  const bodies = new Map<string, string>();
  const mismatched = new Set<string>();
  const ackCounts = new Map<string, number>();
  const sockets = new Set<Socket>();
  /** The requests each open socket carried, told when it closes. */
  const onSocket = new WeakMap<Socket, Received[]>();
  let socketsTotal = 0;
  /** Responses held open by "hang", ended on close. */
  const timers = new Set<NodeJS.Timeout>();

  const handle = (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("error", () => {});
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString("utf8");
      const headers: Record<string, string> = {};
      for (const [name, value] of Object.entries(req.headers)) {
        if (typeof value === "string") headers[name] = value;
      }
      let verified = false;
      let error: string | undefined;
      try {
        verifier.verify(body, headers);
        verified = true;
      } catch (e) {
        error = String(e);
      }
      let parsed: { type?: string; timestamp?: string; data?: unknown } = {};
      try {
        parsed = JSON.parse(body);
      } catch {}
      const webhookId = headers["webhook-id"] ?? "";
      const record: Received = {
        webhookId,
        webhookTimestamp: Number(headers["webhook-timestamp"]),
        type: parsed.type ?? "",
        timestamp: parsed.timestamp ?? "",
        data: parsed.data,
        body,
        headers,
        at: Date.now(),
        verified,
        error,
        behaviour,
        acked: false,
        answered: false,
      };
      received.push(record);
      if (req.socket.destroyed) record.closedAt = Date.now();
      else onSocket.get(req.socket)?.push(record);
      attempts.set(webhookId, (attempts.get(webhookId) ?? 0) + 1);
      const first = bodies.get(webhookId);
      if (first === undefined) bodies.set(webhookId, body);
      else if (first !== body) mismatched.add(webhookId);

      const answer = (status: number) => {
        record.answered = true;
        res.on("finish", () => {
          if (status < 300 && verified) {
            record.acked = true;
            ackCounts.set(webhookId, (ackCounts.get(webhookId) ?? 0) + 1);
            if (!acked.has(webhookId)) acked.set(webhookId, record);
          }
        });
        res.writeHead(status, { "content-type": "text/plain" }).end(status < 300 ? "ok" : "failed");
      };
      // An unverified request is refused whatever the behaviour, as a monolith would.
      const status = !verified ? 400 : behaviour === "fail" ? 500 : 204;
      if (behaviour === "hang" && verified) return; // never answered: the sender's timeout ends it
      if (behaviour === "destroy" && verified) {
        record.answered = true;
        req.socket.destroy();
        return;
      }
      if (delayMs > 0) {
        const timer = setTimeout(() => {
          timers.delete(timer);
          if (!res.destroyed) answer(status);
        }, delayMs);
        timers.add(timer);
      } else {
        answer(status);
      }
    });
  };

  const server = createServer({ keepAlive: true }, handle);
  server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    socketsTotal += 1;
    onSocket.set(socket, []);
    socket.on("close", () => {
      sockets.delete(socket);
      const now = Date.now();
      for (const record of onSocket.get(socket) ?? []) record.closedAt = now;
      onSocket.delete(socket);
    });
  });
  server.on("clientError", (_error, socket) => socket.destroy());

  const listen = (port: number) =>
    new Promise<number>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, "127.0.0.1", () => {
        server.off("error", reject);
        resolve((server.address() as { port: number }).port);
      });
    });
  const port = await listen(0);

  const stop = () =>
    new Promise<void>((resolve) => {
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      if (!server.listening) {
        for (const socket of sockets) socket.destroy();
        resolve();
        return;
      }
      server.close(() => resolve());
      for (const socket of sockets) socket.destroy();
    });

  const until = async (check: () => boolean, timeoutMs: number, what: string | (() => string)) => {
    const deadline = Date.now() + timeoutMs;
    while (!check()) {
      if (Date.now() > deadline)
        throw new Error(`${typeof what === "string" ? what : what()}: not within ${timeoutMs} ms`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  };

  const ofType = (type: string, filter: (data: any) => boolean = () => true) =>
    [...acked.values()].filter((r) => r.type === type && filter(r.data));

  return {
    url: `http://127.0.0.1:${port}/webhooks`,
    port,
    secret,
    received,
    acked,
    behave(next, opts = {}) {
      behaviour = next;
      delayMs = opts.delayMs ?? 0;
    },
    attempts: (id) => attempts.get(id) ?? 0,
    ofType,
    bodyMismatches: () => [...mismatched],
    duplicates: () => [...ackCounts].filter(([, n]) => n > 1).map(([id]) => id),
    inFlight: () => received.filter((r) => !r.answered && r.closedAt === undefined).length,
    openSockets: () => sockets.size,
    socketsTotal: () => socketsTotal,
    down: stop,
    async up() {
      if (!server.listening) await listen(port);
    },
    until,
    async waitForIds(ids, timeoutMs) {
      const wanted = [...ids];
      // A cursor: those before it were acknowledged already (cheap to check often with tens of thousands).
      let next = 0;
      await until(
        () => {
          while (next < wanted.length && acked.has(wanted[next]!)) next += 1;
          return next === wanted.length;
        },
        timeoutMs,
        () => `deliveries acknowledged (${wanted.filter((id) => !acked.has(id)).length} of ${wanted.length} missing)`,
      );
    },
    async waitFor(type, filter, timeoutMs) {
      await until(() => ofType(type, filter).length > 0, timeoutMs, `a ${type} delivery`);
      return ofType(type, filter)[0]!;
    },
    close: stop,
  };
}
