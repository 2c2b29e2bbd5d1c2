-- 11. submission_completeness: reporting completeness and timeliness per scheduled dataset
-- (indicators.md 11, DHIS2 reporting rates). A slot is one business date (daily datasets) or the
-- period (monthly ones); for a month not yet over, only slots whose on-time deadline has passed are expected.
WITH counted AS (
    SELECT
        s.dataset,
        COUNT(a.dataset) AS expected,
        SUM(CASE WHEN a.first_arrival IS NOT NULL THEN 1 ELSE 0 END) AS received,
        SUM(CASE WHEN a.first_arrival < a.deadline THEN 1 ELSE 0 END) AS on_time
    FROM schedules s
    LEFT JOIN submission_completeness__assessed a ON a.dataset = s.dataset
    GROUP BY s.dataset
),
measured AS (
    SELECT dataset, 'completeness' AS measure, expected, COALESCE(received, 0) AS achieved,
           p.submission_completeness_min_completeness AS bound
    FROM counted CROSS JOIN params p
    UNION ALL
    SELECT dataset, 'timeliness' AS measure, expected, COALESCE(on_time, 0) AS achieved,
           p.submission_completeness_min_timeliness AS bound
    FROM counted CROSS JOIN params p
)
SELECT
    'submission_completeness' AS indicator,
    p.period,
    'dataset' AS entity_type,
    m.dataset AS entity_code,
    m.measure,
    CASE WHEN m.expected > 0 THEN CAST(m.achieved AS DOUBLE) / m.expected END AS value,
    CAST(m.achieved AS DOUBLE) AS numerator,
    CAST(m.expected AS DOUBLE) AS denominator,
    CASE WHEN m.expected > 0 THEN m.bound END AS threshold,
    -- Nothing due yet: not assessable.
    CASE WHEN m.expected = 0 THEN 'pending'
         WHEN CAST(m.achieved AS DOUBLE) / m.expected < m.bound - p.engine_tolerance THEN 'breach'
         ELSE 'compliant' END AS status
FROM measured m
CROSS JOIN params p
