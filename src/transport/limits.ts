/**
 * The limits and defaults of the k4s wire protocol, shared by the server and every client of it
 * (SDK session, worker hosts, attached processes), so both ends agree on them.
 */

/** Largest gRPC message the server accepts (grpc.max_receive_message_length). */
export const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;

/**
 * Largest payload one call may carry: the server's message limit less room for the frame around
 * it. A larger one would make the server end the whole stream, failing every call on it, so the
 * SDK refuses it alone.
 */
export const MAX_CALL_PAYLOAD_BYTES = MAX_MESSAGE_BYTES - 64 * 1024;

/**
 * Payload bytes one stream message (ConnectRequest or ConnectResponse) carries before the rest
 * of the queue goes in the next: grpc clients refuse messages beyond their receive limit (4 MiB
 * by default in grpcio and grpc-js), so batching must never join frames that each fit into one
 * that does not. A single larger frame still goes, alone.
 */
export const MAX_BATCH_BYTES = 1024 * 1024;

/** Deadline of a request that names none (ms). */
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;
