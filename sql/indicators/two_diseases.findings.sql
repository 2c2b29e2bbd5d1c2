-- 7. two_diseases findings: low_fund_ratio behind breach rows; over_annual_cap and long_prescription
-- stand on their own (no breach row).
WITH year_to_date AS (
    -- Per patient: fund paid in the period's calendar year before the period, and in the period.
    SELECT
        l.patient_id,
        SUM(CASE WHEN l.settled_on < p.period_start THEN l.fund_paid ELSE 0 END) AS fund_before,
        SUM(CASE WHEN l.settled_on >= p.period_start THEN l.fund_paid ELSE 0 END) AS fund_period
    FROM two_diseases__population_all l
    CROSS JOIN params p
    WHERE EXTRACT(YEAR FROM l.settled_on) = EXTRACT(YEAR FROM p.period_start)
      AND l.settled_on <= p.period_end
    GROUP BY l.patient_id
),
findings AS (
    SELECT
        'institution' AS entity_type,
        i.provider_code AS entity_code,
        'low_fund_ratio' AS kind,
        i.provider_code AS subject,
        CAST(NULL AS DECIMAL(18, 2)) AS amount,
        json_object(
            'fund_paid', i.fund_paid, 'eligible_amount', i.eligible_amount,
            'fund_ratio', CAST(i.fund_paid AS DOUBLE) / CAST(i.eligible_amount AS DOUBLE),
            'threshold', p.two_diseases_min_fund_ratio
        ) AS detail
    FROM two_diseases__per_institution i
    CROSS JOIN params p
    WHERE i.eligible_amount > 0
      AND CAST(i.fund_paid AS DOUBLE) / CAST(i.eligible_amount AS DOUBLE)
          < p.two_diseases_min_fund_ratio - p.engine_tolerance
    UNION ALL
    SELECT
        'province' AS entity_type,
        pr.province_code AS entity_code,
        'over_annual_cap' AS kind,
        y.patient_id AS subject,
        -- The part of this period's fund above the cap: what the year reaches now, less the larger of
        -- the cap and what the year had reached before the period.
        CAST(y.fund_before + y.fund_period
             - CASE WHEN y.fund_before > p.two_diseases_annual_cap THEN y.fund_before
                    ELSE p.two_diseases_annual_cap END AS DECIMAL(18, 2)) AS amount,
        json_object(
            'year', EXTRACT(YEAR FROM p.period_start), 'annual_cap', p.two_diseases_annual_cap,
            'fund_paid_before_period', y.fund_before, 'fund_paid_in_period', y.fund_period,
            'fund_paid_year_to_date', y.fund_before + y.fund_period
        ) AS detail
    FROM year_to_date y
    CROSS JOIN province pr
    CROSS JOIN params p
    WHERE y.fund_period > 0
      AND y.fund_before + y.fund_period > p.two_diseases_annual_cap
    UNION ALL
    SELECT
        'institution' AS entity_type,
        l.provider_code AS entity_code,
        'long_prescription' AS kind,
        l.settlement_id || '#' || CAST(l.line_no AS VARCHAR) AS subject,
        l.fund_paid AS amount,
        json_object(
            'days_supply', l.days_supply, 'max_days_supply', p.two_diseases_max_days_supply,
            'diagnosis_code', l.diagnosis_code, 'settled_on', l.settled_on
        ) AS detail
    FROM two_diseases__population l
    CROSS JOIN params p
    WHERE l.days_supply > p.two_diseases_max_days_supply
)
SELECT
    'two_diseases' AS indicator,
    p.period,
    f.entity_type,
    f.entity_code,
    f.kind,
    f.subject,
    f.amount,
    CAST(f.detail AS VARCHAR) AS detail
FROM findings f
CROSS JOIN params p
