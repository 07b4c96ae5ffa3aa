/** A token's `sub` as a user id: a positive integer, given as a number or a string of digits. */
export function userIdFromSubject(sub: unknown): number | undefined {
  if (typeof sub === "number") return Number.isSafeInteger(sub) && sub > 0 ? sub : undefined;
  if (typeof sub !== "string" || !/^[1-9]\d{0,15}$/.test(sub)) return undefined;
  const id = Number(sub);
  return Number.isSafeInteger(id) ? id : undefined;
}
