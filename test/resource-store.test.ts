/**
 * The typed ResourceStore (create-resource-store.ts) on SQLite in memory, fast enough to run once
 * per mutant: the rules every backend keeps (resource-store-contract.ts; store.test.ts runs them
 * on etcd), and more of them one by one.
 */
import { sqliteBackend } from "./store-backends.js";
import { resourceStoreContract } from "./resource-store-contract.js";

resourceStoreContract(sqliteBackend);
