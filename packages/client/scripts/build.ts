/**
 * `npm run build -w @listings-chat/client`: the package as it is published, in `dist/`.
 *
 * - `esm/` and `cjs/`: the sources compiled by `tsc` (ES modules, and CommonJS for `require`), each with its
 *   declarations. One file per module, not a bundle: with `sideEffects: false` a consumer's bundler keeps only
 *   what the page imports, and the declarations come from the compiler that checks the code.
 * - `package.json`: this one with `exports` pointing there. In this repository `exports` point at `src/`, so
 *   that the services, tests and demo run the TypeScript itself and never a stale build.
 * - `README.md`, `CHANGELOG.md`.
 *
 * `npm pack ./dist` (or `npm publish ./dist`) then makes the tarball: `packClient()` does both.
 */
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const packageDir = fileURLToPath(new URL("..", import.meta.url));
const distDir = join(packageDir, "dist");

/** The entry points: each `exports` subpath and the module it is built from (under `src/`, without `.ts`). */
const ENTRIES = { ".": "index", "./protocol": "protocol/index" } as const;

/** The published manifest: this package's own, with `exports` (and the pre-`exports` fields) pointing at `dist/`. */
export function publishedManifest(source: Record<string, unknown>): Record<string, unknown> {
  const { scripts: _scripts, devDependencies: _dev, "size-limit": _size, exports: _exports, ...kept } = source;
  const exports: Record<string, unknown> = {};
  for (const [subpath, entry] of Object.entries(ENTRIES)) {
    exports[subpath] = {
      import: { types: `./esm/${entry}.d.ts`, default: `./esm/${entry}.js` },
      require: { types: `./cjs/${entry}.d.ts`, default: `./cjs/${entry}.js` },
    };
  }
  exports["./package.json"] = "./package.json";
  return {
    ...kept,
    // For tools that predate `exports` (TypeScript's `moduleResolution: node`, old bundlers).
    main: "./cjs/index.js",
    module: "./esm/index.js",
    types: "./cjs/index.d.ts",
    typesVersions: { "*": { protocol: ["./cjs/protocol/index.d.ts"] } },
    exports,
    files: ["esm", "cjs", "README.md", "CHANGELOG.md"],
  };
}

export function buildClient(): string {
  rmSync(distDir, { recursive: true, force: true });
  const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
  for (const config of ["tsconfig.build.json", "tsconfig.build-cjs.json"]) {
    execFileSync(process.execPath, [tsc, "-p", join(packageDir, config)], { stdio: "inherit" });
  }
  for (const format of ["esm", "cjs"]) rewriteDeclarationImports(join(distDir, format));
  // The root manifest says "type": "module"; this one makes `cjs/*.js` CommonJS.
  writeFileSync(join(distDir, "cjs", "package.json"), `${JSON.stringify({ type: "commonjs" })}\n`);
  const source = JSON.parse(readFileSync(join(packageDir, "package.json"), "utf8")) as Record<string, unknown>;
  writeFileSync(join(distDir, "package.json"), `${JSON.stringify(publishedManifest(source), null, 2)}\n`);
  for (const file of ["README.md", "CHANGELOG.md"]) copyFileSync(join(packageDir, file), join(distDir, file));
  return distDir;
}

/**
 * `tsc` rewrites `./x.ts` to `./x.js` in JavaScript (`rewriteRelativeImportExtensions`) but not in declarations;
 * a consumer's TypeScript before 5.0 (or with `allowImportingTsExtensions` semantics of its own) reads `.js`.
 */
function rewriteDeclarationImports(dir: string): void {
  for (const entry of readdirSync(dir, { recursive: true, encoding: "utf8" })) {
    if (!entry.endsWith(".d.ts")) continue;
    const file = join(dir, entry);
    const text = readFileSync(file, "utf8");
    writeFileSync(file, text.replace(/(from\s+"\.{1,2}\/[^"]*?)\.ts"/g, '$1.js"'));
  }
}

/** Builds, then packs `dist/` into `destination`; the tarball's path. */
export function packClient(destination: string): string {
  buildClient();
  mkdirSync(destination, { recursive: true });
  const npm = process.env.npm_execpath;
  const args = ["pack", distDir, "--pack-destination", destination, "--json", "--ignore-scripts"];
  const out = npm?.endsWith(".js")
    ? execFileSync(process.execPath, [npm, ...args], { encoding: "utf8" })
    : execFileSync("npm", args, { encoding: "utf8" });
  const [packed] = JSON.parse(out) as Array<{ filename: string }>;
  if (!packed) throw new Error(`npm pack printed no tarball: ${out}`);
  return join(destination, packed.filename);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const dir = buildClient();
  console.log(`built @listings-chat/client in ${dir}`);
}
