// A TypeScript application that installed k4s from npm, type-checked against the shipped .d.ts
// (`tsc --noEmit`): the client, the worker SDK, the embeddable server and the generated messages.
import { Code, ConnectError, create, ContainerSchema, createClient, fieldViolations, type Container, type K4sClient, type WatchEvent } from "k4s/client";
import { attach, defineWorker, type WorkerContext } from "k4s/workers";
import { createServer, type K4sServer, type ServerOptions } from "k4s/server";
import { ServiceSchema, type Service } from "k4s/gen/resources_pb";
import { ResourceService } from "k4s/gen/resource_service_pb";

const options: ServerOptions = { port: 0 };
const server: K4sServer = createServer(options);

const calc = defineWorker<{ factor: number }>(async (ctx: WorkerContext<{ factor: number }>) => {
  await ctx.handle((msg) => (msg.value as number) * ctx.params.factor);
});

async function main(): Promise<void> {
  await server.start();
  const client: K4sClient = createClient({ address: server.address });
  const c: Container = create(ContainerSchema, { metadata: { name: "typed" }, spec: { module: "m", function: "f" } });
  const created: Container = await client.create(c);
  const svc: Service = create(ServiceSchema, { metadata: { name: "s" }, spec: { selector: "typed" } });
  await client.create(svc);
  const doubled: number = await client.request<number>("typed", 21);
  for await (const ev of client.watch({ kind: "Container" }) as AsyncIterable<WatchEvent>) {
    const phase: string | undefined = ev.object.$typeName === "k4s.v1.Container" ? ev.object.status?.phase : undefined;
    if (phase) break;
  }
  try {
    await client.apply("kind: Nope\n");
  } catch (err) {
    const fields: string[] = fieldViolations(err).map((v) => v.field);
    if (ConnectError.from(err).code !== Code.InvalidArgument) throw err;
    console.log(fields, created.metadata?.name, doubled, ResourceService.typeName);
  }
  const a = attach({ address: server.address, container: "typed", worker: calc, params: { factor: 2 } });
  await a.ready;
  await a.stop();
  await client.close();
  await server.stop();
}

void main();
