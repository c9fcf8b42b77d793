/**
 * `switchboard subscribe` as a user runs it, against real `switchboard serve` processes: it stops
 * with a clear message and exit code 1 when its token is refused or revoked (3500) instead of
 * reconnecting forever, and after its node dies and comes back on the same port (Redis keeps the
 * stream) it resumes: every message once, in order, including those published while it was away.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import {
  CLI,
  eventually,
  requireBinary,
  startNodeProcess,
  startRedis,
  type NodeProcess,
  type RedisProcess,
} from './helpers.js';

const ADMIN = 'ops:ops-secret-0123456789';
const API_KEYS = JSON.stringify([
  {
    name: 'ops',
    secret: 'ops-secret-0123456789',
    capabilities: { '*': ['publish', 'history'] },
    admin: true,
  },
]);
const SECRET = 'a-development-secret-of-32-bytes!';

class Subscriber {
  readonly child: ChildProcess;
  out = '';
  err = '';
  readonly exited: Promise<number | null>;

  constructor(args: string[], env: NodeJS.ProcessEnv = {}) {
    this.child = spawn(process.execPath, [CLI, 'subscribe', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    });
    this.child.stdout?.on('data', (d: Buffer) => (this.out += d.toString()));
    this.child.stderr?.on('data', (d: Buffer) => (this.err += d.toString()));
    this.exited = once(this.child, 'exit').then(([code]) => code as number | null);
  }

  lines(): { message: unknown; offset?: number }[] {
    return this.out
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { message: unknown; offset?: number });
  }

  async stderr(re: RegExp, what: string): Promise<void> {
    await eventually(() => re.test(this.err), 15_000, `${what}; stderr: ${this.err}`);
  }

  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGINT');
      await this.exited;
    }
  }
}

function cli(...args: string[]): string {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 10_000 });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim();
}

describe('switchboard subscribe (on the SDK)', () => {
  describe('with auth', () => {
    let node: NodeProcess;
    before(async () => {
      node = await startNodeProcess(['--jwt-secret', SECRET, '--api-keys', API_KEYS]);
    });
    after(async () => {
      await node.stop();
    });

    it('stops with exit 1 and says why when its token is revoked (3500)', async () => {
      const token = cli(
        'token',
        '--sub',
        'carol',
        '--cap',
        '{"feed":["subscribe"]}',
        '--jti',
        'cli-sub-1',
        '--jwt-secret',
        SECRET,
      );
      const sub = new Subscriber(['feed', '--url', node.wsUrl], { SWITCHBOARD_TOKEN: token });
      try {
        await sub.stderr(/subscribed to feed/, 'the subscription');
        cli('publish', 'feed', '"before"', '--url', node.url, '--api-key', ADMIN);
        await eventually(() => sub.lines().length === 1, 10_000, 'the first message');
        cli('revoke', '--jti', 'cli-sub-1', '--url', node.url, '--api-key', ADMIN);
        assert.equal(await sub.exited, 1);
        assert.match(sub.err, /refused the token \(3500/);
        assert.doesNotMatch(sub.err, /reconnecting/);
        assert.deepEqual(
          sub.lines().map((l) => l.message),
          ['before'],
        );
      } finally {
        await sub.stop();
      }
    });

    it('stops with exit 1 on a token the server refuses at connect', async () => {
      const sub = new Subscriber(['feed', '--url', node.wsUrl, '--token', 'not.a.jwt']);
      try {
        assert.equal(await sub.exited, 1);
        assert.match(sub.err, /refused the token \(3500/);
      } finally {
        await sub.stop();
      }
    });
  });

  describe('over a node restart (Redis)', () => {
    let redis: RedisProcess | undefined;
    const nodes: NodeProcess[] = [];
    before(async () => {
      if (requireBinary('redis-server')) return;
      redis = await startRedis();
    });
    after(async () => {
      for (const n of nodes) await n.stop('SIGKILL');
      await redis?.stop();
    });

    it('resumes after its node is killed and restarted on the same port: nothing lost or twice', async (t) => {
      if (redis === undefined) return t.skip('redis-server is not installed');
      const redisArgs = ['--redis', redis.url];
      const first = await startNodeProcess(redisArgs);
      nodes.push(first);
      const sub = new Subscriber(['ticks', '--url', first.wsUrl]);
      try {
        await sub.stderr(/subscribed to ticks/, 'the subscription');
        for (const n of [1, 2]) cli('publish', 'ticks', String(n), '--url', first.url);
        await eventually(() => sub.lines().length === 2, 10_000, 'the first two messages');

        await first.stop('SIGKILL');
        await sub.stderr(/disconnected/, 'the disconnect');
        // Published elsewhere while the subscriber's node is down.
        const other = await startNodeProcess(redisArgs);
        nodes.push(other);
        for (const n of [3, 4]) cli('publish', 'ticks', String(n), '--url', other.url);

        const again = await startNodeProcess([...redisArgs, '--port', String(first.port)]);
        nodes.push(again);
        await sub.stderr(/resumed ticks/, 'the resume');
        // A last live message: a duplicate or a gap in the replay would show before it.
        cli('publish', 'ticks', '5', '--url', first.url);
        await eventually(() => sub.lines().length >= 5, 10_000, `five lines; got ${sub.out}`);
        assert.deepEqual(
          sub.lines().map((l) => [l.offset, l.message]),
          [
            [1, 1],
            [2, 2],
            [3, 3],
            [4, 4],
            [5, 5],
          ],
        );
        assert.doesNotMatch(sub.err, /could not be resumed/);
      } finally {
        await sub.stop();
      }
      assert.equal(await sub.exited, 0);
    });
  });
});
