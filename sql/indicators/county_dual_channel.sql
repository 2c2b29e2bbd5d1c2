-- 3. county_dual_channel: a dual-channel pharmacy in every county (indicators.md 3, seed 000).
-- Results rows: per county the pharmacies count; for the province the share of counties covered
-- (a county is covered when it has any dual-channel pharmacy; a reported figure, no rule).
SELECT
    'county_dual_channel' AS indicator,
    p.period,
    'county' AS entity_type,
    j.county_code AS entity_code,
    'pharmacies' AS measure,
    CAST(j.pharmacies AS DOUBLE) AS value,
    CAST(NULL AS DOUBLE) AS numerator,
    CAST(NULL AS DOUBLE) AS denominator,
    CAST(j.threshold AS DOUBLE) AS threshold,
    j.status
FROM county_dual_channel__judged j
CROSS JOIN params p
UNION ALL
SELECT
    'county_dual_channel' AS indicator,
    p.period,
    'province' AS entity_type,
    pr.province_code AS entity_code,
    'share_covered' AS measure,
    CASE WHEN s.counties = 0 THEN NULL ELSE CAST(s.covered AS DOUBLE) / s.counties END AS value,
    CAST(s.covered AS DOUBLE) AS numerator,
    CAST(s.counties AS DOUBLE) AS denominator,
    CAST(NULL AS DOUBLE) AS threshold,
    'not_applicable' AS status
FROM province pr
CROSS JOIN params p
CROSS JOIN (
    SELECT
        COUNT(*) AS counties,
        COALESCE(SUM(CASE WHEN j.pharmacies > 0 THEN 1 ELSE 0 END), 0) AS covered
    FROM county_dual_channel__judged j
) s
