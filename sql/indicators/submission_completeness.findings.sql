-- 11. submission_completeness findings: each expected slot missing (missing_submission) or received
-- after its deadline (late_submission); a missing slot is not also late.
WITH counted AS (
    -- Findings stand only behind breach rows: a province may set a bound below 1.00.
    SELECT
        a.dataset,
        CAST(SUM(CASE WHEN a.first_arrival IS NOT NULL THEN 1 ELSE 0 END) AS DOUBLE) / COUNT(*)
            < p.submission_completeness_min_completeness - p.engine_tolerance AS completeness_breach,
        CAST(SUM(CASE WHEN a.first_arrival < a.deadline THEN 1 ELSE 0 END) AS DOUBLE) / COUNT(*)
            < p.submission_completeness_min_timeliness - p.engine_tolerance AS timeliness_breach
    FROM submission_completeness__assessed a
    CROSS JOIN params p
    GROUP BY a.dataset, p.submission_completeness_min_completeness, p.submission_completeness_min_timeliness,
             p.engine_tolerance
)
SELECT
    'submission_completeness' AS indicator,
    p.period,
    'dataset' AS entity_type,
    a.dataset AS entity_code,
    CASE WHEN a.first_arrival IS NULL THEN 'missing_submission' ELSE 'late_submission' END AS kind,
    a.subject,
    CAST(NULL AS DECIMAL(18, 2)) AS amount,
    CAST(json_object(
        'deadline_local', a.deadline, 'first_arrival_local', a.first_arrival
    ) AS VARCHAR) AS detail
FROM submission_completeness__assessed a
JOIN counted c ON c.dataset = a.dataset
CROSS JOIN params p
WHERE (a.first_arrival IS NULL AND c.completeness_breach)
   OR (a.first_arrival >= a.deadline AND c.timeliness_breach)
