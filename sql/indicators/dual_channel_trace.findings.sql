-- 4. dual_channel_trace findings: untraced_line for each untraced line of a breaching pharmacy.
SELECT
    'dual_channel_trace' AS indicator,
    p.period,
    'pharmacy' AS entity_type,
    j.pharmacy_code AS entity_code,
    'untraced_line' AS kind,
    j.settlement_id || '#' || CAST(j.line_no AS VARCHAR) AS subject,
    j.fund_paid AS amount,
    json_object(
        'settled_on', CAST(j.settled_on AS VARCHAR),
        'reason', CASE WHEN j.codes = 0 THEN 'no_trace_codes' ELSE 'unmatched_trace_codes' END,
        'trace_codes', j.trace_codes,
        'unmatched_trace_codes', (
            SELECT array_agg(c.trace_code ORDER BY c.trace_code)
            FROM dual_channel_trace__line_codes c
            WHERE c.settlement_id = j.settlement_id AND c.line_no = j.line_no AND c.matched = 0
        )
    ) AS detail
FROM dual_channel_trace__judged_lines j
JOIN dual_channel_trace__pharmacies ph ON ph.pharmacy_code = j.pharmacy_code
CROSS JOIN params p
WHERE ph.status = 'breach'
  AND j.is_traced = 0
