/**
 * A real deployment in miniature for tests: a private Redis, N `switchboard serve` processes
 * sharing it, and NGINX in front of them running deploy/nginx/switchboard.conf (only its upstream
 * servers, listen address and file paths rewritten), as a child process stopped by pid.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  eventually,
  freePort,
  startNodeProcess,
  startRedis,
  type NodeProcess,
  type RedisProcess,
} from '../../server/test/helpers.js';

const CONF = new URL('../../../deploy/nginx/switchboard.conf', import.meta.url);

export interface Nginx {
  readonly port: number;
  readonly url: string;
  readonly wsUrl: string;
  readonly pid: number;
  /** The access log's lines so far. */
  accessLog(): string[];
  stop(): Promise<void>;
}

/** The deploy config with its upstream servers, listen address and paths made the test's own. */
export function testNginxConfig(dir: string, port: number, upstreams: readonly number[]): string {
  let conf = readFileSync(CONF, 'utf8');
  const servers = upstreams
    .map((p) => `        server 127.0.0.1:${p} max_fails=1 fail_timeout=5s;`)
    .join('\n');
  const upstream = /(upstream switchboard \{\n)((?:\s*#.*\n)*)((?:\s*server .*;\n)+)/;
  if (!upstream.test(conf))
    throw new Error('deploy/nginx/switchboard.conf: no upstream servers found');
  conf = conf.replace(
    upstream,
    (_, head: string, comments: string) => `${head}${comments}${servers}\n`,
  );
  const replace = (from: RegExp, to: string): void => {
    if (!from.test(conf))
      throw new Error(`deploy/nginx/switchboard.conf: ${String(from)} not found`);
    conf = conf.replace(from, to);
  };
  replace(
    /^worker_processes .*;$/m,
    'worker_processes 1;\ndaemon off;\nmaster_process on;\nuser root;',
  );
  replace(/^(\s*)listen 80;$/m, `$1listen 127.0.0.1:${port};`);
  replace(/access_log \S+ switchboard;/, `access_log ${join(dir, 'access.log')} switchboard;`);
  replace(
    /^http \{$/m,
    `pid ${join(dir, 'nginx.pid')};\nerror_log ${join(dir, 'error.log')} warn;\n\nhttp {\n` +
      ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']
        .map((t) => `    ${t}_temp_path ${join(dir, t)};`)
        .join('\n'),
  );
  return conf;
}

/** Starts nginx in front of `upstreams` on a free port; resolves once it proxies /healthz. */
export async function startNginx(upstreams: readonly number[]): Promise<Nginx> {
  const dir = mkdtempSync(join(tmpdir(), 'switchboard-nginx-'));
  chmodSync(dir, 0o755);
  const port = await freePort();
  const confPath = join(dir, 'nginx.conf');
  writeFileSync(confPath, testNginxConfig(dir, port, upstreams));
  const child: ChildProcess = spawn(
    'nginx',
    ['-p', dir, '-c', confPath, '-e', join(dir, 'error.log')],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await eventually(
      async () => {
        if (child.exitCode !== null) throw new Error(`nginx exited with ${child.exitCode}: ${out}`);
        try {
          return (await fetch(`http://127.0.0.1:${port}/healthz`)).status === 200;
        } catch {
          return false;
        }
      },
      10_000,
      'nginx to proxy /healthz',
      50,
    );
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    wsUrl: `ws://127.0.0.1:${port}/ws`,
    get pid() {
      return child.pid ?? -1;
    },
    accessLog: () => {
      try {
        return readFileSync(join(dir, 'access.log'), 'utf8')
          .split('\n')
          .filter((l) => l !== '');
      } catch {
        return [];
      }
    },
    stop,
  };
}

export interface Cluster {
  readonly redis: RedisProcess;
  readonly nodes: NodeProcess[];
  readonly nginx: Nginx;
  stop(): Promise<void>;
}

/** Redis, `n` nodes on it, NGINX in front. Limits meant for the open Internet are lifted. */
export async function startCluster(n: number, args: string[] = []): Promise<Cluster> {
  const redis = await startRedis();
  const nodes: NodeProcess[] = [];
  let nginx: Nginx | undefined;
  const stop = async (): Promise<void> => {
    await nginx?.stop();
    await Promise.all(nodes.map((node) => node.stop('SIGKILL')));
    await redis.stop(true);
  };
  try {
    for (let i = 0; i < n; i++) {
      nodes.push(
        await startNodeProcess([
          '--redis',
          redis.url,
          // Behind one proxy every client has the proxy's address.
          '--max-connections-per-ip-per-second',
          '1000000',
          '--max-commands-per-second',
          '1000000',
          '--command-burst',
          '1000000',
          ...args,
        ]),
      );
    }
    nginx = await startNginx(nodes.map((node) => node.port));
  } catch (err) {
    await stop();
    throw err;
  }
  return { redis, nodes, nginx, stop };
}
