/**
 * Listings the platform registers (CONTRACT §8): `PUT /internal/chat/listings/:id` over HTTP (create, change,
 * repeat, 409 seller_mismatch, 400s, 401), LISTINGS_REQUIRED=1 on `POST /api/v1/chats`, and a removed listing
 * refusing new chats and new messages (REST, WS, a batch of the group commit, the path past the open limit)
 * while reads go on. On PGlite always and on PostgreSQL when DATABASE_URL is set (there the race of a PUT and
 * an open is real).
 */
import { randomUUID } from "node:crypto";
import { ErrorCode } from "@listings-chat/shared";
import { sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createChatService } from "../src/chats/service.ts";
import type { Database } from "../src/db/client.ts";
import { ChatError, RateLimitedError } from "../src/errors.ts";
import { createRateLimiter } from "../src/limits/rate-limiter.ts";
import { storeMessages } from "../src/messages/repository.ts";
import { createMessageService } from "../src/messages/service.ts";
import { LISTING_TITLE_MAX_CHARS } from "../src/platform/routes.ts";
import { databaseTargets } from "./support/databases.ts";
import { connect, startTestChat, type TestChat } from "./support/harness.ts";

/** Raw SQL rows, the same on PGlite and node-postgres (cast bigints in SQL: drivers differ on them). */
async function rows<T>(db: Database, query: ReturnType<typeof sql>): Promise<T[]> {
  return ((await db.execute(query)) as unknown as { rows: T[] }).rows;
}

/** The ChatError `work` fails with. */
async function chatError(work: Promise<unknown>): Promise<ChatError> {
  try {
    await work;
  } catch (error) {
    expect(error).toBeInstanceOf(ChatError);
    return error as ChatError;
  }
  throw new Error("expected a ChatError, but the call succeeded");
}

const listingBody = (sellerId: number, changes: Record<string, unknown> = {}) => ({
  seller_id: sellerId,
  title: "Road bike, 56 cm",
  price_minor: 45_000,
  currency: "EUR",
  image_url: "https://img.marketplace.example/1.jpg",
  url: "https://marketplace.example/listings/1",
  status: "active",
  ...changes,
});

/** `PUT /internal/chat/listings/:id` on `chat`'s port, with its internal token unless `token` says otherwise. */
async function putListing(
  chat: TestChat,
  id: number | string,
  body: unknown,
  token: string | null = chat.internalToken,
) {
  const res = await fetch(`${chat.baseUrl}/internal/chat/listings/${id}`, {
    method: "PUT",
    headers: { "content-type": "application/json", ...(token === null ? {} : { "x-internal-token": token }) },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined };
}

describe.each(databaseTargets())("listings on $name", (target) => {
  /** LISTINGS_REQUIRED=0 (development), and =1 (production), each on a database of its own. */
  let dev: TestChat;
  let prod: TestChat;
  const drops: Array<() => Promise<void>> = [];

  // Each test uses users and listings of its own.
  let nextId = 80_000;
  const newId = () => nextId++;

  beforeAll(async () => {
    for (const listingsRequired of [false, true]) {
      const created = await target.create();
      drops.push(created.drop);
      const chat = await startTestChat({ database: created.options, listingsRequired });
      if (listingsRequired) prod = chat;
      else dev = chat;
    }
  }, 60_000);

  afterAll(async () => {
    await dev?.stop();
    await prod?.stop();
    for (const drop of drops) await drop();
  });

  const open = (chat: TestChat, buyer: number, listingId: number, sellerId: number) =>
    chat.api(buyer, "POST", "/api/v1/chats", { listing_id: listingId, seller_id: sellerId });
  const send = (chat: TestChat, sender: number, chatId: number, content: string, clientMsgId?: string) =>
    chat.api(sender, "POST", `/api/v1/chats/${chatId}/messages`, { content, client_msg_id: clientMsgId });
  const listingRows = (chat: TestChat, id: number) =>
    rows<{ seller_id: string; title: string; status: string }>(
      chat.server.database.db,
      sql`select seller_id::text, title, status from listings where id = ${id}`,
    );

  describe("PUT /internal/chat/listings/:id", () => {
    it("creates the listing, answers the same one to a repeat (nothing written), and changes it", async () => {
      const id = newId();
      const seller = newId();
      const created = await putListing(dev, id, listingBody(seller));
      expect(created.status).toBe(200);
      expect(created.body).toEqual({
        id,
        ...listingBody(seller),
        created_at: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/),
        updated_at: created.body.created_at,
      });

      // Idempotent: the same body again is the same answer, updated_at included.
      const repeat = await putListing(dev, id, listingBody(seller));
      expect(repeat).toEqual(created);

      const changed = await putListing(dev, id, listingBody(seller, { title: "Road bike, new tyres", status: "sold" }));
      expect(changed.status).toBe(200);
      expect(changed.body).toMatchObject({ id, title: "Road bike, new tyres", status: "sold" });
      expect(changed.body.created_at).toBe(created.body.created_at);
      expect(Date.parse(changed.body.updated_at)).toBeGreaterThanOrEqual(Date.parse(created.body.updated_at));
      expect(await listingRows(dev, id)).toEqual([
        { seller_id: String(seller), title: "Road bike, new tyres", status: "sold" },
      ]);

      // image_url may be null or absent: a listing without a photo.
      const { image_url: _dropped, ...withoutImage } = listingBody(seller);
      const noPhoto = await putListing(dev, id, withoutImage);
      expect([noPhoto.status, noPhoto.body.image_url]).toEqual([200, null]);
      // A title of exactly the longest length, counted in characters (code points), is taken.
      const longest = "🚲".repeat(LISTING_TITLE_MAX_CHARS);
      expect((await putListing(dev, id, listingBody(seller, { title: longest }))).body.title).toBe(longest);
    });

    it.each([
      ["seller_id missing", { seller_id: undefined }, "seller_id"],
      ["seller_id 0", { seller_id: 0 }, "seller_id"],
      ["seller_id a string", { seller_id: "7" }, "seller_id"],
      ["an empty title", { title: "   " }, "title: must not be empty"],
      ["a title too long", { title: "x".repeat(LISTING_TITLE_MAX_CHARS + 1) }, "title: must be at most 200"],
      ["a title with NUL", { title: "bike\u0000" }, "title: must not contain NUL"],
      ["a negative price", { price_minor: -1 }, "price_minor"],
      ["a price with a fraction", { price_minor: 10.5 }, "price_minor"],
      ["a price as a string", { price_minor: "100" }, "price_minor"],
      ["a lower-case currency", { currency: "eur" }, "currency: must be an ISO 4217 code"],
      ["a four-letter currency", { currency: "EURO" }, "currency: must be an ISO 4217 code"],
      ["a url that is not http(s)", { url: "ftp://marketplace.example/1" }, "url: must be an absolute http"],
      ["a relative url", { url: "/listings/1" }, "url: must be an absolute http"],
      ["a javascript: image_url", { image_url: "javascript:alert(1)" }, "image_url: must be an absolute http"],
      ["a url too long", { url: `https://m.example/${"a".repeat(2048)}` }, "url: must be at most 2048"],
      ["an unknown status", { status: "deleted" }, "status: must be one of active, reserved, sold, removed"],
    ])("refuses %s with 400 validation_failed naming the field, and stores nothing", async (_, change, says) => {
      const id = newId();
      const res = await putListing(dev, id, listingBody(newId(), change));
      expect(res.status).toBe(400);
      expect(res.body.error.code).toBe(ErrorCode.validationFailed);
      expect(res.body.error.message).toContain(says);
      expect(await listingRows(dev, id)).toEqual([]);
    });

    it("refuses a bad listing id and a body that is not JSON with 400", async () => {
      for (const id of ["0", "abc", "-3", "1.5"]) {
        const res = await putListing(dev, id, listingBody(newId()));
        expect([res.status, res.body.error.code, res.body.error.message], id).toEqual([
          400,
          ErrorCode.validationFailed,
          "listing id must be a positive integer",
        ]);
      }
      const notJson = await putListing(dev, newId(), "{not json");
      expect([notJson.status, notJson.body.error.code]).toEqual([400, ErrorCode.badJson]);
    });

    it("is 401 without the internal token or with another one, and stores nothing", async () => {
      const id = newId();
      for (const token of [null, "wrong-token"]) {
        const res = await putListing(dev, id, listingBody(newId()), token);
        expect([res.status, res.body.error.code]).toEqual([401, ErrorCode.unauthorized]);
      }
      expect(await listingRows(dev, id)).toEqual([]);
    });

    it("409 seller_mismatch when chats on the listing have another seller; a registered listing keeps its seller", async () => {
      const [id, seller, other, buyer] = [newId(), newId(), newId(), newId()];
      // LISTINGS_REQUIRED=0: a chat on a listing not registered yet.
      expect((await open(dev, buyer, id, seller)).status).toBe(201);

      const mismatch = await putListing(dev, id, listingBody(other));
      expect(mismatch.status).toBe(409);
      expect(mismatch.body.error.code).toBe(ErrorCode.sellerMismatch);
      expect(mismatch.body.error.message).toMatch(/another seller/);
      expect(await listingRows(dev, id)).toEqual([]);

      expect((await putListing(dev, id, listingBody(seller))).status).toBe(200);
      // A change of seller while it has chats: refused, and the listing is as it was.
      const change = await putListing(dev, id, listingBody(other, { title: "changed" }));
      expect([change.status, change.body.error.code]).toEqual([409, ErrorCode.sellerMismatch]);
      expect(await listingRows(dev, id)).toEqual([
        { seller_id: String(seller), title: listingBody(seller).title, status: "active" },
      ]);
      // Once registered, its seller is the only one, even with LISTINGS_REQUIRED=0.
      const wrongSeller = await open(dev, newId(), id, other);
      expect([wrongSeller.status, wrongSeller.body.error.code]).toEqual([404, ErrorCode.listingNotFound]);

      // A listing without chats may change seller.
      const lone = newId();
      expect((await putListing(dev, lone, listingBody(seller))).status).toBe(200);
      expect((await putListing(dev, lone, listingBody(other))).body.seller_id).toBe(other);
    });
  });

  describe("LISTINGS_REQUIRED=1", () => {
    it("opens chats only on registered listings, with their seller: 404 listing_not_found otherwise", async () => {
      const [id, seller, buyer] = [newId(), newId(), newId()];
      const unregistered = await open(prod, buyer, id, seller);
      expect([unregistered.status, unregistered.body.error.code]).toEqual([404, ErrorCode.listingNotFound]);
      expect(unregistered.body.error.message).toMatch(/not registered/);

      expect((await putListing(prod, id, listingBody(seller))).status).toBe(200);
      const wrongSeller = await open(prod, buyer, id, newId());
      expect([wrongSeller.status, wrongSeller.body.error.code]).toEqual([404, ErrorCode.listingNotFound]);

      const opened = await open(prod, buyer, id, seller);
      expect(opened.status).toBe(201);
      expect(opened.body).toMatchObject({ listing_id: id, buyer_id: buyer, seller_id: seller });
      expect((await open(prod, buyer, id, seller)).status).toBe(200);
      // Nothing but the one chat was created.
      const [count] = await rows<{ n: number }>(
        prod.server.database.db,
        sql`select count(*)::int as n from chats where listing_id = ${id}`,
      );
      expect(count?.n).toBe(1);
    });

    it("with LISTINGS_REQUIRED=0 an unregistered listing opens chats with anyone named as seller", async () => {
      expect((await open(dev, newId(), newId(), newId())).status).toBe(201);
    });

    it("past the open limit, an existing chat is answered only if it could be opened now", async () => {
      const db = prod.server.database.db;
      const big = createRateLimiter({ limits: { chat_open: 100_000 } });
      const publish = () => {};
      const lenient = createChatService({ db, publish, limits: big, listingsRequired: false });
      const strict = createChatService({
        db,
        publish,
        limits: createRateLimiter({ limits: { chat_open: 1 } }),
        listingsRequired: true,
      });
      const buyer = newId();
      const [seller, okListing, removedListing, unregisteredListing] = [newId(), newId(), newId(), newId()];
      for (const id of [okListing, removedListing]) await putListing(prod, id, listingBody(seller));
      const ok = await lenient.open(buyer, okListing, seller);
      await lenient.open(buyer, removedListing, seller);
      // Opened while the listing was not required (as before LISTINGS_REQUIRED was turned on).
      await lenient.open(buyer, unregisteredListing, seller);
      await putListing(prod, removedListing, listingBody(seller, { status: "removed" }));

      // The buyer's one open of the hour.
      const used = newId();
      await putListing(prod, used, listingBody(seller));
      expect((await strict.open(buyer, used, seller)).created).toBe(true);

      expect(await strict.open(buyer, okListing, seller)).toEqual({ chat: ok.chat, created: false });
      const closed = await chatError(strict.open(buyer, removedListing, seller));
      expect([closed.status, closed.code]).toEqual([409, ErrorCode.listingClosed]);
      const unknown = await chatError(strict.open(buyer, unregisteredListing, seller));
      expect([unknown.status, unknown.code]).toEqual([404, ErrorCode.listingNotFound]);
      const fresh = newId();
      await putListing(prod, fresh, listingBody(seller));
      expect(await strict.open(buyer, fresh, seller).catch((e: unknown) => e)).toBeInstanceOf(RateLimitedError);
    });
  });

  describe("a removed listing", () => {
    it("refuses new chats and new messages (REST and WS) with 409 listing_closed; reads go on", async () => {
      const [id, seller, buyer] = [newId(), newId(), newId()];
      await putListing(dev, id, listingBody(seller));
      const chatId = (await open(dev, buyer, id, seller)).body.id as number;
      const stored = randomUUID();
      expect((await send(dev, buyer, chatId, "is it still available?", stored)).status).toBe(201);
      expect((await send(dev, seller, chatId, "yes")).status).toBe(201);
      const socket = await connect(dev, buyer);

      expect((await putListing(dev, id, listingBody(seller, { status: "removed" }))).body.status).toBe("removed");

      for (const attempt of [open(dev, buyer, id, seller), open(dev, newId(), id, seller)]) {
        const res = await attempt;
        expect([res.status, res.body.error.code]).toEqual([409, ErrorCode.listingClosed]);
        expect(res.body.error.message).toMatch(/removed/);
      }
      for (const sender of [buyer, seller]) {
        const res = await send(dev, sender, chatId, "one more thing");
        expect([res.status, res.body.error.code]).toEqual([409, ErrorCode.listingClosed]);
      }
      const ref = randomUUID();
      socket.send({ type: "send_message", chat_id: chatId, content: "over the socket", client_msg_id: ref });
      const error = await socket.waitFor((f) => f.type === "error");
      expect(error).toMatchObject({ type: "error", code: ErrorCode.listingClosed, ref });
      expect(socket.ofType("ack")).toEqual([]);
      await socket.close();

      // A retry of a send stored before the removal still gets its message.
      const retry = await send(dev, buyer, chatId, "is it still available?", stored);
      expect([retry.status, retry.body.content]).toEqual([200, "is it still available?"]);
      // Reads go on: the messages, the chat list.
      const page = await dev.api(buyer, "GET", `/api/v1/chats/${chatId}/messages`);
      expect(page.status).toBe(200);
      expect(page.body.messages.map((m: { content: string }) => m.content)).toEqual(["yes", "is it still available?"]);
      const list = await dev.api(seller, "GET", "/api/v1/chats");
      expect(list.body.chats.map((c: { id: number }) => c.id)).toContain(chatId);

      // reserved and sold are not enforced; active again opens it again.
      for (const status of ["reserved", "sold", "active"]) {
        await putListing(dev, id, listingBody(seller, { status }));
        expect((await send(dev, seller, chatId, `now ${status}`)).status, status).toBe(201);
        expect((await open(dev, newId(), id, seller)).status, status).toBe(201);
      }
    });

    it("in a batch of the group commit, refuses only the sends in its chats and stores the others", async () => {
      const db = dev.server.database.db;
      const [closedListing, openListing, seller, buyer] = [newId(), newId(), newId(), newId()];
      await putListing(dev, closedListing, listingBody(seller));
      const closedChat = (await open(dev, buyer, closedListing, seller)).body.id as number;
      const openChat = (await open(dev, buyer, openListing, seller)).body.id as number;
      const before = randomUUID();
      expect((await send(dev, buyer, closedChat, "before the removal", before)).status).toBe(201);
      await putListing(dev, closedListing, listingBody(seller, { status: "removed" }));

      const outcomes = await storeMessages(db, [
        { senderId: buyer, chatId: closedChat, content: "refused", clientMsgId: randomUUID() },
        { senderId: buyer, chatId: openChat, content: "stored 1", clientMsgId: null },
        { senderId: seller, chatId: closedChat, content: "refused too", clientMsgId: null },
        { senderId: buyer, chatId: closedChat, content: "before the removal", clientMsgId: before },
        { senderId: seller, chatId: openChat, content: "stored 2", clientMsgId: null },
      ]);
      expect(outcomes.map((o) => o.status)).toEqual([
        "listing_closed",
        "created",
        "listing_closed",
        "repeat",
        "created",
      ]);
      const [count] = await rows<{ n: number }>(
        db,
        sql`select count(*)::int as n from messages where chat_id = ${closedChat}`,
      );
      expect(count?.n).toBe(1);

      // Through the service, sends gathered into one transaction each get their own answer.
      const batched = createMessageService({
        db,
        publish: () => {},
        limits: createRateLimiter({ limits: { send: 100_000 } }),
        groupCommit: { maxWaitMs: 20, maxBatch: 64 },
      });
      const [refused, good] = await Promise.allSettled([
        batched.send(buyer, closedChat, "refused", randomUUID()),
        batched.send(buyer, openChat, "good", randomUUID()),
      ]);
      expect(refused).toMatchObject({ status: "rejected", reason: { status: 409, code: ErrorCode.listingClosed } });
      expect(good).toMatchObject({ status: "fulfilled", value: { created: true, message: { content: "good" } } });
    });
  });

  it("a PUT and opens racing on one listing never leave a chat with another seller than the registered one", async () => {
    const db = dev.server.database.db;
    for (let round = 0; round < 10; round++) {
      const [id, registered, other] = [newId(), newId(), newId()];
      const results = await Promise.all([
        ...Array.from({ length: 4 }, () => open(dev, newId(), id, other)),
        putListing(dev, id, listingBody(registered)),
      ]);
      const put = results.at(-1)!;
      const sellers = await rows<{ seller_id: string }>(
        db,
        sql`select distinct seller_id::text from chats where listing_id = ${id}`,
      );
      if (put.status === 200) {
        expect(sellers, `round ${round}`).toEqual([]);
        for (const opened of results.slice(0, -1)) expect(opened.body.error.code).toBe(ErrorCode.listingNotFound);
      } else {
        expect(put.body.error.code).toBe(ErrorCode.sellerMismatch);
        expect(sellers).toEqual([{ seller_id: String(other) }]);
        expect(await listingRows(dev, id)).toEqual([]);
      }
    }
  });
});
