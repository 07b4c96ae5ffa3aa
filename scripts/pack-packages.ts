/**
 * The published packages packed once per source state, for the tests that install them (the consumer projects,
 * the integration guide): `@listings-chat/client` first, then `@listings-chat/react`, whose build reads the
 * client's declarations from its `dist/`.
 *
 * Packing rebuilds the packages' `dist/` folders, so two test files packing at once would build under each
 * other: a lock (a directory made atomically) lets one build while the others wait, and the tarballs are kept
 * under the hash of the sources, so the others take them as they are.
 */
import { createHash } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { packPackage } from "./build-package.ts";

const root = fileURLToPath(new URL("..", import.meta.url));
/** What is published, in build order. */
export const PUBLISHED = { client: join(root, "packages/client"), react: join(root, "packages/react") } as const;
export type Packed = Record<keyof typeof PUBLISHED, string>;

/** A hash of everything a build reads: the packages' files (not their dist/) and the build script. */
function sourcesHash(): string {
  const hash = createHash("sha256");
  const add = (file: string) => hash.update(relative(root, file)).update(readFileSync(file));
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir).sort()) {
      if (entry === "dist" || entry === "node_modules") continue;
      const path = join(dir, entry);
      if (statSync(path).isDirectory()) walk(path);
      else add(path);
    }
  };
  for (const dir of Object.values(PUBLISHED)) walk(dir);
  add(join(root, "scripts/build-package.ts"));
  add(join(root, "tsconfig.base.json"));
  return hash.digest("hex").slice(0, 16);
}

async function withLock<T>(lock: string, work: () => T): Promise<T> {
  const deadline = Date.now() + 300_000;
  for (;;) {
    try {
      mkdirSync(lock);
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      // A lock older than the longest build was left by a process that died holding it.
      try {
        if (Date.now() - statSync(lock).mtimeMs > 240_000) rmSync(lock, { recursive: true, force: true });
      } catch {}
      if (Date.now() > deadline) throw new Error(`${lock} is held for over 5 minutes: remove it if no test runs`);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
  try {
    return work();
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}

/** The packed tarballs of the current sources, copied into `destination`. */
export async function packPublishedPackages(destination: string): Promise<Packed> {
  const cacheRoot = join(tmpdir(), "listings-chat-packs");
  mkdirSync(cacheRoot, { recursive: true });
  const cached = await withLock(join(cacheRoot, "lock"), () => {
    const dir = join(cacheRoot, sourcesHash());
    if (!existsSync(join(dir, "done"))) {
      const staging = `${dir}.${process.pid}`;
      rmSync(staging, { recursive: true, force: true });
      const packed = {} as Packed;
      for (const [name, packageDir] of Object.entries(PUBLISHED)) {
        packed[name as keyof Packed] = packPackage(packageDir, staging);
      }
      mkdirSync(join(staging, "done"));
      rmSync(dir, { recursive: true, force: true });
      renameSync(staging, dir);
    }
    return dir;
  });
  mkdirSync(destination, { recursive: true });
  const result = {} as Packed;
  for (const file of readdirSync(cached)) {
    const name = /^listings-chat-(client|react)-[\d.]+\.tgz$/.exec(file)?.[1] as keyof Packed | undefined;
    if (!name) continue;
    copyFileSync(join(cached, file), join(destination, file));
    result[name] = join(destination, file);
  }
  for (const name of Object.keys(PUBLISHED)) {
    if (!result[name as keyof Packed]) throw new Error(`no packed ${name} in ${cached}`);
  }
  return result;
}
