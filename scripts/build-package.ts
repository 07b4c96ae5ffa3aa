/**
 * `npm run build -w <package>` for the packages this repository publishes (`packages/*`): the package as it is
 * published, in its `dist/`.
 *
 * - `esm/` and `cjs/`: its sources compiled by `tsc` (`tsconfig.build.json`, ES modules, and
 *   `tsconfig.build-cjs.json`, CommonJS for `require`), each with declarations. One file per module, not a
 *   bundle: with `sideEffects: false` a consumer's bundler keeps only what a page imports, and the declarations
 *   come from the compiler that checks the code.
 * - `package.json`: the package's own, with `exports` pointing there. In this repository `exports` point at
 *   `src/`, so that the services, tests and demo run the TypeScript itself and never a stale build; a subpath
 *   that points into `src/testing/` stays in the repository.
 * - `README.md`, `CHANGELOG.md`.
 *
 * `npm pack <package>/dist` (or `npm publish <package>/dist`) then makes the tarball: `packPackage()` does both.
 */
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";

type Manifest = Record<string, unknown> & { name: string; exports: Record<string, string> };

const readManifest = (packageDir: string) =>
  JSON.parse(readFileSync(join(packageDir, "package.json"), "utf8")) as Manifest;

/** The published entry points: each `exports` subpath and its module under `src/`, without `.ts`. */
export function publishedEntries(manifest: Manifest): Record<string, string> {
  const entries: Record<string, string> = {};
  for (const [subpath, target] of Object.entries(manifest.exports)) {
    const module = /^\.\/src\/(.+)\.ts$/.exec(target)?.[1];
    if (module && !module.startsWith("testing/")) entries[subpath] = module;
  }
  if (!entries["."]) throw new Error(`${manifest.name}: "exports" has no "." pointing at ./src/<module>.ts`);
  return entries;
}

/** The published manifest: the package's own, with `exports` (and the pre-`exports` fields) pointing at `dist/`. */
export function publishedManifest(source: Manifest): Record<string, unknown> {
  const { scripts: _scripts, devDependencies: _dev, "size-limit": _size, exports: _exports, ...kept } = source;
  const exports: Record<string, unknown> = {};
  const typesVersions: Record<string, string[]> = {};
  for (const [subpath, module] of Object.entries(publishedEntries(source))) {
    exports[subpath] = {
      import: { types: `./esm/${module}.d.ts`, default: `./esm/${module}.js` },
      require: { types: `./cjs/${module}.d.ts`, default: `./cjs/${module}.js` },
    };
    if (subpath !== ".") typesVersions[subpath.slice(2)] = [`./cjs/${module}.d.ts`];
  }
  exports["./package.json"] = "./package.json";
  return {
    ...kept,
    // For tools that predate `exports` (TypeScript's `moduleResolution: node`, old bundlers).
    main: "./cjs/index.js",
    module: "./esm/index.js",
    types: "./cjs/index.d.ts",
    ...(Object.keys(typesVersions).length > 0 ? { typesVersions: { "*": typesVersions } } : {}),
    exports,
    files: ["esm", "cjs", "README.md", "CHANGELOG.md"],
  };
}

/**
 * `tsc` rewrites `./x.ts` to `./x.js` in JavaScript (`rewriteRelativeImportExtensions`) but not in declarations;
 * a consumer's TypeScript before 5.0 reads only `.js` there.
 */
function rewriteDeclarationImports(dir: string): void {
  for (const entry of readdirSync(dir, { recursive: true, encoding: "utf8" })) {
    if (!entry.endsWith(".d.ts")) continue;
    const file = join(dir, entry);
    const text = readFileSync(file, "utf8");
    writeFileSync(file, text.replace(/(from\s+"\.{1,2}\/[^"]*?)\.ts"/g, '$1.js"'));
  }
}

/** Builds the package in `packageDir` into its `dist/`; the folder. */
export function buildPackage(packageDir: string): string {
  const distDir = join(packageDir, "dist");
  rmSync(distDir, { recursive: true, force: true });
  const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
  for (const config of ["tsconfig.build.json", "tsconfig.build-cjs.json"]) {
    execFileSync(process.execPath, [tsc, "-p", join(packageDir, config)], { stdio: "inherit" });
  }
  for (const format of ["esm", "cjs"]) rewriteDeclarationImports(join(distDir, format));
  // The published manifest says "type": "module"; this one makes `cjs/*.js` CommonJS.
  writeFileSync(join(distDir, "cjs", "package.json"), `${JSON.stringify({ type: "commonjs" })}\n`);
  const manifest = publishedManifest(readManifest(packageDir));
  writeFileSync(join(distDir, "package.json"), `${JSON.stringify(manifest, null, 2)}\n`);
  for (const file of ["README.md", "CHANGELOG.md"]) copyFileSync(join(packageDir, file), join(distDir, file));
  return distDir;
}

/** npm as this process was started with (`npm run` and `npm test` set npm_execpath), else the one on PATH. */
export function npmCommand(args: string[]): { file: string; args: string[] } {
  const npmCli = process.env.npm_execpath;
  return npmCli?.endsWith(".js") ? { file: process.execPath, args: [npmCli, ...args] } : { file: "npm", args };
}

/** Builds, then packs the package's `dist/` into `destination`; the tarball's path. */
export function packPackage(packageDir: string, destination: string): string {
  const distDir = buildPackage(packageDir);
  mkdirSync(destination, { recursive: true });
  const npm = npmCommand(["pack", distDir, "--pack-destination", destination, "--json", "--ignore-scripts"]);
  const out = execFileSync(npm.file, npm.args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  const [packed] = JSON.parse(out) as Array<{ filename: string }>;
  if (!packed) throw new Error(`npm pack printed no tarball: ${out}`);
  return join(destination, packed.filename);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const packageDir = resolve(process.argv[2] ?? ".");
  console.log(`built ${readManifest(packageDir).name} in ${buildPackage(packageDir)}`);
}
