/**
 * A small structured logger: one JSON line per entry on stderr. Callers pass ids and
 * counts, never API keys, tokens or personalization values.
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
    const entry: Record<string, unknown> = { t: new Date().toISOString(), level: lvl, scope, msg, ...fields };
    if (fields?.err instanceof Error) entry.err = { message: fields.err.message, stack: fields.err.stack };
    console.error(JSON.stringify(entry));
  };
  return { debug: write("debug"), info: write("info"), warn: write("warn"), error: write("error") };
}
