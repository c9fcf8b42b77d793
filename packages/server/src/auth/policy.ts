import { channelNamespace } from '@switchboard/protocol';
import type { NamespaceConfig } from '../config.js';
import { can, type Credentials, type Permission } from './auth.js';

/**
 * What credentials may do on a channel: their capabilities, narrowed or widened by the channel's
 * namespace (anonymous access, client publishing). Pure.
 */
export interface AccessPolicy {
  /** Whether any auth (tokens or API keys) is configured. Without it everything is open. */
  readonly enabled: boolean;
  /** Whether some namespace lets anonymous connections in at all. */
  readonly anonymousAnywhere: boolean;
  allows(creds: Credentials, permission: Permission, channel: string): boolean;
}

export function createPolicy(
  enabled: boolean,
  namespaces: Readonly<Record<string, NamespaceConfig>>,
): AccessPolicy {
  const anonymousAnywhere = Object.values(namespaces).some((ns) => (ns.anonymous ?? []).length > 0);
  return {
    enabled,
    anonymousAnywhere,
    allows(creds, permission, channel) {
      if (!enabled || creds.kind === 'open') return true;
      const ns = namespaces[channelNamespace(channel)];
      // clientPublish false leaves publishing to backends: checked before the anonymous grant,
      // which otherwise let anonymous clients publish where tokens may not.
      if (permission === 'publish' && creds.kind !== 'apiKey' && ns?.clientPublish === false)
        return false;
      if (creds.kind === 'anonymous') return ns?.anonymous?.includes(permission) ?? false;
      return can(creds, permission, channel) || (ns?.anonymous?.includes(permission) ?? false);
    },
  };
}
