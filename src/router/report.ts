/** GET /v1/report: the router's complete state, the source of `weft status`, `weft ps` and `weft report`. */
import type { AllocationRecord } from '../common/api';

/** Field names are stable: scripts read them. */
export interface Report {
  version: string;
  router: {
    /** 48-bit peer name, MAC notation. */
    name: string;
    nickname: string;
    bridge: string;
    bridgeMac: string;
    mtu: number;
    socket: string;
  };
  ipam: {
    status: 'ready' | 'no space';
    range: string;
    defaultSubnet: string;
    free: number;
    /** Number of entries in `attachments` that are the bridge's own gateway addresses. */
    gateways: number;
    /** Bridge gateway addresses first, then pods by address. */
    attachments: AllocationRecord[];
  };
}
