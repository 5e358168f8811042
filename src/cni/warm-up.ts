/**
 * Runs the plugin's I/O-free code paths once while the V8 startup snapshot is being built.
 *
 * Why: V8 keeps the bytecode of every function compiled before the snapshot is taken, and
 * compiles the rest lazily, on every CNI call, since every call starts from the snapshot
 * afresh. Parsing the config (zod), building the request, reading the answer and writing the
 * result in each spec version are what ADD, CHECK and DEL run; run here once, their bytecode
 * ships in the executable. Nothing here touches the network or the environment, and no file
 * but one stat of a path that does not exist.
 */
import { parseResponse } from '../common/client';
import { errorFromBody, EnvError } from '../common/errors';
import { createLogger } from '../common/log';
import { parseNetConf } from '../common/netconf';
import { verifyAttachment } from '../common/pod-check';
import { addRequest } from './add';
import type { Ctx } from './attachment';
import { checkRequest } from './check';
import { parseCommand, parseEnv } from './env';
import { toCniError } from './errors';
import { runPlugin } from './main';
import { resultOf } from './result';
import { Trace } from './trace';
import { convertResult, requireVersion } from './version';

const NETNS = '/var/run/netns/warm-up';

export function warmUp(): void {
  const env = {
    CNI_COMMAND: 'ADD',
    CNI_CONTAINERID: 'warm-up',
    CNI_NETNS: NETNS,
    CNI_IFNAME: 'eth0',
    CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=pod;K8S_POD_UID=u;K8S_POD_INFRA_CONTAINER_ID=warm-up',
  };
  const conf = parseNetConf(
    JSON.stringify({
      cniVersion: '1.0.0',
      name: 'warm-up',
      type: 'weft-net',
      bridge: 'weave',
      mtu: 1450,
      hairpinMode: true,
      socket: '/run/weft/weft.sock',
      logLevel: 'warn',
      ipam: { subnet: '10.32.0.0/12' },
      dns: {},
      args: { cni: { ips: ['10.32.0.9/12'] } },
      runtimeConfig: { portMappings: [], mac: '02:00:00:00:00:01' },
    }),
  );
  for (const verb of ['ADD', 'CHECK', 'DEL'] as const) {
    requireVersion(conf.cniVersion, verb);
    const e = parseEnv(parseCommand({ ...env, CNI_COMMAND: verb })!, { ...env, CNI_COMMAND: verb });
    const log = createLogger({ name: 'weft-net', level: 'warn' }).child({ verb, network: conf.name, containerId: e.containerId });
    const ctx: Ctx = { env: e, conf, log, trace: new Trace({}) };
    const req = addRequest(ctx);
    const answer = parseResponse(
      Buffer.from(
        'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\nConnection: close\r\n\r\n{}',
      ),
    );
    JSON.parse(answer?.body ?? '{}');
    const result = resultOf(ctx, {
      address: req.address ?? '10.32.0.9/12',
      gateway: '10.32.0.1',
      mtu: 1450,
      bridge: { name: 'weave', mac: '02:00:00:00:00:02' },
      hostVeth: { name: 'vethwe000000000', mac: '02:00:00:00:00:03' },
      mac: '02:00:00:00:00:01',
    });
    for (const v of ['1.1.0', '0.4.0']) JSON.stringify(convertResult(result, v));
    const withPrev = { ...ctx, conf: { ...conf, prevResult: JSON.parse(JSON.stringify(result)) } };
    const chk = checkRequest(withPrev);
    verifyAttachment(
      { containerId: 'warm-up', ifname: 'eth0', netns: NETNS, bridge: 'weave', hostName: 'vethwe000000000', record: { address: chk.addresses[0]! }, addresses: chk.addresses },
      { bridge: { up: true }, host: { master: 'weave' }, pod: { up: true, addresses: chk.addresses, defaultVia: [] } },
    );
  }
  // the entry itself, to its first I/O: VERSION, and ADD up to the namespace check (a path
  // that does not exist: one stat, nothing else)
  // (logLevel silent: a logged failure would load pino into the snapshot)
  const io = { readStdin: () => JSON.stringify({ ...conf, logLevel: 'silent' }), stdout: () => undefined, stderr: () => undefined };
  void runPlugin({ ...io, env: { CNI_COMMAND: 'VERSION' } });
  void runPlugin({ ...io, env: { ...env, CNI_NETNS: `${NETNS}/does-not-exist` } });
  JSON.stringify(toCniError(new EnvError('CNI_NETNS', 'warm-up'), 'ADD', '1.0.0'));
  JSON.stringify(toCniError(errorFromBody({ error: { kind: 'no-space', message: 'warm-up' } }), 'ADD', '1.0.0'));
}
