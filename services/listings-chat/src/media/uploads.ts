import { randomBytes } from "node:crypto";
import type { Attachment } from "@listings-chat/shared";
import { ErrorCode } from "@listings-chat/shared";
import { and, eq, inArray, isNull, sql } from "drizzle-orm";
import type { Database } from "../db/client.ts";
import { chats, messages, uploads } from "../db/schema.ts";
import {
  ChatError,
  inPhotoStorage,
  notFound,
  PhotoStorageUnavailableError,
  storing,
  userSuspendedError,
} from "../errors.ts";
import { rowsOf } from "../events/log.ts";
import { keptIfStored, type RateLimiter } from "../limits/rate-limiter.ts";
import { type ImageProcessor, InvalidImage, isPhotoType, type PhotoType, type ProcessedPhoto } from "./images.ts";
import { ObjectTooLarge, objectKeys, type Storage } from "./storage.ts";

export interface MediaOptions {
  /** UPLOAD_MAX_BYTES: the largest upload a person may declare (CONTRACT §11: 10 MiB). */
  uploadMaxBytes: number;
  /** How long a presigned upload URL is valid. */
  uploadUrlTtlS: number;
  /** How long after its grant an upload's bytes may still land (the URL's lifetime and PUT_WINDOW_MARGIN_S). */
  putWindowS: number;
  /** How long a photo's link (the 302's target) is valid. */
  linkTtlS: number;
  /** Photos waiting for their turn on this instance at most; past it, a send gets 503 `instance_busy` (200). */
  maxWaitingPhotos?: number;
}

/** About a minute of work at a few hundred milliseconds per photo: a client that waits longer has given up. */
const MAX_WAITING_PHOTOS = 200;

/** The defaults of the settings a deployment may change (the put window follows from the URL's lifetime). */
export const defaultMediaOptions: Pick<MediaOptions, "uploadMaxBytes" | "uploadUrlTtlS" | "linkTtlS"> = {
  uploadMaxBytes: 10 * 1024 * 1024,
  uploadUrlTtlS: 900,
  linkTtlS: 300,
};

/** A send may use an upload this long after it was made (CONTRACT §11: unsent uploads go after 24 h). */
export const UPLOAD_LIFETIME_MS = 24 * 3_600_000;
/** The uploads a send may still take, in SQL (lc_send_messages says the same). */
const takeableSince = sql`now() - interval '24 hours'`;
/**
 * When the sweeper removes an upload never sent: an hour after sends stop taking it, so that a send's
 * statement that began before the 24 h and is still running (waiting for a lock) never meets a swept upload.
 */
const UNSENT_UPLOAD_SWEPT_AFTER = "25 hours";

export interface MediaServiceDeps {
  db: Database;
  storage: Storage;
  images: ImageProcessor;
  limits: RateLimiter;
  options: MediaOptions;
}

export interface UploadGrant {
  upload_id: string;
  url: string;
  method: "PUT";
  headers: Record<string, string>;
  expires_in: number;
}

type UploadRow = typeof uploads.$inferSelect;

const attachmentInvalid = (message: string) => new ChatError(ErrorCode.attachmentInvalid, 422, message);

/** The API paths of a photo (CONTRACT §11): each answers 302 to a short-lived link, for participants. */
export function attachmentOf(row: {
  id: string;
  contentType: string;
  width: number | null;
  height: number | null;
  storedSize: number | null;
}): Attachment {
  return {
    id: row.id,
    content_type: row.contentType,
    width: row.width ?? 0,
    height: row.height ?? 0,
    size: row.storedSize ?? 0,
    url: `/api/v1/attachments/${row.id}`,
    thumb_url: `/api/v1/attachments/${row.id}?size=thumb`,
  };
}

/** Photos: presigned uploads, their check and processing before a send, and the links to them. */
export function createMediaService({ db, storage, images, limits, options }: MediaServiceDeps) {
  const { putWindowS } = options;
  /** Photos being processed by this instance, by upload: a second send of one joins the first's work. */
  const inFlight = new Map<string, Promise<UploadRow>>();

  /**
   * Reads the upload as it arrived, checks it is the image it claims, writes the stripped photo and its
   * thumbnail, and records it processed. A send retried after this finds it processed and does none of it again;
   * an upload refused for its bytes is recorded so, and refused at once the next time.
   */
  async function processUpload(row: UploadRow, label: string): Promise<UploadRow> {
    const keys = objectKeys(row.id);
    const type = row.contentType as PhotoType;
    /** The upload's bytes, read in the image's turn (images.ts): complete, and no more than was declared. */
    const load = async () => {
      let bytes: Buffer | undefined;
      try {
        bytes = await storage.read(keys.original, options.uploadMaxBytes);
      } catch (error) {
        if (error instanceof ObjectTooLarge) {
          throw new InvalidImage(`the file is ${error.size} bytes, over ${options.uploadMaxBytes}: send a smaller one`);
        }
        throw new PhotoStorageUnavailableError(error);
      }
      if (bytes === undefined)
        throw attachmentInvalid(`${label} is not complete: its bytes never arrived in the storage`);
      if (bytes.length !== row.declaredSize) {
        throw attachmentInvalid(`${label} is not complete: ${bytes.length} of its ${row.declaredSize} bytes arrived`);
      }
      return bytes;
    };
    let processed: ProcessedPhoto;
    try {
      processed = await images.process(load, type);
    } catch (error) {
      if (!(error instanceof InvalidImage)) throw error;
      await storing(() => db.update(uploads).set({ rejection: error.message }).where(eq(uploads.id, row.id)));
      throw attachmentInvalid(`${label}: ${error.message}`);
    }
    await inPhotoStorage(() =>
      Promise.all([storage.write(keys.photo, processed.photo, type), storage.write(keys.thumb, processed.thumb, type)]),
    );
    // Only while a send may still take it: past 24 h the sweeper may have removed the row and its objects
    // meanwhile, and what was just written must not outlive them. The original, removed by the send, could be
    // PUT again until the URL runs out: then the sweeper removes it once more (original_recheck_at).
    const putWindowEnd = sql`${uploads.createdAt} + make_interval(secs => ${putWindowS})`;
    const [stored] = await storing(() =>
      db
        .update(uploads)
        .set({
          processedAt: sql`now()`,
          width: processed.width,
          height: processed.height,
          storedSize: processed.photo.length,
          originalRecheckAt: sql`CASE WHEN ${putWindowEnd} > now() THEN ${putWindowEnd} END`,
        })
        // Nor once it is due (an erasure) or a sweep claimed it: the sweep may have removed its objects already.
        .where(
          and(
            eq(uploads.id, row.id),
            isNull(uploads.messageId),
            sql`${uploads.createdAt} > ${takeableSince}`,
            sql`${uploads.sweepAfter} > now() + interval '1 hour'`,
          ),
        )
        .returning(),
    );
    if (!stored) {
      await inPhotoStorage(() => storage.remove([keys.photo, keys.thumb]));
      throw attachmentInvalid(`${label} expired (uploads are kept 24 hours) or was removed: upload it again`);
    }
    return stored;
  }

  /**
   * The upload processed, once per instance however many sends name it at once. A send that finds its upload
   * gone half-way (another send, maybe on another instance, processed it and removed the original) takes the
   * row as that send left it.
   */
  function processedOnce(row: UploadRow, label: string): Promise<UploadRow> {
    const running = inFlight.get(row.id);
    if (running) return running;
    if (images.waiting >= (options.maxWaitingPhotos ?? MAX_WAITING_PHOTOS)) {
      throw new ChatError(
        ErrorCode.instanceBusy,
        503,
        "too many photos are being processed on this instance: send again in a few seconds",
      );
    }
    const work = processUpload(row, label)
      .catch(async (error: unknown) => {
        if (!(error instanceof ChatError && error.code === ErrorCode.attachmentInvalid)) throw error;
        const [now] = await storing(() => db.select().from(uploads).where(eq(uploads.id, row.id)));
        if (now?.processedAt && now.userId === row.userId) return now;
        throw error;
      })
      .finally(() => inFlight.delete(row.id));
    inFlight.set(row.id, work);
    return work;
  }

  return {
    /** 201's body: where to PUT the bytes. Counted in UPLOAD_LIMIT_PER_HOUR. */
    async createUpload(userId: number, contentType: string, size: number): Promise<UploadGrant> {
      if (!isPhotoType(contentType)) {
        throw new ChatError(
          ErrorCode.validationFailed,
          400,
          "content_type must be image/jpeg, image/png or image/webp",
        );
      }
      if (!Number.isInteger(size) || size < 0 || size > options.uploadMaxBytes) {
        throw new ChatError(
          ErrorCode.validationFailed,
          400,
          `size must be a whole number of bytes from 0 to ${options.uploadMaxBytes} (UPLOAD_MAX_BYTES)`,
        );
      }
      await storing(() => limits.consume("upload", userId));
      const id = randomBytes(16).toString("base64url");
      return keptIfStored(
        limits,
        "upload",
        userId,
        async () => {
          // Not to a suspended person (one being erased among them): they could not send it, and an erasure must
          // not meet bytes arriving after it removed their uploads.
          const granted = rowsOf<{ id: string }>(
            await storing(() =>
              db.execute(sql`
                insert into uploads (id, user_id, content_type, declared_size, sweep_after)
                select ${id}, ${userId}, ${contentType}, ${size}, now() + ${UNSENT_UPLOAD_SWEPT_AFTER}::interval
                where not lc_suspended(${userId})
                returning id`),
            ),
          );
          if (granted.length === 0) throw userSuspendedError();
          const put = await inPhotoStorage(() =>
            storage.presignPut(objectKeys(id).original, contentType, size, options.uploadUrlTtlS),
          );
          return {
            upload_id: id,
            url: put.url,
            method: "PUT" as const,
            headers: put.headers,
            expires_in: options.uploadUrlTtlS,
          };
        },
        () => true,
      );
    },

    /**
     * The attachments of a send, as the message will show them: each upload the sender's, unsent, not expired,
     * complete, and an image of the type it claims (checked, stripped and thumbnailed here, before anything is
     * stored); 422 `attachment_invalid` naming the file otherwise. The send's statement claims them
     * (lc_send_messages), so that of two sends racing for one upload only one gets it.
     */
    async attachmentsFor(userId: number, uploadIds: readonly string[]): Promise<Attachment[]> {
      if (new Set(uploadIds).size !== uploadIds.length) throw attachmentInvalid("the same upload is attached twice");
      const rows = await storing(() =>
        db
          .select()
          .from(uploads)
          .where(inArray(uploads.id, [...uploadIds])),
      );
      const byId = new Map(rows.map((row) => [row.id, row]));
      const checked = uploadIds.map((id, i) => {
        const label = `photo ${i + 1} (${id})`;
        const row = byId.get(id);
        // Another person's upload is answered as one that does not exist: ids are not confirmed to outsiders.
        if (!row || row.userId !== userId) throw attachmentInvalid(`${label} is not one of your uploads`);
        if (row.messageId !== null) throw attachmentInvalid(`${label} was already sent: upload it again`);
        // Past 24 h, or made due (an erasure) or claimed by a sweep meanwhile: its objects may be gone already.
        const swept = row.sweepAfter === null || row.sweepAfter.getTime() <= Date.now() + 3_600_000;
        if (Date.now() - row.createdAt.getTime() > UPLOAD_LIFETIME_MS || swept) {
          throw attachmentInvalid(`${label} expired (uploads are kept 24 hours) or was removed: upload it again`);
        }
        if (row.rejection !== null) throw attachmentInvalid(`${label}: ${row.rejection}`);
        return { row, label };
      });
      const processed = await Promise.all(
        checked.map(({ row, label }) => (row.processedAt ? row : processedOnce(row, label))),
      );
      // The bytes as uploaded carry the GPS tags: they go before the message is stored, and again on a retry
      // (removing what is gone is no error), so no message ever lives beside an original.
      await inPhotoStorage(() => storage.remove(processed.map((row) => objectKeys(row.id).original)));
      return processed.map(attachmentOf);
    },

    /** A short-lived link to a photo (or its thumbnail) for a participant of its chat; 404 for anyone else. */
    async link(userId: number, uploadId: string, thumb: boolean): Promise<{ url: string; expires_in: number }> {
      const [row] = await storing(() =>
        db
          .select({ id: uploads.id, contentType: uploads.contentType })
          .from(uploads)
          .innerJoin(messages, eq(messages.id, uploads.messageId))
          .innerJoin(chats, eq(chats.id, messages.chatId))
          .where(
            and(
              eq(uploads.id, uploadId),
              sql`${messages.deletedAt} is null`,
              sql`${userId} in (${chats.buyerId}, ${chats.sellerId})`,
            ),
          ),
      );
      if (!row) throw notFound("attachment");
      const keys = objectKeys(row.id);
      const url = await inPhotoStorage(() =>
        storage.presignGet(thumb ? keys.thumb : keys.photo, row.contentType, options.linkTtlS),
      );
      return { url, expires_in: options.linkTtlS };
    },
  };
}

export type MediaService = ReturnType<typeof createMediaService>;
