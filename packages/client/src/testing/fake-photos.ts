import type { Attachment, UploadContentType } from "../protocol/index.ts";
import { ErrorCode, Limits, uploadContentTypes } from "../protocol/index.ts";
import { ChatApiError } from "../rest.ts";

/**
 * The photos of the fake backend (CONTRACT §11): upload tickets, a storage that takes the bytes the way S3
 * takes a presigned PUT (the signed headers, no other credentials), the checks a send with attachments gets,
 * and short-lived links to the stored photos. `FakeChatServer.photos` is one; its switches break things.
 */

/** The storage's origin when `storage` is `"s3"`: another origin than the gateway's, as a bucket is. */
export const FAKE_STORAGE_ORIGIN = "https://storage.test";
/** The path of the development storage on the gateway (`storage: "gateway"`), as the real one's. */
export const FAKE_STORAGE_PATH = "/files/";

/** One upload as the fake keeps it. */
export interface FakeUpload {
  id: string;
  userId: number;
  contentType: string;
  /** What the ticket was asked for. */
  size: number;
  /** The bytes storage took; undefined until the PUT came. */
  bytes: Uint8Array | undefined;
  /** The message it was sent in, once. */
  messageId: number | undefined;
}

const SIGNATURE = "fake-signature";
const HOUR_MS = 3_600_000;

/** A storage refusal, as S3 words it (XML), or as the development storage does (the API's error body). */
function storageError(storage: "gateway" | "s3", status: number, code: string, message: string): Response {
  if (storage === "gateway") {
    return Response.json({ error: { code: status === 404 ? "not_found" : "forbidden", message } }, { status });
  }
  const body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message></Error>`;
  return new Response(body, { status, headers: { "content-type": "application/xml" } });
}

/** The image type of `bytes` by their first bytes, as the real server decodes them; undefined for anything else. */
export function sniffImageType(bytes: Uint8Array): UploadContentType | undefined {
  const ascii = (from: number, to: number) => String.fromCharCode(...bytes.subarray(from, to));
  if (bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) return "image/jpeg";
  if (ascii(1, 4) === "PNG" && bytes[0] === 0x89) return "image/png";
  if (ascii(0, 4) === "RIFF" && ascii(8, 12) === "WEBP") return "image/webp";
  return undefined;
}

/**
 * A photo's bytes that the fake takes for its type: the type's signature (a PNG's header with its width and
 * height), padded to `size` bytes. Not an image a browser could draw; the fake reads no more than the header.
 */
export function fakePhoto(
  type: UploadContentType = "image/jpeg",
  options: { size?: number; name?: string; width?: number; height?: number } = {},
): File {
  const { size = 2048, width = 1024, height = 768 } = options;
  const head: Record<UploadContentType, number[]> = {
    "image/jpeg": [0xff, 0xd8, 0xff, 0xe0],
    "image/png": [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, 0x49, 0x48, 0x44, 0x52],
    "image/webp": [0x52, 0x49, 0x46, 0x46, 0, 0, 0, 0, 0x57, 0x45, 0x42, 0x50],
  };
  const bytes = new Uint8Array(Math.max(size, 24));
  bytes.set(head[type]);
  if (type === "image/png") {
    const view = new DataView(bytes.buffer);
    view.setUint32(16, width);
    view.setUint32(20, height);
  }
  const extension = type.slice("image/".length);
  return new File([bytes.subarray(0, size)], options.name ?? `photo.${extension}`, { type });
}

/** A PNG's width and height from its header; a fixed 1024×768 for the other types (the fake decodes nothing). */
function dimensionsOf(bytes: Uint8Array, type: string): { width: number; height: number } {
  if (type !== "image/png" || bytes.length < 24) return { width: 1024, height: 768 };
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return { width: view.getUint32(16), height: view.getUint32(20) };
}

export class FakePhotos {
  // ── switches ───────────────────────────────────────────────────────────────────────────────
  /** Where upload and photo URLs point: a signed path on the gateway (development), or S3 on another origin. */
  storage: "gateway" | "s3" = "gateway";
  /** Storage refuses every PUT as S3 refuses a presigned URL past its expiry: 403 with an XML body. */
  expiredUploadUrls = false;
  /** `expires_in` of upload tickets and of photo links, in seconds. */
  uploadUrlTtlS = 900;
  linkTtlS = 300;

  // ── what happened ──────────────────────────────────────────────────────────────────────────
  readonly uploads = new Map<string, FakeUpload>();

  private nextUpload = 1;
  /** Attachment id (its upload's, as the real server's) → the photo, its chat and its bytes. */
  private readonly stored = new Map<string, { attachment: Attachment; chatId: number; bytes: Uint8Array }>();
  /** `Date.now()` of each user's uploads within the last hour (CONTRACT §10: 30 an hour). */
  private readonly uploadTimes = new Map<number, number[]>();

  /** The URL of a storage object (`uploads/<id>`, `photos/<id>`, `thumbs/<id>`), as the gateway or S3 signs it. */
  private signedUrl(key: string, ttlS: number): string {
    const query = `expires=${Math.floor(Date.now() / 1000) + ttlS}&signature=${SIGNATURE}`;
    return this.storage === "s3"
      ? `${FAKE_STORAGE_ORIGIN}/bucket/${key}?${query}`
      : `${FAKE_STORAGE_PATH}${key}?${query}`;
  }

  /** `POST /api/v1/uploads` */
  createUpload(userId: number, body: unknown): [number, unknown] {
    const { content_type: type, size } = (body ?? {}) as { content_type?: unknown; size?: unknown };
    if (!uploadContentTypes.includes(type as UploadContentType)) {
      throw new ChatApiError(
        400,
        ErrorCode.validationFailed,
        "content_type must be image/jpeg, image/png or image/webp",
      );
    }
    if (typeof size !== "number" || !Number.isInteger(size) || size < 0 || size > Limits.uploadMaxBytes) {
      throw new ChatApiError(400, ErrorCode.validationFailed, `size must be 0 to ${Limits.uploadMaxBytes} bytes`);
    }
    const now = Date.now();
    const recent = (this.uploadTimes.get(userId) ?? []).filter((at) => at > now - HOUR_MS);
    this.uploadTimes.set(userId, recent);
    const oldest = recent[0];
    if (recent.length >= Limits.uploadsPerHour && oldest !== undefined) {
      throw new ChatApiError(429, ErrorCode.rateLimited, "too many uploads: try again later", oldest + HOUR_MS - now);
    }
    recent.push(now);
    const upload: FakeUpload = {
      id: `upload-${this.nextUpload++}`,
      userId,
      contentType: type as string,
      size,
      bytes: undefined,
      messageId: undefined,
    };
    this.uploads.set(upload.id, upload);
    return [
      201,
      {
        upload_id: upload.id,
        url: this.signedUrl(`uploads/${upload.id}`, this.uploadUrlTtlS),
        method: "PUT",
        headers: { "content-type": upload.contentType },
        expires_in: this.uploadUrlTtlS,
      },
    ];
  }

  /**
   * A request to storage (`key` is `uploads/<id>`, `photos/<id>` or `thumbs/<id>`): the PUT of an upload's
   * bytes, with the type and length its ticket signed, or the GET of a stored photo or thumbnail.
   */
  async storageRequest(method: string, url: URL, key: string, headers: Headers, body: unknown): Promise<Response> {
    const refuse = (status: number, code: string, message: string) => storageError(this.storage, status, code, message);
    if (url.searchParams.get("signature") !== SIGNATURE) {
      return refuse(403, "SignatureDoesNotMatch", "The request signature we calculated does not match");
    }
    // S3 takes one way of authenticating: the presigned URL's. A Bearer token beside it is refused.
    if (headers.has("authorization")) return refuse(400, "InvalidArgument", "Only one auth mechanism allowed");
    const [, kind, id = ""] = /^(uploads|photos|thumbs)\/([\w-]+)$/.exec(key) ?? [];
    if (method === "PUT" && kind === "uploads") {
      const found = this.uploads.get(id);
      if (!found) return refuse(404, "NoSuchKey", "The specified key does not exist.");
      if (this.expiredUploadUrls) return refuse(403, "AccessDenied", "Request has expired");
      if (headers.get("content-type") !== found.contentType) {
        return refuse(403, "SignatureDoesNotMatch", `the content-type must be ${found.contentType}, as signed`);
      }
      // A Blob read by its own method: a test environment's Blob (happy-dom's) is not one Node's Response reads.
      const readable = body as { arrayBuffer?: () => Promise<ArrayBuffer> } | null;
      const buffer = readable?.arrayBuffer ? readable.arrayBuffer() : new Response(body as BodyInit).arrayBuffer();
      const bytes = new Uint8Array(await buffer);
      // The length is signed too: a body of another size is refused, as by S3 and the development storage.
      if (bytes.length !== found.size) {
        return refuse(403, "SignatureDoesNotMatch", `the body must be exactly ${found.size} bytes, as signed`);
      }
      found.bytes = bytes;
      return new Response(null, { status: 200 });
    }
    const stored = method === "GET" && kind !== "uploads" ? this.stored.get(id) : undefined;
    if (!stored) return refuse(404, "NoSuchKey", "The specified key does not exist.");
    const bytes = kind === "thumbs" ? stored.bytes.slice(0, 64) : stored.bytes.slice();
    return new Response(bytes, { status: 200, headers: { "content-type": stored.attachment.content_type } });
  }

  /**
   * The uploads a send names: each the sender's, sent in no other message, complete, of the type it claims;
   * else 422 `attachment_invalid` naming the photo and the fault, in the real server's words. Nothing is taken
   * before all are good (`attach` takes them).
   */
  check(senderId: number, ids: unknown): FakeUpload[] {
    if (ids === undefined) return [];
    if (!Array.isArray(ids) || ids.some((id) => typeof id !== "string")) {
      throw new ChatApiError(400, ErrorCode.validationFailed, "attachments must be upload ids");
    }
    if (ids.length > Limits.attachmentsPerMessage) {
      throw new ChatApiError(400, ErrorCode.validationFailed, `at most ${Limits.attachmentsPerMessage} attachments`);
    }
    const invalid = (message: string) => new ChatApiError(422, ErrorCode.attachmentInvalid, message);
    if (new Set(ids).size !== ids.length) throw invalid("the same upload is attached twice");
    return ids.map((id: string, at) => {
      const label = `photo ${at + 1} (${id})`;
      const upload = this.uploads.get(id);
      if (!upload || upload.userId !== senderId) throw invalid(`${label} is not one of your uploads`);
      if (upload.messageId !== undefined) throw invalid(`${label} was already sent: upload it again`);
      if (!upload.bytes) throw invalid(`${label} is not complete: its bytes never arrived in the storage`);
      if (sniffImageType(upload.bytes) !== upload.contentType) {
        const type = upload.contentType.slice("image/".length).toUpperCase();
        throw invalid(`${label}: the file is not ${type}, as it claims`);
      }
      return upload;
    });
  }

  /** Keeps checked uploads as the photos of a stored message; a photo's id is its upload's. */
  attach(uploads: FakeUpload[], messageId: number, chatId: number): Attachment[] {
    return uploads.map((upload) => {
      const bytes = upload.bytes ?? new Uint8Array();
      const attachment: Attachment = {
        id: upload.id,
        content_type: upload.contentType,
        ...dimensionsOf(bytes, upload.contentType),
        size: bytes.length,
        url: `/api/v1/attachments/${upload.id}`,
        thumb_url: `/api/v1/attachments/${upload.id}?size=thumb`,
      };
      upload.messageId = messageId;
      this.stored.set(upload.id, { attachment, chatId, bytes });
      return attachment;
    });
  }

  /** The chat a photo was sent in, for the participant check of its link; undefined for no such photo. */
  chatOf(attachmentId: string): number | undefined {
    return this.stored.get(attachmentId)?.chatId;
  }

  /** `GET /api/v1/attachments/:id[?size=thumb]` for a participant: JSON when asked for, else a 302. */
  link(attachmentId: string, thumb: boolean, accept: string | null): [number, unknown, Record<string, string>?] {
    const url = this.signedUrl(`${thumb ? "thumbs" : "photos"}/${attachmentId}`, this.linkTtlS);
    if (accept?.includes("application/json")) return [200, { url, expires_in: this.linkTtlS }];
    return [302, undefined, { location: url }];
  }
}
