-- Transactions after meta.last_tx_offset are no longer stored: the projector re-reads them
-- from pantheon.tx (from last_tx_offset + 1) when it resumes (D20).
DROP TABLE IF EXISTS chain.pending_tx;
