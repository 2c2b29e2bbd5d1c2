-- 2. committee_linkage: committee meeting within N months of a new catalog (indicators.md 2, seed 000).
-- Results rows: measure meeting_held, a flag (1 held, 0 not).
SELECT
    'committee_linkage' AS indicator,
    p.period,
    'institution' AS entity_type,
    j.institution_code AS entity_code,
    'meeting_held' AS measure,
    CASE WHEN j.status = 'compliant' THEN 1.0 ELSE 0.0 END AS value,
    CAST(NULL AS DOUBLE) AS numerator,
    CAST(NULL AS DOUBLE) AS denominator,
    -- the flag's "held" value, not a policy number: a meeting is required
    CASE WHEN j.status = 'pending' THEN NULL ELSE 1.0 END AS threshold,
    j.status
FROM committee_linkage__judged j
CROSS JOIN params p
