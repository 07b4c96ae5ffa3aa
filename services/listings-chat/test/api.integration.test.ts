import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { databaseTargets } from "./support/databases.ts";
import { connect, startTestChat, type TestChat } from "./support/harness.ts";

describe.each(databaseTargets())("chat REST API on $name", (target) => {
  let chat: TestChat;
  let drop: () => Promise<void>;
  const buyer = 11;
  const seller = 22;
  const outsider = 33;
  let chatId: number;

  beforeAll(async () => {
    const db = await target.create();
    drop = db.drop;
    chat = await startTestChat({ database: db.options });
  });

  afterAll(async () => {
    await chat?.stop();
    await drop?.();
  });

  const send = (userId: number, id: number, content: string, clientMsgId: string = randomUUID()) =>
    chat.api(userId, "POST", `/api/v1/chats/${id}/messages`, { content, client_msg_id: clientMsgId });

  it("opens a chat once per (listing, buyer, seller) and refuses a chat with oneself", async () => {
    const created = await chat.api(buyer, "POST", "/api/v1/chats", { listing_id: 42, seller_id: seller });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ listing_id: 42, buyer_id: buyer, seller_id: seller });
    chatId = created.body.id;
    const again = await chat.api(buyer, "POST", "/api/v1/chats", { listing_id: 42, seller_id: seller });
    expect(again.status).toBe(200);
    expect(again.body.id).toBe(chatId);
    const self = await chat.api(buyer, "POST", "/api/v1/chats", { listing_id: 42, seller_id: buyer });
    expect(self.status).toBe(400);
    expect(self.body.error.code).toBe("self_chat");
  });

  it("sends, repeats idempotently, and validates content", async () => {
    const ref = randomUUID();
    const first = await send(buyer, chatId, "hello", ref);
    expect(first.status).toBe(201);
    expect(Object.keys(first.body).sort()).toEqual(
      [
        "id",
        "chat_id",
        "sender_id",
        "kind",
        "content",
        "data",
        "attachments",
        "client_msg_id",
        "created_at",
        "edited_at",
        "deleted_at",
        "deleted_by",
      ].sort(),
    );
    expect(first.body).toMatchObject({ sender_id: buyer, kind: "text", data: null, attachments: [], deleted_by: null });
    expect(first.body.created_at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    const repeat = await send(buyer, chatId, "hello", ref);
    expect(repeat.status).toBe(200);
    expect(repeat.body).toEqual(first.body);

    // NUL and half a surrogate pair: PostgreSQL cannot store them as sent, so they are refused, not lost.
    for (const content of ["", "   ", "x".repeat(4001), "nul \u0000 inside", "half \ud83d of an emoji"]) {
      const bad = await send(buyer, chatId, content);
      expect(bad.status).toBe(400);
      expect(bad.body.error.code).toBe("validation_failed");
      expect(bad.body.error.message).toContain("content");
    }
    const badRef = await send(buyer, chatId, "fine", "ref\u0000");
    expect(badRef.status).toBe(400);
    expect(badRef.body.error.message).toContain("client_msg_id");
    const emoji = await send(buyer, chatId, "a whole one: \ud83d\ude00");
    expect(emoji.body.content).toBe("a whole one: 😀");
    const exactly = await send(buyer, chatId, "é".repeat(4000));
    expect(exactly.status).toBe(201);
    const notJson = await chat.api(buyer, "POST", `/api/v1/chats/${chatId}/messages`, "{oops");
    expect(notJson.status).toBe(400);
    expect(notJson.body.error.code).toBe("bad_json");
    const badId = await chat.api(buyer, "GET", "/api/v1/chats/abc/messages");
    expect(badId.status).toBe(400);
  });

  it("answers 404 to outsiders, the same as for a chat that does not exist", async () => {
    const foreign = await chat.api(outsider, "GET", `/api/v1/chats/${chatId}/messages`);
    const missing = await chat.api(outsider, "GET", "/api/v1/chats/999999/messages");
    expect(foreign.status).toBe(404);
    expect(foreign.body).toEqual(missing.body);
    expect((await send(outsider, chatId, "let me in")).status).toBe(404);
    expect((await chat.api(outsider, "POST", `/api/v1/chats/${chatId}/read`, { message_id: 1 })).status).toBe(404);
    const page = await chat.api(buyer, "GET", `/api/v1/chats/${chatId}/messages`);
    const messageId = page.body.messages[0].id;
    expect((await chat.api(outsider, "PATCH", `/api/v1/messages/${messageId}`, { content: "x" })).status).toBe(404);
    expect((await chat.api(outsider, "DELETE", `/api/v1/messages/${messageId}`)).status).toBe(404);
    const list = await chat.api(outsider, "GET", "/api/v1/chats");
    expect(list.body.chats).toEqual([]);
  });

  it("refuses requests without the internal token or a user id", async () => {
    const noToken = await fetch(`${chat.baseUrl}/api/v1/chats`, { headers: { "x-user-id": "11" } });
    expect(noToken.status).toBe(401);
    expect(((await noToken.json()) as { error: { code: string } }).error.code).toBe("unauthorized");
    const noUser = await fetch(`${chat.baseUrl}/api/v1/chats`, { headers: { "x-internal-token": chat.internalToken } });
    expect(noUser.status).toBe(401);
    const health = await fetch(`${chat.baseUrl}/health`);
    expect(health.status).toBe(200);
    const ready = await fetch(`${chat.baseUrl}/ready`);
    expect(await ready.json()).toMatchObject({ status: "ready", checks: { database: true, bus: true } });
  });

  it("pages messages newest first with before and limit", async () => {
    const id = (await chat.api(buyer, "POST", "/api/v1/chats", { listing_id: 43, seller_id: seller })).body.id;
    for (let i = 1; i <= 25; i++) await send(i % 2 ? buyer : seller, id, `m${i}`);
    const first = await chat.api(seller, "GET", `/api/v1/chats/${id}/messages`);
    expect(first.body.messages).toHaveLength(20);
    expect(first.body.messages[0].content).toBe("m25");
    expect(first.body.has_more).toBe(true);
    const older = await chat.api(
      seller,
      "GET",
      `/api/v1/chats/${id}/messages?before=${first.body.messages[19].id}&limit=10`,
    );
    expect(older.body.messages.map((m: { content: string }) => m.content)).toEqual(["m5", "m4", "m3", "m2", "m1"]);
    expect(older.body.has_more).toBe(false);
    const capped = await chat.api(seller, "GET", `/api/v1/chats/${id}/messages?limit=1000`);
    expect(capped.body.messages).toHaveLength(25);
    expect((await chat.api(seller, "GET", `/api/v1/chats/${id}/messages?limit=0`)).status).toBe(400);
  });

  it("edits and deletes for the sender only, with events for both", async () => {
    const watcher = await connect(chat, seller);
    const sent = await send(buyer, chatId, "typo");
    const notMine = await chat.api(seller, "PATCH", `/api/v1/messages/${sent.body.id}`, { content: "hijack" });
    expect(notMine.status).toBe(403);
    const edited = await chat.api(buyer, "PATCH", `/api/v1/messages/${sent.body.id}`, { content: "fixed" });
    expect(edited.status).toBe(200);
    expect(edited.body.content).toBe("fixed");
    expect(edited.body.edited_at).not.toBeNull();
    expect((await chat.api(seller, "DELETE", `/api/v1/messages/${sent.body.id}`)).status).toBe(403);
    const deleted = await chat.api(buyer, "DELETE", `/api/v1/messages/${sent.body.id}`);
    expect(deleted.status).toBe(200);
    expect(deleted.body).toMatchObject({ id: sent.body.id, content: "" });
    expect(deleted.body.deleted_at).not.toBeNull();
    const editEvent = await watcher.waitFor((f) => f.type === "message_edited");
    const deleteEvent = await watcher.waitFor((f) => f.type === "message_deleted");
    expect(editEvent).toMatchObject({ chat_id: chatId, message: { id: sent.body.id, content: "fixed" } });
    expect(deleteEvent).toMatchObject({ chat_id: chatId, message: { id: sent.body.id, content: "" } });
    // Replay does not bring the deleted words back.
    const events = await chat.api(seller, "GET", "/api/v1/events?after=0&limit=500");
    const aboutIt = events.body.events.filter((e: { message?: { id: number } }) => e.message?.id === sent.body.id);
    expect(aboutIt.map((e: { type: string }) => e.type)).toEqual(["new_message", "message_edited", "message_deleted"]);
    for (const e of aboutIt) expect(e.message.content).toBe("");
    await watcher.close();
  });

  it("lists chats by activity with last message and unread counts, and marks read", async () => {
    const a = (await chat.api(buyer, "POST", "/api/v1/chats", { listing_id: 50, seller_id: seller })).body.id;
    const b = (await chat.api(buyer, "POST", "/api/v1/chats", { listing_id: 51, seller_id: seller })).body.id;
    await send(buyer, b, "b1");
    await send(buyer, b, "b2");
    const lastA = await send(buyer, a, "a1");
    await send(seller, a, "mine does not count");
    const list = await chat.api(seller, "GET", "/api/v1/chats");
    expect(list.body.chats.slice(0, 2).map((c: { id: number }) => c.id)).toEqual([a, b]);
    expect(list.body.chats[0].last_message.content).toBe("mine does not count");
    expect(list.body.chats[0].unread_count).toBe(1);
    expect(list.body.chats[1].unread_count).toBe(2);
    const before = await chat.api(seller, "GET", "/api/v1/chats/unread");
    expect(before.body.chats[String(a)]).toBe(1);
    expect(before.body.chats[String(b)]).toBe(2);
    expect(before.body.total).toBe(
      Object.values(before.body.chats as Record<string, number>).reduce((x, y) => x + y, 0),
    );
    const read = await chat.api(seller, "POST", `/api/v1/chats/${a}/read`, { message_id: lastA.body.id });
    expect(read.status).toBe(200);
    expect(read.body.unread_count).toBe(0);
    const after = await chat.api(seller, "GET", "/api/v1/chats/unread");
    expect(after.body.chats[String(a)]).toBeUndefined();
    expect(after.body.total).toBe(before.body.total - 1);
    const foreignMessage = await chat.api(seller, "POST", `/api/v1/chats/${b}/read`, { message_id: lastA.body.id });
    expect(foreignMessage.status).toBe(404);

    // Each side sees how far the other has read (read ticks), never its own marker.
    const buyerView = await chat.api(buyer, "GET", "/api/v1/chats");
    const chatA = buyerView.body.chats.find((c: { id: number }) => c.id === a);
    const chatB = buyerView.body.chats.find((c: { id: number }) => c.id === b);
    expect(chatA.peer_last_read_message_id).toBe(lastA.body.id);
    expect(chatB.peer_last_read_message_id).toBeNull();
    const sellerView = await chat.api(seller, "GET", "/api/v1/chats");
    expect(sellerView.body.chats.find((c: { id: number }) => c.id === a).peer_last_read_message_id).toBeNull();
  });

  it("serves the polling fallback: the same events as the socket, and a cursor", async () => {
    const socket = await connect(chat, seller, 0);
    const empty = await chat.api(seller, "GET", "/api/v1/events");
    expect(empty.body.events).toEqual([]);
    const end = empty.body.last_event_id;
    expect(end).toBeGreaterThan(0);
    const polled = await chat.api(seller, "GET", "/api/v1/events?after=0&limit=500");
    const lastPolled = polled.body.events.at(-1).event_id;
    await socket.until(() => socket.eventIds().includes(lastPolled));
    const viaSocket = socket.frames.filter((f) => "event_id" in f);
    expect(polled.body.events).toEqual(viaSocket.slice(0, polled.body.events.length));
    expect(polled.body.events.length).toBeGreaterThan(10);
    const small = await chat.api(seller, "GET", "/api/v1/events?after=0&limit=3");
    expect(small.body.events).toHaveLength(3);
    expect(small.body.last_event_id).toBe(small.body.events[2].event_id);
    expect(small.body.has_more).toBe(true);
    expect(polled.body.has_more).toBe(false);
    // The seller's own stream: 1, 2, 3 … with no hole, whatever others did meanwhile.
    expect(polled.body.events.map((e: { event_id: number }) => e.event_id)).toEqual(
      Array.from({ length: polled.body.events.length }, (_, i) => i + 1),
    );
    // Someone with no chat has a stream of their own, and it is empty.
    const outsiderView = await chat.api(outsider, "GET", "/api/v1/events?after=0");
    expect(outsiderView.body).toEqual({ events: [], last_event_id: 0, has_more: false });
    // A cursor from beyond the stream (another numbering) is told where the stream ends.
    const beyond = await chat.api(seller, "GET", `/api/v1/events?after=${end + 1000}`);
    expect(beyond.body).toEqual({ events: [], last_event_id: end, has_more: false });
    expect((await chat.api(seller, "GET", "/api/v1/events?after=-1")).status).toBe(400);
    await socket.close();
  });
});
