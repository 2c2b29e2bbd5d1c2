"""The demo data generator behind ``sanyi seed``: a synthetic province dropped into the landing bucket.

:func:`generate` writes what the three agencies of a small province would drop over a few months,
following the drop convention ``<agency>/<dataset>/<YYYY-MM-DD>/<file>`` (contracts.md), and returns a
:class:`SeedReport` naming every policy violation it planted (one or more for each indicator of
indicators.md), so that a test or a demo can check each one shows up, and nothing else does.

Everything is a pure function of the arguments: the same ``seed`` gives the same keys, the same bytes
and the same arrival times (``last_modified`` derives from each file's business date, never from the
wall clock). Resident ids are synthetic 18-character GB 11643 ids with correct check characters, and
appear only in ``patient_id`` fields (except one planted error). The report holds no resident id: a
patient subject is a pseudonym when a key is passed, else null.

The plan, with window months ``m0 … m{n-1}`` (``start`` and the months after it):

- catalog ``<year-1>`` in force from 1 January; catalog ``<year>`` published on m0's 10th, in force from
  m2's 1st (one drug dropped, two negotiated varieties added);
- volume-based procurement: two 12-month groups and one exempt group starting on m0's 1st, one
  3-month group ending on m2's last day;
- daily files (settlements, procurement orders, trace events) for every date of the window, one
  procurement date missing and one settlements date late; monthly files (formulary, chronic registry,
  dual-channel pharmacies) dated each month's last day.
"""

from __future__ import annotations

import calendar
import csv
import gzip
import io
import json
import random
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from json.encoder import encode_basestring
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sanyi.privacy import check_character, pseudonymise
from sanyi.storage import Bucket

__all__ = ["SCALES", "SeedReport", "generate", "resident_id"]

CST = timezone(timedelta(hours=8), "UTC+08:00")
PROVINCE = "330000"
CENT = Decimal("0.01")
TWO_DISEASES_CAP = Decimal("2500.00")
SCALES = ("tiny", "demo")


# ------------------------------------------------------------------------------------------ the report
@dataclass
class SeedReport:
    """What :func:`generate` wrote, and what it planted.

    - ``files``: every key written, in the order written.
    - ``records``: records (lines, rows) in all files written, the replayed copy and the misfiled file
      included; ``invalid_records``: those of them that break a record rule on purpose.
    - ``planted``: expected indicator outcomes, each ``{indicator, entity_type, entity_code, kind,
      subject, period, measure, note}``; ``kind`` is a finding kind of indicators.md, or ``"breach"``
      for a results row in breach (then ``measure`` names the row's measure; it is null on findings).
    - ``controls``: look-alikes that must *not* be flagged (``expect`` says the outcome instead).
    - ``expected``: per key, ``{records, invalid, status}`` with the receipt status the file should get.
    - ``invalid_by_kind``: how many invalid records of each planted kind.
    """

    files: list[str] = field(default_factory=list)
    records: int = 0
    invalid_records: int = 0
    planted: list[dict[str, Any]] = field(default_factory=list)
    controls: list[dict[str, Any]] = field(default_factory=list)
    expected: dict[str, dict[str, Any]] = field(default_factory=dict)
    invalid_by_kind: dict[str, int] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """The report as JSON text (UTF-8 names kept readable); it never holds a resident id."""
        return json.dumps(asdict(self), ensure_ascii=False, indent=2)


# ---------------------------------------------------------------------------------------- small helpers
def resident_id(area: str, birth: date, seq: int) -> str:
    """A synthetic GB 11643 resident id: 6-digit area, birth date, 3-digit sequence, check character."""
    body = f"{area}{birth:%Y%m%d}{seq % 1000:03d}"
    return body + check_character(body)


def _q2(x: Decimal) -> Decimal:
    return x.quantize(CENT, rounding=ROUND_HALF_UP)


def _add_months(d: date, n: int) -> date:
    y, m = divmod(d.month - 1 + n, 12)
    y, m = d.year + y, m + 1
    return date(y, m, min(d.day, calendar.monthrange(y, m)[1]))


def _month_end(d: date) -> date:
    return date(d.year, d.month, calendar.monthrange(d.year, d.month)[1])


def _at(d: date, hour: int, minute: int = 0, second: int = 0) -> datetime:
    """An instant given as a China Standard Time wall-clock time."""
    return datetime.combine(d, time(hour, minute, second), tzinfo=CST)


def _count(rng: random.Random, mean: float) -> int:
    """A small random count with the given mean (floor plus a Bernoulli remainder: cheap, deterministic)."""
    whole = int(mean)
    return whole + (1 if rng.random() < mean - whole else 0)


def _ts_text(instant: datetime, *, utc: bool) -> str:
    if utc:
        return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return instant.astimezone(CST).strftime("%Y-%m-%dT%H:%M:%S+08:00")


def _json_value(v: Any, utc: bool) -> str:
    # Written by hand rather than with json.dumps so decimals keep the exact text they are meant to
    # have (0.0560, 19.99): the contracts judge numbers as written.
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, Decimal):
        return format(v, "f")
    if isinstance(v, str):
        return encode_basestring(v)  # json.dumps(v, ensure_ascii=False), without its per-call overhead
    if isinstance(v, datetime):
        return f'"{_ts_text(v, utc=utc)}"'
    if isinstance(v, date):
        return f'"{v.isoformat()}"'
    if isinstance(v, list | tuple):
        return "[" + ",".join(_json_value(x, utc) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} into NDJSON")


def _ndjson(records: Iterable[dict[str, Any]], *, utc: bool = False) -> bytes:
    lines = (
        "{" + ",".join(f"{encode_basestring(k)}:{_json_value(v, utc)}" for k, v in r.items()) + "}\n"
        for r in records
    )
    return "".join(lines).encode("utf-8")


def _csv_cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, Decimal):
        return format(v, "f")
    if isinstance(v, datetime):
        return _ts_text(v, utc=False)
    if isinstance(v, date):
        return v.isoformat()
    return str(v)


def _csv(fields: Iterable[str], records: Iterable[dict[str, Any]], *, encoding: str = "utf-8") -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    fields = list(fields)
    writer.writerow(fields)
    for r in records:
        writer.writerow([_csv_cell(r[f]) for f in fields])
    return buf.getvalue().encode(encoding)


def _gz(data: bytes) -> bytes:
    # mtime=0: a gzip header otherwise carries the wall clock, and the same seed must give the same bytes.
    return gzip.compress(data, compresslevel=6, mtime=0)


def _parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------ reference
@dataclass(frozen=True)
class _Inst:
    no: int
    code: str
    name: str
    county: str
    level: int
    grade: str
    category: str
    specialty: str | None
    ownership: str
    valid_from: date
    valid_to: date | None = None

    @property
    def primary(self) -> bool:
        return self.level == 1 or self.category in ("community", "township", "village")

    @property
    def klass(self) -> str:
        return "primary" if self.primary else {2: "secondary", 3: "tertiary"}.get(self.level, "primary")

    def in_force(self, d: date) -> bool:
        return self.valid_from <= d and (self.valid_to is None or self.valid_to > d)

    def record(self) -> dict[str, Any]:
        return {
            "institution_code": self.code,
            "name": self.name,
            "division_code": self.county,
            "level": self.level,
            "grade": self.grade,
            "category": self.category,
            "specialty": self.specialty,
            "ownership": self.ownership,
            "valid_from": self.valid_from,
            "valid_to": self.valid_to,
        }


@dataclass(frozen=True)
class _Pharm:
    code: str
    name: str
    county: str
    designated_on: date | None  # None: an ordinary retail pharmacy, not dual-channel
    revoked_on: date | None
    assortment: tuple[str, ...]

    def in_force(self, d: date) -> bool:
        return (
            self.designated_on is not None
            and self.designated_on <= d
            and (self.revoked_on is None or self.revoked_on > d)
        )


@dataclass(frozen=True)
class _Drug:
    key: str
    code: str
    generic: str
    cls: str
    negotiated: bool
    specialty: str | None
    price: Decimal
    versions: str  # "both", "old", "new", "none": the catalog versions that list it
    maker: str
    box: bool  # sold by the box (one trace code a box) rather than by the tablet


DIVISIONS: tuple[tuple[str, str, str, str | None], ...] = (
    (PROVINCE, "浙江省", "province", None),
    ("330100", "杭州市", "city", PROVINCE),
    ("330200", "宁波市", "city", PROVINCE),
    ("330300", "温州市", "city", PROVINCE),
    ("330102", "上城区", "county", "330100"),
    ("330106", "西湖区", "county", "330100"),
    ("330110", "余杭区", "county", "330100"),
    ("330203", "海曙区", "county", "330200"),
    ("330212", "鄞州区", "county", "330200"),
    ("330302", "鹿城区", "county", "330300"),
)
COUNTIES = tuple(c for c, _, level, _ in DIVISIONS if level == "county")
UNCOVERED_COUNTY = "330302"  # no dual-channel pharmacy, ever

MAKERS = tuple(f"E9133010000{i}" for i in range(1, 7))
DISTRIBUTORS = ("E91330200001", "E91330200002", "E91330200003")

# key, prefix, ATC-like stem, generic name, class, negotiated, specialty, price, versions, box
_DRUG_ROWS: tuple[tuple[str, str, str, str, str, bool, str | None, str, str, bool], ...] = (
    ("amlo1", "X", "C08CA01", "氨氯地平", "A", False, None, "0.0560", "both", False),
    ("amlo2", "X", "C08CA01", "氨氯地平", "A", False, None, "0.1100", "both", False),
    ("ator1", "X", "C10AA05", "阿托伐他汀", "A", False, None, "0.1800", "both", False),
    ("ator2", "X", "C10AA05", "阿托伐他汀", "A", False, None, "0.3000", "both", False),
    ("metf1", "X", "A10BA02", "二甲双胍", "A", False, None, "0.0300", "both", False),
    ("metf2", "X", "A10BA02", "二甲双胍", "A", False, None, "0.0700", "both", False),
    ("amox1", "X", "J01CA04", "阿莫西林", "A", False, None, "0.1500", "both", False),
    ("amox2", "X", "J01CA04", "阿莫西林", "A", False, None, "0.3200", "both", False),
    ("nife", "X", "C08CA05", "硝苯地平", "A", False, None, "1.2000", "both", False),
    ("vals", "X", "C09CA03", "缬沙坦", "A", False, None, "0.9000", "both", False),
    ("glic", "X", "A10BB09", "格列齐德", "B", False, None, "0.8500", "both", False),
    ("acar", "X", "A10BF01", "阿卡波糖", "B", False, None, "0.4500", "both", False),
    ("aspi", "X", "B01AC06", "阿司匹林", "A", False, None, "0.1200", "both", False),
    ("omep", "X", "A02BC01", "奥美拉唑", "A", False, None, "0.3500", "both", False),
    ("cefu", "X", "J01DC02", "头孢呋辛", "B", False, None, "1.5000", "both", False),
    ("ibup", "X", "M01AE01", "布洛芬", "A", False, None, "0.4000", "both", False),
    ("cftr", "X", "J01DD04", "头孢曲松", "A", False, None, "3.2000", "both", False),
    ("nacl", "X", "B05XA03", "氯化钠", "A", False, None, "2.5000", "both", False),
    ("lhqw", "Z", "TCM0101", "连花清瘟", "B", False, None, "0.5500", "both", False),
    ("fdds", "Z", "TCM0203", "复方丹参", "A", False, None, "0.1500", "both", False),
    ("yxye", "Z", "TCM0512", "银杏叶提取物", "B", False, None, "18.5000", "old", False),
    ("atgs", "X", "M01AX05", "氨糖软骨素", "B", False, None, "2.8000", "none", False),
    ("osim", "X", "L01EB04", "奥希替尼", "B", True, "oncology", "2860.0000", "both", True),
    ("anlo", "X", "L01EX00", "安罗替尼", "B", True, "oncology", "3920.0000", "both", True),
    ("sint", "X", "L01FF00", "信迪利单抗", "B", True, "oncology", "1080.0000", "both", True),
    ("pyro", "X", "L01EH00", "吡咯替尼", "B", True, "oncology", "1640.0000", "both", True),
    ("sacu", "X", "C09DX04", "沙库巴曲缬沙坦", "B", True, "cardiology", "148.0000", "both", True),
    ("evol", "X", "C10AX13", "依洛尤单抗", "B", True, "cardiology", "283.0000", "both", True),
    ("sofo", "X", "J05AP55", "索磷布韦维帕他韦", "B", True, "infectious", "3150.0000", "both", True),
    ("tmfa", "X", "J05AF00", "艾米替诺福韦", "B", True, "infectious", "264.0000", "both", True),
    ("lura", "X", "N05AE05", "鲁拉西酮", "B", True, "psychiatry", "132.0000", "both", True),
    ("dapa1", "X", "A10BK01", "达格列净", "B", True, None, "58.0000", "both", True),
    ("dapa2", "X", "A10BK01", "达格列净", "B", True, None, "52.0000", "both", True),
    ("sema", "X", "A10BJ06", "司美格鲁肽", "B", True, None, "239.0000", "both", True),
    ("qlqx", "Z", "TCM0309", "芪苈强心", "B", True, "cardiology", "46.0000", "both", True),
    ("zanu", "X", "L01EL03", "泽布替尼", "B", True, "oncology", "3120.0000", "new", True),
    ("omal", "X", "R03DX05", "奥马珠单抗", "B", True, None, "1380.0000", "new", True),
)


def _drugs() -> dict[str, _Drug]:
    out: dict[str, _Drug] = {}
    for i, (key, prefix, stem, generic, cls, nego, spec, price, versions, box) in enumerate(_DRUG_ROWS, 1):
        maker_no = 2 if key.endswith("2") else 1
        code = f"{prefix}{stem}{maker_no:02d}{330000000 + i * 37:013d}"
        out[key] = _Drug(
            key, code, generic, cls, nego, spec, Decimal(price), versions, MAKERS[(i - 1) % len(MAKERS)], box
        )
    return out


DIAG_HOSPITAL = ("I10", "E11.9", "J06.9", "K29.7", "M54.5", "J18.9", "I25.1", "N39.0", "R50.9", "K21.0")
DIAG_PRIMARY = ("J06.9", "K29.7", "M54.5", "N39.0", "R50.9", "J20.9")  # never a "two diseases" code
DIAG_INPATIENT = ("J18.9", "K35.8", "S82.2", "I63.9", "N18.9", "I50.9", "K80.2")
DIAG_SPECIALTY = {
    "oncology": "C34.9",
    "cardiology": "I50.9",
    "infectious": "B18.2",
    "psychiatry": "F20.9",
    None: "E11.9",
}
GENERICS_OUT = ("amlo1", "amlo2", "ator1", "metf1", "amox1", "nife", "vals", "glic", "acar", "aspi", "omep",
                "cefu", "ibup", "lhqw", "fdds")  # fmt: skip
# Drugs every open institution orders each month (outside procurement agreements), aspirin first: even
# the tiny scale orders it every month, so its planted price jump has an earlier period to compare with.
REGULAR_ORDERS = ("aspi", "nife", "vals", "glic", "acar", "omep", "cefu", "ibup", "lhqw", "fdds")
GENERICS_IN = ("cftr", "nacl", "cefu", "omep", "amox1", "aspi", "fdds", "yxye")  # yxye: old catalog only

# Inpatient fund ratios by insurance type and class: the rules of indicator 8 hold with room to spare,
# except employee secondary in the planted period (see _Province.inpatient_ratio).
INPATIENT_RATIO = {
    ("resident", "primary"): Decimal("0.92"),
    ("resident", "secondary"): Decimal("0.78"),
    ("resident", "tertiary"): Decimal("0.60"),
    ("employee", "primary"): Decimal("0.95"),
    ("employee", "secondary"): Decimal("0.90"),
    ("employee", "tertiary"): Decimal("0.82"),
}
PLANTED_EMPLOYEE_SECONDARY = Decimal("0.85")
CHRONIC_RATIO = Decimal("0.60")
LOW_CHRONIC_RATIO = Decimal("0.40")


@dataclass(frozen=True)
class _Scale:
    patients: int
    outpatient_per_day: float
    inpatient_per_day: float
    pharmacy_per_day: float
    retail_per_month: int
    chronic: tuple[int, int, int, int]  # registry patients filed at institutions 7, 8, 9, 12
    chronic_visit_prob: float
    regular_orders_per_month: int
    regular_drugs: int
    vbp_orders_per_month: int
    misfiled_lines: int
    invalid_rate: float
    formulary_generics: int


_SCALES = {
    "tiny": _Scale(
        patients=40, outpatient_per_day=0.35, inpatient_per_day=0.0, pharmacy_per_day=0.3, retail_per_month=1,
        chronic=(4, 3, 2, 2), chronic_visit_prob=1.0, regular_orders_per_month=1, regular_drugs=1,
        vbp_orders_per_month=1, misfiled_lines=2, invalid_rate=0.0, formulary_generics=2,
    ),
    "demo": _Scale(
        patients=6000, outpatient_per_day=110.0, inpatient_per_day=45.0, pharmacy_per_day=20.0,
        retail_per_month=28, chronic=(220, 160, 120, 100), chronic_visit_prob=0.85,
        regular_orders_per_month=2, regular_drugs=8, vbp_orders_per_month=2, misfiled_lines=5,
        invalid_rate=0.01, formulary_generics=12,
    ),
}  # fmt: skip


@dataclass
class _Patient:
    pid: str
    insurance: str


@dataclass
class _Chronic:
    patient: _Patient
    disease: str
    inst: _Inst
    filed_on: date


@dataclass
class _File:
    key: str
    data: bytes
    arrival: datetime
    records: int
    invalid: int = 0
    status: str = ""


@dataclass
class _Bill:
    """One settlement: its lines share the id, patient, provider, visit, diagnosis, fund ratio and time."""

    sid: str
    patient: _Patient
    provider: str
    visit: str
    diag: str
    ratio: Decimal
    when: datetime
    sink: list[dict[str, Any]]
    n: int = 0


@dataclass
class _Sale:
    """A dual-channel pharmacy line whose trace codes are drawn from the pharmacy's stock."""

    line: dict[str, Any]
    pharm: _Pharm
    drug: _Drug
    qty: int
    restock: int


# ------------------------------------------------------------------------------------------ the province
class _Province:
    """Builds every file of one synthetic province; one instance per :func:`generate` call."""

    def __init__(self, *, seed: int, start: date, months: int, scale: _Scale, pseudonym_key: bytes | None):
        self.seed = seed
        self.scale = scale
        self.key = pseudonym_key
        self.m = [_add_months(start, k) for k in range(months)]
        self.ends = [_month_end(d) for d in self.m]
        self.days = [self.m[0] + timedelta(days=i) for i in range((self.ends[-1] - self.m[0]).days + 1)]
        self.old_version, self.new_version = str(start.year - 1), str(start.year)
        self.old_published = date(start.year - 1, 11, 28)
        self.old_effective = date(start.year, 1, 1)
        self.new_published = self.m[0] + timedelta(days=9)
        self.switch = self.m[2]  # the new catalog's effective_from
        self.price_jump = self.m[3]  # aspirin's procurement price rises by 30% from here
        self.drugs = _drugs()
        self.insts = self._institutions()
        self.inst = {i.no: i for i in self.insts}
        self.pharms = self._pharmacies()
        self.missing_orders_day = self.m[1] + timedelta(days=16)
        self.late_settlements_day = self.m[2] + timedelta(days=4)
        self.replay_day = self.m[1] + timedelta(
            days=2
        )  # moved to the first day with lines after settlements()
        self.misfiled_day = self.m[1] + timedelta(days=8)
        self.sid_seq: dict[date, int] = defaultdict(int)
        self._generics: dict[tuple[bool, tuple[str, ...]], list[_Drug]] = {}
        self.files: list[_File] = []
        self.planted: list[dict[str, Any]] = []
        self.controls: list[dict[str, Any]] = []
        self.invalid_by_kind: dict[str, int] = defaultdict(int)

    def rng(self, part: str) -> random.Random:
        # One stream per part of the province, so that changing one part leaves the others' data alone.
        return random.Random(f"sanyi-seed/{self.seed}/{part}")

    def period(self, k: int) -> str:
        return f"{self.m[k]:%Y-%m}"

    def plant(
        self,
        indicator: str,
        entity_type: str,
        entity_code: str,
        kind: str,
        subject: str | None,
        k: int,
        note: str,
        measure: str | None = None,
    ) -> None:
        self.planted.append(
            {
                "indicator": indicator,
                "entity_type": entity_type,
                "entity_code": entity_code,
                "kind": kind,
                "subject": subject,
                "period": self.period(k),
                "measure": measure,
                "note": note,
            }
        )

    def control(
        self,
        indicator: str,
        entity_type: str,
        entity_code: str,
        expect: str,
        subject: str | None,
        k: int,
        note: str,
    ) -> None:
        self.controls.append(
            {
                "indicator": indicator,
                "entity_type": entity_type,
                "entity_code": entity_code,
                "expect": expect,
                "subject": subject,
                "period": self.period(k),
                "note": note,
            }
        )

    # ----------------------------------------------------------------------------------- entities
    # fmt: off
    def _institutions(self) -> list[_Inst]:
        opened, closed = self.m[1] + timedelta(days=14), self.m[2] + timedelta(days=19)
        rows = (
            (1, "330102", "杭州市第一人民医院", 3, "A", "general", None, "public", "1998-03-01"),
            (2, "330106", "杭州市西湖医院", 3, "A", "general", None, "public", "2001-06-01"),
            (3, "330110", "余杭区第一人民医院", 3, "B", "general", None, "public", "2005-01-01"),
            (4, "330203", "宁波市中医院", 3, "A", "tcm", None, "public", "1999-09-01"),
            (5, "330212", "宁波市肿瘤医院", 3, "A", "specialist", "oncology", "public", "2008-04-01"),
            (6, "330302", "鹿城区人民医院", 2, "A", "general", None, "public", "2003-02-01"),
            (7, "330102", "湖滨街道社区卫生服务中心", 1, "A", "community", None, "public", "2010-01-01"),
            (8, "330106", "西湖区双浦镇卫生院", 1, "B", "township", None, "public", "2006-07-01"),
            (9, "330110", "径山镇前溪村卫生室", 1, "U", "village", None, "public", "2012-05-01"),
            (10, "330203", "宁波明州医院", 3, "B", "general", None, "private", "2011-10-01"),
            (11, "330212", "鄞州第二医院新院区", 3, "A", "general", None, "public", opened.isoformat()),
            (12, "330302", "五马街道社区卫生服务中心", 1, "A", "community", None, "public", "2009-03-01"),
            (13, "330203", "海曙区中西医结合医院", 2, "B", "integrated", None, "public", "2004-08-01"),
        )
        return [
            _Inst(no, f"H{county}{no:05d}", name, county, level, grade, cat, spec, own,
                  date.fromisoformat(vf), closed if no == 12 else None)
            for no, county, name, level, grade, cat, spec, own, vf in rows
        ]

    def _pharmacies(self) -> list[_Pharm]:
        revoked = self.m[1] + timedelta(days=19)
        rows = (  # code, name, designated on, revoked on, negotiated drugs stocked
            ("P33010200001", "上城区国药大药房", "2021-10-01", None, "osim anlo sacu sofo dapa1 sema"),
            ("P33010600002", "西湖区华东大药房", "2021-10-01", None, "osim sint sacu tmfa dapa1 qlqx"),
            ("P33011000003", "余杭区老百姓大药房", "2022-03-01", None, "anlo pyro evol lura dapa2 sema"),
            ("P33020300004", "海曙区天一大药房", "2021-12-01", revoked, "osim sacu sofo dapa1 sema"),
            ("P33020300005", "海曙区国大药房", "2022-06-01", None, "sint sacu evol tmfa qlqx dapa2"),
            ("P33021200006", "鄞州区瑞人堂大药房", "2022-01-15", None, "osim anlo pyro sacu sema lura"),
            ("P33030200007", "鹿城区叶同仁药店", None, None, ""),  # an ordinary retail pharmacy
        )
        return [
            _Pharm(code, name, code[1:7], date.fromisoformat(designated) if designated else None, rev,
                   tuple(stock.split()))
            for code, name, designated, rev, stock in rows
        ]
    # fmt: on

    def in_catalog(self, drug: _Drug, d: date) -> bool:
        version = "new" if d >= self.switch else "old"
        return drug.versions in ("both", version)

    def price(self, drug: _Drug, d: date) -> Decimal:
        if drug.key == "aspi" and d >= self.price_jump:
            return Decimal("0.1560")
        return drug.price

    def next_sid(self, d: date) -> str:
        self.sid_seq[d] += 1
        return f"S{d:%Y%m%d}{self.sid_seq[d]:06d}"

    def patients(self) -> None:
        rng = self.rng("patients")
        seen: set[str] = set()

        def new(insurance: str) -> _Patient:
            while True:
                birth = date(1940, 1, 1) + timedelta(days=rng.randrange(0, 365 * 70))
                pid = resident_id(rng.choice(COUNTIES), birth, rng.randrange(1000))
                if pid not in seen:
                    seen.add(pid)
                    return _Patient(pid, insurance)

        self.pool = [
            new("employee" if rng.random() < 0.4 else "resident") for _ in range(self.scale.patients)
        ]
        self.chronic: list[_Chronic] = []
        for inst_no, n in zip((7, 8, 9, 12), self.scale.chronic, strict=True):
            inst = self.inst[inst_no]
            for i in range(n):
                p = new("resident")
                filed = date(2021, 1, 1) + timedelta(
                    days=rng.randrange(0, (self.m[0] - date(2021, 1, 1)).days)
                )
                if i >= 2 and rng.random() < 0.1:  # some filed during the window: they join later months
                    filed = rng.choice(self.days[: len(self.days) - 20])
                disease = "hypertension" if i % 5 in (0, 2, 4) else "diabetes"
                self.chronic.append(_Chronic(p, disease, inst, filed))
                if rng.random() < 0.1:
                    self.chronic.append(
                        _Chronic(p, "diabetes" if disease == "hypertension" else "hypertension", inst, filed)
                    )
        # Named patients of the plants: both filed at institution 7 long before the window.
        self.cap_patient = _Chronic(new("resident"), "diabetes", self.inst[7], date(2023, 5, 12))
        self.long_rx_patient = _Chronic(new("resident"), "hypertension", self.inst[7], date(2022, 8, 3))
        self.chronic += [self.cap_patient, self.long_rx_patient]
        self.special = self.pool[: max(8, len(self.pool) // 10)]  # patients on negotiated drugs

    # ------------------------------------------------------------------------------------ settlements
    def bill(
        self,
        d: date,
        patient: _Patient,
        provider: str,
        visit: str,
        diag: str,
        ratio: Decimal,
        when: datetime | None = None,
        *,
        rng: random.Random | None = None,
        sink: list[dict[str, Any]] | None = None,
    ) -> _Bill:
        """A new settlement on ``d`` (at ``when``, or a random time of day); its lines go to the day's
        settlement file unless another ``sink`` is given."""
        if when is None:
            assert rng is not None
            when = _at(d, rng.randrange(8, 20), rng.randrange(60), rng.randrange(60))
        return _Bill(
            self.next_sid(d),
            patient,
            provider,
            visit,
            diag,
            ratio,
            when,
            self.lines[d] if sink is None else sink,
        )

    def line(
        self,
        bill: _Bill,
        drug: _Drug,
        qty: int | Decimal,
        *,
        days: int = 30,
        eligible_share: Decimal | None = None,
        trace: list[str] | None = None,
    ) -> dict[str, Any]:
        """Add one drug to ``bill``: amount = quantity x price (half-up to the cent), the eligible part
        (all of a class-A drug, 90% of a class-B one) and the fund's share of it at the bill's ratio."""
        price = self.price(drug, bill.when.astimezone(CST).date())
        amount = _q2(Decimal(qty) * price)
        if eligible_share is None:
            eligible_share = Decimal("1") if drug.cls == "A" else Decimal("0.9")
        eligible = _q2(amount * eligible_share)
        bill.n += 1
        row = {
            "settlement_id": bill.sid, "line_no": bill.n, "patient_id": bill.patient.pid,
            "insurance_type": bill.patient.insurance, "provider_code": bill.provider,
            "visit_type": bill.visit, "diagnosis_code": bill.diag, "drug_code": drug.code, "quantity": qty,
            "unit_price": price,
            "amount": amount, "eligible_amount": eligible, "fund_paid": _q2(eligible * bill.ratio),
            "days_supply": days, "settled_at": bill.when, "trace_codes": [] if trace is None else trace,
        }  # fmt: skip
        bill.sink.append(row)
        return row

    def catalog_generics(self, d: date, pool: tuple[str, ...]) -> list[_Drug]:
        version = d >= self.switch
        if (version, pool) not in self._generics:
            self._generics[(version, pool)] = [
                self.drugs[k] for k in pool if self.in_catalog(self.drugs[k], d)
            ]
        return self._generics[(version, pool)]

    def inpatient_ratio(self, insurance: str, klass: str, d: date) -> Decimal:
        if (insurance, klass) == ("employee", "secondary") and self.m[2] <= d <= self.ends[2]:
            return PLANTED_EMPLOYEE_SECONDARY
        return INPATIENT_RATIO[(insurance, klass)]

    def settlements(self) -> None:
        """Every settlement line of the window, day by day, then the planted ones."""
        rng = self.rng("settlements")
        self.lines: dict[date, list[dict[str, Any]]] = defaultdict(list)
        self.sales: list[_Sale] = []
        with_beds = [i for i in self.insts if not i.primary] + [self.inst[7], self.inst[8]]
        by_insurance = {t: [p for p in self.pool if p.insurance == t] for t in ("resident", "employee")}
        chronic_plan = self._chronic_plan()
        retail = self.pharms[-1]
        retail_days = {
            k: set(rng.sample(self.days_of(k), self.scale.retail_per_month)) for k in range(len(self.m))
        }
        for d in self.days:
            for _ in range(_count(rng, self.scale.outpatient_per_day)):
                self._outpatient(rng, d, rng.choice([i for i in self.insts if i.in_force(d)]))
            for _ in range(_count(rng, self.scale.inpatient_per_day)):
                self._inpatient(
                    rng, d, rng.choice([i for i in with_beds if i.in_force(d)]), rng.choice(self.pool)
                )
            if d.day in (8, 21):  # every insurance type and class has inpatient lines every month
                for klass in ("primary", "secondary", "tertiary"):
                    for insurance in ("resident", "employee"):
                        inst = rng.choice([i for i in with_beds if i.klass == klass and i.in_force(d)])
                        self._inpatient(rng, d, inst, rng.choice(by_insurance[insurance]))
            for c, ratio in chronic_plan.get(d, ()):
                self._chronic_visit(rng, d, c, ratio)
            restock = self.restock_index(d)
            if restock is not None:
                for _ in range(_count(rng, self.scale.pharmacy_per_day)):
                    self._pharmacy_sale(
                        rng, d, rng.choice([p for p in self.pharms if p.in_force(d)]), restock
                    )
            if d in retail_days[self.month_of(d)]:
                bill = self.bill(
                    d, rng.choice(self.pool), retail.code, "pharmacy", "J06.9", Decimal("0.80"), rng=rng
                )
                for key in rng.sample(("amlo2", "aspi", "omep", "ibup"), rng.randint(1, 2)):
                    self.line(bill, self.drugs[key], rng.choice((14, 28)))
        self._planted_settlements(rng)
        if not self.lines[self.replay_day]:
            # The replayed file must hold records, or it would be byte-identical to every other empty file.
            self._outpatient(rng, self.replay_day, self.inst[1])

    def month_of(self, d: date) -> int:
        return (d.year - self.m[0].year) * 12 + d.month - self.m[0].month

    def days_of(self, k: int) -> list[date]:
        return [d for d in self.days if self.month_of(d) == k]

    def restock_day(self, k: int) -> date:
        return self.m[k] + timedelta(days=2)

    def restock_index(self, d: date) -> int | None:
        """Which monthly restock (on the 3rd) supplies a sale on ``d``: the latest one strictly before it."""
        k = self.month_of(d)
        if d <= self.restock_day(k):
            k -= 1
        return k if k >= 0 else None

    def _outpatient(self, rng: random.Random, d: date, inst: _Inst) -> None:
        patient = rng.choice(self.pool)
        ratio = Decimal("0.70") if patient.insurance == "employee" else Decimal("0.55")
        if inst.no == 5:  # the oncology hospital's outpatients get negotiated cancer drugs
            bill = self.bill(d, patient, inst.code, "outpatient", "C34.9", ratio, rng=rng)
            self.line(bill, self.drugs[rng.choice(("osim", "anlo", "sint", "pyro"))], 1)
            return
        diag = rng.choice(DIAG_PRIMARY if inst.primary else DIAG_HOSPITAL)
        bill = self.bill(d, patient, inst.code, "outpatient", diag, ratio, rng=rng)
        for drug in rng.sample(self.catalog_generics(d, GENERICS_OUT), rng.randint(1, 3)):
            self.line(bill, drug, rng.choice((14, 28, 30, 42, 56)), days=rng.choice((7, 14, 28, 30)))
        if not inst.primary and rng.random() < 0.03:
            # Self-paid: a drug outside every catalog, no fund paid (not a catalog_compliance finding).
            bill.ratio = Decimal("0")
            self.line(bill, self.drugs["atgs"], 30, eligible_share=Decimal("0"))

    def _inpatient(self, rng: random.Random, d: date, inst: _Inst, patient: _Patient) -> None:
        ratio = self.inpatient_ratio(patient.insurance, inst.klass, d)
        bill = self.bill(d, patient, inst.code, "inpatient", rng.choice(DIAG_INPATIENT), ratio, rng=rng)
        for drug in rng.sample(self.catalog_generics(d, GENERICS_IN), rng.randint(1, 3)):
            qty = rng.randint(6, 40) if drug.key in ("cftr", "nacl") else rng.choice((14, 21, 28))
            self.line(bill, drug, qty, days=rng.randint(3, 14))

    def _chronic_plan(self) -> dict[date, list[tuple[_Chronic, Decimal]]]:
        """One visit a month (with the scale's probability) of each registry patient to the institution
        that filed them, while it is open; the planted patients' visits are made elsewhere."""
        rng = self.rng("chronic")
        plan: dict[date, list[tuple[_Chronic, Decimal]]] = defaultdict(list)
        for k in range(len(self.m)):
            for c in self.chronic:
                if c is self.cap_patient or (c is self.long_rx_patient and k == 1):
                    continue
                if c.filed_on > self.ends[k] or rng.random() >= self.scale.chronic_visit_prob:
                    continue
                days = [d for d in self.days_of(k) if d >= c.filed_on and c.inst.in_force(d)]
                if days:
                    ratio = LOW_CHRONIC_RATIO if c.inst.no == 8 else CHRONIC_RATIO
                    plan[rng.choice(days)].append((c, ratio))
        return plan

    def _chronic_visit(self, rng: random.Random, d: date, c: _Chronic, ratio: Decimal) -> None:
        if c.disease == "hypertension":
            bill = self.bill(d, c.patient, c.inst.code, "outpatient", "I10", ratio, rng=rng)
            self.line(bill, self.drugs[rng.choice(("amlo1", "amlo1", "nife", "vals"))], 30)
            return
        bill = self.bill(d, c.patient, c.inst.code, "outpatient", "E11.9", ratio, rng=rng)
        self.line(bill, self.drugs[rng.choice(("metf1", "metf1", "glic", "acar"))], 60)
        if rng.random() < 0.3:
            self.line(bill, self.drugs["dapa1"], 1)

    def _pharmacy_sale(
        self, rng: random.Random, d: date, pharm: _Pharm, restock: int, drug_key: str | None = None
    ) -> dict[str, Any]:
        """A negotiated drug sold at a dual-channel pharmacy (trace codes are assigned in :meth:`trace`)."""
        drug = self.drugs[drug_key or rng.choice(pharm.assortment)]
        patient = rng.choice(self.special)
        qty = rng.choices((1, 2, 3), weights=(70, 25, 5))[0]
        ratio = Decimal("0.80") if patient.insurance == "employee" else Decimal("0.70")
        bill = self.bill(d, patient, pharm.code, "pharmacy", DIAG_SPECIALTY[drug.specialty], ratio, rng=rng)
        line = self.line(bill, drug, qty)
        self.sales.append(_Sale(line, pharm, drug, qty, restock))
        return line

    @staticmethod
    def line_ref(line: dict[str, Any]) -> str:
        return f"{line['settlement_id']}#{line['line_no']}"

    def _planted_settlements(self, rng: random.Random) -> None:
        p1, p2, p5, p6 = self.pharms[0], self.pharms[1], self.pharms[4], self.pharms[5]
        sacu, osim = self.drugs["sacu"], self.drugs["osim"]
        # 4. dual_channel_trace: a negotiated drug sold at a dual-channel pharmacy with no trace code.
        d = self.m[1] + timedelta(days=13)
        bill = self.bill(d, self.special[0], p2.code, "pharmacy", "I50.9", Decimal("0.70"), _at(d, 15, 20))
        self.untraced = self.line(bill, sacu, 1)
        # 5. duplicate_trace: a box sold at p1, then the same box sold again at p6 with no return between
        # (the codes of both are set in trace()).
        d1, d2 = self.m[1] + timedelta(days=21), self.m[2] + timedelta(days=5)
        self.dup_first = self._pharmacy_sale(rng, d1, p1, self.restock_index(d1) or 0, "osim")
        bill = self.bill(d2, self.special[1], p6.code, "pharmacy", "C34.9", Decimal("0.70"), _at(d2, 10, 5))
        self.dup_second = self.line(bill, osim, 1)
        # Control: a box sold, returned two days later and sold again (a legitimate re-sale).
        d3, self.return_day, d4 = (self.m[1] + timedelta(days=n) for n in (9, 11, 14))
        self.ret_first = self._pharmacy_sale(rng, d3, p5, self.restock_index(d3) or 0, "sacu")
        bill = self.bill(d4, self.special[2], p5.code, "pharmacy", "I50.9", Decimal("0.70"), _at(d4, 16, 40))
        self.ret_second = self.line(bill, sacu, 1)
        # 9. catalog_compliance: fund paid in the fourth month for a drug the new catalog dropped.
        d = self.m[3] + timedelta(days=9)
        bill = self.bill(
            d, self.pool[3], self.inst[6].code, "outpatient", "I63.9", Decimal("0.60"), _at(d, 9, 45)
        )
        self.off_catalog = self.line(bill, self.drugs["yxye"], 2)
        # 7. two_diseases: a 90-day prescription, and a patient whose fund paid passes the annual cap.
        d = self.m[1] + timedelta(days=7)
        c = self.long_rx_patient
        bill = self.bill(d, c.patient, c.inst.code, "outpatient", "I10", CHRONIC_RATIO, _at(d, 10, 12))
        self.long_rx = self.line(bill, self.drugs["amlo1"], 90, days=90)
        c = self.cap_patient
        for k in range(len(self.m)):
            d = self.m[k] + timedelta(days=9)
            bill = self.bill(d, c.patient, c.inst.code, "outpatient", "E11.9", CHRONIC_RATIO, _at(d, 9, 30))
            self.line(bill, self.drugs["sema"], 6)
            self.line(bill, self.drugs["dapa1"], 2)

    # ------------------------------------------------------------------------------------ trace events
    def trace(self) -> None:
        """Trace codes for every dual-channel sale, and the events of each box: produced by the maker two
        days before the monthly restock, shipped the day before, received on the 3rd, sold with the line."""
        rng = self.rng("trace")
        self.events: dict[date, list[dict[str, Any]]] = defaultdict(list)
        serial = 0

        def code(drug: _Drug) -> str:
            nonlocal serial
            serial += 1
            return f"8{list(self.drugs).index(drug.key) + 1:03d}{self.seed % 1000:03d}{serial:013d}"

        groups: dict[tuple[str, str, int], list[_Sale]] = defaultdict(list)
        for s in self.sales:
            groups[(s.pharm.code, s.drug.key, s.restock)].append(s)
        for k in range(len(self.m)):
            r = self.restock_day(k)
            for pharm in self.pharms:
                if not pharm.in_force(r):
                    continue
                for key in pharm.assortment:
                    drug = self.drugs[key]
                    sales = groups.get((pharm.code, key, k), [])
                    # A spare box every other month keeps each variety "received in the last 90 days".
                    codes = [code(drug) for _ in range(sum(s.qty for s in sales) + (1 - k % 2))]
                    for s in sales:
                        s.line["trace_codes"], codes_left = codes[: s.qty], codes[s.qty :]
                        codes = codes_left
                        for c in s.line["trace_codes"]:
                            self.event(
                                c, drug, "sold", pharm.code, s.line["settled_at"] + timedelta(minutes=2), r
                            )
                    for c in [c for s in sales for c in s.line["trace_codes"]] + codes:
                        self.stock_events(rng, c, drug, pharm, r)
        # The planted re-sale and the legitimate return.
        dup_code = self.dup_first["trace_codes"][0]
        self.dup_second["trace_codes"] = [dup_code]
        self.event(
            dup_code,
            self.drugs["osim"],
            "sold",
            self.dup_second["provider_code"],
            self.dup_second["settled_at"] + timedelta(minutes=2),
            None,
        )
        ret_code = self.ret_first["trace_codes"][0]
        self.ret_second["trace_codes"] = [ret_code]
        self.event(
            ret_code,
            self.drugs["sacu"],
            "returned",
            self.ret_first["provider_code"],
            _at(self.return_day, 11, 0),
            None,
        )
        self.event(
            ret_code,
            self.drugs["sacu"],
            "sold",
            self.ret_second["provider_code"],
            self.ret_second["settled_at"] + timedelta(minutes=2),
            None,
        )

    def stock_events(self, rng: random.Random, c: str, drug: _Drug, pharm: _Pharm, restock: date) -> None:
        produced = restock - timedelta(days=2)
        self.event(c, drug, "produced", drug.maker, _at(produced, 8, rng.randrange(60)), restock)
        self.event(
            c,
            drug,
            "shipped",
            DISTRIBUTORS[int(pharm.code[-1]) % 3],
            _at(restock - timedelta(days=1), 15, rng.randrange(60)),
            restock,
        )
        self.event(c, drug, "received", pharm.code, _at(restock, 10, rng.randrange(60)), restock)

    def event(self, c: str, drug: _Drug, event: str, party: str, at: datetime, restock: date | None) -> None:
        made = (restock or at.astimezone(CST).date()) - timedelta(days=2)
        self.events[at.astimezone(CST).date()].append(
            {
                "trace_code": c,
                "drug_code": drug.code,
                "event": event,
                "party_code": party,
                "event_at": at,
                "batch_no": f"B{made:%y%m}-{drug.maker[-2:]}",
                "expires_on": _add_months(made, 24),
            }
        )

    # ---------------------------------------------------------------------------------- procurement
    def vbp(self) -> None:
        """Groups, products and agreements; the orders that execute them are made in :meth:`orders`."""
        y, mo = self.m[0].year, self.m[0].month
        self.batch_a, self.batch_b = f"VBP-{y}-{mo:02d}", f"VBP-{y}-{mo:02d}-Q"
        d = self.drugs
        # group name, batch, selected drug, winning price, non-selected drug, price cap, cycle, exemption
        self.groups = {
            "G1": ("苯磺酸氨氯地平片", self.batch_a, "amlo1", "0.0560", "amlo2", "0.1200", 12, None),
            "G2": ("阿托伐他汀钙片", self.batch_a, "ator1", "0.1800", "ator2", "0.3500", 12, None),
            "G3": ("盐酸二甲双胍片", self.batch_b, "metf1", "0.0300", "metf2", "0.0800", 3, None),
            "G4": ("阿莫西林胶囊", self.batch_a, "amox1", "0.1500", "amox2", "0.4000", 12, "shortage"),
        }
        for g, (_, _, sel, win, _, _, _, _) in self.groups.items():
            assert d[sel].price == Decimal(win), g  # selected drugs are bought at their winning price
        # (group, institution no, agreed volume, share of the monthly pace ordered, non-selected share)
        self.agreements = [
            ("G1", 1, 60000, 1.15, 0.10),
            ("G1", 2, 36000, 1.15, 0.0),
            ("G1", 3, 36000, 1.15, 0.0),
            ("G1", 4, 24000, 0.48, 0.0),
            ("G1", 5, 12000, 1.15, 0.8),
            ("G1", 6, 24000, 1.15, 0.0),
            ("G1", 7, 18000, 1.15, 0.0),
            ("G1", 8, 12000, 1.15, 0.0),
            ("G1", 9, 6000, 1.15, 0.0),
            ("G2", 1, 36000, 1.15, 0.0),
            ("G2", 2, 24000, 1.15, 0.0),
            ("G2", 3, 18000, 1.15, 0.05),
            ("G2", 6, 12000, 0.0, 0.0),
            ("G2", 7, 6000, 1.15, 0.0),
            ("G3", 1, 9000, 1.05, 0.0),
            ("G3", 2, 6000, 1.05, 0.0),
            ("G3", 7, 6000, 1.05, 0.0),
            ("G3", 8, 3000, 1.05, 0.0),
            ("G3", 9, 1500, 1.05, 0.0),
            ("G4", 1, 12000, 1.15, 0.0),
            ("G4", 3, 6000, 1.15, 0.0),
            ("G4", 6, 6000, 0.2, 0.0),
        ]

    def agreement_code(self, group: str, inst_no: int) -> str:
        name, batch = self.groups[group][:2]
        return f"{self.inst[inst_no].code}|{batch}|{name}"

    def order_days(self, k: int) -> list[date]:
        return [d for d in self.days_of(k) if d.weekday() != 6 and d != self.missing_orders_day]

    def orders(self) -> None:
        rng = self.rng("orders")
        self.order_rows: dict[date, list[dict[str, Any]]] = defaultdict(list)
        seq: dict[date, int] = defaultdict(int)

        def order(
            d: date, inst: _Inst, drug: _Drug, qty: int, price: Decimal | None = None
        ) -> dict[str, Any]:
            seq[d] += 1
            delivered = None if rng.random() < 0.05 else d + timedelta(days=rng.randint(1, 3))
            row = {
                "order_id": f"PO{d:%Y%m%d}{seq[d]:05d}",
                "institution_code": inst.code,
                "drug_code": drug.code,
                "quantity": qty,
                "unit_price": self.price(drug, d) if price is None else price,
                "ordered_on": d,
                "delivered_on": delivered,
                "supplier_code": rng.choice(DISTRIBUTORS),
            }
            self.order_rows[d].append(row)
            return row

        n_vbp = self.scale.vbp_orders_per_month
        for k in range(len(self.m)):
            days = self.order_days(k)
            for group, inst_no, volume, pace, nonsel in self.agreements:
                _, _, sel, _, other, _, cycle, _ = self.groups[group]
                inst = self.inst[inst_no]
                monthly = round(volume / cycle * pace)
                for part, (key, qty) in enumerate(((sel, monthly), (other, round(monthly * nonsel)))):
                    if qty <= 0:
                        continue
                    for i in range(n_vbp):
                        share = qty // n_vbp + (qty % n_vbp if i == 0 else 0)
                        if share > 0:
                            order(
                                days[(inst_no * 3 + part + i * 11) % len(days)], inst, self.drugs[key], share
                            )
            for inst in self.insts:
                if not any(inst.in_force(d) for d in days):
                    continue
                open_days = [d for d in days if inst.in_force(d)]
                for key in REGULAR_ORDERS[: self.scale.regular_drugs]:
                    for _ in range(self.scale.regular_orders_per_month):
                        order(rng.choice(open_days), inst, self.drugs[key], rng.randrange(500, 5000, 100))
                if inst.no in (1, 5) and self.scale.regular_drugs > 1:
                    for key in ("osim", "sint", "sacu") if inst.no == 1 else ("osim", "anlo", "sint", "pyro"):
                        order(rng.choice(open_days), inst, self.drugs[key], rng.randint(5, 30))
        # 6. vbp_execution price findings: a selected drug above its winning price, a non-selected one
        # above the group's cap (bought by an institution without an agreement in the group).
        self.above_winning = order(
            self.order_days(1)[5], self.inst[1], self.drugs["amlo1"], 300, Decimal("0.0650")
        )
        self.above_cap = order(
            self.order_days(2)[6], self.inst[10], self.drugs["amlo2"], 200, Decimal("0.1500")
        )
        for rows in self.order_rows.values():
            rows.sort(key=lambda r: r["order_id"])

    # ---------------------------------------------------------------------------------- invalid records
    def invalid(self) -> None:
        """Add records that break one record rule each (about ``invalid_rate`` of the daily records, at
        least one of every kind) to daily files that keep valid records, never to the replayed day."""
        rng = self.rng("invalid")
        self.bad_lines: dict[date, list[dict[str, Any]]] = defaultdict(list)
        self.bad_orders: dict[date, list[dict[str, Any]]] = defaultdict(list)
        line_days = [
            d
            for d in self.days
            if self.settlement_form(d) == ".ndjson"
            and self.lines[d]
            and d not in (self.replay_day, self.late_settlements_day)
        ]
        order_days = [d for d in self.days if self.order_rows.get(d)]
        line_kinds = ["bad_code_pattern", "amount_mismatch", "fund_paid_above_eligible", "unknown_field",
                      "bad_check_character", "resident_id_in_wrong_field"]  # fmt: skip
        order_kinds = ["impossible_date", "bad_code_pattern"]
        n_lines = sum(len(v) for v in self.lines.values())
        n_orders = sum(len(v) for v in self.order_rows.values())
        # every kind once, then random kinds up to the scale's share of the records
        extra_l = round(n_lines * self.scale.invalid_rate) - len(line_kinds)
        extra_o = round(n_orders * self.scale.invalid_rate) - len(order_kinds)
        kinds_l = line_kinds + [rng.choice(line_kinds) for _ in range(max(0, extra_l))]
        kinds_o = order_kinds + [rng.choice(order_kinds) for _ in range(max(0, extra_o))]
        hospitals = [i for i in self.insts if not i.primary and i.no != 5]
        employees = [p for p in self.pool if p.insurance == "employee"]
        for kind in kinds_l:
            # Outpatient lines of employees at hospitals: were one loaded by mistake, no indicator would move.
            d = rng.choice(line_days)
            inst = rng.choice([i for i in hospitals if i.in_force(d)])
            bill = self.bill(
                d,
                rng.choice(employees),
                inst.code,
                "outpatient",
                "J06.9",
                Decimal("0.70"),
                rng=rng,
                sink=self.bad_lines[d],
            )
            rec = self.line(bill, self.drugs[rng.choice(("aspi", "omep", "amox1", "ibup"))], 28)
            if kind == "bad_code_pattern":
                rec["provider_code"] = rec["provider_code"][:-1]
            elif kind == "amount_mismatch":
                rec["amount"] += Decimal("0.10")
            elif kind == "fund_paid_above_eligible":
                rec["fund_paid"] = rec["eligible_amount"] + Decimal("1.00")
            elif kind == "unknown_field":
                rec["department"] = "呼吸内科"
            elif kind == "bad_check_character":
                right = rec["patient_id"][-1]
                rec["patient_id"] = rec["patient_id"][:-1] + ("1" if right != "1" else "2")
            else:  # a resident id typed into the settlement number
                rec["settlement_id"] = rec["patient_id"]
            self.invalid_by_kind[kind] += 1
        for kind in kinds_o:
            d = rng.choice(order_days)
            base = dict(rng.choice(self.order_rows[d]))
            base["order_id"] = f"PX{d:%Y%m%d}{len(self.bad_orders[d]) + 1:05d}"
            if kind == "impossible_date":
                base["ordered_on"], base["delivered_on"] = f"{d.year}-02-30", None
            else:
                base["supplier_code"] = base["supplier_code"][:-1]
            self.bad_orders[d].append(base)
            self.invalid_by_kind[kind] += 1

    # ---------------------------------------------------------------------------------------- files
    def add(
        self,
        key: str,
        data: bytes,
        arrival: datetime,
        records: int,
        invalid: int = 0,
        status: str | None = None,
    ) -> None:
        if status is None:
            status = "loaded_with_rejections" if invalid else "loaded"
        self.files.append(_File(key, data, arrival, records, invalid, status))

    def settlement_form(self, d: date) -> str:
        if d.day == 15:
            return ".parquet"
        if d.weekday() == 6:
            return ".ndjson.gz"
        return ".ndjson"

    def write_reference(self) -> None:
        m0 = self.m[0]
        divisions = [
            {"division_code": c, "name": n, "level": lv, "parent_code": p} for c, n, lv, p in DIVISIONS
        ]
        self.add(
            f"health/divisions/{m0}/divisions.csv",
            _csv(("division_code", "name", "level", "parent_code"), divisions),
            _at(m0, 7, 40),
            len(divisions),
        )
        fields = list(self.insts[0].record())
        initial = [i.record() | {"valid_to": None} for i in self.insts if i.no != 11]
        # An older provincial system exports the institution register as GB18030 CSV.
        self.add(
            f"health/institutions/{m0}/institutions.gb18030.csv",
            _csv(fields, initial, encoding="gb18030"),
            _at(m0, 7, 45),
            len(initial),
        )
        opened = self.inst[11]
        self.add(
            f"health/institutions/{opened.valid_from}/institutions-{opened.valid_from:%Y%m%d}.jsonl",
            _ndjson([opened.record()]),
            _at(opened.valid_from, 18, 5),
            1,
        )
        closed = self.inst[12]
        assert closed.valid_to is not None
        self.add(
            f"health/institutions/{closed.valid_to}/institutions-{closed.valid_to:%Y%m%d}.ndjson",
            _ndjson([closed.record()]),
            _at(closed.valid_to, 18, 10),
            1,
        )
        self.write_catalogs()
        self.write_vbp()

    def catalog_rows(self, version: str) -> list[dict[str, Any]]:
        old = version == self.old_version
        published, effective = (
            (self.old_published, self.old_effective) if old else (self.new_published, self.switch)
        )
        valid_to = date(self.m[0].year + (1 if old else 2), 12, 31)
        rows = []
        for drug in self.drugs.values():
            if drug.versions not in ("both", "old" if old else "new"):
                continue
            rows.append(
                {
                    "catalog_version": version,
                    "published_on": published,
                    "effective_from": effective,
                    "drug_code": drug.code,
                    "generic_name": drug.generic,
                    "catalog_class": drug.cls,
                    "negotiated": drug.negotiated,
                    "negotiated_valid_to": valid_to if drug.negotiated else None,
                    "specialty": drug.specialty,
                }
            )
        return rows

    def write_catalogs(self) -> None:
        schema = pa.schema(
            [
                ("catalog_version", pa.string()),
                ("published_on", pa.date32()),
                ("effective_from", pa.date32()),
                ("drug_code", pa.string()),
                ("generic_name", pa.string()),
                ("catalog_class", pa.string()),
                ("negotiated", pa.bool_()),
                ("negotiated_valid_to", pa.date32()),
                ("specialty", pa.string()),
            ]
        )
        for version, day in ((self.old_version, self.m[0]), (self.new_version, self.new_published)):
            rows = self.catalog_rows(version)
            self.add(
                f"insurance/drug_catalog/{day}/catalog-{version}.parquet",
                _parquet(pa.Table.from_pylist(rows, schema=schema)),
                _at(day, 16, 30),
                len(rows),
            )

    def write_vbp(self) -> None:
        m0 = self.m[0]
        groups, products = [], []
        for _, (name, batch, sel, win, other, cap, cycle, exemption) in self.groups.items():
            groups.append(
                {
                    "batch_id": batch,
                    "product_group": name,
                    "exec_start": m0,
                    "cycle_months": cycle,
                    "price_cap": Decimal(cap),
                    "exemption": exemption,
                }
            )
            products.append(
                {
                    "batch_id": batch,
                    "product_group": name,
                    "drug_code": self.drugs[sel].code,
                    "selected": True,
                    "winning_price": Decimal(win),
                }
            )
            products.append(
                {
                    "batch_id": batch,
                    "product_group": name,
                    "drug_code": self.drugs[other].code,
                    "selected": False,
                    "winning_price": None,
                }
            )
        agreements = [
            {
                "batch_id": self.groups[g][1],
                "product_group": self.groups[g][0],
                "institution_code": self.inst[no].code,
                "agreed_volume": volume,
            }
            for g, no, volume, _, _ in self.agreements
        ]
        at = _at(m0, 8, 20)
        self.add(f"insurance/vbp_groups/{m0}/groups.ndjson", _ndjson(groups), at, len(groups))
        self.add(
            f"insurance/vbp_products/{m0}/products.jsonl",
            _ndjson(products),
            at + timedelta(minutes=1),
            len(products),
        )
        self.add(
            f"insurance/vbp_agreements/{m0}/agreements.csv",
            _csv(list(agreements[0]), agreements),
            at + timedelta(minutes=2),
            len(agreements),
        )

    def formulary(self) -> dict[int, list[dict[str, Any]]]:
        """Listings by month of the file that reports them (full list first, then changes only)."""
        rng = self.rng("formulary")
        nego = {
            1: ("osim", "anlo", "sint", "sacu", "evol", "sofo", "tmfa", "dapa1", "sema", "qlqx"),
            2: ("sacu", "dapa2"),  # 2 of 12 negotiated varieties: below the 30% of a grade-A general hospital
            3: ("sacu", "evol", "tmfa", "dapa1", "sema"),
            4: ("qlqx", "sacu", "dapa1", "sema"),
            5: ("osim", "anlo", "sint", "pyro"),
            10: ("osim", "sacu"),
        }
        generics = list(dict.fromkeys(GENERICS_OUT + GENERICS_IN))
        by_month: dict[int, list[dict[str, Any]]] = defaultdict(list)

        def listing(inst: _Inst, key: str, listed: date, delisted: date | None = None) -> dict[str, Any]:
            return {
                "institution_code": inst.code,
                "drug_code": self.drugs[key].code,
                "listed_on": listed,
                "delisted_on": delisted,
            }

        for no, keys in nego.items():
            inst = self.inst[no]
            picked = list(dict.fromkeys(["yxye"] + rng.sample(generics, self.scale.formulary_generics)))
            for key in list(keys) + picked:
                listed = max(inst.valid_from, date(2022, 1, 1)) + timedelta(days=rng.randrange(0, 600))
                by_month[0].append(listing(inst, key, min(listed, self.m[0] - timedelta(days=3))))
        # After their committee meetings, hospitals list the new catalog's negotiated varieties.
        for no, keys in ((1, ("zanu", "omal")), (5, ("zanu",))):
            for key in keys:
                by_month[1].append(listing(self.inst[no], key, self.m[1] + timedelta(days=20 + no)))
        opened = self.inst[11]
        for key in ("osim", "sint", "sacu", "sofo", "dapa1", "sema", "amlo1", "aspi"):
            by_month[1].append(listing(opened, key, opened.valid_from))
        # The drug dropped by the new catalog is delisted when the new catalog takes effect.
        for row in by_month[0]:
            if row["drug_code"] == self.drugs["yxye"].code:
                by_month[2].append(row | {"delisted_on": self.switch})
        return by_month

    def write_monthly(self) -> None:
        self.listings = listings = self.formulary()
        registry_fields = ("patient_id", "disease", "institution_code", "filed_on")
        for k, end in enumerate(self.ends):
            due = _at(end + timedelta(days=2), 9, 0)  # the 2nd of the next month, before the 6th
            rows = listings.get(k, [])
            # The months with no changes send an empty file: "nothing to report" still counts as received.
            self.add(f"health/formulary/{end}/formulary.ndjson", _ndjson(rows), due, len(rows))
            first = self.m[k] if k else date(1900, 1, 1)
            filed = [
                {
                    "patient_id": c.patient.pid,
                    "disease": c.disease,
                    "institution_code": c.inst.code,
                    "filed_on": c.filed_on,
                }
                for c in self.chronic
                if first <= c.filed_on <= end
            ]
            self.add(
                f"health/chronic_registry/{end}/registry.csv.gz",
                _gz(_csv(registry_fields, filed)),
                due + timedelta(minutes=20),
                len(filed),
            )
            pharms = [
                {
                    "pharmacy_code": p.code,
                    "name": p.name,
                    "division_code": p.county,
                    "designated_on": p.designated_on,
                    "revoked_on": p.revoked_on if p.revoked_on and p.revoked_on <= end else None,
                    "traceability_enabled": True,
                }
                for p in self.pharms
                if p.designated_on is not None
            ]
            self.add(
                f"insurance/dual_channel_pharmacies/{end}/pharmacies.ndjson",
                _ndjson(pharms),
                due + timedelta(minutes=40),
                len(pharms),
            )
        self.write_meetings()

    def write_meetings(self) -> None:
        rng = self.rng("meetings")
        history = []
        for no in (1, 2, 3, 4, 5, 10):  # every level-3 hospital met on the previous catalog in time
            history.append(
                {
                    "institution_code": self.inst[no].code,
                    "meeting_on": self.old_published + timedelta(days=rng.randint(10, 60)),
                    "catalog_version": self.old_version,
                }
            )
        self.add(
            f"health/committee_meetings/{self.m[0]}/meetings-history.ndjson",
            _ndjson(history),
            _at(self.m[0], 9, 0),
            len(history),
        )
        # On the new catalog: the level-3 hospitals meet in the month after publication, but for no. 3
        # (planted: never) and no. 11, opened inside the window, which meets just before its own
        # deadline (max(published, opened) + 3 months) when that falls inside the window.
        new = [
            {
                "institution_code": self.inst[no].code,
                "meeting_on": self.m[1] + timedelta(days=4 + 3 * i),
                "catalog_version": self.new_version,
            }
            for i, no in enumerate((1, 2, 4, 5, 10))
        ]
        if self.late_meeting <= self.ends[-1]:
            new.append(
                {
                    "institution_code": self.inst[11].code,
                    "meeting_on": self.late_meeting,
                    "catalog_version": self.new_version,
                }
            )
        by_month: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for row in new:
            by_month[self.month_of(row["meeting_on"])].append(row)
        for k, rows in sorted(by_month.items()):
            self.add(
                f"health/committee_meetings/{self.ends[k]}/meetings.ndjson",
                _ndjson(rows),
                _at(self.ends[k] + timedelta(days=1), 9, 0),
                len(rows),
            )

    @property
    def late_meeting(self) -> date:
        opened = self.inst[11].valid_from
        return _add_months(max(self.new_published, opened), 3) - timedelta(days=5)

    def write_daily(self) -> None:
        rng = self.rng("arrivals")
        order_fields = (
            "order_id",
            "institution_code",
            "drug_code",
            "quantity",
            "unit_price",
            "ordered_on",
            "delivered_on",
            "supplier_code",
        )
        for d in self.days:
            nxt = d + timedelta(days=1)
            # settlements: the nightly export lands early the next morning (the planted one three days late)
            lines = sorted(self.lines[d], key=lambda r: (r["settled_at"], r["settlement_id"], r["line_no"]))
            bad = self.bad_lines.get(d, [])
            form = self.settlement_form(d)
            key = f"insurance/settlements/{d}/settlements{form}"
            arrival = _at(nxt, 2, rng.randrange(60))
            if d == self.late_settlements_day:
                arrival = _at(d + timedelta(days=3), 10, 30)
            if form == ".parquet":
                data = _parquet(self.settlements_table(lines))
            elif form == ".ndjson.gz":
                data = _gz(_ndjson(lines, utc=True))
            else:
                data = _ndjson(lines + bad)
            self.add(key, data, arrival, len(lines) + len(bad), len(bad))
            if d == self.replay_day:
                self.add(
                    f"insurance/settlements/{d}/settlements-resend{form}",
                    data,
                    _at(nxt + timedelta(days=1), 9, 15),
                    len(lines),
                    0,
                    "duplicate",
                )
            if d == self.misfiled_day:
                self.write_misfiled(d, nxt)
            # procurement orders: CSV, empty but for the header on Sundays; one date never sent
            if d != self.missing_orders_day:
                rows, bad_o = self.order_rows.get(d, []), self.bad_orders.get(d, [])
                self.add(
                    f"insurance/procurement_orders/{d}/orders.csv",
                    _csv(order_fields, rows + bad_o),
                    _at(nxt, 3, rng.randrange(60)),
                    len(rows) + len(bad_o),
                    len(bad_o),
                )
            events = sorted(
                self.events.get(d, []), key=lambda e: (e["event_at"], e["trace_code"], e["event"])
            )
            self.add(
                f"traceability/trace_events/{d}/events.jsonl",
                _ndjson(events),
                _at(nxt, 1, rng.randrange(60)),
                len(events),
            )

    def write_misfiled(self, d: date, nxt: datetime | date) -> None:
        """Settlement lines dropped under the health commission's folder: the file is rejected whole."""
        rng = self.rng("misfiled")
        lines: list[dict[str, Any]] = []
        for _ in range(self.scale.misfiled_lines):
            bill = self.bill(
                d,
                rng.choice(self.pool),
                self.inst[1].code,
                "outpatient",
                "J06.9",
                Decimal("0.55"),
                rng=rng,
                sink=lines,
            )
            self.line(bill, self.drugs["ibup"], 14)
        self.add(
            f"health/settlements/{d}/settlements.ndjson",
            _ndjson(lines),
            _at(nxt, 4, 0),
            len(lines),
            0,
            "rejected",
        )

    def settlements_table(self, lines: list[dict[str, Any]]) -> pa.Table:
        """Settlement lines with Parquet's natural types (decimals, an instant, a list of strings)."""
        schema = pa.schema(
            [
                ("settlement_id", pa.string()),
                ("line_no", pa.int64()),
                ("patient_id", pa.string()),
                ("insurance_type", pa.string()),
                ("provider_code", pa.string()),
                ("visit_type", pa.string()),
                ("diagnosis_code", pa.string()),
                ("drug_code", pa.string()),
                ("quantity", pa.float64()),
                ("unit_price", pa.decimal128(18, 4)),
                ("amount", pa.decimal128(18, 2)),
                ("eligible_amount", pa.decimal128(18, 2)),
                ("fund_paid", pa.decimal128(18, 2)),
                ("days_supply", pa.int64()),
                ("settled_at", pa.timestamp("us", tz="UTC")),
                ("trace_codes", pa.list_(pa.string())),
            ]
        )
        rows = [
            r | {"quantity": float(r["quantity"]), "settled_at": r["settled_at"].astimezone(UTC)}
            for r in lines
        ]
        return pa.Table.from_pylist(rows, schema=schema)

    # ------------------------------------------------------------------------------------------ plan
    def plan(self) -> None:
        """Record every planted outcome and control (entities and periods follow from the data above)."""
        n = len(self.m)
        months = range(n)
        for k in months:
            listed, missing = self.nego_varieties(self.inst[2], k)
            self.plant(
                "nego_allocation",
                "institution",
                self.inst[2].code,
                "breach",
                None,
                k,
                f"grade-A general hospital listing {len(listed)} of {len(listed) + len(missing)} negotiated "
                "varieties (threshold 0.30)",
                "rate",
            )
            for name in missing:
                self.plant(
                    "nego_allocation",
                    "institution",
                    self.inst[2].code,
                    "missing_variety",
                    name,
                    k,
                    "negotiated variety never listed by the hospital",
                )
            self.plant(
                "county_dual_channel",
                "county",
                UNCOVERED_COUNTY,
                "breach",
                None,
                k,
                "county with no dual-channel pharmacy",
                "pharmacies",
            )
            self.plant(
                "county_dual_channel",
                "county",
                UNCOVERED_COUNTY,
                "uncovered_county",
                UNCOVERED_COUNTY,
                k,
                "county with no dual-channel pharmacy",
            )
            self.plant(
                "two_diseases",
                "institution",
                self.inst[8].code,
                "breach",
                None,
                k,
                "township hospital paying 40% of eligible two-diseases outpatient costs",
                "fund_ratio",
            )
            self.plant(
                "two_diseases",
                "institution",
                self.inst[8].code,
                "low_fund_ratio",
                self.inst[8].code,
                k,
                "fund ratio 0.40 < 0.50",
            )
        cm = self.inst[3].code
        for k in months:
            if self.ends[k] >= _add_months(self.new_published, 3):
                self.plant(
                    "committee_linkage",
                    "institution",
                    cm,
                    "breach",
                    None,
                    k,
                    "level-3 hospital with no committee meeting on the new catalog after its deadline",
                    "meeting_held",
                )
                self.plant(
                    "committee_linkage",
                    "institution",
                    cm,
                    "no_committee_meeting",
                    self.new_version,
                    k,
                    "no meeting on the new catalog within three months of its publication",
                )
            if self.inst[11].in_force(self.ends[k]):
                met = self.late_meeting <= self.ends[k]
                self.control(
                    "committee_linkage",
                    "institution",
                    self.inst[11].code,
                    "compliant" if met else "pending",
                    None,
                    k,
                    "opened inside the window: met within its own three months"
                    if met
                    else "opened inside the window: its own three months have not run out",
                )
        self.control(
            "nego_allocation",
            "institution",
            self.inst[10].code,
            "no_row",
            None,
            n - 1,
            "a private level-3 hospital is outside the population",
        )
        k = self.month_of(self.untraced["settled_at"].astimezone(CST).date())
        pharm = self.untraced["provider_code"]
        self.plant(
            "dual_channel_trace",
            "pharmacy",
            pharm,
            "breach",
            None,
            k,
            "a negotiated drug sold without trace code",
            "traced_share",
        )
        self.plant(
            "dual_channel_trace",
            "pharmacy",
            pharm,
            "untraced_line",
            self.line_ref(self.untraced),
            k,
            "line with no trace code",
        )
        k = self.month_of(self.dup_second["settled_at"].astimezone(CST).date())
        self.plant(
            "duplicate_trace",
            "province",
            PROVINCE,
            "duplicate_trace_code",
            self.dup_second["trace_codes"][0],
            k,
            f"box sold at {self.dup_first['provider_code']} ({self.line_ref(self.dup_first)}) and again at "
            f"{self.dup_second['provider_code']} ({self.line_ref(self.dup_second)}) with no return between",
        )
        k = self.month_of(self.ret_second["settled_at"].astimezone(CST).date())
        self.control(
            "duplicate_trace",
            "province",
            PROVINCE,
            "no_finding",
            self.ret_second["trace_codes"][0],
            k,
            "box sold, returned, and sold again: a legitimate re-sale",
        )
        self.plan_vbp()
        self.plan_two_diseases()
        k = 2
        for klass in ("secondary", "tertiary"):
            self.plant(
                "reimbursement_ratio",
                "insurance_class",
                f"employee|{klass}",
                "breach",
                None,
                k,
                "employee inpatient ratio secondary 0.85, tertiary 0.82: gap 0.03 < 0.05",
                "ratio",
            )
            self.plant(
                "reimbursement_ratio",
                "insurance_class",
                f"employee|{klass}",
                "gap_too_small",
                "secondary-tertiary",
                k,
                "employee secondary-tertiary gap 0.03 < 0.05",
            )
        k = self.month_of(self.off_catalog["settled_at"].astimezone(CST).date())
        self.plant(
            "catalog_compliance",
            "institution",
            self.off_catalog["provider_code"],
            "not_in_catalog",
            self.line_ref(self.off_catalog),
            k,
            "fund paid for a drug the new catalog dropped",
        )
        self.control(
            "catalog_compliance",
            "province",
            PROVINCE,
            "no_finding",
            None,
            n - 1,
            "self-paid lines of a drug outside every catalog (fund_paid 0) are not findings",
        )
        aspirin = self.drugs["aspi"].code
        k = self.month_of(self.price_jump)
        self.plant(
            "price_warning",
            "drug",
            aspirin,
            "breach",
            None,
            k,
            "procurement price 0.1200 -> 0.1560 (+30%)",
            "price_change",
        )
        self.plant(
            "price_warning", "drug", aspirin, "price_change", aspirin, k, "+30% on the previous period"
        )
        k = self.month_of(self.missing_orders_day)
        ds = "insurance/procurement_orders"
        self.plant(
            "submission_completeness",
            "dataset",
            ds,
            "breach",
            None,
            k,
            "one daily file never sent",
            "completeness",
        )
        self.plant(
            "submission_completeness",
            "dataset",
            ds,
            "breach",
            None,
            k,
            "a missing file is not on time either (on time / expected)",
            "timeliness",
        )
        self.plant(
            "submission_completeness",
            "dataset",
            ds,
            "missing_submission",
            str(self.missing_orders_day),
            k,
            "no file for this business date",
        )
        k = self.month_of(self.late_settlements_day)
        ds = "insurance/settlements"
        self.plant(
            "submission_completeness",
            "dataset",
            ds,
            "breach",
            None,
            k,
            "one daily file arrived three days after its business date",
            "timeliness",
        )
        self.plant(
            "submission_completeness",
            "dataset",
            ds,
            "late_submission",
            str(self.late_settlements_day),
            k,
            "arrived after business date + 2 days 00:00 UTC+08:00",
        )
        self.control(
            "county_dual_channel",
            "county",
            self.pharms[3].county,
            "compliant",
            None,
            n - 1,
            "a county whose revoked pharmacy leaves another one designated",
        )

    def nego_varieties(self, inst: _Inst, k: int) -> tuple[list[str], list[str]]:
        """The negotiated generic names in agreement at month end k that ``inst`` lists, and those it misses
        (catalog in force at month end; listings from the formulary files as upserted)."""
        end = self.ends[k]
        in_force = [d for d in self.drugs.values() if d.negotiated and self.in_catalog(d, end)]
        latest: dict[str, dict[str, Any]] = {}
        for month in sorted(self.listings):
            for row in self.listings[month]:
                if row["institution_code"] == inst.code:
                    latest[row["drug_code"]] = row
        listed = {
            r["drug_code"]
            for r in latest.values()
            if r["listed_on"] <= end and (r["delisted_on"] is None or r["delisted_on"] > end)
        }
        names = {d.generic for d in in_force}
        have = {d.generic for d in in_force if d.code in listed}
        return sorted(have), sorted(names - have)

    def plan_vbp(self) -> None:
        for k in range(len(self.m)):
            month = k + 1  # execution month: every group starts on m0's first day
            for group, inst_no, _, pace, nonsel in self.agreements:
                name, _, _, _, _, _, cycle, exemption = self.groups[group]
                if month > cycle:
                    continue
                code = self.agreement_code(group, inst_no)
                if exemption:
                    self.control(
                        "vbp_execution", "agreement", code, "exempt", None, k, f"group exempt ({exemption})"
                    )
                    continue
                if month <= 2:
                    continue
                if pace == 0:
                    self.plant(
                        "vbp_execution",
                        "agreement",
                        code,
                        "breach",
                        None,
                        k,
                        "no selected volume ordered",
                        "completion",
                    )
                    self.plant(
                        "vbp_execution",
                        "agreement",
                        code,
                        "not_entered",
                        name,
                        k,
                        "selected drug never ordered (not entered)",
                    )
                elif pace < 1:
                    self.plant(
                        "vbp_execution",
                        "agreement",
                        code,
                        "breach",
                        None,
                        k,
                        "ordering at 48% of the agreed pace",
                        "completion",
                    )
                    self.plant(
                        "vbp_execution",
                        "agreement",
                        code,
                        "low_completion",
                        name,
                        k,
                        "completion below expected progress - 0.10",
                    )
                if nonsel / (1 + nonsel) > 0.30:
                    self.plant(
                        "vbp_execution",
                        "agreement",
                        code,
                        "breach",
                        None,
                        k,
                        "non-selected share 0.44 > 0.30",
                        "nonselected_share",
                    )
                    self.plant(
                        "vbp_execution",
                        "agreement",
                        code,
                        "high_nonselected_share",
                        name,
                        k,
                        "non-selected share above 0.30",
                    )
        k = self.month_of(self.above_winning["ordered_on"])
        self.plant(
            "vbp_execution",
            "agreement",
            self.agreement_code("G1", 1),
            "price_above_winning",
            self.above_winning["order_id"],
            k,
            "selected drug ordered at 0.0650 > winning price 0.0560",
        )
        k = self.month_of(self.above_cap["ordered_on"])
        self.plant(
            "vbp_execution",
            "institution",
            self.above_cap["institution_code"],
            "price_above_cap",
            self.above_cap["order_id"],
            k,
            "non-selected drug ordered at 0.1500 > cap 0.1200 by a hospital without an agreement",
        )

    def plan_two_diseases(self) -> None:
        k = self.month_of(self.long_rx["settled_at"].astimezone(CST).date())
        self.plant(
            "two_diseases",
            "institution",
            self.long_rx["provider_code"],
            "long_prescription",
            self.line_ref(self.long_rx),
            k,
            "90 days of supply on one line (> 60)",
        )
        # The annual cap: cumulative fund paid on population lines per patient and calendar year.
        primary = {i.code for i in self.insts if i.primary}
        paid: dict[tuple[str, int, int], Decimal] = defaultdict(Decimal)
        for d, lines in self.lines.items():
            for r in lines:
                if (
                    r["visit_type"] == "outpatient"
                    and r["insurance_type"] == "resident"
                    and r["provider_code"] in primary
                    and r["diagnosis_code"][:3] in _TWO_DISEASES
                ):
                    paid[(r["patient_id"], d.year, self.month_of(d))] += r["fund_paid"]
        running: dict[tuple[str, int], Decimal] = defaultdict(Decimal)
        for (pid, year, k), fund in sorted(paid.items(), key=lambda kv: (kv[0][2], kv[0][0])):
            before = running[(pid, year)]
            running[(pid, year)] = after = before + fund
            if after > TWO_DISEASES_CAP:
                if pid != self.cap_patient.patient.pid:
                    raise AssertionError("only the planted patient may pass the two-diseases annual cap")
                subject = pseudonymise(self.key, pid) if self.key else None
                self.plant(
                    "two_diseases",
                    "province",
                    PROVINCE,
                    "over_annual_cap",
                    subject,
                    k,
                    f"{after - max(before, TWO_DISEASES_CAP)} yuan above the 2,500 yuan annual cap "
                    "(subject: the patient's pseudonym; null unless generate() was given the key)",
                )


_TWO_DISEASES = frozenset([f"I1{i}" for i in range(6)] + [f"E1{i}" for i in range(5)])


def _parse_start(start: str) -> date:
    try:
        year, month = (int(p) for p in start.split("-"))
        return date(year, month, 1)
    except ValueError as exc:
        raise ValueError(f"start must be YYYY-MM, got {start!r}") from exc


def _build(seed: int, start: str, months: int, scale: str, pseudonym_key: bytes | None) -> _Province:
    if scale not in _SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    if not 4 <= months <= 12:
        # The plants need four months (a catalog switch, a cycle end, a deadline inside the window), and
        # two 12-month procurement cycles must still run in the last one.
        raise ValueError(f"months must be 4 to 12, got {months}")
    p = _Province(
        seed=seed, start=_parse_start(start), months=months, scale=_SCALES[scale], pseudonym_key=pseudonym_key
    )
    p.patients()
    p.settlements()
    p.trace()
    p.vbp()
    p.orders()
    p.invalid()
    p.write_reference()
    p.write_monthly()
    p.write_daily()
    p.plan()
    return p


def generate(
    landing: Bucket,
    *,
    seed: int = 7,
    start: str = "2024-09",
    months: int = 4,
    scale: str = "demo",
    pseudonym_key: bytes | None = None,
) -> SeedReport:
    """Write a synthetic province into ``landing`` and report what was written and planted.

    ``start`` (``YYYY-MM``) is the first month of the window, ``months`` its length (4-12); ``scale`` is
    ``"tiny"`` (a test-sized province) or ``"demo"`` (tens of thousands of settlement lines). Each object's
    ``last_modified`` (its arrival time) derives from its business date. ``pseudonym_key``, when given,
    lets the report name a planted patient by the pseudonym the warehouse will hold; the report never
    holds a raw resident id. The report is not written into the bucket (it would be ingested).
    """
    p = _build(seed, start, months, scale, pseudonym_key)
    report = SeedReport(
        planted=p.planted,
        controls=p.controls,
        invalid_by_kind=dict(sorted(p.invalid_by_kind.items())),
        parameters={"seed": seed, "start": start, "months": months, "scale": scale},
    )
    for f in p.files:
        landing.put(f.key, f.data, last_modified=f.arrival.astimezone(UTC))
        report.files.append(f.key)
        report.expected[f.key] = {"records": f.records, "invalid": f.invalid, "status": f.status}
        report.records += f.records
        report.invalid_records += f.invalid
    return report
