-- 3. county_dual_channel: the tables its results and findings SELECTs both read, computed once,
-- so that the findings stand on exactly the rows the results judge.

-- Every county division with its dual-channel pharmacies designated and not revoked at month end.
CREATE OR REPLACE TEMP TABLE county_dual_channel__counties AS
SELECT
    d.division_code AS county_code,
    d.name,
    (
        SELECT COUNT(*)
        FROM insurance.dual_channel_pharmacies ph
        WHERE ph.division_code = d.division_code
          AND ph.designated_on <= p.period_end
          AND (ph.revoked_on IS NULL OR ph.revoked_on > p.period_end)
    ) AS pharmacies,
    p.county_dual_channel_min_pharmacies AS threshold
FROM health.divisions d
CROSS JOIN params p
WHERE d.level = 'county';

CREATE OR REPLACE TEMP TABLE county_dual_channel__judged AS
SELECT
    c.*,
    CASE WHEN c.pharmacies >= c.threshold THEN 'compliant' ELSE 'breach' END AS status
FROM county_dual_channel__counties c;
