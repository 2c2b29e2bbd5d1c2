-- Demo / run summary: per indicator, what was assessed, how many breaches, and the money in the
-- evidence. Entities are counted once per period (a row per measure would double them).
WITH r AS (
    SELECT indicator, period, entity_type, entity_code,
           MAX(CASE WHEN status = 'breach' THEN 1 ELSE 0 END) AS in_breach
    FROM indicators.results
    WHERE period IN (SELECT period FROM wanted)
    GROUP BY indicator, period, entity_type, entity_code
),
f AS (
    SELECT indicator, COUNT(*) AS findings, SUM(amount) AS amount
    FROM indicators.findings
    WHERE period IN (SELECT period FROM wanted)
    GROUP BY indicator
)
SELECT r.indicator,
       COUNT(*) AS entities_assessed,
       SUM(r.in_breach) AS breaches,
       COALESCE(MAX(f.findings), 0) AS findings,
       COALESCE(MAX(f.amount), 0) AS money_involved
FROM r
LEFT JOIN f ON f.indicator = r.indicator
GROUP BY r.indicator
ORDER BY r.indicator
