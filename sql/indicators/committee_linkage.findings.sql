-- 2. committee_linkage findings: no_committee_meeting for each breach row
-- (committee_linkage__judged, as the results).
SELECT
    'committee_linkage' AS indicator,
    p.period,
    'institution' AS entity_type,
    j.institution_code AS entity_code,
    'no_committee_meeting' AS kind,
    j.catalog_version AS subject,
    CAST(NULL AS DECIMAL(18, 2)) AS amount,
    json_object(
        'catalog_version', j.catalog_version,
        'published_on', CAST(j.published_on AS VARCHAR),
        'valid_from', CAST(j.valid_from AS VARCHAR),
        'deadline', CAST(j.deadline AS VARCHAR),
        'meetings_for_version', (
            SELECT array_agg(CAST(m.meeting_on AS VARCHAR) ORDER BY m.meeting_on)
            FROM health.committee_meetings m
            WHERE m.institution_code = j.institution_code AND m.catalog_version = j.catalog_version
        )
    ) AS detail
FROM committee_linkage__judged j
CROSS JOIN params p
WHERE j.status = 'breach'
