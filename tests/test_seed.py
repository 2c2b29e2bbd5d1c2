"""The demo data generator: determinism, the drop convention, counts that match the bytes written, and
planted violations that are really in the data (checked by reading the files back with the platform's
own parser and the reference validator)."""

from __future__ import annotations

import gzip
import json
import time
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from sanyi import contracts, indicators, ingest, validation
from sanyi.privacy import find_resident_ids, is_valid_resident_id, pseudonymise
from sanyi.seed import SeedReport, generate
from sanyi.storage import LocalBucket
from sanyi.warehouse import register

CST = timezone(timedelta(hours=8))
INDICATORS = indicators.INDICATORS
# Finding kinds per indicator (indicators.md); "breach" marks a results row in breach.
KINDS = {
    "nego_allocation": {"missing_variety"},
    "committee_linkage": {"no_committee_meeting"},
    "county_dual_channel": {"uncovered_county"},
    "dual_channel_trace": {"untraced_line"},
    "duplicate_trace": {"duplicate_trace_code"},
    "vbp_execution": {
        "not_entered",
        "low_completion",
        "high_nonselected_share",
        "price_above_winning",
        "price_above_cap",
    },
    "two_diseases": {"low_fund_ratio", "over_annual_cap", "long_prescription"},
    "reimbursement_ratio": {"ratio_below_floor", "gap_too_small"},
    "catalog_compliance": {"not_in_catalog"},
    "price_warning": {"price_change"},
    "submission_completeness": {"missing_submission", "late_submission"},
}
FORMS = (".ndjson", ".jsonl", ".csv", ".parquet", ".ndjson.gz", ".csv.gz", ".gb18030.csv")
DAILY = ("insurance/settlements", "insurance/procurement_orders", "traceability/trace_events")
MONTHLY = ("health/formulary", "health/chronic_registry", "insurance/dual_channel_pharmacies")
WINDOW = (date(2024, 9, 1), date(2024, 12, 31))
KEY = b"seed-test-key"


class Drop:
    """One file read back: its drop path, and each record with the reference validator's errors."""

    def __init__(self, key: str, data: bytes, arrival: datetime) -> None:
        self.key, self.data, self.arrival = key, data, arrival
        self.agency, self.dataset, day, self.name = key.split("/")
        self.business_date = date.fromisoformat(day)
        self.records: list[tuple[dict[str, Any] | None, list[Any]]] = []
        self.rejected: str | None = None
        try:
            drop = ingest.parse_key(key)
        except ingest.FileRejected as exc:
            self.rejected = str(exc)
            return
        ds = contracts.get_dataset(drop.agency, drop.dataset)
        body = gzip.decompress(data) if drop.gzipped else data
        for p in ingest.parse_records(body, drop, ds):
            errors = p.errors or validation.validate_record(ds, p.record)
            self.records.append((p.record, errors))
        self.file_rule = validation.validate_file(ds, [r for r, _ in self.records])

    @property
    def valid(self) -> list[dict[str, Any]]:
        return [r for r, errors in self.records if not errors and r is not None]

    @property
    def invalid(self) -> int:
        return sum(1 for _, errors in self.records if errors)


def _read(root: Path) -> dict[str, Drop]:
    bucket = LocalBucket(root=root)
    return {o.key: Drop(o.key, bucket.read_bytes(o.key), o.last_modified) for o in bucket.list()}


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> tuple[SeedReport, dict[str, Drop]]:
    root = tmp_path_factory.mktemp("landing")
    report = generate(LocalBucket(root=root), seed=3, scale="tiny", pseudonym_key=KEY)
    return report, _read(root)


def _valid(drops: dict[str, Drop], table: str) -> list[tuple[Drop, dict[str, Any]]]:
    """Valid records of ``agency/dataset`` from the files the platform would load (no replay)."""
    agency, dataset = table.split("/")
    out = []
    for d in drops.values():
        if (d.agency, d.dataset) == (agency, dataset) and "resend" not in d.name and d.rejected is None:
            out.extend((d, r) for r in d.valid)
    return out


def _cst_date(ts: str) -> date:
    parsed = contracts.parse_timestamp(ts)
    assert parsed is not None, ts
    return parsed.astimezone(CST).date()


# ---------------------------------------------------------------------------------------- determinism
def test_same_seed_gives_the_same_keys_bytes_and_arrival_times(tmp_path):
    def snapshot(root: Path, seed: int) -> dict[str, tuple[bytes, datetime]]:
        bucket = LocalBucket(root=root)
        generate(bucket, seed=seed, scale="tiny")
        return {o.key: (bucket.read_bytes(o.key), o.last_modified) for o in bucket.list()}

    first, second = snapshot(tmp_path / "a", 5), snapshot(tmp_path / "b", 5)
    assert first == second
    other = snapshot(tmp_path / "c", 6)
    assert set(other) == set(first)  # the plan is the same, the people and numbers are not
    changed = [k for k in first if first[k][0] != other[k][0]]
    assert any("/settlements/" in k for k in changed)


def test_arrival_times_derive_from_business_dates_not_the_clock(seeded):
    report, drops = seeded
    assert sorted(report.files) == sorted(drops)
    for d in drops.values():
        start_of_day = datetime.combine(d.business_date, datetime.min.time(), tzinfo=CST)
        assert start_of_day <= d.arrival < start_of_day + timedelta(days=5), d.key


# ---------------------------------------------------------------------------------------- drop convention
def test_every_dataset_of_every_agency_is_dropped_under_its_own_agency(seeded):
    _, drops = seeded
    loaded = {(d.agency, d.dataset) for d in drops.values() if d.rejected is None}
    assert loaded == set(contracts.load_datasets())
    misfiled = [d for d in drops.values() if d.rejected is not None]
    assert [(d.agency, d.dataset) for d in misfiled] == [("health", "settlements")]
    assert "belongs to agency insurance" in misfiled[0].rejected


def test_keys_follow_the_drop_convention_inside_the_window(seeded):
    report, drops = seeded
    for key in report.files:
        agency, dataset, day, name = key.split("/")
        assert agency in contracts.AGENCIES and name
        assert WINDOW[0] <= date.fromisoformat(day) <= WINDOW[1], key
    # every date of the window has its daily files, except the one planted missing date
    for table in DAILY:
        days = {d.business_date for d in drops.values() if f"{d.agency}/{d.dataset}" == table}
        expected = {WINDOW[0] + timedelta(days=i) for i in range((WINDOW[1] - WINDOW[0]).days + 1)}
        missing = {
            date.fromisoformat(p["subject"])
            for p in report.planted
            if p["kind"] == "missing_submission" and p["entity_code"] == table
        }
        assert days == expected - missing, table
    for table in MONTHLY:
        months = Counter(
            f"{d.business_date:%Y-%m}" for d in drops.values() if f"{d.agency}/{d.dataset}" == table
        )
        assert months == {m: 1 for m in ("2024-09", "2024-10", "2024-11", "2024-12")}, table


def test_every_accepted_file_form_is_used(seeded):
    _, drops = seeded
    forms = set()
    for key in drops:
        name = key.rsplit("/", 1)[1]
        forms.add(next(f for f in sorted(FORMS, key=len, reverse=True) if name.endswith(f)))
    assert forms == set(FORMS)
    gb = next(d for d in drops.values() if d.name.endswith(".gb18030.csv"))
    with pytest.raises(UnicodeDecodeError):
        gb.data.decode("utf-8")  # really GB18030, not ASCII that any decoder reads
    assert len(gb.valid) > 0


def test_zero_record_files_and_one_exact_replay(seeded):
    report, drops = seeded
    empty = [d for d in drops.values() if not d.records and d.rejected is None]
    assert any(d.data == b"" for d in empty)  # an empty NDJSON file
    assert any(d.key.endswith(".csv") and d.data.count(b"\n") == 1 for d in empty)  # a header-only CSV
    replays = [k for k, e in report.expected.items() if e["status"] == "duplicate"]
    assert len(replays) == 1
    replay = drops[replays[0]]
    twins = [d for d in drops.values() if d.data == replay.data and d.key != replay.key]
    assert len(twins) == 1
    twin = twins[0]
    assert (twin.agency, twin.dataset, twin.business_date) == (
        replay.agency,
        replay.dataset,
        replay.business_date,
    )
    assert twin.name != replay.name and len(twin.records) > 0
    assert twin.arrival < replay.arrival


# ---------------------------------------------------------------------------------------- counts
def test_reported_counts_match_the_records_written(seeded):
    report, drops = seeded
    assert report.records == sum(len(d.records) for d in drops.values() if d.rejected is None) + sum(
        report.expected[d.key]["records"] for d in drops.values() if d.rejected is not None
    )
    for key, d in drops.items():
        expect = report.expected[key]
        if d.rejected is not None:
            assert expect["status"] == "rejected"
            assert (
                len(Drop(f"insurance/{d.dataset}/{d.business_date}/{d.name}", d.data, d.arrival).records)
                == (expect["records"])
            )
            continue
        assert d.file_rule is None, key
        assert (len(d.records), d.invalid) == (expect["records"], expect["invalid"]), key
        if expect["status"] != "duplicate":
            assert expect["status"] == ("loaded_with_rejections" if d.invalid else "loaded"), key
            assert not d.records or d.valid, key  # no daily file is rejected for want of a valid record
    assert report.invalid_records == sum(d.invalid for d in drops.values())
    assert report.invalid_records == sum(report.invalid_by_kind.values())
    assert 0.003 <= report.invalid_records / report.records <= 0.02
    assert 300 <= report.records <= 1500  # a test-sized province


def test_invalid_records_break_the_rules_they_were_planted_for(seeded):
    report, drops = seeded
    rules = Counter()
    for d in drops.values():
        for _, errors in d.records:
            if errors:
                assert len({e.rule for e in errors}) == 1, errors  # one mistake per invalid record
                rules[errors[0].rule] += 1
    kinds = report.invalid_by_kind
    assert rules["amount_equals_quantity_times_price"] == kinds["amount_mismatch"]
    assert rules["fund_paid_not_above_eligible"] == kinds["fund_paid_above_eligible"]
    assert rules["additionalProperties"] == kinds["unknown_field"]
    assert rules["resident_id_check_character"] == kinds["bad_check_character"]
    assert rules["resident_id_in_wrong_field"] == kinds["resident_id_in_wrong_field"]
    assert rules["pattern"] == kinds["bad_code_pattern"]
    assert rules["format"] == kinds["impossible_date"]
    assert all(n >= 1 for n in kinds.values()) and len(kinds) == 7


def test_resident_ids_appear_only_in_patient_id(seeded):
    report, drops = seeded
    wrong_field = 0
    for d in drops.values():
        for record, errors in d.records:
            assert record is not None
            for name, value in record.items():
                text = json.dumps(value, default=str, ensure_ascii=False)
                if name == "patient_id":
                    assert is_valid_resident_id(value) or errors, d.key
                elif find_resident_ids(text):
                    wrong_field += 1
                    assert [e.rule for e in errors] == ["resident_id_in_wrong_field"]
    assert wrong_field == report.invalid_by_kind["resident_id_in_wrong_field"]
    assert find_resident_ids(report.to_json()) == []


# ---------------------------------------------------------------------------------------- planted
def test_planted_violations_cover_every_indicator(seeded):
    report, _ = seeded
    assert {p["indicator"] for p in report.planted} == set(INDICATORS)
    periods = {"2024-09", "2024-10", "2024-11", "2024-12"}
    for p in report.planted:
        assert set(p) == {
            "indicator",
            "entity_type",
            "entity_code",
            "kind",
            "subject",
            "period",
            "measure",
            "note",
        }
        assert p["period"] in periods
        assert p["kind"] == "breach" or p["kind"] in KINDS[p["indicator"]], p
        assert (p["measure"] is not None) == (p["kind"] == "breach"), p
    # every indicator with breach rows has its findings planted too, and each finding kind of the brief
    planted_kinds = {p["kind"] for p in report.planted}
    for kind in (
        "missing_variety",
        "no_committee_meeting",
        "uncovered_county",
        "untraced_line",
        "duplicate_trace_code",
        "not_entered",
        "low_completion",
        "high_nonselected_share",
        "price_above_winning",
        "price_above_cap",
        "low_fund_ratio",
        "over_annual_cap",
        "long_prescription",
        "gap_too_small",
        "not_in_catalog",
        "price_change",
        "missing_submission",
        "late_submission",
    ):
        assert kind in planted_kinds
    json.loads(report.to_json())


def _one(report: SeedReport, kind: str) -> dict[str, Any]:
    found = [p for p in report.planted if p["kind"] == kind]
    assert found, kind
    return found[0]


def test_dual_channel_lines_are_traced_except_the_planted_one(seeded):
    report, drops = seeded
    pharmacies = {r["pharmacy_code"] for _, r in _valid(drops, "insurance/dual_channel_pharmacies")}
    negotiated = {r["drug_code"] for _, r in _valid(drops, "insurance/drug_catalog") if r["negotiated"]}
    sold = {
        (r["trace_code"], r["party_code"], _cst_date(r["event_at"]))
        for _, r in _valid(drops, "traceability/trace_events")
        if r["event"] in ("sold", "dispensed")
    }
    untraced = []
    for _, r in _valid(drops, "insurance/settlements"):
        if r["provider_code"] in pharmacies and r["drug_code"] in negotiated:
            day = _cst_date(r["settled_at"])
            ok = r["trace_codes"] and all((c, r["provider_code"], day) in sold for c in r["trace_codes"])
            if not ok:
                untraced.append(f"{r['settlement_id']}#{r['line_no']}")
    assert untraced == [_one(report, "untraced_line")["subject"]]


def test_only_the_planted_trace_code_is_sold_twice_without_a_return(seeded):
    report, drops = seeded
    lines_by_code = defaultdict(set)
    for _, r in _valid(drops, "insurance/settlements"):
        for c in r["trace_codes"]:
            lines_by_code[c].add(r["settlement_id"])
    returned = {
        r["trace_code"] for _, r in _valid(drops, "traceability/trace_events") if r["event"] == "returned"
    }
    twice = {c for c, ids in lines_by_code.items() if len(ids) > 1}
    assert twice - returned == {_one(report, "duplicate_trace_code")["subject"]}
    assert len(twice & returned) == 1  # the legitimate return and re-sale (a control)


def test_only_the_planted_drug_changes_price_by_more_than_20_percent(seeded):
    report, drops = seeded
    totals: dict[tuple[str, str], list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for _, r in _valid(drops, "insurance/procurement_orders"):
        t = totals[(r["drug_code"], r["ordered_on"][:7])]
        t[0] += r["unit_price"] * r["quantity"]
        t[1] += r["quantity"]
    jumps = set()
    for drug in {d for d, _ in totals}:
        months = sorted(m for d, m in totals if d == drug)
        for before, after in zip(months, months[1:], strict=False):
            mean = [totals[(drug, m)][0] / totals[(drug, m)][1] for m in (before, after)]
            if abs(mean[1] / mean[0] - 1) > Decimal("0.20"):
                jumps.add((drug, after))
    planted = _one(report, "price_change")
    assert jumps == {(planted["subject"], planted["period"])}


def test_only_the_planted_county_lacks_a_dual_channel_pharmacy(seeded):
    report, drops = seeded
    counties = {r["division_code"] for _, r in _valid(drops, "health/divisions") if r["level"] == "county"}
    latest = {
        r["pharmacy_code"]: r
        for _, r in sorted(
            _valid(drops, "insurance/dual_channel_pharmacies"), key=lambda dr: dr[0].business_date
        )
    }
    for month_end in ("2024-09-30", "2024-10-31", "2024-11-30", "2024-12-31"):
        covered = {
            r["division_code"]
            for r in latest.values()
            if r["designated_on"] <= month_end and (r["revoked_on"] is None or r["revoked_on"] > month_end)
        }
        assert counties - covered == {_one(report, "uncovered_county")["entity_code"]}
    assert any(r["revoked_on"] for r in latest.values())  # one pharmacy revoked inside the window


def test_the_annual_cap_patient_is_named_by_pseudonym_only(seeded):
    report, drops = seeded
    cap = [p for p in report.planted if p["kind"] == "over_annual_cap"]
    assert cap and {p["period"] for p in cap} <= {"2024-11", "2024-12"}
    primary = {
        r["institution_code"]
        for _, r in _valid(drops, "health/institutions")
        if r["level"] == 1 or r["category"] in ("community", "township", "village")
    }
    paid: dict[str, Decimal] = defaultdict(Decimal)
    for _, r in _valid(drops, "insurance/settlements"):
        if (
            (r["visit_type"], r["insurance_type"]) == ("outpatient", "resident")
            and r["provider_code"] in primary
            and r["diagnosis_code"][:3]
            in {"I10", "I11", "I12", "I13", "I14", "I15", "E10", "E11", "E12", "E13", "E14"}
        ):
            paid[r["patient_id"]] += r["fund_paid"]
    over = [pid for pid, fund in paid.items() if fund > Decimal("2500")]
    assert [pseudonymise(KEY, pid) for pid in over] == [cap[0]["subject"]]


def test_late_and_missing_submissions_are_the_planted_ones(seeded):
    report, drops = seeded
    late = set()
    for d in drops.values():
        table = f"{d.agency}/{d.dataset}"
        if table in DAILY:
            deadline = datetime.combine(d.business_date + timedelta(days=2), datetime.min.time(), tzinfo=CST)
        elif table in MONTHLY:
            first_next = (d.business_date.replace(day=28) + timedelta(days=4)).replace(day=1)
            deadline = datetime.combine(first_next.replace(day=6), datetime.min.time(), tzinfo=CST)
        else:
            continue
        if d.arrival >= deadline and "resend" not in d.name:
            late.add((table, str(d.business_date)))
    planted = _one(report, "late_submission")
    assert late == {(planted["entity_code"], planted["subject"])}


# ---------------------------------------------------------------------------------------- with the indicators
def warehouse_from(drops: dict[str, Drop], key: bytes) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection holding what the loader would store from ``drops``: valid records of accepted,
    non-replayed files as warehouse rows (pseudonymised), upserts reduced to their winners, and the
    ``sanyi.submissions`` view (statuses derived from the files themselves, not from the report)."""
    from sanyi.publish import SUBMISSIONS_SCHEMA

    conn = duckdb.connect()
    seen: set[tuple[str, str, date, bytes]] = set()
    submissions, rows = [], defaultdict(list)
    for d in sorted(drops.values(), key=lambda d: (d.arrival, d.key)):
        if d.rejected is not None:
            status = "rejected"
        elif (d.agency, d.dataset, d.business_date, d.data) in seen:
            status = "duplicate"
        else:
            seen.add((d.agency, d.dataset, d.business_date, d.data))
            status = (
                "loaded_with_rejections" if d.invalid and d.valid else "rejected" if d.invalid else "loaded"
            )
            ds = contracts.get_dataset(d.agency, d.dataset)
            for n, (record, errors) in enumerate(d.records, 1):
                if errors or record is None:
                    continue
                row = contracts.to_warehouse_row(ds, record)
                if "patient_id" in row:
                    row["patient_id"] = pseudonymise(key, row["patient_id"])
                row |= {
                    "_business_date": d.business_date,
                    "_arrived_at": d.arrival,
                    "_source_file": d.key,
                    "_source_sha256": "0" * 64,
                    "_line_no": n,
                }
                rows[ds.table_name].append(row)
        submissions.append(
            {
                "agency": d.agency,
                "dataset": d.dataset,
                "business_date": d.business_date,
                "status": status,
                "arrived_at": d.arrival,
                "arrived_local": d.arrival.astimezone(CST).replace(tzinfo=None),
                "file": d.key,
            }
        )
    for ds in contracts.load_datasets().values():
        table = rows[ds.table_name]
        if ds.mode == "upsert":  # latest business date, then arrival, then line wins
            winners: dict[tuple, dict[str, Any]] = {}
            for row in table:
                winners[tuple(row[k] for k in ds.key)] = row
            table = list(winners.values())
        register(conn, ds.table_name, pa.Table.from_pylist(table, schema=ds.arrow_schema()))
    register(conn, "sanyi.submissions", pa.Table.from_pylist(submissions, schema=SUBMISSIONS_SCHEMA))
    return conn


def test_the_indicators_find_exactly_what_was_planted(seeded):
    report, drops = seeded
    conn = warehouse_from(drops, KEY)
    found, statuses = set(), {}
    for period in ("2024-09", "2024-10", "2024-11", "2024-12"):
        results, findings = indicators.compute(conn, period, now=datetime(2025, 6, 1, tzinfo=UTC))
        for r in results.to_pylist():
            statuses[(r["indicator"], r["entity_type"], r["entity_code"], r["period"])] = r["status"]
            if r["status"] == "breach":
                found.add(
                    (r["indicator"], r["entity_type"], r["entity_code"], "breach", None, period, r["measure"])
                )
        for f in findings.to_pylist():
            found.add(
                (f["indicator"], f["entity_type"], f["entity_code"], f["kind"], f["subject"], period, None)
            )
    planted = {
        (
            p["indicator"],
            p["entity_type"],
            p["entity_code"],
            p["kind"],
            None if p["kind"] == "breach" else p["subject"],
            p["period"],
            p["measure"],
        )
        for p in report.planted
    }
    assert sorted(planted - found, key=str) == []
    assert sorted(found - planted, key=str) == []  # nothing else: each violation is attributable
    for c in report.controls:
        status = statuses.get((c["indicator"], c["entity_type"], c["entity_code"], c["period"]))
        expect = {"no_row": None, "no_finding": "not_applicable"}.get(c["expect"], c["expect"])
        assert status == expect, c


# ---------------------------------------------------------------------------------------- arguments, scale
@pytest.mark.parametrize(
    "kwargs", [{"months": 3}, {"months": 13}, {"scale": "huge"}, {"start": "2024/09"}, {"start": "2024-13"}]
)
def test_refuses_arguments_it_cannot_plant_into(tmp_path, kwargs):
    with pytest.raises(ValueError):
        generate(LocalBucket(root=tmp_path), **kwargs)
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_a_later_window_moves_every_date(tmp_path):
    report = generate(LocalBucket(root=tmp_path), seed=1, start="2025-03", months=5, scale="tiny")
    days = {date.fromisoformat(k.split("/")[2]) for k in report.files}
    assert min(days) == date(2025, 3, 1) and max(days) == date(2025, 7, 31)
    assert {p["indicator"] for p in report.planted} == set(INDICATORS)
    assert {p["period"] for p in report.planted} <= {f"2025-0{m}" for m in range(3, 8)}


def test_demo_scale_is_tens_of_thousands_of_lines_in_seconds(tmp_path):
    started = time.perf_counter()
    report = generate(LocalBucket(root=tmp_path), scale="demo")
    elapsed = time.perf_counter() - started
    assert elapsed < 15
    lines = sum(e["records"] for k, e in report.expected.items() if k.startswith("insurance/settlements/"))
    assert 20_000 <= lines <= 99_000
    assert 0.005 <= report.invalid_records / report.records <= 0.015
    assert datetime.fromtimestamp((tmp_path / report.files[0]).stat().st_mtime, UTC).year == 2024
