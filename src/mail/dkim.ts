/**
 * DKIM keys: generation (RSA 2048), the DNS TXT value, and the signing options handed to
 * nodemailer (relaxed/relaxed canonicalization, its default). The signed headers include
 * List-Unsubscribe and List-Unsubscribe-Post, which mailbox providers require signed for
 * one-click unsubscribe.
 */
import { generateKeyPair } from "node:crypto";

/** A fresh key pair: PEM private key and the base64 DER public key for the `p=` tag. */
export function generateDkimKeys(): Promise<{ privateKeyPem: string; publicKeyB64: string }> {
  return new Promise((resolve, reject) =>
    generateKeyPair("rsa", {
      modulusLength: 2048,
      publicKeyEncoding: { type: "spki", format: "der" },
      privateKeyEncoding: { type: "pkcs8", format: "pem" },
    }, (err, pub, priv) => err ? reject(err) : resolve({ privateKeyPem: priv, publicKeyB64: pub.toString("base64") }))
  );
}

/** The TXT value to publish at `<selector>._domainkey.<domain>`. */
export function dkimTxtValue(publicKeyB64: string): string {
  return `v=DKIM1; k=rsa; p=${publicKeyB64}`;
}

/** Headers we sign, in this order (RFC 6376 §5.4 recommendations, plus RFC 8058's two). */
export const SIGNED_HEADERS = [
  "from",
  "sender",
  "reply-to",
  "subject",
  "date",
  "message-id",
  "to",
  "cc",
  "mime-version",
  "content-type",
  "content-transfer-encoding",
  "list-unsubscribe",
  "list-unsubscribe-post",
].join(":");

/** nodemailer's per-message `dkim` option for a domain's key. */
export interface DkimOptions {
  domainName: string;
  keySelector: string;
  privateKey: string;
  headerFieldNames: string;
}

/** Signing options for `domain` with its selector and decrypted private key. */
export function dkimOptions(domain: string, selector: string, privateKeyPem: string): DkimOptions {
  return { domainName: domain, keySelector: selector, privateKey: privateKeyPem, headerFieldNames: SIGNED_HEADERS };
}
