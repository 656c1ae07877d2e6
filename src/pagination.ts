/**
 * Opaque keyset cursors over (created_at, id), newest first. A cursor is base64url JSON;
 * a tampered one is a 422, never a 500.
 */
import { invalid } from "./errors.ts";
import { isUuid } from "./validation.ts";

/** A position in a newest-first list. */
export interface Cursor {
  createdAt: Date;
  id: string;
}

/** Encodes the position of a row. */
export function encodeCursor(row: { created_at: Date; id: string }): string {
  // created_at columns hold milliseconds (see the migrations), so a Date is exact here.
  const raw = JSON.stringify([row.created_at.toISOString(), row.id]);
  return btoa(raw).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

/** Decodes a cursor from a client; throws 422 on anything else. */
export function decodeCursor(cursor: string, path = "cursor"): Cursor {
  try {
    const raw = atob(cursor.replaceAll("-", "+").replaceAll("_", "/"));
    const [at, id] = JSON.parse(raw);
    const createdAt = new Date(at);
    if (typeof id !== "string" || !isUuid(id) || Number.isNaN(createdAt.getTime())) throw new Error();
    return { createdAt, id };
  } catch {
    throw invalid(path, "is not a cursor from this API");
  }
}
