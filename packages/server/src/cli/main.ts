#!/usr/bin/env node
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { WebSocket } from 'ws';
import { BATCH_SUBPROTOCOL } from '@switchboard/protocol';
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

/** Exit codes: 1 runtime failure, 2 bad usage or configuration. */
class UsageError extends Error {}

const TOP_HELP = `Usage: switchboard <command> [options]

Commands:
  serve                     run a server (embedded engine unless --redis is given)
  publish <channel> <data>  publish one message through a server's REST API
  subscribe <channel>       print a channel's messages as JSON lines until interrupted

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

const PUBLISH_HELP = `Usage: switchboard publish <channel> <data> [options]

<data> is sent as JSON when it parses as JSON, else as a string.

Options:
  --url <url>     server base URL (default http://127.0.0.1:8080)
  --name <name>   message name
  --id <id>       message id (idempotency key: a retry with the same id is stored once)
  -h, --help      show this help`;

const SUBSCRIBE_HELP = `Usage: switchboard subscribe <channel> [options]

Prints each message as one JSON line on stdout; reconnects with backoff when the link drops.

Options:
  --url <url>     WebSocket URL (default ws://127.0.0.1:8080/ws)
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

async function serve(args: string[]): Promise<void> {
  const options: NonNullable<ParseArgsConfig['options']> = { config: { type: 'string' } };
  for (const key of settingKeys)
    options[flagName(key)] = { type: 'string', multiple: key === 'redisBridge' };
  const { values, positionals } = parse(args, options);
  if (values['help'] === true) {
    process.stdout.write(serveHelp() + '\n');
    return;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument: ${positionals[0]}`);
  const flags: RawValues = {};
  for (const key of settingKeys) {
    const v = values[flagName(key)];
    if (v !== undefined)
      (flags as Record<string, unknown>)[key] = Array.isArray(v)
        ? v.flatMap((p) => String(p).split(','))
        : v;
  }
  const file = (values['config'] as string | undefined) ?? process.env['SWITCHBOARD_CONFIG'];
  const config = resolveConfig([
    ...(file === undefined
      ? []
      : [{ source: `config file ${file}`, values: readConfigFile(file) }]),
    { source: 'environment', values: readEnv(process.env) },
    { source: 'flag', values: flags },
  ]);
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
  let res: Response;
  try {
    res = await fetch(new URL(`/v1/channels/${encodeURIComponent(channel)}/messages`, base), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
  } catch (err) {
    throw new Error(
      `cannot reach ${base}: ${(err as Error).cause instanceof Error ? ((err as Error).cause as Error).message : (err as Error).message}`,
    );
  }
  const text = await res.text();
  if (!res.ok) throw new Error(`publish failed (${res.status}): ${text}`);
  process.stdout.write(text + '\n');
}

function subscribe(args: string[]): Promise<void> {
  const { values, positionals } = parse(args, { url: { type: 'string' } });
  if (values['help'] === true) {
    process.stdout.write(SUBSCRIBE_HELP + '\n');
    return Promise.resolve();
  }
  const [channel, extra] = positionals;
  if (channel === undefined) throw new UsageError('subscribe needs <channel>');
  if (extra !== undefined) throw new UsageError(`unexpected argument: ${extra}`);
  const url = (values['url'] as string | undefined) ?? 'ws://127.0.0.1:8080/ws';
  let attempt = 0;
  let stopped = false;
  let current: WebSocket | undefined;
  const connect = (): void => {
    const ws = new WebSocket(url, [BATCH_SUBPROTOCOL]);
    current = ws;
    ws.on('open', () => {
      ws.send(JSON.stringify({ action: 'subscribe', channel, id: 1 }));
    });
    ws.on('message', (data: Buffer) => {
      for (const line of data.toString().split('\n')) {
        const frame = JSON.parse(line) as Record<string, unknown>;
        if (frame['reply'] === 1 && frame['ok'] === true) {
          attempt = 0;
          process.stderr.write(`subscribed to ${channel}\n`);
        } else if (frame['error'] !== undefined) {
          process.stderr.write(
            `error: ${JSON.stringify(frame['error'])} (code ${JSON.stringify(frame['code'])})\n`,
          );
          if (frame['reply'] === 1) process.exitCode = 1;
        } else if (frame['channel'] !== undefined) {
          process.stdout.write(line + '\n');
        }
      }
    });
    ws.on('error', (err) => process.stderr.write(`connection error: ${err.message}\n`));
    ws.on('close', (code) => {
      if (stopped || process.exitCode === 1) return;
      const delay = Math.random() * Math.min(100 * 2 ** attempt++, 10_000);
      process.stderr.write(`disconnected (${code}); reconnecting in ${Math.round(delay)} ms\n`);
      setTimeout(connect, delay);
    });
  };
  connect();
  return new Promise((resolve) => {
    const stop = (): void => {
      stopped = true;
      current?.close(1000);
      resolve();
    };
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
