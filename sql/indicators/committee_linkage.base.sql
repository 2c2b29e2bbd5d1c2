-- 2. committee_linkage: the tables its results and findings SELECTs both read, computed once,
-- so that the findings stand on exactly the rows the results judge.

-- The version assessed: the highest catalog_version published on or before month end (P = its date).
CREATE OR REPLACE TEMP TABLE committee_linkage__assessed_version AS
SELECT c.catalog_version, MAX(c.published_on) AS published_on
FROM insurance.drug_catalog c
WHERE c.catalog_version = (
    SELECT MAX(d.catalog_version)
    FROM insurance.drug_catalog d
    CROSS JOIN params p
    WHERE d.published_on <= p.period_end
)
GROUP BY c.catalog_version;

-- Level-3 public institutions in force at month end, each with its own deadline
-- D = max(P, valid_from) + N months (the month shift clamps the day to the month's last day).
CREATE OR REPLACE TEMP TABLE committee_linkage__institutions AS
SELECT
    i.institution_code,
    i.valid_from,
    v.catalog_version,
    v.published_on,
    CAST(
        CASE WHEN i.valid_from > v.published_on THEN i.valid_from ELSE v.published_on END
        + p.committee_linkage_deadline_months * INTERVAL '1' MONTH
    AS DATE) AS deadline
FROM health.institutions i
CROSS JOIN committee_linkage__assessed_version v
CROSS JOIN params p
WHERE i.ownership = 'public'
  AND i.level = 3
  AND i.valid_from <= p.period_end
  AND (i.valid_to IS NULL OR i.valid_to > p.period_end);

CREATE OR REPLACE TEMP TABLE committee_linkage__assessed AS
SELECT
    i.*,
    (
        SELECT MIN(m.meeting_on)
        FROM health.committee_meetings m
        WHERE m.institution_code = i.institution_code
          AND m.catalog_version = i.catalog_version
          AND m.meeting_on >= i.published_on
          AND m.meeting_on <= i.deadline
          AND m.meeting_on <= p.period_end
    ) AS meeting_on,
    p.period_end
FROM committee_linkage__institutions i
CROSS JOIN params p;

CREATE OR REPLACE TEMP TABLE committee_linkage__judged AS
SELECT
    a.*,
    CASE
        WHEN a.meeting_on IS NOT NULL THEN 'compliant'
        WHEN a.period_end < a.deadline THEN 'pending'
        ELSE 'breach'
    END AS status
FROM committee_linkage__assessed a;
