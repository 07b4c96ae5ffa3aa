import { createPublicKey, type KeyObject } from "node:crypto";

/** The key and the one algorithm it may verify: RS256 for an RSA key, ES256 for a P-256 key; undefined otherwise. */
export function parsePublicKey(pem: string): { keyObject: KeyObject; algorithm: "RS256" | "ES256" } | undefined {
  let keyObject: KeyObject;
  try {
    keyObject = createPublicKey(pem);
  } catch {
    return undefined;
  }
  if (keyObject.asymmetricKeyType === "rsa") return { keyObject, algorithm: "RS256" };
  if (keyObject.asymmetricKeyType === "ec" && keyObject.asymmetricKeyDetails?.namedCurve === "prime256v1") {
    return { keyObject, algorithm: "ES256" };
  }
  return undefined;
}
