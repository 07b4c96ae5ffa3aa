/**
 * A photo uploaded as a browser would upload it (CONTRACT §11): the grant, then the bytes PUT to its URL, straight
 * to an S3 server, or through the internal hop for the development storage's signed path (the gateway's, in
 * production-like tests). For the suites whose subject is not the photos themselves (photos.integration.test.ts).
 */

import type { TestChat } from "./harness.ts";
import { jpegWithGps } from "./images.ts";

/** A small JPEG uploaded by `userId` through `chat`: its `upload_id`, ready to send. Throws on any refusal. */
export async function uploadPhoto(chat: TestChat, userId: number): Promise<string> {
  const bytes = await jpegWithGps({ width: 64, height: 48 });
  const grant = await chat.api(userId, "POST", "/api/v1/uploads", { content_type: "image/jpeg", size: bytes.length });
  if (grant.status !== 201) throw new Error(`upload grant: ${grant.status} ${JSON.stringify(grant.body)}`);
  const direct = /^https?:/.test(grant.body.url);
  const headers = new Headers(grant.body.headers);
  if (!direct) headers.set("x-internal-token", chat.internalToken);
  const put = await fetch(direct ? grant.body.url : `${chat.baseUrl}${grant.body.url}`, {
    method: "PUT",
    headers,
    body: new Uint8Array(bytes),
  });
  if (put.status !== 200) throw new Error(`upload PUT: ${put.status} ${await put.text()}`);
  return grant.body.upload_id;
}
