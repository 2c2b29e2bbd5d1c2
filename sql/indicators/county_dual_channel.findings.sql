-- 3. county_dual_channel findings: uncovered_county for each breach county
-- (county_dual_channel__judged, as the results).
SELECT
    'county_dual_channel' AS indicator,
    p.period,
    'county' AS entity_type,
    j.county_code AS entity_code,
    'uncovered_county' AS kind,
    j.county_code AS subject,
    CAST(NULL AS DECIMAL(18, 2)) AS amount,
    json_object('county_name', j.name, 'pharmacies', j.pharmacies, 'required', j.threshold) AS detail
FROM county_dual_channel__judged j
CROSS JOIN params p
WHERE j.status = 'breach'
