import { mkdir } from "node:fs/promises";
import type { Browser } from "playwright-core";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jpegWithGps, pngWithMetadata, readMetadata, textNamedJpeg } from "../../listings-chat/test/support/images.ts";
import { storageTargets, type TestStorage } from "../../listings-chat/test/support/storages.ts";
import {
  byTestId,
  hasChromium,
  launchChromium,
  MESSAGES,
  openUserPage,
  requireChromium,
  SCREENSHOTS,
  type UserPage,
  waitForMode,
} from "./support/demo-browser.ts";
import { type E2EStack, startE2EStack } from "./support/e2e.ts";

/** A photo on the other screen within this (processing included, on a busy 2-core machine). */
const LIVE_MS = 15_000;

requireChromium("photos.e2e.test.ts");

describe.skipIf(!hasChromium)("demo page in Chromium: photos", () => {
  let browser: Browser;

  beforeAll(async () => {
    await mkdir(SCREENSHOTS, { recursive: true });
    browser = await launchChromium();
  });

  afterAll(async () => {
    await browser?.close();
  });

  describe.each(hasChromium ? storageTargets({ cors: true }) : [])("on $name storage", (target) => {
    const BUYER = 801;
    const SELLER = 802;
    let storage: TestStorage;
    let stack: E2EStack;
    let chatId: number;
    let buyer: UserPage;
    let seller: UserPage;
    const thumbs = (user: UserPage) => user.page.$$(`${MESSAGES} ${byTestId("photo-thumb")}`);

    beforeAll(async () => {
      storage = await target.create();
      stack = await startE2EStack({}, { storage: storage.config });
      const { gw } = stack;
      const opened = await gw.api(await gw.devToken(BUYER), "POST", "/api/v1/chats", {
        listing_id: 81,
        seller_id: SELLER,
      });
      chatId = opened.body.id;
      buyer = await openUserPage(browser, gw.baseUrl, BUYER);
      seller = await openUserPage(browser, gw.baseUrl, SELLER);
      for (const user of [buyer, seller]) {
        await waitForMode(user, "live", 15_000);
        await user.page.click(`${byTestId("chat-item")}[data-chat-id="${chatId}"]`);
        await user.page.waitForSelector(`${byTestId("chat-view")}[data-chat-id="${chatId}"]`);
      }
    }, 90_000);

    afterAll(async () => {
      for (const user of [buyer, seller]) await user?.context.close().catch(() => {});
      await stack?.stop();
      await storage?.drop();
    });

    it("a phone photo goes from the attach button to the other screen, upright and without its GPS tags", {
      timeout: 60_000,
    }, async () => {
      const photo = await jpegWithGps({ width: 1200, height: 800, orientation: 6 });
      expect((await readMetadata(photo)).gps).toBeDefined();
      await buyer.page.setInputFiles(byTestId("attach-input"), {
        name: "IMG_0042.jpg",
        mimeType: "image/jpeg",
        buffer: photo,
      });
      // The thumbnail on both screens: the buyer's own, and live on the seller's.
      for (const user of [buyer, seller]) {
        await user.page.waitForFunction(
          (selector) =>
            [...document.querySelectorAll(selector)].some(
              (img) =>
                (img as unknown as { complete: boolean; naturalWidth: number }).complete &&
                (img as unknown as { naturalWidth: number }).naturalWidth > 0,
            ),
          `${MESSAGES} ${byTestId("photo-thumb")}`,
          { timeout: LIVE_MS, polling: 100 },
        );
      }
      expect(await thumbs(seller)).toHaveLength(1);
      await seller.page.screenshot({ path: `${SCREENSHOTS}photos-${target.name}-seller-thread.png` });

      // The viewer shows the stored photo: fetched here from the same URL, it has no metadata and stands upright.
      await seller.page.click(`${MESSAGES} ${byTestId("photo-thumb")}`);
      const viewer = await seller.page.waitForSelector(byTestId("photo-viewer"), { timeout: LIVE_MS });
      await seller.page.waitForFunction(
        (selector) => {
          const img = document.querySelector(selector) as unknown as { complete: boolean; naturalWidth: number };
          return img?.complete && img.naturalWidth > 0;
        },
        byTestId("photo-viewer"),
        { timeout: LIVE_MS },
      );
      await seller.page.screenshot({ path: `${SCREENSHOTS}photos-${target.name}-viewer.png` });
      const src = await viewer.evaluate((img) => (img as unknown as { src: string }).src);
      if (target.name === "s3") expect(new URL(src).origin).not.toBe(new URL(stack.gw.baseUrl).origin);
      const shown = Buffer.from(await (await fetch(src)).arrayBuffer());
      expect(await readMetadata(shown)).toEqual({ gps: undefined, exif: undefined, xmp: false });
      expect(await sharp(shown).metadata()).toMatchObject({ format: "jpeg", width: 800, height: 1200 });
      await seller.page.keyboard.press("Escape");
      await seller.page.waitForSelector(byTestId("photo-viewer"), { state: "detached", timeout: 5_000 });
      expect(buyer.pageErrors).toEqual([]);
      expect(seller.pageErrors).toEqual([]);
    });

    it("a text file named .jpg is refused in words, and nothing is sent", { timeout: 60_000 }, async () => {
      const before = (await thumbs(seller)).length;
      await buyer.page.setInputFiles(byTestId("attach-input"), {
        name: "holiday.jpg",
        mimeType: "image/jpeg",
        buffer: await textNamedJpeg(),
      });
      await buyer.page.waitForFunction(
        (selector) => (document.querySelector(selector)?.textContent ?? "").length > 0,
        byTestId("photo-error"),
        { timeout: LIVE_MS },
      );
      expect(await buyer.page.textContent(byTestId("photo-error"))).toMatch(/not JPEG/);
      await buyer.page.screenshot({ path: `${SCREENSHOTS}photos-${target.name}-refused.png` });
      const messages = await stack.gw.api(
        await stack.gw.devToken(SELLER),
        "GET",
        `/api/v1/chats/${chatId}/messages?limit=50`,
      );
      expect(messages.body.messages.filter((m: { kind: string }) => m.kind === "image")).toHaveLength(before);
      expect(await thumbs(seller)).toHaveLength(before);
    });

    it("a photo pasted and one dropped on the thread are sent too", { timeout: 60_000 }, async () => {
      const before = (await thumbs(seller)).length;
      const png = await pngWithMetadata();
      // A paste and a drop, as the browser delivers them: a DataTransfer holding a File.
      for (const event of ["paste", "drop"] as const) {
        await buyer.page.evaluate(
          ([kind, bytes, sendInput, thread]) => {
            const file = new File([new Uint8Array(bytes as number[])], `${kind}.png`, { type: "image/png" });
            const data = new DataTransfer();
            data.items.add(file);
            const target = document.querySelector(kind === "paste" ? (sendInput as string) : (thread as string));
            if (!target) throw new Error(`no target for ${kind}`);
            const init = { bubbles: true, cancelable: true };
            const dispatched =
              kind === "paste"
                ? new ClipboardEvent("paste", { ...init, clipboardData: data })
                : new DragEvent("drop", { ...init, dataTransfer: data });
            target.dispatchEvent(dispatched);
          },
          [event, [...png], byTestId("send-input"), byTestId("message-scroller")] as const,
        );
        await seller.page.waitForFunction(
          ([selector, count]) => document.querySelectorAll(selector as string).length >= (count as number),
          [`${MESSAGES} ${byTestId("photo-thumb")}`, before + (event === "paste" ? 1 : 2)] as const,
          { timeout: LIVE_MS, polling: 100 },
        );
      }
      expect(buyer.pageErrors).toEqual([]);
    });
  });
});

/** The DOM names the page-side callbacks above use (the package compiles without the DOM library). */
declare const document: {
  querySelector(selector: string): { textContent: string | null; dispatchEvent(event: unknown): void } | null;
  querySelectorAll(selector: string): ArrayLike<unknown> & Iterable<unknown>;
};
declare class DataTransfer {
  items: { add(file: unknown): void };
}
declare class File {
  constructor(parts: unknown[], name: string, options: { type: string });
}
declare class ClipboardEvent {
  constructor(type: string, init: Record<string, unknown>);
}
declare class DragEvent {
  constructor(type: string, init: Record<string, unknown>);
}
