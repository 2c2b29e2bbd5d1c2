-- Shared views for every indicator. The engine runs this file after registering `params` (one row:
-- the policy values in force for the period, period, period_start, period_end, now_local) and
-- `schedules`, and before the indicator files. Temporary views: they live with the connection and
-- read the current period's `params`.

-- Catalog versions with their in-force span. The catalog in force on day D is the highest
-- catalog_version whose effective_from <= D, so version v is in force from its effective_from until
-- (exclusive) the earliest effective_from of any higher version; a version overtaken before it
-- starts is never in force and has no row. in_force_until is NULL while no higher version follows.
CREATE OR REPLACE TEMP VIEW catalog_spans AS
WITH versions AS (
    -- every row of a version carries the same dates (contracts.md); MAX guards a stray row
    SELECT catalog_version, MAX(published_on) AS published_on, MAX(effective_from) AS effective_from
    FROM insurance.drug_catalog
    GROUP BY catalog_version
),
spans AS (
    SELECT
        v.catalog_version,
        v.published_on,
        v.effective_from,
        v.effective_from AS in_force_from,
        (SELECT MIN(h.effective_from) FROM versions h WHERE h.catalog_version > v.catalog_version)
            AS in_force_until
    FROM versions v
)
SELECT catalog_version, published_on, effective_from, in_force_from, in_force_until
FROM spans
WHERE in_force_until IS NULL OR in_force_until > in_force_from;

-- The drug rows of the catalog in force at the period's month end (one version).
CREATE OR REPLACE TEMP VIEW catalog_at_period_end AS
SELECT c.*
FROM insurance.drug_catalog c
JOIN catalog_spans s ON s.catalog_version = c.catalog_version
CROSS JOIN params p
WHERE s.in_force_from <= p.period_end
  AND (s.in_force_until IS NULL OR s.in_force_until > p.period_end);

-- Institution class from the record, whether or not the institution is in force (indicators.md):
-- primary = level 1 or category community/township/village; secondary/tertiary = level 2/3 otherwise.
CREATE OR REPLACE TEMP VIEW institution_class AS
SELECT
    i.institution_code,
    CASE
        WHEN i.level = 1 OR i.category IN ('community', 'township', 'village') THEN 'primary'
        WHEN i.level = 2 THEN 'secondary'
        WHEN i.level = 3 THEN 'tertiary'
    END AS class
FROM health.institutions i;

-- The province the exchange serves, as its division code: the province-level division; failing
-- that (reference data not loaded yet), the province part of the codes seen (GB/T 2260: the first
-- two digits followed by 0000; institution and pharmacy codes carry their county after the letter).
-- One row, or none when nothing at all is known.
CREATE OR REPLACE TEMP VIEW province AS
SELECT province_code
FROM (
    SELECT COALESCE(
        (SELECT MIN(division_code) FROM health.divisions WHERE level = 'province'),
        (SELECT MIN(SUBSTRING(division_code FROM 1 FOR 2) || '0000') FROM health.divisions),
        (SELECT MIN(SUBSTRING(institution_code FROM 2 FOR 2) || '0000') FROM health.institutions),
        (SELECT MIN(SUBSTRING(pharmacy_code FROM 2 FOR 2) || '0000') FROM insurance.dual_channel_pharmacies),
        (SELECT MIN(SUBSTRING(provider_code FROM 2 FOR 2) || '0000') FROM insurance.settlements)
    ) AS province_code
) x
WHERE province_code IS NOT NULL;
