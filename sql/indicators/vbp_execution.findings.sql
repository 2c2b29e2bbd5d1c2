-- 6. vbp_execution findings: the evidence behind breach rows (not_entered, low_completion,
-- high_nonselected_share) and price findings of the period's orders, whatever the row's status.
-- Exempt and pending rows (not_assessed) are never breaches, so they have no status findings.
WITH status_findings AS (
    SELECT
        b.entity_code,
        CASE WHEN b.selected_volume = 0 THEN 'not_entered' ELSE 'low_completion' END AS kind,
        b.product_group AS subject,
        json_object(
            'batch_id', b.batch_id, 'product_group', b.product_group, 'institution_code', b.institution_code,
            'exec_start', b.exec_start, 'cycle_end', b.cycle_end, 'execution_month', b.execution_month,
            'selected_volume', b.selected_volume, 'nonselected_volume', b.nonselected_volume,
            'agreed_volume', b.agreed_volume, 'completion', b.completion,
            'expected_progress', b.expected_progress, 'threshold', b.completion_bound
        ) AS detail
    FROM vbp_execution__bounded b
    CROSS JOIN params p
    WHERE b.not_assessed IS NULL
      AND (b.selected_volume = 0 OR b.completion < b.completion_bound - p.engine_tolerance)
    UNION ALL
    SELECT
        b.entity_code,
        'high_nonselected_share' AS kind,
        b.product_group AS subject,
        json_object(
            'batch_id', b.batch_id, 'product_group', b.product_group, 'institution_code', b.institution_code,
            'selected_volume', b.selected_volume, 'nonselected_volume', b.nonselected_volume,
            'nonselected_share', b.nonselected_share, 'threshold', p.vbp_execution_max_nonselected_share
        ) AS detail
    FROM vbp_execution__bounded b
    CROSS JOIN params p
    WHERE b.not_assessed IS NULL
      AND b.nonselected_share > p.vbp_execution_max_nonselected_share + p.engine_tolerance
),
priced_order AS (
    -- Orders of the period dated inside a group's cycle, at a price above the group's reference:
    -- the winning price for a selected drug, the group's cap for a non-selected one.
    SELECT
        o.order_id,
        o.institution_code,
        o.drug_code,
        o.quantity,
        o.unit_price,
        o.ordered_on,
        g.batch_id,
        g.product_group,
        vp.selected,
        CASE WHEN vp.selected THEN vp.winning_price ELSE g.price_cap END AS reference_price
    FROM insurance.procurement_orders o
    JOIN insurance.vbp_products vp ON vp.drug_code = o.drug_code
    JOIN vbp_execution__grp g ON g.batch_id = vp.batch_id AND g.product_group = vp.product_group
    CROSS JOIN params p
    WHERE o.ordered_on BETWEEN p.period_start AND p.period_end
      AND o.ordered_on BETWEEN g.exec_start AND g.cycle_end
),
price_findings AS (
    SELECT
        -- The finding belongs to the completion row of the institution's agreement in the group; an
        -- institution without one gets the finding on itself.
        CASE WHEN ag.institution_code IS NOT NULL THEN 'agreement' ELSE 'institution' END AS entity_type,
        CASE WHEN ag.institution_code IS NOT NULL
             THEN po.institution_code || '|' || po.batch_id || '|' || po.product_group
             ELSE po.institution_code END AS entity_code,
        CASE WHEN po.selected THEN 'price_above_winning' ELSE 'price_above_cap' END AS kind,
        po.order_id AS subject,
        CAST(ROUND((po.unit_price - po.reference_price) * po.quantity, 2) AS DECIMAL(18, 2)) AS amount,
        json_object(
            'batch_id', po.batch_id, 'product_group', po.product_group,
            'institution_code', po.institution_code,
            'drug_code', po.drug_code, 'ordered_on', po.ordered_on, 'quantity', po.quantity,
            'unit_price', po.unit_price,
            CASE WHEN po.selected THEN 'winning_price' ELSE 'price_cap' END, po.reference_price
        ) AS detail
    FROM priced_order po
    LEFT JOIN insurance.vbp_agreements ag
      ON ag.batch_id = po.batch_id AND ag.product_group = po.product_group
     AND ag.institution_code = po.institution_code
    WHERE po.reference_price IS NOT NULL
      AND po.unit_price > po.reference_price
)
SELECT
    'vbp_execution' AS indicator,
    p.period,
    'agreement' AS entity_type,
    s.entity_code,
    s.kind,
    s.subject,
    CAST(NULL AS DECIMAL(18, 2)) AS amount,
    CAST(s.detail AS VARCHAR) AS detail
FROM status_findings s
CROSS JOIN params p
UNION ALL
SELECT
    'vbp_execution' AS indicator,
    p.period,
    f.entity_type,
    f.entity_code,
    f.kind,
    f.subject,
    f.amount,
    CAST(f.detail AS VARCHAR) AS detail
FROM price_findings f
CROSS JOIN params p
