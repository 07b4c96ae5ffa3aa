/**
 * The platform's voice (CONTRACT §8) over HTTP on the chat port and over WebSocket: the /internal/chat routes
 * (people, platform-opened chats, system messages, platform deletes) with their refusals, the chat as the API
 * shows it (listing, peer, archived), archive and restore, LISTINGS_REQUIRED on and off, and a removed listing.
 * Suspension is in suspension.integration.test.ts, a listing's fan-out to many chats in
 * listing-fanout.integration.test.ts. On PGlite always and on PostgreSQL when DATABASE_URL is set.
 */
import { randomUUID } from "node:crypto";
import { ErrorCode } from "@listings-chat/shared";
import { sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Database } from "../src/db/client.ts";
import { databaseTargets } from "./support/databases.ts";
import { connect, startTestChat, type TestChat, type TestSocket } from "./support/harness.ts";

/** Raw SQL rows, the same on PGlite and node-postgres (cast bigints in SQL: drivers differ on them). */
async function rows<T>(db: Database, query: ReturnType<typeof sql>): Promise<T[]> {
  return ((await db.execute(query)) as unknown as { rows: T[] }).rows;
}

const isoTime = expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);

/** A request on the chat port with the internal token (or `token`, or none), as the monolith makes it. */
async function internal(
  chat: TestChat,
  method: string,
  path: string,
  body?: unknown,
  token: string | null = chat.internalToken,
): Promise<{ status: number; body: any }> {
  const res = await fetch(`${chat.baseUrl}${path}`, {
    method,
    headers: {
      ...(body === undefined ? {} : { "content-type": "application/json" }),
      ...(token === null ? {} : { "x-internal-token": token }),
    },
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined };
}

const listingBody = (sellerId: number, changes: Record<string, unknown> = {}) => ({
  seller_id: sellerId,
  title: "Armchair, green velvet",
  price_minor: 12_500,
  currency: "EUR",
  image_url: "https://img.marketplace.example/armchair.jpg",
  url: "https://marketplace.example/listings/armchair",
  status: "active",
  ...changes,
});

/** The listing as a chat shows it: the registered fields, without its times or seller. */
const chatListing = (id: number, sellerId: number, changes: Record<string, unknown> = {}) => {
  const { seller_id: _seller, ...rest } = listingBody(sellerId, changes);
  return { id, ...rest };
};

/** A system message as the API shows it (CONTRACT §8). */
const systemMessage = (chatId: number, content: string, data: unknown, clientMsgId: string | null) => ({
  id: expect.any(Number),
  chat_id: chatId,
  sender_id: null,
  kind: "system",
  content,
  data,
  attachments: [],
  client_msg_id: clientMsgId,
  created_at: isoTime,
  edited_at: null,
  deleted_at: null,
  deleted_by: null,
});

describe.each(databaseTargets())("the platform's voice on $name", (target) => {
  /** LISTINGS_REQUIRED=0 (development) and =1 (production), each on a database of its own. */
  let dev: TestChat;
  let prod: TestChat;
  const drops: Array<() => Promise<void>> = [];
  const sockets: TestSocket[] = [];

  // Each test uses users and listings of its own.
  let nextId = 90_000;
  const newId = () => nextId++;

  beforeAll(async () => {
    for (const listingsRequired of [false, true]) {
      const created = await target.create();
      drops.push(created.drop);
      const chat = await startTestChat({
        database: created.options,
        listingsRequired,
        // The tests below send more than 60 messages a minute as the same few users.
        overrides: { sendsPerMinute: 100_000 },
      });
      if (listingsRequired) prod = chat;
      else dev = chat;
    }
  }, 60_000);

  afterAll(async () => {
    for (const socket of sockets) if (!socket.closeInfo) await socket.close();
    await dev?.stop();
    await prod?.stop();
    for (const drop of drops) await drop();
  });

  const socketOf = async (chat: TestChat, userId: number) => {
    const socket = await connect(chat, userId);
    sockets.push(socket);
    return socket;
  };
  const putListing = (chat: TestChat, id: number, sellerId: number, changes: Record<string, unknown> = {}) =>
    internal(chat, "PUT", `/internal/chat/listings/${id}`, listingBody(sellerId, changes));
  const putUser = (chat: TestChat, id: number | string, body: unknown) =>
    internal(chat, "PUT", `/internal/chat/users/${id}`, body);
  const platformOpen = (chat: TestChat, body: unknown) => internal(chat, "POST", "/internal/chat/chats", body);
  const say = (chat: TestChat, chatId: number | string, body: unknown) =>
    internal(chat, "POST", `/internal/chat/chats/${chatId}/messages`, body);
  const remove = (chat: TestChat, messageId: number | string, body: unknown = { reason: "scam" }) =>
    internal(chat, "DELETE", `/internal/chat/messages/${messageId}`, body);
  const open = (chat: TestChat, buyer: number, listingId: number, sellerId: number) =>
    chat.api(buyer, "POST", "/api/v1/chats", { listing_id: listingId, seller_id: sellerId });
  const send = (chat: TestChat, sender: number, chatId: number, content: string) =>
    chat.api(sender, "POST", `/api/v1/chats/${chatId}/messages`, { content, client_msg_id: randomUUID() });
  const list = async (chat: TestChat, userId: number, query = "") => {
    const res = await chat.api(userId, "GET", `/api/v1/chats${query}`);
    expect(res.status).toBe(200);
    return res.body.chats as any[];
  };
  const pageOf = async (chat: TestChat, userId: number, chatId: number) => {
    const res = await chat.api(userId, "GET", `/api/v1/chats/${chatId}/messages`);
    expect(res.status).toBe(200);
    return res.body.messages as any[];
  };
  const unreadIn = async (chat: TestChat, userId: number, chatId: number) => {
    const res = await chat.api(userId, "GET", "/api/v1/chats/unread");
    expect(res.status).toBe(200);
    return (res.body.chats[String(chatId)] ?? 0) as number;
  };
  const streamEnd = async (chat: TestChat, userId: number) =>
    (await chat.api(userId, "GET", "/api/v1/events")).body.last_event_id as number;
  const eventsAfter = async (chat: TestChat, userId: number, after: number) => {
    const res = await chat.api(userId, "GET", `/api/v1/events?after=${after}`);
    expect(res.status).toBe(200);
    return res.body.events as any[];
  };

  /** A registered listing and a chat on it that both participants wrote in. */
  async function registeredChat(chat: TestChat = dev) {
    const [listingId, seller, buyer] = [newId(), newId(), newId()];
    expect((await putListing(chat, listingId, seller)).status).toBe(200);
    const opened = await open(chat, buyer, listingId, seller);
    expect(opened.status).toBe(201);
    const chatId = opened.body.id as number;
    expect((await send(chat, buyer, chatId, "is it still available?")).status).toBe(201);
    expect((await send(chat, seller, chatId, "yes")).status).toBe(201);
    return { listingId, seller, buyer, chatId };
  }

  describe("the internal token", () => {
    it("every /internal/chat route is 401 without it or with another one, and nothing is stored", async () => {
      const { chatId, buyer, seller, listingId } = await registeredChat();
      const [messageId] = (await pageOf(dev, buyer, chatId)).map((m) => m.id as number);
      const user = newId();
      const routes: Array<[string, string, unknown]> = [
        ["PUT", `/internal/chat/users/${user}`, { display_name: "Mallory", avatar_url: null }],
        ["POST", "/internal/chat/chats", { listing_id: listingId, buyer_id: user }],
        ["POST", `/internal/chat/chats/${chatId}/messages`, { content: "Item sold", client_msg_id: randomUUID() }],
        ["DELETE", `/internal/chat/messages/${messageId}`, { reason: "scam" }],
        ["POST", `/internal/chat/users/${buyer}/suspend`, { reason: "scam" }],
        ["DELETE", `/internal/chat/users/${buyer}/suspend`, undefined],
        ["PUT", `/internal/chat/listings/${listingId}`, listingBody(seller, { title: "changed" })],
      ];
      for (const [method, path, body] of routes) {
        for (const token of [null, "wrong-token"]) {
          const res = await internal(dev, method, path, body, token);
          expect([res.status, res.body?.error?.code], `${method} ${path} with ${token}`).toEqual([
            401,
            ErrorCode.unauthorized,
          ]);
        }
      }
      const db = dev.server.database.db;
      expect(await rows(db, sql`select 1 from people where user_id = ${user}`)).toEqual([]);
      expect(await rows(db, sql`select 1 from suspensions where user_id = ${buyer}`)).toEqual([]);
      expect(await rows(db, sql`select 1 from chats where buyer_id = ${user}`)).toEqual([]);
      const page = await pageOf(dev, buyer, chatId);
      expect(page.map((m) => [m.kind, m.content, m.deleted_at])).toEqual([
        ["text", "yes", null],
        ["text", "is it still available?", null],
      ]);
      expect((await list(dev, buyer))[0].listing.title).toBe(listingBody(seller).title);
    });

    it("the internal token does not make a user request: the public routes still need X-User-Id", async () => {
      const res = await internal(dev, "GET", "/api/v1/chats");
      expect(res.status).toBe(401);
    });
  });

  describe("PUT /internal/chat/users/:id and the peer of a chat", () => {
    it("stores a name and avatar, answers them, and every chat list shows them from then on (null before)", async () => {
      const { chatId, buyer, seller } = await registeredChat();
      // Before: unknown names are null.
      const before = (await list(dev, buyer)).find((c) => c.id === chatId);
      expect(before.peer).toEqual({ id: seller, display_name: null, avatar_url: null });
      expect((await list(dev, seller)).find((c) => c.id === chatId).peer).toEqual({
        id: buyer,
        display_name: null,
        avatar_url: null,
      });

      const stored = await putUser(dev, seller, {
        display_name: "Ada L.",
        avatar_url: "https://img.marketplace.example/u/ada.png",
      });
      expect(stored).toEqual({
        status: 200,
        body: { id: seller, display_name: "Ada L.", avatar_url: "https://img.marketplace.example/u/ada.png" },
      });
      // Idempotent.
      expect(
        await putUser(dev, seller, { display_name: "Ada L.", avatar_url: "https://img.marketplace.example/u/ada.png" }),
      ).toEqual(stored);
      expect((await list(dev, buyer)).find((c) => c.id === chatId).peer).toEqual({
        id: seller,
        display_name: "Ada L.",
        avatar_url: "https://img.marketplace.example/u/ada.png",
      });
      // The seller sees the buyer, still unknown, not themselves.
      expect((await list(dev, seller)).find((c) => c.id === chatId).peer).toEqual({
        id: buyer,
        display_name: null,
        avatar_url: null,
      });

      // A change, and nulls: a person without a name or a photo.
      expect((await putUser(dev, seller, { display_name: "Ada Lovelace", avatar_url: null })).body).toEqual({
        id: seller,
        display_name: "Ada Lovelace",
        avatar_url: null,
      });
      expect((await list(dev, buyer)).find((c) => c.id === chatId).peer.display_name).toBe("Ada Lovelace");
      // The longest name, 100 characters (code points).
      const longest = "é".repeat(100);
      expect((await putUser(dev, seller, { display_name: longest, avatar_url: null })).body.display_name).toBe(longest);
      expect((await putUser(dev, seller, { display_name: null, avatar_url: null })).status).toBe(200);
      expect((await list(dev, buyer)).find((c) => c.id === chatId).peer.display_name).toBeNull();
    });

    it("tells no one: no event in either stream", async () => {
      const { buyer, seller } = await registeredChat();
      const [buyerEnd, sellerEnd] = [await streamEnd(dev, buyer), await streamEnd(dev, seller)];
      expect((await putUser(dev, seller, { display_name: "Quiet", avatar_url: null })).status).toBe(200);
      expect(await streamEnd(dev, buyer)).toBe(buyerEnd);
      expect(await streamEnd(dev, seller)).toBe(sellerEnd);
    });

    it.each([
      ["an empty display_name", { display_name: "", avatar_url: null }],
      ["a display_name over 100 characters", { display_name: "x".repeat(101), avatar_url: null }],
      ["a display_name that is a number", { display_name: 5, avatar_url: null }],
      ["an avatar_url that is not http(s)", { display_name: "Eve", avatar_url: "ftp://img.example/a.png" }],
      ["a javascript: avatar_url", { display_name: "Eve", avatar_url: "javascript:alert(1)" }],
      ["a relative avatar_url", { display_name: "Eve", avatar_url: "/a.png" }],
      ["a body that is an array", []],
    ])("refuses %s with 400 validation_failed and stores nothing", async (_, body) => {
      const id = newId();
      const res = await putUser(dev, id, body);
      expect([res.status, res.body.error.code]).toEqual([400, ErrorCode.validationFailed]);
      expect(await rows(dev.server.database.db, sql`select 1 from people where user_id = ${id}`)).toEqual([]);
    });

    it("refuses a bad user id and a body that is not JSON with 400", async () => {
      for (const id of ["0", "abc", "-3", "1.5"]) {
        const res = await putUser(dev, id, { display_name: "Eve", avatar_url: null });
        expect([res.status, res.body.error.code], id).toEqual([400, ErrorCode.validationFailed]);
      }
      const notJson = await putUser(dev, newId(), "{not json");
      expect([notJson.status, notJson.body.error.code]).toEqual([400, ErrorCode.badJson]);
    });
  });

  describe("the chat's listing", () => {
    it("is null before the listing is registered, then filled in every list item; a change reaches both as chat_updated", async () => {
      const [listingId, seller, buyer] = [newId(), newId(), newId()];
      const opened = await open(dev, buyer, listingId, seller);
      expect(opened.status).toBe(201);
      const chatId = opened.body.id as number;
      // POST /api/v1/chats answers the chat as the buyer sees it.
      expect(opened.body).toEqual({
        id: chatId,
        listing_id: listingId,
        buyer_id: buyer,
        seller_id: seller,
        created_at: isoTime,
        last_activity_at: isoTime,
        listing: null,
        peer: { id: seller, display_name: null, avatar_url: null },
        archived: false,
      });
      for (const user of [buyer, seller]) {
        const item = (await list(dev, user)).find((c) => c.id === chatId);
        expect([item.listing, item.archived], String(user)).toEqual([null, false]);
      }

      const buyerSocket = await socketOf(dev, buyer);
      const sellerSocket = await socketOf(dev, seller);
      expect((await putListing(dev, listingId, seller)).status).toBe(200);
      for (const user of [buyer, seller]) {
        const item = (await list(dev, user)).find((c) => c.id === chatId);
        expect(item.listing).toEqual(chatListing(listingId, seller));
      }
      // The first registration of a listing that has chats is news to them too (they showed no listing).
      for (const socket of [buyerSocket, sellerSocket]) {
        const first = await socket.waitFor((f) => f.type === "chat_updated" && f.chat.id === chatId);
        expect(first).toMatchObject({ chat: { listing: chatListing(listingId, seller) } });
      }

      // A change: both participants hear chat_updated with the new listing, each with their own peer.
      expect((await putListing(dev, listingId, seller, { title: "Armchair, SOLD", status: "sold" })).status).toBe(200);
      for (const [socket, peer] of [
        [buyerSocket, seller],
        [sellerSocket, buyer],
      ] as const) {
        const updated = await socket.waitFor(
          (f) => f.type === "chat_updated" && f.chat.id === chatId && f.chat.listing?.title === "Armchair, SOLD",
        );
        expect(updated).toMatchObject({
          type: "chat_updated",
          event_id: expect.any(Number),
          chat: {
            id: chatId,
            listing: chatListing(listingId, seller, { title: "Armchair, SOLD", status: "sold" }),
            peer: { id: peer, display_name: null, avatar_url: null },
            archived: false,
          },
        });
      }
      // A PUT that changes nothing tells no one.
      const ends = [await streamEnd(dev, buyer), await streamEnd(dev, seller)];
      expect((await putListing(dev, listingId, seller, { title: "Armchair, SOLD", status: "sold" })).status).toBe(200);
      // A message after it is the next event in both streams: nothing was appended in between.
      expect((await send(dev, buyer, chatId, "too late?")).status).toBe(201);
      for (const [socket, end] of [
        [buyerSocket, ends[0]!],
        [sellerSocket, ends[1]!],
      ] as const) {
        const next = await socket.waitFor((f) => f.type === "new_message" && f.message.content === "too late?");
        expect((next as { event_id: number }).event_id).toBe(end + 1);
      }
    });

    it("409 seller_mismatch when the listing already has chats with another seller", async () => {
      const [listingId, seller, other, buyer] = [newId(), newId(), newId(), newId()];
      expect((await open(dev, buyer, listingId, seller)).status).toBe(201);
      const mismatch = await putListing(dev, listingId, other);
      expect([mismatch.status, mismatch.body.error.code]).toEqual([409, ErrorCode.sellerMismatch]);
      expect((await list(dev, buyer))[0].listing).toBeNull();
    });
  });

  describe("POST /internal/chat/chats", () => {
    it("opens the chat of a registered listing with its seller: 201, then 200 the same chat, both hear chat_created", async () => {
      const [listingId, seller, buyer] = [newId(), newId(), newId()];
      expect((await putListing(dev, listingId, seller)).status).toBe(200);
      expect((await putUser(dev, seller, { display_name: "Grace", avatar_url: null })).status).toBe(200);
      const buyerSocket = await socketOf(dev, buyer);
      const sellerSocket = await socketOf(dev, seller);

      const created = await platformOpen(dev, { listing_id: listingId, buyer_id: buyer });
      expect(created.status).toBe(201);
      expect(created.body).toEqual({
        id: expect.any(Number),
        listing_id: listingId,
        buyer_id: buyer,
        seller_id: seller,
        created_at: isoTime,
        last_activity_at: isoTime,
        listing: chatListing(listingId, seller),
        peer: { id: seller, display_name: "Grace", avatar_url: null },
        archived: false,
      });
      const repeat = await platformOpen(dev, { listing_id: listingId, buyer_id: buyer });
      expect(repeat).toEqual({ status: 200, body: created.body });
      // The same chat the buyer would open themselves.
      const byBuyer = await open(dev, buyer, listingId, seller);
      expect([byBuyer.status, byBuyer.body.id]).toEqual([200, created.body.id]);

      for (const [socket, peer] of [
        [buyerSocket, seller],
        [sellerSocket, buyer],
      ] as const) {
        const frame = await socket.waitFor((f) => f.type === "chat_created" && f.chat.id === created.body.id);
        expect(frame).toMatchObject({ chat: { listing: chatListing(listingId, seller), peer: { id: peer } } });
      }
      // One chat_created each, for the one chat.
      expect(buyerSocket.ofType("chat_created")).toHaveLength(1);
      const [count] = await rows<{ n: number }>(
        dev.server.database.db,
        sql`select count(*)::int as n from chats where listing_id = ${listingId}`,
      );
      expect(count?.n).toBe(1);
    });

    it("404 listing_not_found for an unregistered listing, whatever LISTINGS_REQUIRED says", async () => {
      for (const chat of [dev, prod]) {
        const [listingId, buyer] = [newId(), newId()];
        const res = await platformOpen(chat, { listing_id: listingId, buyer_id: buyer });
        expect([res.status, res.body.error.code]).toEqual([404, ErrorCode.listingNotFound]);
        expect(await rows(chat.server.database.db, sql`select 1 from chats where buyer_id = ${buyer}`)).toEqual([]);
      }
    });

    it("refuses the seller as buyer (400 self_chat), a removed listing (409 listing_closed) and bad bodies (400)", async () => {
      const [listingId, seller, removedId] = [newId(), newId(), newId()];
      await putListing(dev, listingId, seller);
      await putListing(dev, removedId, seller, { status: "removed" });
      const self = await platformOpen(dev, { listing_id: listingId, buyer_id: seller });
      expect([self.status, self.body.error.code]).toEqual([400, ErrorCode.selfChat]);
      const closed = await platformOpen(dev, { listing_id: removedId, buyer_id: newId() });
      expect([closed.status, closed.body.error.code]).toEqual([409, ErrorCode.listingClosed]);
      for (const body of [
        { buyer_id: newId() },
        { listing_id: listingId },
        { listing_id: listingId, buyer_id: 0 },
        { listing_id: String(listingId), buyer_id: newId() },
        { listing_id: listingId, buyer_id: 1.5 },
      ]) {
        const res = await platformOpen(dev, body);
        expect([res.status, res.body.error.code], JSON.stringify(body)).toEqual([400, ErrorCode.validationFailed]);
      }
      const notJson = await platformOpen(dev, "{");
      expect([notJson.status, notJson.body.error.code]).toEqual([400, ErrorCode.badJson]);
    });
  });

  describe("LISTINGS_REQUIRED", () => {
    it("=1: POST /api/v1/chats opens only registered listings with their seller; =0: any, but a registered listing keeps its seller", async () => {
      for (const [chat, required] of [
        [prod, true],
        [dev, false],
      ] as const) {
        const [listingId, seller, buyer, other] = [newId(), newId(), newId(), newId()];
        const unregistered = await open(chat, buyer, listingId, seller);
        if (required) expect([unregistered.status, unregistered.body.error.code]).toEqual([404, "listing_not_found"]);
        else expect([unregistered.status, unregistered.body.listing]).toEqual([201, null]);

        const registered = newId();
        await putListing(chat, registered, seller);
        const wrongSeller = await open(chat, buyer, registered, other);
        expect([wrongSeller.status, wrongSeller.body.error.code], `required=${required}`).toEqual([
          404,
          ErrorCode.listingNotFound,
        ]);
        const ok = await open(chat, buyer, registered, seller);
        expect([ok.status, ok.body.listing], `required=${required}`).toEqual([201, chatListing(registered, seller)]);
      }
    });
  });

  describe("system messages", () => {
    it("are stored as kind system with sender_id null and data, shown the same on REST, WS and /events, unread for both", async () => {
      const { chatId, buyer, seller } = await registeredChat();
      const buyerSocket = await socketOf(dev, buyer);
      const sellerSocket = await socketOf(dev, seller);
      const ends = { [buyer]: await streamEnd(dev, buyer), [seller]: await streamEnd(dev, seller) };
      const unreadBefore = {
        [buyer]: await unreadIn(dev, buyer, chatId),
        [seller]: await unreadIn(dev, seller, chatId),
      };
      const ref = randomUUID();
      const data = { type: "offer", amount_minor: 11_000, currency: "EUR", nested: { ok: true, list: [1, "two"] } };

      const created = await say(dev, chatId, { content: "Offer made: €110", data, client_msg_id: ref });
      expect(created.status).toBe(201);
      expect(created.body).toEqual(systemMessage(chatId, "Offer made: €110", data, ref));
      const message = created.body;

      // The same stored message in each participant's page, live frame and replay.
      for (const [user, socket] of [
        [buyer, buyerSocket],
        [seller, sellerSocket],
      ] as const) {
        expect((await pageOf(dev, user, chatId))[0], `page of ${user}`).toEqual(message);
        const live = await socket.waitFor((f) => f.type === "new_message" && f.message.id === message.id);
        expect(live).toEqual({ type: "new_message", event_id: ends[user]! + 1, chat_id: chatId, message });
        const replayed = await eventsAfter(dev, user, ends[user]!);
        expect(replayed, `events of ${user}`).toEqual([
          { type: "new_message", event_id: ends[user]! + 1, chat_id: chatId, message },
        ]);
        // Unread for both: the platform is not either of them.
        expect(await unreadIn(dev, user, chatId), `unread of ${user}`).toBe(unreadBefore[user]! + 1);
        // The chat list's last message.
        expect((await list(dev, user)).find((c) => c.id === chatId).last_message).toEqual(message);
      }

      // A repeat of its client_msg_id is 200 and the same message, and stores nothing.
      const repeat = await say(dev, chatId, { content: "Offer made: €110", data, client_msg_id: ref });
      expect(repeat).toEqual({ status: 200, body: message });
      expect(await streamEnd(dev, buyer)).toBe(ends[buyer]! + 1);
      expect(await streamEnd(dev, seller)).toBe(ends[seller]! + 1);

      // The same client_msg_id in another chat is a conflict, not that message.
      const other = await registeredChat();
      const reused = await say(dev, other.chatId, { content: "Offer made: €110", data, client_msg_id: ref });
      expect([reused.status, reused.body.error.code]).toEqual([409, ErrorCode.conflict]);
      expect((await pageOf(dev, other.buyer, other.chatId)).map((m) => m.kind)).toEqual(["text", "text"]);
    });

    it("take data null or absent, and no client_msg_id", async () => {
      const { chatId } = await registeredChat();
      const withNull = await say(dev, chatId, { content: "Parcel shipped", data: null, client_msg_id: randomUUID() });
      expect([withNull.status, withNull.body.data, withNull.body.kind]).toEqual([201, null, "system"]);
      const without = await say(dev, chatId, { content: "Parcel delivered" });
      expect(without.status).toBe(201);
      expect(without.body).toEqual(systemMessage(chatId, "Parcel delivered", null, null));
      // Exactly 4 KiB of JSON (UTF-8 bytes of `{"note":"…"}`) is taken as it was sent.
      const big = { note: "x".repeat(4096 - '{"note":""}'.length) };
      expect(Buffer.byteLength(JSON.stringify(big))).toBe(4096);
      const near = await say(dev, chatId, { content: "Big", data: big, client_msg_id: randomUUID() });
      expect([near.status, near.body.data]).toEqual([201, big]);
    });

    it("are not rate-limited: 70 in a row are all stored", async () => {
      const { chatId, buyer } = await registeredChat();
      for (let i = 0; i < 70; i++) {
        const res = await say(dev, chatId, { content: `step ${i}`, client_msg_id: randomUUID() });
        expect(res.status, `system message ${i}`).toBe(201);
      }
      expect((await pageOf(dev, buyer, chatId))[0].content).toBe("step 69");
    });

    it.each([
      ["data of 4 KiB + 1 byte of JSON", { content: "x", data: { note: "x".repeat(4097 - '{"note":""}'.length) } }],
      ["data over 4 KiB in UTF-8 but not in characters", { content: "x", data: { note: "é".repeat(2100) } }],
      ["data that is an array", { content: "x", data: [1, 2] }],
      ["data that is a string", { content: "x", data: "offer" }],
      ["data that is a number", { content: "x", data: 5 }],
      ["data that is true", { content: "x", data: true }],
      ["no content", { data: {} }],
      ["empty content", { content: "  ", data: {} }],
      ["content over 4000 characters", { content: "x".repeat(4001) }],
      ["content with NUL", { content: "sold\u0000" }],
      // jsonb cannot store them: refused as text is, not a 503 that a retry never cures.
      ["data with a NUL in a string", { content: "x", data: { note: "a\u0000b" } }],
      ["data with a NUL in a nested key", { content: "x", data: { offer: { "a\u0000": 1 } } }],
      ["data with an unpaired surrogate in an array", { content: "x", data: { notes: ["ok", "\ud800"] } }],
      ["a client_msg_id over 64 characters", { content: "x", client_msg_id: "x".repeat(65) }],
      ["a client_msg_id that is a number", { content: "x", client_msg_id: 5 }],
    ])("refuse %s with 400 validation_failed and store nothing", async (_, body) => {
      const { chatId, buyer } = await registeredChat();
      const res = await say(dev, chatId, body);
      expect([res.status, res.body.error.code]).toEqual([400, ErrorCode.validationFailed]);
      expect((await pageOf(dev, buyer, chatId)).map((m) => m.kind)).toEqual(["text", "text"]);
    });

    it("are 404 in an unknown chat, 400 for a bad chat id or a body that is not JSON", async () => {
      const missing = await say(dev, 999_999_999, { content: "Item sold", client_msg_id: randomUUID() });
      expect([missing.status, missing.body.error.code]).toEqual([404, ErrorCode.notFound]);
      for (const id of ["0", "abc", "-1"]) {
        const res = await say(dev, id, { content: "Item sold" });
        expect([res.status, res.body.error.code], id).toEqual([400, ErrorCode.validationFailed]);
      }
      const { chatId } = await registeredChat();
      const notJson = await say(dev, chatId, "{");
      expect([notJson.status, notJson.body.error.code]).toEqual([400, ErrorCode.badJson]);
    });

    it("cannot be edited or deleted by either participant: 403 forbidden, and the message is as it was", async () => {
      const { chatId, buyer, seller } = await registeredChat();
      const message = (await say(dev, chatId, { content: "Item reserved", data: { by: buyer } })).body;
      for (const user of [buyer, seller]) {
        const edit = await dev.api(user, "PATCH", `/api/v1/messages/${message.id}`, { content: "Item free" });
        expect([edit.status, edit.body.error.code], `edit by ${user}`).toEqual([403, ErrorCode.forbidden]);
        const del = await dev.api(user, "DELETE", `/api/v1/messages/${message.id}`);
        expect([del.status, del.body.error.code], `delete by ${user}`).toEqual([403, ErrorCode.forbidden]);
      }
      expect((await pageOf(dev, buyer, chatId))[0]).toEqual(message);
    });
  });

  describe("DELETE /internal/chat/messages/:id", () => {
    it("removes a message for both: deleted_by platform, empty content, message_deleted to both, unread drops", async () => {
      const { chatId, buyer, seller } = await registeredChat();
      const scam = await send(dev, buyer, chatId, "pay me by gift card at scam.example");
      expect(scam.status).toBe(201);
      const buyerSocket = await socketOf(dev, buyer);
      const sellerSocket = await socketOf(dev, seller);
      const unreadBefore = await unreadIn(dev, seller, chatId);
      expect(unreadBefore).toBeGreaterThanOrEqual(1);
      const ends = { [buyer]: await streamEnd(dev, buyer), [seller]: await streamEnd(dev, seller) };

      const removed = await remove(dev, scam.body.id, { reason: "scam: off-platform payment" });
      expect(removed.status).toBe(200);
      expect(removed.body).toEqual({
        ...scam.body,
        content: "",
        deleted_at: isoTime,
        deleted_by: "platform",
      });
      for (const [user, socket] of [
        [buyer, buyerSocket],
        [seller, sellerSocket],
      ] as const) {
        const frame = await socket.waitFor((f) => f.type === "message_deleted" && f.message.id === scam.body.id);
        expect(frame).toEqual({
          type: "message_deleted",
          event_id: ends[user]! + 1,
          chat_id: chatId,
          message: removed.body,
        });
        expect((await eventsAfter(dev, user, ends[user]!)).map((e) => [e.type, e.message.deleted_by])).toEqual([
          ["message_deleted", "platform"],
        ]);
        expect((await pageOf(dev, user, chatId))[0]).toEqual(removed.body);
      }
      expect(await unreadIn(dev, seller, chatId)).toBe(unreadBefore - 1);
      // The sender cannot bring it back by an edit, nor make it their own delete.
      const edit = await dev.api(buyer, "PATCH", `/api/v1/messages/${scam.body.id}`, { content: "pay me anyway" });
      expect([edit.status, edit.body.error.code]).toEqual([409, ErrorCode.conflict]);
      await dev.api(buyer, "DELETE", `/api/v1/messages/${scam.body.id}`);
      expect((await pageOf(dev, seller, chatId))[0]).toEqual(removed.body);
      // The reason is for the platform's moderators, never shown to users.
      expect(JSON.stringify(await pageOf(dev, seller, chatId))).not.toContain("off-platform payment");
    });

    it("removes a system message: both unread counts drop", async () => {
      const { chatId, buyer, seller } = await registeredChat();
      const before = [await unreadIn(dev, buyer, chatId), await unreadIn(dev, seller, chatId)];
      const message = (await say(dev, chatId, { content: "Offer made", data: { a: 1 } })).body;
      expect([await unreadIn(dev, buyer, chatId), await unreadIn(dev, seller, chatId)]).toEqual([
        before[0]! + 1,
        before[1]! + 1,
      ]);
      const removed = await remove(dev, message.id);
      expect([removed.status, removed.body.deleted_by, removed.body.kind]).toEqual([200, "platform", "system"]);
      expect([await unreadIn(dev, buyer, chatId), await unreadIn(dev, seller, chatId)]).toEqual(before);
    });

    it("keeps unread counts exact: a read message removed takes nothing off, the sender's own count is untouched", async () => {
      const { chatId, buyer, seller } = await registeredChat();
      const badge = async (user: number) => (await dev.api(user, "GET", "/api/v1/chats/unread")).body;
      const read = (await send(dev, buyer, chatId, "first")).body;
      const unread = (await send(dev, buyer, chatId, "second")).body;
      expect((await dev.api(seller, "POST", `/api/v1/chats/${chatId}/read`, { message_id: read.id })).status).toBe(200);
      const buyerBefore = await badge(buyer);
      expect(await badge(seller)).toEqual({ total: 1, chats: { [chatId]: 1 } });

      expect((await remove(dev, read.id)).status).toBe(200);
      expect(await badge(seller)).toEqual({ total: 1, chats: { [chatId]: 1 } });
      expect((await remove(dev, unread.id)).status).toBe(200);
      expect(await badge(seller)).toEqual({ total: 0, chats: {} });
      expect(await badge(buyer)).toEqual(buyerBefore);
      // The chat list agrees with the badge.
      expect((await list(dev, seller)).find((c) => c.id === chatId).unread_count).toBe(0);
    });

    it("a repeat of the delete answers the same message and tells no one again", async () => {
      const { chatId, buyer, seller } = await registeredChat();
      const scam = (await send(dev, buyer, chatId, "wire me the money")).body;
      const first = await remove(dev, scam.id);
      expect(first.status).toBe(200);
      const ends = [await streamEnd(dev, buyer), await streamEnd(dev, seller)];
      const again = await remove(dev, scam.id);
      expect(again).toEqual(first);
      expect([await streamEnd(dev, buyer), await streamEnd(dev, seller)]).toEqual(ends);
    });

    it("a sender's own delete shows deleted_by sender", async () => {
      const { chatId, buyer } = await registeredChat();
      const mine = (await send(dev, buyer, chatId, "typo")).body;
      const res = await dev.api(buyer, "DELETE", `/api/v1/messages/${mine.id}`);
      expect(res.status).toBe(200);
      expect((await pageOf(dev, buyer, chatId))[0]).toMatchObject({ id: mine.id, content: "", deleted_by: "sender" });
    });

    it("is 404 for an unknown message and 400 for a bad id", async () => {
      const missing = await remove(dev, 999_999_999);
      expect([missing.status, missing.body.error.code]).toEqual([404, ErrorCode.notFound]);
      for (const id of ["0", "abc"]) {
        const res = await remove(dev, id);
        expect([res.status, res.body.error.code], id).toEqual([400, ErrorCode.validationFailed]);
      }
    });
  });

  describe("archive", () => {
    it("hides the chat from the archiver's list only, tells only the archiver's devices, and a message from the other side brings it back silently", async () => {
      const { chatId, buyer, seller } = await registeredChat();
      const buyerPhone = await socketOf(dev, buyer);
      const buyerLaptop = await socketOf(dev, buyer);
      const sellerSocket = await socketOf(dev, seller);
      const sellerEnd = await streamEnd(dev, seller);

      const archived = await dev.api(buyer, "POST", `/api/v1/chats/${chatId}/archive`);
      expect([archived.status, archived.body]).toEqual([204, undefined]);
      for (const socket of [buyerPhone, buyerLaptop]) {
        const frame = await socket.waitFor((f) => f.type === "chat_updated" && f.chat.id === chatId);
        expect(frame).toMatchObject({ chat: { id: chatId, archived: true, peer: { id: seller } } });
      }
      expect((await list(dev, buyer)).map((c) => c.id)).not.toContain(chatId);
      const archivedList = await list(dev, buyer, "?archived=1");
      expect(archivedList.map((c) => [c.id, c.archived])).toEqual([[chatId, true]]);
      // The seller's list is as it was.
      expect((await list(dev, seller)).find((c) => c.id === chatId)?.archived).toBe(false);
      expect((await list(dev, seller, "?archived=1")).map((c) => c.id)).toEqual([]);

      // The buyer's own message leaves it archived; the seller hears it as the next event of their stream:
      // nothing for the archive came before it.
      expect((await send(dev, buyer, chatId, "archived, and I still write")).status).toBe(201);
      const mine = await sellerSocket.waitFor((f) => f.type === "new_message" && f.chat_id === chatId);
      expect((mine as { event_id: number }).event_id).toBe(sellerEnd + 1);
      expect(sellerSocket.ofType("chat_updated")).toEqual([]);
      expect((await list(dev, buyer, "?archived=1")).map((c) => c.id)).toEqual([chatId]);

      // A message from the seller brings it back for the buyer, with new_message and no chat_updated.
      const buyerEnd = await streamEnd(dev, buyer);
      const updatesBefore = buyerPhone.ofType("chat_updated").length;
      expect((await send(dev, seller, chatId, "still there?")).status).toBe(201);
      const back = await buyerPhone.waitFor((f) => f.type === "new_message" && f.message.content === "still there?");
      expect((back as { event_id: number }).event_id).toBe(buyerEnd + 1);
      expect(buyerPhone.ofType("chat_updated")).toHaveLength(updatesBefore);
      expect(await streamEnd(dev, buyer)).toBe(buyerEnd + 1);
      expect((await list(dev, buyer)).find((c) => c.id === chatId)?.archived).toBe(false);
      expect(await list(dev, buyer, "?archived=1")).toEqual([]);
    });

    it("DELETE restores it with chat_updated archived false to the archiver's devices", async () => {
      const { chatId, buyer, seller } = await registeredChat();
      const sellerSocket = await socketOf(dev, seller);
      const sellerEnd = await streamEnd(dev, seller);
      expect((await dev.api(seller, "POST", `/api/v1/chats/${chatId}/archive`)).status).toBe(204);
      await sellerSocket.waitFor((f) => f.type === "chat_updated" && f.chat.archived);
      const buyerEnd = await streamEnd(dev, buyer);

      const restored = await dev.api(seller, "DELETE", `/api/v1/chats/${chatId}/archive`);
      expect(restored.status).toBe(204);
      const frame = await sellerSocket.waitFor((f) => f.type === "chat_updated" && !f.chat.archived);
      expect(frame).toMatchObject({ event_id: sellerEnd + 2, chat: { id: chatId, archived: false } });
      expect((await list(dev, seller)).find((c) => c.id === chatId)?.archived).toBe(false);
      expect(await list(dev, seller, "?archived=1")).toEqual([]);
      // The buyer's stream has none of it.
      expect(await streamEnd(dev, buyer)).toBe(buyerEnd);
      // Read back, both events carry the chat as it is now (as a message's events carry the message as it is now).
      expect((await eventsAfter(dev, seller, sellerEnd)).map((e) => [e.type, e.chat.id, e.chat.archived])).toEqual([
        ["chat_updated", chatId, false],
        ["chat_updated", chatId, false],
      ]);
    });

    it("a system message brings it back for both", async () => {
      const { chatId, buyer, seller } = await registeredChat();
      for (const user of [buyer, seller]) {
        expect((await dev.api(user, "POST", `/api/v1/chats/${chatId}/archive`)).status).toBe(204);
        expect((await list(dev, user)).map((c) => c.id)).not.toContain(chatId);
      }
      expect((await say(dev, chatId, { content: "Item sold", data: { status: "sold" } })).status).toBe(201);
      for (const user of [buyer, seller]) {
        expect((await list(dev, user)).find((c) => c.id === chatId)?.archived, String(user)).toBe(false);
        expect(await list(dev, user, "?archived=1")).toEqual([]);
      }
    });

    it("a listing change tells an archiver with archived true and leaves the chat archived", async () => {
      const { chatId, buyer, seller, listingId } = await registeredChat();
      expect((await dev.api(buyer, "POST", `/api/v1/chats/${chatId}/archive`)).status).toBe(204);
      const buyerSocket = await socketOf(dev, buyer);
      const sellerSocket = await socketOf(dev, seller);
      expect((await putListing(dev, listingId, seller, { status: "reserved" })).status).toBe(200);
      for (const [socket, archived] of [
        [buyerSocket, true],
        [sellerSocket, false],
      ] as const) {
        const frame = await socket.waitFor((f) => f.type === "chat_updated" && f.chat.listing?.status === "reserved");
        expect(frame).toMatchObject({ chat: { id: chatId, archived } });
      }
      expect((await list(dev, buyer)).map((c) => c.id)).not.toContain(chatId);
      expect((await list(dev, buyer, "?archived=1")).map((c) => [c.id, c.listing.status])).toEqual([
        [chatId, "reserved"],
      ]);
    });

    it("is 404 for a chat the caller takes no part in", async () => {
      const { chatId } = await registeredChat();
      for (const method of ["POST", "DELETE"]) {
        const res = await dev.api(newId(), method, `/api/v1/chats/${chatId}/archive`);
        expect([res.status, res.body.error.code], method).toEqual([404, ErrorCode.notFound]);
      }
      const missing = await dev.api(newId(), "POST", "/api/v1/chats/999999999/archive");
      expect(missing.status).toBe(404);
    });
  });

  describe("a removed listing", () => {
    it("refuses users' messages with 409 listing_closed; reads, system messages and platform deletes go on", async () => {
      const { chatId, buyer, seller, listingId } = await registeredChat();
      expect((await putListing(dev, listingId, seller, { status: "removed" })).status).toBe(200);
      for (const user of [buyer, seller]) {
        const res = await send(dev, user, chatId, "hello?");
        expect([res.status, res.body.error.code], String(user)).toEqual([409, ErrorCode.listingClosed]);
      }
      const notice = await say(dev, chatId, { content: "This listing was removed", data: { status: "removed" } });
      expect([notice.status, notice.body.kind]).toEqual([201, "system"]);
      const page = await pageOf(dev, buyer, chatId);
      expect(page.map((m) => [m.kind, m.content])).toEqual([
        ["system", "This listing was removed"],
        ["text", "yes"],
        ["text", "is it still available?"],
      ]);
      const item = (await list(dev, seller)).find((c) => c.id === chatId);
      expect(item.listing.status).toBe("removed");
      const removed = await remove(dev, page[1].id);
      expect([removed.status, removed.body.deleted_by]).toEqual([200, "platform"]);
      expect(
        (await dev.api(buyer, "POST", `/api/v1/chats/${chatId}/read`, { message_id: notice.body.id })).status,
      ).toBe(200);
    });
  });
});
