-- 9. catalog_compliance findings: each line of the period with fund paid for a drug not in the catalog
-- in force at its settlement date (catalog_compliance__outside).
SELECT
    'catalog_compliance' AS indicator,
    p.period,
    -- provider codes: H... an institution, P... a pharmacy (contracts.md)
    CASE WHEN SUBSTRING(s.provider_code FROM 1 FOR 1) = 'P' THEN 'pharmacy' ELSE 'institution' END
        AS entity_type,
    s.provider_code AS entity_code,
    'not_in_catalog' AS kind,
    s.settlement_id || '#' || CAST(s.line_no AS VARCHAR) AS subject,
    s.fund_paid AS amount,
    CAST(json_object(
        'drug_code', s.drug_code, 'settled_on', s.settled_on,
        'catalog_version', (
            SELECT v.catalog_version
            FROM catalog_spans v
            WHERE v.in_force_from <= s.settled_on
              AND (v.in_force_until IS NULL OR v.in_force_until > s.settled_on)
        ),
        'visit_type', s.visit_type
    ) AS VARCHAR) AS detail
FROM catalog_compliance__outside s
CROSS JOIN params p
