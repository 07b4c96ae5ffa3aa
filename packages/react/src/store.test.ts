import { ChatApiError, ChatClient } from "@listings-chat/client";
import { connectionTo, FakeChatServer, fakePhoto } from "@listings-chat/client/testing";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { ChatStore } from "./store.ts";

/**
 * The store against the client's in-process fake server, on fake timers: the bookkeeping a page would
 * otherwise do by hand, checked through what the store's snapshots show.
 */

const ME = 1;
const OTHER = 2;
const THIRD = 3;

const cleanups: Array<() => void> = [];

beforeEach(() => {
  vi.useFakeTimers();
});

afterEach(() => {
  for (const cleanup of cleanups.splice(0)) cleanup();
  vi.useRealTimers();
});

const settle = () => vi.advanceTimersByTimeAsync(0);

function harness(options: { pageSize?: number } = {}) {
  const server = new FakeChatServer();
  const chat = server.addChat(ME, OTHER);
  const client = new ChatClient({
    ...connectionTo(server, ME),
    userId: ME,
  });
  let n = 0;
  const store = new ChatStore(client, { pageSize: options.pageSize ?? 3, newClientMsgId: () => `c${++n}` });
  const release = store.retain();
  let notifications = 0;
  const unsubscribe = store.subscribe(() => {
    notifications += 1;
  });
  cleanups.push(() => {
    unsubscribe();
    release();
    store.dispose();
    client.stop();
  });
  return { server, chat, client, store, notifications: () => notifications };
}

async function live(h: ReturnType<typeof harness>) {
  h.client.start();
  await settle();
  expect(h.store.getConnection().mode).toBe("live");
}

describe("the chat list", () => {
  it("loads once, keeps the newest activity first, and moves a chat up when a message arrives", async () => {
    const h = harness();
    const second = h.server.addChat(ME, THIRD, 2);
    h.server.post(h.chat.id, OTHER, "first");
    vi.advanceTimersByTime(1000);
    h.server.post(second.id, THIRD, "second");
    await live(h);
    await h.store.loadChats();
    expect(h.store.getChatList().chats.map((c) => c.id)).toEqual([second.id, h.chat.id]);

    vi.advanceTimersByTime(1000);
    h.server.post(h.chat.id, OTHER, "newer");
    await settle();
    const list = h.store.getChatList();
    expect(list.chats.map((c) => c.id)).toEqual([h.chat.id, second.id]);
    expect(list.chats[0]?.last_message?.content).toBe("newer");
  });

  it("keeps each chat's unread count and the total in step with the client's counts", async () => {
    const h = harness();
    await live(h);
    await h.store.loadChats();
    h.server.post(h.chat.id, OTHER, "one");
    h.server.post(h.chat.id, OTHER, "two");
    await vi.advanceTimersByTimeAsync(1_500);
    expect(h.store.getChatList().chats[0]?.unread_count).toBe(2);
    expect(h.store.getConnection().unreadTotal).toBe(2);
  });

  it("adds a chat created by the other side, and moves an archived chat between the lists", async () => {
    const h = harness();
    await live(h);
    await h.store.loadChats();
    await h.store.loadChats(true);
    const created = h.server.addChat(THIRD, ME, 5);
    await settle();
    expect(h.store.getChatList().chats.map((c) => c.id)).toContain(created.id);

    await h.store.archiveChat(h.chat.id);
    await settle();
    expect(h.store.getChatList().chats.map((c) => c.id)).not.toContain(h.chat.id);
    expect(h.store.getChatList(true).chats.map((c) => c.id)).toEqual([h.chat.id]);

    // A message from the other side brings it back (the server un-archives it with no chat_updated).
    h.server.post(h.chat.id, OTHER, "still interested?");
    await settle();
    expect(h.store.getChatList(true).chats).toEqual([]);
    const back = h.store.getChatList().chats.find((c) => c.id === h.chat.id);
    expect(back?.archived).toBe(false);
    expect(back?.last_message?.content).toBe("still interested?");
  });

  it("keeps what it heard while the list was on its way: a chat created and a message newer than the answer", async () => {
    const h = harness();
    await live(h);
    // The list's answer is read now and delivered later, as a slow network would.
    let deliver!: () => void;
    const late = new Promise<void>((resolve) => {
      deliver = resolve;
    });
    const fetch = h.server.fetch;
    (h.client.api as unknown as { fetchImpl: typeof fetch }).fetchImpl = async (input, init) => {
      const answer = await fetch(input, init);
      if (new URL(String(input)).pathname === "/api/v1/chats") await late;
      return answer;
    };
    const loading = h.store.loadChats();
    await settle();
    const created = h.server.addChat(ME, THIRD, 9); // chat_created while the answer is on its way
    h.server.post(h.chat.id, OTHER, "newer than the answer");
    await settle();
    deliver();
    await loading;
    const list = h.store.getChatList();
    expect(list.chats.map((c) => c.id)).toContain(created.id);
    expect(list.chats.find((c) => c.id === h.chat.id)?.last_message?.content).toBe("newer than the answer");
  });

  it("reads a list again that failed to load, after a wait, until it loads", async () => {
    const h = harness();
    h.server.post(h.chat.id, OTHER, "hello");
    await live(h);
    const lists = () => h.server.requestsTo("GET", "/api/v1/chats").length;
    h.server.failFetches = true;
    await h.store.loadChats();
    expect(h.store.getChatList().status).toBe("error");
    const failed = lists();
    h.server.failFetches = false;
    await vi.advanceTimersByTimeAsync(1_000);
    expect(lists()).toBe(failed + 1);
    expect(h.store.getChatList()).toMatchObject({ status: "ready", error: null });
    expect(h.store.getChatList().chats.map((c) => c.last_message?.content)).toEqual(["hello"]);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(lists()).toBe(failed + 1);
  });

  it("gives the same snapshot until something it shows changes", async () => {
    const h = harness();
    await live(h);
    await h.store.loadChats();
    const before = h.store.getChatList();
    h.server.pushTo(ME, { type: "presence", user_id: OTHER, online: true });
    await settle();
    expect(h.store.getPresence(OTHER)).toBe(true);
    expect(h.store.getChatList()).toBe(before);
  });
});

describe("a thread", () => {
  it("loads the newest page oldest first, pages back, and appends live messages exactly once", async () => {
    const h = harness({ pageSize: 3 });
    for (let i = 1; i <= 7; i++) h.server.post(h.chat.id, i % 2 ? OTHER : ME, `m${i}`);
    await live(h);
    const release = h.store.holdThread(h.chat.id);
    await settle();
    let thread = h.store.getThread(h.chat.id);
    expect(thread?.status).toBe("ready");
    expect(thread?.messages.map((m) => m.content)).toEqual(["m5", "m6", "m7"]);
    expect(thread?.hasMore).toBe(true);

    await h.store.loadOlder(h.chat.id);
    await h.store.loadOlder(h.chat.id);
    thread = h.store.getThread(h.chat.id);
    expect(thread?.messages.map((m) => m.content)).toEqual(["m1", "m2", "m3", "m4", "m5", "m6", "m7"]);
    expect(thread?.hasMore).toBe(false);

    h.server.post(h.chat.id, OTHER, "live");
    await settle();
    expect(
      h.store
        .getThread(h.chat.id)
        ?.messages.map((m) => m.content)
        .slice(-2),
    ).toEqual(["m7", "live"]);

    release();
    expect(h.store.getThread(h.chat.id)).toBeUndefined();
  });

  it("reads a thread again that failed to load: on a timer while the network is down, at once when live again", async () => {
    const h = harness({ pageSize: 20 });
    for (let i = 1; i <= 4; i++) h.server.post(h.chat.id, OTHER, `m${i}`);
    await live(h);
    const pages = () => h.server.requestsTo("GET", `/api/v1/chats/${h.chat.id}/messages`).length;
    // The network goes as the chat is opened: the page load fails, and the socket breaks.
    h.server.failFetches = true;
    h.server.upgrades = "refuse";
    h.store.holdThread(h.chat.id);
    await settle();
    h.server.lastSocket.drop();
    await settle();
    expect(h.store.getThread(h.chat.id)).toMatchObject({ status: "error", messages: [] });
    expect(pages()).toBe(1);
    // Tried again after a growing wait (1 s, then 2 s), not in a tight loop.
    await vi.advanceTimersByTimeAsync(999);
    expect(pages()).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(pages()).toBe(2);
    await vi.advanceTimersByTimeAsync(1_999);
    expect(pages()).toBe(2);
    await vi.advanceTimersByTimeAsync(1);
    expect(pages()).toBe(3);
    expect(h.store.getThread(h.chat.id)?.status).toBe("error");

    // The network is back: the client goes live and the thread is read at once, whole, not after its next wait.
    h.server.failFetches = false;
    h.server.upgrades = "accept";
    h.client.retryNow();
    await settle();
    expect(h.client.mode).toBe("live");
    expect(pages()).toBe(4);
    const thread = h.store.getThread(h.chat.id);
    expect(thread).toMatchObject({ status: "ready", error: null, hasMore: false });
    expect(thread?.messages.map((m) => m.content)).toEqual(["m1", "m2", "m3", "m4"]);
    // Nothing left to retry.
    await vi.advanceTimersByTimeAsync(60_000);
    expect(pages()).toBe(4);
  });

  it("does not retry a load the server refused for good, nor one of a thread nobody holds any more", async () => {
    const h = harness();
    await live(h);
    const pages = (chatId: number) => h.server.requestsTo("GET", `/api/v1/chats/${chatId}/messages`).length;
    // Not a participant: 404 is an answer, not a failure that passes.
    h.store.holdThread(999_999);
    await settle();
    expect(h.store.getThread(999_999)?.status).toBe("error");
    h.server.failFetches = true;
    const release = h.store.holdThread(h.chat.id);
    await settle();
    expect(h.store.getThread(h.chat.id)?.status).toBe("error");
    release();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(pages(999_999)).toBe(1);
    expect(pages(h.chat.id)).toBe(1);
  });

  it("stops retrying once a retry gets an answer, and never retries a fault of the page itself", async () => {
    const h = harness();
    await live(h);
    const messages = vi.spyOn(h.client.api, "messages");
    // A network failure, then at its retry an answer that will not change (404): no more retries, not even when
    // the client is live again.
    messages.mockRejectedValueOnce(new ChatApiError(0, "network_error", "Failed to fetch"));
    messages.mockRejectedValueOnce(new ChatApiError(404, "not_found", "chat not found"));
    h.store.holdThread(h.chat.id);
    await settle();
    await vi.advanceTimersByTimeAsync(1_000);
    expect(messages).toHaveBeenCalledTimes(2);
    expect(h.store.getThread(h.chat.id)?.error?.code).toBe("not_found");
    h.server.lastSocket.drop();
    await vi.advanceTimersByTimeAsync(5_000);
    expect(h.client.mode).toBe("live");
    await vi.advanceTimersByTimeAsync(60_000);
    expect(messages).toHaveBeenCalledTimes(2);

    // Not a ChatApiError (a bug in the page or a parse error): shown, not retried.
    const other = h.server.addChat(ME, THIRD, 3);
    messages.mockRejectedValueOnce(new SyntaxError("Unexpected token < in JSON"));
    h.store.holdThread(other.id);
    await settle();
    expect(h.store.getThread(other.id)?.error?.code).toBe("client_error");
    await vi.advanceTimersByTimeAsync(60_000);
    expect(messages).toHaveBeenCalledTimes(3);
  });

  it("shows a send at once as pending, then the stored message in its place", async () => {
    const h = harness();
    await live(h);
    h.store.holdThread(h.chat.id);
    await settle();
    const sent = h.store.send(h.chat.id, "is it still available?");
    let thread = h.store.getThread(h.chat.id);
    expect(thread?.pending).toMatchObject([
      { client_msg_id: "c1", status: "sending", content: "is it still available?" },
    ]);
    const message = await sent;
    await settle();
    thread = h.store.getThread(h.chat.id);
    expect(thread?.pending).toEqual([]);
    expect(thread?.messages.filter((m) => m.id === message.id)).toHaveLength(1);
    expect(h.server.messagesIn(h.chat.id).map((m) => m.client_msg_id)).toEqual(["c1"]);
  });

  it("keeps a refused send as failed; retry stores it once with the same client_msg_id; discard forgets one", async () => {
    const h = harness();
    await live(h);
    h.store.holdThread(h.chat.id);
    await settle();
    h.server.refuseNextSends({ code: "validation_failed", message: "refused by a test" });
    await expect(h.store.send(h.chat.id, "first try")).rejects.toMatchObject({ code: "validation_failed" });
    const [failed] = h.store.getThread(h.chat.id)?.pending ?? [];
    expect(failed).toMatchObject({ status: "failed", error: { code: "validation_failed" } });

    const stored = await h.store.retry(h.chat.id, "c1");
    await settle();
    expect(stored.client_msg_id).toBe("c1");
    expect(h.store.getThread(h.chat.id)?.pending).toEqual([]);
    expect(h.server.messagesIn(h.chat.id)).toHaveLength(1);

    h.server.refuseNextSends({ code: "validation_failed" });
    await expect(h.store.send(h.chat.id, "to discard")).rejects.toBeTruthy();
    h.store.discard(h.chat.id, "c2");
    expect(h.store.getThread(h.chat.id)?.pending).toEqual([]);
  });

  it("replaces an edited or deleted message in place, from this device or another", async () => {
    const h = harness();
    await live(h);
    h.store.holdThread(h.chat.id);
    await settle();
    const mine = await h.store.send(h.chat.id, "price?");
    await h.store.edit(mine.id, "what is the price?");
    expect(h.store.getThread(h.chat.id)?.messages.map((m) => m.content)).toEqual(["what is the price?"]);
    await h.store.remove(mine.id);
    await settle();
    const [deleted] = h.store.getThread(h.chat.id)?.messages ?? [];
    expect(deleted).toMatchObject({ id: mine.id, content: "", deleted_by: "sender" });
    expect(h.store.getThread(h.chat.id)?.messages).toHaveLength(1);
  });

  it("marks read up to the other side's newest message once, and shows how far the other side read", async () => {
    const h = harness();
    h.server.post(h.chat.id, OTHER, "hello");
    await live(h);
    h.store.holdThread(h.chat.id);
    await settle();
    await h.store.markRead(h.chat.id);
    await h.store.markRead(h.chat.id);
    expect(h.server.requestsTo("POST", `/api/v1/chats/${h.chat.id}/read`).length).toBeLessThanOrEqual(1);
    const marks = h.server.openSockets(ME).flatMap((s) => s.sentOfType("mark_read"));
    expect(marks.length + h.server.requestsTo("POST", `/api/v1/chats/${h.chat.id}/read`).length).toBe(1);

    const mine = await h.store.send(h.chat.id, "hi");
    h.server.markRead(OTHER, h.chat.id, mine.id);
    await settle();
    expect(h.store.getThread(h.chat.id)?.peerLastReadMessageId).toBe(mine.id);
  });

  it("reads every loaded list and thread again after a resync", async () => {
    const h = harness();
    await live(h);
    await h.store.loadChats();
    h.store.holdThread(h.chat.id);
    await settle();
    const lists = h.server.requestsTo("GET", "/api/v1/chats").length;
    const pages = h.server.requestsTo("GET", `/api/v1/chats/${h.chat.id}/messages`).length;
    (h.client as unknown as { emit(name: string, value: unknown): void }).emit("resync", { last_event_id: 0 });
    await settle();
    expect(h.server.requestsTo("GET", "/api/v1/chats").length).toBe(lists + 1);
    expect(h.server.requestsTo("GET", `/api/v1/chats/${h.chat.id}/messages`).length).toBe(pages + 1);
  });
});

describe("typing, presence, blocks and the connection", () => {
  it("shows who types, clears on 'stopped', and expires an indicator whose 'stopped' never came", async () => {
    const h = harness();
    await live(h);
    h.server.pushTo(ME, { type: "typing", chat_id: h.chat.id, user_id: OTHER, is_typing: true });
    await settle();
    expect(h.store.getTyping(h.chat.id)).toEqual([OTHER]);
    h.server.pushTo(ME, { type: "typing", chat_id: h.chat.id, user_id: OTHER, is_typing: false });
    await settle();
    expect(h.store.getTyping(h.chat.id)).toEqual([]);

    h.server.pushTo(ME, { type: "typing", chat_id: h.chat.id, user_id: OTHER, is_typing: true });
    await settle();
    await vi.advanceTimersByTimeAsync(4_999);
    expect(h.store.getTyping(h.chat.id)).toEqual([OTHER]);
    await vi.advanceTimersByTimeAsync(1);
    expect(h.store.getTyping(h.chat.id)).toEqual([]);
  });

  it("keeps whom this user blocks from the first read and from the events of every device", async () => {
    const h = harness();
    await live(h);
    await h.store.loadBlocks();
    expect(h.store.getBlocked()).toEqual([]);
    await h.store.block(OTHER);
    expect(h.store.getBlocked()).toEqual([OTHER]);
    h.server.pushTo(ME, { type: "user_unblocked", event_id: 10_000, user_id: OTHER });
    await settle();
    expect(h.store.getBlocked()).toEqual([]);
  });

  it("follows the client's mode and warning, and stops following once released", async () => {
    const h = harness();
    h.server.upgrades = "refuse";
    h.client.start();
    await vi.advanceTimersByTimeAsync(3_000);
    expect(h.store.getConnection()).toMatchObject({ mode: "polling" });
    expect(h.store.getConnection().warning).toMatch(/refreshing every 5 seconds/);

    const seen = h.notifications();
    h.store.dispose();
    h.server.upgrades = "accept";
    h.client.retryNow();
    await settle();
    expect(h.client.mode).toBe("live");
    expect(h.store.getConnection().mode).toBe("polling");
    expect(h.notifications()).toBe(seen);
  });

  it("keeps following when released and held again in the same tick (StrictMode effects)", async () => {
    const h = harness();
    const again = h.store.retain();
    cleanups.push(again);
    // The harness's hold goes, another comes at once.
    const extra = h.store.retain();
    extra();
    await settle();
    await live(h);
    expect(h.store.getConnection().mode).toBe("live");
  });
});

describe("photo sends", () => {
  const photoPuts = (h: ReturnType<typeof harness>) => h.server.requests.filter((r) => r.method === "PUT");

  it("shows a photo send at once, with its upload progress, then the stored image message in its place", async () => {
    const h = harness();
    await live(h);
    h.store.holdThread(h.chat.id);
    await settle();
    const hold = h.server.hold("/files/uploads/upload-1");
    const files = [fakePhoto("image/jpeg", { size: 4000 })];
    const sent = h.store.sendPhotos(h.chat.id, files, "the left side");
    expect(h.store.getThread(h.chat.id)?.pending).toMatchObject([
      { client_msg_id: "c1", status: "sending", content: "the left side", photos: files, progress: 0 },
    ]);
    for (let i = 0; i < 10 && hold.waiting === 0; i++) await settle();
    // The fake XMLHttpRequest reports three quarters gone before storage answers.
    expect(h.store.getThread(h.chat.id)?.pending[0]?.progress).toBe(0.75);
    hold.release();
    const message = await sent;
    await settle();
    expect(message).toMatchObject({ kind: "image", content: "the left side", client_msg_id: "c1" });
    const thread = h.store.getThread(h.chat.id);
    expect(thread?.pending).toEqual([]);
    expect(thread?.messages.filter((m) => m.id === message.id)).toHaveLength(1);
    expect(thread?.messages.at(-1)?.attachments).toHaveLength(1);
  });

  it("keeps a refused photo send as failed with the server's message; retry stores it once without uploading again", async () => {
    const h = harness();
    await live(h);
    h.store.holdThread(h.chat.id);
    await settle();
    h.server.refuseNextSends({ code: "blocked", message: "you can't send messages in this chat" });
    await expect(h.store.sendPhotos(h.chat.id, [fakePhoto(), fakePhoto()])).rejects.toMatchObject({
      code: "blocked",
    });
    const [failed] = h.store.getThread(h.chat.id)?.pending ?? [];
    expect(failed).toMatchObject({
      status: "failed",
      progress: 1,
      error: { message: "you can't send messages in this chat" },
    });

    const stored = await h.store.retry(h.chat.id, "c1");
    await settle();
    expect(stored).toMatchObject({ client_msg_id: "c1", kind: "image" });
    expect(stored.attachments).toHaveLength(2);
    expect(h.store.getThread(h.chat.id)?.pending).toEqual([]);
    expect(h.server.messagesIn(h.chat.id)).toHaveLength(1);
    expect(photoPuts(h)).toHaveLength(2);

    // A photo the server cannot take (PNG bytes under a JPEG label): failed with what is wrong with which file.
    const png = await fakePhoto("image/png").arrayBuffer();
    await expect(
      h.store.sendPhotos(h.chat.id, [new File([png], "holiday.jpg", { type: "image/jpeg" })]),
    ).rejects.toMatchObject({ status: 422, code: "attachment_invalid" });
    const [refused] = h.store.getThread(h.chat.id)?.pending ?? [];
    // The client names the file as the page does (the server says "photo 1 (<upload id>)").
    expect(refused?.error?.message).toBe("holiday.jpg: the file is not JPEG, as it claims");
    h.store.discard(h.chat.id, "c2");
    expect(h.store.getThread(h.chat.id)?.pending).toEqual([]);
  });

  it("refuses files the client's check refuses at once, with nothing pending and no request", async () => {
    const h = harness();
    await live(h);
    h.store.holdThread(h.chat.id);
    await settle();
    const pdf = new File(["%PDF"], "invoice.pdf", { type: "application/pdf" });
    await expect(h.store.sendPhotos(h.chat.id, [pdf])).rejects.toMatchObject({
      code: "validation_failed",
      message: "invoice.pdf is not a JPEG, PNG or WebP photo (application/pdf)",
    });
    expect(h.store.getThread(h.chat.id)?.pending).toEqual([]);
    expect(h.server.requestsTo("POST", "/api/v1/uploads")).toEqual([]);
  });

  it("discard stops a photo send that is still uploading: nothing is sent", async () => {
    const h = harness();
    await live(h);
    h.store.holdThread(h.chat.id);
    await settle();
    const hold = h.server.hold("/files/uploads/upload-1");
    const sent = h.store.sendPhotos(h.chat.id, [fakePhoto()]);
    const outcome = sent.catch((error: unknown) => error);
    for (let i = 0; i < 10 && hold.waiting === 0; i++) await settle();
    h.store.discard(h.chat.id, "c1");
    expect(h.store.getThread(h.chat.id)?.pending).toEqual([]);
    expect(await outcome).toMatchObject({ code: "send_aborted" });
    hold.release();
    await settle();
    expect(h.server.requestsTo("POST", `/api/v1/chats/${h.chat.id}/messages`)).toEqual([]);
    expect(h.store.getThread(h.chat.id)?.pending).toEqual([]);
  });
});
