/**
 * A user id as tokens and the internal hop carry it: a positive integer, given as a number or a string
 * of digits (JWT `sub`, `X-User-Id`). Undefined for anything else.
 */
export function parseUserId(value: unknown): number | undefined {
  if (typeof value === "number") return Number.isSafeInteger(value) && value > 0 ? value : undefined;
  if (typeof value !== "string" || !/^[1-9]\d{0,15}$/.test(value)) return undefined;
  const id = Number(value);
  return Number.isSafeInteger(id) ? id : undefined;
}
