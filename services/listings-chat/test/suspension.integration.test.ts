/**
 * Suspension (CONTRACT §8): `POST/DELETE /internal/chat/users/:id/suspend` on two chat instances sharing one
 * PostgreSQL and one Redis. A suspended user's live sockets on every instance close with 4003, a new upgrade is
 * accepted then closed with 4003; sends, edits and chat opens are 403 user_suspended (WS: an error frame);
 * reads go on; lifting it, or its `until` passing, lets them write again. On PostgreSQL and Redis only (skipped
 * when neither DATABASE_URL nor CI is set; in CI both must be).
 */
import { randomUUID } from "node:crypto";
import { CloseCode, ErrorCode } from "@listings-chat/shared";
import { sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import type { Database } from "../src/db/client.ts";
import { databaseTargets } from "./support/databases.ts";
import { connect, startTestChat, type TestChat, type TestChatOptions, TestSocket } from "./support/harness.ts";
import { redisNamespace, redisUrl } from "./support/redis.ts";

const postgres = databaseTargets().find((t) => t.name === "postgres");
const redis = redisUrl();

/** Raw SQL rows, the same on PGlite and node-postgres (cast bigints in SQL: drivers differ on them). */
async function rows<T>(db: Database, query: ReturnType<typeof sql>): Promise<T[]> {
  return ((await db.execute(query)) as unknown as { rows: T[] }).rows;
}

/** A request on the chat port with the internal token, as the monolith makes it. */
async function internal(chat: TestChat, method: string, path: string, body?: unknown) {
  const res = await fetch(`${chat.baseUrl}${path}`, {
    method,
    headers: {
      "x-internal-token": chat.internalToken,
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined };
}

/** An upgrade as the gateway makes it, without waiting for `connected` (a suspended user never gets far). */
function rawSocket(chat: TestChat, userId: number): TestSocket {
  return new TestSocket(
    new WebSocket(chat.wsUrl, { headers: { "x-internal-token": chat.internalToken, "x-user-id": String(userId) } }),
  );
}

describe.runIf(postgres && redis)("suspension across two instances", () => {
  let one: TestChat;
  let two: TestChat;
  /** The database both instances share (a third one joins it in the last test). */
  let database: TestChatOptions["database"];
  const cleanups: Array<() => Promise<void>> = [];
  const sockets: TestSocket[] = [];
  let nextId = 95_000;
  const newId = () => nextId++;

  beforeAll(async () => {
    const db = await postgres!.create();
    database = db.options;
    const ns = redisNamespace(redis!);
    cleanups.push(db.drop, ns.drop);
    const shared = {
      database: db.options,
      redis: { url: redis!, keyPrefix: ns.keyPrefix },
      internalToken: randomUUID(),
      // The bus tells the instances here; their periodic read of the suspensions (which would also close a
      // socket suspended behind their back, as the test of the write's own refusal does) has a test of its own.
      overrides: { sendsPerMinute: 100_000, suspensionsRefreshMs: 600_000 },
    };
    one = await startTestChat({ ...shared, instanceId: "suspend-one" });
    two = await startTestChat({ ...shared, instanceId: "suspend-two" });
  }, 60_000);

  afterAll(async () => {
    for (const socket of sockets) if (!socket.closeInfo) await socket.close();
    await one?.stop();
    await two?.stop();
    for (const cleanup of cleanups.reverse()) await cleanup();
  });

  const live = async (chat: TestChat, userId: number) => {
    const socket = await connect(chat, userId);
    sockets.push(socket);
    return socket;
  };
  const suspend = (chat: TestChat, userId: number | string, body: unknown = {}) =>
    internal(chat, "POST", `/internal/chat/users/${userId}/suspend`, body);
  const lift = (chat: TestChat, userId: number) => internal(chat, "DELETE", `/internal/chat/users/${userId}/suspend`);
  const send = (chat: TestChat, sender: number, chatId: number, content: string) =>
    chat.api(sender, "POST", `/api/v1/chats/${chatId}/messages`, { content, client_msg_id: randomUUID() });

  /** A chat of two new users that both wrote in, and the user's first message in it. */
  async function pair() {
    const [user, other] = [newId(), newId()];
    const opened = await one.api(user, "POST", "/api/v1/chats", { listing_id: newId(), seller_id: other });
    expect(opened.status).toBe(201);
    const chatId = opened.body.id as number;
    const mine = await send(one, user, chatId, "hello");
    expect(mine.status).toBe(201);
    expect((await send(two, other, chatId, "hi")).status).toBe(201);
    return { user, other, chatId, mine: mine.body as { id: number } };
  }

  /**
   * A new upgrade for `userId` is accepted, then closed with 4003 before any frame: no `connected` (which would
   * tell the client it is not suspended, and its contacts that it came online).
   */
  async function expectRefusedUpgrade(chat: TestChat, userId: number) {
    const socket = rawSocket(chat, userId);
    await socket.opened;
    const closed = await socket.waitClosed();
    expect(closed.code, `a new socket on ${chat.baseUrl}`).toBe(CloseCode.suspended);
    expect(socket.frames).toEqual([]);
  }

  it("closes the user's sockets on both instances with 4003, refuses writes with 403, and reads go on; lifting it ends it", async () => {
    const { user, other, chatId, mine } = await pair();
    const onOne = await live(one, user);
    const onTwo = await live(two, user);
    const otherSocket = await live(two, other);

    expect(await suspend(one, user, { reason: "scam reports" })).toEqual({ status: 204, body: undefined });
    for (const socket of [onOne, onTwo]) expect((await socket.waitClosed()).code).toBe(CloseCode.suspended);
    // The other participant's socket is not touched.
    expect(otherSocket.closeInfo).toBeUndefined();
    for (const chat of [one, two]) await expectRefusedUpgrade(chat, user);

    // Writes: sends, edits and chat opens, on both instances.
    for (const chat of [one, two]) {
      const sent = await send(chat, user, chatId, "buy from me outside the site");
      expect([sent.status, sent.body.error.code]).toEqual([403, ErrorCode.userSuspended]);
      const edit = await chat.api(user, "PATCH", `/api/v1/messages/${mine.id}`, { content: "edited" });
      expect([edit.status, edit.body.error.code]).toEqual([403, ErrorCode.userSuspended]);
      const opened = await chat.api(user, "POST", "/api/v1/chats", { listing_id: newId(), seller_id: newId() });
      expect([opened.status, opened.body.error.code]).toEqual([403, ErrorCode.userSuspended]);
    }
    const db = one.server.database.db;
    const [stored] = await rows<{ n: number }>(
      db,
      sql`select count(*)::int as n from messages where sender_id = ${user}`,
    );
    expect(stored?.n).toBe(1);
    const [chats] = await rows<{ n: number }>(db, sql`select count(*)::int as n from chats where buyer_id = ${user}`);
    expect(chats?.n).toBe(1);

    // Reads and what is not a write to others go on: lists, pages, polling, the badge ("hi" and this one),
    // mark-read.
    const theirs = await send(two, other, chatId, "are you there?");
    expect(theirs.status).toBe(201);
    expect((await one.api(user, "GET", "/api/v1/chats")).body.chats.map((c: { id: number }) => c.id)).toEqual([chatId]);
    const page = await two.api(user, "GET", `/api/v1/chats/${chatId}/messages`);
    expect([page.status, page.body.messages[0].content]).toEqual([200, "are you there?"]);
    const events = await one.api(user, "GET", "/api/v1/events?after=0");
    expect(events.status).toBe(200);
    expect(events.body.events.at(-1)).toMatchObject({ type: "new_message", message: { content: "are you there?" } });
    expect((await one.api(user, "GET", "/api/v1/chats/unread")).body.chats[String(chatId)]).toBe(2);
    expect((await one.api(user, "POST", `/api/v1/chats/${chatId}/read`, { message_id: theirs.body.id })).status).toBe(
      200,
    );
    expect((await one.api(user, "GET", "/api/v1/chats/unread")).body.total).toBe(0);
    // Deleting one's own message goes on (taking back what one wrote is not a new word to anyone).
    const deleted = await two.api(user, "DELETE", `/api/v1/messages/${mine.id}`);
    expect([deleted.status, deleted.body.deleted_by]).toEqual([200, "sender"]);

    // Lifted (on the other instance): writes and sockets work again.
    expect(await lift(two, user)).toEqual({ status: 204, body: undefined });
    for (const chat of [one, two]) {
      const socket = await live(chat, user);
      const ref = randomUUID();
      socket.send({ type: "send_message", chat_id: chatId, content: `back on ${chat.baseUrl}`, client_msg_id: ref });
      const ack = await socket.waitFor((f) => f.type === "ack" && f.ref === ref);
      expect(ack).toMatchObject({ message: { content: `back on ${chat.baseUrl}` } });
      expect((await send(chat, user, chatId, "and over REST")).status).toBe(201);
    }
    const fresh = await send(one, user, chatId, "typo");
    expect((await one.api(user, "PATCH", `/api/v1/messages/${fresh.body.id}`, { content: "fixed" })).status).toBe(200);
    expect((await two.api(user, "POST", "/api/v1/chats", { listing_id: newId(), seller_id: newId() })).status).toBe(
      201,
    );
    expect(await rows(one.server.database.db, sql`select 1 from suspensions where user_id = ${user}`)).toEqual([]);
  });

  it("a send frame on a socket that is still open is answered with an error frame user_suspended, never an ack", async () => {
    const { user, chatId } = await pair();
    const socket = await live(two, user);
    // Suspended behind the instances' back (as if the close had not reached this socket yet): the write itself
    // refuses it.
    await one.server.database.db.execute(sql`insert into suspensions (user_id, reason) values (${user}, 'direct')`);
    const ref = randomUUID();
    socket.send({ type: "send_message", chat_id: chatId, content: "over the socket", client_msg_id: ref });
    const error = await socket.waitFor((f) => f.type === "error" && f.ref === ref);
    expect(error).toMatchObject({ type: "error", code: ErrorCode.userSuspended, ref });
    expect(socket.ofType("ack")).toEqual([]);
    // Lifting it through the route removes the row written by hand.
    expect((await lift(one, user)).status).toBe(204);
    const again = randomUUID();
    socket.send({ type: "send_message", chat_id: chatId, content: "over the socket", client_msg_id: again });
    await socket.waitFor((f) => f.type === "ack" && f.ref === again);
  });

  it("an `until` in the past suspends no one; one 2 s ahead ends by itself", async () => {
    const { user, chatId } = await pair();
    const socket = await live(one, user);
    expect((await suspend(two, user, { until: new Date(Date.now() - 60_000).toISOString() })).status).toBe(204);
    expect((await send(two, user, chatId, "still allowed")).status).toBe(201);
    const ref = randomUUID();
    socket.send({ type: "send_message", chat_id: chatId, content: "and over the socket", client_msg_id: ref });
    await socket.waitFor((f) => f.type === "ack" && f.ref === ref);
    expect(socket.closeInfo).toBeUndefined();

    const started = Date.now();
    const until = new Date(started + 2_000);
    expect((await suspend(two, user, { until: until.toISOString(), reason: "cool-off" })).status).toBe(204);
    expect((await socket.waitClosed()).code).toBe(CloseCode.suspended);
    const refused = await send(one, user, chatId, "too soon");
    expect([refused.status, refused.body.error.code]).toEqual([403, ErrorCode.userSuspended]);

    // Polled, bounded: the first send taken is at or after `until`, well within 10 s.
    let accepted: number | undefined;
    while (Date.now() - started < 10_000) {
      const res = await send(one, user, chatId, "after the cool-off");
      if (res.status === 201) {
        accepted = Date.now();
        break;
      }
      expect([res.status, res.body.error.code]).toEqual([403, ErrorCode.userSuspended]);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(accepted, "the suspension did not end within 10 s").toBeDefined();
    // The clocks of the test and the database are the same host's; 50 ms for rounding.
    expect(accepted!).toBeGreaterThanOrEqual(until.getTime() - 50);
    // A new socket is taken again.
    await live(two, user);
  });

  it("refuses a bad until, reason or user id with 400, and suspends no one", async () => {
    const user = newId();
    for (const body of [{ until: "tomorrow" }, { until: 5 }, { reason: 5 }, [], "{"]) {
      const res = await suspend(one, user, body);
      expect([res.status, res.body.error.code], JSON.stringify(body)).toEqual([
        400,
        body === "{" ? ErrorCode.badJson : ErrorCode.validationFailed,
      ]);
    }
    for (const id of ["0", "abc", "-2"]) {
      const res = await suspend(one, id, {});
      expect([res.status, res.body.error.code], id).toEqual([400, ErrorCode.validationFailed]);
    }
    expect(await rows(one.server.database.db, sql`select 1 from suspensions where user_id = ${user}`)).toEqual([]);
  });

  it("a suspension or a lift no bus message told is read within the refresh: sockets closed, connects let in again", async () => {
    const { user } = await pair();
    const quick = await startTestChat({
      database,
      internalToken: one.internalToken,
      overrides: { suspensionsRefreshMs: 200 },
    });
    try {
      const socket = await live(quick, user);
      // Behind the instance's back: no route, no bus message.
      await quick.server.database.db.execute(sql`insert into suspensions (user_id, reason) values (${user}, 'direct')`);
      expect((await socket.waitClosed()).code).toBe(CloseCode.suspended);
      await expectRefusedUpgrade(quick, user);
      await quick.server.database.db.execute(sql`delete from suspensions where user_id = ${user}`);
      // Held as suspended until the next read, then let in: asked of the database, a lift is seen at once.
      const back = await live(quick, user);
      expect(back.ofType("connected")).toHaveLength(1);
    } finally {
      await quick.stop();
    }
  });
});
