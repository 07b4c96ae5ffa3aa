/**
 * Fresh consumer projects for the packaging tests: a folder with the given files and the packed tarballs
 * installed into its own `node_modules`, as a monolith team's project would have them. The tools that build
 * it (TypeScript, Vite, webpack) are this repository's, pointed at the project.
 */
import { execFile } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { npmCommand } from "../../../scripts/build-package.ts";

export const run = promisify(execFile);
const require = createRequire(import.meta.url);

export const tsc = require.resolve("typescript/bin/tsc");

/** A command-line tool of this repository's devDependencies (npm links them into the root's node_modules/.bin). */
export const bin = (name: string) => fileURLToPath(new URL(`../../../node_modules/.bin/${name}`, import.meta.url));

/** The version of a package this repository has installed (so that a consumer's install finds it in npm's cache). */
export const installedVersion = (name: string) =>
  (JSON.parse(readFileSync(require.resolve(`${name}/package.json`), "utf8")) as { version: string }).version;

export function npm(args: string[], cwd: string) {
  const command = npmCommand(args);
  return run(command.file, command.args, { cwd });
}

/**
 * Makes `dir` with `files` (a `package.json` unless given) and installs `packages` into it: tarball paths, or
 * `name@version` specs that npm takes from its cache when it has them (`--prefer-offline`).
 */
export async function consumerProject(dir: string, files: Record<string, string>, packages: string[]): Promise<string> {
  mkdirSync(dir, { recursive: true });
  for (const [path, text] of Object.entries({ "package.json": '{ "name": "consumer", "private": true }', ...files })) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    await writeFile(join(dir, path), text);
  }
  await npm(
    ["install", ...packages, "--prefer-offline", "--no-audit", "--no-fund", "--ignore-scripts", "--no-package-lock"],
    dir,
  );
  return dir;
}

/** `tsc -p <dir>/tsconfig.json`, failing with the compiler's own messages. */
export async function typecheck(dir: string, what: string): Promise<void> {
  await run(process.execPath, [tsc, "-p", join(dir, "tsconfig.json")]).catch((error) => {
    throw new Error(`tsc (${what}) failed:\n${error.stdout}${error.stderr}`);
  });
}

/** Builds `<dir>/<page>.html` with Vite into `<dir>/out-<page>/`; the text of its scripts, joined. */
export async function viteBuild(dir: string, page: string): Promise<string> {
  const { build } = await import("vite");
  const outDir = join(dir, `out-${page}`);
  await build({
    root: dir,
    configFile: false,
    logLevel: "silent",
    build: { outDir, rollupOptions: { input: join(dir, `${page}.html`) } },
  });
  const assets = join(outDir, "assets");
  const scripts = readdirSync(assets).filter((file) => file.endsWith(".js"));
  if (scripts.length === 0) throw new Error(`Vite built no script for ${page}.html`);
  return scripts.map((file) => readFileSync(join(assets, file), "utf8")).join("\n");
}

/**
 * `size-limit` on what a tarball holds (not on a `dist/` another test may be building): the package's own
 * budgets (its package.json's "size-limit", paths under `dist/`) checked against the unpacked files. The
 * package's folder is the working directory, so that size-limit finds its preset there.
 */
export async function sizeLimitOfTarball(
  tarball: string,
  packageDir: string,
): Promise<Array<{ name: string; passed: boolean; size: number }>> {
  const dir = mkdtempSync(join(tmpdir(), "size-limit-"));
  try {
    await run("tar", ["xzf", tarball, "-C", dir]);
    const checks = (
      JSON.parse(readFileSync(join(packageDir, "package.json"), "utf8")) as { "size-limit": Array<{ path: string }> }
    )["size-limit"].map((check) => ({ ...check, path: check.path.replace(/^dist\//, "") }));
    const config = join(dir, "package", ".size-limit.json");
    writeFileSync(config, JSON.stringify(checks));
    const { stdout } = await run(bin("size-limit"), ["--json", "--config", config], { cwd: packageDir }).catch(
      (error) => {
        throw new Error(`size-limit: over budget or failed:\n${error.stdout}${error.stderr}`);
      },
    );
    return JSON.parse(stdout);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
