/**
 * The demo page in Debian's Chromium, as a user drives it: shared by the browser tests. Chromium is
 * /usr/bin/chromium driven by playwright-core (never a downloaded browser); without it the suites skip,
 * except under CI=true where they fail.
 */
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { Message } from "@listings-chat/shared";
import { type Browser, type BrowserContext, chromium, type Page } from "playwright-core";
import { describe, expect, it } from "vitest";
import type { E2EGateway } from "./e2e.ts";

export const CHROMIUM = "/usr/bin/chromium";
export const hasChromium = existsSync(CHROMIUM);
export const SCREENSHOTS = fileURLToPath(new URL("../../../../.ci/out/screenshots/", import.meta.url));
export const POLLING_WARNING = "Real-time updates are unavailable: refreshing every 5 seconds";

/** Chromium with the flags this machine needs; every launch has a new, empty user-data-dir of its own. */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    timeout: 30_000,
  });
}

/** Without Chromium: a warning outside CI, a failing test under CI (which must install it). */
export function requireChromium(file: string): void {
  if (!hasChromium && !process.env.CI) {
    console.warn(`${file} skipped: ${CHROMIUM} is missing (install Debian's chromium: apt-get install -y chromium)`);
  }
  if (!hasChromium && process.env.CI) {
    describe(`${file}: Chromium`, () => {
      it(`needs Debian's chromium at ${CHROMIUM}`, () => {
        throw new Error(
          `${CHROMIUM} is missing: CI must install it (.ci/run does: apt-get install -y chromium); no test downloads a browser`,
        );
      });
    });
  }
}

export interface DemoDebug {
  /** `chat_id` is absent on `user_blocked` / `user_unblocked` (a block is of a person, not of a chat). */
  events: { event_id: number; type: string; chat_id?: number; message_id?: number }[];
  anomalies: string[];
  modes: { to: string; at: number }[];
  tokenRefreshes: number;
}

export interface UserPage {
  userId: number;
  context: BrowserContext;
  page: Page;
  /** Uncaught exceptions in the page. */
  pageErrors: string[];
  /** `alert()`/`confirm()` dialogs the page opened (an XSS would). */
  dialogs: string[];
  consoleErrors: string[];
  /** Paths of every request the page made (a favicon the page forgot would show here). */
  requestedPaths: string[];
}

/**
 * The callbacks given to page.evaluate / waitForFunction / $$eval run in the page, not in Node: the few
 * DOM names they use, declared for this file only (the package compiles without the DOM library).
 */
export interface PageElement {
  textContent: string | null;
  scrollTop: number;
  dataset: Record<string, string | undefined>;
  getAttribute(name: string): string | null;
  querySelector(selector: string): PageElement | null;
}
declare const document: {
  body: PageElement;
  querySelector(selector: string): PageElement | null;
  querySelectorAll(selector: string): Iterable<PageElement> & { length: number };
};
declare const window: { chatDemo: DemoDebug };

export const byTestId = (id: string) => `[data-testid="${id}"]`;
export const MESSAGES = `${byTestId("message-list")} [data-message-id]`;

/**
 * Opens the demo in a new browser context and signs in as `userId`; `query` is the page's query string,
 * `locale` the browser's language (prices and times are written in it).
 */
export async function openUserPage(
  browser: Browser,
  baseUrl: string,
  userId: number,
  query = "",
  options: {
    locale?: string;
    beforeOpen?: (context: BrowserContext) => Promise<void>;
    /** Another tab of this browser context (the same person's browser), instead of a new context. */
    context?: BrowserContext;
  } = {},
): Promise<UserPage> {
  const context =
    options.context ??
    (await browser.newContext({
      viewport: { width: 1100, height: 720 },
      ...(options.locale ? { locale: options.locale } : {}),
    }));
  // Routes (a WebSocket the test controls, say) in place before the page makes its first request.
  await options.beforeOpen?.(context);
  const page = await context.newPage();
  const user: UserPage = { userId, context, page, pageErrors: [], dialogs: [], consoleErrors: [], requestedPaths: [] };
  page.on("request", (request) => user.requestedPaths.push(new URL(request.url()).pathname));
  page.on("pageerror", (error) => user.pageErrors.push(error.message));
  page.on("console", (message) => {
    if (message.type() === "error") user.consoleErrors.push(message.text());
  });
  page.on("dialog", (dialog) => {
    user.dialogs.push(`${dialog.type()}: ${dialog.message()}`);
    void dialog.dismiss();
  });
  await page.goto(`${baseUrl}/${query}`);
  await page.fill(byTestId("sign-in-user"), String(userId));
  await page.click(byTestId("sign-in-submit"));
  await page.waitForFunction(
    (text) => document.querySelector('[data-testid="me"]')?.textContent === text,
    `signed in as user ${userId}`,
    { timeout: 10_000 },
  );
  return user;
}

export const waitForMode = (user: UserPage, mode: string, timeoutMs: number) =>
  user.page.waitForFunction((m) => document.body.dataset.mode === m, mode, { timeout: timeoutMs });

/** The ids of the messages on screen, top to bottom. */
export const shownIds = (user: UserPage) =>
  user.page.$$eval(MESSAGES, (items) => items.map((li) => Number((li as unknown as PageElement).dataset.messageId)));

/** id → text of every message on screen. */
export const shownTexts = (user: UserPage) =>
  user.page.$$eval(MESSAGES, (items) =>
    items.map((li) => [
      Number((li as unknown as PageElement).dataset.messageId),
      li.querySelector('[data-testid="message-content"]')?.textContent ?? null,
    ]),
  );

/** Resolves with the time at which a stored message with exactly this text is on screen. */
export async function waitForText(user: UserPage, text: string, timeoutMs: number): Promise<number> {
  await user.page.waitForFunction(
    ([selector, wanted]) =>
      [...document.querySelectorAll(selector as string)].some(
        (li) => li.querySelector('[data-testid="message-content"]')?.textContent === wanted,
      ),
    [MESSAGES, text],
    { timeout: timeoutMs, polling: 50 },
  );
  return Date.now();
}

/** "Contact a seller": unfolds the form when it is folded (a user who has chats), fills it and submits. */
export async function contactSeller(user: UserPage, listingId: number, sellerId: number) {
  if ((await user.page.getAttribute(byTestId("open-chat"), "open")) === null) {
    await user.page.click(`${byTestId("open-chat")} summary`);
  }
  await user.page.fill(byTestId("open-chat-listing"), String(listingId));
  await user.page.fill(byTestId("open-chat-seller"), String(sellerId));
  await user.page.click(byTestId("open-chat-submit"));
}

export async function sendFromPage(user: UserPage, text: string) {
  await user.page.fill(byTestId("send-input"), text);
  await user.page.press(byTestId("send-input"), "Enter");
}

/** Scrolls the message list to the top until the page has loaded the whole conversation. */
export async function scrollToBeginning(user: UserPage) {
  await user.page.waitForFunction(
    () => {
      const status = document.querySelector('[data-testid="history-status"]')?.getAttribute("data-state");
      if (status === "complete") return true;
      const scroller = document.querySelector('[data-testid="message-scroller"]');
      if (scroller) scroller.scrollTop = 0;
      return false;
    },
    undefined,
    { timeout: 10_000, polling: 100 },
  );
}

export const debugOf = (user: UserPage) => user.page.evaluate(() => window.chatDemo);

/** Every message of the chat as the database has it, oldest first (through the gateway, page by page). */
export async function messagesInDatabase(gw: E2EGateway, token: string, chatId: number): Promise<Message[]> {
  const newestFirst: Message[] = [];
  let before: number | undefined;
  for (;;) {
    const query = before === undefined ? "limit=100" : `limit=100&before=${before}`;
    const res = await gw.api(token, "GET", `/api/v1/chats/${chatId}/messages?${query}`);
    expect(res.status).toBe(200);
    newestFirst.push(...res.body.messages);
    if (!res.body.has_more) break;
    before = newestFirst.at(-1)?.id;
  }
  return newestFirst.reverse();
}
