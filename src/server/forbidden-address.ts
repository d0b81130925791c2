/**
 * Which IP addresses a server-side image fetch must not reach unless the operator allows it:
 * the SSRF guard of {@link readImageUrl}.
 * @module
 */
import { isIP } from 'node:net';

type V4Range = readonly [base: number, bits: number];

// Besides the ranges everyone lists, 0/8 ("this network", which Linux routes to the host
// itself) and 240/4 (reserved, with the broadcast address) are refused: nothing public lives there.
const v4Ranges: readonly V4Range[] = [
  [ip4(0, 0, 0, 0), 8], // this network / unspecified
  [ip4(10, 0, 0, 0), 8], // RFC 1918
  [ip4(100, 64, 0, 0), 10], // CGNAT
  [ip4(127, 0, 0, 0), 8], // loopback
  [ip4(169, 254, 0, 0), 16], // link-local, cloud metadata
  [ip4(172, 16, 0, 0), 12], // RFC 1918
  [ip4(192, 0, 0, 0), 24], // IETF protocol assignments
  [ip4(192, 168, 0, 0), 16], // RFC 1918
  [ip4(198, 18, 0, 0), 15], // benchmarking, used inside data centres
  [ip4(224, 0, 0, 0), 4], // multicast
  [ip4(240, 0, 0, 0), 4], // reserved, broadcast
];

function ip4(a: number, b: number, c: number, d: number): number {
  return ((a << 24) | (b << 16) | (c << 8) | d) >>> 0;
}

function inV4(addr: number, [base, bits]: V4Range): boolean {
  const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
  return ((addr & mask) >>> 0) === base;
}

function forbiddenV4(addr: number): boolean {
  return v4Ranges.some((r) => inV4(addr, r));
}

function parseV4(text: string): number | undefined {
  const parts = text.split('.');
  if (parts.length !== 4) return undefined;
  let out = 0;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p) || Number(p) > 255) return undefined;
    out = out * 256 + Number(p);
  }
  return out;
}

// 8 groups of 16 bits. A trailing dotted IPv4 (::ffff:1.2.3.4) is rewritten as two groups first.
function parseV6(text: string): number[] | undefined {
  let s = text;
  const lastColon = s.lastIndexOf(':');
  if (s.includes('.', lastColon)) {
    const v4 = parseV4(s.slice(lastColon + 1));
    if (v4 === undefined) return undefined;
    s = `${s.slice(0, lastColon + 1)}${(v4 >>> 16).toString(16)}:${(v4 & 0xffff).toString(16)}`;
  }
  const halves = s.split('::');
  if (halves.length > 2) return undefined;
  const groups = (h: string) => (h === '' ? [] : h.split(':').map((g) => (/^[0-9a-f]{1,4}$/i.test(g) ? parseInt(g, 16) : NaN)));
  const head = groups(halves[0]);
  const rest = halves.length === 2 ? groups(halves[1]) : [];
  const known = head.length + rest.length;
  if ([...head, ...rest].some(Number.isNaN)) return undefined;
  if (halves.length === 1 ? known !== 8 : known > 7) return undefined;
  return [...head, ...new Array<number>(8 - known).fill(0), ...rest];
}

function forbiddenV6(g: number[]): boolean {
  const embeddedV4 = ((g[6] << 16) | g[7]) >>> 0;
  const zeros = (from: number, to: number) => g.slice(from, to).every((x) => x === 0);
  if (zeros(0, 8)) return true; // :: unspecified
  if (zeros(0, 7) && g[7] === 1) return true; // ::1 loopback
  // IPv4-mapped ::ffff:a.b.c.d and the deprecated IPv4-compatible ::a.b.c.d reach the IPv4 address.
  if (zeros(0, 5) && g[5] === 0xffff) return forbiddenV4(embeddedV4);
  if (zeros(0, 6)) return forbiddenV4(embeddedV4);
  // NAT64 (64:ff9b::/96) reaches the embedded IPv4 address through the operator's gateway.
  if (g[0] === 0x64 && g[1] === 0xff9b && zeros(2, 6)) return forbiddenV4(embeddedV4);
  if (g[0] === 0x64 && g[1] === 0xff9b && g[2] === 1) return true; // local-use NAT64 64:ff9b:1::/48
  // 6to4 (2002::/16) carries an IPv4 address in bits 16..47.
  if (g[0] === 0x2002) return forbiddenV4(((g[1] << 16) | g[2]) >>> 0);
  if (g[0] === 0x0100 && zeros(1, 4)) return true; // discard-only 100::/64
  if ((g[0] & 0xfe00) === 0xfc00) return true; // unique local fc00::/7
  if ((g[0] & 0xffc0) === 0xfe80) return true; // link-local fe80::/10
  if ((g[0] & 0xffc0) === 0xfec0) return true; // site-local fec0::/10 (deprecated, still routed privately)
  if ((g[0] & 0xff00) === 0xff00) return true; // multicast ff00::/8
  return false;
}

/**
 * True when a fetch must not connect to `ip`: loopback, private (RFC 1918), link-local,
 * CGNAT (100.64/10), unique-local (fc00::/7), multicast, unspecified or reserved addresses, and
 * IPv6 forms that carry one of those IPv4 addresses (IPv4-mapped, IPv4-compatible, NAT64,
 * 6to4). Anything that is not an IP address is forbidden too (fail closed).
 * @param ip An IPv4 or IPv6 address as `dns.lookup` or `URL.hostname` writes it; an IPv6 zone
 *   (`%eth0`) and brackets are allowed.
 */
export function isForbiddenAddress(ip: string): boolean {
  if (typeof ip !== 'string') return true;
  let s = ip.startsWith('[') && ip.endsWith(']') ? ip.slice(1, -1) : ip;
  const zone = s.indexOf('%');
  if (zone >= 0) s = s.slice(0, zone);
  const family = isIP(s);
  if (family === 4) {
    const v4 = parseV4(s);
    return v4 === undefined || forbiddenV4(v4);
  }
  if (family === 6) {
    const groups = parseV6(s);
    return groups === undefined || forbiddenV6(groups);
  }
  return true;
}
