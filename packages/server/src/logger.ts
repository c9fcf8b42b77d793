import { pino, type Logger } from 'pino';
import type { LogLevel } from './config.js';

export type { Logger };

/** The server's logger: JSON lines on stdout. Tokens and message bodies are never logged. */
export function createLogger(level: LogLevel): Logger {
  return pino({ level, base: { service: 'switchboard' } });
}
