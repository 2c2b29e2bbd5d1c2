-- 8. reimbursement_ratio: the tables its results and findings SELECTs both read, computed once,
-- so that the findings stand on exactly the rows the results judge.

CREATE OR REPLACE TEMP TABLE reimbursement_ratio__ratio AS
SELECT
    s.insurance_type,
    ic.class,
    SUM(s.fund_paid) AS fund_paid,
    SUM(s.eligible_amount) AS eligible_amount,
    CASE WHEN SUM(s.eligible_amount) > 0
         THEN CAST(SUM(s.fund_paid) AS DOUBLE) / CAST(SUM(s.eligible_amount) AS DOUBLE) END AS ratio
FROM insurance.settlements s
JOIN institution_class ic ON ic.institution_code = s.provider_code
CROSS JOIN params p
WHERE s.visit_type = 'inpatient'
  AND s.settled_on BETWEEN p.period_start AND p.period_end
  AND ic.class IS NOT NULL
GROUP BY s.insurance_type, ic.class;

CREATE OR REPLACE TEMP TABLE reimbursement_ratio__types AS
SELECT DISTINCT insurance_type FROM reimbursement_ratio__ratio;

CREATE OR REPLACE TEMP TABLE reimbursement_ratio__rules AS
-- One row per insurance type: the three ratios (null when the class has no row or nothing
-- eligible) and the rule outcomes (null when not assessed).
SELECT
    t.insurance_type,
    r1.ratio AS r1,
    r2.ratio AS r2,
    r3.ratio AS r3,
    p.reimbursement_ratio_min_primary AS floor_min,
    CASE WHEN t.insurance_type = 'resident' THEN p.reimbursement_ratio_min_gap_primary_secondary_resident
         ELSE p.reimbursement_ratio_min_gap_primary_secondary_employee END AS gap12_min,
    CASE WHEN t.insurance_type = 'resident' THEN p.reimbursement_ratio_min_gap_secondary_tertiary_resident
         ELSE p.reimbursement_ratio_min_gap_secondary_tertiary_employee END AS gap23_min,
    p.engine_tolerance AS tol
FROM reimbursement_ratio__types t
CROSS JOIN params p
LEFT JOIN reimbursement_ratio__ratio r1 ON r1.insurance_type = t.insurance_type AND r1.class = 'primary'
LEFT JOIN reimbursement_ratio__ratio r2 ON r2.insurance_type = t.insurance_type AND r2.class = 'secondary'
LEFT JOIN reimbursement_ratio__ratio r3 ON r3.insurance_type = t.insurance_type AND r3.class = 'tertiary';

CREATE OR REPLACE TEMP TABLE reimbursement_ratio__outcome AS
SELECT
    u.*,
    CASE WHEN u.r1 IS NOT NULL THEN u.r1 < u.floor_min - u.tol END AS floor_broken,
    CASE WHEN u.r1 IS NOT NULL AND u.r2 IS NOT NULL
         THEN u.r1 - u.r2 < u.gap12_min - u.tol END AS gap12_broken,
    CASE WHEN u.r2 IS NOT NULL AND u.r3 IS NOT NULL
         THEN u.r2 - u.r3 < u.gap23_min - u.tol END AS gap23_broken
FROM reimbursement_ratio__rules u;
