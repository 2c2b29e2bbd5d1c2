-- 5. duplicate_trace findings: one duplicate_trace_code per flagged code of the period, on the province.
-- amount = fund paid on the period's suspicious lines carrying the code (NULL when flagged by events only).
WITH code_lines AS (
    SELECT DISTINCT trace_code, settlement_id, line_no, settled_at, provider_code, fund_paid
    FROM duplicate_trace__duplicate_pairs
)
SELECT
    'duplicate_trace' AS indicator,
    p.period,
    'province' AS entity_type,
    pr.province_code AS entity_code,
    'duplicate_trace_code' AS kind,
    f.trace_code AS subject,
    (SELECT SUM(cl.fund_paid) FROM code_lines cl WHERE cl.trace_code = f.trace_code) AS amount,
    json_object(
        'lines', (
            SELECT array_agg(
                json_object(
                    'line', cl.settlement_id || '#' || CAST(cl.line_no AS VARCHAR),
                    'provider_code', cl.provider_code,
                    'settled_at', REPLACE(CAST(cl.settled_at AT TIME ZONE 'Asia/Shanghai' AS VARCHAR), ' ', 'T')
                                  || '+08:00',
                    'fund_paid', CAST(cl.fund_paid AS VARCHAR),
                    'earlier_lines', (
                        SELECT array_agg(
                            json_object(
                                'line', d.earlier_settlement_id || '#' || CAST(d.earlier_line_no AS VARCHAR),
                                'provider_code', d.earlier_provider_code,
                                'settled_at',
                                REPLACE(CAST(d.earlier_settled_at AT TIME ZONE 'Asia/Shanghai' AS VARCHAR), ' ', 'T')
                                || '+08:00'
                            )
                            ORDER BY d.earlier_settled_at, d.earlier_settlement_id, d.earlier_line_no
                        )
                        FROM duplicate_trace__duplicate_pairs d
                        WHERE d.trace_code = cl.trace_code
                          AND d.settlement_id = cl.settlement_id
                          AND d.line_no = cl.line_no
                    )
                )
                ORDER BY cl.settled_at, cl.settlement_id, cl.line_no
            )
            FROM code_lines cl
            WHERE cl.trace_code = f.trace_code
        ),
        'providers', (
            SELECT array_agg(x.provider_code ORDER BY x.provider_code)
            FROM (
                SELECT provider_code FROM duplicate_trace__duplicate_pairs WHERE trace_code = f.trace_code
                UNION
                SELECT earlier_provider_code
                FROM duplicate_trace__duplicate_pairs
                WHERE trace_code = f.trace_code
            ) x
        ),
        'resale_events', (
            SELECT array_agg(
                json_object(
                    'event', er.event,
                    'party_code', er.party_code,
                    'event_at', REPLACE(CAST(er.event_at AT TIME ZONE 'Asia/Shanghai' AS VARCHAR), ' ', 'T')
                                || '+08:00',
                    'previous_event', er.previous_event,
                    'previous_party_code', er.previous_party_code,
                    'previous_event_at',
                    REPLACE(CAST(er.previous_event_at AT TIME ZONE 'Asia/Shanghai' AS VARCHAR), ' ', 'T')
                    || '+08:00'
                )
                ORDER BY er.event_at, er.party_code, er.event
            )
            FROM duplicate_trace__event_resales er
            WHERE er.trace_code = f.trace_code
        )
    ) AS detail
FROM duplicate_trace__flagged_codes f
CROSS JOIN province pr
CROSS JOIN params p
