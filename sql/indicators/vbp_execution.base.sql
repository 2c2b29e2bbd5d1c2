-- 6. vbp_execution: the tables its results and findings SELECTs both read, computed once,
-- so that the findings stand on exactly the rows the results judge.

CREATE OR REPLACE TEMP TABLE vbp_execution__grp AS
SELECT
    g.batch_id,
    g.product_group,
    g.exec_start,
    g.cycle_months,
    g.exemption,
    g.price_cap,
    -- "D + N months" clamps the day to the month's end; the cycle ends the day before.
    CAST(CAST(g.exec_start + g.cycle_months * INTERVAL '1' MONTH AS DATE) - INTERVAL '1' DAY AS DATE)
        AS cycle_end
FROM insurance.vbp_groups g;

CREATE OR REPLACE TEMP TABLE vbp_execution__agreement AS
SELECT
    a.institution_code,
    a.batch_id,
    a.product_group,
    a.agreed_volume,
    g.exec_start,
    g.cycle_months,
    g.cycle_end,
    g.exemption,
    CASE WHEN g.cycle_end < p.period_end THEN g.cycle_end ELSE p.period_end END AS window_end,
    (EXTRACT(YEAR FROM p.period_start) - EXTRACT(YEAR FROM g.exec_start)) * 12
        + EXTRACT(MONTH FROM p.period_start) - EXTRACT(MONTH FROM g.exec_start) + 1 AS execution_month
FROM insurance.vbp_agreements a
JOIN vbp_execution__grp g ON g.batch_id = a.batch_id AND g.product_group = a.product_group
CROSS JOIN params p
WHERE g.exec_start <= p.period_end
  AND g.cycle_end >= p.period_start;

CREATE OR REPLACE TEMP TABLE vbp_execution__volume AS
SELECT
    a.institution_code,
    a.batch_id,
    a.product_group,
    SUM(CASE WHEN vp.selected THEN o.quantity ELSE 0 END) AS selected_volume,
    SUM(CASE WHEN vp.selected THEN 0 ELSE o.quantity END) AS nonselected_volume
FROM vbp_execution__agreement a
JOIN insurance.vbp_products vp ON vp.batch_id = a.batch_id AND vp.product_group = a.product_group
JOIN insurance.procurement_orders o
  ON o.institution_code = a.institution_code
 AND o.drug_code = vp.drug_code
 AND o.ordered_on BETWEEN a.exec_start AND a.window_end
GROUP BY a.institution_code, a.batch_id, a.product_group;

CREATE OR REPLACE TEMP TABLE vbp_execution__measured AS
SELECT
    a.*,
    COALESCE(v.selected_volume, 0) AS selected_volume,
    COALESCE(v.nonselected_volume, 0) AS nonselected_volume,
    CAST(COALESCE(v.selected_volume, 0) AS DOUBLE) / a.agreed_volume AS completion,
    CASE WHEN a.execution_month >= a.cycle_months THEN 1.0
         ELSE CAST(a.execution_month AS DOUBLE) / a.cycle_months END AS expected_progress,
    CASE WHEN COALESCE(v.selected_volume, 0) + COALESCE(v.nonselected_volume, 0) = 0 THEN NULL
         ELSE CAST(v.nonselected_volume AS DOUBLE) / (v.selected_volume + v.nonselected_volume)
    END AS nonselected_share,
    CASE WHEN a.exemption IS NOT NULL THEN 'exempt'
         WHEN a.execution_month <= p.vbp_execution_pending_months THEN 'pending'
    END AS not_assessed
FROM vbp_execution__agreement a
LEFT JOIN vbp_execution__volume v
  ON v.institution_code = a.institution_code
 AND v.batch_id = a.batch_id
 AND v.product_group = a.product_group
CROSS JOIN params p;

CREATE OR REPLACE TEMP TABLE vbp_execution__bounded AS
SELECT
    m.*,
    m.institution_code || '|' || m.batch_id || '|' || m.product_group AS entity_code,
    CASE WHEN p.period_end >= m.cycle_end THEN p.vbp_execution_min_completion_at_cycle_end
         ELSE m.expected_progress - p.vbp_execution_progress_tolerance END AS completion_bound
FROM vbp_execution__measured m
CROSS JOIN params p;
