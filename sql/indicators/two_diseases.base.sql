-- 7. two_diseases: tables shared by two_diseases.sql and two_diseases.findings.sql.
-- Population lines: resident-insurance outpatient lines at primary institutions with a hypertension
-- (I10-I15) or diabetes (E10-E14) diagnosis. The ICD ranges define the population; they are not policy
-- thresholds.

-- Population lines of any period (the annual cap accumulates over the calendar year).
CREATE OR REPLACE TEMP TABLE two_diseases__population_all AS
SELECT
    s.settlement_id,
    s.line_no,
    s.patient_id,
    s.provider_code,
    s.settled_on,
    s.eligible_amount,
    s.fund_paid,
    s.days_supply,
    s.diagnosis_code,
    CASE WHEN SUBSTRING(s.diagnosis_code FROM 1 FOR 3) BETWEEN 'I10' AND 'I15' THEN 'hypertension'
         ELSE 'diabetes' END AS disease
FROM insurance.settlements s
JOIN institution_class ic ON ic.institution_code = s.provider_code AND ic.class = 'primary'
WHERE s.visit_type = 'outpatient'
  AND s.insurance_type = 'resident'
  AND (SUBSTRING(s.diagnosis_code FROM 1 FOR 3) BETWEEN 'I10' AND 'I15'
       OR SUBSTRING(s.diagnosis_code FROM 1 FOR 3) BETWEEN 'E10' AND 'E14');

-- Population lines of the period.
CREATE OR REPLACE TEMP TABLE two_diseases__population AS
SELECT l.*
FROM two_diseases__population_all l
CROSS JOIN params p
WHERE l.settled_on BETWEEN p.period_start AND p.period_end;

CREATE OR REPLACE TEMP TABLE two_diseases__per_institution AS
SELECT provider_code, SUM(fund_paid) AS fund_paid, SUM(eligible_amount) AS eligible_amount
FROM two_diseases__population
GROUP BY provider_code;
