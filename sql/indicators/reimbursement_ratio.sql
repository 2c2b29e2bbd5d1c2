-- 8. reimbursement_ratio: inpatient reimbursement ratio by insurance type and institution class
-- (indicators.md 8, seed 001). Rules: r1 >= floor; r1 - r2 and r2 - r3 at least the insurance type's
-- gaps. A class without inpatient lines has no row and the rules needing it are not assessed.
SELECT
    'reimbursement_ratio' AS indicator,
    p.period,
    'insurance_class' AS entity_type,
    r.insurance_type || '|' || r.class AS entity_code,
    'ratio' AS measure,
    r.ratio AS value,
    CAST(r.fund_paid AS DOUBLE) AS numerator,
    CAST(r.eligible_amount AS DOUBLE) AS denominator,
    -- The policy value applied: the floor on the primary row; on the secondary row, which takes part
    -- in both gaps, the gap it breaks, else the primary-secondary gap when assessed.
    CASE r.class
        WHEN 'primary' THEN CASE WHEN o.floor_broken IS NOT NULL THEN o.floor_min END
        WHEN 'secondary' THEN CASE WHEN o.gap12_broken THEN o.gap12_min
                                   WHEN o.gap23_broken THEN o.gap23_min
                                   WHEN o.gap12_broken IS NOT NULL THEN o.gap12_min
                                   WHEN o.gap23_broken IS NOT NULL THEN o.gap23_min END
        WHEN 'tertiary' THEN CASE WHEN o.gap23_broken IS NOT NULL THEN o.gap23_min END
    END AS threshold,
    CASE r.class
        WHEN 'primary' THEN
            CASE WHEN o.floor_broken OR o.gap12_broken THEN 'breach'
                 WHEN o.floor_broken IS NULL AND o.gap12_broken IS NULL THEN 'not_applicable'
                 ELSE 'compliant' END
        WHEN 'secondary' THEN
            CASE WHEN o.gap12_broken OR o.gap23_broken THEN 'breach'
                 WHEN o.gap12_broken IS NULL AND o.gap23_broken IS NULL THEN 'not_applicable'
                 ELSE 'compliant' END
        ELSE
            CASE WHEN o.gap23_broken THEN 'breach'
                 WHEN o.gap23_broken IS NULL THEN 'not_applicable'
                 ELSE 'compliant' END
    END AS status
FROM reimbursement_ratio__ratio r
JOIN reimbursement_ratio__outcome o ON o.insurance_type = r.insurance_type
CROSS JOIN params p
