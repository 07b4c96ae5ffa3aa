/**
 * Photos through the gateway in development (CONTRACT §11, STORAGE=fs): the upload URL and the bytes are signed
 * paths on the gateway (`/files/…`), forwarded to the chat service with no access token (the signature is the
 * credential), below BASE_PATH when there is one, with CORS for a listed origin; a production gateway routes
 * no `/files/` at all. The photo that comes back has no GPS tags (read back with exifr).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jpegWithGps, readMetadata } from "../../listings-chat/test/support/images.ts";
import { type E2EStack, http, startE2EStack } from "./support/e2e.ts";

const [BUYER, SELLER] = [9_601, 9_602];

/** A stack whose chat instance keeps photos under a temporary DATA_DIR. */
async function photoStack(gateway: Parameters<typeof startE2EStack>[0] = {}) {
  const dataDir = mkdtempSync(join(tmpdir(), "lc-gw-photos-"));
  const stack = await startE2EStack(gateway, { storage: { kind: "fs", dataDir } });
  return {
    stack,
    stop: async () => {
      await stack.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Raw bytes through the gateway (http() sends JSON; a PUT of a photo is not). */
async function raw(base: string, method: string, path: string, headers: Record<string, string>, body?: Buffer) {
  const res = await fetch(`${base}${path}`, {
    method,
    headers,
    body: body ? new Uint8Array(body) : undefined,
    redirect: "manual",
  });
  return { status: res.status, headers: res.headers, bytes: Buffer.from(await res.arrayBuffer()) };
}

describe("photos through a development gateway", () => {
  let running: Awaited<ReturnType<typeof photoStack>>;
  let stack: E2EStack;
  let chatId: number;

  beforeAll(async () => {
    running = await photoStack({ basePath: "/chat", corsOrigins: ["https://shop.example"] });
    stack = running.stack;
    const opened = await stack.gw.api(stack.gw.accessToken(BUYER), "POST", "/chat/api/v1/chats", {
      listing_id: 3,
      seller_id: SELLER,
    });
    expect(opened.status).toBe(201);
    chatId = opened.body.id;
  }, 60_000);

  afterAll(async () => {
    await running?.stop();
  });

  it("uploads, sends and serves a stripped photo, all below BASE_PATH", async () => {
    const { gw } = stack;
    const photo = await jpegWithGps({ width: 640, height: 480, orientation: 1 });
    const grant = await gw.api(gw.accessToken(BUYER), "POST", "/chat/api/v1/uploads", {
      content_type: "image/jpeg",
      size: photo.length,
    });
    expect(grant.status).toBe(201);
    // A path on the gateway, below its base as the client resolves it; no Authorization is sent with it.
    expect(grant.body.url).toMatch(/^\/files\/uploads\/[A-Za-z0-9_-]+\?/);
    const put = await raw(gw.baseUrl, "PUT", `/chat${grant.body.url}`, grant.body.headers, photo);
    expect(put.status).toBe(200);

    const sent = await gw.api(gw.accessToken(BUYER), "POST", `/chat/api/v1/chats/${chatId}/messages`, {
      content: "",
      attachments: [grant.body.upload_id],
    });
    expect(sent.status).toBe(201);
    const [attachment] = sent.body.attachments;

    // The 302's target is a gateway path: below BASE_PATH, where the browser can follow it.
    const redirect = await raw(gw.baseUrl, "GET", `/chat${attachment.url}`, {
      authorization: `Bearer ${gw.accessToken(SELLER)}`,
    });
    expect(redirect.status).toBe(302);
    const location = redirect.headers.get("location")!;
    expect(location).toMatch(/^\/chat\/files\/photos\//);
    const bytes = await raw(gw.baseUrl, "GET", location, {});
    expect(bytes.status).toBe(200);
    expect(bytes.headers.get("content-type")).toBe("image/jpeg");
    expect(bytes.headers.get("x-content-type-options")).toBe("nosniff");
    expect(await readMetadata(bytes.bytes)).toEqual({ gps: undefined, exif: undefined, xmp: false });
    expect(await sharp(bytes.bytes).metadata()).toMatchObject({ width: 640, height: 480 });

    // The JSON form names the same kind of path (the client resolves it against its base).
    const link = await gw.api(gw.accessToken(SELLER), "GET", `/chat${attachment.thumb_url}`, undefined, {
      accept: "application/json",
    });
    expect(link.status).toBe(200);
    expect(link.body.url).toMatch(/^\/files\/thumbs\//);
    const thumb = await raw(gw.baseUrl, "GET", `/chat${link.body.url}`, {});
    const { width, height } = await sharp(thumb.bytes).metadata();
    expect(Math.max(width!, height!)).toBe(320);

    // Not a participant: 404; not signed in: 401.
    const outsider = await raw(gw.baseUrl, "GET", `/chat${attachment.url}`, {
      authorization: `Bearer ${gw.accessToken(9_699)}`,
    });
    expect(outsider.status).toBe(404);
    expect((await raw(gw.baseUrl, "GET", `/chat${attachment.url}`, {})).status).toBe(401);
  });

  it("refuses an altered or unsigned file URL, and any other path below /files", async () => {
    const { gw } = stack;
    const photo = await jpegWithGps({ width: 64, height: 64 });
    const grant = await gw.api(gw.accessToken(BUYER), "POST", "/chat/api/v1/uploads", {
      content_type: "image/jpeg",
      size: photo.length,
    });
    const url = `/chat${grant.body.url}`;
    expect((await raw(gw.baseUrl, "PUT", url.replace(/s=[^&]+/, "s=forged"), grant.body.headers, photo)).status).toBe(
      403,
    );
    expect((await raw(gw.baseUrl, "PUT", url.split("?")[0]!, grant.body.headers, photo)).status).toBe(403);
    expect((await raw(gw.baseUrl, "PUT", url, { "content-type": "image/png" }, photo)).status).toBe(403);
    // An upload's own bytes (with their GPS tags) are never served: its PUT URL does not open it for a GET.
    expect((await raw(gw.baseUrl, "PUT", url, grant.body.headers, photo)).status).toBe(200);
    expect((await raw(gw.baseUrl, "GET", url, {})).status).toBe(403);
    // Once sent (processed, its original removed), the same URL cannot put the original back.
    const sent = await gw.api(gw.accessToken(BUYER), "POST", `/chat/api/v1/chats/${chatId}/messages`, {
      content: "",
      attachments: [grant.body.upload_id],
    });
    expect(sent.status).toBe(201);
    const again = await raw(gw.baseUrl, "PUT", url, grant.body.headers, photo);
    expect(again.status).toBe(403);
    expect(again.bytes.toString()).toMatch(/already processed/);
    for (const path of ["/chat/files/../internal/chat/ws/stats", "/chat/files/other/x", "/chat/files/uploads/a/b"]) {
      const answer = await http(gw.baseUrl, "GET", path);
      expect(answer.status, path).toBe(404);
    }
  });

  it("answers a listed origin's preflight for a development upload", async () => {
    const preflight = await raw(stack.gw.baseUrl, "OPTIONS", "/chat/files/uploads/abc", {
      origin: "https://shop.example",
      "access-control-request-method": "PUT",
      "access-control-request-headers": "content-type",
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get("access-control-allow-origin")).toBe("https://shop.example");
    expect(preflight.headers.get("access-control-allow-methods")).toContain("PUT");
  });
});

describe("a production gateway", () => {
  it("routes no /files/: photo bytes never pass through it", async () => {
    const running = await photoStack({ production: true });
    try {
      const { gw } = running.stack;
      for (const method of ["GET", "PUT"]) {
        const answer = await http(gw.baseUrl, method, "/files/uploads/abc?e=1&t=image%2Fjpeg&s=x");
        expect(answer.status, method).toBe(404);
      }
    } finally {
      await running.stop();
    }
  }, 60_000);
});
