/**
 * The photo storages a suite runs against (CONTRACT §11), each `create()` a fresh one that `drop()` removes:
 * the development folder (STORAGE=fs, a temporary DATA_DIR) and a bucket on a real S3 server that checks
 * SigV4 (support/s3.ts: CI's, or one started in this process). `keys()` lists what the storage holds, as the
 * sweeper's tests need it.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DeleteObjectCommand } from "@aws-sdk/client-s3";
import { createFsStorage } from "../../src/media/fs-storage.ts";
import type { StorageConfig } from "../../src/media/open-storage.ts";
import { createTestBucket } from "./s3.ts";

export interface TestStorage {
  config: StorageConfig;
  /** Every object key, sorted (`uploads/<id>`, `photos/<id>`, `thumbs/<id>`). */
  keys(): Promise<string[]>;
  /** Removes one object behind the service's back (a test of what it does without it). */
  remove(key: string): Promise<void>;
  drop(): Promise<void>;
}

export interface StorageTarget {
  name: "fs" | "s3";
  create(): Promise<TestStorage>;
}

const fs: StorageTarget = {
  name: "fs",
  async create() {
    const dataDir = mkdtempSync(join(tmpdir(), "lc-photos-"));
    return {
      config: { kind: "fs", dataDir },
      // What the service itself lists there.
      keys: () => createFsStorage({ root: join(dataDir, "media") }).list(),
      remove: async (key) => rmSync(join(dataDir, "media", key), { force: true }),
      drop: async () => rmSync(dataDir, { recursive: true, force: true }),
    };
  },
};

/** `cors`: the bucket lets any origin PUT and GET, as a browser's page needs it (the demo's tests). */
const s3 = (options: { cors?: boolean }): StorageTarget => ({
  name: "s3",
  async create() {
    const bucket = await createTestBucket(options);
    return {
      config: { kind: "s3", ...bucket.config },
      keys: () => bucket.keys(),
      remove: async (Key) => {
        await bucket.client.send(new DeleteObjectCommand({ Bucket: bucket.config.bucket, Key }));
      },
      drop: () => bucket.drop(),
    };
  },
});

export const storageTargets = (options: { cors?: boolean } = {}): StorageTarget[] => [fs, s3(options)];
