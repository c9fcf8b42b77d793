import type { IncomingMessage, ServerResponse } from 'node:http';
import { ErrorCode } from '@switchboard/protocol';
import type { Logger } from 'pino';
import type { ApiKeys } from '../auth/api-keys.js';
import type { Authenticator } from '../auth/auth.js';
import { AuthFailureLog, type RefusalFields } from '../auth/auth-log.js';
import type { Revocation } from '../auth/revocation.js';
import type { RedisTarget } from '../broker/redis-target.js';
import { ConfigError, type Config } from '../config.js';
import type { Hub } from '../hub.js';
import type { Metrics } from '../metrics.js';
import type { Node } from '../node.js';
import type { ChannelDirectory } from '../occupancy/directory.js';
import { AdminCluster } from './cluster.js';
import { SessionSigner, passwordCheck, passwordHashError } from './credentials.js';
import { MemoryLockoutStore, RedisLockoutStore, type LockoutStore } from './lockout.js';
import { ClientAddresses } from '../client-address.js';
import { createAdminRoutes, type AdminChannelRow, type ChannelLister } from './routes.js';
import { ErrorRing, NodeStats, type NodeOverview } from './stats.js';

export { ErrorRing } from './stats.js';
export type { ChannelLister } from './routes.js';

/** An AuthFailureLog that also keeps each refusal in the admin API's error ring. */
export class RecordingAuthLog extends AuthFailureLog {
  readonly #ring: ErrorRing;

  constructor(ring: ErrorRing, log: Logger, count?: (reason: string) => void) {
    super(log, undefined, count);
    this.#ring = ring;
  }

  override refused(reason: string, f: RefusalFields): void {
    this.#ring.push({
      code: ErrorCode.UNAUTHORIZED,
      message: `${f.transport}: ${reason}`,
      address: f.address,
    });
    super.refused(reason, f);
  }
}

/** Whether the admin API is served: `admin` when set, else only embedded without auth. */
export function adminEnabled(config: Config, authEnabled: boolean, embedded: boolean): boolean {
  return config.admin ?? (embedded && !authEnabled);
}

export interface AdminParts {
  readonly config: Config;
  readonly nodeId: string;
  readonly node: Node;
  readonly hub: Hub;
  readonly metrics: Metrics;
  readonly logger: Logger;
  readonly authEnabled: boolean;
  readonly apiKeys: ApiKeys;
  readonly authenticator: Authenticator | undefined;
  readonly authLog: AuthFailureLog | undefined;
  readonly errors: ErrorRing;
  /** This node's webhook delivery log, newest first. */
  readonly webhookLog: (limit: number) => readonly unknown[];
  readonly redis: RedisTarget | undefined;
  /** What session cookies are signed with besides the password: the same on every node. */
  readonly keyMaterial: string;
  readonly revoke: (r: Revocation) => Promise<void>;
  readonly info: () => Omit<
    NodeOverview,
    'messagesInPerSec' | 'messagesOutPerSec' | 'eventLoopLagMs' | 'uptimeS'
  > & { readonly uptimeMs: number };
}

export interface Admin {
  readonly routes: (req: IncomingMessage, res: ServerResponse, url: URL) => Promise<boolean>;
  start(): Promise<void>;
  close(): Promise<void>;
}

/** Throws ConfigError for an unusable admin password setting (before anything is started). */
export function checkAdminConfig(config: Config): void {
  if (config.adminPasswordHash !== undefined) {
    const why = passwordHashError(config.adminPasswordHash);
    if (why !== undefined) throw new ConfigError('adminPasswordHash', `adminPasswordHash: ${why}`);
  }
  if (config.adminPassword !== undefined && config.adminPassword.length < 12)
    throw new ConfigError('adminPassword', 'adminPassword: must be at least 12 characters');
}

/** Builds the admin API; throws ConfigError for an unusable password setting. */
export function createAdmin(p: AdminParts): Admin {
  const { config, logger } = p;
  checkAdminConfig(config);
  const password = passwordCheck(config.adminPassword, config.adminPasswordHash);
  const open = !p.authEnabled && password === undefined;
  if (open)
    logger.warn(
      'ADMIN API OPEN: /v1/admin needs no credentials (no auth configured). Anyone who reaches this port can read every channel, publish and revoke. Set adminPassword or apiKeys, or admin=false, before exposing it.',
    );
  else if (password === undefined && !config.apiKeys.some((k) => k.admin === true))
    logger.warn(
      'admin API enabled but nobody can use it: set adminPassword(Hash) or give an API key "admin": true',
    );
  else logger.info({ password: password !== undefined }, 'admin API enabled at /v1/admin');
  const stats = new NodeStats({ metrics: p.metrics, info: p.info });
  const lockout: LockoutStore =
    p.redis === undefined
      ? new MemoryLockoutStore()
      : new RedisLockoutStore(p.redis, config.redisPrefix);
  const cluster = new AdminCluster(
    {
      onControlTopic: (t, h) => p.node.onControlTopic(t, h),
      offControlTopic: (t) => p.node.offControlTopic(t),
      publishControl: (t, payload) => p.node.broker.publishControl(t, payload),
    },
    p.nodeId,
    async (kind, args) => {
      switch (kind) {
        case 'overview':
          return stats.overview();
        case 'latency':
          return stats.latency();
        case 'errors':
          return p.errors.last(typeof args['limit'] === 'number' ? args['limit'] : 100);
        case 'webhooks':
          return p.webhookLog(typeof args['limit'] === 'number' ? args['limit'] : 100);
        case 'channel':
          return { subscribers: p.hub.sinksOf(String(args['channel'])).length };
        case 'channels':
          return localChannels(p.hub, args);
        default:
          return null;
      }
    },
    logger,
  );
  const signer = new SessionSigner(
    `${config.adminPasswordHash ?? config.adminPassword ?? ''}\n${p.keyMaterial}`,
  );
  const routes = createAdminRoutes({
    node: p.node,
    open,
    apiKeys: p.apiKeys,
    authenticator: p.authenticator,
    authLog: p.authLog,
    signer,
    password,
    lockout,
    cluster,
    errors: p.errors,
    channels:
      p.node.directory === undefined ? hubLister(cluster) : directoryLister(p.node.directory),
    directory: p.node.directory,
    revoke: p.revoke,
    logger,
    maxBodyBytes: config.maxRequestBodyBytes,
    maxMessageBytes: config.maxMessageBytes,
    maxOutboundBytes: config.maxOutboundBytes,
    clientAddress: new ClientAddresses(config.trustProxy),
  });
  return {
    routes,
    async start() {
      stats.start();
      await cluster.start();
    },
    async close() {
      stats.stop();
      cluster.stop();
      await lockout.close();
    },
  };
}

/** The listing of the deployment's ChannelDirectory, with each channel's occupancy. */
function directoryLister(d: ChannelDirectory): ChannelLister {
  return {
    async list(q) {
      const page = await d.list(q);
      return {
        channels: page.channels.map((c) => ({
          channel: c.channel,
          ...c.occupancy,
        })),
        next: page.next,
      };
    },
  };
}

/** This node's channels with a local subscriber, sorted, after the cursor: one node's share. */
function localChannels(hub: Hub, args: Record<string, unknown>): AdminChannelRow[] {
  const prefix = typeof args['prefix'] === 'string' ? args['prefix'] : '';
  const after = typeof args['after'] === 'string' ? args['after'] : '';
  const limit = typeof args['limit'] === 'number' ? Math.min(args['limit'], 1001) : 51;
  const names: string[] = [];
  for (const c of hub.names()) if (c.startsWith(prefix) && c > after) names.push(c);
  names.sort();
  return names
    .slice(0, limit)
    .map((channel) => ({ channel, subscribers: hub.sinksOf(channel).length }));
}

/**
 * The channel list without a deployment directory: every node's channels with local subscribers,
 * merged. Each node sends its first limit+1 names after the cursor, so the union's first `limit`
 * are the deployment's, and there is more exactly when the union is longer.
 */
function hubLister(cluster: AdminCluster): ChannelLister {
  return {
    async list({ prefix, cursor, limit }) {
      const after = cursor === undefined ? '' : Buffer.from(cursor, 'base64url').toString();
      const g = await cluster.gather<AdminChannelRow[]>('channels', {
        prefix,
        after,
        limit: limit + 1,
      });
      const merged = new Map<string, number>();
      for (const rows of g.answers)
        for (const r of rows) merged.set(r.channel, (merged.get(r.channel) ?? 0) + r.subscribers);
      const names = [...merged.keys()].sort();
      const page = names.slice(0, limit);
      const last = page[page.length - 1];
      return {
        channels: page.map((channel) => ({ channel, subscribers: merged.get(channel) ?? 0 })),
        next:
          names.length > limit && last !== undefined
            ? Buffer.from(last).toString('base64url')
            : null,
      };
    },
  };
}
