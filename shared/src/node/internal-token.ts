import { createHash, timingSafeEqual } from "node:crypto";

/**
 * A constant-time check of the internal token. Both sides are hashed first so that the comparison
 * takes the same time whatever the length of what the caller sent.
 */
export function createInternalTokenCheck(expected: string) {
  const expectedDigest = createHash("sha256").update(expected).digest();
  return (presented: string | undefined | null): boolean => {
    if (!presented) return false;
    return timingSafeEqual(createHash("sha256").update(presented).digest(), expectedDigest);
  };
}

/** The token from `X-Internal-Token`, or from `Authorization: Bearer` (for ops tools). */
export function presentedInternalToken(headers: {
  "x-internal-token"?: string | string[] | undefined;
  authorization?: string | undefined;
}): string | undefined {
  const direct = headers["x-internal-token"];
  if (typeof direct === "string") return direct;
  const auth = headers.authorization;
  return auth?.startsWith("Bearer ") ? auth.slice("Bearer ".length) : undefined;
}
