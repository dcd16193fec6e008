"""WorldConfig: every knob of the synthetic YouTube-like world, with named presets.

The defaults plant the mechanisms the paper relies on at a strength a small model can measure:
interests that demographics predict (cold start, §3.3), popularity that spikes after upload and
decays (example age, §3.3), searches shortly before watches of the searched topic (§3.3), series
watched in upload order (asymmetric next-watch, §3.4) and clicks lured by clickbait that watch
time does not reward (weighted logistic regression, §4.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ytdnn.config import Config

DAY = 86_400  # seconds

# (geo, language, relative population); the first num_geos rows are used.
GEOS: tuple[tuple[str, str, float], ...] = (
    ("US", "en", 10.0),
    ("IN", "hi", 9.0),
    ("BR", "pt", 6.0),
    ("ID", "id", 5.0),
    ("MX", "es", 4.0),
    ("JP", "ja", 4.0),
    ("DE", "de", 3.0),
    ("GB", "en", 3.0),
    ("FR", "fr", 3.0),
    ("RU", "ru", 3.0),
    ("KR", "ko", 2.0),
    ("ES", "es", 2.0),
    ("IT", "it", 2.0),
    ("TR", "tr", 2.0),
    ("PH", "en", 2.0),
    ("VN", "vi", 2.0),
    ("EG", "ar", 1.5),
    ("NG", "en", 1.5),
    ("PL", "pl", 1.0),
    ("CA", "en", 1.0),
)
DEVICES = ("mobile", "desktop", "tv", "tablet")
AGE_GROUP_EDGES = (18.0, 25.0, 35.0, 50.0, 65.0)  # 6 groups, each with its own topic taste


@dataclass(frozen=True)
class WorldConfig(Config):
    """Sizes, time window and the strength of each planted mechanism.

    Counts of watches are expectations: sessions are drawn so that the log holds about
    ``num_watches`` watches (within a few percent); other tables follow from the rates.
    """

    seed: int = 0
    # --- sizes
    num_users: int = 5_000
    num_items: int = 4_000
    num_watches: int = 250_000
    num_channels: int = 400
    num_topics: int = 40
    num_categories: int = 8  # topics are grouped into coarse categories (items.categories)
    num_geos: int = 12  # <= len(GEOS); the language of a user follows the geo
    # --- time
    window_days: float = 60.0  # every event lies in [0, window_days * DAY) seconds
    back_catalog_share: float = 0.3  # items uploaded before the window (negative upload_time)
    back_catalog_days: float = 60.0  # how far before the window the back catalogue reaches
    late_user_share: float = 0.2  # users who join during the window (cold-start users)
    missing_demographics: float = 0.05  # share of users whose age (and, apart, gender) is null
    # --- interests
    topics_per_user: int = 3  # a user's interest is a Dirichlet mixture over this many topics
    topic_exploration: float = 0.05  # share of a user's watches on a uniformly random topic
    demographic_strength: float = 1.5  # scale of geo/age/gender/device shifts of the topic prior
    style_dim: int = 4  # within a topic, taste is the cosine of user and channel style vectors
    style_weight: float = 1.0  # log-odds range of taste: exp(style_weight * cos)
    own_language_share: float = 0.7  # watches that look for the user's language in the topic
    language_penalty: float = 1.5  # clicks and watch time: log-odds cost of a foreign item
    # --- items
    popularity_sigma: float = 1.3  # log-normal spread of channel popularity (items add 0.7)
    freshness_days: float = 3.0  # tau: the upload spike decays as exp(-age / tau)
    evergreen: float = 0.02  # beta: freshness(age) = beta + (1 - beta) exp(-age / tau)
    median_duration_s: float = 300.0
    clickbait_sigma: float = 1.0  # clickbait raises clicks, lowers watch time
    # --- sessions (one step = one search, one page of recommendations, or one organic watch)
    mean_session_steps: float = 5.0
    max_session_steps: int = 40
    first_search_rate: float = 0.25  # a session opens with a search this often
    search_rate: float = 0.08  # later steps are searches this often
    search_on_topic: float = 0.9  # a search is followed by a watch of its topic this often
    page_rate: float = 0.15  # steps that show a page of recommendations (impressions)
    series_rate: float = 0.3  # next watch = the next upload of the previous item's channel
    same_topic_rate: float = 0.35  # next watch from the previous item's topic
    neighbour_topic_rate: float = 0.1  # next watch from a topic near the previous one
    # --- searches
    words_per_topic: int = 20
    words_per_category: int = 8
    # --- impression pages
    page_size_min: int = 10
    page_size_max: int = 20
    page_relevant_share: float = 0.5  # page slots drawn from the user's true interests
    click_bias: float = -1.0
    click_interest_weight: float = 0.6  # weight of interest (log topic weight + taste)
    click_freshness_weight: float = 1.0  # fresh uploads draw clicks
    click_duration_weight: float = 0.3  # long items are clicked a little less
    watch_bias: float = 1.5  # completion logit: watch_time = duration * sigmoid(...)
    watch_interest_weight: float = 0.6
    watch_clickbait_penalty: float = 0.8
    watch_noise: float = 1.0

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> WorldConfig:
        """``tiny`` (tests), ``small`` (demo), ``large`` (benchmarks), ``scale-1m|5m|20m`` (the
        scale benchmark), then ``overrides``."""
        if name not in PRESETS:
            raise ValueError(f"unknown world preset {name!r}; known: {sorted(PRESETS)}")
        return cls.from_dict({**PRESETS[name], **overrides})

    @property
    def window_s(self) -> int:
        return round(self.window_days * DAY)

    def validate(self) -> None:
        positive = (
            "num_users",
            "num_items",
            "num_watches",
            "num_channels",
            "num_topics",
            "num_categories",
            "num_geos",
            "topics_per_user",
            "style_dim",
            "words_per_topic",
            "words_per_category",
            "max_session_steps",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.num_geos > len(GEOS):
            raise ValueError(f"num_geos must be <= {len(GEOS)}")
        if self.num_categories > self.num_topics or self.topics_per_user > self.num_topics:
            raise ValueError("num_categories and topics_per_user must be <= num_topics")
        if self.num_channels < self.num_topics or self.num_items < self.num_channels:
            raise ValueError("need num_topics <= num_channels <= num_items")
        if self.window_days <= 0 or self.freshness_days <= 0 or self.back_catalog_days < 0:
            raise ValueError("window_days and freshness_days must be > 0, back_catalog_days >= 0")
        if (self.window_days + self.back_catalog_days) / self.freshness_days > 600:
            raise ValueError("(window_days + back_catalog_days) / freshness_days must be <= 600")
        if self.mean_session_steps < 1 or not 1 <= self.page_size_min <= self.page_size_max:
            raise ValueError("mean_session_steps >= 1 and 1 <= page_size_min <= page_size_max")
        self._validate_rates()

    def _validate_rates(self) -> None:
        rates = (
            "back_catalog_share",
            "late_user_share",
            "missing_demographics",
            "topic_exploration",
            "evergreen",
            "first_search_rate",
            "search_rate",
            "search_on_topic",
            "page_rate",
            "series_rate",
            "same_topic_rate",
            "neighbour_topic_rate",
            "page_relevant_share",
            "own_language_share",
        )
        for name in rates:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.first_search_rate + self.page_rate > 1 or self.search_rate + self.page_rate > 1:
            raise ValueError("search and page rates of a step must sum to <= 1")
        if self.series_rate + self.same_topic_rate + self.neighbour_topic_rate > 1:
            raise ValueError("series, same-topic and neighbour-topic rates must sum to <= 1")


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "num_users": 200,
        "num_items": 300,
        "num_watches": 5_000,
        "num_channels": 30,
        "num_topics": 10,
        "num_categories": 3,
        "num_geos": 6,
        "words_per_topic": 8,
        "words_per_category": 4,
    },
    "small": {
        "num_users": 5_000,
        "num_items": 4_000,
        "num_watches": 250_000,
        "num_channels": 400,
        "num_topics": 40,
        "num_categories": 8,
        "num_geos": 12,
    },
    "large": {
        "num_users": 100_000,
        "num_items": 50_000,
        "num_watches": 5_000_000,
        "num_channels": 5_000,
        "num_topics": 100,
        "num_categories": 12,
        "num_geos": 20,
        "page_rate": 0.08,
    },
}
# scale-1m, scale-5m, scale-20m (bench/scale.py): the "large" world's items and rates, with users
# growing with the log (50 watches each), so every stage's work grows with the log alone. Too
# large to hold at once: `ytdnn data synth --chunked` (ytdnn.data.synthetic_chunked) writes them.
SCALE_WATCHES_PER_USER = 50
PRESETS |= {
    f"scale-{n}m": {**PRESETS["large"], "num_watches": n * 1_000_000, "num_users": n * 1_000_000 // SCALE_WATCHES_PER_USER}
    for n in (1, 5, 20)
}
