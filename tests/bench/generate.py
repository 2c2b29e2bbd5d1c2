"""Synthetic data for the benchmark, generated column-wise with Arrow kernels (no per-row Python).

- :func:`settlements_ndjson` / :func:`trace_events_csv`: drop files with 1 % invalid records of the kinds
  agencies send (wrong check character, amount that does not add up, unknown code, three decimals,
  number written as a string, impossible date, missing or unknown field, a resident id in the wrong
  field), the rest valid; :func:`settlements_out_of_step_batches`: every line with an unknown member.
- :func:`month_tables`: one month of warehouse tables as Arrow (the loader's types), settlements and
  trace events at a given size plus the reference tables the indicators join, for timing the engine.

Everything is deterministic (``pc.random`` with fixed seeds).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from sanyi.contracts import get_dataset, load_datasets
from sanyi.publish import SUBMISSIONS_SCHEMA

_WEIGHTS = [pow(2, 18 - i, 11) for i in range(1, 18)]
_CHECK = "10X98765432"
BATCH = 200_000  # rows generated and written at a time
MONTH = "2024-10"
_MONTH_START = datetime(2024, 9, 30, 16, 0, tzinfo=UTC)  # 2024-10-01T00:00 in UTC+08:00
_MONTH_SECONDS = 31 * 86400
COUNTIES = [f"3301{n:02d}" for n in range(2, 13)]  # eleven counties of one city


def resident_id(n: int) -> str:
    """The n-th synthetic resident id (valid check character)."""
    area = COUNTIES[n % len(COUNTIES)]
    birth = (date(1940, 1, 1) + timedelta(days=(n * 7919) % 25000)).strftime("%Y%m%d")
    body = f"{area}{birth}{n % 1000:03d}"
    return body + _CHECK[sum(int(c) * w for c, w in zip(body, _WEIGHTS, strict=True)) % 11]


def pseudonym(n: int) -> str:
    return hashlib.sha256(f"bench-patient-{n}".encode()).hexdigest()


def _uniform(n: int, seed: int) -> pa.Array:
    return pc.random(n, initializer=seed)


def _ints(n: int, seed: int, low: int, high: int) -> pa.Array:
    """Integers in [low, high)."""
    return pc.add(pc.cast(pc.floor(pc.multiply(_uniform(n, seed), high - low)), pa.int64()), low)


def _text(values: pa.Array) -> pa.Array:
    return pc.cast(values, pa.string())


def _pad(values: pa.Array, width: int) -> pa.Array:
    return pc.utf8_lpad(_text(values), width, "0")


def _money_text(units: pa.Array, places: int) -> pa.Array:
    """Integer units of 10^-places as decimal text ("1234" cents → "12.34")."""
    scale = 10**places
    return pc.binary_join_element_wise(
        _text(pc.divide(units, scale)), _pad(pc.modulo(units, scale), places), "."
    )


def _join(*parts: Any) -> pa.Array:
    """Element-wise concatenation of string arrays and literal strings."""
    args = [pa.scalar(p, pa.string()) if isinstance(p, str) else p for p in parts]
    return pc.binary_join_element_wise(*args, "")


def _pick(pool: list[str], idx: pa.Array) -> pa.Array:
    return pc.take(pa.array(pool, pa.string()), idx)


def _local_timestamps(seconds: pa.Array) -> pa.Array:
    """Seconds into October 2024 (UTC+08:00 wall clock) as RFC 3339 text with the +08:00 offset."""
    day = pc.add(pc.divide(seconds, 86400), 1)
    rest = pc.modulo(seconds, 86400)
    return _join(
        "2024-10-",
        _pad(day, 2),
        "T",
        _pad(pc.divide(rest, 3600), 2),
        ":",
        _pad(pc.modulo(pc.divide(rest, 60), 60), 2),
        ":",
        _pad(pc.modulo(rest, 60), 2),
        "+08:00",
    )


def _codes(prefix: str, count: int, width: int = 11, start: int = 1) -> list[str]:
    return [f"{prefix}{COUNTIES[i % len(COUNTIES)][:6]}{start + i:0{width - 6}d}" for i in range(count)]


DRUGS = [f"XA{n:021d}" for n in range(2000)]
PROVIDERS = _codes("H", 300) + _codes("P", 700)
DIAGNOSES = ["I10", "E11.9", "E11", "J45.909", "K21.0", "M54.5", "I25.1", "N18.3"]


def _invalid_kind(n: int, seed: int, rate: float) -> pa.Array:
    """0 for a valid row, else 1..10 (which mistake)."""
    bad = pc.less(_uniform(n, seed), rate)
    return pc.if_else(bad, _ints(n, seed + 1, 1, 11), 0)


def _where(kind: pa.Array, which: int, value: Any, otherwise: pa.Array) -> pa.Array:
    return pc.if_else(pc.equal(kind, which), value, otherwise)


def settlements_batches(
    lines: int, *, invalid_rate: float = 0.01, patients: int = 200_000
) -> Iterator[pa.Array]:
    """Settlement-line NDJSON text in batches (each element one line with its newline)."""
    pool = [resident_id(i) for i in range(min(patients, max(lines // 3, 1000)))]
    for start in range(0, lines, BATCH):
        n = min(BATCH, lines - start)
        seed = 1000 + start
        row = pa.array(range(start, start + n), pa.int64())
        bill = pc.divide(row, 3)
        line_no = pc.add(pc.modulo(row, 3), 1)
        kind = _invalid_kind(n, seed, invalid_rate)
        quantity10 = pc.take(pa.array([10, 20, 30, 50, 100, 5, 15], pa.int64()), _ints(n, seed + 2, 0, 7))
        price4 = _ints(n, seed + 3, 100, 2_000_000)  # units of 0.0001 yuan
        cents = pc.divide(pc.add(pc.multiply(quantity10, price4), 500), 1000)  # half-up to the cent
        eligible = pc.divide(pc.multiply(cents, _ints(n, seed + 4, 80, 101)), 100)
        fund = pc.divide(pc.multiply(eligible, _ints(n, seed + 5, 50, 91)), 100)
        quantity = pc.take(pa.array(["1", "2", "3", "5", "10", "0.5", "1.5"]), _ints(n, seed + 2, 0, 7))
        patient = _pick(pool, _ints(n, seed + 6, 0, len(pool)))
        sid = _join("S20241001-", _pad(bill, 10))
        seconds = _ints(n, seed + 7, 0, _MONTH_SECONDS)
        settled = _local_timestamps(seconds)
        traced = pc.less(_uniform(n, seed + 8), 0.5)
        trace = pc.if_else(traced, _join('["8', _pad(row, 19), '"]'), "[]")
        amount = _money_text(cents, 2)
        # the 1 %: one mistake each
        patient = _where(
            kind, 1, pc.utf8_replace_slice(patient, 17, 18, "0"), patient
        )  # may stay valid: 1 in 11
        amount = _where(kind, 2, _money_text(pc.add(cents, 1), 2), amount)
        visit = _where(
            kind, 3, "emergency", _pick(["outpatient", "inpatient", "pharmacy"], _ints(n, seed + 9, 0, 3))
        )
        provider = _where(kind, 4, "X123", _pick(PROVIDERS, _ints(n, seed + 10, 0, len(PROVIDERS))))
        eligible_text = _where(kind, 5, _join(_money_text(eligible, 2), "1"), _money_text(eligible, 2))
        amount = _where(kind, 6, _join('"', amount, '"'), amount)
        settled = _where(kind, 7, "2024-02-30T10:00:00+08:00", settled)
        days = _where(kind, 8, "", _join(', "days_supply": ', _text(_ints(n, seed + 11, 1, 91))))
        extra = _where(kind, 9, ', "note": "manual"', "")
        sid = _where(kind, 10, _join("S-", patient), sid)
        yield _join(
            '{"settlement_id": "',
            sid,
            '", "line_no": ',
            _text(line_no),
            ', "patient_id": "',
            patient,
            '", "insurance_type": "',
            _pick(["employee", "resident"], _ints(n, seed + 12, 0, 2)),
            '", "provider_code": "',
            provider,
            '", "visit_type": "',
            visit,
            '", "diagnosis_code": "',
            _pick(DIAGNOSES, _ints(n, seed + 13, 0, len(DIAGNOSES))),
            '", "drug_code": "',
            _pick(DRUGS, _ints(n, seed + 14, 0, len(DRUGS))),
            '", "quantity": ',
            quantity,
            ', "unit_price": ',
            _money_text(price4, 4),
            ', "amount": ',
            amount,
            ', "eligible_amount": ',
            eligible_text,
            ', "fund_paid": ',
            _money_text(fund, 2),
            days,
            ', "settled_at": "',
            settled,
            '", "trace_codes": ',
            trace,
            extra,
            "}\n",
        )


def settlements_out_of_step_batches(lines: int) -> Iterator[pa.Array]:
    """Settlement lines from an exporter out of step with the contract: every line has a member the contract
    does not know (``"note"``), so every record is rejected."""
    for batch in settlements_batches(lines, invalid_rate=0.0):
        yield pc.replace_substring_regex(batch, r"\}\n$", ', "note": "manual"}\n')


TRACE_HEADER = "trace_code,drug_code,event,party_code,event_at,batch_no,expires_on\n"
EVENTS = ["produced", "shipped", "received", "dispensed", "sold", "returned", "destroyed"]
PARTIES = PROVIDERS + [f"E{n:011d}" for n in range(1, 41)]


def trace_events_batches(lines: int, *, invalid_rate: float = 0.01) -> Iterator[pa.Array]:
    """Trace-event CSV text (no header) in batches; each unit has a few events."""
    for start in range(0, lines, BATCH):
        n = min(BATCH, lines - start)
        seed = 9000 + start
        row = pa.array(range(start, start + n), pa.int64())
        kind = _invalid_kind(n, seed, invalid_rate)
        unit = pc.divide(row, 4)
        code = _join("8", _pad(unit, 19))
        event = _pick(EVENTS, pc.modulo(row, 4))
        at = _local_timestamps(
            pc.add(pc.multiply(pc.modulo(row, 4), 3600), _ints(n, seed + 1, 0, _MONTH_SECONDS - 4 * 3600))
        )
        batch = _join("B24", _pad(pc.modulo(unit, 5000), 4))
        expires = _join("2026-", _pad(_ints(n, seed + 2, 1, 13), 2), "-", _pad(_ints(n, seed + 3, 1, 29), 2))
        party = _pick(PARTIES, _ints(n, seed + 4, 0, len(PARTIES)))
        event = _where(kind, 1, "lost", event)
        expires = _where(kind, 2, "2025-02-30", expires)
        party = _where(kind, 3, "H1", party)
        batch = _where(kind, 4, "", batch)
        batch = _where(
            kind,
            5,
            _join(
                "B",
                pc.utf8_slice_codeunits(
                    _pick([resident_id(i) for i in range(100)], pc.modulo(row, 100)), 0, 18
                ),
            ),
            batch,
        )
        at = _where(kind, 6, "2024-10-01T24:00:00+08:00", at)
        code = _where(kind, 7, "812345", code)
        yield _join(
            code,
            ",",
            _pick(DRUGS, pc.modulo(unit, len(DRUGS))),
            ",",
            event,
            ",",
            party,
            ",",
            at,
            ",",
            batch,
            ",",
            expires,
            "\n",
        )


def write_lines(path: Path, batches: Iterator[pa.Array], header: str = "") -> int:
    """Write text batches (each element ends with a newline) to ``path``; returns the line count."""
    count = 0
    with path.open("wb") as fh:
        fh.write(header.encode())
        for arr in batches:
            arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
            size = pc.sum(pc.binary_length(arr)).as_py() or 0
            offsets = pa.Array.from_buffers(pa.int32(), len(arr) + 1, [None, arr.buffers()[1]])
            first = offsets[0].as_py()
            fh.write(memoryview(arr.buffers()[2])[first : first + size])
            count += len(arr)
    return count


# ======================================================================================= a month in Arrow
def _decimal(units: pa.Array, places: int, type_: pa.DataType) -> pa.Array:
    return pc.cast(_money_text(units, places), type_)


def _dates(days: list[date] | pa.Array) -> pa.Array:
    return pa.array(days, pa.date32()) if isinstance(days, list) else days


def _schema_table(name: str, columns: dict[str, Any]) -> pa.Table:
    ds = get_dataset(*name.split("."))
    schema = ds.arrow_schema()
    n = len(next(iter(columns.values())))
    meta = {
        "_business_date": pa.repeat(pa.scalar(date(2024, 10, 31), pa.date32()), n),
        "_arrived_at": pa.repeat(
            pa.scalar(datetime(2024, 11, 1, 2, tzinfo=UTC), pa.timestamp("us", tz="UTC")), n
        ),
        "_source_file": pa.repeat(pa.scalar(f"{ds.agency}/{ds.name}/2024-10-31/bench.ndjson"), n),
        "_source_sha256": pa.repeat(pa.scalar("0" * 64), n),
        "_line_no": pa.array(range(1, n + 1), pa.int64()),
    }
    arrays = []
    for f in schema:
        value = columns.get(f.name, meta.get(f.name))
        arrays.append(value if isinstance(value, pa.Array | pa.ChunkedArray) else pa.array(value, f.type))
    return pa.Table.from_arrays([a.cast(f.type) for a, f in zip(arrays, schema, strict=True)], schema=schema)


def month_tables(lines: int, *, patients: int = 300_000) -> dict[str, pa.Table]:
    """One month (October 2024) of the warehouse: ``lines`` settlement lines and ``lines`` trace events,
    the reference tables the indicators join, and ``sanyi.submissions``."""
    institutions = [c for c in PROVIDERS if c.startswith("H")]
    pharmacies = [c for c in PROVIDERS if c.startswith("P")]
    tables: dict[str, pa.Table] = {}
    tables["health.divisions"] = _schema_table(
        "health.divisions",
        {
            "division_code": ["330000", "330100", *COUNTIES],
            "name": ["province", "city", *COUNTIES],
            "level": ["province", "city", *["county"] * len(COUNTIES)],
            "parent_code": [None, "330000", *["330100"] * len(COUNTIES)],
        },
    )
    k = len(institutions)
    tables["health.institutions"] = _schema_table(
        "health.institutions",
        {
            "institution_code": institutions,
            "name": institutions,
            "division_code": [COUNTIES[i % len(COUNTIES)] for i in range(k)],
            "level": [1 + i % 3 for i in range(k)],
            "grade": ["A", "B", "C", "U"] * (k // 4) + ["A"] * (k % 4),
            "category": ["general"] * k,
            "specialty": [None] * k,
            "ownership": ["public"] * k,
            "valid_from": [date(2010, 1, 1)] * k,
            "valid_to": [None] * k,
        },
    )
    m = len(pharmacies)
    tables["insurance.dual_channel_pharmacies"] = _schema_table(
        "insurance.dual_channel_pharmacies",
        {
            "pharmacy_code": pharmacies,
            "name": pharmacies,
            "division_code": [COUNTIES[i % len(COUNTIES)] for i in range(m)],
            "designated_on": [date(2023, 1, 1)] * m,
            "revoked_on": [None] * m,
            "traceability_enabled": [i % 5 != 0 for i in range(m)],
        },
    )
    d = len(DRUGS)
    tables["insurance.drug_catalog"] = _schema_table(
        "insurance.drug_catalog",
        {
            "catalog_version": ["2024"] * d,
            "published_on": [date(2023, 12, 1)] * d,
            "effective_from": [date(2024, 1, 1)] * d,
            "drug_code": DRUGS,
            "generic_name": DRUGS,
            "catalog_class": ["A" if i % 3 else "B" for i in range(d)],
            "negotiated": [i % 10 == 0 for i in range(d)],
            "negotiated_valid_to": [date(2025, 12, 31) if i % 10 == 0 else None for i in range(d)],
            "specialty": [None] * d,
        },
    )
    pairs = [(h, DRUGS[(i * 7 + j) % d]) for i, h in enumerate(institutions) for j in range(40)]
    tables["health.formulary"] = _schema_table(
        "health.formulary",
        {
            "institution_code": [p[0] for p in pairs],
            "drug_code": [p[1] for p in pairs],
            "listed_on": [date(2024, 1, 1)] * len(pairs),
            "delisted_on": [None] * len(pairs),
        },
    )
    tables["health.committee_meetings"] = _schema_table(
        "health.committee_meetings",
        {
            "institution_code": institutions,
            "meeting_on": [date(2024, 2, 1)] * k,
            "catalog_version": ["2024"] * k,
        },
    )
    groups = [f"G{i:03d}" for i in range(50)]
    tables["insurance.vbp_groups"] = _schema_table(
        "insurance.vbp_groups",
        {
            "batch_id": ["VBP-2024-01"] * 50,
            "product_group": groups,
            "exec_start": [date(2024, 1, 1)] * 50,
            "cycle_months": [24] * 50,
            "price_cap": [None] * 50,
            "exemption": [None] * 50,
        },
    )
    tables["insurance.vbp_products"] = _schema_table(
        "insurance.vbp_products",
        {
            "batch_id": ["VBP-2024-01"] * 200,
            "product_group": [groups[i % 50] for i in range(200)],
            "drug_code": DRUGS[:200],
            "selected": [i % 2 == 0 for i in range(200)],
            "winning_price": pa.array(["1.2345" if i % 2 == 0 else None for i in range(200)]).cast(
                pa.decimal128(18, 4)
            ),
        },
    )
    agreements = [(g, h) for g in groups for h in institutions[:60]]
    tables["insurance.vbp_agreements"] = _schema_table(
        "insurance.vbp_agreements",
        {
            "batch_id": ["VBP-2024-01"] * len(agreements),
            "product_group": [a[0] for a in agreements],
            "institution_code": [a[1] for a in agreements],
            "agreed_volume": [24000] * len(agreements),
        },
    )
    orders = max(lines // 100, 100)
    o = pa.array(range(orders), pa.int64())
    tables["insurance.procurement_orders"] = _schema_table(
        "insurance.procurement_orders",
        {
            "order_id": _join("PO2024", _pad(o, 8)),
            "institution_code": _pick(institutions, pc.modulo(o, k)),
            "drug_code": _pick(DRUGS[:200], pc.modulo(o, 200)),
            "quantity": _ints(orders, 77, 100, 5000),
            "unit_price": _decimal(_ints(orders, 78, 5000, 20000), 4, pa.decimal128(18, 4)),
            "ordered_on": pc.cast(pc.cast(pc.add(_ints(orders, 79, 0, 31), 20362), pa.int32()), pa.date32()),
            "delivered_on": pa.nulls(orders, pa.date32()),
            "supplier_code": _pick([f"E{n:011d}" for n in range(1, 41)], pc.modulo(o, 40)),
        },
    )
    pool = [pseudonym(i) for i in range(min(patients, max(lines // 3, 1000)))]
    chronic = pool[: len(pool) // 5]
    tables["health.chronic_registry"] = _schema_table(
        "health.chronic_registry",
        {
            "patient_id": chronic,
            "disease": ["hypertension" if i % 2 else "diabetes" for i in range(len(chronic))],
            "institution_code": [institutions[i % k] for i in range(len(chronic))],
            "filed_on": [date(2023, 6, 1)] * len(chronic),
        },
    )
    parts = {name: [] for name in ("settlements", "trace")}
    for start in range(0, lines, BATCH):
        parts["settlements"].append(_settlement_rows(start, min(BATCH, lines - start), pool))
        parts["trace"].append(_trace_rows(start, min(BATCH, lines - start)))
    tables["insurance.settlements"] = pa.concat_tables(parts["settlements"])
    tables["traceability.trace_events"] = pa.concat_tables(parts["trace"])
    tables["sanyi.submissions"] = _submissions()
    return tables


def _settlement_rows(start: int, n: int, pool: list[str]) -> pa.Table:
    seed = 5000 + start
    row = pa.array(range(start, start + n), pa.int64())
    quantity10 = pc.take(pa.array([10, 20, 30, 50, 100, 5, 15], pa.int64()), _ints(n, seed, 0, 7))
    price4 = _ints(n, seed + 1, 100, 2_000_000)
    cents = pc.divide(pc.add(pc.multiply(quantity10, price4), 500), 1000)
    eligible = pc.divide(pc.multiply(cents, _ints(n, seed + 2, 80, 101)), 100)
    fund = pc.divide(pc.multiply(eligible, _ints(n, seed + 3, 50, 91)), 100)
    seconds = _ints(n, seed + 4, 0, _MONTH_SECONDS)
    instants = pc.add(pc.multiply(seconds, 1_000_000), int(_MONTH_START.timestamp()) * 1_000_000)
    traced = pc.less(_uniform(n, seed + 5), 0.5)
    codes = _join("8", _pad(row, 19))
    lengths = pc.cast(traced, pa.int32())
    offsets = pa.concat_arrays([pa.array([0], pa.int32()), pc.cumulative_sum(lengths)])
    trace_codes = pa.ListArray.from_arrays(offsets, pc.filter(codes, traced))
    provider = _pick(PROVIDERS, _ints(n, seed + 6, 0, len(PROVIDERS)))
    return _schema_table(
        "insurance.settlements",
        {
            "settlement_id": _join("S20241001-", _pad(pc.divide(row, 3), 10)),
            "line_no": pc.add(pc.modulo(row, 3), 1),
            "patient_id": _pick(pool, _ints(n, seed + 7, 0, len(pool))),
            "insurance_type": _pick(["employee", "resident"], _ints(n, seed + 8, 0, 2)),
            "provider_code": provider,
            "visit_type": pc.if_else(
                pc.starts_with(provider, "P"),
                "pharmacy",
                _pick(["outpatient", "inpatient"], _ints(n, seed + 9, 0, 2)),
            ),
            "diagnosis_code": _pick(DIAGNOSES, _ints(n, seed + 10, 0, len(DIAGNOSES))),
            "drug_code": _pick(DRUGS, _ints(n, seed + 11, 0, len(DRUGS))),
            "quantity": pc.divide(pc.cast(quantity10, pa.float64()), 10.0),
            "unit_price": _decimal(price4, 4, pa.decimal128(18, 4)),
            "amount": _decimal(cents, 2, pa.decimal128(18, 2)),
            "eligible_amount": _decimal(eligible, 2, pa.decimal128(18, 2)),
            "fund_paid": _decimal(fund, 2, pa.decimal128(18, 2)),
            "days_supply": _ints(n, seed + 12, 1, 91),
            "settled_at": instants.cast(pa.timestamp("us", tz="UTC")),
            "settled_on": pc.add(instants, 8 * 3600 * 1_000_000).cast(pa.timestamp("us")).cast(pa.date32()),
            "trace_codes": trace_codes,
        },
    )


def _trace_rows(start: int, n: int) -> pa.Table:
    seed = 7000 + start
    row = pa.array(range(start, start + n), pa.int64())
    unit = pc.divide(row, 2)
    # Half the units sold in settlements (codes shared with them); a few codes sold twice (duplicate_trace).
    code = _join(
        "8",
        _pad(pc.if_else(pc.less(_uniform(n, seed), 0.002), pc.modulo(unit, 1000), pc.multiply(unit, 2)), 19),
    )
    seconds = _ints(n, seed + 1, 0, _MONTH_SECONDS)
    instants = pc.add(pc.multiply(seconds, 1_000_000), int(_MONTH_START.timestamp()) * 1_000_000)
    return _schema_table(
        "traceability.trace_events",
        {
            "trace_code": code,
            "drug_code": _pick(DRUGS, pc.modulo(unit, len(DRUGS))),
            "event": pc.if_else(pc.equal(pc.modulo(row, 2), 0), "received", "sold"),
            "party_code": _pick(PARTIES, _ints(n, seed + 2, 0, len(PARTIES))),
            "event_at": instants.cast(pa.timestamp("us", tz="UTC")),
            "event_on": pc.add(instants, 8 * 3600 * 1_000_000).cast(pa.timestamp("us")).cast(pa.date32()),
            "batch_no": _join("B24", _pad(pc.modulo(unit, 5000), 4)),
            "expires_on": pa.repeat(pa.scalar(date(2026, 6, 30), pa.date32()), n),
        },
    )


def _submissions() -> pa.Table:
    rows = []
    for (agency, name), _ in sorted(load_datasets().items()):
        for day in range(1, 32):
            business = date(2024, 10, day)
            arrived = datetime(2024, 10, day, 18, tzinfo=UTC)
            rows.append(
                {
                    "agency": agency,
                    "dataset": name,
                    "business_date": business,
                    "status": "loaded",
                    "arrived_at": arrived,
                    "arrived_local": arrived.replace(tzinfo=None) + timedelta(hours=8),
                    "file": f"{agency}/{name}/{business}/part.ndjson",
                }
            )
    return pa.Table.from_pylist(rows, schema=SUBMISSIONS_SCHEMA)
