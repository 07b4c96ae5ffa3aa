/**
 * The monolith developer's receiver (examples/webhook-receiver.ts) run as a program, as the README tells one to,
 * against a real chat process on PostgreSQL, with a network between them that loses one answer: the example
 * verifies every delivery, does the work of a delivery sent twice (same webhook-id) once, turns
 * notification.unread into a reminder, drops a stale message.updated and refuses a forged one. Then what
 * operators watch: every series the Grafana dashboard's Webhooks row and the PrometheusRule's alerts read is one
 * this process exposes, and they, the stats and the dead list count what happened.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server } from "node:http";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Webhook } from "standardwebhooks";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { type ChatProcess, metricValue, spawnChat, until } from "./support/chat-process.ts";
import { databaseTargets } from "./support/databases.ts";

const repoRoot = fileURLToPath(new URL("../../../", import.meta.url));

/** One JSON line the example printed (its ReceiverLog). */
type LogLine = { outcome: string; webhook_id?: string; type?: string; [k: string]: unknown };

interface Example {
  url: string;
  lines: LogLine[];
  output(): string;
  stop(): Promise<void>;
}

/** `node examples/webhook-receiver.ts` on a port the OS picks (PORT=0), its JSON lines collected. */
async function startExample(secret: string): Promise<Example> {
  const child: ChildProcess = spawn(process.execPath, [join(repoRoot, "examples/webhook-receiver.ts")], {
    cwd: repoRoot,
    env: { PATH: process.env.PATH ?? "", WEBHOOK_SECRET: secret, PORT: "0" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const lines: LogLine[] = [];
  let output = "";
  let pending = "";
  child.stdout!.on("data", (chunk: Buffer) => {
    output += chunk;
    pending += chunk;
    const complete = pending.split("\n");
    pending = complete.pop()!;
    for (const line of complete.filter(Boolean)) lines.push(JSON.parse(line));
  });
  child.stderr!.on("data", (chunk: Buffer) => (output += chunk));
  const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()));
  await until(
    () => {
      if (child.exitCode !== null) throw new Error(`the example exited:\n${output}`);
      return lines.some((l) => l.outcome === "listening");
    },
    15_000,
    () => `the example listening:\n${output}`,
  );
  const port = lines.find((l) => l.outcome === "listening")!.port as number;
  return {
    url: `http://127.0.0.1:${port}`,
    lines,
    output: () => output,
    stop: async () => {
      if (child.exitCode === null) child.kill("SIGTERM");
      await exited;
    },
  };
}

/** A request as it crossed the proxy. */
interface Crossing {
  webhookId: string;
  type: string;
  body: string;
  headers: Record<string, string>;
  /** The example's answer, which the chat got unless `lost`. */
  status: number;
  lost: boolean;
}

/**
 * The network between the chat service and the example: it passes each delivery on, and for the ones `lose`
 * picks, drops the example's answer on the way back (the connection is reset after the example took it).
 */
async function startLossyProxy(target: string, lose: (type: string, attempt: number) => boolean) {
  const crossings: Crossing[] = [];
  const server: Server = createServer((req: IncomingMessage, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", async () => {
      const body = Buffer.concat(chunks).toString("utf8");
      const headers: Record<string, string> = {};
      for (const name of ["content-type", "webhook-id", "webhook-timestamp", "webhook-signature"]) {
        headers[name] = String(req.headers[name] ?? "");
      }
      const type = (JSON.parse(body) as { type: string }).type;
      const attempt = crossings.filter((c) => c.webhookId === headers["webhook-id"]).length + 1;
      const answer = await fetch(`${target}${req.url}`, { method: "POST", headers, body });
      await answer.arrayBuffer();
      const lost = lose(type, attempt);
      crossings.push({ webhookId: headers["webhook-id"]!, type, body, headers, status: answer.status, lost });
      if (lost) req.socket.destroy();
      else res.writeHead(answer.status).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}`,
    crossings,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** The metric names a PromQL expression reads (listings_chat_…). */
const metricNames = (exprs: string[]) => new Set(exprs.flatMap((e) => e.match(/\blistings_chat_[a-z0-9_]+/g) ?? []));

const postgres = databaseTargets().find((t) => t.name === "postgres");
const [BUYER, SELLER, LISTING] = [7_101, 7_102, 711];

describe.skipIf(!postgres)("examples/webhook-receiver.ts against a chat process", () => {
  const secret = `whsec_${randomBytes(32).toString("base64")}`;
  const token = randomBytes(24).toString("hex");
  const cleanups: Array<() => Promise<void>> = [];
  let example: Example;
  let proxy: Awaited<ReturnType<typeof startLossyProxy>>;
  let chat: ChatProcess;
  let chatId: number;

  const seen = (outcome: string, type?: string) =>
    example.lines.filter((l) => l.outcome === outcome && (type === undefined || l.type === type));
  const waitFor = (what: string, check: () => boolean, timeoutMs = 15_000) =>
    until(check, timeoutMs, () => `${what}; the example printed:\n${example.output()}\nthe chat:\n${chat.output()}`);

  beforeAll(async () => {
    const database = await postgres!.create();
    cleanups.push(database.drop);
    if (!("url" in database.options)) throw new Error("the PostgreSQL target has a URL");
    example = await startExample(secret);
    cleanups.push(example.stop);
    // The first answer to message.created is lost: the chat service sends it again, with the same webhook-id.
    proxy = await startLossyProxy(example.url, (type, attempt) => type === "message.created" && attempt === 1);
    cleanups.push(proxy.close);
    chat = await spawnChat({
      databaseUrl: database.options.url,
      token,
      env: {
        WEBHOOK_URL: `${proxy.url}/hooks/chat`,
        WEBHOOK_SECRET: secret,
        WEBHOOK_TIMEOUT_MS: "2000",
        WEBHOOK_RETRY_MIN_MS: "100",
        WEBHOOK_RETRY_MAX_MS: "400",
        WEBHOOK_POLL_MS: "50",
        NOTIFY_UNREAD_AFTER_S: "1",
        LISTINGS_REQUIRED: "0",
        // Deliveries go at once, whatever else CI runs beside.
        WEBHOOK_YIELD_MAX_S: "0",
      },
    });
    cleanups.push(chat.stop);
  });

  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  });

  it("verifies, does a repeated delivery's work once, reminds, drops a stale edit and refuses a forgery", async () => {
    const opened = await chat.api(BUYER, "POST", "/api/v1/chats", { listing_id: LISTING, seller_id: SELLER });
    expect(opened.status).toBe(201);
    chatId = opened.body.id;
    const sent = await chat.api(BUYER, "POST", `/api/v1/chats/${chatId}/messages`, {
      content: "Is it still available?",
      client_msg_id: "ops-example-1",
    });
    expect(sent.status).toBe(201);

    // message.created: taken by the example, its answer lost, sent again: handled once, then a duplicate.
    await waitFor(
      "message.created handled, then its repeat",
      () => seen("handled", "message.created").length > 0 && seen("duplicate", "message.created").length > 0,
    );
    const [handled] = seen("handled", "message.created");
    expect(seen("handled", "message.created")).toHaveLength(1);
    expect(seen("duplicate", "message.created").map((l) => l.webhook_id)).toEqual([handled!.webhook_id]);
    const crossings = proxy.crossings.filter((c) => c.webhookId === handled!.webhook_id);
    expect(crossings.map((c) => [c.status, c.lost])).toEqual([
      [204, true],
      [204, false],
    ]);
    // The same delivery both times: the body (and its timestamp, the change's) does not change.
    expect(crossings[1]!.body).toBe(crossings[0]!.body);
    expect(JSON.parse(crossings[0]!.body).data.message.id).toBe(sent.body.id);
    await waitFor("chat.created handled", () => seen("handled", "chat.created").length === 1);

    // The edit: a newer version, handled.
    const edited = await chat.api(BUYER, "PATCH", `/api/v1/messages/${sent.body.id}`, {
      content: "Is it still available? I can pick it up today.",
    });
    expect(edited.status).toBe(200);
    await waitFor("message.updated handled", () => seen("handled", "message.updated").length === 1);

    // notification.unread: the seller has not read it within NOTIFY_UNREAD_AFTER_S (1 s): one reminder.
    await waitFor("a reminder for the seller", () => seen("reminder").length > 0);
    expect(seen("reminder")).toEqual([expect.objectContaining({ user_id: SELLER, chat_id: chatId, unread_count: 1 })]);
    // The message as it was when the reminder was recorded (before or after the edit: both begin so).
    expect(seen("reminder")[0]!.text).toContain("Is it still available?");

    // Each delivery's work was done once: no webhook-id handled twice.
    const worked = example.lines.filter((l) => l.outcome === "handled" || l.outcome === "reminder");
    expect(new Set(worked.map((l) => l.webhook_id)).size).toBe(worked.length);
    expect(seen("rejected")).toEqual([]);

    const update = proxy.crossings.find((c) => c.type === "message.updated")!;
    const post = (body: string, headers: Record<string, string>) =>
      fetch(`${example.url}/hooks/chat`, { method: "POST", headers, body }).then((r) => r.status);

    // A forgery: the signed update with other content. 401, and no work done.
    const forged = JSON.parse(update.body);
    forged.data.message.content = "Send the money to my other account";
    expect(await post(JSON.stringify(forged), update.headers)).toBe(401);
    // A replay of the real one, verbatim: a duplicate, answered 2xx.
    expect(await post(update.body, update.headers)).toBe(204);
    // An older version of the message under a webhook-id of its own (signed with the secret, as the chat service
    // signs): order is not promised, and this one is stale.
    const older = JSON.parse(update.body);
    older.data.message.edited_at = new Date(Date.parse(older.data.message.edited_at) - 60_000).toISOString();
    older.data.message.content = "Is it still available? (an earlier edit)";
    const olderBody = JSON.stringify(older);
    const olderId = "msg_ops_example_older";
    const now = new Date();
    expect(
      await post(olderBody, {
        "content-type": "application/json",
        "webhook-id": olderId,
        "webhook-timestamp": String(Math.floor(now.getTime() / 1000)),
        "webhook-signature": new Webhook(secret).sign(olderId, now, olderBody),
      }),
    ).toBe(204);
    await waitFor("the forgery, the replay and the stale edit seen", () => seen("stale").length === 1);
    expect(seen("rejected")).toHaveLength(1);
    expect(seen("duplicate", "message.updated").map((l) => l.webhook_id)).toEqual([update.webhookId]);
    expect(seen("stale")).toEqual([expect.objectContaining({ webhook_id: olderId, type: "message.updated" })]);
    expect(seen("handled", "message.updated")).toHaveLength(1);
  });

  it("exposes every series the dashboard's Webhooks row and the alerts read, and counts what happened", async () => {
    // Nothing left in the queue: the stats, the gauges (cached up to 5 s) and the dead list say so.
    await until(
      async () => {
        const stats = await chat.internal("GET", "/internal/chat/ws/stats");
        return stats.body?.webhooks?.pending === 0;
      },
      15_000,
      () => `an empty queue in the stats:\n${chat.output()}`,
    );
    expect((await chat.internal("GET", "/internal/chat/ws/stats")).body.webhooks).toEqual({
      pending: 0,
      dead: 0,
      oldest_pending_s: 0,
    });
    expect((await chat.internal("GET", "/internal/chat/webhooks/dead")).body).toEqual({ deliveries: [] });
    let metrics = "";
    await until(
      async () => {
        metrics = (await chat.internal("GET", "/metrics")).body as string;
        return /^listings_chat_webhooks_pending 0$/m.test(metrics);
      },
      15_000,
      () => `listings_chat_webhooks_pending 0 in /metrics:\n${metrics}`,
      250,
    );

    // What this process declares (# TYPE), with a histogram's series.
    const exposed = new Set<string>();
    for (const [, name, type] of metrics.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
      exposed.add(name!);
      if (type === "histogram") for (const suffix of ["_bucket", "_count", "_sum"]) exposed.add(`${name}${suffix}`);
    }
    // The dashboard's Webhooks row: the panels below its row header, up to the next one.
    const dashboard = JSON.parse(readFileSync(join(repoRoot, "infra/grafana/listings-chat.json"), "utf8")) as {
      panels: Array<{ type: string; title: string; gridPos: { y: number }; targets?: Array<{ expr: string }> }>;
    };
    const rows = dashboard.panels.filter((p) => p.type === "row").sort((a, b) => a.gridPos.y - b.gridPos.y);
    const row = rows.find((r) => r.title === "Webhooks");
    expect(row).toBeDefined();
    const next = rows.find((r) => r.gridPos.y > row!.gridPos.y)?.gridPos.y ?? Number.POSITIVE_INFINITY;
    const panels = dashboard.panels.filter(
      (p) => p.type !== "row" && p.gridPos.y > row!.gridPos.y && p.gridPos.y < next,
    );
    const dashboardNames = metricNames(panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr)));
    expect([...dashboardNames].sort()).toEqual([
      "listings_chat_webhook_deliveries_total",
      "listings_chat_webhook_delivery_lag_seconds_bucket",
      "listings_chat_webhooks_dead",
      "listings_chat_webhooks_oldest_pending_seconds",
      "listings_chat_webhooks_pending",
      "listings_chat_webhooks_yielding",
    ]);
    // The alerts (infra/k8s/base/prometheus-rule.yaml).
    const rule = parse(readFileSync(join(repoRoot, "infra/k8s/base/prometheus-rule.yaml"), "utf8")) as {
      spec: { groups: Array<{ rules: Array<{ expr: string }> }> };
    };
    const alertNames = metricNames(rule.spec.groups.flatMap((g) => g.rules.map((r) => r.expr)));
    expect(alertNames.size).toBeGreaterThanOrEqual(3);
    expect([...dashboardNames, ...alertNames].filter((name) => !exposed.has(name))).toEqual([]);

    // They counted: chat.created, message.created (its lost answer a failure, then delivered), message.updated
    // and the reminder; each delivery's lag observed.
    const delivered = metricValue(metrics, "listings_chat_webhook_deliveries_total", { outcome: "delivered" });
    expect(delivered).toBeGreaterThanOrEqual(4);
    expect(
      metricValue(metrics, "listings_chat_webhook_deliveries_total", { outcome: "failed" }),
    ).toBeGreaterThanOrEqual(1);
    expect(metricValue(metrics, "listings_chat_webhook_deliveries_total", { outcome: "dead" })).toBe(0);
    expect(metricValue(metrics, "listings_chat_webhook_delivery_lag_seconds_count")).toBe(delivered);
    expect(metricValue(metrics, "listings_chat_webhooks_dead")).toBe(0);
    expect(metricValue(metrics, "listings_chat_webhooks_oldest_pending_seconds")).toBe(0);
    // Every 2xx the proxy passed on is one delivered.
    expect(proxy.crossings.filter((c) => !c.lost && c.status === 204)).toHaveLength(delivered);
  });
});
