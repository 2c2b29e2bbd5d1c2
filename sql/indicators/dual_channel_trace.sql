-- 4. dual_channel_trace: traceability of dual-channel sales (indicators.md 4, seed 000). Results rows.
SELECT
    'dual_channel_trace' AS indicator,
    p.period,
    'pharmacy' AS entity_type,
    ph.pharmacy_code AS entity_code,
    'traced_share' AS measure,
    CAST(ph.traced_lines AS DOUBLE) / ph.all_lines AS value,
    CAST(ph.traced_lines AS DOUBLE) AS numerator,
    CAST(ph.all_lines AS DOUBLE) AS denominator,
    ph.threshold,
    ph.status
FROM dual_channel_trace__pharmacies ph
CROSS JOIN params p
