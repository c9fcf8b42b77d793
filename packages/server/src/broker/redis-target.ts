import { Cluster, Redis, type RedisOptions } from 'ioredis';
import type { Config } from '../config.js';

/**
 * Which Redis a node talks to: one server (`--redis`), a Cluster (`--redis-cluster`), or the
 * master a set of Sentinels names (`--redis-sentinels` + `--redis-sentinel-name`, with `--redis`
 * supplying only credentials and database when given).
 */
export type RedisTarget =
  | { readonly mode: 'single'; readonly url: string }
  | { readonly mode: 'cluster'; readonly seeds: readonly HostPort[] }
  | {
      readonly mode: 'sentinel';
      readonly sentinels: readonly HostPort[];
      readonly name: string;
      readonly url: string | undefined;
    };

/**
 * ioredis's options without `replyMapping`: its RedisOptions type declares it `| undefined`, which
 * its own constructor refuses under exactOptionalPropertyTypes.
 */
export type ConnectOptions = Omit<RedisOptions, 'replyMapping'>;

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/** `host:port` (IPv6 hosts in brackets) or undefined when it is not one. */
export function parseHostPort(text: string): HostPort | undefined {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text.trim());
  if (m === null) return undefined;
  const port = Number(m[3]);
  if (port < 1 || port > 65535) return undefined;
  return { host: (m[1] ?? m[2]) as string, port };
}

/**
 * A connection to the target for one purpose. In sentinel mode the connection asks the
 * Sentinels for the master, checks its role, and drops and re-resolves on `+switch-master`
 * (failoverDetector), so neither commands nor subscriptions stay on a demoted master.
 */
export function connectRedis(target: RedisTarget, options: ConnectOptions): Redis | Cluster {
  switch (target.mode) {
    case 'single':
      return new Redis(target.url, options);
    case 'cluster':
      return new Cluster([...target.seeds], {
        scaleReads: 'master',
        slotsRefreshInterval: 1000,
        ...(options.enableOfflineQueue === undefined
          ? {}
          : { enableOfflineQueue: options.enableOfflineQueue }),
        ...(options.lazyConnect === undefined ? {} : { lazyConnect: options.lazyConnect }),
        redisOptions: options,
      });
    case 'sentinel':
      return new Redis({
        ...(target.url === undefined ? {} : urlOptions(target.url)),
        ...options,
        sentinels: [...target.sentinels],
        name: target.name,
        role: 'master',
        failoverDetector: true,
      });
  }
}

function urlOptions(url: string): ConnectOptions {
  const u = new URL(url);
  const db = u.pathname.length > 1 ? Number(u.pathname.slice(1)) : undefined;
  return {
    ...(u.username === '' ? {} : { username: decodeURIComponent(u.username) }),
    ...(u.password === '' ? {} : { password: decodeURIComponent(u.password) }),
    ...(db === undefined || Number.isNaN(db) ? {} : { db }),
    ...(u.protocol === 'rediss:' ? { tls: {} } : {}),
  };
}

/** The Redis the configuration names, or undefined for the embedded engine. */
export function redisTargetOf(
  config: Pick<Config, 'redis' | 'redisCluster' | 'redisSentinels' | 'redisSentinelName'>,
): RedisTarget | undefined {
  const hosts = (list: readonly string[]): HostPort[] =>
    list.map((s) => parseHostPort(s)).filter((h) => h !== undefined);
  if (config.redisCluster.length > 0) return { mode: 'cluster', seeds: hosts(config.redisCluster) };
  if (config.redisSentinels.length > 0 && config.redisSentinelName !== undefined)
    return {
      mode: 'sentinel',
      sentinels: hosts(config.redisSentinels),
      name: config.redisSentinelName,
      url: config.redis,
    };
  return config.redis === undefined ? undefined : { mode: 'single', url: config.redis };
}
