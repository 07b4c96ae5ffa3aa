import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { AccessTokenRefusedError } from "./access-token.ts";
import { ChatClient, POLLING_WARNING } from "./chat-client.ts";
import type { ChatEvent, Message } from "./protocol/index.ts";
import { ChatApiError, parseRetryAfter } from "./rest.ts";
import { connectionTo, FAKE_BASE_URL, FakeChatServer } from "./testing/fake-server.ts";
import type { ChatClientEvents, ChatClientMode, ChatClientOptions } from "./types.ts";

/**
 * The browser client against the in-process fake server (./testing/fake-server.ts), on fake timers:
 * every delay below is the client's own, measured in fake milliseconds.
 */

const ME = 1;
const OTHER = 2;
const EVENTS = "/api/v1/events";

const clients: ChatClient[] = [];

beforeEach(() => {
  vi.useFakeTimers();
});

afterEach(() => {
  for (const client of clients.splice(0)) client.stop();
  vi.useRealTimers();
});

/** Lets every pending microtask (fetches, socket callbacks) and every timer due now run. */
const settle = () => vi.advanceTimersByTimeAsync(0);
const advance = (ms: number) => vi.advanceTimersByTimeAsync(ms);

function harness(given: Partial<ChatClientOptions> | ((server: FakeChatServer) => Partial<ChatClientOptions>) = {}) {
  const server = new FakeChatServer();
  const chat = server.addChat(ME, OTHER); // event 1: chat_created
  const options = typeof given === "function" ? given(server) : given;
  const client = new ChatClient({
    ...connectionTo(server, ME),
    ...options,
  });
  clients.push(client);
  const seen = {
    events: [] as ChatEvent[],
    modes: [] as ChatClientMode[],
    warnings: [] as Array<string | null>,
    fatal: [] as Array<ChatClientEvents["fatal"]>,
    unread: [] as Array<ChatClientEvents["unread"]>,
    typing: [] as Array<ChatClientEvents["typing"]>,
    presence: [] as Array<ChatClientEvents["presence"]>,
  };
  client.on("event", (e) => seen.events.push(e));
  client.on("mode", (m) => seen.modes.push(m.to));
  client.on("warning", (w) => seen.warnings.push(w));
  client.on("fatal", (f) => seen.fatal.push(f));
  client.on("unread", (u) => seen.unread.push(u));
  client.on("typing", (t) => seen.typing.push(t));
  client.on("presence", (p) => seen.presence.push(p));
  const ids = () => seen.events.map((e) => e.event_id);
  const polls = () => server.requestsTo("GET", EVENTS);
  const sends = () => server.requestsTo("POST", `/api/v1/chats/${chat.id}/messages`);
  return { server, chat, client, seen, ids, polls, sends };
}

/**
 * Starts with every upgrade refused: the first refusal is tried again on WebSocket after `refusedRetryMs`
 * (2 s with random() = 0.5), the second sends the client to polling, at fake time `Date.now()`.
 */
async function startPolling(h: ReturnType<typeof harness>, refusedRetryDelayMs = 2_000) {
  h.server.upgrades = "refuse";
  h.client.start();
  await settle();
  expect(h.client.mode).toBe("connecting");
  await advance(refusedRetryDelayMs);
  expect(h.client.mode).toBe("polling");
}

/** With upgrades answered by hand: refuses the first connect and its retry 2 s later; the client polls. */
async function refuseFirstConnectAndRetry(h: ReturnType<typeof harness>) {
  h.server.sockets[0]?.refuse();
  await settle();
  expect(h.client.mode).toBe("connecting");
  await advance(2_000);
  h.server.lastSocket.refuse();
  await settle();
  expect(h.client.mode).toBe("polling");
}

async function startLive(h: ReturnType<typeof harness>) {
  h.client.start();
  await settle();
  expect(h.client.mode).toBe("live");
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

/** Connectivity signals the test fires by hand: `fire.online()` and so on. */
function manualConnectivity() {
  const listeners = {
    online: [] as Array<() => void>,
    offline: [] as Array<() => void>,
    visible: [] as Array<() => void>,
  };
  const on = (list: Array<() => void>) => (listener: () => void) => {
    list.push(listener);
    return () => {
      list.splice(list.indexOf(listener), 1);
    };
  };
  const fireAll = (list: Array<() => void>) => () => {
    for (const listener of list) listener();
  };
  return {
    connectivity: {
      onOnline: on(listeners.online),
      onOffline: on(listeners.offline),
      onVisible: on(listeners.visible),
    },
    fire: {
      online: fireAll(listeners.online),
      offline: fireAll(listeners.offline),
      visible: fireAll(listeners.visible),
    },
    subscribed: () => listeners.online.length + listeners.offline.length + listeners.visible.length,
  };
}

function expectStrictlyIncreasing(ids: number[]) {
  for (let i = 1; i < ids.length; i++) expect(ids[i]).toBeGreaterThan(ids[i - 1] as number);
}

describe("the fake server (what the client is tested against)", () => {
  it("answers /events like the real one", async () => {
    const server = new FakeChatServer();
    const chat = server.addChat(ME, OTHER); // 1
    server.addChat(OTHER, 3); // 2: not ME's
    server.post(chat.id, OTHER); // 3
    server.post(chat.id, ME); // 4
    const get = async (query: string) => {
      const res = await server.fetch(`${FAKE_BASE_URL}${EVENTS}${query}`, {
        headers: { authorization: `Bearer ${server.accessToken(ME)}` },
      });
      const body = (await res.json()) as { events: ChatEvent[]; last_event_id: number };
      return { ids: body.events.map((e) => e.event_id), last: body.last_event_id };
    };
    expect(await get("")).toEqual({ ids: [], last: 4 });
    expect(await get("?after=0")).toEqual({ ids: [1, 3, 4], last: 4 });
    expect(await get("?after=0&limit=2")).toEqual({ ids: [1, 3], last: 3 }); // a full page: its last id
    expect(await get("?after=3&limit=2")).toEqual({ ids: [4], last: 4 });
    expect(await get("?after=4")).toEqual({ ids: [], last: 4 });
  });

  it("stores a message once per client_msg_id: 201, then 200 with the same message", async () => {
    const server = new FakeChatServer();
    const chat = server.addChat(ME, OTHER);
    const post = () =>
      server.fetch(`${FAKE_BASE_URL}/api/v1/chats/${chat.id}/messages`, {
        method: "POST",
        headers: { authorization: `Bearer ${server.accessToken(ME)}`, "content-type": "application/json" },
        body: JSON.stringify({ content: "hi", client_msg_id: "same" }),
      });
    const first = await post();
    const again = await post();
    expect([first.status, again.status]).toEqual([201, 200]);
    expect(await again.json()).toEqual(await first.json());
    expect(server.messagesIn(chat.id)).toHaveLength(1);
  });
});

describe("fallback to polling", () => {
  it("polls after a refused connect, shows the warning, and clears it once live again", async () => {
    const h = harness();
    await startPolling(h);
    expect(h.seen.modes).toEqual(["connecting", "polling"]);
    expect(h.seen.warnings).toEqual([POLLING_WARNING]);
    expect(POLLING_WARNING).toBe("Real-time updates are unavailable: refreshing every 5 seconds");
    // The refused first connect, and its one retry on WebSocket 2 s later.
    expect(h.server.sockets).toHaveLength(2);
    expect(h.server.sockets[0]?.closed).toMatchObject({ by: "server", code: 1006 });
    expect(h.server.sockets[1]?.closed).toMatchObject({ by: "server", code: 1006 });
    expect(h.polls()).toHaveLength(1);

    h.server.upgrades = "accept";
    await advance(30_000);
    expect(h.client.mode).toBe("live");
    expect(h.seen.modes).toEqual(["connecting", "polling", "live"]);
    expect(h.seen.warnings).toEqual([POLLING_WARNING, null]);
  });

  it("polls when the ws-token cannot be fetched (network down), and keeps its cursor through failed polls", async () => {
    const h = harness({ wsRetryFirstMs: 30_000 });
    h.server.failFetches = true;
    h.client.start();
    await settle();
    expect(h.client.mode).toBe("polling");
    expect(h.server.sockets).toHaveLength(0);
    await advance(10_000); // polls at 0, 5, 10 s all fail
    expect(h.polls().map((p) => p.status)).toEqual(["network_error", "network_error", "network_error"]);

    h.server.failFetches = false;
    h.server.post(h.chat.id, OTHER, "while the network was down"); // event 2
    await advance(5_000); // the poll at 15 s starts from "now" (no cursor yet): nothing is delivered twice later
    h.server.post(h.chat.id, OTHER, "after"); // event 3
    await advance(5_000);
    expect(h.polls().at(-1)?.query.after).toBe("2");
    expect(h.ids()).toEqual([3]);
  });

  it("polls every 5 s, each request carrying the cursor of what it has delivered", async () => {
    const h = harness();
    await startPolling(h);
    const start = Date.now();
    await advance(7_000);
    h.server.post(h.chat.id, OTHER, "hello"); // event 2, at 7 s
    await advance(13_000); // up to 20 s
    const polls = h.polls();
    expect(polls.map((p) => p.at - start)).toEqual([0, 5_000, 10_000, 15_000, 20_000]);
    // The first poll has no cursor (a new client starts from now); then the server's end of the log, then event 2.
    expect(polls.map((p) => p.query.after)).toEqual([undefined, "1", "1", "2", "2"]);
    expect(polls.slice(1).every((p) => p.query.limit === "500")).toBe(true);
    expect(h.ids()).toEqual([2]);
    expect(h.client.lastEventId).toBe(2);
  });

  it("reads a long backlog page by page within one poll (a full page's last_event_id is its last event)", async () => {
    const h = harness({ lastEventId: 1 });
    for (let i = 0; i < 1_203; i++) h.server.post(h.chat.id, OTHER, `m${i}`); // events 2..1204
    await startPolling(h);
    expect(h.polls().map((p) => p.query.after)).toEqual(["1", "501", "1001"]);
    expect(h.ids()).toEqual(Array.from({ length: 1_203 }, (_, i) => i + 2));
    await advance(5_000);
    expect(h.polls().map((p) => p.query.after)).toEqual(["1", "501", "1001", "1204"]);
  });

  it("reads on at once after a page the server cut short by bytes (has_more), not 5 s later", async () => {
    const h = harness({ lastEventId: 1 });
    h.server.eventsPageCut = 100;
    for (let i = 0; i < 250; i++) h.server.post(h.chat.id, OTHER, `long ${i}`); // events 2..251
    await startPolling(h);
    expect(h.polls().map((p) => p.query.after)).toEqual(["1", "101", "201"]);
    expect(h.ids()).toEqual(Array.from({ length: 250 }, (_, i) => i + 2));
  });
});

describe("WebSocket retry while polling", () => {
  it("retries after 2 s, 4 s, 8 s, 16 s, then every 30 s (±50 %, never over 30 s), polling meanwhile, and warns once", async () => {
    const h = harness();
    await startPolling(h);
    const start = Date.now();
    await advance(120_000);
    // random() = 0.5 here: each step exactly; the first two sockets are the refused first connect and its retry.
    expect(h.server.sockets.map((s) => s.createdAt - start)).toEqual([
      -2_000, 0, 2_000, 6_000, 14_000, 30_000, 60_000, 90_000, 120_000,
    ]);
    expect(h.client.mode).toBe("polling");
    expect(h.polls()).toHaveLength(25); // 0, 5, …, 120 s
    expect(h.seen.warnings).toEqual([POLLING_WARNING]);
  });

  it("spreads the retries of many clients: each step is drawn in [0.5, 1.5) of it, capped at 30 s", async () => {
    for (const [draw, first, later] of [
      [0, 1_000, 15_000],
      [0.999, 2_998, 30_000],
    ] as const) {
      const h = harness({ random: () => draw });
      await startPolling(h, Math.floor(2_000 * (0.5 + draw)));
      const start = Date.now();
      await advance(200_000);
      const gaps = h.server.sockets
        .slice(2)
        .map((s, i, all) => s.createdAt - (i === 0 ? start : all[i - 1]!.createdAt));
      expect(gaps[0]).toBe(first);
      expect(gaps.at(-1)).toBe(later);
      expect(Math.max(...gaps)).toBeLessThanOrEqual(30_000);
      h.client.stop();
    }
  });

  it("goes live at the first retry that passes, and stops polling", async () => {
    const h = harness();
    await startPolling(h);
    h.server.upgrades = "accept";
    await advance(1_999);
    expect(h.server.sockets).toHaveLength(2);
    await advance(1);
    expect(h.server.sockets).toHaveLength(3);
    expect(h.client.mode).toBe("live");
    expect(h.seen.warnings).toEqual([POLLING_WARNING, null]);
    const pollsAtLive = h.polls().length;
    await advance(5 * 60_000);
    expect(h.polls()).toHaveLength(pollsAtLive);
    expect(h.server.sockets).toHaveLength(3);
  });

  it("schedules the next retry when an attempt starts: an upgrade that hangs does not end the retries", async () => {
    const h = harness({ wsRetryFirstMs: 30_000 });
    await startPolling(h);
    h.server.upgrades = "manual"; // every retry's upgrade hangs: no open, no close
    await advance(30_000);
    expect(h.server.sockets).toHaveLength(3);
    await advance(30_000);
    expect(h.server.sockets).toHaveLength(4);
    expect(h.server.sockets[2]?.closed?.by).toBe("client"); // the hanging one was given up
    h.server.upgrades = "accept";
    await advance(30_000);
    expect(h.client.mode).toBe("live");
  });

  it("retries at once on `online`, on the tab becoming visible, and on retryNow()", async () => {
    const signals = manualConnectivity();
    const h = harness({ wsRetryFirstMs: 30_000, connectivity: signals.connectivity });
    await startPolling(h);
    for (const [i, fire] of [signals.fire.online, signals.fire.visible, () => h.client.retryNow()].entries()) {
      await advance(1_000);
      fire();
      await settle();
      expect(h.server.sockets).toHaveLength(i + 3);
      expect(h.client.mode).toBe("polling");
    }
    h.server.upgrades = "accept";
    signals.fire.online();
    await settle();
    expect(h.client.mode).toBe("live");
    h.client.stop();
    expect(signals.subscribed()).toBe(0);
  });
});

describe("resume cursor", () => {
  it("opens the retried socket with after=<last event delivered by polling>", async () => {
    const h = harness();
    await startPolling(h);
    h.server.post(h.chat.id, OTHER); // 2
    h.server.post(h.chat.id, OTHER); // 3
    await advance(5_000);
    h.server.post(h.chat.id, OTHER); // 4
    await advance(5_000);
    expect(h.ids()).toEqual([2, 3, 4]);
    h.server.upgrades = "accept";
    await advance(20_000);
    expect(h.client.mode).toBe("live");
    expect(h.server.lastSocket.after).toBe(4);
    h.server.post(h.chat.id, OTHER); // 5, live
    await settle();
    expect(h.ids()).toEqual([2, 3, 4, 5]);
  });

  it("reopens after a plain drop with after=<last event delivered>, and gets what it missed", async () => {
    const h = harness();
    await startLive(h);
    expect(h.server.sockets[0]?.after).toBeUndefined(); // a new client starts from now
    h.server.post(h.chat.id, OTHER); // 2
    h.server.post(h.chat.id, OTHER); // 3
    await settle();
    h.server.sockets[0]?.drop();
    await settle();
    h.server.post(h.chat.id, OTHER); // 4, while disconnected
    await advance(500); // backoff(1) with random 0.5: 0.5 · 1000
    expect(h.server.sockets).toHaveLength(2);
    expect(h.server.sockets[1]?.after).toBe(3);
    expect(h.client.mode).toBe("live");
    expect(h.ids()).toEqual([2, 3, 4]);
  });

  it("starts from the lastEventId it was constructed with, on WebSocket and on polling", async () => {
    const live = harness({ lastEventId: 2 });
    for (let i = 0; i < 3; i++) live.server.post(live.chat.id, OTHER); // 2, 3, 4
    await startLive(live);
    expect(live.server.sockets[0]?.after).toBe(2);
    expect(live.ids()).toEqual([3, 4]);

    const polling = harness({ lastEventId: 2 });
    for (let i = 0; i < 3; i++) polling.server.post(polling.chat.id, OTHER);
    await startPolling(polling);
    expect(polling.polls()[0]?.query.after).toBe("2");
    expect(polling.ids()).toEqual([3, 4]);
  });
});

describe("a stream that ends before the cursor (renumbered or restored)", () => {
  it("resyncs on the socket: tells the page, then delivers what comes next", async () => {
    const h = harness({ lastEventId: 1_000 });
    const resyncs: number[] = [];
    h.client.on("resync", (r) => resyncs.push(r.last_event_id));
    await startLive(h);
    expect(resyncs).toEqual([1]);
    expect(h.client.lastEventId).toBe(1);
    h.server.post(h.chat.id, OTHER); // 2
    await settle();
    expect(h.ids()).toEqual([2]);
  });

  it("resyncs while polling: the server's end below the cursor is adopted, and polling goes on from it", async () => {
    const h = harness({ lastEventId: 1_000 });
    const resyncs: number[] = [];
    h.client.on("resync", (r) => resyncs.push(r.last_event_id));
    await startPolling(h);
    expect(resyncs).toEqual([1]);
    h.server.post(h.chat.id, OTHER); // 2
    await advance(5_000);
    expect(h.polls().at(-1)?.query.after).toBe("1");
    expect(h.ids()).toEqual([2]);
  });
});

describe("exactly once, in order", () => {
  it("drops the part of a WebSocket replay that polling already delivered", async () => {
    const h = harness({ wsRetryFirstMs: 30_000 });
    h.server.upgrades = "manual";
    h.client.start();
    await settle();
    await refuseFirstConnectAndRetry(h);
    await advance(30_000); // the retry's socket is asked for with after=1 and left connecting
    const retry = h.server.lastSocket;
    expect(retry.after).toBe(1);
    h.server.post(h.chat.id, OTHER); // 2
    h.server.post(h.chat.id, OTHER); // 3
    await advance(5_000); // still polling: the poll at 35 s delivers 2 and 3
    expect(h.ids()).toEqual([2, 3]);

    retry.open(); // replays 2, 3 again (from after=1), then live
    await settle();
    h.server.post(h.chat.id, OTHER); // 4
    await settle();
    expect(retry.eventIdsSent).toEqual([2, 3, 4]);
    expect(h.client.mode).toBe("live");
    expect(h.ids()).toEqual([2, 3, 4]);
  });

  it("hands each event over once when both transports bring the same events", async () => {
    const h = harness({ wsRetryFirstMs: 30_000 });
    h.server.upgrades = "manual";
    h.client.start();
    await settle();
    await refuseFirstConnectAndRetry(h);
    for (let i = 0; i < 3; i++) h.server.post(h.chat.id, OTHER); // 2, 3, 4
    await advance(5_000);
    expect(h.ids()).toEqual([2, 3, 4]);
    const slowPoll = h.server.hold(EVENTS);
    await advance(25_000); // the poll at 30 s is held; the retry's socket is waiting
    expect(slowPoll.waiting).toBe(1);
    h.server.post(h.chat.id, OTHER); // 5
    // A server that replays its whole log (at-least-once) and a poll answered late with the same events.
    h.server.lastSocket.open({ replayFrom: 0 });
    await settle();
    slowPoll.release();
    await settle();
    expect(h.server.lastSocket.eventIdsSent).toEqual([1, 2, 3, 4, 5]);
    expect(h.client.mode).toBe("live");
    expect(h.ids()).toEqual([2, 3, 4, 5]);
  });

  it.each(["answered", "failed"])(
    "a poll still in flight from an earlier polling period (%s late) does not start a second polling loop",
    async (outcome) => {
      const h = harness({ wsRetryFirstMs: 30_000, dropsBeforePolling: 1 });
      await startPolling(h);
      const slowPoll = h.server.hold(EVENTS);
      await advance(25_000); // the poll at 25 s hangs
      h.server.upgrades = "accept";
      await advance(5_000); // 30 s: the retry goes live
      expect(h.client.mode).toBe("live");
      h.server.upgrades = "refuse";
      h.server.lastSocket.drop(); // 30 s: one drop is enough here → polling again (its poll hangs too)
      await settle();
      expect(h.client.mode).toBe("polling");
      h.server.post(h.chat.id, OTHER); // 2
      h.server.failFetches = outcome === "failed";
      slowPoll.release(); // both hanging polls are answered (or fail) now
      await settle();
      h.server.failFetches = false;
      const released = Date.now();
      const before = h.polls().length;
      await advance(20_000);
      // One loop: a poll every 5 s, not two.
      expect(
        h
          .polls()
          .slice(before)
          .map((p) => p.at - released),
      ).toEqual([5_000, 10_000, 15_000, 20_000]);
      expect(h.ids()).toEqual([2]);
      h.client.stop();
      expect(vi.getTimerCount()).toBe(0);
    },
  );

  it("keeps event ids strictly increasing, with nothing missing, across every switch", async () => {
    const h = harness({ dropsBeforePolling: 2, wsRetryFirstMs: 30_000 });
    const post = (n = 1) => {
      for (let i = 0; i < n; i++) h.server.post(h.chat.id, i % 2 ? ME : OTHER);
    };
    await startLive(h);
    post(3);
    await settle();
    h.server.lastSocket.drop(); // drop 1 → backoff
    post(2);
    await advance(500);
    expect(h.client.mode).toBe("live");
    post(1);
    h.server.lastSocket.closeWith(1001, "server restart"); // after the going-away jitter: 1.5 s here
    post(2);
    await advance(1_500);
    expect(h.client.mode).toBe("live");
    post(1);
    h.server.upgrades = "refuse";
    h.server.lastSocket.closeWith(1011); // drop 2 → polling
    post(2);
    await settle();
    expect(h.client.mode).toBe("polling");
    await advance(5_000);
    post(3);
    h.server.upgrades = "manual";
    await advance(25_000); // 30 s: retry socket waiting
    post(2);
    await advance(5_000); // polled
    post(1);
    h.server.lastSocket.open({ replayFrom: 3 }); // overlapping replay
    await settle();
    expect(h.client.mode).toBe("live");
    post(2);
    await settle();
    const all = h.server.eventsFor(ME).map((e) => e.event_id);
    expect(all).toHaveLength(20);
    expect(h.ids()).toEqual(all.slice(1)); // everything after chat_created, which predates the client
    expectStrictlyIncreasing(h.ids());
  });
});

describe("401: signed out", () => {
  it("stops for good when the ws-token is refused: offline, fatal, no more requests or sockets", async () => {
    const h = harness();
    h.server.wsTokenUnauthorized = true;
    h.client.start();
    await settle();
    expect(h.client.mode).toBe("offline");
    expect(h.seen.modes).toEqual(["connecting", "offline"]);
    expect(h.seen.fatal).toEqual([{ code: "unauthorized", message: "access token refused" }]);
    const requests = h.server.requests.length;
    await advance(10 * 60_000);
    expect(h.server.requests).toHaveLength(requests);
    expect(h.server.sockets).toHaveLength(0);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("stops polling too when the 30 s retry's ws-token is refused", async () => {
    const h = harness({ wsRetryFirstMs: 30_000 });
    await startPolling(h);
    await advance(10_000);
    h.server.wsTokenUnauthorized = true;
    await advance(20_000);
    expect(h.client.mode).toBe("offline");
    expect(h.seen.fatal).toHaveLength(1);
    const requests = h.server.requests.length;
    await advance(10 * 60_000);
    expect(h.server.requests).toHaveLength(requests);
    expect(h.server.sockets).toHaveLength(2);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("stops when a poll is answered 401 again with the token the provider gives on refresh", async () => {
    const asked: boolean[] = [];
    const h = harness({
      getAccessToken: ({ refresh }) => {
        asked.push(refresh);
        return "expired";
      },
    });
    h.client.start();
    await settle();
    expect(h.client.mode).toBe("offline");
    expect(h.seen.fatal).toHaveLength(1);
    // Asked, refused, asked to refresh, refused again: then no more.
    expect(asked).toEqual([false, true]);
    await advance(10 * 60_000);
    expect(h.server.requests).toHaveLength(2);
  });
});

describe("access tokens that expire", () => {
  /** A provider as a monolith's page has one: a token it keeps, a new one (of `lifetimeS`) when asked to refresh. */
  function refreshingProvider(server: FakeChatServer, lifetimeS: number) {
    const provider = {
      token: server.expiringAccessToken(ME, lifetimeS),
      refreshes: 0,
      get: ({ refresh }: { refresh: boolean }) => {
        if (refresh) {
          provider.refreshes += 1;
          provider.token = server.expiringAccessToken(ME, lifetimeS);
        }
        return provider.token;
      },
    };
    return provider;
  }

  /** A client whose page holds tokens of `lifetimeS` and fetches a new one when asked (`refreshingProvider`). */
  function harnessWithTokens(lifetimeS: number) {
    let provider!: ReturnType<typeof refreshingProvider>;
    const h = harness((server) => {
      provider = refreshingProvider(server, lifetimeS);
      return { getAccessToken: provider.get };
    });
    return { h, provider };
  }

  it("keeps polling and sending through many 5-second tokens, refreshing each before it expires", async () => {
    const { h, provider } = harnessWithTokens(5);
    const { client } = h;
    const fatal = h.seen.fatal;
    await startPolling(h);
    for (let i = 0; i < 12; i += 1) {
      const sent = watch(client.send(h.chat.id, `through token ${i}`));
      await advance(5_000);
      expect(sent.value?.content).toBe(`through token ${i}`);
    }
    expect(fatal).toEqual([]);
    expect(client.mode).toBe("polling");
    // A minute of 5-second tokens: refreshed ahead (a quarter of their life before exp), so none was refused.
    expect(provider.refreshes).toBeGreaterThanOrEqual(12);
    expect(h.server.requests.filter((r) => r.status === 401)).toEqual([]);
  });

  it("refreshes on a 401, sends the refused request again, and the next ones with the new token", async () => {
    const { h, provider } = harnessWithTokens(3_600);
    const { client } = h;
    await startPolling(h); // Sends go over REST.
    // The gateway refuses the token from now on (revoked, or the clocks disagree): 401 until a new one is used.
    h.server.refuseToken(provider.token);
    const sends = [1, 2, 3].map((i) => watch(client.send(h.chat.id, `after the refusal ${i}`)));
    await settle();
    expect(sends.map((s) => s.error)).toEqual([undefined, undefined, undefined]);
    expect(sends.every((s) => s.done)).toBe(true);
    expect(provider.refreshes).toBe(1);
    const posts = h.server.requests.filter((r) => r.path === `/api/v1/chats/${h.chat.id}/messages`);
    // The first refused, then stored with the new token; the others (sends go one at a time) with it at once.
    expect(posts.map((r) => r.status)).toEqual([401, 201, 201, 201]);
    expect(h.seen.fatal).toEqual([]);
  });

  it("stops with fatal when the provider gives up (AccessTokenRefusedError), and goes on when it only fails", async () => {
    let mode: "works" | "fails" | "gives-up" = "works";
    const h = harness((server) => {
      const provider = refreshingProvider(server, 5);
      return {
        getAccessToken: (context) => {
          if (context.refresh && mode === "fails") throw new TypeError("Failed to fetch");
          if (context.refresh && mode === "gives-up") throw new AccessTokenRefusedError("signed out");
          return provider.get(context);
        },
      };
    });
    const { client } = h;
    const fatal = h.seen.fatal;
    await startPolling(h);
    // The provider's network fails for a while: polls fail like the network's, nothing stops.
    mode = "fails";
    await advance(20_000);
    expect(fatal).toEqual([]);
    expect(client.mode).toBe("polling");
    mode = "works";
    const sent = watch(client.send(h.chat.id, "after the provider came back"));
    await advance(10_000);
    expect(sent.error).toBeUndefined();
    expect(sent.value?.content).toBe("after the provider came back");
    // Signed out: the next refresh gives up, and the client stops.
    mode = "gives-up";
    await advance(20_000);
    expect(fatal).toEqual([{ code: "access_token_refused", message: "signed out" }]);
    expect(client.mode).toBe("offline");
  });
});

describe("the client side of a reconnect storm", () => {
  it("tries a refused first connect once more on WebSocket, 1-3 s later, and goes live without ever polling", async () => {
    for (const [draw, delay] of [
      [0, 1_000],
      [0.5, 2_000],
      [0.999, 2_998],
    ] as const) {
      const h = harness({ random: () => draw });
      h.server.upgrades = "refuse"; // a busy server: the browser sees only a close before the greeting
      h.client.start();
      await settle();
      expect(h.server.sockets).toHaveLength(1);
      expect(h.client.mode).toBe("connecting");
      h.server.upgrades = "accept";
      await advance(delay - 1);
      expect(h.server.sockets).toHaveLength(1);
      await advance(1);
      expect(h.server.sockets).toHaveLength(2);
      expect(h.client.mode).toBe("live");
      expect(h.polls()).toHaveLength(0);
      expect(h.seen.warnings).toEqual([]);
      h.client.stop();
    }
  });

  it("honours a ws-token's Retry-After: the next try comes no sooner (drawn in [1, 1.5) of it), on WebSocket", async () => {
    const h = harness({ random: () => 0.5 });
    h.server.busyPaths.set("/api/v2/ws-token", 4_000);
    h.client.start();
    await settle();
    expect(h.client.mode).toBe("connecting");
    expect(h.polls()).toHaveLength(0);
    h.server.busyPaths.clear();
    await advance(4_999); // 4 s × 1.25
    expect(h.server.requestsTo("POST", "/api/v2/ws-token")).toHaveLength(1);
    await advance(1);
    expect(h.server.requestsTo("POST", "/api/v2/ws-token")).toHaveLength(2);
    expect(h.client.mode).toBe("live");
    expect(h.polls()).toHaveLength(0);
  });

  it("while reconnecting, waits out a ws-token's Retry-After longer than its backoff", async () => {
    const h = harness({ random: () => 0.5 });
    await startLive(h);
    h.server.busyPaths.set("/api/v2/ws-token", 3_000);
    h.server.lastSocket.drop(); // backoff [0, 1 s): 500 ms with random() = 0.5
    await advance(500);
    expect(h.server.requestsTo("POST", "/api/v2/ws-token")).toHaveLength(2);
    h.server.busyPaths.clear();
    await advance(3_749); // 3 s × 1.25, not the 1 s of the next backoff step
    expect(h.server.requestsTo("POST", "/api/v2/ws-token")).toHaveLength(2);
    await advance(1);
    expect(h.server.requestsTo("POST", "/api/v2/ws-token")).toHaveLength(3);
    expect(h.client.mode).toBe("live");
  });

  it("polls at once when a first connect's ws-token asks for a long wait (the page is not left without data)", async () => {
    const h = harness({ random: () => 0.5 });
    h.server.busyPaths.set("/api/v2/ws-token", 30_000);
    h.client.start();
    await settle();
    expect(h.client.mode).toBe("polling");
  });

  it("reads Retry-After as seconds or an HTTP date, caps it at 60 s, and ignores what it cannot read", () => {
    expect(parseRetryAfter("3")).toBe(3_000);
    expect(parseRetryAfter(" 0 ")).toBe(0);
    expect(parseRetryAfter("86400")).toBe(60_000);
    expect(parseRetryAfter(new Date(Date.now() + 5_000).toUTCString())).toBeGreaterThan(3_000);
    expect(parseRetryAfter(new Date(Date.now() - 5_000).toUTCString())).toBe(0);
    for (const unreadable of [null, "", "soon", "1.5", "-1"]) expect(parseRetryAfter(unreadable)).toBeUndefined();
  });

  it("still polls at once when the first connect hangs or the network is down (nothing to retry soon)", async () => {
    const h = harness();
    h.server.failFetches = true;
    h.client.start();
    await settle();
    expect(h.client.mode).toBe("polling");
  });

  it("polls a busy server no sooner than its Retry-After", async () => {
    const h = harness({ wsRetryFirstMs: 60_000, wsRetryIntervalMs: 60_000 });
    await startPolling(h);
    expect(h.polls()).toHaveLength(1);
    h.server.busyPaths.set(EVENTS, 12_000);
    await advance(5_000);
    expect(h.polls()).toHaveLength(2); // answered 503, Retry-After 12 s
    h.server.busyPaths.clear();
    await advance(11_999);
    expect(h.polls()).toHaveLength(2);
    await advance(1);
    expect(h.polls()).toHaveLength(3);
    await advance(5_000);
    expect(h.polls()).toHaveLength(4); // back to every 5 s
  });
});

describe("reconnecting", () => {
  it("reconnects after 1001 within the going-away jitter (no backoff), resuming, without a warning", async () => {
    for (const draw of [0, 0.5, 0.999]) {
      const h = harness({ random: () => draw });
      await startLive(h);
      h.server.post(h.chat.id, OTHER); // 2
      await settle();
      const closedAt = Date.now();
      h.server.lastSocket.closeWith(1001, "going away");
      await advance(3_000);
      expect(h.server.sockets).toHaveLength(2);
      // Spread over 3 s, so that every socket of a restarting server does not come back at once.
      expect(h.server.lastSocket.createdAt - closedAt).toBe(Math.max(1, Math.floor(draw * 3_000)));
      expect(h.server.lastSocket.after).toBe(2);
      expect(h.client.mode).toBe("live");
      expect(h.seen.modes).toEqual(["connecting", "live", "connecting", "live"]);
      expect(h.seen.warnings).toEqual([]);
      h.client.stop();
    }
  });

  it("waits a full-jitter backoff in [0, min(max, min·2^n)) after other closes", async () => {
    const draws = [0.999, 0.25, 0, 0.75, 0.5, 0.999];
    const queue = [...draws];
    const h = harness({
      dropsBeforePolling: 10,
      backoffMinMs: 500,
      backoffMaxMs: 15_000,
      reconnectingMaxMs: 60_000,
      random: () => queue.shift() ?? 0.5,
    });
    await startLive(h);
    const codes = [1006, 1011, 1013, 1000, 1006, 1011];
    for (let n = 1; n <= draws.length; n++) {
      const ceiling = Math.min(15_000, 500 * 2 ** n);
      const expected = Math.max(1, Math.floor((draws[n - 1] as number) * ceiling));
      expect(expected).toBeGreaterThanOrEqual(0);
      expect(expected).toBeLessThan(ceiling);
      const closedAt = Date.now();
      const code = codes[n - 1] as number;
      if (code === 1006) h.server.lastSocket.drop();
      else h.server.lastSocket.closeWith(code);
      await settle();
      expect(h.client.mode).toBe("connecting");
      await advance(expected - 1);
      expect(h.server.sockets).toHaveLength(n);
      await advance(1);
      expect(h.server.sockets).toHaveLength(n + 1);
      expect(h.server.lastSocket.createdAt - closedAt).toBe(expected);
      expect(h.client.mode).toBe("live");
    }
  });

  it("polls after dropsBeforePolling drops in a row, and retries WebSocket 2 s later", async () => {
    const h = harness(); // dropsBeforePolling: 3
    await startLive(h);
    h.server.lastSocket.drop();
    await advance(500); // backoff(1): 0.5 · 1000
    h.server.lastSocket.drop();
    await advance(1_000); // backoff(2): 0.5 · 2000
    expect(h.server.sockets).toHaveLength(3);
    expect(h.client.mode).toBe("live");
    h.server.lastSocket.drop();
    await settle();
    expect(h.client.mode).toBe("polling");
    expect(h.seen.warnings).toEqual([POLLING_WARNING]);
    expect(h.polls()).toHaveLength(1);
    await advance(1_999);
    expect(h.server.sockets).toHaveLength(3);
    await advance(1);
    expect(h.server.sockets).toHaveLength(4);
    expect(h.client.mode).toBe("live");
  });

  it("counts only drops in a row: a socket that stayed up 10 s starts the count again", async () => {
    const h = harness();
    await startLive(h);
    h.server.lastSocket.drop();
    await advance(500);
    h.server.lastSocket.drop();
    await advance(1_000);
    await advance(10_000); // stable
    h.server.lastSocket.drop();
    await advance(500); // drop 1 again: backoff(1)
    expect(h.client.mode).toBe("live");
    h.server.lastSocket.drop();
    await advance(1_000);
    expect(h.client.mode).toBe("live");
    expect(h.polls()).toHaveLength(0);
  });
});

describe("send", () => {
  it("sends over the socket while live; the ack resolves it", async () => {
    const h = harness();
    await startLive(h);
    const sent = watch(h.client.send(h.chat.id, "hello", "cm-1"));
    await settle();
    expect(sent.error).toBeUndefined();
    expect(sent.value).toMatchObject({ chat_id: h.chat.id, sender_id: ME, content: "hello", client_msg_id: "cm-1" });
    expect(h.server.lastSocket.sentOfType("send_message")).toEqual([
      { type: "send_message", chat_id: h.chat.id, content: "hello", client_msg_id: "cm-1" },
    ]);
    expect(h.sends()).toHaveLength(0);
    expect(h.server.messagesIn(h.chat.id)).toHaveLength(1);
    expect(h.seen.events.at(-1)).toMatchObject({ type: "new_message", message: { client_msg_id: "cm-1" } });
  });

  it("sends over REST while polling", async () => {
    const h = harness();
    await startPolling(h);
    const sent = watch(h.client.send(h.chat.id, "hello", "cm-1"));
    await settle();
    expect((sent.value as Message).client_msg_id).toBe("cm-1");
    expect(h.sends().map((r) => [r.status, r.body])).toEqual([[201, { content: "hello", client_msg_id: "cm-1" }]]);
  });

  it.each([
    ["the frame was lost", "drop-frame", 201],
    ["the message was stored but the ack was lost", "store-without-ack", 200],
  ] as const)(
    "falls back to REST with the same client_msg_id when the socket closes before the ack (%s)",
    async (_, answer, status) => {
      const h = harness();
      await startLive(h);
      h.server.sendAnswer = answer;
      const sent = watch(h.client.send(h.chat.id, "hello", "cm-2"));
      await settle();
      h.server.lastSocket.drop();
      await settle();
      expect(sent.done).toBe(false);
      await advance(250); // backoff(0) with random 0.5; the socket comes back only at 500 ms
      expect(h.sends().map((r) => [r.status, (r.body as { client_msg_id: string }).client_msg_id])).toEqual([
        [status, "cm-2"],
      ]);
      const stored = h.server.messagesIn(h.chat.id);
      expect(stored).toHaveLength(1);
      expect(sent.value).toEqual(stored[0]);
    },
  );

  it.each([
    ["the ack was lost", "store-without-ack", 200],
    ["the frame was lost", "drop-frame", 201],
  ] as const)(
    "falls back to REST with the same client_msg_id when the ack times out (%s)",
    async (_, answer, status) => {
      const h = harness({ ackTimeoutMs: 10_000 });
      await startLive(h);
      h.server.sendAnswer = answer;
      const sent = watch(h.client.send(h.chat.id, "hello", "cm-3"));
      await advance(9_999);
      expect(sent.done).toBe(false);
      expect(h.sends()).toHaveLength(0);
      await advance(1);
      // No ack in time: the socket passes nothing. It is closed, the message goes over REST at once…
      expect(h.sends().map((r) => [r.status, (r.body as { client_msg_id: string }).client_msg_id])).toEqual([
        [status, "cm-3"],
      ]);
      expect(h.server.sockets[0]?.closed).toMatchObject({ by: "client", code: 4000 });
      expect(h.server.sockets[0]?.sentOfType("send_message")).toHaveLength(1);
      const stored = h.server.messagesIn(h.chat.id);
      expect(stored).toHaveLength(1);
      expect(sent.value).toEqual(stored[0]);
      // … and the client reconnects (backoff 500 ms here), resuming.
      await advance(500);
      expect(h.server.sockets).toHaveLength(2);
      expect(h.client.mode).toBe("live");
    },
  );

  it("rejects a validation error at once, without retrying (WebSocket and REST)", async () => {
    const h = harness({ dropsBeforePolling: 1 });
    await startLive(h);
    const overSocket = watch(h.client.send(h.chat.id, "   ", "cm-4"));
    await settle();
    expect(overSocket.error).toBeInstanceOf(ChatApiError);
    expect(overSocket.error).toMatchObject({ status: 400, code: "validation_failed" });

    h.server.upgrades = "refuse";
    h.server.lastSocket.drop();
    await settle();
    expect(h.client.mode).toBe("polling");
    const overRest = watch(h.client.send(h.chat.id, "x".repeat(4001), "cm-5"));
    await settle();
    expect(overRest.error).toMatchObject({ status: 400, code: "validation_failed" });

    h.server.upgrades = "accept";
    await advance(60_000);
    expect(h.server.sockets[0]?.sentOfType("send_message")).toHaveLength(1);
    expect(h.sends()).toHaveLength(1);
    expect(h.server.messagesIn(h.chat.id)).toHaveLength(0);
    expect(h.client.mode).toBe("live");
  });

  it("rejects a send refused `blocked` at once with 403 (WebSocket and REST), never retried; the next send goes", async () => {
    const h = harness({ dropsBeforePolling: 1 });
    await startLive(h);
    h.server.refuseNextSends({ code: "blocked", message: "one of you has blocked the other" });
    const overSocket = watch(h.client.send(h.chat.id, "are you there?", "cm-b1"));
    const after = watch(h.client.send(h.chat.id, "after the unblock", "cm-b2"));
    await settle();
    // The same status as REST answers, so that a page tells "blocked" from a bad request either way.
    expect(overSocket.error).toBeInstanceOf(ChatApiError);
    expect(overSocket.error).toMatchObject({ status: 403, code: "blocked", retryable: false });
    // The refusal does not hold the outbox: the send made after it is stored.
    expect(after.value).toMatchObject({ client_msg_id: "cm-b2" });

    h.server.upgrades = "refuse";
    h.server.lastSocket.drop();
    await settle();
    expect(h.client.mode).toBe("polling");
    h.server.refuseNextSends({ code: "blocked" });
    const overRest = watch(h.client.send(h.chat.id, "still there?", "cm-b3"));
    await settle();
    expect(overRest.error).toMatchObject({ status: 403, code: "blocked" });
    await advance(60_000);
    // Tried once each: nothing retries a block.
    expect(h.server.sockets[0]?.sentOfType("send_message").map((f) => f.client_msg_id)).toEqual(["cm-b1", "cm-b2"]);
    expect(h.sends().map((r) => [r.status, (r.body as { client_msg_id: string }).client_msg_id])).toEqual([
      [403, "cm-b3"],
    ]);
    expect(h.server.messagesIn(h.chat.id).map((m) => m.client_msg_id)).toEqual(["cm-b2"]);
  });

  it("waits retry_after_ms after rate_limited over the socket, then sends again", async () => {
    const h = harness();
    await startLive(h);
    h.server.refuseNextSends({ code: "rate_limited", retryAfterMs: 3_000 });
    const sent = watch(h.client.send(h.chat.id, "hello", "cm-6"));
    await settle();
    const socket = h.server.lastSocket;
    expect(socket.sentOfType("send_message")).toHaveLength(1);
    await advance(2_999);
    expect(socket.sentOfType("send_message")).toHaveLength(1);
    expect(sent.done).toBe(false);
    await advance(1);
    expect(socket.sentOfType("send_message").map((f) => f.client_msg_id)).toEqual(["cm-6", "cm-6"]);
    expect(sent.value).toMatchObject({ client_msg_id: "cm-6" });
    expect(h.server.messagesIn(h.chat.id)).toHaveLength(1);
  });

  it("waits Retry-After after a REST 429, then sends again", async () => {
    const h = harness();
    await startPolling(h);
    h.server.refuseNextSends({ code: "rate_limited", retryAfterMs: 3_000 });
    const start = Date.now();
    const sent = watch(h.client.send(h.chat.id, "hello", "cm-7"));
    await advance(3_000);
    expect(h.sends().map((r) => [r.at - start, r.status])).toEqual([
      [0, 429],
      [3_000, 201],
    ]);
    expect(sent.value).toMatchObject({ client_msg_id: "cm-7" });
  });

  it.each(["internal_error", "storage_unavailable"])(
    "retries a send the server could not handle (%s over the socket) until stored",
    async (code) => {
      const h = harness();
      await startLive(h);
      h.server.refuseNextSends({ code });
      const sent = watch(h.client.send(h.chat.id, "hello", "cm-8"));
      await advance(1_000);
      expect(sent.error).toBeUndefined();
      expect(sent.value).toMatchObject({ client_msg_id: "cm-8" });
      expect(h.server.messagesIn(h.chat.id)).toHaveLength(1);
    },
  );

  it("keeps retrying over a failing network with the same client_msg_id, and stores once", async () => {
    const h = harness();
    await startPolling(h);
    h.server.failFetches = true;
    const sent = watch(h.client.send(h.chat.id, "hello", "cm-9"));
    await advance(20_000);
    expect(sent.done).toBe(false);
    h.server.failFetches = false;
    await advance(20_000);
    expect(sent.value).toMatchObject({ client_msg_id: "cm-9" });
    const attempts = h.sends();
    expect(attempts.length).toBeGreaterThan(2);
    expect(new Set(attempts.map((r) => (r.body as { client_msg_id: string }).client_msg_id))).toEqual(
      new Set(["cm-9"]),
    );
    expect(h.server.messagesIn(h.chat.id)).toHaveLength(1);
  });
});

describe("typing, presence, unread", () => {
  it("throttles only repeated 'typing' (one per 2 s per chat); a change of state always goes out; none while polling", async () => {
    const h = harness({ dropsBeforePolling: 1 });
    const second = h.server.addChat(ME, 3);
    await startLive(h);
    const typingFrames = () => h.server.lastSocket.sentOfType("typing").map((f) => [f.chat_id, f.is_typing]);
    h.client.typing(h.chat.id, false); // nothing to stop yet: not sent
    h.client.typing(h.chat.id, true);
    await advance(500);
    h.client.typing(h.chat.id, true); // a keyboard's repeat within 2 s: throttled
    h.client.typing(second.id, true); // another chat: its own state
    expect(typingFrames()).toEqual([
      [h.chat.id, true],
      [second.id, true],
    ]);
    h.client.typing(h.chat.id, false); // stopped 0.5 s after starting: goes out at once
    h.client.typing(h.chat.id, false); // already stopped: not again
    h.client.typing(h.chat.id, true); // typing again right after: at once
    expect(typingFrames().slice(2)).toEqual([
      [h.chat.id, false],
      [h.chat.id, true],
    ]);
    await advance(1_999);
    h.client.typing(h.chat.id, true);
    expect(typingFrames()).toHaveLength(4);
    await advance(1);
    h.client.typing(h.chat.id, true); // 2 s after the last one that went out
    expect(typingFrames()).toHaveLength(5);

    h.server.upgrades = "refuse";
    h.server.lastSocket.drop();
    await settle();
    expect(h.client.mode).toBe("polling");
    h.client.typing(h.chat.id, false);
    h.client.typing(second.id, true);
    expect(h.server.sockets.flatMap((s) => s.sentOfType("typing"))).toHaveLength(5);
  });

  it("sends neither typing nor messages over a retry socket that is open but not yet greeted", async () => {
    const h = harness();
    h.server.upgrades = "manual";
    h.client.start();
    await settle();
    h.server.lastSocket.refuse();
    await settle();
    await advance(30_000);
    const retry = h.server.lastSocket;
    retry.open({ greet: false });
    await settle();
    expect(retry.readyState).toBe(1);
    expect(h.client.mode).toBe("polling");
    h.client.typing(h.chat.id, true);
    const sent = watch(h.client.send(h.chat.id, "hello", "cm-12"));
    await settle();
    expect(retry.sent).toEqual([]);
    expect(h.sends()).toHaveLength(1);
    expect(sent.value).toMatchObject({ client_msg_id: "cm-12" });

    retry.greet();
    await settle();
    expect(h.client.mode).toBe("live");
    h.client.typing(h.chat.id, true);
    expect(retry.sentOfType("typing")).toHaveLength(1);
  });

  it("hands typing and presence from the server to the page", async () => {
    const h = harness();
    await startLive(h);
    h.server.pushTo(ME, { type: "typing", chat_id: h.chat.id, user_id: OTHER, is_typing: true });
    h.server.pushTo(ME, { type: "presence", user_id: OTHER, online: false });
    await settle();
    expect(h.seen.typing).toEqual([{ chat_id: h.chat.id, user_id: OTHER, is_typing: true }]);
    expect(h.seen.presence).toEqual([{ user_id: OTHER, online: false }]);
    expect(h.seen.events).toEqual([]);
  });

  it("markRead updates the unread counts", async () => {
    const h = harness();
    const [m1, , m3] = [1, 2, 3].map(() => h.server.post(h.chat.id, OTHER));
    await startLive(h); // going live refreshes the counts
    await settle();
    expect(h.client.unread).toEqual({ total: 3, chats: { [h.chat.id]: 3 } });

    await h.client.markRead(h.chat.id, (m1 as Message).id);
    expect(h.client.unread).toEqual({ total: 2, chats: { [h.chat.id]: 2 } });
    expect(h.server.requestsTo("POST", `/api/v1/chats/${h.chat.id}/read`).at(-1)?.body).toEqual({
      message_id: (m1 as Message).id,
    });
    await h.client.markRead(h.chat.id, (m3 as Message).id);
    expect(h.client.unread).toEqual({ total: 0, chats: {} });
    expect(h.seen.unread.at(-1)).toEqual({ total: 0, chats: {} });

    h.server.post(h.chat.id, OTHER); // a new message: the badge follows within a second
    await advance(1_000);
    expect(h.client.unread).toEqual({ total: 1, chats: { [h.chat.id]: 1 } });
  });

  it("reads the unread counts at most once a second, however many events arrive", async () => {
    const h = harness();
    await startLive(h);
    await settle();
    const reads = () => h.server.requestsTo("GET", "/api/v1/chats/unread").length;
    const before = reads();
    for (let i = 0; i < 40; i++) {
      h.server.post(h.chat.id, OTHER); // 40 events over 4 s
      await advance(100);
    }
    await advance(1_000);
    const during = reads() - before;
    expect(during).toBeGreaterThanOrEqual(4);
    expect(during).toBeLessThanOrEqual(5);
    expect(h.client.unread.total).toBe(40); // and the last read saw them all
  });
});

describe("stop()", () => {
  it("clears every timer, closes the socket and rejects an unacknowledged send", async () => {
    const h = harness();
    await startLive(h);
    h.server.sendAnswer = "store-without-ack";
    const sent = watch(h.client.send(h.chat.id, "hello", "cm-10"));
    h.server.post(h.chat.id, OTHER); // schedules an unread refresh
    await settle();
    expect(vi.getTimerCount()).toBeGreaterThan(0);
    const socket = h.server.lastSocket;
    h.client.stop();
    await settle();
    expect(vi.getTimerCount()).toBe(0);
    expect(socket.closed).toMatchObject({ by: "client", code: 1000 });
    expect(h.client.mode).toBe("offline");
    expect(sent.error).toMatchObject({ code: "client_stopped" });
    const requests = h.server.requests.length;
    await advance(10 * 60_000);
    expect(h.server.requests).toHaveLength(requests);
    expect(h.server.sockets).toHaveLength(1);
  });

  it("clears the polling and retry timers", async () => {
    const h = harness();
    await startPolling(h);
    await advance(7_000);
    h.client.stop();
    expect(vi.getTimerCount()).toBe(0);
    const requests = h.server.requests.length;
    await advance(10 * 60_000);
    expect(h.server.requests).toHaveLength(requests);
  });

  it("clears the reconnect backoff timer", async () => {
    const h = harness();
    await startLive(h);
    h.server.lastSocket.drop();
    await settle();
    expect(h.client.mode).toBe("connecting");
    h.client.stop();
    expect(vi.getTimerCount()).toBe(0);
  });

  it("clears the wait of a send that was told to retry later, and rejects it at once", async () => {
    const h = harness();
    await startLive(h);
    h.server.refuseNextSends({ code: "rate_limited", retryAfterMs: 30_000 });
    const sent = watch(h.client.send(h.chat.id, "hello", "cm-11"));
    await advance(1_000);
    h.client.stop();
    expect(vi.getTimerCount()).toBe(0);
    await settle();
    expect(sent.error).toMatchObject({ code: "client_stopped" });
    expect(h.server.messagesIn(h.chat.id)).toHaveLength(0);
  });

  it("can start again after stop, resuming from its cursor", async () => {
    const h = harness();
    await startLive(h);
    h.server.post(h.chat.id, OTHER); // 2
    await settle();
    h.client.stop();
    h.server.post(h.chat.id, OTHER); // 3
    h.client.start();
    await settle();
    expect(h.server.lastSocket.after).toBe(2);
    expect(h.ids()).toEqual([2, 3]);
  });
});

describe("real networks: hanging upgrades, dead links, blips", () => {
  it("gives a first connect that hangs 8 s (upgrade swallowed), then polls with the warning", async () => {
    const h = harness();
    h.server.upgrades = "manual";
    h.client.start();
    await advance(7_999);
    expect(h.client.mode).toBe("connecting");
    await advance(1);
    expect(h.server.sockets[0]?.closed).toMatchObject({ by: "client", code: 4000 });
    expect(h.client.mode).toBe("polling");
    expect(h.seen.warnings).toEqual([POLLING_WARNING]);
    expect(h.polls()).toHaveLength(1);
  });

  it("gives up a connect whose ws-token request hangs, at the same deadline", async () => {
    const h = harness();
    const hung = h.server.hold("/api/v2/ws-token");
    h.client.start();
    await advance(8_000);
    expect(h.client.mode).toBe("polling");
    expect(h.server.sockets).toHaveLength(0);
    hung.release(); // the late answer opens nothing: that attempt was given up
    await settle();
    expect(h.server.sockets).toHaveLength(0);
  });

  it("finds a dead link (TCP up, nothing passes): a ping after 20 s of silence, dead 10 s later, reconnects and resumes", async () => {
    const h = harness();
    await startLive(h);
    const first = h.server.lastSocket;
    first.blackHole();
    h.server.post(h.chat.id, OTHER); // 2: lost in the black hole
    await advance(19_999);
    expect(first.sentOfType("ping")).toHaveLength(0);
    await advance(1);
    expect(first.sentOfType("ping")).toHaveLength(1);
    expect(h.client.mode).toBe("live");
    await advance(9_999);
    expect(h.client.mode).toBe("live");
    await advance(1);
    expect(first.closed).toMatchObject({ by: "client", code: 4000 });
    await advance(500); // backoff(1) with random 0.5
    expect(h.client.mode).toBe("live");
    expect(h.server.lastSocket.after).toBe(1);
    expect(h.ids()).toEqual([2]);
  });

  it("keeps a quiet socket whose server answers pings: one ping per 20 s of silence, never closed", async () => {
    const h = harness();
    await startLive(h);
    await advance(5 * 60_000);
    expect(h.server.sockets).toHaveLength(1);
    expect(h.server.lastSocket.sentOfType("ping")).toHaveLength(15);
    expect(h.client.mode).toBe("live");
  });

  it("checks the clock, not timer counts: a tab whose timers were throttled finds a dead socket when it is visible again", async () => {
    let clock = 0;
    const frozen = { setTimeout: () => 0, clearTimeout: () => {}, now: () => clock }; // background tab: no timer fires
    const signals = manualConnectivity();
    const h = harness({ timers: frozen, connectivity: signals.connectivity });
    h.client.start();
    await vi.advanceTimersByTimeAsync(0);
    expect(h.client.mode).toBe("live");
    const first = h.server.lastSocket;
    first.blackHole();
    clock += 60_000; // a minute in the background, the socket silent
    signals.fire.visible();
    expect(first.sentOfType("ping")).toHaveLength(1); // quiet for more than 20 s: asked at once
    clock += 10_000;
    signals.fire.visible();
    expect(first.closed).toMatchObject({ by: "client", code: 4000 });
    expect(h.client.mode).toBe("connecting");
  });

  it("asks the server for a sign of life when the browser says it went offline", async () => {
    const signals = manualConnectivity();
    const h = harness({ connectivity: signals.connectivity });
    await startLive(h);
    h.server.lastSocket.blackHole();
    await advance(3_000);
    signals.fire.offline();
    expect(h.server.lastSocket.sentOfType("ping")).toHaveLength(1);
    await advance(10_000);
    expect(h.server.sockets[0]?.closed).toMatchObject({ by: "client", code: 4000 });
  });

  it("rides out a 2 s outage: reconnects keep backing off instead of polling, and it is live again within 2 s of the network", async () => {
    const h = harness();
    await startLive(h);
    h.server.upgrades = "refuse";
    h.server.failFetches = true;
    h.server.lastSocket.drop(); // t = 0: the network goes
    await advance(2_000);
    h.server.upgrades = "accept";
    h.server.failFetches = false; // t = 2 s: back
    await advance(2_000);
    expect(h.client.mode).toBe("live");
    expect(h.seen.modes).not.toContain("polling");
    expect(h.seen.warnings).toEqual([]);
  });

  it("polls after three failed reconnects in a row, or after 10 s of reconnecting, whichever is first", async () => {
    const refused = harness();
    await startLive(refused);
    refused.server.upgrades = "refuse";
    refused.server.lastSocket.drop();
    await advance(500 + 1_000 + 2_000); // backoffs 1, 2, 3 (random 0.5): three refused attempts
    expect(refused.client.mode).toBe("polling");
    expect(refused.server.sockets).toHaveLength(4);

    const hanging = harness();
    await startLive(hanging);
    hanging.server.upgrades = "manual"; // reconnects hang until the connect deadline
    hanging.server.lastSocket.drop();
    await advance(9_999);
    expect(hanging.client.mode).toBe("connecting");
    await advance(1);
    expect(hanging.client.mode).toBe("polling");
    expect(hanging.seen.warnings).toEqual([POLLING_WARNING]);
  });
});

describe("the outbox", () => {
  it("stores messages typed during an outage in the order they were typed, one request at a time", async () => {
    // Backoffs that differ from try to try: sends retried each on its own would overtake one another.
    const draws = [0.9, 0.1, 0.6, 0.3, 0.8, 0.2];
    let n = 0;
    const h = harness({ dropsBeforePolling: 1, random: () => draws[n++ % draws.length]! });
    await startLive(h);
    h.server.failFetches = true;
    h.server.upgrades = "refuse";
    h.server.lastSocket.drop();
    await settle();
    const sent = ["one", "two", "three", "four", "five"].map((text) => watch(h.client.send(h.chat.id, text)));
    await advance(20_000); // failing meanwhile, each with its own backoff
    h.server.failFetches = false;
    await advance(10_000);
    expect(sent.every((s) => s.done && s.error === undefined)).toBe(true);
    expect(h.server.messagesIn(h.chat.id).map((m) => m.content)).toEqual(["one", "two", "three", "four", "five"]);
    // Only the head of the outbox is ever tried: every failed try was "one"'s until it was stored.
    const tried = h.sends().map((r) => (r.body as { content: string }).content);
    const firstOfEach = ["one", "two", "three", "four", "five"].map((text) => tried.indexOf(text));
    expect(firstOfEach).toEqual([...firstOfEach].sort((a, b) => a - b));
    expect(tried.slice(0, tried.lastIndexOf("one") + 1).every((t) => t === "one")).toBe(true);
  });

  it("rejects a send not stored within sendMaxAgeMs (send_expired); sent again with its id, it is stored once", async () => {
    const h = harness({ sendMaxAgeMs: 30_000 });
    await startPolling(h);
    h.server.failFetches = true;
    const sent = watch(h.client.send(h.chat.id, "late", "cm-late"));
    await advance(29_999);
    expect(sent.done).toBe(false);
    await advance(1);
    expect(sent.error).toMatchObject({ code: "send_expired" });
    h.server.failFetches = false;
    const again = await h.client.send(h.chat.id, "late", { clientMsgId: "cm-late" });
    expect(again.client_msg_id).toBe("cm-late");
    expect(h.server.messagesIn(h.chat.id)).toHaveLength(1);
  });

  it("rejects an aborted send at once (send_aborted), and the next one goes", async () => {
    const h = harness();
    await startPolling(h);
    h.server.failFetches = true;
    const abort = new AbortController();
    const first = watch(h.client.send(h.chat.id, "discard me", { signal: abort.signal }));
    const second = watch(h.client.send(h.chat.id, "keep me"));
    await advance(3_000);
    h.server.failFetches = false;
    abort.abort();
    await advance(1_000);
    expect(first.error).toMatchObject({ code: "send_aborted" });
    expect(second.value).toMatchObject({ content: "keep me" });
    expect(h.server.messagesIn(h.chat.id).map((m) => m.content)).toEqual(["keep me"]);
  });
});

describe("the platform's voice (CONTRACT §8): listings, archive, suspension", () => {
  const LISTING = {
    id: 1,
    title: "City bike",
    price_minor: 45_000,
    currency: "EUR",
    image_url: "http://img.test/bike.svg",
    url: "http://shop.test/l/1",
    status: "active" as const,
  };

  /** The `chat` events the client emitted, as [chat id, archived, listing status]. */
  function watchChats(h: ReturnType<typeof harness>) {
    const chats: Array<[number, boolean, string | undefined]> = [];
    h.client.on("chat", (c) => chats.push([c.id, c.archived, c.listing?.status]));
    return chats;
  }

  it("lists archived chats with ?archived=1; archive and unarchive move the chat between the lists", async () => {
    const h = harness();
    const chats = watchChats(h);
    await startLive(h);
    expect((await h.client.listChats()).map((c) => [c.id, c.archived])).toEqual([[h.chat.id, false]]);
    expect(await h.client.listChats({ archived: true })).toEqual([]);

    const archived = await h.client.archiveChat(h.chat.id);
    expect(archived).toMatchObject({ id: h.chat.id, archived: true });
    expect(h.server.requestsTo("POST", `/api/v1/chats/${h.chat.id}/archive`).map((r) => r.status)).toEqual([204]);
    expect(await h.client.listChats()).toEqual([]);
    expect((await h.client.listChats({ archived: true })).map((c) => c.id)).toEqual([h.chat.id]);
    expect(h.server.requestsTo("GET", "/api/v1/chats").map((r) => r.query)).toEqual([
      {},
      { archived: "1" },
      {},
      { archived: "1" },
    ]);
    // The server's chat_updated (this user's devices) arrives as an event and keeps the state archived.
    await settle();
    expect(h.seen.events.at(-1)).toMatchObject({ type: "chat_updated", chat: { id: h.chat.id, archived: true } });
    expect(h.client.getChat(h.chat.id)?.archived).toBe(true);

    await h.client.unarchiveChat(h.chat.id);
    await settle();
    expect(h.server.requestsTo("DELETE", `/api/v1/chats/${h.chat.id}/archive`).map((r) => r.status)).toEqual([204]);
    expect(h.client.getChat(h.chat.id)?.archived).toBe(false);
    expect((await h.client.listChats()).map((c) => c.id)).toEqual([h.chat.id]);
    // Once per change: here the server's chat_updated came before the 204, and the answer changed nothing more.
    expect(chats).toEqual([
      [h.chat.id, true, undefined],
      [h.chat.id, false, undefined],
    ]);
  });

  it("hands chat_updated to the page as an event and as `chat`, keeping what the list knew of the chat", async () => {
    const h = harness();
    const chats = watchChats(h);
    await startLive(h);
    h.server.post(h.chat.id, OTHER, "hello");
    await settle();
    const [listed] = await h.client.listChats();
    expect(listed?.last_message?.content).toBe("hello");

    h.server.updateListing(h.chat.id, { ...LISTING, status: "sold" });
    await settle();
    const event = h.seen.events.at(-1);
    expect(event).toMatchObject({ type: "chat_updated", chat: { listing: { status: "sold" }, peer: { id: OTHER } } });
    expect(chats).toEqual([[h.chat.id, false, "sold"]]);
    // The list entry's last message and unread count are kept; the event's fields win.
    expect(h.client.getChat(h.chat.id)).toMatchObject({
      listing: { title: "City bike", status: "sold" },
      last_message: { content: "hello" },
      unread_count: 1,
    });
  });

  it("brings an archived chat back on a message from the other side (no chat_updated comes), not on its own", async () => {
    const h = harness();
    const chats = watchChats(h);
    await startLive(h);
    await h.client.listChats();
    await h.client.archiveChat(h.chat.id);
    await settle();
    chats.length = 0;

    // Its own message (this device or another) leaves it archived, on the server and in the client.
    await h.client.send(h.chat.id, "one more thing", "cm-own");
    await settle();
    expect(h.server.isArchived(h.chat.id, ME)).toBe(true);
    expect(h.client.getChat(h.chat.id)?.archived).toBe(true);
    expect(chats).toEqual([]);

    const before = h.seen.events.length;
    h.server.post(h.chat.id, OTHER, "still for sale?");
    await settle();
    expect(h.server.isArchived(h.chat.id, ME)).toBe(false);
    // Only the new_message came: the client draws the conclusion.
    expect(h.seen.events.slice(before).map((e) => e.type)).toEqual(["new_message"]);
    expect(chats).toEqual([[h.chat.id, false, undefined]]);
    expect(h.client.getChat(h.chat.id)?.archived).toBe(false);
  });

  it("a system message (sender_id null) brings it back too, while polling, with the user id from the options", async () => {
    const h = harness({ userId: ME });
    const chats = watchChats(h);
    await startPolling(h);
    await h.client.listChats();
    await h.client.archiveChat(h.chat.id);
    chats.length = 0;
    const system = h.server.postSystem(h.chat.id, "Offer made: 420 EUR", { offer_minor: 42_000 });
    await advance(5_000);
    const delivered = h.seen.events.find((e) => e.type === "new_message");
    expect(delivered).toMatchObject({
      message: { id: system.id, kind: "system", sender_id: null, data: { offer_minor: 42_000 }, attachments: [] },
    });
    // The poll brings this user's own chat_updated (archived), then the system message brings it back.
    expect(chats).toEqual([
      [h.chat.id, true, undefined],
      [h.chat.id, false, undefined],
    ]);
    expect(h.client.getChat(h.chat.id)?.archived).toBe(false);
  });

  it("while polling with no user id known, its own message from another device leaves the chat archived; the other side's brings it back", async () => {
    const h = harness();
    const chats = watchChats(h);
    await startPolling(h);
    await h.client.listChats();
    await h.client.archiveChat(h.chat.id);
    await advance(5_000);
    chats.length = 0;
    // Sent from another device: the client has no `connected` frame naming this user, only the chat's peer.
    h.server.post(h.chat.id, ME, "sent from my phone");
    await advance(5_000);
    expect(h.seen.events.at(-1)).toMatchObject({ type: "new_message", message: { sender_id: ME } });
    expect(h.client.getChat(h.chat.id)?.archived).toBe(true);
    expect(chats).toEqual([]);
    h.server.post(h.chat.id, OTHER, "still for sale?");
    await advance(5_000);
    expect(h.client.getChat(h.chat.id)?.archived).toBe(false);
    expect(chats).toEqual([[h.chat.id, false, undefined]]);
  });

  it("suspended (4003 on the live socket): says so once, polls (reads go on), retries WebSocket only every 30 s, refuses sends at once; lifted, it is live again", async () => {
    const h = harness();
    const suspended: Array<ChatClientEvents["suspended"]> = [];
    h.client.on("suspended", (s) => suspended.push(s));
    await startLive(h);
    h.server.suspend(ME);
    await settle();
    expect(h.server.sockets[0]?.closed).toMatchObject({ by: "server", code: 4003 });
    expect(h.client.mode).toBe("polling");
    expect(h.client.suspended).toBe(true);
    expect(suspended).toEqual([{ suspended: true, message: "suspended" }]);
    const suspendedAt = Date.now();

    // Reads go on: a message from the other side arrives by polling.
    h.server.post(h.chat.id, OTHER, "are you there?");
    await advance(5_000);
    expect(h.seen.events.at(-1)).toMatchObject({ type: "new_message", message: { content: "are you there?" } });

    // A send is refused for good, at once (403, not retried).
    const refused = watch(h.client.send(h.chat.id, "hello?", "cm-s1"));
    await settle();
    expect(refused.error).toMatchObject({ status: 403, code: "user_suspended", retryable: false });

    // No 2 s / 4 s ladder: the next socket comes 30 s after the close, and it is closed with 4003 again.
    await advance(30_000 - (Date.now() - suspendedAt) - 1);
    expect(h.server.sockets).toHaveLength(1);
    await advance(1);
    expect(h.server.sockets).toHaveLength(2);
    await settle();
    expect(h.server.sockets[1]?.closed).toMatchObject({ by: "server", code: 4003 });
    expect(h.client.mode).toBe("polling");
    // retryNow (online, tab visible, the banner's button) does not knock while suspended.
    h.client.retryNow();
    await settle();
    expect(h.server.sockets).toHaveLength(2);
    await advance(29_999);
    expect(h.server.sockets).toHaveLength(2);
    await advance(1);
    expect(h.server.sockets).toHaveLength(3);
    expect(suspended).toHaveLength(1);
    expect(h.sends().map((r) => r.status)).toEqual([403]);

    h.server.unsuspend(ME);
    await advance(30_000);
    expect(h.client.mode).toBe("live");
    expect(h.client.suspended).toBe(false);
    expect(suspended).toEqual([
      { suspended: true, message: "suspended" },
      { suspended: false, message: null },
    ]);
    expect(h.server.sockets).toHaveLength(4);
    await expect(h.client.send(h.chat.id, "back", "cm-s2")).resolves.toMatchObject({ client_msg_id: "cm-s2" });
  });

  it("a first connect accepted then closed with 4003 polls at once (no 2 s refused-retry) and reports suspended", async () => {
    const h = harness();
    const suspended: Array<ChatClientEvents["suspended"]> = [];
    h.client.on("suspended", (s) => suspended.push(s));
    h.server.suspend(ME);
    h.client.start();
    await settle();
    expect(h.client.mode).toBe("polling");
    expect(h.server.sockets).toHaveLength(1);
    expect(suspended).toEqual([{ suspended: true, message: "suspended" }]);
    await advance(10_000);
    expect(h.server.sockets).toHaveLength(1);
    expect(h.polls().length).toBeGreaterThanOrEqual(3);
  });

  it("a send refused user_suspended over REST says suspended; a stored send says it is over", async () => {
    const h = harness();
    const suspended: Array<ChatClientEvents["suspended"]> = [];
    h.client.on("suspended", (s) => suspended.push(s));
    await startPolling(h);
    h.server.refuseNextSends({ code: "user_suspended", message: "suspended until tomorrow" });
    const refused = watch(h.client.send(h.chat.id, "one", "cm-r1"));
    await settle();
    expect(refused.error).toMatchObject({ status: 403, code: "user_suspended" });
    expect(h.client.suspended).toBe(true);
    await h.client.send(h.chat.id, "two", "cm-r2");
    expect(suspended).toEqual([
      { suspended: true, message: "suspended until tomorrow" },
      { suspended: false, message: null },
    ]);
  });

  it("rejects a send to a removed listing's chat at once with 409 listing_closed (WebSocket and REST)", async () => {
    const h = harness({ dropsBeforePolling: 1 });
    await startLive(h);
    h.server.updateListing(h.chat.id, { ...LISTING, status: "removed" });
    const overSocket = watch(h.client.send(h.chat.id, "still there?", "cm-l1"));
    await settle();
    expect(overSocket.error).toMatchObject({ status: 409, code: "listing_closed", retryable: false });
    h.server.upgrades = "refuse";
    h.server.lastSocket.drop();
    await settle();
    expect(h.client.mode).toBe("polling");
    const overRest = watch(h.client.send(h.chat.id, "hello?", "cm-l2"));
    await advance(10_000);
    expect(overRest.error).toMatchObject({ status: 409, code: "listing_closed" });
    expect(h.server.sockets[0]?.sentOfType("send_message")).toHaveLength(1);
    expect(h.sends().map((r) => r.status)).toEqual([409]);
    expect(h.server.messagesIn(h.chat.id)).toEqual([]);
  });
});

describe("a gateway under a BASE_PATH", () => {
  it("sends REST and the WebSocket under the prefix that baseUrl and ws_url carry, once each", async () => {
    const h = harness((server) => {
      server.basePath = "/marketplace/chat";
      return { baseUrl: `${FAKE_BASE_URL}/marketplace/chat` };
    });
    h.client.start();
    await settle();
    expect(h.client.mode).toBe("live");
    expect(h.server.sockets.map((s) => new URL(s.url).pathname)).toEqual(["/marketplace/chat/ws/chat"]);
    await h.client.send(h.chat.id, "under a prefix");
    expect(h.server.messagesIn(h.chat.id).map((m) => m.content)).toEqual(["under a prefix"]);
    expect(h.server.requestsTo().every((r) => r.status !== 404)).toBe(true);
  });
});
