/**
 * What our two SMTP listeners (inbound reports: inbound/smtp.ts; submission:
 * submission/smtp.ts) share about running an smtp-server: listening, replying, and taking a
 * message's bytes in one array.
 */
import type { SMTPServer } from "smtp-server";
import type { Logger } from "../log.ts";

/** An SMTP reply as smtp-server takes it in a callback's error: `code` and its text. */
export function reply(code: number, message: string): Error {
  return Object.assign(new Error(message), { responseCode: code });
}

/**
 * Listens on `host`:`port` (0 picks a free port) and resolves to the real port. Connection
 * errors are logged as `<what> connection error` (without a listener they would end the process).
 */
export async function listen(server: SMTPServer, host: string, port: number, log: Logger, what: string) {
  server.on("error", (err: Error) => log.warn(`${what} connection error`, { err: err.message }));
  await new Promise<void>((resolve, reject) => {
    server.server.once("error", reject);
    server.listen(port, host, () => {
      server.server.off("error", reject);
      resolve();
    });
  });
  return (server.server.address() as { port: number }).port;
}

/**
 * Stops listening; resolves once open sessions ended (or smtp-server's closeTimeout dropped
 * them) and the messages being handled (`inFlight`) are done.
 */
export async function closeServer(server: SMTPServer, inFlight: Set<Promise<unknown>>): Promise<void> {
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await Promise.allSettled([...inFlight]);
}

/** `chunks` (holding `bytes` bytes in all) as one array. */
export function joinChunks(chunks: Uint8Array[], bytes: number): Uint8Array {
  const raw = new Uint8Array(bytes);
  let i = 0;
  for (const c of chunks) {
    raw.set(c, i);
    i += c.length;
  }
  return raw;
}
