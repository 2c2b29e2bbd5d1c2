-- Two threads for this query: it runs in the load's tail, once the last keys are in (the inserts run on
-- one, beside the load).
SET threads = 2;
-- Lines of the file whose key is a duplicate: a later line of a key already seen in this file (the
-- first occurrence wins), or any line whose key is already stored (stored_keys: the table's keys,
-- scanned only where they can match). An append dataset holds each key once.
CREATE OR REPLACE TABLE duplicate_lines AS
SELECT line FROM (
    SELECT line, row_number() OVER (PARTITION BY k ORDER BY line) AS occurrence
    FROM incoming_keys
) WHERE occurrence > 1
UNION
SELECT i.line FROM incoming_keys AS i SEMI JOIN stored_keys AS s ON i.k = s.k;
