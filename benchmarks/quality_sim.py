"""An event-log simulator for the quality benchmark, independent of ``recs/sample_data.py``.

``recs/sample_data.py`` plants category tastes, Zipf popularity and a funnel that the project's
own model was developed against. Judging recs only on that generator would be marking its own
homework, so this module draws logs from a different generative model:

* **Latent factors.** Items live in a small latent space. Category centroids are drawn first,
  brand centroids around them, item vectors around their brand: categories and brands are the
  top-level and second-level clusters of the item space. A user's taste vector is a weighted
  mix of one to three category centroids plus personal noise.
* **Choice.** Each session has an intent (the taste vector plus session noise). The items the
  session looks at are drawn without replacement (Gumbel top-k) from
  ``softmax(taste_weight * intent . v + log_popularity)`` over what is in stock that day.
* **Popularity drifts.** Log-popularity is a per-item random walk; in ``new_items`` each new
  item also gets a launch boost that decays over its first days.
* **Repeat consumption.** A share of each session's views re-visits an item from the user's
  own recent views (the more recent, the likelier).
* **Funnel.** view -> add to cart -> purchase, with odds rising with the user-item affinity
  (``views_purchases_only``: view -> purchase directly).
* **Impressions.** Where the setting logs them, every chosen item was shown on a slate
  (impression, click, view) next to popular items that were shown and not clicked.

Everything is vectorised with numpy and drawn from ``numpy.random.default_rng((seed, stream,
day))``, so a seed gives identical files. Output is the project's raw layout:
``raw/events/dt=YYYY-MM-DD/part-00000.jsonl`` and ``raw/catalog/dt=YYYY-MM-DD/part-00000.jsonl``
(no ads feed: ingest treats it as optional). Every line is valid, so ingest quarantines nothing.

Ids: users ``usr-000123``, items ``sku-00042``, categories ``cat-07``, brands ``brand-07-2``,
sessions ``ses-20260302-000042``, events ``ev-20260302-0000042``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

# Bookkeeping shared with the project generator (a bounded, time-ordered memory per user);
# the generative model itself is this file's own.
from recs.sample_data import _push as _remember
from recs.sample_data import _sigmoid

START = dt.date(2026, 3, 2)
COUNTRIES = np.array(["US", "MX", "ES", "JP", "PL", "KE"], dtype=object)
COUNTRY_P = np.array([0.35, 0.15, 0.15, 0.15, 0.1, 0.1])
DEVICES = np.array(["ios", "android", "web"], dtype=object)
DEVICE_P = np.array([0.35, 0.4, 0.25])
SLATE_SURFACES = np.array(["home", "search", "category"], dtype=object)
# Relative traffic by UTC hour (a single market's day: quiet night, evening peak).
HOUR_W = np.array([2, 1, 1, 1, 1, 2, 3, 5, 6, 6, 6, 7, 8, 7, 6, 6, 7, 8, 10, 12, 12, 10, 7, 4], float)
MEMORY = 10  # recently viewed items each user can come back to


@dataclass(frozen=True)
class Setting:
    """One simulated world. Sizes are per run; ``days`` includes the held-out last day."""

    name: str
    users: int
    items: int  # catalog at the start
    days: int
    dim: int = 8
    categories: int = 16
    brands_per_category: int = 5
    taste_weight: float = 2.5  # how much the latent match counts next to popularity
    session_noise: float = 0.7  # a session's intent wanders from the user's taste
    popularity_sd: float = 1.0  # spread of initial log-popularity
    drift_sd: float = 0.12  # daily random-walk step of each item's log-popularity
    p_active: float = 0.35  # mean chance that a user visits on a given day
    join_share: float = 0.1  # users whose first possible visit is inside the window
    sessions_mean: float = 1.5  # sessions per active day
    views_mean: float = 4.0  # distinct items looked at per session
    max_views: int = 10
    repeat_share: float = 0.25  # chance that a view goes back to one of the user's recent views
    cart_base: float = -2.0  # logit of view -> cart at average affinity
    cart_affinity: float = 1.0  # logit slope on standardised affinity
    buy_after_cart: float = 0.45
    out_of_stock: float = 0.02  # daily chance that an item is unavailable that day
    # Activity in bursts: a user visits for 1-2 days, then stays away for burst_gap_days or more.
    bursty: bool = False
    burst_gap_days: int = 7
    burst_p_active: float = 0.85
    # New items: added every day, with a launch boost decaying with age (days).
    new_items_per_day: int = 0
    new_item_boost: float = 0.0
    new_item_decay_days: float = 2.0
    # What the logs carry.
    impressions: bool = True
    extra_impressions: int = 5  # shown-not-clicked popular items per slate
    context: bool = True  # session_id, surface, position, device and country filled
    funnel_carts: bool = True  # False: view -> purchase with no add_to_cart events

    def scaled(self, factor: float, days: int | None = None) -> Setting:
        """A smaller copy (users and items times ``factor``) for quick runs."""
        return dataclasses.replace(
            self,
            users=max(200, int(self.users * factor)),
            items=max(150, int(self.items * factor)),
            new_items_per_day=int(round(self.new_items_per_day * factor)),
            days=days or self.days,
        )


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        Setting("default", users=3000, items=1500, days=10),
        Setting(
            "sparse_bursty",
            users=5000,
            items=3000,
            days=12,
            bursty=True,
            sessions_mean=1.1,
            views_mean=2.5,
            max_views=6,
        ),
        Setting(
            "new_items",
            users=3000,
            items=1200,
            days=10,
            new_items_per_day=60,
            new_item_boost=3.5,
            new_item_decay_days=1.5,
        ),
        Setting(
            "views_purchases_only",
            users=3000,
            items=1500,
            days=10,
            impressions=False,
            context=False,
            funnel_carts=False,
            cart_base=-3.0,
        ),
    )
}


@dataclass(frozen=True)
class SimSummary:
    setting: str
    seed: int
    start: dt.date
    days: int
    users: int
    items: int  # catalog at the end, new items included
    events: dict[str, int]  # per event type
    active_user_days: int
    new_item_view_share: float  # views of items at most 2 days old (new_items setting)
    repeat_view_share: float

    @property
    def dates(self) -> list[dt.date]:
        return [self.start + dt.timedelta(days=i) for i in range(self.days)]

    @property
    def lines(self) -> int:
        return sum(self.events.values())


# ---------------------------------------------------------------- the world


@dataclass(frozen=True)
class _World:
    vec: np.ndarray  # (items, dim)
    category: np.ndarray
    brand: np.ndarray  # index within the category
    price: np.ndarray
    log_pop: np.ndarray  # initial
    created: np.ndarray  # day index; negative = before the window
    taste: np.ndarray  # (users, dim)
    country: np.ndarray
    device: np.ndarray
    join_day: np.ndarray
    p_active: np.ndarray
    schedule: np.ndarray | None  # (users, days) bool, bursty settings only


def _rng(seed: int, stream: int, day: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, stream, day])


def _build_world(s: Setting, seed: int) -> _World:
    rng = _rng(seed, 1)
    n_new = s.new_items_per_day * (s.days - 1)
    n = s.items + n_new
    scale = 1.0 / np.sqrt(s.dim)
    cat_centre = rng.normal(0, scale, (s.categories, s.dim)) * 1.6
    brand_centre = cat_centre[:, None, :] + rng.normal(
        0, 0.55 * scale, (s.categories, s.brands_per_category, s.dim)
    )
    category = rng.integers(0, s.categories, n)
    category[: s.categories] = np.arange(s.categories)
    brand = np.minimum((rng.random(n) ** 1.5 * s.brands_per_category).astype(int), s.brands_per_category - 1)
    vec = brand_centre[category, brand] + rng.normal(0, 0.45 * scale, (n, s.dim))
    price_level = np.exp(rng.normal(3.0, 0.8, s.categories))
    price = np.round(price_level[category] * np.exp(rng.normal(0, 0.35, n)), 2) + 0.99
    log_pop = rng.normal(0, s.popularity_sd, n)
    created = np.concatenate(
        [-rng.integers(1, 400, s.items), np.repeat(np.arange(1, s.days), s.new_items_per_day)]
    ).astype(int)

    u = s.users
    k = rng.integers(1, 4, u)
    favs = rng.integers(0, s.categories, (u, 3))
    mix = rng.dirichlet(np.ones(3), u) * (np.arange(3) < k[:, None])
    mix /= mix.sum(1, keepdims=True)
    taste = np.einsum("uk,ukd->ud", mix, cat_centre[favs]) + rng.normal(0, 0.5 * scale, (u, s.dim))
    taste /= np.linalg.norm(taste, axis=1, keepdims=True) / np.sqrt(1.6)
    joins = rng.random(u) < s.join_share
    join_day = np.where(joins, rng.integers(1, max(2, s.days), u), 0)
    p_active = np.clip(rng.beta(1.2, 1.2 * (1 - s.p_active) / s.p_active, u), 0.02, 0.95)

    schedule = None
    if s.bursty:
        schedule = np.zeros((u, s.days), bool)
        start = rng.integers(-s.burst_gap_days, s.days, u)
        for _ in range(s.days // s.burst_gap_days + 2):
            length = 1 + (rng.random(u) < 0.5)
            for offset in range(2):
                day = start + offset
                ok = (offset < length) & (day >= 0) & (day < s.days)
                schedule[np.flatnonzero(ok), day[ok]] = True
            # The next burst starts burst_gap_days or more after this one's last day.
            start = start + length - 1 + s.burst_gap_days + rng.geometric(0.3, u) - 1
        schedule &= rng.random((u, s.days)) < s.burst_p_active
    return _World(
        vec=vec,
        category=category,
        brand=brand,
        price=price,
        log_pop=log_pop,
        created=created,
        taste=taste,
        country=rng.choice(len(COUNTRIES), u, p=COUNTRY_P),
        device=rng.choice(len(DEVICES), u, p=DEVICE_P),
        join_day=join_day,
        p_active=p_active,
        schedule=schedule,
    )


# ---------------------------------------------------------------- helpers


def _gumbel_top(rng: np.random.Generator, logits: np.ndarray, k: int) -> np.ndarray:
    """Per row, ``k`` column indices drawn without replacement proportional to ``exp(logits)``,
    in draw order (the Gumbel top-k trick)."""
    k = min(k, logits.shape[1])
    keys = logits + rng.gumbel(size=logits.shape)
    top = np.argpartition(-keys, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)


def _from_memory(rng: np.random.Generator, memory: np.ndarray) -> np.ndarray:
    """One remembered item per row, recent ones likelier; -1 for an empty memory."""
    w = (memory >= 0) * 0.75 ** np.arange(memory.shape[1])[::-1]
    cum = np.cumsum(w, axis=1)
    total = cum[:, -1]
    pick = (cum <= (rng.random(len(memory)) * total)[:, None]).sum(1)
    pick = np.minimum(pick, memory.shape[1] - 1)
    return np.where(total > 0, memory[np.arange(len(memory)), pick], -1)


# ---------------------------------------------------------------- one day


def _simulate_day(
    s: Setting, w: _World, seed: int, d: int, log_pop: np.ndarray, memory: np.ndarray
) -> tuple[pd.DataFrame, dict[str, float]]:
    rng = _rng(seed, 2, d)
    n_items = len(w.created)
    available = (w.created <= d) & (rng.random(n_items) >= s.out_of_stock)
    pop = log_pop.copy()
    if s.new_item_boost:
        age = d - w.created
        fresh = age >= 0
        pop[fresh] += s.new_item_boost * np.exp(-age[fresh] / s.new_item_decay_days)
    pop = np.where(available, pop, -np.inf)

    joined = w.join_day <= d
    if w.schedule is not None:
        active = w.schedule[:, d] & joined
    else:
        active = joined & (rng.random(s.users) < w.p_active)
    users = np.flatnonzero(active)
    n_sess = 1 + rng.poisson(max(s.sessions_mean - 1.0, 0.0), len(users))
    sess_user = np.repeat(users, n_sess)
    n_s = len(sess_user)
    n_views = np.minimum(1 + rng.poisson(max(s.views_mean - 1.0, 0.0), n_s), s.max_views)
    hour = rng.choice(24, n_s, p=HOUR_W / HOUR_W.sum())
    sess_start = hour * 3600 + rng.integers(0, 3600, n_s)
    sess_start = np.minimum(sess_start, 86400 - 30 * 60)

    # Chosen items per session, in order, from softmax(taste . v + popularity).
    intent = w.taste[sess_user] + rng.normal(0, s.session_noise / np.sqrt(s.dim), (n_s, s.dim))
    chosen = np.empty((n_s, s.max_views), int)
    for lo in range(0, n_s, 2000):
        hi = min(lo + 2000, n_s)
        logits = s.taste_weight * intent[lo:hi] @ w.vec.T + pop
        chosen[lo:hi] = _gumbel_top(rng, logits, s.max_views)
    slot = np.arange(s.max_views)
    used = slot[None, :] < n_views[:, None]
    v_sess, v_slot = np.nonzero(used)
    v_item = chosen[v_sess, v_slot]
    v_user = sess_user[v_sess]
    # Repeat consumption: some views go back to a recently viewed item instead.
    again = _from_memory(rng, memory[v_user])
    repeat = (rng.random(len(v_item)) < s.repeat_share) & (again >= 0)
    repeat &= available[np.where(again >= 0, again, 0)]
    v_item = np.where(repeat, again, v_item)
    gaps = rng.exponential(40.0, len(v_item)) + 8
    # Time within the session: cumulative gaps, in slot order (v_sess is sorted).
    csum = np.cumsum(gaps)
    first = np.searchsorted(v_sess, v_sess)
    v_t = sess_start[v_sess] + (csum - csum[first] + gaps[first]).astype(int)
    v_t = np.minimum(v_t, 86399 - 120)

    blocks: list[dict[str, np.ndarray]] = []

    def block(etype: str, sess: np.ndarray, item: np.ndarray, t: np.ndarray, **extra: np.ndarray) -> None:
        blocks.append(
            {"etype": np.full(len(sess), etype, dtype=object), "sess": sess, "item": item, "t": t, **extra}
        )

    organic = ~repeat
    if s.impressions:
        # The slate: the organically chosen items plus popular items nobody clicked.
        n_extra = s.extra_impressions
        shown_pop = _gumbel_top(rng, pop[None, :], min(200, int(available.sum())))[0]
        extra_items = rng.choice(shown_pop, (n_s, n_extra))
        e_sess = np.repeat(np.arange(n_s), n_extra)
        e_item = extra_items.ravel()
        o_sess, o_item, o_t = v_sess[organic], v_item[organic], v_t[organic]
        # Slate positions (1-based): clicked items tend to sit higher (position bias).
        slate_sess = np.concatenate([o_sess, e_sess])
        key = np.concatenate([rng.random(len(o_sess)) * 0.6, rng.random(len(e_sess))])
        order = np.lexsort((key, slate_sess))
        rank = np.empty(len(order), int)
        rank[order] = np.arange(len(order)) - np.searchsorted(slate_sess[order], slate_sess[order]) + 1
        o_pos, e_pos = rank[: len(o_sess)], rank[len(o_sess) :]
        block("impression", o_sess, o_item, o_t - 3, position=o_pos)
        block("impression", e_sess, e_item, sess_start[e_sess] + 1, position=e_pos)
        block("click", o_sess, o_item, o_t - 1, position=o_pos)
    block("view", v_sess, v_item, v_t, position=np.full(len(v_sess), -1))

    z = np.einsum("nd,nd->n", w.taste[v_user], w.vec[v_item])
    z = (z - z.mean()) / (z.std() or 1.0)
    p_cart = _sigmoid(s.cart_base + s.cart_affinity * z)
    carted = rng.random(len(v_item)) < p_cart
    if s.funnel_carts:
        block("add_to_cart", v_sess[carted], v_item[carted], v_t[carted] + 30)
        bought = carted & (rng.random(len(v_item)) < s.buy_after_cart)
    else:
        bought = carted
    block("purchase", v_sess[bought], v_item[bought], v_t[bought] + 90)

    in_time = np.argsort(v_t, kind="stable")  # a user's sessions may interleave in the day
    _remember(memory, v_user[in_time], v_item[in_time])

    frames = []
    for b in blocks:
        n = len(b["sess"])
        frames.append(
            pd.DataFrame(
                {
                    "event_type": b["etype"],
                    "sess": b["sess"],
                    "item": b["item"],
                    "t": b["t"],
                    "position": b.get("position", np.full(n, -1)),
                }
            )
        )
    ev = pd.concat(frames, ignore_index=True)
    ev = ev.sort_values(["t", "sess"], kind="stable").reset_index(drop=True)

    day = START + dt.timedelta(days=d)
    ds = day.strftime("%Y%m%d")
    user = sess_user[ev["sess"].to_numpy()]
    item = ev["item"].to_numpy()
    base = pd.Timestamp(day)
    out = pd.DataFrame(
        {
            "event_id": [f"ev-{ds}-{i:07d}" for i in range(len(ev))],
            "event_time": (base + pd.to_timedelta(ev["t"].to_numpy(), unit="s")).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            ),
            "user_id": [f"usr-{u:06d}" for u in user],
            "event_type": ev["event_type"].to_numpy(),
            "item_id": [f"sku-{i:05d}" for i in item],
        }
    )
    if s.context:
        sess_surface = SLATE_SURFACES[rng.integers(0, len(SLATE_SURFACES), n_s)]
        # A session now and then on another device.
        sess_device = np.where(rng.random(n_s) < 0.1, rng.integers(0, len(DEVICES), n_s), w.device[sess_user])
        sess_idx = ev["sess"].to_numpy()
        on_slate = ev["event_type"].isin(["impression", "click"]).to_numpy()
        out["session_id"] = [f"ses-{ds}-{i:06d}" for i in sess_idx]
        out["surface"] = np.where(on_slate, sess_surface[sess_idx], "product_page")
        pos = ev["position"].to_numpy()
        out["position"] = pd.Series(pos, dtype="Int64").mask(pos < 0)
        out["device"] = DEVICES[sess_device[sess_idx]]
        out["country"] = COUNTRIES[w.country[user]]
    else:
        out["session_id"] = None
        out["surface"] = None
        out["position"] = pd.array([pd.NA] * len(out), dtype="Int64")
        out["device"] = None
        out["country"] = None
    priced = ev["event_type"].isin(["purchase", "add_to_cart", "view"]).to_numpy()
    if not s.context:
        priced = (ev["event_type"] == "purchase").to_numpy()
    out["price"] = np.where(priced, w.price[item], np.nan)
    out["ad_id"] = None

    views_new = (d - w.created[v_item] <= 2) & (w.created[v_item] >= 1)
    stats = {
        "active_users": float(len(users)),
        "views": float(len(v_item)),
        "new_item_views": float(views_new.sum()),
        "repeat_views": float(repeat.sum()),
    }
    return out, stats


def _catalog(s: Setting, w: _World, seed: int, d: int) -> pd.DataFrame:
    rng = _rng(seed, 3, d)
    live = np.flatnonzero(w.created <= d)
    created = [(START + dt.timedelta(days=int(c))).isoformat() for c in w.created[live]]
    return pd.DataFrame(
        {
            "item_id": [f"sku-{i:05d}" for i in live],
            "category_id": [f"cat-{c:02d}" for c in w.category[live]],
            "brand": [f"brand-{c:02d}-{b}" for c, b in zip(w.category[live], w.brand[live], strict=True)],
            "price": w.price[live],
            "in_stock": rng.random(len(live)) >= s.out_of_stock / 2,
            "created_date": created,
        }
    )


EVENT_COLUMNS = [
    "event_id",
    "event_time",
    "user_id",
    "session_id",
    "event_type",
    "item_id",
    "ad_id",
    "surface",
    "position",
    "device",
    "country",
    "price",
]
CATALOG_COLUMNS = ["item_id", "category_id", "brand", "price", "in_stock", "created_date"]


def _write_jsonl(path: Path, df: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(df.to_json(orient="records", lines=True, double_precision=6), encoding="utf-8")
    tmp.replace(path)


def generate(out_dir: Path, setting: Setting, seed: int) -> SimSummary:
    """Write ``setting``'s raw feeds under ``out_dir/raw``; returns what was written."""
    w = _build_world(setting, seed)
    log_pop = w.log_pop.copy()
    memory = np.full((setting.users, MEMORY), -1, dtype=int)
    counts: dict[str, int] = {}
    totals = {"active_users": 0.0, "views": 0.0, "new_item_views": 0.0, "repeat_views": 0.0}
    for d in range(setting.days):
        day = START + dt.timedelta(days=d)
        events, stats = _simulate_day(setting, w, seed, d, log_pop, memory)
        part = f"dt={day.isoformat()}/part-00000.jsonl"
        _write_jsonl(out_dir / "raw" / "events" / part, events[EVENT_COLUMNS])
        _write_jsonl(out_dir / "raw" / "catalog" / part, _catalog(setting, w, seed, d)[CATALOG_COLUMNS])
        for k, v in events["event_type"].value_counts().items():
            counts[k] = counts.get(k, 0) + int(v)
        for k, v in stats.items():
            totals[k] += v
        log_pop += _rng(seed, 4, d).normal(0, setting.drift_sd, len(log_pop))
    views = totals["views"] or 1.0
    return SimSummary(
        setting=setting.name,
        seed=seed,
        start=START,
        days=setting.days,
        users=setting.users,
        items=len(w.created),
        events=counts,
        active_user_days=int(totals["active_users"]),
        new_item_view_share=totals["new_item_views"] / views,
        repeat_view_share=totals["repeat_views"] / views,
    )


def read_events(raw: Path, day: dt.date) -> pd.DataFrame:
    """One day's raw events as a DataFrame (``event_time`` parsed)."""
    path = raw / "events" / f"dt={day.isoformat()}" / "part-00000.jsonl"
    df = pd.read_json(path, lines=True, dtype={"position": "Int64"}, convert_dates=False)
    df["event_time"] = pd.to_datetime(df["event_time"], utc=True)
    return df


def read_catalog(raw: Path, day: dt.date) -> pd.DataFrame:
    path = raw / "catalog" / f"dt={day.isoformat()}" / "part-00000.jsonl"
    return pd.read_json(path, lines=True, dtype={"item_id": str}, convert_dates=False)


if __name__ == "__main__":  # a quick look: python benchmarks/quality_sim.py OUT [setting] [seed]
    import sys

    out = Path(sys.argv[1])
    name = sys.argv[2] if len(sys.argv) > 2 else "default"
    summary = generate(out, SETTINGS[name], int(sys.argv[3]) if len(sys.argv) > 3 else 0)
    print(json.dumps(dataclasses.asdict(summary), default=str, indent=1))
