-- 10. price_warning findings: one per breach row, with both weighted means and their months.
-- A drug without an earlier month (mean_before NULL) has no finding.
SELECT
    'price_warning' AS indicator,
    p.period,
    'drug' AS entity_type,
    c.drug_code AS entity_code,
    'price_change' AS kind,
    c.drug_code AS subject,
    CAST(NULL AS DECIMAL(18, 2)) AS amount,
    CAST(json_object(
        'period', p.period, 'mean_unit_price', c.mean_now, 'quantity', c.quantity_now,
        'earlier_period', SUBSTRING(CAST(c.earlier_month_day AS VARCHAR) FROM 1 FOR 7),
        'earlier_mean_unit_price', c.mean_before, 'earlier_quantity', c.quantity_before,
        'price_change', c.mean_now / c.mean_before - 1, 'threshold', p.price_warning_max_change
    ) AS VARCHAR) AS detail
FROM price_warning__compared c
CROSS JOIN params p
WHERE c.mean_before > 0
  AND ABS(c.mean_now / c.mean_before - 1) > p.price_warning_max_change + p.engine_tolerance
