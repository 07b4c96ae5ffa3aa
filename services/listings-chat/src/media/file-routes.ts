import { Hono } from "hono";
import type { FsStorage } from "./fs-storage.ts";

/**
 * The development storage's URLs (STORAGE=fs): the presigned PUT of an upload, and the GET of a stripped photo
 * or thumbnail, each allowed by its signature alone (no other credentials, as S3's presigned URLs). The
 * gateway forwards `/files/…` here in development only. What is refused is refused as S3 would: 403.
 */
export function createFileRoutes(storage: FsStorage, uploadMaxBytes: number) {
  const files = new Hono();
  const refused = (message: string, status: 400 | 403 | 404 | 411 | 413 = 403) =>
    Response.json({ error: { code: status === 404 ? "not_found" : "forbidden", message } }, { status });

  files.put("/files/:kind/:id", async (c) => {
    const key = `${c.req.param("kind")}/${c.req.param("id")}`;
    const grant = storage.signer.check("PUT", key, new URL(c.req.url).searchParams, storage.nowS());
    if (typeof grant === "string") return refused(grant);
    if (!key.startsWith("uploads/")) return refused("only uploads are written through a URL");
    // Its URL outlives the send by up to its expiry: bytes put again after they were processed would lie
    // there unread, GPS tags and all, so they are refused once the photo exists.
    if ((await storage.sizeOf(`photos/${c.req.param("id")}`)) !== undefined) {
      return refused("this upload was already processed: upload the photo again");
    }
    // The signed type and size, as a presigned S3 PUT signs its headers: anything else is refused.
    if (c.req.header("content-type") !== grant.contentType) {
      return refused(`the content-type must be ${grant.contentType}, as the upload declared`);
    }
    const declared = c.req.header("content-length");
    if (declared === undefined) return refused("send the body with a Content-Length", 411);
    if (Number(declared) !== grant.size || (grant.size ?? 0) > uploadMaxBytes) {
      return refused(`the body must be exactly ${grant.size} bytes, as the upload declared`);
    }
    const bytes = Buffer.from(await c.req.arrayBuffer());
    if (bytes.length !== grant.size) return refused(`the body must be exactly ${grant.size} bytes`, 400);
    await storage.write(key, bytes, grant.contentType);
    return c.body(null, 200);
  });

  files.get("/files/:kind/:id", async (c) => {
    const key = `${c.req.param("kind")}/${c.req.param("id")}`;
    const grant = storage.signer.check("GET", key, new URL(c.req.url).searchParams, storage.nowS());
    if (typeof grant === "string") return refused(grant);
    // Uploads as they arrived carry their metadata: only the stripped photos and thumbnails are ever served.
    if (key.startsWith("uploads/")) return refused("uploads are not served: their photos are");
    const bytes = await storage.read(key, Number.MAX_SAFE_INTEGER);
    if (!bytes) return refused("no such object", 404);
    return c.body(new Uint8Array(bytes), 200, {
      "content-type": grant.contentType,
      "cache-control": `private, max-age=${Math.max(0, grant.expiresAt - storage.nowS())}`,
      "x-content-type-options": "nosniff",
      // Served from the gateway's origin: never a document that could run script there.
      "content-security-policy": "default-src 'none'; sandbox",
    });
  });

  return files;
}
