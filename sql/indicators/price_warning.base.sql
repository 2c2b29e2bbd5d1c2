-- 10. price_warning: the tables its results and findings SELECTs both read, computed once,
-- so that the findings stand on exactly the rows the results judge.

CREATE OR REPLACE TEMP TABLE price_warning__monthly AS
SELECT
    o.drug_code,
    EXTRACT(YEAR FROM o.ordered_on) * 12 + EXTRACT(MONTH FROM o.ordered_on) AS month_index,
    MIN(o.ordered_on) AS first_order_on,
    SUM(o.unit_price * o.quantity) AS spend,
    SUM(o.quantity) AS quantity
FROM insurance.procurement_orders o
CROSS JOIN params p
WHERE o.ordered_on <= p.period_end
GROUP BY o.drug_code, EXTRACT(YEAR FROM o.ordered_on) * 12 + EXTRACT(MONTH FROM o.ordered_on);

CREATE OR REPLACE TEMP TABLE price_warning__current_month AS
SELECT m.drug_code, m.spend, m.quantity, m.month_index
FROM price_warning__monthly m
CROSS JOIN params p
WHERE m.month_index = EXTRACT(YEAR FROM p.period_start) * 12 + EXTRACT(MONTH FROM p.period_start);

CREATE OR REPLACE TEMP TABLE price_warning__earlier AS
SELECT c.drug_code, m.spend, m.quantity, m.first_order_on
FROM price_warning__current_month c
JOIN price_warning__monthly m
  ON m.drug_code = c.drug_code
 AND m.month_index = (SELECT MAX(e.month_index) FROM price_warning__monthly e
                      WHERE e.drug_code = c.drug_code AND e.month_index < c.month_index);

CREATE OR REPLACE TEMP TABLE price_warning__compared AS
SELECT
    c.drug_code,
    CAST(c.spend AS DOUBLE) / c.quantity AS mean_now,
    CAST(e.spend AS DOUBLE) / e.quantity AS mean_before,
    c.quantity AS quantity_now,
    e.quantity AS quantity_before,
    e.first_order_on AS earlier_month_day
FROM price_warning__current_month c
LEFT JOIN price_warning__earlier e ON e.drug_code = c.drug_code;
