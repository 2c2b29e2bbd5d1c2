-- 5. duplicate_trace: the tables its results and findings SELECTs both read, computed once,
-- so that the findings stand on exactly the rows the results judge.

-- Every trace code on every loaded settlement line, whatever its period.
CREATE OR REPLACE TEMP TABLE duplicate_trace__line_codes AS
SELECT
    s.settlement_id,
    s.line_no,
    s.settled_at,
    s.settled_on,
    s.provider_code,
    s.fund_paid,
    t.trace_code
FROM insurance.settlements s
CROSS JOIN UNNEST(s.trace_codes) AS t(trace_code);

CREATE OR REPLACE TEMP TABLE duplicate_trace__returns AS
SELECT e.trace_code, e.event_at
FROM traceability.trace_events e
WHERE e.event = 'returned';

-- (line of the period, duplicated code, earlier line): the earlier line is of another settlement and
-- comes first in (settled_at, settlement_id, line_no) order, with no return of the code between the
-- two settled_at instants (inclusive). Different settlements, so line_no never breaks a tie.
CREATE OR REPLACE TEMP TABLE duplicate_trace__duplicate_pairs AS
SELECT
    l.settlement_id,
    l.line_no,
    l.settled_at,
    l.provider_code,
    l.fund_paid,
    l.trace_code,
    e.settlement_id AS earlier_settlement_id,
    e.line_no AS earlier_line_no,
    e.settled_at AS earlier_settled_at,
    e.provider_code AS earlier_provider_code
FROM duplicate_trace__line_codes l
CROSS JOIN params p
JOIN duplicate_trace__line_codes e
  ON e.trace_code = l.trace_code
 AND e.settlement_id <> l.settlement_id
 AND (e.settled_at < l.settled_at OR (e.settled_at = l.settled_at AND e.settlement_id < l.settlement_id))
WHERE l.settled_on BETWEEN p.period_start AND p.period_end
  AND NOT EXISTS (
      SELECT 1 FROM duplicate_trace__returns r
      WHERE r.trace_code = l.trace_code AND r.event_at BETWEEN e.settled_at AND l.settled_at
  );

CREATE OR REPLACE TEMP TABLE duplicate_trace__suspicious_lines AS
SELECT DISTINCT settlement_id, line_no, fund_paid
FROM duplicate_trace__duplicate_pairs;

-- Sale events (sold/dispensed) of each code, each with the sale event just before it.
CREATE OR REPLACE TEMP TABLE duplicate_trace__sales AS
SELECT
    e.trace_code,
    e.event,
    e.party_code,
    e.event_at,
    e.event_on,
    LAG(e.event) OVER w AS previous_event,
    LAG(e.party_code) OVER w AS previous_party_code,
    LAG(e.event_at) OVER w AS previous_event_at
FROM traceability.trace_events e
WHERE e.event IN ('sold', 'dispensed')
WINDOW w AS (PARTITION BY e.trace_code ORDER BY e.event_at, e.party_code, e.event);

-- A sale of the period that follows another sale of the code with no return between them.
CREATE OR REPLACE TEMP TABLE duplicate_trace__event_resales AS
SELECT s.*
FROM duplicate_trace__sales s
CROSS JOIN params p
WHERE s.previous_event_at IS NOT NULL
  AND s.event_on BETWEEN p.period_start AND p.period_end
  AND NOT EXISTS (
      SELECT 1 FROM duplicate_trace__returns r
      WHERE r.trace_code = s.trace_code AND r.event_at BETWEEN s.previous_event_at AND s.event_at
  );

CREATE OR REPLACE TEMP TABLE duplicate_trace__flagged_codes AS
SELECT trace_code FROM duplicate_trace__duplicate_pairs
UNION
SELECT trace_code FROM duplicate_trace__event_resales;
