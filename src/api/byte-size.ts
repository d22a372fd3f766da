/**
 * Sizes in bytes as people write and read them: Kubernetes-style binary quantities ("64Mi",
 * "1Gi", also "64MiB") or a plain number of bytes, and back ("64 MiB").
 */

const UNITS: Record<string, number> = { "": 1, k: 1000, ki: 1024, m: 1000 ** 2, mi: 1024 ** 2, g: 1000 ** 3, gi: 1024 ** 3 };

/**
 * Parses a size such as `67108864`, `64Mi`, `64MiB`, `1Gi` or `512k` into bytes (a whole,
 * non-negative number); throws an Error naming the text and the accepted forms otherwise.
 */
export function parseByteSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmg]i?)?b?\s*$/i.exec(text);
  const n = m ? Math.floor(Number(m[1]) * UNITS[(m[2] ?? "").toLowerCase()]!) : NaN;
  if (!m || !Number.isSafeInteger(n)) throw new Error(`"${text}" is not a size: expected bytes, or a number with Ki, Mi, Gi (1024s) or k, M, G (1000s), e.g. 64Mi`);
  return n;
}

/**
 * Formats bytes for a message in the largest binary unit they fill: "64 MiB", "1.5 GiB",
 * "512 KiB", "100 B". With `decimals`, always that many digits after the point ("2.00 MiB",
 * "1.00 MiB"): for a size set beside a limit it may pass by a few bytes only.
 */
export function formatBytes(bytes: number, decimals?: number): string {
  const units = ["B", "KiB", "MiB", "GiB"];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${decimals !== undefined ? v.toFixed(decimals) : Number.isInteger(v) ? v : v.toFixed(1)} ${units[i]}`;
}
