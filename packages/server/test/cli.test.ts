import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CLI, startNodeProcess, TestClient, type NodeProcess } from './helpers.js';

function run(
  args: string[],
  env: NodeJS.ProcessEnv = {},
): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    env: { ...process.env, ...env },
    encoding: 'utf8',
    timeout: 10_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/**
 * `run` without blocking this process: a test holding a live connection keeps answering the
 * server's pings meanwhile (a blocked loop got it closed 1006 under a loaded machine).
 */
async function runAsync(
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [CLI, ...args], {
    env: { ...process.env, ...env },
    timeout: 10_000,
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const status = await new Promise<number | null>((resolve) => child.on('close', resolve));
  return { status, stdout, stderr };
}

describe('switchboard CLI', () => {
  describe('usage errors exit 2 with a message naming the problem', () => {
    it('an unknown flag', () => {
      const r = run(['serve', '--no-such-flag']);
      assert.equal(r.status, 2);
      assert.match(r.stderr, /--no-such-flag/);
    });
    it('a bad flag value', () => {
      const r = run(['serve', '--port', 'eighty']);
      assert.equal(r.status, 2);
      assert.match(r.stderr, /port/);
    });
    it('a bad environment value', () => {
      const r = run(['serve'], { SWITCHBOARD_REDIS: 'http://not-redis' });
      assert.equal(r.status, 2);
      assert.match(r.stderr, /SWITCHBOARD_REDIS/);
    });
    it('an unknown key in the config file', () => {
      const dir = mkdtempSync(join(tmpdir(), 'sb-cli-'));
      const file = join(dir, 'config.json');
      writeFileSync(file, JSON.stringify({ port: 1, colour: 'blue' }));
      const r = run(['serve', '--config', file]);
      assert.equal(r.status, 2);
      assert.match(r.stderr, /colour/);
    });
    it('an out-of-range config file value', () => {
      const dir = mkdtempSync(join(tmpdir(), 'sb-cli-'));
      const file = join(dir, 'config.json');
      writeFileSync(file, JSON.stringify({ maxMessageBytes: 1 }));
      const r = run(['serve', '--config', file]);
      assert.equal(r.status, 2);
      assert.match(r.stderr, /maxMessageBytes/);
    });
    it('an unknown command', () => {
      const r = run(['frobnicate']);
      assert.equal(r.status, 2);
      assert.match(r.stderr, /frobnicate/);
    });
    it('publish without data', () => {
      const r = run(['publish', 'chan']);
      assert.equal(r.status, 2);
    });
    // Token keys are checked when the server builds its authenticator, after the config was
    // read: these exited 1 like a runtime failure (#15.5).
    it('a jwtSecret shorter than 32 bytes', () => {
      const r = run(['serve', '--port', '0', '--jwt-secret', 'short']);
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, /jwtSecret must be at least 32 bytes/);
    });
    it('a jwtKeyFile that does not exist, or holds no key', () => {
      const missing = run(['serve', '--port', '0', '--jwt-key-file', '/nonexistent/key.pem']);
      assert.equal(missing.status, 2, missing.stderr);
      assert.match(missing.stderr, /jwtKeyFile/);
      const dir = mkdtempSync(join(tmpdir(), 'sb-cli-'));
      const file = join(dir, 'key.pem');
      writeFileSync(file, '-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n');
      const garbage = run(['serve', '--port', '0', '--jwt-key-file', file]);
      assert.equal(garbage.status, 2, garbage.stderr);
      assert.match(garbage.stderr, /jwtKeyFile/);
    });
    it('HMAC algorithms next to a public key', () => {
      const r = run([
        'serve',
        '--port',
        '0',
        '--jwt-public-key',
        '{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}',
        '--jwt-algorithms',
        'HS256',
      ]);
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, /HS\* algorithms cannot be used with a public key/);
    });
  });

  it('--version and -v print the package version', () => {
    const { version } = JSON.parse(
      readFileSync(new URL('../package.json', import.meta.url), 'utf8'),
    ) as { version: string };
    for (const flag of ['--version', '-v']) {
      const r = run([flag]);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout.trim().split(' ').slice(0, 2).join(' '), `switchboard ${version}`);
      assert.match(r.stdout, /protocol v1/);
    }
    assert.match(run(['--help']).stdout, /--version/);
  });

  it('prints help for every command', () => {
    for (const [cmd, needle] of [
      ['serve', '--redis-bridge'],
      ['publish', '--id'],
      ['subscribe', '--url'],
    ] as const) {
      const r = run([cmd, '--help']);
      assert.equal(r.status, 0, cmd);
      assert.match(r.stdout, new RegExp(`switchboard ${cmd}`));
      assert.ok(r.stdout.includes(needle), `${cmd} --help mentions ${needle}`);
    }
    assert.match(run(['--help']).stdout, /Commands:/);
  });

  describe('against a running server', () => {
    let node: NodeProcess;
    before(async () => {
      node = await startNodeProcess();
    });
    after(async () => {
      await node.stop();
    });

    it('publish sends JSON data (or a string) and prints the stored id', async () => {
      const sub = await TestClient.open(node.wsUrl);
      await sub.subscribe('cli');
      const r = run([
        'publish',
        'cli',
        '{"n":1}',
        '--url',
        node.url,
        '--name',
        'tick',
        '--id',
        'cli-1',
      ]);
      assert.equal(r.status, 0, r.stderr);
      assert.deepEqual((JSON.parse(r.stdout) as { ids: string[] }).ids, ['cli-1']);
      assert.equal(run(['publish', 'cli', 'plain words', '--url', node.url]).status, 0);
      await sub.until(() => sub.messages('cli').length === 2);
      assert.deepEqual(
        sub.messages('cli').map((m) => m['message']),
        [{ n: 1 }, 'plain words'],
      );
      assert.equal(sub.messages('cli')[0]?.['name'], 'tick');
      sub.close();
    });

    it('publish to an unreachable server exits 1', () => {
      const r = run(['publish', 'cli', '1', '--url', 'http://127.0.0.1:1']);
      assert.equal(r.status, 1);
      assert.match(r.stderr, /cannot reach/);
    });

    it('subscribe prints each message as a JSON line until interrupted', async () => {
      const child = spawn(process.execPath, [CLI, 'subscribe', 'lines', '--url', node.wsUrl], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      let err = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      await new Promise<void>((resolve) => {
        const check = (): void => {
          if (err.includes('subscribed to lines')) resolve();
        };
        child.stderr.on('data', check);
      });
      for (let i = 0; i < 3; i++)
        assert.equal(run(['publish', 'lines', String(i), '--url', node.url]).status, 0);
      await new Promise<void>((resolve) => {
        const check = (): void => {
          if (out.split('\n').filter(Boolean).length >= 3) resolve();
        };
        check();
        child.stdout.on('data', check);
      });
      const exited = new Promise<number | null>((resolve) =>
        child.on('exit', (code) => resolve(code)),
      );
      child.kill('SIGINT');
      assert.equal(await exited, 0);
      const lines = out
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { channel: string; message: number });
      assert.deepEqual(
        lines.map((l) => [l.channel, l.message]),
        [
          ['lines', 0],
          ['lines', 1],
          ['lines', 2],
        ],
      );
    });
  });

  describe('with auth configured', () => {
    const secret = 'a-development-secret-of-32-bytes!';
    const apiKeys = JSON.stringify([
      {
        name: 'ops',
        secret: 'ops-secret-0123456789',
        capabilities: { '*': ['publish', 'history'] },
        admin: true,
      },
    ]);
    let node: NodeProcess;
    before(async () => {
      node = await startNodeProcess(['--jwt-secret', secret, '--api-keys', apiKeys]);
    });
    after(async () => {
      await node.stop();
    });

    it('token mints a JWT the server accepts, with the given capabilities', async () => {
      const r = run(
        ['token', '--sub', 'alice', '--cap', '{"chat:*":["subscribe"]}', '--jti', 'cli-jti-1'],
        {
          SWITCHBOARD_JWT_SECRET: secret,
        },
      );
      assert.equal(r.status, 0, r.stderr);
      const jwt = r.stdout.trim();
      assert.match(jwt, /^[\w-]+\.[\w-]+\.[\w-]+$/);
      const c = await TestClient.open(`${node.wsUrl}?token=${jwt}`);
      assert.equal((await c.subscribe('chat:lobby'))['ok'], true);
      assert.equal(
        (await c.request({ action: 'subscribe', channel: 'other', id: 'x' }))['code'],
        103,
      );
      // publish needs the API key; revoke takes the token's jti and closes the live connection
      assert.equal((await runAsync(['publish', 'chat:lobby', '1', '--url', node.url])).status, 1);
      const pub = await runAsync([
        'publish',
        'chat:lobby',
        '1',
        '--url',
        node.url,
        '--api-key',
        'ops:ops-secret-0123456789',
      ]);
      assert.equal(pub.status, 0, pub.stderr);
      await c.until(() => c.messages('chat:lobby').length === 1);
      const rv = await runAsync([
        'revoke',
        '--jti',
        'cli-jti-1',
        '--url',
        node.url,
        '--api-key',
        'ops:ops-secret-0123456789',
      ]);
      assert.equal(rv.status, 0, rv.stderr);
      assert.equal(await c.closed(), 3500);
    });

    it('token without a secret or a sub exits 2', () => {
      assert.equal(run(['token', '--sub', 'bob'], { SWITCHBOARD_JWT_SECRET: '' }).status, 2);
      assert.equal(run(['token'], { SWITCHBOARD_JWT_SECRET: secret }).status, 2);
      assert.equal(
        run(['token', '--sub', 'bob', '--cap', '{"x":["fly"]}'], { SWITCHBOARD_JWT_SECRET: secret })
          .status,
        2,
      );
    });

    it('revoke needs exactly one of --jti and --sub', () => {
      assert.equal(run(['revoke', '--url', node.url]).status, 2);
      assert.equal(run(['revoke', '--jti', 'a', '--sub', 'b', '--url', node.url]).status, 2);
    });
  });
});
