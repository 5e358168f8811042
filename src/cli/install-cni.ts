/**
 * `weft install-cni`: puts the plugin and a conflist where runtimes look for them, each
 * written to a temporary name and renamed, so a runtime never runs or reads a half-written
 * file (libcni gives up after a few "text file busy"). The plugin is this very executable
 * under the name weft-net (src/bin/main.ts picks the plugin by that name).
 */
import { promises as fs, constants } from 'node:fs';
import { join } from 'node:path';
import { defaultPlugin, defaultWeftBinary, isSea } from '../common/binaries';
import { ConfigError } from '../common/errors';
import { writeFileAtomic } from '../common/fsutil';
import { DEFAULT_SOCKET } from '../common/netconf';
import { parse, type CliIo } from '../common/command';

export const INSTALL_HELP = `Usage: weft install-cni [options]

Installs the weft-net plugin and a network config for container runtimes.

Options:
  --bin-dir DIR     where the plugin goes (default /opt/cni/bin)
  --conf-dir DIR    where the conflist goes (default /etc/cni/net.d)
  --conf-name NAME  conflist file name (default 10-weft.conflist)
  --socket PATH     router socket the plugin talks to (default ${DEFAULT_SOCKET})
  --plugin PATH     the executable to install as weft-net (default: this weft itself)
  --force           replace an existing conflist

Example:
  weft install-cni --bin-dir /opt/cni/bin --conf-dir /etc/cni/net.d
`;

export function conflist(socket: string): string {
  return (
    JSON.stringify(
      {
        cniVersion: '1.0.0',
        cniVersions: ['0.4.0', '1.0.0', '1.1.0'],
        name: 'weft',
        plugins: [
          { type: 'weft-net', bridge: 'weave', hairpinMode: true, socket },
          { type: 'portmap', capabilities: { portMappings: true }, snat: true },
        ],
      },
      null,
      2,
    ) + '\n'
  );
}

export async function installCni(argv: string[], io: CliIo): Promise<number> {
  const { values } = parse(
    argv,
    {
      'bin-dir': { type: 'string' },
      'conf-dir': { type: 'string' },
      'conf-name': { type: 'string' },
      socket: { type: 'string' },
      plugin: { type: 'string' },
      force: { type: 'boolean' },
    },
    false,
  );
  if (values.help) {
    io.out(INSTALL_HELP);
    return 0;
  }
  const binDir = (values['bin-dir'] as string | undefined) ?? '/opt/cni/bin';
  const confDir = (values['conf-dir'] as string | undefined) ?? '/etc/cni/net.d';
  const confName = (values['conf-name'] as string | undefined) ?? '10-weft.conflist';
  if (!/^[\w.-]+\.conflist$/.test(confName)) throw new ConfigError('--conf-name', `"${confName}" must be a file name ending in .conflist`);
  const plugin = (values.plugin as string | undefined) ?? (isSea() ? process.execPath : defaultPlugin(defaultWeftBinary()));
  try {
    await fs.access(plugin, constants.X_OK);
  } catch {
    throw new ConfigError('--plugin', `${plugin} is not an executable file`);
  }
  await fs.mkdir(binDir, { recursive: true });
  await writeFileAtomic(join(binDir, 'weft-net'), await fs.readFile(plugin), 0o755);
  io.out(`installed ${join(binDir, 'weft-net')}\n`);
  await fs.mkdir(confDir, { recursive: true });
  const conf = join(confDir, confName);
  const exists = await fs.access(conf).then(
    () => true,
    () => false,
  );
  if (exists && !values.force) io.out(`kept ${conf} (exists; --force replaces it)\n`);
  else {
    await writeFileAtomic(conf, conflist((values.socket as string | undefined) ?? DEFAULT_SOCKET), 0o644);
    io.out(`wrote ${conf}\n`);
  }
  return 0;
}
