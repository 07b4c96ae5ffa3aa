import type { ReportReason } from "@listings-chat/shared";
import { sql } from "drizzle-orm";
import type { Database } from "../db/client.ts";
import { executeWrite } from "../db/retry.ts";
import type { reportTargets } from "../db/schema.ts";
import { rowsOf } from "../events/log.ts";

export interface Report {
  reporterId: number;
  reason: ReportReason;
  note: string | null;
  target: { type: (typeof reportTargets)[number]; id: number };
}

/** What became of a report (see `lc_report`). */
export type ReportOutcome =
  /** Stored now (with its copy of the message and its `report.created` safety event). */
  | { status: "created"; id: number }
  /** The reporter reported this target before: that report. */
  | { status: "existing"; id: number }
  /** Asked without storing: it would be a new report. */
  | { status: "new" }
  /** A message or chat the reporter takes no part in, or a user who shares no chat with them. */
  | { status: "not_found" }
  /** Their own message, or themselves. */
  | { status: "own" }
  /** The reporter is being erased, or was (CONTRACT §12): nothing of theirs is stored again. */
  | { status: "erased" };

interface ReportRow {
  status: ReportOutcome["status"];
  id: string | number | null;
}

/**
 * Files `report`, or with `store` false only says what filing it would do (so that a new report can be
 * counted against the reporter's limit before it is stored, and a repeat is not counted). One round trip.
 */
export async function fileReport(db: Database, report: Report, store: boolean): Promise<ReportOutcome> {
  const { reporterId, reason, note, target } = report;
  const rows = rowsOf<ReportRow>(
    await executeWrite(
      db,
      sql`select * from lc_report(${reporterId}, ${reason}, ${note}, ${target.type}, ${target.id}, ${store})`,
    ),
  );
  const first = rows[0];
  if (!first) throw new Error("lc_report returned no row");
  if (first.status === "created" || first.status === "existing") return { status: first.status, id: Number(first.id) };
  return { status: first.status };
}
