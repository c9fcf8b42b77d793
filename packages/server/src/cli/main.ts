#!/usr/bin/env node
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { WebSocket } from 'ws';
import { readFileSync } from 'node:fs';
import { PROTOCOL_VERSION } from '@switchboard/protocol';
import { channelError, DisconnectCode, encodeMessage } from '@switchboard/protocol';
import {
  ConfigError,
  flagName,
  readConfigFile,
  readEnv,
  resolveConfig,
  settings,
  type Config,
  type RawValues,
} from '../config.js';
import { createLogger } from '../logger.js';
import { startServer } from '../server.js';
import { randomUUID } from 'node:crypto';
import { SignJWT } from 'jose';
import { parseCapabilities } from '../auth/auth.js';

/** `switchboard <version> (protocol v<n>, node <version>)`, the version from the package's manifest. */
function versionLine(): string {
  // dist/cli/main.js and src/cli/main.ts both sit two levels below the package root.
  const manifest = JSON.parse(
    readFileSync(new URL('../../package.json', import.meta.url), 'utf8'),
  ) as { version: string };
  return `switchboard ${manifest.version} (protocol v${PROTOCOL_VERSION}, node ${process.version})`;
}

/** Exit codes: 1 runtime failure, 2 bad usage or configuration. */
class UsageError extends Error {}

const TOP_HELP = `Usage: switchboard <command> [options]

Commands:
  serve                     run a server (embedded engine unless --redis is given)
  publish <channel> <data>  publish one message through a server's REST API
  subscribe <channel>       print a channel's messages as JSON lines until interrupted
  token --sub <id>          mint a development token signed with the configured jwtSecret
  revoke --jti <id> | --sub <id>  revoke tokens on every node (admin API key)
  --version, -v             print the version

Run 'switchboard <command> --help' for a command's options.`;

const settingKeys = Object.keys(settings) as (keyof Config)[];

function serveHelp(): string {
  const row = (flag: string, doc: string): string => `  ${flag}`.padEnd(46) + doc;
  return [
    'Usage: switchboard serve [options]',
    '',
    'Each option is also SWITCHBOARD_<NAME> in the environment and a camelCase key of the config file;',
    'flags win over the environment, which wins over the file.',
    '',
    row('--config <file>', 'JSON config file (also SWITCHBOARD_CONFIG)'),
    ...settingKeys.map((key) => row(`--${flagName(key)} <value>`, settings[key].doc)),
    row('-h, --help', 'show this help'),
  ].join('\n');
}

const TOKEN_HELP = `Usage: switchboard token --sub <id> [options]

Mints an HS256 token signed with the configured jwtSecret (from --jwt-secret,
SWITCHBOARD_JWT_SECRET or the config file), for development.

Options:
  --sub <id>      the user id (required)
  --cap <json>    capabilities, e.g. '{"chat:*":["subscribe","publish"],"news":["subscribe"]}'
  --ttl <s>       lifetime in seconds (default 3600)
  --jti <id>      token id (default: random), for revocation
  --config, --jwt-secret, --jwt-issuer, --jwt-audience   as for serve
  -h, --help      show this help`;

const REVOKE_HELP = `Usage: switchboard revoke (--jti <id> | --sub <id> [--before <ms>]) [options]

Revokes one token, or every token of a user issued before a time (default: now), on every
node, live connections included.

Options:
  --url <url>            server base URL (default http://127.0.0.1:8080)
  --api-key <name:secret>  an admin API key (also SWITCHBOARD_API_KEY)
  -h, --help             show this help`;

const PUBLISH_HELP = `Usage: switchboard publish <channel> <data> [options]

<data> is sent as JSON when it parses as JSON, else as a string.

Options:
  --url <url>     server base URL (default http://127.0.0.1:8080)
  --name <name>   message name
  --id <id>       message id (idempotency key: a retry with the same id is stored once)
  --api-key <name:secret>  API key when the server requires one (also SWITCHBOARD_API_KEY)
  -h, --help      show this help`;

const SUBSCRIBE_HELP = `Usage: switchboard subscribe <channel> [options]

Prints each message as one JSON line on stdout ({channel, name, message, id, timestamp, offset,
epoch}); status goes to stderr. When the link drops it reconnects with backoff and resumes after
the last message printed, so none is lost or printed twice (or it warns that it could not). A
refused or revoked token (3500) or another final close code stops it with exit code 1.

Options:
  --url <url>     WebSocket URL (default ws://127.0.0.1:8080/ws)
  --token <jwt>   token when the server requires one (also SWITCHBOARD_TOKEN)
  --rewind <n>    print the last n stored messages (1-1000) before the live ones
  -h, --help      show this help`;

function parse(args: string[], options: ParseArgsConfig['options']): ReturnType<typeof parseArgs> {
  try {
    return parseArgs({
      args,
      options: { ...options, help: { type: 'boolean', short: 'h' } },
      allowPositionals: true,
      strict: true,
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

/** `--admin` alone means `--admin true`; every other setting flag takes a value. */
function bareAdminFlag(args: string[]): string[] {
  return args.map((a, i) =>
    a === '--admin' && (args[i + 1] === undefined || args[i + 1]?.startsWith('-') === true)
      ? '--admin=true'
      : a,
  );
}

/** Every setting as a flag, plus --config. */
function settingOptions(): NonNullable<ParseArgsConfig['options']> {
  const options: NonNullable<ParseArgsConfig['options']> = { config: { type: 'string' } };
  for (const key of settingKeys)
    options[flagName(key)] = { type: 'string', multiple: key === 'redisBridge' };
  return options;
}

/** Defaults < config file < environment < flags, as `serve` reads them. */
function configFrom(values: ReturnType<typeof parseArgs>['values']): Config {
  const flags: RawValues = {};
  for (const key of settingKeys) {
    const v = values[flagName(key)];
    if (v !== undefined)
      (flags as Record<string, unknown>)[key] = Array.isArray(v)
        ? v.flatMap((p) => String(p).split(','))
        : v;
  }
  const file = (values['config'] as string | undefined) ?? process.env['SWITCHBOARD_CONFIG'];
  return resolveConfig([
    ...(file === undefined
      ? []
      : [{ source: `config file ${file}`, values: readConfigFile(file) }]),
    { source: 'environment', values: readEnv(process.env) },
    { source: 'flag', values: flags },
  ]);
}

/** An Authorization header from --api-key or SWITCHBOARD_API_KEY (`name:secret`). */
function apiKeyHeader(values: ReturnType<typeof parseArgs>['values']): Record<string, string> {
  const key = (values['api-key'] as string | undefined) ?? process.env['SWITCHBOARD_API_KEY'];
  if (key === undefined || key === '') return {};
  if (!key.includes(':')) throw new UsageError('--api-key must be name:secret');
  return { authorization: 'Basic ' + Buffer.from(key).toString('base64') };
}

async function token(args: string[]): Promise<void> {
  const { values, positionals } = parse(args, {
    ...settingOptions(),
    sub: { type: 'string' },
    cap: { type: 'string' },
    ttl: { type: 'string' },
    jti: { type: 'string' },
  });
  if (values['help'] === true) {
    process.stdout.write(TOKEN_HELP + '\n');
    return;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument: ${positionals[0]}`);
  const sub = values['sub'];
  if (typeof sub !== 'string' || sub === '') throw new UsageError('token needs --sub');
  let cap: unknown = {};
  if (typeof values['cap'] === 'string') {
    try {
      cap = JSON.parse(values['cap']);
    } catch {
      throw new UsageError('--cap must be JSON, e.g. \'{"chat:*":["subscribe","publish"]}\'');
    }
  }
  const bad = parseCapabilities(cap);
  if (typeof bad === 'string') throw new UsageError(`--cap: ${bad}`);
  const ttl = values['ttl'] === undefined ? 3600 : Number(values['ttl']);
  if (!Number.isSafeInteger(ttl) || ttl <= 0)
    throw new UsageError('--ttl must be a positive number of seconds');
  const config = configFrom(values);
  if (config.jwtSecret === undefined)
    throw new ConfigError(
      'jwtSecret',
      'token needs jwtSecret (flag --jwt-secret, SWITCHBOARD_JWT_SECRET or the config file)',
    );
  if (ttl * 1000 > config.maxTokenLifetimeMs)
    throw new UsageError(
      `--ttl must be at most maxTokenLifetimeMs (${config.maxTokenLifetimeMs / 1000} s): the server refuses longer tokens`,
    );
  const jwt = new SignJWT({ cap: cap as Record<string, string[]> })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(sub)
    .setIssuedAt()
    .setExpirationTime(Math.floor(Date.now() / 1000) + ttl)
    .setJti(typeof values['jti'] === 'string' ? values['jti'] : randomUUID());
  if (config.jwtIssuer !== undefined) jwt.setIssuer(config.jwtIssuer);
  if (config.jwtAudience !== undefined) jwt.setAudience(config.jwtAudience);
  process.stdout.write((await jwt.sign(new TextEncoder().encode(config.jwtSecret))) + '\n');
}

async function revoke(args: string[]): Promise<void> {
  const { values, positionals } = parse(args, {
    url: { type: 'string' },
    'api-key': { type: 'string' },
    jti: { type: 'string' },
    sub: { type: 'string' },
    before: { type: 'string' },
  });
  if (values['help'] === true) {
    process.stdout.write(REVOKE_HELP + '\n');
    return;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument: ${positionals[0]}`);
  const jti = values['jti'];
  const sub = values['sub'];
  if ((jti === undefined) === (sub === undefined))
    throw new UsageError('revoke needs exactly one of --jti and --sub');
  const body: Record<string, unknown> = jti !== undefined ? { jti } : { sub };
  if (values['before'] !== undefined) {
    if (sub === undefined) throw new UsageError('--before goes with --sub');
    const before = Number(values['before']);
    if (!Number.isSafeInteger(before))
      throw new UsageError('--before must be a time in ms since the epoch');
    body['before'] = before;
  }
  const base = (values['url'] as string | undefined) ?? 'http://127.0.0.1:8080';
  const text = await post(new URL('/v1/admin/revocations', base), body, apiKeyHeader(values), base);
  process.stdout.write(text + '\n');
}

/** POSTs JSON and returns the body; a non-2xx answer is an Error with the server's message. */
async function post(
  url: URL,
  body: unknown,
  headers: Record<string, string>,
  base: string,
): Promise<string> {
  let res: Response;
  try {
    res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: JSON.stringify(body),
    });
  } catch (err) {
    const cause = (err as Error).cause;
    throw new Error(
      `cannot reach ${base}: ${cause instanceof Error ? cause.message : (err as Error).message}`,
    );
  }
  const text = await res.text();
  if (!res.ok) throw new Error(`request failed (${res.status}): ${text}`);
  return text;
}

async function serve(args: string[]): Promise<void> {
  const { values, positionals } = parse(bareAdminFlag(args), settingOptions());
  if (values['help'] === true) {
    process.stdout.write(serveHelp() + '\n');
    return;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument: ${positionals[0]}`);
  const config = configFrom(values);
  const logger = createLogger(config.logLevel);
  const server = await startServer(config, logger);
  let signals = 0;
  const stop = (signal: string): void => {
    if (++signals > 1) {
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    logger.info({ signal }, 'signal received');
    server.close().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

async function publish(args: string[]): Promise<void> {
  const { values, positionals } = parse(args, {
    url: { type: 'string' },
    name: { type: 'string' },
    id: { type: 'string' },
    'api-key': { type: 'string' },
  });
  if (values['help'] === true) {
    process.stdout.write(PUBLISH_HELP + '\n');
    return;
  }
  const [channel, data, extra] = positionals;
  if (channel === undefined || data === undefined)
    throw new UsageError('publish needs <channel> and <data>');
  if (extra !== undefined) throw new UsageError(`unexpected argument: ${extra}`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(data);
  } catch {
    parsed = data;
  }
  const base = (values['url'] as string | undefined) ?? 'http://127.0.0.1:8080';
  const body: Record<string, unknown> = { data: parsed };
  if (values['name'] !== undefined) body['name'] = values['name'];
  if (values['id'] !== undefined) body['id'] = values['id'];
  const url = new URL(`/v1/channels/${encodeURIComponent(channel)}/messages`, base);
  process.stdout.write((await post(url, body, apiKeyHeader(values), base)) + '\n');
}

async function subscribe(args: string[]): Promise<void> {
  const { values, positionals } = parse(args, {
    url: { type: 'string' },
    token: { type: 'string' },
    rewind: { type: 'string' },
  });
  if (values['help'] === true) {
    process.stdout.write(SUBSCRIBE_HELP + '\n');
    return;
  }
  const [channel, extra] = positionals;
  if (channel === undefined) throw new UsageError('subscribe needs <channel>');
  if (extra !== undefined) throw new UsageError(`unexpected argument: ${extra}`);
  const why = channelError(channel);
  if (why !== undefined) throw new UsageError(why);
  const rewind = values['rewind'] === undefined ? undefined : Number(values['rewind']);
  if (rewind !== undefined && !(Number.isSafeInteger(rewind) && rewind >= 1 && rewind <= 1000))
    throw new UsageError('--rewind must be a number of messages from 1 to 1000');
  const url = (values['url'] as string | undefined) ?? 'ws://127.0.0.1:8080/ws';
  try {
    new URL(url);
  } catch {
    throw new UsageError(`--url must be a WebSocket URL, got ${url}`);
  }
  const token = (values['token'] as string | undefined) ?? process.env['SWITCHBOARD_TOKEN'];
  // The SDK brings what a hand-rolled loop lacked: resume from the last offset after a reconnect
  // (nothing lost, nothing twice), and a final stop on close codes that say "do not retry" (a
  // revoked or refused token, 3500) instead of reconnecting forever.
  // Loaded here, not at the top: `serve` (and a server image that ships no SDK) never needs it.
  const { Switchboard, SwitchboardError } = await import('@switchboard/client');
  const client = new Switchboard({
    url,
    WebSocket,
    transports: ['websocket'],
    ...(token !== undefined && token !== '' && { token }),
  });
  const err = (line: string): boolean => process.stderr.write(line + '\n');
  const sub = client.channels.get(channel);
  return new Promise((resolve) => {
    let done = false;
    const finish = (code: number): void => {
      if (done) return;
      done = true;
      process.exitCode = code;
      client.close();
      resolve();
    };
    client.connection.on('disconnected', (c) =>
      err(
        `disconnected (${c.reason?.code ?? '?'}${c.reason?.message ? ` ${c.reason.message}` : ''}); reconnecting in ${c.retryInMs ?? 0} ms`,
      ),
    );
    client.connection.on('suspended', (c) =>
      err(`cannot reach ${url}; still trying every ${c.retryInMs ?? 0} ms`),
    );
    client.connection.on('failed', (c) => {
      const code = c.reason?.code;
      err(
        code === DisconnectCode.UNAUTHORIZED
          ? `error: the server refused the token (${code}: ${c.reason?.message ?? ''}); not retrying. Get a new token (switchboard token) and run again.`
          : `error: the server closed the connection for good (${code ?? '?'}: ${c.reason?.message ?? ''}); not retrying`,
      );
      finish(1);
    });
    sub.on('subscribed', (c) =>
      err(c.resumed === true ? `resumed ${channel}` : `subscribed to ${channel}`),
    );
    sub.on('discontinuity', (d) =>
      err(
        `warning: ${channel} could not be resumed exactly (${d.reason}); messages after offset ${d.previous?.offset ?? '?'} may be missing`,
      ),
    );
    sub
      .subscribe(
        (m) => {
          // One line per message, in the push frame's own encoding (docs/protocol.md).
          const line = encodeMessage(
            {
              channel: m.channel,
              dataJson: JSON.stringify(m.data),
              id: m.id,
              timestamp: m.timestamp,
              name: m.name,
            },
            m.offset !== undefined && m.epoch !== undefined
              ? { offset: m.offset, epoch: m.epoch }
              : undefined,
          );
          process.stdout.write(line + '\n');
        },
        rewind === undefined ? {} : { rewind },
      )
      .catch((e: unknown) => {
        if (done) return;
        if (e instanceof SwitchboardError && !e.temporary) {
          err(`error: ${e.message} (code ${e.code})`);
          finish(1);
        }
        // A temporary failure (no reply in time) is pursued by the SDK; nothing to do here.
      });
    const stop = (): void => finish(0);
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'serve':
      return serve(rest);
    case 'publish':
      return publish(rest);
    case 'subscribe':
      return subscribe(rest);
    case 'token':
      return token(rest);
    case 'revoke':
      return revoke(rest);
    case '--version':
    case '-v':
      process.stdout.write(versionLine() + '\n');
      return;
    case undefined:
    case '-h':
    case '--help':
    case 'help':
      process.stdout.write(TOP_HELP + '\n');
      if (command === undefined) process.exitCode = 2;
      return;
    default:
      throw new UsageError(`unknown command: ${command}`);
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  if (err instanceof UsageError || err instanceof ConfigError) {
    process.stderr.write(
      `switchboard: ${err.message}\n${err instanceof UsageError ? "Run 'switchboard --help' for usage.\n" : ''}`,
    );
    process.exit(2);
  }
  process.stderr.write(`switchboard: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
