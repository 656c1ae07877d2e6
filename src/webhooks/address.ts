/**
 * Which addresses a webhook may be POSTed to. Loopback, private, link-local (and the other
 * non-public ranges below) are refused unless PP_WEBHOOK_ALLOW_PRIVATE=true, so a tenant's URL
 * cannot reach the service's own network. The check runs where the connection is made
 * (`addressToDial`: the attempt resolves the name, checks every address, and the connection
 * is pinned to the checked one), so a name that resolved to a public address when the
 * endpoint was saved and to 127.0.0.1 now (DNS rebinding) is refused too.
 */
import dns from "node:dns";
import net from "node:net";

const BLOCKED = new net.BlockList();
for (
  const [subnet, prefix] of [
    ["0.0.0.0", 8], // "this" network
    ["10.0.0.0", 8],
    ["100.64.0.0", 10], // carrier-grade NAT
    ["127.0.0.0", 8],
    ["169.254.0.0", 16], // link-local (cloud metadata: 169.254.169.254)
    ["172.16.0.0", 12],
    ["192.0.0.0", 24],
    ["192.168.0.0", 16],
    ["198.18.0.0", 15], // benchmarking
    ["224.0.0.0", 4], // multicast
    ["240.0.0.0", 4], // reserved, broadcast
  ] as const
) BLOCKED.addSubnet(subnet, prefix, "ipv4");
for (
  const [subnet, prefix] of [
    ["::", 128],
    ["::1", 128],
    ["fc00::", 7], // unique local
    ["fe80::", 10], // link-local
    ["ff00::", 8], // multicast
  ] as const
) BLOCKED.addSubnet(subnet, prefix, "ipv6");

/** Whether `address` (an IP literal) is one a webhook may not reach; IPv4-mapped IPv6 counts as its IPv4. */
export function isPrivateAddress(address: string): boolean {
  const family = net.isIP(address);
  if (family === 0) return true; // not an address: nothing to dial
  const mapped = family === 6 ? address.match(/^::ffff:(\d+\.\d+\.\d+\.\d+)$/i)?.[1] : undefined;
  if (mapped) return BLOCKED.check(mapped, "ipv4");
  return BLOCKED.check(address, family === 4 ? "ipv4" : "ipv6");
}

/** Thrown when a host resolves to a refused address. */
export class AddressNotAllowed extends Error {
  readonly code = "EADDRNOTALLOWED";
  constructor(host: string, address: string) {
    super(`${host} resolves to ${address}, a loopback, private or link-local address (PP_WEBHOOK_ALLOW_PRIVATE)`);
  }
}

/** Every address `host` resolves to (an IP literal resolves to itself). */
async function addressesOf(host: string): Promise<string[]> {
  const bare = host.replace(/^\[(.*)\]$/, "$1");
  if (net.isIP(bare)) return [bare];
  const found = await dns.promises.lookup(bare, { all: true, verbatim: true });
  return found.map((a) => a.address);
}

/**
 * Checks a URL's host now (when an endpoint is saved): throws AddressNotAllowed when any of
 * its addresses is refused, or the lookup's error when it does not resolve.
 */
export async function assertPublicHost(host: string, allowPrivate: boolean): Promise<void> {
  await addressToDial(host, allowPrivate);
}

/**
 * The address an attempt connects to for `host`: its first address, once every address it
 * resolves to is allowed. Throws AddressNotAllowed, or the lookup's error.
 */
export async function addressToDial(host: string, allowPrivate: boolean): Promise<string> {
  const addresses = await addressesOf(host);
  const refused = allowPrivate ? undefined : addresses.find(isPrivateAddress);
  if (refused !== undefined) throw new AddressNotAllowed(host, refused);
  if (addresses.length === 0) throw new Error(`${host} has no address`);
  return addresses[0];
}
