-- The explorer's replay (D49, D54) lists the accepted entries of a few operations
-- (keySetTransactions: governance, operators, key rotations; keyRegistrations: identities)
-- in height order. Those are rare among the chain's entries; without this index each page
-- scanned every entry of the chain.
CREATE INDEX transactions_operation ON chain.transactions (operation, height, position)
    WHERE result_code = 0;
