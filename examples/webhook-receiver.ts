/**
 * A receiver for listings-chat's webhooks (CONTRACT §9; README, "Webhooks"), to copy into the monolith.
 *
 *   WEBHOOK_SECRET=whsec_… PORT=4000 node examples/webhook-receiver.ts
 *
 * and set the chat service's WEBHOOK_URL to http://<this host>:4000/hooks/chat with the same WEBHOOK_SECRET.
 * No dependency but `standardwebhooks` (npm; pip's `standardwebhooks` for Python does the same). It shows the
 * four things every receiver needs:
 *
 * 1. Verify the signature (three lines, in `receive`), and refuse what does not verify with 401.
 * 2. Deduplicate by `webhook-id`. Deliveries are at least once: an answer lost on the way back, a timeout or a
 *    restarted chat instance sends the same delivery again, always with the same `webhook-id`. Here the ids
 *    are kept in memory (the last 10 000); in the monolith, insert the id into a table with a unique
 *    constraint, in the same transaction as the work or the job that does it (`INSERT … ON CONFLICT DO
 *    NOTHING`: nothing inserted means a duplicate).
 * 3. Answer 2xx at once and do the work after: the chat service waits WEBHOOK_TIMEOUT_MS (5 s) for the answer,
 *    and a slow answer is retried (and counted as a failure). Here the work runs after the answer, in this
 *    process; in the monolith, store the event and let your job queue do the work.
 * 4. Order is not promised: drop a stale `message.updated`. Each `data.message` is the message as it was when
 *    the change was recorded; keep the newest version per message id (`edited_at`, and `deleted_at` last).
 *
 * `notification.unread` is the reminder to turn into a push or an e-mail (the stub `sendReminder`).
 */
import { createServer, type IncomingMessage, type Server } from "node:http";
import { Webhook } from "standardwebhooks";

/** A message as CONTRACT §4 has it (ISO-8601 UTC times). */
export interface ChatMessage {
  id: number;
  chat_id: number;
  sender_id: number | null;
  content: string;
  created_at: string;
  edited_at: string | null;
  deleted_at: string | null;
  [field: string]: unknown;
}

/** What arrives: `{type, timestamp, data}` (CONTRACT §9 lists every type and its data). */
export type WebhookEvent =
  | { type: "message.created" | "message.updated" | "message.deleted"; timestamp: string; data: MessageData }
  | { type: "notification.unread"; timestamp: string; data: UnreadReminder }
  | { type: string; timestamp: string; data: Record<string, unknown> };

export interface MessageData {
  message: ChatMessage;
  chat: { id: number; listing_id: number; buyer_id: number; seller_id: number };
  flags: string[];
}

export interface UnreadReminder {
  user_id: number;
  chat_id: number;
  unread_count: number;
  last_message: ChatMessage;
}

/** One line of what the receiver did, for its log (JSON lines on stdout when run as a program). */
export type ReceiverLog =
  | { outcome: "listening"; port: number }
  | { outcome: "handled" | "duplicate" | "stale"; webhook_id: string; type: string }
  | { outcome: "reminder"; webhook_id: string; user_id: number; chat_id: number; unread_count: number; text: string }
  | { outcome: "rejected"; status: number; reason: string }
  | { outcome: "error"; webhook_id: string; reason: string };

export interface ReceiverOptions {
  /** WEBHOOK_SECRET, the same value as the chat service's: `whsec_` and base64. */
  secret: string;
  log?: (line: ReceiverLog) => void;
  /** The push or the e-mail (a stub that logs by default). */
  sendReminder?: (reminder: UnreadReminder, text: string) => Promise<void>;
}

/** The ids seen last, oldest first out: a Map keeps insertion order. */
class RecentIds {
  readonly #ids = new Map<string, true>();
  readonly #max: number;
  constructor(max: number) {
    this.#max = max;
  }
  /** false when `id` was already there (a duplicate). */
  add(id: string): boolean {
    if (this.#ids.has(id)) return false;
    this.#ids.set(id, true);
    if (this.#ids.size > this.#max) this.#ids.delete(this.#ids.keys().next().value!);
    return true;
  }
}

/** A message's version: deleted is the last one; then the latest edit; then its creation. */
function version(message: ChatMessage): number {
  if (message.deleted_at) return Number.POSITIVE_INFINITY;
  return Date.parse(message.edited_at ?? message.created_at);
}

const MAX_BODY_BYTES = 1024 * 1024;

function readBody(req: IncomingMessage): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size <= MAX_BODY_BYTES) chunks.push(chunk);
    });
    req.on("end", () => resolve(size <= MAX_BODY_BYTES ? Buffer.concat(chunks) : undefined));
    req.on("error", reject);
  });
}

/** The receiver as a node:http server: POST any path; listen() it yourself. */
export function createWebhookReceiver(options: ReceiverOptions): Server {
  const log = options.log ?? ((line) => console.log(JSON.stringify(line)));
  // Replace with your push service or mailer: look up the user's devices (or e-mail address) by user_id, and
  // link to the chat (chat_id). Skip it for a user who turned such reminders off.
  const sendReminder = options.sendReminder ?? (async () => {});
  const webhook = new Webhook(options.secret);
  const seen = new RecentIds(10_000);
  /** The newest version handled per message id (in the monolith: a column of your copy of the message). */
  const versions = new Map<number, number>();

  async function work(id: string, event: WebhookEvent): Promise<void> {
    if (event.type === "notification.unread") {
      const reminder = event.data as UnreadReminder;
      const preview = reminder.last_message.content.slice(0, 80);
      const text = `${reminder.unread_count} unread message${reminder.unread_count === 1 ? "" : "s"}: "${preview}"`;
      await sendReminder(reminder, text);
      log({ outcome: "reminder", webhook_id: id, ...reminderFields(reminder), text });
      return;
    }
    if (event.type.startsWith("message.")) {
      const { message } = event.data as MessageData;
      const known = versions.get(message.id);
      if (known !== undefined && version(message) < known) {
        log({ outcome: "stale", webhook_id: id, type: event.type });
        return;
      }
      versions.set(message.id, version(message));
      if (versions.size > 100_000) versions.delete(versions.keys().next().value!);
    }
    // Your work: index a report for the moderators, copy a message (and its `flags`) to your search, …
    log({ outcome: "handled", webhook_id: id, type: event.type });
  }

  async function receive(req: IncomingMessage): Promise<{ status: number; after?: () => Promise<void> }> {
    if (req.method !== "POST") return { status: 405 };
    const body = await readBody(req);
    if (body === undefined) return { status: 413 };
    let event: WebhookEvent;
    try {
      // Verifying is these three lines: the raw body as received (not re-serialised JSON), the three
      // webhook-* headers; a wrong signature, or a webhook-timestamp over 5 minutes off, throws.
      event = webhook.verify(body, req.headers as Record<string, string>) as WebhookEvent;
    } catch (error) {
      log({ outcome: "rejected", status: 401, reason: (error as Error).message });
      return { status: 401 };
    }
    const id = String(req.headers["webhook-id"]);
    if (!seen.add(id)) {
      // Already taken: say so again (2xx), or the chat service keeps retrying it.
      log({ outcome: "duplicate", webhook_id: id, type: event.type });
      return { status: 204 };
    }
    return { status: 204, after: () => work(id, event) };
  }

  return createServer((req, res) => {
    receive(req).then(
      ({ status, after }) => {
        res.writeHead(status).end();
        // After the answer: the work never holds the chat service's delivery.
        after?.().catch((error: Error) =>
          log({ outcome: "error", webhook_id: String(req.headers["webhook-id"]), reason: error.message }),
        );
      },
      () => res.writeHead(400).end(),
    );
  });
}

function reminderFields(reminder: UnreadReminder) {
  return { user_id: reminder.user_id, chat_id: reminder.chat_id, unread_count: reminder.unread_count };
}

if (import.meta.main) {
  const { WEBHOOK_SECRET, PORT = "4000", HOST = "127.0.0.1" } = process.env;
  if (!WEBHOOK_SECRET) {
    console.error("set WEBHOOK_SECRET to the chat service's (whsec_…)");
    process.exit(1);
  }
  const server = createWebhookReceiver({ secret: WEBHOOK_SECRET });
  server.listen(Number(PORT), HOST, () => {
    const address = server.address();
    if (address && typeof address === "object")
      console.log(JSON.stringify({ outcome: "listening", port: address.port }));
  });
  for (const signal of ["SIGTERM", "SIGINT"] as const) process.on(signal, () => server.close(() => process.exit(0)));
}
