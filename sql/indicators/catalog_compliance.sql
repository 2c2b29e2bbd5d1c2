-- 9. catalog_compliance: fund paid for drugs outside the catalog in force at the settlement date
-- (indicators.md 9, seed 001). Province rows count the findings' lines and sum their fund_paid.
WITH total AS (
    SELECT COUNT(*) AS lines, COALESCE(SUM(fund_paid), CAST(0 AS DECIMAL(18, 2))) AS fund_paid
    FROM catalog_compliance__outside
)
SELECT
    'catalog_compliance' AS indicator, p.period, 'province' AS entity_type, pr.province_code AS entity_code,
    'lines' AS measure, CAST(t.lines AS DOUBLE) AS value, CAST(NULL AS DOUBLE) AS numerator,
    CAST(NULL AS DOUBLE) AS denominator, CAST(NULL AS DOUBLE) AS threshold, 'not_applicable' AS status
FROM total t CROSS JOIN province pr CROSS JOIN params p
UNION ALL
SELECT
    'catalog_compliance', p.period, 'province', pr.province_code, 'fund_paid', CAST(t.fund_paid AS DOUBLE),
    NULL, NULL, NULL, 'not_applicable'
FROM total t CROSS JOIN province pr CROSS JOIN params p
