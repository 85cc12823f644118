"""Synthetic raw feeds (events, catalog, ads) with structure a recommender can learn.

The tests and the demo train a DLRM and check that it beats a popularity baseline on next-day
behaviour, so uniform noise is useless: this generator plants stable user tastes over categories and
brands, Zipf item popularity, position bias, repeat interest, a view -> cart -> purchase funnel and
ads whose clicks follow category affinity. It also plants a counted set of bad records, so ingest's
``read = written + quarantined + duplicates`` can be checked exactly against the returned summary.

Everything is vectorised with numpy (no per-event Python loop) and every random draw comes from a
generator seeded by ``(seed, stream, day)``, so the same seed gives byte-identical files.

Id formats: users ``u000123``, items ``i00042``, categories ``c07``, brands ``b012``, ads ``a0007``,
campaigns ``cmp003``, advertisers ``adv02``, sessions ``s20260103-0000042``,
events ``e20260103-00000042``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cache
from pathlib import Path
from typing import TextIO

import numpy as np
import pandas as pd

from recs.schemas import raw_doc

COUNTRIES = np.array(["US", "GB", "DE", "FR", "IN", "BR"], dtype=object)
_COUNTRY_P = [0.34, 0.12, 0.11, 0.09, 0.20, 0.14]
_TZ_HOURS = np.array([-5.0, 0.0, 1.0, 1.0, 5.5, -3.0])
DEVICES = np.array(["mobile", "desktop", "tablet"], dtype=object)
_DEVICE_P = [0.62, 0.30, 0.08]
SURFACES = np.array(["home", "search", "category", "product_page"], dtype=object)
HOME, SEARCH, CATEGORY, PRODUCT_PAGE = range(4)
_SURFACE_P = [0.40, 0.25, 0.20, 0.15]
_SLATE_SIZE = np.array([10, 8, 12, 6])
# Share of a slate drawn from the session's intent category (the rest is global popularity).
_P_INTENT = np.array([0.5, 0.85, 1.0, 0.8])
# Local-time traffic by hour: quiet nights, a lunch bump, an evening peak.
_HOUR_W = np.array([3, 2, 1, 1, 1, 1, 2, 4, 6, 7, 7, 8, 9, 8, 7, 7, 8, 9, 11, 13, 14, 12, 8, 5], float)

EVENT_TYPES = np.array(raw_doc("events")["event_types"]["item"] + raw_doc("events")["event_types"]["ad"])
IMP, VIEW, CLICK, CART, BUY, AD_IMP, AD_CLICK = (
    int(np.flatnonzero(name == EVENT_TYPES)[0])
    for name in ("impression", "view", "click", "add_to_cart", "purchase", "ad_impression", "ad_click")
)
_ITEM_EVENTS = np.isin(EVENT_TYPES, raw_doc("events")["event_types"]["item"])

BAD_KINDS = (
    "malformed_json",
    "missing_event_id",
    "missing_user_id",
    "unknown_event_type",
    "negative_price",
    "wrong_day",
    "missing_item_id",
)
# Id formats, shared by the events and the snapshots that must join with them.
_USER_ID, _ITEM_ID, _AD_ID = "u{:06d}", "i{:05d}", "a{:04d}"
_CATEGORY_ID, _BRAND, _CAMPAIGN_ID, _ADVERTISER_ID = "c{:02d}", "b{:03d}", "cmp{:03d}", "adv{:02d}"
_UNKNOWN_TYPES = np.array(["hover", "share", "wishlist"], dtype=object)
_RECENT = 8  # viewed items remembered per user, for repeat interest
_PENDING = 4  # carted-but-not-bought items remembered per user
# Measured events per user (active or not) on the first day: linear in sessions_per_active_day. Each
# later day is ~2.2% busier than the first per day elapsed (new users join, revisits, returning carts).
_EVENTS_BASE, _EVENTS_PER_EXTRA_SESSION, _GROWTH_PER_DAY = 4.4, 6.8, 0.022


@dataclass(frozen=True)
class DaySummary:
    """What one day's events file holds; ``lines == valid_events + quarantined + duplicates``."""

    date: date
    lines: int  # lines in the events file, bad and duplicate lines included
    valid_events: int  # distinct well-formed events: what ingest should write
    bad: dict[str, int]  # lines ingest should quarantine, per BAD_KINDS entry
    duplicates: int  # extra exact copies of valid lines (same event_id and content)
    active_users: int
    new_users: int  # users whose first day this is (cold start)
    catalog_items: int
    ads: int

    @property
    def quarantined(self) -> int:
        return sum(self.bad.values())


@dataclass(frozen=True)
class GenerationSummary:
    out_dir: Path
    users: int  # whole population, including users who join during the window
    items: int  # whole catalog, including items created during the window
    days: tuple[DaySummary, ...]

    @property
    def lines(self) -> int:
        return sum(d.lines for d in self.days)

    @property
    def valid_events(self) -> int:
        return sum(d.valid_events for d in self.days)

    @property
    def duplicates(self) -> int:
        return sum(d.duplicates for d in self.days)

    @property
    def bad(self) -> dict[str, int]:
        return {k: sum(d.bad[k] for d in self.days) for k in BAD_KINDS}

    def day(self, d: date) -> DaySummary:
        for s in self.days:
            if s.date == d:
                return s
        raise KeyError(d)


def users_for_events(n_events: int, days: int = 1, sessions_per_active_day: float = 2.0) -> int:
    """The ``users`` that yields about ``n_events`` event lines over ``days`` days (within ~10%)."""
    per_user_day = _EVENTS_BASE + _EVENTS_PER_EXTRA_SESSION * max(sessions_per_active_day - 1.0, 0.0)
    per_user_day *= 1.0 + _GROWTH_PER_DAY * (days - 1) / 2.0
    return max(1, math.ceil(n_events / (days * per_user_day)))


# ---------------------------------------------------------------- the world (fixed for a run)


@dataclass(frozen=True)
class _Catalog:
    category: np.ndarray  # per item
    brand: np.ndarray  # per item, global brand index
    base_price: np.ndarray
    popularity: np.ndarray  # Zipf weight: which items get shown
    quality: np.ndarray  # z-scored log popularity: nudges clicks
    created_day: np.ndarray  # relative to start; negative = before the window
    n_categories: int
    brand_start: np.ndarray  # first brand index of each category
    brands_per_category: np.ndarray


@dataclass(frozen=True)
class _Users:
    country: np.ndarray
    device: np.ndarray
    taste: np.ndarray  # (users, categories), rows sum to 1; stable, so history predicts tomorrow
    fav_brands: np.ndarray  # (users, up to 3), -1 = none
    p_active: np.ndarray
    session_rate: np.ndarray  # relative activity, scales sessions per active day
    join_day: np.ndarray


@dataclass(frozen=True)
class _Ads:
    item: np.ndarray  # promoted item per ad
    campaign: np.ndarray
    bid: np.ndarray
    advertiser: np.ndarray  # per campaign
    start_day: np.ndarray  # per campaign, relative to start
    end_day: np.ndarray
    budget: np.ndarray
    countries: np.ndarray  # (campaigns, countries) bool; no True = all countries
    categories: np.ndarray  # (campaigns, categories) bool; no True = all categories
    stale_status: np.ndarray  # campaigns whose status stays "active" after their end date


@dataclass
class _State:
    """What changes from day to day."""

    in_stock: np.ndarray
    price: np.ndarray
    paused: np.ndarray
    recent: np.ndarray  # (users, _RECENT) viewed items, newest last, -1 = empty
    pending: np.ndarray  # (users, _PENDING) carted items not bought yet
    status: np.ndarray = field(default_factory=lambda: np.array([], dtype=object))
    spend: np.ndarray = field(default_factory=lambda: np.array([]))
    ad_serving: np.ndarray = field(default_factory=lambda: np.array([], dtype=bool))


def _build_catalog(rng: np.random.Generator, items: int, days: int) -> _Catalog:
    n_cat = min(int(np.clip(round(items / 20), 20, 40)), items)
    new_per_day = max(1, round(items * 0.003)) if days > 1 else 0
    created = np.concatenate([-rng.integers(1, 720, items), np.repeat(np.arange(1, days), new_per_day)])
    n = len(created)
    category = rng.choice(n_cat, n, p=rng.dirichlet(np.full(n_cat, 3.0)))
    category[:n_cat] = np.arange(n_cat)  # no empty category
    per_cat = rng.integers(3, 8, n_cat)
    brand_start = np.concatenate([[0], np.cumsum(per_cat)[:-1]])
    # Brands are nested in categories and skewed: the first brand of a category is the big one.
    brand = brand_start[category] + (per_cat[category] * rng.random(n) ** 2).astype(int)
    level = np.exp(rng.normal(3.3, 0.7, n_cat))[category]
    price = np.floor(level * np.exp(rng.normal(0, 0.3, n)) * np.exp(rng.normal(0, 0.2, per_cat.sum()))[brand])
    popularity = (rng.permutation(n) + 1.0) ** -0.9
    log_pop = np.log(popularity)
    return _Catalog(
        category=category,
        brand=brand,
        base_price=price + 0.99,
        popularity=popularity,
        quality=(log_pop - log_pop.mean()) / (log_pop.std() or 1.0),
        created_day=created,
        n_categories=n_cat,
        brand_start=brand_start,
        brands_per_category=per_cat,
    )


def _build_users(rng: np.random.Generator, users: int, days: int, cat: _Catalog) -> _Users:
    join_day = np.concatenate([np.full(users, -1), np.repeat(np.arange(1, days), round(users * 0.02))])
    n, n_cat = len(join_day), cat.n_categories
    country = rng.choice(len(COUNTRIES), n, p=_COUNTRY_P)
    # Each country leans towards some categories: a context signal the model can pick up.
    country_lean = rng.dirichlet(np.full(n_cat, 0.7), len(COUNTRIES))
    cat_share = np.bincount(cat.category, minlength=n_cat) / len(cat.category)
    score = 0.5 * np.log(cat_share) + np.log(country_lean[country] + 0.02) + rng.gumbel(size=(n, n_cat))
    n_top = min(4, n_cat)
    top = np.argsort(-score, axis=1)[:, :n_top]  # Gumbel top-k: categories drawn without replacement
    k = np.minimum(rng.integers(2, 5, n), n_top)
    weights = rng.gamma(1.0, size=(n, n_top)) * (np.arange(n_top) < k[:, None])
    taste = np.full((n, n_cat), 0.1 / n_cat)
    np.put_along_axis(taste, top, 0.9 * weights / weights.sum(1, keepdims=True) + 0.1 / n_cat, axis=1)
    fav_cat = top[:, :3]
    shape = fav_cat.shape
    fav = cat.brand_start[fav_cat] + (cat.brands_per_category[fav_cat] * rng.random(shape) ** 2).astype(int)
    fav_brands = np.where((rng.random(shape) < 0.5) & (np.arange(shape[1]) < k[:, None]), fav, -1)
    activity = rng.lognormal(0.0, 1.0, n)
    return _Users(
        country=country,
        device=rng.choice(len(DEVICES), n, p=_DEVICE_P),
        taste=taste,
        fav_brands=fav_brands,
        p_active=1.0 - np.exp(-0.45 * activity),
        session_rate=np.clip(activity / activity.mean(), 0.2, 5.0),
        join_day=join_day,
    )


def _build_ads(rng: np.random.Generator, ads: int, items: int, days: int, cat: _Catalog) -> _Ads:
    n_camp = max(1, ads // 3)
    campaign = rng.permutation(np.arange(ads) % n_camp)
    pop = cat.popularity[:items] ** 0.5
    item = rng.choice(items, ads, replace=ads > items, p=pop / pop.sum())
    scheduled = rng.random(n_camp) < 0.25  # starts inside the window
    start = np.where(scheduled, rng.integers(1, max(2, days // 2 + 1), n_camp), -rng.integers(0, 30, n_camp))
    short = rng.random(n_camp) < 0.3  # ends inside the window
    end = start + np.where(short, rng.integers(1, max(2, days // 2 + 1), n_camp), days + 30)
    countries = (rng.random((n_camp, len(COUNTRIES))) < 0.25) & (rng.random(n_camp) < 0.3)[:, None]
    categories = np.zeros((n_camp, cat.n_categories), bool)
    targeted = rng.random(n_camp) < 0.25
    categories[campaign[targeted[campaign]], cat.category[item[targeted[campaign]]]] = True
    return _Ads(
        item=item,
        campaign=campaign,
        bid=np.maximum(0.05, np.round(rng.lognormal(np.log(0.6), 0.5, ads), 2)),
        advertiser=rng.integers(0, max(1, n_camp // 2), n_camp),
        start_day=start,
        end_day=end,
        budget=rng.choice([50.0, 100.0, 200.0, 500.0, 1000.0], n_camp),
        countries=countries,
        categories=categories,
        stale_status=rng.random(n_camp) < 0.4,
    )


@dataclass(frozen=True)
class _World:
    catalog: _Catalog
    users: _Users
    ads: _Ads


# ---------------------------------------------------------------- sampling helpers


class _GroupSampler:
    """Draws items with probability proportional to weight within a requested group.

    All groups share one sorted key array (group id + cumulative share inside the group), so a
    million draws over any mix of groups are a single ``searchsorted``.
    """

    def __init__(self, groups: np.ndarray, weight: np.ndarray, n_groups: int) -> None:
        self.order = np.argsort(groups, kind="stable")
        g, w = groups[self.order], weight[self.order]
        total = np.bincount(g, w, n_groups)
        before = np.concatenate([[0.0], np.cumsum(total)[:-1]])
        self.groups = g
        self.key = g + (np.cumsum(w) - before[g]) / np.where(total > 0, total, 1.0)[g]

    def draw(self, rng: np.random.Generator, group: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.key, group + rng.random(len(group)), side="right")
        last = np.searchsorted(self.groups, group, side="right") - 1  # guards float round-off at 1.0
        return self.order[np.minimum(pos, last)]


def _draw_rows(rng: np.random.Generator, weights: np.ndarray) -> np.ndarray:
    """One column per row of a weight matrix, proportional to weight; -1 where a row is all zero."""
    if weights.shape[1] == 0:
        return np.full(len(weights), -1)
    cum = np.cumsum(weights, axis=1)
    total = cum[:, -1]
    idx = (cum <= (rng.random(len(weights)) * total)[:, None]).sum(1)
    return np.where(total > 0, np.minimum(idx, weights.shape[1] - 1), -1)


def _rank_within(sorted_groups: np.ndarray) -> np.ndarray:
    """1-based position of each element within its run of equal (sorted) group values."""
    return np.arange(len(sorted_groups)) - np.searchsorted(sorted_groups, sorted_groups) + 1


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _push(memory: np.ndarray, users: np.ndarray, items: np.ndarray) -> None:
    """Append items (in time order) to each user's fixed-size memory, newest in the last column."""
    width = memory.shape[1]
    old_u, old_c = np.nonzero(memory >= 0)
    u = np.concatenate([old_u, users])
    it = np.concatenate([memory[old_u, old_c], items])
    order = np.argsort(u, kind="stable")  # old entries first, then today's in time order
    u, it = u[order], it[order]
    from_end = np.searchsorted(u, u, side="right") - np.arange(len(u)) - 1
    keep = from_end < width
    memory[:] = -1
    memory[u[keep], width - 1 - from_end[keep]] = it[keep]


# ---------------------------------------------------------------- one day


def _advance(rng: np.random.Generator, d: int, w: _World, st: _State) -> None:
    """Move stock, prices and campaign states to day ``d`` (day 0 keeps the initial state)."""
    if d > 0:
        n = len(st.in_stock)
        flip = rng.random(n) < np.where(st.in_stock, 0.02, 0.3)
        st.in_stock = np.where(flip, ~st.in_stock, st.in_stock) | (w.catalog.created_day == d)
        repriced = rng.random(n) < 0.02
        st.price = np.where(repriced, np.floor(st.price * rng.uniform(0.85, 1.1, n)) + 0.99, st.price)
        st.paused = st.paused ^ (rng.random(len(st.paused)) < np.where(st.paused, 0.3, 0.06))
    ads = w.ads
    in_dates = (ads.start_day <= d) & (d <= ads.end_day)
    ended = (d > ads.end_day) & ~ads.stale_status
    st.status = np.where(ended, "ended", np.where(st.paused, "paused", "active")).astype(object)
    serving = (st.status == "active") & in_dates
    exhausted = rng.random(len(serving)) < 0.12
    spend = ads.budget * np.where(
        exhausted, rng.uniform(1.0, 1.03, len(serving)), rng.beta(2, 3, len(serving))
    )
    st.spend = np.where(serving, np.round(spend, 2), 0.0)
    st.ad_serving = serving[ads.campaign]


def _block(**cols: np.ndarray | int) -> dict[str, np.ndarray]:
    """A block of events as integer-coded columns; scalars are broadcast to the block's length."""
    n = max(len(v) for v in cols.values() if isinstance(v, np.ndarray))
    return {k: np.broadcast_to(v, n) for k, v in cols.items()}


def _affinity(w: _World, user: np.ndarray, item: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log of the user's taste for the item's category relative to uniform, favourite-brand match)."""
    taste = w.users.taste[user, w.catalog.category[item]] * w.catalog.n_categories
    return np.log1p(taste), (w.users.fav_brands[user] == w.catalog.brand[item][:, None]).any(1)


@dataclass(frozen=True)
class _Sessions:
    user: np.ndarray
    start: np.ndarray  # second of the day
    surface: np.ndarray
    intent: np.ndarray  # the category the session is about
    active: np.ndarray  # users who show up today
    first: np.ndarray  # per active user, their first session


@dataclass(frozen=True)
class _Views:
    session: np.ndarray
    item: np.ndarray
    t: np.ndarray
    revisit: np.ndarray  # a return to an item viewed on an earlier day


def _start_sessions(rng: np.random.Generator, d: int, w: _World, sessions_per_active_day: float) -> _Sessions:
    """Who shows up (new users always do), how often, when (local-time peaks) and looking for what."""
    usr = w.users
    new = usr.join_day == d
    active = np.flatnonzero(new | ((usr.join_day < d) & (rng.random(len(new)) < usr.p_active)))
    n_sess = 1 + rng.poisson(max(sessions_per_active_day - 1.0, 0.0) * usr.session_rate[active])
    user = np.repeat(active, n_sess)
    n = len(user)
    local = rng.choice(24, n, p=_HOUR_W / _HOUR_W.sum()) * 3600 + rng.integers(0, 3600, n)
    return _Sessions(
        user=user,
        start=(local - (_TZ_HOURS[usr.country[user]] * 3600).astype(int)) % 86400,
        surface=rng.choice(len(SURFACES), n, p=_SURFACE_P),
        intent=_draw_rows(rng, usr.taste[user]),
        active=active,
        first=np.cumsum(n_sess) - n_sess,
    )


def _organic(
    rng: np.random.Generator, d: int, w: _World, st: _State, s: _Sessions
) -> tuple[list[dict[str, np.ndarray]], _Views]:
    """Slates of impressions and the clicks on them: affinity x item quality x position bias."""
    cat = w.catalog
    weight = cat.popularity * (cat.created_day <= d) * np.where(st.in_stock, 1.0, 1e-9)
    by_category = _GroupSampler(cat.category, weight, cat.n_categories)
    overall = _GroupSampler(np.zeros(len(weight), int), weight, 1)
    # Mostly the session's intent category, partly global bestsellers; each item shown once. Twice
    # the slate size is drawn so that dropping repeats still fills most slates.
    slot_s = np.repeat(np.arange(len(s.user)), 2 * _SLATE_SIZE[s.surface])
    intent = rng.random(len(slot_s)) < _P_INTENT[s.surface[slot_s]]
    item = np.empty(len(slot_s), int)
    item[intent] = by_category.draw(rng, s.intent[slot_s[intent]])
    item[~intent] = overall.draw(rng, np.zeros((~intent).sum(), int))
    keep = np.sort(np.unique(slot_s * len(weight) + item, return_index=True)[1])
    slot_s, item = slot_s[keep], item[keep]
    pos = _rank_within(slot_s)
    shown = pos <= _SLATE_SIZE[s.surface[slot_s]]
    slot_s, item, pos = slot_s[shown], item[shown], pos[shown]

    aff, brand = _affinity(w, s.user[slot_s], item)
    p_click = _sigmoid(-4.6 + 1.3 * aff + 0.8 * brand + 0.35 * cat.quality[item]) * pos**-0.75
    hit = rng.random(len(item)) < p_click
    surface = s.surface[slot_s]
    imp_t = s.start[slot_s] + 4 * ((pos - 1) // 4)  # the slate loads four at a time as you scroll
    click_t = s.start[slot_s[hit]] + 2 + 3 * (pos[hit] - 1) + rng.integers(0, 4, hit.sum())
    blocks = [
        _block(session=slot_s, etype=IMP, item=item, surface=surface, position=pos, t=imp_t),
        _block(
            session=slot_s[hit],
            etype=CLICK,
            item=item[hit],
            surface=surface[hit],
            position=pos[hit],
            t=click_t,
        ),
    ]
    return blocks, _Views(slot_s[hit], item[hit], click_t + 1, np.zeros(hit.sum(), bool))


def _ads_shown(
    rng: np.random.Generator, w: _World, st: _State, s: _Sessions
) -> tuple[list[dict[str, np.ndarray]], _Views]:
    """Ad slots on home and search: an ad serving today and targeting the user, picked by bid x
    affinity; clicks follow the user's taste for the promoted item's category."""
    ads, n_ads = w.ads, len(w.ads.item)
    sess = np.flatnonzero(np.isin(s.surface, [HOME, SEARCH]) & (rng.random(len(s.user)) < 0.6))
    if n_ads == 0 or len(sess) == 0:
        return [], _Views(*(np.zeros(0, int),) * 3, np.zeros(0, bool))
    sess = np.repeat(sess, 1 + (rng.random(len(sess)) < 0.5))
    user = s.user[sess]
    taste = w.users.taste[user]
    camp = ads.campaign
    country_ok = ~ads.countries.any(1)[camp] | ads.countries[camp][:, w.users.country[user]].T
    category_ok = ~ads.categories.any(1)[camp] | (taste @ ads.categories[camp].T >= 0.1)
    weight = ads.bid * (0.02 + taste[:, w.catalog.category[ads.item]]) * st.ad_serving
    ad = _draw_rows(rng, weight * country_ok * category_ok)
    sess, ad = sess[ad >= 0], ad[ad >= 0]
    once = np.sort(np.unique(sess * n_ads + ad, return_index=True)[1])  # an ad once per session
    sess, ad = sess[once], ad[once]
    slot = _rank_within(sess)
    item = ads.item[ad]
    aff, _ = _affinity(w, s.user[sess], item)
    hit = rng.random(len(ad)) < _sigmoid(-5.2 + 1.3 * aff) * slot**-0.75
    surface = s.surface[sess]
    t = s.start[sess] + 1 + 6 * (slot - 1)
    click_t = t[hit] + rng.integers(2, 12, hit.sum())
    blocks = [
        _block(session=sess, etype=AD_IMP, item=item, ad=ad, surface=surface, position=slot, t=t),
        _block(
            session=sess[hit],
            etype=AD_CLICK,
            item=item[hit],
            ad=ad[hit],
            surface=surface[hit],
            position=slot[hit],
            t=click_t,
        ),
    ]
    lands = rng.random(hit.sum()) < 0.9  # most ad clicks land on the promoted item's page
    return blocks, _Views(sess[hit][lands], item[hit][lands], click_t[lands] + 1, np.zeros(lands.sum(), bool))


def _revisits(rng: np.random.Generator, st: _State, s: _Sessions) -> _Views:
    """Repeat interest: come back to an item viewed on an earlier day, recent ones more likely."""
    recent = st.recent[s.active]
    back = (recent[:, -1] >= 0) & (rng.random(len(s.active)) < 0.4)
    filled = (recent[back] >= 0).sum(1)
    col = _RECENT - 1 - (filled * rng.random(len(filled)) ** 2).astype(int)
    sess = s.first[back]
    return _Views(
        sess, recent[back, col], s.start[sess] + rng.integers(0, 600, len(col)), np.ones(len(col), bool)
    )


def _cart_returns(rng: np.random.Generator, st: _State, s: _Sessions) -> dict[str, np.ndarray]:
    """Carts left on an earlier day get bought now and then, if the item is in stock."""
    pending = st.pending[s.active]
    col = np.argmax((pending >= 0) * rng.random(pending.shape), axis=1)
    item = pending[np.arange(len(s.active)), col]
    buys = (item >= 0) & (rng.random(len(s.active)) < 0.35)
    buys &= st.in_stock[np.maximum(item, 0)]
    st.pending[s.active[buys], col[buys]] = -1
    sess = s.first[buys]
    t = s.start[sess] + rng.integers(30, 900, buys.sum())
    return _block(session=sess, etype=BUY, item=item[buys], surface=PRODUCT_PAGE, t=t)


def _funnel(
    rng: np.random.Generator, w: _World, st: _State, s: _Sessions, v: _Views
) -> list[dict[str, np.ndarray]]:
    """Product views -> add_to_cart (affinity, brand, revisits) -> purchase now or on a later day."""
    user = s.user[v.session]
    aff, brand = _affinity(w, user, v.item)
    carted = rng.random(len(v.item)) < _sigmoid(-3.8 + 0.9 * aff + 0.7 * brand + 1.0 * v.revisit)
    carted &= st.in_stock[v.item]
    cart_sess, cart_item, cart_user = v.session[carted], v.item[carted], user[carted]
    cart_t = v.t[carted] + rng.integers(5, 120, carted.sum())
    bought = rng.random(carted.sum()) < 0.45
    buy_t = cart_t[bought] + rng.integers(20, 600, bought.sum())
    by_time = np.argsort(v.t, kind="stable")
    _push(st.recent, user[by_time], v.item[by_time])
    later = np.flatnonzero(~bought & (rng.random(len(bought)) < 0.6))
    later = later[np.argsort(cart_t[later], kind="stable")]
    _push(st.pending, cart_user[later], cart_item[later])
    return [
        _block(session=v.session, etype=VIEW, item=v.item, surface=PRODUCT_PAGE, t=v.t),
        _block(session=cart_sess, etype=CART, item=cart_item, surface=PRODUCT_PAGE, t=cart_t),
        _block(session=cart_sess[bought], etype=BUY, item=cart_item[bought], surface=PRODUCT_PAGE, t=buy_t),
    ]


def _simulate_day(
    rng: np.random.Generator, d: int, w: _World, st: _State, sessions_per_active_day: float
) -> tuple[dict[str, np.ndarray], int, int]:
    """One day of behaviour as integer-coded columns sorted by time, plus (active users, new users)."""
    s = _start_sessions(rng, d, w, sessions_per_active_day)
    organic, clicked = _organic(rng, d, w, st, s)
    ad_blocks, ad_landed = _ads_shown(rng, w, st, s)
    returns = _cart_returns(rng, st, s)
    views = [clicked, ad_landed, _revisits(rng, st, s)]
    v = _Views(*(np.concatenate([getattr(x, f) for x in views]) for f in ("session", "item", "t", "revisit")))
    blocks = [*organic, *ad_blocks, returns, *_funnel(rng, w, st, s, v)]
    absent = {"item": -1, "ad": -1, "position": 0}
    ev = {
        k: np.concatenate([b.get(k, np.broadcast_to(absent.get(k, -1), len(b["t"]))) for b in blocks])
        for k in ("session", "etype", "item", "ad", "surface", "position", "t")
    }
    ev["t"] = np.minimum(ev["t"], 86399)  # late sessions end at midnight rather than spill over
    order = np.argsort(ev["t"], kind="stable")
    ev = {k: v[order] for k, v in ev.items()}
    ev["user"] = s.user[ev["session"]]
    priced = np.isin(ev["etype"], [VIEW, CART, BUY])
    ev["price"] = np.where(priced, st.price[np.maximum(ev["item"], 0)], np.nan)
    return ev, len(s.active), int((w.users.join_day == d).sum())


# ---------------------------------------------------------------- serialisation
#
# Events are rendered by hand: each column becomes an array of ready-made JSON pieces
# ('"user_id":"u000123",') looked up from small per-value tables, and a line is their concatenation.
# That is several times faster than DataFrame.to_json at 10^6 rows, streams in chunks (bounded
# memory), and lets a bad record leave a key out entirely.

_EVENT_COLUMNS = [c["name"] for c in raw_doc("events")["columns"]]
_CHUNK = 200_000


def _sep(key: str) -> str:
    return "" if key == _EVENT_COLUMNS[-1] else ","


def _fragments(key: str, values: Iterable[object]) -> np.ndarray:
    """JSON pieces '"key":value,' per value (None -> null; no comma after the schema's last column)."""
    return np.array([f'"{key}":{json.dumps(v)}{_sep(key)}' for v in values], dtype=object)


def _id_fragments(key: str, prefix: str, width: int, n: int) -> np.ndarray:
    """``_fragments`` for ``n`` generated ids: plain ASCII, so json.dumps (slow at 10^6) is not needed."""
    head, tail = f'"{key}":"{prefix}', f'"{_sep(key)}'
    return np.array([f"{head}{k:0{width}d}{tail}" for k in range(n)], dtype=object)


@cache
def _time_of_day() -> np.ndarray:
    """'THH:MM:SSZ' for every second of a day, built once: a day's timestamps are its date + these."""
    stamps = [f"T{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}Z" for s in range(86400)]
    return np.array(stamps, dtype=object)


def _time_fragments(day: date) -> np.ndarray:
    """``_fragments("event_time", ...)`` for every second of ``day`` (plain ASCII: no json.dumps)."""
    return f'"event_time":"{day.isoformat()}' + _time_of_day() + f'"{_sep("event_time")}'


def _event_fragment_tables(w: _World) -> dict[str, np.ndarray]:
    """Per-value fragments for the columns whose values come from fixed id spaces (-1 -> null)."""
    n_users, n_items, n_ads = len(w.users.join_day), len(w.catalog.category), len(w.ads.item)
    return {
        "user_id": _fragments("user_id", [_USER_ID.format(k) for k in range(n_users)]),
        "item_id": _fragments("item_id", [*(_ITEM_ID.format(k) for k in range(n_items)), None]),
        "ad_id": _fragments("ad_id", [*(_AD_ID.format(k) for k in range(n_ads)), None]),
        "event_type": _fragments("event_type", list(EVENT_TYPES)),
        "surface": _fragments("surface", list(SURFACES)),
        "position": _fragments("position", [None, *range(1, int(_SLATE_SIZE.max()) + 1)]),
        "device": _fragments("device", list(DEVICES)),
        "country": _fragments("country", list(COUNTRIES)),
    }


def _pick_bad_rows(
    rng: np.random.Generator, ev: dict[str, np.ndarray], bad_rate: float
) -> dict[str, np.ndarray]:
    """Disjoint row sets per bad kind (plus "duplicate" sources); each bad row has exactly one defect."""
    n = len(ev["t"])
    per_kind = round(bad_rate * n / (len(BAD_KINDS) + 1))
    if bad_rate > 0 and n >= 100:  # enough of every kind for ingest tests to see each one
        per_kind = max(per_kind, 2 if n >= 1000 else 1)
    eligible = {"negative_price": ev["price"] > 0, "missing_item_id": _ITEM_EVENTS[ev["etype"]]}
    pool = rng.permutation(n)
    used = np.zeros(n, bool)
    rows = {}
    for kind in (*BAD_KINDS, "duplicate"):
        ok = eligible.get(kind, np.ones(n, bool))[pool] & ~used[pool]
        rows[kind] = np.sort(pool[ok][:per_kind])
        used[rows[kind]] = True
    return rows


def _write_events(
    path: Path,
    rng: np.random.Generator,
    ev: dict[str, np.ndarray],
    day: date,
    tables: dict[str, np.ndarray],
    w: _World,
    bad_rate: float,
) -> tuple[dict[str, int], int]:
    """Write one day's events with bad records injected; returns (bad lines per kind, duplicates)."""
    n = len(ev["t"])
    ymd = day.strftime("%Y%m%d")
    bad = _pick_bad_rows(rng, ev, bad_rate)
    price = ev["price"].copy()
    price[bad["negative_price"]] *= -1.0
    price_values, price_index = np.unique(price, return_inverse=True)
    n_sessions = int(ev["session"].max()) + 1 if n else 0
    cols = {
        "event_id": _id_fragments("event_id", f"e{ymd}-", 8, n),
        "event_time": _time_fragments(day)[ev["t"]],
        "user_id": tables["user_id"][ev["user"]],
        "session_id": _id_fragments("session_id", f"s{ymd}-", 7, n_sessions)[ev["session"]],
        "event_type": tables["event_type"][ev["etype"]],
        "item_id": tables["item_id"][ev["item"]],
        "ad_id": tables["ad_id"][ev["ad"]],
        "surface": tables["surface"][ev["surface"]],
        "position": tables["position"][ev["position"]],
        "device": tables["device"][w.users.device[ev["user"]]],
        "country": tables["country"][w.users.country[ev["user"]]],
        "price": _fragments("price", [None if np.isnan(x) else float(x) for x in price_values])[price_index],
    }
    if sorted(cols) != sorted(_EVENT_COLUMNS):
        raise RuntimeError("schemas/raw/events.json changed: update the sample data generator")
    cols["event_id"][bad["missing_event_id"]] = ""  # the key is left out altogether
    cols["user_id"][bad["missing_user_id"]] = _fragments("user_id", [None])[0]
    cols["item_id"][bad["missing_item_id"]] = tables["item_id"][-1]
    odd = rng.choice(_UNKNOWN_TYPES, len(bad["unknown_event_type"]))
    cols["event_type"][bad["unknown_event_type"]] = _fragments("event_type", odd)
    late = bad["wrong_day"]
    cols["event_time"][late] = _time_fragments(day - timedelta(days=3))[ev["t"][late]]
    ordered = [cols[c] for c in _EVENT_COLUMNS]
    broken = np.zeros(n, bool)
    broken[bad["malformed_json"]] = True
    # Retried deliveries: exact copies of a line a few lines after the original.
    dup = bad["duplicate"]
    key = np.concatenate([np.arange(n, dtype=float), dup + rng.integers(1, 20, len(dup)) + 0.5])
    order = np.concatenate([np.arange(n), dup])[np.argsort(key, kind="stable")]
    with _atomic_open(path) as f:
        for lo in range(0, len(order), _CHUNK):
            rows = order[lo : lo + _CHUNK]
            lines = ["{" + "".join(parts) + "}" for parts in zip(*(c[rows] for c in ordered), strict=True)]
            for i in np.flatnonzero(broken[rows]):  # a writer died mid-line
                lines[i] = lines[i][: len(lines[i]) // 2]
            f.write("\n".join(lines) + "\n")
    return {k: len(bad[k]) for k in BAD_KINDS}, len(dup)


def _day_string(start: date, days: np.ndarray) -> list[str]:
    return [(start + timedelta(days=int(x))).isoformat() for x in days]


def _catalog_frame(w: _World, st: _State, d: int, start: date) -> pd.DataFrame:
    cat = w.catalog
    live = np.flatnonzero(cat.created_day <= d)
    return pd.DataFrame(
        {
            "item_id": [_ITEM_ID.format(k) for k in live],
            "category_id": [_CATEGORY_ID.format(k) for k in cat.category[live]],
            "brand": [_BRAND.format(k) for k in cat.brand[live]],
            "price": st.price[live],
            "in_stock": st.in_stock[live],
            "created_date": _day_string(start, cat.created_day[live]),
        }
    )


def _ads_frame(w: _World, st: _State, start: date) -> pd.DataFrame:
    ads, camp = w.ads, w.ads.campaign
    countries = [list(COUNTRIES[row]) for row in ads.countries]
    categories = [[_CATEGORY_ID.format(k) for k in np.flatnonzero(row)] for row in ads.categories]
    return pd.DataFrame(
        {
            "ad_id": [_AD_ID.format(k) for k in range(len(camp))],
            "campaign_id": [_CAMPAIGN_ID.format(c) for c in camp],
            "advertiser_id": [_ADVERTISER_ID.format(a) for a in ads.advertiser[camp]],
            "item_id": [_ITEM_ID.format(k) for k in ads.item],
            "bid": ads.bid,
            "daily_budget": ads.budget[camp],
            "spend_today": st.spend[camp],
            "start_date": _day_string(start, ads.start_day[camp]),
            "end_date": _day_string(start, ads.end_day[camp]),
            "status": st.status[camp],
            "target_countries": [countries[c] for c in camp],
            "target_categories": [categories[c] for c in camp],
        }
    )


def _write_records(path: Path, df: pd.DataFrame, feed: str) -> None:
    """Small snapshots go through pandas, columns in the schema's order."""
    names = [c["name"] for c in raw_doc(feed)["columns"]]
    with _atomic_open(path) as f:
        f.write(df[names].to_json(orient="records", lines=True) if len(df) else "")


@contextmanager
def _atomic_open(path: Path) -> Iterator[TextIO]:
    """Write via a hidden temp file and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        yield f
    os.replace(tmp, path)


# ---------------------------------------------------------------- entry point


def generate(
    out_dir: str | Path,
    *,
    users: int = 2000,
    items: int = 500,
    days: int = 14,
    start: date = date(2026, 1, 1),
    seed: int = 7,
    sessions_per_active_day: float = 2.0,
    bad_rate: float = 0.002,
    ads: int = 60,
) -> GenerationSummary:
    """Write ``raw/{events,catalog,ads}/dt=YYYY-MM-DD/part-00000.jsonl`` under ``out_dir``.

    ``users`` and ``items`` size the population and catalog on the first day; about 2% of ``users``
    join on each later day and about 0.3% of ``items`` are created on each later day.
    ``sessions_per_active_day`` is the mean number of sessions of a user who shows up (heavy users
    have more). ``bad_rate`` is the share of event lines that are bad or duplicated (0 = clean).
    Use :func:`users_for_events` to size a run to a number of events.
    """
    if users < 1 or items < 1 or days < 1 or ads < 0:
        raise ValueError("users, items and days must be >= 1 and ads >= 0")
    rng = np.random.default_rng([seed, 0])
    catalog = _build_catalog(rng, items, days)
    world = _World(
        catalog, _build_users(rng, users, days, catalog), _build_ads(rng, ads, items, days, catalog)
    )
    n_users, n_items = len(world.users.join_day), len(catalog.category)
    state = _State(
        in_stock=rng.random(n_items) < 0.95,
        price=catalog.base_price.copy(),
        paused=rng.random(len(world.ads.budget)) < 0.12,
        recent=np.full((n_users, _RECENT), -1),
        pending=np.full((n_users, _PENDING), -1),
    )
    tables = _event_fragment_tables(world)
    root = Path(out_dir) / "raw"
    summaries = []
    for d in range(days):
        day = start + timedelta(days=d)
        part = f"dt={day.isoformat()}/part-00000.jsonl"
        rng_day = np.random.default_rng([seed, 1, d])
        _advance(rng_day, d, world, state)
        catalog_frame = _catalog_frame(world, state, d, start)
        _write_records(root / "catalog" / part, catalog_frame, "catalog")
        _write_records(root / "ads" / part, _ads_frame(world, state, start), "ads")
        ev, n_active, n_new = _simulate_day(rng_day, d, world, state, sessions_per_active_day)
        bad_rng = np.random.default_rng([seed, 2, d])
        bad, dups = _write_events(root / "events" / part, bad_rng, ev, day, tables, world, bad_rate)
        n = len(ev["t"])
        summaries.append(
            DaySummary(
                date=day,
                lines=n + dups,
                valid_events=n - sum(bad.values()),
                bad=bad,
                duplicates=dups,
                active_users=n_active,
                new_users=n_new,
                catalog_items=len(catalog_frame),
                ads=ads,
            )
        )
    return GenerationSummary(out_dir=Path(out_dir), users=n_users, items=n_items, days=tuple(summaries))
