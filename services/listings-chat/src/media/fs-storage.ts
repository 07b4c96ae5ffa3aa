import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { mkdir, open, readdir, rename, rm, stat, writeFile } from "node:fs/promises";
import { dirname, join, relative, sep } from "node:path";
import { ObjectTooLarge, type PresignedPut, type Storage } from "./storage.ts";

/** The gateway path below which development storage is served (the gateway forwards it here, in development only). */
export const FILES_PATH = "/files";

/** Object keys are `<kind>/<upload id>`: nothing else can name a file, so no path escapes the folder. */
const KEY = /^(uploads|photos|thumbs)\/[A-Za-z0-9_-]{1,64}$/;
export const isObjectKey = (key: string) => KEY.test(key);

/** What a signed URL of the development storage allows: one method on one key, until `expiresAt`. */
export interface FileGrant {
  method: "PUT" | "GET";
  key: string;
  /** Seconds since the epoch. */
  expiresAt: number;
  contentType: string;
  /** PUT only: the exact number of bytes. */
  size?: number;
}

/**
 * Signs and checks the development storage's URLs: HMAC-SHA256 over everything the URL allows, so that changing
 * the method, key, expiry, type or size breaks it, as a presigned S3 URL does.
 */
export function createFileSigner(secret: Buffer) {
  const mac = (g: FileGrant) =>
    createHmac("sha256", secret)
      .update([g.method, g.key, g.expiresAt, g.contentType, g.size ?? ""].join("\n"))
      .digest("base64url");
  return {
    url(grant: FileGrant): string {
      const query = new URLSearchParams({ e: String(grant.expiresAt), t: grant.contentType });
      if (grant.size !== undefined) query.set("n", String(grant.size));
      query.set("s", mac(grant));
      return `${FILES_PATH}/${grant.key}?${query}`;
    },
    /** The grant a request's key and query sign, or why they do not: expired, altered or unsigned. */
    check(method: "PUT" | "GET", key: string, query: URLSearchParams, nowS: number): FileGrant | string {
      const expiresAt = Number(query.get("e"));
      const contentType = query.get("t") ?? "";
      const size = query.has("n") ? Number(query.get("n")) : undefined;
      const signature = query.get("s") ?? "";
      const grant: FileGrant = { method, key, expiresAt, contentType, size };
      const expected = Buffer.from(mac(grant));
      const presented = Buffer.from(signature);
      if (!isObjectKey(key) || presented.length !== expected.length || !timingSafeEqual(presented, expected)) {
        return "the signature does not match this request: ask the API for a new URL";
      }
      if (!(expiresAt >= nowS)) return "the URL has expired: ask the API for a new one";
      return grant;
    },
  };
}

export type FileSigner = ReturnType<typeof createFileSigner>;

export interface FsStorageOptions {
  /** The folder that holds the objects (DATA_DIR/media). */
  root: string;
  /** Signs the URLs; the same on every instance sharing `root` (derived from INTERNAL_TOKEN when there is one). */
  secret?: Buffer;
  /** Seconds since the epoch; tests move it. */
  nowS?: () => number;
}

/** Development storage: files under a folder, URLs signed here and served by `/files` (media/file-routes.ts). */
export function createFsStorage({
  root,
  secret = randomBytes(32),
  nowS = () => Math.floor(Date.now() / 1000),
}: FsStorageOptions) {
  const signer = createFileSigner(secret);
  const pathOf = (key: string) => {
    if (!isObjectKey(key)) throw new Error(`not an object key: ${key}`);
    return join(root, key);
  };
  const missing = (error: unknown) => (error as NodeJS.ErrnoException).code === "ENOENT";

  const storage: Storage & { signer: FileSigner; nowS: () => number } = {
    kind: "fs",
    signer,
    nowS,
    async presignPut(key, contentType, size, expiresInS): Promise<PresignedPut> {
      return {
        url: signer.url({ method: "PUT", key, expiresAt: nowS() + expiresInS, contentType, size }),
        headers: { "content-type": contentType },
      };
    },
    async presignGet(key, contentType, expiresInS) {
      return signer.url({ method: "GET", key, expiresAt: nowS() + expiresInS, contentType });
    },
    async sizeOf(key) {
      try {
        return (await stat(pathOf(key))).size;
      } catch (error) {
        if (missing(error)) return undefined;
        throw error;
      }
    },
    async read(key, maxBytes) {
      let file: Awaited<ReturnType<typeof open>>;
      try {
        file = await open(pathOf(key), "r");
      } catch (error) {
        if (missing(error)) return undefined;
        throw error;
      }
      try {
        const { size } = await file.stat();
        if (size > maxBytes) throw new ObjectTooLarge(size);
        return await file.readFile();
      } finally {
        await file.close();
      }
    },
    async write(key, bytes) {
      const path = pathOf(key);
      await mkdir(dirname(path), { recursive: true });
      // Whole or not at all: a reader never sees half a file.
      const partial = `${path}.${randomBytes(6).toString("hex")}.partial`;
      await writeFile(partial, bytes);
      await rename(partial, path);
    },
    async remove(keys) {
      await Promise.all(keys.map((key) => rm(pathOf(key), { force: true })));
    },
    async list(prefix = "") {
      const keys: string[] = [];
      for (const kind of ["uploads", "photos", "thumbs"]) {
        let names: string[] = [];
        try {
          names = await readdir(join(root, kind));
        } catch (error) {
          if (!missing(error)) throw error;
        }
        for (const name of names) {
          const key = relative(root, join(root, kind, name))
            .split(sep)
            .join("/");
          if (isObjectKey(key) && key.startsWith(prefix)) keys.push(key);
        }
      }
      return keys.sort();
    },
    close() {},
  };
  return storage;
}

export type FsStorage = ReturnType<typeof createFsStorage>;
