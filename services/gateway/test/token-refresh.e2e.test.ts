/**
 * The client outlives its access tokens (issue 27), in real Chromium through the demo page. Dev tokens live
 * 5 s (DEV_TOKEN_TTL_S=5); the gateway forgives 5 s of clock difference, so each is refused about 10 s after it
 * was made. The page's `getAccessToken` fetches a new dev token when the client asks it to refresh, as a
 * monolith's page would from its own refresh endpoint. Through 40 s of such tokens: live, a reconnect after
 * every token the page started with had expired, polling through a WebSocket outage, live again. Every
 * message reaches the other screen, nobody is signed out, and the tokens were refreshed.
 *
 * The sockets go through Playwright's WebSocket routing, so that the test can cut them and refuse new ones.
 */
import { randomUUID } from "node:crypto";
import type { Browser, WebSocketRoute } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  byTestId,
  CHROMIUM,
  contactSeller,
  debugOf,
  hasChromium,
  launchChromium,
  openUserPage,
  requireChromium,
  sendFromPage,
  type UserPage,
  waitForMode,
  waitForText,
} from "./support/demo-browser.ts";
import { type E2EChat, type E2EGateway, randomSecret, startE2EChat, startE2EGateway } from "./support/e2e.ts";

/** Past this, every token a page held at the start has been refused (5 s of life, 5 s of tolerance). */
const TOKENS_EXPIRED_MS = 11_000;
/** CONTRACT §7: polling every 5 s; one interval, a round trip and a render. */
const POLL_DELIVERY_MS = 6_500;

requireChromium("token-refresh.e2e.test.ts");

/** Every WebSocket of one browser context, passed to the gateway unless the test refuses or cuts them. */
function socketSwitch() {
  const open = new Set<WebSocketRoute>();
  const state = { refusing: false };
  return {
    state,
    route: (ws: WebSocketRoute) => {
      if (state.refusing) {
        // Closed before any greeting: to the page, an upgrade refused.
        void ws.close({ code: 1011, reason: "refused by the test" });
        return;
      }
      ws.connectToServer();
      open.add(ws);
      ws.onClose(() => open.delete(ws));
    },
    async cutAll() {
      await Promise.all([...open].map((ws) => ws.close({ code: 1011, reason: "cut by the test" })));
    },
  };
}

describe.skipIf(!hasChromium)(
  hasChromium
    ? "5-second access tokens in Chromium: refreshed for the ws-token, REST and polling"
    : `5-second access tokens in Chromium: SKIPPED, ${CHROMIUM} is missing (apt-get install -y chromium)`,
  () => {
    const internalToken = randomSecret();
    const BUYER = 301;
    const SELLER = 302;
    const LISTING = 77;
    let chat: E2EChat;
    let gw: E2EGateway;
    let browser: Browser;
    const users: UserPage[] = [];

    beforeAll(async () => {
      chat = await startE2EChat({ database: { inMemory: true }, internalToken });
      gw = await startE2EGateway({
        chatUpstreams: [chat.baseUrl],
        internalToken,
        config: { devTokenTtlSeconds: 5 },
      });
      browser = await launchChromium();
    });

    afterAll(async () => {
      for (const user of users) await user.context.close().catch(() => {});
      await browser?.close();
      await gw?.stop();
      await chat?.stop();
    });

    it("keeps two users chatting through 40 s of 5-second tokens: live, reconnected, polling, live again", {
      timeout: 120_000,
    }, async () => {
      const sockets = { buyer: socketSwitch(), seller: socketSwitch() };
      const buyer = await openUserPage(browser, gw.baseUrl, BUYER, "", {
        beforeOpen: (context) => context.routeWebSocket(/\/ws\/chat/, sockets.buyer.route),
      });
      users.push(buyer);
      const seller = await openUserPage(browser, gw.baseUrl, SELLER, "", {
        beforeOpen: (context) => context.routeWebSocket(/\/ws\/chat/, sockets.seller.route),
      });
      users.push(seller);
      await Promise.all([waitForMode(buyer, "live", 15_000), waitForMode(seller, "live", 15_000)]);

      // Live: the buyer opens the chat and writes; the seller opens it from the list.
      await contactSeller(buyer, LISTING, SELLER);
      const first = `first ${randomUUID().slice(0, 8)}`;
      await sendFromPage(buyer, first);
      await waitForText(buyer, first, 5_000);
      const item = byTestId("chat-item");
      await seller.page.waitForSelector(item, { timeout: 5_000 });
      await seller.page.click(item);
      await waitForText(seller, first, 5_000);

      // Every token either page started with is refused by now. Cut the sockets: the reconnect needs a
      // ws-token, so a new access token.
      await new Promise((resolve) => setTimeout(resolve, TOKENS_EXPIRED_MS));
      await Promise.all([sockets.buyer.cutAll(), sockets.seller.cutAll()]);
      await Promise.all([waitForMode(buyer, "live", 20_000), waitForMode(seller, "live", 20_000)]);
      const afterReconnect = `after the reconnect ${randomUUID().slice(0, 8)}`;
      await sendFromPage(seller, afterReconnect);
      await waitForText(buyer, afterReconnect, 5_000);

      // No WebSocket for either: polling, with REST sends, through more expiries.
      sockets.buyer.state.refusing = true;
      sockets.seller.state.refusing = true;
      await Promise.all([sockets.buyer.cutAll(), sockets.seller.cutAll()]);
      await Promise.all([waitForMode(buyer, "polling", 20_000), waitForMode(seller, "polling", 20_000)]);
      const whilePolling: string[] = [];
      for (let i = 0; i < 3; i += 1) {
        const text = `while polling ${i} ${randomUUID().slice(0, 8)}`;
        whilePolling.push(text);
        await sendFromPage(i % 2 === 0 ? buyer : seller, text);
        await waitForText(i % 2 === 0 ? seller : buyer, text, POLL_DELIVERY_MS);
        await new Promise((resolve) => setTimeout(resolve, 4_000));
      }

      // Upgrades pass again: live within the retry schedule (2, 4, 8, 16 s, then 30 s).
      sockets.buyer.state.refusing = false;
      sockets.seller.state.refusing = false;
      await Promise.all([waitForMode(buyer, "live", 35_000), waitForMode(seller, "live", 35_000)]);
      const last = `live again ${randomUUID().slice(0, 8)}`;
      await sendFromPage(buyer, last);
      await waitForText(seller, last, 5_000);

      for (const user of [buyer, seller]) {
        // Still signed in: a fatal would have signed the page out.
        expect(await user.page.textContent(byTestId("me"))).toBe(`signed in as user ${user.userId}`);
        expect(user.pageErrors).toEqual([]);
        const debug = await debugOf(user);
        expect(debug.anomalies).toEqual([]);
        // A new token at least every 10 s of the ~40 s: each was needed.
        expect(debug.tokenRefreshes).toBeGreaterThanOrEqual(3);
      }
      // Both screens show the whole conversation.
      for (const text of [first, afterReconnect, ...whilePolling, last]) {
        await waitForText(buyer, text, 1_000);
        await waitForText(seller, text, 1_000);
      }
    });
  },
);
