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
    ["::", 96], // unspecified, loopback and the deprecated IPv4-compatible ::a.b.c.d
    ["fc00::", 7], // unique local
    ["fe80::", 10], // link-local
    ["ff00::", 8], // multicast
  ] as const
) BLOCKED.addSubnet(subnet, prefix, "ipv6");

/** IPv6 ranges that carry an IPv4 address in their last 32 bits: that address decides. */
const EMBEDS_IPV4 = new net.BlockList();
EMBEDS_IPV4.addSubnet("::ffff:0:0", 96, "ipv6"); // IPv4-mapped
EMBEDS_IPV4.addSubnet("64:ff9b::", 96, "ipv6"); // NAT64 (DNS64 answers these on IPv6-only hosts)

/** The last 32 bits of an IPv6 address as dotted IPv4. */
function lastIpv4(address: string): string {
  const [head, tail = ""] = address.split("::");
  const groups = (part: string) => part ? part.split(":") : [];
  let right = groups(tail);
  const dotted = right.at(-1)?.includes(".") ? right.pop()! : null;
  if (dotted) return dotted;
  const left = groups(head);
  if (!address.includes("::")) right = [];
  const all = [...left, ...Array(8 - left.length - right.length).fill("0"), ...right];
  const [a, b] = all.slice(6).map((g) => parseInt(g, 16));
  return [a >> 8, a & 255, b >> 8, b & 255].join(".");
}

/**
 * Whether `address` (an IP literal) is one a webhook may not reach. An IPv6 address that
 * embeds an IPv4 one (IPv4-mapped, NAT64) is judged by that IPv4 address.
 */
export function isPrivateAddress(address: string): boolean {
  const family = net.isIP(address);
  if (family === 0) return true; // not an address: nothing to dial
  if (family === 4) return BLOCKED.check(address, "ipv4");
  if (EMBEDS_IPV4.check(address, "ipv6")) return BLOCKED.check(lastIpv4(address), "ipv4");
  return BLOCKED.check(address, "ipv6");
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
