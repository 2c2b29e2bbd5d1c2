-- 6. vbp_execution: volume-based procurement execution per agreement (indicators.md 6, seed 002).
-- One `completion` and one `nonselected_share` row per agreement whose group exists, from the period
-- of exec_start through the period containing the cycle end.
SELECT
    'vbp_execution' AS indicator,
    p.period,
    'agreement' AS entity_type,
    b.entity_code,
    'completion' AS measure,
    b.completion AS value,
    CAST(b.selected_volume AS DOUBLE) AS numerator,
    CAST(b.agreed_volume AS DOUBLE) AS denominator,
    CASE WHEN b.not_assessed IS NULL THEN b.completion_bound END AS threshold,
    CASE WHEN b.not_assessed IS NOT NULL THEN b.not_assessed
         WHEN b.selected_volume = 0 THEN 'breach'
         WHEN b.completion < b.completion_bound - p.engine_tolerance THEN 'breach'
         ELSE 'compliant' END AS status
FROM vbp_execution__bounded b
CROSS JOIN params p
UNION ALL
SELECT
    'vbp_execution' AS indicator,
    p.period,
    'agreement' AS entity_type,
    b.entity_code,
    'nonselected_share' AS measure,
    b.nonselected_share AS value,
    CAST(b.nonselected_volume AS DOUBLE) AS numerator,
    CAST(b.selected_volume + b.nonselected_volume AS DOUBLE) AS denominator,
    CASE WHEN b.not_assessed IS NULL AND b.nonselected_share IS NOT NULL
         THEN p.vbp_execution_max_nonselected_share END AS threshold,
    CASE WHEN b.not_assessed IS NOT NULL THEN b.not_assessed
         WHEN b.nonselected_share IS NULL THEN 'not_applicable'
         WHEN b.nonselected_share > p.vbp_execution_max_nonselected_share + p.engine_tolerance THEN 'breach'
         ELSE 'compliant' END AS status
FROM vbp_execution__bounded b
CROSS JOIN params p
