-- 8. reimbursement_ratio findings: one per broken rule on each row it involves.
WITH broken AS (
    -- Each rule the results break, with the classes it involves.
    SELECT insurance_type, 'ratio_below_floor' AS kind, 'primary' AS subject, 'primary' AS class,
           json_object('primary', r1, 'threshold', floor_min) AS detail
    FROM reimbursement_ratio__outcome WHERE floor_broken
    UNION ALL
    SELECT insurance_type, 'gap_too_small', 'primary-secondary', c.class,
           json_object('primary', r1, 'secondary', r2, 'gap', r1 - r2, 'threshold', gap12_min)
    FROM reimbursement_ratio__outcome
    CROSS JOIN (SELECT 'primary' AS class UNION ALL SELECT 'secondary') c
    WHERE gap12_broken
    UNION ALL
    SELECT insurance_type, 'gap_too_small', 'secondary-tertiary', c.class,
           json_object('secondary', r2, 'tertiary', r3, 'gap', r2 - r3, 'threshold', gap23_min)
    FROM reimbursement_ratio__outcome
    CROSS JOIN (SELECT 'secondary' AS class UNION ALL SELECT 'tertiary') c
    WHERE gap23_broken
)
SELECT
    'reimbursement_ratio' AS indicator,
    p.period,
    'insurance_class' AS entity_type,
    b.insurance_type || '|' || b.class AS entity_code,
    b.kind,
    b.subject,
    CAST(NULL AS DECIMAL(18, 2)) AS amount,
    CAST(b.detail AS VARCHAR) AS detail
FROM broken b
CROSS JOIN params p
