import { randomUUID } from "node:crypto";
import { sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { rowsOf } from "../src/events/log.ts";
import { MASK } from "../src/safety/content-rules.ts";
import { databaseTargets } from "./support/databases.ts";
import { connect, startTestChat, type TestChat, type TestSocket } from "./support/harness.ts";

/** Content rules on sends and edits, through REST and WebSocket (CONTRACT §10). */
describe.each(databaseTargets())("content rules through the API on $name", (target) => {
  let chat: TestChat;
  let drop: () => Promise<void>;
  const buyer = 61;
  const seller = 62;
  let chatId: number;
  let sellerSocket: TestSocket;

  beforeAll(async () => {
    const db = await target.create();
    drop = db.drop;
    chat = await startTestChat({
      database: db.options,
      contentRules: {
        rules: [
          { id: "phone", match: "phone", action: "flag" },
          { id: "url", match: "url", action: "flag" },
          { id: "no-mails", match: "email", action: "mask" },
          { id: "wire", match: { words: ["western union", "moneygram"] }, action: "reject" },
        ],
        phoneRegion: "US",
        siteDomains: ["listings-market.com"],
      },
    });
    const created = await chat.api(buyer, "POST", "/api/v1/chats", { listing_id: 7001, seller_id: seller });
    chatId = created.body.id;
    sellerSocket = await connect(chat, seller);
  });

  afterAll(async () => {
    await sellerSocket?.close();
    await chat?.stop();
    await drop?.();
  });

  const send = (content: string, clientMsgId: string = randomUUID()) =>
    chat.api(buyer, "POST", `/api/v1/chats/${chatId}/messages`, { content, client_msg_id: clientMsgId });
  const page = async () => (await chat.api(buyer, "GET", `/api/v1/chats/${chatId}/messages?limit=100`)).body;

  it("reject: 422 content_rejected naming the rule, and nothing is stored", async () => {
    const rejected = await send("pay me by Western  Union please");
    expect(rejected.status).toBe(422);
    expect(rejected.body.error.code).toBe("content_rejected");
    expect(rejected.body.error.message).toContain('"wire"');
    expect((await page()).messages.map((m: { content: string }) => m.content)).not.toContain(
      "pay me by Western  Union please",
    );
  });

  it("reject over WebSocket: an `error` frame with the code and the ref; the socket stays open", async () => {
    const socket = await connect(chat, buyer);
    const ref = randomUUID();
    socket.send({ type: "send_message", chat_id: chatId, content: "moneygram only", client_msg_id: ref });
    const error = await socket.waitFor((f) => f.type === "error" && f.ref === ref);
    expect(error).toMatchObject({ type: "error", code: "content_rejected", ref });
    expect((error as { message: string }).message).toContain('"wire"');
    const okRef = randomUUID();
    socket.send({ type: "send_message", chat_id: chatId, content: "fine then", client_msg_id: okRef });
    await socket.waitFor((f) => f.type === "ack" && f.ref === okRef);
    await socket.close();
  });

  it("mask: the masked text is what is stored, answered and delivered", async () => {
    const sent = await send("write to john.doe+bike@gmail.com");
    expect(sent.status).toBe(201);
    expect(sent.body.content).toBe(`write to ${MASK}`);
    const delivered = await sellerSocket.waitFor((f) => f.type === "new_message" && f.message.id === sent.body.id);
    expect(delivered).toMatchObject({ message: { content: `write to ${MASK}` } });
    const stored = (await page()).messages.find((m: { id: number }) => m.id === sent.body.id);
    expect(stored.content).toBe(`write to ${MASK}`);
  });

  it("edits pass the same rules: a rejected edit changes nothing", async () => {
    const sent = await send("still available");
    const edited = await chat.api(buyer, "PATCH", `/api/v1/messages/${sent.body.id}`, { content: "Western Union?" });
    expect(edited.status).toBe(422);
    expect(edited.body.error.code).toBe("content_rejected");
    const stored = (await page()).messages.find((m: { id: number }) => m.id === sent.body.id);
    expect(stored).toMatchObject({ content: "still available", edited_at: null });
  });

  it("flag: the rule ids are stored with the message, and no answer or frame shows a `flags` field", async () => {
    const flagsOf = async (id: number) => {
      const result = await chat.server.database.db.execute(sql`select flags from messages where id = ${id}`);
      return rowsOf<{ flags: string[] }>(result)[0]?.flags;
    };
    const buyerSocket = await connect(chat, buyer);
    const ref = randomUUID();
    buyerSocket.send({
      type: "send_message",
      chat_id: chatId,
      content: "call (415) 555-2671 or see evil.io, a@b.co",
      client_msg_id: ref,
    });
    const ack = await buyerSocket.waitFor((f) => f.type === "ack" && f.ref === ref);
    const id = (ack as { message: { id: number } }).message.id;
    expect(await flagsOf(id)).toEqual(["phone", "url", "no-mails"]);

    const rest = await send("our own page: https://listings-market.com/item/5");
    expect(await flagsOf(rest.body.id)).toEqual([]);

    const edited = await chat.api(buyer, "PATCH", `/api/v1/messages/${rest.body.id}`, { content: "see evil.io/x" });
    expect(edited.status).toBe(200);
    expect(await flagsOf(rest.body.id)).toEqual(["url"]);
    await sellerSocket.waitFor((f) => f.type === "message_edited" && f.message.id === rest.body.id);

    const events = await chat.api(seller, "GET", "/api/v1/events?after=0&limit=500");
    const everything = JSON.stringify([
      rest.body,
      edited.body,
      await page(),
      events.body,
      buyerSocket.frames,
      sellerSocket.frames,
      (await chat.api(buyer, "GET", "/api/v1/chats")).body,
    ]);
    expect(everything).toContain("evil.io");
    expect(everything).not.toContain('"flags"');
    await buyerSocket.close();
  });
});
