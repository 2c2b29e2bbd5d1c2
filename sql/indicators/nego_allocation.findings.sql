-- 1. nego_allocation findings: one missing_variety per variety a breaching entity lacks.
-- The tables of nego_allocation.base.sql are those the results read: findings follow exactly the same rows.
SELECT
    'nego_allocation' AS indicator,
    p.period,
    t.entity_type,
    t.entity_code,
    'missing_variety' AS kind,
    t.generic_name AS subject,
    CAST(NULL AS DECIMAL(18, 2)) AS amount,
    json_object(
        'drug_codes', (SELECT array_agg(vc.drug_code ORDER BY vc.drug_code)
                       FROM nego_allocation__variety_codes vc WHERE vc.generic_name = t.generic_name),
        'catalog_version', (SELECT MIN(c.catalog_version) FROM catalog_at_period_end c),
        'rate_numerator', a.numerator,
        'rate_denominator', a.denominator,
        'threshold', a.threshold
    ) AS detail
FROM nego_allocation__targets t
JOIN nego_allocation__assessed a ON a.entity_type = t.entity_type AND a.entity_code = t.entity_code
CROSS JOIN params p
WHERE a.status = 'breach'
  AND NOT EXISTS (
      SELECT 1 FROM nego_allocation__stocked s
      WHERE s.entity_type = t.entity_type AND s.entity_code = t.entity_code
        AND s.generic_name = t.generic_name
  )
