/**
 * A long absence full of long messages: the stream is read in pages bounded in bytes (events/log.ts), on the
 * socket (each page drained before the next is read, so a client that reads slowly is never closed as a
 * slow consumer for its own backlog) and over REST (`has_more`, a cursor that never steps over an event).
 */
import { randomUUID } from "node:crypto";
import type { ChatEvent } from "@listings-chat/shared";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { STREAM_PAGE_BYTES } from "../src/events/log.ts";
import { databaseTargets } from "./support/databases.ts";
import { startTestChat, type TestChat } from "./support/harness.ts";

/** 2,000 four-byte characters: 8 KB of UTF-8 in 4,000 UTF-16 units, the longest content there is. */
const longContent = (i: number) => `${i} ${"😀".repeat(1_998)}`;
const MESSAGES = 600;

describe.each(databaseTargets())("replay of ~5 MB of long messages on $name", (target) => {
  let chat: TestChat;
  let drop: () => Promise<void>;
  const buyer = 61;
  const seller = 62;
  let end: number;

  beforeAll(async () => {
    const db = await target.create();
    drop = db.drop;
    chat = await startTestChat({ database: db.options, overrides: { sendsPerMinute: 100_000 } });
    const opened = await chat.api(buyer, "POST", "/api/v1/chats", { listing_id: 1, seller_id: seller });
    const chatId = opened.body.id as number;
    // Ten senders at a time: a few seconds, and batches for the group commit.
    for (let i = 0; i < MESSAGES; i += 10) {
      await Promise.all(
        Array.from({ length: Math.min(10, MESSAGES - i) }, (_, j) =>
          chat.api(buyer, "POST", `/api/v1/chats/${chatId}/messages`, {
            content: longContent(i + j),
            client_msg_id: randomUUID(),
          }),
        ),
      );
    }
    end = (await chat.api(seller, "GET", "/api/v1/events")).body.last_event_id;
    expect(end).toBe(MESSAGES + 1);
  }, 120_000);

  afterAll(async () => {
    await chat?.stop();
    await drop?.();
  });

  it("pages /api/v1/events by bytes: has_more, a cursor at the page's last event, every event once", async () => {
    const seen: number[] = [];
    let after = 0;
    let pages = 0;
    for (;;) {
      const res = await fetch(`${chat.baseUrl}/api/v1/events?after=${after}&limit=500`, {
        headers: { "x-internal-token": chat.internalToken, "x-user-id": String(seller) },
      });
      const bodyBytes = Number(res.headers.get("content-length") ?? (await res.clone().arrayBuffer()).byteLength);
      const page = (await res.json()) as { events: ChatEvent[]; last_event_id: number; has_more: boolean };
      pages += 1;
      // About a page of bytes (the event that crosses the line is the last one), far under 500 events' worth.
      expect(bodyBytes).toBeLessThan(STREAM_PAGE_BYTES + 20_000);
      seen.push(...page.events.map((e) => e.event_id));
      if (!page.has_more) {
        expect(page.last_event_id).toBe(end);
        break;
      }
      expect(page.events.length).toBeLessThan(500);
      expect(page.last_event_id).toBe(page.events.at(-1)!.event_id);
      after = page.last_event_id;
      expect(pages).toBeLessThan(100);
    }
    expect(pages).toBeGreaterThan(10);
    expect(seen).toEqual(Array.from({ length: end }, (_, i) => i + 1));
  });

  it("replays it to a socket that does not read for a while, without closing it as a slow consumer", async () => {
    const ws = new WebSocket(`${chat.wsUrl}?after=0`, {
      headers: { "x-internal-token": chat.internalToken, "x-user-id": String(seller) },
      perMessageDeflate: false,
    });
    const ids: number[] = [];
    let closed: number | undefined;
    ws.on("message", (data) => {
      const frame = JSON.parse(String(data)) as { event_id?: number };
      if (frame.event_id !== undefined) ids.push(frame.event_id);
    });
    ws.on("close", (code) => {
      closed = code;
    });
    await new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
    });
    // Stop reading: the kernel's buffers fill, then the server's.
    ws.pause();
    await new Promise((r) => setTimeout(r, 1_500));
    const stats = await fetch(`${chat.baseUrl}/internal/chat/ws/stats`, {
      headers: { "x-internal-token": chat.internalToken },
    }).then((r) => r.json() as Promise<{ slow_consumer_disconnects_total: number }>);
    expect(stats.slow_consumer_disconnects_total).toBe(0);
    expect(closed).toBeUndefined();
    ws.resume();
    for (let waited = 0; ids.length < end && waited < 20_000; waited += 50) await new Promise((r) => setTimeout(r, 50));
    expect(ids).toEqual(Array.from({ length: end }, (_, i) => i + 1));
    expect(closed).toBeUndefined();
    ws.close();
  });
});
