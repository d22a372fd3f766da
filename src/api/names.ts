/**
 * Name and label rules shared by validation, the CLI and the controllers. Names follow
 * Kubernetes' DNS-label rule; labels follow its qualified-name rule for keys.
 */

const DNS_LABEL = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;
const LABEL_NAME = /^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/;

/** The longest object name: a DNS label. */
export const MAX_NAME_LENGTH = 63;

/** The most labels (or annotations) one object may carry. */
export const MAX_LABELS = 64;

/** The longest annotation value, in characters. */
export const MAX_ANNOTATION_VALUE_LENGTH = 64 * 1024;

/**
 * Validates an object name, returning the reason when it is invalid (undefined when valid):
 * a DNS label of lowercase letters, digits and '-', starting and ending with a letter or digit,
 * at most 63 characters.
 */
export function validateName(name: string): string | undefined {
  if (name.length === 0) return "must not be empty";
  if (name.length > MAX_NAME_LENGTH) return `must be at most ${MAX_NAME_LENGTH} characters, got ${name.length}`;
  if (!DNS_LABEL.test(name)) {
    return `"${name}" is not a valid name: use lowercase letters, digits and '-', starting and ending with a letter or digit`;
  }
  return undefined;
}

/**
 * Validates a label key, returning the reason when it is invalid: an optional DNS-subdomain
 * prefix and '/', then a name of at most 63 letters, digits, '-', '_' or '.', starting and
 * ending with a letter or digit (as Kubernetes' qualified names).
 */
export function validateLabelKey(key: string): string | undefined {
  const slash = key.indexOf("/");
  const prefix = slash >= 0 ? key.slice(0, slash) : undefined;
  const name = slash >= 0 ? key.slice(slash + 1) : key;
  if (prefix !== undefined) {
    if (prefix.length === 0 || prefix.length > 253 || !DNS_SUBDOMAIN.test(prefix)) {
      return `key "${key}": prefix must be a lowercase DNS subdomain of at most 253 characters`;
    }
  }
  if (name.length === 0) return `key "${key}": name part must not be empty`;
  if (name.length > 63) return `key "${key}": name part must be at most 63 characters`;
  if (!LABEL_NAME.test(name)) {
    return `key "${key}": use letters, digits, '-', '_' or '.', starting and ending with a letter or digit`;
  }
  return undefined;
}

/**
 * Validates a label value, returning the reason when it is invalid: empty, or at most 63
 * letters, digits, '-', '_' or '.', starting and ending with a letter or digit.
 */
export function validateLabelValue(value: string): string | undefined {
  if (value.length === 0) return undefined;
  if (value.length > 63) return `value "${value.slice(0, 20)}...": must be at most 63 characters`;
  if (!LABEL_NAME.test(value)) {
    return `value "${value}": use letters, digits, '-', '_' or '.', starting and ending with a letter or digit`;
  }
  return undefined;
}
