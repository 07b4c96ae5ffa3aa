import { ErrorCode, type ReportBody } from "@listings-chat/shared";
import type { Database } from "../db/client.ts";
import { ChatError, notFound, storing, userSuspendedError } from "../errors.ts";
import type { PublishEvent } from "../events/publisher.ts";
import { createRateLimiter, keptIfStored, type RateLimiter } from "../limits/rate-limiter.ts";
import { type BlockChange, blocksOf, blockUser, MAX_BLOCKS_PER_USER, unblockUser } from "./blocks.ts";
import { fileReport, type Report, type ReportOutcome } from "./reports.ts";

export interface SafetyServiceDeps {
  db: Database;
  /** The pool of page reads (the list of blocks); `db` when there is one pool. */
  reads?: Database;
  publish: PublishEvent;
  /** Reports per user (REPORT_LIMIT_PER_HOUR); the contract's limits, counted in this process, when not given. */
  limits?: RateLimiter;
  /**
   * Told after the commit of a block (`blocked` true) or an unblock that changed something, so that the two
   * stop (or start again) seeing each other's presence at once (hub.ts).
   */
  onBlockChanged?: (blockerId: number, blockedId: number, blocked: boolean) => void;
}

export type SafetyService = ReturnType<typeof createSafetyService>;

const notYourself = (what: string) => new ChatError(ErrorCode.validationFailed, 400, `you cannot ${what} yourself`);

/** What a report names: exactly one of its three targets (the body's schema sees to that). */
function targetOf(body: ReportBody): Report["target"] {
  if (body.message_id !== undefined) return { type: "message", id: body.message_id };
  if (body.chat_id !== undefined) return { type: "chat", id: body.chat_id };
  if (body.user_id !== undefined) return { type: "user", id: body.user_id };
  throw new ChatError(ErrorCode.validationFailed, 400, "name one of message_id, chat_id and user_id");
}

/** A report's outcome as the answer, when it is one without storing anything; undefined for a new report. */
function answered(outcome: ReportOutcome, target: Report["target"]): { id: number; created: boolean } | undefined {
  switch (outcome.status) {
    case "created":
      return { id: outcome.id, created: true };
    case "existing":
      return { id: outcome.id, created: false };
    case "new":
      return undefined;
    case "not_found":
      throw notFound(target.type);
    case "erased":
      throw userSuspendedError();
    case "own":
      throw new ChatError(
        ErrorCode.validationFailed,
        400,
        target.type === "user" ? "you cannot report yourself" : "you cannot report your own message",
      );
  }
}

/** Blocks and reports (CONTRACT §10). */
export function createSafetyService({
  db,
  reads = db,
  publish,
  limits = createRateLimiter(),
  onBlockChanged,
}: SafetyServiceDeps) {
  /** Tells the blocker's devices; a block or unblock that changed nothing is answered the same, silently. */
  function settle(change: BlockChange): boolean {
    if (change.status === "too_many") {
      throw new ChatError(
        ErrorCode.conflict,
        409,
        `you block ${MAX_BLOCKS_PER_USER} users already: unblock someone before blocking another`,
      );
    }
    if (change.status === "erased") throw userSuspendedError();
    if (change.status !== "changed") return false;
    publish(change.events);
    return true;
  }

  /**
   * A block or an unblock, counted in the "block" bucket (30 an hour); one that changed nothing (or failed)
   * is given back, so pressing "block" twice never uses the allowance up. True when it changed something.
   */
  async function counted(userId: number, change: () => Promise<BlockChange>): Promise<boolean> {
    await storing(() => limits.consume("block", userId));
    return settle(
      await keptIfStored(
        limits,
        "block",
        userId,
        () => storing(change),
        (c) => c.status === "changed",
      ),
    );
  }

  return {
    /** Idempotent: blocking a user one blocks already changes nothing. */
    async block(blockerId: number, blockedId: number): Promise<void> {
      if (blockerId === blockedId) throw notYourself("block");
      if (await counted(blockerId, () => blockUser(db, blockerId, blockedId)))
        onBlockChanged?.(blockerId, blockedId, true);
    },

    /** Idempotent: unblocking a user one does not block changes nothing. */
    async unblock(blockerId: number, blockedId: number): Promise<void> {
      if (blockerId === blockedId) throw notYourself("unblock");
      if (await counted(blockerId, () => unblockUser(db, blockerId, blockedId)))
        onBlockChanged?.(blockerId, blockedId, false);
    },

    /** `GET /api/v1/blocks`: whom `userId` blocks, the most recently blocked first. */
    async blocks(userId: number) {
      return { blocks: await storing(() => blocksOf(reads, userId)) };
    },

    /**
     * Files a report; `created` false for a target this reporter reported before (the same id). Only a new
     * report counts against REPORT_LIMIT_PER_HOUR: a repeat, a 404 or a 400 is answered past the limit too.
     */
    async report(reporterId: number, body: ReportBody): Promise<{ id: number; created: boolean }> {
      const target = targetOf(body);
      const report: Report = { reporterId, reason: body.reason, note: body.note || null, target };
      const before = answered(await storing(() => fileReport(db, report, false)), target);
      if (before) return before;
      await storing(() => limits.consume("report", reporterId));
      // A concurrent request that filed it first is the one that counts.
      const filed = await keptIfStored(
        limits,
        "report",
        reporterId,
        () => storing(() => fileReport(db, report, true)),
        (outcome) => outcome.status === "created",
      );
      const answer = answered(filed, target);
      if (!answer) throw new Error("lc_report answered `new` to a report it was asked to store");
      return answer;
    },
  };
}
