"""The synthetic raw data: layout, determinism, exactly-counted bad records, and learnable structure.

Plain pytest (no Spark): the files are read back with ``json`` and pandas, and every bad line is
re-classified independently of the generator, so the summary ingest tests rely on is checked too.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from recs.sample_data import BAD_KINDS, generate, users_for_events
from recs.schemas import raw_doc

START = dt.date(2026, 3, 1)
DAYS = 3
FEEDS = ("events", "catalog", "ads")
EVENT_TYPES = {t for group in raw_doc("events")["event_types"].values() for t in group}
ITEM_TYPES = set(raw_doc("events")["event_types"]["item"])
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def columns(feed: str) -> list[str]:
    return [c["name"] for c in raw_doc(feed)["columns"]]


def part(root: Path, feed: str, day: dt.date) -> Path:
    return root / "raw" / feed / f"dt={day.isoformat()}" / "part-00000.jsonl"


def lines_of(root: Path, feed: str, day: dt.date) -> list[str]:
    return part(root, feed, day).read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample-data")
    return root, generate(root, users=400, items=150, days=DAYS, start=START, seed=5)


@pytest.fixture(scope="module")
def events(sample) -> pd.DataFrame:
    """The run's valid events (what ingest should keep: no bad lines, no repeats), with their date."""
    root, summary = sample
    rows = []
    for d in summary.days:
        lines = dict.fromkeys(lines_of(root, "events", d.date))  # exact repeats dropped, order kept
        rows += [
            {**json.loads(line), "dt": d.date.isoformat()} for line in lines if classify(line, d.date) == "ok"
        ]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def catalog(sample) -> pd.DataFrame:
    root, summary = sample
    return pd.read_json(part(root, "catalog", summary.days[-1].date), lines=True, dtype={"created_date": str})


def classify(line: str, day: dt.date) -> str:
    """Which defect a line has, judged only from its text ("ok" for none)."""
    try:
        rec = json.loads(line)
    except json.JSONDecodeError:
        return "malformed_json"
    if rec.get("event_id") is None:
        return "missing_event_id"
    if rec.get("user_id") is None:
        return "missing_user_id"
    if rec["event_type"] not in EVENT_TYPES:
        return "unknown_event_type"
    if rec.get("price") is not None and rec["price"] < 0:
        return "negative_price"
    if not rec["event_time"].startswith(day.isoformat()):
        return "wrong_day"
    if rec["event_type"] in ITEM_TYPES and rec.get("item_id") is None:
        return "missing_item_id"
    return "ok"


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        generate(tmp_path / name, users=150, items=80, days=2, start=START, seed=seed)
    a, b, c = (files(tmp_path / name) for name in "abc")
    assert a == b
    assert a.keys() == c.keys()
    assert a != c


def test_layout_has_one_partition_per_day_and_feed(sample):
    root, summary = sample
    assert [d.date for d in summary.days] == [START + dt.timedelta(days=i) for i in range(DAYS)]
    for feed in FEEDS:
        dirs = sorted(p.name for p in (root / "raw" / feed).iterdir())
        assert dirs == [f"dt={d.date.isoformat()}" for d in summary.days]
    assert not [p for p in root.rglob("*") if p.name.startswith(".")]  # no temp files left behind


def test_every_bad_line_is_counted_exactly(sample):
    root, summary = sample
    for d in summary.days:
        lines = lines_of(root, "events", d.date)
        assert len(lines) == d.lines == d.valid_events + d.quarantined + d.duplicates
        assert set(d.bad) == set(BAD_KINDS)
        assert min(d.bad.values()) >= 2  # at least a couple of each kind at >= 1000 events
        seen: set[str] = set()
        kinds: Counter[str] = Counter()
        for line in lines:
            kinds["duplicate" if line in seen else classify(line, d.date)] += 1
            seen.add(line)
        assert kinds == Counter({**d.bad, "duplicate": d.duplicates, "ok": d.valid_events})


def test_duplicates_are_exact_copies_with_one_event_id(sample):
    root, summary = sample
    lines = lines_of(root, "events", summary.days[0].date)
    repeated = [line for line, n in Counter(lines).items() if n > 1]
    assert len(repeated) == summary.days[0].duplicates
    valid = [line for line in lines if classify(line, summary.days[0].date) == "ok"]
    ids = Counter(json.loads(line)["event_id"] for line in valid)
    assert sum(n - 1 for n in ids.values()) == summary.days[0].duplicates


def test_valid_events_follow_the_raw_schema(events):
    assert set(events.columns) - {"dt"} == set(columns("events"))
    assert events["event_id"].str.fullmatch(r"e\d{8}-\d{8}").all()
    assert events["user_id"].dropna().str.fullmatch(r"u\d{6}").all()
    assert events["event_time"].str.fullmatch(TIME.pattern).all()
    assert set(events["surface"]) <= {"home", "search", "category", "product_page"}
    assert set(events["device"]) == {"mobile", "desktop", "tablet"}
    assert set(events["country"]) == {"US", "GB", "DE", "FR", "IN", "BR"}
    ads = events[events["event_type"].isin({"ad_impression", "ad_click"})]
    assert ads["ad_id"].str.fullmatch(r"a\d{4}").all() and ads["item_id"].notna().all()
    shown = events[events["event_type"].isin({"impression", "click", "ad_impression", "ad_click"})]
    assert (shown["position"] >= 1).all()
    bought = events[events["event_type"] == "purchase"]
    assert len(bought) > 0 and (bought["price"].dropna() > 0).all()


def test_sessions_are_consistent_and_clicks_follow_their_impressions(events):
    assert events.groupby("session_id")["event_time"].is_monotonic_increasing.all()  # files are time-ordered
    assert (events.groupby("session_id")[["user_id", "device", "country"]].nunique() == 1).all().all()
    key = ["session_id", "item_id", "position"]
    shown = events[events["event_type"] == "impression"].set_index(key)["event_time"]
    clicks = events[events["event_type"] == "click"].set_index(key)["event_time"]
    found = clicks.index.isin(shown.index)
    assert found.mean() > 0.98  # the rest lost their impression line to an injected defect
    assert (shown.loc[clicks.index[found]].to_numpy() <= clicks[found].to_numpy()).all()


def test_purchases_are_priced_from_that_days_catalog(sample, events):
    root, summary = sample
    day = summary.days[1].date
    prices = pd.read_json(part(root, "catalog", day), lines=True).set_index("item_id")["price"]
    bought = events[(events["dt"] == day.isoformat()) & (events["event_type"] == "purchase")]
    assert (bought["price"].to_numpy() == prices.loc[bought["item_id"]].to_numpy()).all()


def test_snapshots_follow_their_schemas_and_change_day_to_day(sample):
    root, summary = sample
    first, last = (summary.days[0].date, summary.days[-1].date)
    for feed in ("catalog", "ads"):
        for line in lines_of(root, feed, last):
            assert list(json.loads(line)) == columns(feed)
    cat0 = pd.read_json(part(root, "catalog", first), lines=True, dtype={"created_date": str})
    cat1 = pd.read_json(part(root, "catalog", last), lines=True, dtype={"created_date": str})
    assert len(cat0) == summary.days[0].catalog_items < len(cat1) == summary.days[-1].catalog_items
    assert (cat1["created_date"] == last.isoformat()).any()  # new items appear
    assert cat1["category_id"].notna().all() and cat1["brand"].notna().all()
    assert 20 <= cat1["category_id"].nunique() <= 40
    assert cat1.groupby("brand")["category_id"].nunique().max() == 1  # brands nest in categories
    both = cat0.merge(cat1, on="item_id")
    assert 0 < (both["in_stock_x"] != both["in_stock_y"]).sum() < 0.2 * len(both)


def test_ad_inventory_mixes_the_cases_serving_must_handle(sample):
    root, summary = sample
    dates = {"start_date": str, "end_date": str}
    ads = pd.concat(
        pd.read_json(part(root, "ads", d.date), lines=True, dtype=dates).assign(dt=d.date.isoformat())
        for d in summary.days
    )
    assert len(ads) == sum(d.ads for d in summary.days)
    assert set(ads["status"]) <= {"active", "paused", "ended"} and {"active", "paused"} <= set(ads["status"])
    outside = (ads["dt"] < ads["start_date"]) | (ads["dt"] > ads["end_date"])
    assert (outside & (ads["status"] == "active")).any()
    assert (ads["spend_today"] >= ads["daily_budget"]).any()
    assert (ads["target_countries"].str.len() > 0).any() and (ads["target_countries"].str.len() == 0).any()
    assert (ads["target_categories"].str.len() > 0).any()
    catalog_ids = set(pd.read_json(part(root, "catalog", summary.days[0].date), lines=True)["item_id"])
    assert set(ads["item_id"]) <= catalog_ids


def test_click_rate_falls_with_position(events):
    shown = events[events["event_type"] == "impression"]
    clicks = events[events["event_type"] == "click"]
    ctr = clicks.groupby("position").size() / shown.groupby("position").size()
    assert ctr[1] > ctr[2] > ctr[4] > ctr[8]
    assert ctr[1] > 3 * ctr[8]


def test_clicks_follow_stable_tastes(events, catalog):
    """Categories a user clicked on day 1 get far more of their later clicks than the catalog share."""
    clicks = events[events["event_type"] == "click"].merge(catalog[["item_id", "category_id"]], on="item_id")
    first = clicks[clicks["dt"] == START.isoformat()]
    later = clicks[clicks["dt"] > START.isoformat()]
    top = first.groupby("user_id")["category_id"].agg(lambda c: set(c.value_counts().index[:2]))
    later = later[later["user_id"].isin(top.index)]
    hit = [cat in top[user] for user, cat in zip(later["user_id"], later["category_id"], strict=True)]
    share = catalog["category_id"].value_counts(normalize=True)
    baseline = top.map(lambda cats: share[list(cats)].sum()).mean()
    assert sum(hit) / len(hit) > 3 * baseline


def test_some_users_are_active_each_day_and_some_are_new(sample, events):
    _, summary = sample
    for d in summary.days:
        assert 0.25 < d.active_users / summary.users < 0.65
    assert summary.days[0].new_users == 0 and all(d.new_users > 0 for d in summary.days[1:])
    per_user = events.groupby("user_id").size()
    assert per_user.quantile(0.9) > 3 * per_user.median()  # a heavy tail of active users
    repeat = events[events["event_type"] == "view"].groupby(["user_id", "item_id"])["dt"].nunique()
    assert (repeat > 1).mean() > 0.05  # users come back to items they viewed before


def test_users_for_events_sizes_a_run(tmp_path):
    summary = generate(tmp_path, users=users_for_events(20_000, days=2), days=2, items=200)
    assert 0.85 < summary.lines / 20_000 < 1.15
