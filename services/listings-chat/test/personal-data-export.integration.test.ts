/**
 * A person's data (CONTRACT §12), `GET /internal/chat/users/:id/export`: JSON lines of their chats as the API shows
 * them to them, their reads, the messages they sent (photo paths; the stored text of a deleted one), the blocks and
 * reports they made, and nothing of anyone else's; a body cut short by a failure mid-stream; no lines for an
 * unknown person; 401 and 400. On PGlite always and on PostgreSQL when DATABASE_URL is set. Then, on PostgreSQL, a
 * seller with 100,000 chats exported by a real chat process whose resident memory is sampled: complete, exactly once
 * per chat while chats move and are opened during the export, in bounded memory; and a receiver that pauses stops
 * the queries (counted in this process).
 */
import { randomBytes } from "node:crypto";
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { get as httpGet, type IncomingMessage } from "node:http";
import { sql } from "drizzle-orm";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { EXPORT_PAGE_ROWS } from "../src/personal-data/export.ts";
import { type ChatProcess, metricValue, spawnChat } from "./support/chat-process.ts";
import { databaseTargets } from "./support/databases.ts";
import { startTestChat, type TestChat } from "./support/harness.ts";
import { storageTargets, type TestStorage } from "./support/storages.ts";
import { uploadPhoto } from "./support/upload-photo.ts";

const PERSON = 8_600_001;
/** The seller of the chat where the person buys. */
const SELLER = 8_600_002;
/** The buyers of the two chats where the person sells. */
const BUYER = 8_600_003;
const ARCHIVED_BUYER = 8_600_004;
const LISTING = 8_700_001;
const SOLD_LISTING = 8_700_003;

const isoTime = expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);

/** What the export shows of a chat: the chat as `POST /api/v1/chats` answers it (lc_chat_view). */
const CHAT_KEYS = ["id", "listing_id", "buyer_id", "seller_id", "created_at", "last_activity_at", "listing", "peer"];
const chatView = (listed: Record<string, unknown>) =>
  Object.fromEntries([...CHAT_KEYS, "archived"].map((key) => [key, listed[key]]));

async function ok(answer: Promise<{ status: number; body: any }>, status: number[] = [200, 201, 204]) {
  const got = await answer;
  if (!status.includes(got.status))
    throw new Error(`expected ${status.join("/")}, got ${got.status}: ${JSON.stringify(got.body)}`);
  return got.body;
}

/** The export as the monolith asks for it: with the internal token (or `token`, or none). */
function exportOf(baseUrl: string, user: number | string, token: string | null, signal?: AbortSignal) {
  return fetch(`${baseUrl}/internal/chat/users/${user}/export`, {
    headers: token === null ? {} : { authorization: `Bearer ${token}` },
    signal,
  });
}

const listingBody = (sellerId: number, title: string) => ({
  seller_id: sellerId,
  title,
  price_minor: 4_200,
  currency: "EUR",
  image_url: null,
  url: `https://marketplace.example/listings/${encodeURIComponent(title)}`,
  status: "active",
});

describe.each(databaseTargets())("the export of a person's data on $name", (target) => {
  let chat: TestChat;
  let store: TestStorage;
  const cleanups: (() => Promise<void>)[] = [];

  beforeAll(async () => {
    const created = await target.create();
    cleanups.push(created.drop);
    store = await storageTargets()
      .find((s) => s.name === "fs")!
      .create();
    cleanups.push(store.drop);
    chat = await startTestChat({
      database: created.options,
      storage: store.config,
      photos: { uploadMaxBytes: 5 * 1024 * 1024, concurrency: 2 },
      overrides: { sendsPerMinute: 100_000, photos: { sweepIntervalMs: 3_600_000 } },
    });
    cleanups.unshift(() => chat.stop());
  });

  afterAll(async () => {
    for (const cleanup of cleanups) await cleanup().catch(() => {});
  });

  it("writes exactly the person's chats, reads, messages, blocks and reports, and nothing of anyone else's", async () => {
    for (const [user, name] of [
      [PERSON, "zq-person"],
      [SELLER, "zq-seller"],
      [BUYER, null],
    ] as const) {
      await ok(chat.api(0, "PUT", `/internal/chat/users/${user}`, { display_name: name, avatar_url: null }));
    }
    await ok(chat.api(0, "PUT", `/internal/chat/listings/${LISTING}`, listingBody(SELLER, "zq lamp")));
    await ok(chat.api(0, "PUT", `/internal/chat/listings/${SOLD_LISTING}`, listingBody(PERSON, "zq chair")));
    // Where they buy (a registered listing), where they sell (an unregistered one), and one they sell and archive.
    const bought = await ok(chat.api(PERSON, "POST", "/api/v1/chats", { listing_id: LISTING, seller_id: SELLER }));
    const sold = await ok(chat.api(BUYER, "POST", "/api/v1/chats", { listing_id: 8_700_002, seller_id: PERSON }));
    const archived = await ok(
      chat.api(ARCHIVED_BUYER, "POST", "/api/v1/chats", { listing_id: SOLD_LISTING, seller_id: PERSON }),
    );
    const send = (user: number, chatId: number, body: Record<string, unknown>) =>
      ok(chat.api(user, "POST", `/api/v1/chats/${chatId}/messages`, body));

    const first = await send(PERSON, bought.id, { content: "zq-e first", client_msg_id: "zq-cid-1" });
    const theirs = await send(SELLER, bought.id, { content: "zq-o from the seller" });
    const edited = await send(PERSON, bought.id, { content: "zq-e before the edit" });
    await ok(chat.api(PERSON, "PATCH", `/api/v1/messages/${edited.id}`, { content: "zq-e after the edit" }));
    // The platform's voice in their chat: not theirs, not exported.
    await ok(
      chat.api(0, "POST", `/internal/chat/chats/${bought.id}/messages`, { content: "zq-p system", data: { k: 1 } }),
    );
    // Deleted by themselves and by the platform: their text is still stored (for moderation), so it is exported.
    const deleted = await send(PERSON, sold.id, { content: "zq-e deleted by me" });
    await ok(chat.api(PERSON, "DELETE", `/api/v1/messages/${deleted.id}`));
    const removed = await send(PERSON, archived.id, { content: "zq-e removed by the platform" });
    await ok(chat.api(0, "DELETE", `/internal/chat/messages/${removed.id}`, { reason: "zq-reason" }));
    const photo = await send(PERSON, sold.id, {
      content: "zq-e caption",
      attachments: [await uploadPhoto(chat, PERSON)],
    });
    await send(BUYER, sold.id, { content: "zq-o from the buyer", attachments: [await uploadPhoto(chat, BUYER)] });
    await send(ARCHIVED_BUYER, archived.id, { content: "zq-o from the other buyer" });
    // Reads: theirs in one chat (none in the others), and the other side's, which are not theirs.
    await ok(chat.api(PERSON, "POST", `/api/v1/chats/${bought.id}/read`, { message_id: theirs.id }));
    await ok(chat.api(SELLER, "POST", `/api/v1/chats/${bought.id}/read`, { message_id: edited.id }));
    await ok(chat.api(PERSON, "POST", `/api/v1/chats/${archived.id}/archive`));
    // Blocks and reports they made, and others' about them (kept out).
    await ok(chat.api(PERSON, "POST", `/api/v1/users/${BUYER}/block`));
    await ok(chat.api(ARCHIVED_BUYER, "POST", `/api/v1/users/${PERSON}/block`));
    const messageReport = await ok(
      chat.api(PERSON, "POST", "/api/v1/reports", { reason: "spam", note: "zq-note", message_id: theirs.id }),
    );
    const userReport = await ok(chat.api(PERSON, "POST", "/api/v1/reports", { reason: "scam", user_id: SELLER }));
    await ok(chat.api(SELLER, "POST", "/api/v1/reports", { reason: "harassment", user_id: PERSON }));

    const res = await exportOf(chat.baseUrl, PERSON, chat.internalToken);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/x-ndjson; charset=utf-8");
    const body = await res.text();
    expect(body.endsWith("\n")).toBe(true);
    const lines = body
      .trimEnd()
      .split("\n")
      .map((l) => JSON.parse(l));

    // Each chat as the API shows it to them: the list's fields (archived too), and the answer of opening it again.
    const listed = [
      ...(await ok(chat.api(PERSON, "GET", "/api/v1/chats"))).chats,
      ...(await ok(chat.api(PERSON, "GET", "/api/v1/chats?archived=1"))).chats,
    ].sort((x: { id: number }, y: { id: number }) => x.id - y.id);
    expect(listed.map((c: { id: number }) => c.id)).toEqual([bought.id, sold.id, archived.id]);
    expect(listed[2].archived).toBe(true);
    const reopened = await ok(chat.api(PERSON, "POST", "/api/v1/chats", { listing_id: LISTING, seller_id: SELLER }));
    expect(reopened).toEqual(chatView(listed[0]));
    // The messages they sent as the API shows them, oldest first, and what is stored of the deleted ones.
    const sentIn = async (chatId: number) =>
      (await ok(chat.api(PERSON, "GET", `/api/v1/chats/${chatId}/messages?limit=100`))).messages
        .filter((m: { sender_id: number | null }) => m.sender_id === PERSON)
        .reverse();
    const stored: Record<number, string> = {
      [deleted.id]: "zq-e deleted by me",
      [removed.id]: "zq-e removed by the platform",
    };
    const messages = [...(await sentIn(bought.id)), ...(await sentIn(sold.id)), ...(await sentIn(archived.id))].map(
      (m) => ({
        type: "message",
        ...m,
        ...(stored[m.id] === undefined ? {} : { stored_content: stored[m.id] }),
      }),
    );
    const blocks = (await ok(chat.api(PERSON, "GET", "/api/v1/blocks"))).blocks;

    expect(lines).toEqual([
      ...listed.map((c: Record<string, unknown>) => ({ type: "chat", ...chatView(c) })),
      { type: "read", chat_id: bought.id, message_id: theirs.id },
      ...messages,
      { type: "block", blocked_id: BUYER, created_at: blocks[0].created_at },
      {
        type: "report",
        id: messageReport.id,
        reason: "spam",
        note: "zq-note",
        target: { type: "message", id: theirs.id },
        message: theirs,
        created_at: isoTime,
      },
      {
        type: "report",
        id: userReport.id,
        reason: "scam",
        note: null,
        target: { type: "user", id: SELLER },
        message: null,
        created_at: isoTime,
      },
    ]);
    // What that means, spelled out: the edit as it is now, both deletes with their text, the photo's paths, and
    // not a word of the platform's or of anyone else's.
    expect(messages.map((m) => m.id)).toEqual([first.id, edited.id, deleted.id, photo.id, removed.id]);
    const exported = (id: number) => lines.find((l) => l.type === "message" && l.id === id);
    expect(exported(edited.id)).toMatchObject({ content: "zq-e after the edit", edited_at: isoTime });
    expect(exported(deleted.id)).toMatchObject({ content: "", deleted_by: "sender" });
    expect(exported(removed.id)).toMatchObject({ content: "", deleted_by: "platform" });
    const [attachment] = exported(photo.id).attachments;
    expect(attachment).toMatchObject({
      url: expect.stringMatching(/^\/api\/v1\/attachments\/.+/),
      thumb_url: expect.stringMatching(/^\/api\/v1\/attachments\/.+\?size=thumb$/),
    });
    expect(lines[0].listing).toMatchObject({ id: LISTING, title: "zq lamp" });
    expect(lines[0].peer).toEqual({ id: SELLER, display_name: "zq-seller", avatar_url: null });
    expect(lines[1].listing).toBeNull();
    // The other side's words are there only inside the report they made of one (as they reported it).
    expect(JSON.stringify(lines.filter((l) => l.type !== "report"))).not.toMatch(/zq-o|zq-p|zq-reason/);
  });

  it("cuts the body short when a query fails mid-stream: never a body that looks complete", async () => {
    // The reports are read last: with their table away, the chats, messages and blocks of the person of the first
    // test are written, then the stream errors.
    const db = chat.server.database.db;
    const quiet = vi.spyOn(console, "error").mockImplementation(() => {});
    await db.execute(sql`alter table reports rename to reports_away`);
    try {
      const res = await exportOf(chat.baseUrl, PERSON, chat.internalToken);
      expect(res.status).toBe(200);
      const reader = res.body!.getReader();
      let received = "";
      const failure = await (async () => {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) return undefined;
          received += new TextDecoder().decode(value);
        }
      })().catch((error: Error) => error);
      expect(failure).toBeInstanceOf(Error);
      // What arrived before the cut is whole lines of theirs, no report and no error's text. (On PGlite, whose
      // queries may all resolve before the socket's first write goes out, that can be nothing.)
      expect(received).not.toMatch(/error|reports_away/i);
      const types = received
        .slice(0, received.lastIndexOf("\n") + 1)
        .split("\n")
        .filter(Boolean)
        .map((l) => JSON.parse(l).type);
      expect(types).not.toContain("report");
      if (target.name === "postgres") expect(types).toContain("block");
    } finally {
      await db.execute(sql`alter table reports_away rename to reports`);
      quiet.mockRestore();
    }
  });

  it("answers 200 and no lines for a person it does not know, 401 without the token, 400 for a bad id", async () => {
    const unknown = await exportOf(chat.baseUrl, 8_699_999, chat.internalToken);
    expect(unknown.status).toBe(200);
    expect(await unknown.text()).toBe("");
    const noToken = await exportOf(chat.baseUrl, PERSON, null);
    expect(noToken.status).toBe(401);
    expect(await noToken.text()).not.toContain("zq-");
    const wrongToken = await exportOf(chat.baseUrl, PERSON, "not-the-token");
    expect(wrongToken.status).toBe(401);
    for (const bad of ["abc", "0", "-1", "1.5"]) {
      const res = await exportOf(chat.baseUrl, bad, chat.internalToken);
      expect(res.status, bad).toBe(400);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe("validation_failed");
    }
  });
});

const postgres = databaseTargets().find((t) => t.name === "postgres");
const BIG_SELLER = 50_000_000;
const BIG_CHATS = 100_000;

/**
 * One seller with BIG_CHATS chats, each with its own buyer (BIG_SELLER + i), a registered listing and named people
 * (so that each chat line is as long as a marketplace's), and two messages (the buyer's, then the seller's, of
 * about 500 characters); the seller has read the buyer's message in every other chat. Set-based SQL in one
 * transaction (as support/big-account.ts, without the event streams: the export does not read them), then VACUUM
 * ANALYZE, so that the activity index is read index-only, as on a database that autovacuum keeps.
 */
async function seedBigSeller(url: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query("set statement_timeout = 0");
    await client.query("begin");
    const params = [BIG_SELLER, BIG_CHATS];
    await client.query(
      `insert into chats (listing_id, buyer_id, seller_id, created_at, last_activity_at, buyer_wrote, seller_wrote)
       select $1::bigint * 10 + i, $1::bigint + i, $1::bigint, now() - make_interval(mins => $2::int - i + 1),
              now() - make_interval(mins => $2::int - i), true, true
       from generate_series(1, $2::int) as i`,
      params,
    );
    await client.query(
      `insert into messages (chat_id, sender_id, content, created_at)
       select c.id, case when n = 1 then c.buyer_id else c.seller_id end,
              'seeded message ' || n || ' of chat ' || c.id || repeat(' lorem ipsum dolor', 28),
              c.created_at + make_interval(secs => n)
       from chats c cross join generate_series(1, 2) as n
       where c.seller_id = $1
       order by c.id, n`,
      [BIG_SELLER],
    );
    await client.query(
      `update chats c set last_message_id = m.last_id from
         (select chat_id, max(id) as last_id from messages group by chat_id) m
       where c.id = m.chat_id`,
    );
    await client.query(
      `insert into chat_participants (chat_id, user_id, role, last_activity_at, last_read_message_id)
       select c.id, c.buyer_id, 'buyer', c.last_activity_at, c.last_message_id from chats c where c.seller_id = $1
       union all
       select c.id, c.seller_id, 'seller', c.last_activity_at,
              case when c.id % 2 = 0 then (select min(m.id) from messages m where m.chat_id = c.id) end
       from chats c where c.seller_id = $1`,
      [BIG_SELLER],
    );
    await client.query(
      `insert into listings (id, seller_id, title, price_minor, currency, image_url, url, status, chat_json)
       select l.*, lc_chat_listing_text(l.id, l.title, l.price_minor, l.currency, l.image_url, l.url, l.status)
       from (select c.listing_id as id, c.seller_id, 'Seeded listing ' || c.listing_id as title,
                    1000 + c.listing_id % 90000 as price_minor, 'EUR' as currency,
                    'https://img.marketplace.example/' || c.listing_id || '.jpg' as image_url,
                    'https://marketplace.example/listings/' || c.listing_id as url, 'active' as status
             from chats c where c.seller_id = $1) l`,
      [BIG_SELLER],
    );
    await client.query(
      `insert into people (user_id, display_name, avatar_url, peer_json)
       select p.*, lc_peer_text(p.user_id, p.display_name, p.avatar_url)
       from (select u as user_id, 'Seeded user ' || u as display_name,
                    'https://img.marketplace.example/u/' || u || '.jpg' as avatar_url
             from generate_series($1::bigint, $1::bigint + $2::int) as u) p`,
      params,
    );
    await client.query("commit");
    await client.query("vacuum analyze");
  } finally {
    await client.end();
  }
}

/** Resident memory of `chat`, sampled every 50 ms until `stop()`: the highest seen. */
function sampleRss(chat: ChatProcess) {
  let peak = chat.rssBytes();
  const timer = setInterval(() => {
    peak = Math.max(peak, chat.rssBytes());
  }, 50);
  return {
    peak: () => peak,
    stop: () => clearInterval(timer),
  };
}

const MiB = 1024 * 1024;
/**
 * How much the export may grow the process's resident memory. What it holds is one page (500 rows, their lines and
 * their chunk: a few MB at most), and what V8 lets become garbage before a collection (a young generation of up to
 * 3 × 16 MiB semi-spaces, and some old-generation growth): 64 MiB, against an export of over 130 MB, which an
 * export held in memory (as strings: twice that) could not stay under.
 */
const RSS_GROWTH_BOUND = 64 * MiB;

describe.runIf(postgres)("a big account's export on PostgreSQL, in bounded memory", () => {
  let chat: ChatProcess;
  let url: string;
  const token = randomBytes(24).toString("hex");
  const cleanups: (() => Promise<void>)[] = [];

  beforeAll(async () => {
    const created = await postgres!.create();
    cleanups.push(created.drop);
    if (!("url" in created.options)) throw new Error("the PostgreSQL target has a URL");
    url = created.options.url;
    // The process migrates the new database as it starts; the seller is seeded while it waits.
    chat = await spawnChat({ databaseUrl: url, token });
    cleanups.unshift(() => chat.stop());
    await seedBigSeller(url);
    // One small export first, so that what is measured is the export, not the first request's code and connections.
    const warm = await exportOf(chat.baseUrl, BIG_SELLER + 1, token);
    expect((await warm.text()).split("\n").filter(Boolean)).toHaveLength(3);
  }, 120_000);

  afterAll(async () => {
    for (const cleanup of cleanups) await cleanup().catch(() => {});
  });

  /** Select statements the process ran (its query metric): each page of the export is one, with a few of its own. */
  async function selects(): Promise<number> {
    const res = await fetch(`${chat.baseUrl}/metrics`, { headers: { authorization: `Bearer ${token}` } });
    return metricValue(await res.text(), "listings_chat_db_query_duration_seconds_count", { operation: "select" });
  }

  it("exports 100,000 chats and their messages by a chat process, completely and once each while chats move, in bounded memory", async () => {
    const before = chat.rssBytes();
    const rss = sampleRss(chat);
    const selectsBefore = await selects();
    const started = performance.now();
    const res = await exportOf(chat.baseUrl, BIG_SELLER, token);
    expect(res.status).toBe(200);
    // Each chat id seen once, and the lines counted, as they stream by: nothing kept but counts.
    const chatSeen = new Uint8Array(BIG_CHATS + 2);
    let repeats = 0;
    let bytes = 0;
    const counts: Record<string, number> = {};
    const newMessages: string[] = [];
    let rest = "";
    let moved = false;
    let lastChat = 0;
    let openedChat = 0;
    const decoder = new TextDecoder();
    for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
      bytes += chunk.length;
      const parts = (rest + decoder.decode(chunk, { stream: true })).split("\n");
      rest = parts.pop()!;
      for (const text of parts) {
        const line = JSON.parse(text);
        counts[line.type] = (counts[line.type] ?? 0) + 1;
        if (line.type === "chat") {
          if (chatSeen[line.id]) repeats += 1;
          chatSeen[line.id] = 1;
        }
        if (line.type === "message" && line.content.startsWith("zq-")) newMessages.push(line.content);
      }
      if (!moved) {
        // With the export under way (its first page written, its last far ahead): activity moves in its first
        // chat and in its last, a new message lands in the last, and a new chat is opened. Paging by activity
        // would now miss or repeat some; by chat id, every chat is written once, and what lands ahead is in it.
        moved = true;
        const [first, last] = (
          await queryRows<{ id: string }>(url, "select min(id) as id from chats union all select max(id) from chats")
        ).map((r) => Number(r.id)) as [number, number];
        lastChat = last;
        await ok(chat.api(BIG_SELLER + 1, "POST", `/api/v1/chats/${first}/messages`, { content: "zq-b first" }));
        await ok(chat.api(BIG_SELLER + BIG_CHATS, "POST", `/api/v1/chats/${last}/messages`, { content: "zq-b" }));
        await ok(chat.api(BIG_SELLER, "POST", `/api/v1/chats/${last}/messages`, { content: "zq-s last" }));
        const opened = await ok(
          chat.api(BIG_SELLER + BIG_CHATS + 1, "POST", "/api/v1/chats", { listing_id: 1, seller_id: BIG_SELLER }),
        );
        openedChat = opened.id;
      }
    }
    const seconds = (performance.now() - started) / 1_000;
    rss.stop();
    const queries = (await selects()) - selectsBefore;
    const peak = rss.peak();
    console.info(
      `export of ${BIG_CHATS} chats: ${(bytes / 1e6).toFixed(1)} MB, ${JSON.stringify(counts)}, ${seconds.toFixed(1)} s, ` +
        `${queries} selects; RSS ${(before / MiB).toFixed(1)} MiB before, ${(peak / MiB).toFixed(1)} MiB peak ` +
        `(+${((peak - before) / MiB).toFixed(1)} MiB)`,
    );

    expect(openedChat).toBe(lastChat + 1);
    expect(counts).toEqual({ chat: BIG_CHATS + 1, message: BIG_CHATS + 1, read: BIG_CHATS / 2 });
    expect(repeats).toBe(0);
    expect(chatSeen.subarray(1, BIG_CHATS + 2).every((seen) => seen === 1)).toBe(true);
    // The seller's new message, in a chat ahead of the cursor, is there; the buyers' are not theirs.
    expect(newMessages).toEqual(["zq-s last"]);
    expect(bytes).toBeGreaterThan(130e6);
    expect(peak - before).toBeLessThan(RSS_GROWTH_BOUND);
  }, 60_000);

  it("a receiver that goes away mid-export leaves no socket, descriptor or running query behind in the chat process", async () => {
    /** The process's sockets: the inodes of its descriptors that are sockets. */
    const socketsOf = () =>
      readdirSync(`/proc/${chat.pid}/fd`).flatMap((fd) => {
        try {
          const inode = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${chat.pid}/fd/${fd}`))?.[1];
          return inode ? [inode] : [];
        } catch {
          return []; // closed while listed
        }
      });
    /** The inode of the process's end of the TCP connection from the test's `clientPort` (IPv4 or IPv6 table). */
    const serverEndOf = (clientPort: number) => {
      for (const table of ["tcp", "tcp6"]) {
        for (const row of readFileSync(`/proc/${chat.pid}/net/${table}`, "utf8").split("\n").slice(1)) {
          const cols = row.trim().split(/\s+/);
          const [local, remote, inode] = [cols[1], cols[2], cols[9]];
          if (!local || !remote || !inode) continue;
          if (
            Number.parseInt(local.split(":")[1]!, 16) === chat.port &&
            Number.parseInt(remote.split(":")[1]!, 16) === clientPort
          ) {
            return inode;
          }
        }
      }
      throw new Error(`no connection from port ${clientPort} to the process`);
    };
    /** The statements running in its database, ours aside. */
    const running = async () =>
      Number(
        (
          await queryRows<{ n: string }>(
            url,
            "select count(*) as n from pg_stat_activity where datname = current_database() and state = 'active' and backend_type = 'client backend' and pid <> pg_backend_pid()",
          )
        )[0]?.n,
      );
    const before = chat.fds();
    for (let round = 0; round < 3; round += 1) {
      // A connection of its own (`agent: false`, no keep-alive pool), followed by the inode of its end in the process.
      const req = httpGet(`${chat.baseUrl}/internal/chat/users/${BIG_SELLER}/export`, {
        headers: { authorization: `Bearer ${token}` },
        agent: false,
      });
      const res = await new Promise<IncomingMessage>((resolve, reject) =>
        req.on("response", resolve).on("error", reject),
      );
      expect(res.statusCode).toBe(200);
      const serverEnd = serverEndOf(res.socket.localPort!);
      let read = 0;
      let openMidExport = false;
      for await (const chunk of res as AsyncIterable<Buffer>) {
        read += chunk.length;
        if (read < 1e6) continue;
        // Its end is open in the process while the export runs; leaving the loop destroys the response: the
        // receiver goes away mid-export.
        openMidExport = socketsOf().includes(serverEnd);
        break;
      }
      expect(read).toBeGreaterThanOrEqual(1e6);
      expect(openMidExport).toBe(true);
      req.destroy();
      // The process closes its end, its page query ends, and it holds no more descriptors than before.
      await vi.waitFor(
        async () => {
          expect(socketsOf()).not.toContain(serverEnd);
          expect(chat.fds()).toBeLessThanOrEqual(before);
          expect(await running()).toBe(0);
        },
        { timeout: 5_000, interval: 50 },
      );
    }
    console.info(`aborted exports: ${before} fds before; ${chat.fds()} fds, ${socketsOf().length} sockets after 3`);
    // And the process still exports (a buyer of the big seller: their one chat, whatever they wrote in it).
    const after = await exportOf(chat.baseUrl, BIG_SELLER + 1, token);
    expect(after.status).toBe(200);
    const lines = (await after.text())
      .split("\n")
      .filter(Boolean)
      .map((line) => JSON.parse(line));
    expect(lines.filter((line) => line.type === "chat")).toHaveLength(1);
  }, 60_000);

  it("a receiver that pauses stops the queries (nothing read ahead but what the sockets buffer), and one that goes away ends them", async () => {
    // In this process, where the queries of the read pool can be counted exactly: nothing else uses it here.
    const server = await startTestChat({ database: { url }, internalToken: token });
    try {
      const pool = (server.server.database.reads as unknown as { $client: pg.Pool }).$client;
      let pageQueries = 0;
      const query = pool.query.bind(pool) as (...args: unknown[]) => unknown;
      pool.query = ((...args: unknown[]) => {
        pageQueries += 1;
        return query(...args);
      }) as typeof pool.query;
      const before = process.memoryUsage().rss;
      let peak = before;
      const sampler = setInterval(() => {
        peak = Math.max(peak, process.memoryUsage().rss);
      }, 50);
      const controller = new AbortController();
      const res = await exportOf(server.baseUrl, BIG_SELLER, token, controller.signal);
      const reader = res.body!.getReader();
      expect((await reader.read()).done).toBe(false);
      // Two seconds without reading, the count sampled every 250 ms: it rises while the sockets' buffers fill
      // (the kernel's, both ways), then stays.
      const series: number[] = [];
      for (let i = 0; i < 8; i += 1) {
        await new Promise((resolve) => setTimeout(resolve, 250));
        series.push(pageQueries);
      }
      clearInterval(sampler);
      console.info(
        `paused receiver: page queries ${series.join(" ")} (the whole export makes over ${(2 * BIG_CHATS) / EXPORT_PAGE_ROWS}); ` +
          `RSS +${((peak - before) / MiB).toFixed(1)} MiB`,
      );
      // The last second of the pause: not one query. And what was read ahead is a few percent of the export.
      expect(series.at(-1)).toBe(series.at(-5));
      expect(series.at(-1)!).toBeLessThan((2 * BIG_CHATS) / EXPORT_PAGE_ROWS / 10);
      expect(peak - before).toBeLessThan(RSS_GROWTH_BOUND);
      // Gone: the stream is cancelled, and not one page is asked for after it.
      const paused = pageQueries;
      controller.abort();
      await reader.closed.catch(() => {});
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      expect(pageQueries).toBe(paused);
    } finally {
      await server.stop();
    }
  }, 30_000);
});

async function queryRows<T>(url: string, text: string): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query(text)).rows as T[];
  } finally {
    await client.end();
  }
}
