/**
 * The embeddable k4s server: `createServer` runs the whole control plane (store, controllers,
 * message router, gRPC services) inside another Node program, as `k4s server` does.
 */
export { createServer, type K4sServer, type ServerOptions } from "./server.js";
