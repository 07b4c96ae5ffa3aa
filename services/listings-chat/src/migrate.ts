// `node dist/listings-chat/migrate.js`: applies the committed migrations to DATABASE_URL and exits 0 (a
// Kubernetes init container or Job, before the instances start). Each instance does the same at start,
// under the same advisory lock, so running this first only moves the wait out of the instances' start-up.
import { ConfigError } from "@listings-chat/shared/node";
import { openDatabase } from "./db/client.ts";
import { MigrationError } from "./db/migrator.ts";
import { loadChatConfig } from "./env.ts";

try {
  const config = loadChatConfig(process.env);
  if (!("url" in config.database)) {
    throw new ConfigError("DATABASE_URL (or DATABASE_URL_FILE) is required: PGlite migrates when the service starts");
  }
  const started = Date.now();
  const database = await openDatabase(config.database);
  await database.close();
  const { applied, adopted, repeatable, heldBack, ahead } = database.migrations;
  console.log(
    JSON.stringify({ msg: "migrations applied", ms: Date.now() - started, applied, adopted, repeatable, ahead }),
  );
  // Not a failure: a contract file waits for the older release's instances, and a later run applies it.
  for (const { name, reason } of heldBack) console.log(JSON.stringify({ msg: "migration held back", name, reason }));
} catch (error) {
  if (!(error instanceof ConfigError || error instanceof MigrationError)) throw error;
  console.error(`listings-chat migrate: ${error.message}`);
  process.exit(1);
}
