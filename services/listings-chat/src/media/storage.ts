/**
 * Where photos' bytes live (CONTRACT §11), behind one small interface: `fs` (development: files under DATA_DIR,
 * URLs signed by this service and served through the gateway) or `s3` (production: any S3-compatible store,
 * presigned URLs, so the bytes never pass through the gateway or this service on their way in or out).
 */

/** A presigned upload: the browser sends the bytes with exactly these headers, and no credentials. */
export interface PresignedPut {
  url: string;
  headers: Record<string, string>;
}

export interface Storage {
  readonly kind: "fs" | "s3";
  /** A PUT of exactly `size` bytes of `contentType` to `key`, valid `expiresInS` seconds; the storage refuses any other. */
  presignPut(key: string, contentType: string, size: number, expiresInS: number): Promise<PresignedPut>;
  /** A GET of `key` that needs no credentials, valid `expiresInS` seconds, answered with `contentType`. */
  presignGet(key: string, contentType: string, expiresInS: number): Promise<string>;
  /** The object's size, or undefined when there is none. */
  sizeOf(key: string): Promise<number | undefined>;
  /** The object's bytes (undefined when there is none); an object over `maxBytes` is not read: it throws ObjectTooLarge. */
  read(key: string, maxBytes: number): Promise<Buffer | undefined>;
  write(key: string, bytes: Buffer, contentType: string): Promise<void>;
  /** Removes the objects; one that is not there is no error (a sweep may run twice). */
  remove(keys: readonly string[]): Promise<void>;
  /** Every key under `prefix` (tests and operators; not on any request path). */
  list(prefix?: string): Promise<string[]>;
  close(): void;
}

/** An object bigger than the reader allows: never read into memory. */
export class ObjectTooLarge extends Error {
  override name = "ObjectTooLarge";
  readonly size: number;
  constructor(size: number) {
    super(`the object is ${size} bytes`);
    this.size = size;
  }
}

/** The objects of one upload: the bytes as uploaded, the stripped photo, its thumbnail. */
export function objectKeys(uploadId: string) {
  return { original: `uploads/${uploadId}`, photo: `photos/${uploadId}`, thumb: `thumbs/${uploadId}` };
}

export const allObjectKeys = (uploadId: string): string[] => Object.values(objectKeys(uploadId));

/**
 * Added to a presigned PUT's lifetime for how long its bytes may still land: S3 checks the expiry as a request
 * starts, so a PUT begun just before it may still be sending (10 MiB at 300 kbit/s takes about 4.5 minutes), and
 * the storage's clock and ours differ. A slower PUT still lands later: the bucket's `uploads/` lifecycle rule is
 * the net for it (infra/README.md).
 */
export const PUT_WINDOW_MARGIN_S = 300;
