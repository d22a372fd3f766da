/**
 * show: renders a message value for a log line (strings as they are, anything else as JSON).
 */

/** Renders a value for a log line: strings as they are, bytes by length, anything else as JSON. */
export function show(value: unknown): string {
  if (typeof value === "string") return value;
  if (value instanceof Uint8Array) return `<${value.length} bytes>`;
  if (value === undefined) return "undefined";
  try {
    return JSON.stringify(value);
  } catch {
    return String(value);
  }
}
