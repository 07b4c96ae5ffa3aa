/**
 * Many tabs of one person in one browser (Chromium, one context): they share one WebSocket through a
 * BroadcastChannel leader (the client's `shareAcrossTabs`, on in the demo page), so four tabs live under a cap of
 * two sockets per user; the leader's tab closed mid-conversation hands over to another tab, and every remaining
 * tab shows every message once, in order, as the database has them.
 */
import type { BrowserContext, Page, WebSocket } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  contactSeller,
  debugOf,
  hasChromium,
  launchChromium,
  messagesInDatabase,
  openUserPage,
  requireChromium,
  SCREENSHOTS,
  sendFromPage,
  shownTexts,
  type UserPage,
  waitForMode,
  waitForText,
} from "./support/demo-browser.ts";
import { type E2EGateway, type E2EStack, startE2EStack } from "./support/e2e.ts";

requireChromium("tabs.e2e.test.ts");

const LIVE_MS = 20_000;
const BUYER = 4101;
const SELLER = 4102;

describe.skipIf(!hasChromium)("one person's tabs share one socket (Chromium)", () => {
  let stack: E2EStack;
  let gw: E2EGateway;
  let browser: Awaited<ReturnType<typeof launchChromium>>;
  beforeAll(async () => {
    // Two sockets per user: four tabs that each opened one would be refused from the third on.
    stack = await startE2EStack({ maxSocketsPerUser: 2 });
    gw = stack.gw;
    browser = await launchChromium();
  }, 60_000);
  afterAll(async () => {
    await browser?.close();
    await stack?.stop();
  });

  it("four tabs live on one socket; the leader's tab closes mid-conversation; nothing lost or repeated", async () => {
    /** The open WebSockets of each of the buyer's pages, and how many the buyer's browser opened in all. */
    const open = new Map<Page, Set<WebSocket>>();
    let opened = 0;
    const openCount = () => [...open.values()].reduce((n, sockets) => n + sockets.size, 0);
    const watch = (page: Page) => {
      const sockets = new Set<WebSocket>();
      open.set(page, sockets);
      // A closed tab's sockets are gone with it (Playwright reports no close for them).
      page.on("close", () => open.delete(page));
      page.on("websocket", (ws) => {
        opened += 1;
        sockets.add(ws);
        ws.on("close", () => sockets.delete(ws));
      });
    };

    const seller = await openUserPage(browser, gw.baseUrl, SELLER);
    const first = await openUserPage(browser, gw.baseUrl, BUYER, "", {
      beforeOpen: async (context: BrowserContext) => {
        context.on("page", watch);
      },
    });
    const context = first.context;
    const tabs: UserPage[] = [first];
    for (let i = 0; i < 3; i++) tabs.push(await openUserPage(browser, gw.baseUrl, BUYER, "", { context }));
    for (const tab of tabs) await waitForMode(tab, "live", LIVE_MS);
    expect(openCount()).toBe(1);

    // The buyer writes from a tab that follows (over REST), the seller answers: every tab shows both.
    await contactSeller(tabs[2] as UserPage, 12, SELLER);
    await (tabs[2] as UserPage).page.waitForSelector('[data-testid="chat-view"][data-chat-id]', { timeout: LIVE_MS });
    await sendFromPage(tabs[2] as UserPage, "hello from tab 3");
    await seller.page.click('[data-testid="chat-item"]', { timeout: LIVE_MS });
    await waitForText(seller, "hello from tab 3", LIVE_MS);
    await sendFromPage(seller, "hi! which tab are you?");
    for (const tab of tabs) {
      await tab.page.click('[data-testid="chat-item"]', { timeout: LIVE_MS });
      await waitForText(tab, "hi! which tab are you?", LIVE_MS);
    }
    await tabs[0]?.page.screenshot({ path: `${SCREENSHOTS}tabs-buyer-first-tab.png` });

    // The leader's tab (the one whose page holds the socket) closes; the seller writes on at once.
    const leaderTab = tabs.find((tab) => (open.get(tab.page)?.size ?? 0) > 0);
    if (!leaderTab) throw new Error("no tab holds the socket");
    const rest = tabs.filter((tab) => tab !== leaderTab);
    const socketsBefore = opened;
    await leaderTab.page.close();
    for (let i = 1; i <= 3; i++) await sendFromPage(seller, `while the leader left ${i}`);
    for (const tab of rest) await waitForText(tab, "while the leader left 3", LIVE_MS);
    for (const tab of rest) await waitForMode(tab, "live", LIVE_MS);
    expect(openCount()).toBe(1);
    expect(opened - socketsBefore).toBe(1);
    // A follower writes after the handover: the seller and every tab see it.
    await sendFromPage(rest[1] as UserPage, "still here");
    await waitForText(seller, "still here", LIVE_MS);
    for (const tab of rest) await waitForText(tab, "still here", LIVE_MS);

    const token = gw.accessToken(BUYER);
    const chatId = Number(await rest[0]?.page.getAttribute('[data-testid="chat-view"]', "data-chat-id"));
    const stored = (await messagesInDatabase(gw, token, chatId)).map((m) => [m.id, m.content]);
    for (const tab of rest) {
      expect(await shownTexts(tab)).toEqual(stored);
      const debug = await debugOf(tab);
      expect(debug.anomalies).toEqual([]);
      const ids = debug.events.map((e) => e.event_id);
      expect(ids).toEqual([...new Set(ids)].sort((a, b) => a - b));
      expect(tab.pageErrors).toEqual([]);
    }
    await rest[0]?.page.screenshot({ path: `${SCREENSHOTS}tabs-buyer-after-handover.png` });
  }, 120_000);
});
