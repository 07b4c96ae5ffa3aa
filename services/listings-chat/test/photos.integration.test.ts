/**
 * Photos (CONTRACT §11) end to end at the chat service, on both storages: the development folder (STORAGE=fs)
 * and a real S3 server that checks SigV4 (support/s3.ts: CI's, or one started here), and on PGlite and, when
 * DATABASE_URL is set, PostgreSQL. The storage itself refuses what the presigned PUT did not sign; what comes
 * out has no EXIF, GPS or XMP left (read back with exifr, not with sharp, the library under test); hostile
 * files get 422 and the instance goes on; outsiders and expired links are refused; the sweeper leaves no
 * object of an orphan or of a deleted message in the storage.
 */

import { renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { ServerFrame } from "@listings-chat/shared";
import { sql } from "drizzle-orm";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { rowsOf } from "../src/events/log.ts";
import type { StorageConfig } from "../src/media/open-storage.ts";
import { databaseTargets } from "./support/databases.ts";
import { connect, startTestChat, type TestChat } from "./support/harness.ts";
import {
  decompressionBomb,
  FIXTURE_GPS,
  jpegWithGps,
  pngWithMetadata,
  readMetadata,
  textNamedJpeg,
  truncatedJpeg,
  webpWithMetadata,
  zeroBytes,
} from "./support/images.ts";
import { storageTargets } from "./support/storages.ts";

const BUYER = 7_100_001;
const SELLER = 7_100_002;
const OUTSIDER = 7_100_003;

const combinations = databaseTargets().flatMap((database) =>
  storageTargets()
    // The fs storage's SQL is the same as s3's: once, on PGlite, is enough for it.
    .filter((storage) => storage.name === "s3" || database.name === "pglite")
    .map((storage) => ({ database, storage, name: `${storage.name} on ${database.name}` })),
);

describe.each(combinations)("photos: $name", ({ database, storage }) => {
  let chat: TestChat;
  let chatId: number;
  let keys: () => Promise<string[]>;
  let removeObject: (key: string) => Promise<void>;
  let storageConfig: StorageConfig;
  const cleanups: (() => Promise<void>)[] = [];

  beforeAll(async () => {
    const db = await database.create();
    cleanups.push(db.drop);
    const store = await storage.create();
    cleanups.push(store.drop);
    keys = store.keys;
    removeObject = store.remove;
    storageConfig = store.config;
    chat = await startTestChat({
      database: db.options,
      storage: store.config,
      photos: { uploadMaxBytes: 10 * 1024 * 1024, concurrency: 2 },
      // Links of 2 s, so that one can be seen expire; sweeps only when the test asks.
      // At most 3 photos waiting for a turn (2 at once): a send of 6 finds the queue full.
      overrides: { photos: { linkTtlS: 2, sweepIntervalMs: 3_600_000, maxWaitingPhotos: 3 }, sendsPerMinute: 10_000 },
    });
    cleanups.unshift(() => chat.stop());
    const opened = await chat.api(BUYER, "POST", "/api/v1/chats", { listing_id: 1, seller_id: SELLER });
    chatId = opened.body.id;
  });

  afterAll(async () => {
    for (const cleanup of cleanups) await cleanup().catch(() => {});
  });

  /** The storage's URL as a browser would reach it: S3's directly, the development folder's through the gateway's hop. */
  const storageFetch = (url: string, init: RequestInit = {}) => {
    if (/^https?:/.test(url)) return fetch(url, init);
    const headers = new Headers(init.headers);
    headers.set("x-internal-token", chat.internalToken);
    return fetch(`${chat.baseUrl}${url}`, { ...init, headers });
  };

  async function upload(userId: number, bytes: Buffer, contentType: string, declared = bytes.length) {
    const grant = await chat.api(userId, "POST", "/api/v1/uploads", { content_type: contentType, size: declared });
    expect(grant.status).toBe(201);
    const put = await storageFetch(grant.body.url, {
      method: "PUT",
      headers: grant.body.headers,
      body: new Uint8Array(bytes),
    });
    return { id: grant.body.upload_id as string, put, grant: grant.body };
  }

  async function sendPhotos(userId: number, ids: string[], content = "", clientMsgId?: string) {
    return chat.api(userId, "POST", `/api/v1/chats/${chatId}/messages`, {
      content,
      attachments: ids,
      ...(clientMsgId ? { client_msg_id: clientMsgId } : {}),
    });
  }

  /** The bytes behind a photo's API path, followed as a browser follows the 302. */
  async function fetchPhoto(userId: number, path: string) {
    const res = await fetch(`${chat.baseUrl}${path}`, {
      headers: { "x-internal-token": chat.internalToken, "x-user-id": String(userId) },
      redirect: "manual",
    });
    expect(res.status).toBe(302);
    const location = res.headers.get("location")!;
    const bytes = await storageFetch(location);
    expect(bytes.status).toBe(200);
    return { bytes: Buffer.from(await bytes.arrayBuffer()), location, contentType: bytes.headers.get("content-type") };
  }

  it("a JPEG with GPS tags reaches the other side stripped, turned upright and thumbnailed", async () => {
    const original = await jpegWithGps({ width: 1200, height: 800, orientation: 6 });
    expect((await readMetadata(original)).gps).toMatchObject({ latitude: expect.closeTo(FIXTURE_GPS.latitude, 3) });
    const seller = await connect(chat, SELLER);
    try {
      const { id, put } = await upload(BUYER, original, "image/jpeg");
      expect(put.status).toBe(200);
      const sent = await sendPhotos(BUYER, [id], "the back side", "photo-1");
      expect(sent.status).toBe(201);
      const message = sent.body;
      expect(message.kind).toBe("image");
      expect(message.content).toBe("the back side");
      // Orientation 6: the 1200 × 800 pixels are shown 800 wide and 1200 high.
      expect(message.attachments).toEqual([
        {
          id,
          content_type: "image/jpeg",
          width: 800,
          height: 1200,
          size: expect.any(Number),
          url: `/api/v1/attachments/${id}`,
          thumb_url: `/api/v1/attachments/${id}?size=thumb`,
        },
      ]);
      const heard = await seller.waitFor(
        (f): f is Extract<ServerFrame, { type: "new_message" }> =>
          f.type === "new_message" && f.message.id === message.id,
      );
      expect(heard.message.attachments).toEqual(message.attachments);

      for (const userId of [BUYER, SELLER]) {
        const photo = await fetchPhoto(userId, message.attachments[0].url);
        expect(photo.contentType).toBe("image/jpeg");
        expect(photo.bytes.length).toBe(message.attachments[0].size);
        const meta = await readMetadata(photo.bytes);
        expect(meta).toEqual({ gps: undefined, exif: undefined, xmp: false });
        expect(await sharp(photo.bytes).metadata()).toMatchObject({ format: "jpeg", width: 800, height: 1200 });
      }
      const thumb = await fetchPhoto(SELLER, message.attachments[0].thumb_url);
      const thumbMeta = await sharp(thumb.bytes).metadata();
      expect(Math.max(thumbMeta.width!, thumbMeta.height!)).toBe(320);
      expect(thumbMeta.height).toBeGreaterThan(thumbMeta.width!);
      expect(await readMetadata(thumb.bytes)).toEqual({ gps: undefined, exif: undefined, xmp: false });

      // The bytes as uploaded, with their GPS tags, are gone from the storage; only the stripped copies stay.
      expect(await keys()).toEqual(expect.arrayContaining([`photos/${id}`, `thumbs/${id}`]));
      expect(await keys()).not.toContain(`uploads/${id}`);

      // A retry of the same send is answered with the stored message, not stored or processed again.
      const again = await sendPhotos(BUYER, [id], "the back side", "photo-1");
      expect(again.status).toBe(200);
      expect(again.body.id).toBe(message.id);
      // The JSON form of the link, for a page that puts it in an <img>.
      const link = await fetch(`${chat.baseUrl}${message.attachments[0].url}`, {
        headers: { "x-internal-token": chat.internalToken, "x-user-id": String(SELLER), accept: "application/json" },
      });
      expect(link.status).toBe(200);
      expect(await link.json()).toEqual({ url: expect.any(String), expires_in: 2 });
    } finally {
      seller.close();
    }
  });

  it("PNG and WebP keep their format and lose their metadata", async () => {
    for (const [bytes, type, format] of [
      [await pngWithMetadata(), "image/png", "png"],
      [await webpWithMetadata(), "image/webp", "webp"],
    ] as const) {
      const before = await readMetadata(bytes);
      expect(before.gps).toBeDefined();
      const { id } = await upload(SELLER, bytes, type);
      const sent = await sendPhotos(SELLER, [id]);
      expect(sent.status).toBe(201);
      expect(sent.body.attachments[0].content_type).toBe(type);
      const photo = await fetchPhoto(BUYER, sent.body.attachments[0].url);
      expect(photo.contentType).toBe(type);
      expect((await sharp(photo.bytes).metadata()).format).toBe(format);
      expect(await readMetadata(photo.bytes)).toEqual({ gps: undefined, exif: undefined, xmp: false });
    }
  });

  it("one message carries several photos, and an empty text is allowed only with photos", async () => {
    const ids = [];
    for (let i = 0; i < 3; i += 1)
      ids.push((await upload(BUYER, await jpegWithGps({ width: 400 + i, height: 300 }), "image/jpeg")).id);
    const sent = await sendPhotos(BUYER, ids);
    expect(sent.status).toBe(201);
    expect(sent.body.attachments.map((a: { id: string }) => a.id)).toEqual(ids);
    const page = await chat.api(SELLER, "GET", `/api/v1/chats/${chatId}/messages?limit=1`);
    expect(page.body.messages[0].attachments).toEqual(sent.body.attachments);
    const empty = await chat.api(BUYER, "POST", `/api/v1/chats/${chatId}/messages`, { content: " ", attachments: [] });
    expect(empty.status).toBe(400);
    const tooMany = await sendPhotos(
      BUYER,
      Array.from({ length: 11 }, (_, i) => `id${i}`),
    );
    expect(tooMany.status).toBe(400);
  });

  it("hostile files are refused with 422 attachment_invalid, and the instance goes on", async () => {
    const cases: [string, Buffer, RegExp][] = [
      ["text named .jpg", await textNamedJpeg(), /not JPEG/],
      ["truncated JPEG", await truncatedJpeg(), /could not be (read|decoded)/],
      ["30,000 × 30,000 bomb", await decompressionBomb(), /pixels|could not be read/],
      ["zero bytes", await zeroBytes(), /empty/],
    ];
    for (const [name, bytes, reason] of cases) {
      const type = name.includes("bomb") ? "image/png" : "image/jpeg";
      const { id, put } = await upload(BUYER, bytes, type);
      expect(put.status, name).toBe(200);
      const sent = await sendPhotos(BUYER, [id], "look");
      expect(sent.status, name).toBe(422);
      expect(sent.body.error.code, name).toBe("attachment_invalid");
      expect(sent.body.error.message, name).toMatch(reason);
      expect(sent.body.error.message, name).toContain(id);
    }
    // Nothing was stored, and the instance still answers and stores.
    const health = await fetch(`${chat.baseUrl}/health`);
    expect(health.status).toBe(200);
    const text = await chat.api(BUYER, "POST", `/api/v1/chats/${chatId}/messages`, { content: "still here" });
    expect(text.status).toBe(201);
  });

  it("the storage refuses a PUT of another type, of more bytes, or after the URL expired", async () => {
    const bytes = await jpegWithGps({ width: 300, height: 200 });
    const grant = await chat.api(BUYER, "POST", "/api/v1/uploads", { content_type: "image/jpeg", size: bytes.length });
    const put = (headers: Record<string, string>, body: Buffer) =>
      storageFetch(grant.body.url, { method: "PUT", headers, body: new Uint8Array(body) });
    expect((await put({ "content-type": "image/png" }, bytes)).status).toBe(403);
    expect((await put(grant.body.headers, Buffer.concat([bytes, Buffer.from([0])]))).status).toBe(403);
    expect((await put(grant.body.headers, bytes.subarray(1))).status).toBe(403);
    const forged = grant.body.url.replace(/(s=|X-Amz-Signature=)./, "$10");
    expect(
      (await storageFetch(forged, { method: "PUT", headers: grant.body.headers, body: new Uint8Array(bytes) })).status,
    ).toBe(403);
    // Nothing of those arrived: the send finds the upload incomplete.
    const sent = await sendPhotos(BUYER, [grant.body.upload_id]);
    expect(sent.status).toBe(422);
    expect(sent.body.error.message).toMatch(/not complete/);
  });

  it("uploads are checked as the sender's, unsent, and of a declared type and size", async () => {
    const bytes = await jpegWithGps({ width: 300, height: 200 });
    const theirs = await upload(SELLER, bytes, "image/jpeg");
    const notMine = await sendPhotos(BUYER, [theirs.id]);
    expect(notMine.status).toBe(422);
    expect(notMine.body.error.message).toMatch(/not one of your uploads/);
    const unknown = await sendPhotos(BUYER, ["no-such-upload"]);
    expect(unknown.status).toBe(422);
    const twice = await sendPhotos(SELLER, [theirs.id, theirs.id]);
    expect(twice.status).toBe(422);
    expect((await sendPhotos(SELLER, [theirs.id])).status).toBe(201);
    const resent = await sendPhotos(SELLER, [theirs.id]);
    expect(resent.status).toBe(422);
    expect(resent.body.error.message).toMatch(/already sent/);

    for (const body of [
      { content_type: "image/gif", size: 10 },
      { content_type: "image/jpeg", size: 10 * 1024 * 1024 + 1 },
      { content_type: "image/jpeg", size: -1 },
      { content_type: "image/jpeg" },
    ]) {
      const refused = await chat.api(BUYER, "POST", "/api/v1/uploads", body);
      expect(refused.status, JSON.stringify(body)).toBe(400);
      expect(refused.body.error.code).toBe("validation_failed");
    }
  });

  it("an upload made due (its sender being erased) or claimed by a sweep cannot be sent: its objects may be gone", async () => {
    // Processed already (an earlier send of it was refused after processing), and not yet.
    for (const processed of [true, false]) {
      for (const dueIn of ["0 seconds", "10 minutes"]) {
        const { id } = await upload(BUYER, await jpegWithGps({ width: 300, height: 201 }), "image/jpeg");
        await chat.server.database.db.execute(sql`
          UPDATE uploads SET sweep_after = now() + ${dueIn}::interval,
            processed_at = CASE WHEN ${processed} THEN now() END, width = 300, height = 201, stored_size = 1000
          WHERE id = ${id}`);
        const refused = await sendPhotos(BUYER, [id]);
        expect([processed, dueIn, refused.status]).toEqual([processed, dueIn, 422]);
        expect(refused.body.error.message).toMatch(/expired \(uploads are kept 24 hours\) or was removed/);
      }
    }
  });

  it("two sends racing for one upload: exactly one gets it", async () => {
    const { id } = await upload(BUYER, await jpegWithGps({ width: 320, height: 240 }), "image/jpeg");
    const answers = await Promise.all([sendPhotos(BUYER, [id], "a"), sendPhotos(BUYER, [id], "b")]);
    expect(answers.map((a) => a.status).sort()).toEqual([201, 422]);
  });

  it("a photo sent over WebSocket is acknowledged with its attachments", async () => {
    const { id } = await upload(BUYER, await jpegWithGps({ width: 320, height: 240 }), "image/jpeg");
    const buyer = await connect(chat, BUYER);
    try {
      buyer.send({ type: "send_message", chat_id: chatId, content: "", client_msg_id: "ws-photo", attachments: [id] });
      const ack = await buyer.waitFor(
        (f): f is Extract<ServerFrame, { type: "ack" }> => f.type === "ack" && f.ref === "ws-photo",
      );
      expect(ack.message.kind).toBe("image");
      expect(ack.message.attachments[0]?.id).toBe(id);
      buyer.send({ type: "send_message", chat_id: chatId, content: "", client_msg_id: "ws-empty" });
      const refused = await buyer.waitFor(
        (f): f is Extract<ServerFrame, { type: "error" }> => f.type === "error" && f.ref === "ws-empty",
      );
      expect(refused.code).toBe("validation_failed");
    } finally {
      buyer.close();
    }
  });

  it("only participants get a link, and a link stops working when it expires", async () => {
    const { id } = await upload(SELLER, await jpegWithGps({ width: 320, height: 240 }), "image/jpeg");
    const sent = await sendPhotos(SELLER, [id]);
    const path = sent.body.attachments[0].url;
    const outsider = await fetch(`${chat.baseUrl}${path}`, {
      headers: { "x-internal-token": chat.internalToken, "x-user-id": String(OUTSIDER) },
      redirect: "manual",
    });
    expect(outsider.status).toBe(404);
    const { location } = await fetchPhoto(BUYER, path);
    // Links live 2 s here: wait until the storage's clock has passed it.
    const expiredBy = Date.now() + 3_100;
    await new Promise((resolve) => setTimeout(resolve, expiredBy - Date.now()));
    expect((await storageFetch(location)).status).toBe(403);
    // An upload itself is never served: only its stripped copies have links.
    expect((await keys()).some((key) => key === `uploads/${id}`)).toBe(false);
  });

  it("a photo storage that fails answers 503 and stores nothing; the retry goes through", async (context) => {
    // The development folder can be broken on purpose: its photos' folder replaced by a file.
    if (storageConfig.kind !== "fs") return context.skip();
    const photos = join(storageConfig.dataDir, "media", "photos");
    const { id } = await upload(BUYER, await jpegWithGps({ width: 330, height: 240 }), "image/jpeg");
    const moved = `${photos}.aside`;
    renameSync(photos, moved);
    writeFileSync(photos, "not a folder");
    try {
      const refused = await sendPhotos(BUYER, [id], "", "broken-storage");
      expect(refused.status).toBe(503);
      expect(refused.body.error).toEqual({
        code: "storage_unavailable",
        message: "the photo storage is unavailable: retry shortly",
      });
    } finally {
      rmSync(photos);
      renameSync(moved, photos);
    }
    const page = await chat.api(SELLER, "GET", `/api/v1/chats/${chatId}/messages?limit=5`);
    expect(page.body.messages.some((m: { client_msg_id: string }) => m.client_msg_id === "broken-storage")).toBe(false);
    const retried = await sendPhotos(BUYER, [id], "", "broken-storage");
    expect(retried.status).toBe(201);
  });

  it("bytes in the storage that are not what was declared are refused: fewer, or over UPLOAD_MAX_BYTES", async (context) => {
    // Written behind the presigned URL's back (which signs the length): only the development folder allows it.
    if (storageConfig.kind !== "fs") return context.skip();
    const small = await upload(BUYER, await jpegWithGps({ width: 300, height: 200 }), "image/jpeg");
    writeFileSync(join(storageConfig.dataDir, "media", "uploads", small.id), Buffer.alloc(10));
    const fewer = await sendPhotos(BUYER, [small.id]);
    expect(fewer.status).toBe(422);
    expect(fewer.body.error.message).toMatch(/not complete: 10 of its \d+ bytes arrived/);
    writeFileSync(join(storageConfig.dataDir, "media", "uploads", small.id), Buffer.alloc(10 * 1024 * 1024 + 1));
    const over = await sendPhotos(BUYER, [small.id]);
    expect(over.status).toBe(422);
    expect(over.body.error.message).toMatch(/10485761 bytes, over 10485760/);
  });

  it("an upload refused for its bytes is refused at once the next time, without reading it again", async () => {
    const { id } = await upload(BUYER, await truncatedJpeg(), "image/jpeg");
    const first = await sendPhotos(BUYER, [id]);
    expect(first.status).toBe(422);
    const [row] = rowsOf<{ rejection: string | null; processed_at: string | null }>(
      await chat.server.database.db.execute(sql`SELECT rejection, processed_at FROM uploads WHERE id = ${id}`),
    );
    expect(row?.rejection).toMatch(/could not be (read|decoded)/);
    expect(row?.processed_at).toBeNull();
    // Its bytes removed behind the service's back: a second send that read them would say "not complete".
    await removeObject(`uploads/${id}`);
    const again = await sendPhotos(BUYER, [id]);
    expect(again.status).toBe(422);
    expect(again.body.error.message).toBe(first.body.error.message);
  });

  it("a retry that arrives while its first attempt is still processing gets the stored message", async () => {
    const ids = [];
    for (let i = 0; i < 3; i += 1) {
      ids.push((await upload(SELLER, await jpegWithGps({ width: 900 + i, height: 700 }), "image/jpeg")).id);
    }
    const answers = await Promise.all([
      sendPhotos(SELLER, ids, "", "impatient-retry"),
      sendPhotos(SELLER, ids, "", "impatient-retry"),
    ]);
    expect(answers.map((a) => a.status).sort()).toEqual([200, 201]);
    expect(answers[0]!.body.id).toBe(answers[1]!.body.id);
  });

  it("past the photos an instance lets wait, a send gets 503 instance_busy, and goes through later", async () => {
    const ids = [];
    for (let i = 0; i < 6; i += 1) {
      ids.push((await upload(BUYER, await jpegWithGps({ width: 600 + i, height: 400 }), "image/jpeg")).id);
    }
    const busy = await sendPhotos(BUYER, ids, "", "busy-instance");
    expect(busy.status).toBe(503);
    expect(busy.body.error.code).toBe("instance_busy");
    // The photos it started are processed meanwhile; a send once the queue has drained stores the message.
    let sent = await sendPhotos(BUYER, ids, "", "busy-instance");
    for (let tries = 0; sent.status === 503 && tries < 50; tries += 1) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      sent = await sendPhotos(BUYER, ids, "", "busy-instance");
    }
    expect(sent.status).toBe(201);
    expect(sent.body.attachments).toHaveLength(6);
  });

  it("the sweeper removes orphans after 24 h and a deleted message's photos, from the storage and the table", async () => {
    const orphan = await upload(BUYER, await jpegWithGps({ width: 320, height: 240 }), "image/jpeg");
    const young = await upload(BUYER, await jpegWithGps({ width: 321, height: 240 }), "image/jpeg");
    const bySender = await upload(BUYER, await jpegWithGps({ width: 322, height: 240 }), "image/jpeg");
    const byPlatform = await upload(SELLER, await jpegWithGps({ width: 323, height: 240 }), "image/jpeg");
    const kept = await upload(SELLER, await jpegWithGps({ width: 324, height: 240 }), "image/jpeg");
    const senderMessage = (await sendPhotos(BUYER, [bySender.id])).body;
    const platformMessage = (await sendPhotos(SELLER, [byPlatform.id])).body;
    const keptMessage = (await sendPhotos(SELLER, [kept.id])).body;
    expect(keptMessage.kind).toBe("image");
    // The orphan's clock set 25 hours back.
    await chat.server.database.db.execute(
      sql`UPDATE uploads SET created_at = now() - interval '25 hours', sweep_after = now() - interval '1 hour' WHERE id = ${orphan.id}`,
    );
    expect((await sendPhotos(BUYER, [orphan.id])).body.error.message).toMatch(/expired/);

    expect((await chat.api(BUYER, "DELETE", `/api/v1/messages/${senderMessage.id}`)).status).toBe(200);
    const platformDelete = await fetch(`${chat.baseUrl}/internal/chat/messages/${platformMessage.id}`, {
      method: "DELETE",
      headers: { "x-internal-token": chat.internalToken, "content-type": "application/json" },
      body: JSON.stringify({ reason: "test" }),
    });
    expect(platformDelete.status).toBe(200);
    // A deleted message shows no photos, and its links are gone at once.
    const deleted = await chat.api(SELLER, "GET", `/api/v1/chats/${chatId}/messages?limit=5`);
    for (const m of deleted.body.messages.filter((m: { deleted_at: string | null }) => m.deleted_at)) {
      expect(m.attachments).toEqual([]);
    }
    const gone = await fetch(`${chat.baseUrl}/api/v1/attachments/${bySender.id}`, {
      headers: { "x-internal-token": chat.internalToken, "x-user-id": String(BUYER) },
      redirect: "manual",
    });
    expect(gone.status).toBe(404);

    const removed = await chat.server.sweepPhotos();
    expect(removed).toBeGreaterThanOrEqual(3);
    const objectsOf = async (ids: string[]) => (await keys()).filter((key) => ids.some((id) => key.endsWith(`/${id}`)));
    expect(await objectsOf([orphan.id, bySender.id, byPlatform.id])).toEqual([]);
    const left = await keys();
    expect(left).toEqual(expect.arrayContaining([`photos/${kept.id}`, `thumbs/${kept.id}`, `uploads/${young.id}`]));
    const rowsOf = async (ids: string[]) =>
      (
        (await chat.server.database.db.execute(
          sql`SELECT id FROM uploads WHERE id = ANY(${sql.param(ids)}::text[]) ORDER BY id`,
        )) as unknown as { rows: { id: string }[] }
      ).rows.map((row) => row.id);
    // The orphan's PUT ran out long ago: its row is gone. The deleted messages' photos were granted minutes ago,
    // and their presigned PUTs still work: their rows wait for a second sweep, once the URLs have run out.
    expect(await rowsOf([orphan.id])).toEqual([]);
    expect(await rowsOf([bySender.id, byPlatform.id])).toEqual([bySender.id, byPlatform.id].sort());
    expect(await chat.server.sweepPhotos()).toBe(0);

    // The sender PUTs the original again with the URL they still hold: the storage takes it, it names no message,
    // and it is not there for long. With the clock moved past the URL's life, the second sweep removes it and the rows.
    const again = await storageFetch(bySender.grant.url, {
      method: "PUT",
      headers: bySender.grant.headers,
      body: new Uint8Array(await jpegWithGps({ width: 322, height: 240 })),
    });
    expect(again.status).toBe(200);
    expect(await objectsOf([bySender.id])).toEqual([`uploads/${bySender.id}`]);
    await chat.server.database.db.execute(
      sql`UPDATE uploads SET created_at = created_at - interval '1 day', sweep_after = now() - interval '1 second'
          WHERE id IN (${bySender.id}, ${byPlatform.id})`,
    );
    expect(await chat.server.sweepPhotos()).toBe(2);
    expect(await objectsOf([bySender.id, byPlatform.id])).toEqual([]);
    expect(await rowsOf([bySender.id, byPlatform.id])).toEqual([]);
    // A sweep after that finds nothing more, and the kept photo still opens.
    expect(await chat.server.sweepPhotos()).toBe(0);
    await fetchPhoto(BUYER, keptMessage.attachments[0].url);
  });

  it("an original PUT again while its message lives is removed once the upload URL has run out", async () => {
    const sent = await upload(SELLER, await jpegWithGps({ width: 330, height: 240 }), "image/jpeg");
    const message = (await sendPhotos(SELLER, [sent.id])).body;
    expect(message.kind).toBe("image");
    expect(await keys()).not.toContain(`uploads/${sent.id}`);
    const [row] = (
      (await chat.server.database.db.execute(
        sql`SELECT extract(epoch FROM original_recheck_at - created_at)::float AS after_s FROM uploads WHERE id = ${sent.id}`,
      )) as unknown as { rows: { after_s: number }[] }
    ).rows;
    // The URL's 900 s, and 5 minutes for a PUT begun before it ran out, and for clocks.
    expect(row?.after_s).toBe(1_200);

    // The GPS-tagged original PUT again with the URL the sender still holds: S3 takes it (the development storage
    // refuses a PUT once the photo exists: there it is written behind the URL's back), and no sweep removes it
    // until the URL has run out.
    const original = await jpegWithGps({ width: 330, height: 240 });
    const again = await storageFetch(sent.grant.url, {
      method: "PUT",
      headers: sent.grant.headers,
      body: new Uint8Array(original),
    });
    if (storageConfig.kind === "fs") {
      expect(again.status).toBe(403);
      writeFileSync(join(storageConfig.dataDir, "media", "uploads", sent.id), original);
    } else {
      expect(again.status).toBe(200);
    }
    await chat.server.sweepPhotos();
    expect(await keys()).toContain(`uploads/${sent.id}`);

    // The clock past the URL's life: the sweep removes the original, and only it; the photo still opens.
    await chat.server.database.db.execute(
      sql`UPDATE uploads SET original_recheck_at = now() - interval '1 second' WHERE id = ${sent.id}`,
    );
    expect(await chat.server.sweepPhotos()).toBe(0);
    const left = await keys();
    expect(left).not.toContain(`uploads/${sent.id}`);
    expect(left).toEqual(expect.arrayContaining([`photos/${sent.id}`, `thumbs/${sent.id}`]));
    const after = (
      (await chat.server.database.db.execute(
        sql`SELECT original_recheck_at FROM uploads WHERE id = ${sent.id}`,
      )) as unknown as { rows: { original_recheck_at: unknown }[] }
    ).rows;
    expect(after).toEqual([{ original_recheck_at: null }]);
    await fetchPhoto(BUYER, message.attachments[0].url);
  });
});
