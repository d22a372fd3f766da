/**
 * The kinds of stored objects, their aliases, and helpers to move between a typed object and
 * the generic `Object` envelope of the API.
 */
import { create, type DescMessage } from "@bufbuild/protobuf";
import { badField } from "./bad-request.js";
import {
  ContainerSchema,
  ObjectSchema,
  ReplicaSetSchema,
  ServiceSchema,
  type Container,
  type Object$,
  type ReplicaSet,
  type Service,
} from "../gen/k4s/v1/resources_pb.js";

/** The API version every object carries. */
export const API_VERSION = "k4s/v1";

/** Kind is the name of a stored object's type. */
export type Kind = "Container" | "ReplicaSet" | "Service";

/** All kinds, in the order they are applied (templates before their users). */
export const KINDS: readonly Kind[] = ["Container", "ReplicaSet", "Service"];

/** AnyObject is any stored object. */
export type AnyObject = Container | ReplicaSet | Service;

/** ObjectOf maps a kind to its message type. */
export type ObjectOf<K extends Kind> = K extends "Container" ? Container : K extends "ReplicaSet" ? ReplicaSet : Service;

interface KindInfo {
  kind: Kind;
  /** Lowercase plural, used in store keys and the CLI. */
  plural: string;
  aliases: string[];
  schema: DescMessage;
  /** The case of the `Object` oneof that carries this kind. */
  oneofCase: "container" | "replicaSet" | "service";
}

const INFO: Record<Kind, KindInfo> = {
  Container: {
    kind: "Container",
    plural: "containers",
    aliases: ["container", "containers", "c", "co"],
    schema: ContainerSchema,
    oneofCase: "container",
  },
  ReplicaSet: {
    kind: "ReplicaSet",
    plural: "replicasets",
    aliases: ["replicaset", "replicasets", "rs"],
    schema: ReplicaSetSchema,
    oneofCase: "replicaSet",
  },
  Service: {
    kind: "Service",
    plural: "services",
    aliases: ["service", "services", "svc"],
    schema: ServiceSchema,
    oneofCase: "service",
  },
};

/** Describes a kind: plural, aliases, message schema. */
export function kindInfo(kind: Kind): KindInfo {
  return INFO[kind];
}

/**
 * Resolves a kind name or alias (case-insensitive: "Container", "containers", "c", "rs",
 * "svc", ...) to a Kind, or throws INVALID_ARGUMENT naming the accepted kinds.
 */
export function parseKind(name: string): Kind {
  const lower = name.trim().toLowerCase();
  for (const info of Object.values(INFO)) {
    if (info.kind.toLowerCase() === lower || info.aliases.includes(lower)) return info.kind;
  }
  const reason = "expected Container (c), ReplicaSet (rs) or Service (svc)";
  throw badField("kind", `unknown kind "${name}": ${reason}`, `unknown kind "${name}": ${reason}`);
}

/** Returns the kind of a typed object from its message type. */
export function kindOf(obj: AnyObject): Kind {
  switch (obj.$typeName) {
    case "k4s.v1.Container":
      return "Container";
    case "k4s.v1.ReplicaSet":
      return "ReplicaSet";
    case "k4s.v1.Service":
      return "Service";
  }
}

/** Wraps a typed object into the API's `Object` envelope. */
export function wrap(obj: AnyObject): Object$ {
  switch (obj.$typeName) {
    case "k4s.v1.Container":
      return create(ObjectSchema, { kind: { case: "container", value: obj } });
    case "k4s.v1.ReplicaSet":
      return create(ObjectSchema, { kind: { case: "replicaSet", value: obj } });
    case "k4s.v1.Service":
      return create(ObjectSchema, { kind: { case: "service", value: obj } });
  }
}

/** Unwraps the API's `Object` envelope; INVALID_ARGUMENT naming `where` when it is empty. */
export function unwrap(obj: Object$ | undefined, where = "object"): AnyObject {
  if (!obj?.kind.value) throw badField(where, "empty: set container, replicaSet or service", `${where} is empty: set container, replicaSet or service`);
  return obj.kind.value;
}
