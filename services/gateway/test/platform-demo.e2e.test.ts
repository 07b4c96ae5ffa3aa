/**
 * The platform's voice in the demo page (CONTRACT §8), in real Chromium (Debian's /usr/bin/chromium driven
 * by playwright-core): a real gateway and listings-chat, seeded by the demo seed (src/dev/seed.ts) through
 * the internal API, as `npm start` seeds them. Proves, on the DOM:
 *
 * - each chat of the list carries its listing (photo served by the gateway's dev routes, title, price in
 *   the browser's notation, a sold / removed badge) and the other person's name and avatar;
 * - the open chat shows its listing at the top, and the platform's system message centred, without a bubble;
 * - Archive moves a chat to the "Archived" list, and a message from the other side brings it back;
 * - a listing's change reaches the open page live (`chat_updated`);
 * - a removed listing's chat reads but does not send; a suspended user is told so, reads on, and is live
 *   again once the suspension is lifted.
 *
 * Screenshots go to `.ci/out/screenshots/platform-*.png`. Without /usr/bin/chromium the suite is skipped,
 * except under CI=true where it fails.
 */
import { randomUUID } from "node:crypto";
import { mkdir } from "node:fs/promises";
import type { Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEMO_CHATS, DEMO_LISTINGS, type SeedResult, seedDemo } from "../src/dev/seed.ts";
import {
  byTestId,
  CHROMIUM,
  debugOf,
  hasChromium,
  launchChromium,
  MESSAGES,
  openUserPage,
  requireChromium,
  SCREENSHOTS,
  type UserPage,
  waitForMode,
} from "./support/demo-browser.ts";
import { type E2EChat, type E2EGateway, http, randomSecret, startE2EChat, startE2EGateway } from "./support/e2e.ts";

/** The DOM names the page-side callbacks below use (the package compiles without the DOM library). */
interface Node {
  textContent: string | null;
  className: string;
  hidden: boolean;
  disabled: boolean;
  naturalWidth: number;
  dataset: Record<string, string | undefined>;
  getAttribute(name: string): string | null;
  querySelector(selector: string): Node | null;
  querySelectorAll(selector: string): Iterable<Node> & { length: number };
  getBoundingClientRect(): { left: number; right: number; width: number };
}
declare const document: {
  querySelector(selector: string): Node | null;
  querySelectorAll(selector: string): Iterable<Node> & { length: number };
};
declare const getComputedStyle: (node: Node) => { alignSelf: string; backgroundColor: string; textAlign: string };

const ANNA = 1;
const MARCO = 7;
const LENA = 3;
const CHAT_ITEM = byTestId("chat-item");

requireChromium("platform-demo.e2e.test.ts");

/** What a chat item of the list shows, read from the DOM. */
interface ShownChat {
  chatId: number;
  name: string | null;
  title: string | null;
  price: string | null;
  badge: string | null;
  /** The listing's photo was fetched and decoded (a picture the page could not load has width 0 or is gone). */
  photoLoaded: boolean;
  avatar: { initials: string | null; loaded: boolean };
}

const shownChats = (user: UserPage) =>
  user.page.$$eval(CHAT_ITEM, (items) =>
    items.map((raw) => {
      const item = raw as unknown as Node;
      const text = (selector: string) => item.querySelector(selector)?.textContent ?? null;
      const photo = item.querySelector('[data-testid="listing-photo"] img');
      const avatarBox = item.querySelector('[data-testid="avatar"]');
      const avatarImg = avatarBox?.querySelector("img");
      return {
        chatId: Number(item.dataset.chatId),
        name: text('[data-testid="peer-name"]'),
        title: text('[data-testid="listing-title"]'),
        price: text('[data-testid="listing-price"]'),
        badge: text('[data-testid="listing-badge"]'),
        photoLoaded: (photo?.naturalWidth ?? 0) > 0,
        avatar: { initials: avatarBox?.textContent ?? null, loaded: (avatarImg?.naturalWidth ?? 0) > 0 },
      } satisfies ShownChat;
    }),
  );

/** Waits until the list shows exactly these chat ids (any order). */
async function waitForList(user: UserPage, ids: number[], timeoutMs = 5_000) {
  await user.page.waitForFunction(
    ([selector, wanted]) => {
      const shown = [...document.querySelectorAll(selector as string)].map((n) => Number(n.dataset.chatId));
      return JSON.stringify(shown.sort((a, b) => a - b)) === JSON.stringify(wanted);
    },
    [CHAT_ITEM, [...ids].sort((a, b) => a - b)] as const,
    { timeout: timeoutMs, polling: 50 },
  );
}

/** Waits until every listing photo and avatar picture on the page has loaded (or the timeout). */
const waitForPictures = (user: UserPage) =>
  user.page.waitForFunction(
    () => [...document.querySelectorAll(".listing-photo img, .avatar img")].every((img) => img.naturalWidth > 0),
    undefined,
    { timeout: 5_000, polling: 50 },
  );

async function openChatFromList(user: UserPage, chatId: number) {
  await user.page.click(`${CHAT_ITEM}[data-chat-id="${chatId}"]`);
  await user.page.waitForFunction(
    ([id, selector]) =>
      document.querySelector('[data-testid="chat-view"]')?.getAttribute("data-chat-id") === id &&
      document.querySelector('[data-testid="history-status"]')?.getAttribute("data-state") === "complete" &&
      document.querySelectorAll(selector as string).length > 0,
    [String(chatId), MESSAGES],
    { timeout: 5_000 },
  );
}

const shot = (user: UserPage, name: string) => user.page.screenshot({ path: `${SCREENSHOTS}${name}`, fullPage: true });

describe.skipIf(!hasChromium)(
  hasChromium
    ? "demo page in Chromium: listings, names, system messages, archive, removed and suspended"
    : `demo page in Chromium (platform's voice): SKIPPED, ${CHROMIUM} is missing (apt-get install -y chromium)`,
  () => {
    const internalToken = randomSecret();
    let chat: E2EChat;
    let gw: E2EGateway;
    let browser: Browser;
    let seed: SeedResult;
    const users: UserPage[] = [];
    /** The seeded chat about a listing. */
    const chatOn = (listingId: number) => {
      const found = seed.chats.find((c) => c.listing_id === listingId);
      if (!found) throw new Error(`the seed opened no chat on listing ${listingId}`);
      return found.id;
    };
    const internal = (method: string, path: string, body?: unknown) =>
      http(chat.baseUrl, method, path, { headers: { "x-internal-token": internalToken }, body });

    let anna: UserPage;

    beforeAll(async () => {
      chat = await startE2EChat({ database: { inMemory: true }, internalToken });
      gw = await startE2EGateway({ chatUpstreams: [chat.baseUrl], internalToken });
      seed = await seedDemo({ chatUrl: chat.baseUrl, gatewayUrl: gw.baseUrl, internalToken });
      await mkdir(SCREENSHOTS, { recursive: true });
      browser = await launchChromium();
    }, 60_000);

    afterAll(async () => {
      for (const user of users) await user.context.close().catch(() => {});
      await browser?.close();
      await gw?.stop();
      await chat?.stop();
    });

    it("the seed runs again without adding anything (what npm start does at every start)", async () => {
      const token = await gw.devToken(ANNA);
      const countMessages = async () => {
        const counts: number[] = [];
        for (const c of seed.chats) {
          const page = await gw.api(token, "GET", `/api/v1/chats/${c.id}/messages?limit=100`);
          counts.push(page.status === 200 ? page.body.messages.length : -1);
        }
        return counts;
      };
      const before = await countMessages();
      const again = await seedDemo({ chatUrl: chat.baseUrl, gatewayUrl: gw.baseUrl, internalToken });
      expect(again.chats.map((c) => c.id)).toEqual(seed.chats.map((c) => c.id));
      expect(again.systemMessages[42]?.id).toBe(seed.systemMessages[42]?.id);
      expect(await countMessages()).toEqual(before);
      // Anna's chats (3 of the 4): every message the seed wrote in them, the system message included.
      const annaChats = DEMO_CHATS.filter((c) => c.buyer_id === ANNA);
      expect(before.filter((n) => n >= 0)).toEqual(annaChats.map((c) => c.messages.length + (c.system ? 1 : 0)));
    });

    it("the list reads like a marketplace: each chat's listing (photo, title, price, badge), the other person's name and avatar", {
      timeout: 60_000,
    }, async () => {
      anna = await openUserPage(browser, gw.baseUrl, ANNA, "", { locale: "en-US" });
      users.push(anna);
      await waitForMode(anna, "live", 15_000);
      await waitForList(anna, [chatOn(42), chatOn(44), chatOn(45)]);
      await waitForPictures(anna);
      const shown = new Map((await shownChats(anna)).map((c) => [c.chatId, c]));
      expect(shown.get(chatOn(42))).toEqual({
        chatId: chatOn(42),
        name: "Marco Rossi",
        title: "City bike, 28-inch, 7 gears",
        price: "€450.00",
        badge: null,
        photoLoaded: true,
        avatar: { initials: "MR", loaded: true },
      });
      expect(shown.get(chatOn(44))).toMatchObject({
        name: "Lena Vogel",
        title: "Film camera with 50 mm lens",
        price: "€85.00",
        badge: "sold",
        photoLoaded: true,
      });
      // Tom has no avatar: his initials are drawn instead.
      expect(shown.get(chatOn(45))).toMatchObject({
        name: "Tom Baker",
        title: "Velvet armchair",
        price: "€60.00",
        badge: "removed",
        photoLoaded: true,
        avatar: { initials: "TB", loaded: false },
      });
      // No number stands for a person anywhere in the list.
      expect(await anna.page.textContent(byTestId("chat-list"))).not.toMatch(/User \d+/);
      expect(await anna.page.textContent(byTestId("archived-toggle"))).toBe("Archived (0)");
      await shot(anna, "platform-listing-cards.png");

      // The seller's side of the same data: Marco sells to Anna (the bike) and to Lena (the reserved desk).
      const marco = await openUserPage(browser, gw.baseUrl, MARCO, "", { locale: "en-US" });
      users.push(marco);
      await waitForList(marco, [chatOn(42), chatOn(43)]);
      const marcoShown = new Map((await shownChats(marco)).map((c) => [c.chatId, c]));
      expect(marcoShown.get(chatOn(42))).toMatchObject({ name: "Anna Keller", price: "€450.00", badge: null });
      expect(marcoShown.get(chatOn(43))).toMatchObject({ name: "Lena Vogel", price: "€120.00", badge: "reserved" });
      expect(await marco.page.textContent(`${CHAT_ITEM}[data-chat-id="${chatOn(42)}"] .role`)).toBe(" · selling");
      await marco.context.close();
      users.splice(users.indexOf(marco), 1);
    });

    it("the open chat: its listing at the top, the people's messages in bubbles, the platform's message centred without one", async () => {
      await openChatFromList(anna, chatOn(42));
      expect(await anna.page.textContent(byTestId("chat-peer"))).toBe("Buying from Marco Rossi");
      const top = `${byTestId("chat-listing")} ${byTestId("listing-card")}`;
      expect(await anna.page.textContent(`${top} ${byTestId("listing-title")}`)).toBe("City bike, 28-inch, 7 gears");
      expect(await anna.page.textContent(`${top} ${byTestId("listing-price")}`)).toBe("€450.00");
      expect(await anna.page.getAttribute(`${top} a${byTestId("listing-title")}`, "href")).toBe(
        `${gw.baseUrl}/#listing-42`,
      );

      const system = `${MESSAGES}[data-kind="system"]`;
      expect(await anna.page.$$eval(system, (items) => items.length)).toBe(1);
      expect(await anna.page.textContent(`${system} ${byTestId("message-content")}`)).toBe("Offer made: 420 EUR");
      // The data in one short line (PostgreSQL's jsonb keeps its keys in an order of its own).
      const data = await anna.page.textContent(`${system} ${byTestId("message-data")}`);
      expect(data?.split(" · ").sort()).toEqual(["currency: EUR", "offer_minor: 42000"]);
      const look = await anna.page.evaluate((selector) => {
        const scroller = document.querySelector('[data-testid="message-scroller"]');
        const styleOf = (node: Node | null) => {
          if (!node || !scroller) return null;
          const style = getComputedStyle(node);
          const box = node.getBoundingClientRect();
          const area = scroller.getBoundingClientRect();
          return {
            className: node.className,
            alignSelf: style.alignSelf,
            background: style.backgroundColor,
            textAlign: style.textAlign,
            /** Its centre's distance from the list's centre, in px. */
            offCentre: Math.abs(box.left + box.width / 2 - (area.left + area.width / 2)),
            actions: node.querySelectorAll("button").length,
          };
        };
        return {
          system: styleOf(document.querySelector(selector)),
          theirs: styleOf(document.querySelector('[data-testid="message-list"] [data-sender-id="7"]')),
          mine: styleOf(document.querySelector('[data-testid="message-list"] [data-sender-id="1"]')),
        };
      }, system);
      expect(look.system).toMatchObject({
        className: "message system",
        alignSelf: "center",
        background: "rgba(0, 0, 0, 0)",
        textAlign: "center",
        actions: 0,
      });
      // Centred in the list (the scroll bar and padding may shift it a few px), while a bubble is not.
      expect(look.system?.offCentre).toBeLessThan(12);
      expect(look.theirs?.alignSelf).toBe("flex-start");
      expect(look.theirs?.background).not.toBe("rgba(0, 0, 0, 0)");
      expect(look.theirs?.offCentre).toBeGreaterThan(50);
      expect(look.mine?.alignSelf).toBe("flex-end");
      expect(
        await anna.page.textContent(`${CHAT_ITEM}[data-chat-id="${chatOn(42)}"] ${byTestId("chat-preview")}`),
      ).toBe("Offer made: 420 EUR");
      await shot(anna, "platform-system-message.png");
    });

    it("a listing's change reaches the open page live: the badge and the price change (chat_updated)", async () => {
      const bike = DEMO_LISTINGS.find((l) => l.id === 42);
      const changed = await internal("PUT", "/internal/chat/listings/42", {
        seller_id: bike?.seller_id,
        title: bike?.title,
        price_minor: 42_000,
        currency: "EUR",
        image_url: `${gw.baseUrl}/dev/img/bike.svg`,
        url: `${gw.baseUrl}/#listing-42`,
        status: "reserved",
      });
      expect(changed.status).toBe(200);
      const item = `${CHAT_ITEM}[data-chat-id="${chatOn(42)}"]`;
      await anna.page.waitForSelector(`${item} ${byTestId("listing-badge")}`, { timeout: 10_000 });
      expect(await anna.page.textContent(`${item} ${byTestId("listing-badge")}`)).toBe("reserved");
      expect(await anna.page.textContent(`${item} ${byTestId("listing-price")}`)).toBe("€420.00");
      const top = `${byTestId("chat-listing")} ${byTestId("listing-card")}`;
      expect(await anna.page.getAttribute(top, "data-status")).toBe("reserved");
      expect(await anna.page.textContent(`${top} ${byTestId("listing-badge")}`)).toBe("reserved");
      // Reserved is shown, not enforced: the chat still sends.
      expect(await anna.page.isDisabled(byTestId("send-input"))).toBe(false);
      const { events, anomalies } = await debugOf(anna);
      expect(events.filter((e) => e.type === "chat_updated" && e.chat_id === chatOn(42)).length).toBeGreaterThanOrEqual(
        1,
      );
      expect(anomalies).toEqual([]);
    });

    it("Archive moves the chat to the Archived list; a message from the other side brings it back to the list", {
      timeout: 30_000,
    }, async () => {
      const camera = chatOn(44);
      await openChatFromList(anna, camera);
      expect(await anna.page.textContent(byTestId("archive-chat"))).toBe("Archive");
      await anna.page.click(byTestId("archive-chat"));
      await waitForList(anna, [chatOn(42), chatOn(45)]);
      expect(await anna.page.textContent(byTestId("archived-toggle"))).toBe("Archived (1)");
      expect(await anna.page.textContent(byTestId("archive-chat"))).toBe("Unarchive");
      // The server agrees: hidden from the default list, listed with ?archived=1.
      const token = await gw.devToken(ANNA);
      const main = await gw.api(token, "GET", "/api/v1/chats");
      const archived = await gw.api(token, "GET", "/api/v1/chats?archived=1");
      expect(main.body.chats.map((c: { id: number }) => c.id)).not.toContain(camera);
      expect(archived.body.chats.map((c: { id: number; archived: boolean }) => [c.id, c.archived])).toEqual([
        [camera, true],
      ]);

      await anna.page.click(byTestId("archived-toggle"));
      await waitForList(anna, [camera]);
      expect(await anna.page.textContent(byTestId("chat-list-title"))).toBe("Archived chats");
      expect(await anna.page.getAttribute(`${CHAT_ITEM}[data-chat-id="${camera}"]`, "data-archived")).toBe("true");
      await waitForPictures(anna);
      await shot(anna, "platform-archived-list.png");

      // Lena writes: no chat_updated comes for that, the new_message is the signal; it leaves the archive.
      const lena = await gw.devToken(LENA);
      const sent = await gw.api(lena, "POST", `/api/v1/chats/${camera}/messages`, {
        content: "Found a strap after all, if you want it for the next one",
        client_msg_id: randomUUID(),
      });
      expect(sent.status).toBe(201);
      await waitForList(anna, []);
      expect(await anna.page.textContent(byTestId("no-chats"))).toBe("No archived chats.");
      expect(await anna.page.textContent(byTestId("archived-toggle"))).toBe("← All chats");
      await anna.page.click(byTestId("archived-toggle"));
      await waitForList(anna, [chatOn(42), camera, chatOn(45)]);
      expect(await anna.page.textContent(byTestId("archived-toggle"))).toBe("Archived (0)");
      expect(await anna.page.textContent(byTestId("archive-chat"))).toBe("Archive");
      const back = await gw.api(token, "GET", "/api/v1/chats");
      expect(back.body.chats.map((c: { id: number }) => c.id)).toContain(camera);
    });

    it("a removed listing's chat: readable, the send form closed, and it says why", async () => {
      const armchair = chatOn(45);
      await openChatFromList(anna, armchair);
      expect(await anna.page.textContent(`${MESSAGES} ${byTestId("message-content")}`)).toBe(
        "Any stains on the armchair?",
      );
      expect(await anna.page.getAttribute(byTestId("chat-notice"), "data-state")).toBe("listing-removed");
      expect(await anna.page.textContent(byTestId("chat-notice-text"))).toBe(
        "This listing was removed: you can read but not send",
      );
      expect(await anna.page.isDisabled(byTestId("send-input"))).toBe(true);
      expect(await anna.page.isDisabled(byTestId("send-submit"))).toBe(true);
      expect(await anna.page.textContent(`${byTestId("chat-listing")} ${byTestId("listing-badge")}`)).toBe("removed");
      // What the page says is what the server does: 409 listing_closed.
      const token = await gw.devToken(ANNA);
      const refused = await gw.api(token, "POST", `/api/v1/chats/${armchair}/messages`, {
        content: "hello?",
        client_msg_id: randomUUID(),
      });
      expect(refused.status).toBe(409);
      expect(refused.body.error.code).toBe("listing_closed");
      await shot(anna, "platform-removed-listing.png");
    });

    it("suspended: told in words, reads go on by polling, sends closed; lifted, live again within the 30 s retry", {
      timeout: 90_000,
    }, async () => {
      await openChatFromList(anna, chatOn(42));
      await waitForMode(anna, "live", 10_000);
      const suspended = await internal("POST", `/internal/chat/users/${ANNA}/suspend`, { reason: "demo" });
      expect(suspended.status).toBe(204);
      await anna.page.waitForSelector(`${byTestId("suspended-banner")}:not([hidden])`, { timeout: 10_000 });
      expect(await anna.page.textContent(byTestId("suspended-banner"))).toMatch(/^Your account is suspended/);
      await waitForMode(anna, "polling", 5_000);
      expect(await anna.page.isDisabled(byTestId("send-input"))).toBe(true);
      expect(await anna.page.getAttribute(byTestId("chat-notice"), "data-state")).toBe("suspended");
      // The polling banner is not shown beside it: the suspension is why the page polls.
      expect(await anna.page.isHidden(byTestId("fallback-banner"))).toBe(true);

      // Reads go on: Marco's message arrives by polling.
      const marco = await gw.devToken(MARCO);
      const sent = await gw.api(marco, "POST", `/api/v1/chats/${chatOn(42)}/messages`, {
        content: "Still interested? I can do 430.",
        client_msg_id: randomUUID(),
      });
      expect(sent.status).toBe(201);
      await anna.page.waitForFunction(
        ([selector, text]) =>
          [...document.querySelectorAll(selector as string)].some(
            (li) => li.querySelector('[data-testid="message-content"]')?.textContent === text,
          ),
        [MESSAGES, "Still interested? I can do 430."],
        { timeout: 8_000, polling: 100 },
      );
      await shot(anna, "platform-suspended.png");

      const lifted = await internal("DELETE", `/internal/chat/users/${ANNA}/suspend`);
      expect(lifted.status).toBe(204);
      await waitForMode(anna, "live", 40_000);
      await anna.page.waitForSelector(`${byTestId("suspended-banner")}[hidden]`, { state: "attached", timeout: 2_000 });
      expect(await anna.page.isDisabled(byTestId("send-input"))).toBe(false);
      expect(anna.pageErrors).toEqual([]);
      expect(anna.dialogs).toEqual([]);
    });
  },
);
