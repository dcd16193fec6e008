"""Sessions of the synthetic world: searches, organic watches and pages of impressions.

Sessions advance together (up to SESSION_CHUNK at a time), one step per loop iteration: the
loops are over chunks and steps, never over events. A step is one of:

- a search: a query on a topic of the user's, then (a few seconds later) a watch of that topic;
- a page: page_size_min..max items shown, a share (page_relevant_share) drawn from the user's
  true interests and the rest uploaded items at random; each is clicked independently, and every
  click is a watch, in page order;
- an organic watch: at the session start from the user's interests; later the next episode of
  the previous item's channel, or the same topic, or a neighbouring topic (Markov drift, so the
  order of the history matters, paper §3.4), or again the user's interests.

Afterwards the sessions of one user are pushed apart so they never overlap, and everything at or
after the end of the window is cut.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ytdnn.data import synthetic_behaviour as S
from ytdnn.data.synthetic_config import WorldConfig
from ytdnn.data.synthetic_entities import Truth
from ytdnn.data.synthetic_sampler import SegmentSampler

WATCH_GAP_S = 20.0  # mean pause after a watch, on top of 1 s
SEARCH_DELAY_S = (3.0, 30.0)  # from a query to the watch it leads to
BROWSE_S = (2.0, 10.0)  # from a page being shown to the first click
NEIGHBOUR_SHARPNESS = 4.0  # topic drift prefers topics with close centres
SESSION_CHUNK = 1 << 16  # sessions simulated together (part of the world's definition)
WATCH_COLUMNS = ("session", "item", "time", "watch_time", "source", "page")
SEARCH_COLUMNS = ("session", "time", "topic")
IMPRESSION_COLUMNS = ("session", "item", "time", "clicked", "watch_time", "page")


@dataclass
class Events:
    """Event arrays in generation order; ``session`` indexes the session arrays."""

    session_user: np.ndarray  # [S]
    watch: dict[str, np.ndarray]  # session, item, time, watch_time, source, page
    search: dict[str, np.ndarray]  # session, time, topic
    impression: dict[str, np.ndarray]  # session, item, time, clicked, watch_time, page


SOURCES = ("organic", "search", "series", "page")  # World.watch_source codes


class _Buffer:
    def __init__(self):
        self.parts: dict[str, list[np.ndarray]] = {}

    def add(self, **columns: np.ndarray) -> None:
        for name, values in columns.items():
            self.parts.setdefault(name, []).append(np.asarray(values))

    def arrays(self, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        return {
            n: np.concatenate(self.parts[n]) if n in self.parts else np.zeros(0, np.int64)
            for n in names
        }


class _Simulation:
    def __init__(
        self, cfg: WorldConfig, truth: Truth, sampler: SegmentSampler, rng: np.random.Generator
    ):
        self.cfg, self.truth, self.sampler, self.rng = cfg, truth, sampler, rng
        self.watches, self.searches, self.impressions = _Buffer(), _Buffer(), _Buffer()
        self.num_pages = 0
        c = truth.topic_centres
        w = np.exp(NEIGHBOUR_SHARPNESS * (c @ c.T))
        np.fill_diagonal(w, 0.0)
        self.neighbour_cdf = np.cumsum(w / w.sum(axis=1, keepdims=True), axis=1)  # [K, K]

    def watch(self, rows, users, items, t, source, page=None):
        """Record watches (rows: session ids); returns their watch times."""
        wt = S.draw_watch_time(self.truth, self.cfg, users, items, self.rng)
        page = np.full(len(rows), -1, np.int64) if page is None else page
        self.watches.add(
            session=rows,
            item=items,
            time=t,
            watch_time=wt,
            source=np.full(len(rows), SOURCES.index(source), np.int8),
            page=page,
        )
        return wt

    def gap(self, n: int) -> np.ndarray:
        return 1.0 + self.rng.exponential(WATCH_GAP_S, size=n)

    def step(self, rows, users, t, prev, p_search, p_page):
        """One step of the sessions ``rows``: returns their new previous item and time.

        Each kind of step plans the item draws it needs; one ``sample_items`` call serves them
        all (fewer, larger numpy calls), then each kind finishes with its items.
        """
        r = self.rng.random(len(rows))
        kinds = np.where(r < p_search, 0, np.where(r < p_search + p_page, 1, 2))
        plans = []
        for kind, plan in enumerate((self.plan_search, self.plan_page, self.plan_organic)):
            mask = kinds == kind
            plans.append((mask, plan(rows[mask], users[mask], t[mask], prev[mask])))
        requests = [p["request"] for _, p in plans]
        joined = {k: np.concatenate([q[k] for q in requests]) for k in requests[0]}
        items = S.sample_items(self.truth, self.cfg, self.sampler, rng=self.rng, **joined)
        bounds = np.cumsum([0] + [len(q["users"]) for q in requests])
        new_prev, new_t = prev.copy(), t.copy()
        for (mask, plan), a, b in zip(plans, bounds[:-1], bounds[1:]):
            new_prev[mask], new_t[mask] = plan["finish"](items[a:b])
        return new_prev, new_t

    def plan_search(self, rows, users, t, prev):
        topic = S.draw_user_topics(self.truth, self.cfg, users, self.rng)
        self.searches.add(session=rows, time=t.copy(), topic=topic)
        t = t + self.rng.uniform(*SEARCH_DELAY_S, size=len(rows))
        other = S.draw_user_topics(self.truth, self.cfg, users, self.rng)
        topic = np.where(self.rng.random(len(rows)) < self.cfg.search_on_topic, topic, other)

        def finish(items):
            wt = self.watch(rows, users, items, t, "search")
            return items, t + wt + self.gap(len(rows))

        return {
            "request": {"users": users, "t": t, "topics": topic, "exclude": prev},
            "finish": finish,
        }

    def plan_organic(self, rows, users, t, prev):
        cfg, truth = self.cfg, self.truth
        r = self.rng.random(len(rows))
        nxt = truth.item_next_in_channel[np.maximum(prev, 0)]
        series = (prev >= 0) & (r < cfg.series_rate) & (nxt >= 0)
        series &= truth.item_upload_time[np.maximum(nxt, 0)] <= t
        same = (prev >= 0) & ~series & (r < cfg.series_rate + cfg.same_topic_rate)
        near = (prev >= 0) & ~series & ~same
        near &= r < cfg.series_rate + cfg.same_topic_rate + cfg.neighbour_topic_rate
        prev_topic = truth.item_topic[np.maximum(prev, 0)]
        topic = np.where(same, prev_topic, -1)  # -1: from theta
        cdf = self.neighbour_cdf[prev_topic[near]]  # [n_near, K]
        topic[near] = np.minimum(
            (self.rng.random(len(cdf))[:, None] > cdf).sum(axis=1), cfg.num_topics - 1
        )
        draw = ~series  # the next episode needs no draw

        def finish(drawn):
            items = nxt.copy()
            items[draw] = drawn
            wt = np.empty(len(rows))
            for source, mask in (("organic", draw), ("series", series)):
                wt[mask] = self.watch(rows[mask], users[mask], items[mask], t[mask], source)
            return items, t + wt + self.gap(len(rows))

        request = {"users": users[draw], "t": t[draw], "topics": topic[draw], "exclude": prev[draw]}
        return {"request": request, "finish": finish}

    def plan_page(self, rows, users, t, prev):
        """A page per row, half its slots from the user's interests, half uploaded at random."""
        cfg, rng = self.cfg, self.rng
        sizes = rng.integers(cfg.page_size_min, cfg.page_size_max + 1, size=len(rows))
        slot = np.repeat(np.arange(len(rows)), sizes)  # [P] page row of each slot
        relevant = rng.random(len(slot)) < cfg.page_relevant_share
        items = self.sampler.sample_uploaded(t[slot], rng)
        r_users, r_t = users[slot[relevant]], t[slot[relevant]]

        def finish(drawn):
            items[relevant] = drawn
            return self.show_page(rows, users, t, prev, *_first_occurrences(slot, items))

        none = np.full(len(r_t), -1, np.int64)
        request = {"users": r_users, "t": r_t, "topics": none, "exclude": none}
        return {"request": request, "finish": finish}

    def show_page(self, rows, users, t, prev, slot, items):
        """Clicks on the page's slots; clicked items become watches in page order."""
        cfg, rng = self.cfg, self.rng
        logit = S.click_logit(self.truth, cfg, self.sampler, users[slot], items, t[slot])
        clicked = rng.random(len(slot)) < 1.0 / (1.0 + np.exp(-logit))
        start = t + rng.uniform(*BROWSE_S, size=len(rows))
        c_rows = slot[clicked]  # sorted: slots are in page order
        c_wt = S.draw_watch_time(self.truth, cfg, users[c_rows], items[clicked], rng)
        spent = c_wt + self.gap(len(c_rows))
        before = np.cumsum(spent) - spent  # time spent on earlier clicks of the same page
        first = np.searchsorted(c_rows, np.arange(len(rows)))
        if len(c_rows):
            before -= before[np.minimum(first, len(c_rows) - 1)][c_rows]
        wt = np.zeros(len(slot))
        wt[clicked] = c_wt
        pages = self.num_pages + np.arange(len(rows))
        self.num_pages += len(rows)
        self.impressions.add(
            session=rows[slot],
            item=items,
            time=t[slot],
            clicked=clicked,
            watch_time=wt,
            page=pages[slot],
        )
        self.watches.add(
            session=rows[c_rows],
            item=items[clicked],
            time=start[c_rows] + before,
            watch_time=c_wt,
            source=np.full(len(c_rows), SOURCES.index("page"), np.int8),
            page=pages[c_rows],
        )
        total = np.bincount(c_rows, weights=spent, minlength=len(rows))
        has_click = np.bincount(c_rows, minlength=len(rows)) > 0
        last_click = np.searchsorted(c_rows, np.arange(len(rows)), side="right") - 1
        last = items[clicked][np.maximum(last_click, 0)] if len(c_rows) else prev
        return np.where(has_click, last, prev), start + total + self.gap(len(rows)) * ~has_click


def _first_occurrences(slot: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop repeats of an item within a page, keeping slot order."""
    order = np.lexsort((np.arange(len(slot)), items, slot))
    dup = np.zeros(len(slot), bool)
    dup[order[1:]] = (slot[order[1:]] == slot[order[:-1]]) & (items[order[1:]] == items[order[:-1]])
    return slot[~dup], items[~dup]


def simulate(
    cfg: WorldConfig,
    truth: Truth,
    sampler: SegmentSampler,
    rng: np.random.Generator,
    num_threads: int = 1,
) -> Events:
    """Draw sessions, run them step by step, then separate each user's sessions in time.

    Sessions are independent, so they run in chunks of SESSION_CHUNK, each with its own
    generator seeded by (seed, chunk): the log is the same for any ``num_threads``.
    """
    users, start, steps = _sessions(cfg, truth, sampler, rng)
    t, prev = start.copy(), np.full(len(users), -1, np.int64)
    chunks = [
        np.arange(a, min(a + SESSION_CHUNK, len(users)))
        for a in range(0, len(users), SESSION_CHUNK)
    ]

    def run(c: int) -> _Simulation:
        sim = _Simulation(
            cfg, truth, sampler, np.random.Generator(np.random.PCG64([cfg.seed, 2, c]))
        )
        for j in range(cfg.max_session_steps):
            active = chunks[c][(steps[chunks[c]] > j) & (t[chunks[c]] < cfg.window_s)]
            if len(active) == 0:
                break
            p_search = cfg.first_search_rate if j == 0 else cfg.search_rate
            # chunks write disjoint entries of t and prev
            prev[active], t[active] = sim.step(
                active, users[active], t[active], prev[active], p_search, cfg.page_rate
            )
        return sim

    if num_threads > 1 and len(chunks) > 1:  # numpy releases the GIL in its kernels
        with ThreadPoolExecutor(max_workers=num_threads) as pool:
            sims = list(pool.map(run, range(len(chunks))))
    else:
        sims = [run(c) for c in range(len(chunks))]
    events = Events(
        session_user=users,
        watch=_merge(sims, "watches", WATCH_COLUMNS),
        search=_merge(sims, "searches", SEARCH_COLUMNS),
        impression=_merge(sims, "impressions", IMPRESSION_COLUMNS),
    )
    _separate_sessions(events, users, start, t)
    return events


def _merge(sims: list[_Simulation], buffer: str, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Concatenate the chunks' events in chunk order; page numbers continue across chunks."""
    parts = [getattr(sim, buffer).arrays(names) for sim in sims]
    first_page = np.cumsum([0] + [sim.num_pages for sim in sims])
    if "page" in names:
        for part, offset in zip(parts, first_page):
            part["page"] = np.where(part["page"] >= 0, part["page"] + offset, -1)
    return {n: np.concatenate([p[n] for p in parts]) for n in names}


def _sessions(
    cfg: WorldConfig, truth: Truth, sampler: SegmentSampler, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Session users, start times and step counts, sized so about num_watches watches follow."""
    p = 1.0 / cfg.mean_session_steps
    mean_steps = (1 - (1 - p) ** cfg.max_session_steps) / p  # E[min(geometric, max)]
    per_step = 1 - cfg.page_rate + cfg.page_rate * _clicks_per_page(cfg, truth, sampler)
    num_sessions = max(1, round(cfg.num_watches / (mean_steps * per_step)))
    w = cfg.window_s
    live = truth.user_activity * (w - truth.user_join_time) / w
    counts = rng.multinomial(num_sessions, live / live.sum())
    users = np.repeat(np.arange(cfg.num_users), counts)
    join = truth.user_join_time[users]
    start = join + rng.random(len(users)) * (w - join)
    steps = np.minimum(rng.geometric(p, size=len(users)), cfg.max_session_steps)
    return users, start, steps


def _clicks_per_page(cfg: WorldConfig, truth: Truth, sampler: SegmentSampler) -> float:
    """Mean clicks on a page, from <= 2,000 pilot pages on a side generator (the log is unaffected)."""
    pilot = _Simulation(cfg, truth, sampler, np.random.Generator(np.random.PCG64([cfg.seed, 1])))
    n = int(np.clip(cfg.num_watches / 20, 200, 2_000))
    users = pilot.rng.choice(
        cfg.num_users, size=n, p=truth.user_activity / truth.user_activity.sum()
    )
    t = pilot.rng.uniform(0, cfg.window_s, size=n)
    pilot.step(np.arange(n), users, t, np.full(n, -1, np.int64), 0.0, 1.0)
    clicks = pilot.impressions.arrays(("clicked",))["clicked"].sum()
    return float(clicks / max(pilot.num_pages, 1))


def _separate_sessions(
    events: Events, users: np.ndarray, start: np.ndarray, end: np.ndarray
) -> None:
    """Delay sessions so each starts >= 1 s after the user's previous one ends; shift their events.

    In (user, start) order, start'[s] = max(start[s], start'[s-1] + length[s-1] + 1), which is
    D[s] + cummax(start - D) within the user, D being the exclusive cumsum of length + 1.
    """
    order = np.lexsort((np.arange(len(users)), start, users))
    u, s0 = users[order], start[order]
    step = end[order] - s0 + 1.0
    new_user = np.r_[True, u[1:] != u[:-1]]
    cum = np.cumsum(step) - step
    d = cum - cum[np.maximum.accumulate(np.where(new_user, np.arange(len(u)), 0))]
    span = 2.0 * (np.abs(s0).max() + d.max() + 1.0) if len(u) else 1.0
    rank = np.cumsum(new_user)  # makes one global cummax restart at every user
    shifted = d + np.maximum.accumulate(s0 - d + rank * span) - rank * span
    delay = np.empty(len(users))
    delay[order] = np.maximum(shifted - s0, 0.0)
    for table in (events.watch, events.search, events.impression):
        table["time"] = table["time"] + delay[table["session"].astype(np.int64)]
