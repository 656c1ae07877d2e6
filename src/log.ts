/**
 * A small structured logger: one JSON line per entry on stderr. Callers pass ids and
 * counts, never API keys, tokens or personalization values. Lines logged while a request is
 * being answered carry its `requestId` (see {@link withRequestId}).
 */
import { AsyncLocalStorage } from "node:async_hooks";

const LEVELS = { debug: 10, info: 20, warn: 30, error: 40 } as const;

/** Log level names, lowest first. */
export type LogLevel = keyof typeof LEVELS;

/** Writes entries at or above its level. */
export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

/** A logger writing JSON lines to stderr, dropping entries under `level`. */
export function createLogger(level: LogLevel, scope = "pp"): Logger {
  const min = LEVELS[level];
  const write = (lvl: LogLevel) => (msg: string, fields?: Record<string, unknown>) => {
    if (LEVELS[lvl] < min) return;
    const entry: Record<string, unknown> = { t: new Date().toISOString(), level: lvl, scope, msg };
    const request = requests.getStore();
    if (request?.open) entry.requestId = request.id;
    Object.assign(entry, fields);
    if (fields?.err instanceof Error) entry.err = { message: fields.err.message, stack: fields.err.stack };
    console.error(JSON.stringify(entry));
  };
  return { debug: write("debug"), info: write("info"), warn: write("warn"), error: write("error") };
}

/** The request being answered, for the lines logged meanwhile. */
const requests = new AsyncLocalStorage<{ id: string; open: boolean }>();

/**
 * Runs `answer` as the answering of request `id`: every line logged meanwhile, by any code
 * it calls or awaits (services, repos, error mapping), carries `requestId: id`, without that
 * code taking a logger or an id. Once `answer` settles, lines from what it left running
 * (a timer or a hub it happened to start first, a stream's later events) no longer do.
 */
export async function withRequestId<T>(id: string, answer: () => Promise<T>): Promise<T> {
  const request = { id, open: true };
  try {
    return await requests.run(request, answer);
  } finally {
    request.open = false;
  }
}
