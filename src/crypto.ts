/**
 * Secrets at rest: AES-256-GCM with a key derived from PP_SECRET (HKDF-SHA256), so a
 * database dump alone does not reveal DKIM private keys. Format: `v1.<iv>.<tag>.<data>`
 * (base64url). Changing PP_SECRET makes stored secrets unreadable: keep it.
 */
import { Buffer } from "node:buffer";
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from "node:crypto";

const keys = new Map<string, Buffer>();

function keyFor(secret: string): Buffer {
  let k = keys.get(secret);
  if (!k) {
    k = Buffer.from(hkdfSync("sha256", secret, "pigeon-perch", "secrets-at-rest-v1", 32));
    keys.set(secret, k);
  }
  return k;
}

/** Encrypts `plain` with a key derived from `secret`. */
export function encryptSecret(secret: string, plain: string): string {
  const iv = randomBytes(12);
  const c = createCipheriv("aes-256-gcm", keyFor(secret), iv);
  const data = Buffer.concat([c.update(plain, "utf8"), c.final()]);
  return ["v1", iv, c.getAuthTag(), data].map((p) => typeof p === "string" ? p : p.toString("base64url")).join(".");
}

/** Decrypts what encryptSecret made; throws if it was altered or the secret differs. */
export function decryptSecret(secret: string, sealed: string): string {
  const [v, iv, tag, data] = sealed.split(".");
  if (v !== "v1" || !iv || !tag || data === undefined) throw new Error("not a sealed secret");
  const d = createDecipheriv("aes-256-gcm", keyFor(secret), Buffer.from(iv, "base64url"));
  d.setAuthTag(Buffer.from(tag, "base64url"));
  return Buffer.concat([d.update(Buffer.from(data, "base64url")), d.final()]).toString("utf8");
}
