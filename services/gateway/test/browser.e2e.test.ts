/**
 * The demo page in real Chromium (Debian's /usr/bin/chromium driven by playwright-core; no browser is
 * downloaded): two users in two browser contexts chat through a real gateway to a real listings-chat,
 * with a test proxy of our own in front of the gateway that can refuse WebSocket upgrades (a plain 503
 * before any 101) and cut the open ones. Proves CONTRACT §7 end to end: live chat, the polling fallback
 * with its banner within 5 s, live again within 30 s once upgrades pass, and both screens equal to the
 * database (same ids, same order, no duplicate, no missing).
 *
 * Screenshots of the live and the fallback states go to `.ci/out/screenshots/`.
 * Without /usr/bin/chromium the suite is skipped, except under CI=true where it fails.
 */
import { randomUUID } from "node:crypto";
import { mkdir } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Duplex } from "node:stream";
import httpProxy from "http-proxy";
import type { Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  byTestId,
  CHROMIUM,
  contactSeller,
  debugOf,
  hasChromium,
  launchChromium,
  MESSAGES,
  messagesInDatabase,
  openUserPage,
  type PageElement,
  POLLING_WARNING,
  requireChromium,
  SCREENSHOTS,
  scrollToBeginning,
  sendFromPage,
  shownIds,
  shownTexts,
  type UserPage,
  waitForMode,
  waitForText,
} from "./support/demo-browser.ts";
import { type E2EChat, type E2EGateway, randomSecret, startE2EChat, startE2EGateway } from "./support/e2e.ts";

/** CONTRACT §7: polling every 5 s; a message may wait one full interval, plus one round trip and a render. */
const POLL_INTERVAL_MS = 5_000;
const POLL_DELIVERY_MS = POLL_INTERVAL_MS + 1_500;
/** CONTRACT §7: WebSocket is retried every 30 s while polling. */
const WS_RETRY_MS = 30_000;
/** What "live" means here: a message on the other screen within this. */
const LIVE_DELIVERY_MS = 3_000;

// ---------------------------------------------------------------------------------------------------
// The test proxy: HTTP and upgrades forwarded to the gateway, unless upgrades are switched off.

interface ProxiedRequest {
  at: number;
  method: string;
  path: string;
  /** The `sub` of the Bearer token, when there is one. */
  userId?: number;
}

interface TestProxy {
  url: string;
  /** While true, every upgrade is answered `HTTP/1.1 503` and never reaches the gateway. */
  refuseUpgrades: boolean;
  requests: ProxiedRequest[];
  upgrades: { at: number; refused: boolean }[];
  /** Destroys every upgraded (live) socket, both sides; returns how many there were. */
  cutUpgraded(): number;
  close(): Promise<void>;
}

function bearerUser(req: IncomingMessage): number | undefined {
  const token = req.headers.authorization?.match(/^Bearer (.+)$/)?.[1];
  const payload = token?.split(".")[1];
  if (!payload) return undefined;
  try {
    return Number(JSON.parse(Buffer.from(payload, "base64url").toString()).sub);
  } catch {
    return undefined;
  }
}

async function startTestProxy(target: string): Promise<TestProxy> {
  const proxy = httpProxy.createProxyServer({ target, ws: true, xfwd: false });
  const live = new Set<Duplex>();
  proxy.on("error", (_error, _req, res) => {
    if (res instanceof ServerResponse) {
      if (!res.headersSent) res.writeHead(502, { "content-type": "text/plain" });
      res.end("test proxy: the gateway did not answer");
    } else {
      res.destroy();
    }
  });
  proxy.on("proxyReqWs", (proxyReq, _req, socket) => {
    proxyReq.once("upgrade", (_res, proxySocket: Duplex) => {
      live.add(socket);
      proxySocket.on("error", () => {});
      socket.once("close", () => {
        live.delete(socket);
        proxySocket.destroy();
      });
      proxySocket.once("close", () => socket.destroy());
    });
  });

  const self: TestProxy = {
    url: "",
    refuseUpgrades: false,
    requests: [],
    upgrades: [],
    cutUpgraded() {
      const count = live.size;
      for (const socket of live) socket.destroy();
      return count;
    },
    async close() {
      self.cutUpgraded();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      proxy.close();
    },
  };

  const server: Server = createServer((req, res) => {
    self.requests.push({
      at: Date.now(),
      method: req.method ?? "",
      path: (req.url ?? "").split("?")[0] ?? "",
      userId: bearerUser(req),
    });
    proxy.web(req, res);
  });
  server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on("error", () => {});
    const refused = self.refuseUpgrades;
    self.upgrades.push({ at: Date.now(), refused });
    if (refused) {
      const body = "upgrades refused by the test proxy";
      socket.end(
        `HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
      );
      return;
    }
    proxy.ws(req, socket, head);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  self.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return self;
}

// ---------------------------------------------------------------------------------------------------

/** The DOM names the page-side callbacks below use (the package compiles without the DOM library). */
declare const document: {
  body: PageElement;
  querySelector(selector: string): PageElement | null;
  querySelectorAll(selector: string): Iterable<PageElement> & { length: number };
};

requireChromium("browser.e2e.test.ts");

describe.skipIf(!hasChromium)(
  hasChromium
    ? "demo page in Chromium: live, polling fallback, live again"
    : `demo page in Chromium: SKIPPED, ${CHROMIUM} is missing (apt-get install -y chromium)`,
  () => {
    const internalToken = randomSecret();
    const ALICE = 201;
    const BOB = 202;
    const LISTING = 42;
    let chat: E2EChat;
    let gw: E2EGateway;
    let proxy: TestProxy;
    let browser: Browser;
    const users: UserPage[] = [];

    beforeAll(async () => {
      chat = await startE2EChat({ database: { inMemory: true }, internalToken });
      gw = await startE2EGateway({ chatUpstreams: [chat.baseUrl], internalToken });
      proxy = await startTestProxy(gw.baseUrl);
      await mkdir(SCREENSHOTS, { recursive: true });
      browser = await launchChromium();
    });

    afterAll(async () => {
      for (const user of users) await user.context.close().catch(() => {});
      await browser?.close();
      await proxy?.close();
      await gw?.stop();
      await chat?.stop();
    });

    it("two users chat live, ride out a WebSocket outage on polling, come back live, and both screens equal the database", {
      timeout: 150_000,
    }, async () => {
      const aliceToken = await gw.devToken(ALICE);
      const bobToken = await gw.devToken(BOB);

      // History before anyone opens the page: 24 messages, so that the chat shows the newest 20 and the
      // rest come with a scroll to the top. 12 are Alice's: Bob's unread count.
      const created = await gw.api(aliceToken, "POST", "/api/v1/chats", { listing_id: LISTING, seller_id: BOB });
      expect(created.status).toBe(201);
      const chatId: number = created.body.id;
      for (let i = 1; i <= 24; i++) {
        const [token, name] = i % 2 === 1 ? [aliceToken, "Alice"] : [bobToken, "Bob"];
        const sent = await gw.api(token, "POST", `/api/v1/chats/${chatId}/messages`, {
          content: `history ${i} from ${name}`,
          client_msg_id: randomUUID(),
        });
        expect(sent.status).toBe(201);
      }
      const history = await messagesInDatabase(gw, aliceToken, chatId);
      expect(history).toHaveLength(24);
      const lastHistoryId = history.at(-1)!.id;

      // ---- Sign in: two browser contexts, through the test proxy.
      const alice = await openUserPage(browser, proxy.url, ALICE);
      users.push(alice);
      const bob = await openUserPage(browser, proxy.url, BOB);
      users.push(bob);
      await Promise.all([waitForMode(alice, "live", 15_000), waitForMode(bob, "live", 15_000)]);

      // Bob's list has the chat with Alice's 12 messages unread, as the server counts them.
      const unread = await gw.api(bobToken, "GET", "/api/v1/chats/unread");
      expect(unread.body.chats[String(chatId)]).toBe(12);
      const bobItem = `${byTestId("chat-item")}[data-chat-id="${chatId}"]`;
      await bob.page.waitForFunction(
        (selector) => document.querySelector(`${selector} [data-testid="chat-unread"]:not([hidden])`)?.textContent,
        bobItem,
        { timeout: 5_000 },
      );
      expect(await bob.page.textContent(`${bobItem} ${byTestId("chat-unread")}`)).toBe("12");
      expect(await bob.page.textContent(byTestId("unread-total"))).toBe("12");

      // ---- Alice opens the chat with the form: the newest 20, then the 4 older ones on scroll to top.
      await contactSeller(alice, LISTING, BOB);
      await alice.page.waitForFunction(
        ([id, selector]) =>
          document.querySelector('[data-testid="chat-view"]')?.getAttribute("data-chat-id") === id &&
          document.querySelectorAll(selector as string).length >= 20,
        [String(chatId), MESSAGES],
        { timeout: 5_000 },
      );
      const newest20 = history.slice(-20).map((m) => m.id);
      const allHistory = history.map((m) => m.id);
      expect(await shownIds(alice)).toEqual(newest20);
      expect(await alice.page.textContent(byTestId("history-status"))).toBe("scroll up for older messages");
      await scrollToBeginning(alice);
      expect(await shownIds(alice)).toEqual(allHistory);
      expect(await alice.page.textContent(byTestId("history-status"))).toBe("beginning of the conversation");
      // Nobody has read Alice's messages yet: one tick each.
      const aliceTicks = () =>
        alice.page.$$eval(`${MESSAGES}[data-sender-id="${ALICE}"] [data-testid="message-tick"]`, (ticks) =>
          ticks.map((t) => [t.getAttribute("data-state"), t.textContent]),
        );
      expect(await aliceTicks()).toEqual(Array(12).fill(["sent", "✓"]));

      // ---- Bob opens it from his list: his badge goes, and Alice's messages turn ✓✓ live.
      await bob.page.click(bobItem);
      await bob.page.waitForFunction((selector) => document.querySelectorAll(selector).length >= 20, MESSAGES, {
        timeout: 5_000,
      });
      await bob.page.waitForSelector(`${bobItem} ${byTestId("chat-unread")}[hidden]`, {
        state: "attached",
        timeout: 5_000,
      });
      await bob.page.waitForSelector(`${byTestId("unread-total")}[hidden]`, { state: "attached", timeout: 5_000 });
      await alice.page.waitForFunction(
        (selector) => {
          const ticks = [...document.querySelectorAll(selector)];
          return ticks.length === 12 && ticks.every((t) => t.getAttribute("data-state") === "read");
        },
        `${MESSAGES}[data-sender-id="${ALICE}"] [data-testid="message-tick"]`,
        { timeout: 5_000 },
      );
      expect(await aliceTicks()).toEqual(Array(12).fill(["read", "✓✓"]));

      // ---- Typing: Bob sees "User 201 is typing…"; it goes once Alice stops (2 s without a keystroke).
      await alice.page.press(byTestId("send-input"), "h");
      await alice.page.type(byTestId("send-input"), "ello Bob");
      const lastKeystroke = Date.now();
      await bob.page.waitForSelector(`${byTestId("typing-indicator")}:not([hidden])`, { timeout: 3_000 });
      expect(await bob.page.textContent(byTestId("typing-indicator"))).toBe("User 201 is typing…");
      await bob.page.waitForSelector(`${byTestId("typing-indicator")}[hidden]`, {
        state: "attached",
        timeout: 5_000,
      });
      const stoppedAfter = Date.now() - lastKeystroke;
      // Shown while she typed, gone within 3 s of her last keystroke (the page's 2 s, then one frame).
      expect(stoppedAfter).toBeGreaterThan(1_500);
      expect(stoppedAfter).toBeLessThan(3_000);

      // ---- Live: Enter sends; each side sees the other's message at once.
      const liveSent = Date.now();
      await alice.page.press(byTestId("send-input"), "Enter");
      expect(await waitForText(bob, "hello Bob", LIVE_DELIVERY_MS)).toBeLessThan(liveSent + LIVE_DELIVERY_MS);
      expect(await alice.page.inputValue(byTestId("send-input"))).toBe("");
      const bobSent = Date.now();
      await sendFromPage(bob, "hi Alice");
      expect(await waitForText(alice, "hi Alice", LIVE_DELIVERY_MS)).toBeLessThan(bobSent + LIVE_DELIVERY_MS);
      await waitForText(bob, "hi Alice", LIVE_DELIVERY_MS);
      await waitForText(alice, "hello Bob", LIVE_DELIVERY_MS);

      // Markup in a message is text on both screens: no <img>, no alert.
      const markup = "<img src=x onerror=alert(1)>";
      await sendFromPage(alice, markup);
      await Promise.all([waitForText(bob, markup, LIVE_DELIVERY_MS), waitForText(alice, markup, LIVE_DELIVERY_MS)]);
      for (const user of [alice, bob]) {
        expect(await user.page.$$eval(`${byTestId("message-list")} img`, (imgs) => imgs.length)).toBe(0);
        expect(await user.page.$$eval(`${byTestId("chat-list")} img`, (imgs) => imgs.length)).toBe(0);
      }
      // Bob is looking at the chat: Alice's newest message is read (✓✓).
      await alice.page.waitForFunction(
        (selector) => {
          const ticks = [...document.querySelectorAll(selector)];
          return ticks.at(-1)?.getAttribute("data-state") === "read";
        },
        `${MESSAGES}[data-sender-id="${ALICE}"] [data-testid="message-tick"]`,
        { timeout: 5_000 },
      );

      expect(await alice.page.isHidden(byTestId("fallback-banner"))).toBe(true);
      expect(await bob.page.isHidden(byTestId("fallback-banner"))).toBe(true);
      expect(await alice.page.textContent(byTestId("mode"))).toBe("live");
      await alice.page.screenshot({ path: `${SCREENSHOTS}live-alice.png` });
      await bob.page.screenshot({ path: `${SCREENSHOTS}live-bob.png` });

      // ---- Outage: upgrades refused, live sockets cut. Both pages fall back to polling with the banner.
      proxy.refuseUpgrades = true;
      const outageAt = Date.now();
      expect(proxy.cutUpgraded()).toBe(2);
      await Promise.all(
        [alice, bob].map(async (user) => {
          await waitForMode(user, "polling", 20_000);
          await user.page.waitForSelector(`${byTestId("fallback-banner")}:not([hidden])`, { timeout: 1_000 });
          expect(await user.page.textContent(byTestId("fallback-text"))).toBe(POLLING_WARNING);
          expect(await user.page.textContent(byTestId("mode"))).toBe("polling every 5 s");
        }),
      );
      const pollingAt = Date.now();
      expect(proxy.upgrades.filter((u) => u.refused && u.at >= outageAt).length).toBeGreaterThanOrEqual(2);
      await alice.page.screenshot({ path: `${SCREENSHOTS}fallback-alice.png` });
      await bob.page.screenshot({ path: `${SCREENSHOTS}fallback-bob.png` });

      // Each side sends; the send goes over REST and the other side gets it by polling within 5 s.
      const fallbackSent = Date.now();
      await Promise.all([sendFromPage(alice, "polling: from Alice"), sendFromPage(bob, "polling: from Bob")]);
      const [bobGot, aliceGot] = await Promise.all([
        waitForText(bob, "polling: from Alice", POLL_DELIVERY_MS + 1_000),
        waitForText(alice, "polling: from Bob", POLL_DELIVERY_MS + 1_000),
      ]);
      const pollingLatencies = [bobGot - fallbackSent, aliceGot - fallbackSent];
      for (const latency of pollingLatencies) expect(latency).toBeLessThanOrEqual(POLL_DELIVERY_MS);
      await Promise.all([
        waitForText(alice, "polling: from Alice", 2_000),
        waitForText(bob, "polling: from Bob", 2_000),
      ]);
      for (const user of [alice, bob]) {
        const restSends = proxy.requests.filter(
          (r) =>
            r.at >= fallbackSent &&
            r.method === "POST" &&
            r.path === `/api/v1/chats/${chatId}/messages` &&
            r.userId === user.userId,
        );
        expect(restSends.length).toBeGreaterThanOrEqual(1);
        expect(await user.page.evaluate(() => document.body.dataset.mode)).toBe("polling");
      }

      // Polling long enough to see its cadence (three polls each) before the network comes back.
      const pollsSince = (userId: number, since: number) =>
        proxy.requests.filter((r) => r.userId === userId && r.path === "/api/v1/events" && r.at >= since).length;
      for (let i = 0; i < 100 && [ALICE, BOB].some((id) => pollsSince(id, outageAt) < 3); i++) {
        await new Promise((resolve) => setTimeout(resolve, 200));
      }

      // ---- Upgrades pass again: both pages are live within the 30 s retry, and the banner goes.
      proxy.refuseUpgrades = false;
      const restoredAt = Date.now();
      await Promise.all([
        waitForMode(alice, "live", WS_RETRY_MS + 5_000),
        waitForMode(bob, "live", WS_RETRY_MS + 5_000),
      ]);
      const liveAgainAfter = Date.now() - restoredAt;
      // The retry clock started when polling did, so live comes at most 30 s (plus a connect) after that.
      expect(Date.now() - pollingAt).toBeLessThan(WS_RETRY_MS + 5_000);
      for (const user of [alice, bob]) {
        expect(await user.page.isHidden(byTestId("fallback-banner"))).toBe(true);
      }

      // The polling cadence while it lasted: 5 s between one user's polls (never a tight loop).
      const pollGaps = [ALICE, BOB].map((userId) => {
        const polls = proxy.requests
          .filter((r) => r.userId === userId && r.path === "/api/v1/events" && r.at >= outageAt)
          .map((r) => r.at);
        return polls.slice(1).map((at, i) => at - polls[i]!);
      });
      for (const gaps of pollGaps) {
        expect(gaps.length).toBeGreaterThanOrEqual(2);
        for (const gap of gaps) {
          expect(gap).toBeGreaterThan(POLL_INTERVAL_MS - 1_000);
          expect(gap).toBeLessThan(POLL_DELIVERY_MS);
        }
      }

      const backSent = Date.now();
      await sendFromPage(alice, "live again: from Alice");
      await sendFromPage(bob, "live again: from Bob");
      await Promise.all([
        waitForText(bob, "live again: from Alice", LIVE_DELIVERY_MS),
        waitForText(alice, "live again: from Bob", LIVE_DELIVERY_MS),
        waitForText(alice, "live again: from Alice", LIVE_DELIVERY_MS),
        waitForText(bob, "live again: from Bob", LIVE_DELIVERY_MS),
      ]);
      expect(Date.now() - backSent).toBeLessThan(LIVE_DELIVERY_MS * 2);

      // ---- Both screens against the database: same ids, same order, no duplicate, no missing.
      const stored = await messagesInDatabase(gw, aliceToken, chatId);
      expect(stored).toHaveLength(24 + 3 + 2 + 2);
      const storedIds = stored.map((m) => m.id);
      expect(new Set(storedIds).size).toBe(storedIds.length);
      for (const user of [alice, bob]) {
        // Bob never scrolled up: his page still has the newest 20 of the history plus what came since.
        await scrollToBeginning(user);
        const ids = await shownIds(user);
        expect(ids).toEqual(storedIds);
        expect(await shownTexts(user)).toEqual(stored.map((m) => [m.id, m.content]));
        expect(await user.page.$$eval(byTestId("message-pending"), (items) => items.length)).toBe(0);

        // What the client handed the page: every event once, in order, and a new_message for each
        // message stored after sign-in, whatever the transport was when it was stored.
        const seen = await debugOf(user);
        expect(seen.anomalies).toEqual([]);
        const eventIds = seen.events.map((e) => e.event_id);
        expect(eventIds).toEqual([...eventIds].sort((a, b) => a - b));
        expect(new Set(eventIds).size).toBe(eventIds.length);
        const newMessages = seen.events
          .filter((e) => e.type === "new_message" && e.chat_id === chatId)
          .map((e) => e.message_id);
        expect(newMessages).toEqual(storedIds.filter((id) => id > lastHistoryId));
        expect(seen.modes.map((m) => m.to)).toEqual(expect.arrayContaining(["live", "polling"]));

        expect(user.pageErrors).toEqual([]);
        expect(user.dialogs).toEqual([]);
      }

      console.info(
        `browser e2e: polling delivery ${pollingLatencies.join(" / ")} ms; live again ${liveAgainAfter} ms after ` +
          `upgrades were restored (${Date.now() - pollingAt} ms after polling began); poll gaps ` +
          `${pollGaps.map((g) => g.join(",")).join(" | ")} ms; screenshots in ${SCREENSHOTS}`,
      );
    });
  },
);
