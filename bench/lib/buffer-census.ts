/**
 * A preload (`node --import`) that counts the large buffers a process allocates from JavaScript:
 * every Buffer.allocUnsafe / allocUnsafeSlow / alloc (Buffer.concat and Buffer.from allocate
 * through them) of at least BENCH_CENSUS_MIN_BYTES (default 60,000) bytes. A buffer of a
 * payload's size allocated per message is a copy of that payload. Answers {cmd:"census"} over IPC
 * with {census:{count, bytes}}.
 */
const min = Number(process.env.BENCH_CENSUS_MIN_BYTES ?? 60_000);
const census = { count: 0, bytes: 0 };

for (const name of ["allocUnsafe", "allocUnsafeSlow", "alloc"] as const) {
  const original = Buffer[name] as (size: number, ...rest: unknown[]) => Buffer;
  (Buffer as unknown as Record<string, unknown>)[name] = function counted(size: number, ...rest: unknown[]): Buffer {
    if (size >= min) {
      census.count++;
      census.bytes += size;
    }
    return original.call(Buffer, size, ...rest);
  };
}

process.on("message", (m: { id?: number; cmd?: string }) => {
  if (m.cmd === "census") process.send?.({ id: m.id, census: { ...census } });
});
