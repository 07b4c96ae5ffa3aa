/**
 * A person's erasure (CONTRACT §12, `DELETE /internal/chat/users/:id`) on PostgreSQL with two instances live (one
 * Redis), and on PGlite with one: the person in many chats, as buyer and as seller, with text, edits, deletes,
 * photos, a block, reports made and a report about them, and webhooks on. Afterwards every row of every table is
 * searched (each row as text: every column) for what they wrote, and the bucket for their photos: nothing is left
 * but the message a report about them keeps, in that report. The other side hears message_deleted on the other
 * instance, the person's sockets close with 4003, `user.erased` is delivered; a second request is harmless.
 *
 * Every text the person wrote carries `zq-e-`, everyone else's `zq-o-` (the check that the search finds what is
 * there), so a search by prefix finds any copy wherever it lies.
 */
import { randomBytes } from "node:crypto";
import type { ServerFrame } from "@listings-chat/shared";
import { sql } from "drizzle-orm";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Database } from "../src/db/client.ts";
import { rowsOf } from "../src/events/log.ts";
import { spawnChat, until } from "./support/chat-process.ts";
import { databaseTargets } from "./support/databases.ts";
import { connect, startTestChat, type TestChat } from "./support/harness.ts";
import { redisNamespace, redisUrl } from "./support/redis.ts";
import { storageTargets, type TestStorage } from "./support/storages.ts";
import { uploadPhoto } from "./support/upload-photo.ts";
import { startWebhookReceiver, type WebhookReceiver } from "./support/webhook-receiver.ts";

const PERSON = 8_200_001;
/** Chats where the person sells (the other is the buyer), then as many where they buy. */
const CHATS_EACH_WAY = 12;
const otherOf = (i: number) => 8_200_100 + i;
const listingOf = (i: number) => 8_300_000 + i;

const listingBody = (sellerId: number, i: number) => ({
  seller_id: sellerId,
  title: `Lamp ${i}`,
  price_minor: 1_000 + i,
  currency: "EUR",
  image_url: null,
  url: `https://marketplace.example/listings/${i}`,
  status: "active",
});

/** Every row of every table (partitioned ones through their parent) whose text holds `needle`: `table: row`. */
async function rowsHolding(db: Database, needle: string): Promise<string[]> {
  const tables = rowsOf<{ name: string }>(
    await db.execute(sql`
      select c.relname::text as name from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where n.nspname = 'public' and c.relkind in ('r', 'p') and not c.relispartition order by 1`),
  ).map((t) => t.name);
  expect(tables).toEqual(expect.arrayContaining(["messages", "chat_events", "user_events", "reports", "uploads"]));
  const found: string[] = [];
  for (const table of tables) {
    const rows = rowsOf<{ row: string }>(
      await db.execute(sql`select t::text as row from ${sql.identifier(table)} t where t::text like ${`%${needle}%`}`),
    );
    found.push(...rows.map((r) => `${table}: ${r.row}`));
  }
  return found;
}

const combinations = databaseTargets().map((database) => {
  const storage = storageTargets().find((s) => s.name === (database.name === "postgres" ? "s3" : "fs"))!;
  return { database, storage, name: `${database.name} with ${storage.name}` };
});

describe.each(combinations)("erasure: $name", ({ database, storage }) => {
  const twoInstances = database.name === "postgres";
  let a: TestChat;
  /** The other instance (the same one on PGlite, which one process holds). */
  let b: TestChat;
  let db: Database;
  /** PostgreSQL's, for a session of the test's own; undefined on PGlite. */
  let databaseUrl: string | undefined;
  let store: TestStorage;
  let receiver: WebhookReceiver;
  const chatIds: number[] = [];
  /** The person's messages not deleted before the erasure, by chat. */
  const liveBefore = new Map<number, number[]>();
  const personUploads: string[] = [];
  const otherUploads: string[] = [];
  let reportedMessageText = "";
  const cleanups: (() => Promise<void>)[] = [];

  beforeAll(async () => {
    const created = await database.create();
    cleanups.push(created.drop);
    databaseUrl = "url" in created.options ? created.options.url : undefined;
    store = await storage.create();
    cleanups.push(store.drop);
    receiver = await startWebhookReceiver();
    cleanups.push(() => receiver.close());
    const url = redisUrl();
    const namespace = twoInstances && url ? redisNamespace(url) : undefined;
    if (namespace) cleanups.push(namespace.drop);
    const start = (instanceId: string) =>
      startTestChat({
        database: created.options,
        redis: namespace && url ? { url, keyPrefix: namespace.keyPrefix } : undefined,
        instanceId,
        storage: store.config,
        photos: { uploadMaxBytes: 5 * 1024 * 1024, concurrency: 2 },
        webhooks: {
          url: receiver.url,
          secret: receiver.secret,
          timeoutMs: 2_000,
          maxAgeS: 3_600,
          notifyUnreadAfterS: 3_600,
          concurrency: 4,
          retryMinMs: 200,
          retryMaxMs: 1_000,
          pollMs: 100,
          keepDeliveredS: 86_400,
          yieldMaxS: 0,
        },
        overrides: {
          sendsPerMinute: 100_000,
          suspensionsRefreshMs: 60_000,
          // Upload URLs of 2 s (and a second for clocks): the erasure waits that long for an unsent upload's bytes.
          photos: { sweepIntervalMs: 3_600_000, uploadUrlTtlS: 2 },
          putWindowMarginS: 1,
        },
      });
    a = await start(`erase-a-${randomBytes(2).toString("hex")}`);
    cleanups.unshift(() => a.stop());
    b = twoInstances ? await start(`erase-b-${randomBytes(2).toString("hex")}`) : a;
    if (twoInstances) cleanups.unshift(() => b.stop());
    db = a.server.database.db;
  });

  afterAll(async () => {
    for (const cleanup of cleanups) await cleanup().catch(() => {});
  });

  async function ok(answer: Promise<{ status: number; body: any }>, status: number[] = [200, 201]) {
    const got = await answer;
    if (!status.includes(got.status))
      throw new Error(`expected ${status.join("/")}, got ${got.status}: ${JSON.stringify(got.body)}`);
    return got.body;
  }

  /** A report about them keeps the message it reported (README): in `reports`, and in its report.created. */
  const keptAboutThem = (row: string) =>
    (row.startsWith("reports: ") || row.startsWith("webhook_deliveries: ")) &&
    row.includes(reportedMessageText) &&
    row.includes("zq-o-note");

  it("leaves no row and no object holding what the person wrote, and the other side hears every delete", async () => {
    await ok(
      a.api(0, "PUT", `/internal/chat/users/${PERSON}`, {
        display_name: "zq-e-name",
        avatar_url: "https://cdn.example/zq-e-avatar.png",
      }),
    );
    for (let i = 0; i < 2 * CHATS_EACH_WAY; i += 1) {
      const personSells = i < CHATS_EACH_WAY;
      const other = otherOf(i);
      await ok(a.api(0, "PUT", `/internal/chat/users/${other}`, { display_name: `zq-o-name-${i}`, avatar_url: null }));
      await ok(
        a.api(0, "PUT", `/internal/chat/listings/${listingOf(i)}`, listingBody(personSells ? PERSON : other, i)),
      );
      const chat = await ok(
        a.api(0, "POST", "/internal/chat/chats", { listing_id: listingOf(i), buyer_id: personSells ? other : PERSON }),
      );
      chatIds.push(chat.id);
      const path = `/api/v1/chats/${chat.id}/messages`;
      const first = await ok(a.api(PERSON, "POST", path, { content: `zq-e-${i}-a`, client_msg_id: `zq-e-cid-${i}` }));
      await ok(b.api(other, "POST", path, { content: `zq-o-${i}` }));
      const second = await ok(a.api(PERSON, "POST", path, { content: `zq-e-${i}-b` }));
      liveBefore.set(chat.id, [first.id, second.id]);
    }
    const [chat0, chat1, chat2] = chatIds as [number, number, number];
    const [a0, b0] = liveBefore.get(chat0)!;
    // An edit, a delete by the sender (its text kept until now, for moderation), photos of both sides.
    await ok(a.api(PERSON, "PATCH", `/api/v1/messages/${a0}`, { content: "zq-e-edited" }));
    await ok(a.api(PERSON, "DELETE", `/api/v1/messages/${b0}`));
    liveBefore.set(chat0, [a0!]);
    personUploads.push(await uploadPhoto(a, PERSON));
    const photo = await ok(
      a.api(PERSON, "POST", `/api/v1/chats/${chat0}/messages`, { content: "zq-e-caption", attachments: personUploads }),
    );
    liveBefore.get(chat0)!.push(photo.id);
    personUploads.push(await uploadPhoto(a, PERSON)); // never sent
    otherUploads.push(await uploadPhoto(a, otherOf(0)));
    await ok(
      a.api(otherOf(0), "POST", `/api/v1/chats/${chat0}/messages`, {
        content: "zq-o-caption",
        attachments: otherUploads,
      }),
    );
    // The platform's voice in their chat stays: it is not theirs.
    await ok(
      a.api(0, "POST", `/internal/chat/chats/${chat0}/messages`, {
        content: "zq-p-system",
        data: { kind: "zq-p-data" },
      }),
    );
    // A report about them (kept, with the message it reported), and what they made: a report and a block.
    const [reported] = liveBefore.get(chat1)!;
    reportedMessageText = "zq-e-1-a";
    await ok(a.api(otherOf(1), "POST", "/api/v1/reports", { reason: "spam", note: "zq-o-note", message_id: reported }));
    const othersMessage = rowsOf<{ id: number }>(
      await db.execute(sql`select id::int as id from messages where content = 'zq-o-2'`),
    )[0]!.id;
    expect(chat2).toBeGreaterThan(0);
    await ok(
      a.api(PERSON, "POST", "/api/v1/reports", { reason: "scam", note: "zq-e-note", message_id: othersMessage }),
    );
    await ok(a.api(PERSON, "POST", `/api/v1/users/${otherOf(3)}/block`), [204]);
    // What the webhooks copied of them reached the receiver (and the outbox holds it).
    await receiver.waitFor("message.created", (d) => d.message.content === "zq-e-caption", 10_000);
    expect((await rowsHolding(db, "zq-e-")).length).toBeGreaterThan(50);
    expect(await store.keys()).toEqual(expect.arrayContaining([`photos/${personUploads[0]}`]));

    // The other side on instance B, and the person too.
    const other = await connect(b, otherOf(0));
    const person = await connect(b, PERSON);
    const answer = await fetch(`${a.baseUrl}/internal/chat/users/${PERSON}`, {
      method: "DELETE",
      headers: { "x-internal-token": a.internalToken },
    });
    expect(answer.status).toBe(202);
    expect((await person.waitClosed(10_000)).code).toBe(4003);
    const erased = await receiver.waitFor("user.erased", (d) => d.user_id === PERSON, 30_000);
    expect(erased.data).toEqual({ user_id: PERSON });

    // The other side heard each of the person's live messages deleted by the platform, on the other instance.
    for (const id of liveBefore.get(chat0)!) {
      const heard = (await other.waitFor(
        (f) => f.type === "message_deleted" && f.message.id === id,
        10_000,
      )) as Extract<ServerFrame, { type: "message_deleted" }>;
      expect(heard.message).toMatchObject({ content: "", attachments: [], deleted_by: "platform" });
    }
    expect(other.frames.filter((f) => f.type === "message_deleted" && f.message.id === b0)).toEqual([]);
    await other.close();

    // No row holds what they wrote, but the message the report about them keeps (in that report and its webhook).
    const left = await rowsHolding(db, "zq-e-");
    expect(left.filter((row) => !keptAboutThem(row))).toEqual([]);
    expect(left.filter((row) => row.startsWith("reports: "))).toHaveLength(1);
    // Everyone else's writing is all still there: the search finds what is there.
    const othersLeft = await rowsHolding(db, "zq-o-");
    for (const text of ["zq-o-0", "zq-o-caption", "zq-o-note", `zq-o-name-${2 * CHATS_EACH_WAY - 1}`]) {
      expect(
        othersLeft.some((row) =>
          row.startsWith("messages: ") || row.startsWith("people: ") || row.startsWith("reports: ")
            ? row.includes(text)
            : false,
        ),
        text,
      ).toBe(true);
    }
    expect((await rowsHolding(db, "zq-p-")).some((row) => row.startsWith("messages: "))).toBe(true);

    // Their photos are gone from the bucket and from `uploads`; the other side's stays.
    const keys = await store.keys();
    for (const id of personUploads)
      expect(
        keys.filter((key) => key.endsWith(`/${id}`)),
        id,
      ).toEqual([]);
    expect(keys).toEqual(expect.arrayContaining([`photos/${otherUploads[0]}`, `thumbs/${otherUploads[0]}`]));

    // Their messages stay as deleted, in every chat; the other's unread counts and totals agree with a recount.
    const theirs = rowsOf<{ deleted: boolean; by: string | null; content: string; cid: string | null }>(
      await db.execute(sql`
        select deleted_at is not null as deleted, deleted_by as by, content, client_msg_id as cid
        from messages where sender_id = ${PERSON}`),
    );
    expect(theirs).toHaveLength(2 * 2 * CHATS_EACH_WAY + 1);
    expect(theirs.every((m) => m.deleted && m.content === "" && m.cid === null)).toBe(true);
    // All deleted by the platform, the one they had deleted themselves too (CONTRACT §12).
    expect(theirs.filter((m) => m.by === "platform")).toHaveLength(theirs.length);
    const drift = rowsOf<{ user_id: number }>(
      await db.execute(sql`
        select p.user_id::int from chat_participants p
        where p.unread_count <> (select count(*) from messages m where m.chat_id = p.chat_id and m.sender_id <> p.user_id
                                 and m.deleted_at is null and m.id > coalesce(p.last_read_message_id, 0))
        union all
        select s.user_id::int from user_streams s
        where s.unread_total <> (select coalesce(sum(p.unread_count), 0) from chat_participants p where p.user_id = s.user_id)`),
    );
    expect(drift).toEqual([]);
    // Their stream is gone; the chats keep their shape for the other side.
    const stream = rowsOf<{ n: number }>(
      await db.execute(sql`select count(*)::int as n from user_events where user_id = ${PERSON}`),
    );
    expect(stream[0]!.n).toBe(0);
    const history = await ok(b.api(otherOf(5), "GET", `/api/v1/chats/${chatIds[5]}/messages`));
    expect(history.messages.map((m: any) => m.content).sort()).toEqual(["", "", "zq-o-5"]);
    const list = await ok(b.api(otherOf(5), "GET", "/api/v1/chats"));
    expect(list.chats[0].peer).toMatchObject({ id: PERSON, display_name: null, avatar_url: null });
    // The other side may still write to them, but no unread reminder goes to an erased person.
    await ok(b.api(otherOf(5), "POST", `/api/v1/chats/${chatIds[5]}/messages`, { content: "zq-o-after" }));
    const waiting = sql`select count(*)::int as n from chat_participants where user_id = ${PERSON} and unread_since is not null`;
    expect(rowsOf<{ n: number }>(await db.execute(waiting))[0]!.n).toBe(1);
    await db.execute(sql`select lc_notify_unread(0, 1000)`);
    expect(rowsOf<{ n: number }>(await db.execute(waiting))[0]!.n).toBe(0);
    const reminders = sql`select count(*)::int as n from webhook_deliveries
                          where type = 'notification.unread' and (data->>'user_id')::bigint = ${PERSON}`;
    expect(rowsOf<{ n: number }>(await db.execute(reminders))[0]!.n).toBe(0);
    // Nothing under way, as the operator sees it.
    const stats = await fetch(`${b.baseUrl}/internal/chat/ws/stats`, {
      headers: { "x-internal-token": b.internalToken },
    });
    expect(((await stats.json()) as { erasures: unknown }).erasures).toEqual({ pending: 0, oldest_pending_s: 0 });
    // They stay suspended, and nothing new of theirs is stored: no send, report, block or upload.
    for (const [method, path, body] of [
      ["POST", "/api/v1/reports", { reason: "spam", note: "zq-e-later", message_id: othersMessage }],
      ["POST", `/api/v1/users/${otherOf(4)}/block`, undefined],
      ["POST", "/api/v1/uploads", { content_type: "image/jpeg", size: 100 }],
    ] as const) {
      const later = await a.api(PERSON, method, path, body);
      expect([path, later.status, later.body?.error?.code]).toEqual([path, 403, "user_suspended"]);
    }
    const refused = await a.api(PERSON, "POST", `/api/v1/chats/${chat0}/messages`, { content: "zq-e-after" });
    expect(refused.status).toBe(403);
  });

  it("a second request is harmless: 202, nothing changes but a second user.erased", async () => {
    const before = rowsOf<{ n: number }>(await db.execute(sql`select count(*)::int as n from chat_events`))[0]!.n;
    const again = await fetch(`${b.baseUrl}/internal/chat/users/${PERSON}`, {
      method: "DELETE",
      headers: { "x-internal-token": b.internalToken },
    });
    expect(again.status).toBe(202);
    await receiver.until(() => receiver.ofType("user.erased").length === 2, 30_000, "a second user.erased");
    expect(rowsOf<{ n: number }>(await db.execute(sql`select count(*)::int as n from chat_events`))[0]!.n).toBe(before);
    expect((await rowsHolding(db, "zq-e-")).filter((row) => !keptAboutThem(row))).toEqual([]);
  });

  it("once the platform lifts the suspension the erasure made, the account may report and block again", async () => {
    // Still refused while the `erased` suspension stands (after the erasure completed)...
    const report = { reason: "spam", note: "back again", user_id: otherOf(1) };
    expect((await a.api(PERSON, "POST", "/api/v1/reports", report)).status).toBe(403);
    // ...and while the platform suspends them again for a reason of its own...
    expect((await a.api(0, "POST", `/internal/chat/users/${PERSON}/suspend`, { reason: "fraud review" })).status).toBe(
      204,
    );
    expect((await a.api(PERSON, "POST", "/api/v1/reports", report)).status).toBe(403);
    // ...and no longer once it is lifted: the account comes back empty, as any other.
    expect((await a.api(0, "DELETE", `/internal/chat/users/${PERSON}/suspend`)).status).toBe(204);
    expect((await a.api(PERSON, "POST", "/api/v1/reports", report)).status).toBe(201);
    expect((await a.api(PERSON, "POST", `/api/v1/users/${otherOf(4)}/block`)).status).toBe(204);
    expect((await a.api(PERSON, "DELETE", `/api/v1/users/${otherOf(4)}/block`)).status).toBe(204);
    // A new erasure request refuses them again at once.
    const again = await fetch(`${b.baseUrl}/internal/chat/users/${PERSON}`, {
      method: "DELETE",
      headers: { "x-internal-token": b.internalToken },
    });
    expect(again.status).toBe(202);
    const refused = await a.api(PERSON, "POST", `/api/v1/users/${otherOf(4)}/block`);
    expect([refused.status, refused.body?.error?.code]).toEqual([403, "user_suspended"]);
    await receiver.until(() => receiver.ofType("user.erased").length === 3, 30_000, "a third user.erased");
    expect(
      rowsOf<{ n: number }>(
        await db.execute(sql`select count(*)::int as n from reports where reporter_id = ${PERSON}`),
      )[0]!.n,
    ).toBe(0);
  });

  it.runIf(twoInstances)(
    "waits for a send that passed its check before the request, and erases what it stored",
    async () => {
      const racer = 8_200_500;
      const peer = 8_200_501;
      await ok(a.api(0, "PUT", `/internal/chat/listings/${listingOf(99)}`, listingBody(peer, 99)));
      const chat = await ok(a.api(0, "POST", "/internal/chat/chats", { listing_id: listingOf(99), buyer_id: racer }));
      // Test-only: this one message's insert waits 2 s, inside the send's transaction, after the suspension check.
      await db.execute(
        sql.raw(`
      create function test_slow_insert() returns trigger language plpgsql as $$
      begin if new.content = 'zq-e-race' then perform pg_sleep(2); end if; return new; end $$;
      create trigger test_slow_insert after insert on messages for each row execute function test_slow_insert();`),
      );
      // A session idle in a transaction opened before the request (a psql left open) is not waited for.
      const idle = new pg.Client({ connectionString: databaseUrl });
      await idle.connect();
      await idle.query("begin; select 1");
      try {
        const send = a.api(racer, "POST", `/api/v1/chats/${chat.id}/messages`, { content: "zq-e-race" });
        await until(
          async () =>
            rowsOf<{ n: number }>(
              await db.execute(sql`select count(*)::int as n from pg_stat_activity where query like '%lc_send_messages%'
                                 and state = 'active' and pid <> pg_backend_pid()`),
            )[0]!.n > 0,
          5_000,
          "the send under way",
          10,
        );
        const answer = await fetch(`${b.baseUrl}/internal/chat/users/${racer}`, {
          method: "DELETE",
          headers: { "x-internal-token": b.internalToken },
        });
        expect(answer.status).toBe(202);
        // The send passed its check before the request: it is stored (201), after the request.
        expect((await send).status).toBe(201);
        await receiver.waitFor("user.erased", (d) => d.user_id === racer, 30_000);
      } finally {
        await idle.query("rollback").catch(() => {});
        await idle.end();
        await db.execute(sql.raw("drop trigger test_slow_insert on messages; drop function test_slow_insert();"));
      }
      const raced = rowsOf<{ content: string; deleted_by: string | null }>(
        await db.execute(sql`select content, deleted_by from messages where sender_id = ${racer}`),
      );
      expect(raced).toEqual([{ content: "", deleted_by: "platform" }]);
      expect(await rowsHolding(db, "zq-e-race")).toEqual([]);
    },
  );

  it("refuses a bad id with 400 and a missing token with 401", async () => {
    const bad = await fetch(`${a.baseUrl}/internal/chat/users/nobody`, {
      method: "DELETE",
      headers: { "x-internal-token": a.internalToken },
    });
    expect(bad.status).toBe(400);
    const anonymous = await fetch(`${a.baseUrl}/internal/chat/users/${PERSON}`, { method: "DELETE" });
    expect(anonymous.status).toBe(401);
  });
});

const postgres = databaseTargets().find((target) => target.name === "postgres");

/**
 * An erasure interrupted by SIGKILL of the instance working it is taken up by another where its last committed
 * batch left it: every message erased once, one message_deleted each (none twice, none lost), the other side's
 * streams dense and their unread counts right.
 */
describe.skipIf(!postgres)("erasure interrupted", () => {
  const SELLER = 8_600_001;
  const CHATS = 20;
  const MESSAGES_PER_CHAT = 1_500;
  const cleanups: (() => Promise<void>)[] = [];
  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {});
  });

  it("is resumed by another instance after the first is killed half-way", async () => {
    const created = await postgres!.create();
    cleanups.push(created.drop);
    if (!("url" in created.options)) throw new Error("the PostgreSQL target has a URL");
    const url = created.options.url;
    const token = randomBytes(16).toString("hex");
    const first = await spawnChat({ databaseUrl: url, token, instanceId: "erase-first" });
    cleanups.push(() => first.kill());
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    cleanups.push(() => client.end());
    // The seller in 20 chats, 1,500 messages each, none read by the buyers: stored as the write functions would.
    await client.query(`
      insert into chats (listing_id, buyer_id, seller_id, seller_wrote)
      select 8600000 + i, 8610000 + i, ${SELLER}, true from generate_series(1, ${CHATS}) i;
      insert into chat_participants (chat_id, user_id, role, unread_count)
      select id, buyer_id, 'buyer', ${MESSAGES_PER_CHAT} from chats where seller_id = ${SELLER}
      union all select id, seller_id, 'seller', 0 from chats where seller_id = ${SELLER};
      insert into messages (chat_id, sender_id, content, client_msg_id)
      select c.id, ${SELLER}, 'zq-e-' || c.id || '-' || g, 'zq-e-cid-' || c.id || '-' || g
      from chats c, generate_series(1, ${MESSAGES_PER_CHAT}) g where c.seller_id = ${SELLER} order by c.id, g;
      insert into user_streams (user_id, last_event_id, unread_total)
      select buyer_id, 0, ${MESSAGES_PER_CHAT} from chats where seller_id = ${SELLER};`);
    const second = await spawnChat({ databaseUrl: url, token, instanceId: "erase-second" });
    cleanups.push(() => second.kill());
    const count = async (query: string) => Number((await client.query(query)).rows[0].n);
    const erasedSoFar = () => count(`select count(*) as n from messages where sender_id = ${SELLER} and content = ''`);

    const answer = await first.internal("DELETE", `/internal/chat/users/${SELLER}`);
    expect(answer.status).toBe(202);
    await until(async () => (await erasedSoFar()) >= 400, 30_000, "the first batches erased");
    await first.kill();
    const atKill = await erasedSoFar();
    expect(atKill).toBeLessThan(CHATS * MESSAGES_PER_CHAT);
    expect(await count(`select count(*) as n from erasures where completed_at is null`)).toBe(1);
    // The operator sees it under way, from any instance.
    const stats = await second.internal("GET", "/internal/chat/ws/stats");
    expect(stats.body.erasures).toMatchObject({ pending: 1, oldest_pending_s: expect.any(Number) });

    // The other instance finds it at its next poll and finishes it.
    await until(
      async () => (await count(`select count(*) as n from erasures where completed_at is not null`)) === 1,
      60_000,
      () => `the erasure completed by the second instance:\n${second.output()}`,
      100,
    );
    expect(await erasedSoFar()).toBe(CHATS * MESSAGES_PER_CHAT);
    expect(
      await count(`select count(*) as n from messages where sender_id = ${SELLER} and client_msg_id is not null`),
    ).toBe(0);
    // One message_deleted per message, to each buyer: nothing twice, nothing lost, each stream dense.
    expect(
      await count(`select count(*) as n from (select message_id from chat_events where type = 'message_deleted'
                   group by message_id having count(*) > 1) twice`),
    ).toBe(0);
    expect(await count(`select count(*) as n from chat_events where type = 'message_deleted'`)).toBe(
      CHATS * MESSAGES_PER_CHAT,
    );
    const streams = (
      await client.query(`
        select s.user_id, s.last_event_id::int as last, s.unread_total::int as total,
               (select count(*)::int from user_events u where u.user_id = s.user_id) as events,
               (select max(event_id)::int from user_events u where u.user_id = s.user_id) as high
        from user_streams s where s.user_id <> ${SELLER} order by 1`)
    ).rows;
    expect(streams).toHaveLength(CHATS);
    for (const stream of streams) {
      expect(stream).toMatchObject({
        last: MESSAGES_PER_CHAT,
        events: MESSAGES_PER_CHAT,
        high: MESSAGES_PER_CHAT,
        total: 0,
      });
    }
    expect(await count(`select coalesce(sum(unread_count), 0) as n from chat_participants`)).toBe(0);
    // Their own stream is gone.
    expect(await count(`select count(*) as n from user_events where user_id = ${SELLER}`)).toBe(0);
  }, 120_000);
});
