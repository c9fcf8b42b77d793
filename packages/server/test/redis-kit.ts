/**
 * Real multi-process Redis topologies for tests: a Redis Cluster of 3 masters with a replica each
 * (built with `redis-cli --cluster create`), and 1 master + 1 replica watched by 3 Sentinels.
 * Every process is started here on free loopback ports and stopped by pid; nothing is mocked.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { fanoutManyLua } from '../src/broker/redis-scripts.js';
import { eventually, freePort } from './helpers.js';

/** One redis-server (or sentinel) process. */
export interface KitProcess {
  readonly port: number;
  readonly pid: number;
  /** Whether the process is running. */
  readonly alive: boolean;
  /** redis-cli against this process; returns stdout. */
  cli(...args: string[]): string;
  /** SIGKILL (`hard`) or SIGTERM, waiting for the exit. */
  stop(hard?: boolean): Promise<void>;
  /** Starts it again with the same port and config (cluster state file kept). */
  restart(): Promise<void>;
}

function cliOn(port: number, args: string[]): string {
  const r = spawnSync('redis-cli', ['-p', String(port), ...args], { timeout: 10_000 });
  if (r.status !== 0)
    throw new Error(`redis-cli -p ${port} ${args.join(' ')} failed: ${r.stderr?.toString()}`);
  return r.stdout.toString();
}

function pings(port: number): boolean {
  return spawnSync('redis-cli', ['-p', String(port), 'ping'], { timeout: 2000 })
    .stdout?.toString()
    .trim()
    .startsWith('PONG');
}

async function launch(port: number, args: string[]): Promise<KitProcess> {
  let child: ChildProcess;
  const start = async (): Promise<void> => {
    child = spawn('redis-server', args, { stdio: 'ignore' });
    try {
      await eventually(() => pings(port), 10_000, `redis on ${port}`);
    } catch (err) {
      child.kill('SIGKILL');
      throw err;
    }
  };
  await start();
  const stop = async (hard = false): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.kill(hard ? 'SIGKILL' : 'SIGTERM');
    await exited;
  };
  return {
    port,
    get pid() {
      return child.pid ?? -1;
    },
    get alive() {
      return child.exitCode === null && child.signalCode === null;
    },
    cli: (...a) => cliOn(port, a),
    stop,
    restart: async () => {
      await stop();
      await start();
    },
  };
}

const COMMON = ['--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--loglevel', 'warning'];

export interface RedisClusterKit {
  /** All six nodes; masters first as created (roles change on failover). */
  readonly nodes: readonly KitProcess[];
  /** `host:port` of every node, for --redis-cluster. */
  readonly seeds: readonly string[];
  /** The node currently serving `slot` as master. */
  masterOf(slot: number): KitProcess;
  /** A replica of the master serving `slot`. */
  replicaOf(slot: number): KitProcess;
  /** The slot of a key (CLUSTER KEYSLOT). */
  slotOf(key: string): number;
  /**
   * Resolves once every live node reports cluster_state:ok and every slot range has a live master
   * (and a live replica unless `replicas` is false).
   */
  waitHealthy(timeoutMs?: number, replicas?: boolean): Promise<void>;
  /** Moves `slot` with its keys to master `to` (SETSLOT IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE). */
  migrateSlot(slot: number, to: KitProcess): void;
  stop(): Promise<void>;
}

/** A 3-master / 3-replica Redis Cluster on free ports. */
export async function startRedisCluster(): Promise<RedisClusterKit> {
  const dir = mkdtempSync(join(tmpdir(), 'sb-cluster-'));
  const nodes: KitProcess[] = [];
  try {
    for (let i = 0; i < 6; i++) {
      const port = await freePort();
      const bus = await freePort();
      nodes.push(
        await launch(port, [
          '--port',
          String(port),
          '--cluster-enabled',
          'yes',
          '--cluster-port',
          String(bus),
          '--cluster-config-file',
          join(dir, `nodes-${port}.conf`),
          '--cluster-node-timeout',
          '1000',
          '--dir',
          dir,
          ...COMMON,
        ]),
      );
    }
    const r = spawnSync(
      'redis-cli',
      [
        '--cluster',
        'create',
        ...nodes.map((n) => `127.0.0.1:${n.port}`),
        '--cluster-replicas',
        '1',
        '--cluster-yes',
      ],
      { timeout: 30_000 },
    );
    if (r.status !== 0)
      throw new Error(
        `redis-cli --cluster create failed: ${r.stdout.toString()}${r.stderr.toString()}`,
      );
  } catch (err) {
    await Promise.all(nodes.map((n) => n.stop(true)));
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const byPort = new Map(nodes.map((n) => [n.port, n]));
  /** CLUSTER SHARDS is Redis 7; CLUSTER SLOTS is enough here: [start, end, [host, port, id], replicas...]. */
  const slots = (): { start: number; end: number; master: number; replicas: number[] }[] => {
    const live = nodes.find((n) => n.alive);
    if (live === undefined) throw new Error('no live cluster node');
    const out = cliOn(live.port, ['--json', 'CLUSTER', 'SLOTS']);
    const parsed = JSON.parse(out) as [
      number,
      number,
      [string, number, string],
      ...[string, number, string][],
    ][];
    return parsed.map(([start, end, master, ...replicas]) => ({
      start,
      end,
      master: master[1],
      replicas: replicas.map((x) => x[1]),
    }));
  };
  const range = (slot: number): { master: number; replicas: number[] } => {
    const r = slots().find((s) => s.start <= slot && slot <= s.end);
    if (r === undefined) throw new Error(`slot ${slot} is not served`);
    return r;
  };
  const kit: RedisClusterKit = {
    nodes,
    seeds: nodes.map((n) => `127.0.0.1:${n.port}`),
    masterOf: (slot) => byPort.get(range(slot).master) as KitProcess,
    replicaOf: (slot) => {
      const rep = range(slot)
        .replicas.map((p) => byPort.get(p))
        .find((n) => n?.alive === true);
      if (rep === undefined) throw new Error(`slot ${slot} has no live replica`);
      return rep;
    },
    slotOf: (key) => Number(cliOn((nodes[0] as KitProcess).port, ['CLUSTER', 'KEYSLOT', key])),
    waitHealthy: (timeoutMs = 20_000, replicas = true) =>
      eventually(
        () =>
          nodes
            .filter((n) => n.alive)
            .every((n) => {
              try {
                return n.cli('CLUSTER', 'INFO').includes('cluster_state:ok');
              } catch {
                return false;
              }
            }) &&
          slots().reduce((sum, s) => sum + (s.end - s.start + 1), 0) === 16384 &&
          slots().every(
            (s) =>
              byPort.get(s.master)?.alive === true &&
              (!replicas || s.replicas.some((p) => byPort.get(p)?.alive === true)),
          ),
        timeoutMs,
        'the cluster to be healthy',
        100,
      ),
    migrateSlot: (slot, to) => {
      const from = kit.masterOf(slot);
      const id = (n: KitProcess): string => n.cli('CLUSTER', 'MYID').trim();
      const [fromId, toId] = [id(from), id(to)];
      to.cli('CLUSTER', 'SETSLOT', String(slot), 'IMPORTING', fromId);
      from.cli('CLUSTER', 'SETSLOT', String(slot), 'MIGRATING', toId);
      for (;;) {
        const keys = from
          .cli('CLUSTER', 'GETKEYSINSLOT', String(slot), '100')
          .split('\n')
          .filter((k) => k !== '');
        if (keys.length === 0) break;
        from.cli('MIGRATE', '127.0.0.1', String(to.port), '', '0', '5000', 'KEYS', ...keys);
      }
      // The importing side first, then the source, then the other masters (the documented order).
      const masters = new Set(slots().map((s) => s.master));
      const rest = nodes.filter((x) => x.alive && masters.has(x.port) && x !== to && x !== from);
      for (const n of [to, from, ...rest]) n.cli('CLUSTER', 'SETSLOT', String(slot), 'NODE', toId);
    },
    stop: async () => {
      await Promise.all(nodes.map((n) => n.stop(true)));
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await kit.waitHealthy();
  return kit;
}

export interface SentinelKit {
  readonly name: string;
  readonly master: KitProcess;
  readonly replica: KitProcess;
  readonly sentinels: readonly KitProcess[];
  /** `host:port` of every sentinel, for --redis-sentinels. */
  readonly seeds: readonly string[];
  /** The data node the sentinels currently name as master. */
  currentMaster(): KitProcess;
  stop(): Promise<void>;
}

/** 1 master + 1 replica + 3 sentinels (quorum 2), tuned to fail over in about 2 s. */
export async function startSentinelKit(name = 'sbmaster'): Promise<SentinelKit> {
  const dir = mkdtempSync(join(tmpdir(), 'sb-sentinel-'));
  const started: KitProcess[] = [];
  try {
    const mp = await freePort();
    // Each in its own --dir: a replica's full sync writes dump.rdb there even with --save ''
    // (it was landing in the package directory).
    const master = await launch(mp, ['--port', String(mp), '--dir', dir, ...COMMON]);
    started.push(master);
    const rp = await freePort();
    const replica = await launch(rp, [
      '--port',
      String(rp),
      '--replicaof',
      '127.0.0.1',
      String(mp),
      '--dir',
      dir,
      '--dbfilename',
      `dump-${rp}.rdb`,
      ...COMMON,
    ]);
    started.push(replica);
    await eventually(
      () => replica.cli('INFO', 'replication').includes('master_link_status:up'),
      10_000,
      'the replica to sync',
    );
    const sentinels: KitProcess[] = [];
    for (let i = 0; i < 3; i++) {
      const sp = await freePort();
      const conf = join(dir, `sentinel-${sp}.conf`);
      writeFileSync(
        conf,
        [
          `port ${sp}`,
          'bind 127.0.0.1',
          `dir ${dir}`,
          `sentinel monitor ${name} 127.0.0.1 ${mp} 2`,
          `sentinel down-after-milliseconds ${name} 1000`,
          `sentinel failover-timeout ${name} 5000`,
          `sentinel parallel-syncs ${name} 1`,
          '',
        ].join('\n'),
      );
      const s = await launch(sp, [conf, '--sentinel', '--loglevel', 'warning']);
      sentinels.push(s);
      started.push(s);
    }
    // Each sentinel must know the replica and the other sentinels before a failover can be agreed.
    await eventually(
      () =>
        sentinels.every((s) => {
          const info = s.cli('SENTINEL', 'MASTER', name);
          return /num-other-sentinels\n2\n/.test(info) && /num-slaves\n1\n/.test(info);
        }),
      20_000,
      'sentinels to discover each other and the replica',
      100,
    );
    const data = [master, replica];
    return {
      name,
      master,
      replica,
      sentinels,
      seeds: sentinels.map((s) => `127.0.0.1:${s.port}`),
      currentMaster: () => {
        const live = sentinels.find((s) => s.alive) as KitProcess;
        const port = Number(
          live.cli('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', name).trim().split('\n')[1],
        );
        return data.find((d) => d.port === port) as KitProcess;
      },
      stop: async () => {
        await Promise.all(started.map((p) => p.stop(true)));
        rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await Promise.all(started.map((p) => p.stop(true)));
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

/**
 * Makes a redis-server log every top-level command in its SLOWLOG (threshold 0), emptied now,
 * for topLevelCommands. `cli` runs redis-cli against it.
 */
export function logEveryCommand(cli: (...args: string[]) => string): void {
  cli('CONFIG', 'SET', 'slowlog-log-slower-than', '0');
  cli('CONFIG', 'SET', 'slowlog-max-len', '100000');
  cli('SLOWLOG', 'RESET');
}

/**
 * The top-level commands a redis-server ran since logEveryCommand, by kind: those a client sent,
 * not those a script called (INFO commandstats counts both alike: a PUBLISH that fanoutManyLua
 * makes is a PUBLISH there; the SLOWLOG names the client of a script's commands `?:0`). The SLOWLOG
 * does not log a blocking command such as WAIT. `fanoutMany`: calls of that script (EVALSHA of its
 * SHA, or the EVAL that loads it); `scripts`: every script call.
 */
export async function topLevelCommands(
  port: number,
): Promise<{ publish: number; fanoutMany: number; scripts: number }> {
  const sha = createHash('sha1').update(fanoutManyLua('PUBLISH')).digest('hex');
  const conn = new Redis({ port, host: '127.0.0.1', lazyConnect: true });
  try {
    await conn.connect();
    const log = (await conn.call('SLOWLOG', 'GET', '-1')) as [
      unknown,
      unknown,
      unknown,
      string[],
      string,
    ][];
    const out = { publish: 0, fanoutMany: 0, scripts: 0 };
    for (const [, , , args, client] of log) {
      if (client === '?:0') continue;
      const cmd = (args[0] ?? '').toLowerCase();
      if (cmd === 'publish') out.publish++;
      else if (cmd === 'evalsha' || cmd === 'eval') {
        out.scripts++;
        const script = args[1] ?? '';
        if (script === sha || script.startsWith('-- switchboard fanoutManyLua')) out.fanoutMany++;
      }
    }
    return out;
  } finally {
    conn.disconnect();
  }
}
