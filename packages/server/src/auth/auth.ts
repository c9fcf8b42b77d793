/**
 * Who a connection or request is, and what it may do. Pure: no I/O.
 */

export type Permission = 'subscribe' | 'publish' | 'presence' | 'history';
export const PERMISSIONS: readonly Permission[] = ['subscribe', 'publish', 'presence', 'history'];

/** Channels (exact names, `prefix*` patterns such as `chat:*`, or `*`) and what they allow. */
export interface Capability {
  readonly channels: readonly string[];
  readonly allow: readonly Permission[];
}

export interface Credentials {
  /** `token`: a JWT; `apiKey`: a backend; `anonymous`: no credentials; `open`: auth is not configured. */
  readonly kind: 'token' | 'apiKey' | 'anonymous' | 'open';
  /** The token's `sub`, the API key's name, or '' when anonymous. */
  readonly userId: string;
  /** The token's `jti`. */
  readonly tokenId?: string | undefined;
  /** The token's `iat`, in ms. */
  readonly issuedAt?: number | undefined;
  /** The token's `exp`, in ms. */
  readonly expiresAt?: number | undefined;
  readonly capabilities: readonly Capability[];
  /** API keys only: may use the admin API (revocations). */
  readonly admin?: boolean;
}

/** Verifies a token; throws an AuthError saying why it is not acceptable. */
export interface Authenticator {
  authenticate(token: string): Promise<Credentials>;
}

/** Why credentials were refused. The message is safe to show to the client; the token never is. */
export class AuthError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'AuthError';
  }
}

export const OPEN: Credentials = { kind: 'open', userId: '', capabilities: [] };
export const ANONYMOUS: Credentials = { kind: 'anonymous', userId: '', capabilities: [] };

function matches(pattern: string, channel: string): boolean {
  return pattern.endsWith('*') ? channel.startsWith(pattern.slice(0, -1)) : pattern === channel;
}

/** Whether the credentials' own capabilities allow `permission` on `channel` (the union of all matching entries). */
export function can(creds: Credentials, permission: Permission, channel: string): boolean {
  if (creds.kind === 'open') return true;
  for (const cap of creds.capabilities) {
    if (cap.allow.includes(permission) && cap.channels.some((p) => matches(p, channel)))
      return true;
  }
  return false;
}

/**
 * Reads the capability claim: `{"chat:*": ["subscribe", "publish"], "news": ["subscribe"]}`.
 * Returns why it is malformed as a string.
 */
export function parseCapabilities(claim: unknown): Capability[] | string {
  if (claim === undefined) return [];
  if (typeof claim !== 'object' || claim === null || Array.isArray(claim))
    return 'capabilities must be an object of channel → permissions';
  const out: Capability[] = [];
  for (const [pattern, perms] of Object.entries(claim as Record<string, unknown>)) {
    if (pattern.length === 0 || pattern.length > 256 || pattern.slice(0, -1).includes('*'))
      return `bad channel pattern ${JSON.stringify(pattern)}`;
    if (
      !Array.isArray(perms) ||
      !perms.every((p): p is Permission => (PERMISSIONS as readonly unknown[]).includes(p))
    ) {
      return `permissions of ${JSON.stringify(pattern)} must be a list of ${PERMISSIONS.join(', ')}`;
    }
    out.push({ channels: [pattern], allow: perms });
  }
  return out;
}
