export { IngestTransaction, type IngestTransactionInput } from './ingest-transaction.js';
export { SyncBalances, type SyncBalancesInput } from './sync-balances.js';
export { ReconcileBalances } from './reconcile-balances.js';
