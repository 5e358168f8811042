/** `weft sandbox` and the e2e tests: hosts, routers and pods in network namespaces on one machine. */
export * from './sandbox';
export * from './options';
export * from './state';
export * from './format';
export { mapPool } from './pool';
