/**
 * The deployment files (Dockerfile, deploy/compose, deploy/kubernetes) without a container engine
 * or a cluster: every YAML/JSON file parses, the Kubernetes objects pass the Kubernetes API
 * schemas (kubernetes-models), the env names are settings the server has, the drain numbers
 * agree with the grace periods, and a server started with the manifests' environment answers the
 * probes, the Dockerfile's HEALTHCHECK and the scrape path on the ports they name, then drains on
 * SIGTERM in time.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { parseAllDocuments, parseDocument } from 'yaml';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { Secret } from 'kubernetes-models/v1/Secret';
import { Service } from 'kubernetes-models/v1/Service';
import { envName, readEnv, resolveConfig, settings, type Config } from '../src/config.js';
import { CLI, eventually, freePort, requireBinary, startRedis } from './helpers.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const DEPLOY = join(ROOT, 'deploy');
const BASE = join(DEPLOY, 'kubernetes', 'base');
/** Written by the metrics work (#11 point 2); referenced here, checked once they exist. */
const PROVIDED_ELSEWHERE = [
  join(DEPLOY, 'grafana', 'switchboard.json'),
  join(DEPLOY, 'prometheus'),
];

type Obj = Record<string, unknown>;

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? files(join(dir, e.name)) : [join(dir, e.name)],
  );
}

function yamlFile(path: string): Obj {
  const doc = parseDocument(readFileSync(path, 'utf8'), { merge: true });
  assert.deepEqual(doc.errors, [], `${relative(ROOT, path)} parses`);
  return doc.toJS({ maxAliasCount: 100 }) as Obj;
}

const at = (o: unknown, ...path: (string | number)[]): unknown =>
  path.reduce<unknown>((v, k) => (v as Record<string | number, unknown> | undefined)?.[k], o);

const SETTING_ENV = new Set((Object.keys(settings) as (keyof Config)[]).map(envName));

/** Every SWITCHBOARD_* name is a setting, and the values are valid settings together. */
function assertSettings(env: Record<string, string>, where: string): Config {
  for (const name of Object.keys(env).filter((n) => n.startsWith('SWITCHBOARD_')))
    assert.ok(SETTING_ENV.has(name), `${where}: ${name} is a setting the server reads`);
  return resolveConfig([{ source: 'environment', values: readEnv(env) }]);
}

const k8s = (name: string): Obj => yamlFile(join(BASE, name));
const deployment = (): Obj => k8s('deployment.yaml');
const configMapEnv = (): Record<string, string> =>
  k8s('configmap.yaml')['data'] as Record<string, string>;
const secretEnv = (): Record<string, string> =>
  k8s('secret.yaml')['stringData'] as Record<string, string>;
const container = (): Obj => at(deployment(), 'spec', 'template', 'spec', 'containers', 0) as Obj;

/** The Dockerfile's instructions, continuation lines joined. */
function dockerfile(): { op: string; args: string }[] {
  const text = readFileSync(join(ROOT, 'Dockerfile'), 'utf8').replace(/\\\n/g, ' ');
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => {
      const [op = '', ...rest] = l.split(/\s+/);
      return { op: op.toUpperCase(), args: rest.join(' ') };
    });
}

describe('deployment files', () => {
  it('every YAML and JSON file under deploy/ parses', () => {
    const all = files(DEPLOY).filter((f) => /\.(ya?ml|json)$/.test(f));
    assert.ok(all.length >= 10, `${all.length} files`);
    for (const f of all) {
      const text = readFileSync(f, 'utf8');
      if (f.endsWith('.json')) JSON.parse(text);
      else
        for (const doc of parseAllDocuments(text))
          assert.deepEqual(doc.errors, [], `${relative(ROOT, f)} parses`);
    }
  });

  it('the Kubernetes objects are valid against the API schemas', () => {
    const kinds: Record<string, (o: Obj) => { validate(): void }> = {
      'apps/v1/Deployment': (o) => new Deployment(o),
      'v1/Service': (o) => new Service(o),
      'v1/ConfigMap': (o) => new ConfigMap(o),
      'v1/Secret': (o) => new Secret(o),
      'autoscaling/v2/HorizontalPodAutoscaler': (o) => new HorizontalPodAutoscaler(o as never),
      'policy/v1/PodDisruptionBudget': (o) => new PodDisruptionBudget(o),
    };
    const kustomization = k8s('kustomization.yaml');
    const listed = kustomization['resources'] as string[];
    const present = readdirSync(BASE).filter((f) => f !== 'kustomization.yaml');
    assert.deepEqual([...listed].sort(), present.sort(), 'kustomization lists every manifest');
    const seen = new Set<string>();
    for (const name of listed) {
      const o = k8s(name);
      const kind = `${String(o['apiVersion'])}/${String(o['kind'])}`;
      const make = kinds[kind];
      assert.ok(make, `${name}: ${kind} is a kind this test knows`);
      assert.doesNotThrow(() => make(o).validate(), `${name} is a valid ${kind}`);
      seen.add(kind);
    }
    assert.equal(seen.size, Object.keys(kinds).length, 'one of each kind');
  });

  it('names the same pods, ports, probes and settings the server has', () => {
    const d = deployment();
    const labels = at(d, 'spec', 'template', 'metadata', 'labels') as Obj;
    const selects = (sel: unknown): void => {
      for (const [k, v] of Object.entries(sel as Obj))
        assert.equal(labels[k], v, `selector ${k}=${String(v)} matches the pods`);
    };
    selects(at(d, 'spec', 'selector', 'matchLabels'));
    selects(at(k8s('service.yaml'), 'spec', 'selector'));
    selects(at(k8s('pdb.yaml'), 'spec', 'selector', 'matchLabels'));
    const c = container();
    const env = { ...configMapEnv(), ...secretEnv() };
    const config = assertSettings(env, 'ConfigMap + Secret');
    const port = at(c, 'ports', 0) as { name: string; containerPort: number };
    assert.equal(port.containerPort, config.port, 'containerPort is SWITCHBOARD_PORT');
    assert.equal(at(k8s('service.yaml'), 'spec', 'ports', 0, 'targetPort'), port.name);
    for (const probe of ['readinessProbe', 'livenessProbe', 'startupProbe'])
      assert.equal(at(c, probe, 'httpGet', 'port'), port.name, `${probe} uses the http port`);
    assert.equal(at(c, 'readinessProbe', 'httpGet', 'path'), '/readyz');
    assert.equal(at(c, 'livenessProbe', 'httpGet', 'path'), '/healthz');
    assert.equal(
      Number(at(d, 'spec', 'template', 'metadata', 'annotations', 'prometheus.io/port')),
      config.port,
    );
    assert.deepEqual(
      (at(c, 'envFrom') as Obj[]).map(
        (e) => at(e, 'configMapRef', 'name') ?? at(e, 'secretRef', 'name'),
      ),
      [at(k8s('configmap.yaml'), 'metadata', 'name'), at(k8s('secret.yaml'), 'metadata', 'name')],
    );
    assert.equal(at(k8s('hpa.yaml'), 'spec', 'scaleTargetRef', 'name'), at(d, 'metadata', 'name'));
    const perPod = (at(k8s('hpa.yaml'), 'spec', 'metrics') as Obj[]).find(
      (m) => m['type'] === 'Pods',
    );
    assert.equal(at(perPod, 'pods', 'metric', 'name'), 'switchboard_connections');
    assert.ok(
      Number(at(perPod, 'pods', 'target', 'averageValue')) < config.maxConnections,
      'the HPA adds pods before a pod sheds',
    );
    assert.equal(at(c, 'securityContext', 'readOnlyRootFilesystem'), true);
    assert.equal(at(d, 'spec', 'template', 'spec', 'securityContext', 'runAsNonRoot'), true);
  });

  it('preStop and terminationGracePeriodSeconds cover the drain (also in compose)', () => {
    const config = assertSettings({ ...configMapEnv(), ...secretEnv() }, 'ConfigMap');
    const command = at(container(), 'lifecycle', 'preStop', 'exec', 'command') as string[];
    assert.equal(command[0], 'sleep');
    const preStopS = Number(command[1]);
    const graceS = Number(
      at(deployment(), 'spec', 'template', 'spec', 'terminationGracePeriodSeconds'),
    );
    assert.ok(config.drainWindowMs < config.shutdownTimeoutMs, 'the drain ends before the timeout');
    // The kubelet's grace period runs from the preStop hook; the process exits by
    // shutdownTimeoutMs after SIGTERM; 5 s margin for start-up of the hook and the exit.
    assert.equal(graceS, preStopS + config.shutdownTimeoutMs / 1000 + 5);
    const compose = yamlFile(join(DEPLOY, 'compose', 'docker-compose.yml'));
    for (const node of ['node1', 'node2', 'node3']) {
      const svc = at(compose, 'services', node) as Obj;
      const env = svc['environment'] as Record<string, string>;
      const c = assertSettings(env, `compose ${node}`);
      assert.ok(
        Number(/^(\d+)s$/.exec(String(svc['stop_grace_period']))?.[1]) * 1000 > c.shutdownTimeoutMs,
        `${node}: stop_grace_period outlasts shutdownTimeoutMs`,
      );
      assert.equal(svc['read_only'], true);
      assert.equal(svc['init'], true);
    }
  });

  it('compose: the services, the files it mounts, NGINX pointed at the nodes', () => {
    const dir = join(DEPLOY, 'compose');
    const compose = yamlFile(join(dir, 'docker-compose.yml'));
    const services = at(compose, 'services') as Record<string, Obj>;
    assert.deepEqual(Object.keys(services).sort(), [
      'grafana',
      'nginx',
      'node1',
      'node2',
      'node3',
      'prometheus',
      'redis',
    ]);
    for (const [name, svc] of Object.entries(services)) {
      for (const v of (svc['volumes'] as string[] | undefined) ?? []) {
        const source = v.split(':')[0] as string;
        if (!source.startsWith('.')) continue; // a named volume
        const path = resolve(dir, source);
        if (
          PROVIDED_ELSEWHERE.includes(path) &&
          !existsSync(path) &&
          process.env['CI'] !== 'true'
        ) {
          process.stderr.write(`\n*** ${relative(ROOT, path)} not there yet (metrics work) ***\n`);
          continue;
        }
        assert.ok(existsSync(path), `${name} mounts ${relative(ROOT, path)}, which exists`);
      }
    }
    assert.equal(at(services, 'node1', 'build', 'context'), '../..');
    assert.ok(existsSync(resolve(dir, '../..', 'Dockerfile')));
    // The NGINX command's sed, applied here: every upstream server of the shipped config moves.
    const script = (at(services, 'nginx', 'command') as string[])[2] as string;
    let conf = readFileSync(join(DEPLOY, 'nginx', 'switchboard.conf'), 'utf8');
    for (const [, from, to] of script.matchAll(/-e 's\/([^/]+)\/([^/]+)\/'/g))
      conf = conf.replace(from as string, to as string);
    const upstream = /upstream switchboard \{([^}]*)\}/.exec(conf)?.[1] ?? '';
    const servers = [...upstream.matchAll(/^\s*server (\S+)/gm)].map((m) => m[1]);
    assert.deepEqual(servers, ['node1:8080', 'node2:8080', 'node3:8080']);
    const scrape = yamlFile(join(dir, 'prometheus.yml'));
    assert.deepEqual(at(scrape, 'scrape_configs', 0, 'static_configs', 0, 'targets'), [
      'node1:8080',
      'node2:8080',
      'node3:8080',
    ]);
    assert.equal(at(scrape, 'scrape_configs', 0, 'metrics_path'), '/metrics');
    if (!requireBinary('promtool')) {
      const r = spawnSync('promtool', [
        'check',
        'config',
        '--syntax-only',
        join(dir, 'prometheus.yml'),
      ]);
      assert.equal(r.status, 0, `promtool: ${String(r.stdout)}${String(r.stderr)}`);
    }
  });

  it('Dockerfile: multi-stage, non-root, tini, a HEALTHCHECK on /healthz, the built entry point', () => {
    const ins = dockerfile();
    const from = ins.filter((i) => i.op === 'FROM');
    assert.ok(from.length >= 2, 'multi-stage');
    const last = ins.slice(ins.lastIndexOf(from[from.length - 1] as { op: string; args: string }));
    const user = last.filter((i) => i.op === 'USER').at(-1)?.args;
    assert.ok(user !== undefined && user !== 'root' && user !== '0', `runs as ${user}`);
    assert.match(last.find((i) => i.op === 'ENTRYPOINT')?.args ?? '', /tini/);
    assert.match(last.find((i) => i.op === 'HEALTHCHECK')?.args ?? '', /\/healthz/);
    const cmd = JSON.parse(last.find((i) => i.op === 'CMD')?.args ?? '[]') as string[];
    assert.ok(existsSync(join(ROOT, cmd[1] as string)), `${cmd[1]} is what tsc -b builds`);
    const env = Object.fromEntries(
      [...(last.find((i) => i.op === 'ENV')?.args ?? '').matchAll(/(\w+)=(\S+)/g)].map((m) => [
        m[1],
        m[2],
      ]),
    ) as Record<string, string>;
    const config = assertSettings(env, 'Dockerfile ENV');
    assert.equal(last.find((i) => i.op === 'EXPOSE')?.args, String(config.port));
    for (const i of ins.filter((x) => x.op === 'COPY' && !x.args.startsWith('--from')))
      for (const src of i.args.split(/\s+/).slice(0, -1))
        assert.ok(existsSync(join(ROOT, src)), `COPY ${src} exists`);
  });

  it("a server with the manifests' environment answers their probes and drains on SIGTERM", async () => {
    const port = await freePort();
    const env: Record<string, string> = { ...configMapEnv(), ...secretEnv() };
    // The external Redis of the Secret is a placeholder: a private one here, or the embedded engine.
    let stopRedis = async (): Promise<void> => {};
    if (requireBinary('redis-server')) delete env['SWITCHBOARD_REDIS'];
    else {
      const redis = await startRedis();
      env['SWITCHBOARD_REDIS'] = redis.url;
      stopRedis = () => redis.stop(true);
    }
    // The machine is shared: the manifests' port (8080) is someone else's here.
    env['SWITCHBOARD_PORT'] = String(port);
    env['SWITCHBOARD_HOST'] = '127.0.0.1';
    const clean = Object.fromEntries(
      Object.entries(process.env).filter(([k]) => !k.startsWith('SWITCHBOARD_')),
    );
    const child = spawn(process.execPath, [CLI, 'serve'], {
      env: { ...clean, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    try {
      await eventually(
        () => {
          if (child.exitCode !== null) throw new Error(`exited: ${out}`);
          return out.includes('switchboard listening');
        },
        10_000,
        'the server to listen',
      );
      const c = container();
      for (const probe of ['startupProbe', 'livenessProbe', 'readinessProbe']) {
        const path = at(c, probe, 'httpGet', 'path') as string;
        const res = await fetch(`http://127.0.0.1:${port}${path}`);
        assert.equal(res.status, 200, `${probe} ${path}: ${await res.text()}`);
      }
      const scrapePath = at(
        deployment(),
        'spec',
        'template',
        'metadata',
        'annotations',
        'prometheus.io/path',
      ) as string;
      const metrics = await (await fetch(`http://127.0.0.1:${port}${scrapePath}`)).text();
      assert.match(metrics, /^switchboard_connections[{ ]/m, 'the HPA metric is exported');
      // The Dockerfile's HEALTHCHECK command, run as the container would.
      const hc = dockerfile().find((i) => i.op === 'HEALTHCHECK')?.args ?? '';
      const argv = JSON.parse(hc.slice(hc.indexOf('CMD') + 3).trim()) as string[];
      const r = spawnSync(
        argv[0] === 'node' ? process.execPath : (argv[0] as string),
        argv.slice(1),
        {
          env: { ...clean, SWITCHBOARD_PORT: String(port) },
        },
      );
      assert.equal(r.status, 0, `HEALTHCHECK: ${String(r.stderr)}`);
      const config = assertSettings(configMapEnv(), 'ConfigMap');
      const t0 = Date.now();
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      const [code] = (await exited) as [number | null];
      assert.equal(code, 0);
      assert.ok(Date.now() - t0 < config.shutdownTimeoutMs, 'exited within shutdownTimeoutMs');
      assert.match(out, /draining: not ready/);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await stopRedis();
    }
  });
});
