-- 11. submission_completeness: tables shared by submission_completeness.sql and its findings.
-- A slot is one business date (daily datasets) or the period (monthly ones); for a month not yet over,
-- only slots whose on-time deadline has passed are expected.

-- Every slot of the period with its on-time deadline (wall clock, UTC+08:00) and its finding subject.
CREATE OR REPLACE TEMP TABLE submission_completeness__slot AS
WITH RECURSIVE days (d) AS (
    SELECT p.period_start FROM params p
    UNION ALL
    SELECT CAST(days.d + INTERVAL '1' DAY AS DATE)
    FROM days CROSS JOIN params p
    WHERE days.d < p.period_end
)
-- daily: due before 00:00 (UTC+08:00) of business date + due_offset_days
SELECT
    s.dataset,
    CAST(days.d AS VARCHAR) AS subject,
    days.d AS covers_from,
    days.d AS covers_to,
    CAST(days.d + s.due_offset_days * INTERVAL '1' DAY AS TIMESTAMP) AS deadline
FROM schedules s
CROSS JOIN days
WHERE s.frequency = 'daily'
UNION ALL
-- monthly: due before 00:00 of day due_offset_days of the next month
SELECT
    s.dataset,
    p.period AS subject,
    p.period_start AS covers_from,
    p.period_end AS covers_to,
    CAST(p.period_end + s.due_offset_days * INTERVAL '1' DAY AS TIMESTAMP) AS deadline
FROM schedules s
CROSS JOIN params p
WHERE s.frequency = 'monthly';

-- Each expected slot with the first arrival of a loaded file covering it (NULL: missing).
CREATE OR REPLACE TEMP TABLE submission_completeness__assessed AS
SELECT
    sl.dataset,
    sl.subject,
    sl.deadline,
    (SELECT MIN(sub.arrived_local)
     FROM sanyi.submissions sub
     WHERE sub.agency || '/' || sub.dataset = sl.dataset
       AND sub.business_date BETWEEN sl.covers_from AND sl.covers_to
       AND sub.status IN ('loaded', 'loaded_with_rejections')) AS first_arrival
FROM submission_completeness__slot sl
CROSS JOIN params p
-- indicators.md 11: only a month not yet over is limited to the slots already due; once the month
-- is over (now >= 00:00 UTC+08:00 of the next month's first day) every slot of it is expected.
WHERE sl.deadline <= p.now_local
   OR CAST(p.period_end + INTERVAL '1' DAY AS TIMESTAMP) <= p.now_local;
