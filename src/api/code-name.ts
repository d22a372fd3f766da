/** The canonical names of gRPC status codes. */
import { Code } from "@connectrpc/connect";

/** The canonical gRPC name of a status code: 0 → "OK", Code.NotFound → "NOT_FOUND". */
export function codeName(code: Code | 0): string {
  if (code === 0) return "OK";
  const name = Code[code] as string | undefined;
  return name ? name.replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase() : String(code);
}
