-- 1. nego_allocation: negotiated-drug allocation rate (indicators.md 1, seed 000). Results rows.
SELECT
    'nego_allocation' AS indicator,
    p.period,
    a.entity_type,
    a.entity_code,
    'rate' AS measure,
    CASE WHEN a.denominator = 0 THEN NULL ELSE CAST(a.numerator AS DOUBLE) / a.denominator END AS value,
    CAST(a.numerator AS DOUBLE) AS numerator,
    CAST(a.denominator AS DOUBLE) AS denominator,
    CASE WHEN a.status = 'not_applicable' THEN NULL ELSE a.threshold END AS threshold,
    a.status
FROM nego_allocation__assessed a
CROSS JOIN params p
