/**
 * CONTRACT §10 "Every write is limited per user", against a real instance with the contract's limits:
 * edits and deletes (30 a minute), new chats (20 an hour), `mark_read` coalesced (never refused, at most
 * one stored per chat and second), typing relayed at most once per 2 s per chat whatever its state.
 */
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createChatService } from "../src/chats/service.ts";
import type { Database } from "../src/db/client.ts";
import type { AddressedEvent } from "../src/events/log.ts";
import { databaseTargets } from "./support/databases.ts";
import { connect, startTestChat, type TestChat } from "./support/harness.ts";

describe.each(databaseTargets())("write limits on $name", (target) => {
  let chat: TestChat;
  let drop: () => Promise<void>;
  // Each test has users of its own: the limits are per user.
  let nextUser = 90_000;
  const pair = () => {
    nextUser += 2;
    return [nextUser, nextUser + 1] as const;
  };

  beforeAll(async () => {
    const db = await target.create();
    drop = db.drop;
    chat = await startTestChat({ database: db.options });
  });

  afterAll(async () => {
    await chat?.stop();
    await drop?.();
  });

  async function openChat(buyer: number, seller: number, listing = 1): Promise<number> {
    const res = await chat.api(buyer, "POST", "/api/v1/chats", { listing_id: listing, seller_id: seller });
    expect([200, 201]).toContain(res.status);
    return res.body.id;
  }

  async function send(userId: number, chatId: number, content: string): Promise<number> {
    const res = await chat.api(userId, "POST", `/api/v1/chats/${chatId}/messages`, {
      content,
      client_msg_id: randomUUID(),
    });
    expect(res.status).toBe(201);
    return res.body.id;
  }

  /** A 429 that says what is limited and when to come back (Retry-After in whole seconds, within the window). */
  function expectLimited(res: Awaited<ReturnType<TestChat["api"]>>, named: RegExp, windowS: number) {
    expect(res.status).toBe(429);
    expect(res.body.error.code).toBe("rate_limited");
    expect(res.body.error.message).toMatch(named);
    const retryAfter = Number(res.headers.get("retry-after"));
    expect(retryAfter).toBeGreaterThan(windowS - 60);
    expect(retryAfter).toBeLessThanOrEqual(windowS);
    expect(res.body.error.message).toContain(`try again in ${retryAfter} s`);
  }

  it("refuses the 31st edit or delete within a minute with 429 and Retry-After; what changes nothing does not count", async () => {
    const [buyer, seller] = pair();
    const chatId = await openChat(buyer, seller);
    const ids: number[] = [];
    for (let i = 0; i < 12; i++) ids.push(await send(buyer, chatId, `message ${i}`));
    const edit = (id: number, content: string) => chat.api(buyer, "PATCH", `/api/v1/messages/${id}`, { content });
    const remove = (id: number) => chat.api(buyer, "DELETE", `/api/v1/messages/${id}`);
    // 19 edits and 10 deletes: 29 of 30.
    for (let i = 0; i < 19; i++) expect((await edit(ids[0]!, `edit ${i}`)).status).toBe(200);
    for (let i = 1; i <= 10; i++) expect((await remove(ids[i]!)).status).toBe(200);
    // Answers that change nothing do not count: a delete again, an edit of a deleted message, another's
    // message, one that does not exist.
    expect((await remove(ids[1]!)).status).toBe(200);
    expect((await edit(ids[2]!, "too late")).status).toBe(409);
    expect((await chat.api(seller, "PATCH", `/api/v1/messages/${ids[0]}`, { content: "not mine" })).status).toBe(403);
    expect((await edit(999_999_999, "nothing")).status).toBe(404);
    // The 30th passes; the 31st, an edit or a delete, is refused and changes nothing.
    expect((await edit(ids[0]!, "the 30th")).status).toBe(200);
    expectLimited(await edit(ids[0]!, "the 31st"), /^too many edits and deletes \(30 a minute\)/, 60);
    expectLimited(await remove(ids[11]!), /^too many edits and deletes/, 60);
    const page = await chat.api(buyer, "GET", `/api/v1/chats/${chatId}/messages?limit=20`);
    const byId = new Map(page.body.messages.map((m: { id: number; content: string }) => [m.id, m.content]));
    expect(byId.get(ids[0]!)).toBe("the 30th");
    expect(byId.get(ids[11]!)).toBe("message 11");
    // Sends and the other participant's edits have limits of their own.
    await send(buyer, chatId, "still sending");
    const theirs = await send(seller, chatId, "seller's");
    expect((await chat.api(seller, "PATCH", `/api/v1/messages/${theirs}`, { content: "edited" })).status).toBe(200);
  });

  it("refuses the 21st new chat within an hour with 429; opening an existing chat answers 200 and never counts", async () => {
    const [buyer, seller] = pair();
    const first = await chat.api(buyer, "POST", "/api/v1/chats", { listing_id: 1, seller_id: seller });
    expect(first.status).toBe(201);
    // Chatting with oneself is refused before it is counted.
    expect((await chat.api(buyer, "POST", "/api/v1/chats", { listing_id: 1, seller_id: buyer })).status).toBe(400);
    for (let listing = 2; listing <= 20; listing++) {
      const opened = await chat.api(buyer, "POST", "/api/v1/chats", { listing_id: listing, seller_id: seller });
      expect(opened.status).toBe(201);
      // The "contact the seller" button pressed again: the same chat, 200, not counted.
      const again = await chat.api(buyer, "POST", "/api/v1/chats", { listing_id: 1, seller_id: seller });
      expect(again.status).toBe(200);
      expect(again.body.id).toBe(first.body.id);
    }
    const refused = await chat.api(buyer, "POST", "/api/v1/chats", { listing_id: 21, seller_id: seller });
    expectLimited(refused, /^too many new chats \(20 an hour\): try again in \d+ s$/, 3_600);
    // Past the limit, an existing chat still opens (no flood in it: it is not new), and nothing was created.
    const existing = await chat.api(buyer, "POST", "/api/v1/chats", { listing_id: 7, seller_id: seller });
    expect(existing.status).toBe(200);
    const list = await chat.api(buyer, "GET", "/api/v1/chats");
    expect(list.body.chats).toHaveLength(20);
    // The seller is another user, with an allowance of their own.
    expect((await chat.api(seller, "POST", "/api/v1/chats", { listing_id: 21, seller_id: buyer })).status).toBe(201);
  });

  it("stores 2,000 mark_read per chat in a burst as at most one store per chat and second, the last the highest id", async () => {
    const [buyer, seller] = pair();
    const chatIds = [await openChat(buyer, seller, 1), await openChat(buyer, seller, 2)];
    const ids = new Map<number, number[]>();
    for (const chatId of chatIds) {
      const sent: number[] = [];
      for (let i = 0; i < 20; i++) sent.push(await send(buyer, chatId, `to read ${i}`));
      ids.set(chatId, sent);
    }
    // The instance's own database, with its stores counted: a chat service like the instance's.
    const { db } = chat.server.database;
    /** When each statement of the service ran: every one is a store (lc_mark_read). */
    const stores: number[] = [];
    const counting = new Proxy(db, {
      get(target, property, receiver) {
        if (property !== "execute") return Reflect.get(target, property, receiver);
        return (query: Parameters<Database["execute"]>[0]) => {
          stores.push(performance.now());
          return target.execute(query);
        };
      },
    });
    const published: AddressedEvent[] = [];
    const chats = createChatService({ db: counting, publish: (events) => void published.push(...events) });
    const started = performance.now();
    const answers: Promise<{ chat_id: number; message_id: number; unread_count: number }>[] = [];
    // 2,000 per chat over about 2 s: 20 waves of 100, each a random id of the chat's.
    for (let wave = 0; wave < 20; wave++) {
      for (const chatId of chatIds) {
        const sent = ids.get(chatId)!;
        for (let i = 0; i < 100; i++)
          answers.push(chats.markRead(seller, chatId, sent[Math.floor(Math.random() * sent.length)]!));
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    // The highest of each chat once more, last.
    for (const chatId of chatIds) answers.push(chats.markRead(seller, chatId, ids.get(chatId)!.at(-1)!));
    const answered = await Promise.all(answers);
    const seconds = (performance.now() - started) / 1_000;
    expect(answered).toHaveLength(4_002);
    // At most one store per chat and second, the first at once: over `seconds`, ceil(seconds) + 1 per chat.
    expect(stores.length).toBeLessThanOrEqual(chatIds.length * (Math.ceil(seconds) + 1));
    expect(stores.length).toBeGreaterThanOrEqual(chatIds.length * 2);
    // Every answer reflects a store that covered it; the last ones the highest id, nothing left unread.
    for (const chatId of chatIds) {
      const highest = ids.get(chatId)!.at(-1)!;
      const last = answered.filter((a) => a.chat_id === chatId).at(-1)!;
      expect(last).toEqual({ chat_id: chatId, message_id: highest, unread_count: 0 });
    }
    const view = await chat.api(buyer, "GET", "/api/v1/chats");
    for (const chatId of chatIds) {
      const listed = view.body.chats.find((c: { id: number }) => c.id === chatId);
      expect(listed.peer_last_read_message_id).toBe(ids.get(chatId)!.at(-1));
    }
    // One message_read per store that moved the marker, to each participant: never more than the stores.
    const reads = published.filter((e) => e.event.type === "message_read");
    expect(reads.length).toBeLessThanOrEqual(2 * stores.length);
    console.info(
      `mark_read burst: ${answered.length} calls over ${seconds.toFixed(1)} s in ${chatIds.length} chats, ` +
        `${stores.length} stores, ${reads.length / 2} markers moved`,
    );
  });

  it("answers every mark_read of a REST burst, none refused, and stores the highest", async () => {
    const [buyer, seller] = pair();
    const chatId = await openChat(buyer, seller);
    const sent: number[] = [];
    for (let i = 0; i < 10; i++) sent.push(await send(buyer, chatId, `m${i}`));
    const buyerSocket = await connect(chat, buyer);
    const answers = await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        chat.api(seller, "POST", `/api/v1/chats/${chatId}/read`, { message_id: sent[i % sent.length] }),
      ),
    );
    for (const answer of answers) expect(answer.status).toBe(200);
    const highest = sent.at(-1)!;
    expect(answers.filter((a) => a.body.message_id === highest).length).toBeGreaterThanOrEqual(199);
    await buyerSocket.waitFor((f) => f.type === "message_read" && f.message_id === highest);
    // The reader's peer hears of at most two markers: the first stored at once, the rest merged into one.
    expect(buyerSocket.ofType("message_read").length).toBeLessThanOrEqual(2);
    await buyerSocket.close();
  });

  it("relays at most 2 'typing' and 2 'stopped' of 200 frames alternating within 2 s", async () => {
    const [buyer, seller] = pair();
    const chatId = await openChat(buyer, seller);
    // Both have written: typing is shared between them whatever the rules of who sees it.
    await send(buyer, chatId, "hello");
    await send(seller, chatId, "hi");
    const typist = await connect(chat, buyer);
    const reader = await connect(chat, seller);
    const started = performance.now();
    for (let i = 0; i < 200; i++) typist.send({ type: "typing", chat_id: chatId, is_typing: i % 2 === 0 });
    // A ping answered after the 200 frames: they have all been handled (frames are handled in order).
    typist.send({ type: "ping" });
    await typist.waitFor((f) => f.type === "pong");
    // Then an event the reader receives after anything the typist's frames caused.
    await send(buyer, chatId, "sync");
    await reader.waitFor((f) => f.type === "new_message" && f.message.content === "sync");
    const elapsed = performance.now() - started;
    const relayed = reader.ofType("typing").map((f) => f.is_typing);
    const intervals = Math.floor(elapsed / 2_000) + 1;
    console.info(`typing flood: 200 frames in ${elapsed.toFixed(0)} ms relayed ${JSON.stringify(relayed)}`);
    expect(relayed.filter((t) => t).length).toBeGreaterThanOrEqual(1);
    expect(relayed.filter((t) => t).length).toBeLessThanOrEqual(Math.min(2, intervals));
    expect(relayed.filter((t) => !t).length).toBeLessThanOrEqual(Math.min(2, intervals));
    await Promise.all([typist.close(), reader.close()]);
  });
});
