/**
 * Both services' /metrics after real traffic through the gateway (listings-chat on PostgreSQL when
 * DATABASE_URL is set, as in CI; PGlite otherwise): every histogram and counter an operator's dashboard
 * reads is there and has counted what happened, and `promtool check metrics` (Debian's prometheus
 * package, when installed) finds nothing wrong with them.
 */
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { databaseTargets } from "../../listings-chat/test/support/databases.ts";
import {
  type E2EChat,
  type E2EGateway,
  freePort,
  http,
  pollUntil,
  randomSecret,
  startE2EChat,
  startE2EGateway,
} from "./support/e2e.ts";

/** The value of one sample line (`name{labels} value`), summed over the lines that match. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  let total = 0;
  let found = false;
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (!Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) continue;
    found = true;
    total += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  if (!found) throw new Error(`no sample ${name} ${JSON.stringify(labels)}`);
  return total;
}

describe("metrics after traffic", () => {
  const internalToken = randomSecret();
  const postgres = databaseTargets().find((t) => t.name === "postgres");
  let drop = async () => {};
  let chat: E2EChat;
  let gw: E2EGateway;

  beforeAll(async () => {
    const database = postgres ? await postgres.create() : undefined;
    drop = database?.drop ?? drop;
    chat = await startE2EChat({ database: database?.options ?? { inMemory: true }, internalToken });
    // A second upstream nobody listens on: the gateway's REST forwarding fails over from it, and counts it.
    const dead = `http://127.0.0.1:${await freePort()}`;
    gw = await startE2EGateway({ chatUpstreams: [dead, chat.baseUrl], internalToken });
  });

  afterAll(async () => {
    await gw?.stop();
    await chat?.stop();
    await drop();
  });

  it("counts and times REST, upgrades, deliveries, replays, queries, closes and upstream failures", async () => {
    const [buyer, seller] = [6_001, 6_002];
    const buyerAccess = await gw.devToken(buyer);
    // Before any upgrade marks it down: one of these meets the dead upstream first.
    for (let i = 0; i < 3; i++) expect((await gw.api(buyerAccess, "GET", "/api/v1/chats")).status).toBe(200);
    const sellerSocket = await gw.connectAs(seller);
    const buyerSocket = await gw.connectAs(buyer);
    const created = await gw.api(buyerAccess, "POST", "/api/v1/chats", { listing_id: 61, seller_id: seller });
    expect(created.status).toBe(201);
    buyerSocket.send({ type: "send_message", chat_id: created.body.id, content: "metrics?", client_msg_id: "m-1" });
    await sellerSocket.waitFor((f) => f.type === "new_message");
    sellerSocket.close();
    // A resume from the start: a replay.
    const resumed = await gw.connectAs(seller, { after: 0 });
    await resumed.waitFor((f) => f.type === "new_message");
    resumed.close();
    buyerSocket.close();
    // The chat counts a close when its socket closes: wait for all three.
    const closes = async () => {
      const res = await http(chat.baseUrl, "GET", "/metrics", {
        headers: { authorization: `Bearer ${internalToken}` },
      });
      return /^listings_chat_ws_closes_total\{code="\d+"\} (\d+)$/m.test(res.text)
        ? sample(res.text, "listings_chat_ws_closes_total")
        : 0;
    };
    expect(await pollUntil(async () => (await closes()) === 3, 10_000, 50)).toBe(true);

    const scrape = async (base: string) => {
      const res = await http(base, "GET", "/metrics", { headers: { authorization: `Bearer ${internalToken}` } });
      expect(res.status).toBe(200);
      return res.text;
    };
    const gatewayText = await scrape(gw.baseUrl);
    const chatText = await scrape(chat.baseUrl);

    // The gateway: REST latency per route pattern, upgrade latency, upstream failures by kind.
    expect(
      sample(gatewayText, "listings_chat_gateway_http_request_duration_seconds_count", {
        method: "GET",
        status: "200",
      }),
    ).toBeGreaterThanOrEqual(3);
    expect(gatewayText).toMatch(
      /listings_chat_gateway_http_request_duration_seconds_bucket\{[^}]*route="\/api\/v1\/chats\/\*"/,
    );
    expect(sample(gatewayText, "listings_chat_gateway_ws_upgrade_duration_seconds_count")).toBe(3);
    expect(
      sample(gatewayText, "listings_chat_gateway_rest_upstream_failures_total", { outcome: "unreachable" }),
    ).toBeGreaterThanOrEqual(1);
    expect(sample(gatewayText, "listings_chat_gateway_ws_upgrades_accepted_total")).toBe(3);

    // listings-chat: REST by route pattern, upgrades to their greeting, the delivery, the replay, closes.
    expect(chatText).toMatch(
      /listings_chat_http_request_duration_seconds_count\{route="\/api\/v1\/chats",method="POST",status="201"\} 1/,
    );
    expect(sample(chatText, "listings_chat_ws_upgrade_duration_seconds_count")).toBe(3);
    expect(sample(chatText, "listings_chat_send_to_delivery_seconds_count")).toBeGreaterThanOrEqual(1);
    expect(sample(chatText, "listings_chat_replay_duration_seconds_count")).toBeGreaterThanOrEqual(1);
    expect(sample(chatText, "listings_chat_ws_closes_total")).toBe(3);
    expect(sample(chatText, "listings_chat_sequencer_gap_fills_total")).toBeGreaterThanOrEqual(0);
    if (postgres) {
      expect(
        sample(chatText, "listings_chat_db_query_duration_seconds_count", { operation: "select" }),
      ).toBeGreaterThan(0);
    }

    const promtool = spawnSync("promtool", ["check", "metrics"], {
      input: `${gatewayText}${chatText}`,
      encoding: "utf8",
    });
    // Every series the Grafana dashboard (infra/grafana/listings-chat.json) queries is one these services expose.
    const dashboard = JSON.parse(
      readFileSync(new URL("../../../infra/grafana/listings-chat.json", import.meta.url), "utf8"),
    );
    const exprs: string[] = dashboard.panels.flatMap((p: { targets?: Array<{ expr: string }> }) =>
      (p.targets ?? []).map((t) => t.expr),
    );
    const queried = new Set(exprs.flatMap((expr) => expr.match(/\blistings_chat_[a-z0-9_]+/g) ?? []));
    // What the services declare (# TYPE), with a histogram's series; a labelled counter has no sample until it counts.
    const exposed = new Set<string>();
    for (const [, name, type] of `${gatewayText}\n${chatText}`.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
      exposed.add(name!);
      if (type === "histogram") for (const suffix of ["_bucket", "_count", "_sum"]) exposed.add(`${name}${suffix}`);
    }
    expect(queried.size).toBeGreaterThan(15);
    expect([...queried].filter((name) => !exposed.has(name))).toEqual([]);

    // prom-client's own process metrics name three gauges `…_total` (nodejs_active_handles_total and its
    // kin), which promtool reports; nothing else may be reported.
    if (!promtool.error) {
      const problems = `${promtool.stdout}${promtool.stderr}`.split("\n").filter(Boolean);
      const ours = problems.filter(
        (p) => !/^(listings_chat_gateway|listings_chat)_nodejs_active_\w+_total non-counter metrics/.test(p),
      );
      expect(ours).toEqual([]);
    }
  });
});
