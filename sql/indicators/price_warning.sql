-- 10. price_warning: change of a drug's quantity-weighted mean procurement price against the latest
-- earlier month with orders of the code (indicators.md 10, seed 001).
SELECT
    'price_warning' AS indicator,
    p.period,
    'drug' AS entity_type,
    c.drug_code AS entity_code,
    'price_change' AS measure,
    CASE WHEN c.mean_before > 0 THEN c.mean_now / c.mean_before - 1 END AS value,
    c.mean_now AS numerator,
    c.mean_before AS denominator,
    CASE WHEN c.mean_before > 0 THEN p.price_warning_max_change END AS threshold,
    -- No earlier period (or only free orders before): nothing to compare with.
    CASE WHEN c.mean_before IS NULL OR c.mean_before = 0 THEN 'not_applicable'
         WHEN ABS(c.mean_now / c.mean_before - 1) > p.price_warning_max_change + p.engine_tolerance
              THEN 'breach'
         ELSE 'compliant' END AS status
FROM price_warning__compared c
CROSS JOIN params p
