-- 7. two_diseases: "two diseases" outpatient guarantee (indicators.md 7, seed 004).
-- Population lines: two_diseases__population (two_diseases.base.sql).
WITH disease AS (
    -- Both diseases are always reported, with 0 patients when a disease had no line.
    SELECT 'hypertension' AS disease
    UNION ALL
    SELECT 'diabetes' AS disease
),
per_disease AS (
    SELECT
        d.disease,
        COUNT(DISTINCT l.patient_id) AS patients,
        COALESCE(SUM(l.fund_paid), CAST(0 AS DECIMAL(18, 2))) AS fund_paid,
        SUM(l.eligible_amount) AS eligible_amount
    FROM disease d
    LEFT JOIN two_diseases__population l ON l.disease = d.disease
    GROUP BY d.disease
),
registry AS (
    SELECT DISTINCT r.patient_id
    FROM health.chronic_registry r
    CROSS JOIN params p
    WHERE r.filed_on <= p.period_end
),
coverage AS (
    SELECT
        COUNT(*) AS filed,
        SUM(CASE WHEN EXISTS (SELECT 1 FROM two_diseases__population l WHERE l.patient_id = r.patient_id)
                 THEN 1 ELSE 0 END) AS covered
    FROM registry r
)
SELECT
    'two_diseases' AS indicator, p.period, 'disease' AS entity_type, d.disease AS entity_code,
    'patients' AS measure, CAST(d.patients AS DOUBLE) AS value, CAST(NULL AS DOUBLE) AS numerator,
    CAST(NULL AS DOUBLE) AS denominator, CAST(NULL AS DOUBLE) AS threshold, 'not_applicable' AS status
FROM per_disease d CROSS JOIN params p
UNION ALL
SELECT
    'two_diseases', p.period, 'disease', d.disease, 'fund_paid', CAST(d.fund_paid AS DOUBLE),
    NULL, NULL, NULL, 'not_applicable'
FROM per_disease d CROSS JOIN params p
UNION ALL
SELECT
    'two_diseases', p.period, 'disease', d.disease, 'fund_ratio',
    CASE WHEN d.eligible_amount > 0 THEN CAST(d.fund_paid AS DOUBLE) / CAST(d.eligible_amount AS DOUBLE) END,
    CAST(d.fund_paid AS DOUBLE), CAST(COALESCE(d.eligible_amount, 0) AS DOUBLE), NULL, 'not_applicable'
FROM per_disease d CROSS JOIN params p
UNION ALL
SELECT
    'two_diseases', p.period, 'institution', i.provider_code, 'fund_ratio',
    CASE WHEN i.eligible_amount > 0 THEN CAST(i.fund_paid AS DOUBLE) / CAST(i.eligible_amount AS DOUBLE) END,
    CAST(i.fund_paid AS DOUBLE), CAST(i.eligible_amount AS DOUBLE),
    CASE WHEN i.eligible_amount > 0 THEN p.two_diseases_min_fund_ratio END,
    -- Nothing eligible: no ratio to hold to the rule.
    CASE WHEN i.eligible_amount = 0 THEN 'not_applicable'
         WHEN CAST(i.fund_paid AS DOUBLE) / CAST(i.eligible_amount AS DOUBLE)
              < p.two_diseases_min_fund_ratio - p.engine_tolerance THEN 'breach'
         ELSE 'compliant' END
FROM two_diseases__per_institution i CROSS JOIN params p
UNION ALL
SELECT
    'two_diseases', p.period, 'province', pr.province_code, 'coverage',
    CASE WHEN c.filed > 0 THEN CAST(c.covered AS DOUBLE) / c.filed END,
    CAST(COALESCE(c.covered, 0) AS DOUBLE), CAST(c.filed AS DOUBLE), NULL, 'not_applicable'
FROM coverage c CROSS JOIN province pr CROSS JOIN params p
