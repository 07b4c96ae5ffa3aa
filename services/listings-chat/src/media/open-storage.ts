import { createHmac } from "node:crypto";
import { join } from "node:path";
import { createFsStorage, type FsStorage } from "./fs-storage.ts";
import { createS3Storage, type S3StorageOptions } from "./s3-storage.ts";
import type { Storage } from "./storage.ts";

/** STORAGE and its settings (CONTRACT §11). */
export type StorageConfig = { kind: "fs"; dataDir: string } | ({ kind: "s3" } & S3StorageOptions);

/**
 * The configured storage. The development storage's URLs are signed with a key derived from INTERNAL_TOKEN, so
 * that every instance sharing the folder accepts every other's URLs.
 */
export function openStorage(
  config: StorageConfig,
  internalToken: string,
): { storage: Storage; developmentFiles?: FsStorage } {
  if (config.kind === "s3") return { storage: createS3Storage(config) };
  const files = createFsStorage({
    root: join(config.dataDir, "media"),
    secret: createHmac("sha256", internalToken).update("listings-chat development storage").digest(),
  });
  return { storage: files, developmentFiles: files };
}
