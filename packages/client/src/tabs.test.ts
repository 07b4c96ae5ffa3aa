import { afterEach, describe, expect, it } from "vitest";
import { ChatClient } from "./chat-client.ts";
import type { ChatEvent } from "./protocol/index.ts";
import { FakeChatServer } from "./testing/fake-server.ts";
import type { ChatClientMode } from "./types.ts";

/**
 * `shareAcrossTabs`: several clients of one user in one process stand for the tabs of one browser. Node has the
 * browser's BroadcastChannel and Web Locks, so the tabs elect a leader and relay through the real things, on real
 * timers, against the fake server.
 */

const ME = 1;
const OTHER = 2;

const clients: ChatClient[] = [];
let gateways = 0;

afterEach(() => {
  for (const client of clients.splice(0)) client.stop();
});

async function until(done: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** A browser with one user's tabs; each test has a gateway of its own (the tabs' channel is per gateway). */
function browser() {
  const server = new FakeChatServer();
  const chat = server.addChat(ME, OTHER); // event 1
  const baseUrl = `http://gateway-${++gateways}.test`;
  const tabs: Array<{ client: ChatClient; events: ChatEvent[]; modes: ChatClientMode[]; warnings: (string | null)[] }> =
    [];
  const openTab = (options: { lastEventId?: number; fetch?: typeof fetch } = {}) => {
    const client = new ChatClient({
      baseUrl,
      getAccessToken: () => server.accessToken(ME),
      fetch: server.fetch,
      webSocket: server.webSocket,
      userId: ME,
      shareAcrossTabs: true,
      unreadMinIntervalMs: 0,
      ...options,
    });
    clients.push(client);
    const tab = { client, events: [] as ChatEvent[], modes: [] as ChatClientMode[], warnings: [] as (string | null)[] };
    client.on("event", (event) => tab.events.push(event));
    client.on("mode", ({ to }) => tab.modes.push(to));
    client.on("warning", (warning) => tab.warnings.push(warning));
    client.start();
    tabs.push(tab);
    return tab;
  };
  const openSockets = () => server.openSockets(ME).length;
  /** Every tab's events are exactly the server's, once each and in order. */
  const expectAllSeeEverything = (open: typeof tabs) => {
    const all = server.eventsFor(ME).map((e) => e.event_id);
    for (const tab of open) {
      const ids = tab.events.map((e) => e.event_id);
      expect(ids, "once each, in order").toEqual(
        [...ids].sort((a, b) => a - b).filter((id, i, a) => a.indexOf(id) === i),
      );
      expect(ids.at(-1)).toBe(all.at(-1));
    }
  };
  return { server, chat, openTab, tabs, openSockets, expectAllSeeEverything };
}

describe("tabs that share one connection (shareAcrossTabs)", () => {
  it("three tabs: one socket, every tab live, every event in every tab once, sends from any tab stored once", async () => {
    const b = browser();
    const [first, second, third] = [b.openTab(), b.openTab(), b.openTab()];
    await until(() => [first, second, third].every((t) => t?.client.mode === "live"), "every tab live");
    expect(b.openSockets()).toBe(1);
    expect(b.server.sockets).toHaveLength(1);

    b.server.post(b.chat.id, OTHER, "is it still available?");
    await until(() => b.tabs.every((t) => t.events.some((e) => e.type === "new_message")), "the message in every tab");

    // A follower's send goes over REST; the leader's over the socket; each stored once, heard by every tab.
    const follower = b.tabs.find((t) => (t.client as unknown as { following: boolean }).following);
    const leader = b.tabs.find((t) => t !== follower && !(t.client as unknown as { following: boolean }).following);
    if (!follower || !leader) throw new Error("no leader and follower");
    const [fromFollower, fromLeader] = await Promise.all([
      follower.client.send(b.chat.id, "from a follower"),
      leader.client.send(b.chat.id, "from the leader"),
    ]);
    expect(
      b.server
        .messagesIn(b.chat.id)
        .map((m) => m.content)
        .sort(),
    ).toEqual(["from a follower", "from the leader", "is it still available?"].sort());
    await until(
      () =>
        b.tabs.every((t) =>
          [fromFollower.id, fromLeader.id].every((id) => t.events.some((e) => "message" in e && e.message.id === id)),
        ),
      "both sends in every tab",
    );
    b.expectAllSeeEverything(b.tabs);
    expect(b.server.sockets).toHaveLength(1);
  });

  it("the leader's tab closes mid-conversation: another tab connects from where it was, nothing lost or repeated", async () => {
    const b = browser();
    b.openTab();
    b.openTab();
    b.openTab();
    await until(() => b.tabs.every((t) => t.client.mode === "live"), "every tab live");
    for (let i = 1; i <= 3; i++) b.server.post(b.chat.id, OTHER, `before ${i}`);
    // The tabs started "from now": the chat's creation (event 1) came before them.
    await until(() => b.tabs.every((t) => t.events.length === 3), "the first messages everywhere");

    const leaderIndex = b.tabs.findIndex((t) => !(t.client as unknown as { following: boolean }).following);
    const leader = b.tabs[leaderIndex];
    leader?.client.stop(); // the tab closes: its lock and socket go
    // Messages while no tab holds a socket: they must reach the others all the same.
    for (let i = 1; i <= 3; i++) b.server.post(b.chat.id, OTHER, `during ${i}`);
    const rest = b.tabs.filter((_, i) => i !== leaderIndex);
    await until(() => b.openSockets() === 1, "a new leader's socket");
    for (let i = 1; i <= 3; i++) b.server.post(b.chat.id, OTHER, `after ${i}`);
    await until(() => rest.every((t) => t.events.length === 9), "every message in the remaining tabs", 8_000);
    b.expectAllSeeEverything(rest);
    // The new leader's socket asked for what came after the events it had heard.
    const newSocket = b.server.sockets.at(-1);
    expect(new URL(newSocket?.url ?? "").searchParams.get("after")).toBe("4");
    await until(() => rest.every((t) => t.client.mode === "live"), "the remaining tabs live");
  });

  it("a tab opened later with lastEventId reads what it missed, then follows the leader: no gap, no repeat", async () => {
    const b = browser();
    b.openTab();
    await until(() => b.openSockets() === 1, "the first tab's socket");
    for (let i = 1; i <= 5; i++) b.server.post(b.chat.id, OTHER, `m${i}`);
    // Its page had seen up to the first message (event 2).
    const late = b.openTab({ lastEventId: 2 });
    for (let i = 6; i <= 8; i++) b.server.post(b.chat.id, OTHER, `m${i}`);
    await until(() => late.events.at(-1)?.event_id === 9, "the late tab up to date");
    expect(late.events.map((e) => e.event_id)).toEqual([3, 4, 5, 6, 7, 8, 9]);
    expect(b.openSockets()).toBe(1);
  });

  it("a follower's typing goes out through the leader's socket; every tab shows the leader's polling", async () => {
    const b = browser();
    b.openTab();
    await until(() => b.openSockets() === 1, "the leader's socket");
    const follower = b.openTab();
    await until(() => follower.client.mode === "live", "the follower live");
    follower.client.typing(b.chat.id, true);
    await until(() => (b.server.openSockets(ME)[0]?.sentOfType("typing").length ?? 0) === 1, "typing sent");
    expect(b.server.openSockets(ME)[0]?.sentOfType("typing")[0]).toMatchObject({ chat_id: b.chat.id, is_typing: true });

    // The network stops passing upgrades: the leader polls, and the follower says so too.
    b.server.upgrades = "refuse";
    b.server.openSockets(ME)[0]?.drop();
    await until(() => follower.client.mode === "polling", "the follower polling", 15_000);
    expect(follower.warnings.at(-1)).toMatch(/refreshing every 5 seconds/);
    expect(b.server.sockets.filter((s) => s.readyState === 1)).toHaveLength(0);
  }, 20_000);

  describe("races of a hand-over", () => {
    /** A fetch whose `/events` answers wait until the test lets them go (a slow catch-up). */
    function slowEvents(server: FakeChatServer) {
      const held: Array<() => void> = [];
      const fetch: typeof globalThis.fetch = async (input, init) => {
        const answer = await server.fetch(input, init);
        if (String(input).includes("/api/v1/events")) await new Promise<void>((go) => held.push(go));
        return answer;
      };
      const release = () => {
        for (const go of held.splice(0)) go();
      };
      return { fetch, release, waiting: () => held.length };
    }

    it("a tab that takes over during its catch-up reads the missed events, not only the relayed ones", async () => {
      const b = browser();
      const leader = b.openTab();
      await until(() => leader.client.mode === "live", "the leader live");
      for (let i = 1; i <= 3; i++) b.server.post(b.chat.id, OTHER, `m${i}`); // events 2–4
      await until(() => leader.events.length === 3, "the leader has them");
      const slow = slowEvents(b.server);
      const late = b.openTab({ lastEventId: 1, fetch: slow.fetch });
      await until(() => slow.waiting() === 1, "the late tab's catch-up on its way");
      for (let i = 4; i <= 5; i++) b.server.post(b.chat.id, OTHER, `m${i}`); // events 5–6: relayed, held back
      await until(() => (late.client as unknown as { catchingUp?: unknown[] }).catchingUp?.length === 2, "relays held");
      leader.client.stop(); // the leader's tab closes while the catch-up is still out
      await until(() => b.openSockets() === 1, "the late tab's own socket");
      slow.release();
      b.server.post(b.chat.id, OTHER, "m6"); // event 7
      await until(() => late.events.at(-1)?.event_id === 7, "the late tab up to date");
      expect(late.events.map((e) => e.event_id)).toEqual([2, 3, 4, 5, 6, 7]);
    });

    it("a hand-over before any event: the new leader starts where the old one's stream stood", async () => {
      const b = browser();
      const [one, two] = [b.openTab(), b.openTab()];
      await until(() => b.tabs.every((t) => t.client.mode === "live"), "both live");
      const leader = (one.client as unknown as { following: boolean }).following ? two : one;
      const follower = leader === one ? two : one;
      leader.client.stop();
      b.server.post(b.chat.id, OTHER, "during the hand-over"); // event 2, before the new socket
      await until(() => b.openSockets() === 1, "the new leader's socket");
      b.server.post(b.chat.id, OTHER, "after"); // event 3
      await until(() => follower.events.at(-1)?.event_id === 3, "the new leader up to date");
      expect(follower.events.map((e) => e.event_id)).toEqual([2, 3]);
    });

    it("a tab stopped and started again while its catch-up was out: the old catch-up touches nothing", async () => {
      const b = browser();
      const leader = b.openTab();
      await until(() => leader.client.mode === "live", "the leader live");
      const slow = slowEvents(b.server);
      const tab = b.openTab({ lastEventId: 1, fetch: slow.fetch });
      await until(() => slow.waiting() === 1, "the first catch-up on its way");
      tab.client.stop();
      b.server.post(b.chat.id, OTHER, "while the tab was stopped"); // event 2
      tab.client.start();
      await until(() => slow.waiting() === 2, "the second catch-up on its way");
      b.server.post(b.chat.id, OTHER, "relayed"); // event 3
      slow.release(); // both answers come: the first one's is older
      await until(() => tab.events.at(-1)?.event_id === 3, "the tab up to date");
      expect(tab.events.map((e) => e.event_id)).toEqual([2, 3]);
    });
  });
});
