/**
 * The repeatable sources: `drizzle/functions/<name>.sql`, one file per SQL function name (its overloads in the
 * same file), each holding `CREATE OR REPLACE FUNCTION …` with the current definition. A change to a function
 * is a diff of its file, not a copy of the whole function in a new migration. The runner applies them after
 * the versioned files, and again whenever a file's checksum changes (migrator.ts).
 *
 * Order: by file name, except that a file may name, in a top comment line `-- migrate: after lc_iso, lc_x`,
 * the files it must come after. Only bodies that PostgreSQL checks at creation need that: a `LANGUAGE sql`
 * body that calls another function (PL/pgSQL bodies are checked when they first run).
 */
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

/** The folder of repeatable sources, inside the migrations folder (so that the bundle carries it along). */
export const REPEATABLE_FOLDER = "functions";

/** How a repeatable file is named in the migrations table: apart from the journal's tags, which have no `/`. */
export const repeatableRecordName = (fileName: string): string =>
  `${REPEATABLE_FOLDER}/${fileName.replace(/\.sql$/, "")}`;

const AFTER_MARK = "after";

export interface RepeatableFile {
  /** As recorded in the migrations table: `functions/lc_iso`. */
  name: string;
  /** The file, relative to the migrations folder: `functions/lc_iso.sql`. */
  path: string;
  checksum: string;
  statements: string[];
  /** The files (without `.sql`) this one must be applied after. */
  after: string[];
}

/** A repeatable file that cannot be ordered or read. */
export class RepeatableSourceError extends Error {
  override name = "RepeatableSourceError";
}

/**
 * The text after `-- migrate:` on each line of the comment block a file starts with (blank lines included):
 * `no-transaction`, `contract`, `after lc_iso`.
 */
export function migrationMarks(content: string): string[] {
  const marks: string[] = [];
  for (const line of content.split("\n")) {
    const trimmed = line.trim();
    if (trimmed === "") continue;
    if (!trimmed.startsWith("--") || trimmed.startsWith("-->")) break;
    const mark = /^--\s*migrate:\s*(.+)$/.exec(trimmed);
    if (mark?.[1]) marks.push(mark[1].trim());
  }
  return marks;
}

/** The checksum of a file's content, line endings normalized (a checkout with CRLF is the same file). */
export function checksumOf(content: string): string {
  return createHash("sha256").update(content).digest("hex");
}

/** A file's statements, as drizzle-kit separates them. */
export function statementsOf(content: string): string[] {
  return content
    .split("--> statement-breakpoint")
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

/** The repeatable files under `migrationsFolder`, in the order they are applied; none when it has no such folder. */
export function readRepeatableFiles(migrationsFolder: string): RepeatableFile[] {
  const folder = join(migrationsFolder, REPEATABLE_FOLDER);
  if (!existsSync(folder)) return [];
  const files = readdirSync(folder)
    .filter((f) => f.endsWith(".sql"))
    .sort()
    .map((fileName): RepeatableFile => {
      const content = readFileSync(join(folder, fileName), "utf8").replace(/\r\n/g, "\n");
      const after = migrationMarks(content)
        .filter((mark) => mark.startsWith(`${AFTER_MARK} `))
        .flatMap((mark) => mark.slice(AFTER_MARK.length).split(","))
        .map((name) => name.trim().replace(/\.sql$/, ""))
        .filter((name) => name.length > 0);
      return {
        name: repeatableRecordName(fileName),
        path: `${REPEATABLE_FOLDER}/${fileName}`,
        checksum: checksumOf(content),
        statements: statementsOf(content),
        after,
      };
    });
  return orderByAfter(files);
}

/** Name order, each file moved after the files it names (a depth-first walk; a cycle or an unknown name fails). */
function orderByAfter(files: RepeatableFile[]): RepeatableFile[] {
  const byBase = new Map(files.map((f) => [f.name.slice(REPEATABLE_FOLDER.length + 1), f]));
  const ordered: RepeatableFile[] = [];
  const state = new Map<RepeatableFile, "visiting" | "done">();
  const visit = (file: RepeatableFile, path: string[]) => {
    if (state.get(file) === "done") return;
    if (state.get(file) === "visiting") {
      throw new RepeatableSourceError(
        `${[...path, file.path].join(" → ")}: the "-- migrate: after" lines of these files form a cycle; ` +
          "a function needed at creation must not need the other back (make one body PL/pgSQL, checked when it runs)",
      );
    }
    state.set(file, "visiting");
    for (const base of file.after) {
      const dependency = byBase.get(base);
      if (!dependency) {
        throw new RepeatableSourceError(
          `${file.path} says "-- migrate: after ${base}", but there is no ${REPEATABLE_FOLDER}/${base}.sql: ` +
            "name a file of that folder without .sql",
        );
      }
      visit(dependency, [...path, file.path]);
    }
    state.set(file, "done");
    ordered.push(file);
  };
  for (const file of files) visit(file, []);
  return ordered;
}
