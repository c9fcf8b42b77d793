import { readFileSync } from 'node:fs';
import { apiKeysError, type ApiKeyConfig } from './auth/api-keys.js';
import { PERMISSIONS, type Permission } from './auth/auth.js';
import { webhooksError, type WebhookConfig } from './webhooks/endpoints.js';

/**
 * Configuration: defaults < config file (JSON) < environment (SWITCHBOARD_*) < flags. Every value
 * is validated at start; a bad one raises ConfigError naming its key and where it came from.
 */

import { parseHostPort } from './broker/redis-target.js';
import { parseProxyEntry } from './client-address.js';

type Kind =
  | 'int'
  | 'bool'
  | 'optionalBool'
  | 'string'
  | 'optionalString'
  | 'url'
  | 'httpUrl'
  | 'list'
  | 'hostList'
  | 'addressList'
  | 'level'
  | 'engine'
  | 'namespaces'
  | 'apiKeys'
  | 'webhooks';

interface Setting {
  readonly kind: Kind;
  readonly doc: string;
  readonly min?: number;
  readonly max?: number;
}

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LEVELS)[number];

const ENGINES = ['uws', 'ws'] as const;
export type EngineName = (typeof ENGINES)[number];

/** Settings of the channels in one namespace (the part of a channel name before its first ':'). */
export interface NamespaceConfig {
  readonly historySize?: number;
  readonly historyTtlMs?: number;
  /** What connections without credentials may do here (only matters when auth is configured). */
  readonly anonymous?: readonly Permission[];
  /**
   * Whether clients (tokens and anonymous connections) may publish here; false leaves publishing
   * to backends (API keys), whatever `anonymous` or a token grants.
   */
  readonly clientPublish?: boolean;
  /** Whether the channels here keep presence (members that enter, with data); off by default. */
  readonly presence?: boolean;
  /** Whether subscribing enters the subscriber too (presence before #12); off by default. */
  readonly autoEnter?: boolean;
}

export interface Config {
  readonly port: number;
  readonly host: string;
  readonly engine: EngineName;
  readonly redis: string | undefined;
  readonly redisPrefix: string;
  readonly redisBridge: readonly string[];
  readonly redisCommandTimeoutMs: number;
  readonly redisCluster: readonly string[];
  readonly redisSentinels: readonly string[];
  readonly redisSentinelName: string | undefined;
  readonly redisWaitReplicas: number;
  readonly redisWaitTimeoutMs: number;
  readonly redisPublishBatch: number;
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
  readonly presenceTtlMs: number;
  readonly presenceGraceMs: number;
  readonly presenceMaxMembers: number;
  readonly presenceMaxDataBytes: number;
  readonly presenceMaxEntersPerConnection: number;
  readonly namespaces: Readonly<Record<string, NamespaceConfig>>;
  readonly shutdownTimeoutMs: number;
  readonly drainWindowMs: number;
  readonly shedMemoryBytes: number;
  readonly shedEventLoopLagMs: number;
  readonly shedRetryAfterMs: number;
  readonly readinessGraceMs: number;
  readonly jwtSecret: string | undefined;
  readonly jwtPublicKey: string | undefined;
  readonly jwtKeyFile: string | undefined;
  readonly jwtJwksUrl: string | undefined;
  readonly jwtAlgorithms: readonly string[];
  readonly jwtIssuer: string | undefined;
  readonly jwtAudience: string | undefined;
  readonly jwtLeewayMs: number;
  readonly jwtRequireExp: boolean;
  readonly apiKeys: readonly ApiKeyConfig[];
  readonly authTimeoutMs: number;
  readonly tokenRefreshLeadMs: number;
  readonly maxTokenLifetimeMs: number;
  readonly allowedOrigins: readonly string[];
  readonly maxCommandsPerSecond: number;
  readonly commandBurst: number;
  readonly maxConnections: number;
  readonly maxConnectionsPerUser: number;
  readonly maxConnectionsPerIpPerSecond: number;
  readonly perMessageDeflate: boolean;
  readonly httpHeadersTimeoutMs: number;
  readonly ably: boolean;
  readonly nodeId: string | undefined;
  readonly demoUrl: string | undefined;
  readonly metrics: boolean;
  readonly webhooks: readonly WebhookConfig[];
  readonly webhookSecret: string | undefined;
  readonly webhookRetryForMs: number;
  readonly webhookRetryBaseMs: number;
  readonly webhookRetryMaxDelayMs: number;
  readonly webhookTimeoutMs: number;
  readonly webhookConcurrency: number;
  readonly webhookMaxPending: number;
  readonly webhookDebounceMs: number;
  readonly webhookLogSize: number;
  /** The admin API at /v1/admin; unset: on only in embedded mode without auth. */
  readonly admin: boolean | undefined;
  readonly adminPassword: string | undefined;
  readonly adminPasswordHash: string | undefined;
  /** Proxies (addresses, CIDR ranges) whose X-Forwarded-For names the client (admin lockout). */
  readonly trustProxy: readonly string[];
}

export const defaults: Config = {
  port: 8080,
  host: '0.0.0.0',
  engine: 'uws',
  redis: undefined,
  redisPrefix: 'switchboard:',
  redisBridge: [],
  redisCommandTimeoutMs: 5000,
  redisCluster: [],
  redisSentinels: [],
  redisSentinelName: undefined,
  redisWaitReplicas: -1,
  redisWaitTimeoutMs: 1000,
  redisPublishBatch: 128,
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
  presenceTtlMs: 60_000,
  presenceGraceMs: 15_000,
  presenceMaxMembers: 20_000,
  presenceMaxDataBytes: 1024,
  presenceMaxEntersPerConnection: 100,
  namespaces: {},
  shutdownTimeoutMs: 15_000,
  drainWindowMs: 10_000,
  shedMemoryBytes: 0,
  shedEventLoopLagMs: 0,
  shedRetryAfterMs: 5000,
  readinessGraceMs: 5000,
  jwtSecret: undefined,
  jwtPublicKey: undefined,
  jwtKeyFile: undefined,
  jwtJwksUrl: undefined,
  jwtAlgorithms: [],
  jwtIssuer: undefined,
  jwtAudience: undefined,
  jwtLeewayMs: 30_000,
  jwtRequireExp: true,
  apiKeys: [],
  authTimeoutMs: 10_000,
  tokenRefreshLeadMs: 30_000,
  maxTokenLifetimeMs: 24 * 3_600_000,
  allowedOrigins: [],
  maxCommandsPerSecond: 500,
  commandBurst: 1000,
  maxConnections: 100_000,
  maxConnectionsPerUser: 100,
  maxConnectionsPerIpPerSecond: 500,
  perMessageDeflate: false,
  httpHeadersTimeoutMs: 10_000,
  ably: true,
  nodeId: undefined,
  demoUrl: undefined,
  metrics: true,
  webhooks: [],
  webhookSecret: undefined,
  webhookRetryForMs: 24 * 3_600_000,
  webhookRetryBaseMs: 1000,
  webhookRetryMaxDelayMs: 10 * 60_000,
  webhookTimeoutMs: 10_000,
  webhookConcurrency: 4,
  webhookMaxPending: 100_000,
  webhookDebounceMs: 5000,
  webhookLogSize: 1000,
  admin: undefined,
  adminPassword: undefined,
  adminPasswordHash: undefined,
  trustProxy: [],
};

/** Every setting, its type and what it does: the source of the README's configuration reference. */
export const settings: Readonly<Record<keyof Config, Setting>> = {
  port: { kind: 'int', min: 0, max: 65535, doc: 'HTTP and WebSocket port (0 picks a free one)' },
  host: { kind: 'string', doc: 'address to listen on' },
  engine: {
    kind: 'engine',
    doc: 'network engine: uws (uWebSockets.js, falls back to ws with a log line when its native module does not load) or ws (node:http + ws)',
  },
  redis: {
    kind: 'url',
    doc: 'Redis URL (redis://host:port); unset runs the embedded in-memory engine',
  },
  redisPrefix: { kind: 'string', doc: 'prefix of every Redis key and pub/sub channel' },
  redisBridge: {
    kind: 'list',
    doc: 'comma-separated glob patterns of plain Redis channels whose raw PUBLISHes reach the same-named channel',
  },
  redisCommandTimeoutMs: {
    kind: 'int',
    min: 50,
    max: 600_000,
    doc: 'how long a Redis command may take; a publish without an answer by then gets 118 (outcome unknown: retry with the same id)',
  },
  redisCluster: {
    kind: 'hostList',
    doc: 'comma-separated host:port of some Redis Cluster nodes: cluster mode (sharded pub/sub, one subscriber connection per shard master; docs/redis.md)',
  },
  redisSentinels: {
    kind: 'hostList',
    doc: 'comma-separated host:port of Redis Sentinels: follow the master they name (needs redisSentinelName; redis then gives only credentials and database)',
  },
  redisSentinelName: { kind: 'optionalString', doc: 'the master name the Sentinels monitor' },
  redisWaitReplicas: {
    kind: 'int',
    min: -1,
    max: 16,
    doc: 'replicas a publish must reach (WAIT) before it is acknowledged and delivered; fewer in time answers 118 (it is still delivered once they confirm; retry with the same id). -1: 1 with Sentinel or Cluster, 0 otherwise',
  },
  redisWaitTimeoutMs: {
    kind: 'int',
    min: 1,
    max: 60_000,
    doc: 'how long a publish waits for redisWaitReplicas replicas',
  },
  redisPublishBatch: {
    kind: 'int',
    min: 1,
    max: 4096,
    doc: 'most publishes one Redis script call carries: the publishes of one event-loop turn to one master run as one call (docs/redis.md); 1 turns batching off',
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
    doc: 'bytes queued to one client before it is closed with 3008 (too slow); a history page holds at most half of it',
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
  presenceTtlMs: {
    kind: 'int',
    min: 1000,
    max: 3_600_000,
    doc: "how long a presence member outlives its node's last refresh (nodes refresh every third of it): the most a crashed node's members linger; its occupancy counts go within two thirds of it",
  },
  presenceGraceMs: {
    kind: 'int',
    min: 0,
    max: 600_000,
    doc: 'how long a presence member whose connection dropped waits for it to resume (same presenceKey, or an Ably resume) before it leaves; members without a presenceKey leave at once',
  },
  presenceMaxMembers: {
    kind: 'int',
    min: 1,
    max: 1_000_000,
    doc: 'most presence members in one channel; more enters are refused with 146',
  },
  presenceMaxDataBytes: {
    kind: 'int',
    min: 0,
    max: 65_536,
    doc: 'largest presence member data (bytes of its JSON); larger is refused with 145',
  },
  presenceMaxEntersPerConnection: {
    kind: 'int',
    min: 1,
    max: 10_000,
    doc: 'most channels one connection may have entered at once; more are refused with 147',
  },
  namespaces: {
    kind: 'namespaces',
    doc: 'JSON object: namespace → {historySize?, historyTtlMs?, anonymous?: [permissions], clientPublish?: bool, presence?: bool, autoEnter?: bool} for channels "<namespace>:..." ("" is channels without a namespace)',
  },
  shutdownTimeoutMs: {
    kind: 'int',
    min: 0,
    max: 600_000,
    doc: 'longest graceful shutdown, from SIGTERM to exit (clients still connected then are dropped); keep it above drainWindowMs, and terminationGracePeriodSeconds above it',
  },
  drainWindowMs: {
    kind: 'int',
    min: 0,
    max: 600_000,
    doc: 'on SIGTERM, clients are asked to reconnect elsewhere (close code 3012) spread evenly over this window (capped at shutdownTimeoutMs; 0 all at once)',
  },
  shedMemoryBytes: {
    kind: 'int',
    min: 0,
    max: 1024 * 1024 * 1024 * 1024,
    doc: 'resident memory above which new connections get 503 + Retry-After and /readyz 503 (0 off)',
  },
  shedEventLoopLagMs: {
    kind: 'int',
    min: 0,
    max: 600_000,
    doc: 'longest event-loop stall in the last 2-3 seconds (sampled every 10 ms) above which new connections get 503 + Retry-After and /readyz 503 (0 off)',
  },
  shedRetryAfterMs: {
    kind: 'int',
    min: 1000,
    max: 3_600_000,
    doc: 'Retry-After (rounded up to seconds) on a shed connection; the SDK waits at least this long, plus its jitter',
  },
  readinessGraceMs: {
    kind: 'int',
    min: 0,
    max: 600_000,
    doc: 'how long the broker may be unreachable or refuse writes before /readyz answers 503 (a short blip keeps every node in the balancer); ready again after 2 s without a fault',
  },
  jwtSecret: {
    kind: 'optionalString',
    doc: 'HMAC secret (at least 32 bytes) for HS256/384/512 tokens; turns auth on',
  },
  jwtPublicKey: {
    kind: 'optionalString',
    doc: 'public key for RS256/ES256/EdDSA tokens: PEM (SPKI), JWK or JWK Set JSON; turns auth on',
  },
  jwtKeyFile: { kind: 'optionalString', doc: 'file holding jwtPublicKey (PEM or JWK JSON)' },
  jwtJwksUrl: {
    kind: 'httpUrl',
    doc: 'JWKS URL (cached 10 min; refetched on an unknown kid, at most once per 30 s); turns auth on',
  },
  jwtAlgorithms: {
    kind: 'list',
    doc: "accepted token algorithms (default: HS256,HS384,HS512 with a secret; RS256,ES256,EdDSA with a JWKS; the key type's own with a key)",
  },
  jwtIssuer: { kind: 'optionalString', doc: 'required token iss' },
  jwtAudience: { kind: 'optionalString', doc: 'required token aud' },
  jwtLeewayMs: {
    kind: 'int',
    min: 0,
    max: 600_000,
    doc: 'clock leeway for exp, nbf and iat (a token issued further in the future is refused)',
  },
  jwtRequireExp: { kind: 'bool', doc: 'refuse tokens without exp' },
  apiKeys: {
    kind: 'apiKeys',
    doc: 'JSON list of backend keys {name, secret, capabilities, admin?} for the REST API; turns auth on',
  },
  authTimeoutMs: {
    kind: 'int',
    min: 100,
    max: 600_000,
    doc: 'time a connection has to authenticate when anonymous access is nowhere allowed',
  },
  tokenRefreshLeadMs: {
    kind: 'int',
    min: 100,
    max: 3_600_000,
    doc: 'how long before a token expires the client is asked to refresh it (at most half its remaining life)',
  },
  maxTokenLifetimeMs: {
    kind: 'int',
    min: 1000,
    max: 365 * 24 * 3_600_000,
    doc: 'longest token lifetime (exp - iat; iat required) and how long revocations are kept; longer tokens are refused, tokens without exp end this long after iat',
  },
  allowedOrigins: {
    kind: 'list',
    doc: 'exact browser origins allowed to connect and call the API ("*" any); empty: any without auth, none with auth (see docs/operations.md)',
  },
  maxCommandsPerSecond: {
    kind: 'int',
    min: 1,
    max: 1_000_000,
    doc: 'sustained commands per connection per second (token bucket)',
  },
  commandBurst: {
    kind: 'int',
    min: 1,
    max: 1_000_000,
    doc: 'token bucket size: commands a connection may send at once',
  },
  maxConnections: {
    kind: 'int',
    min: 1,
    max: 10_000_000,
    doc: 'connections this node accepts (503 + Retry-After above, and /readyz 503 while at it)',
  },
  maxConnectionsPerUser: {
    kind: 'int',
    min: 1,
    max: 1_000_000,
    doc: 'connections one user (token sub) may hold on this node (closed with 3009 above)',
  },
  maxConnectionsPerIpPerSecond: {
    kind: 'int',
    min: 1,
    max: 1_000_000,
    doc: 'new connections one address may open per second (429 above)',
  },
  metrics: {
    kind: 'bool',
    doc: 'serve /metrics and count per delivery (off: /metrics is 404 and the hot path counts nothing)',
  },
  perMessageDeflate: {
    kind: 'bool',
    doc: 'WebSocket compression (bounded: 1 KiB threshold, 10 concurrent, 64 KiB inflated)',
  },
  httpHeadersTimeoutMs: {
    kind: 'int',
    min: 1000,
    max: 600_000,
    doc: 'time a client has to send its request headers (against slowloris)',
  },
  ably: {
    kind: 'bool',
    doc: 'serve the Ably protocol dialect (WebSocket on /, REST without /v1; docs/ably.md)',
  },
  nodeId: {
    kind: 'optionalString',
    doc: 'name of this node in /v1/info and on the front page (default: host name and 6 random hex digits)',
  },
  demoUrl: {
    kind: 'httpUrl',
    doc: "where the front page's demo link points (npm run demo sets it)",
  },
  webhooks: {
    kind: 'webhooks',
    doc: 'JSON list of webhook endpoints {url, events: [channel.occupied, channel.vacated, presence.enter, presence.leave, presence.update, message.published], channels?: "glob" (* and ?; default *), secret?} (docs/operations.md, Webhooks)',
  },
  webhookSecret: {
    kind: 'optionalString',
    doc: 'HMAC-SHA256 signing secret (at least 16 characters) of the webhook endpoints without a secret of their own',
  },
  webhookRetryForMs: {
    kind: 'int',
    min: 0,
    max: 7 * 24 * 3_600_000,
    doc: 'how long after its event a failed webhook delivery is retried before it is dropped',
  },
  webhookRetryBaseMs: {
    kind: 'int',
    min: 10,
    max: 3_600_000,
    doc: 'webhook retry backoff: attempt n waits a random time up to min(webhookRetryMaxDelayMs, base * 2^(n-1)) (full jitter)',
  },
  webhookRetryMaxDelayMs: {
    kind: 'int',
    min: 10,
    max: 24 * 3_600_000,
    doc: 'longest wait between two attempts of a webhook delivery',
  },
  webhookTimeoutMs: {
    kind: 'int',
    min: 100,
    max: 600_000,
    doc: 'how long one webhook request may take (then it counts as failed and is retried)',
  },
  webhookConcurrency: {
    kind: 'int',
    min: 1,
    max: 1000,
    doc: 'webhook requests in flight per endpoint per node',
  },
  webhookMaxPending: {
    kind: 'int',
    min: 1,
    max: 10_000_000,
    doc: 'webhook deliveries one endpoint may have waiting; newer events are dropped (and counted) beyond it',
  },
  webhookDebounceMs: {
    kind: 'int',
    min: 0,
    max: 600_000,
    doc: 'channel.occupied/vacated wait this long and cancel each other: a flapping channel sends one pair or nothing',
  },
  webhookLogSize: {
    kind: 'int',
    min: 1,
    max: 100_000,
    doc: 'webhook delivery attempts each node keeps in its delivery log',
  },
  admin: {
    kind: 'optionalBool',
    doc: 'serve the admin API /v1/admin (docs/operations.md, Admin API); unset: on only in embedded mode without auth',
  },
  adminPassword: {
    kind: 'optionalString',
    doc: 'password of POST /v1/admin/login (at least 12 characters); prefer adminPasswordHash',
  },
  adminPasswordHash: {
    kind: 'optionalString',
    doc: 'scrypt hash of the admin password, scrypt$<salt hex>$<hash hex> (docs/operations.md, Admin API)',
  },
  trustProxy: {
    kind: 'addressList',
    doc: 'addresses or CIDR ranges of your reverse proxies: from them the client is the nearest X-Forwarded-For hop that is not a proxy (admin login lockout, its log); empty: the TCP peer',
  },
};

function parseBool(value: unknown, bad: (why: string) => never): boolean {
  if (value === true || value === 'true' || value === '1') return true;
  if (value === false || value === 'false' || value === '0') return false;
  return bad('expected true or false');
}

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
    case 'optionalString':
      if (value === undefined || value === '') return undefined;
      if (typeof value !== 'string') return bad('expected a string');
      return value;
    case 'optionalBool':
      if (value === undefined || value === '') return undefined;
      return parseBool(value, bad);
    case 'bool':
      return parseBool(value, bad);
    case 'httpUrl': {
      if (value === undefined || value === '') return undefined;
      let u: URL | undefined;
      try {
        u = typeof value === 'string' ? new URL(value) : undefined;
      } catch {
        u = undefined;
      }
      if (u === undefined || (u.protocol !== 'https:' && u.protocol !== 'http:'))
        return bad('expected an http(s) URL');
      return value;
    }
    case 'apiKeys': {
      let keys: unknown = value;
      if (typeof value === 'string') {
        try {
          keys = JSON.parse(value) as unknown;
        } catch {
          return bad('expected a JSON list');
        }
      }
      const why = apiKeysError(keys);
      if (why !== undefined) return bad(why);
      return keys;
    }
    case 'webhooks': {
      let list: unknown = value;
      if (typeof value === 'string') {
        try {
          list = JSON.parse(value) as unknown;
        } catch {
          return bad('expected a JSON list');
        }
      }
      const why = webhooksError(list);
      if (why !== undefined) return bad(why);
      return (list as WebhookConfig[]).map((w) => ({ ...w, channels: w.channels ?? '*' }));
    }
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
    case 'hostList': {
      const list = typeof value === 'string' ? value.split(',') : value;
      if (!Array.isArray(list) || !list.every((p) => typeof p === 'string'))
        return bad('expected a list of host:port');
      const out = list.map((p) => p.trim()).filter((p) => p !== '');
      const wrong = out.find((p) => parseHostPort(p) === undefined);
      if (wrong !== undefined) return bad(`${JSON.stringify(wrong)} is not host:port`);
      return out;
    }
    case 'addressList': {
      const list = typeof value === 'string' ? value.split(',') : value;
      if (!Array.isArray(list) || !list.every((p) => typeof p === 'string'))
        return bad('expected a list of addresses or CIDR ranges');
      const out = list.map((p) => p.trim()).filter((p) => p !== '');
      const wrong = out.find((p) => parseProxyEntry(p) === undefined);
      if (wrong !== undefined)
        return bad(`${JSON.stringify(wrong)} is not an address or CIDR range`);
      return out;
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
        if (!/^[A-Za-z0-9_.@/=,~-]{0,64}$/.test(ns))
          return bad(`namespace ${JSON.stringify(ns)} is not a valid namespace name`);
        if (typeof raw !== 'object' || raw === null)
          return bad(`namespace ${ns} must be an object`);
        const nsOut: { -readonly [K in keyof NamespaceConfig]: NamespaceConfig[K] } = {};
        for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
          if (k === 'historySize' || k === 'historyTtlMs') {
            nsOut[k] = parseValue(k, v, `${source} (namespace ${ns})`) as number;
          } else if (k === 'anonymous') {
            if (
              !Array.isArray(v) ||
              !v.every((p): p is Permission => (PERMISSIONS as readonly unknown[]).includes(p))
            )
              return bad(`namespace ${ns}: anonymous must be a list of ${PERMISSIONS.join(', ')}`);
            nsOut.anonymous = v;
          } else if (k === 'clientPublish' || k === 'presence' || k === 'autoEnter') {
            if (typeof v !== 'boolean') return bad(`namespace ${ns}: ${k} must be true or false`);
            nsOut[k] = v;
          } else {
            return bad(`namespace ${ns}: unknown setting ${k}`);
          }
        }
        out[ns] = nsOut;
      }
      return out;
    }
    case 'engine':
      if (typeof value !== 'string' || !(ENGINES as readonly string[]).includes(value))
        return bad(`expected one of ${ENGINES.join(', ')}`);
      return value;
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
  const config = out as unknown as Config;
  if (config.redisCluster.length > 0 && config.redisSentinels.length > 0)
    throw new ConfigError('redisCluster', 'redisCluster and redisSentinels exclude each other');
  if (config.redisCluster.length > 0 && config.redisBridge.length > 0)
    throw new ConfigError(
      'redisBridge',
      'redisBridge needs pattern subscriptions, which Redis Cluster does not shard: not available with redisCluster',
    );
  if (config.redisCluster.length > 0 && config.redis !== undefined)
    throw new ConfigError('redisCluster', 'redisCluster and redis exclude each other');
  if (config.redisSentinels.length > 0 !== (config.redisSentinelName !== undefined))
    throw new ConfigError(
      'redisSentinelName',
      'redisSentinels and redisSentinelName go together: give both or neither',
    );
  if (config.webhookSecret !== undefined && config.webhookSecret.length < 16)
    throw new ConfigError('webhookSecret', 'webhookSecret must be at least 16 characters');
  const unsigned = config.webhooks.find((w) => w.secret === undefined);
  if (unsigned !== undefined && config.webhookSecret === undefined)
    throw new ConfigError(
      'webhookSecret',
      `webhook ${unsigned.url} has no secret: set webhookSecret or its own secret`,
    );
  return config;
}
