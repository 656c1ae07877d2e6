/**
 * A small structured logger: one JSON line per entry on stderr. Callers pass ids and
 * counts, never API keys, tokens or personalization values. Lines logged while a request is
 * being answered carry its `requestId`: the edges give each request's services a logger that
 * adds it ({@link withFields}, context.ts forRequest).
 */

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
    Object.assign(entry, fields);
    if (fields?.err instanceof Error) entry.err = { message: fields.err.message, stack: fields.err.stack };
    console.error(JSON.stringify(entry));
  };
  return { debug: write("debug"), info: write("info"), warn: write("warn"), error: write("error") };
}

/** `log` with `fields` (e.g. `{ requestId }`) added to every line, before the line's own. */
export function withFields(log: Logger, fields: Record<string, unknown>): Logger {
  const add = (f?: Record<string, unknown>) => (f ? { ...fields, ...f } : fields);
  return {
    debug: (msg, f) => log.debug(msg, add(f)),
    info: (msg, f) => log.info(msg, add(f)),
    warn: (msg, f) => log.warn(msg, add(f)),
    error: (msg, f) => log.error(msg, add(f)),
  };
}
