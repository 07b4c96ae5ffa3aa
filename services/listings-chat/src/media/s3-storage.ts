import {
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  NoSuchKey,
  NotFound,
  PutObjectCommand,
  S3Client,
} from "@aws-sdk/client-s3";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import { ObjectTooLarge, type PresignedPut, type Storage } from "./storage.ts";

export interface S3StorageOptions {
  /** Unset: AWS's own endpoint for the region. */
  endpoint?: string;
  /**
   * Where browsers reach the store, when that is not `endpoint` (a store inside a private network, published
   * at another address): presigned URLs are signed for it, while this service talks to `endpoint`.
   */
  publicEndpoint?: string;
  bucket: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** `https://endpoint/bucket/key` rather than `https://bucket.endpoint/key` (MinIO, Ceph, most self-hosted stores). */
  forcePathStyle: boolean;
}

/** The store's "no such object" answers: HEAD says NotFound, GET NoSuchKey. */
const isMissing = (error: unknown) =>
  error instanceof NotFound ||
  error instanceof NoSuchKey ||
  (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404;

/**
 * Path-style bucket requests (list, multi-delete) go as `/bucket?…`, the form S3's documentation shows, rather
 * than the SDK's `/bucket/?…`: some S3-compatible stores (s3rver, which CI runs) sign the path without the
 * slash and refuse the other with SignatureDoesNotMatch. S3 itself takes both. Object paths are untouched.
 */
export function signBucketPathsWithoutSlash(client: S3Client): S3Client {
  client.middlewareStack.add(
    (next) => (args) => {
      const request = args.request as { path?: unknown };
      if (typeof request.path === "string" && /^\/[^/]+\/$/.test(request.path)) {
        request.path = request.path.slice(0, -1);
      }
      return next(args);
    },
    // "build" runs before "finalizeRequest", where the request is signed.
    { step: "build", name: "bucketPathWithoutTrailingSlash" },
  );
  return client;
}

/**
 * A body read into one buffer of its announced length, copied once: the SDK's own helper gathers the chunks and
 * copies them again, garbage the size of a photo each time.
 */
async function intoOneBuffer(body: AsyncIterable<Uint8Array> | undefined, size: number): Promise<Buffer> {
  const bytes = Buffer.allocUnsafe(size);
  let filled = 0;
  for await (const chunk of body ?? []) {
    if (filled + chunk.length > size) throw new Error(`the store sent more than the ${size} bytes it announced`);
    bytes.set(chunk, filled);
    filled += chunk.length;
  }
  return filled === size ? bytes : bytes.subarray(0, filled);
}

/** Photos in an S3-compatible bucket, through the AWS SDK v3; the browser's bytes go straight to it, presigned. */
export function createS3Storage(options: S3StorageOptions): Storage {
  const clientFor = (endpoint: string | undefined) => {
    const client = new S3Client({
      endpoint,
      region: options.region,
      forcePathStyle: options.forcePathStyle,
      credentials: { accessKeyId: options.accessKeyId, secretAccessKey: options.secretAccessKey },
      // Checksums only where S3 requires them: otherwise the SDK puts the checksum of an empty body into a
      // presigned PUT's URL, and a store that checks it refuses the browser's real bytes.
      requestChecksumCalculation: "WHEN_REQUIRED",
      responseChecksumValidation: "WHEN_REQUIRED",
    });
    return options.forcePathStyle ? signBucketPathsWithoutSlash(client) : client;
  };
  const client = clientFor(options.endpoint);
  // Signing needs no connection: a second client only so that the URLs name the address browsers use.
  const signer = options.publicEndpoint ? clientFor(options.publicEndpoint) : client;
  const Bucket = options.bucket;

  return {
    kind: "s3",
    async presignPut(key, contentType, size, expiresInS): Promise<PresignedPut> {
      // Type and length are signed headers: the store refuses a PUT of another type or another size.
      const url = await getSignedUrl(
        signer,
        new PutObjectCommand({ Bucket, Key: key, ContentType: contentType, ContentLength: size }),
        { expiresIn: expiresInS, signableHeaders: new Set(["content-type", "content-length"]) },
      );
      return { url, headers: { "content-type": contentType } };
    },
    async presignGet(key, contentType, expiresInS) {
      return getSignedUrl(
        signer,
        new GetObjectCommand({
          Bucket,
          Key: key,
          ResponseContentType: contentType,
          ResponseCacheControl: `private, max-age=${expiresInS}`,
        }),
        { expiresIn: expiresInS },
      );
    },
    async sizeOf(key) {
      try {
        const head = await client.send(new HeadObjectCommand({ Bucket, Key: key }));
        return head.ContentLength ?? 0;
      } catch (error) {
        if (isMissing(error)) return undefined;
        throw error;
      }
    },
    async read(key, maxBytes) {
      try {
        const object = await client.send(new GetObjectCommand({ Bucket, Key: key }));
        const size = object.ContentLength ?? 0;
        if (size > maxBytes) {
          object.Body?.transformToWebStream().cancel();
          throw new ObjectTooLarge(size);
        }
        return await intoOneBuffer(object.Body as AsyncIterable<Uint8Array> | undefined, size);
      } catch (error) {
        if (isMissing(error)) return undefined;
        throw error;
      }
    },
    async write(key, bytes, contentType) {
      await client.send(new PutObjectCommand({ Bucket, Key: key, Body: bytes, ContentType: contentType }));
    },
    async remove(keys) {
      // DeleteObjects takes 1,000 keys at most; a key that is not there counts as deleted.
      for (let i = 0; i < keys.length; i += 1000) {
        const batch = keys.slice(i, i + 1000);
        const answer = await client.send(
          new DeleteObjectsCommand({ Bucket, Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true } }),
        );
        const failed = answer.Errors?.filter((e) => e.Code !== "NoSuchKey") ?? [];
        if (failed.length > 0) {
          throw new Error(
            `the store did not delete ${failed.length} objects: ${failed[0]?.Code} ${failed[0]?.Message}`,
          );
        }
      }
    },
    async list(prefix = "") {
      const keys: string[] = [];
      let ContinuationToken: string | undefined;
      do {
        const page = await client.send(new ListObjectsV2Command({ Bucket, Prefix: prefix, ContinuationToken }));
        for (const object of page.Contents ?? []) if (object.Key) keys.push(object.Key);
        ContinuationToken = page.NextContinuationToken;
      } while (ContinuationToken);
      return keys.sort();
    },
    close() {
      client.destroy();
      if (signer !== client) signer.destroy();
    },
  };
}
