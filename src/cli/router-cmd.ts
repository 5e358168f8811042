/** `weft router`: runs the router in the foreground until SIGTERM or SIGINT. */
import { Router } from '../router/router';
import { FLAGS, routerConfig, routerHelp, type RouterConfig } from '../router/options';
import { parse, type Options } from '../common/command';

export const ROUTER_HELP = routerHelp();

/** The configuration from the command line and WEFT_* variables; undefined for --help. */
export function routerOptions(argv: string[], env: NodeJS.ProcessEnv = process.env): RouterConfig | undefined {
  const spec: Options = {};
  for (const [flag, s] of Object.entries(FLAGS)) spec[flag] = { type: s.kind === 'bool' ? 'boolean' : 'string' };
  const { values, positionals } = parse(argv, spec);
  if (values.help) return undefined;
  return routerConfig(values, positionals, env);
}

export async function runRouter(config: RouterConfig): Promise<number> {
  let fatal: (why: string) => void = () => undefined;
  const router = new Router(config, (why) => fatal(why));
  try {
    await router.start();
  } catch (e) {
    router.log.error({ err: (e as Error).message }, 'router failed to start');
    await router.stop().catch(() => undefined);
    router.log.flush();
    throw e;
  }
  return new Promise<number>((resolve) => {
    const stop = (sig: string) => {
      router.log.info({ signal: sig }, 'stopping');
      // exit once stopped: a wait still pending (an allocation's deadline) must not hold the process
      void router.stop().then(
        () => {
          resolve(0);
          setImmediate(() => process.exit(0));
        },
        () => process.exit(1),
      );
    };
    // a part found the router cannot go on as it is: stop cleanly, exit non-zero, be restarted
    fatal = (why) => {
      router.log.error({ why }, 'stopping: restart required');
      void router.stop().finally(() => process.exit(2));
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
}
