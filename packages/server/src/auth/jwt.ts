import { readFileSync } from 'node:fs';
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  errors,
  importJWK,
  importSPKI,
  jwtVerify,
  type JWK,
  type JWTVerifyGetKey,
  type CryptoKey,
  type KeyObject,
} from 'jose';
import { AuthError, parseCapabilities, type Authenticator, type Credentials } from './auth.js';

export interface JwtOptions {
  /** HMAC secret (HS256/384/512). */
  readonly secret?: string | undefined;
  /** A PEM public key (SPKI), or a JWK / JWK Set as JSON text. */
  readonly publicKey?: string | undefined;
  /** A JWKS URL: fetched, cached, refetched on an unknown `kid`. Never taken from a token. */
  readonly jwksUrl?: string | undefined;
  /** The only algorithms accepted. */
  readonly algorithms: readonly string[];
  readonly issuer?: string | undefined;
  readonly audience?: string | undefined;
  readonly leewayMs: number;
  /** Refuse tokens without `exp` (default true). */
  readonly requireExp: boolean;
  /**
   * The longest lifetime a token may have, from its `iat`: revocations are kept this long, so a
   * token that could live longer would be accepted again once its revocation was dropped. A
   * token without `exp` (when allowed) ends this long after its `iat`.
   */
  readonly maxLifetimeMs: number;
  /** Name of the capabilities claim. */
  readonly capabilityClaim?: string;
}

const HMAC = ['HS256', 'HS384', 'HS512'];

type Key = CryptoKey | KeyObject | Uint8Array | JWTVerifyGetKey;

async function loadKey(o: JwtOptions): Promise<Key> {
  const sources = [o.secret, o.publicKey, o.jwksUrl].filter(
    (s) => s !== undefined && s !== '',
  ).length;
  if (sources !== 1)
    throw new TypeError(
      'Exactly one of jwtSecret, jwtPublicKey (or jwtKeyFile) and jwtJwksUrl must be set',
    );
  if (o.algorithms.length === 0) throw new TypeError('jwtAlgorithms must not be empty');
  const hmac = o.algorithms.filter((a) => HMAC.includes(a));
  if (o.secret !== undefined && o.secret !== '') {
    if (hmac.length !== o.algorithms.length)
      throw new TypeError('a jwtSecret only works with HS256, HS384 or HS512');
    if (Buffer.byteLength(o.secret) < 32)
      throw new TypeError('jwtSecret must be at least 32 bytes');
    return new TextEncoder().encode(o.secret);
  }
  // An HMAC algorithm next to a public key is how "HS256 signed with the RSA public key" attacks work.
  if (hmac.length > 0)
    throw new TypeError('HS* algorithms cannot be used with a public key or JWKS');
  if (o.jwksUrl !== undefined && o.jwksUrl !== '') {
    return createRemoteJWKSet(new URL(o.jwksUrl), {
      cacheMaxAge: 10 * 60_000,
      cooldownDuration: 30_000,
    });
  }
  const text = (o.publicKey ?? '').trim();
  if (text.startsWith('-----BEGIN')) {
    if (o.algorithms.length !== 1)
      throw new TypeError('a PEM key takes exactly one algorithm in jwtAlgorithms');
    return importSPKI(text, o.algorithms[0] as string);
  }
  const jwk = JSON.parse(text) as JWK | { keys: JWK[] };
  if ('keys' in jwk) return createLocalJWKSet(jwk);
  if (jwk.d !== undefined)
    throw new TypeError('jwtPublicKey must be a public key, not a private one');
  return importJWK(jwk, jwk.alg ?? o.algorithms[0]);
}

/** Reads a key file (PEM or JWK JSON) for JwtOptions.publicKey. */
export function readKeyFile(path: string): string {
  return readFileSync(path, 'utf8');
}

/**
 * A JWT authenticator over jose: explicit algorithm allowlist, `exp` required by default, `nbf`,
 * `iat` not beyond the leeway in the future, `iss`/`aud` when configured, clock leeway. `sub`
 * becomes the user id. A JWKS is cached 10 minutes and refetched on an unknown `kid`, at most
 * once per 30 s (jose's cooldown), so tokens with made-up kids cannot make us hammer the URL.
 */
export async function createJwtAuthenticator(options: JwtOptions): Promise<Authenticator> {
  const key = await loadKey(options);
  const claim = options.capabilityClaim ?? 'cap';
  const verifyOptions = {
    algorithms: [...options.algorithms],
    clockTolerance: Math.floor(options.leewayMs / 1000),
    requiredClaims: options.requireExp ? ['exp', 'sub'] : ['sub'],
    ...(options.issuer === undefined || options.issuer === '' ? {} : { issuer: options.issuer }),
    ...(options.audience === undefined || options.audience === ''
      ? {}
      : { audience: options.audience }),
  };
  return {
    async authenticate(token: string): Promise<Credentials> {
      let payload;
      try {
        // jose's overloads differ for key functions and keys; both are verified the same way
        ({ payload } =
          typeof key === 'function'
            ? await jwtVerify(token, key, verifyOptions)
            : await jwtVerify(token, key, verifyOptions));
      } catch (err) {
        throw new AuthError(describe(err), { cause: err });
      }
      // jose checks iat only against a maximum age. A token "issued" in the future would escape
      // "revoke every token of user U issued before T" (T = now): refuse one beyond the leeway,
      // by the same rule as nbf.
      if (
        typeof payload.iat === 'number' &&
        payload.iat > Math.floor(Date.now() / 1000) + verifyOptions.clockTolerance
      )
        throw new AuthError('token claim iat is not acceptable (issued in the future)');
      const expiresAt = lifetimeEnd(payload.iat, payload.exp, options);
      if (typeof payload.sub !== 'string' || payload.sub === '' || payload.sub.length > 256)
        throw new AuthError('token sub must be a non-empty string');
      const capabilities = parseCapabilities(payload[claim]);
      if (typeof capabilities === 'string')
        throw new AuthError(`token ${claim} claim: ${capabilities}`);
      return {
        kind: 'token',
        userId: payload.sub,
        tokenId: typeof payload.jti === 'string' ? payload.jti : undefined,
        issuedAt: typeof payload.iat === 'number' ? payload.iat * 1000 : undefined,
        expiresAt,
        capabilities,
      };
    },
  };
}

/**
 * When the token stops being valid: its `exp`, or `iat` + maxLifetimeMs for a token without one.
 * Throws for a token that could outlive the revocation retention: one without `iat` (nothing
 * bounds it), or whose `exp` lies more than maxLifetimeMs (+ leeway) after its `iat`.
 */
function lifetimeEnd(iat: unknown, exp: unknown, o: JwtOptions): number {
  if (typeof iat !== 'number')
    throw new AuthError(
      'token needs an iat claim: its lifetime must be bounded (maxTokenLifetimeMs)',
    );
  if (typeof exp !== 'number') {
    const end = iat * 1000 + o.maxLifetimeMs;
    if (end + o.leewayMs <= Date.now()) throw new AuthError('token expired');
    return end;
  }
  if ((exp - iat) * 1000 > o.maxLifetimeMs + o.leewayMs)
    throw new AuthError(
      `token lifetime (exp - iat) is longer than maxTokenLifetimeMs (${o.maxLifetimeMs} ms)`,
    );
  return exp * 1000;
}

function describe(err: unknown): string {
  if (err instanceof errors.JWTExpired) return 'token expired';
  if (err instanceof errors.JWTClaimValidationFailed)
    return `token claim ${err.claim} is not acceptable`;
  if (err instanceof errors.JOSEAlgNotAllowed) return 'token algorithm is not allowed';
  if (err instanceof errors.JWSSignatureVerificationFailed) return 'token signature is invalid';
  if (err instanceof errors.JWKSNoMatchingKey) return 'token key id is unknown';
  if (err instanceof errors.JWSInvalid || err instanceof errors.JWTInvalid)
    return 'token is malformed';
  return 'token is not acceptable';
}
