/**
 * A bucket of its own per test, on an S3 server that checks SigV4 like S3 does (@20minutes/s3rver): the one of
 * S3_TEST_ENDPOINT (CI: `.ci/run` starts it with `.ci/s3`), or else, outside CI, one started in this process.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import type { Server } from "node:http";
import { createRequire } from "node:module";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  CreateBucketCommand,
  DeleteBucketCommand,
  DeleteObjectsCommand,
  ListObjectsV2Command,
  PutBucketCorsCommand,
  S3Client,
  S3ServiceException,
} from "@aws-sdk/client-s3";
import { signBucketPathsWithoutSlash } from "../../src/media/s3-storage.ts";

export interface S3TestConfig {
  endpoint: string;
  bucket: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  forcePathStyle: true;
}

export interface TestBucket {
  config: S3TestConfig;
  client: S3Client;
  /** Every key in the bucket, sorted. */
  keys(): Promise<string[]>;
  /** empties and deletes the bucket */
  drop(): Promise<void>;
}

/** s3rver's one built-in account (lib/models/account.js): any other key is refused with InvalidAccessKeyId. */
const S3RVER_ACCESS_KEY_ID = "S3RVER";
const S3RVER_SECRET_ACCESS_KEY = "S3RVER";
const REGION = "us-east-1";

/**
 * An S3 client for a test bucket's config, as the tests need it against s3rver:
 * - path-style URLs (http://127.0.0.1:port/bucket/key), as the endpoint is an address, not a domain;
 * - checksums only where the API requires them: otherwise SDK 3.1178 signs an x-amz-checksum of an empty body
 *   into presigned PUT URLs, which no real upload matches;
 * - bucket-level requests sent as "/bucket" rather than the SDK's "/bucket/": s3rver computes the signature over the
 *   path without the slash, so CreateBucket, ListObjectsV2, DeleteObjects, PutBucketCors, DeleteBucket are refused with
 *   SignatureDoesNotMatch. Object requests (and so presigned object URLs) are untouched; S3 takes both forms.
 *   Safe only with path-style URLs, as here: with virtual-hosted ones, "/name/" would be the key "name/".
 */
export function testS3Client(config: S3TestConfig): S3Client {
  const client = new S3Client({
    endpoint: config.endpoint,
    region: config.region,
    credentials: { accessKeyId: config.accessKeyId, secretAccessKey: config.secretAccessKey },
    forcePathStyle: config.forcePathStyle,
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
  });
  signBucketPathsWithoutSlash(client);
  return client;
}

/**
 * A new, uniquely named bucket (parallel test files and reruns never share one). `cors: true` lets any origin
 * GET/PUT/HEAD with any header and exposes ETag: a browser PUTs to a presigned URL from the page's origin.
 * s3rver honours PutBucketCors (and answers preflights from it), so the same call works in CI and locally.
 */
export async function createTestBucket(options: { cors?: boolean } = {}): Promise<TestBucket> {
  const endpoint = await s3Endpoint();
  const config: S3TestConfig = {
    endpoint,
    // Lowercase letters, digits and hyphens, 20 characters: a valid S3 bucket name.
    bucket: `lc-test-${randomBytes(6).toString("hex")}`,
    region: REGION,
    accessKeyId: S3RVER_ACCESS_KEY_ID,
    secretAccessKey: S3RVER_SECRET_ACCESS_KEY,
    forcePathStyle: true,
  };
  const client = testS3Client(config);
  const Bucket = config.bucket;
  try {
    await client.send(new CreateBucketCommand({ Bucket }));
  } catch (error) {
    client.destroy();
    throw new Error(`could not create a test bucket on the S3 server at ${endpoint} (is it running?)`, {
      cause: error,
    });
  }
  if (options.cors) {
    await client.send(
      new PutBucketCorsCommand({
        Bucket,
        CORSConfiguration: {
          CORSRules: [
            {
              AllowedOrigins: ["*"],
              AllowedMethods: ["GET", "PUT", "HEAD"],
              AllowedHeaders: ["*"],
              ExposeHeaders: ["ETag"],
            },
          ],
        },
      }),
    );
  }
  const keys = () => listKeys(client, Bucket);
  return {
    config,
    client,
    keys,
    async drop() {
      let remaining: string[];
      try {
        remaining = await keys();
      } catch (error) {
        // Dropped already: dropping is what afterEach/afterAll do, whatever the test did.
        if (error instanceof S3ServiceException && error.name === "NoSuchBucket") return;
        throw error;
      }
      // DeleteObjects takes at most 1000 keys.
      for (let start = 0; start < remaining.length; start += 1000) {
        const Objects = remaining.slice(start, start + 1000).map((Key) => ({ Key }));
        await client.send(new DeleteObjectsCommand({ Bucket, Delete: { Objects, Quiet: true } }));
      }
      await client.send(new DeleteBucketCommand({ Bucket }));
    },
  };
}

async function listKeys(client: S3Client, bucket: string): Promise<string[]> {
  const keys: string[] = [];
  let ContinuationToken: string | undefined;
  do {
    const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, ContinuationToken }));
    for (const object of page.Contents ?? []) if (object.Key !== undefined) keys.push(object.Key);
    ContinuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (ContinuationToken);
  return keys.sort();
}

/**
 * S3_TEST_ENDPOINT when set. In CI it must be: a test that needs an S3 server fails there rather than passing
 * without one. Locally, without it, this test file's own s3rver, started on first use.
 */
async function s3Endpoint(): Promise<string> {
  const endpoint = process.env.S3_TEST_ENDPOINT;
  if (endpoint) return endpoint.replace(/\/+$/, "");
  if (process.env.CI) {
    throw new Error(
      "S3_TEST_ENDPOINT is not set: .ci/run starts an S3 server (bash .ci/s3, on 127.0.0.1:4569) and passes " +
        "S3_TEST_ENDPOINT=http://127.0.0.1:4569 to the tests; in CI the S3 tests run against it, never without it",
    );
  }
  localS3 ??= startLocalS3().catch((error: unknown) => {
    localS3 = undefined;
    throw error;
  });
  return (await localS3).endpoint;
}

/** The part of s3rver's API used here (it is CommonJS without type declarations). */
interface S3rverInstance {
  run(): Promise<AddressInfo>;
  close(): Promise<void>;
  httpServer?: Server;
}
type S3rverConstructor = new (options: {
  address: string;
  port: number;
  directory: string;
  silent: boolean;
  vhostBuckets: boolean;
}) => S3rverInstance;

interface LocalS3 {
  endpoint: string;
  server: S3rverInstance;
  directory: string;
}

/** The in-process server of this test file (each vitest worker is a process of its own: one server per file). */
let localS3: Promise<LocalS3> | undefined;

async function startLocalS3(): Promise<LocalS3> {
  // Required here, not imported at the top: a run against S3_TEST_ENDPOINT never loads it.
  const S3rver = createRequire(import.meta.url)("@20minutes/s3rver") as S3rverConstructor;
  const directory = mkdtempSync(join(tmpdir(), "lc-s3rver-"));
  // Port 0: files running in parallel each get a free port. Path-style only, like the clients.
  const server = new S3rver({ address: "127.0.0.1", port: 0, directory, silent: true, vhostBuckets: false });
  const { port } = await server.run();
  // Never what keeps a test process alive; its objects go when the process does.
  server.httpServer?.unref();
  process.once("exit", () => rmSync(directory, { recursive: true, force: true }));
  return { endpoint: `http://127.0.0.1:${port}`, server, directory };
}

/** Stops this file's in-process S3 server, if one was started (for an afterAll; process exit does it otherwise). */
export async function stopLocalS3(): Promise<void> {
  const running = localS3;
  localS3 = undefined;
  if (!running) return;
  const { server, directory } = await running;
  await server.close();
  rmSync(directory, { recursive: true, force: true });
}
