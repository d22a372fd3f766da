/**
 * Server addresses as users type them (`host:port`, `host`, `[::1]:50051`, `http://host:port`),
 * checked and completed with the default port before anything dials them.
 */
import { Code, ConnectError } from "@connectrpc/connect";

/** The port a k4s server listens on unless told otherwise, and the one a bare host means. */
export const DEFAULT_PORT = 50051;

/**
 * Returns `host:port` for a host and a port, with an IPv6 host in brackets (`[::1]:50051`) so
 * the port stays readable; a host already in brackets is kept as it is.
 */
export function joinHostPort(host: string, port: number | string): string {
  return `${host.includes(":") && !host.startsWith("[") ? `[${host}]` : host}:${port}`;
}

/**
 * Returns `host:port` for an address, adding DEFAULT_PORT when it names no port and dropping an
 * `http://` or `https://` prefix. An address with no host, or a port that is not a number from
 * 1 to 65535, is INVALID_ARGUMENT naming the address.
 */
export function normalizeAddress(address: string): string {
  const fail = (reason: string): never => {
    throw new ConnectError(`invalid server address "${address}": ${reason}`, Code.InvalidArgument);
  };
  const text = address.trim().replace(/^https?:\/\//, "").replace(/\/+$/, "");
  if (text === "") fail("it is empty");
  let host: string;
  let port: string | undefined;
  const bracketed = /^\[([^\]]*)\](?::(.*))?$/.exec(text);
  if (bracketed) {
    host = `[${bracketed[1]}]`;
    port = bracketed[2];
    if (bracketed[1] === "") fail("no host between the brackets");
  } else if ((text.match(/:/g) ?? []).length > 1) {
    // Several colons and no brackets: an IPv6 address without a port.
    host = `[${text}]`;
  } else {
    const colon = text.lastIndexOf(":");
    host = colon >= 0 ? text.slice(0, colon) : text;
    port = colon >= 0 ? text.slice(colon + 1) : undefined;
    if (host === "") fail("no host before the port");
    if (/[\s/@?#]/.test(host)) fail(`"${host}" is not a host name or IP address`);
  }
  if (port === undefined) return `${host}:${DEFAULT_PORT}`;
  if (!/^\d{1,5}$/.test(port) || Number(port) < 1 || Number(port) > 65535) fail(`port ${port || "(empty)"} is not between 1 and 65535`);
  return `${host}:${Number(port)}`;
}

/**
 * Returns `host:port` for each server of a list: the addresses of one cluster, given as an
 * array or as one comma-separated text ("a:50051,b:50051", as --server and K4S_ADDRESS take
 * them). An empty list is INVALID_ARGUMENT; each address is checked as normalizeAddress does.
 */
export function normalizeAddresses(given: string | readonly string[]): string[] {
  const parts = (typeof given === "string" ? [given] : given).flatMap((a) => a.split(",")).filter((a) => a.trim() !== "");
  if (parts.length === 0) throw new ConnectError(`invalid server address "${String(given)}": it is empty`, Code.InvalidArgument);
  return [...new Set(parts.map(normalizeAddress))];
}
