import { readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { z } from "zod";
import { MIN_SECRET_LENGTH } from "../dev.ts";

/** A variable that stops start-up; its message is the one line to print. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

/** `schema` applied to the environment; the first problem becomes a ConfigError naming its variable. */
export function parseEnv<S extends z.ZodType>(schema: S, env: Record<string, string | undefined>): z.infer<S> {
  const parsed = schema.safeParse(env);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  throw new ConfigError(`invalid ${String(issue?.path[0] ?? "variable")}: ${issue?.message ?? "bad value"}`);
}

/**
 * The environment with each secret of `names` read from a file, as Docker and Kubernetes hand secrets over (a
 * mounted file): the file's content without its final newline.
 *
 * - `<NAME>_FILE` names the file. Setting both `<NAME>` and `<NAME>_FILE` is refused, and so is a file that
 *   cannot be read or is empty.
 * - `SECRETS_DIR` names a folder (a mounted Secret): `<SECRETS_DIR>/<NAME>` is read for each name not given
 *   otherwise, when that file exists. A missing file is no error, so that one deployment takes whichever of
 *   several alternatives its Secret holds (JWT_SECRET, JWT_PUBLIC_KEY or JWT_JWKS_URL); what is required is
 *   checked afterwards, by the service's own rules.
 */
export function withSecretFiles(
  env: Record<string, string | undefined>,
  names: readonly string[],
  read: (path: string) => string = (path) => readFileSync(path, "utf8"),
  isDirectory: (path: string) => boolean = (path) => statSync(path, { throwIfNoEntry: false })?.isDirectory() ?? false,
): Record<string, string | undefined> {
  const resolved = { ...env };
  const dir = env.SECRETS_DIR || undefined;
  // A folder that is not there (a typo, a volume that did not mount) would quietly leave every secret to its
  // development default outside production: it stops start-up instead.
  if (dir && !isDirectory(dir)) {
    throw new ConfigError(`SECRETS_DIR: ${dir} is not a folder: mount the Secret there, or unset SECRETS_DIR`);
  }
  for (const name of names) {
    const path = env[`${name}_FILE`];
    if (path && env[name]) throw new ConfigError(`set ${name} or ${name}_FILE, not both`);
    if (!path && (env[name] || !dir)) continue;
    const fromDir = !path;
    const file = path || join(dir ?? "", name);
    let content: string;
    try {
      content = read(file).replace(/\r?\n$/, "");
    } catch (error) {
      const why = (error as NodeJS.ErrnoException).code ?? String(error);
      if (fromDir && why === "ENOENT") continue;
      throw new ConfigError(
        fromDir
          ? `SECRETS_DIR: cannot read ${file} (${why}): check the mounted Secret's permissions`
          : `${name}_FILE: cannot read ${file} (${why}): mount the secret there, or unset ${name}_FILE`,
      );
    }
    if (!content) throw new ConfigError(`${fromDir ? "SECRETS_DIR" : `${name}_FILE`}: ${file} is empty`);
    resolved[name] = content;
  }
  return resolved;
}

/** A whole number written in digits, from `min` to `max`: `z.coerce` would read an empty value as 0. */
export const wholeNumber = (min: number, max: number, what = `a whole number from ${min} to ${max}`) =>
  z
    .string()
    .trim()
    .regex(/^\d{1,9}$/, `must be ${what}`)
    .transform(Number)
    .refine((n) => n >= min && n <= max, `must be ${what}`);

/** Whether `value` parses as a URL whose scheme is one of `protocols` (e.g. `["redis:", "rediss:"]`). */
function hasProtocol(value: string, protocols: string[]): boolean {
  try {
    return protocols.includes(new URL(value).protocol);
  } catch {
    return false;
  }
}

/** A URL whose scheme is one of `protocols` (e.g. `["redis:", "rediss:"]`). */
export const urlWithProtocol = (protocols: string[]) =>
  z.string().refine((v) => hasProtocol(v, protocols), `must be a ${protocols.join(" or ")}// URL`);

/** The URLs of `REDIS_URL`: one for a single Redis, several (comma-separated) for the seed nodes of a cluster. */
export function redisUrls(value: string): string[] {
  return value
    .split(",")
    .map((entry) => entry.trim())
    .filter(Boolean);
}

/** `REDIS_URL`: a redis:// or rediss:// URL, or several separated by commas (a Redis Cluster's seed nodes). */
export const redisUrlList = z.string().refine((value) => {
  const urls = redisUrls(value);
  return urls.length > 0 && urls.every((entry) => hasProtocol(entry, ["redis:", "rediss:"]));
}, "must be a redis:// or rediss:// URL, or several separated by commas for a Redis Cluster");

export const portNumber = wholeNumber(0, 65535, "a port number from 0 to 65535");

export interface SecretOptions {
  name: string;
  value: string | undefined;
  devDefault: string;
  production: boolean;
  /** Receives the loud development warning when the default is used. */
  warnings: string[];
}

/**
 * A secret: in production it must be set, at least MIN_SECRET_LENGTH characters and not the development
 * default; elsewhere a missing one gets the default and a warning.
 */
export function requireSecret({ name, value, devDefault, production, warnings }: SecretOptions): string {
  if (production) {
    if (!value) throw new ConfigError(`${name} is required in production`);
    if (value.length < MIN_SECRET_LENGTH || value === devDefault) {
      throw new ConfigError(`${name} is too weak: use at least ${MIN_SECRET_LENGTH} random characters`);
    }
    return value;
  }
  if (value) return value;
  warnings.push(`${name} is not set: using the development default. Never do this in production.`);
  return devDefault;
}
