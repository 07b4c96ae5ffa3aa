/**
 * The S3 server the photo tests run on is what they take it for: it checks presigned URLs (signature, signed
 * content-type and content-length, expiry) like S3, and createTestBucket's buckets are isolated and go away.
 * The SDK and its presigner only, no application code: when a photo test fails, this says whether the server can.
 */
import { randomBytes } from "node:crypto";
import {
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
} from "@aws-sdk/client-s3";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { createTestBucket, stopLocalS3, type TestBucket } from "./support/s3.ts";

const photoBytes = randomBytes(4096);
const signableHeaders = new Set(["content-type", "content-length"]);

let bucket: TestBucket;

beforeAll(async () => {
  bucket = await createTestBucket({ cors: true });
});

afterAll(async () => {
  await bucket?.drop();
  await stopLocalS3();
});

/** A presigned PUT that only takes `contentType` and exactly `contentLength` bytes, as the upload API hands out. */
function presignPut(key: string, options: { contentType: string; contentLength: number; expiresIn?: number }) {
  const command = new PutObjectCommand({
    Bucket: bucket.config.bucket,
    Key: key,
    ContentType: options.contentType,
    ContentLength: options.contentLength,
  });
  return getSignedUrl(bucket.client, command, { expiresIn: options.expiresIn ?? 60, signableHeaders });
}

function put(url: string, body: Buffer, contentType: string) {
  return fetch(url, { method: "PUT", body, headers: { "content-type": contentType } });
}

/** The URL with the last hex digit of its signature changed. */
function forged(url: string): string {
  const parsed = new URL(url);
  const signature = parsed.searchParams.get("X-Amz-Signature");
  if (!signature) throw new Error(`not a presigned URL: ${url}`);
  const last = signature.at(-1) === "0" ? "1" : "0";
  parsed.searchParams.set("X-Amz-Signature", signature.slice(0, -1) + last);
  return parsed.toString();
}

/** The S3 error code of a refused request (s3rver answers S3's XML error document). */
async function errorCode(response: Response): Promise<string | undefined> {
  return /<Code>([^<]+)<\/Code>/.exec(await response.text())?.[1];
}

describe("presigned PUT (content-type and content-length signed, 60 s)", () => {
  it("accepts the signed type and size, and stores the bytes as sent", async () => {
    const url = await presignPut("photos/right.jpg", { contentType: "image/jpeg", contentLength: photoBytes.length });
    const response = await put(url, photoBytes, "image/jpeg");
    expect(response.status).toBe(200);
    expect(response.headers.get("etag")).toMatch(/^"[0-9a-f]{32}"$/);

    const head = await bucket.client.send(
      new HeadObjectCommand({ Bucket: bucket.config.bucket, Key: "photos/right.jpg" }),
    );
    expect(head.ContentType).toBe("image/jpeg");
    expect(head.ContentLength).toBe(photoBytes.length);
    const stored = await bucket.client.send(
      new GetObjectCommand({ Bucket: bucket.config.bucket, Key: "photos/right.jpg" }),
    );
    expect(Buffer.from(await stored.Body!.transformToByteArray()).equals(photoBytes)).toBe(true);
  });

  it("refuses another content-type with 403 and stores nothing", async () => {
    const url = await presignPut("photos/type.jpg", { contentType: "image/jpeg", contentLength: photoBytes.length });
    const response = await put(url, photoBytes, "text/html");
    expect(response.status).toBe(403);
    expect(await errorCode(response)).toBe("SignatureDoesNotMatch");
    expect(await bucket.keys()).not.toContain("photos/type.jpg");
  });

  it("refuses a body one byte bigger than signed with 403", async () => {
    const url = await presignPut("photos/size.jpg", { contentType: "image/jpeg", contentLength: photoBytes.length });
    const response = await put(url, Buffer.concat([photoBytes, Buffer.from([0])]), "image/jpeg");
    expect(response.status).toBe(403);
    expect(await errorCode(response)).toBe("SignatureDoesNotMatch");
    expect(await bucket.keys()).not.toContain("photos/size.jpg");
  });

  it("refuses a forged signature with 403", async () => {
    const url = await presignPut("photos/forged.jpg", { contentType: "image/jpeg", contentLength: photoBytes.length });
    const response = await put(forged(url), photoBytes, "image/jpeg");
    expect(response.status).toBe(403);
    expect(await errorCode(response)).toBe("SignatureDoesNotMatch");
    expect(await bucket.keys()).not.toContain("photos/forged.jpg");
  });

  it("refuses the URL once it has expired, with 403 'Request has expired'", async () => {
    const url = await presignPut("photos/late.jpg", {
      contentType: "image/jpeg",
      contentLength: photoBytes.length,
      expiresIn: 1,
    });
    // X-Amz-Date (whole seconds) plus X-Amz-Expires is the instant after which the server refuses it.
    const signedAt = new URL(url).searchParams.get("X-Amz-Date")!;
    const expiresAt =
      Date.parse(signedAt.replace(/^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/, "$1-$2-$3T$4:$5:$6Z")) + 1000;
    expect(expiresAt).toBeGreaterThan(Date.now() - 1000);
    await vi.waitFor(
      () => {
        if (Date.now() <= expiresAt) throw new Error("not expired yet");
      },
      { timeout: 3000, interval: 20 },
    );

    const response = await put(url, photoBytes, "image/jpeg");
    expect(response.status).toBe(403);
    const body = await response.text();
    expect(body).toContain("<Code>AccessDenied</Code>");
    expect(body).toContain("Request has expired");
    expect(await bucket.keys()).not.toContain("photos/late.jpg");
  });
});

describe("presigned GET", () => {
  it("returns the object, and refuses a forged signature with 403", async () => {
    await bucket.client.send(
      new PutObjectCommand({
        Bucket: bucket.config.bucket,
        Key: "photos/get.jpg",
        Body: photoBytes,
        ContentType: "image/jpeg",
      }),
    );
    const url = await getSignedUrl(
      bucket.client,
      new GetObjectCommand({ Bucket: bucket.config.bucket, Key: "photos/get.jpg" }),
      { expiresIn: 60 },
    );

    const response = await fetch(url);
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toBe("image/jpeg");
    expect(Buffer.from(await response.arrayBuffer()).equals(photoBytes)).toBe(true);

    const refused = await fetch(forged(url));
    expect(refused.status).toBe(403);
    expect(await errorCode(refused)).toBe("SignatureDoesNotMatch");
  });
});

describe("CORS (createTestBucket({ cors: true }))", () => {
  it("answers a browser's preflight for a PUT with content-type, and exposes ETag on the PUT", async () => {
    const url = await presignPut("photos/browser.jpg", { contentType: "image/jpeg", contentLength: photoBytes.length });
    const origin = "http://localhost:5173";
    const preflight = await fetch(url, {
      method: "OPTIONS",
      headers: { origin, "access-control-request-method": "PUT", "access-control-request-headers": "content-type" },
    });
    expect(preflight.status).toBe(200);
    expect(preflight.headers.get("access-control-allow-origin")).toBe("*");
    expect(preflight.headers.get("access-control-allow-methods")).toContain("PUT");
    expect(preflight.headers.get("access-control-allow-headers")).toBe("content-type");

    const response = await fetch(url, {
      method: "PUT",
      body: photoBytes,
      headers: { "content-type": "image/jpeg", origin },
    });
    expect(response.status).toBe(200);
    expect(response.headers.get("access-control-allow-origin")).toBe("*");
    expect(response.headers.get("access-control-expose-headers")).toBe("ETag");
  });

  it("a bucket made without cors refuses the preflight", async () => {
    const plain = await createTestBucket();
    try {
      const preflight = await fetch(`${plain.config.endpoint}/${plain.config.bucket}/x.jpg`, {
        method: "OPTIONS",
        headers: { origin: "http://localhost:5173", "access-control-request-method": "PUT" },
      });
      expect(preflight.status).toBe(403);
    } finally {
      await plain.drop();
    }
  });
});

describe("createTestBucket", () => {
  afterEach(() => {
    vi.unstubAllEnvs();
  });

  it("gives every call a new bucket with a valid S3 name, and keys() lists what was put, sorted", async () => {
    const other = await createTestBucket();
    try {
      expect(other.config.bucket).not.toBe(bucket.config.bucket);
      for (const name of [other.config.bucket, bucket.config.bucket]) {
        expect(name).toMatch(/^lc-test-[a-z0-9-]+$/);
        expect(name.length).toBeGreaterThanOrEqual(3);
        expect(name.length).toBeLessThanOrEqual(63);
      }
      expect(await other.keys()).toEqual([]);
      for (const key of ["b/2.jpg", "a/1.jpg", "c.webp"]) {
        await other.client.send(new PutObjectCommand({ Bucket: other.config.bucket, Key: key, Body: photoBytes }));
      }
      expect(await other.keys()).toEqual(["a/1.jpg", "b/2.jpg", "c.webp"]);
      // The other bucket's objects stay in it.
      expect(await bucket.keys()).not.toContain("c.webp");
    } finally {
      await other.drop();
    }
  });

  it("drop() empties and deletes the bucket, and dropping twice is harmless", async () => {
    const doomed = await createTestBucket({ cors: true });
    await doomed.client.send(new PutObjectCommand({ Bucket: doomed.config.bucket, Key: "one.jpg", Body: photoBytes }));
    await doomed.client.send(
      new PutObjectCommand({ Bucket: doomed.config.bucket, Key: "dir/two.jpg", Body: photoBytes }),
    );
    await doomed.drop();

    const gone = await bucket.client.send(new HeadBucketCommand({ Bucket: doomed.config.bucket })).catch((e) => e);
    expect(gone).toBeInstanceOf(S3ServiceException);
    expect((gone as S3ServiceException).$metadata.httpStatusCode).toBe(404);
    await doomed.drop();
  });

  it("in CI, without S3_TEST_ENDPOINT, fails with the reason instead of quietly going without a server", async () => {
    vi.stubEnv("S3_TEST_ENDPOINT", undefined);
    vi.stubEnv("CI", "true");
    await expect(createTestBucket()).rejects.toThrow(/^S3_TEST_ENDPOINT is not set: \.ci\/run starts an S3 server/);
  });
});

describe("where s3rver differs from S3 (photo tests must not count on these)", () => {
  it("lets an unsigned request through: it has no ACLs or bucket policies", async () => {
    const response = await fetch(`${bucket.config.endpoint}/${bucket.config.bucket}/anonymous.txt`, {
      method: "PUT",
      body: "no signature",
    });
    expect(response.status).toBe(200);
  });

  it("refuses the SDK's own bucket-level requests (path /bucket/) unless testS3Client drops the slash", async () => {
    const { endpoint, region, accessKeyId, secretAccessKey, bucket: Bucket } = bucket.config;
    const plain = new S3Client({
      endpoint,
      region,
      credentials: { accessKeyId, secretAccessKey },
      forcePathStyle: true,
      requestChecksumCalculation: "WHEN_REQUIRED",
      responseChecksumValidation: "WHEN_REQUIRED",
    });
    try {
      const refused = await plain.send(new ListObjectsV2Command({ Bucket })).catch((error: unknown) => error);
      expect(refused).toBeInstanceOf(S3ServiceException);
      expect((refused as S3ServiceException).name).toBe("SignatureDoesNotMatch");
      // Object requests are signed over the same path s3rver checks.
      await plain.send(new PutObjectCommand({ Bucket, Key: "plain-client.txt", Body: "ok" }));
      expect(await bucket.keys()).toContain("plain-client.txt");
    } finally {
      plain.destroy();
    }
  });
});
