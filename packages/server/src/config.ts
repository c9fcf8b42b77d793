import { readFileSync } from 'node:fs';

/**
 * Configuration: defaults < config file (JSON) < environment (SWITCHBOARD_*) < flags. Every value
 * is validated at start; a bad one raises ConfigError naming its key and where it came from.
 */

type Kind = 'int' | 'string' | 'url' | 'list' | 'level' | 'namespaces';

interface Setting {
  readonly kind: Kind;
  readonly doc: string;
  readonly min?: number;
  readonly max?: number;
}

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LEVELS)[number];

/** Settings of the channels in one namespace (the part of a channel name before its first ':'). */
export interface NamespaceConfig {
  readonly historySize?: number;
  readonly historyTtlMs?: number;
}

export interface Config {
  readonly port: number;
  readonly host: string;
  readonly redis: string | undefined;
  readonly redisPrefix: string;
  readonly redisBridge: readonly string[];
  readonly logLevel: LogLevel;
  readonly maxMessageBytes: number;
  readonly maxOutboundBytes: number;
  readonly maxSubscriptionsPerConnection: number;
  readonly maxRequestBodyBytes: number;
  readonly pingIntervalMs: number;
  readonly historySize: number;
  readonly historyTtlMs: number;
  readonly dedupeMs: number;
  readonly recoveryMaxMessages: number;
  readonly namespaces: Readonly<Record<string, NamespaceConfig>>;
  readonly shutdownTimeoutMs: number;
}

export const defaults: Config = {
  port: 8080,
  host: '0.0.0.0',
  redis: undefined,
  redisPrefix: 'switchboard:',
  redisBridge: [],
  logLevel: 'info',
  maxMessageBytes: 64 * 1024,
  maxOutboundBytes: 1024 * 1024,
  maxSubscriptionsPerConnection: 128,
  maxRequestBodyBytes: 1024 * 1024,
  pingIntervalMs: 25_000,
  historySize: 1000,
  historyTtlMs: 10 * 60_000,
  dedupeMs: 2 * 60_000,
  recoveryMaxMessages: 10_000,
  namespaces: {},
  shutdownTimeoutMs: 10_000,
};

/** Every setting, its type and what it does: the source of the README's configuration reference. */
export const settings: Readonly<Record<keyof Config, Setting>> = {
  port: { kind: 'int', min: 0, max: 65535, doc: 'HTTP and WebSocket port (0 picks a free one)' },
  host: { kind: 'string', doc: 'address to listen on' },
  redis: {
    kind: 'url',
    doc: 'Redis URL (redis://host:port); unset runs the embedded in-memory engine',
  },
  redisPrefix: { kind: 'string', doc: 'prefix of every Redis key and pub/sub channel' },
  redisBridge: {
    kind: 'list',
    doc: 'comma-separated glob patterns of plain Redis channels whose raw PUBLISHes reach the same-named channel',
  },
  logLevel: { kind: 'level', doc: `log level: ${LEVELS.join(', ')}` },
  maxMessageBytes: {
    kind: 'int',
    min: 128,
    max: 16 * 1024 * 1024,
    doc: 'largest client frame; larger closes the connection with 1009',
  },
  maxOutboundBytes: {
    kind: 'int',
    min: 1024,
    max: 1024 * 1024 * 1024,
    doc: 'bytes queued to one client before it is closed with 3008 (too slow)',
  },
  maxSubscriptionsPerConnection: {
    kind: 'int',
    min: 1,
    max: 1_000_000,
    doc: 'channels one connection may subscribe to',
  },
  maxRequestBodyBytes: {
    kind: 'int',
    min: 1024,
    max: 64 * 1024 * 1024,
    doc: 'largest REST request body (413 above)',
  },
  pingIntervalMs: {
    kind: 'int',
    min: 100,
    max: 3_600_000,
    doc: 'WebSocket ping interval; a peer silent for two intervals is dropped',
  },
  historySize: {
    kind: 'int',
    min: 0,
    max: 1_000_000,
    doc: 'messages kept per channel for history and resume',
  },
  historyTtlMs: {
    kind: 'int',
    min: 1000,
    max: 30 * 24 * 3_600_000,
    doc: "how long history lives after a channel's last publish",
  },
  dedupeMs: {
    kind: 'int',
    min: 0,
    max: 24 * 3_600_000,
    doc: 'window in which a repeated publisher-supplied message id is stored once',
  },
  recoveryMaxMessages: {
    kind: 'int',
    min: 0,
    max: 1_000_000,
    doc: 'most messages a resuming subscriber may be replayed; a larger gap answers recovered: false',
  },
  namespaces: {
    kind: 'namespaces',
    doc: 'JSON object: namespace → {historySize?, historyTtlMs?}, overriding the history settings for channels "<namespace>:..."',
  },
  shutdownTimeoutMs: {
    kind: 'int',
    min: 0,
    max: 600_000,
    doc: 'how long a graceful shutdown waits for clients to close',
  },
};

export class ConfigError extends Error {
  readonly key: string;
  constructor(key: string, message: string) {
    super(message);
    this.name = 'ConfigError';
    this.key = key;
  }
}

export type RawValues = Partial<Record<keyof Config, unknown>>;

const KEYS = Object.keys(settings) as (keyof Config)[];

function isKey(key: string): key is keyof Config {
  return Object.hasOwn(settings, key);
}

export function envName(key: keyof Config): string {
  return 'SWITCHBOARD_' + key.replace(/[A-Z]/g, (c) => '_' + c).toUpperCase();
}

export function flagName(key: keyof Config): string {
  return key.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase());
}

function parseValue(key: keyof Config, value: unknown, source: string): unknown {
  const s = settings[key];
  const bad = (why: string): never => {
    throw new ConfigError(key, `invalid ${source} for ${key}: ${why}`);
  };
  switch (s.kind) {
    case 'int': {
      const n = typeof value === 'string' && /^-?\d+$/.test(value.trim()) ? Number(value) : value;
      if (typeof n !== 'number' || !Number.isSafeInteger(n))
        return bad(`expected an integer, got ${JSON.stringify(value)}`);
      if ((s.min !== undefined && n < s.min) || (s.max !== undefined && n > s.max)) {
        return bad(`${n} is outside ${s.min ?? '-∞'}..${s.max ?? '∞'}`);
      }
      return n;
    }
    case 'string':
      if (typeof value !== 'string') return bad('expected a string');
      return value;
    case 'url': {
      if (value === undefined || value === '') return undefined;
      if (typeof value !== 'string') return bad('expected a URL string');
      let url: URL;
      try {
        url = new URL(value);
      } catch {
        return bad(`${JSON.stringify(value)} is not a URL`);
      }
      if (url.protocol !== 'redis:' && url.protocol !== 'rediss:')
        return bad('expected a redis:// or rediss:// URL');
      return value;
    }
    case 'list': {
      const list = typeof value === 'string' ? value.split(',') : value;
      if (!Array.isArray(list) || !list.every((p) => typeof p === 'string'))
        return bad('expected a list of strings');
      return list.map((p) => p.trim()).filter((p) => p !== '');
    }
    case 'namespaces': {
      let obj: unknown = value;
      if (typeof value === 'string') {
        try {
          obj = JSON.parse(value) as unknown;
        } catch {
          return bad('expected a JSON object');
        }
      }
      if (typeof obj !== 'object' || obj === null || Array.isArray(obj))
        return bad('expected an object of namespaces');
      const out: Record<string, NamespaceConfig> = {};
      for (const [ns, raw] of Object.entries(obj as Record<string, unknown>)) {
        if (!/^[A-Za-z0-9_.@/=,~-]{1,64}$/.test(ns))
          return bad(`namespace ${JSON.stringify(ns)} is not a valid namespace name`);
        if (typeof raw !== 'object' || raw === null)
          return bad(`namespace ${ns} must be an object`);
        const nsOut: { historySize?: number; historyTtlMs?: number } = {};
        for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
          if (k !== 'historySize' && k !== 'historyTtlMs')
            return bad(`namespace ${ns}: unknown setting ${k}`);
          nsOut[k] = parseValue(k, v, `${source} (namespace ${ns})`) as number;
        }
        out[ns] = nsOut;
      }
      return out;
    }
    case 'level':
      if (typeof value !== 'string' || !(LEVELS as readonly string[]).includes(value))
        return bad(`expected one of ${LEVELS.join(', ')}`);
      return value;
  }
}

/** Reads a JSON config file whose keys are Config keys. */
export function readConfigFile(path: string): RawValues {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new ConfigError('config', `cannot read config file ${path}: ${(err as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new ConfigError('config', `config file ${path} must hold a JSON object`);
  }
  for (const key of Object.keys(parsed)) {
    if (!isKey(key)) throw new ConfigError(key, `unknown key ${key} in config file ${path}`);
  }
  return parsed;
}

/** The SWITCHBOARD_* variables of `env` that name settings. */
export function readEnv(env: NodeJS.ProcessEnv): RawValues {
  const out: RawValues = {};
  for (const key of KEYS) {
    const value = env[envName(key)];
    if (value !== undefined) out[key] = value;
  }
  return out;
}

/** Merges the layers (later wins) and validates every value. */
export function resolveConfig(layers: readonly { source: string; values: RawValues }[]): Config {
  const out: Record<string, unknown> = { ...defaults };
  for (const { source, values } of layers) {
    for (const [key, value] of Object.entries(values)) {
      if (value === undefined) continue;
      if (!isKey(key)) throw new ConfigError(key, `unknown setting ${key} in ${source}`);
      out[key] = parseValue(key, value, source === 'environment' ? `${envName(key)}` : source);
    }
  }
  return out as unknown as Config;
}
