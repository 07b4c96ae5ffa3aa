import { createUploadBody } from "@listings-chat/shared";
import { Hono } from "hono";
import type { ApiEnv } from "../http/api-routes.ts";
import { jsonBody } from "../http/validation.ts";
import type { MediaService } from "./uploads.ts";

/** Photos' API (CONTRACT §11): presigned uploads, and the links to a chat's photos. */
export function createMediaRoutes(media: MediaService) {
  const api = new Hono<ApiEnv>();

  api.post("/uploads", async (c) => {
    const body = await jsonBody(c, createUploadBody);
    return c.json(await media.createUpload(c.get("userId"), body.content_type, body.size), 201);
  });

  // 302 to a short-lived link, which an <img> can follow. A page's fetch cannot read a redirect's target, and
  // an <img> cannot send a Bearer token: `Accept: application/json` gets the link as JSON instead.
  api.get("/attachments/:id", async (c) => {
    const thumb = c.req.query("size") === "thumb";
    const link = await media.link(c.get("userId"), c.req.param("id"), thumb);
    if (/\bapplication\/json\b/i.test(c.req.header("accept") ?? "")) return c.json(link);
    return c.redirect(link.url, 302);
  });

  return api;
}
