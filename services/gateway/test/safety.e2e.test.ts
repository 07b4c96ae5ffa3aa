/**
 * Block and report in the demo page (CONTRACT §10), in Debian's Chromium through a real gateway and a real
 * listings-chat (PGlite; also PostgreSQL when DATABASE_URL is set): a buyer and a seller chat; the seller
 * reports the buyer's message (the report keeps the message as it was, though the buyer edits it after)
 * and the buyer; the seller blocks the buyer, and the seller's second device shows it live; the buyer,
 * told nothing, sends and is refused ("You can't send messages in this chat", no retry), and nothing the
 * buyer types reaches the seller; the seller unblocks, and the buyer's next message is on every screen.
 *
 * Screenshots of the reported and blocked states go to `.ci/out/screenshots/safety-*.png`.
 * Without /usr/bin/chromium the suite is skipped, except under CI=true where it fails.
 */
import { mkdir } from "node:fs/promises";
import { and, eq } from "drizzle-orm";
import type { Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { reports } from "../../listings-chat/src/db/schema.ts";
import { databaseTargets } from "../../listings-chat/test/support/databases.ts";
import {
  byTestId,
  debugOf,
  hasChromium,
  launchChromium,
  MESSAGES,
  messagesInDatabase,
  openUserPage,
  type PageElement,
  requireChromium,
  SCREENSHOTS,
  sendFromPage,
  shownTexts,
  type UserPage,
  waitForMode,
  waitForText,
} from "./support/demo-browser.ts";
import { type E2EChat, type E2EGateway, randomSecret, startE2EChat, startE2EGateway } from "./support/e2e.ts";

/** The DOM names the page-side callbacks below use (the package compiles without the DOM library). */
declare const document: {
  querySelector(selector: string): (PageElement & { hidden: boolean; disabled: boolean }) | null;
};
declare const window: { typingSeenDuringBlock?: boolean };
declare class MutationObserver {
  constructor(callback: () => void);
  observe(target: unknown, options: { attributes: boolean }): void;
}

/** A live message on the other screen within this (a busy 2-core machine included). */
const LIVE_MS = 5_000;

requireChromium("safety.e2e.test.ts");

describe.skipIf(!hasChromium)("demo page in Chromium: report, block, refused send, unblock", () => {
  let browser: Browser;

  beforeAll(async () => {
    await mkdir(SCREENSHOTS, { recursive: true });
    browser = await launchChromium();
  });

  afterAll(async () => {
    await browser?.close();
  });

  describe.each(hasChromium ? databaseTargets() : [])("on $name", (target) => {
    const internalToken = randomSecret();
    const SELLER = 501;
    const BUYER = 502;
    let database: Awaited<ReturnType<typeof target.create>>;
    let chat: E2EChat;
    let gw: E2EGateway;
    const users: UserPage[] = [];

    beforeAll(async () => {
      database = await target.create();
      chat = await startE2EChat({ database: database.options, internalToken });
      gw = await startE2EGateway({ chatUpstreams: [chat.baseUrl], internalToken });
    });

    afterAll(async () => {
      for (const user of users) await user.context.close().catch(() => {});
      await gw?.stop();
      await chat?.stop();
      await database?.drop();
    });

    it("the seller reports and blocks the buyer; the buyer's send is refused; after the unblock it goes through", {
      timeout: 60_000,
    }, async () => {
      const buyerToken = await gw.devToken(BUYER);
      const sellerToken = await gw.devToken(SELLER);
      const opened = await gw.api(buyerToken, "POST", "/api/v1/chats", { listing_id: 77, seller_id: SELLER });
      expect(opened.status).toBe(201);
      const chatId: number = opened.body.id;

      // ---- Three screens: the buyer, the seller, and a second device of the seller's. Each opens the chat.
      const buyer = await openUserPage(browser, gw.baseUrl, BUYER);
      const seller = await openUserPage(browser, gw.baseUrl, SELLER);
      const sellerTab = await openUserPage(browser, gw.baseUrl, SELLER);
      users.push(buyer, seller, sellerTab);
      const chatItem = `${byTestId("chat-item")}[data-chat-id="${chatId}"]`;
      for (const user of users) {
        await waitForMode(user, "live", 15_000);
        await user.page.click(chatItem);
        await user.page.waitForSelector(`${byTestId("chat-view")}[data-chat-id="${chatId}"]`);
        // Nobody blocks anybody yet: Block is offered, no notice, the form is enabled.
        await user.page.waitForSelector(`${byTestId("block-user")}:not([hidden])`);
        expect(await user.page.isHidden(byTestId("chat-notice"))).toBe(true);
        expect(await user.page.isEnabled(byTestId("send-input"))).toBe(true);
      }
      const otherId = (user: UserPage) => (user.userId === SELLER ? BUYER : SELLER);
      for (const user of users) {
        expect(await user.page.textContent(byTestId("block-user"))).toBe(`Block User ${otherId(user)}`);
      }

      // ---- They chat. All live, yet nobody sees the other online: nobody has written (CONTRACT §10).
      const presenceShown = (online: boolean) =>
        `${byTestId("chat-title")} ${byTestId("presence")}[data-online="${online}"]`;
      for (const user of users) expect(await user.page.$(presenceShown(false))).not.toBeNull();
      const sellers = [seller, sellerTab];
      await sendFromPage(buyer, "Hi, is the bike still for sale?");
      await Promise.all(sellers.map((user) => waitForText(user, "Hi, is the bike still for sale?", LIVE_MS)));
      await sendFromPage(seller, "Yes, come and see it on Saturday");
      await waitForText(buyer, "Yes, come and see it on Saturday", LIVE_MS);
      // The seller's reply made them contacts: each screen shows the other online, without a reload (before,
      // a first conversation showed "offline" on both sides until the page was loaded again).
      for (const user of users) await user.page.waitForSelector(presenceShown(true), { timeout: LIVE_MS });
      const scam = "I can't come: pay a deposit by wire to my cousin and I'll send a courier";
      await sendFromPage(buyer, scam);
      await Promise.all(sellers.map((user) => waitForText(user, scam, LIVE_MS)));
      const scamMessage = (await messagesInDatabase(gw, sellerToken, chatId)).find((m) => m.content === scam);
      if (!scamMessage) throw new Error("the buyer's message is not stored");
      const scamItem = `${MESSAGES}[data-message-id="${scamMessage.id}"]`;
      // Report is offered on the other person's messages only.
      expect(
        await seller.page.$$eval(
          `${MESSAGES}[data-sender-id="${SELLER}"] ${byTestId("message-report")}`,
          (items) => items.length,
        ),
      ).toBe(0);

      // ---- The seller reports the message, inline: a reason, a note, then "Reported" in the message.
      await seller.page.hover(scamItem);
      await seller.page.click(`${scamItem} ${byTestId("message-report")}`);
      await seller.page.selectOption(`${scamItem} ${byTestId("report-reason")}`, "scam");
      await seller.page.fill(`${scamItem} ${byTestId("report-note")}`, "asks for a deposit by wire");
      await seller.page.screenshot({ path: `${SCREENSHOTS}safety-report-form-seller.png` });
      await seller.page.click(`${scamItem} ${byTestId("report-submit")}`);
      await seller.page.waitForSelector(`${scamItem} ${byTestId("message-reported")}`, { timeout: LIVE_MS });
      expect(await seller.page.textContent(`${scamItem} ${byTestId("message-reported")}`)).toBe("Reported");
      expect(await seller.page.$$(`${scamItem} ${byTestId("report-form")}`)).toHaveLength(0);

      // The buyer edits the message afterwards: the report keeps it as it was reported.
      await buyer.page.hover(scamItem);
      await buyer.page.click(`${scamItem} ${byTestId("message-edit")}`);
      await buyer.page.fill(byTestId("message-edit-input"), "never mind");
      await buyer.page.press(byTestId("message-edit-input"), "Enter");
      await Promise.all(sellers.map((user) => waitForText(user, "never mind", LIVE_MS)));
      // Re-drawn with the new text, the message still says it was reported.
      expect(await seller.page.textContent(`${scamItem} ${byTestId("message-reported")}`)).toBe("Reported");

      const db = chat.server.database.db;
      const messageReports = await db
        .select()
        .from(reports)
        .where(and(eq(reports.targetType, "message"), eq(reports.targetId, scamMessage.id)));
      expect(messageReports).toHaveLength(1);
      expect(messageReports[0]).toMatchObject({
        reporterId: SELLER,
        reason: "scam",
        note: "asks for a deposit by wire",
        message: expect.objectContaining({ id: scamMessage.id, sender_id: BUYER, content: scam }),
      });

      // ---- "Report chat" opens the form under the chat's header; cancel closes it, and nothing is stored.
      await seller.page.click(byTestId("report-chat"));
      await seller.page.waitForSelector(`${byTestId("report-panel")} ${byTestId("report-form")}`);
      await seller.page.click(`${byTestId("report-panel")} ${byTestId("report-cancel")}`);
      await seller.page.waitForSelector(`${byTestId("report-panel")}[hidden]`, { state: "attached" });
      expect(await db.select().from(reports).where(eq(reports.targetType, "chat"))).toEqual([]);

      // ---- The seller reports the buyer (the same form, for the person), then sees "Reported".
      await seller.page.click(byTestId("report-user"));
      await seller.page.selectOption(`${byTestId("report-panel")} ${byTestId("report-reason")}`, "harassment");
      await seller.page.click(`${byTestId("report-panel")} ${byTestId("report-submit")}`);
      await seller.page.waitForSelector(byTestId("report-done"), { timeout: LIVE_MS });
      expect(await seller.page.textContent(byTestId("report-done"))).toBe("Reported");
      const userReports = await db.select().from(reports).where(eq(reports.targetType, "user"));
      expect(userReports).toMatchObject([{ reporterId: SELLER, targetId: BUYER, reason: "harassment", note: null }]);
      await seller.page.screenshot({ path: `${SCREENSHOTS}safety-reported-seller.png` });

      // ---- The seller blocks the buyer: this screen and the seller's other device show it (user_blocked).
      //      From here until the unblock, the seller's screens record any typing indicator of the buyer's.
      for (const user of sellers) {
        await user.page.evaluate(() => {
          const indicator = document.querySelector('[data-testid="typing-indicator"]');
          window.typingSeenDuringBlock = false;
          new MutationObserver(() => {
            if (indicator && !indicator.hidden) window.typingSeenDuringBlock = true;
          }).observe(indicator, { attributes: true });
        });
      }
      await seller.page.click(byTestId("block-user"));
      for (const user of sellers) {
        await user.page.waitForSelector(`${byTestId("chat-notice")}[data-state="blocked"]`, { timeout: LIVE_MS });
        expect(await user.page.textContent(byTestId("chat-notice-text"))).toBe("You blocked this user");
        expect(await user.page.isVisible(byTestId("unblock-user"))).toBe(true);
        expect(await user.page.isHidden(byTestId("block-user"))).toBe(true);
        expect(await user.page.isDisabled(byTestId("send-input"))).toBe(true);
        expect(await user.page.isDisabled(byTestId("send-submit"))).toBe(true);
        expect(await user.page.getAttribute(chatItem, "data-blocked")).toBe("true");
        expect(await user.page.textContent(`${chatItem} ${byTestId("chat-blocked")}`)).toBe("blocked");
      }
      // The second device heard it as an event (no chat_id: a block is of a person).
      expect((await debugOf(sellerTab)).events.filter((e) => e.type === "user_blocked")).toEqual([
        expect.not.objectContaining({ chat_id: expect.anything() }),
      ]);
      expect((await gw.api(sellerToken, "GET", "/api/v1/blocks")).body.blocks).toMatchObject([{ user_id: BUYER }]);
      // A device that signs in during the block reads it (GET /api/v1/blocks): the chat is shown blocked.
      const lateDevice = await openUserPage(browser, gw.baseUrl, SELLER);
      await lateDevice.page.waitForSelector(`${chatItem}[data-blocked="true"] ${byTestId("chat-blocked")}`);
      await lateDevice.page.click(chatItem);
      await lateDevice.page.waitForSelector(`${byTestId("chat-notice")}[data-state="blocked"]`, { timeout: LIVE_MS });
      expect(await lateDevice.page.isDisabled(byTestId("send-input"))).toBe(true);
      expect(lateDevice.pageErrors).toEqual([]);
      await lateDevice.context.close();
      await seller.page.screenshot({ path: `${SCREENSHOTS}safety-blocked-seller.png` });
      await sellerTab.page.screenshot({ path: `${SCREENSHOTS}safety-blocked-seller-other-device.png` });

      // ---- The buyer is told nothing until they send: then "You can't send messages in this chat", no retry.
      expect(await buyer.page.isHidden(byTestId("chat-notice"))).toBe(true);
      expect(await buyer.page.isEnabled(byTestId("send-input"))).toBe(true);
      const refusedText = "hello? are you there?";
      await buyer.page.type(byTestId("send-input"), refusedText);
      await buyer.page.press(byTestId("send-input"), "Enter");
      const refused = `${byTestId("message-refused")}.failed`;
      await buyer.page.waitForSelector(refused, { timeout: LIVE_MS });
      expect(await buyer.page.textContent(`${refused} .content`)).toBe(refusedText);
      expect(await buyer.page.textContent(`${refused} .meta`)).toBe(
        "not sent: you can't send messages in this chat · discard",
      );
      expect(await buyer.page.$$(`${refused} ${byTestId("send-retry")}`)).toHaveLength(0);
      await buyer.page.waitForSelector(`${byTestId("chat-notice")}[data-state="refused"]`, { timeout: LIVE_MS });
      expect(await buyer.page.textContent(byTestId("chat-notice-text"))).toBe("You can't send messages in this chat");
      expect(await buyer.page.isHidden(byTestId("error"))).toBe(true);
      // Nothing is sending any more, and a send the client gave up on is not tried again behind the page.
      expect(await buyer.page.$$(byTestId("message-pending"))).toHaveLength(0);
      await buyer.page.screenshot({ path: `${SCREENSHOTS}safety-refused-buyer.png` });

      // ---- The seller unblocks (the notice's button): both of the seller's screens are back to normal.
      await seller.page.click(byTestId("unblock-user"));
      for (const user of sellers) {
        await user.page.waitForSelector(`${byTestId("chat-notice")}[hidden]`, { state: "attached", timeout: LIVE_MS });
        expect(await user.page.isEnabled(byTestId("send-input"))).toBe(true);
        expect(await user.page.isVisible(byTestId("block-user"))).toBe(true);
        expect(await user.page.getAttribute(chatItem, "data-blocked")).toBe("false");
        expect(await user.page.evaluate(() => window.typingSeenDuringBlock)).toBe(false);
      }

      // ---- The buyer writes again: it goes through, on every screen, and the buyer's notice goes.
      await sendFromPage(buyer, "sorry, still interested?");
      await Promise.all(users.map((user) => waitForText(user, "sorry, still interested?", LIVE_MS)));
      await buyer.page.waitForSelector(`${byTestId("chat-notice")}[hidden]`, { state: "attached", timeout: LIVE_MS });
      // The refused message stays where it was typed until discarded; it was never stored.
      await buyer.page.click(`${refused} ${byTestId("send-discard")}`);
      expect(await buyer.page.$$(refused)).toHaveLength(0);

      // ---- Nothing the buyer typed during the block reached the seller: the screens equal the database.
      const stored = await messagesInDatabase(gw, sellerToken, chatId);
      expect(stored.map((m) => m.content)).toEqual([
        "Hi, is the bike still for sale?",
        "Yes, come and see it on Saturday",
        "never mind",
        "sorry, still interested?",
      ]);
      for (const user of users) {
        expect(await shownTexts(user)).toEqual(stored.map((m) => [m.id, m.content]));
        const seen = await debugOf(user);
        expect(seen.anomalies).toEqual([]);
        expect(seen.events.filter((e) => e.type === "new_message").map((e) => e.message_id)).toEqual(
          stored.map((m) => m.id),
        );
        expect(user.pageErrors).toEqual([]);
        expect(user.dialogs).toEqual([]);
      }
      for (const user of sellers) {
        const types = (await debugOf(user)).events.map((e) => e.type);
        expect(types.filter((t) => t === "user_blocked" || t === "user_unblocked")).toEqual([
          "user_blocked",
          "user_unblocked",
        ]);
      }
      expect((await gw.api(sellerToken, "GET", "/api/v1/blocks")).body.blocks).toEqual([]);
    });
  });

  describe("content rules", () => {
    const internalToken = randomSecret();
    const SELLER = 601;
    const BUYER = 602;
    /** PostgreSQL in CI, PGlite elsewhere: what is checked here is the page, not the database. */
    const target = databaseTargets().at(-1)!;
    let database: Awaited<ReturnType<typeof target.create>>;
    let chat: E2EChat;
    let gw: E2EGateway;
    const users: UserPage[] = [];

    beforeAll(async () => {
      if (!hasChromium) return;
      database = await target.create();
      chat = await startE2EChat({
        database: database.options,
        internalToken,
        // As a platform would write CONTENT_RULES_FILE: phone numbers masked, one phrase refused, links flagged.
        contentRules: {
          rules: [
            { id: "phone", match: "phone", action: "mask" },
            { id: "wire", match: { words: ["western union"] }, action: "reject" },
            { id: "url", match: "url", action: "flag" },
          ],
          phoneRegion: "US",
          siteDomains: ["marketplace.example"],
        },
      });
      gw = await startE2EGateway({ chatUpstreams: [chat.baseUrl], internalToken });
    });

    afterAll(async () => {
      for (const user of users) await user.context.close().catch(() => {});
      await gw?.stop();
      await chat?.stop();
      await database?.drop();
    });

    it("masks a phone number on both screens, refuses a rejected phrase in words and gives the text back", {
      timeout: 60_000,
    }, async () => {
      const buyerToken = await gw.devToken(BUYER);
      const opened = await gw.api(buyerToken, "POST", "/api/v1/chats", { listing_id: 88, seller_id: SELLER });
      expect(opened.status).toBe(201);
      const chatId: number = opened.body.id;
      const buyer = await openUserPage(browser, gw.baseUrl, BUYER);
      const seller = await openUserPage(browser, gw.baseUrl, SELLER);
      users.push(buyer, seller);
      for (const user of users) {
        await waitForMode(user, "live", 15_000);
        await user.page.click(`${byTestId("chat-item")}[data-chat-id="${chatId}"]`);
        await user.page.waitForSelector(`${byTestId("chat-view")}[data-chat-id="${chatId}"]`);
      }

      // Masked: stored as •••, so both screens show it so (the sender's too, from the stored message).
      await sendFromPage(buyer, "call me on (415) 555-2671 tonight");
      await Promise.all(users.map((user) => waitForText(user, "call me on ••• tonight", LIVE_MS)));

      // Refused: the sender is told which rule and why, with the text back in the form; nothing is stored.
      await sendFromPage(buyer, "I can pay by Western Union");
      const rejected = await buyer.page.waitForSelector(byTestId("message-rejected"), { timeout: LIVE_MS });
      expect(await rejected.textContent()).toContain('not sent: the message breaks the content rule "wire"');
      expect(await buyer.page.inputValue(byTestId("send-input"))).toBe("I can pay by Western Union");
      expect(await buyer.page.$(byTestId("send-retry"))).toBeNull();
      await buyer.page.screenshot({ path: `${SCREENSHOTS}safety-content-rejected-buyer.png` });

      // Flagged: shown as written; the flag is the platform's and no answer carries it.
      await buyer.page.fill(byTestId("send-input"), "");
      await sendFromPage(buyer, "photos at https://elsewhere.example/bike and https://marketplace.example/l/88");
      await Promise.all(
        users.map((user) =>
          waitForText(user, "photos at https://elsewhere.example/bike and https://marketplace.example/l/88", LIVE_MS),
        ),
      );
      const stored = await messagesInDatabase(gw, buyerToken, chatId);
      expect(stored.map((m) => m.content)).toEqual([
        "call me on ••• tonight",
        "photos at https://elsewhere.example/bike and https://marketplace.example/l/88",
      ]);
      const page = await gw.api(buyerToken, "GET", `/api/v1/chats/${chatId}/messages`);
      expect(page.text).not.toContain("flags");
      for (const user of users) {
        expect(await shownTexts(user)).toEqual(stored.map((m) => [m.id, m.content]));
        expect(user.pageErrors).toEqual([]);
      }
    });
  });
});
