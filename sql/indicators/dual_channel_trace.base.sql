-- 4. dual_channel_trace: the tables its results and findings SELECTs both read, computed once,
-- so that the findings stand on exactly the rows the results judge.

-- Lines: settled in the period (date in UTC+08:00) at a dual-channel pharmacy designated and not
-- revoked on the settlement date, for a drug negotiated and in agreement by the catalog in force then.
CREATE OR REPLACE TEMP TABLE dual_channel_trace__lines AS
SELECT
    s.settlement_id,
    s.line_no,
    s.provider_code AS pharmacy_code,
    s.settled_on,
    s.fund_paid,
    s.trace_codes
FROM insurance.settlements s
CROSS JOIN params p
JOIN insurance.dual_channel_pharmacies ph
  ON ph.pharmacy_code = s.provider_code
 AND ph.designated_on <= s.settled_on
 AND (ph.revoked_on IS NULL OR ph.revoked_on > s.settled_on)
WHERE s.settled_on BETWEEN p.period_start AND p.period_end
  AND EXISTS (
      SELECT 1
      FROM insurance.drug_catalog c
      JOIN catalog_spans cs ON cs.catalog_version = c.catalog_version
      WHERE c.drug_code = s.drug_code
        AND cs.in_force_from <= s.settled_on
        AND (cs.in_force_until IS NULL OR cs.in_force_until > s.settled_on)
        AND c.negotiated
        AND (c.negotiated_valid_to IS NULL OR c.negotiated_valid_to >= s.settled_on)
  );

-- Each trace code of a line, matched when the pharmacy sold or dispensed it within the window
-- (calendar dates in UTC+08:00, either side of the settlement date).
CREATE OR REPLACE TEMP TABLE dual_channel_trace__line_codes AS
SELECT
    l.settlement_id,
    l.line_no,
    t.trace_code,
    CASE WHEN EXISTS (
        SELECT 1
        FROM traceability.trace_events e
        WHERE e.trace_code = t.trace_code
          AND e.party_code = l.pharmacy_code
          AND e.event IN ('sold', 'dispensed')
          AND e.event_on >= CAST(l.settled_on - p.dual_channel_trace_window_days * INTERVAL '1' DAY AS DATE)
          AND e.event_on <= CAST(l.settled_on + p.dual_channel_trace_window_days * INTERVAL '1' DAY AS DATE)
    ) THEN 1 ELSE 0 END AS matched
FROM dual_channel_trace__lines l
CROSS JOIN params p
CROSS JOIN UNNEST(l.trace_codes) AS t(trace_code);

-- A line is traced when it has at least one code and every code is matched.
CREATE OR REPLACE TEMP TABLE dual_channel_trace__traced AS
SELECT
    l.*,
    COALESCE(c.codes, 0) AS codes,
    COALESCE(c.unmatched, 0) AS unmatched
FROM dual_channel_trace__lines l
LEFT JOIN (
    SELECT settlement_id, line_no, COUNT(*) AS codes,
           SUM(CASE WHEN matched = 0 THEN 1 ELSE 0 END) AS unmatched
    FROM dual_channel_trace__line_codes
    GROUP BY settlement_id, line_no
) c ON c.settlement_id = l.settlement_id AND c.line_no = l.line_no;

CREATE OR REPLACE TEMP TABLE dual_channel_trace__judged_lines AS
SELECT t.*, CASE WHEN t.codes > 0 AND t.unmatched = 0 THEN 1 ELSE 0 END AS is_traced
FROM dual_channel_trace__traced t;

CREATE OR REPLACE TEMP TABLE dual_channel_trace__pharmacies AS
SELECT
    j.pharmacy_code,
    SUM(j.is_traced) AS traced_lines,
    COUNT(*) AS all_lines,
    CASE
        WHEN CAST(SUM(j.is_traced) AS DOUBLE) / COUNT(*)
             >= p.dual_channel_trace_min_share - p.engine_tolerance THEN 'compliant'
        ELSE 'breach'
    END AS status,
    p.dual_channel_trace_min_share AS threshold
FROM dual_channel_trace__judged_lines j
CROSS JOIN params p
GROUP BY j.pharmacy_code, p.dual_channel_trace_min_share, p.engine_tolerance;
