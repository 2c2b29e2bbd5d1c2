-- 1. nego_allocation: the tables its results and findings SELECTs both read, computed once,
-- so that the findings stand on exactly the rows the results judge.

-- Varieties (generic names) negotiated and in agreement at month end, by the catalog in force then.
CREATE OR REPLACE TEMP TABLE nego_allocation__nego_varieties AS
SELECT DISTINCT c.generic_name, c.specialty
FROM catalog_at_period_end c
CROSS JOIN params p
WHERE c.negotiated
  AND (c.negotiated_valid_to IS NULL OR c.negotiated_valid_to >= p.period_end);

-- Every drug code the catalog in force maps to a variety (any code of the name counts as stocking it).
CREATE OR REPLACE TEMP TABLE nego_allocation__variety_codes AS
SELECT DISTINCT c.generic_name, c.drug_code
FROM catalog_at_period_end c;

-- Population: level-3 public institutions in force at month end, with the threshold of their row.
CREATE OR REPLACE TEMP TABLE nego_allocation__institutions AS
SELECT
    i.institution_code,
    i.category,
    i.specialty,
    CASE
        WHEN i.category = 'general' AND i.grade = 'A' THEN p.nego_allocation_min_rate_l3_general_grade_a
        WHEN i.category = 'general' THEN p.nego_allocation_min_rate_l3_general_other_grade
        WHEN i.category IN ('tcm', 'integrated') THEN p.nego_allocation_min_rate_l3_tcm
        WHEN i.category = 'specialist' THEN p.nego_allocation_min_rate_l3_specialist
    END AS threshold
FROM health.institutions i
CROSS JOIN params p
WHERE i.ownership = 'public'
  AND i.level = 3
  AND i.category IN ('general', 'tcm', 'integrated', 'specialist')
  AND i.valid_from <= p.period_end
  AND (i.valid_to IS NULL OR i.valid_to > p.period_end);

-- Dual-channel pharmacies designated and not revoked at month end.
CREATE OR REPLACE TEMP TABLE nego_allocation__pharmacies AS
SELECT d.pharmacy_code, p.nego_allocation_min_rate_pharmacy AS threshold
FROM insurance.dual_channel_pharmacies d
CROSS JOIN params p
WHERE d.designated_on <= p.period_end
  AND (d.revoked_on IS NULL OR d.revoked_on > p.period_end);

-- Denominator pairs: a specialist institution is assessed on the varieties of its own specialty only.
CREATE OR REPLACE TEMP TABLE nego_allocation__targets AS
SELECT DISTINCT 'institution' AS entity_type, i.institution_code AS entity_code, v.generic_name
FROM nego_allocation__institutions i
JOIN nego_allocation__nego_varieties v ON i.category <> 'specialist' OR v.specialty = i.specialty
UNION
SELECT DISTINCT 'pharmacy' AS entity_type, ph.pharmacy_code AS entity_code, v.generic_name
FROM nego_allocation__pharmacies ph
CROSS JOIN nego_allocation__nego_varieties v;

-- Numerator pairs. Institutions: a formulary listing in force at month end of a code of the variety.
-- Pharmacies: a `received` trace event at the pharmacy within the window ending on month end.
CREATE OR REPLACE TEMP TABLE nego_allocation__stocked AS
SELECT t.entity_type, t.entity_code, t.generic_name
FROM nego_allocation__targets t
CROSS JOIN params p
WHERE t.entity_type = 'institution'
  AND EXISTS (
      SELECT 1
      FROM health.formulary f
      JOIN nego_allocation__variety_codes vc ON vc.drug_code = f.drug_code
      WHERE f.institution_code = t.entity_code
        AND vc.generic_name = t.generic_name
        AND f.listed_on <= p.period_end
        AND (f.delisted_on IS NULL OR f.delisted_on > p.period_end)
  )
UNION ALL
SELECT t.entity_type, t.entity_code, t.generic_name
FROM nego_allocation__targets t
CROSS JOIN params p
WHERE t.entity_type = 'pharmacy'
  AND EXISTS (
      SELECT 1
      FROM traceability.trace_events e
      JOIN nego_allocation__variety_codes vc ON vc.drug_code = e.drug_code
      WHERE e.party_code = t.entity_code
        AND vc.generic_name = t.generic_name
        AND e.event = 'received'
        AND e.event_on <= p.period_end
        AND e.event_on >= CAST(
            p.period_end - (p.nego_allocation_pharmacy_window_days - 1) * INTERVAL '1' DAY AS DATE)
  );

CREATE OR REPLACE TEMP TABLE nego_allocation__entities AS
SELECT 'institution' AS entity_type, institution_code AS entity_code, threshold
FROM nego_allocation__institutions
UNION ALL
SELECT 'pharmacy' AS entity_type, pharmacy_code AS entity_code, threshold
FROM nego_allocation__pharmacies;

CREATE OR REPLACE TEMP TABLE nego_allocation__rates AS
SELECT
    e.entity_type,
    e.entity_code,
    e.threshold,
    (SELECT COUNT(*) FROM nego_allocation__stocked s
     WHERE s.entity_type = e.entity_type AND s.entity_code = e.entity_code) AS numerator,
    (SELECT COUNT(*) FROM nego_allocation__targets t
     WHERE t.entity_type = e.entity_type AND t.entity_code = e.entity_code) AS denominator
FROM nego_allocation__entities e;

CREATE OR REPLACE TEMP TABLE nego_allocation__assessed AS
SELECT
    r.*,
    CASE
        WHEN r.denominator = 0 THEN 'not_applicable'
        WHEN CAST(r.numerator AS DOUBLE) / r.denominator >= r.threshold - p.engine_tolerance THEN 'compliant'
        ELSE 'breach'
    END AS status
FROM nego_allocation__rates r
CROSS JOIN params p;
