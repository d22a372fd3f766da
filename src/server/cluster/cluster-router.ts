/**
 * The router of a server in a cluster where every server routes: a call for a container whose
 * messages another server delivers (its host's or attached process's session is held there) goes
 * over the peer link to that server, whose router queues and delivers it; every other call goes
 * to this server's own router. A message therefore crosses at most one extra server.
 */
import type { Code } from "@connectrpc/connect";
import type { Letter } from "../messaging/mailbox.js";
import type { CallRouter } from "../messaging/router.js";
import type { PeerLinks } from "./peer-links.js";

/** ClusterRouterOptions are this server's router, its peer links, and where containers are delivered. */
export interface ClusterRouterOptions {
  /** This server's own router (the mailboxes of what it holds). */
  local: CallRouter;
  links: PeerLinks;
  /** This server's advertise address. */
  self: () => string;
  /** The server that delivers a container's messages ("" when none does now: the local router answers). */
  deliveredBy: (container: string) => string;
}

/** Creates the router of a server that routes what it holds and forwards the rest. */
export function createClusterRouter(options: ClusterRouterOptions): CallRouter {
  const { local, links } = options;
  return {
    route(env, target) {
      const server = target.kind === "service" ? "" : options.deliveredBy(target.name);
      if (server === "" || server === options.self()) return local.route(env, target);
      links.forward(env, { kind: "container", name: target.name }, server);
    },
    abandon(env: Letter, code: Code | 0, message: string) {
      // A call the links hold was forwarded; one they answered already is Done, which both ignore.
      if (links.holds(env)) links.abandon(env, code, message);
      else local.abandon(env, code, message);
    },
    settle: (link, result) => local.settle(link, result),
    inflightOf: (link, id) => local.inflightOf(link, id),
    knows: (target) => local.knows(target) || (target.kind !== "service" && options.deliveredBy(target.name) !== ""),
  };
}
