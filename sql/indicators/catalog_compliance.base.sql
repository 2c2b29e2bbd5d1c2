-- 9. catalog_compliance: tables shared by catalog_compliance.sql and catalog_compliance.findings.sql.

-- Lines of the period with fund paid for a drug not in the catalog in force at the settlement date
-- (the date in UTC+08:00, whatever the timestamp's offset). The findings list them; the results
-- count them and sum their fund_paid.
CREATE OR REPLACE TEMP TABLE catalog_compliance__outside AS
SELECT
    s.settlement_id,
    s.line_no,
    s.provider_code,
    s.drug_code,
    s.settled_on,
    s.visit_type,
    s.fund_paid
FROM insurance.settlements s
CROSS JOIN params p
WHERE s.settled_on BETWEEN p.period_start AND p.period_end
  AND s.fund_paid > 0
  AND NOT EXISTS (
      SELECT 1
      FROM insurance.drug_catalog c
      JOIN catalog_spans v ON v.catalog_version = c.catalog_version
      WHERE c.drug_code = s.drug_code
        AND v.in_force_from <= s.settled_on
        AND (v.in_force_until IS NULL OR v.in_force_until > s.settled_on)
  );
