/**
 * `npm run build [outDir]`: each service compiled to plain JavaScript in `dist/<service>/` (or
 * `<outDir>/<service>/`), what the image runs and CI starts. `main.js` catches the stop signals and loads
 * the rest of the service from a chunk beside it, so that nothing else is read before the handlers are in
 * place (shared/src/node/stop-signals.ts). The shared package is compiled in; npm packages stay outside,
 * installed with `npm ci --omit=dev` (PGlite and pino read files of their own at run time). listings-chat
 * gets its committed migrations in `drizzle/` beside its chunks, and `migrate.js`, which applies them and exits.
 */
import { cpSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { build, type Plugin } from "esbuild";

const root = fileURLToPath(new URL("..", import.meta.url));

/** What is built, from where. */
export const SERVICES = {
  gateway: { entries: { main: "services/gateway/src/main.ts" } },
  "listings-chat": {
    // migrate.js: the migrations alone, then exit (a Kubernetes init container or Job).
    entries: { main: "services/listings-chat/src/main.ts", migrate: "services/listings-chat/src/migrate.ts" },
    migrations: "services/listings-chat/drizzle",
  },
} as const;

export type ServiceName = keyof typeof SERVICES;

/** npm packages are imported at run time from node_modules; this repository's own are compiled in. */
const npmPackagesOutside: Plugin = {
  name: "npm-packages-outside",
  setup(plugins) {
    plugins.onResolve({ filter: /^[^./]/ }, (args) =>
      args.path.startsWith("@listings-chat/") ? undefined : { path: args.path, external: true },
    );
  },
};

export async function buildServices(outDir = join(root, "dist")): Promise<Record<ServiceName, string>> {
  const built = {} as Record<ServiceName, string>;
  for (const [name, service] of Object.entries(SERVICES) as Array<[ServiceName, (typeof SERVICES)[ServiceName]]>) {
    const dir = join(outDir, name);
    rmSync(dir, { recursive: true, force: true });
    await build({
      absWorkingDir: root,
      entryPoints: service.entries,
      outdir: dir,
      bundle: true,
      splitting: true,
      format: "esm",
      platform: "node",
      target: "node20",
      sourcemap: true,
      plugins: [npmPackagesOutside],
      define: "migrations" in service ? { BUNDLED_MIGRATIONS_FOLDER: JSON.stringify("./drizzle/") } : {},
      logLevel: "warning",
    });
    if ("migrations" in service) cpSync(join(root, service.migrations), join(dir, "drizzle"), { recursive: true });
    built[name] = join(dir, "main.js");
  }
  return built;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const built = await buildServices(process.argv[2] ? resolve(process.argv[2]) : undefined);
  for (const [name, main] of Object.entries(built)) console.log(`built ${name}: ${main}`);
}
