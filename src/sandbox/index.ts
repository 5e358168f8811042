/** `weft sandbox` and the e2e tests: hosts, routers and pods in network namespaces on one machine. */
export * from './sandbox';
export * from './base';
export * from './types';
export * from './options';
export * from './state';
export * from './format';
export * from './neigh';
export { neighbourBudget, arpTableLimit } from './ping';
export { describeMesh, fmtMs } from './util';
export { mapPool } from './pool';
export * from './kube';
export * from './kube-pods';
export * from './probe';
export * from './hosts';
