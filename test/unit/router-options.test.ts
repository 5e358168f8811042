/** `weft router` options: flags, WEFT_* variables, timing knobs, all validated in one place. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError } from '../../src/common/errors';
import { envName, FLAGS, parseTimings, routerHelp, TIMINGS } from '../../src/router/options';
import { routerOptions } from '../../src/cli/router-cmd';

const fieldOf = (f: () => unknown) => {
  try {
    f();
  } catch (e) {
    assert.ok(e instanceof ConfigError, String(e));
    return e.field;
  }
  assert.fail('no error');
};

test('defaults: consensus over the peers given plus one, the range, the bridge, 200 connections', () => {
  const c = routerOptions(['10.0.0.2', '--peers', '10.0.0.3,10.0.0.4'], {})!;
  assert.deepEqual(c.peers, ['10.0.0.2', '10.0.0.3', '10.0.0.4']);
  assert.deepEqual(c.init, { mode: 'consensus', size: 4 });
  assert.equal(c.ipallocRange, '10.32.0.0/12');
  assert.equal(c.bridge, 'weave');
  assert.equal(c.connLimit, 200);
  assert.equal(c.masquerade, true);
  assert.equal(c.timings.handshakeMs, 5000);
});

test('every flag reads a WEFT_* variable; a flag on the command line wins', () => {
  const env = { WEFT_IPALLOC_RANGE: '10.0.0.0/8', WEFT_PEERS: 'a b,c', WEFT_NO_MASQ: 'true', WEFT_CONN_LIMIT: '7', WEFT_IFACE: 'eth.*', WEFT_BRIDGE: 'br9' };
  const c = routerOptions(['--bridge', 'weave2'], env)!;
  assert.equal(c.ipallocRange, '10.0.0.0/8');
  assert.deepEqual(c.peers, ['a', 'b', 'c']);
  assert.equal(c.masquerade, false);
  assert.equal(c.connLimit, 7);
  assert.equal(c.iface, 'eth.*');
  assert.equal(c.bridge, 'weave2', 'the flag wins over WEFT_BRIDGE');
  for (const flag of Object.keys(FLAGS)) assert.match(envName(flag), /^WEFT_[A-Z_]+$/);
  assert.equal(envName('iface-can-reach'), 'WEFT_IFACE_CAN_REACH');
});

test('bad values name the flag, or the variable they came from', () => {
  assert.equal(fieldOf(() => routerOptions(['--port', 'x'], {})), '--port');
  assert.equal(fieldOf(() => routerOptions([], { WEFT_PORT: 'x' })), 'WEFT_PORT');
  assert.equal(fieldOf(() => routerOptions([], { WEFT_NO_MASQ: 'maybe' })), 'WEFT_NO_MASQ');
  assert.equal(fieldOf(() => routerOptions(['--mtu', '100'], {})), '--mtu');
  assert.equal(fieldOf(() => routerOptions(['--advertise-addr', 'host1'], {})), '--advertise-addr');
  assert.equal(fieldOf(() => routerOptions(['--iface-can-reach', 'x'], {})), '--iface-can-reach');
  assert.equal(fieldOf(() => routerOptions(['--ipalloc-range', '10.0.0.0/33'], {})), '--ipalloc-range');
  assert.equal(fieldOf(() => routerOptions(['--ipalloc-default-subnet', '192.168.0.0/24'], {})), '--ipalloc-default-subnet');
  assert.equal(fieldOf(() => routerOptions(['--ipalloc-init', 'seed=nope'], {})), '--ipalloc-init');
  assert.equal(fieldOf(() => routerOptions(['--log-level', 'loud'], {})), '--log-level');
  assert.equal(fieldOf(() => routerOptions(['--service-cidr', '10.96.0.0/12,10.0.0.0/40'], {})), '--service-cidr');
  assert.equal(fieldOf(() => routerOptions([], { WEFT_SERVICE_CIDR: 'services' })), 'WEFT_SERVICE_CIDR');
});

test('--service-cidr: Service ranges for NetworkPolicy, a list like every list flag', () => {
  assert.deepEqual(routerOptions(['--service-cidr', '10.96.0.0/12,10.100.0.0/16'], {})!.serviceCidr, ['10.96.0.0/12', '10.100.0.0/16']);
  assert.deepEqual(routerOptions([], { WEFT_SERVICE_CIDR: '10.96.0.0/12' })!.serviceCidr, ['10.96.0.0/12']);
  assert.equal(routerOptions([], {})!.serviceCidr, undefined);
});

test('timing knobs: defaults, overrides, and an error naming the variable for a bad value', () => {
  const t = parseTimings({ WEFT_HEARTBEAT_MS: '300' });
  assert.equal(t.heartbeatMs, 300);
  assert.equal(t.retryMaxMs, 360_000);
  for (const [name, dflt] of Object.values(TIMINGS)) assert.ok(dflt > 0, name);
  assert.equal(fieldOf(() => parseTimings({ WEFT_PROBE_MS: '0' })), 'WEFT_PROBE_MS');
  assert.equal(fieldOf(() => parseTimings({ WEFT_PROGRAM_MS: '1s' })), 'WEFT_PROGRAM_MS');
  assert.equal(routerOptions([], { WEFT_SPACE_TIMEOUT_MS: '1500' })!.timings.spaceTimeoutMs, 1500);
});

test('the help lists every flag and says where the variables are', () => {
  const h = routerHelp();
  for (const flag of Object.keys(FLAGS)) assert.match(h, new RegExp(`--${flag}\\b`));
  assert.match(h, /WEFT_IPALLOC_RANGE/);
  assert.equal(routerOptions(['--help'], {}), undefined);
});

test('the password: a file without its trailing newline, else WEFT_PASSWORD; an empty or unreadable file names the flag; trusted subnets checked', async () => {
  const { mkdtempSync, writeFileSync, rmSync } = await import('node:fs');
  const { join } = await import('node:path');
  const { tmpdir } = await import('node:os');
  const dir = mkdtempSync(join(tmpdir(), 'weft-pw-'));
  try {
    const f = join(dir, 'pw');
    writeFileSync(f, 'sesame\n');
    assert.equal(routerOptions(['--password-file', f], {})!.password, 'sesame');
    writeFileSync(f, 'two words\r\n\n');
    assert.equal(routerOptions(['--password-file', f], {})!.password, 'two words\r\n', 'only the last newline is dropped');
    assert.equal(routerOptions([], { WEFT_PASSWORD: 'from env' })!.password, 'from env');
    assert.equal(routerOptions([], {})!.password, undefined);
    assert.equal(routerOptions(['--password-file', f], { WEFT_PASSWORD: 'other' })!.password, 'two words\r\n', 'the file wins');
    writeFileSync(f, '\n');
    assert.throws(() => routerOptions(['--password-file', f], {}), /--password-file: .* is empty/);
    assert.equal(fieldOf(() => routerOptions([], { WEFT_PASSWORD_FILE: join(dir, 'missing') })), 'WEFT_PASSWORD_FILE');
    assert.throws(() => routerOptions(['--password-file', join(dir, 'missing')], {}), /--password-file: cannot read .*ENOENT/);
    assert.deepEqual(routerOptions(['--trusted-subnets', '10.0.0.0/8,192.168.1.0/24'], {})!.trustedSubnets, ['10.0.0.0/8', '192.168.1.0/24']);
    assert.equal(fieldOf(() => routerOptions(['--trusted-subnets', '10.0.0.0/8,nonsense'], {})), '--trusted-subnets');
    assert.equal(fieldOf(() => routerOptions([], { WEFT_TRUSTED_SUBNETS: '300.0.0.0/8' })), 'WEFT_TRUSTED_SUBNETS');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('--sleeve-carrier: tcp by default, udp on request, anything else names the flag; the stream port (port + 4) must exist', () => {
  assert.equal(routerOptions([], {})!.sleeveCarrier, 'tcp');
  assert.equal(routerOptions(['--sleeve-carrier', 'udp'], {})!.sleeveCarrier, 'udp');
  assert.equal(routerOptions([], { WEFT_SLEEVE_CARRIER: 'udp' })!.sleeveCarrier, 'udp');
  assert.throws(() => routerOptions(['--sleeve-carrier', 'quic'], {}), /--sleeve-carrier/);
  assert.throws(() => routerOptions(['--port', '65533'], {}), /--port: 65533: with --sleeve-carrier tcp the stream uses the port \+ 4/);
  assert.equal(routerOptions(['--port', '65533', '--sleeve-carrier', 'udp'], {})!.port, 65533);
});
