/**
 * The router's directory: which containers (mailboxes) and services exist, and which ready
 * containers each service routes to. Endpoint lists are cached and recomputed only after the
 * topology (a container's readiness or labels, the set of containers or services) changed.
 */
import { sameStringMap } from "../../api/string-map.js";
import type { Target } from "../../api/target.js";
import type { Container, Service } from "../../gen/k4s/v1/resources_pb.js";
import { Mailbox } from "./mailbox.js";
import { ServiceRoute } from "./service-route.js";

/** Directory finds mailboxes and services by name and knows each service's ready endpoints. */
export interface Directory {
  mailbox(name: string): Mailbox | undefined;
  service(name: string): ServiceRoute | undefined;
  mailboxes(): IterableIterator<Mailbox>;
  services(): IterableIterator<ServiceRoute>;
  /** The mailbox or service a target names (a bare name: a container first). */
  resolve(target: Target): Mailbox | ServiceRoute | undefined;
  /**
   * Creates the mailbox of a stored Container, or takes its labels and limits; a container
   * re-created under the same name (another uid) gets a new one. Returns the mailbox it
   * replaced, for the caller to empty.
   */
  putContainer(obj: Container): { mailbox: Mailbox; replaced: Mailbox | undefined };
  /** Creates or updates the route of a stored Service; returns the route it replaced. */
  putService(obj: Service): { route: ServiceRoute; replaced: ServiceRoute | undefined };
  /** Forgets a mailbox or route (only that very one: a newer one of the same name stays). */
  remove(entry: Mailbox | ServiceRoute): void;
  /** The ready endpoints of a service, sorted by name. */
  endpointsOf(s: ServiceRoute): Mailbox[];
  /** Readiness, labels or the set of containers or services changed: endpoints are recomputed. */
  topologyChanged(): void;
}

/** Whether a mailbox takes deliveries now (a service's endpoint). */
export function isReady(m: Mailbox): boolean {
  return m.ready && m.link !== undefined && !m.link.closed;
}

/** Creates an empty directory. */
export function createDirectory(): Directory {
  const mailboxes = new Map<string, Mailbox>();
  const services = new Map<string, ServiceRoute>();
  let version = 0;

  return {
    mailbox: (name) => mailboxes.get(name),
    service: (name) => services.get(name),
    mailboxes: () => mailboxes.values(),
    services: () => services.values(),
    resolve(target) {
      if (target.kind !== "service") {
        const m = mailboxes.get(target.name);
        if (m) return m;
      }
      return target.kind !== "container" ? services.get(target.name) : undefined;
    },
    putContainer(obj) {
      const meta = obj.metadata!;
      const known = mailboxes.get(meta.name);
      if (known && known.uid === meta.uid) {
        const labels = known.labels;
        known.apply(obj);
        if (!sameStringMap(known.labels, labels)) version++;
        return { mailbox: known, replaced: undefined };
      }
      const mailbox = new Mailbox(meta.name, meta.uid);
      mailbox.apply(obj);
      mailboxes.set(meta.name, mailbox);
      version++;
      return { mailbox, replaced: known };
    },
    putService(obj) {
      const meta = obj.metadata!;
      const known = services.get(meta.name);
      version++;
      if (known && known.uid === meta.uid) {
        known.apply(obj);
        return { route: known, replaced: undefined };
      }
      const route = new ServiceRoute(meta.name, meta.uid, obj);
      services.set(meta.name, route);
      return { route, replaced: known };
    },
    remove(entry) {
      const map: Map<string, Mailbox | ServiceRoute> = entry instanceof Mailbox ? mailboxes : services;
      if (map.get(entry.name) === entry) map.delete(entry.name);
      version++;
    },
    endpointsOf(s) {
      if (s.endpointsVersion === version) return s.endpoints;
      const eps: Mailbox[] = [];
      for (const m of mailboxes.values()) if (isReady(m) && s.routesTo(m)) eps.push(m);
      eps.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      s.endpoints = eps;
      s.endpointsVersion = version;
      return eps;
    },
    topologyChanged() {
      version++;
    },
  };
}
