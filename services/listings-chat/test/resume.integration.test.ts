import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { databaseTargets } from "./support/databases.ts";
import { connect, startTestChat, type TestChat } from "./support/harness.ts";

/**
 * Resume after a disconnect while new events race the replay: the client must get every event of
 * its chats exactly once and in log order, whatever interleaving the replay and the live stream had.
 */
describe.each(databaseTargets())("resume on $name", (target) => {
  let chat: TestChat;
  let drop: () => Promise<void>;
  const buyer = 101;
  const seller = 202;
  let chatId: number;

  beforeAll(async () => {
    const db = await target.create();
    drop = db.drop;
    // Tiny pages make the replay span many reads, so live events arrive in the middle of it.
    chat = await startTestChat({
      database: db.options,
      overrides: { replayPage: { maxEvents: 5 }, sendsPerMinute: 10_000 },
    });
    const opened = await chat.api(buyer, "POST", "/api/v1/chats", { listing_id: 1, seller_id: seller });
    chatId = opened.body.id;
  });

  afterAll(async () => {
    await chat?.stop();
    await drop?.();
  });

  /** The log as the polling endpoint sees it for `userId` after `after`: the truth to compare against. */
  async function logAfter(userId: number, after: number): Promise<number[]> {
    const ids: number[] = [];
    for (let cursor = after; ; ) {
      const page = await chat.api(userId, "GET", `/api/v1/events?after=${cursor}&limit=500`);
      ids.push(...page.body.events.map((e: { event_id: number }) => e.event_id));
      if (!page.body.has_more) return ids;
      cursor = page.body.last_event_id;
    }
  }

  async function raceReplay(resumeWith: "query" | "frame") {
    // The seller sees the chat so far, then goes away.
    const first = await connect(chat, seller, 0);
    await chat.api(buyer, "POST", `/api/v1/chats/${chatId}/messages`, {
      content: "before",
      client_msg_id: randomUUID(),
    });
    await first.waitFor((f) => f.type === "new_message" && f.message.content === "before");
    const cursor = Math.max(...first.eventIds());
    await first.close();

    // A backlog the replay has to read page by page.
    const backlog = 300;
    for (let i = 0; i < backlog; i++) {
      await chat.api(buyer, "POST", `/api/v1/chats/${chatId}/messages`, {
        content: `backlog ${i}`,
        client_msg_id: randomUUID(),
      });
    }

    // Live traffic that keeps committing, one send after another, while the seller reconnects and replays.
    const writer = await connect(chat, buyer);
    const racing = 80;
    const writing = (async () => {
      for (let i = 0; i < racing; i++) {
        const ref = randomUUID();
        writer.send({ type: "send_message", chat_id: chatId, content: `live ${i}`, client_msg_id: ref });
        await writer.waitFor((f) => f.type === "ack" && f.ref === ref);
      }
    })();
    await writer.waitFor((f) => f.type === "ack");

    const back = resumeWith === "query" ? await connect(chat, seller, cursor) : await connect(chat, seller);
    if (resumeWith === "frame") back.send({ type: "resume", after: cursor });
    const acksWhenReplayBegan = writer.ofType("ack").length;

    await writing;
    const expected = await logAfter(seller, cursor);
    const finalId = expected.at(-1);
    await back.until(() => back.eventIds().includes(finalId ?? -1), 20_000);

    // The race was real: the writer was still storing when the replay started.
    expect(acksWhenReplayBegan).toBeLessThan(racing);
    const ids = back.eventIds();
    // A resume frame restarts the stream at its cursor: what came before it is cut off here.
    const restart = resumeWith === "frame" ? ids.lastIndexOf(cursor + 1) : 0;
    expect(restart).toBeGreaterThanOrEqual(0);
    const received = ids.slice(restart);
    expect(received).toEqual(expected);
    expect(new Set(received).size).toBe(received.length);
    expect(expected.length).toBeGreaterThanOrEqual(backlog + racing);
    const contents = back.ofType("new_message").map((f) => f.message.content);
    expect(new Set(contents.filter((c) => c.startsWith("live "))).size).toBe(racing);
    await writer.close();
    await back.close();
  }

  it("replays from ?after= and goes live with no gap, duplicate or reordering while events race the replay", async () => {
    await raceReplay("query");
  });

  it("a resume frame restarts the stream at its cursor, in order and without gaps, while events race", async () => {
    await raceReplay("frame");
  });

  it("a socket with no cursor starts at the connected frame's last_event_id and misses nothing after it", async () => {
    const socket = await connect(chat, seller);
    const connected = socket.ofType("connected")[0];
    const start = connected?.last_event_id ?? -1;
    await chat.api(buyer, "POST", `/api/v1/chats/${chatId}/messages`, {
      content: "after connect",
      client_msg_id: randomUUID(),
    });
    await socket.waitFor((f) => f.type === "new_message" && f.message.content === "after connect");
    expect(socket.eventIds()).toEqual(await logAfter(seller, start));
    await socket.close();
  });
});
