-- 5. duplicate_trace: re-sold drugs, duplicate trace codes (indicators.md 5, seeds 000, 003).
-- Results rows: province counts, each a reported figure (not_applicable).
SELECT
    'duplicate_trace' AS indicator,
    p.period,
    'province' AS entity_type,
    pr.province_code AS entity_code,
    m.measure,
    m.value,
    CAST(NULL AS DOUBLE) AS numerator,
    CAST(NULL AS DOUBLE) AS denominator,
    CAST(NULL AS DOUBLE) AS threshold,
    'not_applicable' AS status
FROM province pr
CROSS JOIN params p
CROSS JOIN (
    SELECT 'suspicious_lines' AS measure, CAST(COUNT(*) AS DOUBLE) AS value
    FROM duplicate_trace__suspicious_lines
    UNION ALL
    SELECT 'flagged_trace_codes', CAST(COUNT(*) AS DOUBLE) FROM duplicate_trace__flagged_codes
    UNION ALL
    -- summed in DECIMAL, converted only for the value column
    SELECT 'suspicious_fund', CAST(COALESCE(SUM(fund_paid), 0) AS DOUBLE)
    FROM duplicate_trace__suspicious_lines
) m
