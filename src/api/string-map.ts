/** Equality of the string maps of objects (labels, annotations). */

/** Tells whether two string maps hold the same keys and values; undefined counts as empty. */
export function sameStringMap(a: Readonly<Record<string, string>> | undefined, b: Readonly<Record<string, string>> | undefined): boolean {
  const x = a ?? {};
  const y = b ?? {};
  const keys = Object.keys(x);
  if (keys.length !== Object.keys(y).length) return false;
  return keys.every((k) => Object.prototype.hasOwnProperty.call(y, k) && x[k] === y[k]);
}
