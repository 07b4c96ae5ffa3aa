import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { ChatApi, ChatApiError, ChatClient, type ChatClientOptions, checkPhotos, Limits } from "../src/index.ts";
import {
  connectionTo,
  FAKE_BASE_URL,
  FAKE_STORAGE_ORIGIN,
  FakeChatServer,
  FakeXMLHttpRequest,
  fakePhoto,
} from "../src/testing/fake-server.ts";

/**
 * Photos (CONTRACT §11) from the client's side, against the fake server on fake timers: the checks before any
 * request, the upload tickets, the bytes to storage (XMLHttpRequest with progress, or fetch) with no
 * credentials, one message with every photo, retries stored once, and links to the stored photos.
 */

const ME = 1;
const OTHER = 2;
const THIRD = 3;
const UPLOADS = "/api/v1/uploads";

const clients: ChatClient[] = [];

beforeEach(() => {
  vi.useFakeTimers();
});

afterEach(() => {
  for (const client of clients.splice(0)) client.stop();
  vi.useRealTimers();
  vi.unstubAllGlobals();
});

/** Lets every chain of microtasks (fetches, the fake XMLHttpRequest's progress) and every timer due now run. */
async function settle() {
  for (let i = 0; i < 10; i++) await vi.advanceTimersByTimeAsync(0);
}

function harness(options: Partial<ChatClientOptions> = {}, configure: (server: FakeChatServer) => void = () => {}) {
  const server = new FakeChatServer();
  configure(server);
  const chat = server.addChat(ME, OTHER);
  const client = new ChatClient({ ...connectionTo(server, ME), ...options });
  clients.push(client);
  client.start();
  const puts = () => server.requests.filter((r) => r.method === "PUT");
  const messagePosts = () => server.requestsTo("POST", `/api/v1/chats/${chat.id}/messages`);
  return { server, chat, client, puts, messagePosts };
}

/** A promise's outcome, observable without awaiting it (and without an unhandled rejection). */
function watch<T>(promise: Promise<T>) {
  const state: { done: boolean; value?: T; error?: unknown } = { done: false };
  promise.then(
    (value) => Object.assign(state, { done: true, value }),
    (error: unknown) => Object.assign(state, { done: true, error }),
  );
  return state;
}

/** Holds the storage PUTs of the next `count` uploads (`upload-1` …, as the fake numbers them). */
function holdUploads(server: FakeChatServer, count: number, from = 1) {
  return Array.from({ length: count }, (_, i) => server.hold(`/files/uploads/upload-${from + i}`));
}

describe("ChatApi: uploads, links, sends with attachments", () => {
  it("asks for a ticket, a photo's link as JSON, and sends the upload ids beside the caption", async () => {
    const server = new FakeChatServer();
    const chat = server.addChat(ME, OTHER);
    const api = new ChatApi(FAKE_BASE_URL, () => server.accessToken(ME), server.fetch);
    const ticket = await api.createUpload("image/png", 2048);
    expect(ticket).toMatchObject({
      upload_id: "upload-1",
      method: "PUT",
      headers: { "content-type": "image/png" },
      expires_in: 900,
    });
    expect(ticket.url).toMatch(/^\/files\/uploads\/upload-1\?/);
    expect(server.requestsTo("POST", UPLOADS)[0]?.body).toEqual({ content_type: "image/png", size: 2048 });

    const photo = await server.postPhotos(chat.id, OTHER);
    const [attachment] = photo.attachments;
    if (!attachment) throw new Error("no attachment");
    const link = await api.attachmentLink(attachment.id, { thumb: true });
    expect(link).toEqual({
      url: expect.stringMatching(new RegExp(`^/files/thumbs/${attachment.id}\\?`)),
      expires_in: 300,
    });
    const asked = server.requestsTo("GET", `/api/v1/attachments/${attachment.id}`)[0];
    expect(asked?.query).toEqual({ size: "thumb" });
    expect(asked?.headers.accept).toBe("application/json");

    await expect(api.sendMessage(chat.id, "", "c-1", ["upload-9"])).rejects.toMatchObject({
      status: 422,
      code: "attachment_invalid",
    });
    expect(server.requestsTo("POST", `/api/v1/chats/${chat.id}/messages`)[0]?.body).toEqual({
      content: "",
      client_msg_id: "c-1",
      attachments: ["upload-9"],
    });
    // A text send names no attachments at all.
    await api.sendMessage(chat.id, "hi", "c-2");
    expect(server.requestsTo("POST", `/api/v1/chats/${chat.id}/messages`)[1]?.body).toEqual({
      content: "hi",
      client_msg_id: "c-2",
    });
  });

  it("resolves a gateway path against the base (with its BASE_PATH) and leaves another origin's URL alone", () => {
    const api = new ChatApi("https://www.example.com/chat", () => "t", fetch);
    expect(api.gatewayUrl("/files/uploads/u1?sig=x")).toBe("https://www.example.com/chat/files/uploads/u1?sig=x");
    expect(api.gatewayUrl("https://bucket.s3.example/u1?X-Amz-Signature=x")).toBe(
      "https://bucket.s3.example/u1?X-Amz-Signature=x",
    );
  });
});

describe("the checks before any request", () => {
  it("refuses another type, an empty or too big file, too many photos and too long a caption, naming the file", async () => {
    const h = harness();
    const cases: Array<[Blob[], string, RegExp]> = [
      [
        [new File(["%PDF-1.7"], "invoice.pdf", { type: "application/pdf" })],
        "",
        /invoice\.pdf is not a JPEG, PNG or WebP photo \(application\/pdf\)/,
      ],
      [[new Blob(["x"])], "", /photo 1 is not a JPEG, PNG or WebP photo \(unknown type\)/],
      [
        [fakePhoto("image/jpeg", { size: Limits.uploadMaxBytes + 1, name: "huge.jpg" })],
        "",
        /huge\.jpg is 10\.0 MB: a photo may be at most 10\.0 MB/,
      ],
      [[new File([], "empty.png", { type: "image/png" })], "", /empty\.png is empty/],
      [[], "", /at least one photo/],
      [Array.from({ length: 11 }, () => fakePhoto()), "", /at most 10 photos in one message \(11 chosen\)/],
      [[fakePhoto()], "x".repeat(Limits.maxContentChars + 1), /a caption is at most 4000 characters/],
    ];
    for (const [files, content, message] of cases) {
      const error = await h.client.sendPhotos(h.chat.id, files, { content }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ChatApiError);
      expect(error).toMatchObject({ status: 400, code: "validation_failed", retryable: false });
      expect((error as Error).message).toMatch(message);
      expect(checkPhotos(files, content)?.message).toBe((error as Error).message);
    }
    expect(h.server.requestsTo("POST", UPLOADS)).toEqual([]);
    expect(checkPhotos([fakePhoto("image/webp", { size: Limits.uploadMaxBytes })], "a caption")).toBeUndefined();
  });

  it("refuses on a stopped client, before any request", async () => {
    const h = harness();
    h.client.stop();
    await expect(h.client.sendPhotos(h.chat.id, [fakePhoto()])).rejects.toMatchObject({ code: "client_stopped" });
    expect(h.server.requestsTo("POST", UPLOADS)).toEqual([]);
  });
});

describe("sendPhotos", () => {
  it("uploads each photo with exactly its ticket's headers and no credentials, then sends one message with all", async () => {
    const h = harness();
    await settle();
    expect(h.client.mode).toBe("live");
    const files = [
      fakePhoto("image/jpeg", { size: 4000 }),
      fakePhoto("image/png", { size: 1000, width: 640, height: 480 }),
    ];
    const progress: Array<{ loaded: number; total: number }> = [];
    const message = await h.client.sendPhotos(h.chat.id, files, {
      content: "the scratch on the left",
      clientMsgId: "photos-1",
      onProgress: (p) => progress.push(p),
    });

    expect(message).toMatchObject({ kind: "image", content: "the scratch on the left", client_msg_id: "photos-1" });
    expect(message.attachments.map((a) => [a.content_type, a.size])).toEqual([
      ["image/jpeg", 4000],
      ["image/png", 1000],
    ]);
    expect(message.attachments[1]).toMatchObject({ width: 640, height: 480 });
    expect(message.attachments[0]?.thumb_url).toBe(`/api/v1/attachments/${message.attachments[0]?.id}?size=thumb`);
    expect(h.server.requestsTo("POST", UPLOADS).map((r) => r.body)).toEqual([
      { content_type: "image/jpeg", size: 4000 },
      { content_type: "image/png", size: 1000 },
    ]);
    for (const put of h.puts()) {
      expect(put.path).toMatch(/^\/files\/uploads\/upload-\d$/);
      expect(put.headers.authorization).toBeUndefined();
      expect(put.headers.cookie).toBeUndefined();
      expect(put.credentials).toBe("omit");
      expect(Object.keys(put.headers)).toEqual(["content-type"]);
      expect(put.status).toBe(200);
    }
    // One message, over REST (the server takes a moment with photos), naming the uploads in the files' order.
    expect(h.messagePosts().map((r) => r.body)).toEqual([
      { content: "the scratch on the left", client_msg_id: "photos-1", attachments: ["upload-1", "upload-2"] },
    ]);
    expect(h.server.lastSocket.sentOfType("send_message")).toEqual([]);
    expect(h.server.messagesIn(h.chat.id)).toHaveLength(1);

    // Progress: the bytes of both files summed, never going back, ending at the whole.
    expect(progress[0]).toEqual({ loaded: 0, total: 5000 });
    expect(progress.at(-1)).toEqual({ loaded: 5000, total: 5000 });
    expect(progress.every((p) => p.total === 5000)).toBe(true);
    for (let i = 1; i < progress.length; i++) {
      expect(progress[i]?.loaded).toBeGreaterThanOrEqual(progress[i - 1]?.loaded ?? 0);
    }
    // XMLHttpRequest reports as the bytes go out: steps between 0 and the whole.
    expect(progress.some((p) => p.loaded > 0 && p.loaded < 5000)).toBe(true);
  });

  it("sends at most three photos at once", async () => {
    const h = harness();
    await settle();
    const holds = holdUploads(h.server, 5);
    const waiting = () => holds.reduce((sum, hold) => sum + hold.waiting, 0);
    const sent = watch(
      h.client.sendPhotos(
        h.chat.id,
        Array.from({ length: 5 }, () => fakePhoto()),
      ),
    );
    await settle();
    expect(waiting()).toBe(3);
    expect(h.server.requestsTo("POST", UPLOADS)).toHaveLength(3);
    holds[1]?.release();
    await settle();
    expect(waiting()).toBe(3); // the fourth took the free place
    for (const hold of holds) hold.release();
    await settle();
    expect(sent.done).toBe(true);
    expect((sent.value as { attachments: unknown[] }).attachments).toHaveLength(5);
    expect(h.messagePosts()[0]?.body).toMatchObject({
      attachments: ["upload-1", "upload-2", "upload-3", "upload-4", "upload-5"],
    });
  });

  it("puts to an absolute storage URL as it is, and to a gateway path under the gateway's BASE_PATH", async () => {
    const s3 = harness({}, (server) => {
      server.photos.storage = "s3";
    });
    await s3.client.sendPhotos(s3.chat.id, [fakePhoto()]);
    const [put] = s3.puts();
    expect(put?.path).toBe("/bucket/uploads/upload-1");
    expect(put?.status).toBe(200);

    const prefixed = harness({ baseUrl: `${FAKE_BASE_URL}/chat` }, (server) => {
      server.basePath = "/chat";
    });
    await prefixed.client.sendPhotos(prefixed.chat.id, [fakePhoto()]);
    expect(prefixed.puts().map((r) => [r.path, r.status])).toEqual([["/files/uploads/upload-1", 200]]);
    expect(prefixed.server.messagesIn(prefixed.chat.id)).toHaveLength(1);
    expect(FAKE_STORAGE_ORIGIN).not.toBe(new URL(FAKE_BASE_URL).origin);
  });

  it("rejects with the storage's refusal (S3's XML: an expired URL) and sends no message", async () => {
    const h = harness({}, (server) => {
      server.photos.storage = "s3";
      server.photos.expiredUploadUrls = true;
    });
    const error = await h.client.sendPhotos(h.chat.id, [fakePhoto(), fakePhoto()]).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ChatApiError);
    expect(error).toMatchObject({ status: 403, code: "upload_failed" });
    expect((error as Error).message).toBe("storage refused the photo (HTTP 403: AccessDenied: Request has expired)");
    expect(h.messagePosts()).toEqual([]);

    // The development storage says it with the API's error body: the same code, its words.
    const dev = harness({}, (server) => {
      server.photos.expiredUploadUrls = true;
    });
    await expect(dev.client.sendPhotos(dev.chat.id, [fakePhoto()])).rejects.toMatchObject({
      status: 403,
      code: "upload_failed",
      message: "storage refused the photo (HTTP 403: Request has expired)",
    });
  });

  it("rejects with the server's refusal of a photo (422 attachment_invalid), and uploads it again on a retry", async () => {
    const h = harness();
    // PNG bytes under a JPEG label: the server reads the bytes.
    const png = await fakePhoto("image/png").arrayBuffer();
    const mislabelled = new File([png], "holiday.jpg", { type: "image/jpeg" });
    const files = [fakePhoto(), mislabelled];
    const error = await h.client.sendPhotos(h.chat.id, files, { clientMsgId: "c" }).catch((e: unknown) => e);
    expect(error).toMatchObject({ status: 422, code: "attachment_invalid", retryable: false });
    // The server names the photo by its place and upload id; the client names it as the page does, by its file.
    expect((error as Error).message).toBe("holiday.jpg: the file is not JPEG, as it claims");
    expect(h.server.messagesIn(h.chat.id)).toEqual([]);

    // The refused uploads are not kept: a retry sends every photo again (and is refused again).
    await expect(h.client.sendPhotos(h.chat.id, files, { clientMsgId: "c" })).rejects.toMatchObject({
      code: "attachment_invalid",
    });
    expect(h.server.requestsTo("POST", UPLOADS)).toHaveLength(4);
  });

  it("a retry with the same client_msg_id sends only what did not reach storage, and is stored once", async () => {
    const h = harness();
    await settle();
    const files = [fakePhoto(), fakePhoto("image/webp")];
    // The message's send is refused for now (a block, lifted later): the photos are in storage.
    h.server.refuseNextSends({ code: "blocked", message: "you can't send messages in this chat" });
    await expect(h.client.sendPhotos(h.chat.id, files, { clientMsgId: "again" })).rejects.toMatchObject({
      code: "blocked",
    });
    expect(h.puts()).toHaveLength(2);

    const progress: number[] = [];
    const message = await h.client.sendPhotos(h.chat.id, files, {
      clientMsgId: "again",
      onProgress: (p) => progress.push(p.loaded / p.total),
    });
    expect(h.puts()).toHaveLength(2);
    expect(h.server.requestsTo("POST", UPLOADS)).toHaveLength(2);
    expect(progress).toEqual([1]);
    expect(message.attachments).toHaveLength(2);
    expect(h.server.messagesIn(h.chat.id)).toHaveLength(1);
  });

  it("a send stored while its answer was lost (aborted) is the same message on the retry, stored once", async () => {
    const h = harness();
    await settle();
    const files = [fakePhoto()];
    const abort = new AbortController();
    const hold = h.server.hold(`/api/v1/chats/${h.chat.id}/messages`);
    const first = watch(h.client.sendPhotos(h.chat.id, files, { clientMsgId: "once", signal: abort.signal }));
    await settle();
    expect(hold.waiting).toBe(1);
    abort.abort();
    hold.release(); // the server stores it; the page no longer listens
    await settle();
    expect(first.error).toMatchObject({ code: "send_aborted" });
    expect(h.server.messagesIn(h.chat.id)).toHaveLength(1);

    const again = await h.client.sendPhotos(h.chat.id, files, { clientMsgId: "once" });
    expect(again.id).toBe(h.server.messagesIn(h.chat.id)[0]?.id);
    expect(h.server.messagesIn(h.chat.id)).toHaveLength(1);
    expect(h.puts()).toHaveLength(1);
  });

  it("an abort during the uploads stops them and sends nothing", async () => {
    const h = harness();
    await settle();
    const [hold] = holdUploads(h.server, 1);
    const abort = new AbortController();
    const sent = watch(h.client.sendPhotos(h.chat.id, [fakePhoto()], { signal: abort.signal }));
    await settle();
    expect(hold?.waiting).toBe(1);
    abort.abort();
    await settle();
    expect(sent.error).toMatchObject({ code: "send_aborted" });
    hold?.release();
    await settle();
    expect(h.messagePosts()).toEqual([]);
  });

  it("passes the upload limit on (429 rate_limited with its Retry-After)", async () => {
    const h = harness();
    for (let i = 0; i < Limits.uploadsPerHour; i++) await h.client.api.createUpload("image/jpeg", 10);
    const error = await h.client.sendPhotos(h.chat.id, [fakePhoto()]).catch((e: unknown) => e);
    expect(error).toMatchObject({ status: 429, code: "rate_limited", retryAfterMs: 60_000 });
    expect(h.messagePosts()).toEqual([]);
  });

  it("over fetch (no XMLHttpRequest), reports each photo's progress once it is there", async () => {
    const h = harness({ xmlHttpRequest: null });
    const progress: number[] = [];
    await h.client.sendPhotos(
      h.chat.id,
      [fakePhoto("image/jpeg", { size: 300 }), fakePhoto("image/jpeg", { size: 100 })],
      {
        onProgress: (p) => progress.push(p.loaded),
      },
    );
    expect(progress[0]).toBe(0);
    expect(progress.at(-1)).toBe(400);
    expect(progress.every((loaded) => [0, 100, 300, 400].includes(loaded))).toBe(true);
    expect(h.puts().every((put) => put.credentials === "omit" && put.headers.authorization === undefined)).toBe(true);
  });

  it("uses the environment's XMLHttpRequest by default, and a given fetch for everything when there is one", async () => {
    const server = new FakeChatServer();
    const chat = server.addChat(ME, OTHER);
    const made: FakeXMLHttpRequest[] = [];
    vi.stubGlobal(
      "XMLHttpRequest",
      class extends FakeXMLHttpRequest {
        constructor() {
          super(server.fetch);
          made.push(this);
        }
      },
    );
    vi.stubGlobal("fetch", server.fetch);
    const { fetch: _fetch, xmlHttpRequest: _xhr, ...rest } = connectionTo(server, ME);
    const byDefault = new ChatClient(rest);
    clients.push(byDefault);
    byDefault.start();
    await byDefault.sendPhotos(chat.id, [fakePhoto()]);
    expect(made).toHaveLength(1);

    const withFetch = new ChatClient({ ...rest, fetch: server.fetch });
    clients.push(withFetch);
    withFetch.start();
    await withFetch.sendPhotos(chat.id, [fakePhoto()]);
    expect(made).toHaveLength(1);
    expect(server.messagesIn(chat.id)).toHaveLength(2);
  });
});

describe("attachmentUrl", () => {
  it("answers a URL per photo and size, kept until 80 % of its life, asked once when asked at once", async () => {
    const h = harness();
    const message = await h.server.postPhotos(h.chat.id, OTHER, [fakePhoto(), fakePhoto("image/png")]);
    const [first, second] = message.attachments;
    if (!first || !second) throw new Error("two attachments");
    const links = () => h.server.requests.filter((r) => r.path.startsWith("/api/v1/attachments/"));

    const [thumb, sameThumb] = await Promise.all([
      h.client.attachmentUrl(first, { thumb: true }),
      h.client.attachmentUrl(first, { thumb: true }),
    ]);
    expect(thumb).toBe(sameThumb);
    expect(thumb).toMatch(new RegExp(`^${FAKE_BASE_URL}/files/thumbs/${first.id}\\?`));
    const full = await h.client.attachmentUrl(first);
    expect(full).toMatch(new RegExp(`^${FAKE_BASE_URL}/files/photos/${first.id}\\?`));
    await h.client.attachmentUrl(second, { thumb: true });
    expect(links()).toHaveLength(3);

    // The bytes are there, without credentials.
    const bytes = await h.server.fetch(full);
    expect(bytes.status).toBe(200);
    expect(bytes.headers.get("content-type")).toBe("image/jpeg");

    // 300 s links: kept for 240 s, then asked again.
    await vi.advanceTimersByTimeAsync(239_000);
    await h.client.attachmentUrl(first, { thumb: true });
    expect(links()).toHaveLength(3);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(await h.client.attachmentUrl(first, { thumb: true })).not.toBe(thumb);
    expect(links()).toHaveLength(4);
  });

  it("takes an absolute URL as it is; 404 for a chat the user is not in, asked again next time", async () => {
    const h = harness({}, (server) => {
      server.photos.storage = "s3";
    });
    const mine = await h.server.postPhotos(h.chat.id, OTHER);
    const url = await h.client.attachmentUrl(mine.attachments[0] as { id: string });
    expect(url).toMatch(new RegExp(`^${FAKE_STORAGE_ORIGIN}/bucket/photos/`));

    const foreign = h.server.addChat(OTHER, THIRD, 2);
    const theirs = await h.server.postPhotos(foreign.id, THIRD);
    const attachment = theirs.attachments[0] as { id: string };
    await expect(h.client.attachmentUrl(attachment)).rejects.toMatchObject({ status: 404, code: "not_found" });
    await expect(h.client.attachmentUrl(attachment)).rejects.toMatchObject({ status: 404 });
    expect(h.server.requestsTo("GET", `/api/v1/attachments/${attachment.id}`)).toHaveLength(2);
  });

  it("the fake answers a browser's request (no Accept: JSON) with a 302 to the signed URL", async () => {
    const server = new FakeChatServer();
    const chat = server.addChat(ME, OTHER);
    const message = await server.postPhotos(chat.id, OTHER);
    const res = await server.fetch(`${FAKE_BASE_URL}${message.attachments[0]?.url}`, {
      headers: { authorization: `Bearer ${server.accessToken(ME)}` },
    });
    expect(res.status).toBe(302);
    expect(res.headers.get("location")).toMatch(/^\/files\/photos\/upload-1\?/);
  });
});
